/* test_state.c: unit tests of the SQLite sync state (src/state/state.c).
 * Each test works in its own temporary directory, removed afterwards. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "state/state.h"

typedef struct fixture {
    char dir[64];
    char *db;
} fixture;

static int setup(void **ctx)
{
    fixture *fx = calloc(1, sizeof *fx);
    strcpy(fx->dir, "/tmp/ofs-state-XXXXXX");
    if (!mkdtemp(fx->dir))
        return -1;
    /* A missing directory level, so state_open must create it. */
    fx->db = xasprintf("%s/sub/dir/acct.db", fx->dir);
    *ctx = fx;
    return 0;
}

static int teardown(void **ctx)
{
    fixture *fx = *ctx;
    char *cmd = xasprintf("rm -rf '%s'", fx->dir);
    int rc = system(cmd);
    free(cmd);
    free(fx->db);
    free(fx);
    return rc == 0 ? 0 : -1;
}

static state *open_ok(const char *path)
{
    state *st = NULL;
    ofs_error err = {0};
    int rc = state_open(path, &st, &err);
    if (rc != 0)
        print_error("state_open: %s\n", err.message);
    assert_int_equal(rc, 0);
    assert_non_null(st);
    return st;
}

/* Raw access to the file, to set up states that the API cannot produce. */
static void raw_exec(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

static long long raw_int(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    long long v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return v;
}

static void test_create_reopen(void **ctx)
{
    fixture *fx = *ctx;
    state *st = open_ok(fx->db);
    assert_int_equal(state_schema_version(st), 5);

    ofs_error err = {0};
    state_folder f;
    assert_int_equal(state_folder_add(st, "INBOX", &f, &err), 0);
    f.uidvalidity = 42;
    assert_int_equal(state_folder_update(st, &f, &err), 0);
    state_folder_free(&f);
    state_close(st);

    struct stat sb;
    char *parent = xasprintf("%s/sub/dir", fx->dir);
    assert_int_equal(stat(parent, &sb), 0);
    assert_true(S_ISDIR(sb.st_mode));
    assert_int_equal(sb.st_mode & 0777, 0700);
    free(parent);

    st = open_ok(fx->db);
    assert_int_equal(state_folder_get(st, "INBOX", &f, &err), 0);
    assert_int_equal(f.uidvalidity, 42);
    state_folder_free(&f);
    state_close(st);

    assert_int_equal(raw_int(fx->db, "PRAGMA user_version"), 5);
    assert_int_equal(raw_int(fx->db, "SELECT count(*) FROM pragma_journal_mode WHERE "
                                     "journal_mode = 'wal'"),
                     1);
}

static void test_migrate_empty_file(void **ctx)
{
    fixture *fx = *ctx;
    char *path = xasprintf("%s/empty.db", fx->dir);
    int fd = open(path, O_CREAT | O_WRONLY, 0600);
    assert_true(fd >= 0);
    close(fd);

    state *st = open_ok(path);
    assert_int_equal(state_schema_version(st), 5);
    ofs_error err = {0};
    state_folder f;
    assert_int_equal(state_folder_add(st, "INBOX", &f, &err), 0);
    state_folder_free(&f);
    state_close(st);
    assert_int_equal(raw_int(path, "SELECT count(*) FROM sqlite_master WHERE name IN "
                                   "('folders', 'pairs', 'pairs_uid', 'pairs_key')"),
                     4);
    free(path);
}

static void test_newer_version_refused(void **ctx)
{
    fixture *fx = *ctx;
    char *path = xasprintf("%s/newer.db", fx->dir);
    raw_exec(path, "CREATE TABLE future (x); PRAGMA user_version = 99;");

    state *st = NULL;
    ofs_error err = {0};
    assert_int_equal(state_open(path, &st, &err), -1);
    assert_null(st);
    assert_int_equal(err.code, OFS_E_STATE);
    char *want = xasprintf("state database %s was written by a newer ofsync (schema 99, this "
                           "one knows 5)",
                           path);
    assert_string_equal(err.message, want);
    free(want);
    /* Refused without touching it. */
    assert_int_equal(raw_int(path, "PRAGMA user_version"), 99);
    free(path);
}

static void test_garbage_refused(void **ctx)
{
    fixture *fx = *ctx;
    char *path = xasprintf("%s/garbage.db", fx->dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < 200; i++)
        fputs("this is not an sqlite database, it is mail\n", f);
    fclose(f);

    state *st = NULL;
    ofs_error err = {0};
    assert_int_equal(state_open(path, &st, &err), -1);
    assert_null(st);
    assert_int_equal(err.code, OFS_E_STATE);
    assert_non_null(strstr(err.message, path));
    assert_non_null(strstr(err.message, "not an SQLite database"));
    free(path);
}

static void test_folders(void **ctx)
{
    fixture *fx = *ctx;
    state *st = open_ok(fx->db);
    ofs_error err = {0};
    state_folder f, g;

    assert_int_equal(state_folder_get(st, "INBOX", &f, &err), 1);
    assert_int_equal(state_folder_add(st, "INBOX", &f, &err), 0);
    assert_true(f.id > 0);
    assert_string_equal(f.name, "INBOX");
    assert_int_equal(f.uidvalidity, 0);
    assert_int_equal(f.last_sync, 0);

    f.uidvalidity = 4000000000u;
    f.uidnext = 4000000001u;
    f.highestmodseq = 9000000000000000000ull;
    f.last_sync = 1700000000;
    assert_int_equal(state_folder_update(st, &f, &err), 0);
    assert_int_equal(state_folder_get(st, "INBOX", &g, &err), 0);
    assert_int_equal(g.id, f.id);
    assert_int_equal(g.uidvalidity, 4000000000u);
    assert_int_equal(g.uidnext, 4000000001u);
    assert_true(g.highestmodseq == 9000000000000000000ull);
    assert_int_equal(g.last_sync, 1700000000);
    state_folder_free(&g);

    /* Second add of the same name: an error, not a second row. */
    assert_int_equal(state_folder_add(st, "INBOX", &g, &err), -1);
    assert_int_equal(err.code, OFS_E_STATE);
    assert_non_null(strstr(err.message, "INBOX"));
    assert_non_null(strstr(err.message, fx->db));

    state_folder h;
    assert_int_equal(state_folder_add(st, "Archive/2022", &h, &err), 0);
    strlist names;
    assert_int_equal(state_folder_names(st, &names, &err), 0);
    assert_int_equal(names.n, 2);
    assert_string_equal(names.v[0], "Archive/2022");
    assert_string_equal(names.v[1], "INBOX");
    strlist_free(&names);

    /* Deleting a folder takes its pairs with it. */
    state_pair p = {.uid = 7, .key = "k7"};
    assert_int_equal(state_pair_add(st, f.id, &p, &err), 0);
    state_pair q = {.uid = 7, .key = "k7"};
    assert_int_equal(state_pair_add(st, h.id, &q, &err), 0);
    assert_int_equal(state_folder_delete(st, f.id, &err), 0);
    assert_int_equal(state_folder_get(st, "INBOX", &g, &err), 1);
    state_pair_list l;
    assert_int_equal(state_pairs_load(st, f.id, &l, &err), 0);
    assert_int_equal(l.n, 0);
    state_pair_list_free(&l);
    assert_int_equal(state_pairs_load(st, h.id, &l, &err), 0);
    assert_int_equal(l.n, 1);
    state_pair_list_free(&l);
    state_close(st);
    assert_int_equal(raw_int(fx->db, "SELECT count(*) FROM pairs"), 1);

    /* An update of a folder that no longer exists says so. */
    st = open_ok(fx->db);
    assert_int_equal(state_folder_update(st, &f, &err), -1);
    assert_int_equal(err.code, OFS_E_STATE);
    state_folder_free(&f);
    state_folder_free(&h);
    state_close(st);
}

static void test_pairs(void **ctx)
{
    fixture *fx = *ctx;
    state *st = open_ok(fx->db);
    ofs_error err = {0};
    state_folder f;
    assert_int_equal(state_folder_add(st, "INBOX", &f, &err), 0);

    state_pair a = {.uid = 30,
                    .key = "1700.a.host",
                    .flags = 5,
                    .size = 5000000000ull,
                    .msgid = "<a@x>",
                    .hash = "ab12",
                    .pending = PENDING_FLAGS,
                    .target = 7};
    state_pair b = {.uid = 0, .key = "1700.b.host", .pending = PENDING_UPLOAD, .uidnext_seen = 31};
    state_pair c = {.uid = 10, .key = NULL, .pending = PENDING_DOWNLOAD};
    state_pair d = {.uid = 0, .key = "1700.d.host", .pending = PENDING_UPLOAD};
    assert_int_equal(state_pair_add(st, f.id, &a, &err), 0);
    assert_int_equal(state_pair_add(st, f.id, &b, &err), 0);
    assert_int_equal(state_pair_add(st, f.id, &c, &err), 0);
    assert_int_equal(state_pair_add(st, f.id, &d, &err), 0);
    assert_true(a.id > 0 && b.id > 0 && c.id > 0 && d.id > 0);
    assert_true(a.id != b.id);

    /* Stored as NULL, not 0 or "": the partial unique indexes must not see them. */
    assert_int_equal(raw_int(fx->db, "SELECT count(*) FROM pairs WHERE uid IS NULL"), 2);
    assert_int_equal(raw_int(fx->db, "SELECT count(*) FROM pairs WHERE key IS NULL"), 1);

    state_pair_list l;
    assert_int_equal(state_pairs_load(st, f.id, &l, &err), 0);
    assert_int_equal(l.n, 4);
    /* Ordered by uid; unknown uids (0) first. */
    assert_int_equal(l.v[0].uid, 0);
    assert_int_equal(l.v[1].uid, 0);
    assert_int_equal(l.v[2].uid, 10);
    assert_null(l.v[2].key);
    assert_int_equal(l.v[2].pending, PENDING_DOWNLOAD);
    assert_int_equal(l.v[3].uid, 30);
    assert_int_equal(l.v[3].id, a.id);
    assert_string_equal(l.v[3].key, "1700.a.host");
    assert_int_equal(l.v[3].flags, 5);
    assert_true(l.v[3].size == 5000000000ull);
    assert_string_equal(l.v[3].msgid, "<a@x>");
    assert_string_equal(l.v[3].hash, "ab12");
    assert_int_equal(l.v[3].pending, PENDING_FLAGS);
    assert_int_equal(l.v[3].target, 7);
    const state_pair *lb = l.v[0].id == b.id ? &l.v[0] : &l.v[1];
    assert_int_equal(lb->id, b.id);
    assert_string_equal(lb->key, "1700.b.host");
    assert_int_equal(lb->pending, PENDING_UPLOAD);
    assert_int_equal(lb->uidnext_seen, 31);
    assert_null(lb->msgid);
    state_pair_list_free(&l);

    /* The upload landed: b gets its uid and loses its pending mark. */
    b.uid = 31;
    b.pending = PENDING_NONE;
    b.flags = 1;
    assert_int_equal(state_pair_update(st, &b, &err), 0);
    /* c's download finished and chose a key. */
    c.key = "1701.c.host";
    c.pending = PENDING_NONE;
    assert_int_equal(state_pair_update(st, &c, &err), 0);
    assert_int_equal(state_pair_delete(st, d.id, &err), 0);

    assert_int_equal(state_pairs_load(st, f.id, &l, &err), 0);
    assert_int_equal(l.n, 3);
    assert_int_equal(l.v[0].uid, 10);
    assert_string_equal(l.v[0].key, "1701.c.host");
    assert_int_equal(l.v[1].uid, 30);
    assert_int_equal(l.v[2].uid, 31);
    assert_int_equal(l.v[2].flags, 1);
    assert_int_equal(l.v[2].pending, PENDING_NONE);
    state_pair_list_free(&l);

    /* Updating back to unknown uid stores NULL again. */
    c.uid = 0;
    assert_int_equal(state_pair_update(st, &c, &err), 0);
    assert_int_equal(raw_int(fx->db, "SELECT count(*) FROM pairs WHERE uid IS NULL"), 1);

    /* A stale id is an error. */
    state_pair gone = d;
    assert_int_equal(state_pair_update(st, &gone, &err), -1);
    assert_int_equal(err.code, OFS_E_STATE);

    assert_int_equal(state_pairs_clear(st, f.id, &err), 0);
    assert_int_equal(state_pairs_load(st, f.id, &l, &err), 0);
    assert_int_equal(l.n, 0);
    state_pair_list_free(&l);
    state_folder_free(&f);
    state_close(st);
}

/* The plan's pairs: one block each for pairs and keys, no Message-ID or hash but where an
 * intent needs them, and updating such a pair keeps what it did not load. */
static void test_pairs_lean(void **ctx)
{
    fixture *fx = *ctx;
    state *st = open_ok(fx->db);
    ofs_error err = {0};
    state_folder f;
    assert_int_equal(state_folder_add(st, "INBOX", &f, &err), 0);
    state_pair settled = {
        .uid = 5, .key = "1700.s.host", .flags = 1, .msgid = "<s@x>", .hash = "aa"};
    state_pair upload = {
        .key = "1700.u.host", .msgid = "<u@x>", .hash = "bb", .pending = PENDING_UPLOAD};
    state_pair kept = {.uid = 9, .msgid = "<k@x>", .hash = "cc"};
    assert_int_equal(state_pair_add(st, f.id, &settled, &err), 0);
    assert_int_equal(state_pair_add(st, f.id, &upload, &err), 0);
    assert_int_equal(state_pair_add(st, f.id, &kept, &err), 0);

    state_pair_list l;
    assert_int_equal(state_pairs_load_lean(st, f.id, &l, &err), 0);
    assert_int_equal(l.n, 3);
    assert_int_equal(l.cap, 3);
    assert_non_null(l.arena);
    assert_int_equal(l.v[0].uid, 0);
    assert_string_equal(l.v[0].key, "1700.u.host");
    assert_string_equal(l.v[0].msgid, "<u@x>");
    assert_string_equal(l.v[0].hash, "bb");
    assert_int_equal(l.v[1].uid, 5);
    assert_string_equal(l.v[1].key, "1700.s.host");
    assert_null(l.v[1].msgid);
    assert_null(l.v[1].hash);
    assert_int_equal(l.v[2].uid, 9);
    assert_null(l.v[2].key);
    assert_null(l.v[2].hash);

    l.v[1].flags = 3;
    assert_int_equal(state_pair_update(st, &l.v[1], &err), 0);
    assert_int_equal(state_pair_load_strings(st, &l.v[2], &err), 0);
    assert_string_equal(l.v[2].msgid, "<k@x>");
    assert_string_equal(l.v[2].hash, "cc");
    state_pair_list_free(&l);

    assert_int_equal(state_pairs_load(st, f.id, &l, &err), 0);
    assert_int_equal(l.v[1].flags, 3);
    assert_string_equal(l.v[1].msgid, "<s@x>");
    assert_string_equal(l.v[1].hash, "aa");
    state_pair_list_free(&l);

    assert_int_equal(state_pairs_clear(st, f.id, &err), 0);
    assert_int_equal(state_pairs_load_lean(st, f.id, &l, &err), 0);
    assert_int_equal(l.n, 0);
    assert_null(l.arena);
    state_pair_list_free(&l);
    state_folder_free(&f);
    state_close(st);
}

typedef struct walked {
    int64_t ids[64];
    size_t n, windows, largest;
    bool strings_only_pending;
} walked;

static int walk_window(const state_pair_list *w, void *arg, ofs_error *err)
{
    (void)err;
    walked *k = arg;
    k->windows++;
    k->largest = w->n > k->largest ? w->n : k->largest;
    for (size_t i = 0; i < w->n; i++) {
        k->ids[k->n++] = w->v[i].id;
        if ((w->v[i].msgid != NULL) != (w->v[i].pending != PENDING_NONE))
            k->strings_only_pending = false;
    }
    return 0;
}

/* The batched walk: every pair once, in the lean load's order, across window edges, with the
 * pairs whose uid or key is not known. */
static void test_pairs_walk_in_windows(void **ctx)
{
    fixture *fx = *ctx;
    state *st = open_ok(fx->db);
    ofs_error err = {0};
    state_folder f, other;
    assert_int_equal(state_folder_add(st, "INBOX", &f, &err), 0);
    assert_int_equal(state_folder_add(st, "Other", &other, &err), 0);
    char key[32], id[32];
    for (uint32_t i = 0; i < 11; i++) {
        snprintf(key, sizeof key, "17%02u.host", i);
        snprintf(id, sizeof id, "<%u@x>", i);
        state_pair p = {.uid = i % 4 == 0 ? 0 : 100 - i, .key = i == 5 ? NULL : key, .msgid = id};
        p.pending = p.uid ? PENDING_NONE : PENDING_UPLOAD;
        assert_int_equal(state_pair_add(st, f.id, &p, &err), 0);
    }
    state_pair elsewhere = {.uid = 1, .key = "x"};
    assert_int_equal(state_pair_add(st, other.id, &elsewhere, &err), 0);

    state_pair_list all;
    assert_int_equal(state_pairs_load_lean(st, f.id, &all, &err), 0);
    assert_int_equal(all.n, 11);
    walked k = {.strings_only_pending = true};
    assert_int_equal(state_pairs_walk(st, f.id, 3, walk_window, &k, &err), 0);
    assert_int_equal(k.n, 11);
    assert_int_equal(k.windows, 4);
    assert_int_equal(k.largest, 3);
    assert_true(k.strings_only_pending);
    for (size_t i = 0; i < all.n; i++)
        assert_int_equal(k.ids[i], all.v[i].id);

    /* A copy keeps its key in the copying list's own block. */
    state_pair_list kept = {0};
    state_pair_list_add_copy(&kept, &all.v[all.n - 1]);
    state_pair_list_free(&all);
    assert_int_equal(kept.n, 1);
    assert_non_null(kept.arena);
    assert_string_equal(kept.v[0].key, "1701.host");
    state_pair_list_free(&kept);

    bool pending = false;
    assert_int_equal(state_pairs_any_pending(st, f.id, &pending, &err), 0);
    assert_true(pending);
    assert_int_equal(state_pairs_any_pending(st, other.id, &pending, &err), 0);
    assert_false(pending);
    state_folder_free(&f);
    state_folder_free(&other);
    state_close(st);
}

static void test_unique_violations(void **ctx)
{
    fixture *fx = *ctx;
    state *st = open_ok(fx->db);
    ofs_error err = {0};
    state_folder f, g;
    assert_int_equal(state_folder_add(st, "INBOX", &f, &err), 0);
    assert_int_equal(state_folder_add(st, "Sent", &g, &err), 0);

    state_pair a = {.uid = 1, .key = "ka"};
    assert_int_equal(state_pair_add(st, f.id, &a, &err), 0);

    state_pair dup_uid = {.uid = 1, .key = "other"};
    err.code = 0;
    assert_int_equal(state_pair_add(st, f.id, &dup_uid, &err), -1);
    assert_int_equal(err.code, OFS_E_STATE);
    assert_non_null(strstr(err.message, "UNIQUE"));
    assert_non_null(strstr(err.message, fx->db));

    state_pair dup_key = {.uid = 2, .key = "ka"};
    err.code = 0;
    assert_int_equal(state_pair_add(st, f.id, &dup_key, &err), -1);
    assert_int_equal(err.code, OFS_E_STATE);

    /* The same uid and key in another folder is fine. */
    state_pair other = {.uid = 1, .key = "ka"};
    assert_int_equal(state_pair_add(st, g.id, &other, &err), 0);

    /* Update into a collision fails too, and the statement is usable afterwards. */
    state_pair b = {.uid = 2, .key = "kb"};
    assert_int_equal(state_pair_add(st, f.id, &b, &err), 0);
    b.uid = 1;
    assert_int_equal(state_pair_update(st, &b, &err), -1);
    assert_int_equal(err.code, OFS_E_STATE);
    b.uid = 3;
    assert_int_equal(state_pair_update(st, &b, &err), 0);

    /* A pair for a folder that does not exist breaks the foreign key. */
    state_pair orphan = {.uid = 9};
    assert_int_equal(state_pair_add(st, 12345, &orphan, &err), -1);
    assert_int_equal(err.code, OFS_E_STATE);

    state_pair_list l;
    assert_int_equal(state_pairs_load(st, f.id, &l, &err), 0);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.v[0].uid, 1);
    assert_int_equal(l.v[1].uid, 3);
    state_pair_list_free(&l);
    state_folder_free(&f);
    state_folder_free(&g);
    state_close(st);
}

