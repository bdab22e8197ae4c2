/* state.c: the per-account sync state in SQLite: schema migrations, folders and message pairs.
 * Statements are prepared once and reused, because the engine calls them per message. */
#include "state/state.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "util/arena.h"
#include "util/err.h"

/* Cached statements; the SQL lives in stmt_sql at the same index. */
enum {
    S_BEGIN,
    S_COMMIT,
    S_ROLLBACK,
    S_FOLDER_GET,
    S_FOLDER_ADD,
    S_FOLDER_UPDATE,
    S_FOLDER_DELETE,
    S_FOLDER_NAMES,
    S_PAIRS_LOAD,
    S_PAIRS_LEAN,
    S_PAIRS_SIZE,
    S_PAIR_STRINGS,
    S_PAIRS_PENDING,
    S_PAIR_ADD,
    S_PAIR_UPDATE,
    S_PAIR_DELETE,
    S_PAIRS_CLEAR,
    S_MARK_GET,
    S_MARK_SET,
    S_MARK_CLEAR,
    S_FOLDER_RENAME,
    S_INTENT_FOLDER_RENAME,
    S_INTENT_ADD,
    S_INTENT_DELETE,
    S_INTENTS_LOAD,
    S_HELD_LOAD,
    S_HELD_CLEAR,
    S_HELD_ADD,
    S_PAIR_BY_HASH,
    S_META_GET,
    S_META_SET,
    S_PAIR_MAX_ID,
    S_COUNT
};

static const char *const stmt_sql[S_COUNT] = {
    [S_BEGIN] = "BEGIN IMMEDIATE",
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
    [S_FOLDER_GET] = "SELECT id, name, uidvalidity, uidnext, highestmodseq, last_sync"
                     " FROM folders WHERE name = ?1",
    [S_FOLDER_ADD] = "INSERT INTO folders (name, uidvalidity, uidnext, highestmodseq, last_sync)"
                     " VALUES (?1, 0, 0, 0, 0)",
    [S_FOLDER_UPDATE] = "UPDATE folders SET name = ?2, uidvalidity = ?3, uidnext = ?4,"
                        " highestmodseq = ?5, last_sync = ?6 WHERE id = ?1",
    [S_FOLDER_DELETE] = "DELETE FROM folders WHERE id = ?1",
    [S_FOLDER_NAMES] = "SELECT name FROM folders ORDER BY name",
    [S_PAIRS_LOAD] = "SELECT id, uid, key, flags, size, msgid, pending, uidnext_seen, hash,"
                     " target, stamp FROM pairs WHERE folder_id = ?1 ORDER BY uid, id",
    /* Message-ID and hash only where an intent is being resolved: the plan needs neither. */
    [S_PAIRS_LEAN] = "SELECT id, uid, key, flags, size, CASE WHEN pending THEN msgid END, pending,"
                     " uidnext_seen, CASE WHEN pending THEN hash END, target, stamp FROM pairs"
                     " WHERE folder_id = ?1 ORDER BY uid, id",
    [S_PAIRS_SIZE] = "SELECT count(*) FROM pairs WHERE folder_id = ?1",
    [S_PAIR_STRINGS] = "SELECT msgid, hash FROM pairs WHERE id = ?1",
    [S_PAIRS_PENDING] = "SELECT EXISTS (SELECT 1 FROM pairs WHERE folder_id = ?1 AND pending != 0)",
    [S_PAIR_ADD] = "INSERT INTO pairs (folder_id, uid, key, flags, size, msgid, pending,"
                   " uidnext_seen, hash, target, stamp, born)"
                   " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    /* A lean pair's NULL Message-ID and hash mean "not loaded": what is recorded stays. */
    [S_PAIR_UPDATE] = "UPDATE pairs SET uid = ?2, key = ?3, flags = ?4, size = ?5,"
                      " msgid = coalesce(?6, msgid), pending = ?7, uidnext_seen = ?8,"
                      " hash = coalesce(?9, hash), target = ?10, stamp = ?11"
                      " WHERE id = ?1",
    [S_PAIR_DELETE] = "DELETE FROM pairs WHERE id = ?1",
    [S_PAIRS_CLEAR] = "DELETE FROM pairs WHERE folder_id = ?1",
    [S_MARK_GET] = "SELECT messages, local_mark FROM folder_marks WHERE folder_id = ?1",
    [S_MARK_SET] = "INSERT OR REPLACE INTO folder_marks (folder_id, messages, local_mark)"
                   " VALUES (?1, ?2, ?3)",
    [S_MARK_CLEAR] = "DELETE FROM folder_marks WHERE folder_id = ?1",
    [S_FOLDER_RENAME] = "UPDATE folders SET name = ?2 || substr(name, length(?1) + 1)"
                        " WHERE name = ?1 OR substr(name, 1, length(?1) + 1) = ?1 || '/'",
    /* The intents of a renamed folder (and of those below it) go with it; a rename's own
     * intent names the folder as it was, which is what resuming the rename needs. */
    [S_INTENT_FOLDER_RENAME] =
        "UPDATE intents SET folder = ?2 || substr(folder, length(?1) + 1)"
        " WHERE (folder = ?1 OR substr(folder, 1, length(?1) + 1) = ?1 || '/')"
        " AND op NOT LIKE 'rename-%'",
    [S_INTENT_ADD] = "INSERT INTO intents (op, folder, arg) VALUES (?1, ?2, ?3)",
    [S_INTENT_DELETE] = "DELETE FROM intents WHERE id = ?1",
    [S_INTENTS_LOAD] = "SELECT id, op, folder, arg FROM intents ORDER BY id",
    /* Rows of an older UIDVALIDITY name messages that no longer exist as such. */
    [S_HELD_LOAD] = "SELECT h.uid, h.size FROM held h JOIN folders f ON f.id = h.folder_id"
                    " WHERE h.folder_id = ?1 AND h.uidvalidity = f.uidvalidity ORDER BY h.uid",
    [S_HELD_CLEAR] = "DELETE FROM held WHERE folder_id = ?1",
    [S_HELD_ADD] = "INSERT INTO held (folder_id, uid, uidvalidity, size) VALUES (?1, ?2, ?3, ?4)",
    [S_PAIR_BY_HASH] = "SELECT p.id, uid, key, flags, size, msgid, pending, uidnext_seen, hash,"
                       " target, stamp, f.name FROM pairs p JOIN folders f ON f.id = p.folder_id"
                       " WHERE hash = ?1 AND born >= ?2 AND uid IS NOT NULL AND key IS NOT NULL"
                       " AND pending = 0 ORDER BY p.id LIMIT 2",
    [S_META_GET] = "SELECT value FROM meta WHERE key = ?1",
    [S_META_SET] = "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
    [S_PAIR_MAX_ID] = "SELECT coalesce(max(id), 0) FROM pairs",
};

