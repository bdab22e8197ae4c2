/* engine.c: executes one folder's plan against both stores and the state.
 * Order of every step: intent in the state, store change made durable, then the state commit. */
#include "sync/engine.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sync/message.h"
#include "sync/partial.h"
#include "sync/plan.h"
#include "util/err.h"
#include "util/uidset.h"

enum {
    DOWNLOAD_BATCH = 256, /* messages made durable together: one flush, two commits */
    UPLOAD_BATCH = 64,    /* open temp files held at once */
};

typedef struct folder_run {
    sync_ctx *c;
    const char *name;
    state_folder sf;
    store_folder_info si, li;
    state_pair_list pairs;
    store_msg_list srv, loc;
    ofs_sync_stats st;
    uint64_t done, total;             /* messages copied / to copy */
    uint64_t bytes_done, bytes_total; /* their bytes, as far as the listings said */
    state_mark mark;                  /* what the last complete pass saw; has_mark: there was one */
    bool has_mark;
    char *local_mark;         /* the local folder's mark, taken before its scan */
    bool srv_open;            /* the server folder is selected */
    uint32_t old_uidvalidity; /* non-zero: the server's UIDVALIDITY changed this pass */
    size_t repaired;          /* pairs found again by content after that change */
    size_t deduped;           /* new on both sides, identical: paired, not copied */
    struct dedupe_set *dd;    /* local messages about to be uploaded, by content */
    int64_t restore_id;       /* the restore-deleted intent of this pass's expunge, or 0 */
    size_t flagged_removed;   /* removed although the other side had changed their flags */
    bool own_appends; /* resolving this pass's APPENDs (no UIDPLUS), not a crash's leftovers */
    buf held;         /* the first held-back messages, for the folder's line */
    size_t held_shown;
    state_held_list held_base; /* held back by the last complete pass */
    state_held_list held_now;  /* held back by this pass: recorded with the folder */
    bool forget_mark;          /* the mark goes with the folder's next transaction */
    state_pair_list deferred;  /* settled pairs, written with the next transaction */
    struct local_edit *edits;  /* local files rewritten in place, found by this pass */
    size_t n_edits;
    struct replacement *repl; /* old server copies of edited messages, waiting to go */
    size_t n_repl;
    size_t edited, edited_gone; /* old copies replaced; edits uploaded as new (server expunged) */
} folder_run;

static void emit(folder_run *r, enum ofs_event_type type, const char *text)
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

static void notice(folder_run *r, const char *text)
{
    emit(r, OFS_EV_NOTICE, text);
}

/* An unnamed file on the local file system to stage one message's bytes. */
static int temp_open(folder_run *r, ofs_error *err)
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
 * before it leaves the pair's intent, which resolve_pending settles the same way. */
static void defer_settle(folder_run *r, const state_pair *p)
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