static void test_rollback(void **ctx)
{
    fixture *fx = *ctx;
    state *st = open_ok(fx->db);
    ofs_error err = {0};
    state_folder f;
    assert_int_equal(state_folder_add(st, "INBOX", &f, &err), 0);

    assert_int_equal(state_begin(st, &err), 0);
    state_pair a = {.uid = 1, .key = "ka"};
    assert_int_equal(state_pair_add(st, f.id, &a, &err), 0);
    state_folder g;
    assert_int_equal(state_folder_add(st, "Drafts", &g, &err), 0);
    state_rollback(st);
    state_folder_free(&g);

    state_pair_list l;
    assert_int_equal(state_pairs_load(st, f.id, &l, &err), 0);
    assert_int_equal(l.n, 0);
    state_pair_list_free(&l);
    assert_int_equal(state_folder_get(st, "Drafts", &g, &err), 1);
    /* Rolling back outside a transaction is harmless. */
    state_rollback(st);

    assert_int_equal(state_begin(st, &err), 0);
    assert_int_equal(state_pair_add(st, f.id, &a, &err), 0);
    assert_int_equal(state_commit(st, &err), 0);
    state_close(st);

    st = open_ok(fx->db);
    assert_int_equal(state_pairs_load(st, f.id, &l, &err), 0);
    assert_int_equal(l.n, 1);
    state_pair_list_free(&l);
    /* Commit without begin is reported, not ignored. */
    assert_int_equal(state_commit(st, &err), -1);
    assert_int_equal(err.code, OFS_E_STATE);
    state_folder_free(&f);
    state_close(st);
}