/* Schema steps, in order: step i takes user_version i to i + 1. Never edit a released step;
 * append a new one. */
static const char *const migrations[] = {
    /* v1 */
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);"
    "CREATE TABLE folders ("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT UNIQUE NOT NULL,"
    "  uidvalidity INTEGER NOT NULL DEFAULT 0,"
    "  uidnext INTEGER NOT NULL DEFAULT 0,"
    "  highestmodseq INTEGER NOT NULL DEFAULT 0,"
    "  last_sync INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE pairs ("
    "  id INTEGER PRIMARY KEY,"
    "  folder_id INTEGER NOT NULL REFERENCES folders(id) ON DELETE CASCADE,"
    "  uid INTEGER,"
    "  key TEXT,"
    "  flags INTEGER NOT NULL DEFAULT 0,"
    "  size INTEGER NOT NULL DEFAULT 0,"
    "  msgid TEXT,"
    "  pending INTEGER NOT NULL DEFAULT 0,"
    "  uidnext_seen INTEGER NOT NULL DEFAULT 0);"
    "CREATE UNIQUE INDEX pairs_uid ON pairs (folder_id, uid) WHERE uid IS NOT NULL;"
    "CREATE UNIQUE INDEX pairs_key ON pairs (folder_id, key) WHERE key IS NOT NULL;"
    "CREATE INDEX pairs_folder_uid ON pairs (folder_id, uid);",
    /* v2: what a complete pass saw, so an unchanged folder is skipped (state_mark_*) */
    "CREATE TABLE folder_marks ("
    "  folder_id INTEGER PRIMARY KEY REFERENCES folders(id) ON DELETE CASCADE,"
    "  messages INTEGER NOT NULL,"
    "  local_mark TEXT);",
    /* v3: content hash of each pair (SHA-256 of the message as IMAP sends it, hex), the flags
     * a pending flag change goes to, and write-ahead intents that are not about one pair
     * (folder create/rename/delete, the \Deleted flags an expunge fallback lifts). */
    "ALTER TABLE pairs ADD COLUMN hash TEXT;"
    "ALTER TABLE pairs ADD COLUMN target INTEGER NOT NULL DEFAULT 0;"
    "CREATE TABLE intents ("
    "  id INTEGER PRIMARY KEY,"
    "  op TEXT NOT NULL,"
    "  folder TEXT NOT NULL,"
    "  arg TEXT);",
    /* v4: messages left on the server because of max-size, so that `ofsync status` can list
     * them offline and an incremental pass knows them without listing the folder in full. */
    "CREATE TABLE held ("
    "  folder_id INTEGER NOT NULL REFERENCES folders(id) ON DELETE CASCADE,"
    "  uid INTEGER NOT NULL,"
    "  uidvalidity INTEGER NOT NULL,"
    "  size INTEGER NOT NULL,"
    "  PRIMARY KEY (folder_id, uid)) WITHOUT ROWID;",
    /* v5: the local file's stamp (size, mtime, inode) when its content was last known to match
     * the hash: a changed stamp is what makes a pass hash the file again (an edit in place). */
    "ALTER TABLE pairs ADD COLUMN stamp INTEGER NOT NULL DEFAULT 0;"
    /* ... and the pass generation a pair was made in (a complete pass starts the next one):
     * a message removed from one folder is looked for among the pairs made since. */
    "ALTER TABLE pairs ADD COLUMN born INTEGER NOT NULL DEFAULT 0;"
    "INSERT OR REPLACE INTO meta (key, value) VALUES ('generation', 1);"
    "CREATE INDEX pairs_hash ON pairs (hash) WHERE hash IS NOT NULL;",
};

