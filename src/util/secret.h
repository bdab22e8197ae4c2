/* secret.h: keeping passwords and tokens out of core dumps while they are in memory.
 * A counted guard: the process is not dumpable from the first begin to the last end. */
#ifndef OFS_UTIL_SECRET_H
#define OFS_UTIL_SECRET_H

/* prctl(PR_SET_DUMPABLE, 0): no core dump, no ptrace by the same user, /proc/PID/mem closed. */
void secret_guard_begin(void);
/* Restores the dumpable state that the outermost begin found. */
void secret_guard_end(void);

#endif
