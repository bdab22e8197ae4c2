/* watch.c: the watch loop of one account: waits on inotify, push connections and the stop
 * queue with one poll() whose timeout is the nearest deadline; runs debounced passes.
 * A folder is marked clean only if its generation did not move during its pass. */
#include "sync/watch.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "imap/idle.h"
#include "imap/imap_store.h"
#include "sync/watch_int.h"
#include "util/err.h"

enum {
    DEBOUNCE_MS = 100,              /* quiet time after the last change before a pass */
    DEBOUNCE_MAX_MS = 1000,         /* ... but no longer than this after the first one */
    IDLE_RENEW_DEFAULT_S = 25 * 60, /* RFC 2177: re-issue IDLE well before 29 minutes */
    MAX_POLLFDS = 40,
};

int64_t watch_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t watch_backoff(const watch *w, int n)
{
    int64_t ms = 1000;
    for (int i = 1; i < n && ms < 60000; i++)
        ms *= 2;
    int64_t cap = (int64_t)w->a->poll_interval * 1000;
    if (ms > 60000)
        ms = 60000;
    return ms < cap ? ms : cap;
}

void watch_emit(watch *w, enum ofs_event_type type, const char *folder, const char *text, int code)
{
    if (!w->c.fn)
        return;
    ofs_event ev = {.type = type,
                    .account = w->a->name,
                    .folder = folder,
                    .text = text,
                    .code = code,
                    .since = (int64_t)time(NULL)};
    w->c.fn(&ev, w->c.fn_ctx);
}

/* ---- folders ---- */

static void folder_learn_server_name(watch *w, wfolder *f)
{
    ofs_error e = {0};
    if (!f->server && w->c.srv && imap_store_server_name(w->c.srv, f->name, &f->server, &e) < 0)
        f->server = NULL; /* unmappable: NOTIFY events for it count as folder-set changes */
}

uint32_t watch_folder_id(watch *w, const char *name)
{
    for (size_t i = 1; i < w->nf; i++)
        if (!strcmp(w->f[i].name, name))
            return (uint32_t)i;
    if (w->nf == w->capf) {
        w->capf = w->capf ? 2 * w->capf : 16;
        w->f = xrealloc(w->f, w->capf * sizeof *w->f);
    }
    wfolder *f = &w->f[w->nf];
    memset(f, 0, sizeof *f);
    f->name = xstrdup(name);
    f->push = w->notify ? PUSH_NOTIFY : PUSH_NONE;
    folder_learn_server_name(w, f);
    return (uint32_t)w->nf++;
}

void watch_bump(watch *w, uint32_t id, const char *source)
{
    bool was_dirty = dirty_is_dirty(w->dirty, id);
    dirty_bump(w->dirty, id);
    int64_t now = watch_now();
    if (!w->first_change)
        w->first_change = now;
    w->last_change = now;
    if (!was_dirty)
        watch_emit(w, OFS_EV_CHANGE, id ? w->f[id].name : NULL, source, 0);
}

static void bump_all(watch *w, const char *source)
{
    for (size_t i = 1; i < w->nf; i++)
        watch_bump(w, (uint32_t)i, source);
}

static void on_fs(void *ctx, enum fswatch_kind kind, const char *folder)
{
    watch *w = ctx;
    if (kind == FSW_FOLDER)
        watch_bump(w, watch_folder_id(w, folder), "local");
    else if (kind == FSW_STRUCTURE)
        watch_bump(w, WATCH_FOLDERSET, "local");
    else {
        watch_bump(w, WATCH_FOLDERSET, "local");
        bump_all(w, "local");
    }
}

/* ---- connections ---- */

static bool fatal_code(int code)
{
    return code == OFS_E_AUTH || code == OFS_E_CONFIG || code == OFS_E_USAGE;
}

/* Errors after which the main connection (or the state) cannot be trusted: reconnect. */
static bool connection_code(int code)
{
    return code == OFS_E_NET || code == OFS_E_PROTO || code == OFS_E_LIMIT || code == OFS_E_STATE ||
           code == OFS_E_NOSPC;
}

static void main_close(watch *w)
{
    if (w->c.srv)
        w->c.srv->ops->close(w->c.srv);
    if (w->c.loc)
        w->c.loc->ops->close(w->c.loc);
    w->c.srv = w->c.loc = NULL;
}

