/* test_config.c: unit tests of the config parser and password retrieval (src/sync/config.c).
 * Environment variables (HOME, XDG_*) are set per test, so results do not depend on the host. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sync/config.h"
#include "util/mem.h"

static char tmpdir[64];

static int group_setup(void **ctx)
{
    strcpy(tmpdir, "/tmp/ofs-config-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int group_teardown(void **ctx)
{
    char *cmd = xasprintf("rm -rf '%s'", tmpdir);
    int rc = system(cmd);
    free(cmd);
    return rc == 0 ? 0 : -1;
}

static int env_setup(void **ctx)
{
    setenv("HOME", "/home/t", 1);
    unsetenv("XDG_STATE_HOME");
    unsetenv("XDG_CONFIG_HOME");
    return 0;
}

static ofs_config *parse_ok(const char *text)
{
    ofs_config *cfg = NULL;
    ofs_error err = {0};
    int rc = cfg_parse("t.conf", text, strlen(text), &cfg, &err);
    if (rc != 0)
        print_error("cfg_parse: %s\n", err.message);
    assert_int_equal(rc, 0);
    assert_non_null(cfg);
    return cfg;
}

static void parse_fails(const char *text, const char *message)
{
    ofs_config *cfg = (ofs_config *)1;
    ofs_error err = {0};
    assert_int_equal(cfg_parse("t.conf", text, strlen(text), &cfg, &err), -1);
    assert_null(cfg);
    assert_int_equal(err.code, OFS_E_CONFIG);
    assert_string_equal(err.message, message);
}

static char *write_file(const char *name, const char *text, mode_t mode)
{
    char *path = xasprintf("%s/%s", tmpdir, name);
    unlink(path);
    int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
    return path;
}

static const char example[] =
    "# comment lines start with # or ;\n"
    "[account work]\n"
    "host = 127.0.0.1\n"
    "port = 1143\n"
    "tls = none            # none | starttls | implicit (default: implicit)\n"
    "user = alice\n"
    "pass-cmd = cat /path/to/secret   # or: password-file = PATH\n"
    "local = /home/alice/Mail/work\n"
    "state = /home/alice/.local/state/ofsync/work.db   # default under $XDG_STATE_HOME\n"
    "layout = maildir++    # maildir++ | verbatim\n"
    "timeout = 60\n";

static void test_example(void **ctx)
{
    ofs_config *cfg = parse_ok(example);
    assert_string_equal(cfg->path, "t.conf");
    assert_int_equal(cfg->n_accounts, 1);
    const cfg_account *a = &cfg->accounts[0];
    assert_string_equal(a->name, "work");
    assert_string_equal(a->host, "127.0.0.1");
    assert_int_equal(a->port, 1143);
    assert_int_equal(a->tls, CFG_TLS_NONE);
    assert_string_equal(a->user, "alice");
    assert_string_equal(a->pass_cmd, "cat /path/to/secret");
    assert_null(a->password_file);
    assert_string_equal(a->local, "/home/alice/Mail/work");
    assert_string_equal(a->state, "/home/alice/.local/state/ofsync/work.db");
    assert_int_equal(a->layout, CFG_LAYOUT_MAILDIRPP);
    assert_int_equal(a->timeout, 60);
    ofs_config_free(cfg);
}

#define MINIMAL(name, extra)                                                                       \
    "[account " name "]\nhost = h\nuser = u\npass-cmd = true\nlocal = /m\n" extra

static void test_defaults(void **ctx)
{
    ofs_config *cfg = parse_ok(MINIMAL("a", ""));
    const cfg_account *a = &cfg->accounts[0];
    assert_int_equal(a->tls, CFG_TLS_IMPLICIT);
    assert_int_equal(a->port, 993);
    assert_int_equal(a->timeout, 60);
    assert_int_equal(a->layout, CFG_LAYOUT_MAILDIRPP);
    assert_string_equal(a->state, "/home/t/.local/state/ofsync/a.db");
    ofs_config_free(cfg);

    setenv("XDG_STATE_HOME", "/xdg/state", 1);
    cfg = parse_ok(MINIMAL("b", "tls = starttls\nlayout = verbatim\n"));
    a = &cfg->accounts[0];
    assert_int_equal(a->tls, CFG_TLS_STARTTLS);
    assert_int_equal(a->port, 143);
    assert_int_equal(a->layout, CFG_LAYOUT_VERBATIM);
    assert_string_equal(a->state, "/xdg/state/ofsync/b.db");
    ofs_config_free(cfg);

    /* The tls line after the port does not change an explicit port. */
    cfg = parse_ok(MINIMAL("c", "port = 2000\ntls = none\n"));
    assert_int_equal(cfg->accounts[0].port, 2000);
    ofs_config_free(cfg);
    cfg = parse_ok(MINIMAL("d", "tls = none\n"));
    assert_int_equal(cfg->accounts[0].port, 143);
    ofs_config_free(cfg);

    /* A relative XDG_STATE_HOME is ignored, as the XDG spec says. */
    setenv("XDG_STATE_HOME", "rel/state", 1);
    cfg = parse_ok(MINIMAL("e", ""));
    assert_string_equal(cfg->accounts[0].state, "/home/t/.local/state/ofsync/e.db");
    ofs_config_free(cfg);
}

