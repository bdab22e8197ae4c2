/* config.c: the INI-style configuration: parsing, defaults, validation, and fetching passwords.
 * Every parse error names the file and line; no error ever contains a password. */
#include "sync/config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util/err.h"
#include "util/mem.h"

#define CFG_MAX_SIZE (1024 * 1024)
#define CFG_MAX_PASSWORD (64 * 1024)

enum cfg_key {
    K_HOST,
    K_PORT,
    K_TLS,
    K_USER,
    K_PASS_CMD,
    K_PASSWORD_FILE,
    K_LOCAL,
    K_STATE,
    K_LAYOUT,
    K_TIMEOUT,
    K_EXPUNGE,
    K_REMOVE_FOLDERS,
    K_FOLDERS,
    K_CONNECTIONS,
    K_PARALLEL_BUDGET,
    K_COMPRESS,
    K_MAX_SIZE,
    K_RECONNECT_ATTEMPTS,
    K_WATCH_FOLDERS,
    K_POLL_INTERVAL,
    K_CA_FILE,
    K_FINGERPRINT,
    K_ALLOW_PLAINTEXT,
    K_AUTH,
    K_COUNT
};

static const char *const cfg_key_names[K_COUNT] = {
    [K_HOST] = "host",
    [K_PORT] = "port",
    [K_TLS] = "tls",
    [K_USER] = "user",
    [K_PASS_CMD] = "pass-cmd",
    [K_PASSWORD_FILE] = "password-file",
    [K_LOCAL] = "local",
    [K_STATE] = "state",
    [K_LAYOUT] = "layout",
    [K_TIMEOUT] = "timeout",
    [K_EXPUNGE] = "expunge",
    [K_REMOVE_FOLDERS] = "remove-folders",
    [K_FOLDERS] = "folders",
    [K_CONNECTIONS] = "connections",
    [K_PARALLEL_BUDGET] = "parallel-budget",
    [K_COMPRESS] = "compress",
    [K_MAX_SIZE] = "max-size",
    [K_RECONNECT_ATTEMPTS] = "reconnect-attempts",
    [K_WATCH_FOLDERS] = "watch-folders",
    [K_POLL_INTERVAL] = "poll-interval",
    [K_CA_FILE] = "ca-file",
    [K_FINGERPRINT] = "fingerprint",
    [K_ALLOW_PLAINTEXT] = "allow-plaintext",
    [K_AUTH] = "auth",
};

typedef struct cfg_parser {
    const char *path;
    ofs_config *cfg;
    size_t *header_lines;      /* per account: the line of its [account NAME] */
    cfg_account *cur;          /* the section being read, NULL before the first */
    size_t key_lines[K_COUNT]; /* where each key of the current section was set, 0 = not yet */
    size_t line;
    ofs_error *err;
} cfg_parser;

static int cfg_fail(cfg_parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int cfg_fail(cfg_parser *p, const char *fmt, ...)
{
    buf msg;
    buf_init(&msg);
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&msg, fmt, ap);
    va_end(ap);
    err_set(p->err, OFS_E_CONFIG, "%s:%zu: %s", p->path, p->line, msg.data);
    buf_free(&msg);
    return -1;
}

static bool cfg_space(char c)
{
    return c == ' ' || c == '\t';
}

static void cfg_trim(const char **s, size_t *n)
{
    while (*n && cfg_space(**s)) {
        (*s)++;
        (*n)--;
    }
    while (*n && cfg_space((*s)[*n - 1]))
        (*n)--;
}

static bool cfg_comment_start(char c)
{
    return c == '#' || c == ';';
}

/* The value after '=': trimmed, optionally quoted (then '#' is literal), and a '#' that
 * follows whitespace starts a comment. */
static int cfg_value(cfg_parser *p, const char *key, const char *s, size_t n, char **out)
{
    cfg_trim(&s, &n);
    size_t len;
    if (n && s[0] == '"') {
        const char *close = memchr(s + 1, '"', n - 1);
        if (!close)
            return cfg_fail(p, "unterminated quote in the value of '%s'", key);
        len = (size_t)(close - s - 1);
        const char *rest = close + 1;
        size_t rn = n - (size_t)(rest - s);
        cfg_trim(&rest, &rn);
        if (rn && rest[0] != '#')
            return cfg_fail(p, "unexpected text after the closing quote of '%s'", key);
        s++;
    } else {
        len = 0;
        while (len < n && !(s[len] == '#' && (len == 0 || cfg_space(s[len - 1]))))
            len++;
        while (len && cfg_space(s[len - 1]))
            len--;
    }
    if (len == 0)
        return cfg_fail(p, "empty value for '%s'", key);
    *out = xstrndup(s, len);
    return 0;
}

