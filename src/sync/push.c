/* push.c: the server push connections of watch: one NOTIFY connection for every folder when
 * the server offers it, else IDLE on INBOX and watch-folders within the connection budget.
 * Each connection is a small state machine driven by the watch loop; every state has a deadline. */
#include <fnmatch.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "imap/idle.h"
#include "imap/imap_store.h"
#include "sync/watch_int.h"
#include "util/err.h"

/* Is folder name one of the account's watch-folders patterns (space separated, fnmatch)? */
static bool wanted_for_idle(const watch *w, const char *name)
{
    if (!strcmp(name, "INBOX"))
        return true;
    char *pats = xstrdup(w->a->watch_folders ? w->a->watch_folders : "");
    bool hit = false;
    for (char *save = NULL, *p = strtok_r(pats, " \t,", &save); p && !hit;
         p = strtok_r(NULL, " \t,", &save))
        hit = fnmatch(p, name, 0) == 0;
    free(pats);
    return hit;
}

static pushconn *add_conn(watch *w, int kind, uint32_t folder)
{
    w->pc = xrealloc(w->pc, (w->npc + 1) * sizeof *w->pc);
    pushconn *pc = &w->pc[w->npc++];
    memset(pc, 0, sizeof *pc);
    pc->kind = kind;
    pc->folder = folder;
    pc->deadline = 0; /* DOWN and due: connect at the next maintenance */
    return pc;
}

static bool server_has(const watch *w, const char *cap)
{
    return w->c.srv && imap_has_cap(imap_store_client(w->c.srv), cap);
}

void push_plan(watch *w)
{
    if (!w->c.srv)
        return;
    if (w->npc == 0 && server_has(w, "NOTIFY") && server_has(w, "CONDSTORE") &&
        server_has(w, "ENABLE") && server_has(w, "IDLE")) {
        w->notify = true;
        add_conn(w, PUSH_NOTIFY, 0);
    }
    for (size_t i = 1; i < w->nf; i++)
        w->f[i].push = w->notify ? PUSH_NOTIFY : PUSH_NONE;
    if (w->notify || !server_has(w, "IDLE"))
        return;
    /* The main connection is one of the budget; at least one IDLE connection (INBOX). */
    size_t budget = w->a->connections > 1 ? (size_t)w->a->connections - 1 : 1;
    for (size_t i = 0; i < w->npc; i++)
        w->f[w->pc[i].folder].push = PUSH_IDLE;
    for (size_t i = 1; i < w->nf && w->npc < budget; i++) {
        if (w->f[i].push == PUSH_NONE && wanted_for_idle(w, w->f[i].name)) {
            add_conn(w, PUSH_IDLE, (uint32_t)i);
            w->f[i].push = PUSH_IDLE;
        }
    }
}

/* Dead peers are found by the kernel between renewals too (a stall is found at renewal). */
static void set_keepalive(int fd)
{
    int on = 1, idle = 60, intvl = 15, cnt = 4;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
}

/* Ends IDLE politely (DONE, its answer within a second), so that the store's LOGOUT is
 * answered at once; a connection that does not answer is cut instead of waited for. */
static void conn_quit_idle(pushconn *pc)
{
    ofs_error e = {0};
    bool ended = false;
    if (pc->state != PC_ENDING && imap_idle_done(pc->c, &e) < 0)
        return;
    int64_t end = watch_now() + 1000;
    for (int64_t left = 1000; !ended && left > 0; left = end - watch_now()) {
        int ev = imap_idle_read(pc->c, (int)left, NULL, NULL, &e);
        if (ev < 0)
            break;
        ended = ev == IMAP_IDLE_ENDED;
    }
    if (!ended)
        shutdown(imap_client_fd(pc->c), SHUT_RDWR);
}

/* polite: the connection works and is being retired (stop); otherwise it failed: cut it. */
static void conn_close_ex(pushconn *pc, bool polite)
{
    if (pc->c && pc->state != PC_DOWN) {
        if (polite)
            conn_quit_idle(pc);
        else
            shutdown(imap_client_fd(pc->c), SHUT_RDWR);
    }
    if (pc->st)
        pc->st->ops->close(pc->st);
    pc->st = NULL;
    pc->c = NULL;
    pc->state = PC_DOWN;
    pc->renewing = false;
}

static void conn_close(pushconn *pc)
{
    conn_close_ex(pc, false);
}

static const char *conn_what(const watch *w, const pushconn *pc)
{
    return pc->kind == PUSH_NOTIFY ? "NOTIFY" : w->f[pc->folder].name;
}

