/* account.c: one pass over one account: lock, state, both stores, the folder set, each folder.
 * Folder-level failures are reported and the pass goes on; connection-level ones end it. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "imap/imap_store.h"
#include "maildir/maildir_store.h"
#include "sync/carry.h"
#include "sync/crashpoint.h"
#include "sync/engine.h"
#include "sync/folders.h"
#include "sync/parallel.h"
#include "sync/retry.h"
#include "util/err.h"
#include "util/secret.h"

static void pass_event(sync_ctx *c, enum ofs_event_type type, const char *folder, const char *text)
{
    if (!c->fn)
        return;
    ofs_event ev = {
        .type = type, .account = c->acct->name, .folder = folder, .text = text, .stats = &c->stats};
    c->fn(&ev, c->fn_ctx);
}

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* How long the server may be silent before the display says what we are waiting for. */
#define WAIT_REPORT_AFTER 1.0

static void net_counters(const sync_ctx *c, ofs_event *ev)
{
    uint64_t rtt;
    if (c->srv)
        imap_store_counters(crashpoint_unwrap(c->srv), &ev->net_in, &ev->net_out, &rtt);
    ev->net_in += c->closed_in; /* the pass's connections before a reconnect */
    ev->net_out += c->closed_out;
}

/* The connection's heartbeat: bytes flowing become a progress event (the display's rate),
 * a wait longer than WAIT_REPORT_AFTER a waiting event saying on what and for how long. */
static void on_activity(void *ctx, double idle, const char *doing)
{
    sync_ctx *c = ctx;
    if (!c->fn)
        return;
    ofs_event ev = {.type = idle >= WAIT_REPORT_AFTER ? OFS_EV_WAITING : OFS_EV_PROGRESS,
                    .account = c->acct->name,
                    .text = doing,
                    .waited = idle,
                    .stats = &c->stats};
    sync_fill_progress(c, &ev);
    net_counters(c, &ev);
    c->fn(&ev, c->fn_ctx);
}

void sync_error_event(sync_ctx *c, const char *folder, const ofs_error *e)
{
    if (!c->fn)
        return;
    ofs_event ev = {.type = OFS_EV_ERROR,
                    .account = c->acct->name,
                    .folder = folder,
                    .text = e->message,
                    .code = e->code,
                    .stats = &c->stats};
    c->fn(&ev, c->fn_ctx);
}

bool sync_error_ends_pass(int code)
{
    return code == OFS_E_NET || code == OFS_E_PROTO || code == OFS_E_AUTH || code == OFS_E_STATE ||
           code == OFS_E_NOSPC || code == OFS_E_LIMIT;
}

/* Records a folder's failure; returns -1 when the pass must stop. */
static int folder_failed(sync_ctx *c, const char *name, ofs_error *ferr, ofs_error *err)
{
    if (sync_error_ends_pass(ferr->code)) {
        *err = *ferr;
        return -1;
    }
    if (!c->folder_failures++)
        c->folder_err = *ferr;
    sync_error_event(c, name, ferr);
    return 0;
}

/* Wire bytes and round trips of the connection, so a pass reports its own share of them
 * (a connection may serve many passes). */
typedef struct net_mark {
    uint64_t in, out, rtt;
    double t;
} net_mark;

static void net_mark_take(const sync_ctx *c, net_mark *m)
{
    *m = (net_mark){.t = mono_now()};
    if (c->srv)
        imap_store_counters(crashpoint_unwrap(c->srv), &m->in, &m->out, &m->rtt);
    m->in += c->closed_in;
    m->out += c->closed_out;
    m->rtt += c->closed_rtt;
}

static void pass_counters(sync_ctx *c, const net_mark *start)
{
    net_mark now;
    net_mark_take(c, &now);
    c->stats.net_in = now.in - start->in;
    c->stats.net_out = now.out - start->out;
    c->stats.round_trips = now.rtt - start->rtt;
    c->stats.elapsed_ms = (uint64_t)((now.t - start->t) * 1000);
}