static int cfg_number(cfg_parser *p, const char *key, const char *v, long lo, long hi,
                      const char *unit, int *out)
{
    long n = 0;
    bool ok = *v != '\0';
    for (const char *c = v; ok && *c; c++) {
        if (*c < '0' || *c > '9')
            ok = false;
        else if ((n = n * 10 + (*c - '0')) > hi)
            ok = false;
    }
    if (!ok || n < lo)
        return cfg_fail(p, "bad %s '%s' (%ld-%ld%s)", key, v, lo, hi, unit);
    *out = (int)n;
    return 0;
}

static int cfg_choice(cfg_parser *p, const char *key, const char *v, const char *const *names,
                      const char *hint, int *out)
{
    for (int i = 0; names[i]; i++) {
        if (strcmp(v, names[i]) == 0) {
            *out = i;
            return 0;
        }
    }
    return cfg_fail(p, "bad %s '%s' (%s)", key, v, hint);
}

/* "~" and "~/..." become $HOME and $HOME/...; nothing else is touched. */
static int cfg_expand(cfg_parser *p, const char *key, char **v)
{
    char *s = *v;
    if (s[0] != '~')
        return 0;
    if (s[1] != '\0' && s[1] != '/')
        return cfg_fail(p, "cannot expand '%s' in %s: only ~/ is supported", s, key);
    const char *home = getenv("HOME");
    if (!home || !*home)
        return cfg_fail(p, "cannot expand '~' in %s: HOME is not set", key);
    *v = xasprintf("%s%s", home, s + 1);
    free(s);
    return 0;
}

static const char *const cfg_tls_names[] = {"implicit", "starttls", "none", NULL};
static const char *const cfg_layout_names[] = {"maildir++", "verbatim", NULL};
static const char *const cfg_expunge_names[] = {"both", "server", "local", "none", NULL};
static const char *const cfg_bool_names[] = {"no", "yes", NULL};

static int cfg_bool(cfg_parser *p, const char *key, const char *v, bool *out)
{
    int i = 0;
    if (cfg_choice(p, key, v, cfg_bool_names, "yes or no", &i) < 0)
        return -1;
    *out = i == 1;
    return 0;
}

/* A byte count with an optional k, M or G suffix (powers of 1024); 0 means no limit. */
static int cfg_size(cfg_parser *p, const char *key, const char *v, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    unsigned shift = 0;
    if (end && (*end == 'k' || *end == 'K'))
        shift = 10;
    else if (end && *end == 'M')
        shift = 20;
    else if (end && *end == 'G')
        shift = 30;
    if (shift)
        end++;
    if (errno || end == v || !end || *end || v[0] == '-' || (n << shift) >> shift != n)
        return cfg_fail(p, "bad %s '%s' (bytes, with an optional k, M or G)", key, v);
    *out = (uint64_t)n << shift;
    return 0;
}

