/* copy.c: downloads and uploads in durable batches, ranged downloads of big messages, and
 * the pairing of identical new messages on both sides instead of copying them both ways. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sync/engine_int.h"
#include "sync/message.h"
#include "sync/partial.h"
#include "util/err.h"

enum {
    DOWNLOAD_BATCH = 256, /* messages made durable together: one flush, two commits */
    FETCH_BATCHES = 4,    /* of those asked for in one FETCH (two FETCHes in flight) */
    UPLOAD_BATCH = 64,    /* open temp files held at once */
};

/* Small messages staged and not yet durable, at most; a FETCH asks for FETCH_BATCHES times as
 * much (listed sizes), so two in flight stay within BIG_BATCH_BYTES. */
#define SMALL_BATCH_BYTES (4u * 1024 * 1024)

/* Big messages made durable together hold this much twice on disk at most (partial files and
 * their Maildir copies) until their commit. */
#define BIG_BATCH_BYTES (32u * 1024 * 1024)

/* ---- copies ---- */

typedef struct copy_item {
    state_pair p;
    int fd;
    bool deduped;                  /* paired with an identical new local message, not delivered */
    unsigned srv_flags, loc_flags; /* deduped: both copies' flags, made their union */
} copy_item;

/* New local messages about to be uploaded, by content: a download with the same bytes is the
 * same message appended on both sides, and gets paired instead of copied both ways. */
typedef struct dedupe_set {
    sync_plan *plan;
    long *act; /* the ACT_UPLOAD action of each */
    store_msg *msgs;
    char **hashes;
    uint64_t *sizes;
    char *used;
    size_t n;
} dedupe_set;

void copy_dedupe_free(dedupe_set *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->n; i++)
        free(d->hashes[i]);
    free(d->hashes);
    free(d->sizes);
    free(d->used);
    free(d->msgs);
    free(d->act);
    free(d);
}

int copy_dedupe_build(folder_run *r, sync_plan *plan, ofs_error *err)
{
    if (!plan->count[ACT_DOWNLOAD] || !plan->count[ACT_UPLOAD])
        return 0;
    dedupe_set *d = xcalloc(1, sizeof *d);
    size_t n = plan->count[ACT_UPLOAD];
    d->plan = plan;
    d->act = xmalloc(n * sizeof *d->act);
    d->msgs = xmalloc(n * sizeof *d->msgs);
    for (size_t i = 0; i < plan->n; i++)
        if (plan->v[i].kind == ACT_UPLOAD) {
            d->act[d->n] = (long)i;
            d->msgs[d->n++] = r->loc.v[plan->v[i].loc];
        }
    d->hashes = xcalloc(n, sizeof *d->hashes);
    d->sizes = xcalloc(n, sizeof *d->sizes);
    d->used = xcalloc(n, 1);
    r->dd = d;
    return engine_hash_messages(r, r->c->loc, d->msgs, d->n, d->hashes, d->sizes, err);
}

static long dedupe_take(folder_run *r, const state_pair *p)
{
    dedupe_set *d = r->dd;
    for (size_t i = 0; d && p->hash && i < d->n; i++) {
        if (d->used[i] || d->sizes[i] != p->size || !d->hashes[i] || strcmp(d->hashes[i], p->hash))
            continue;
        d->used[i] = 1;
        sync_action *a = &d->plan->v[d->act[i]];
        a->kind = ACT_NONE;
        d->plan->count[ACT_UPLOAD]--;
        d->plan->count[ACT_NONE]++;
        return (long)i;
    }
    return -1;
}

typedef struct copy_batch {
    folder_run *r;
    copy_item *items;
    size_t n, cap;
    int fd; /* the staging file being written */
} copy_batch;

static void batch_free(copy_batch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        free(b->items[i].p.key);
        free(b->items[i].p.msgid);
        free(b->items[i].p.hash);
        if (b->items[i].fd >= 0)
            close(b->items[i].fd);
    }
    if (b->fd >= 0)
        close(b->fd);
    free(b->items);
    b->items = NULL;
    b->n = b->cap = 0;
    b->fd = -1;
}