static void test_many_pairs(void **ctx)
{
    enum { N = 20000 };
    fixture *fx = *ctx;
    state *st = open_ok(fx->db);
    ofs_error err = {0};
    state_folder f;
    assert_int_equal(state_folder_add(st, "INBOX", &f, &err), 0);

    assert_int_equal(state_begin(st, &err), 0);
    /* Added in a scrambled uid order, so the load's ordering is tested too. */
    for (unsigned i = 0; i < N; i++) {
        unsigned uid = (i * 7919u) % N + 1;
        char key[32], msgid[32];
        snprintf(key, sizeof key, "k%u", uid);
        snprintf(msgid, sizeof msgid, "<%u@x>", uid);
        state_pair p = {
            .uid = uid, .key = key, .flags = uid % 32, .size = uid * 10ull, .msgid = msgid};
        assert_int_equal(state_pair_add(st, f.id, &p, &err), 0);
    }
    assert_int_equal(state_commit(st, &err), 0);
    state_close(st);

    st = open_ok(fx->db);
    state_pair_list l;
    assert_int_equal(state_pairs_load(st, f.id, &l, &err), 0);
    assert_int_equal(l.n, N);
    for (unsigned i = 0; i < N; i++) {
        unsigned uid = i + 1;
        char key[32];
        snprintf(key, sizeof key, "k%u", uid);
        assert_int_equal(l.v[i].uid, uid);
        assert_string_equal(l.v[i].key, key);
        assert_int_equal(l.v[i].flags, uid % 32);
        assert_true(l.v[i].size == uid * 10ull);
    }
    state_pair_list_free(&l);
    state_folder_free(&f);
    state_close(st);
}

