/* parallel.c: one pass's folders over several connections: a shared queue, largest first, one
 * thread per extra connection with its own login, SQLite handle and Maildir handle, and a
 * budget of messages in progress at once so that memory does not grow with the connections. */
#include "sync/parallel.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "sync/retry.h"
#include "util/err.h"

/* The automatic budget's least: below it, memory is no concern (a few MiB). */
#define PAR_BUDGET_FLOOR 10000

typedef struct par_job {
    const char *name;
    sync_probe probe;
    size_t order; /* its place in the folder set: ties keep it (qsort is not stable) */
    bool taken;   /* a connection has it (or had it and finished it) */
} par_job;

typedef struct par_pass par_pass;

/* One connection and the folders it syncs. Worker 0 is the pass's own context. */
typedef struct par_worker {
    par_pass *p;
    sync_ctx *c;
    sync_ctx own;             /* the context of an extra connection */
    uint64_t net_in, net_out; /* its last reported wire figures (under ev_lock) */
    bool link_failed;         /* its connection failed: it takes no more folders */
    pthread_t th;
    bool started;
} par_worker;

struct par_pass {
    sync_ctx *c; /* the pass: its done list and folder errors are shared (under q_lock) */
    ofs_event_fn fn;
    void *fn_ctx;
    pthread_mutex_t ev_lock; /* one event at a time reaches fn */
    par_worker *w;
    size_t nw;
    pthread_mutex_t q_lock; /* guards what follows */
    pthread_cond_t q_moved; /* a folder finished: its messages left the budget */
    par_job *jobs;
    size_t njobs;
    size_t left;        /* jobs not taken (a job given back after a link failure counts again) */
    uint64_t budget;    /* messages of the folders in progress at once, at most */
    uint64_t in_flight; /* messages of the folders in progress */
    bool fatal;         /* a pass-level error: no worker takes another folder */
    ofs_error fatal_err;
    ofs_error net_err; /* the first link failure */
};

/* Events of every connection reach the caller one at a time; the wire figures in them are
 * the sum over the connections, as they were last reported. */
static void par_event(const ofs_event *ev, void *ctx)
{
    par_worker *w = ctx;
    par_pass *p = w->p;
    pthread_mutex_lock(&p->ev_lock);
    ofs_event e = *ev;
    if (ev->net_in || ev->net_out) {
        w->net_in = ev->net_in;
        w->net_out = ev->net_out;
        e.net_in = e.net_out = 0;
        for (size_t i = 0; i < p->nw; i++) {
            e.net_in += p->w[i].net_in;
            e.net_out += p->w[i].net_out;
        }
    }
    p->fn(&e, p->fn_ctx);
    pthread_mutex_unlock(&p->ev_lock);
}

static int cmp_job(const void *a, const void *b)
{
    const par_job *x = a, *y = b;
    if (x->probe.weight != y->probe.weight)
        return x->probe.weight < y->probe.weight ? 1 : -1;
    return (x->order > y->order) - (x->order < y->order);
}

/* The largest folder not taken that fits in the budget beside those in progress, or -1. With
 * nothing in progress any folder fits: one bigger than the budget runs, alone. */
static long fitting_job(const par_pass *p)
{
    for (size_t j = 0; j < p->njobs; j++) {
        const par_job *job = &p->jobs[j];
        if (!job->taken && (!p->in_flight || p->in_flight + job->probe.weight <= p->budget))
            return (long)j;
    }
    return -1;
}

/* The next folder for w, or -1: none left, a stop request, or a pass-level error. When the
 * folders left would bring those in progress over the budget, waits for one to finish. */
static long take_job(par_worker *w)
{
    par_pass *p = w->p;
    long j = -1;
    pthread_mutex_lock(&p->q_lock);
    while (p->left && !p->fatal && !(p->c->stop && p->c->stop(p->c->stop_arg))) {
        j = fitting_job(p);
        if (j >= 0)
            break;
        pthread_cond_wait(&p->q_moved, &p->q_lock);
    }
    if (j >= 0) {
        p->jobs[j].taken = true;
        p->left--;
        p->in_flight += p->jobs[j].probe.weight;
    }
    pthread_mutex_unlock(&p->q_lock);
    return j;
}

