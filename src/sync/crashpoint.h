/* crashpoint.h: the torture tests' kill switch: OFSYNC_CRASH_AT=N makes the process SIGKILL
 * itself at the Nth store-changing step (counted just before and just after each change). */
#ifndef OFS_SYNC_CRASHPOINT_H
#define OFS_SYNC_CRASHPOINT_H

#include "sync/store.h"

/* Counts one step; dies by SIGKILL when it is the Nth. No-op unless OFSYNC_CRASH_AT is set. */
void crashpoint_hit(void);

/* Returns s itself when OFSYNC_CRASH_AT is unset; otherwise a store that forwards to s and
 * calls crashpoint_hit() before and after every operation that changes s. Closing it closes s. */
store *crashpoint_wrap(store *s);

/* The store under a crashpoint_wrap() wrapper (s itself when not wrapped), for code that
 * needs the implementation's own extras (the IMAP connection's counters). */
store *crashpoint_unwrap(store *s);

#endif