static copy_item *batch_push(copy_batch *b)
{
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 64;
        b->items = xrealloc(b->items, b->cap * sizeof *b->items);
    }
    copy_item *it = &b->items[b->n++];
    memset(it, 0, sizeof *it);
    it->fd = -1;
    return it;
}

static int sink_open(void *ctx, const store_msg *m, uint64_t size, ofs_error *err)
{
    (void)m;
    (void)size;
    copy_batch *b = ctx;
    if (b->fd >= 0)
        close(b->fd);
    b->fd = engine_temp_open(b->r, err);
    return b->fd;
}

/* Stages the message as a pair-to-be: Message-ID and size now, for re-pairing later. */
static copy_item *stage_item(copy_batch *b, const store_msg *m, uint64_t size)
{
    copy_item *it = batch_push(b);
    it->p.uid = m->uid;
    it->p.key = m->key ? xstrdup(m->key) : NULL;
    it->p.flags = m->flags;
    it->p.size = size;
    it->p.stamp = m->stamp; /* an upload: the file as it was read */
    it->p.msgid = msg_read_msgid(b->fd);
    it->p.hash = msg_hash_fd(b->fd);
    return it;
}

static int download_done(void *ctx, const store_msg *m, int fd, uint64_t size, ofs_error *err)
{
    copy_batch *b = ctx;
    folder_run *r = b->r;
    copy_item *it = stage_item(b, m, size);
    long same = dedupe_take(r, &it->p);
    if (same >= 0) {
        const store_msg *l = &r->dd->msgs[same];
        free(it->p.key);
        it->p.key = xstrdup(l->key);
        it->p.stamp = l->stamp;
        it->deduped = true;
        it->srv_flags = m->flags;
        it->loc_flags = l->flags;
        it->p.flags = m->flags & l->flags; /* the merge from here gives their union */
        close(b->fd);
        b->fd = -1;
        r->deduped++;
        r->done++;
        r->bytes_done += size;
        engine_emit(r, OFS_EV_PROGRESS, NULL);
        return 0;
    }
    if (lseek(fd, 0, SEEK_SET) < 0)
        return err_errno(err, OFS_E_IO, errno, "cannot rewind a staging file");
    store_msg out = {0};
    int rc = r->c->loc->ops->store_message(r->c->loc, fd, size, m->flags, &out, err);
    close(b->fd);
    b->fd = -1;
    if (rc < 0) {
        b->n--;
        free(it->p.key);
        free(it->p.msgid);
        free(it->p.hash);
        return -1;
    }
    it->p.key = out.key;
    it->p.stamp = out.stamp;
    free(out.msgid);
    r->st.bytes_down += size;
    r->done++;
    r->bytes_done += size;
    engine_emit(r, OFS_EV_PROGRESS, NULL);
    return 0;
}

static int add_intents(folder_run *r, void *arg, ofs_error *err)
{
    copy_batch *b = arg;
    for (size_t i = 0; i < b->n; i++)
        if (state_pair_add(r->c->st, r->sf.id, &b->items[i].p, err) < 0)
            return -1;
    return 0;
}

static int settle_items(folder_run *r, void *arg, ofs_error *err)
{
    copy_batch *b = arg;
    for (size_t i = 0; i < b->n; i++) {
        state_pair *p = &b->items[i].p;
        if (p->pending == PENDING_UPLOAD && !p->uid)
            continue; /* no APPENDUID: re-paired by Message-ID after the batch */
        p->pending = PENDING_NONE;
        if (state_pair_update(r->c->st, p, err) < 0)
            return -1;
    }
    return 0;
}

static int union_bases(folder_run *r, void *arg, ofs_error *err)
{
    copy_batch *b = arg;
    for (size_t i = 0; i < b->n; i++) {
        copy_item *it = &b->items[i];
        if (!it->deduped || it->srv_flags == it->loc_flags)
            continue;
        it->p.flags = it->srv_flags | it->loc_flags;
        if (state_pair_update(r->c->st, &it->p, err) < 0)
            return -1;
    }
    return 0;
}