static int cfg_set(cfg_parser *p, int key, char *v)
{
    cfg_account *a = p->cur;
    int ret = 0;
    switch (key) {
    case K_HOST:
        a->host = v;
        return 0;
    case K_USER:
        a->user = v;
        return 0;
    case K_PASS_CMD:
        a->pass_cmd = v;
        return 0;
    case K_PASSWORD_FILE:
        a->password_file = v;
        return cfg_expand(p, "password-file", &a->password_file);
    case K_LOCAL:
        a->local = v;
        return cfg_expand(p, "local", &a->local);
    case K_STATE:
        a->state = v;
        return cfg_expand(p, "state", &a->state);
    case K_PORT:
        ret = cfg_number(p, "port", v, 1, 65535, "", &a->port);
        break;
    case K_TIMEOUT:
        ret = cfg_number(p, "timeout", v, 1, 86400, " seconds", &a->timeout);
        break;
    case K_TLS:
        ret = cfg_choice(p, "tls", v, cfg_tls_names, "none, starttls or implicit", &a->tls);
        break;
    case K_LAYOUT:
        ret = cfg_choice(p, "layout", v, cfg_layout_names, "maildir++ or verbatim", &a->layout);
        break;
    case K_EXPUNGE:
        ret = cfg_choice(p, "expunge", v, cfg_expunge_names, "both, server, local or none",
                         &a->expunge);
        break;
    case K_REMOVE_FOLDERS:
        ret = cfg_bool(p, "remove-folders", v, &a->remove_folders);
        break;
    case K_FOLDERS:
        a->folders = v;
        return 0;
    case K_CONNECTIONS:
        ret = cfg_number(p, "connections", v, 1, 32, "", &a->connections);
        break;
    case K_PARALLEL_BUDGET:
        ret = cfg_number(p, "parallel-budget", v, 0, 100000000, " messages", &a->parallel_budget);
        break;
    case K_COMPRESS:
        ret = cfg_bool(p, "compress", v, &a->compress);
        break;
    case K_MAX_SIZE:
        ret = cfg_size(p, "max-size", v, &a->max_size);
        break;
    case K_RECONNECT_ATTEMPTS:
        ret = cfg_number(p, "reconnect-attempts", v, 0, 1000, "", &a->reconnect_attempts);
        break;
    case K_WATCH_FOLDERS:
        a->watch_folders = v;
        return 0;
    case K_POLL_INTERVAL:
        ret = cfg_number(p, "poll-interval", v, 5, 86400, " seconds", &a->poll_interval);
        break;
    case K_CA_FILE:
        a->ca_file = v;
        return cfg_expand(p, "ca-file", &a->ca_file);
    case K_FINGERPRINT:
        a->fingerprint = v;
        return 0;
    case K_ALLOW_PLAINTEXT:
        ret = cfg_bool(p, "allow-plaintext", v, &a->allow_plaintext);
        break;
    case K_AUTH:
        a->auth = v;
        return 0;
    }
    free(v);
    return ret;
}

static int cfg_key_line(cfg_parser *p, const char *s, size_t n)
{
    const char *eq = memchr(s, '=', n);
    if (!eq)
        return cfg_fail(p, "expected 'key = value' (no '=' on this line)");
    const char *k = s;
    size_t kn = (size_t)(eq - s);
    cfg_trim(&k, &kn);
    if (kn == 0)
        return cfg_fail(p, "missing key before '='");
    int key = -1;
    for (int i = 0; i < K_COUNT; i++)
        if (strlen(cfg_key_names[i]) == kn && memcmp(cfg_key_names[i], k, kn) == 0)
            key = i;
    int kw = kn > 64 ? 64 : (int)kn;
    if (!p->cur)
        return cfg_fail(p, "key '%.*s' outside any [account NAME] section", kw, k);
    if (key < 0)
        return cfg_fail(p, "unknown key '%.*s' in [account %s]", kw, k, p->cur->name);
    if (p->key_lines[key])
        return cfg_fail(p, "duplicate key '%s' in [account %s] (first set on line %zu)",
                        cfg_key_names[key], p->cur->name, p->key_lines[key]);
    int other = key == K_PASS_CMD ? K_PASSWORD_FILE : key == K_PASSWORD_FILE ? K_PASS_CMD : -1;
    if (other >= 0 && p->key_lines[other])
        return cfg_fail(p, "account '%s' has both pass-cmd and password-file (keep one)",
                        p->cur->name);
    p->key_lines[key] = p->line;
    char *v = NULL;
    if (cfg_value(p, cfg_key_names[key], eq + 1, n - (size_t)(eq + 1 - s), &v) < 0)
        return -1;
    return cfg_set(p, key, v);
}

/* $XDG_STATE_HOME/ofsync/NAME.db; the XDG spec says to ignore a relative XDG_STATE_HOME. */
static char *cfg_default_state(const char *name)
{
    const char *xdg = getenv("XDG_STATE_HOME");
    if (xdg && xdg[0] == '/')
        return xasprintf("%s/ofsync/%s.db", xdg, name);
    const char *home = getenv("HOME");
    if (home && *home)
        return xasprintf("%s/.local/state/ofsync/%s.db", home, name);
    return NULL;
}

/* Defaults of the keys a section did not set. */
static void cfg_defaults(cfg_account *a, const size_t *set)
{
    if (!set[K_TIMEOUT])
        a->timeout = 60;
    if (!set[K_EXPUNGE])
        a->expunge = CFG_EXPUNGE_BOTH;
    if (!set[K_FOLDERS])
        a->folders = xstrdup("*");
    if (!set[K_CONNECTIONS])
        a->connections = 4;
    if (!set[K_COMPRESS])
        a->compress = true;
    if (!set[K_RECONNECT_ATTEMPTS])
        a->reconnect_attempts = 5;
    if (!set[K_WATCH_FOLDERS])
        a->watch_folders = xstrdup("INBOX");
    if (!set[K_POLL_INTERVAL])
        a->poll_interval = 300;
}

