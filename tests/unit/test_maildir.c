/* test_maildir.c: unit tests of the local store: Maildir scan, delivery, flag renames, removal,
 * folder name mapping in both layouts, and a round trip through the store_ops vtable. */
/* cmocka needs these first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "maildir/maildir.h"
#include "maildir/maildir_store.h"
#include "maildir/names.h"
#include "sync/config.h"
#include "sync/store.h"
#include "util/arena.h"
#include "util/mem.h"

/* ---- helpers ---- */

static char *make_tmpdir(void)
{
    char tmpl[] = "/tmp/ofs-maildir-XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    return xstrdup(tmpl);
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

static void rm_rf(char *dir)
{
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(dir);
}

static void put_file(const char *dir, const char *rel, const char *content)
{
    char *p = xasprintf("%s/%s", dir, rel);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(content, f);
    fclose(f);
    free(p);
}

static int exists(const char *dir, const char *rel)
{
    char *p = xasprintf("%s/%s", dir, rel);
    struct stat st;
    int ok = lstat(p, &st) == 0;
    free(p);
    return ok;
}

static char *slurp(const char *dir, const char *rel)
{
    char *p = xasprintf("%s/%s", dir, rel);
    FILE *f = fopen(p, "r");
    free(p);
    if (!f)
        return NULL;
    buf b;
    buf_init(&b);
    buf_adds(&b, "");
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        buf_add(&b, chunk, n);
    fclose(f);
    return b.data;
}

static size_t count_entries(const char *dir, const char *sub)
{
    char *p = xasprintf("%s/%s", dir, sub);
    DIR *d = opendir(p);
    free(p);
    assert_non_null(d);
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

static void make_maildir(const char *dir)
{
    static const char *const subs[] = {"cur", "new", "tmp"};
    mkdir(dir, 0700);
    for (int i = 0; i < 3; i++) {
        char *p = xasprintf("%s/%s", dir, subs[i]);
        assert_int_equal(mkdir(p, 0700), 0);
        free(p);
    }
}

static void mkdir_rel(const char *dir, const char *rel)
{
    char *p = xasprintf("%s/%s", dir, rel);
    assert_int_equal(mkdir(p, 0700), 0);
    free(p);
}

static void make_maildir_rel(const char *dir, const char *rel)
{
    char *p = xasprintf("%s/%s", dir, rel);
    make_maildir(p);
    free(p);
}

static int memfd_with(const char *content)
{
    int fd = memfd_create("msg", MFD_CLOEXEC);
    assert_true(fd >= 0);
    size_t n = strlen(content);
    assert_int_equal(write(fd, content, n), (ssize_t)n);
    assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
    return fd;
}

static void move(const char *dir, const char *from, const char *to)
{
    char *a = xasprintf("%s/%s", dir, from), *b = xasprintf("%s/%s", dir, to);
    assert_int_equal(rename(a, b), 0);
    free(a);
    free(b);
}

/* ---- names of message files ---- */

static void test_key_and_info(void **state)
{
    (void)state;
    const char *info;
    assert_int_equal(maildir_key_len("123.M4P5.host:2,FS", &info), 13);
    assert_string_equal(info, "FS");
    assert_int_equal(maildir_key_len("123.M4P5.host!2,S", &info), 13);
    assert_string_equal(info, "S");
    assert_int_equal(maildir_key_len("plain", &info), 5);
    assert_null(info);
    assert_int_equal(maildir_key_len("k:1,x", &info), 5); /* only version 2 info counts */

    assert_int_equal(maildir_info_flags("DFRST"),
                     FLAG_DRAFT | FLAG_FLAGGED | FLAG_ANSWERED | FLAG_SEEN | FLAG_DELETED);
    assert_int_equal(maildir_info_flags("PSab"), FLAG_SEEN);
    assert_int_equal(maildir_info_flags(""), 0);

    char *n = maildir_name_with_flags("k:2,PS", FLAG_SEEN | FLAG_FLAGGED);
    assert_string_equal(n, "k:2,FPS");
    free(n);
    n = maildir_name_with_flags("k!2,S", FLAG_SEEN | FLAG_ANSWERED);
    assert_string_equal(n, "k!2,RS");
    free(n);
    n = maildir_name_with_flags("k", FLAG_SEEN | FLAG_ANSWERED | FLAG_FLAGGED);
    assert_string_equal(n, "k:2,FRS");
    free(n);
    n = maildir_name_with_flags("k:2,FSa", FLAG_SEEN);
    assert_string_equal(n, "k:2,Sa");
    free(n);
    n = maildir_name_with_flags("k:2,DT", 0);
    assert_string_equal(n, "k:2,");
    free(n);
}

static void test_new_key(void **state)
{
    (void)state;
    char *a = maildir_new_key(), *b = maildir_new_key();
    assert_string_not_equal(a, b);
    char pid[32];
    snprintf(pid, sizeof pid, "P%ldQ", (long)getpid());
    assert_non_null(strstr(a, pid));
    assert_non_null(strstr(a, ".M"));
    assert_null(strchr(a, '/'));
    assert_null(strchr(a, ':'));
    const char *info;
    assert_int_equal(maildir_key_len(a, &info), strlen(a));
    free(a);
    free(b);
}

/* ---- one folder ---- */

static void test_scan(void **state)
{
    (void)state;
    char *dir = make_tmpdir();
    make_maildir(dir);
    put_file(dir, "new/a", "A");
    put_file(dir, "new/b:2,S", "B"); /* new/ never carries flags */
    put_file(dir, "cur/c:2,FS", "C");
    put_file(dir, "cur/d:2,DRT", "D");
    put_file(dir, "cur/e!2,S", "E");
    put_file(dir, "cur/f", "F");
    put_file(dir, "cur/.hidden:2,S", "H");
    put_file(dir, "new/c", "C again");     /* duplicate key across new/ and cur/ */
    put_file(dir, "cur/d:2,S", "D again"); /* duplicate key twice in cur/ */

    maildir *md;
    ofs_error err;
    assert_int_equal(maildir_open(dir, &md, &err), 0);
    assert_int_equal(md->live, 6);
    assert_int_equal(md->dupes, 2);
    assert_non_null(md->dupe_example);

    const maildir_entry *e = maildir_find(md, "a");
    assert_non_null(e);
    assert_false(e->in_cur);
    assert_int_equal(e->flags, 0);
    e = maildir_find(md, "b");
    assert_non_null(e);
    assert_int_equal(e->flags, 0);
    e = maildir_find(md, "c");
    assert_non_null(e);
    assert_true(e->in_cur); /* the cur/ copy wins over new/ */
    assert_int_equal(e->flags, FLAG_FLAGGED | FLAG_SEEN);
    e = maildir_find(md, "d");
    assert_non_null(e);
    assert_true(e->in_cur);
    e = maildir_find(md, "e");
    assert_non_null(e);
    assert_int_equal(e->flags, FLAG_SEEN);
    e = maildir_find(md, "f");
    assert_non_null(e);
    assert_int_equal(e->flags, 0);
    assert_null(maildir_find(md, ".hidden"));
    assert_null(maildir_find(md, "zz"));

    char *p = maildir_entry_path(md, maildir_find(md, "c"));
    char *want = xasprintf("%s/cur/c:2,FS", dir);
    assert_string_equal(p, want);
    free(p);
    free(want);
    assert_int_equal(maildir_entry_size(md, maildir_find(md, "c")), 1);

    maildir_close(md);
    rm_rf(dir);
}

static void test_scan_many(void **state)
{
    (void)state;
    char *dir = make_tmpdir();
    make_maildir(dir);
    for (int i = 0; i < 3000; i++) {
        char rel[64];
        snprintf(rel, sizeof rel, "cur/%d.M1P1.h:2,%s", i, i % 2 ? "S" : "");
        put_file(dir, rel, "x");
    }
    maildir *md;
    ofs_error err;
    assert_int_equal(maildir_open(dir, &md, &err), 0);
    assert_int_equal(md->live, 3000);
    assert_int_equal(md->dupes, 0);
    size_t name_bytes = 0;
    for (int i = 0; i < 3000; i++) {
        char key[64];
        snprintf(key, sizeof key, "%d.M1P1.h", i);
        const maildir_entry *e = maildir_find(md, key);
        assert_non_null(e);
        assert_int_equal(e->flags, i % 2 ? FLAG_SEEN : 0);
        assert_string_equal(e->key, key);
        assert_string_equal(maildir_entry_rest(e), i % 2 ? ":2,S" : ":2,");
        name_bytes += strlen(key) + strlen(maildir_entry_rest(e)) + 2;
    }
    /* Compact: the names in one arena (a block's tail of slack), the entries without the slack
     * of growth, the key table at most 3/4 full and at most 3/8 empty. */
    assert_true(arena_footprint(md->names) <= name_bytes + 64 * 1024 + 64);
    assert_true(md->cap <= md->n + md->n / 8);
    assert_true(md->nslots * 3 >= md->n * 4 && md->nslots * 3 < md->n * 8);
    maildir_close(md);
    rm_rf(dir);
}

/* A scan gives the table's slack back; the deliveries after it must still find room. */
static void test_deliver_after_small_scan(void **state)
{
    (void)state;
    char *dir = make_tmpdir();
    make_maildir(dir);
    put_file(dir, "cur/1.M1P1.h:2,S", "x");
    maildir *md;
    ofs_error err;
    assert_int_equal(maildir_open(dir, &md, &err), 0);
    char *keys[3];
    for (int i = 0; i < 3; i++) {
        int fd = memfd_with("From: a@example.org\r\n\r\nbody\r\n");
        assert_int_equal(maildir_deliver(md, fd, 0, FLAG_SEEN, &keys[i], NULL, &err), 0);
        close(fd);
    }
    assert_int_equal(maildir_flush(md, &err), 0);
    assert_int_equal(md->live, 4);
    for (int i = 0; i < 3; i++) {
        assert_non_null(maildir_find(md, keys[i]));
        free(keys[i]);
    }
    maildir_close(md);
    rm_rf(dir);
}

static void test_open_creates_subdirs(void **state)
{
    (void)state;
    char *dir = make_tmpdir();
    maildir *md;
    ofs_error err;
    assert_int_equal(maildir_open(dir, &md, &err), 0);
    assert_true(exists(dir, "cur") && exists(dir, "new") && exists(dir, "tmp"));
    maildir_close(md);
    char *missing = xasprintf("%s/nope", dir);
    assert_int_equal(maildir_open(missing, &md, &err), -1);
    assert_int_equal(err.code, OFS_E_IO);
    assert_non_null(strstr(err.message, missing));
    free(missing);
    rm_rf(dir);
}

static void test_deliver_flush(void **state)
{
    (void)state;
    char *dir = make_tmpdir();
    make_maildir(dir);
    maildir *md;
    ofs_error err;
    assert_int_equal(maildir_open(dir, &md, &err), 0);

    const char *bodies[3] = {"Subject: one\n\nbody one\n", "Subject: two\n\n2\n",
                             "Subject: three\n\n3\n"};
    unsigned flags[3] = {0, FLAG_SEEN | FLAG_FLAGGED, FLAG_ANSWERED};
    char *keys[3];
    for (int i = 0; i < 3; i++) {
        int fd = memfd_with(bodies[i]);
        uint64_t written;
        assert_int_equal(
            maildir_deliver(md, fd, strlen(bodies[i]), flags[i], &keys[i], &written, &err), 0);
        assert_int_equal(written, strlen(bodies[i]));
        close(fd);
    }
    /* Invisible until flush. */
    assert_int_equal(count_entries(dir, "tmp"), 3);
    assert_int_equal(count_entries(dir, "cur") + count_entries(dir, "new"), 0);
    assert_null(maildir_find(md, keys[0]));

    assert_int_equal(maildir_flush(md, &err), 0);
    assert_int_equal(count_entries(dir, "tmp"), 0);
    assert_int_equal(count_entries(dir, "new"), 1);
    assert_int_equal(count_entries(dir, "cur"), 2);

    char *rel = xasprintf("new/%s", keys[0]);
    char *got = slurp(dir, rel);
    assert_non_null(got);
    assert_string_equal(got, bodies[0]);
    free(got);
    free(rel);
    rel = xasprintf("cur/%s:2,FS", keys[1]);
    got = slurp(dir, rel);
    assert_non_null(got);
    assert_string_equal(got, bodies[1]);
    free(got);
    free(rel);
    rel = xasprintf("cur/%s:2,R", keys[2]);
    assert_true(exists(dir, rel));
    free(rel);
    assert_int_equal(maildir_find(md, keys[1])->flags, FLAG_SEEN | FLAG_FLAGGED);

    /* A rescan agrees with what flush recorded. */
    assert_int_equal(maildir_scan(md, &err), 0);
    assert_int_equal(md->live, 3);
    for (int i = 0; i < 3; i++) {
        assert_non_null(maildir_find(md, keys[i]));
        assert_int_equal(maildir_find(md, keys[i])->flags, flags[i]);
        free(keys[i]);
    }
    maildir_close(md);
    rm_rf(dir);
}

/* More than the per-file fsync limit: the batch goes through syncfs. */
static void test_deliver_big_batch(void **state)
{
    (void)state;
    char *dir = make_tmpdir();
    make_maildir(dir);
    maildir *md;
    ofs_error err;
    assert_int_equal(maildir_open(dir, &md, &err), 0);
    for (int i = 0; i < 40; i++) {
        char body[64];
        snprintf(body, sizeof body, "Subject: %d\n\n%d\n", i, i);
        int fd = memfd_with(body);
        char *key;
        /* size 0: copy until end of file */
        assert_int_equal(maildir_deliver(md, fd, 0, FLAG_SEEN, &key, NULL, &err), 0);
        close(fd);
        free(key);
    }
    assert_int_equal(maildir_flush(md, &err), 0);
    assert_int_equal(count_entries(dir, "tmp"), 0);
    assert_int_equal(count_entries(dir, "cur"), 40);
    assert_int_equal(md->live, 40);
    maildir_close(md);
    rm_rf(dir);
}

static void test_deliver_short_and_unflushed(void **state)
{
    (void)state;
    char *dir = make_tmpdir();
    make_maildir(dir);
    maildir *md;
    ofs_error err;
    assert_int_equal(maildir_open(dir, &md, &err), 0);
    int fd = memfd_with("short");
    char *key;
    assert_int_equal(maildir_deliver(md, fd, 100, 0, &key, NULL, &err), -1);
    assert_int_equal(err.code, OFS_E_IO);
    assert_null(key);
    assert_int_equal(count_entries(dir, "tmp"), 0);
    lseek(fd, 0, SEEK_SET);
    assert_int_equal(maildir_deliver(md, fd, 5, 0, &key, NULL, &err), 0);
    free(key);
    close(fd);
    assert_int_equal(count_entries(dir, "tmp"), 1);
    maildir_close(md); /* never flushed: nothing stays behind */
    assert_int_equal(count_entries(dir, "tmp"), 0);
    assert_int_equal(count_entries(dir, "new"), 0);
    rm_rf(dir);
}

static void test_deliver_disk_full(void **state)
{
    (void)state;
    char *dir = make_tmpdir();
    if (mount("tmpfs", dir, "tmpfs", 0, "size=64k") != 0) {
        rm_rf(dir);
        skip(); /* needs privileges to make a tiny file system */
    }
    make_maildir(dir);
    maildir *md;
    ofs_error err;
    assert_int_equal(maildir_open(dir, &md, &err), 0);
    size_t n = 1 << 20;
    int fd = memfd_create("big", MFD_CLOEXEC);
    assert_int_equal(ftruncate(fd, (off_t)n), 0);
    char *key;
    assert_int_equal(maildir_deliver(md, fd, n, 0, &key, NULL, &err), -1);
    assert_int_equal(err.code, OFS_E_NOSPC);
    assert_non_null(strstr(err.message, "local disk full while writing"));
    char *where = xasprintf("%s/tmp/", dir);
    assert_non_null(strstr(err.message, where));
    free(where);
    assert_int_equal(count_entries(dir, "tmp"), 0);
    close(fd);
    maildir_close(md);
    assert_int_equal(umount(dir), 0);
    rm_rf(dir);
}

static void test_set_flags(void **state)
{
    (void)state;
    char *dir = make_tmpdir();
    make_maildir(dir);
    put_file(dir, "cur/x:2,S", "X");
    put_file(dir, "new/y", "Y");
    put_file(dir, "cur/z:2,PS", "Z");
    put_file(dir, "new/w", "W");
    maildir *md;
    ofs_error err;
    assert_int_equal(maildir_open(dir, &md, &err), 0);

    assert_int_equal(maildir_set_flags(md, "x", 0, FLAG_FLAGGED, 0, &err), 0);
    assert_true(exists(dir, "cur/x:2,FS"));
    assert_false(exists(dir, "cur/x:2,S"));
    assert_int_equal(maildir_set_flags(md, "x", 0, 0, FLAG_SEEN, &err), 0);
    assert_true(exists(dir, "cur/x:2,F"));
    assert_int_equal(maildir_find(md, "x")->flags, FLAG_FLAGGED);

    assert_int_equal(maildir_set_flags(md, "y", 0, FLAG_SEEN, 0, &err), 0);
    assert_true(exists(dir, "cur/y:2,S"));
    assert_false(exists(dir, "new/y"));

    assert_int_equal(maildir_set_flags(md, "z", 0, FLAG_FLAGGED | FLAG_DELETED, 0, &err), 0);
    assert_true(exists(dir, "cur/z:2,FPST")); /* unknown P kept, ASCII order */

    /* No flag to set: a new/ message stays where it is. */
    assert_int_equal(maildir_set_flags(md, "w", 0, 0, FLAG_SEEN, &err), 0);
    assert_true(exists(dir, "new/w"));

    assert_int_equal(maildir_flush(md, &err), 0);
    assert_int_equal(maildir_scan(md, &err), 0);
    assert_int_equal(maildir_find(md, "z")->flags, FLAG_FLAGGED | FLAG_SEEN | FLAG_DELETED);
    maildir_close(md);
    rm_rf(dir);
}

/* A folder opened unread finds each file by the name its key and flags give, one stat each,
 * without reading the folder; a file elsewhere (a reader's keyword, a move) makes it read. */
static void test_open_unread(void **state)
{
    (void)state;
    char *dir = make_tmpdir();
    make_maildir(dir);
    put_file(dir, "cur/x:2,S", "X");
    put_file(dir, "new/y", "Y");
    put_file(dir, "cur/z:2,Sa", "Z");
    put_file(dir, "cur/v:2,", "V");
    maildir *md;
    ofs_error err;
    assert_int_equal(maildir_open_unread(dir, &md, &err), 0);
    assert_int_equal(md->n, 0);

    assert_int_equal(maildir_set_flags(md, "x", FLAG_SEEN, FLAG_FLAGGED, 0, &err), 0);
    assert_true(exists(dir, "cur/x:2,FS"));
    assert_int_equal(maildir_set_flags(md, "y", 0, FLAG_SEEN, 0, &err), 0);
    assert_true(exists(dir, "cur/y:2,S"));
    assert_int_equal(maildir_remove(md, "v", 0, &err), 0); /* flagless, moved to cur/ */
    assert_false(exists(dir, "cur/v:2,"));
    assert_false(md->scanned);
    assert_int_equal(md->n, 3);

    /* Named by its flags as cur/z:2,S, it is cur/z:2,Sa: found by reading the folder. */
    assert_int_equal(maildir_set_flags(md, "z", FLAG_SEEN, FLAG_FLAGGED, 0, &err), 0);
    assert_true(exists(dir, "cur/z:2,FSa"));
    assert_true(md->scanned);
    assert_int_equal(md->live, 3);
    /* Gone under every name: vanished, as with a folder that was read. */
    assert_int_equal(maildir_remove(md, "gone", 0, &err), 1);
    maildir_close(md);

    /* Deliveries into a folder opened unread are not remembered, and found by name. */
    assert_int_equal(maildir_open_unread(dir, &md, &err), 0);
    char *keys[2];
    for (int i = 0; i < 2; i++) {
        int fd = memfd_with("From: a@example.org\r\n\r\nbody\r\n");
        assert_int_equal(maildir_deliver(md, fd, 0, i ? FLAG_SEEN : 0, &keys[i], NULL, &err), 0);
        close(fd);
    }
    assert_int_equal(maildir_flush(md, &err), 0);
    assert_int_equal(md->n, 0);
    assert_int_equal(maildir_set_flags(md, keys[0], 0, FLAG_FLAGGED, 0, &err), 0);
    assert_int_equal(maildir_set_flags(md, keys[1], FLAG_SEEN, FLAG_ANSWERED, 0, &err), 0);
    assert_false(md->scanned);
    char *want = maildir_name_with_flags(keys[1], FLAG_SEEN | FLAG_ANSWERED), *rel;
    rel = xasprintf("cur/%s", want);
    assert_true(exists(dir, rel));
    for (int i = 0; i < 2; i++)
        free(keys[i]);
    free(want);
    free(rel);
    maildir_close(md);
    rm_rf(dir);
}

/* Another reader renames files between our scan and our change: its change must survive. */
static void test_concurrent_rename(void **state)
{
    (void)state;
    char *dir = make_tmpdir();
    make_maildir(dir);
    put_file(dir, "cur/k:2,S", "K");
    put_file(dir, "new/m", "M");
    maildir *md;
    ofs_error err;
    assert_int_equal(maildir_open(dir, &md, &err), 0);

    move(dir, "cur/k:2,S", "cur/k:2,RS"); /* the reader marks it answered */
    assert_int_equal(maildir_set_flags(md, "k", 0, FLAG_FLAGGED, 0, &err), 0);
    assert_true(exists(dir, "cur/k:2,FRS"));
    assert_false(exists(dir, "cur/k:2,RS"));
    assert_int_equal(maildir_find(md, "k")->flags, FLAG_FLAGGED | FLAG_ANSWERED | FLAG_SEEN);

    move(dir, "new/m", "cur/m:2,S"); /* the reader reads it */
    assert_int_equal(maildir_set_flags(md, "m", 0, FLAG_FLAGGED, 0, &err), 0);
    assert_true(exists(dir, "cur/m:2,FS"));
    assert_int_equal(count_entries(dir, "cur"), 2);
    assert_int_equal(count_entries(dir, "new"), 0);

    /* A message delivered by someone else after our scan is found too. */
    put_file(dir, "new/late", "L");
    assert_int_equal(maildir_set_flags(md, "late", 0, FLAG_SEEN, 0, &err), 0);
    assert_true(exists(dir, "cur/late:2,S"));
    maildir_close(md);
    rm_rf(dir);
}

static void test_vanished_and_remove(void **state)
{
    (void)state;
    char *dir = make_tmpdir();
    make_maildir(dir);
    put_file(dir, "cur/v:2,S", "V");
    put_file(dir, "cur/w:2,", "W");
    put_file(dir, "new/u", "U");
    maildir *md;
    ofs_error err;
    assert_int_equal(maildir_open(dir, &md, &err), 0);

    char *p = xasprintf("%s/cur/v:2,S", dir);
    unlink(p);
    free(p);
    assert_int_equal(maildir_set_flags(md, "v", 0, FLAG_FLAGGED, 0, &err), 1);
    assert_int_equal(maildir_remove(md, "v", 0, &err), 1);
    int fd;
    assert_int_equal(maildir_open_message(md, "v", 0, &fd, NULL, &err), 1);
    assert_int_equal(fd, -1);
    assert_int_equal(maildir_remove(md, "never", 0, &err), 1);

    move(dir, "cur/w:2,", "cur/w:2,S");
    assert_int_equal(maildir_remove(md, "w", 0, &err), 0);
    assert_false(exists(dir, "cur/w:2,S"));
    assert_false(exists(dir, "cur/w:2,"));
    assert_null(maildir_find(md, "w"));

    unsigned flags = 99;
    assert_int_equal(maildir_open_message(md, "u", 0, &fd, &flags, &err), 0);
    char c;
    assert_int_equal(read(fd, &c, 1), 1);
    assert_int_equal(c, 'U');
    assert_int_equal(flags, 0);
    close(fd);
    assert_int_equal(maildir_remove(md, "u", 0, &err), 0);
    assert_int_equal(md->live, 0);
    assert_int_equal(count_entries(dir, "new") + count_entries(dir, "cur"), 0);
    assert_int_equal(maildir_flush(md, &err), 0);
    maildir_close(md);
    rm_rf(dir);
}

/* ---- folder names ---- */

static void assert_refused(const char *name)
{
    ofs_error err = {0};
    char *path = (char *)1;
    if (names_check(name, &err) != -1)
        fail_msg("names_check accepted unsafe name \"%s\"", name);
    assert_int_equal(err.code, OFS_E_NAME);
    assert_non_null(strstr(err.message, "refusing folder name"));
    assert_null(strchr(err.message, '\n'));
    assert_int_equal(names_to_path("/r", CFG_LAYOUT_MAILDIRPP, name, &path, &err), -1);
    assert_null(path);
    assert_int_equal(names_to_path("/r", CFG_LAYOUT_VERBATIM, name, &path, &err), -1);
    assert_int_equal(err.code, OFS_E_NAME);
}

static void test_names_refused(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",      "/",          "/a",           "a/",           "a//b",
        ".",     "..",         "a/..",         "../a",         "a/../b",
        "a/./b", "a\nb",       "a\tb",         "a\x7f",        "\x1b[31m",
        "a\xff", "\xc0\xaf",   "\xe0\x80\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",
        "\xc3",  "ab\xe6\x97",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_refused(bad[i]);

    char *long_level = xmalloc(300);
    memset(long_level, 'x', 299);
    long_level[299] = '\0';
    assert_refused(long_level);
    free(long_level);

    buf deep;
    buf_init(&deep);
    for (int i = 0; i < 40; i++)
        buf_adds(&deep, i ? "/d" : "d");
    assert_refused(deep.data);
    buf_free(&deep);

    ofs_error err;
    assert_int_equal(names_check("a\nb", &err), -1);
    assert_non_null(strstr(err.message, "a\\x0ab")); /* shown escaped, on one line */
}

static void test_names_accepted(void **state)
{
    (void)state;
    static const char *const good[] = {
        "INBOX", "Entwürfe", "日本語", "A/B", "a b", "[Gmail]/Sent Mail", "...a", "x/日本語/y",
    };
    ofs_error err;
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (names_check(good[i], &err) != 0)
            fail_msg("rejected \"%s\": %s", good[i], err.message);
    assert_int_equal(names_utf8_valid("\xf0\x9f\x93\xa7", 4), 0); /* U+1F4E7, 4 bytes */
}

static void expect_path(const char *root, int layout, const char *name, const char *want)
{
    ofs_error err;
    char *path;
    if (names_to_path(root, layout, name, &path, &err) != 0)
        fail_msg("\"%s\": %s", name, err.message);
    assert_string_equal(path, want);
    free(path);
}

static void test_names_mdpp(void **state)
{
    (void)state;
    int l = CFG_LAYOUT_MAILDIRPP;
    expect_path("/m", l, "INBOX", "/m");
    expect_path("/m/", l, "INBOX", "/m");
    expect_path("/m", l, "A", "/m/.A");
    expect_path("/m//", l, "A/B", "/m/.A.B");
    expect_path("/m", l, "Entwürfe", "/m/.Entwürfe");
    expect_path("/m", l, "日本語/Sub", "/m/.日本語.Sub");
    expect_path("/m", l, "INBOX/Sub", "/m/.INBOX.Sub");

    ofs_error err;
    char *path;
    assert_int_equal(names_to_path("/m", l, "a.b", &path, &err), -1);
    assert_int_equal(err.code, OFS_E_NAME);
    assert_non_null(strstr(err.message, "a.b"));
    assert_int_equal(names_to_path("/m", l, "x/...a", &path, &err), -1);

    static const struct {
        const char *entry, *name;
    } back[] = {
        {".A", "A"}, {".A.B", "A/B"},  {".Entwürfe", "Entwürfe"}, {".日本語.Sub", "日本語/Sub"},
        {".", NULL}, {"..", NULL},     {".A..B", NULL},           {".A.", NULL},
        {"A", NULL}, {".INBOX", NULL}, {".a\nb", NULL},           {".\xff", NULL},
    };
    for (size_t i = 0; i < sizeof back / sizeof back[0]; i++) {
        char *n = names_from_mdpp(back[i].entry);
        if (back[i].name) {
            assert_non_null(n);
            assert_string_equal(n, back[i].name);
        } else if (n) {
            fail_msg("entry \"%s\" mapped to \"%s\"", back[i].entry, n);
        }
        free(n);
    }

    /* Round trips: name -> directory -> name. */
    static const char *const names[] = {"A", "A/B/C", "Entwürfe", "日本語", "x y/z", "INBOX/a"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        assert_int_equal(names_to_path("/m", l, names[i], &path, &err), 0);
        char *n = names_from_mdpp(strrchr(path, '/') + 1);
        assert_non_null(n);
        assert_string_equal(n, names[i]);
        free(n);
        free(path);
    }
}

static void test_names_verbatim(void **state)
{
    (void)state;
    int l = CFG_LAYOUT_VERBATIM;
    expect_path("/m", l, "INBOX", "/m/INBOX");
    expect_path("/m/", l, "A/B", "/m/A/B");
    expect_path("/m", l, "a.b", "/m/a.b");
    expect_path("/m", l, "...a", "/m/...a");
    expect_path("/m", l, "Entwürfe/日本語", "/m/Entwürfe/日本語");
    ofs_error err;
    char *path;
    assert_int_equal(names_to_path("/m", l, "A/cur", &path, &err), -1);
    assert_int_equal(err.code, OFS_E_NAME);
    assert_int_equal(names_to_path("/m", l, "new", &path, &err), -1);
    assert_int_equal(names_to_path("/m", l, "a/../../etc", &path, &err), -1);
}

static void test_folders_mdpp(void **state)
{
    (void)state;
    char *root = make_tmpdir();
    char *r2 = xasprintf("%s/mail", root); /* created by open */
    store *s;
    ofs_error err;
    assert_int_equal(maildir_store_open(r2, CFG_LAYOUT_MAILDIRPP, &s, &err), 0);
    strlist l;
    strlist_init(&l);
    assert_int_equal(s->ops->list_folders(s, &l, NULL, &err), 0);
    assert_int_equal(l.n, 0);

    static const char *const names[] = {"INBOX", "A/B", "Entwürfe", "日本語/Sub", "Sent"};
    for (size_t i = 0; i < 5; i++)
        if (s->ops->create_folder(s, names[i], &err) != 0)
            fail_msg("%s", err.message);
    assert_int_equal(s->ops->create_folder(s, "A/B", &err), 0); /* again: fine */
    assert_int_equal(s->ops->create_folder(s, "a.b", &err), -1);
    assert_int_equal(err.code, OFS_E_NAME);
    assert_int_equal(s->ops->create_folder(s, "../evil", &err), -1);
    assert_int_equal(err.code, OFS_E_NAME);
    assert_true(exists(r2, ".A.B/tmp"));
    assert_true(exists(r2, "cur"));
    assert_false(exists(r2, ".A"));

    /* Junk the listing must skip: no cur/, unrepresentable names, plain files. */
    mkdir_rel(r2, ".junk");
    make_maildir_rel(r2, ".bad..x");
    make_maildir_rel(r2, ".INBOX");
    put_file(r2, ".file", "x");
    put_file(r2, "dovecot-uidlist", "x");
    assert_int_equal(s->ops->list_folders(s, &l, NULL, &err), 0);
    static const char *const want[] = {"A/B", "Entwürfe", "INBOX", "Sent", "日本語/Sub"};
    assert_int_equal(l.n, 5);
    for (size_t i = 0; i < 5; i++)
        assert_string_equal(l.v[i], want[i]);
    strlist_free(&l);
    s->ops->close(s);
    free(r2);
    rm_rf(root);
}

static void test_folders_verbatim(void **state)
{
    (void)state;
    char *root = make_tmpdir();
    store *s;
    ofs_error err;
    assert_int_equal(maildir_store_open(root, CFG_LAYOUT_VERBATIM, &s, &err), 0);
    static const char *const names[] = {"INBOX", "A", "A/B/C", "a.b", "Entwürfe/日本語"};
    for (size_t i = 0; i < 5; i++)
        if (s->ops->create_folder(s, names[i], &err) != 0)
            fail_msg("%s", err.message);
    assert_int_equal(s->ops->create_folder(s, "A/cur", &err), -1);
    assert_int_equal(err.code, OFS_E_NAME);
    assert_true(exists(root, "A/B/C/new"));
    assert_true(exists(root, "A/cur"));
    assert_false(exists(root, "A/B/cur")); /* a parent only, not a folder */

    /* A symlink loop and a message-like file must not confuse the walk. */
    char *loop = xasprintf("%s/A/loop", root);
    assert_int_equal(symlink(root, loop), 0);
    free(loop);
    put_file(root, "A/cur/1.M1P1.h:2,S", "x");
    mkdir_rel(root, ".notmuch");

    strlist l;
    strlist_init(&l);
    assert_int_equal(s->ops->list_folders(s, &l, NULL, &err), 0);
    static const char *const want[] = {"A", "A/B/C", "Entwürfe/日本語", "INBOX", "a.b"};
    assert_int_equal(l.n, 5);
    for (size_t i = 0; i < 5; i++)
        assert_string_equal(l.v[i], want[i]);
    strlist_free(&l);
    s->ops->close(s);
    rm_rf(root);
}

/* ---- the store_ops vtable ---- */

struct sink_log {
    int calls;
    char *text[8];
    unsigned flags[8];
    uint64_t size[8];
};

static int sink_open(void *ctx, const store_msg *m, uint64_t size, ofs_error *err)
{
    (void)ctx, (void)m, (void)size, (void)err;
    return memfd_create("sink", MFD_CLOEXEC);
}

static int sink_done(void *ctx, const store_msg *m, int fd, uint64_t size, ofs_error *err)
{
    (void)err;
    struct sink_log *log = ctx;
    assert_true(log->calls < 8);
    char *t = xcalloc(1, size + 1);
    assert_int_equal(pread(fd, t, size, 0), (ssize_t)size);
    close(fd);
    log->text[log->calls] = t;
    log->flags[log->calls] = m->flags;
    log->size[log->calls] = size;
    log->calls++;
    return 0;
}

static store_msg *find_msg(store_msg_list *l, const char *key)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i].key, key) == 0)
            return &l->v[i];
    return NULL;
}

