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

/* The server side of one pair: its listing entry (s), SRV_BASE, or -1 (absent); sflags its
 * flags there. */
typedef struct srv_side {
    long s;
    unsigned sflags;
} srv_side;

static void plan_pair(sync_plan *out, long i, const state_pair *p, srv_side sv,
                      const store_msg_list *loc, long l)
{
    long s = sv.s;
    uint32_t uid = s != -1 ? p->uid : 0;
    if (!p->uid || !p->key) { /* one copy kept by policy: nothing to carry over */
        if (s == -1 && l < 0)
            plan_add(out, ACT_FORGET, i, -1, -1, 0, 0);
        return;
    }
    if (s != -1 && l >= 0) {
        unsigned sf = sv.sflags, lf = loc->v[l].flags;
        unsigned merged = sync_merge_flags(p->flags, sf, lf);
        if (merged != sf || merged != lf || merged != p->flags) {
            plan_add(out, ACT_FLAGS, i, s, l, merged, uid);
            out->to_server_flags += merged != sf;
            out->to_local_flags += merged != lf;
        }
    } else if (s != -1) {
        plan_add(out, ACT_EXPUNGE_SERVER, i, s, -1, 0, uid);
    } else if (l >= 0) {
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

void sync_plan_folder_view(const state_pair_list *pairs, const srv_view *view,
                           const store_msg_list *loc, sync_plan *out)
{
    const store_msg_list *srv = view->listed;
    memset(out, 0, sizeof *out);
    index_view sv, lv;
    view_build(&sv, srv, cmp_uid);
    view_build(&lv, loc, cmp_key);
    char *srv_paired = xcalloc(srv->n ? srv->n : 1, 1);
    char *loc_paired = xcalloc(loc->n ? loc->n : 1, 1);

    for (size_t i = 0; i < pairs->n; i++) {
        const state_pair *p = &pairs->v[i];
        long s = p->uid ? view_find_uid(&sv, p->uid) : -1;
        long l = p->key ? view_find_key(&lv, p->key) : -1;
        srv_side side = {s, s >= 0 ? srv->v[s].flags : p->flags};
        if (s >= 0)
            srv_paired[s] = 1;
        else if (srv_view_covers(view, p->uid))
            side.s = SRV_BASE;
        if (l >= 0)
            loc_paired[l] = 1;
        plan_pair(out, (long)i, p, side, loc, l);
    }
    /* In uid order, so downloads arrive oldest first. */
    for (size_t j = 0; j < sv.n; j++)
        if (!srv_paired[sv.idx[j]])
            plan_add(out, ACT_DOWNLOAD, -1, sv.idx[j], -1, srv->v[sv.idx[j]].flags,
                     srv->v[sv.idx[j]].uid);
    /* In key order: Maildir keys start with the delivery time. */
    for (size_t j = 0; j < lv.n; j++)
        if (!loc_paired[lv.idx[j]])
            plan_add(out, ACT_UPLOAD, -1, -1, lv.idx[j], loc->v[lv.idx[j]].flags, 0);

    free(srv_paired);
    free(loc_paired);
    free(sv.idx);
    free(lv.idx);
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