/* The folder marks that let a pass skip unchanged folders: set, read, cleared, and gone
 * with their folder (a stale mark would skip a recreated folder). */
static void test_marks(void **ctx)
{
    fixture *fx = *ctx;
    state *st = open_ok(fx->db);
    ofs_error err = {0};
    state_folder f;
    state_mark m;
    assert_int_equal(state_folder_add(st, "INBOX", &f, &err), 0);
    assert_int_equal(state_mark_get(st, f.id, &m, &err), 1);
    state_mark set = {.messages = 7, .local_mark = "1.2:3:4:5 6.7:8:9:10"};
    assert_int_equal(state_mark_set(st, f.id, &set, &err), 0);
    assert_int_equal(state_mark_get(st, f.id, &m, &err), 0);
    assert_int_equal(m.messages, 7);
    assert_string_equal(m.local_mark, set.local_mark);
    free(m.local_mark);
    set = (state_mark){.messages = 9, .local_mark = NULL};
    assert_int_equal(state_mark_set(st, f.id, &set, &err), 0);
    assert_int_equal(state_mark_get(st, f.id, &m, &err), 0);
    assert_int_equal(m.messages, 9);
    assert_null(m.local_mark);
    assert_int_equal(state_mark_clear(st, f.id, &err), 0);
    assert_int_equal(state_mark_get(st, f.id, &m, &err), 1);
    assert_int_equal(state_mark_set(st, f.id, &set, &err), 0);
    assert_int_equal(state_folder_delete(st, f.id, &err), 0);
    assert_int_equal(raw_int(fx->db, "SELECT count(*) FROM folder_marks"), 0);
    state_folder_free(&f);
    state_close(st);
}

