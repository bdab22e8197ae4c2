/* plan.c: the sync rules of DESIGN.md section 3 for one folder, without I/O.
 * Lookups go through sorted index arrays so a 100,000-message folder plans in milliseconds. */
#include "sync/plan.h"

#include "sync/config.h"

#include <stdlib.h>
#include <string.h>

unsigned sync_merge_flags(unsigned base, unsigned server, unsigned local)
{
    unsigned srv_changed = base ^ server;
    return (server & srv_changed) | (local & ~srv_changed);
}

void sync_plan_free(sync_plan *p)
{
    free(p->v);
    memset(p, 0, sizeof *p);
}

static void plan_add(sync_plan *p, int kind, long pair, long srv, long loc, unsigned flags,
                     uint32_t uid)
{
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 64;
        p->v = xrealloc(p->v, p->cap * sizeof *p->v);
    }
    p->v[p->n++] = (sync_action){
        .kind = kind, .flags = flags, .pair = pair, .srv = srv, .loc = loc, .uid = uid};
    p->count[kind]++;
}

void sync_plan_add(sync_plan *p, int kind, long pair, long srv, long loc, unsigned flags)
{
    plan_add(p, kind, pair, srv, loc, flags, 0);
}

/* Sorted views of the two listings, for binary search by uid and by key. */
typedef struct index_view {
    const store_msg *base;
    long *idx;
    size_t n;
} index_view;

static int cmp_uid(const void *a, const void *b, void *ctx)
{
    const store_msg *m = ctx;
    uint32_t x = m[*(const long *)a].uid, y = m[*(const long *)b].uid;
    return (x > y) - (x < y);
}

static int cmp_key(const void *a, const void *b, void *ctx)
{
    const store_msg *m = ctx;
    return strcmp(m[*(const long *)a].key, m[*(const long *)b].key);
}

static void view_build(index_view *v, const store_msg_list *l,
                       int (*cmp)(const void *, const void *, void *))
{
    v->base = l->v;
    v->n = l->n;
    v->idx = xmalloc((l->n ? l->n : 1) * sizeof *v->idx);
    for (size_t i = 0; i < l->n; i++)
        v->idx[i] = (long)i;
    qsort_r(v->idx, v->n, sizeof *v->idx, cmp, (void *)l->v);
}