static void test_errors(void **ctx)
{
    parse_fails("[account work]\nhost = h\nhots = x\n",
                "t.conf:3: unknown key 'hots' in [account work]");
    parse_fails("\n\n[account work]\nport = x\n", "t.conf:4: bad port 'x' (1-65535)");
    parse_fails("[account work]\nport = 0\n", "t.conf:2: bad port '0' (1-65535)");
    parse_fails("[account work]\nport = 65536\n", "t.conf:2: bad port '65536' (1-65535)");
    parse_fails("[account work]\nport = 99999999999999999999\n",
                "t.conf:2: bad port '99999999999999999999' (1-65535)");
    parse_fails("[account work]\nport = -5\n", "t.conf:2: bad port '-5' (1-65535)");
    parse_fails("[account work]\ntimeout = 86401\n",
                "t.conf:2: bad timeout '86401' (1-86400 seconds)");
    parse_fails("[account work]\ntls = ssl\n",
                "t.conf:2: bad tls 'ssl' (none, starttls or implicit)");
    parse_fails("[account work]\nlayout = mh\n",
                "t.conf:2: bad layout 'mh' (maildir++ or verbatim)");
    parse_fails("# c\n\n[account work]\nuser = u\npass-cmd = true\nlocal = /m\n",
                "t.conf:3: account 'work' has no host");
    parse_fails("[account work]\nhost = h\npass-cmd = true\nlocal = /m\n",
                "t.conf:1: account 'work' has no user");
    parse_fails("[account work]\nhost = h\nuser = u\nlocal = /m\n",
                "t.conf:1: account 'work' has no pass-cmd or password-file");
    parse_fails("[account work]\nhost = h\nuser = u\npass-cmd = true\n",
                "t.conf:1: account 'work' has no local (the Maildir root)");
    /* The first section's error is found when the second starts, but names the first. */
    parse_fails("[account a]\nuser = u\n\n[account b]\n", "t.conf:1: account 'a' has no host");
    parse_fails("[account work]\nhost = a\nuser = u\nhost = b\n",
                "t.conf:4: duplicate key 'host' in [account work] (first set on line 2)");
    parse_fails("[account work]\npass-cmd = x\npassword-file = /p\n",
                "t.conf:3: account 'work' has both pass-cmd and password-file (keep one)");
    parse_fails("# top\nhost = h\n", "t.conf:2: key 'host' outside any [account NAME] section");
    parse_fails("[account work\n", "t.conf:1: malformed section header (expected [account NAME])");
    parse_fails("[server work]\n", "t.conf:1: malformed section header (expected [account NAME])");
    parse_fails("[account]\n", "t.conf:1: malformed section header (expected [account NAME])");
    parse_fails("[account work] junk\n",
                "t.conf:1: malformed section header (expected [account NAME])");
    parse_fails("[account wo/rk]\n",
                "t.conf:1: bad account name 'wo/rk' (letters, digits, '.', '_' and '-' only)");
    parse_fails(MINIMAL("a", "") "[account a]\n",
                "t.conf:6: duplicate account 'a' (first on line 1)");
    parse_fails("[account work]\nhost\n", "t.conf:2: expected 'key = value' (no '=' on this line)");
    parse_fails("[account work]\n = x\n", "t.conf:2: missing key before '='");
    parse_fails("[account work]\nhost =   # nothing\n", "t.conf:2: empty value for 'host'");
    parse_fails("[account work]\nhost = \"abc\n",
                "t.conf:2: unterminated quote in the value of 'host'");
    parse_fails("[account work]\nhost = \"abc\" def\n",
                "t.conf:2: unexpected text after the closing quote of 'host'");
    parse_fails("", "t.conf: no [account NAME] section");
    parse_fails("# only comments\n; here\n", "t.conf: no [account NAME] section");

    const char nul[] = "[account a]\nhost = h\0x\n";
    ofs_config *cfg = NULL;
    ofs_error err = {0};
    assert_int_equal(cfg_parse("t.conf", nul, sizeof nul - 1, &cfg, &err), -1);
    assert_string_equal(err.message, "t.conf:2: NUL byte in line");
}

