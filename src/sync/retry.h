/* retry.h: a pass that survives a dropped or stalled link: reconnect with backoff and jitter,
 * log in again, and go on with the folders not finished yet (the state holds the rest). */
#ifndef OFS_SYNC_RETRY_H
#define OFS_SYNC_RETRY_H

#include "sync/engine.h"

/* Runs attempt(c) with a server connection, (re)connecting as needed: a network error
 * (OFS_E_NET) drops the connection, waits, reconnects and runs attempt again, up to
 * reconnect-attempts times in a row without progress. Without c->password the connection
 * is the caller's and a network error ends the pass. */
int sync_retry(sync_ctx *c, int (*attempt)(sync_ctx *c, ofs_error *err), ofs_error *err);

/* Connects and logs in to the server (account.c, which owns the activity reports). */
int sync_connect(sync_ctx *c, ofs_error *err);

/* Closes the server connection, keeping its round trips and bytes for the pass's figures. */
void sync_disconnect(sync_ctx *c);

/* The wait before reconnect attempt n (1, 2, ...): 0.25 s doubling up to 30 s, times a random
 * 0.5..1 so that many clients cut at once do not come back at once. r is uniform in [0, 1). */
double sync_backoff(int n, double r);

#endif