static void main_lost(watch *w, const ofs_error *e)
{
    main_close(w);
    if (fatal_code(e->code) || e->final) { /* e.g. a certificate that does not verify */
        w->fatal = true;
        w->fatal_err = *e;
        return;
    }
    w->main_fails++;
    w->main_retry_at = watch_now() + watch_backoff(w, w->main_fails);
    char *line = xasprintf("%s; reconnecting in %lld s", e->message,
                           (long long)(watch_backoff(w, w->main_fails) / 1000));
    watch_emit(w, OFS_EV_ERROR, NULL, line, e->code);
    free(line);
}

static int main_open(watch *w)
{
    if (w->c.srv)
        return 0;
    if (watch_now() < w->main_retry_at)
        return -1;
    ofs_error e = {0};
    if (sync_open_stores(&w->c, &e) < 0) {
        main_lost(w, &e);
        return -1;
    }
    w->main_fails = 0;
    for (size_t i = 1; i < w->nf; i++)
        folder_learn_server_name(w, &w->f[i]);
    return 0;
}

/* ---- passes ---- */

static bool stop_requested(watch *w)
{
    nq_event ev;
    if (!w->stop && nq_peek(w->ctl, &ev))
        w->stop = true;
    return w->stop;
}

static bool stop_between_folders(void *arg)
{
    return stop_requested(arg);
}

static void pass_begin(watch *w)
{
    memset(&w->c.stats, 0, sizeof w->c.stats);
    w->c.folder_failures = 0;
    if (w->c.fn) {
        ofs_event ev = {.type = OFS_EV_PASS_START, .account = w->a->name, .stats = &w->c.stats};
        w->c.fn(&ev, w->c.fn_ctx);
    }
}

static void pass_end(watch *w)
{
    if (w->c.fn) {
        ofs_event ev = {.type = OFS_EV_PASS_DONE, .account = w->a->name, .stats = &w->c.stats};
        w->c.fn(&ev, w->c.fn_ctx);
    }
}

static void rescan_local(watch *w)
{
    ofs_error e = {0};
    if (!w->fs || fswatch_rescan(w->fs, &e) == 0)
        return;
    if (!w->local_poll)
        watch_emit(w, OFS_EV_ERROR, NULL, e.message, e.code);
    w->local_poll = true; /* some directories are unwatched: polls cover them */
}

/* Every folder, the folder set included; afterwards the table holds every synced folder. */
static void full_pass(watch *w)
{
    size_t n = w->nf;
    uint64_t *gen = xmalloc(n * sizeof *gen);
    for (size_t i = 0; i < n; i++)
        gen[i] = dirty_begin(w->dirty, (uint32_t)i);
    rescan_local(w); /* watches first, then the listing: nothing falls in between */
    memset(&w->c.stats, 0, sizeof w->c.stats);
    w->c.folder_failures = 0;
    ofs_error e = {0};
    int rc = sync_run_pass(&w->c, &e); /* emits its own PASS_START and PASS_DONE */
    strlist names;
    strlist_init(&names);
    ofs_error le = {0};
    if (state_folder_names(w->c.st, &names, &le) == 0) {
        for (size_t i = 1; i < w->nf; i++)
            w->f[i].gone = true;
        for (size_t i = 0; i < names.n; i++) {
            uint32_t id = watch_folder_id(w, names.v[i]); /* may move w->f */
            w->f[id].gone = false;
        }
    }
    strlist_free(&names);
    if (rc == 0 && w->stop) {
        /* Folders were left out: nothing is clean, the next run starts with a full pass. */
    } else if (rc == 0) {
        for (size_t i = 0; i < n; i++)
            dirty_mark_clean(w->dirty, (uint32_t)i, gen[i]);
        w->full_passes++;
        w->full_fails = 0;
        push_plan(w);
    } else if (connection_code(e.code) || fatal_code(e.code)) {
        main_lost(w, &e);
    } else {
        w->full_fails++;
        w->full_retry_at = watch_now() + watch_backoff(w, w->full_fails);
        watch_emit(w, OFS_EV_ERROR, NULL, e.message, e.code);
    }
    free(gen);
}