int sync_pass_folder(sync_ctx *c, const char *name, ofs_error *err)
{
    ofs_error ferr = {0};
    if (sync_folder(c, name, &ferr) < 0 && folder_failed(c, name, &ferr, err) < 0)
        return -1;
    c->stats.folders_seen++;
    strlist_add(&c->done, name);
    c->progress++;
    return 0;
}

/* The folders one after another on the pass's connection. */
static int pass_folders(sync_ctx *c, const strlist *todo, ofs_error *err)
{
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < todo->n && !(c->stop && c->stop(c->stop_arg)); i++)
        if (strlist_find(&c->done, todo->v[i]) < 0)
            rc = sync_pass_folder(c, todo->v[i], err);
    return rc;
}

static bool all_done(const sync_ctx *c, const strlist *todo)
{
    for (size_t i = 0; i < todo->n; i++)
        if (strlist_find(&c->done, todo->v[i]) < 0)
            return false;
    return true;
}

/* One try at the folders not done yet; a network error ends it and retry.c tries again. */
static int pass_attempt(sync_ctx *c, ofs_error *err)
{
    strlist todo;
    strlist_init(&todo);
    int rc = folders_align(c, &todo, err);
    /* Every folder's status in one round trip, so unchanged folders are never opened. */
    if (rc == 0 && c->srv->ops->prefetch_status)
        rc = c->srv->ops->prefetch_status(c->srv, &todo, err);
    /* More connections need a password to log in with: watch's passes have none. */
    if (rc == 0 && c->acct->connections > 1 && c->password)
        rc = sync_pass_parallel(c, &todo, err);
    else if (rc == 0)
        rc = pass_folders(c, &todo, err);
    /* Both ends of a move have been seen once every folder was synced. */
    if (rc == 0 && !c->dry_run && all_done(c, &todo))
        rc = sync_carry_flags(c, !c->folder_failures, err);
    strlist_free(&todo);
    return rc;
}

int sync_run_pass(sync_ctx *c, ofs_error *err)
{
    net_mark start;
    net_mark_take(c, &start);
    pass_event(c, OFS_EV_PASS_START, NULL, NULL);
    int rc = sync_retry(c, pass_attempt, err);
    strlist_free(&c->done);
    if (rc == 0 && c->folder_failures) {
        *err = c->folder_err;
        if (c->folder_failures > 1)
            err_prefix(err, "%d folders failed, the first", c->folder_failures);
        rc = -1;
    }
    if (c->password) /* the pass's own connection: its figures are complete once closed */
        sync_disconnect(c);
    pass_counters(c, &start);
    if (c->dry_run) {
        pass_event(c, OFS_EV_NOTICE, NULL, "dry run: nothing was changed on either side");
    } else if (c->fn) {
        ofs_event ev = {.type = OFS_EV_PASS_DONE,
                        .account = c->acct->name,
                        .stats = &c->stats,
                        .code = rc < 0 ? (err->code > 0 ? err->code : 1) : 0};
        c->fn(&ev, c->fn_ctx);
    }
    return rc;
}

/* One ofsync per account at a time: a second one would read half-written state. */
int sync_lock_account(const cfg_account *a, int *fd, ofs_error *err)
{
    char *path = xasprintf("%s.lock", a->state);
    *fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    int rc = 0;
    if (*fd < 0)
        rc = err_errno(err, OFS_E_STATE, errno, "cannot open lock file %s", path);
    else if (flock(*fd, LOCK_EX | LOCK_NB) < 0)
        rc = err_set(err, OFS_E_STATE,
                     "account '%s' is being synced by another ofsync (lock %s is held)", a->name,
                     path);
    free(path);
    return rc;
}

static void pass_trace(void *ctx, const char *line)
{
    pass_event(ctx, OFS_EV_TRACE, NULL, line);
}