static int in_txn(folder_run *r, int (*fn)(folder_run *, void *, ofs_error *), void *arg,
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
static int in_lazy_txn(folder_run *r, int (*fn)(folder_run *, void *, ofs_error *), void *arg,
                       ofs_error *err)
{
    if (state_set_durable(r->c->st, false, err) < 0)
        return -1;
    int rc = in_txn(r, fn, arg, err);
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
    h->fd = temp_open(h->r, err);
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

static int hash_messages(folder_run *r, store *s, const store_msg *msgs, size_t n, char **hashes,
                         uint64_t *sizes, ofs_error *err)
{
    hash_sink h = {.r = r, .msgs = msgs, .n = n, .hashes = hashes, .sizes = sizes, .fd = -1};
    store_sink sink = {hash_open, hash_done, &h};
    int rc = n ? s->ops->fetch_messages(s, msgs, n, &sink, err) : 0;
    if (h.fd >= 0)
        close(h.fd);
    return rc;
}

/* ---- pending intents from an earlier, interrupted pass ---- */

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static int cmp_keyp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool local_has_key(char **sorted, size_t n, const char *key)
{
    return key && bsearch(&key, sorted, n, sizeof *sorted, cmp_keyp) != NULL;
}

/* Messages by (Message-ID, size), the first thing an upload and its server copy share. */
typedef struct ms_key {
    const char *msgid; /* NULL sorts first */
    uint64_t size;
    long idx;
} ms_key;

static int cmp_ms(const void *a, const void *b)
{
    const ms_key *x = a, *y = b;
    if (!x->msgid != !y->msgid)
        return x->msgid ? 1 : -1;
    int c = x->msgid ? strcmp(x->msgid, y->msgid) : 0;
    if (c)
        return c;
    return (x->size > y->size) - (x->size < y->size);
}

/* First index in sorted v[0..n) not below k. */
static size_t ms_lower(const ms_key *v, size_t n, const ms_key *k)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cmp_ms(&v[mid], k) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static size_t ms_count(const ms_key *v, size_t n, const ms_key *k)
{
    size_t i = ms_lower(v, n, k), j = i;
    while (j < n && cmp_ms(&v[j], k) == 0)
        j++;
    return j - i;
}

/* Server messages an upload intent may have become, with the content hashes fetched for them. */
typedef struct upload_cands {
    store_msg_list l;
    char **hashes; /* NULL where not fetched */
    char *used;
    ms_key *by_key; /* l sorted by (Message-ID, size) */
    ms_key *pend;   /* the pending uploads, sorted the same way */
    size_t n_pend;
} upload_cands;

static void cands_index(folder_run *r, upload_cands *c)
{
    c->by_key = xmalloc((c->l.n ? c->l.n : 1) * sizeof *c->by_key);
    for (size_t i = 0; i < c->l.n; i++)
        c->by_key[i] = (ms_key){c->l.v[i].msgid, c->l.v[i].size, (long)i};
    if (c->l.n)
        qsort(c->by_key, c->l.n, sizeof *c->by_key, cmp_ms);
    c->pend = xmalloc((r->pairs.n ? r->pairs.n : 1) * sizeof *c->pend);
    for (size_t i = 0; i < r->pairs.n; i++) {
        const state_pair *p = &r->pairs.v[i];
        if (p->pending == PENDING_UPLOAD)
            c->pend[c->n_pend++] = (ms_key){p->msgid, p->size, (long)i};
    }
    if (c->n_pend)
        qsort(c->pend, c->n_pend, sizeof *c->pend, cmp_ms);
}

/* Finds the server message an upload intent became: UIDs at or above the UIDNEXT recorded
 * before the APPEND, same Message-ID and size, same content where both hashes are known,
 * not paired with anything else. */
static long match_upload(const state_pair *p, upload_cands *c, uint32_t *paired, size_t n_paired)
{
    if (!p->hash && !p->msgid)
        return -1; /* nothing to tell it from another message of that size */
    const ms_key k = {p->msgid, p->size, -1};
    for (size_t j = ms_lower(c->by_key, c->l.n, &k); j < c->l.n && !cmp_ms(&c->by_key[j], &k);
         j++) {
        long i = c->by_key[j].idx;
        const store_msg *m = &c->l.v[i];
        if (c->used[i] || m->uid < p->uidnext_seen)
            continue;
        if (bsearch(&m->uid, paired, n_paired, sizeof *paired, cmp_u32))
            continue;
        if (p->hash && c->hashes[i] && strcmp(p->hash, c->hashes[i]) != 0)
            continue;
        c->used[i] = 1;
        return i;
    }
    return -1;
}

enum { HASH_ALL_MAX = 256 }; /* candidate sets up to this size are compared by content */

/* Whether candidate m's content must be fetched to pair it: it has the (Message-ID, size) of
 * a pending upload, and either it has no Message-ID, or that key is not unique on one side,
 * or the set is an interrupted pass's few candidates, all compared by content. A UIDVALIDITY
 * change makes the whole folder a candidate: re-downloading it is what re-pairing avoids. */
static bool want_hash(const folder_run *r, const upload_cands *c, const ms_key *k)
{
    size_t np = ms_count(c->pend, c->n_pend, k);
    if (!np)
        return false;
    if (!k->msgid || np > 1 || ms_count(c->by_key, c->l.n, k) > 1)
        return true;
    return c->l.n <= HASH_ALL_MAX && !r->own_appends;
}

static int hash_candidates(folder_run *r, upload_cands *c, ofs_error *err)
{
    store_msg *pick = xmalloc((c->l.n ? c->l.n : 1) * sizeof *pick);
    size_t *at = xmalloc((c->l.n ? c->l.n : 1) * sizeof *at), k = 0;
    for (size_t i = 0; i < c->l.n; i++) {
        const ms_key key = {c->l.v[i].msgid, c->l.v[i].size, (long)i};
        if (want_hash(r, c, &key)) {
            pick[k] = c->l.v[i];
            at[k++] = i;
        }
    }
    char **h = xcalloc(k ? k : 1, sizeof *h);
    int rc = hash_messages(r, r->c->srv, pick, k, h, NULL, err);
    for (size_t i = 0; i < k; i++)
        c->hashes[at[i]] = h[i];
    free(h);
    free(at);
    free(pick);
    return rc;
}

static int resolve_downloads(folder_run *r, void *arg, ofs_error *err)
{
    (void)arg;
    char **keys = xmalloc((r->loc.n ? r->loc.n : 1) * sizeof *keys);
    for (size_t i = 0; i < r->loc.n; i++)
        keys[i] = r->loc.v[i].key;
    qsort(keys, r->loc.n, sizeof *keys, cmp_keyp);
    int rc = 0;
    for (size_t i = 0; i < r->pairs.n && rc == 0; i++) {
        state_pair *p = &r->pairs.v[i];
        if (p->pending != PENDING_DOWNLOAD)
            continue;
        if (local_has_key(keys, r->loc.n, p->key)) {
            p->pending = PENDING_NONE;
            rc = state_pair_update(r->c->st, p, err);
        } else {
            rc = state_pair_delete(r->c->st, p->id, err); /* downloaded again below */
        }
    }
    free(keys);
    return rc;
}

static int resolve_uploads(folder_run *r, void *arg, ofs_error *err)
{
    upload_cands *cand = arg;
    uint32_t *paired = xmalloc((r->pairs.n ? r->pairs.n : 1) * sizeof *paired);
    size_t n_paired = 0;
    for (size_t i = 0; i < r->pairs.n; i++)
        if (r->pairs.v[i].uid)
            paired[n_paired++] = r->pairs.v[i].uid;
    qsort(paired, n_paired, sizeof *paired, cmp_u32);
    int rc = 0;
    for (size_t i = 0; i < r->pairs.n && rc == 0; i++) {
        state_pair *p = &r->pairs.v[i];
        if (p->pending != PENDING_UPLOAD)
            continue;
        long m = match_upload(p, cand, paired, n_paired);
        if (m >= 0) {
            p->uid = cand->l.v[m].uid;
            p->pending = PENDING_NONE;
            r->repaired++;
            rc = state_pair_update(r->c->st, p, err);
        } else {
            rc = state_pair_delete(r->c->st, p->id, err); /* uploaded again below */
        }
    }
    free(paired);
    return rc;
}

static int reload_pairs(folder_run *r, ofs_error *err)
{
    state_pair_list_free(&r->pairs);
    return state_pairs_load(r->c->st, r->sf.id, &r->pairs, err);
}

/* A flag change or a removal cut short is planned again from the same base: the three-way
 * merge of a half-applied change gives the same result (test_plan proves it for every flag
 * combination), and a removal finds the copy gone or removes it again. */
static int resolve_replans(folder_run *r, void *arg, ofs_error *err)
{
    (void)arg;
    for (size_t i = 0; i < r->pairs.n; i++) {
        state_pair *p = &r->pairs.v[i];
        if (p->pending != PENDING_FLAGS && p->pending != PENDING_EXPUNGE)
            continue;
        p->pending = PENDING_NONE;
        p->target = 0;
        if (state_pair_update(r->c->st, p, err) < 0)
            return -1;
    }
    return 0;
}

static int resolve_upload_intents(folder_run *r, uint32_t since, ofs_error *err)
{
    upload_cands c = {0};
    store_msg_list_init(&c.l);
    store_list_opts o = {.since_uid = since, .want_msgid = true, .want_size = true};
    int rc = r->c->srv->ops->list_messages(r->c->srv, &o, &c.l, err);
    c.hashes = xcalloc(c.l.n ? c.l.n : 1, sizeof *c.hashes);
    c.used = xcalloc(c.l.n ? c.l.n : 1, 1);
    cands_index(r, &c);
    if (rc == 0)
        rc = hash_candidates(r, &c, err);
    if (rc == 0)
        rc = in_txn(r, resolve_uploads, &c, err);
    for (size_t i = 0; i < c.l.n; i++)
        free(c.hashes[i]);
    free(c.hashes);
    free(c.used);
    free(c.by_key);
    free(c.pend);
    store_msg_list_free(&c.l);
    return rc;
}

static int resolve_pending(folder_run *r, ofs_error *err)
{
    bool downloads = false, replans = false;
    uint32_t since = 0;
    for (size_t i = 0; i < r->pairs.n; i++) {
        const state_pair *p = &r->pairs.v[i];
        if (p->pending == PENDING_DOWNLOAD)
            downloads = true;
        if (p->pending == PENDING_FLAGS || p->pending == PENDING_EXPUNGE)
            replans = true;
        if (p->pending == PENDING_UPLOAD && (!since || p->uidnext_seen < since))
            since = p->uidnext_seen ? p->uidnext_seen : 1;
    }
    if (replans && in_txn(r, resolve_replans, NULL, err) < 0)
        return -1;
    if (downloads && in_txn(r, resolve_downloads, NULL, err) < 0)
        return -1;
    if (since && resolve_upload_intents(r, since, err) < 0)
        return -1;
    return (downloads || since || replans) ? reload_pairs(r, err) : 0;
}

/* A new UIDVALIDITY means every UID we knew is void. Each pair becomes an upload intent
 * with no lower UID bound, so resolve_pending re-pairs it by Message-ID, size and content;
 * what finds no partner is copied again, never dropped and never duplicated. The base flags
 * stay, so flag changes made locally meanwhile still win over the server's. */
static int void_uids(folder_run *r, void *arg, ofs_error *err)
{
    (void)arg;
    for (size_t i = 0; i < r->pairs.n; i++) {
        state_pair *p = &r->pairs.v[i];
        if (!p->key) {
            if (state_pair_delete(r->c->st, p->id, err) < 0)
                return -1;
            continue;
        }
        p->uid = 0;
        p->pending = PENDING_UPLOAD;
        p->uidnext_seen = 1;
        if (state_pair_update(r->c->st, p, err) < 0)
            return -1;
    }
    r->sf.uidvalidity = r->si.uidvalidity;
    if (state_held_replace(r->c->st, r->sf.id, r->sf.uidvalidity, NULL, err) < 0)
        return -1;
    return state_folder_update(r->c->st, &r->sf, err);
}

static int check_uidvalidity(folder_run *r, ofs_error *err)
{
    if (!r->sf.uidvalidity || r->sf.uidvalidity == r->si.uidvalidity) {
        r->sf.uidvalidity = r->si.uidvalidity;
        return 0;
    }
    /* One line at the end of the folder says what the re-pairing found (summarize). */
    r->old_uidvalidity = r->sf.uidvalidity;
    if (r->c->dry_run) {
        r->sf.uidvalidity = r->si.uidvalidity;
        return 0;
    }
    if (in_txn(r, void_uids, NULL, err) < 0)
        return -1;
    return reload_pairs(r, err);
}

/* An expunge cut short may have lifted \Deleted from other messages (no UIDPLUS): put it back
 * on those still there, unless the folder's UIDs changed meaning since. */
static int restore_one(folder_run *r, const state_intent *in, ofs_error *err)
{
    const char *at = in->arg ? strrchr(in->arg, '@') : NULL;
    if (!at || strtoul(at + 1, NULL, 10) != r->si.uidvalidity)
        return 0;
    store_msg *msgs = xmalloc((strlen(in->arg) / 2 + 1) * sizeof *msgs);
    size_t n = 0;
    for (const char *p = in->arg; p < at;) {
        char *end;
        unsigned long uid = strtoul(p, &end, 10);
        if (end == p)
            break;
        msgs[n++] = (store_msg){.uid = (uint32_t)uid};
        p = end + (*end == ' ');
    }
    int rc = n ? r->c->srv->ops->set_flags(r->c->srv, msgs, n, FLAG_DELETED, 0, err) : 0;
    free(msgs);
    return rc;
}

static int list_server_full(folder_run *r, ofs_error *err);

static int restore_deleted(folder_run *r, ofs_error *err)
{
    bool restored = false;
    state_intent_list l;
    if (state_intents_load(r->c->st, &l, err) < 0)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < l.n && rc == 0; i++) {
        const state_intent *in = &l.v[i];
        if (strcmp(in->op, "restore-deleted") != 0 || strcmp(in->folder, r->name) != 0)
            continue;
        if (r->c->dry_run)
            continue;
        rc = restore_one(r, in, err);
        if (rc == 0)
            rc = state_intent_delete(r->c->st, in->id, err);
        restored = true;
    }
    state_intent_list_free(&l);
    /* The listing was taken before: read the server again, with the flags back. */
    return rc == 0 && restored ? list_server_full(r, err) : rc;
}

/* ---- flags ---- */

typedef struct flag_op {
    unsigned add, del;
    store_msg m;
} flag_op;

static int cmp_flag_op(const void *a, const void *b)
{
    const flag_op *x = a, *y = b;
    if (x->add != y->add)
        return (x->add > y->add) - (x->add < y->add);
    return (x->del > y->del) - (x->del < y->del);
}

/* Applies ops grouped by (add, del), so the server gets one UID STORE per flag change. */
static int apply_flag_ops(store *s, flag_op *ops, size_t n, ofs_error *err)
{
    qsort(ops, n, sizeof *ops, cmp_flag_op);
    store_msg *msgs = xmalloc((n ? n : 1) * sizeof *msgs);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0;) {
        size_t j = i;
        while (j < n && ops[j].add == ops[i].add && ops[j].del == ops[i].del) {
            msgs[j - i] = ops[j].m;
            j++;
        }
        rc = s->ops->set_flags(s, msgs, j - i, ops[i].add, ops[i].del, err);
        i = j;
    }
    free(msgs);
    return rc;
}

