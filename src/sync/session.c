/* session.c: the embeddable API (ofs_open ... ofs_close): a worker thread runs a sync or a
 * watch; its events cross to the host thread through a level-triggered queue (notify/queue.h). */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "notify/queue.h"
#include "sync/config.h"
#include "sync/watch.h"
#include "util/err.h"
#include "util/mem.h"

enum { SESSION_MAX_SUBS = 8, DISPATCH_BATCH = 256 };
enum { MODE_NONE, MODE_SYNC, MODE_WATCH };
enum { CTL_STOP = 1 };

typedef struct subscriber {
    unsigned mask;
    ofs_event_fn fn;
    void *ctx;
} subscriber;

struct ofs_session {
    const ofs_config *cfg;
    const cfg_account *acct;
    nq *events; /* worker -> host: boxed ofs_events */
    nq *ctl;    /* host -> worker: stop requests */
    pthread_t th;
    int mode;
    subscriber subs[SESSION_MAX_SUBS];
    size_t nsubs;
    bool done_seen;
    atomic_bool stopping;
};

/* An event with its own copies of everything it points to, so it can outlive the emitter. */
typedef struct ev_box {
    ofs_event ev;
    ofs_sync_stats stats;
} ev_box;

static ev_box *box_event(const ofs_event *src)
{
    ev_box *b = xcalloc(1, sizeof *b);
    b->ev = *src;
    b->ev.account = src->account ? xstrdup(src->account) : NULL;
    b->ev.folder = src->folder ? xstrdup(src->folder) : NULL;
    b->ev.text = src->text ? xstrdup(src->text) : NULL;
    if (src->stats) {
        b->stats = *src->stats;
        b->ev.stats = &b->stats;
    }
    if (!b->ev.since)
        b->ev.since = (int64_t)time(NULL);
    return b;
}