/* Checks the section just finished and fills its defaults; errors point at its header. */
static int cfg_end_section(cfg_parser *p)
{
    cfg_account *a = p->cur;
    if (!a)
        return 0;
    size_t saved = p->line;
    p->line = p->header_lines[p->cfg->n_accounts - 1];
    int ret = 0;
    if (!a->host)
        ret = cfg_fail(p, "account '%s' has no host", a->name);
    else if (!a->user)
        ret = cfg_fail(p, "account '%s' has no user", a->name);
    else if (!a->pass_cmd && !a->password_file)
        ret = cfg_fail(p, "account '%s' has no pass-cmd or password-file", a->name);
    else if (!a->local)
        ret = cfg_fail(p, "account '%s' has no local (the Maildir root)", a->name);
    else if (!a->state && !(a->state = cfg_default_state(a->name)))
        ret = cfg_fail(p, "account '%s' has no state, and neither XDG_STATE_HOME nor HOME is set",
                       a->name);
    if (a->port == 0)
        a->port = a->tls == CFG_TLS_IMPLICIT ? 993 : 143;
    cfg_defaults(a, p->key_lines);
    p->line = saved;
    return ret;
}

static bool cfg_name_ok(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

static int cfg_header(cfg_parser *p, const char *s, size_t n)
{
    const char *close = memchr(s, ']', n);
    const char *rest = close ? close + 1 : NULL;
    size_t rn = close ? n - (size_t)(rest - s) : 0;
    cfg_trim(&rest, &rn);
    if (!close || (rn && !cfg_comment_start(rest[0])))
        return cfg_fail(p, "malformed section header (expected [account NAME])");
    const char *in = s + 1;
    size_t inn = (size_t)(close - in);
    cfg_trim(&in, &inn);
    if (inn < 8 || memcmp(in, "account", 7) != 0 || !cfg_space(in[7]))
        return cfg_fail(p, "malformed section header (expected [account NAME])");
    const char *name = in + 7;
    size_t nn = inn - 7;
    cfg_trim(&name, &nn);
    if (!cfg_name_ok(name, nn))
        return cfg_fail(p, "bad account name '%.*s' (letters, digits, '.', '_' and '-' only)",
                        nn > 64 ? 64 : (int)nn, name);
    ofs_config *cfg = p->cfg;
    for (size_t i = 0; i < cfg->n_accounts; i++)
        if (strlen(cfg->accounts[i].name) == nn && memcmp(cfg->accounts[i].name, name, nn) == 0)
            return cfg_fail(p, "duplicate account '%s' (first on line %zu)", cfg->accounts[i].name,
                            p->header_lines[i]);
    if (cfg_end_section(p) < 0)
        return -1;
    cfg->accounts = xrealloc(cfg->accounts, (cfg->n_accounts + 1) * sizeof *cfg->accounts);
    p->header_lines = xrealloc(p->header_lines, (cfg->n_accounts + 1) * sizeof *p->header_lines);
    p->cur = &cfg->accounts[cfg->n_accounts];
    p->header_lines[cfg->n_accounts++] = p->line;
    memset(p->cur, 0, sizeof *p->cur);
    p->cur->name = xstrndup(name, nn);
    memset(p->key_lines, 0, sizeof p->key_lines);
    return 0;
}

static int cfg_line(cfg_parser *p, const char *s, size_t n)
{
    if (memchr(s, '\0', n))
        return cfg_fail(p, "NUL byte in line");
    cfg_trim(&s, &n);
    if (n == 0 || cfg_comment_start(s[0]))
        return 0;
    if (s[0] == '[')
        return cfg_header(p, s, n);
    return cfg_key_line(p, s, n);
}

static int cfg_parse_text(cfg_parser *p, const char *text, size_t len)
{
    size_t pos = 0;
    while (pos < len) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - text) : len;
        size_t n = end - pos;
        if (n && text[end - 1] == '\r')
            n--;
        p->line++;
        if (cfg_line(p, text + pos, n) < 0)
            return -1;
        pos = end + 1;
    }
    if (cfg_end_section(p) < 0)
        return -1;
    if (p->cfg->n_accounts == 0)
        return err_set(p->err, OFS_E_CONFIG, "%s: no [account NAME] section", p->path);
    return 0;
}

