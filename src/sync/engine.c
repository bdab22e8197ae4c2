/* engine.c: one folder's run: open and list, plan, carry out the steps in order, record, summarize.
 * Order of every step: intent in the state, store change made durable, then the state commit. */
#include "sync/engine.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sync/engine_int.h"
#include "sync/message.h"
#include "sync/partial.h"
#include "sync/plan.h"
#include "util/err.h"
#include "util/uidset.h"

void engine_emit(folder_run *r, enum ofs_event_type type, const char *text)
{
    sync_ctx *c = r->c;
    if (!c->fn)
        return;
    ofs_event ev = {.type = type, .account = c->acct->name, .text = text, .stats = &r->st};
    sync_fill_progress(c, &ev);
    ev.folder = r->name;
    c->fn(&ev, c->fn_ctx);
}

void sync_fill_progress(const sync_ctx *c, ofs_event *ev)
{
    const folder_run *r = c->run;
    if (!r)
        return;
    ev->folder = r->name;
    ev->done = r->done;
    ev->total = r->total;
    ev->bytes_done = r->bytes_done;
    ev->bytes_total = r->bytes_total;
}

void engine_notice(folder_run *r, const char *text)
{
    engine_emit(r, OFS_EV_NOTICE, text);
}

/* An unnamed file on the local file system to stage one message's bytes. */
int engine_temp_open(folder_run *r, ofs_error *err)
{
    const char *dir = r->c->acct->local;
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0)
        return fd;
    char *path = xasprintf("%s/.ofsync-stage-XXXXXX", dir);
    fd = mkostemp(path, O_CLOEXEC);
    if (fd >= 0)
        unlink(path);
    else
        err_errno(err, OFS_E_IO, errno, "cannot create a staging file in %s", dir);
    free(path);
    return fd;
}

/* A pair whose step is done and durable in the store: saying so can wait for the next
 * transaction, which has to be durable anyway, instead of costing an fsync of its own. A crash
 * before it leaves the pair's intent, which pending_resolve settles the same way. */
void engine_defer_settle(folder_run *r, const state_pair *p)
{
    state_pair_list *l = &r->deferred;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->v = xrealloc(l->v, l->cap * sizeof *l->v);
    }
    state_pair *d = &l->v[l->n++];
    *d = *p;
    d->key = p->key ? xstrdup(p->key) : NULL;
    d->msgid = p->msgid ? xstrdup(p->msgid) : NULL;
    d->hash = p->hash ? xstrdup(p->hash) : NULL;
}

/* What earlier steps left for the next transaction: the cleared mark, deferred settles. */
static int write_deferred(folder_run *r, ofs_error *err)
{
    if (r->forget_mark && state_mark_clear(r->c->st, r->sf.id, err) < 0)
        return -1;
    for (size_t i = 0; i < r->deferred.n; i++)
        if (state_pair_update(r->c->st, &r->deferred.v[i], err) < 0)
            return -1;
    return 0;
}

int engine_in_txn(folder_run *r, int (*fn)(folder_run *, void *, ofs_error *), void *arg,
                  ofs_error *err)
{
    state *st = r->c->st;
    if (state_begin(st, err) < 0)
        return -1;
    if (write_deferred(r, err) < 0 || fn(r, arg, err) < 0) {
        state_rollback(st);
        return -1;
    }
    if (state_commit(st, err) < 0)
        return -1;
    r->forget_mark = false;
    state_pair_list_free(&r->deferred);
    return 0;
}

/* A transaction whose loss in a power cut does no harm (see state_set_durable): committed
 * without an fsync of its own; the next durable commit carries it to the disk. */
int engine_in_lazy_txn(folder_run *r, int (*fn)(folder_run *, void *, ofs_error *), void *arg,
                       ofs_error *err)
{
    if (state_set_durable(r->c->st, false, err) < 0)
        return -1;
    int rc = engine_in_txn(r, fn, arg, err);
    ofs_error e2;
    if (state_set_durable(r->c->st, true, rc < 0 ? &e2 : err) < 0)
        rc = -1;
    return rc;
}

/* ---- content hashes ---- */

/* Hashes messages of one store as IMAP sends them (the Maildir side converts to CRLF on the
 * way out), through a staging file. hashes[i] and sizes[i] belong to msgs[i]; a message that
 * vanished meanwhile keeps NULL. */
typedef struct hash_sink {
    folder_run *r;
    const store_msg *msgs;
    size_t n, at;
    char **hashes;
    uint64_t *sizes;
    int fd;
} hash_sink;

static int hash_open(void *ctx, const store_msg *m, uint64_t size, ofs_error *err)
{
    (void)m;
    (void)size;
    hash_sink *h = ctx;
    if (h->fd >= 0)
        close(h->fd);
    h->fd = engine_temp_open(h->r, err);
    return h->fd;
}