/* Keys of the later features: policies, speed, links, watch, security. */
static void test_policy_keys(void **ctx)
{
    ofs_config *cfg = parse_ok("[account p]\nhost = h\nuser = u\npass-cmd = true\nlocal = /m\n"
                               "expunge = server\nremove-folders = yes\n"
                               "folders = * !Trash !Spam\nconnections = 1\ncompress = no\n"
                               "max-size = 5M\nreconnect-attempts = 0\n"
                               "watch-folders = INBOX Lists/dev\npoll-interval = 60\n"
                               "ca-file = ~/ca.pem\nfingerprint = SHA256:ab01\n"
                               "allow-plaintext = yes\nauth = plain login\n");
    const cfg_account *a = &cfg->accounts[0];
    assert_int_equal(a->expunge, CFG_EXPUNGE_SERVER);
    assert_true(a->remove_folders);
    assert_string_equal(a->folders, "* !Trash !Spam");
    assert_int_equal(a->connections, 1);
    assert_false(a->compress);
    assert_int_equal(a->max_size, 5u << 20);
    assert_int_equal(a->reconnect_attempts, 0);
    assert_string_equal(a->watch_folders, "INBOX Lists/dev");
    assert_int_equal(a->poll_interval, 60);
    assert_string_equal(a->ca_file, "/home/t/ca.pem");
    assert_string_equal(a->fingerprint, "SHA256:ab01");
    assert_true(a->allow_plaintext);
    assert_string_equal(a->auth, "plain login");
    ofs_config_free(cfg);

    cfg = parse_ok("[account d]\nhost = h\nuser = u\npass-cmd = true\nlocal = /m\n");
    a = &cfg->accounts[0];
    assert_int_equal(a->expunge, CFG_EXPUNGE_BOTH);
    assert_false(a->remove_folders);
    assert_string_equal(a->folders, "*");
    assert_int_equal(a->connections, 4);
    assert_true(a->compress);
    assert_int_equal(a->max_size, 0);
    assert_int_equal(a->reconnect_attempts, 5);
    assert_string_equal(a->watch_folders, "INBOX");
    assert_int_equal(a->poll_interval, 300);
    assert_null(a->ca_file);
    assert_false(a->allow_plaintext);
    ofs_config_free(cfg);

    parse_fails("[account w]\nexpunge = all\n",
                "t.conf:2: bad expunge 'all' (both, server, local or none)");
    parse_fails("[account w]\ncompress = maybe\n", "t.conf:2: bad compress 'maybe' (yes or no)");
    parse_fails("[account w]\nmax-size = 5X\n",
                "t.conf:2: bad max-size '5X' (bytes, with an optional k, M or G)");
    parse_fails(
        "[account w]\nmax-size = 99999999999999999999G\n",
        "t.conf:2: bad max-size '99999999999999999999G' (bytes, with an optional k, M or G)");
    parse_fails("[account w]\nconnections = 0\n", "t.conf:2: bad connections '0' (1-32)");
}

static void test_comments_quotes(void **ctx)
{
    ofs_config *cfg = parse_ok("; semicolon comment\r\n"
                               "   # indented comment\r\n"
                               "[account  q.1_x-y ]   # trailing comment\r\n"
                               "host=h\r\n"
                               "user = al#ice\r\n"
                               "pass-cmd = \"echo 'a # b'\"   # the # in quotes stays\r\n"
                               "local = \"/with space/m\"\r\n"
                               "state=\t/s.db\t\r\n");
    const cfg_account *a = &cfg->accounts[0];
    assert_string_equal(a->name, "q.1_x-y");
    assert_string_equal(a->host, "h");
    assert_string_equal(a->user, "al#ice");
    assert_string_equal(a->pass_cmd, "echo 'a # b'");
    assert_string_equal(a->local, "/with space/m");
    assert_string_equal(a->state, "/s.db");
    ofs_config_free(cfg);
}

