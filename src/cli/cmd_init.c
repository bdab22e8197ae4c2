/* cmd_init.c: `ofsync init`: a commented config section for a new account, from options or
 * from questions on a terminal; the connection is checked before anything is written. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include "cli/cli.h"
#include "imap/imap_store.h"
#include "sync/config.h"
#include "util/err.h"
#include "util/mem.h"
#include "util/secret.h"

static const char usage[] =
    "usage: ofsync init [--config FILE] [--account NAME] --host HOST [--port N]\n"
    "                   [--tls implicit|starttls|none] --user USER\n"
    "                   (--pass-cmd CMD | --password-file FILE) --local DIR\n"
    "                   [--layout maildir++|verbatim] [--no-check]\n"
    "On a terminal, what is not given is asked for.\n";

typedef struct init_opts {
    char *account, *host, *port, *tls, *user, *pass_cmd, *password_file, *local, *layout;
    char *password; /* typed at the prompt; stored in a 0600 file next to the config */
    bool no_check;
    bool interactive;
} init_opts;

enum {
    O_ACCOUNT = 256,
    O_HOST,
    O_PORT,
    O_TLS,
    O_USER,
    O_PASS_CMD,
    O_PASSWORD_FILE,
    O_LOCAL,
    O_LAYOUT,
    O_NO_CHECK
};

static void set(char **field, const char *v)
{
    free(*field);
    *field = v ? xstrdup(v) : NULL;
}

static void init_opts_free(init_opts *io)
{
    char **f[] = {&io->account,  &io->host,          &io->port,  &io->tls,   &io->user,
                  &io->pass_cmd, &io->password_file, &io->local, &io->layout};
    for (size_t i = 0; i < sizeof f / sizeof *f; i++)
        free(*f[i]);
    if (io->password) {
        explicit_bzero(io->password, strlen(io->password));
        free(io->password);
    }
}

/* ---- questions on a terminal ---- */

/* One line from stdin without its newline; NULL at end of input. Echo off for secrets. */
static char *read_line(bool secret)
{
    struct termios old, quiet;
    bool restore = secret && tcgetattr(STDIN_FILENO, &old) == 0;
    if (restore) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, stdin);
    if (restore) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
        fputc('\n', stdout);
    }
    if (n < 0) {
        free(line);
        return NULL;
    }
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    return line;
}

/* Asks for *field when it is unset; an empty answer takes def (which may be NULL). */
static int ask(char **field, const char *question, const char *def, bool secret)
{
    if (*field)
        return 0;
    printf("%s%s%s%s: ", question, def ? " [" : "", def ? def : "", def ? "]" : "");
    fflush(stdout);
    char *ans = read_line(secret);
    if (!ans)
        return -1;
    if (!*ans && def)
        set(field, def);
    else if (*ans)
        *field = xstrdup(ans);
    if (secret)
        explicit_bzero(ans, strlen(ans));
    free(ans);
    return 0;
}

static int prompt(init_opts *io)
{
    puts("Setting up an ofsync account. Press Enter to take the value in [brackets].");
    if (ask(&io->account, "Account name", "mail", false) < 0 ||
        ask(&io->host, "IMAP server", NULL, false) < 0 ||
        ask(&io->tls, "Encryption: implicit (TLS), starttls or none", "implicit", false) < 0)
        return -1;
    const char *def_port = io->tls && !strcmp(io->tls, "implicit") ? "993" : "143";
    if (ask(&io->port, "Port", def_port, false) < 0 || ask(&io->user, "User name", NULL, false) < 0)
        return -1;
    if (!io->pass_cmd && !io->password_file) {
        if (ask(&io->pass_cmd, "Command that prints the password (empty: type it now)", NULL,
                false) < 0)
            return -1;
        if (!io->pass_cmd &&
            ask(&io->password, "Password (kept in a file only you can read)", NULL, true) < 0)
            return -1;
    }
    char *def_local = xasprintf("~/Mail/%s", io->account ? io->account : "mail");
    int rc = ask(&io->local, "Local Maildir", def_local, false);
    free(def_local);
    return rc;
}

/* ---- the config text ---- */

