/* watch.h: continuous sync of one account (`ofsync watch`): server push, local inotify,
 * debounced incremental passes driven by per-folder dirty generations (DESIGN.md section 4). */
#ifndef OFS_SYNC_WATCH_H
#define OFS_SYNC_WATCH_H

#include "notify/queue.h"
#include "ofsync.h"
#include "sync/config.h"

/* Watches account a until an event arrives on ctl (a stop request: the current folder's step
 * is finished, nothing is cut in half) or a fatal error (authentication, configuration, the
 * account lock). Network trouble is not fatal: connections are replaced with backoff.
 * Events go to fn on the calling thread. Returns 0 after a stop, -1 with err. */
int sync_watch(const cfg_account *a, nq *ctl, ofs_event_fn fn, void *ctx, ofs_error *err);

#endif