static void folder_pass(watch *w, uint32_t id, uint64_t gen)
{
    wfolder *f = &w->f[id];
    ofs_error e = {0};
    w->c.stats.folders_seen++;
    if (sync_folder(&w->c, f->name, &e) == 0) {
        dirty_mark_clean(w->dirty, id, gen);
        f->fails = 0;
        return;
    }
    if (connection_code(e.code) || fatal_code(e.code)) {
        main_lost(w, &e);
        return;
    }
    f->fails++;
    f->retry_at = watch_now() + watch_backoff(w, f->fails);
    watch_emit(w, OFS_EV_ERROR, f->name, e.message, e.code);
}

/* The server store keeps the statuses its last LIST (LIST-STATUS) or prefetch gathered, to
 * skip folders they prove unchanged. In watch they age between passes: listing again drops
 * them and, with LIST-STATUS, brings every folder's current status in the same round trip. */
static int refresh_status(watch *w)
{
    strlist names, refused;
    strlist_init(&names);
    strlist_init(&refused);
    ofs_error e = {0};
    /* A server answers STATUS for the selected folder from the session's view, which only
     * moves on a command that may report changes: NOOP brings it up to date first. */
    int rc = imap_noop(imap_store_client(w->c.srv), &e);
    if (rc == 0)
        rc = w->c.srv->ops->list_folders(w->c.srv, &names, &refused, &e);
    strlist_free(&names);
    strlist_free(&refused);
    if (rc < 0)
        main_lost(w, &e);
    return rc;
}

/* The dirty folders whose time has come, one pass over them. */
static void run_passes(watch *w)
{
    int64_t now = watch_now();
    w->first_change = w->last_change = 0;
    if (dirty_is_dirty(w->dirty, WATCH_FOLDERSET)) {
        if (now >= w->full_retry_at)
            full_pass(w);
        return;
    }
    /* The generations first, then fresh server statuses: a change after the status was taken
     * moves the generation past the one recorded here, so the folder gets another pass. */
    size_t n = 0;
    uint32_t *ids = xmalloc(w->nf * sizeof *ids);
    uint64_t *gens = xmalloc(w->nf * sizeof *gens);
    for (uint32_t id = 1; dirty_next(w->dirty, id, &id); id++) {
        if (w->f[id].gone) /* its changes were the deletion the full pass handled */
            dirty_mark_clean(w->dirty, id, dirty_begin(w->dirty, id));
        else if (now >= w->f[id].retry_at) {
            ids[n] = id;
            gens[n++] = dirty_begin(w->dirty, id);
        }
    }
    if (n && refresh_status(w) == 0) {
        pass_begin(w);
        for (size_t i = 0; i < n && !w->fatal && w->c.srv && !stop_requested(w); i++)
            folder_pass(w, ids[i], gens[i]);
        pass_end(w);
    }
    free(ids);
    free(gens);
}

/* Dirty folders that may run now (not waiting for a retry), and the earliest retry. */
static bool work_ready(watch *w, int64_t *next_retry)
{
    *next_retry = INT64_MAX;
    bool ready = false;
    if (dirty_is_dirty(w->dirty, WATCH_FOLDERSET)) {
        if (w->full_retry_at <= watch_now())
            return true;
        *next_retry = w->full_retry_at;
        return false;
    }
    uint32_t id = 1;
    while (dirty_next(w->dirty, id, &id)) {
        if (w->f[id].retry_at <= watch_now())
            ready = true;
        else if (w->f[id].retry_at < *next_retry)
            *next_retry = w->f[id].retry_at;
        id++;
    }
    return ready;
}

/* ---- polls ---- */

/* Without NOTIFY, nothing pushes folder creation or deletion on the server: compare its list
 * with ours. A folder that appeared or vanished calls for a full pass. */
static void poll_folder_set(watch *w)
{
    strlist names, refused;
    strlist_init(&names);
    strlist_init(&refused);
    ofs_error e = {0};
    if (w->c.srv->ops->list_folders(w->c.srv, &names, &refused, &e) < 0) {
        if (connection_code(e.code))
            main_lost(w, &e);
    } else {
        size_t known = 0;
        for (size_t i = 0; i < names.n; i++) {
            long at = -1;
            for (size_t j = 1; j < w->nf && at < 0; j++)
                if (!strcmp(w->f[j].name, names.v[i]))
                    at = (long)j;
            known += at >= 0;
        }
        size_t live = 0;
        for (size_t j = 1; j < w->nf; j++)
            live += !w->f[j].gone;
        if (known != names.n || known != live)
            watch_bump(w, WATCH_FOLDERSET, "poll");
    }
    strlist_free(&names);
    strlist_free(&refused);
}

