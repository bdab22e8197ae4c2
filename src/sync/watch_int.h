/* watch_int.h: what watch.c (the loop, passes, polls) and push.c (server push connections)
 * share. Everything here runs on the one thread that runs sync_watch. */
#ifndef OFS_SYNC_WATCH_INT_H
#define OFS_SYNC_WATCH_INT_H

#include <poll.h>
#include <stdbool.h>
#include <stdint.h>

#include "imap/client.h"
#include "notify/dirty.h"
#include "notify/fswatch.h"
#include "notify/queue.h"
#include "sync/engine.h"

/* Dirty-set id 0 is the folder set itself: bumped when a folder may have appeared or gone. */
#define WATCH_FOLDERSET 0u

enum push_kind { PUSH_NONE = 0, PUSH_IDLE, PUSH_NOTIFY };
enum pc_state { PC_DOWN = 0, PC_STARTING, PC_IDLING, PC_ENDING };

typedef struct pushconn {
    int kind;        /* PUSH_IDLE (one folder) or PUSH_NOTIFY (every folder) */
    uint32_t folder; /* PUSH_IDLE: the folder's id */
    store *st;       /* the server store the connection belongs to; NULL when down */
    imap_client *c;
    int state;        /* enum pc_state */
    int64_t deadline; /* STARTING/ENDING: answer due; IDLING: renewal; DOWN: reconnect */
    int fails;        /* consecutive failures, for the backoff */
    bool renewing;    /* STARTING again after a renewal: it never stopped watching */
} pushconn;

typedef struct wfolder {
    char *name;       /* canonical; NULL for WATCH_FOLDERSET */
    char *server;     /* the server's name, NULL until known */
    int push;         /* enum push_kind covering it */
    int64_t retry_at; /* after a failed pass: not again before this */
    int fails;
    bool gone; /* not in the state after the last full pass: deleted on both sides */
} wfolder;

typedef struct watch {
    const cfg_account *a;
    sync_ctx c; /* state and both stores, kept open across passes */
    int lock;
    nq *ctl;
    dirty_set *dirty;
    wfolder *f;
    size_t nf, capf;
    fswatch *fs;
    bool local_poll; /* inotify is not available: polls cover the local side too */
    pushconn *pc;
    size_t npc;
    bool notify;                       /* push through one NOTIFY connection */
    int64_t first_change, last_change; /* since the last passes, for the debounce (0: none) */
    int64_t poll_at, main_retry_at, full_retry_at;
    int main_fails, full_fails;
    int64_t idle_renew_ms, timeout_ms;
    bool stop, fatal;
    ofs_error fatal_err;
    int full_passes; /* successful full passes so far */
    char *waiting;   /* the last waiting-for line emitted */
} watch;

int64_t watch_now(void);                              /* monotonic milliseconds */
uint32_t watch_folder_id(watch *w, const char *name); /* adds unknown names */
/* Records a change of folder id seen by source ("server", "local", "poll"). */
void watch_bump(watch *w, uint32_t id, const char *source);
void watch_emit(watch *w, enum ofs_event_type type, const char *folder, const char *text, int code);
/* Backoff for the n-th consecutive failure: 1 s doubling to 60 s (or the poll interval). */
int64_t watch_backoff(const watch *w, int n);

/* push.c */
void push_plan(watch *w);     /* decides which connections should exist */
void push_maintain(watch *w); /* reconnects, renews, enforces answer deadlines */
int64_t push_next_deadline(const watch *w);
/* Adds the fds of live connections; *ready is set when one has buffered responses. */
size_t push_pollfds(watch *w, struct pollfd *p, size_t max, bool *ready);
void push_handle(watch *w, const struct pollfd *p, size_t n);
void push_close_all(watch *w);
const char *push_describe(const watch *w, char *out, size_t len);

#endif