static void test_tilde(void **ctx)
{
    ofs_config *cfg = parse_ok("[account a]\nhost = h\nuser = u\n"
                               "password-file = ~/.pw\nlocal = ~/Mail\nstate = ~\n");
    const cfg_account *a = &cfg->accounts[0];
    assert_string_equal(a->local, "/home/t/Mail");
    assert_string_equal(a->password_file, "/home/t/.pw");
    assert_string_equal(a->state, "/home/t");
    ofs_config_free(cfg);

    /* Only a leading ~ is expanded. */
    cfg = parse_ok("[account a]\nhost = h\nuser = u\npass-cmd = true\nlocal = /x/~/y\n");
    assert_string_equal(cfg->accounts[0].local, "/x/~/y");
    ofs_config_free(cfg);

    parse_fails("[account a]\nlocal = ~bob/Mail\n",
                "t.conf:2: cannot expand '~bob/Mail' in local: only ~/ is supported");
    unsetenv("HOME");
    parse_fails("[account a]\nlocal = ~/Mail\n",
                "t.conf:2: cannot expand '~' in local: HOME is not set");
}

static void test_find_account(void **ctx)
{
    ofs_config *cfg = parse_ok(MINIMAL("one", "") "\n" MINIMAL("two", "port = 7\n"));
    assert_int_equal(cfg->n_accounts, 2);
    const cfg_account *a = cfg_find_account(cfg, "two");
    assert_non_null(a);
    assert_string_equal(a->name, "two");
    assert_int_equal(a->port, 7);
    assert_ptr_equal(cfg_find_account(cfg, "one"), &cfg->accounts[0]);
    assert_null(cfg_find_account(cfg, "three"));
    assert_null(cfg_find_account(cfg, "tw"));
    ofs_config_free(cfg);
}

static int password(const char *extra, char **pw, ofs_error *err)
{
    char *text = xasprintf("[account work]\nhost = h\nuser = u\nlocal = /m\n%s\n", extra);
    ofs_config *cfg = parse_ok(text);
    free(text);
    int rc = cfg_account_password(&cfg->accounts[0], pw, err);
    ofs_config_free(cfg);
    return rc;
}

static void test_pass_cmd(void **ctx)
{
    char *pw = NULL;
    ofs_error err = {0};
    assert_int_equal(password("pass-cmd = printf 'hunter2\\nsecond line\\n'", &pw, &err), 0);
    assert_string_equal(pw, "hunter2");
    free(pw);

    assert_int_equal(password("pass-cmd = printf 'crlf\\r\\n'", &pw, &err), 0);
    assert_string_equal(pw, "crlf");
    free(pw);

    assert_int_equal(password("pass-cmd = printf nonewline", &pw, &err), 0);
    assert_string_equal(pw, "nonewline");
    free(pw);

    pw = NULL;
    assert_int_equal(password("pass-cmd = echo hunter2; exit 3", &pw, &err), -1);
    assert_null(pw);
    assert_int_equal(err.code, OFS_E_CONFIG);
    assert_string_equal(err.message, "pass-cmd for account 'work' failed (exit status 3)");

    assert_int_equal(password("pass-cmd = true", &pw, &err), -1);
    assert_null(pw);
    assert_non_null(strstr(err.message, "pass-cmd for account 'work' failed (exit status 0"));

    assert_int_equal(password("pass-cmd = /nonexistent/command 2>/dev/null", &pw, &err), -1);
    assert_string_equal(err.message, "pass-cmd for account 'work' failed (exit status 127)");

    /* Much more output than the limit: read to the end, no deadlock, first line kept. */
    assert_int_equal(password("pass-cmd = echo big; head -c 1000000 /dev/zero", &pw, &err), 0);
    assert_string_equal(pw, "big");
    free(pw);

    /* Our descriptors, even without O_CLOEXEC, are not inherited by the command. */
    int fd = open("/dev/null", O_RDONLY);
    assert_true(fd > 2);
    char *cmd = xasprintf("pass-cmd = \"if test -e /proc/self/fd/%d; then echo leaked; "
                          "else echo closed; fi\"",
                          fd);
    assert_int_equal(password(cmd, &pw, &err), 0);
    assert_string_equal(pw, "closed");
    free(pw);
    free(cmd);
    close(fd);
}