/* A version 1 database gains the marks table and keeps its folders. */
static void test_migrate_v1(void **ctx)
{
    fixture *fx = *ctx;
    state *st = open_ok(fx->db);
    state_close(st);
    raw_exec(fx->db,
             "DROP TABLE folder_marks; DROP TABLE intents; DROP TABLE held; DROP INDEX pairs_hash;"
             "ALTER TABLE pairs DROP COLUMN hash; ALTER TABLE pairs DROP COLUMN target;"
             "ALTER TABLE pairs DROP COLUMN stamp; ALTER TABLE pairs DROP COLUMN born;"
             "INSERT INTO folders (name) VALUES ('Old');"
             "PRAGMA user_version = 1;");
    st = open_ok(fx->db);
    assert_int_equal(state_schema_version(st), 5);
    ofs_error err = {0};
    state_folder f;
    state_mark m;
    assert_int_equal(state_folder_get(st, "Old", &f, &err), 0);
    assert_int_equal(state_mark_get(st, f.id, &m, &err), 1);
    state_folder_free(&f);
    state_close(st);
}

/* A v1 database (the foundation's) keeps its pairs through the upgrade; they get no hash. */
static void test_migrate_v1_keeps_pairs(void **ctx)
{
    fixture *fx = *ctx;
    char *path = xasprintf("%s/v1.db", fx->dir);
    raw_exec(path,
             "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);"
             "CREATE TABLE folders (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL,"
             " uidvalidity INTEGER NOT NULL DEFAULT 0, uidnext INTEGER NOT NULL DEFAULT 0,"
             " highestmodseq INTEGER NOT NULL DEFAULT 0, last_sync INTEGER NOT NULL DEFAULT 0);"
             "CREATE TABLE pairs (id INTEGER PRIMARY KEY, folder_id INTEGER NOT NULL"
             " REFERENCES folders(id) ON DELETE CASCADE, uid INTEGER, key TEXT,"
             " flags INTEGER NOT NULL DEFAULT 0, size INTEGER NOT NULL DEFAULT 0, msgid TEXT,"
             " pending INTEGER NOT NULL DEFAULT 0, uidnext_seen INTEGER NOT NULL DEFAULT 0);"
             "INSERT INTO folders (id, name, uidvalidity) VALUES (1, 'INBOX', 9);"
             "INSERT INTO pairs (folder_id, uid, key, flags, msgid) VALUES (1, 4, 'k4', 3, '<m>');"
             "PRAGMA user_version = 1;");
    state *st = open_ok(path);
    free(path);
    assert_int_equal(state_schema_version(st), 5);
    ofs_error err = {0};
    state_pair_list l;
    assert_int_equal(state_pairs_load(st, 1, &l, &err), 0);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.v[0].uid, 4);
    assert_string_equal(l.v[0].msgid, "<m>");
    assert_null(l.v[0].hash);
    assert_int_equal(l.v[0].target, 0);
    assert_int_equal(l.v[0].stamp, 0); /* taken from the file as it is at the next pass */
    state_pair_list_free(&l);
    state_close(st);
}

