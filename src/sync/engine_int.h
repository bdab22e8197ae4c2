/* engine_int.h: internal to the engine files: the state of one folder's run and the steps
 * engine.c calls in copy.c, flagops.c, pending.c and edits.c, with the helpers they share. */
#ifndef OFS_SYNC_ENGINE_INT_H
#define OFS_SYNC_ENGINE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sync/engine.h"
#include "sync/plan.h"
#include "util/err.h"

typedef struct folder_run {
    sync_ctx *c;
    const char *name;
    state_folder sf;
    store_folder_info si;
    state_pair_list pairs; /* all the folder's (pairs_whole), or those the plan needs */
    bool pairs_whole;
    store_msg_list srv, loc;
    bool loc_base;            /* the local listing names only files that differ from the pairs: the
                                 others are as their pairs say (LOC_BASE; see localview_has) */
    struct local_view *lview; /* which pairs' files were found unchanged; NULL: all of them */
    srv_view srv_view;        /* the plan's server side: srv, or srv and the base (srv_from_base) */
    uidset srv_gone; /* expunged on the server since the last complete pass, when it said */
    ofs_sync_stats st;
    uint64_t done, total;             /* messages copied / to copy */
    uint64_t bytes_done, bytes_total; /* their bytes, as far as the listings said */
    state_mark mark;                  /* what the last complete pass saw; has_mark: there was one */
    bool has_mark;
    char *local_mark;         /* the local folder's mark, taken before its scan */
    bool srv_open;            /* the server folder is selected */
    uint32_t old_uidvalidity; /* non-zero: the server's UIDVALIDITY changed this pass */
    size_t repaired;          /* pairs found again by content after that change */
    size_t deduped;           /* new on both sides, identical: paired, not copied */
    struct dedupe_set *dd;    /* local messages about to be uploaded, by content */
    int64_t restore_id;       /* the restore-deleted intent of this pass's expunge, or 0 */
    size_t flagged_removed;   /* removed although the other side had changed their flags */
    bool own_appends; /* resolving this pass's APPENDs (no UIDPLUS), not a crash's leftovers */
    buf held;         /* the first held-back messages, for the folder's line */
    size_t held_shown;
    state_held_list held_base; /* held back by the last complete pass */
    state_held_list held_now;  /* held back by this pass: recorded with the folder */
    bool forget_mark;          /* the mark goes with the folder's next transaction */
    state_pair_list deferred;  /* settled pairs, written with the next transaction */
    struct local_edit *edits;  /* local files rewritten in place, found by this pass */
    size_t n_edits;
    struct replacement *repl; /* old server copies of edited messages, waiting to go */
    size_t n_repl;
    size_t edited, edited_gone; /* old copies replaced; edits uploaded as new (server expunged) */
} folder_run;

/* ---- engine.c: helpers every step uses ---- */

void engine_emit(folder_run *r, enum ofs_event_type type, const char *text);
void engine_notice(folder_run *r, const char *text);
int engine_temp_open(folder_run *r, ofs_error *err);
void engine_defer_settle(folder_run *r, const state_pair *p);
/* fn inside one state transaction, after what earlier steps deferred to it. */
int engine_in_txn(folder_run *r, int (*fn)(folder_run *, void *, ofs_error *), void *arg,
                  ofs_error *err);
int engine_in_lazy_txn(folder_run *r, int (*fn)(folder_run *, void *, ofs_error *), void *arg,
                       ofs_error *err);
int engine_hash_messages(folder_run *r, store *s, const store_msg *msgs, size_t n, char **hashes,
                         uint64_t *sizes, ofs_error *err);
/* Calls fn on each intent of kind op left for r's folder, in recorded order, until one fails. */
typedef int (*engine_intent_fn)(folder_run *r, const state_intent *in, void *arg, ofs_error *err);
int engine_each_intent(folder_run *r, const char *op, engine_intent_fn fn, void *arg,
                       ofs_error *err);