/* Folders without push: with CONDSTORE one STATUS each says whether anything changed since
 * the last pass; without it, a flag change is only visible to a pass, so each one gets a pass. */
static void status_poll(watch *w)
{
    bool condstore = imap_has_cap(imap_store_client(w->c.srv), "CONDSTORE");
    ofs_error ne = {0};
    /* Also keeps the connection alive and finds it dead early; see refresh_status. */
    if (imap_noop(imap_store_client(w->c.srv), &ne) < 0) {
        main_lost(w, &ne);
        return;
    }
    if (!w->notify) {
        poll_folder_set(w);
        if (!w->c.srv)
            return;
    }
    /* The folders to ask about, all in one pipelined round trip. */
    uint32_t *ids = xmalloc(w->nf * sizeof *ids);
    const char **names = xmalloc(w->nf * sizeof *names);
    size_t n = 0;
    for (size_t i = 1; i < w->nf; i++) {
        wfolder *f = &w->f[i];
        if (f->gone || (f->push != PUSH_NONE && !w->local_poll))
            continue;
        if (!condstore || w->local_poll || !f->server)
            watch_bump(w, (uint32_t)i, "poll");
        else {
            ids[n] = (uint32_t)i;
            names[n++] = f->server;
        }
    }
    imap_mailbox_info *mi = xcalloc(n ? n : 1, sizeof *mi);
    bool *ok = xcalloc(n ? n : 1, sizeof *ok);
    ofs_error e = {0};
    if (n && imap_status_many(imap_store_client(w->c.srv), names, n, mi, ok, &e) < 0) {
        main_lost(w, &e);
        n = 0;
    }
    for (size_t k = 0; k < n; k++) {
        state_folder sf = {0};
        int got = state_folder_get(w->c.st, w->f[ids[k]].name, &sf, &e);
        if (!ok[k] || got != 0 || sf.uidvalidity != mi[k].uidvalidity ||
            sf.uidnext != mi[k].uidnext || sf.highestmodseq != mi[k].highestmodseq)
            watch_bump(w, ids[k], "poll");
        state_folder_free(&sf);
    }
    free(ids);
    free(names);
    free(mi);
    free(ok);
}

/* ---- the loop ---- */

static void emit_waiting(watch *w)
{
    char line[256];
    if (!w->c.srv)
        snprintf(line, sizeof line, "waiting to reconnect to %s", w->a->host);
    else
        push_describe(w, line, sizeof line);
    char *full =
        xasprintf("waiting for changes; %s; local: %s", line, w->local_poll ? "polled" : "inotify");
    if (w->waiting && !strcmp(w->waiting, full)) {
        free(full);
        return;
    }
    free(w->waiting);
    w->waiting = full;
    watch_emit(w, OFS_EV_WAITING, NULL, full, 0);
}

static int64_t next_deadline(watch *w, bool work, int64_t next_retry)
{
    int64_t t = push_next_deadline(w);
    if (w->poll_at < t)
        t = w->poll_at;
    if (!w->c.srv && w->main_retry_at < t)
        t = w->main_retry_at;
    if (next_retry < t)
        t = next_retry;
    if (work && w->first_change) {
        int64_t d = w->last_change + DEBOUNCE_MS, m = w->first_change + DEBOUNCE_MAX_MS;
        t = t < (d < m ? d : m) ? t : (d < m ? d : m);
    } else if (work) {
        t = watch_now();
    }
    return t;
}

static bool debounced(const watch *w, int64_t now)
{
    return !w->first_change || now >= w->last_change + DEBOUNCE_MS ||
           now >= w->first_change + DEBOUNCE_MAX_MS;
}