/* The held-back set of a folder is replaced as a whole, read in UID order, dropped with its
 * folder, and not read back once the folder's UIDVALIDITY moved on. */
static void test_held(void **ctx)
{
    fixture *fx = *ctx;
    state *st = open_ok(fx->db);
    ofs_error err = {0};
    state_folder f;
    assert_int_equal(state_folder_add(st, "INBOX", &f, &err), 0);
    f.uidvalidity = 7;
    assert_int_equal(state_folder_update(st, &f, &err), 0);
    state_held_list l = {0};
    *state_held_list_push(&l) = (state_held){.uid = 9, .size = 900};
    *state_held_list_push(&l) = (state_held){.uid = 3, .size = 300};
    assert_int_equal(state_held_replace(st, f.id, 7, &l, &err), 0);
    state_held_list_free(&l);
    assert_int_equal(state_held_load(st, f.id, &l, &err), 0);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.v[0].uid, 3);
    assert_int_equal(l.v[0].size, 300);
    assert_int_equal(l.v[1].uid, 9);
    l.n = 1;
    l.v[0] = (state_held){.uid = 12, .size = 1200};
    assert_int_equal(state_held_replace(st, f.id, 7, &l, &err), 0);
    state_held_list_free(&l);
    assert_int_equal(state_held_load(st, f.id, &l, &err), 0);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.v[0].uid, 12);
    state_held_list_free(&l);

    f.uidvalidity = 8;
    assert_int_equal(state_folder_update(st, &f, &err), 0);
    assert_int_equal(state_held_load(st, f.id, &l, &err), 0);
    assert_int_equal(l.n, 0);
    state_held_list_free(&l);
    assert_int_equal(state_held_replace(st, f.id, 8, NULL, &err), 0);
    assert_int_equal(raw_int(fx->db, "SELECT count(*) FROM held"), 0);

    *state_held_list_push(&l) = (state_held){.uid = 1, .size = 100};
    assert_int_equal(state_held_replace(st, f.id, 8, &l, &err), 0);
    state_held_list_free(&l);
    assert_int_equal(state_folder_delete(st, f.id, &err), 0);
    assert_int_equal(raw_int(fx->db, "SELECT count(*) FROM held"), 0);
    state_folder_free(&f);
    state_close(st);
}