static bool same_msg(const store_msg *a, const store_msg *b)
{
    return a->key ? (b->key && strcmp(a->key, b->key) == 0) : a->uid == b->uid;
}

static int hash_done(void *ctx, const store_msg *m, int fd, uint64_t size, ofs_error *err)
{
    (void)err;
    hash_sink *h = ctx;
    while (h->at < h->n && !same_msg(&h->msgs[h->at], m))
        h->at++;
    if (h->at < h->n) {
        h->hashes[h->at] = msg_hash_fd(fd);
        if (h->sizes)
            h->sizes[h->at] = size;
        h->at++;
    }
    close(h->fd);
    h->fd = -1;
    return 0;
}

int engine_hash_messages(folder_run *r, store *s, const store_msg *msgs, size_t n, char **hashes,
                         uint64_t *sizes, ofs_error *err)
{
    hash_sink h = {.r = r, .msgs = msgs, .n = n, .hashes = hashes, .sizes = sizes, .fd = -1};
    store_sink sink = {hash_open, hash_done, &h};
    int rc = n ? s->ops->fetch_messages(s, msgs, n, &sink, err) : 0;
    if (h.fd >= 0)
        close(h.fd);
    return rc;
}

/* ---- shared by the engine files ---- */

int engine_cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* By the key a key_idx starts with. */
static int cmp_keyp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int engine_each_intent(folder_run *r, const char *op, engine_intent_fn fn, void *arg,
                       ofs_error *err)
{
    state_intent_list l;
    if (state_intents_load(r->c->st, &l, err) < 0)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < l.n && rc == 0; i++)
        if (strcmp(l.v[i].op, op) == 0 && strcmp(l.v[i].folder, r->name) == 0)
            rc = fn(r, &l.v[i], arg, err);
    state_intent_list_free(&l);
    return rc;
}

int engine_reload_pairs(folder_run *r, ofs_error *err)
{
    state_pair_list_free(&r->pairs);
    r->pairs_whole = true;
    return state_pairs_load_lean(r->c->st, r->sf.id, &r->pairs, err);
}

int engine_each_pair_window(folder_run *r, state_window_fn fn, void *arg, ofs_error *err)
{
    if (r->pairs_whole)
        return fn(&r->pairs, arg, err);
    return r->sf.id ? state_pairs_walk(r->c->st, r->sf.id, PAIR_WINDOW, fn, arg, err) : 0;
}

void engine_sort_keys(key_idx *v, size_t n)
{
    if (n > 1)
        qsort(v, n, sizeof *v, cmp_keyp);
}

key_idx *engine_index_keys(const store_msg_list *l)
{
    key_idx *v = xmalloc((l->n ? l->n : 1) * sizeof *v);
    for (size_t i = 0; i < l->n; i++)
        v[i] = (key_idx){l->v[i].key, (long)i};
    engine_sort_keys(v, l->n);
    return v;
}

const key_idx *engine_find_key(const key_idx *v, size_t n, const char *key)
{
    return key ? bsearch(&key, v, n, sizeof *v, cmp_keyp) : NULL;
}

/* ---- one folder ---- */

static int load_folder_row(folder_run *r, ofs_error *err)
{
    int rc = state_folder_get(r->c->st, r->name, &r->sf, err);
    if (rc == 1 && r->c->dry_run) {
        r->sf.name = xstrdup(r->name); /* a new folder: no pairs, and nothing recorded */
        return 0;
    }
    if (rc == 1)
        rc = state_folder_add(r->c->st, r->name, &r->sf, err);
    if (rc == 0)
        rc = state_mark_get(r->c->st, r->sf.id, &r->mark, err);
    if (rc < 0 || state_held_load(r->c->st, r->sf.id, &r->held_base, err) < 0)
        return -1;
    r->has_mark = rc == 0;
    return 0;
}

static bool local_unchanged(const folder_run *r)
{
    return r->has_mark && r->local_mark && r->mark.local_mark &&
           strcmp(r->local_mark, r->mark.local_mark) == 0;
}

/* The pairs stand for the local folder's files, as the base does for the server's: a folder
 * whose directories did not change since the last complete pass holds the files its pairs
 * name, none replaced, and is not read at all; a changed one is compared with its pairs file
 * by file, and only what differs is listed. Intents left by an interrupted pass are resolved
 * against a whole listing. */
/* The whole local folder into r->loc, in place of what it held. */
static int list_local_whole(folder_run *r, bool want_stamp, ofs_error *err)
{
    store *loc = r->c->loc;
    store_list_opts lo = {.want_stamp = want_stamp};
    store_msg_list_free(&r->loc);
    store_msg_list_init(&r->loc);
    r->loc_base = false;
    if (loc->ops->list_messages(loc, &lo, &r->loc, err) < 0)
        return -1;
    r->st.local_listed += r->loc.n;
    return 0;
}

