/* plan.h: the three-way rule of one folder, as a pure function of state, server and local lists.
 * No I/O here: the engine executes the plan, tests check every rule without a server. */
#ifndef OFS_SYNC_PLAN_H
#define OFS_SYNC_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "state/state.h"
#include "sync/store.h"

/* Per flag: a side that changed it since the base wins; unchanged on both keeps the base.
 * One bit cannot change differently on both sides, so this never conflicts. */
unsigned sync_merge_flags(unsigned base, unsigned server, unsigned local);

enum sync_action_kind {
    ACT_DOWNLOAD,       /* server message with no pair: copy to local */
    ACT_UPLOAD,         /* local message with no pair: copy to server */
    ACT_FLAGS,          /* paired on both sides: bring flags to `flags` where they differ */
    ACT_EXPUNGE_SERVER, /* gone locally, was synced: remove from the server */
    ACT_EXPUNGE_LOCAL,  /* gone on the server, was synced: remove locally */
    ACT_FORGET,         /* gone on both sides: drop the pair */
    ACT_KEEP_LOCAL,     /* gone on the server, kept locally by the expunge policy: unpair */
    ACT_KEEP_SERVER,    /* gone locally, kept on the server by the expunge policy: unpair */
    ACT_NONE,           /* dropped from the plan during execution */
};

/* sync_action.srv of a message the server has unchanged since the last complete pass: the
 * listing has no entry for it, its pair's uid and base flags are what the server has. */
enum { SRV_BASE = -2 };
/* sync_action.loc likewise, of a local file found as its pair says (sync_plan_walk.loc_has):
 * the pair's key and base flags name it. */
enum { LOC_BASE = -2 };

typedef struct sync_action {
    int kind;       /* enum sync_action_kind */
    unsigned flags; /* ACT_FLAGS: the merged flags */
    long pair;      /* index into the state pairs, or -1 */
    long srv;       /* index into the server list, SRV_BASE, or -1 */
    long loc;       /* index into the local list, LOC_BASE, or -1 */
    uint32_t uid;   /* the server's UID of the message (srv not -1), else 0 */
} sync_action;

typedef struct sync_plan {
    sync_action *v;
    size_t n, cap;
    size_t count[ACT_NONE + 1];
    size_t to_server_flags, to_local_flags; /* ACT_FLAGS that change that side */
} sync_plan;

void sync_plan_free(sync_plan *p);

/* Plans one folder. A pair with only a uid or only a key was unpaired by the expunge policy:
 * its one copy is left alone and the pair is dropped once that copy is gone too.
 * pairs must hold no pending entries (resolve them first); srv and loc are
 * the stores' current listings. Lists are not modified; the plan refers to them by index. */
void sync_plan_folder(const state_pair_list *pairs, const store_msg_list *srv,
                      const store_msg_list *loc, sync_plan *out);

/* The server side of a plan: a listing of the whole folder (below 0), or, when the server only
 * said what changed since the last complete pass, a listing of that and of what is new, and
 * every pair whose uid is under `below`, not in `gone` and not listed is still there with its
 * base flags, without an entry of its own (a folder's worth of entries saved). */
typedef struct srv_view srv_view;
struct srv_view {
    const store_msg_list *listed;
    uint32_t below;
    uidset *gone; /* expunged since (NULL: none) */
};

/* Planning window by window (state_pairs_walk), never holding a folder's pairs: begin, one
 * call per window of pairs in state order, end (downloads, uploads). With `kept`, each pair an
 * action concerns, and each one keep() asks for, is copied there (given its local copy or
 * NULL) and the actions index that list; without, they index the pairs as given, counting
 * across windows. */
typedef bool (*sync_keep_fn)(const state_pair *p, const store_msg *local, void *arg);

typedef struct sync_plan_walk {
    sync_plan *out;
    const struct srv_view *srv;
    const store_msg_list *loc;
    /* Whether a pair loc does not list has its local file as it says (LOC_BASE), when loc
     * lists only what differs; NULL: loc is the whole folder. */
    bool (*loc_has)(const state_pair *p, void *arg);
    void *loc_arg;
    state_pair_list *kept;
    sync_keep_fn keep;
    void *keep_arg;
    struct plan_index *idx; /* the listings' indexes, between begin and end */
    long seen;              /* pairs planned so far */
} sync_plan_walk;

void sync_plan_begin(sync_plan_walk *w);
void sync_plan_window(sync_plan_walk *w, const state_pair_list *pairs);
void sync_plan_end(sync_plan_walk *w);

/* Whether the view's base stands for uid when the listing does not name it. */
bool srv_view_covers(const srv_view *v, uint32_t uid);
void sync_plan_folder_view(const state_pair_list *pairs, const srv_view *srv,
                           const store_msg_list *loc, sync_plan *out);

/* Appends one action (the engine adds the uploads of messages edited in place). */
void sync_plan_add(sync_plan *p, int kind, long pair, long srv, long loc, unsigned flags);

/* The account's `expunge` policy (enum cfg_expunge): a removal the policy does not carry to
 * the other side becomes ACT_KEEP_*, so that copy stays and is never offered back. */
void sync_plan_expunge_policy(sync_plan *p, int policy);

#endif