/* A version 3 database (before held-back messages were recorded) gains the held table and
 * keeps its folders, pairs and intents. */
static void test_migrate_v3(void **ctx)
{
    fixture *fx = *ctx;
    state *st = open_ok(fx->db);
    ofs_error err = {0};
    state_folder f;
    assert_int_equal(state_folder_add(st, "INBOX", &f, &err), 0);
    state_pair p = {.uid = 5, .key = "k5", .size = 10};
    assert_int_equal(state_pair_add(st, f.id, &p, &err), 0);
    assert_int_equal(state_intent_add(st, "create-local", "X", NULL, NULL, &err), 0);
    state_close(st);
    raw_exec(fx->db, "DROP TABLE held; DROP INDEX pairs_hash; ALTER TABLE pairs DROP COLUMN stamp; "
                     "ALTER TABLE pairs DROP COLUMN born;"
                     "DELETE FROM meta; PRAGMA user_version = 3;");

    st = open_ok(fx->db);
    assert_int_equal(state_schema_version(st), 5);
    state_pair_list pl;
    assert_int_equal(state_pairs_load(st, f.id, &pl, &err), 0);
    assert_int_equal(pl.n, 1);
    assert_string_equal(pl.v[0].key, "k5");
    state_pair_list_free(&pl);
    state_intent_list il;
    assert_int_equal(state_intents_load(st, &il, &err), 0);
    assert_int_equal(il.n, 1);
    state_intent_list_free(&il);
    state_held_list hl;
    assert_int_equal(state_held_load(st, f.id, &hl, &err), 0);
    assert_int_equal(hl.n, 0);
    state_held_list_free(&hl);
    state_folder_free(&f);
    state_close(st);
}