#define STATE_SCHEMA_VERSION ((int)(sizeof migrations / sizeof migrations[0]))

struct state {
    sqlite3 *db;
    char *path;
    int64_t generation; /* born of the pairs added now: complete passes so far, plus one */
    sqlite3_stmt *stmt[S_COUNT];
};

static int state_fail(state *st, ofs_error *err, const char *what)
{
    return err_set(err, OFS_E_STATE, "state database %s: %s: %s", st->path, what,
                   sqlite3_errmsg(st->db));
}

static sqlite3_stmt *state_stmt(state *st, int which, ofs_error *err)
{
    if (!st->stmt[which] &&
        sqlite3_prepare_v3(st->db, stmt_sql[which], -1, SQLITE_PREPARE_PERSISTENT, &st->stmt[which],
                           NULL) != SQLITE_OK) {
        state_fail(st, err, "cannot prepare a statement");
        return NULL;
    }
    return st->stmt[which];
}

/* Runs a statement that returns no rows, then makes it ready for the next call. The format
 * says what failed; the error is read before the reset. */
static int state_step_done(state *st, sqlite3_stmt *s, ofs_error *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int state_step_done(state *st, sqlite3_stmt *s, ofs_error *err, const char *fmt, ...)
{
    int rc = sqlite3_step(s);
    int ret = 0;
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        buf what;
        buf_init(&what);
        va_list ap;
        va_start(ap, fmt);
        buf_vprintf(&what, fmt, ap);
        va_end(ap);
        ret = state_fail(st, err, what.data);
        buf_free(&what);
    }
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return ret;
}

static void state_stmt_done(sqlite3_stmt *s)
{
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
}

static int state_exec(state *st, const char *sql, const char *what, ofs_error *err)
{
    char *msg = NULL;
    if (sqlite3_exec(st->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        err_set(err, OFS_E_STATE, "state database %s: %s: %s", st->path, what,
                msg ? msg : sqlite3_errmsg(st->db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

/* mkdir -p of the directory holding path; the state is private, hence 0700. */
static int state_mkdir_parent(const char *path, ofs_error *err)
{
    char *dir = xstrdup(path);
    char *slash = strrchr(dir, '/');
    int ret = 0;
    if (slash && slash != dir) {
        *slash = '\0';
        for (char *p = dir + 1; ret == 0; p++) {
            if (*p != '/' && *p != '\0')
                continue;
            char c = *p;
            *p = '\0';
            if (mkdir(dir, 0700) < 0 && errno != EEXIST)
                ret = err_errno(err, OFS_E_STATE, errno, "cannot create state directory %s", dir);
            *p = c;
            if (c == '\0')
                break;
        }
    }
    free(dir);
    return ret;
}

static int state_user_version(state *st, int *version, ofs_error *err)
{
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(st->db, "PRAGMA user_version", -1, &s, NULL) != SQLITE_OK)
        return err_set(err, OFS_E_STATE,
                       "state database %s is unreadable or not an SQLite database: %s", st->path,
                       sqlite3_errmsg(st->db));
    int rc = sqlite3_step(s);
    if (rc != SQLITE_ROW) {
        err_set(err, OFS_E_STATE, "state database %s is unreadable or not an SQLite database: %s",
                st->path, sqlite3_errmsg(st->db));
        sqlite3_finalize(s);
        return -1;
    }
    *version = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    return 0;
}

/* Each step and its version bump commit together, so a crash never leaves a half-migrated
 * schema labelled with either version. */
static int state_migrate(state *st, int from, ofs_error *err)
{
    for (int v = from; v < STATE_SCHEMA_VERSION; v++) {
        if (state_exec(st, "BEGIN IMMEDIATE", "cannot start the schema upgrade", err) < 0)
            return -1;
        char *bump = xasprintf("PRAGMA user_version = %d", v + 1);
        int ret = state_exec(st, migrations[v], "cannot upgrade the schema", err);
        if (ret == 0)
            ret = state_exec(st, bump, "cannot record the schema version", err);
        if (ret == 0)
            ret = state_exec(st, "COMMIT", "cannot commit the schema upgrade", err);
        free(bump);
        if (ret < 0) {
            sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
            return -1;
        }
    }
    return 0;
}

static int state_generation_load(state *st, ofs_error *err);

/* 512 KiB of page cache (SQLite's default is 2 MiB) for the whole process: reads go by index to
 * pages the OS caches anyway, and each handle's cache fills to its limit during a download. */
#define STATE_CACHE_KIB 512
#define STATE_CACHE_MIN_KIB 128

int state_set_cache_share(state *st, size_t handles, ofs_error *err)
{
    size_t kib = STATE_CACHE_KIB / (handles ? handles : 1);
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA cache_size = -%zu",
             kib > STATE_CACHE_MIN_KIB ? kib : (size_t)STATE_CACHE_MIN_KIB);
    return state_exec(st, sql, "cannot set the page cache size", err);
}

static int state_setup(state *st, ofs_error *err)
{
    int version = 0;
    sqlite3_busy_timeout(st->db, 5000);
    sqlite3_extended_result_codes(st->db, 1);
    if (state_user_version(st, &version, err) < 0)
        return -1;
    if (version > STATE_SCHEMA_VERSION)
        return err_set(err, OFS_E_STATE,
                       "state database %s was written by a newer ofsync (schema %d, this one "
                       "knows %d)",
                       st->path, version, STATE_SCHEMA_VERSION);
    if (state_exec(st, "PRAGMA journal_mode = WAL", "cannot enable WAL", err) < 0 ||
        state_exec(st, "PRAGMA synchronous = FULL", "cannot set synchronous", err) < 0 ||
        state_exec(st, "PRAGMA foreign_keys = ON", "cannot enable foreign keys", err) < 0 ||
        state_set_cache_share(st, 1, err) < 0)
        return -1;
    if (state_migrate(st, version, err) < 0)
        return -1;
    return state_generation_load(st, err);
}

int state_open(const char *path, state **out, ofs_error *err)
{
    *out = NULL;
    if (state_mkdir_parent(path, err) < 0)
        return -1;
    state *st = xcalloc(1, sizeof *st);
    st->path = xstrdup(path);
    int rc = sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc != SQLITE_OK) {
        err_set(err, OFS_E_STATE, "cannot open state database %s: %s", path,
                st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc));
        state_close(st);
        return -1;
    }
    if (state_setup(st, err) < 0) {
        state_close(st);
        return -1;
    }
    *out = st;
    return 0;
}

void state_close(state *st)
{
    if (!st)
        return;
    for (int i = 0; i < S_COUNT; i++)
        sqlite3_finalize(st->stmt[i]);
    sqlite3_close(st->db);
    free(st->path);
    free(st);
}

int state_schema_version(state *st)
{
    int version = -1;
    if (state_user_version(st, &version, NULL) < 0)
        return -1;
    return version;
}

static int state_run(state *st, int which, const char *what, ofs_error *err)
{
    sqlite3_stmt *s = state_stmt(st, which, err);
    return s ? state_step_done(st, s, err, "%s", what) : -1;
}

int state_begin(state *st, ofs_error *err)
{
    return state_run(st, S_BEGIN, "cannot start a transaction", err);
}

int state_commit(state *st, ofs_error *err)
{
    return state_run(st, S_COMMIT, "cannot commit", err);
}

void state_rollback(state *st)
{
    /* Nothing useful to report: after a failed ROLLBACK SQLite has rolled back anyway. */
    if (sqlite3_get_autocommit(st->db))
        return;
    state_run(st, S_ROLLBACK, "cannot roll back", NULL);
}

void state_folder_free(state_folder *f)
{
    if (!f)
        return;
    free(f->name);
    memset(f, 0, sizeof *f);
}

void state_pair_list_free(state_pair_list *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n; i++) {
        if (!l->arena)
            free(l->v[i].key);
        free(l->v[i].msgid);
        free(l->v[i].hash);
    }
    arena_unref(l->arena);
    free(l->v);
    memset(l, 0, sizeof *l);
}