static int list_local(folder_run *r, bool pending, ofs_error *err)
{
    store *loc = r->c->loc;
    bool same_dirs = local_unchanged(r);
    if (!pending && loc->ops->open_folder_unread) {
        if (loc->ops->open_folder_unread(loc, r->name, err) < 0)
            return -1;
        int rc = 0;
        if (same_dirs)
            r->st.folders_local_unread++;
        else if (loc->ops->each_message)
            rc = localview_build(r, err);
        else
            rc = 1;
        r->loc_base = rc == 0;
        r->st.local_listed += r->loc.n;
        if (rc <= 0)
            return rc;
    } else if (loc->ops->open_folder(loc, r->name, NULL, err) < 0) {
        return -1;
    }
    /* A stat per file shows edits in place; unchanged directories had no file replaced. */
    return list_local_whole(r, !same_dirs, err);
}

int engine_list_unpaired(folder_run *r, ofs_error *err)
{
    return r->loc_base && !r->lview ? list_local_whole(r, false, err) : 0;
}

store_msg engine_loc_msg(folder_run *r, const sync_action *a)
{
    if (a->loc >= 0)
        return r->loc.v[a->loc];
    const state_pair *p = &r->pairs.v[a->pair];
    return (store_msg){.key = p->key, .flags = p->flags, .size = p->size};
}

/* The listing stops leaning on the base: it is, or is about to be, the whole folder. */
static void srv_drop_base(folder_run *r)
{
    r->srv_view.below = 0;
    uidset_free(&r->srv_gone);
    uidset_init(&r->srv_gone);
}

int engine_list_server_full(folder_run *r, ofs_error *err)
{
    store_list_opts so = {.want_size = true};
    store_msg_list_free(&r->srv);
    srv_drop_base(r);
    return r->c->srv->ops->list_messages(r->c->srv, &so, &r->srv, err);
}

static int cmp_msg_uid(const void *a, const void *b)
{
    uint32_t x = ((const store_msg *)a)->uid, y = ((const store_msg *)b)->uid;
    return (x > y) - (x < y);
}

/* Room for `more` entries in the server listing, exactly. */
static void srv_reserve(folder_run *r, size_t more)
{
    if (r->srv.cap - r->srv.n >= more)
        return;
    r->srv.cap = r->srv.n + more;
    r->srv.v = xrealloc(r->srv.v, (r->srv.cap ? r->srv.cap : 1) * sizeof *r->srv.v);
}

static store_msg *srv_find(const folder_run *r, uint32_t uid)
{
    store_msg key = {.uid = uid};
    return r->srv.n ? bsearch(&key, r->srv.v, r->srv.n, sizeof key, cmp_msg_uid) : NULL;
}

static void srv_sort(folder_run *r)
{
    if (r->srv.n > 1)
        qsort(r->srv.v, r->srv.n, sizeof *r->srv.v, cmp_msg_uid);
}

bool engine_srv_in_base(folder_run *r, uint32_t uid)
{
    return srv_view_covers(&r->srv_view, uid) && !srv_find(r, uid);
}

store_msg engine_srv_msg(folder_run *r, const sync_action *a)
{
    if (a->srv >= 0)
        return r->srv.v[a->srv];
    const state_pair *p = &r->pairs.v[a->pair];
    return (store_msg){.uid = a->uid, .flags = p->flags, .size = p->size};
}

/* Counts the pairs the base stands for and marks the held-back messages paired since; pairs
 * and held-back messages both come in UID order. The listing holds the changed ones only. */
typedef struct base_count {
    folder_run *r;
    size_t held_at, base;
    char *held_paired;
} base_count;

static int count_window(const state_pair_list *w, void *arg, ofs_error *err)
{
    (void)err;
    base_count *b = arg;
    const state_held_list *h = &b->r->held_base;
    for (size_t i = 0; i < w->n; i++) {
        uint32_t uid = w->v[i].uid;
        while (b->held_at < h->n && h->v[b->held_at].uid < uid)
            b->held_at++;
        if (b->held_at < h->n && h->v[b->held_at].uid == uid)
            b->held_paired[b->held_at] = 1;
        b->base += engine_srv_in_base(b->r, uid);
    }
    return 0;
}

/* Held-back messages keep their sizes, so they stay held back; one paired since is what its
 * pair says. */
static void list_held(folder_run *r, const char *paired)
{
    const state_held_list *h = &r->held_base;
    size_t n_changed = r->srv.n;
    for (size_t j = 0; j < h->n; j++) {
        if (paired[j] || !srv_view_covers(&r->srv_view, h->v[j].uid))
            continue;
        store_msg key = {.uid = h->v[j].uid};
        store_msg *m =
            n_changed ? bsearch(&key, r->srv.v, n_changed, sizeof key, cmp_msg_uid) : NULL;
        if (!m) /* unchanged: flags do not matter to the plan, the size does */
            m = store_msg_list_push(&r->srv);
        m->uid = h->v[j].uid;
        m->size = h->v[j].size;
    }
    srv_sort(r);
}