/* Identical copies paired with the intersection of their flags as the base: applying the
 * union on both sides is then what the three-way merge would do, so a crash here converges. */
static int union_dedupe_flags(folder_run *r, copy_batch *b, ofs_error *err)
{
    int rc = 0;
    size_t n = 0;
    for (size_t i = 0; i < b->n && rc == 0; i++) {
        copy_item *it = &b->items[i];
        if (!it->deduped || it->srv_flags == it->loc_flags)
            continue;
        store_msg s = {.uid = it->p.uid}, l = {.key = it->p.key, .flags = it->loc_flags};
        unsigned u = it->srv_flags | it->loc_flags;
        if (u != it->srv_flags)
            rc = r->c->srv->ops->set_flags(r->c->srv, &s, 1, u & ~it->srv_flags, 0, err);
        if (rc == 0 && u != it->loc_flags)
            rc = r->c->loc->ops->set_flags(r->c->loc, &l, 1, u & ~it->loc_flags, 0, err);
        n++;
    }
    return rc == 0 && n ? engine_in_txn(r, union_bases, b, err) : rc;
}

/* Intents committed, files flushed into cur/ and new/, pairs settled: a crash anywhere in
 * between leaves intents that resolve_downloads settles without copying anything twice.
 * Touches only the local side (it may run while a FETCH streams). */
static int commit_durable(folder_run *r, copy_batch *b, ofs_error *err)
{
    size_t deduped = 0;
    for (size_t i = 0; i < b->n; i++) {
        b->items[i].p.pending = PENDING_DOWNLOAD;
        deduped += b->items[i].deduped;
    }
    if (engine_in_txn(r, add_intents, b, err) < 0 || r->c->loc->ops->flush(r->c->loc, err) < 0)
        return -1;
    for (size_t i = 0; i < b->n; i++) {
        b->items[i].p.pending = PENDING_NONE;
        engine_defer_settle(r, &b->items[i].p);
    }
    r->st.downloaded += b->n - deduped;
    r->c->progress++;
    return 0;
}

static int commit_downloads(folder_run *r, copy_batch *b, ofs_error *err)
{
    if (!b->n)
        return 0;
    return commit_durable(r, b, err) < 0 ? -1 : union_dedupe_flags(r, b, err);
}

/* ---- big messages: ranges into partial files, several in flight ---- */

/* One big message on its way: its partial file is open from its first range asked to its
 * last answered. */
typedef struct big_msg {
    store_msg m;
    partial_file pf;
    bool opened;
    uint64_t asked;    /* the next range starts here */
    unsigned inflight; /* ranges asked and not answered */
    bool ended, gone;  /* shorter than listed; no longer on the server */
    bool finished;     /* delivered (or dropped when gone) */
} big_msg;

typedef struct big_run {
    folder_run *r;
    big_msg *v;
    size_t n, cur;      /* cur: the message whose ranges are being asked */
    copy_batch b;       /* complete, not yet committed */
    strlist done_paths; /* their partial files, removed once the batch is durable */
    uint64_t batch_bytes;
    double last_answer; /* when the last range was answered: the link's busy time starts */
    store_range_feed feed;
} big_run;

static double copy_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Complete messages are durable together (like DOWNLOAD_BATCH small ones) before their
 * partial files go: a kill before that finds the files complete and delivers them again,
 * once, as the intents were not committed. */
static int big_commit(big_run *br, ofs_error *err)
{
    int rc = commit_downloads(br->r, &br->b, err);
    batch_free(&br->b);
    for (size_t i = 0; i < br->done_paths.n && rc == 0; i++)
        unlink(br->done_paths.v[i]);
    strlist_free(&br->done_paths);
    strlist_init(&br->done_paths);
    br->batch_bytes = 0;
    return rc;
}