static char *state_column_text(sqlite3_stmt *s, int col)
{
    const unsigned char *t = sqlite3_column_text(s, col);
    return t ? xstrdup((const char *)t) : NULL;
}

int state_folder_get(state *st, const char *name, state_folder *f, ofs_error *err)
{
    sqlite3_stmt *s = state_stmt(st, S_FOLDER_GET, err);
    if (!s)
        return -1;
    sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    int ret = 1;
    if (rc == SQLITE_ROW) {
        memset(f, 0, sizeof *f);
        f->id = sqlite3_column_int64(s, 0);
        f->name = state_column_text(s, 1);
        f->uidvalidity = (uint32_t)sqlite3_column_int64(s, 2);
        f->uidnext = (uint32_t)sqlite3_column_int64(s, 3);
        f->highestmodseq = (uint64_t)sqlite3_column_int64(s, 4);
        f->last_sync = sqlite3_column_int64(s, 5);
        ret = 0;
    } else if (rc != SQLITE_DONE) {
        ret = err_set(err, OFS_E_STATE, "state database %s: cannot read folder '%s': %s", st->path,
                      name, sqlite3_errmsg(st->db));
    }
    state_stmt_done(s);
    return ret;
}

int state_folder_add(state *st, const char *name, state_folder *f, ofs_error *err)
{
    sqlite3_stmt *s = state_stmt(st, S_FOLDER_ADD, err);
    if (!s)
        return -1;
    sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    if (state_step_done(st, s, err, "cannot add folder '%s'", name) < 0)
        return -1;
    memset(f, 0, sizeof *f);
    f->id = sqlite3_last_insert_rowid(st->db);
    f->name = xstrdup(name);
    return 0;
}

/* An UPDATE or DELETE by id that touched nothing means the caller's id is stale. */
static int state_changed_one(state *st, const char *what, int64_t id, ofs_error *err)
{
    if (sqlite3_changes(st->db) == 1)
        return 0;
    return err_set(err, OFS_E_STATE, "state database %s: %s %lld: no such row", st->path, what,
                   (long long)id);
}