/* Write-ahead: every pair about to change flags is marked with its target first. */
static int mark_flag_intents(folder_run *r, void *arg, ofs_error *err)
{
    const sync_plan *plan = arg;
    for (size_t i = 0; i < plan->n; i++) {
        const sync_action *a = &plan->v[i];
        if (a->kind != ACT_FLAGS)
            continue;
        state_pair *p = &r->pairs.v[a->pair];
        p->pending = PENDING_FLAGS;
        p->target = a->flags;
        if (state_pair_update(r->c->st, p, err) < 0)
            return -1;
    }
    return 0;
}

static void settle_flag_bases(folder_run *r, const sync_plan *plan)
{
    for (size_t i = 0; i < plan->n; i++) {
        const sync_action *a = &plan->v[i];
        if (a->kind != ACT_FLAGS)
            continue;
        state_pair *p = &r->pairs.v[a->pair];
        p->flags = a->flags;
        p->pending = PENDING_NONE;
        p->target = 0;
        defer_settle(r, p);
    }
}

static int exec_flags(folder_run *r, const sync_plan *plan, ofs_error *err)
{
    size_t n = plan->count[ACT_FLAGS];
    if (!n)
        return 0;
    flag_op *to_srv = xmalloc(n * sizeof *to_srv), *to_loc = xmalloc(n * sizeof *to_loc);
    size_t ns = 0, nl = 0;
    for (size_t i = 0; i < plan->n; i++) {
        const sync_action *a = &plan->v[i];
        if (a->kind != ACT_FLAGS)
            continue;
        const store_msg *s = &r->srv.v[a->srv], *l = &r->loc.v[a->loc];
        if (s->flags != a->flags)
            to_srv[ns++] = (flag_op){a->flags & ~s->flags, s->flags & ~a->flags, *s};
        if (l->flags != a->flags)
            to_loc[nl++] = (flag_op){a->flags & ~l->flags, l->flags & ~a->flags, *l};
    }
    /* The flag intents need no fsync: a pass cut short plans such a pair again from the same
     * base, intent or not, and the three-way merge of a half-applied change gives the same
     * result (test_plan). They mark the pairs for people (status) and for resolve_replans. */
    int rc = in_lazy_txn(r, mark_flag_intents, (void *)plan, err);
    if (rc == 0)
        rc = apply_flag_ops(r->c->srv, to_srv, ns, err);
    if (rc == 0)
        rc = apply_flag_ops(r->c->loc, to_loc, nl, err);
    free(to_srv);
    free(to_loc);
    if (rc < 0)
        return -1;
    r->st.flags_to_server += ns;
    r->st.flags_to_local += nl;
    return 0; /* settled by exec_changes once the server has answered */
}

/* ---- expunges ---- */

static int forget_pairs(folder_run *r, void *arg, ofs_error *err)
{
    const sync_plan *plan = arg;
    for (size_t i = 0; i < plan->n; i++) {
        int k = plan->v[i].kind;
        state_pair *p = plan->v[i].pair >= 0 ? &r->pairs.v[plan->v[i].pair] : NULL;
        if (k == ACT_EXPUNGE_SERVER || k == ACT_EXPUNGE_LOCAL || k == ACT_FORGET) {
            if (state_pair_delete(r->c->st, p->id, err) < 0)
                return -1;
        } else if (k == ACT_KEEP_LOCAL || k == ACT_KEEP_SERVER) {
            /* The policy keeps this copy: unpaired, it is neither removed nor copied back. */
            if (k == ACT_KEEP_LOCAL)
                p->uid = 0;
            else {
                free(p->key);
                p->key = NULL;
            }
            p->pending = PENDING_NONE;
            if (state_pair_update(r->c->st, p, err) < 0)
                return -1;
        }
    }
    return 0;
}