static void test_store_round_trip(void **state)
{
    (void)state;
    char *root = make_tmpdir();
    store *s;
    ofs_error err;
    assert_int_equal(maildir_store_open(root, CFG_LAYOUT_MAILDIRPP, &s, &err), 0);
    assert_string_equal(s->ops->side, "local");
    store_folder_info info;
    assert_int_equal(s->ops->open_folder(s, "Nope", &info, &err), -1);
    assert_non_null(strstr(err.message, "Nope"));
    assert_non_null(strstr(err.message, root));
    assert_int_equal(s->ops->create_folder(s, "Archive/2022", &err), 0);
    assert_int_equal(s->ops->open_folder(s, "Archive/2022", &info, &err), 0);
    assert_int_equal(info.exists, 0);
    assert_int_equal(info.uidvalidity, 0);

    /* The store interface speaks IMAP's CRLF; the files on disk hold LF. */
    const char *b1 = "From: a@example.org\r\nSubject: hi\r\n\r\nhello\r\n";
    const char *b2 = "From: b@example.org\r\nSubject: re\r\n\r\nsecond message\r\n";
    const size_t b1_disk = strlen(b1) - 4, b2_disk = strlen(b2) - 4;
    store_msg m1 = {0}, m2 = {0};
    int fd = memfd_with(b1);
    assert_int_equal(s->ops->store_message(s, fd, strlen(b1), FLAG_SEEN, &m1, &err), 0);
    close(fd);
    fd = memfd_with(b2);
    assert_int_equal(s->ops->store_message(s, fd, strlen(b2), 0, &m2, &err), 0);
    close(fd);
    assert_non_null(m1.key);
    assert_non_null(m2.key);
    assert_int_equal(m1.uid, 0);
    assert_int_equal(m1.size, strlen(b1));

    store_list_opts o = {.want_size = true};
    store_msg_list l;
    store_msg_list_init(&l);
    assert_int_equal(s->ops->list_messages(s, &o, &l, &err), 0);
    assert_int_equal(l.n, 0); /* not flushed yet */
    store_msg_list_free(&l);

    assert_int_equal(s->ops->flush(s, &err), 0);
    assert_int_equal(s->ops->list_messages(s, &o, &l, &err), 0);
    assert_int_equal(l.n, 2);
    assert_int_equal(find_msg(&l, m1.key)->flags, FLAG_SEEN);
    assert_int_equal(find_msg(&l, m1.key)->size, b1_disk);
    assert_int_equal(find_msg(&l, m2.key)->flags, 0);
    assert_int_equal(find_msg(&l, m2.key)->size, b2_disk);
    store_msg_list_free(&l);

    struct sink_log log = {0};
    store_sink sink = {sink_open, sink_done, &log};
    store_msg both[2] = {m2, m1};
    assert_int_equal(s->ops->fetch_messages(s, both, 2, &sink, &err), 0);
    assert_int_equal(log.calls, 2);
    assert_string_equal(log.text[0], b2);
    assert_string_equal(log.text[1], b1);
    assert_int_equal(log.flags[1], FLAG_SEEN);
    assert_int_equal(log.size[0], strlen(b2));

    assert_int_equal(s->ops->set_flags(s, &m2, 1, FLAG_FLAGGED | FLAG_ANSWERED, 0, &err), 0);
    assert_int_equal(s->ops->set_flags(s, &m1, 1, 0, FLAG_SEEN, &err), 0);
    assert_int_equal(s->ops->remove_messages(s, &m1, 1, &err), 0);
    assert_int_equal(s->ops->flush(s, &err), 0);

    /* Reopen: the disk says the same. */
    assert_int_equal(s->ops->open_folder(s, "Archive/2022", &info, &err), 0);
    assert_int_equal(info.exists, 1);
    assert_int_equal(s->ops->list_messages(s, NULL, &l, &err), 0);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.v[0].key, m2.key);
    assert_int_equal(l.v[0].flags, FLAG_FLAGGED | FLAG_ANSWERED);
    assert_int_equal(l.v[0].size, 0); /* not asked for */
    store_msg_list_free(&l);

    /* Vanished messages are skipped, not errors. */
    assert_int_equal(s->ops->remove_messages(s, &m1, 1, &err), 0);
    assert_int_equal(s->ops->set_flags(s, &m1, 1, FLAG_SEEN, 0, &err), 0);
    assert_int_equal(s->ops->fetch_messages(s, both, 2, &sink, &err), 0);
    assert_int_equal(log.calls, 3);
    assert_string_equal(log.text[2], b2);
    for (int i = 0; i < log.calls; i++)
        free(log.text[i]);

    strlist fl;
    strlist_init(&fl);
    assert_int_equal(s->ops->list_folders(s, &fl, NULL, &err), 0);
    assert_int_equal(fl.n, 1);
    assert_string_equal(fl.v[0], "Archive/2022");
    strlist_free(&fl);

    free(m1.key);
    free(m2.key);
    s->ops->close(s);
    rm_rf(root);
}