static void box_free(ev_box *b)
{
    free((char *)b->ev.account);
    free((char *)b->ev.folder);
    free((char *)b->ev.text);
    free(b);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* Runs on the worker. A full queue means the host is not dispatching: progress snapshots are
 * dropped (the next one supersedes them); other events wait for room, except when stopping. */
static void worker_emit(const ofs_event *ev, void *ctx)
{
    ofs_session *s = ctx;
    ev_box *b = box_event(ev);
    nq_event qe = {.type = ev->type, .ptr = b};
    for (int tries = 0;; tries++) {
        ofs_error e;
        if (nq_push(s->events, &qe, &e) == 0)
            return;
        if (ev->type == OFS_EV_DONE && (atomic_load(&s->stopping) || tries > 200)) {
            nq_put_back(s->events, &qe); /* never lose the end: out of order beats missing */
            return;
        }
        if (ev->type == OFS_EV_PROGRESS || atomic_load(&s->stopping)) {
            box_free(b);
            return;
        }
        sleep_ms(10);
    }
}

static void *worker(void *arg)
{
    ofs_session *s = arg;
    ofs_error err = {0};
    int rc = s->mode == MODE_WATCH
                 ? sync_watch(s->acct, s->ctl, worker_emit, s, &err)
                 : ofs_sync_account(s->cfg, s->acct->name, worker_emit, s, NULL, &err);
    ofs_event done = {.type = OFS_EV_DONE,
                      .account = s->acct->name,
                      .code = rc < 0 ? (err.code ? err.code : 1) : 0,
                      .text = rc < 0 ? err.message : NULL};
    worker_emit(&done, s);
    return NULL;
}

int ofs_open(const ofs_config *cfg, const char *account, ofs_session **out, ofs_error *err)
{
    const cfg_account *a = NULL;
    if (account)
        a = cfg_find_account(cfg, account);
    else if (cfg->n_accounts == 1)
        a = &cfg->accounts[0];
    else
        return err_set(err, OFS_E_USAGE, "%s has %zu accounts: name one", cfg->path,
                       cfg->n_accounts);
    if (!a)
        return err_set(err, OFS_E_USAGE, "no account '%s' in %s", account, cfg->path);
    ofs_session *s = xcalloc(1, sizeof *s);
    s->cfg = cfg;
    s->acct = a;
    if (nq_create(a->name, 0, &s->events, err) < 0 || nq_create(a->name, 0, &s->ctl, err) < 0) {
        nq_destroy(s->events);
        free(s);
        return -1;
    }
    *out = s;
    return 0;
}

int ofs_subscribe(ofs_session *s, unsigned mask, ofs_event_fn fn, void *ctx, ofs_error *err)
{
    if (s->mode != MODE_NONE)
        return err_set(err, OFS_E_USAGE, "ofs_subscribe after the session started");
    if (s->nsubs == SESSION_MAX_SUBS)
        return err_set(err, OFS_E_LIMIT, "more than %d subscribers", SESSION_MAX_SUBS);
    s->subs[s->nsubs++] = (subscriber){.mask = mask, .fn = fn, .ctx = ctx};
    return 0;
}

static int session_start(ofs_session *s, int mode, ofs_error *err)
{
    if (s->mode != MODE_NONE)
        return err_set(err, OFS_E_USAGE, "session %s was already started", s->acct->name);
    s->mode = mode;
    int rc = pthread_create(&s->th, NULL, worker, s);
    if (rc != 0) {
        s->mode = MODE_NONE;
        return err_errno(err, OFS_E_IO, rc, "cannot start the worker thread");
    }
    return 0;
}

int ofs_start_sync(ofs_session *s, ofs_error *err)
{
    return session_start(s, MODE_SYNC, err);
}

int ofs_start_watch(ofs_session *s, ofs_error *err)
{
    return session_start(s, MODE_WATCH, err);
}

int ofs_fd(const ofs_session *s)
{
    return nq_fd(s->events);
}

int ofs_dispatch(ofs_session *s)
{
    int n = 0;
    nq_event qe;
    while (n < DISPATCH_BATCH && nq_pop(s->events, &qe)) {
        ev_box *b = qe.ptr;
        if (b->ev.type == OFS_EV_DONE)
            s->done_seen = true;
        for (size_t i = 0; i < s->nsubs; i++)
            if (s->subs[i].mask & OFS_EVMASK(b->ev.type))
                s->subs[i].fn(&b->ev, s->subs[i].ctx);
        box_free(b);
        n++;
    }
    return n;
}

int ofs_done(const ofs_session *s)
{
    return s->done_seen;
}

void ofs_stop(ofs_session *s)
{
    if (atomic_exchange(&s->stopping, true))
        return;
    nq_event ev = {.type = CTL_STOP};
    ofs_error e;
    if (nq_push(s->ctl, &ev, &e) < 0)
        nq_put_back(s->ctl, &ev); /* cannot be full (one stop ever), but never lose it */
}

/* Bounded by the account's timeout: every wait of the worker has that deadline or less,
 * plus the time one folder step takes to finish. */
static int join_worker(ofs_session *s, ofs_error *err)
{
    int secs = s->acct->timeout > 0 ? s->acct->timeout : 60;
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 4 * secs + 30;
    int rc = pthread_timedjoin_np(s->th, NULL, &dl);
    if (rc == 0)
        return 0;
    return err_errno(err, OFS_E_NET, rc, "%s: the worker did not stop in %d s", s->acct->name,
                     4 * secs + 30);
}

int ofs_close(ofs_session *s, ofs_error *err)
{
    if (!s)
        return 0;
    if (s->mode != MODE_NONE) {
        ofs_stop(s);
        if (join_worker(s, err) < 0)
            return -1;
    }
    nq_event qe;
    while (nq_pop(s->events, &qe))
        box_free(qe.ptr);
    nq_destroy(s->events);
    nq_destroy(s->ctl);
    free(s);
    return 0;
}