int cfg_parse(const char *path, const char *text, size_t len, ofs_config **out, ofs_error *err)
{
    *out = NULL;
    if (!path)
        path = "(config)";
    if (len > CFG_MAX_SIZE)
        return err_set(err, OFS_E_CONFIG, "%s: larger than %d bytes; is it the right file?", path,
                       CFG_MAX_SIZE);
    cfg_parser p = {.path = path, .err = err};
    p.cfg = xcalloc(1, sizeof *p.cfg);
    p.cfg->path = xstrdup(path);
    int ret = cfg_parse_text(&p, text, len);
    free(p.header_lines);
    if (ret < 0) {
        ofs_config_free(p.cfg);
        return -1;
    }
    *out = p.cfg;
    return 0;
}

const cfg_account *cfg_find_account(const ofs_config *cfg, const char *name)
{
    if (!cfg || !name)
        return NULL;
    for (size_t i = 0; i < cfg->n_accounts; i++)
        if (strcmp(cfg->accounts[i].name, name) == 0)
            return &cfg->accounts[i];
    return NULL;
}

static void cfg_account_free(cfg_account *a)
{
    free(a->name);
    free(a->host);
    free(a->user);
    free(a->pass_cmd);
    free(a->password_file);
    free(a->local);
    free(a->state);
    free(a->folders);
    free(a->watch_folders);
    free(a->ca_file);
    free(a->fingerprint);
    free(a->auth);
}

void ofs_config_free(ofs_config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < cfg->n_accounts; i++)
        cfg_account_free(&cfg->accounts[i]);
    free(cfg->accounts);
    free(cfg->path);
    free(cfg);
}

/* Reads at most limit bytes; *too_big says there was more. */
static int cfg_read_fd(int fd, buf *b, size_t limit, bool *too_big)
{
    char chunk[8192];
    *too_big = false;
    for (;;) {
        ssize_t r = read(fd, chunk, sizeof chunk);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            return 0;
        if (b->len + (size_t)r > limit) {
            *too_big = true;
            return 0;
        }
        buf_add(b, chunk, (size_t)r);
    }
}

char *cfg_default_path(void)
{
    const char *xdg = getenv("XDG_CONFIG_HOME");
    if (xdg && xdg[0] == '/')
        return xasprintf("%s/ofsync/config", xdg);
    const char *home = getenv("HOME");
    if (home && *home)
        return xasprintf("%s/.config/ofsync/config", home);
    return NULL;
}

int ofs_config_load(const char *path, ofs_config **out, ofs_error *err)
{
    *out = NULL;
    char *owned = path ? NULL : cfg_default_path();
    if (!path && !owned)
        return err_set(err, OFS_E_CONFIG,
                       "cannot find the config: neither XDG_CONFIG_HOME nor HOME is set "
                       "(use ofsync --config FILE)");
    if (!path)
        path = owned;
    int ret = -1;
    buf text;
    buf_init(&text);
    bool too_big = false;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || cfg_read_fd(fd, &text, CFG_MAX_SIZE, &too_big) < 0) {
        int e = errno;
        err_set(err, OFS_E_CONFIG, "cannot read config %s: %s%s", path, strerror(e),
                e == ENOENT ? " (create it, or name another with ofsync --config FILE)" : "");
    } else if (too_big) {
        err_set(err, OFS_E_CONFIG, "%s: larger than %d bytes; is it the right file?", path,
                CFG_MAX_SIZE);
    } else {
        ret = cfg_parse(path, text.data ? text.data : "", text.len, out, err);
    }
    if (fd >= 0)
        close(fd);
    buf_free(&text);
    free(owned);
    return ret;
}

static void cfg_wipe(buf *b)
{
    if (b->data)
        explicit_bzero(b->data, b->cap);
    buf_free(b);
}

/* The password is the first line; the buffer is wiped whatever happens. */
static int cfg_first_line(buf *b, char **out)
{
    const char *nl = b->len ? memchr(b->data, '\n', b->len) : NULL;
    size_t n = nl ? (size_t)(nl - b->data) : b->len;
    if (n && b->data[n - 1] == '\r')
        n--;
    if (n > 0)
        *out = xstrndup(b->data, n);
    cfg_wipe(b);
    return n > 0 ? 0 : -1;
}