/* Records the UIDs in uids ("1 2 3") as a restore-deleted intent, when there are any. */
static int add_restore_intent(folder_run *r, buf *uids, ofs_error *err)
{
    if (!uids->len)
        return 0;
    buf_printf(uids, " @%u", r->si.uidvalidity);
    return state_intent_add(r->c->st, "restore-deleted", r->name, uids->data, &r->restore_id, err);
}

/* The UIDs that still carry \Deleted on the server once plan is carried out, as "1 2 3"
 * (those it removes left out). */
static void deleted_after_plan(folder_run *r, const sync_plan *plan, buf *uids)
{
    /* The server's flags as the flag step of this plan left them, -1 for those going now. */
    long *now = xmalloc((r->srv.n ? r->srv.n : 1) * sizeof *now);
    for (size_t i = 0; i < r->srv.n; i++)
        now[i] = r->srv.v[i].flags;
    for (size_t i = 0; i < plan->n; i++) {
        const sync_action *a = &plan->v[i];
        if (a->kind == ACT_FLAGS)
            now[a->srv] = a->flags;
        else if (a->kind == ACT_EXPUNGE_SERVER)
            now[a->srv] = -1;
    }
    for (size_t i = 0; i < r->srv.n; i++)
        if (now[i] >= 0 && (now[i] & FLAG_DELETED))
            buf_printf(uids, "%s%u", uids->len ? " " : "", r->srv.v[i].uid);
    free(now);
}

/* A message removed on one side may have been moved (to another folder, or under another
 * name) while the other side changed its flags: every removal is written down with the
 * message's content and that change (none, often), and carry.c gives the change to the one
 * copy of that content made since the last complete pass, when there is exactly one. */
static int carry_intent(folder_run *r, const sync_action *a, ofs_error *err)
{
    const state_pair *p = &r->pairs.v[a->pair];
    unsigned now = a->kind == ACT_EXPUNGE_SERVER ? r->srv.v[a->srv].flags : r->loc.v[a->loc].flags;
    unsigned add = now & ~p->flags, del = p->flags & ~now;
    /* A server removal starts with \Deleted: on a copy still there it may be our own, left by
     * a removal cut short, and is no change of the other side's. */
    if (a->kind == ACT_EXPUNGE_SERVER)
        add &= ~(unsigned)FLAG_DELETED;
    if (!p->hash)
        return 0;
    char *arg = xasprintf("%lld %u %u %s", (long long)p->id, add, del, p->hash);
    int rc = state_intent_add(r->c->st, "carry-flags", r->name, arg, NULL, err);
    free(arg);
    return rc;
}

/* Write-ahead for removals: the pairs are marked, and when the server has to expunge, the
 * UIDs other clients marked \Deleted are recorded, because without UIDPLUS the expunge lifts
 * their flag for a moment (RFC 4315 2.1): a crash then must not lose it. */
static int mark_expunge_intents(folder_run *r, void *arg, ofs_error *err)
{
    const sync_plan *plan = arg;
    for (size_t i = 0; i < plan->n; i++) {
        int k = plan->v[i].kind;
        if (k != ACT_EXPUNGE_SERVER && k != ACT_EXPUNGE_LOCAL)
            continue;
        state_pair *p = &r->pairs.v[plan->v[i].pair];
        p->pending = PENDING_EXPUNGE;
        if (state_pair_update(r->c->st, p, err) < 0 || carry_intent(r, &plan->v[i], err) < 0)
            return -1;
    }
    if (!plan->count[ACT_EXPUNGE_SERVER])
        return 0;
    buf uids;
    buf_init(&uids);
    deleted_after_plan(r, plan, &uids);
    int rc = add_restore_intent(r, &uids, err);
    buf_free(&uids);
    return rc;
}

static int drop_restore_intent(folder_run *r, void *arg, ofs_error *err)
{
    (void)arg;
    int rc = r->restore_id ? state_intent_delete(r->c->st, r->restore_id, err) : 0;
    r->restore_id = 0;
    return rc;
}

static int remove_from(store *s, const sync_plan *plan, int kind, const store_msg_list *l,
                       ofs_error *err)
{
    size_t n = plan->count[kind], k = 0;
    if (!n)
        return 0;
    store_msg *msgs = xmalloc(n * sizeof *msgs);
    for (size_t i = 0; i < plan->n; i++)
        if (plan->v[i].kind == kind)
            msgs[k++] = l->v[kind == ACT_EXPUNGE_SERVER ? plan->v[i].srv : plan->v[i].loc];
    int rc = s->ops->remove_messages(s, msgs, k, err);
    free(msgs);
    return rc;
}

/* A mail reader renaming a file while the scan ran can hide it from readdir. Before a local
 * absence removes mail from the server, a second scan must agree that it is gone. */
static int confirm_local_absence(folder_run *r, sync_plan *plan, ofs_error *err)
{
    if (!plan->count[ACT_EXPUNGE_SERVER])
        return 0;
    store_msg_list again;
    store_msg_list_init(&again);
    store_list_opts lo = {0};
    if (r->c->loc->ops->list_messages(r->c->loc, &lo, &again, err) < 0)
        return -1;
    char **keys = xmalloc((again.n ? again.n : 1) * sizeof *keys);
    for (size_t i = 0; i < again.n; i++)
        keys[i] = again.v[i].key;
    qsort(keys, again.n, sizeof *keys, cmp_keyp);
    for (size_t i = 0; i < plan->n; i++) {
        sync_action *a = &plan->v[i];
        if (a->kind == ACT_EXPUNGE_SERVER &&
            local_has_key(keys, again.n, r->pairs.v[a->pair].key)) {
            a->kind = ACT_NONE; /* still there: the next pass sees its true state */
            plan->count[ACT_EXPUNGE_SERVER]--;
        }
    }
    free(keys);
    store_msg_list_free(&again);
    return 0;
}

/* A removal wins over flag changes the other side made meanwhile (a deletion is deliberate,
 * flags are not content); the summary counts them so the user knows. */
static void count_flag_losses(folder_run *r, const sync_plan *plan)
{
    for (size_t i = 0; i < plan->n; i++) {
        const sync_action *a = &plan->v[i];
        const state_pair *p = a->pair >= 0 ? &r->pairs.v[a->pair] : NULL;
        if (a->kind == ACT_EXPUNGE_SERVER && r->srv.v[a->srv].flags != p->flags)
            r->flagged_removed++;
        else if (a->kind == ACT_EXPUNGE_LOCAL && r->loc.v[a->loc].flags != p->flags)
            r->flagged_removed++;
    }
}

static bool any_expunge_step(const sync_plan *plan)
{
    return plan->count[ACT_EXPUNGE_SERVER] || plan->count[ACT_EXPUNGE_LOCAL] ||
           plan->count[ACT_FORGET] || plan->count[ACT_KEEP_LOCAL] || plan->count[ACT_KEEP_SERVER];
}

