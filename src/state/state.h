/* state.h: the sync state of one account, in SQLite: folders and message pairs.
 * The base of the three-way merge, and the write-ahead intents that make a pass resumable. */
#ifndef OFS_STATE_STATE_H
#define OFS_STATE_STATE_H

#include <stdbool.h>
#include <stdint.h>

#include "ofsync.h"
#include "util/mem.h"

typedef struct state state;

typedef struct state_folder {
    int64_t id;
    char *name; /* canonical folder name */
    uint32_t uidvalidity;
    uint32_t uidnext;
    uint64_t highestmodseq;
    int64_t last_sync; /* unix time of the last complete pass, 0 never */
} state_folder;

/* Why a pair is not (yet) a plain synced pair. */
enum state_pending {
    PENDING_NONE = 0,
    PENDING_DOWNLOAD = 1, /* uid known, local file key chosen, file may or may not exist */
    PENDING_UPLOAD = 2,   /* key known, APPEND may or may not have reached the server */
    PENDING_FLAGS = 3,    /* flags going to `target` on both sides; base still `flags` */
    PENDING_EXPUNGE = 4,  /* being removed from the side where it is still present */
};

typedef struct state_pair {
    int64_t id;
    uint32_t uid;   /* 0 = not known (pending upload) */
    unsigned flags; /* FLAG_* as last synced: the base of the merge */
    char *key;      /* NULL = not known */
    uint64_t size;
    char *msgid;
    char *hash;            /* SHA-256 (hex) of the message as IMAP sends it; NULL: not known */
    int pending;           /* enum state_pending */
    uint32_t uidnext_seen; /* PENDING_UPLOAD: the folder's UIDNEXT before the APPEND */
    unsigned target;       /* PENDING_FLAGS: the merged flags being applied */
    uint64_t stamp;        /* store_msg.stamp of the local file when it matched hash; 0 unknown */
} state_pair;

typedef struct state_pair_list {
    state_pair *v;
    size_t n, cap;
    struct ofs_arena *arena; /* a lean list's keys (never freed one by one); NULL: malloc'd */
} state_pair_list;

void state_pair_list_free(state_pair_list *l);
void state_folder_free(state_folder *f);

/* Opens or creates the database (and its directory), migrating the schema to the current version.
 * A database from a newer ofsync is refused. */
int state_open(const char *path, state **out, ofs_error *err);
void state_close(state *st);
/* The handle's page cache becomes its share of the process's when handles are open at once
 * (one per connection of a parallel pass); 1 gives it the whole again. */
int state_set_cache_share(state *st, size_t handles, ofs_error *err);
int state_schema_version(state *st);

int state_begin(state *st, ofs_error *err);
int state_commit(state *st, ofs_error *err);
void state_rollback(state *st);
/* durable false: commits from here on skip their fsync (WAL, synchronous NORMAL) and reach the
 * disk with the next durable one; for records a power cut may lose without harm. */
int state_set_durable(state *st, bool durable, ofs_error *err);

/* Folders. get: returns 0 and fills f (found), 1 when absent, -1 on error. */
int state_folder_get(state *st, const char *name, state_folder *f, ofs_error *err);
int state_folder_add(state *st, const char *name, state_folder *f, ofs_error *err);
int state_folder_update(state *st, const state_folder *f, ofs_error *err);
int state_folder_delete(state *st, int64_t id, ofs_error *err); /* and its pairs */
int state_folder_names(state *st, strlist *out, ofs_error *err);

/* Pairs of one folder. */
int state_pairs_load(state *st, int64_t folder_id, state_pair_list *out, ofs_error *err);
/* The same pairs as the plan needs them, in one allocation each for the pairs and their keys:
 * Message-ID and hash only for pending pairs (NULL elsewhere, which state_pair_update reads as
 * "unchanged"); state_pair_load_strings fetches them for one pair where a step needs them. */
int state_pairs_load_lean(state *st, int64_t folder_id, state_pair_list *out, ofs_error *err);
int state_pair_load_strings(state *st, state_pair *p, ofs_error *err);
/* The same pairs in the same order, `window` at a time, through one statement: fn gets each
 * window (its pairs valid until it returns) and must not write to the state meanwhile. A
 * folder is planned so without holding all its pairs. Stops at fn's first non-zero return. */