static int big_finish(big_run *br, big_msg *e, ofs_error *err)
{
    if (e->finished)
        return 0;
    e->finished = true;
    if (e->gone) {
        partial_close(&e->pf, true);
        return 0;
    }
    br->b.fd = e->pf.fd;
    e->pf.fd = -1; /* download_done closes it */
    uint64_t have = e->pf.have;
    if (lseek(br->b.fd, 0, SEEK_SET) < 0) /* batch_free closes it */
        return err_errno(err, OFS_E_IO, errno, "cannot rewind %s", e->pf.path);
    if (download_done(&br->b, &e->m, br->b.fd, have, err) < 0)
        return -1;
    strlist_add_owned(&br->done_paths, e->pf.path);
    e->pf.path = NULL;
    br->batch_bytes += have;
    if (br->b.n >= DOWNLOAD_BATCH || br->batch_bytes >= BIG_BATCH_BYTES)
        return big_commit(br, err);
    return 0;
}

static int big_open(big_run *br, big_msg *e, ofs_error *err)
{
    folder_run *r = br->r;
    e->opened = true;
    if (partial_open(&e->pf, r->c->acct->local, r->name, r->si.uidvalidity, &e->m, err) < 0)
        return -1;
    if (e->pf.have) {
        char *line = xasprintf("resuming UID %u at %llu of %llu bytes", e->m.uid,
                               (unsigned long long)e->pf.have, (unsigned long long)e->m.size);
        engine_notice(r, line);
        free(line);
    }
    e->asked = e->pf.have;
    return 0;
}

static bool big_wants_more(const big_msg *e)
{
    return e->opened && !e->gone && !e->ended && e->asked < e->m.size;
}

static int big_next(void *ctx, store_range *out, ofs_error *err)
{
    big_run *br = ctx;
    while (br->cur < br->n) {
        big_msg *e = &br->v[br->cur];
        if (!e->opened && big_open(br, e, err) < 0)
            return -1;
        if (big_wants_more(e)) {
            uint64_t len = partial_chunk(br->r->c->link_rate), left = e->m.size - e->asked;
            /* A tail shorter than half a range rides with this one: it would cost a round
             * trip of its own for a few bytes. */
            if (left <= len + len / 2)
                len = left;
            *out = (store_range){.m = &e->m,
                                 .offset = e->asked,
                                 .len = len,
                                 .fd = e->pf.fd,
                                 .ctx = e,
                                 .asked = copy_now()};
            e->asked += out->len;
            e->inflight++;
            return 1;
        }
        br->cur++;
        if (!e->inflight && big_finish(br, e, err) < 0) /* complete from an earlier pass */
            return -1;
    }
    return 0;
}

/* The rate is measured over the time the link was busy with this range: from its request or
 * the previous answer, whichever came later. */
static void big_measure(big_run *br, const store_range *rg)
{
    double now = copy_now(), start = rg->asked > br->last_answer ? rg->asked : br->last_answer;
    double *rate = &br->r->c->link_rate, dt = now - start;
    uint64_t wire = rg->got - rg->held;
    br->last_answer = now;
    if (wire > 0 && dt > 0)
        *rate = *rate > 0 ? 0.5 * *rate + 0.5 * ((double)wire / dt) : (double)wire / dt;
    br->feed.window = 2 * partial_chunk(*rate);
}

static int big_done(void *ctx, store_range *rg, ofs_error *err)
{
    big_run *br = ctx;
    big_msg *e = rg->ctx;
    e->inflight--;
    big_measure(br, rg);
    if (rg->got > 0)
        br->r->c->progress++;
    if (rg->gone)
        e->gone = true;
    else if (rg->got < rg->len)
        e->ended = true; /* the message ended before its listed size */
    /* The file's size is the truth about what arrived, whatever the answers said. */
    if (partial_size(&e->pf, err) < 0)
        return -1;
    if (e->inflight || big_wants_more(e))
        return 0;
    return big_finish(br, e, err);
}

/* Every big message in ranges, pipelined across messages; what arrived stays in the partial
 * files after a failure, and what is complete is committed. */