static void test_store_size_from_name(void **state)
{
    (void)state;
    char *root = make_tmpdir();
    make_maildir(root);
    put_file(root, "cur/123.M1P1.host,S=42,W=44:2,S", "short");
    put_file(root, "cur/124.M1P1.host:2,", "12345678");
    store *s;
    ofs_error err;
    assert_int_equal(maildir_store_open(root, CFG_LAYOUT_MAILDIRPP, &s, &err), 0);
    assert_int_equal(s->ops->open_folder(s, "INBOX", NULL, &err), 0);
    store_list_opts o = {.want_size = true};
    store_msg_list l;
    store_msg_list_init(&l);
    assert_int_equal(s->ops->list_messages(s, &o, &l, &err), 0);
    assert_int_equal(l.n, 2);
    assert_int_equal(find_msg(&l, "123.M1P1.host,S=42,W=44")->size, 42);
    assert_int_equal(find_msg(&l, "124.M1P1.host")->size, 8);
    store_msg_list_free(&l);

    /* Switching folders publishes what was stored but not flushed. */
    int fd = memfd_with("unflushed");
    store_msg m = {0};
    assert_int_equal(s->ops->store_message(s, fd, 9, FLAG_SEEN, &m, &err), 0);
    close(fd);
    assert_int_equal(s->ops->create_folder(s, "Other", &err), 0);
    assert_int_equal(s->ops->open_folder(s, "Other", NULL, &err), 0);
    char *rel = xasprintf("cur/%s:2,S", m.key);
    assert_true(exists(root, rel));
    free(rel);
    free(m.key);
    assert_int_equal(count_entries(root, "tmp"), 0);
    assert_int_equal(s->ops->open_folder(s, "INBOX", NULL, &err), 0);
    assert_int_equal(s->ops->list_messages(s, &o, &l, &err), 0);
    assert_int_equal(l.n, 3);
    store_msg_list_free(&l);

    /* A second listing rescans: a file delivered by someone else appears. */
    put_file(root, "new/125.M1P1.host", "x");
    assert_int_equal(s->ops->list_messages(s, &o, &l, &err), 0);
    assert_int_equal(l.n, 4);
    store_msg_list_free(&l);
    s->ops->close(s);
    rm_rf(root);
}

