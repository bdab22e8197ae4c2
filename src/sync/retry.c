/* retry.c: the reconnect loop of a pass, and the link's progress turned into events.
 * A stall or cut becomes one named line, a wait with a countdown, a new login, a resumed pass. */
#include "sync/retry.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "imap/imap_store.h"
#include "sync/crashpoint.h"
#include "util/err.h"

static void retry_event(sync_ctx *c, enum ofs_event_type type, const char *text)
{
    if (!c->fn)
        return;
    ofs_event ev = {.type = type, .account = c->acct->name, .text = text, .stats = &c->stats};
    c->fn(&ev, c->fn_ctx);
}

void sync_disconnect(sync_ctx *c)
{
    if (!c->srv)
        return;
    uint64_t rt, in, out;
    imap_store_counters(crashpoint_unwrap(c->srv), &in, &out, &rt);
    c->closed_in += in;
    c->closed_out += out;
    c->closed_rtt += rt;
    c->srv->ops->close(c->srv);
    c->srv = NULL;
}

double sync_backoff(int n, double r)
{
    int shift = n > 1 ? (n - 1 < 16 ? n - 1 : 16) : 0;
    double d = 0.25 * (double)(1u << shift);
    if (d > 30.0)
        d = 30.0;
    return d * (0.5 + 0.5 * r);
}

/* Sleeps for secs, saying once a second what it waits for. */
static void retry_wait(sync_ctx *c, double secs)
{
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        double left = secs - ((double)(now.tv_sec - start.tv_sec) +
                              (double)(now.tv_nsec - start.tv_nsec) / 1e9);
        if (left <= 0)
            return;
        char line[256];
        snprintf(line, sizeof line, "reconnecting to %s in %.1f s", c->acct->host, left);
        retry_event(c, OFS_EV_WAITING, line);
        double step = left < 1.0 ? left : 1.0;
        struct timespec ts = {.tv_sec = (time_t)step,
                              .tv_nsec = (long)((step - (double)(time_t)step) * 1e9)};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
            ;
    }
}

int sync_retry(sync_ctx *c, int (*attempt)(sync_ctx *c, ofs_error *err), ofs_error *err)
{
    int limit = c->acct->reconnect_attempts, failures = 0;
    unsigned seed = (unsigned)getpid() ^ (unsigned)time(NULL);
    for (;;) {
        uint64_t progress = c->progress;
        int rc = c->srv ? 0 : c->password ? sync_connect(c, err) : -1;
        if (!c->srv && !c->password)
            return err_set(err, OFS_E_NET, "no connection to server %s", c->acct->host);
        if (rc == 0)
            rc = attempt(c, err);
        if (rc == 0 || err->code != OFS_E_NET || err->final || !c->password)
            return rc;
        sync_disconnect(c);
        if (c->progress != progress)
            failures = 0; /* the link works, if badly: do not give up on it */
        if (failures >= limit)
            return err_prefix(err,
                              "gave up after %d reconnect%s in a row without progress "
                              "(reconnect-attempts = %d)",
                              failures, failures == 1 ? "" : "s", limit);
        failures++;
        double delay = sync_backoff(failures, (double)rand_r(&seed) / ((double)RAND_MAX + 1.0));
        char *line = xasprintf("%s; reconnecting in %.1f s (attempt %d of %d)", err->message, delay,
                               failures, limit);
        retry_event(c, OFS_EV_NOTICE, line);
        free(line);
        retry_wait(c, delay);
        c->stats.reconnects++;
    }
}