static void conn_failed(watch *w, pushconn *pc, const ofs_error *e)
{
    conn_close(pc);
    pc->fails++;
    pc->deadline = watch_now() + watch_backoff(w, pc->fails);
    /* A refused login is never retried (it could lock the account), nor a final error (a
     * certificate that does not verify): the next try would meet the same refusal. */
    if (e->code == OFS_E_AUTH || e->final)
        pc->deadline = INT64_MAX;
    char *line =
        xasprintf("push connection (%s) lost, replacing it: %s", conn_what(w, pc), e->message);
    watch_emit(w, OFS_EV_ERROR, pc->kind == PUSH_IDLE ? w->f[pc->folder].name : NULL, line,
               e->code);
    free(line);
}

/* Opens, logs in, prepares (NOTIFY SET or EXAMINE) and sends IDLE. */
static int conn_open(watch *w, pushconn *pc, ofs_error *err)
{
    sync_ctx tmp = {.acct = w->a};
    int rc = sync_open_stores(&tmp, err);
    if (tmp.loc)
        tmp.loc->ops->close(tmp.loc);
    if (rc < 0) {
        if (tmp.srv)
            tmp.srv->ops->close(tmp.srv);
        return -1;
    }
    pc->st = tmp.srv;
    pc->c = imap_store_client(pc->st);
    /* The store reports activity to tmp, which ends here; push has no progress to show. */
    imap_set_activity(pc->c, NULL, NULL);
    set_keepalive(imap_client_fd(pc->c));
    if (pc->kind == PUSH_NOTIFY) {
        /* The store ENABLEd CONDSTORE (or QRESYNC) at login: FlagChange events then come as
         * STATUS with HIGHESTMODSEQ for every folder (RFC 5465 5.2). */
        rc = imap_notify_set(pc->c, err);
    } else {
        char *server = NULL;
        rc = imap_store_server_name(pc->st, w->f[pc->folder].name, &server, err);
        /* EXAMINE: watching must not change \Recent or anything else. */
        if (rc == 0)
            rc = imap_select(pc->c, server, true, NULL, err);
        free(server);
    }
    if (rc == 0)
        rc = imap_idle_start(pc->c, err);
    if (rc < 0) {
        conn_close(pc);
        return -1;
    }
    pc->state = PC_STARTING;
    pc->deadline = watch_now() + w->timeout_ms;
    return 0;
}

/* A change a connection saw: an IDLE folder's untagged data, or NOTIFY's STATUS and LIST. */
static int on_push_data(imap_client *c, const imap_response *r, void *ctx, ofs_error *err)
{
    pushconn *pc = ((void **)ctx)[1];
    watch *w = ((void **)ctx)[0];
    if (r->status != IMAP_S_NONE)
        return 0;
    if (pc->kind == PUSH_IDLE) {
        if (!strcmp(r->name, "EXISTS") || !strcmp(r->name, "EXPUNGE") ||
            !strcmp(r->name, "FETCH") || !strcmp(r->name, "VANISHED"))
            watch_bump(w, pc->folder, "server");
        return 0;
    }
    const char *mbox;
    imap_status_info si;
    if (imap_status_parse(r, &mbox, &si)) {
        uint32_t id = WATCH_FOLDERSET;
        for (size_t i = 1; i < w->nf; i++)
            if (w->f[i].server && !strcmp(w->f[i].server, mbox))
                id = (uint32_t)i;
        watch_bump(w, id, "server");
    } else if (!strcmp(r->name, "LIST")) {
        watch_bump(w, WATCH_FOLDERSET, "server");
    }
    return 0;
}

/* The connection reached IDLE: changes from now on are pushed. Whatever happened while it was
 * down is caught up by one pass, unless the first full pass is still to come anyway. */
static void conn_up(watch *w, pushconn *pc)
{
    pc->state = PC_IDLING;
    pc->deadline = watch_now() + w->idle_renew_ms;
    bool catch_up = !pc->renewing && (w->full_passes > 0 || pc->fails > 0);
    pc->renewing = false;
    pc->fails = 0;
    if (!catch_up)
        return;
    if (pc->kind == PUSH_IDLE) {
        watch_bump(w, pc->folder, "server");
        return;
    }
    watch_bump(w, WATCH_FOLDERSET, "server");
}