static int exec_expunges(folder_run *r, sync_plan *plan, ofs_error *err)
{
    if (confirm_local_absence(r, plan, err) < 0)
        return -1;
    size_t removals = plan->count[ACT_EXPUNGE_SERVER] + plan->count[ACT_EXPUNGE_LOCAL];
    if (!any_expunge_step(plan))
        return 0;
    if (removals && in_txn(r, mark_expunge_intents, plan, err) < 0)
        return -1;
    count_flag_losses(r, plan);
    if (remove_from(r->c->srv, plan, ACT_EXPUNGE_SERVER, &r->srv, err) < 0 ||
        remove_from(r->c->loc, plan, ACT_EXPUNGE_LOCAL, &r->loc, err) < 0)
        return -1;
    r->st.expunged_server += plan->count[ACT_EXPUNGE_SERVER];
    r->st.expunged_local += plan->count[ACT_EXPUNGE_LOCAL];
    return 0; /* the pairs are forgotten by finish_expunges once the server has answered */
}

static int finish_expunges(folder_run *r, sync_plan *plan, ofs_error *err)
{
    if (!any_expunge_step(plan))
        return 0;
    if (in_txn(r, forget_pairs, (void *)plan, err) < 0)
        return -1;
    return r->restore_id ? in_txn(r, drop_restore_intent, NULL, err) : 0;
}

/* Flag changes and removals. The server's part (its STOREs, and \Deleted with UID EXPUNGE)
 * leaves in one burst once every intent is in, and is settled only when the server has
 * answered all of it: one round trip for the folder, not one per flag group and step. */
static int exec_changes(folder_run *r, sync_plan *plan, ofs_error *err)
{
    store *srv = r->c->srv;
    bool batch = r->srv_open && srv->ops->begin_batch;
    if (batch)
        srv->ops->begin_batch(srv);
    int rc = exec_flags(r, plan, err);
    if (rc == 0)
        rc = exec_expunges(r, plan, err);
    ofs_error ignored;
    if (batch && srv->ops->end_batch(srv, rc < 0 ? &ignored : err) < 0)
        rc = -1;
    if (rc == 0 && plan->count[ACT_FLAGS])
        settle_flag_bases(r, plan);
    return rc == 0 ? finish_expunges(r, plan, err) : -1;
}

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

static void dedupe_free(dedupe_set *d)
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

static int dedupe_build(folder_run *r, sync_plan *plan, ofs_error *err)
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
    return hash_messages(r, r->c->loc, d->msgs, d->n, d->hashes, d->sizes, err);
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
    b->fd = temp_open(b->r, err);
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
        emit(r, OFS_EV_PROGRESS, NULL);
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
    emit(r, OFS_EV_PROGRESS, NULL);
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
        store_msg s = {.uid = it->p.uid}, l = {.key = it->p.key};
        unsigned u = it->srv_flags | it->loc_flags;
        if (u != it->srv_flags)
            rc = r->c->srv->ops->set_flags(r->c->srv, &s, 1, u & ~it->srv_flags, 0, err);
        if (rc == 0 && u != it->loc_flags)
            rc = r->c->loc->ops->set_flags(r->c->loc, &l, 1, u & ~it->loc_flags, 0, err);
        n++;
    }
    return rc == 0 && n ? in_txn(r, union_bases, b, err) : rc;
}

/* Intents committed, files flushed into cur/ and new/, pairs settled: a crash anywhere in
 * between leaves intents that resolve_downloads settles without copying anything twice. */
static int commit_downloads(folder_run *r, copy_batch *b, ofs_error *err)
{
    if (!b->n)
        return 0;
    size_t deduped = 0;
    for (size_t i = 0; i < b->n; i++) {
        b->items[i].p.pending = PENDING_DOWNLOAD;
        deduped += b->items[i].deduped;
    }
    if (in_txn(r, add_intents, b, err) < 0 || r->c->loc->ops->flush(r->c->loc, err) < 0)
        return -1;
    for (size_t i = 0; i < b->n; i++) {
        b->items[i].p.pending = PENDING_NONE;
        defer_settle(r, &b->items[i].p);
    }
    if (union_dedupe_flags(r, b, err) < 0)
        return -1;
    r->st.downloaded += b->n - deduped;
    r->c->progress++;
    return 0;
}

/* One big message through a partial file that survives cuts and passes: every byte that
 * arrived stays, and the next try asks only for the rest. */
static int download_in_ranges(folder_run *r, const store_msg *m, ofs_error *err)
{
    partial_file pf;
    if (partial_open(&pf, r->c->acct->local, r->name, r->si.uidvalidity, m, err) < 0) {
        partial_close(&pf, false);
        return -1;
    }
    if (pf.have) {
        char *line = xasprintf("resuming UID %u at %llu of %llu bytes", m->uid,
                               (unsigned long long)pf.have, (unsigned long long)m->size);
        notice(r, line);
        free(line);
    }
    uint64_t before = pf.have;
    int rc = partial_fetch(&pf, r->c->srv, m, &r->c->link_rate, err);
    if (pf.have > before)
        r->c->progress++;
    if (rc != 0) {
        partial_close(&pf, rc == 1); /* 1: gone from the server; keep the bytes otherwise */
        return rc < 0 ? -1 : 0;
    }
    copy_batch b = {.r = r, .fd = pf.fd};
    pf.fd = -1; /* download_done closes it */
    if (lseek(b.fd, 0, SEEK_SET) < 0)
        rc = err_errno(err, OFS_E_IO, errno, "cannot rewind %s", pf.path);
    if (rc == 0)
        rc = download_done(&b, m, b.fd, pf.have, err);
    if (rc == 0)
        rc = commit_downloads(r, &b, err);
    batch_free(&b);
    partial_close(&pf, rc == 0); /* the Maildir copy is durable: the partial file can go */
    return rc;
}

static int exec_downloads(folder_run *r, const sync_plan *plan, ofs_error *err)
{
    size_t n = plan->count[ACT_DOWNLOAD];
    if (!n)
        return 0;
    store_msg *msgs = xmalloc(n * sizeof *msgs);
    size_t k = 0;
    int rc = 0;
    /* Big messages one by one, in resumable ranges; the rest in batches. */
    for (size_t i = 0; i < plan->n && rc == 0; i++) {
        if (plan->v[i].kind != ACT_DOWNLOAD)
            continue;
        const store_msg *m = &r->srv.v[plan->v[i].srv];
        if (partial_wanted(r->c->srv, m))
            rc = download_in_ranges(r, m, err);
        else
            msgs[k++] = *m;
    }
    copy_batch b = {.r = r, .fd = -1};
    store_sink sink = {sink_open, download_done, &b};
    for (size_t i = 0; i < k && rc == 0; i += DOWNLOAD_BATCH) {
        size_t len = k - i < DOWNLOAD_BATCH ? k - i : DOWNLOAD_BATCH;
        rc = r->c->srv->ops->fetch_messages(r->c->srv, msgs + i, len, &sink, err);
        /* What arrived before a failure is kept: it is complete and staged. */
        ofs_error e2;
        if (commit_downloads(r, &b, rc < 0 ? &e2 : err) < 0 && rc == 0)
            rc = -1;
        batch_free(&b);
    }
    free(msgs);
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
    return max + 1;
}