/* The server side from the base: the server said what changed since the last complete pass
 * (changed, vanished, taken over), so every other settled pair below `below` still has its
 * base flags there and needs no entry (srv_view). Listed are the changed messages and those
 * held back, sorted by UID; UIDs from `below` on the caller adds as the server lists them.
 * *base: how many messages the base stands for, for the caller to check that the whole adds
 * up to the server's message count before trusting it. */
static int srv_from_base(folder_run *r, uint32_t below, store_msg_list *changed, uidset *vanished,
                         size_t *base, ofs_error *err)
{
    store_msg_list_free(&r->srv);
    srv_drop_base(r);
    if (vanished) {
        r->srv_gone = *vanished;
        uidset_init(vanished);
    }
    r->srv_view = (srv_view){.listed = &r->srv, .below = below, .gone = &r->srv_gone};
    srv_reserve(r, changed->n + r->held_base.n);
    for (size_t i = 0; i < changed->n; i++)
        if (srv_view_covers(&r->srv_view, changed->v[i].uid))
            *store_msg_list_push(&r->srv) =
                (store_msg){.uid = changed->v[i].uid, .flags = changed->v[i].flags};
    srv_sort(r);
    base_count b = {.r = r, .held_paired = xcalloc(r->held_base.n + 1, 1)};
    int rc = engine_each_pair_window(r, count_window, &b, err);
    if (rc == 0)
        list_held(r, b.held_paired);
    free(b.held_paired);
    *base = b.base;
    return rc;
}

/* Opens the server folder and lists it in one burst; with QRESYNC and a complete earlier pass,
 * only what changed and the mail that is new. expect_new: what the folder's status announced. */
static int open_server(folder_run *r, bool pending, uint32_t expect_new, ofs_error *err)
{
    store *srv = r->c->srv;
    if (!srv->ops->open_folder_changes) {
        if (srv->ops->open_folder(srv, r->name, &r->si, err) < 0)
            return -1;
        r->srv_open = true;
        return pending_check_uidvalidity(r, err) < 0 ? -1 : engine_list_server_full(r, err);
    }
    bool incremental = !pending && r->has_mark;
    uint32_t below = r->sf.uidnext ? r->sf.uidnext : 1;
    store_changes ch = {.uidvalidity = incremental ? r->sf.uidvalidity : 0,
                        .modseq = incremental ? r->sf.highestmodseq : 0,
                        .list_from = below,
                        .expect_new = expect_new};
    store_msg_list_init(&ch.changed);
    store_msg_list_init(&ch.listed);
    uidset_init(&ch.vanished);
    int rc = srv->ops->open_folder_changes(srv, r->name, &ch, &r->si, err);
    if (rc >= 0)
        r->srv_open = true;
    size_t base = 0;
    if (rc == 0 && srv_from_base(r, below, &ch.changed, &ch.vanished, &base, err) < 0)
        rc = -1;
    if (rc == 0) {
        srv_reserve(r, ch.listed.n);
        for (size_t i = 0; i < ch.listed.n; i++) {
            *store_msg_list_push(&r->srv) = ch.listed.v[i]; /* moved: the listing gives it up */
            ch.listed.v[i] = (store_msg){0};
        }
        srv_sort(r);
        if (r->srv.n + base != r->si.exists)
            rc = 1; /* does not add up (e.g. mail arrived meanwhile): list in full */
        else
            store_msg_list_free(&ch.listed);
    } else if (rc == 1) {
        store_msg_list_free(&r->srv);
        srv_drop_base(r);
        r->srv = ch.listed; /* the whole folder */
        store_msg_list_init(&ch.listed);
        rc = 2;
    }
    store_msg_list_free(&ch.changed);
    store_msg_list_free(&ch.listed);
    uidset_free(&ch.vanished);
    if (rc < 0 || pending_check_uidvalidity(r, err) < 0)
        return -1;
    return rc == 1 ? engine_list_server_full(r, err) : 0;
}

/* Selects the server folder when the plan needs it and the pass had no reason to before. */
int engine_need_server(folder_run *r, ofs_error *err)
{
    if (r->srv_open)
        return 0;
    store_folder_info now;
    if (r->c->srv->ops->open_folder(r->c->srv, r->name, &now, err) < 0)
        return -1;
    r->srv_open = true;
    if (now.uidvalidity != r->si.uidvalidity)
        return err_set(err, OFS_E_SERVER,
                       "folder was recreated on the server during the pass (UIDVALIDITY %u, "
                       "then %u); it is synced on the next pass",
                       r->si.uidvalidity, now.uidvalidity);
    return 0; /* r->si stays the status the plan was made from: that is what gets recorded */
}

enum { SKIP_NONE, SKIP_SERVER, SKIP_ALL };

