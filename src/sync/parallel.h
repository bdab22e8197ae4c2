/* parallel.h: the folders of a pass spread over several server connections, largest first.
 * The folder set and the unchanged folders stay on the pass's own connection. */
#ifndef OFS_SYNC_PARALLEL_H
#define OFS_SYNC_PARALLEL_H

#include "sync/engine.h"

/* Syncs the folders of todo not in c->done. Those whose record proves them unchanged run on
 * c's connection; when two or more need work, they are spread over up to
 * c->acct->connections connections (c's and new ones logged in with c->password), each
 * taking the largest folder left that keeps the messages of the folders in progress within
 * the pass's budget (parallel-budget), or waiting for one to finish. Returns -1 when the pass must
 * stop: a pass-level error, or a network error with folders left undone (retry.c then reconnects c
 * and the next attempt does the rest). */
int sync_pass_parallel(sync_ctx *c, const strlist *todo, ofs_error *err);

#endif