static void test_password_file(void **ctx)
{
    char *path = write_file("pw", "s3cret\nignored\n", 0600);
    char *line = xasprintf("password-file = %s", path);
    char *pw = NULL;
    ofs_error err = {0};
    assert_int_equal(password(line, &pw, &err), 0);
    assert_string_equal(pw, "s3cret");
    free(pw);
    pw = NULL;

    assert_int_equal(chmod(path, 0644), 0);
    assert_int_equal(password(line, &pw, &err), -1);
    assert_null(pw);
    assert_int_equal(err.code, OFS_E_CONFIG);
    char *want = xasprintf("password file %s is readable by others: run chmod 600 %s", path, path);
    assert_string_equal(err.message, want);
    assert_null(strstr(err.message, "s3cret"));
    free(want);

    assert_int_equal(chmod(path, 0640), 0);
    assert_int_equal(password(line, &pw, &err), -1);
    assert_non_null(strstr(err.message, "chmod 600"));
    free(line);
    free(path);

    path = write_file("empty", "\n", 0600);
    line = xasprintf("password-file = %s", path);
    assert_int_equal(password(line, &pw, &err), -1);
    assert_null(pw);
    assert_non_null(strstr(err.message, path));
    free(line);
    free(path);

    assert_int_equal(password("password-file = /nonexistent/pw", &pw, &err), -1);
    assert_string_equal(err.message,
                        "cannot read password file /nonexistent/pw: No such file or directory");
}

static void test_load(void **ctx)
{
    ofs_config *cfg = NULL;
    ofs_error err = {0};
    char *missing = xasprintf("%s/nope", tmpdir);
    assert_int_equal(ofs_config_load(missing, &cfg, &err), -1);
    assert_null(cfg);
    assert_int_equal(err.code, OFS_E_CONFIG);
    char *want = xasprintf("cannot read config %s: No such file or directory", missing);
    assert_int_equal(strncmp(err.message, want, strlen(want)), 0);
    assert_non_null(strstr(err.message, "--config"));
    free(want);
    free(missing);

    char *path = write_file("config", example, 0644);
    assert_int_equal(ofs_config_load(path, &cfg, &err), 0);
    assert_string_equal(cfg->path, path);
    assert_string_equal(cfg->accounts[0].host, "127.0.0.1");
    ofs_config_free(cfg);
    free(path);

    /* Errors name the file they came from. */
    path = write_file("bad", "[account a]\nhots = x\n", 0644);
    assert_int_equal(ofs_config_load(path, &cfg, &err), -1);
    want = xasprintf("%s:2: unknown key 'hots' in [account a]", path);
    assert_string_equal(err.message, want);
    free(want);
    free(path);

    /* NULL: $XDG_CONFIG_HOME/ofsync/config. */
    char *dir = xasprintf("%s/xdg", tmpdir);
    char *sub = xasprintf("%s/ofsync", dir);
    mkdir(dir, 0700);
    mkdir(sub, 0700);
    free(write_file("xdg/ofsync/config", MINIMAL("fromxdg", ""), 0600));
    setenv("XDG_CONFIG_HOME", dir, 1);
    assert_int_equal(ofs_config_load(NULL, &cfg, &err), 0);
    assert_non_null(cfg_find_account(cfg, "fromxdg"));
    ofs_config_free(cfg);
    free(sub);
    free(dir);

    /* Without XDG_CONFIG_HOME: ~/.config/ofsync/config. */
    unsetenv("XDG_CONFIG_HOME");
    setenv("HOME", tmpdir, 1);
    assert_int_equal(ofs_config_load(NULL, &cfg, &err), -1);
    want = xasprintf("cannot read config %s/.config/ofsync/config: No such file", tmpdir);
    assert_int_equal(strncmp(err.message, want, strlen(want)), 0);
    free(want);

    /* Something that is not a config at all: refused by size before parsing. */
    char *big = xmalloc(2 * 1024 * 1024 + 1);
    memset(big, '#', 2 * 1024 * 1024);
    big[2 * 1024 * 1024] = '\0';
    path = write_file("big", big, 0600);
    assert_int_equal(ofs_config_load(path, &cfg, &err), -1);
    assert_non_null(strstr(err.message, "larger than"));
    assert_int_equal(cfg_parse("x", big, strlen(big), &cfg, &err), -1);
    assert_non_null(strstr(err.message, "larger than"));
    free(big);
    free(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_example, env_setup),
        cmocka_unit_test_setup(test_defaults, env_setup),
        cmocka_unit_test_setup(test_errors, env_setup),
        cmocka_unit_test_setup(test_policy_keys, env_setup),
        cmocka_unit_test_setup(test_comments_quotes, env_setup),
        cmocka_unit_test_setup(test_tilde, env_setup),
        cmocka_unit_test_setup(test_find_account, env_setup),
        cmocka_unit_test_setup(test_pass_cmd, env_setup),
        cmocka_unit_test_setup(test_password_file, env_setup),
        cmocka_unit_test_setup(test_load, env_setup),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