/* The listing's keys are the scan's own, and stay valid (the listing holds them) while the
 * store renames, rescans and moves on to another folder. */
static void test_store_listing_borrows_keys(void **state)
{
    (void)state;
    char *root = make_tmpdir();
    make_maildir(root);
    enum { N = 500 };
    for (int i = 0; i < N; i++) {
        char rel[64];
        snprintf(rel, sizeof rel, "%s/%d.M1P1.h:2,%s", i % 5 ? "cur" : "new", i, i % 2 ? "S" : "");
        put_file(root, rel, "x");
    }
    store *s;
    ofs_error err;
    assert_int_equal(maildir_store_open(root, CFG_LAYOUT_MAILDIRPP, &s, &err), 0);
    assert_int_equal(s->ops->create_folder(s, "Other", &err), 0);
    assert_int_equal(s->ops->open_folder(s, "INBOX", NULL, &err), 0);
    store_msg_list l;
    store_msg_list_init(&l);
    assert_int_equal(s->ops->list_messages(s, NULL, &l, &err), 0);
    assert_int_equal(l.n, N);
    assert_non_null(l.keys_from); /* borrowed, not one malloc'd copy per message */
    assert_int_equal(l.cap, l.n); /* sized once */

    /* A rename, a rescan (a second listing), a removal and a vanished key, another folder. */
    store_msg_list again;
    store_msg_list_init(&again);
    assert_int_equal(s->ops->set_flags(s, &l.v[1], 1, FLAG_FLAGGED, 0, &err), 0);
    assert_int_equal(s->ops->list_messages(s, NULL, &again, &err), 0);
    assert_int_equal(s->ops->remove_messages(s, &l.v[2], 1, &err), 0);
    store_msg gone = {.key = "no-such-key"};
    assert_int_equal(s->ops->set_flags(s, &gone, 1, FLAG_SEEN, 0, &err), 0);
    assert_int_equal(s->ops->open_folder(s, "Other", NULL, &err), 0);
    store_msg_list_free(&again);

    size_t seen = 0;
    for (size_t i = 0; i < l.n; i++) {
        int num;
        char host[8];
        assert_int_equal(sscanf(l.v[i].key, "%d.M1P1.%7s", &num, host), 2);
        assert_string_equal(host, "h");
        assert_true(num >= 0 && num < N);
        seen++;
    }
    assert_int_equal(seen, N);
    store_msg_list_free(&l);
    s->ops->close(s);
    rm_rf(root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_and_info),
        cmocka_unit_test(test_new_key),
        cmocka_unit_test(test_scan),
        cmocka_unit_test(test_scan_many),
        cmocka_unit_test(test_deliver_after_small_scan),
        cmocka_unit_test(test_open_creates_subdirs),
        cmocka_unit_test(test_deliver_flush),
        cmocka_unit_test(test_deliver_big_batch),
        cmocka_unit_test(test_deliver_short_and_unflushed),
        cmocka_unit_test(test_deliver_disk_full),
        cmocka_unit_test(test_set_flags),
        cmocka_unit_test(test_open_unread),
        cmocka_unit_test(test_concurrent_rename),
        cmocka_unit_test(test_vanished_and_remove),
        cmocka_unit_test(test_names_refused),
        cmocka_unit_test(test_names_accepted),
        cmocka_unit_test(test_names_mdpp),
        cmocka_unit_test(test_names_verbatim),
        cmocka_unit_test(test_folders_mdpp),
        cmocka_unit_test(test_folders_verbatim),
        cmocka_unit_test(test_store_round_trip),
        cmocka_unit_test(test_store_size_from_name),
        cmocka_unit_test(test_store_listing_borrows_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