int state_folder_update(state *st, const state_folder *f, ofs_error *err)
{
    sqlite3_stmt *s = state_stmt(st, S_FOLDER_UPDATE, err);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, f->id);
    sqlite3_bind_text(s, 2, f->name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, f->uidvalidity);
    sqlite3_bind_int64(s, 4, f->uidnext);
    sqlite3_bind_int64(s, 5, (sqlite3_int64)f->highestmodseq);
    sqlite3_bind_int64(s, 6, f->last_sync);
    if (state_step_done(st, s, err, "cannot update folder '%s'", f->name ? f->name : "") < 0)
        return -1;
    return state_changed_one(st, "cannot update folder", f->id, err);
}

int state_folder_delete(state *st, int64_t id, ofs_error *err)
{
    sqlite3_stmt *s = state_stmt(st, S_FOLDER_DELETE, err);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, id);
    return state_step_done(st, s, err, "cannot delete folder %lld", (long long)id);
}

int state_folder_names(state *st, strlist *out, ofs_error *err)
{
    strlist_init(out);
    sqlite3_stmt *s = state_stmt(st, S_FOLDER_NAMES, err);
    if (!s)
        return -1;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW)
        strlist_add(out, (const char *)sqlite3_column_text(s, 0));
    int ret = 0;
    if (rc != SQLITE_DONE) {
        ret = state_fail(st, err, "cannot list folders");
        strlist_free(out);
    }
    state_stmt_done(s);
    return ret;
}

/* Every column but the key, which the caller places. */
static void state_pair_read_fields(sqlite3_stmt *s, state_pair *p)
{
    p->id = sqlite3_column_int64(s, 0);
    /* NULL reads as 0, which is what an unknown uid is outside the database. */
    p->uid = (uint32_t)sqlite3_column_int64(s, 1);
    p->flags = (unsigned)sqlite3_column_int64(s, 3);
    p->size = (uint64_t)sqlite3_column_int64(s, 4);
    p->msgid = state_column_text(s, 5);
    p->pending = sqlite3_column_int(s, 6);
    p->uidnext_seen = (uint32_t)sqlite3_column_int64(s, 7);
    p->hash = state_column_text(s, 8);
    p->target = (unsigned)sqlite3_column_int64(s, 9);
    p->stamp = (uint64_t)sqlite3_column_int64(s, 10);
}

static void state_pair_read(sqlite3_stmt *s, state_pair *p)
{
    state_pair_read_fields(s, p);
    p->key = state_column_text(s, 2);
}

/* How many pairs a folder has, so a lean list's vector is allocated once. */
static int pairs_count(state *st, int64_t folder_id, size_t *n, ofs_error *err)
{
    sqlite3_stmt *s = state_stmt(st, S_PAIRS_SIZE, err);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, folder_id);
    int rc = sqlite3_step(s), ret = 0;
    *n = rc == SQLITE_ROW ? (size_t)sqlite3_column_int64(s, 0) : 0;
    if (rc != SQLITE_ROW)
        ret = state_fail(st, err, "cannot count message pairs");
    state_stmt_done(s);
    return ret;
}

/* A lean list's keys live in its arena, made with its first key. */
static char *lean_key(state_pair_list *l, const char *key, size_t len)
{
    if (!l->arena)
        l->arena = arena_new();
    return arena_strndup(l->arena, key, len);
}

static state_pair *pair_push(state_pair_list *out)
{
    if (out->n == out->cap) { /* a lean list: only if pairs came after the count */
        out->cap += out->arena ? out->cap / 8 + 16 : out->cap ? out->cap : 64;
        out->v = xrealloc(out->v, out->cap * sizeof *out->v);
    }
    state_pair *p = &out->v[out->n++];
    memset(p, 0, sizeof *p);
    return p;
}

static void full_push(state_pair_list *out, sqlite3_stmt *s)
{
    state_pair_read(s, pair_push(out));
}

static void lean_push(state_pair_list *out, sqlite3_stmt *s)
{
    state_pair *p = pair_push(out);
    state_pair_read_fields(s, p);
    const char *key = (const char *)sqlite3_column_text(s, 2);
    p->key = key ? lean_key(out, key, (size_t)sqlite3_column_bytes(s, 2)) : NULL;
}

/* A folder's pairs, each row added to out by push. */
static int pairs_query(state *st, int which, int64_t folder_id, state_pair_list *out,
                       void (*push)(state_pair_list *, sqlite3_stmt *), ofs_error *err)
{
    sqlite3_stmt *s = state_stmt(st, which, err);
    if (!s) {
        state_pair_list_free(out);
        return -1;
    }
    sqlite3_bind_int64(s, 1, folder_id);
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW)
        push(out, s);
    int ret = 0;
    if (rc != SQLITE_DONE) {
        ret = state_fail(st, err, "cannot load message pairs");
        state_pair_list_free(out);
    }
    state_stmt_done(s);
    return ret;
}

int state_pairs_load(state *st, int64_t folder_id, state_pair_list *out, ofs_error *err)
{
    memset(out, 0, sizeof *out);
    return pairs_query(st, S_PAIRS_LOAD, folder_id, out, full_push, err);
}

int state_pairs_load_lean(state *st, int64_t folder_id, state_pair_list *out, ofs_error *err)
{
    memset(out, 0, sizeof *out);
    size_t n;
    if (pairs_count(st, folder_id, &n, err) < 0)
        return -1;
    out->cap = n;
    out->v = xmalloc((n ? n : 1) * sizeof *out->v);
    return pairs_query(st, S_PAIRS_LEAN, folder_id, out, lean_push, err);
}