int sync_known_status(const sync_ctx *c, const char *name, store_folder_info *status)
{
    if (c->known_status) { /* a parallel pass's worker: its connection did not ask */
        *status = *c->known_status;
        return 0;
    }
    store *srv = c->srv;
    return srv->ops->folder_status ? srv->ops->folder_status(srv, name, status) : 1;
}

/* A message held back before that max-size (raised or removed since) no longer holds back:
 * neither store changed, yet the folder has something to do. */
static bool held_released(const folder_run *r)
{
    uint64_t max = r->c->acct->max_size;
    for (size_t i = 0; i < r->held_base.n; i++)
        if (!max || r->held_base.v[i].size <= max)
            return true;
    return false;
}

/* Whether the last complete pass's record proves a side unchanged. Only a status with a
 * modseq proves anything on the server: without CONDSTORE every folder is read. */
static int what_to_skip(folder_run *r, store_folder_info *status)
{
    store *loc = r->c->loc;
    if (!r->has_mark || held_released(r) || sync_known_status(r->c, r->name, status) != 0)
        return SKIP_NONE;
    const state_folder *f = &r->sf;
    if (!f->highestmodseq || f->uidvalidity != status->uidvalidity ||
        f->uidnext != status->uidnext || f->highestmodseq != status->highestmodseq ||
        r->mark.messages != status->exists)
        return SKIP_NONE;
    if (loc->ops->folder_mark)
        r->local_mark = loc->ops->folder_mark(loc, r->name);
    if (r->local_mark && r->mark.local_mark && strcmp(r->local_mark, r->mark.local_mark) == 0)
        return SKIP_ALL;
    return SKIP_SERVER;
}

static bool any_pending(const folder_run *r)
{
    for (size_t i = 0; i < r->pairs.n; i++)
        if (r->pairs.v[i].pending != PENDING_NONE)
            return true;
    return false;
}

/* Returns 1 when the folder is known to be in sync and was not opened at all. */
static int open_and_list(folder_run *r, ofs_error *err)
{
    store_folder_info status = {0};
    int skip = what_to_skip(r, &status);
    if (skip == SKIP_ALL)
        return 1;
    if (skip == SKIP_SERVER && !r->mark.local_mark) {
        int proven = verify_local(r, err);
        if (proven != 0)
            return proven;
    }
    if (!r->local_mark && r->c->loc->ops->folder_mark)
        r->local_mark = r->c->loc->ops->folder_mark(r->c->loc, r->name);
    /* An interrupted pass's intents are resolved with the folder's pairs at hand; otherwise
     * they are read window by window where needed, never all at once. */
    bool pending;
    if (state_pairs_any_pending(r->c->st, r->sf.id, &pending, err) < 0 ||
        (pending && engine_reload_pairs(r, err) < 0))
        return -1;
    if (skip == SKIP_SERVER && !pending) {
        r->si = status;
        size_t base;
        if (srv_from_base(r, status.uidnext, &(store_msg_list){0}, NULL, &base, err) < 0)
            return -1;
        if (r->srv.n + base != status.exists)
            skip = SKIP_NONE;
    }
    uint32_t expect_new = skip == SKIP_NONE && r->has_mark && status.uidnext > r->sf.uidnext
                              ? status.uidnext - r->sf.uidnext
                              : 0;
    if ((skip != SKIP_SERVER || pending) && open_server(r, pending, expect_new, err) < 0)
        return -1;
    if (r->srv_open && flagops_restore_deleted(r, err) < 0)
        return -1;
    if (list_local(r, pending || r->old_uidvalidity || any_pending(r), err) < 0)
        return -1;
    if (!any_pending(r))
        return 0;
    if (r->c->dry_run) {
        engine_notice(r, "dry run: interrupted operations would be resumed first (the plan below "
                         "assumes they did not happen)");
        return 0;
    }
    /* Left by a killed pass, or a new UIDVALIDITY turned every pair into an intent just now. */
    return pending_resolve(r, err) < 0 ? -1 : 0;
}

/* Messages over max-size stay on the server: never downloaded, never paired, so they are
 * neither new again next pass in any way that changes something, nor ever a deletion. The
 * folder's record lists them (held_now) for `ofsync status` and for srv_from_base. */
static void hold_back(folder_run *r, sync_plan *plan)
{
    uint64_t max = r->c->acct->max_size;
    if (!max)
        return;
    for (size_t i = 0; i < plan->n; i++) {
        sync_action *a = &plan->v[i];
        if (a->kind != ACT_DOWNLOAD || r->srv.v[a->srv].size <= max)
            continue;
        a->kind = ACT_NONE;
        plan->count[ACT_DOWNLOAD]--;
        r->st.held_back++;
        r->st.held_back_bytes += r->srv.v[a->srv].size;
        *state_held_list_push(&r->held_now) =
            (state_held){.uid = r->srv.v[a->srv].uid, .size = r->srv.v[a->srv].size};
        if (r->held_shown < 5)
            buf_printf(&r->held, "%sUID %u %.1f KiB", r->held_shown ? ", " : "",
                       r->srv.v[a->srv].uid, (double)r->srv.v[a->srv].size / 1024.0);
        r->held_shown++;
    }
}