static int conn_pump(watch *w, pushconn *pc, ofs_error *err)
{
    void *ctx[2] = {w, pc};
    for (;;) {
        int ev = imap_idle_read(pc->c, 0, on_push_data, ctx, err);
        if (ev < 0)
            return -1;
        if (ev == IMAP_IDLE_QUIET)
            return 0;
        if (ev == IMAP_IDLE_ACCEPTED && pc->state == PC_STARTING) {
            conn_up(w, pc);
        } else if (ev == IMAP_IDLE_ENDED && pc->state == PC_ENDING) {
            /* Renewal: the server answered DONE, so it is alive; idle again at once. */
            if (imap_idle_start(pc->c, err) < 0)
                return -1;
            pc->state = PC_STARTING;
            pc->renewing = true;
            pc->deadline = watch_now() + w->timeout_ms;
        } else {
            return err_set(err, OFS_E_PROTO, "server %s answered IDLE out of turn",
                           imap_host(pc->c));
        }
    }
}

static void conn_tick(watch *w, pushconn *pc, int64_t now)
{
    ofs_error e = {0};
    if (pc->state == PC_DOWN) {
        if (now >= pc->deadline && conn_open(w, pc, &e) < 0) {
            if (e.code == OFS_E_SERVER && pc->kind == PUSH_IDLE) {
                /* The folder is not on the server (yet): the next full pass decides. */
                pc->fails++;
                pc->deadline = now + watch_backoff(w, pc->fails);
                return;
            }
            conn_failed(w, pc, &e);
        }
        return;
    }
    if (now < pc->deadline)
        return;
    if (pc->state == PC_IDLING) {
        if (imap_idle_done(pc->c, &e) < 0) {
            conn_failed(w, pc, &e);
            return;
        }
        pc->state = PC_ENDING;
        pc->deadline = now + w->timeout_ms;
        return;
    }
    err_set(&e, OFS_E_NET, "no answer to %s from %s within %lld s",
            pc->state == PC_ENDING ? "DONE" : "IDLE", imap_host(pc->c),
            (long long)(w->timeout_ms / 1000));
    conn_failed(w, pc, &e);
}

void push_maintain(watch *w)
{
    for (size_t i = 0; i < w->npc; i++)
        conn_tick(w, &w->pc[i], watch_now());
}

int64_t push_next_deadline(const watch *w)
{
    int64_t next = INT64_MAX;
    for (size_t i = 0; i < w->npc; i++)
        if (w->pc[i].deadline < next)
            next = w->pc[i].deadline;
    return next;
}

size_t push_pollfds(watch *w, struct pollfd *p, size_t max, bool *ready)
{
    size_t n = 0;
    for (size_t i = 0; i < w->npc && n < max; i++) {
        if (!w->pc[i].c)
            continue;
        if (imap_client_buffered(w->pc[i].c))
            *ready = true;
        p[n++] = (struct pollfd){.fd = imap_client_fd(w->pc[i].c), .events = POLLIN};
    }
    return n;
}

void push_handle(watch *w, const struct pollfd *p, size_t n)
{
    (void)p;
    (void)n;
    /* Pump every live connection: a readable socket or bytes already buffered both count, and
     * a pump that finds nothing returns at once. */
    for (size_t i = 0; i < w->npc; i++) {
        pushconn *pc = &w->pc[i];
        ofs_error e = {0};
        if (pc->c && conn_pump(w, pc, &e) < 0)
            conn_failed(w, pc, &e);
    }
}

void push_close_all(watch *w)
{
    for (size_t i = 0; i < w->npc; i++)
        conn_close_ex(&w->pc[i], true);
    free(w->pc);
    w->pc = NULL;
    w->npc = 0;
}

const char *push_describe(const watch *w, char *out, size_t len)
{
    size_t idle = 0, up = 0, polled = 0;
    for (size_t i = 0; i < w->npc; i++)
        up += w->pc[i].state == PC_IDLING || w->pc[i].state == PC_ENDING || w->pc[i].renewing;
    for (size_t i = 1; i < w->nf; i++) {
        idle += w->f[i].push == PUSH_IDLE;
        polled += w->f[i].push == PUSH_NONE;
    }
    if (w->notify)
        snprintf(out, len, "server push: NOTIFY for all %zu folders (%s)", w->nf - 1,
                 up ? "up" : "connecting");
    else
        snprintf(out, len,
                 "server push: IDLE on %zu folders (%zu of %zu connections up), "
                 "%zu polled every %d s",
                 idle, up, w->npc, polled, w->a->poll_interval);
    return out;
}