static void count_upload(folder_run *r, const copy_item *it)
{
    r->st.bytes_up += it->p.size;
    r->st.uploaded++;
    r->done++;
    r->c->progress++;
    r->bytes_done += it->p.size;
    emit(r, OFS_EV_PROGRESS, NULL);
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
        rc = in_txn(r, add_intents, &b, err);
    if (rc == 0) {
        rc = append_items(r, &b, err);
        ofs_error e2;
        if (in_txn(r, settle_items, &b, rc < 0 ? &e2 : err) < 0)
            rc = -1;
        for (size_t i = 0; i < b.n; i++)
            if (!b.items[i].p.uid)
                *unpaired = true;
    }
    batch_free(&b);
    return rc;
}

static int exec_uploads(folder_run *r, const sync_plan *plan, ofs_error *err)
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
    if (rc == 0 && unpaired && (rc = reload_pairs(r, err)) == 0)
        rc = resolve_pending(r, err);
    r->own_appends = false;
    r->repaired = repaired;
    return rc;
}

/* ---- messages edited in place ---- */

/* A local file rewritten under its own name (an editor, formail) holds a new version of the
 * message. Its stamp changed since it last matched the pair's hash, and hashing it again
 * tells an edit from a touch; unchanged stamps cost no read at all. The new version is
 * uploaded as a new message and paired with the file; only once that pair is recorded is the
 * old server copy removed. A "replace-edited" intent ("UIDVALIDITY UID KEY"), written when
 * the old pair is dropped, carries that across a crash and keeps the old copy from being
 * taken for new mail meanwhile. */
typedef struct local_edit {
    long pair;
    bool srv_gone; /* expunged on the server meanwhile: uploaded as new, nothing replaced */
} local_edit;

typedef struct replacement {
    int64_t intent;
    uint32_t uid; /* the old copy on the server */
    char *key;    /* the edited file */
} replacement;

/* A message's index in a listing by key: the key comes first so cmp_keyp sorts these. */
typedef struct key_idx {
    const char *key;
    long idx;
} key_idx;

static key_idx *index_keys(const store_msg_list *l)
{
    key_idx *v = xmalloc((l->n ? l->n : 1) * sizeof *v);
    for (size_t i = 0; i < l->n; i++)
        v[i] = (key_idx){l->v[i].key, (long)i};
    qsort(v, l->n, sizeof *v, cmp_keyp);
    return v;
}

static const key_idx *find_key(const key_idx *v, size_t n, const char *key)
{
    return key ? bsearch(&key, v, n, sizeof *v, cmp_keyp) : NULL;
}

static int record_stamps(folder_run *r, void *arg, ofs_error *err)
{
    const uint64_t *stamps = arg;
    for (size_t i = 0; i < r->pairs.n; i++) {
        if (!stamps[i])
            continue;
        r->pairs.v[i].stamp = stamps[i];
        if (state_pair_update(r->c->st, &r->pairs.v[i], err) < 0)
            return -1;
    }
    return 0;
}

/* Takes an edit into the plan as an upload. Expunged on the server meanwhile, it is not
 * removed locally: a user's edit is never lost. Kept local-only by the expunge policy, it
 * stays so. Flag changes planned for it are carried out first, so the upload has them. */
static void plan_edit(folder_run *r, sync_plan *plan, long pair, long loc)
{
    local_edit e = {pair, false};
    for (size_t i = 0; i < plan->n; i++) {
        sync_action *a = &plan->v[i];
        if (a->pair != pair)
            continue;
        if (a->kind == ACT_KEEP_LOCAL)
            return;
        if (a->kind == ACT_EXPUNGE_LOCAL) {
            a->kind = ACT_NONE;
            plan->count[ACT_EXPUNGE_LOCAL]--;
            plan->count[ACT_NONE]++;
            e.srv_gone = true;
        }
    }
    r->edits = xrealloc(r->edits, (r->n_edits + 1) * sizeof *r->edits);
    r->edits[r->n_edits++] = e;
    sync_plan_add(plan, ACT_UPLOAD, -1, -1, loc, 0);
}

/* Judges the files whose stamp changed: same content, the new stamp is recorded; new
 * content, an edit. A pair without a stamp yet (a state from before stamps, a download cut
 * short) takes the file's as it is. */
static int judge_stamps(folder_run *r, sync_plan *plan, const long *cand, const long *cand_loc,
                        size_t n, uint64_t *stamps, ofs_error *err)
{
    store_msg *msgs = xmalloc((n ? n : 1) * sizeof *msgs);
    for (size_t j = 0; j < n; j++)
        msgs[j] = r->loc.v[cand_loc[j]];
    char **hashes = xcalloc(n ? n : 1, sizeof *hashes);
    uint64_t *sizes = xcalloc(n ? n : 1, sizeof *sizes);
    int rc = hash_messages(r, r->c->loc, msgs, n, hashes, sizes, err);
    for (size_t j = 0; j < n && rc == 0; j++) {
        const state_pair *p = &r->pairs.v[cand[j]];
        if (!hashes[j])
            continue; /* gone meanwhile: the next pass sees what became of it */
        if (p->hash ? strcmp(p->hash, hashes[j]) == 0 : sizes[j] == p->size)
            stamps[cand[j]] = msgs[j].stamp;
        else
            plan_edit(r, plan, cand[j], cand_loc[j]);
    }
    for (size_t j = 0; j < n; j++)
        free(hashes[j]);
    free(hashes);
    free(sizes);
    free(msgs);
    return rc;
}

static int find_edits(folder_run *r, sync_plan *plan, ofs_error *err)
{
    key_idx *by_key = index_keys(&r->loc);
    size_t np = r->pairs.n ? r->pairs.n : 1, n = 0;
    uint64_t *stamps = xcalloc(np, sizeof *stamps);
    long *cand = xmalloc(np * sizeof *cand), *cand_loc = xmalloc(np * sizeof *cand_loc);
    bool record = false;
    for (size_t i = 0; i < r->pairs.n; i++) {
        const state_pair *p = &r->pairs.v[i];
        const key_idx *k = p->uid && !p->pending ? find_key(by_key, r->loc.n, p->key) : NULL;
        const store_msg *m = k ? &r->loc.v[k->idx] : NULL;
        if (!m || !m->stamp || m->stamp == p->stamp)
            continue;
        if (!p->stamp) {
            stamps[i] = m->stamp;
            record = true;
            continue;
        }
        cand[n] = (long)i;
        cand_loc[n++] = k->idx;
    }
    int rc = n ? judge_stamps(r, plan, cand, cand_loc, n, stamps, err) : 0;
    for (size_t i = 0; i < r->pairs.n && !record; i++)
        record = stamps[i] != 0;
    if (rc == 0 && record && !r->c->dry_run)
        rc = in_txn(r, record_stamps, stamps, err);
    free(cand);
    free(cand_loc);
    free(stamps);
    free(by_key);
    return rc;
}

/* Write-ahead: the edited pairs are dropped (their files upload as new messages) and the
 * old server copies recorded for replacement, in one commit. */
static int detach_edits(folder_run *r, void *arg, ofs_error *err)
{
    (void)arg;
    for (size_t i = 0; i < r->n_edits; i++) {
        const state_pair *p = &r->pairs.v[r->edits[i].pair];
        if (!r->edits[i].srv_gone) {
            char *a = xasprintf("%u %u %s", r->si.uidvalidity, p->uid, p->key);
            int64_t id;
            int rc = state_intent_add(r->c->st, "replace-edited", r->name, a, &id, err);
            free(a);
            if (rc < 0)
                return -1;
            r->repl = xrealloc(r->repl, (r->n_repl + 1) * sizeof *r->repl);
            r->repl[r->n_repl++] = (replacement){id, p->uid, xstrdup(p->key)};
        }
        if (state_pair_delete(r->c->st, p->id, err) < 0)
            return -1;
    }
    return 0;
}