/* A window handed on: its pairs and their keys go; the vector stays for the next window. */
static void window_reset(state_pair_list *w)
{
    for (size_t i = 0; i < w->n; i++) {
        free(w->v[i].msgid);
        free(w->v[i].hash);
    }
    w->n = 0;
    arena_unref(w->arena);
    w->arena = NULL;
}

int state_pairs_walk(state *st, int64_t folder_id, size_t window, state_window_fn fn, void *arg,
                     ofs_error *err)
{
    state_pair_list w = {.cap = window ? window : 1};
    w.v = xmalloc(w.cap * sizeof *w.v);
    sqlite3_stmt *s = state_stmt(st, S_PAIRS_LEAN, err);
    if (!s) {
        state_pair_list_free(&w);
        return -1;
    }
    sqlite3_bind_int64(s, 1, folder_id);
    int rc, ret = 0;
    while (ret == 0 && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        lean_push(&w, s);
        if (w.n == w.cap) {
            ret = fn(&w, arg, err);
            window_reset(&w);
        }
    }
    if (ret == 0 && rc != SQLITE_DONE)
        ret = state_fail(st, err, "cannot load message pairs");
    else if (ret == 0 && w.n)
        ret = fn(&w, arg, err);
    state_stmt_done(s);
    state_pair_list_free(&w);
    return ret;
}

void state_pair_list_add_copy(state_pair_list *l, const state_pair *p)
{
    state_pair *d = pair_push(l);
    *d = *p;
    d->key = p->key ? lean_key(l, p->key, strlen(p->key)) : NULL;
    d->msgid = p->msgid ? xstrdup(p->msgid) : NULL;
    d->hash = p->hash ? xstrdup(p->hash) : NULL;
}

int state_pairs_any_pending(state *st, int64_t folder_id, bool *any, ofs_error *err)
{
    sqlite3_stmt *s = state_stmt(st, S_PAIRS_PENDING, err);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, folder_id);
    int rc = sqlite3_step(s), ret = 0;
    *any = rc == SQLITE_ROW && sqlite3_column_int(s, 0);
    if (rc != SQLITE_ROW)
        ret = state_fail(st, err, "cannot read the pairs of a folder");
    state_stmt_done(s);
    return ret;
}

int state_pair_load_strings(state *st, state_pair *p, ofs_error *err)
{
    if (p->msgid || p->hash)
        return 0;
    sqlite3_stmt *s = state_stmt(st, S_PAIR_STRINGS, err);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, p->id);
    int rc = sqlite3_step(s), ret = 0;
    if (rc == SQLITE_ROW) {
        p->msgid = state_column_text(s, 0);
        p->hash = state_column_text(s, 1);
    } else if (rc != SQLITE_DONE) {
        ret = state_fail(st, err, "cannot read a message pair's Message-ID and hash");
    }
    state_stmt_done(s);
    return ret;
}

/* Binds ?2..?11, shared by add and update. uid 0 and key NULL are stored as NULL so the unique
 * indexes only constrain what is known. */
static void state_pair_bind(sqlite3_stmt *s, const state_pair *p)
{
    if (p->uid)
        sqlite3_bind_int64(s, 2, p->uid);
    else
        sqlite3_bind_null(s, 2);
    if (p->key)
        sqlite3_bind_text(s, 3, p->key, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(s, 3);
    sqlite3_bind_int64(s, 4, p->flags);
    sqlite3_bind_int64(s, 5, (sqlite3_int64)p->size);
    if (p->msgid)
        sqlite3_bind_text(s, 6, p->msgid, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(s, 6);
    sqlite3_bind_int(s, 7, p->pending);
    sqlite3_bind_int64(s, 8, p->uidnext_seen);
    if (p->hash)
        sqlite3_bind_text(s, 9, p->hash, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(s, 9);
    sqlite3_bind_int64(s, 10, p->target);
    sqlite3_bind_int64(s, 11, (sqlite3_int64)p->stamp);
}

int state_pair_add(state *st, int64_t folder_id, state_pair *p, ofs_error *err)
{
    sqlite3_stmt *s = state_stmt(st, S_PAIR_ADD, err);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, folder_id);
    state_pair_bind(s, p);
    sqlite3_bind_int64(s, 12, st->generation);
    if (state_step_done(st, s, err, "cannot add message pair (folder %lld, uid %u, key %s)",
                        (long long)folder_id, p->uid, p->key ? p->key : "none") < 0)
        return -1;
    p->id = sqlite3_last_insert_rowid(st->db);
    return 0;
}

int state_pair_update(state *st, const state_pair *p, ofs_error *err)
{
    sqlite3_stmt *s = state_stmt(st, S_PAIR_UPDATE, err);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, p->id);
    state_pair_bind(s, p);
    if (state_step_done(st, s, err, "cannot update message pair %lld (uid %u, key %s)",
                        (long long)p->id, p->uid, p->key ? p->key : "none") < 0)
        return -1;
    return state_changed_one(st, "cannot update message pair", p->id, err);
}

int state_pair_delete(state *st, int64_t pair_id, ofs_error *err)
{
    sqlite3_stmt *s = state_stmt(st, S_PAIR_DELETE, err);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, pair_id);
    return state_step_done(st, s, err, "cannot delete message pair %lld", (long long)pair_id);
}