/* A notice about w's connection: before, the error's message, after. */
static void worker_notice(par_worker *w, const char *folder, const char *before, const ofs_error *e,
                          const char *after)
{
    char *line = xasprintf("%s%s%s", before, e->message, after);
    ofs_event ev = {
        .type = OFS_EV_NOTICE, .account = w->c->acct->name, .folder = folder, .text = line};
    par_event(&ev, w);
    free(line);
}

/* Books a folder's outcome; returns -1 when w must take no more folders. */
static int job_done(par_worker *w, long j, int rc, const ofs_error *ferr)
{
    par_pass *p = w->p;
    const char *name = p->jobs[j].name;
    bool report = false;
    pthread_mutex_lock(&p->q_lock);
    p->in_flight -= p->jobs[j].probe.weight;
    pthread_cond_broadcast(&p->q_moved);
    if (rc < 0 && ferr->code == OFS_E_NET) {
        /* This connection is gone; the folder resumes from the state on another. */
        p->jobs[j].taken = false;
        p->left++;
        if (!p->net_err.code)
            p->net_err = *ferr;
        w->link_failed = true;
    } else if (rc < 0 && sync_error_ends_pass(ferr->code)) {
        if (!p->fatal)
            p->fatal_err = *ferr;
        p->fatal = true;
    } else {
        if (rc < 0 && !p->c->folder_failures++)
            p->c->folder_err = *ferr;
        report = rc < 0;
        strlist_add(&p->c->done, name);
    }
    pthread_mutex_unlock(&p->q_lock);
    if (w->link_failed)
        worker_notice(w, name, "", ferr, "; the folder goes on on another connection");
    if (rc < 0 && !report)
        return -1;
    if (report)
        sync_error_event(w->c, name, ferr);
    w->c->stats.folders_seen++;
    w->c->progress++;
    return 0;
}

static void work(par_worker *w)
{
    long j;
    while (!w->link_failed && (j = take_job(w)) >= 0) {
        par_job *job = &w->p->jobs[j];
        ofs_error ferr = {0};
        w->c->known_status = job->probe.has_status ? &job->probe.status : NULL;
        int rc = sync_folder(w->c, job->name, &ferr);
        w->c->known_status = NULL;
        if (job_done(w, j, rc, &ferr) < 0)
            return;
    }
}

/* An extra connection: logs in like the pass's own, with its own state and Maildir handles
 * (the Maildir store keeps the current folder and unflushed deliveries per handle). */
static int worker_open(par_worker *w, ofs_error *err)
{
    sync_ctx *m = w->p->c;
    w->own = (sync_ctx){.acct = m->acct,
                        .fn = par_event,
                        .fn_ctx = w,
                        .dry_run = m->dry_run,
                        .trace = m->trace,
                        .password = m->password, /* borrowed: the pass wipes it */
                        .link_rate = m->link_rate};
    w->c = &w->own;
    if (state_open(m->acct->state, &w->own.st, err) < 0 ||
        state_set_cache_share(w->own.st, w->p->nw, err) < 0 || sync_open_local(&w->own, err) < 0)
        return -1;
    return sync_connect(&w->own, err);
}

static void *worker_main(void *arg)
{
    par_worker *w = arg;
    ofs_error err = {0};
    if (worker_open(w, &err) == 0) {
        work(w);
    } else {
        worker_notice(w, NULL, "an extra connection failed (", &err, "); the others go on");
    }
    return NULL;
}

/* Adds an extra connection's figures to the pass and closes its handles. */
static void worker_close(par_worker *w)
{
    sync_ctx *m = w->p->c, *c = &w->own;
    sync_disconnect(c);
    m->closed_in += c->closed_in;
    m->closed_out += c->closed_out;
    m->closed_rtt += c->closed_rtt;
    sync_stats_add(&m->stats, &c->stats);
    m->progress += c->progress;
    c->password = NULL;
    if (c->loc)
        c->loc->ops->close(c->loc);
    state_close(c->st);
}