static void summarize(folder_run *r)
{
    const ofs_sync_stats *s = &r->st;
    buf line;
    buf_init(&line);
    if (s->held_back)
        buf_printf(&line, "; %llu held back on the server, larger than max-size (%s%s)",
                   (unsigned long long)s->held_back, r->held.data, s->held_back > 5 ? ", ..." : "");
    if (!s->downloaded && !s->uploaded && !s->flags_to_local && !s->flags_to_server &&
        !s->expunged_local && !s->expunged_server && !r->old_uidvalidity && !r->deduped &&
        !r->edited && !r->edited_gone) {
        char *text = xasprintf("in sync%s", line.len ? line.data : "");
        engine_emit(r, OFS_EV_FOLDER_DONE, text);
        free(text);
        buf_free(&line);
        return;
    }
    buf held = line;
    buf_init(&line);
    if (r->old_uidvalidity)
        buf_printf(&line,
                   "UIDVALIDITY changed from %u to %u (folder recreated on the server?): "
                   "%zu messages re-paired by content",
                   r->old_uidvalidity, r->si.uidvalidity, r->repaired);
    if (r->deduped)
        buf_printf(&line, "%s%zu new on both sides paired as identical", line.len ? ", " : "",
                   r->deduped);
    if (s->downloaded)
        buf_printf(&line, "%s%llu downloaded", line.len ? ", " : "",
                   (unsigned long long)s->downloaded);
    if (s->uploaded)
        buf_printf(&line, "%s%llu uploaded", line.len ? ", " : "", (unsigned long long)s->uploaded);
    if (s->flags_to_local)
        buf_printf(&line, "%sflags of %llu changed locally", line.len ? ", " : "",
                   (unsigned long long)s->flags_to_local);
    if (s->flags_to_server)
        buf_printf(&line, "%sflags of %llu changed on the server", line.len ? ", " : "",
                   (unsigned long long)s->flags_to_server);
    if (s->expunged_local)
        buf_printf(&line, "%s%llu removed locally", line.len ? ", " : "",
                   (unsigned long long)s->expunged_local);
    if (s->expunged_server)
        buf_printf(&line, "%s%llu removed from the server", line.len ? ", " : "",
                   (unsigned long long)s->expunged_server);
    if (r->flagged_removed)
        buf_printf(&line, " (%zu of the removed had flag changes on the other side: removal wins)",
                   r->flagged_removed);
    if (r->edited)
        buf_printf(&line,
                   "%s%zu message%s edited locally: new version uploaded, old one replaced on "
                   "the server",
                   line.len ? ", " : "", r->edited, r->edited == 1 ? "" : "s");
    if (r->edited_gone)
        buf_printf(&line,
                   "%s%zu message%s edited locally but removed on the server: uploaded as new",
                   line.len ? ", " : "", r->edited_gone, r->edited_gone == 1 ? "" : "s");
    if (held.len)
        buf_add(&line, held.data, held.len);
    engine_emit(r, OFS_EV_FOLDER_DONE, line.data);
    buf_free(&line);
    buf_free(&held);
}

void sync_stats_add(ofs_sync_stats *to, const ofs_sync_stats *from)
{
    to->downloaded += from->downloaded;
    to->uploaded += from->uploaded;
    to->flags_to_local += from->flags_to_local;
    to->flags_to_server += from->flags_to_server;
    to->expunged_local += from->expunged_local;
    to->expunged_server += from->expunged_server;
    to->folders_local += from->folders_local;
    to->folders_server += from->folders_server;
    to->bytes_down += from->bytes_down;
    to->bytes_up += from->bytes_up;
    to->folders_seen += from->folders_seen;
    to->folders_verified += from->folders_verified;
    to->folders_local_unread += from->folders_local_unread;
    to->local_listed += from->local_listed;
    to->edited += from->edited;
    to->folders_removed_local += from->folders_removed_local;
    to->folders_removed_server += from->folders_removed_server;
    to->folders_renamed += from->folders_renamed;
    to->held_back += from->held_back;
    to->held_back_bytes += from->held_back_bytes;
    to->net_in += from->net_in;
    to->net_out += from->net_out;
    to->round_trips += from->round_trips;
    to->elapsed_ms += from->elapsed_ms;
    to->reconnects += from->reconnects;
}

/* The folder's record: what the server said when the plan was made, and the local mark when
 * this pass changed nothing locally (else the next pass reads the folder once more). */
