/* engine.h: one sync pass of one account: the folder set, then each folder's plan, executed.
 * Every store change is made durable before the state says it happened (DESIGN.md section 3). */
#ifndef OFS_SYNC_ENGINE_H
#define OFS_SYNC_ENGINE_H

#include "ofsync.h"
#include "state/state.h"
#include "sync/config.h"
#include "sync/store.h"

typedef struct sync_ctx {
    const cfg_account *acct;
    state *st;
    store *srv, *loc;
    ofs_event_fn fn;
    void *fn_ctx;
    ofs_sync_stats stats; /* the whole pass */
    ofs_error folder_err; /* the first folder-level error; the pass goes on past it */
    int folder_failures;
    struct folder_run *run;  /* the folder being synced, for activity reports */
    bool dry_run;            /* plan and report; change nothing on either side or in the state */
    bool (*stop)(void *arg); /* when set and true, a pass ends before its next folder */
    void *stop_arg;
    char *password;    /* set: the pass (re)connects the server itself (retry.c) */
    strlist done;      /* folders finished this pass: a resumed pass does not redo them */
    uint64_t progress; /* bumped by every durable step: a reconnect that follows progress
                          does not count against reconnect-attempts */
    double link_rate;  /* bytes/s measured by ranged downloads, sizes the next range */
    uint64_t closed_in, closed_out, closed_rtt; /* wire figures of connections already closed */
    bool trace;                                 /* pass the protocol trace on as OFS_EV_TRACE */
    bool guarded; /* secret_guard_begin() is in force for the password */
    /* A parallel pass's worker: the folder's status as the first connection got it, so the
     * worker's own connection need not ask again (NULL: ask srv). */
    const store_folder_info *known_status;
} sync_ctx;

/* Fills ev's folder, done/total and bytes from the folder being synced (none: left as is). */
void sync_fill_progress(const sync_ctx *c, ofs_event *ev);

/* Syncs the folder set and every folder. Returns -1 when the pass could not go on (network,
 * state, disk) or when any folder failed; err then holds the first error. */
int sync_run_pass(sync_ctx *c, ofs_error *err);

/* Takes the account's lock (one ofsync per account); *fd is closed to release it. */
int sync_lock_account(const cfg_account *a, int *fd, ofs_error *err);

/* What a pass knows about a folder before it syncs it. */
typedef struct sync_probe {
    bool unchanged;    /* the record proves both sides unchanged: nothing is opened */
    bool needs_server; /* changed on the server, or known to have changed locally */
    bool has_status;   /* status: as the server's status round trip said */
    store_folder_info status;
    uint64_t weight; /* messages on the server (status, else the last record) */
} sync_probe;

/* Reads the state, the server status already gathered and the local folder's mark; changes
 * nothing. A folder the state does not know yet is not unchanged. */
int sync_folder_probe(sync_ctx *c, const char *name, sync_probe *p, ofs_error *err);

/* The folder's status for c: known_status, else the server store's gathered one.
 * 0: filled; 1: not known. */
int sync_known_status(const sync_ctx *c, const char *name, store_folder_info *status);

/* Adds every figure of from to to. */
void sync_stats_add(ofs_sync_stats *to, const ofs_sync_stats *from);

/* One folder, which exists on both sides when called. */
int sync_folder(sync_ctx *c, const char *name, ofs_error *err);

/* One folder of a pass, on c's connection: a folder-level failure is reported and counted
 * (the pass goes on), a pass-level one returned. The folder is then done for this pass. */
int sync_pass_folder(sync_ctx *c, const char *name, ofs_error *err);

/* Errors after which nothing more can be done on this connection or this state. */
bool sync_error_ends_pass(int code);

/* Reports an error as an OFS_EV_ERROR event (folder NULL: the pass's). */
void sync_error_event(sync_ctx *c, const char *folder, const ofs_error *e);

/* Opens the local store as a pass does (crash points included). */
int sync_open_local(sync_ctx *c, ofs_error *err);

/* Both stores of c opened as a pass opens them; for watch.c, which keeps them across
 * passes. */
int sync_open_stores(sync_ctx *c, ofs_error *err);

#endif