static int download_big(folder_run *r, const store_msg *msgs, size_t n, ofs_error *err)
{
    big_run br = {.r = r, .n = n, .b = {.r = r, .fd = -1}};
    br.v = xcalloc(n ? n : 1, sizeof *br.v);
    for (size_t i = 0; i < n; i++) {
        br.v[i].m = msgs[i];
        br.v[i].pf.fd = -1;
    }
    strlist_init(&br.done_paths);
    br.feed = (store_range_feed){big_next, big_done, &br, 2 * partial_chunk(r->c->link_rate)};
    int rc = r->c->srv->ops->fetch_ranges(r->c->srv, &br.feed, err);
    ofs_error e2;
    if (big_commit(&br, rc < 0 ? &e2 : err) < 0)
        rc = -1;
    for (size_t i = 0; i < n; i++)
        partial_close(&br.v[i].pf, false);
    free(br.v);
    return rc;
}

/* Small messages: FETCHes of a few batches each, the next asked for while one streams; what
 * arrived is made durable a batch at a time, whichever FETCH brought it. */
typedef struct small_run {
    copy_batch b;      /* arrived, not yet durable */
    copy_batch unions; /* durable, paired with a local copy whose flags differ */
    const sync_plan *plan;
    size_t next;           /* the plan's first action not asked for yet */
    store_msg *ask;        /* the messages asked for by one FETCH, copied from the listing */
    size_t batch;          /* messages made durable together */
    uint64_t staged_bytes; /* of b */
} small_run;

/* The batch size; tests lower it (OFSYNC_TEST_DOWNLOAD_BATCH) to cross batch edges cheaply. */
static size_t download_batch(void)
{
    const char *v = getenv("OFSYNC_TEST_DOWNLOAD_BATCH");
    long n = v ? strtol(v, NULL, 10) : 0;
    return n > 0 && n < DOWNLOAD_BATCH ? (size_t)n : DOWNLOAD_BATCH;
}

/* The listing's entry of the plan's next small download from sr->next on (sr->next moves to
 * it), or NULL: none left. */
static const store_msg *small_peek(small_run *sr)
{
    const folder_run *r = sr->b.r;
    for (; sr->next < sr->plan->n; sr->next++) {
        const sync_action *a = &sr->plan->v[sr->next];
        if (a->kind == ACT_DOWNLOAD && !partial_wanted(r->c->srv, &r->srv.v[a->srv]))
            return &r->srv.v[a->srv];
    }
    return NULL;
}

/* The next FETCH's messages, taken from the plan as they are asked for: one FETCH's worth is
 * held, not every download of the folder. */
static int small_next(void *ctx, const store_msg **msgs, size_t *n, ofs_error *err)
{
    (void)err;
    small_run *sr = ctx;
    size_t k = 0, max = sr->batch * FETCH_BATCHES;
    uint64_t bytes = 0;
    const store_msg *m;
    while (k < max && (m = small_peek(sr)) &&
           (k == 0 || bytes + m->size <= FETCH_BATCHES * SMALL_BATCH_BYTES)) {
        bytes += m->size;
        sr->ask[k++] = *m;
        sr->next++;
    }
    *msgs = sr->ask;
    *n = k;
    return k > 0;
}

/* Durable now; the union of paired copies' flags waits until the server is not streaming. */
static int small_commit(small_run *sr, ofs_error *err)
{
    int rc = sr->b.n ? commit_durable(sr->b.r, &sr->b, err) : 0;
    for (size_t i = 0; i < sr->b.n && rc == 0; i++) {
        copy_item *it = &sr->b.items[i];
        if (it->deduped && it->srv_flags != it->loc_flags) {
            *batch_push(&sr->unions) = *it;
            it->p.key = it->p.msgid = it->p.hash = NULL;
        }
    }
    batch_free(&sr->b);
    sr->staged_bytes = 0;
    return rc;
}

static int small_open(void *ctx, const store_msg *m, uint64_t size, ofs_error *err)
{
    return sink_open(&((small_run *)ctx)->b, m, size, err);
}