int state_pairs_clear(state *st, int64_t folder_id, ofs_error *err)
{
    sqlite3_stmt *s = state_stmt(st, S_PAIRS_CLEAR, err);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, folder_id);
    return state_step_done(st, s, err, "cannot clear the message pairs of folder %lld",
                           (long long)folder_id);
}

int state_mark_get(state *st, int64_t folder_id, state_mark *m, ofs_error *err)
{
    sqlite3_stmt *s = state_stmt(st, S_MARK_GET, err);
    if (!s)
        return -1;
    memset(m, 0, sizeof *m);
    sqlite3_bind_int64(s, 1, folder_id);
    int rc = sqlite3_step(s), ret = 1;
    if (rc == SQLITE_ROW) {
        m->messages = (uint32_t)sqlite3_column_int64(s, 0);
        m->local_mark = state_column_text(s, 1);
        ret = 0;
    } else if (rc != SQLITE_DONE) {
        ret = state_fail(st, err, "cannot read a folder mark");
    }
    state_stmt_done(s);
    return ret;
}

int state_mark_set(state *st, int64_t folder_id, const state_mark *m, ofs_error *err)
{
    sqlite3_stmt *s = state_stmt(st, S_MARK_SET, err);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, folder_id);
    sqlite3_bind_int64(s, 2, m->messages);
    if (m->local_mark)
        sqlite3_bind_text(s, 3, m->local_mark, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(s, 3);
    return state_step_done(st, s, err, "cannot record a folder mark");
}

/* Clearing a mark guards against a pass killed midway; the guard need not survive a power cut,
 * because every change a pass makes also moves a fingerprint the mark is compared with (the
 * server's modseq, UIDNEXT, count; the Maildir's directory times). So it is committed without
 * its own fsync (WAL, synchronous NORMAL): the next durable commit carries it to disk. */
int state_mark_clear(state *st, int64_t folder_id, ofs_error *err)
{
    sqlite3_stmt *s = state_stmt(st, S_MARK_CLEAR, err);
    if (!s)
        return -1;
    bool autocommit = sqlite3_get_autocommit(st->db);
    if (autocommit &&
        state_exec(st, "PRAGMA synchronous = NORMAL", "cannot set synchronous", err) < 0)
        return -1;
    sqlite3_bind_int64(s, 1, folder_id);
    int rc = state_step_done(st, s, err, "cannot clear a folder mark");
    if (autocommit && state_exec(st, "PRAGMA synchronous = FULL", "cannot set synchronous",
                                 rc < 0 ? NULL : err) < 0)
        rc = -1;
    return rc;
}

int state_set_durable(state *st, bool durable, ofs_error *err)
{
    return state_exec(st, durable ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL",
                      "cannot set synchronous", err);
}

int state_folder_rename(state *st, const char *from, const char *to, ofs_error *err)
{
    static const int which[] = {S_FOLDER_RENAME, S_INTENT_FOLDER_RENAME};
    for (size_t i = 0; i < sizeof which / sizeof *which; i++) {
        sqlite3_stmt *s = state_stmt(st, which[i], err);
        if (!s)
            return -1;
        sqlite3_bind_text(s, 1, from, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, to, -1, SQLITE_STATIC);
        if (state_step_done(st, s, err, "cannot rename folder '%s' to '%s'", from, to) < 0)
            return -1;
    }
    return 0;
}

void state_intent_list_free(state_intent_list *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i].op);
        free(l->v[i].folder);
        free(l->v[i].arg);
    }
    free(l->v);
    memset(l, 0, sizeof *l);
}

int state_intent_add(state *st, const char *op, const char *folder, const char *arg, int64_t *id,
                     ofs_error *err)
{
    sqlite3_stmt *s = state_stmt(st, S_INTENT_ADD, err);
    if (!s)
        return -1;
    sqlite3_bind_text(s, 1, op, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, folder, -1, SQLITE_STATIC);
    if (arg)
        sqlite3_bind_text(s, 3, arg, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(s, 3);
    if (state_step_done(st, s, err, "cannot record intent %s of folder '%s'", op, folder) < 0)
        return -1;
    if (id)
        *id = sqlite3_last_insert_rowid(st->db);
    return 0;
}

int state_intent_delete(state *st, int64_t id, ofs_error *err)
{
    sqlite3_stmt *s = state_stmt(st, S_INTENT_DELETE, err);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, id);
    return state_step_done(st, s, err, "cannot delete intent %lld", (long long)id);
}

int state_intents_load(state *st, state_intent_list *out, ofs_error *err)
{
    memset(out, 0, sizeof *out);
    sqlite3_stmt *s = state_stmt(st, S_INTENTS_LOAD, err);
    if (!s)
        return -1;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (out->n == out->cap) {
            out->cap = out->cap ? out->cap * 2 : 8;
            out->v = xrealloc(out->v, out->cap * sizeof *out->v);
        }
        state_intent *in = &out->v[out->n++];
        in->id = sqlite3_column_int64(s, 0);
        in->op = state_column_text(s, 1);
        in->folder = state_column_text(s, 2);
        in->arg = state_column_text(s, 3);
    }
    int ret = 0;
    if (rc != SQLITE_DONE) {
        ret = state_fail(st, err, "cannot load intents");
        state_intent_list_free(out);
    }
    state_stmt_done(s);
    return ret;
}

