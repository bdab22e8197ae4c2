/* pending.c: what a killed pass left behind: download, upload, flag and removal intents
 * resolved before planning, and a new UIDVALIDITY turning every pair into an upload intent. */
#include <stdlib.h>
#include <string.h>

#include "sync/engine_int.h"
#include "util/err.h"

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
        if (bsearch(&m->uid, paired, n_paired, sizeof *paired, engine_cmp_u32))
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
    int rc = engine_hash_messages(r, r->c->srv, pick, k, h, NULL, err);
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
    key_idx *keys = engine_index_keys(&r->loc);
    int rc = 0;
    for (size_t i = 0; i < r->pairs.n && rc == 0; i++) {
        state_pair *p = &r->pairs.v[i];
        if (p->pending != PENDING_DOWNLOAD)
            continue;
        if (engine_find_key(keys, r->loc.n, p->key)) {
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
    qsort(paired, n_paired, sizeof *paired, engine_cmp_u32);
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
        rc = engine_in_txn(r, resolve_uploads, &c, err);
    for (size_t i = 0; i < c.l.n; i++)
        free(c.hashes[i]);
    free(c.hashes);
    free(c.used);
    free(c.by_key);
    free(c.pend);
    store_msg_list_free(&c.l);
    return rc;
}

int pending_resolve(folder_run *r, ofs_error *err)
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
    if (replans && engine_in_txn(r, resolve_replans, NULL, err) < 0)
        return -1;
    if (downloads && engine_in_txn(r, resolve_downloads, NULL, err) < 0)
        return -1;
    if (since && resolve_upload_intents(r, since, err) < 0)
        return -1;
    return (downloads || since || replans) ? engine_reload_pairs(r, err) : 0;
}

/* A new UIDVALIDITY means every UID we knew is void. Each pair becomes an upload intent
 * with no lower UID bound, so pending_resolve re-pairs it by Message-ID, size and content;
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

int pending_check_uidvalidity(folder_run *r, ofs_error *err)
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
    if (!r->pairs_whole && engine_reload_pairs(r, err) < 0)
        return -1;
    if (engine_in_txn(r, void_uids, NULL, err) < 0)
        return -1;
    return engine_reload_pairs(r, err);
}