static int record_folder(folder_run *r, void *arg, ofs_error *err)
{
    bool local_changed = *(bool *)arg;
    r->sf.uidnext = r->si.uidnext;
    r->sf.highestmodseq = r->si.highestmodseq;
    r->sf.last_sync = (int64_t)time(NULL);
    state_mark m = {.messages = r->si.exists, .local_mark = local_changed ? NULL : r->local_mark};
    if (state_folder_update(r->c->st, &r->sf, err) < 0 ||
        state_held_replace(r->c->st, r->sf.id, r->sf.uidvalidity, &r->held_now, err) < 0)
        return -1;
    return state_mark_set(r->c->st, r->sf.id, &m, err);
}

static int finish_folder(folder_run *r, bool local_changed, ofs_error *err)
{
    /* Every download of the folder is done: what partial files remain are stale. */
    partial_sweep(r->c->acct->local, r->name);
    /* Lost in a power cut, the record and the settles it carries cost a re-read, nothing
     * else: every intent before it is durable, and the WAL keeps commits in order. */
    if (engine_in_lazy_txn(r, record_folder, &local_changed, err) < 0)
        return -1;
    summarize(r);
    return 0;
}

/* Before anything changes, the folder stops counting as in sync: a pass cut short here must
 * not be skipped next time, whatever the two sides look like then. */
static int forget_mark(folder_run *r, ofs_error *err)
{
    (void)err;
    if (!r->has_mark)
        return 0;
    r->has_mark = false;
    r->forget_mark = true; /* with the first intent, which every change waits for */
    return 0;
}

/* --dry-run: what the pass would do in this folder, in one line, and nothing else. */
static void report_plan(folder_run *r, const sync_plan *p)
{
    buf line;
    buf_init(&line);
    buf_adds(&line, "would ");
    size_t start = line.len;
    if (r->old_uidvalidity)
        buf_printf(&line, "re-pair every message by content (UIDVALIDITY changed from %u to %u)",
                   r->old_uidvalidity, r->si.uidvalidity);
    if (p->count[ACT_DOWNLOAD])
        buf_printf(&line, "%sdownload %zu", line.len > start ? ", " : "", p->count[ACT_DOWNLOAD]);
    if (p->count[ACT_UPLOAD])
        buf_printf(&line, "%supload %zu", line.len > start ? ", " : "", p->count[ACT_UPLOAD]);
    if (r->n_edits)
        buf_printf(&line, " (%zu of them edited locally, replacing the server's version)",
                   r->n_edits);
    if (p->to_local_flags)
        buf_printf(&line, "%schange flags of %zu locally", line.len > start ? ", " : "",
                   p->to_local_flags);
    if (p->to_server_flags)
        buf_printf(&line, "%schange flags of %zu on the server", line.len > start ? ", " : "",
                   p->to_server_flags);
    if (p->count[ACT_EXPUNGE_LOCAL])
        buf_printf(&line, "%sremove %zu locally", line.len > start ? ", " : "",
                   p->count[ACT_EXPUNGE_LOCAL]);
    if (p->count[ACT_EXPUNGE_SERVER])
        buf_printf(&line, "%sremove %zu from the server", line.len > start ? ", " : "",
                   p->count[ACT_EXPUNGE_SERVER]);
    if (p->count[ACT_KEEP_LOCAL] + p->count[ACT_KEEP_SERVER])
        buf_printf(&line, "%skeep %zu removed on one side only (expunge policy)",
                   line.len > start ? ", " : "",
                   p->count[ACT_KEEP_LOCAL] + p->count[ACT_KEEP_SERVER]);
    engine_emit(r, OFS_EV_FOLDER_DONE, line.len > start ? line.data : "in sync");
    buf_free(&line);
}

/* Pairs the steps after the plan look at although no action concerns them: those whose file's
 * stamp changed (edits_find), and those flagged \Deleted on the server (what stays so). */
static bool keep_pair(const state_pair *p, const store_msg *local, void *arg)
{
    (void)arg;
    if (p->uid && (p->flags & FLAG_DELETED))
        return true;
    return p->uid && !p->pending && local && local->stamp && local->stamp != p->stamp;
}

static int plan_window(const state_pair_list *w, void *arg, ofs_error *err)
{
    (void)err;
    sync_plan_window(arg, w);
    return 0;
}

/* Plans the folder window by window; r->pairs become the pairs the plan and the steps after it
 * need (keep_pair), which the actions index. */
static int plan_folder(folder_run *r, sync_plan *plan, ofs_error *err)
{
    state_pair_list kept = {0};
    sync_plan_walk w = {.out = plan,
                        .srv = &r->srv_view,
                        .loc = &r->loc,
                        .loc_has = r->loc_base ? localview_has : NULL,
                        .loc_arg = r->lview,
                        .kept = &kept,
                        .keep = keep_pair};
    sync_plan_begin(&w);
    int rc = engine_each_pair_window(r, plan_window, &w, err);
    sync_plan_end(&w);
    state_pair_list_free(&r->pairs);
    r->pairs = kept;
    r->pairs_whole = false;
    if (rc < 0)
        sync_plan_free(plan);
    return rc;
}