static void add_section(buf *b, const init_opts *io, const char *pass_file)
{
    buf_printf(b,
               "[account %s]\n"
               "# The IMAP server. tls: implicit (TLS from the start, port 993), starttls or\n"
               "# none (plain text: only for 127.0.0.1 or a tunnel).\n"
               "host = %s\n"
               "port = %s\n"
               "tls = %s\n"
               "user = %s\n"
               "# The password: the first line printed by pass-cmd, or the first line of\n"
               "# password-file (which must be readable by you alone, mode 0600).\n",
               io->account, io->host, io->port, io->tls, io->user);
    if (io->pass_cmd)
        buf_printf(b, "pass-cmd = %s\n", io->pass_cmd);
    else
        buf_printf(b, "password-file = %s\n", pass_file);
    buf_printf(b,
               "# The local copy: a Maildir that mutt, aerc and notmuch read. layout: maildir++\n"
               "# (INBOX at the root, .Sub.Folder) or verbatim (nested directories).\n"
               "local = %s\n"
               "layout = %s\n"
               "# More keys, with their defaults (see man ofsync):\n"
               "# state = $XDG_STATE_HOME/ofsync/%s.db   sync state database\n"
               "# timeout = 60             seconds of server silence before giving up\n"
               "# expunge = both           where deletions are carried: both, server, local, none\n"
               "# folders = *              folder patterns; !Pattern excludes\n"
               "# max-size = 0             larger messages stay on the server (0: no limit)\n",
               io->local, io->layout ? io->layout : "maildir++", io->account);
}

static const char header[] =
    "# ofsync configuration: one [account NAME] section per account.\n"
    "# Written by `ofsync init`; every key is described in man ofsync (CONFIGURATION).\n";

/* ---- files ---- */

static int mkdir_p(const char *dir, ofs_error *err)
{
    char *p = xstrdup(dir);
    int rc = 0;
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != '\0')
            continue;
        char c = *s;
        *s = '\0';
        if (mkdir(p, 0700) < 0 && errno != EEXIST) {
            rc = err_errno(err, OFS_E_IO, errno, "cannot create directory %s", p);
            break;
        }
        *s = c;
        if (!c)
            break;
    }
    free(p);
    return rc;
}

static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return xstrdup(".");
    return slash == path ? xstrdup("/") : xstrndup(path, (size_t)(slash - path));
}

/* Writes text to path through a temporary file, mode 0600, made durable, then renamed. */
static int write_private(const char *path, const char *text, size_t len, ofs_error *err)
{
    char *tmp = xasprintf("%s.tmp-XXXXXX", path);
    int fd = mkostemp(tmp, O_CLOEXEC);
    int rc = 0;
    if (fd < 0) {
        rc = err_errno(err, OFS_E_IO, errno, "cannot write %s", path);
    } else {
        size_t off = 0;
        while (off < len && rc == 0) {
            ssize_t n = write(fd, text + off, len - off);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0)
                rc = err_errno(err, errno == ENOSPC ? OFS_E_NOSPC : OFS_E_IO, errno,
                               "cannot write %s", tmp);
            else
                off += (size_t)n;
        }
        if (rc == 0 && (fchmod(fd, 0600) < 0 || fsync(fd) < 0))
            rc = err_errno(err, OFS_E_IO, errno, "cannot write %s", tmp);
        close(fd);
        if (rc == 0 && rename(tmp, path) < 0)
            rc = err_errno(err, OFS_E_IO, errno, "cannot rename %s to %s", tmp, path);
        if (rc < 0)
            unlink(tmp);
    }
    free(tmp);
    return rc;
}

static int read_existing(const char *path, buf *out, ofs_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : err_errno(err, OFS_E_CONFIG, errno, "cannot read %s", path);
    char chunk[4096];
    ssize_t n;
    while ((n = read(fd, chunk, sizeof chunk)) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            close(fd);
            return err_errno(err, OFS_E_CONFIG, errno, "cannot read %s", path);
        }
        buf_add(out, chunk, (size_t)n);
    }
    close(fd);
    return 1;
}

/* ---- the connection check: login and LIST, as the first sync will do ---- */