static void wait_once(watch *w, bool work, int64_t next_retry)
{
    struct pollfd p[MAX_POLLFDS];
    size_t n = 0;
    p[n++] = (struct pollfd){.fd = nq_fd(w->ctl), .events = POLLIN};
    if (w->fs)
        p[n++] = (struct pollfd){.fd = fswatch_fd(w->fs), .events = POLLIN};
    size_t push_at = n;
    bool ready = false;
    n += push_pollfds(w, p + n, MAX_POLLFDS - n, &ready);
    int64_t left = next_deadline(w, work, next_retry) - watch_now();
    if (ready || left < 0)
        left = 0;
    if (left > 24 * 3600 * 1000)
        left = 24 * 3600 * 1000;
    int r = poll(p, n, (int)left);
    if (r < 0 && errno != EINTR) {
        ofs_error e;
        err_errno(&e, OFS_E_IO, errno, "waiting for changes");
        w->fatal = true;
        w->fatal_err = e;
        return;
    }
    if (w->fs && r > 0 && (p[1].revents & POLLIN)) {
        ofs_error e = {0};
        if (fswatch_read(w->fs, on_fs, w, &e) < 0) {
            watch_emit(w, OFS_EV_ERROR, NULL, e.message, e.code);
            fswatch_close(w->fs);
            w->fs = NULL;
            w->local_poll = true;
        }
    }
    push_handle(w, p + push_at, n - push_at);
}

static void watch_loop(watch *w)
{
    watch_bump(w, WATCH_FOLDERSET, "start");
    while (!w->fatal && !stop_requested(w)) {
        if (!w->c.srv && main_open(w) < 0) {
            emit_waiting(w);
            wait_once(w, false, INT64_MAX);
            continue;
        }
        if (w->npc == 0)
            push_plan(w);
        int64_t next_retry;
        bool work = work_ready(w, &next_retry);
        if (work && debounced(w, watch_now())) {
            run_passes(w);
            continue;
        }
        if (watch_now() >= w->poll_at) {
            w->poll_at = watch_now() + (int64_t)w->a->poll_interval * 1000;
            status_poll(w);
            continue;
        }
        push_maintain(w);
        if (!work)
            emit_waiting(w);
        wait_once(w, work, next_retry);
    }
}

static void watch_free(watch *w)
{
    push_close_all(w);
    main_close(w);
    fswatch_close(w->fs);
    if (w->c.st)
        state_close(w->c.st);
    if (w->lock >= 0)
        close(w->lock);
    for (size_t i = 0; i < w->nf; i++) {
        free(w->f[i].name);
        free(w->f[i].server);
    }
    free(w->f);
    free(w->waiting);
    dirty_destroy(w->dirty);
}

static int64_t idle_renew_ms(void)
{
    /* For tests: renew every few seconds to exercise renewal and dead-connection checks. */
    const char *env = getenv("OFSYNC_IDLE_RENEW");
    long s = env ? strtol(env, NULL, 10) : 0;
    if (s <= 0 || s > IDLE_RENEW_DEFAULT_S)
        s = IDLE_RENEW_DEFAULT_S;
    return (int64_t)s * 1000;
}

int sync_watch(const cfg_account *a, nq *ctl, ofs_event_fn fn, void *ctx, ofs_error *err)
{
    watch w = {.a = a, .ctl = ctl, .lock = -1, .dirty = dirty_create()};
    w.c = (sync_ctx){
        .acct = a, .fn = fn, .fn_ctx = ctx, .stop = stop_between_folders, .stop_arg = &w};
    w.idle_renew_ms = idle_renew_ms();
    w.timeout_ms = (int64_t)(a->timeout > 0 ? a->timeout : 60) * 1000;
    w.nf = w.capf = 1; /* slot 0: the folder set */
    w.f = xcalloc(1, sizeof *w.f);
    w.poll_at = watch_now() + (int64_t)a->poll_interval * 1000;
    int rc = state_open(a->state, &w.c.st, err);
    if (rc == 0)
        rc = sync_lock_account(a, &w.lock, err);
    if (rc == 0)
        rc = sync_open_stores(&w.c, err); /* a bad password or host ends watch at once */
    if (rc == 0 && fswatch_open(a->local, a->layout, &w.fs, err) < 0) {
        watch_emit(&w, OFS_EV_ERROR, NULL, err->message, err->code);
        w.local_poll = true;
    }
    if (rc == 0) {
        watch_loop(&w);
        if (w.fatal) {
            *err = w.fatal_err;
            rc = -1;
        }
    }
    watch_free(&w);
    if (rc < 0)
        err_prefix(err, "%s", a->name);
    return rc;
}