int sync_connect(sync_ctx *c, ofs_error *err)
{
    const cfg_account *a = c->acct;
    imap_store_opts o = {.host = a->host,
                         .port = a->port,
                         .tls = a->tls,
                         .user = a->user,
                         .password = c->password,
                         .timeout = a->timeout,
                         .activity = on_activity,
                         .activity_ctx = c,
                         .compress = a->compress,
                         .ca_file = a->ca_file,
                         .fingerprint = a->fingerprint,
                         .allow_plaintext = a->allow_plaintext,
                         .auth = a->auth,
                         .trace = c->trace && c->fn ? pass_trace : NULL,
                         .trace_ctx = c};
    if (imap_store_open(&o, &c->srv, err) < 0)
        return -1;
    c->srv = crashpoint_wrap(c->srv);
    return 0;
}

/* Wipes the pass's password and ends its no-core-dump guard. */
static void password_wipe(sync_ctx *c)
{
    if (c->password) {
        explicit_bzero(c->password, strlen(c->password));
        free(c->password);
        c->password = NULL;
    }
    if (c->guarded)
        secret_guard_end();
    c->guarded = false;
}

int sync_open_local(sync_ctx *c, ofs_error *err)
{
    if (maildir_store_open(c->acct->local, c->acct->layout, &c->loc, err) < 0)
        return -1;
    c->loc = crashpoint_wrap(c->loc);
    return 0;
}

/* The server is connected by the pass itself (retry.c), which may need to log in again.
 * While the password is in memory the process is not dumpable. */
static int open_stores(sync_ctx *c, ofs_error *err)
{
    const cfg_account *a = c->acct;
    if (sync_open_local(c, err) < 0)
        return -1;
    secret_guard_begin();
    c->guarded = true;
    return cfg_account_password(a, &c->password, err);
}

static int sync_one(const cfg_account *a, const ofs_sync_opts *opts, bool trace, ofs_event_fn fn,
                    void *ctx, ofs_sync_stats *total, ofs_error *err)
{
    sync_ctx c = {
        .acct = a, .fn = fn, .fn_ctx = ctx, .dry_run = opts && opts->dry_run, .trace = trace};
    int lock = -1;
    int rc = state_open(a->state, &c.st, err);
    if (rc == 0)
        rc = sync_lock_account(a, &lock, err);
    if (rc == 0)
        rc = open_stores(&c, err);
    if (rc == 0)
        rc = sync_run_pass(&c, err);
    sync_disconnect(&c);
    password_wipe(&c);
    if (c.loc)
        c.loc->ops->close(c.loc);
    if (c.st)
        state_close(c.st);
    if (lock >= 0)
        close(lock);
    if (rc < 0) {
        err_prefix(err, "%s", a->name);
        sync_error_event(&c, NULL, err);
    }
    if (total)
        sync_stats_add(total, &c.stats);
    return rc;
}

int ofs_sync_account(const ofs_config *cfg, const char *account, ofs_event_fn fn, void *ctx,
                     ofs_sync_stats *stats, ofs_error *err)
{
    return ofs_sync_account_opts(cfg, account, NULL, fn, ctx, stats, err);
}

int ofs_sync_account_opts(const ofs_config *cfg, const char *account, const ofs_sync_opts *opts,
                          ofs_event_fn fn, void *ctx, ofs_sync_stats *stats, ofs_error *err)
{
    if (stats)
        memset(stats, 0, sizeof *stats);
    if (account) {
        const cfg_account *a = cfg_find_account(cfg, account);
        if (!a)
            return err_set(err, OFS_E_USAGE, "no account '%s' in %s", account, cfg->path);
        return sync_one(a, opts, cfg->trace, fn, ctx, stats, err);
    }
    int rc = 0;
    for (size_t i = 0; i < cfg->n_accounts; i++) {
        ofs_error e = {0};
        if (sync_one(&cfg->accounts[i], opts, cfg->trace, fn, ctx, stats, &e) < 0 && rc == 0) {
            *err = e;
            rc = -1;
        }
    }
    return rc;
}

/* ---- for watch.c: the same connections as a pass ---- */

/* For callers that keep the connection themselves (watch, push): both stores open, and no
 * password kept, so a pass leaves reconnecting to them. */
int sync_open_stores(sync_ctx *c, ofs_error *err)
{
    int rc = open_stores(c, err);
    if (rc == 0)
        rc = sync_connect(c, err);
    password_wipe(c);
    return rc;
}