static int check_connection(const cfg_account *a, const char *typed, ofs_error *err)
{
    char *password = NULL;
    secret_guard_begin(); /* no core dump may hold the password */
    if (typed) {
        password = xstrdup(typed);
    } else if (cfg_account_password(a, &password, err) < 0) {
        secret_guard_end();
        return -1;
    }
    imap_store_opts o = {.host = a->host,
                         .port = a->port,
                         .tls = a->tls,
                         .user = a->user,
                         .password = password,
                         .timeout = a->timeout,
                         .ca_file = a->ca_file,
                         .fingerprint = a->fingerprint,
                         .allow_plaintext = a->allow_plaintext,
                         .auth = a->auth};
    store *srv = NULL;
    int rc = imap_store_open(&o, &srv, err);
    explicit_bzero(password, strlen(password));
    free(password);
    secret_guard_end();
    if (rc < 0)
        return -1;
    strlist names, refused;
    strlist_init(&names);
    strlist_init(&refused);
    rc = srv->ops->list_folders(srv, &names, &refused, err);
    if (rc == 0)
        printf("connected to %s:%d as %s: %zu folders\n", a->host, a->port, a->user,
               names.n + refused.n);
    strlist_free(&names);
    strlist_free(&refused);
    srv->ops->close(srv);
    return rc;
}

/* ---- the command ---- */

static int missing(const init_opts *io, buf *b)
{
    const struct {
        const char *v, *name;
    } req[] = {{io->host, "--host"}, {io->user, "--user"}, {io->local, "--local"}};
    for (size_t i = 0; i < sizeof req / sizeof *req; i++)
        if (!req[i].v)
            buf_printf(b, "%s%s", b->len ? ", " : "", req[i].name);
    if (!io->pass_cmd && !io->password_file && !io->password)
        buf_printf(b, "%s--pass-cmd or --password-file", b->len ? ", " : "");
    return b->len > 0;
}

static int parse_args(init_opts *io, cli_opts *o, int argc, char **argv)
{
    static const struct option longopts[] = {
        CLI_COMMON_LONGOPTS,
        {"account", required_argument, NULL, O_ACCOUNT},
        {"host", required_argument, NULL, O_HOST},
        {"port", required_argument, NULL, O_PORT},
        {"tls", required_argument, NULL, O_TLS},
        {"user", required_argument, NULL, O_USER},
        {"pass-cmd", required_argument, NULL, O_PASS_CMD},
        {"password-file", required_argument, NULL, O_PASSWORD_FILE},
        {"local", required_argument, NULL, O_LOCAL},
        {"layout", required_argument, NULL, O_LAYOUT},
        {"no-check", no_argument, NULL, O_NO_CHECK},
        {NULL, 0, NULL, 0}};
    char **fields[] = {[O_ACCOUNT - O_ACCOUNT] = &io->account, // NOLINT(misc-redundant-expression)
                       [O_HOST - O_ACCOUNT] = &io->host,
                       [O_PORT - O_ACCOUNT] = &io->port,
                       [O_TLS - O_ACCOUNT] = &io->tls,
                       [O_USER - O_ACCOUNT] = &io->user,
                       [O_PASS_CMD - O_ACCOUNT] = &io->pass_cmd,
                       [O_PASSWORD_FILE - O_ACCOUNT] = &io->password_file,
                       [O_LOCAL - O_ACCOUNT] = &io->local,
                       [O_LAYOUT - O_ACCOUNT] = &io->layout};
    int ch;
    while ((ch = getopt_long(argc, argv, CLI_COMMON_SHORTOPTS, longopts, NULL)) != -1) {
        if (ch >= O_ACCOUNT && ch <= O_LAYOUT) {
            set(fields[ch - O_ACCOUNT], optarg);
            continue;
        }
        if (ch == O_NO_CHECK) {
            io->no_check = true;
            continue;
        }
        int r = cli_common_option(o, ch, optarg);
        if (r < 0) {
            fputs(usage, stdout);
            return 1;
        }
        if (r == 0)
            return cli_usage_error(usage, "unknown option for init");
    }
    if (optind < argc)
        return cli_usage_error(usage, "init takes options only, not '%s'", argv[optind]);
    if (io->pass_cmd && io->password_file)
        return cli_usage_error(usage, "give --pass-cmd or --password-file, not both");
    return 0;
}