static int exec_edits(folder_run *r, ofs_error *err)
{
    if (!r->n_edits)
        return 0;
    for (size_t i = 0; i < r->n_edits; i++)
        r->edited_gone += r->edits[i].srv_gone;
    return in_txn(r, detach_edits, NULL, err);
}

static void replacements_free(folder_run *r)
{
    for (size_t i = 0; i < r->n_repl; i++)
        free(r->repl[i].key);
    free(r->repl);
    r->repl = NULL;
    r->n_repl = 0;
}

static void drop_listed(store_msg_list *l, uint32_t uid)
{
    for (size_t i = 0; i < l->n; i++) {
        if (l->v[i].uid != uid)
            continue;
        free(l->v[i].key);
        free(l->v[i].msgid);
        memmove(&l->v[i], &l->v[i + 1], (l->n - i - 1) * sizeof *l->v);
        l->n--;
        return;
    }
}

/* The replacements an earlier step of this pass, or a pass cut short, left: their old copies
 * are out of the listing. One recorded under another UIDVALIDITY names nothing any more. */
static int load_replacements(folder_run *r, ofs_error *err)
{
    state_intent_list l;
    if (state_intents_load(r->c->st, &l, err) < 0)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < l.n && rc == 0; i++) {
        const state_intent *in = &l.v[i];
        if (strcmp(in->op, "replace-edited") != 0 || strcmp(in->folder, r->name) != 0)
            continue;
        char *uid_at = NULL, *key = NULL;
        unsigned long uv = in->arg ? strtoul(in->arg, &uid_at, 10) : 0;
        unsigned long uid = uid_at ? strtoul(uid_at, &key, 10) : 0;
        if (!uid || !key || *key != ' ' || !key[1] || uv != r->si.uidvalidity) {
            if (!r->c->dry_run)
                rc = state_intent_delete(r->c->st, in->id, err);
            continue;
        }
        drop_listed(&r->srv, uid);
        r->repl = xrealloc(r->repl, (r->n_repl + 1) * sizeof *r->repl);
        r->repl[r->n_repl++] = (replacement){in->id, (uint32_t)uid, xstrdup(key + 1)};
    }
    state_intent_list_free(&l);
    return rc;
}

static int need_server(folder_run *r, ofs_error *err);

/* Without UIDPLUS the removal lifts \Deleted from the others for a moment: those the plan
 * left, and this pass's uploads that carry it (not in the listing), are recorded first. */
static int mark_replace_intents(folder_run *r, void *arg, ofs_error *err)
{
    const sync_plan *plan = arg;
    buf uids;
    buf_init(&uids);
    deleted_after_plan(r, plan, &uids);
    uint32_t *listed = xmalloc((r->srv.n ? r->srv.n : 1) * sizeof *listed);
    for (size_t i = 0; i < r->srv.n; i++)
        listed[i] = r->srv.v[i].uid;
    qsort(listed, r->srv.n, sizeof *listed, cmp_u32);
    for (size_t i = 0; i < r->pairs.n; i++) {
        const state_pair *p = &r->pairs.v[i];
        if (p->uid && (p->flags & FLAG_DELETED) &&
            !bsearch(&p->uid, listed, r->srv.n, sizeof *listed, cmp_u32))
            buf_printf(&uids, "%s%u", uids.len ? " " : "", p->uid);
    }
    free(listed);
    int rc = add_restore_intent(r, &uids, err);
    buf_free(&uids);
    return rc;
}

static int drop_replacements(folder_run *r, void *arg, ofs_error *err)
{
    const char *done = arg;
    for (size_t i = 0; i < r->n_repl; i++)
        if (done[i] && state_intent_delete(r->c->st, r->repl[i].intent, err) < 0)
            return -1;
    return drop_restore_intent(r, NULL, err);
}

/* Removes the old copies whose edited file is now paired with its new server copy. A file
 * gone before its upload was recorded gives its old copy back to the folder. */