static void test_folder_rename_and_intents(void **ctx)
{
    fixture *fx = *ctx;
    state *st = open_ok(fx->db);
    ofs_error err = {0};
    state_folder f;
    const char *names[] = {"Archive", "Archive/2022", "Archived", "INBOX"};
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(state_folder_add(st, names[i], &f, &err), 0);
        state_folder_free(&f);
    }
    assert_int_equal(state_folder_rename(st, "Archive", "Old", &err), 0);
    strlist l;
    assert_int_equal(state_folder_names(st, &l, &err), 0);
    assert_int_equal(l.n, 4);
    assert_string_equal(l.v[0], "Archived"); /* a sibling with the same prefix is not a child */
    assert_string_equal(l.v[1], "INBOX");
    assert_string_equal(l.v[2], "Old");
    assert_string_equal(l.v[3], "Old/2022");
    strlist_free(&l);

    int64_t a, b;
    assert_int_equal(state_intent_add(st, "rename-server", "Old", "New", &a, &err), 0);
    assert_int_equal(state_intent_add(st, "create-local", "X", NULL, &b, &err), 0);
    state_intent_list il;
    assert_int_equal(state_intents_load(st, &il, &err), 0);
    assert_int_equal(il.n, 2);
    assert_string_equal(il.v[0].op, "rename-server");
    assert_string_equal(il.v[0].folder, "Old");
    assert_string_equal(il.v[0].arg, "New");
    assert_null(il.v[1].arg);
    state_intent_list_free(&il);
    assert_int_equal(state_intent_delete(st, a, &err), 0);
    assert_int_equal(state_intents_load(st, &il, &err), 0);
    assert_int_equal(il.n, 1);
    assert_int_equal(il.v[0].id, b);
    state_intent_list_free(&il);

    /* A folder's intents follow it, and those of the folders below it; a rename's own does not. */
    assert_int_equal(state_intent_add(st, "restore-deleted", "Old", "4 5 @7", &a, &err), 0);
    assert_int_equal(state_intent_add(st, "replace-edited", "Old/2022", "7 9 k", &a, &err), 0);
    assert_int_equal(state_intent_add(st, "rename-server", "Old", "Older", &a, &err), 0);
    assert_int_equal(state_folder_rename(st, "Old", "Older", &err), 0);
    assert_int_equal(state_intents_load(st, &il, &err), 0);
    assert_int_equal(il.n, 4);
    assert_string_equal(il.v[0].folder, "X");
    assert_string_equal(il.v[1].folder, "Older");
    assert_string_equal(il.v[2].folder, "Older/2022");
    assert_string_equal(il.v[3].folder, "Old");
    state_intent_list_free(&il);
    state_close(st);
}

/* A message is found by content only among the pairs made since the last complete pass, and
 * the stamp and generation survive a reopen. */
static void test_pairs_by_hash_per_generation(void **ctx)
{
    fixture *fx = *ctx;
    state *st = open_ok(fx->db);
    ofs_error err = {0};
    state_folder f;
    assert_int_equal(state_folder_add(st, "Archive", &f, &err), 0);
    state_pair old = {.uid = 1, .key = "k1", .hash = "aa", .stamp = 77};
    assert_int_equal(state_pair_add(st, f.id, &old, &err), 0);
    state_pair p;
    char *folder = NULL;
    assert_int_equal(state_pair_by_hash(st, "aa", &p, &folder, &err), 0);
    assert_int_equal(p.id, old.id);
    assert_int_equal(p.stamp, 77);
    assert_string_equal(folder, "Archive");
    free(folder);
    free(p.key);
    free(p.hash);
    assert_int_equal(state_generation_next(st, &err), 0);
    state_close(st);
    st = open_ok(fx->db);
    assert_int_equal(state_pair_by_hash(st, "aa", &p, &folder, &err), 1); /* older: not a move */
    state_pair copy = {.uid = 2, .key = "k2", .hash = "aa"}, pending = copy;
    pending.uid = 3;
    pending.key = "k3";
    pending.pending = PENDING_UPLOAD;
    assert_int_equal(state_pair_add(st, f.id, &pending, &err), 0);
    assert_int_equal(state_pair_by_hash(st, "aa", &p, &folder, &err), 1); /* not settled */
    assert_int_equal(state_pair_add(st, f.id, &copy, &err), 0);
    assert_int_equal(state_pair_by_hash(st, "aa", &p, &folder, &err), 0);
    assert_int_equal(p.id, copy.id);
    free(folder);
    free(p.key);
    free(p.hash);
    state_pair again = {.uid = 4, .key = "k4", .hash = "aa"};
    assert_int_equal(state_pair_add(st, f.id, &again, &err), 0);
    assert_int_equal(state_pair_by_hash(st, "aa", &p, &folder, &err), 2); /* which one? */
    assert_int_equal(p.id, copy.id);
    free(folder);
    free(p.key);
    free(p.hash);
    state_folder_free(&f);
    state_close(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrate_empty_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_newer_version_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_folders, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pairs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pairs_lean, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pairs_walk_in_windows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unique_violations, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rollback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_pairs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_marks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_held, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrate_v3, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrate_v1, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrate_v1_keeps_pairs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_folder_rename_and_intents, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pairs_by_hash_per_generation, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