/* Fills defaults, builds the new text, parses it as ofsync will. */
static int build(init_opts *io, const char *path, const buf *old, buf *text, ofs_config **cfg,
                 ofs_error *err)
{
    if (!io->account)
        set(&io->account, "mail");
    if (!io->tls)
        set(&io->tls, "implicit");
    if (!io->port)
        set(&io->port, strcmp(io->tls, "implicit") ? "143" : "993");
    char *dir = dir_of(path);
    char *pass_file = xasprintf("%s/%s.pass", dir, io->account);
    free(dir);
    if (old->len) {
        buf_add(text, old->data, old->len);
        if (old->data[old->len - 1] != '\n')
            buf_addc(text, '\n');
        buf_addc(text, '\n');
    } else {
        buf_adds(text, header);
        buf_addc(text, '\n');
    }
    add_section(text, io, io->password_file ? io->password_file : pass_file);
    if (!io->pass_cmd && !io->password_file)
        io->password_file = pass_file;
    else
        free(pass_file);
    /* The same parser as every later run: what init writes, ofsync reads. */
    if (cfg_parse(path, text->data, text->len, cfg, err) < 0)
        return -1;
    return 0;
}

static int run_init(init_opts *io, const char *path)
{
    ofs_error err = {0};
    buf old, text;
    buf_init(&old);
    buf_init(&text);
    ofs_config *cfg = NULL, *existing = NULL;
    int rc = read_existing(path, &old, &err);
    if (rc == 1) {
        if (cfg_parse(path, old.data ? old.data : "", old.len, &existing, &err) < 0)
            rc = -1;
        else if (io->account && cfg_find_account(existing, io->account))
            rc = err_set(&err, OFS_E_CONFIG,
                         "account '%s' already exists in %s: not overwritten (edit the file, "
                         "or choose another --account)",
                         io->account, path);
        else
            rc = 0;
    }
    if (rc == 0)
        rc = build(io, path, &old, &text, &cfg, &err);
    if (rc == 0 && existing && cfg_find_account(existing, io->account))
        rc = err_set(&err, OFS_E_CONFIG, "account '%s' already exists in %s: not overwritten",
                     io->account, path);
    const cfg_account *a = rc == 0 ? cfg_find_account(cfg, io->account) : NULL;
    if (rc == 0 && !io->no_check)
        rc = check_connection(a, io->password, &err);
    char *dir = dir_of(path);
    if (rc == 0)
        rc = mkdir_p(dir, &err);
    if (rc == 0 && chmod(dir, 0700) < 0)
        rc = err_errno(&err, OFS_E_IO, errno, "cannot make %s private", dir);
    free(dir);
    if (rc == 0 && io->password)
        rc = write_private(io->password_file, io->password, strlen(io->password), &err);
    if (rc == 0)
        rc = write_private(path, text.data, text.len, &err);
    if (rc == 0)
        printf("account '%s' written to %s; run: ofsync sync %s\n", io->account, path, io->account);
    ofs_config_free(cfg);
    ofs_config_free(existing);
    buf_free(&old);
    buf_free(&text);
    return rc < 0 ? cli_fail(&err) : 0;
}

int cmd_init(cli_opts *o, int argc, char **argv)
{
    init_opts io = {0};
    int rc = parse_args(&io, o, argc, argv);
    if (rc) {
        init_opts_free(&io);
        return rc == 1 ? 0 : rc;
    }
    io.interactive = isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
    if (io.interactive && prompt(&io) < 0) {
        init_opts_free(&io);
        fputs("ofsync: init: input ended before the account was complete\n", stderr);
        return OFS_E_USAGE;
    }
    buf miss;
    buf_init(&miss);
    if (missing(&io, &miss)) {
        rc = cli_usage_error(usage, "init needs %s", miss.data);
        buf_free(&miss);
        init_opts_free(&io);
        return rc;
    }
    buf_free(&miss);
    char *def = o->config ? NULL : cfg_default_path();
    const char *path = o->config ? o->config : def;
    if (!path) {
        init_opts_free(&io);
        fputs("ofsync: init: neither XDG_CONFIG_HOME nor HOME is set (use --config FILE)\n",
              stderr);
        return OFS_E_CONFIG;
    }
    rc = run_init(&io, path);
    free(def);
    init_opts_free(&io);
    return rc;
}
