/* test_fswatch.c: inotify on a Maildir tree reports the right folder for message changes,
 * a structure change for new folders, and keeps watching across rescans. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "notify/fswatch.h"
#include "sync/config.h"
#include "util/mem.h"

typedef struct seen {
    int folder, structure, all;
    char last[256];
} seen;

static void on_change(void *ctx, enum fswatch_kind kind, const char *folder)
{
    seen *s = ctx;
    if (kind == FSW_FOLDER) {
        s->folder++;
        snprintf(s->last, sizeof s->last, "%s", folder);
    } else if (kind == FSW_STRUCTURE) {
        s->structure++;
    } else {
        s->all++;
    }
}

static void mkdirs(const char *root, const char *sub)
{
    char *p = xasprintf("%s/%s", root, sub);
    for (char *q = p + strlen(root) + 1; *q; q++)
        if (*q == '/') {
            *q = '\0';
            mkdir(p, 0700);
            *q = '/';
        }
    mkdir(p, 0700);
    free(p);
}

static void touch(const char *root, const char *rel)
{
    char *p = xasprintf("%s/%s", root, rel);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fclose(f);
    free(p);
}

/* Events are queued by the kernel before the syscall that caused them returns. */
static seen drain(fswatch *w)
{
    seen s = {0};
    struct pollfd p = {.fd = fswatch_fd(w), .events = POLLIN};
    while (poll(&p, 1, 0) > 0)
        assert_int_equal(fswatch_read(w, on_change, &s, NULL), 0);
    return s;
}

static char *make_root(void)
{
    char tmpl[] = "/tmp/ofs-fsw-XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    return xstrdup(tmpl);
}

static void test_mdpp(void **state)
{
    (void)state;
    char *root = make_root();
    mkdirs(root, "cur");
    mkdirs(root, "new");
    mkdirs(root, ".Lists.dev/cur");
    mkdirs(root, ".Lists.dev/new");
    fswatch *w;
    assert_int_equal(fswatch_open(root, CFG_LAYOUT_MAILDIRPP, &w, NULL), 0);
    assert_int_equal(fswatch_rescan(w, NULL), 0);
    assert_int_equal(fswatch_count(w), 6); /* root, INBOX cur+new, .Lists.dev, its cur+new */

    touch(root, ".Lists.dev/new/1.key");
    seen s = drain(w);
    assert_int_equal(s.folder, 1);
    assert_string_equal(s.last, "Lists/dev");
    assert_int_equal(s.structure, 0);

    touch(root, "cur/2.key:2,S");
    s = drain(w);
    assert_string_equal(s.last, "INBOX");

    mkdirs(root, ".New");
    s = drain(w);
    assert_int_equal(s.structure, 1);
    assert_int_equal(s.folder, 0);

    /* After a rescan the new folder's cur/ is watched, the old watches still work. */
    mkdirs(root, ".New/cur");
    assert_int_equal(fswatch_rescan(w, NULL), 0);
    drain(w);
    touch(root, ".New/cur/3.key:2,");
    touch(root, ".Lists.dev/cur/4.key:2,F");
    s = drain(w);
    assert_int_equal(s.folder, 2);
    assert_string_equal(s.last, "Lists/dev");

    /* Dot files are not messages. */
    touch(root, "new/.hidden");
    s = drain(w);
    assert_int_equal(s.folder, 0);
    fswatch_close(w);
    char *cmd = xasprintf("rm -rf %s", root);
    assert_int_equal(system(cmd), 0);
    free(cmd);
    free(root);
}

static void test_verbatim(void **state)
{
    (void)state;
    char *root = make_root();
    mkdirs(root, "Archive/2022/cur");
    mkdirs(root, "Archive/2022/new");
    fswatch *w;
    assert_int_equal(fswatch_open(root, CFG_LAYOUT_VERBATIM, &w, NULL), 0);
    assert_int_equal(fswatch_rescan(w, NULL), 0);
    touch(root, "Archive/2022/new/1.key");
    seen s = drain(w);
    assert_int_equal(s.folder, 1);
    assert_string_equal(s.last, "Archive/2022");
    mkdirs(root, "Archive/2023");
    s = drain(w);
    assert_int_equal(s.structure, 1);
    fswatch_close(w);
    char *cmd = xasprintf("rm -rf %s", root);
    assert_int_equal(system(cmd), 0);
    free(cmd);
    free(root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mdpp),
        cmocka_unit_test(test_verbatim),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