static int run_folder(folder_run *r, ofs_error *err)
{
    engine_emit(r, OFS_EV_FOLDER_START, NULL);
    if (load_folder_row(r, err) < 0)
        return -1;
    int skipped = open_and_list(r, err);
    if (skipped < 0)
        return -1;
    if (skipped) {
        summarize(r);
        return 0;
    }
    if (edits_load_replacements(r, err) < 0)
        return -1;
    sync_plan plan;
    if (plan_folder(r, &plan, err) < 0)
        return -1;
    sync_plan_expunge_policy(&plan, r->c->acct->expunge);
    hold_back(r, &plan);
    if (edits_find(r, &plan, err) < 0) {
        sync_plan_free(&plan);
        return -1;
    }
    if (r->c->dry_run) {
        report_plan(r, &plan);
        sync_plan_free(&plan);
        return 0;
    }
    r->total = plan.count[ACT_DOWNLOAD] + plan.count[ACT_UPLOAD];
    for (size_t i = 0; i < plan.n; i++) {
        if (plan.v[i].kind == ACT_DOWNLOAD)
            r->bytes_total += r->srv.v[plan.v[i].srv].size;
        else if (plan.v[i].kind == ACT_UPLOAD)
            r->bytes_total += r->loc.v[plan.v[i].loc].size;
    }
    if (r->total)
        engine_emit(r, OFS_EV_PROGRESS, NULL);
    bool local_changed =
        plan.count[ACT_DOWNLOAD] || plan.count[ACT_EXPUNGE_LOCAL] || plan.to_local_flags;
    int rc = 0;
    if (plan.n)
        rc = forget_mark(r, err);
    if (rc == 0 && plan.n)
        rc = engine_need_server(r, err);
    if (rc == 0)
        rc = flagops_exec(r, &plan, err);
    if (rc == 0)
        rc = edits_exec(r, err);
    if (rc == 0)
        rc = copy_dedupe_build(r, &plan, err);
    if (rc == 0)
        rc = copy_exec_downloads(r, &plan, err);
    if (rc == 0)
        rc = copy_exec_uploads(r, &plan, err);
    if (rc == 0)
        rc = edits_replace(r, &plan, err);
    sync_plan_free(&plan);
    copy_dedupe_free(r->dd);
    r->dd = NULL;
    if (rc == 0)
        rc = finish_folder(r, local_changed, err);
    return rc;
}

int sync_folder_probe(sync_ctx *c, const char *name, sync_probe *p, ofs_error *err)
{
    folder_run r = {.c = c, .name = name};
    store_folder_info status;
    *p = (sync_probe){0};
    if (sync_known_status(c, name, &status) == 0) {
        p->has_status = true;
        p->status = status;
        p->weight = status.exists;
    }
    int rc = state_folder_get(c->st, name, &r.sf, err);
    if (rc == 0) {
        rc = state_mark_get(c->st, r.sf.id, &r.mark, err);
        r.has_mark = rc == 0;
        if (rc >= 0 && state_held_load(c->st, r.sf.id, &r.held_base, err) < 0)
            rc = -1;
    }
    if (rc >= 0) {
        if (!p->has_status && r.has_mark)
            p->weight = r.mark.messages; /* the server's count when last complete */
        int skip = r.has_mark ? what_to_skip(&r, &status) : SKIP_NONE;
        p->unchanged = skip == SKIP_ALL;
        /* Unchanged on the server and no local mark to compare: only the scan will tell. */
        p->needs_server =
            skip == SKIP_NONE || (skip == SKIP_SERVER && r.local_mark && r.mark.local_mark);
        rc = 0;
    }
    state_folder_free(&r.sf);
    free(r.mark.local_mark);
    free(r.local_mark);
    state_held_list_free(&r.held_base);
    return rc;
}

int sync_folder(sync_ctx *c, const char *name, ofs_error *err)
{
    folder_run r = {.c = c, .name = name};
    store_msg_list_init(&r.srv);
    store_msg_list_init(&r.loc);
    r.srv_view.listed = &r.srv;
    uidset_init(&r.srv_gone);
    c->run = &r;
    int rc = run_folder(&r, err);
    c->run = NULL;
    if (rc < 0)
        err_prefix(err, "%s", name);
    r.st.edited = r.edited + r.edited_gone;
    sync_stats_add(&c->stats, &r.st);
    state_folder_free(&r.sf);
    free(r.mark.local_mark);
    free(r.local_mark);
    state_pair_list_free(&r.pairs);
    store_msg_list_free(&r.srv);
    uidset_free(&r.srv_gone);
    store_msg_list_free(&r.loc);
    localview_free(r.lview);
    state_pair_list_free(&r.deferred);
    buf_free(&r.held);
    state_held_list_free(&r.held_base);
    state_held_list_free(&r.held_now);
    free(r.edits);
    edits_free_replacements(&r);
    return rc;
}
