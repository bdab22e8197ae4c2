/* health.h: is an account's state database sound? Read-only, without the sync lock.
 * Used by `ofsync status`, which must work while a sync runs and with no network. */
#ifndef OFS_STATE_HEALTH_H
#define OFS_STATE_HEALTH_H

#include "ofsync.h"

/* Runs PRAGMA quick_check on the database at path, opened read-only. Returns 0 when it
 * answered "ok", 1 when it found problems (*report: its first lines, malloc'd), -1 when the
 * file cannot be opened or is not a database (err). */
int state_health(const char *path, char **report, ofs_error *err);

#endif