void state_held_list_free(state_held_list *l)
{
    if (!l)
        return;
    free(l->v);
    memset(l, 0, sizeof *l);
}

state_held *state_held_list_push(state_held_list *l)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 8;
        l->v = xrealloc(l->v, l->cap * sizeof *l->v);
    }
    state_held *h = &l->v[l->n++];
    memset(h, 0, sizeof *h);
    return h;
}

int state_held_load(state *st, int64_t folder_id, state_held_list *out, ofs_error *err)
{
    memset(out, 0, sizeof *out);
    sqlite3_stmt *s = state_stmt(st, S_HELD_LOAD, err);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, folder_id);
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        state_held *h = state_held_list_push(out);
        h->uid = (uint32_t)sqlite3_column_int64(s, 0);
        h->size = (uint64_t)sqlite3_column_int64(s, 1);
    }
    int ret = 0;
    if (rc != SQLITE_DONE) {
        ret = state_fail(st, err, "cannot load held-back messages");
        state_held_list_free(out);
    }
    state_stmt_done(s);
    return ret;
}

int state_held_replace(state *st, int64_t folder_id, uint32_t uidvalidity, const state_held_list *l,
                       ofs_error *err)
{
    sqlite3_stmt *s = state_stmt(st, S_HELD_CLEAR, err);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, folder_id);
    if (state_step_done(st, s, err, "cannot clear the held-back messages of folder %lld",
                        (long long)folder_id) < 0)
        return -1;
    for (size_t i = 0; l && i < l->n; i++) {
        if (!(s = state_stmt(st, S_HELD_ADD, err)))
            return -1;
        sqlite3_bind_int64(s, 1, folder_id);
        sqlite3_bind_int64(s, 2, l->v[i].uid);
        sqlite3_bind_int64(s, 3, uidvalidity);
        sqlite3_bind_int64(s, 4, (sqlite3_int64)l->v[i].size);
        if (state_step_done(st, s, err, "cannot record held-back message %u of folder %lld",
                            l->v[i].uid, (long long)folder_id) < 0)
            return -1;
    }
    return 0;
}

static void free_found(state_pair *p, char **folder)
{
    free(p->key);
    free(p->msgid);
    free(p->hash);
    free(*folder);
    *folder = NULL;
}

int state_pair_by_hash(state *st, const char *hash, state_pair *p, char **folder, ofs_error *err)
{
    sqlite3_stmt *s = state_stmt(st, S_PAIR_BY_HASH, err);
    if (!s)
        return -1;
    sqlite3_bind_text(s, 1, hash, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, st->generation);
    int rc = sqlite3_step(s), ret = 1;
    if (rc == SQLITE_ROW) {
        memset(p, 0, sizeof *p);
        state_pair_read(s, p);
        *folder = state_column_text(s, 11);
        rc = sqlite3_step(s);
        ret = rc == SQLITE_ROW ? 2 : 0;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        if (ret != 1)
            free_found(p, folder);
        ret = state_fail(st, err, "cannot look a message up by content");
    }
    state_stmt_done(s);
    return ret;
}

/* One integer statement's first column, 0 when it returns no row. */
static int state_int_query(state *st, int which, const char *arg, int64_t *v, ofs_error *err)
{
    sqlite3_stmt *s = state_stmt(st, which, err);
    if (!s)
        return -1;
    if (arg)
        sqlite3_bind_text(s, 1, arg, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s), ret = 0;
    *v = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        ret = state_fail(st, err, "cannot read the state");
    state_stmt_done(s);
    return ret;
}

static int state_generation_load(state *st, ofs_error *err)
{
    return state_int_query(st, S_META_GET, "generation", &st->generation, err);
}

static int state_meta_set_int(state *st, const char *key, int64_t v, ofs_error *err)
{
    sqlite3_stmt *s = state_stmt(st, S_META_SET, err);
    if (!s)
        return -1;
    sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, v);
    return state_step_done(st, s, err, "cannot record %s", key);
}

/* Pairs were added since the generation began: the highest pair id passed the one recorded
 * then (an id given again after deletions can hide one; that only widens the window). */
int state_generation_dirty(state *st, bool *dirty, ofs_error *err)
{
    int64_t top, max;
    if (state_int_query(st, S_META_GET, "generation_top", &top, err) < 0 ||
        state_int_query(st, S_PAIR_MAX_ID, NULL, &max, err) < 0)
        return -1;
    *dirty = max > top;
    return 0;
}

int state_generation_next(state *st, ofs_error *err)
{
    int64_t max;
    if (state_int_query(st, S_PAIR_MAX_ID, NULL, &max, err) < 0 ||
        state_meta_set_int(st, "generation", st->generation + 1, err) < 0 ||
        state_meta_set_int(st, "generation_top", max, err) < 0)
        return -1;
    st->generation++;
    return 0;
}