static long view_find_uid(const index_view *v, uint32_t uid)
{
    size_t lo = 0, hi = v->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        uint32_t u = v->base[v->idx[mid]].uid;
        if (u == uid)
            return v->idx[mid];
        if (u < uid)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

static long view_find_key(const index_view *v, const char *key)
{
    size_t lo = 0, hi = v->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(v->base[v->idx[mid]].key, key);
        if (c == 0)
            return v->idx[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

/* One side of one pair: its listing entry (at), SRV_BASE or LOC_BASE, or -1 (absent); flags
 * its flags there. */
typedef struct pair_side {
    long at;
    unsigned flags;
} pair_side;

static void plan_pair(sync_plan *out, long i, const state_pair *p, pair_side sv, pair_side lv)
{
    long s = sv.at, l = lv.at;
    uint32_t uid = s != -1 ? p->uid : 0;
    if (!p->uid || !p->key) { /* one copy kept by policy: nothing to carry over */
        if (s == -1 && l == -1)
            plan_add(out, ACT_FORGET, i, -1, -1, 0, 0);
        return;
    }
    if (s != -1 && l != -1) {
        unsigned sf = sv.flags, lf = lv.flags;
        unsigned merged = sync_merge_flags(p->flags, sf, lf);
        if (merged != sf || merged != lf || merged != p->flags) {
            plan_add(out, ACT_FLAGS, i, s, l, merged, uid);
            out->to_server_flags += merged != sf;
            out->to_local_flags += merged != lf;
        }
    } else if (s != -1) {
        plan_add(out, ACT_EXPUNGE_SERVER, i, s, -1, 0, uid);
    } else if (l != -1) {
        plan_add(out, ACT_EXPUNGE_LOCAL, i, -1, l, 0, 0);
    } else {
        plan_add(out, ACT_FORGET, i, -1, -1, 0, 0);
    }
}

bool srv_view_covers(const srv_view *v, uint32_t uid)
{
    return uid && uid < v->below && !(v->gone && uidset_has(v->gone, uid));
}

void sync_plan_folder(const state_pair_list *pairs, const store_msg_list *srv,
                      const store_msg_list *loc, sync_plan *out)
{
    srv_view v = {.listed = srv};
    sync_plan_folder_view(pairs, &v, loc, out);
}

struct plan_index {
    index_view sv, lv;
    char *srv_paired, *loc_paired;
};

void sync_plan_begin(sync_plan_walk *w)
{
    memset(w->out, 0, sizeof *w->out);
    struct plan_index *x = xmalloc(sizeof *x);
    const store_msg_list *srv = w->srv->listed;
    view_build(&x->sv, srv, cmp_uid);
    view_build(&x->lv, w->loc, cmp_key);
    x->srv_paired = xcalloc(srv->n ? srv->n : 1, 1);
    x->loc_paired = xcalloc(w->loc->n ? w->loc->n : 1, 1);
    w->idx = x;
    w->seen = 0;
}

void sync_plan_window(sync_plan_walk *w, const state_pair_list *pairs)
{
    struct plan_index *x = w->idx;
    const store_msg_list *srv = w->srv->listed;
    for (size_t i = 0; i < pairs->n; i++, w->seen++) {
        const state_pair *p = &pairs->v[i];
        long s = p->uid ? view_find_uid(&x->sv, p->uid) : -1;
        long l = p->key ? view_find_key(&x->lv, p->key) : -1;
        pair_side sside = {s, s >= 0 ? srv->v[s].flags : p->flags};
        pair_side lside = {l, l >= 0 ? w->loc->v[l].flags : p->flags};
        if (s >= 0)
            x->srv_paired[s] = 1;
        else if (srv_view_covers(w->srv, p->uid))
            sside.at = SRV_BASE;
        if (l >= 0)
            x->loc_paired[l] = 1;
        else if (w->loc_has && p->key && w->loc_has(p, w->loc_arg))
            lside.at = LOC_BASE;
        size_t before = w->out->n;
        plan_pair(w->out, w->kept ? (long)w->kept->n : w->seen, p, sside, lside);
        if (w->kept && (w->out->n > before ||
                        (w->keep && w->keep(p, l >= 0 ? &w->loc->v[l] : NULL, w->keep_arg))))
            state_pair_list_add_copy(w->kept, p);
    }
}

void sync_plan_end(sync_plan_walk *w)
{
    struct plan_index *x = w->idx;
    const store_msg_list *srv = w->srv->listed, *loc = w->loc;
    /* In uid order, so downloads arrive oldest first. */
    for (size_t j = 0; j < x->sv.n; j++)
        if (!x->srv_paired[x->sv.idx[j]])
            plan_add(w->out, ACT_DOWNLOAD, -1, x->sv.idx[j], -1, srv->v[x->sv.idx[j]].flags,
                     srv->v[x->sv.idx[j]].uid);
    /* In key order: Maildir keys start with the delivery time. */
    for (size_t j = 0; j < x->lv.n; j++)
        if (!x->loc_paired[x->lv.idx[j]])
            plan_add(w->out, ACT_UPLOAD, -1, -1, x->lv.idx[j], loc->v[x->lv.idx[j]].flags, 0);
    free(x->srv_paired);
    free(x->loc_paired);
    free(x->sv.idx);
    free(x->lv.idx);
    free(x);
    w->idx = NULL;
}

void sync_plan_folder_view(const state_pair_list *pairs, const srv_view *view,
                           const store_msg_list *loc, sync_plan *out)
{
    sync_plan_walk w = {.out = out, .srv = view, .loc = loc};
    sync_plan_begin(&w);
    sync_plan_window(&w, pairs);
    sync_plan_end(&w);
}

void sync_plan_expunge_policy(sync_plan *p, int policy)
{
    bool to_server = policy == CFG_EXPUNGE_BOTH || policy == CFG_EXPUNGE_SERVER;
    bool to_local = policy == CFG_EXPUNGE_BOTH || policy == CFG_EXPUNGE_LOCAL;
    for (size_t i = 0; i < p->n; i++) {
        sync_action *a = &p->v[i];
        int to = a->kind;
        if (a->kind == ACT_EXPUNGE_SERVER && !to_server)
            to = ACT_KEEP_SERVER;
        else if (a->kind == ACT_EXPUNGE_LOCAL && !to_local)
            to = ACT_KEEP_LOCAL;
        if (to != a->kind) {
            p->count[a->kind]--;
            p->count[to]++;
            a->kind = to;
        }
    }
}