static int replace_edited(folder_run *r, const sync_plan *plan, ofs_error *err)
{
    if (!r->n_repl)
        return 0;
    if (reload_pairs(r, err) < 0)
        return -1;
    key_idx *loc = index_keys(&r->loc);
    store_msg *go = xmalloc(r->n_repl * sizeof *go);
    char *done = xcalloc(r->n_repl, 1);
    size_t n_go = 0;
    for (size_t i = 0; i < r->n_repl; i++) {
        const state_pair *p = NULL;
        for (size_t j = 0; j < r->pairs.n && !p; j++)
            if (r->pairs.v[j].key && strcmp(r->pairs.v[j].key, r->repl[i].key) == 0)
                p = &r->pairs.v[j];
        if (p && p->uid && !p->pending && p->uid != r->repl[i].uid) {
            go[n_go++] = (store_msg){.uid = r->repl[i].uid};
            done[i] = 1;
        } else if (!p && !find_key(loc, r->loc.n, r->repl[i].key)) {
            done[i] = 1;
        }
    }
    int rc = 0;
    if (n_go) {
        rc = need_server(r, err);
        if (rc == 0)
            rc = in_txn(r, mark_replace_intents, (void *)plan, err);
        if (rc == 0)
            rc = r->c->srv->ops->remove_messages(r->c->srv, go, n_go, err);
    }
    if (rc == 0)
        rc = in_txn(r, drop_replacements, done, err);
    if (rc == 0)
        r->edited += n_go;
    free(done);
    free(go);
    free(loc);
    return rc;
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

static int list_local(folder_run *r, ofs_error *err)
{
    store *loc = r->c->loc;
    /* A stat per file shows edits in place; a folder whose directories did not change since
     * the last complete pass had no file replaced, so it is spared. */
    bool same_dirs = r->has_mark && r->local_mark && r->mark.local_mark &&
                     strcmp(r->local_mark, r->mark.local_mark) == 0;
    store_list_opts lo = {.want_stamp = !same_dirs};
    if (loc->ops->open_folder(loc, r->name, &r->li, err) < 0)
        return -1;
    return loc->ops->list_messages(loc, &lo, &r->loc, err);
}

static int list_server_full(folder_run *r, ofs_error *err)
{
    store_list_opts so = {.want_size = true};
    store_msg_list_free(&r->srv);
    return r->c->srv->ops->list_messages(r->c->srv, &so, &r->srv, err);
}

static int cmp_msg_uid(const void *a, const void *b)
{
    uint32_t x = ((const store_msg *)a)->uid, y = ((const store_msg *)b)->uid;
    return (x > y) - (x < y);
}

/* The server listing rebuilt from the base: the server said what changed since the last
 * complete pass (changed, vanished), so every other settled pair below `below` still has its
 * base flags there. UIDs from `below` on are listed by the server itself. The caller checks
 * that the result adds up to the server's message count before trusting it. */
static void base_push(folder_run *r, uint32_t uid, unsigned flags, uint64_t size, uint32_t below,
                      const store_msg_list *changed, uidset *vanished)
{
    if (!uid || uid >= below || (vanished && uidset_has(vanished, uid)))
        return;
    store_msg key = {.uid = uid};
    const store_msg *ch =
        changed->n ? bsearch(&key, changed->v, changed->n, sizeof key, cmp_msg_uid) : NULL;
    store_msg *m = store_msg_list_push(&r->srv);
    m->uid = uid;
    m->flags = ch ? ch->flags : flags;
    m->size = size;
}

static void srv_from_base(folder_run *r, uint32_t below, store_msg_list *changed, uidset *vanished)
{
    if (changed->n > 1)
        qsort(changed->v, changed->n, sizeof *changed->v, cmp_msg_uid);
    store_msg_list_free(&r->srv);
    /* Pairs and held-back messages merged in UID order; their flags do not matter to the plan,
     * their sizes keep them held back. */
    const state_held_list *h = &r->held_base;
    size_t j = 0;
    for (size_t i = 0; i < r->pairs.n || j < h->n;) {
        const state_pair *p = i < r->pairs.n ? &r->pairs.v[i] : NULL;
        if (j < h->n && (!p || (p->uid && h->v[j].uid < p->uid))) {
            base_push(r, h->v[j].uid, 0, h->v[j].size, below, changed, vanished);
            j++;
            continue;
        }
        if (j < h->n && h->v[j].uid == p->uid)
            j++; /* paired since: the pair is what the server has */
        base_push(r, p->uid, p->flags, p->size, below, changed, vanished);
        i++;
    }
    /* Changed messages below `below` that no pair knows: listed so that they are copied.
     * The pairs come in UID order, so the listing so far is sorted. */
    size_t paired = r->srv.n;
    for (size_t i = 0; i < changed->n; i++) {
        const store_msg *ch = &changed->v[i];
        if (ch->uid >= below || (vanished && uidset_has(vanished, ch->uid)))
            continue;
        if (!paired || !bsearch(ch, r->srv.v, paired, sizeof *ch, cmp_msg_uid)) {
            store_msg *m = store_msg_list_push(&r->srv);
            m->uid = ch->uid;
            m->flags = ch->flags;
        }
    }
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
        return check_uidvalidity(r, err) < 0 ? -1 : list_server_full(r, err);
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
    if (rc == 0) {
        srv_from_base(r, below, &ch.changed, &ch.vanished);
        for (size_t i = 0; i < ch.listed.n; i++) {
            *store_msg_list_push(&r->srv) = ch.listed.v[i]; /* moved: the listing gives it up */
            ch.listed.v[i] = (store_msg){0};
        }
        if (r->srv.n != r->si.exists)
            rc = 1; /* does not add up (e.g. mail arrived meanwhile): list in full */
        else
            store_msg_list_free(&ch.listed);
    } else if (rc == 1) {
        store_msg_list_free(&r->srv);
        r->srv = ch.listed; /* the whole folder */
        store_msg_list_init(&ch.listed);
        rc = 2;
    }
    store_msg_list_free(&ch.changed);
    store_msg_list_free(&ch.listed);
    uidset_free(&ch.vanished);
    if (rc < 0 || check_uidvalidity(r, err) < 0)
        return -1;
    return rc == 1 ? list_server_full(r, err) : 0;
}

/* Selects the server folder when the plan needs it and the pass had no reason to before. */
static int need_server(folder_run *r, ofs_error *err)
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
    if (!r->local_mark && r->c->loc->ops->folder_mark)
        r->local_mark = r->c->loc->ops->folder_mark(r->c->loc, r->name);
    if (state_pairs_load(r->c->st, r->sf.id, &r->pairs, err) < 0)
        return -1;
    bool pending = any_pending(r);
    if (skip == SKIP_SERVER && !pending) {
        r->si = status;
        srv_from_base(r, status.uidnext, &(store_msg_list){0}, NULL);
        if (r->srv.n != status.exists)
            skip = SKIP_NONE;
    }
    uint32_t expect_new = skip == SKIP_NONE && r->has_mark && status.uidnext > r->sf.uidnext
                              ? status.uidnext - r->sf.uidnext
                              : 0;
    if ((skip != SKIP_SERVER || pending) && open_server(r, pending, expect_new, err) < 0)
        return -1;
    if (r->srv_open && restore_deleted(r, err) < 0)
        return -1;
    if (list_local(r, err) < 0)
        return -1;
    if (!any_pending(r))
        return 0;
    if (r->c->dry_run) {
        notice(r, "dry run: interrupted operations would be resumed first (the plan below "
                  "assumes they did not happen)");
        return 0;
    }
    /* Left by a killed pass, or a new UIDVALIDITY turned every pair into an intent just now. */
    return resolve_pending(r, err) < 0 ? -1 : 0;
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
        emit(r, OFS_EV_FOLDER_DONE, text);
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
    emit(r, OFS_EV_FOLDER_DONE, line.data);
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
    if (in_lazy_txn(r, record_folder, &local_changed, err) < 0)
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
    emit(r, OFS_EV_FOLDER_DONE, line.len > start ? line.data : "in sync");
    buf_free(&line);
}

static int run_folder(folder_run *r, ofs_error *err)
{
    emit(r, OFS_EV_FOLDER_START, NULL);
    if (load_folder_row(r, err) < 0)
        return -1;
    int skipped = open_and_list(r, err);
    if (skipped < 0)
        return -1;
    if (skipped) {
        summarize(r);
        return 0;
    }
    if (load_replacements(r, err) < 0)
        return -1;
    sync_plan plan;
    sync_plan_folder(&r->pairs, &r->srv, &r->loc, &plan);
    sync_plan_expunge_policy(&plan, r->c->acct->expunge);
    hold_back(r, &plan);
    if (find_edits(r, &plan, err) < 0) {
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
        emit(r, OFS_EV_PROGRESS, NULL);
    bool local_changed =
        plan.count[ACT_DOWNLOAD] || plan.count[ACT_EXPUNGE_LOCAL] || plan.to_local_flags;
    int rc = 0;
    if (plan.n)
        rc = forget_mark(r, err);
    if (rc == 0 && plan.n)
        rc = need_server(r, err);
    if (rc == 0)
        rc = exec_changes(r, &plan, err);
    if (rc == 0)
        rc = exec_edits(r, err);
    if (rc == 0)
        rc = dedupe_build(r, &plan, err);
    if (rc == 0)
        rc = exec_downloads(r, &plan, err);
    if (rc == 0)
        rc = exec_uploads(r, &plan, err);
    if (rc == 0)
        rc = replace_edited(r, &plan, err);
    sync_plan_free(&plan);
    dedupe_free(r->dd);
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
    c->run = &r;
    int rc = run_folder(&r, err);
    c->run = NULL;
    if (rc < 0)
        err_prefix(err, "%s", name);
    sync_stats_add(&c->stats, &r.st);
    state_folder_free(&r.sf);
    free(r.mark.local_mark);
    free(r.local_mark);
    state_pair_list_free(&r.pairs);
    store_msg_list_free(&r.srv);
    store_msg_list_free(&r.loc);
    state_pair_list_free(&r.deferred);
    buf_free(&r.held);
    state_held_list_free(&r.held_base);
    state_held_list_free(&r.held_now);
    free(r.edits);
    replacements_free(&r);
    return rc;
}