/* Runs the queue on c and n - 1 extra connections; returns what is left undone. */
static size_t run_workers(par_pass *p, size_t n)
{
    p->w = xcalloc(n, sizeof *p->w);
    p->nw = n;
    for (size_t i = 0; i < n; i++)
        p->w[i].p = p;
    p->w[0].c = p->c;
    sync_ctx saved = *p->c;
    p->c->fn = par_event;
    p->c->fn_ctx = &p->w[0];
    for (size_t i = 1; i < n; i++)
        p->w[i].started = pthread_create(&p->w[i].th, NULL, worker_main, &p->w[i]) == 0;
    work(&p->w[0]);
    for (size_t i = 1; i < n; i++)
        if (p->w[i].started)
            pthread_join(p->w[i].th, NULL);
    /* A folder given back after the pass's connection ran out of work is done here. */
    if (!p->w[0].link_failed)
        work(&p->w[0]);
    p->c->fn = saved.fn;
    p->c->fn_ctx = saved.fn_ctx;
    for (size_t i = 1; i < n; i++)
        if (p->w[i].c)
            worker_close(&p->w[i]);
    if (p->w[0].link_failed)
        sync_disconnect(p->c); /* dead: retry.c makes a new one if folders are left */
    free(p->w);
    p->w = NULL;
    return p->left;
}

/* Probes the folders not done yet; runs the unchanged ones at once (they cost no round
 * trip) and queues the others, largest first. Returns how many of them need the server
 * for sure, or -1. */
static long queue_folders(par_pass *p, const strlist *todo, ofs_error *err)
{
    long busy = 0;
    sync_ctx *c = p->c;
    p->jobs = xcalloc(todo->n ? todo->n : 1, sizeof *p->jobs);
    for (size_t i = 0; i < todo->n && !(c->stop && c->stop(c->stop_arg)); i++) {
        if (strlist_find(&c->done, todo->v[i]) >= 0)
            continue;
        par_job job = {.name = todo->v[i], .order = i};
        if (sync_folder_probe(c, job.name, &job.probe, err) < 0)
            return -1;
        if (!job.probe.unchanged)
            p->jobs[p->njobs++] = job;
        else if (sync_pass_folder(c, job.name, err) < 0)
            return -1;
        busy += job.probe.needs_server;
    }
    qsort(p->jobs, p->njobs, sizeof *p->jobs, cmp_job);
    p->left = p->njobs;
    return busy;
}

/* The configured budget, else one that lets the folders beside the largest one add a quarter
 * to it: with N connections memory stays near one connection's, which must hold the largest
 * folder anyway. The floor keeps an account of small folders fully parallel. */
static uint64_t pass_budget(const par_pass *p)
{
    if (p->c->acct->parallel_budget)
        return (uint64_t)p->c->acct->parallel_budget;
    uint64_t largest = p->njobs ? p->jobs[0].probe.weight : 0;
    uint64_t derived = largest + largest / 4;
    return derived > PAR_BUDGET_FLOOR ? derived : PAR_BUDGET_FLOOR;
}

int sync_pass_parallel(sync_ctx *c, const strlist *todo, ofs_error *err)
{
    par_pass p = {.c = c, .fn = c->fn, .fn_ctx = c->fn_ctx};
    long busy = queue_folders(&p, todo, err);
    int rc = busy < 0 ? -1 : 0;
    /* Folders that may need only a local scan (the first pass after a download) make no
     * connection of their own: a login would cost more than it saves. */
    size_t n = busy < c->acct->connections ? (size_t)busy : (size_t)c->acct->connections;
    if (rc == 0 && n < 2) {
        for (size_t i = 0; rc == 0 && i < p.njobs && !(c->stop && c->stop(c->stop_arg)); i++)
            rc = sync_pass_folder(c, p.jobs[i].name, err);
    } else if (rc == 0 && (rc = state_set_cache_share(c->st, n, err)) == 0) {
        /* The connections share one connection's page cache, as they share the budget. */
        p.budget = pass_budget(&p);
        pthread_mutex_init(&p.ev_lock, NULL);
        pthread_mutex_init(&p.q_lock, NULL);
        pthread_cond_init(&p.q_moved, NULL);
        size_t left = run_workers(&p, n);
        ofs_error cache_err;
        (void)state_set_cache_share(c->st, 1, &cache_err); /* a smaller cache does no harm */
        pthread_cond_destroy(&p.q_moved);
        pthread_mutex_destroy(&p.ev_lock);
        pthread_mutex_destroy(&p.q_lock);
        if (p.fatal)
            rc = (*err = p.fatal_err, -1);
        else if (left && p.net_err.code)
            rc = (*err = p.net_err, -1);
    }
    free(p.jobs);
    return rc;
}