typedef int (*state_window_fn)(const state_pair_list *w, void *arg, ofs_error *err);
int state_pairs_walk(state *st, int64_t folder_id, size_t window, state_window_fn fn, void *arg,
                     ofs_error *err);
/* Appends a copy of p (its key in l's arena: l must be a lean list or empty). */
void state_pair_list_add_copy(state_pair_list *l, const state_pair *p);
int state_pairs_any_pending(state *st, int64_t folder_id, bool *any, ofs_error *err);
int state_pair_add(state *st, int64_t folder_id, state_pair *p, ofs_error *err); /* sets p->id */
/* By p->id. A NULL msgid or hash keeps the recorded one: no step ever forgets either. */
int state_pair_update(state *st, const state_pair *p, ofs_error *err);
int state_pair_delete(state *st, int64_t pair_id, ofs_error *err);
/* Drops every pair of a folder (UIDVALIDITY change). */
int state_pairs_clear(state *st, int64_t folder_id, ofs_error *err);

/* What the last complete pass of a folder saw besides UIDVALIDITY/UIDNEXT/HIGHESTMODSEQ: the
 * server's message count and the local folder's mark. Present only while the folder is known
 * to be in sync; cleared before a pass changes anything, set again when it completes. */
typedef struct state_mark {
    uint32_t messages;
    char *local_mark; /* NULL: the local side must be read next time */
} state_mark;

int state_mark_get(state *st, int64_t folder_id, state_mark *m, ofs_error *err); /* 1: absent */
int state_mark_set(state *st, int64_t folder_id, const state_mark *m, ofs_error *err);
int state_mark_clear(state *st, int64_t folder_id, ofs_error *err);

/* Renames a folder and every folder below it (a/b -> c/b), keeping their pairs. */
int state_folder_rename(state *st, const char *from, const char *to, ofs_error *err);

/* Write-ahead intents not tied to one pair: recorded before a store change, deleted once the
 * state reflects it. op names the change ("rename-server", "restore-deleted", ...). */
typedef struct state_intent {
    int64_t id;
    char *op, *folder, *arg;
} state_intent;

typedef struct state_intent_list {
    state_intent *v;
    size_t n, cap;
} state_intent_list;

void state_intent_list_free(state_intent_list *l);
int state_intent_add(state *st, const char *op, const char *folder, const char *arg, int64_t *id,
                     ofs_error *err);
int state_intent_delete(state *st, int64_t id, ofs_error *err);
int state_intents_load(state *st, state_intent_list *out, ofs_error *err);

/* Messages left on the server because they are larger than max-size, as the last complete
 * pass of a folder saw them (and only under the folder's current UIDVALIDITY). */
typedef struct state_held {
    uint32_t uid;
    uint64_t size;
} state_held;

typedef struct state_held_list {
    state_held *v;
    size_t n, cap;
} state_held_list;

void state_held_list_free(state_held_list *l);
/* Appends a zeroed entry and returns it. */
state_held *state_held_list_push(state_held_list *l);
/* In UID order. */
int state_held_load(state *st, int64_t folder_id, state_held_list *out, ofs_error *err);
/* The folder's held-back messages become exactly l (NULL: none), under uidvalidity. */
int state_held_replace(state *st, int64_t folder_id, uint32_t uidvalidity, const state_held_list *l,
                       ofs_error *err);

/* A complete pass ends a generation of pairs. state_pair_by_hash finds the first settled pair
 * (uid and key known) with this content hash made in the current generation, in any folder;
 * *folder gets its folder's name (malloc'd). 0: that one, 2: there are more (p and *folder
 * are the first, to be freed all the same), 1: none. */
int state_pair_by_hash(state *st, const char *hash, state_pair *p, char **folder, ofs_error *err);
/* Whether pairs were added in the current generation; only then does a complete pass start
 * the next one (inside the caller's transaction), so a pass that added none writes nothing. */
int state_generation_dirty(state *st, bool *dirty, ofs_error *err);
int state_generation_next(state *st, ofs_error *err);

#endif