static int small_arrived(void *ctx, const store_msg *m, int fd, uint64_t size, ofs_error *err)
{
    small_run *sr = ctx;
    if (download_done(&sr->b, m, fd, size, err) < 0)
        return -1;
    sr->staged_bytes += size;
    if (sr->b.n < sr->batch && sr->staged_bytes < SMALL_BATCH_BYTES)
        return 0;
    return small_commit(sr, err);
}

/* What arrived before a failure is kept: it is complete and staged. */
static int download_small(folder_run *r, const sync_plan *plan, ofs_error *err)
{
    small_run sr = {.b = {.r = r, .fd = -1},
                    .unions = {.r = r, .fd = -1},
                    .plan = plan,
                    .batch = download_batch()};
    sr.ask = xmalloc(sr.batch * FETCH_BATCHES * sizeof *sr.ask);
    store *srv = r->c->srv;
    int rc = 0;
    if (srv->ops->fetch_batches) {
        store_batch_feed feed = {small_next, {small_open, small_arrived, &sr}};
        rc = srv->ops->fetch_batches(srv, &feed, err);
    } else {
        store_sink sink = {small_open, small_arrived, &sr};
        const store_msg *batch;
        size_t len;
        while (rc == 0 && small_next(&sr, &batch, &len, err))
            rc = srv->ops->fetch_messages(srv, batch, len, &sink, err);
    }
    ofs_error e2;
    if (small_commit(&sr, rc < 0 ? &e2 : err) < 0)
        rc = -1;
    if (rc == 0)
        rc = union_dedupe_flags(r, &sr.unions, err);
    batch_free(&sr.unions);
    free(sr.ask);
    return rc;
}

int copy_exec_downloads(folder_run *r, const sync_plan *plan, ofs_error *err)
{
    size_t n = plan->count[ACT_DOWNLOAD];
    if (!n)
        return 0;
    store_msg *big = xmalloc(n * sizeof *big);
    size_t nbig = 0;
    int rc = 0;
    /* Big messages first, in resumable ranges; the rest in batches. */
    for (size_t i = 0; i < plan->n; i++) {
        if (plan->v[i].kind != ACT_DOWNLOAD)
            continue;
        const store_msg *m = &r->srv.v[plan->v[i].srv];
        if (partial_wanted(r->c->srv, m))
            big[nbig++] = *m;
    }
    if (nbig)
        rc = download_big(r, big, nbig, err);
    free(big);
    if (rc == 0 && nbig < n)
        rc = download_small(r, plan, err);
    return rc;
}

static int upload_done(void *ctx, const store_msg *m, int fd, uint64_t size, ofs_error *err)
{
    (void)err;
    copy_batch *b = ctx;
    copy_item *it = stage_item(b, m, size);
    it->fd = fd;
    b->fd = -1; /* now owned by the item */
    return 0;
}

static uint32_t upload_floor(const folder_run *r)
{
    if (r->si.uidnext)
        return r->si.uidnext;
    uint32_t max = 0;
    for (size_t i = 0; i < r->srv.n; i++)
        if (r->srv.v[i].uid > max)
            max = r->srv.v[i].uid;
    for (size_t i = 0; i < r->pairs.n; i++) /* the base stands for some (srv_view) */
        if (r->pairs.v[i].uid > max)
            max = r->pairs.v[i].uid;
    return max + 1;
}

static void count_upload(folder_run *r, const copy_item *it)
{
    r->st.bytes_up += it->p.size;
    r->st.uploaded++;
    r->done++;
    r->c->progress++;
    r->bytes_done += it->p.size;
    engine_emit(r, OFS_EV_PROGRESS, NULL);
}

/* The whole batch at once (pipelined APPENDs): its intents are durable already, so whatever
 * reached the server before a cut is found again by resolve_upload_intents. */