int engine_reload_pairs(folder_run *r, ofs_error *err);
/* fn on the folder's pairs: r->pairs when whole, else from the state, PAIR_WINDOW at a time. */
enum { PAIR_WINDOW = 2048 };
int engine_each_pair_window(folder_run *r, state_window_fn fn, void *arg, ofs_error *err);
int engine_list_server_full(folder_run *r, ofs_error *err);
/* Whether the server has uid unchanged since the last complete pass without a listing entry
 * (a pair's uid; see srv_view). */
bool engine_srv_in_base(folder_run *r, uint32_t uid);
/* The server's copy action a concerns (srv not -1): its listing entry, or from the base. */
store_msg engine_srv_msg(folder_run *r, const sync_action *a);
/* The local copy action a concerns (loc not -1): its listing entry, or from the pair. */
store_msg engine_loc_msg(folder_run *r, const sync_action *a);
/* Makes r->loc hold every local file that no pair names: reads the folder after all when it
 * was opened unread (a local view lists those files already). */
int engine_list_unpaired(folder_run *r, ofs_error *err);
int engine_need_server(folder_run *r, ofs_error *err);

int engine_cmp_u32(const void *a, const void *b);

/* A message's index in a listing by key: engine_index_keys sorts a listing by key once,
 * engine_find_key looks one up (NULL for a NULL key). */
typedef struct key_idx {
    const char *key;
    long idx;
} key_idx;

key_idx *engine_index_keys(const store_msg_list *l);
void engine_sort_keys(key_idx *v, size_t n);
const key_idx *engine_find_key(const key_idx *v, size_t n, const char *key);

/* ---- localview.c: a changed local folder, only its differences listed ---- */

/* Compares the local folder (opened unread) with the pairs, one file and one window of pairs
 * at a time: r->loc gets the files that differ from their pair (flags, stamp) or that no pair
 * names, r->lview which pairs' files were found as they say. 1 when a file was seen twice (a
 * reader renaming meanwhile, a copy): list the folder in full. */
int localview_build(folder_run *r, ofs_error *err);
/* The plan's loc_has: whether p's file was found unchanged (arg: r->lview; NULL: yes). */
bool localview_has(const state_pair *p, void *arg);
void localview_free(struct local_view *v);

/* ---- verify.c: in sync without a listing ---- */

/* A folder the server did not change and the last pass wrote into (so its local mark was not
 * recorded): 1 when its names and flags match the pairs exactly (the mark is then recorded),
 * 0 when they do not or cannot be told now (list it), -1 on a state error. */
int verify_local(folder_run *r, ofs_error *err);

/* ---- pending.c: intents left by an interrupted pass ---- */

int pending_resolve(folder_run *r, ofs_error *err);
int pending_check_uidvalidity(folder_run *r, ofs_error *err);

/* ---- flagops.c: flag changes and removals ---- */

int flagops_exec(folder_run *r, sync_plan *plan, ofs_error *err);
int flagops_restore_deleted(folder_run *r, ofs_error *err);
int flagops_add_restore_intent(folder_run *r, buf *uids, ofs_error *err);
void flagops_deleted_after_plan(folder_run *r, const sync_plan *plan, buf *uids);
int flagops_drop_restore_intent(folder_run *r, void *arg, ofs_error *err);

/* ---- copy.c: downloads and uploads ---- */

int copy_dedupe_build(folder_run *r, sync_plan *plan, ofs_error *err);
void copy_dedupe_free(struct dedupe_set *d);
int copy_exec_downloads(folder_run *r, const sync_plan *plan, ofs_error *err);
int copy_exec_uploads(folder_run *r, const sync_plan *plan, ofs_error *err);

/* ---- edits.c: messages edited in place ---- */

int edits_find(folder_run *r, sync_plan *plan, ofs_error *err);
int edits_exec(folder_run *r, ofs_error *err);
int edits_load_replacements(folder_run *r, ofs_error *err);
int edits_replace(folder_run *r, const sync_plan *plan, ofs_error *err);
void edits_free_replacements(folder_run *r);

#endif