/* In the child, between fork and exec: async-signal-safe calls only. */
static void cfg_exec_child(int out_fd, const char *cmd)
{
    if (dup2(out_fd, STDOUT_FILENO) < 0)
        _exit(127);
    /* The command must not inherit our sockets or databases. */
    close_range(3, ~0U, 0);
    char *const argv[] = {"sh", "-c", (char *)cmd, NULL};
    execve("/bin/sh", argv, environ);
    _exit(127);
}

/* Reads the command's output to EOF, keeping the first CFG_MAX_PASSWORD bytes: reading on
 * past the limit means the command never blocks on a full pipe. */
static void cfg_drain(int fd, buf *b)
{
    bool too_big = false;
    if (cfg_read_fd(fd, b, CFG_MAX_PASSWORD, &too_big) < 0 || !too_big)
        return;
    char sink[4096];
    for (;;) {
        ssize_t r = read(fd, sink, sizeof sink);
        if (r == 0 || (r < 0 && errno != EINTR))
            return;
    }
}

static int cfg_wait(pid_t pid, int *status)
{
    while (waitpid(pid, status, 0) < 0)
        if (errno != EINTR)
            return -1;
    return 0;
}

static int cfg_run_pass_cmd(const cfg_account *a, char **out, ofs_error *err)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        return err_errno(err, OFS_E_CONFIG, errno, "cannot run pass-cmd for account '%s'", a->name);
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(fds[0]);
        close(fds[1]);
        return err_errno(err, OFS_E_CONFIG, e, "cannot run pass-cmd for account '%s'", a->name);
    }
    if (pid == 0)
        cfg_exec_child(fds[1], a->pass_cmd);
    close(fds[1]);
    buf b;
    buf_init(&b);
    cfg_drain(fds[0], &b);
    close(fds[0]);
    int status = 0;
    if (cfg_wait(pid, &status) < 0) {
        int e = errno;
        cfg_wipe(&b);
        return err_errno(err, OFS_E_CONFIG, e, "cannot wait for pass-cmd of account '%s'", a->name);
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        cfg_wipe(&b);
        if (WIFSIGNALED(status))
            return err_set(err, OFS_E_CONFIG,
                           "pass-cmd for account '%s' failed (killed by signal %d)", a->name,
                           WTERMSIG(status));
        return err_set(err, OFS_E_CONFIG, "pass-cmd for account '%s' failed (exit status %d)",
                       a->name, WEXITSTATUS(status));
    }
    if (cfg_first_line(&b, out) < 0)
        return err_set(err, OFS_E_CONFIG,
                       "pass-cmd for account '%s' failed (exit status 0, but no password on "
                       "its first line)",
                       a->name);
    return 0;
}

static int cfg_read_password_file(const cfg_account *a, char **out, ofs_error *err)
{
    const char *path = a->password_file;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_errno(err, OFS_E_CONFIG, errno, "cannot read password file %s", path);
    struct stat sb;
    int ret = -1;
    buf b;
    buf_init(&b);
    bool too_big = false;
    /* fstat on the open file: the mode checked is the mode of what is read. */
    if (fstat(fd, &sb) < 0) {
        err_errno(err, OFS_E_CONFIG, errno, "cannot read password file %s", path);
    } else if (sb.st_mode & 077) {
        err_set(err, OFS_E_CONFIG, "password file %s is readable by others: run chmod 600 %s", path,
                path);
    } else if (cfg_read_fd(fd, &b, CFG_MAX_PASSWORD, &too_big) < 0) {
        err_errno(err, OFS_E_CONFIG, errno, "cannot read password file %s", path);
    } else if (too_big) {
        err_set(err, OFS_E_CONFIG, "password file %s is larger than %d bytes", path,
                CFG_MAX_PASSWORD);
    } else {
        ret = 0;
    }
    close(fd);
    if (ret < 0) {
        cfg_wipe(&b);
        return -1;
    }
    if (cfg_first_line(&b, out) < 0)
        return err_set(err, OFS_E_CONFIG, "password file %s has no password on its first line",
                       path);
    return 0;
}

int cfg_account_password(const cfg_account *a, char **out, ofs_error *err)
{
    *out = NULL;
    if (a->pass_cmd)
        return cfg_run_pass_cmd(a, out, err);
    if (a->password_file)
        return cfg_read_password_file(a, out, err);
    return err_set(err, OFS_E_CONFIG, "account '%s' has no pass-cmd or password-file", a->name);
}

void ofs_config_set_trace(ofs_config *cfg, int on)
{
    cfg->trace = on != 0;
}