static int append_together(folder_run *r, copy_batch *b, ofs_error *err)
{
    store_upload *v = xcalloc(b->n ? b->n : 1, sizeof *v);
    int rc = 0;
    for (size_t i = 0; i < b->n && rc == 0; i++) {
        const copy_item *it = &b->items[i];
        v[i] = (store_upload){.fd = it->fd, .size = it->p.size, .flags = it->p.flags};
        if (lseek(it->fd, 0, SEEK_SET) < 0)
            rc = err_errno(err, OFS_E_IO, errno, "cannot rewind a staging file");
    }
    if (rc == 0)
        rc = r->c->srv->ops->store_messages(r->c->srv, v, b->n, err);
    for (size_t i = 0; i < b->n; i++) {
        if (!v[i].ok)
            continue; /* stays an upload intent: sent again unless found on the server */
        b->items[i].p.uid = v[i].uid;
        count_upload(r, &b->items[i]);
    }
    free(v);
    return rc;
}

static int append_items(folder_run *r, copy_batch *b, ofs_error *err)
{
    store *srv = r->c->srv;
    if (srv->ops->store_messages)
        return append_together(r, b, err);
    for (size_t i = 0; i < b->n; i++) {
        copy_item *it = &b->items[i];
        store_msg out = {0};
        if (lseek(it->fd, 0, SEEK_SET) < 0)
            return err_errno(err, OFS_E_IO, errno, "cannot rewind a staging file");
        /* On failure the unsent rest stay upload intents; the next pass finds them absent
         * from the server and sends them then. */
        if (srv->ops->store_message(srv, it->fd, it->p.size, it->p.flags, &out, err) < 0)
            return -1;
        it->p.uid = out.uid;
        free(out.key);
        free(out.msgid);
        count_upload(r, it);
    }
    return 0;
}

static int upload_batch(folder_run *r, const store_msg *msgs, size_t n, bool *unpaired,
                        ofs_error *err)
{
    copy_batch b = {.r = r, .fd = -1};
    store_sink sink = {sink_open, upload_done, &b};
    int rc = r->c->loc->ops->fetch_messages(r->c->loc, msgs, n, &sink, err);
    for (size_t i = 0; i < b.n; i++) {
        b.items[i].p.pending = PENDING_UPLOAD;
        b.items[i].p.uidnext_seen = upload_floor(r);
    }
    if (rc == 0)
        rc = engine_in_txn(r, add_intents, &b, err);
    if (rc == 0) {
        rc = append_items(r, &b, err);
        ofs_error e2;
        if (engine_in_txn(r, settle_items, &b, rc < 0 ? &e2 : err) < 0)
            rc = -1;
        for (size_t i = 0; i < b.n; i++)
            if (!b.items[i].p.uid)
                *unpaired = true;
    }
    batch_free(&b);
    return rc;
}

int copy_exec_uploads(folder_run *r, const sync_plan *plan, ofs_error *err)
{
    size_t n = plan->count[ACT_UPLOAD], k = 0;
    if (!n)
        return 0;
    store_msg *msgs = xmalloc(n * sizeof *msgs);
    for (size_t i = 0; i < plan->n; i++)
        if (plan->v[i].kind == ACT_UPLOAD)
            msgs[k++] = r->loc.v[plan->v[i].loc];
    bool unpaired = false;
    int rc = 0;
    for (size_t i = 0; i < k && rc == 0; i += UPLOAD_BATCH)
        rc = upload_batch(r, msgs + i, k - i < UPLOAD_BATCH ? k - i : UPLOAD_BATCH, &unpaired, err);
    free(msgs);
    /* Without UIDPLUS the server did not say which UIDs it gave: find them now (these are
     * fresh uploads, not messages re-paired after a UIDVALIDITY change). */
    size_t repaired = r->repaired;
    r->own_appends = true; /* just sent on this connection: Message-ID and size suffice when
                              they tell the messages apart; content is compared otherwise */
    if (rc == 0 && unpaired && (rc = engine_reload_pairs(r, err)) == 0)
        rc = pending_resolve(r, err);
    r->own_appends = false;
    r->repaired = repaired;
    return rc;
}
