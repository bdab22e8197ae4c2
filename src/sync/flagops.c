/* flagops.c: flag changes and removals on both sides, their intents, the restore of \Deleted
 * an expunge cut short may have lifted, and the count of flag changes a removal overrides. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "sync/engine_int.h"
#include "util/err.h"

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

static int restore_intent(folder_run *r, const state_intent *in, void *arg, ofs_error *err)
{
    bool *restored = arg;
    if (r->c->dry_run)
        return 0;
    int rc = restore_one(r, in, err);
    if (rc == 0)
        rc = state_intent_delete(r->c->st, in->id, err);
    *restored = true;
    return rc;
}

int flagops_restore_deleted(folder_run *r, ofs_error *err)
{
    bool restored = false;
    int rc = engine_each_intent(r, "restore-deleted", restore_intent, &restored, err);
    /* The listing was taken before: read the server again, with the flags back. */
    return rc == 0 && restored ? engine_list_server_full(r, err) : rc;
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
        engine_defer_settle(r, p);
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
        const store_msg s = engine_srv_msg(r, a), l = engine_loc_msg(r, a);
        if (s.flags != a->flags)
            to_srv[ns++] = (flag_op){a->flags & ~s.flags, s.flags & ~a->flags, s};
        if (l.flags != a->flags)
            to_loc[nl++] = (flag_op){a->flags & ~l.flags, l.flags & ~a->flags, l};
    }
    /* The flag intents need no fsync: a pass cut short plans such a pair again from the same
     * base, intent or not, and the three-way merge of a half-applied change gives the same
     * result (test_plan). They mark the pairs for people (status) and for resolve_replans. */
    int rc = engine_in_lazy_txn(r, mark_flag_intents, (void *)plan, err);
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
    return 0; /* settled by flagops_exec once the server has answered */
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
            else
                p->key = NULL; /* it lives in the list's arena */
            p->pending = PENDING_NONE;
            if (state_pair_update(r->c->st, p, err) < 0)
                return -1;
        }
    }
    return 0;
}

/* Records the UIDs in uids ("1 2 3") as a restore-deleted intent, when there are any. */
int flagops_add_restore_intent(folder_run *r, buf *uids, ofs_error *err)
{
    if (!uids->len)
        return 0;
    buf_printf(uids, " @%u", r->si.uidvalidity);
    return state_intent_add(r->c->st, "restore-deleted", r->name, uids->data, &r->restore_id, err);
}

/* A server message's flags once the plan's flag step is done, -1 when the plan removes it. */
typedef struct uid_flags {
    uint32_t uid;
    long flags;
} uid_flags;

static int cmp_uid_flags(const void *a, const void *b)
{
    uint32_t x = ((const uid_flags *)a)->uid, y = ((const uid_flags *)b)->uid;
    return (x > y) - (x < y);
}

static long flags_after(const sync_action *a)
{
    return a->kind == ACT_EXPUNGE_SERVER ? -1 : (long)a->flags;
}

/* The server messages the base stands for (srv_view) that carry \Deleted after the plan:
 * their pairs' flags, or what the plan does to them. */
static void base_deleted_after_plan(folder_run *r, const sync_plan *plan, buf *uids)
{
    uid_flags *acted = xmalloc((plan->n ? plan->n : 1) * sizeof *acted);
    size_t n = 0;
    for (size_t i = 0; i < plan->n; i++) {
        const sync_action *a = &plan->v[i];
        if ((a->kind == ACT_FLAGS || a->kind == ACT_EXPUNGE_SERVER) && a->srv == SRV_BASE)
            acted[n++] = (uid_flags){a->uid, flags_after(a)};
    }
    qsort(acted, n, sizeof *acted, cmp_uid_flags);
    for (size_t i = 0; i < r->pairs.n; i++) {
        const state_pair *p = &r->pairs.v[i];
        if (!engine_srv_in_base(r, p->uid))
            continue;
        uid_flags key = {p->uid, 0};
        const uid_flags *f = n ? bsearch(&key, acted, n, sizeof key, cmp_uid_flags) : NULL;
        long now = f ? f->flags : (long)p->flags;
        if (now >= 0 && (now & FLAG_DELETED))
            buf_printf(uids, "%s%u", uids->len ? " " : "", p->uid);
    }
    free(acted);
}

/* The UIDs that still carry \Deleted on the server once plan is carried out, as "1 2 3"
 * (those it removes left out). */
void flagops_deleted_after_plan(folder_run *r, const sync_plan *plan, buf *uids)
{
    /* The listed messages' flags as the flag step of this plan left them, -1 for those going
     * now. */
    long *now = xmalloc((r->srv.n ? r->srv.n : 1) * sizeof *now);
    for (size_t i = 0; i < r->srv.n; i++)
        now[i] = r->srv.v[i].flags;
    for (size_t i = 0; i < plan->n; i++) {
        const sync_action *a = &plan->v[i];
        if ((a->kind == ACT_FLAGS || a->kind == ACT_EXPUNGE_SERVER) && a->srv >= 0)
            now[a->srv] = flags_after(a);
    }
    for (size_t i = 0; i < r->srv.n; i++)
        if (now[i] >= 0 && (now[i] & FLAG_DELETED))
            buf_printf(uids, "%s%u", uids->len ? " " : "", r->srv.v[i].uid);
    free(now);
    base_deleted_after_plan(r, plan, uids);
}

/* A message removed on one side may have been moved (to another folder, or under another
 * name) while the other side changed its flags: every removal is written down with the
 * message's content and that change (none, often), and carry.c gives the change to the one
 * copy of that content made since the last complete pass, when there is exactly one. */
static int carry_intent(folder_run *r, const sync_action *a, ofs_error *err)
{
    state_pair *p = &r->pairs.v[a->pair];
    if (state_pair_load_strings(r->c->st, p, err) < 0)
        return -1;
    unsigned now =
        a->kind == ACT_EXPUNGE_SERVER ? engine_srv_msg(r, a).flags : engine_loc_msg(r, a).flags;
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
    flagops_deleted_after_plan(r, plan, &uids);
    int rc = flagops_add_restore_intent(r, &uids, err);
    buf_free(&uids);
    return rc;
}

int flagops_drop_restore_intent(folder_run *r, void *arg, ofs_error *err)
{
    (void)arg;
    int rc = r->restore_id ? state_intent_delete(r->c->st, r->restore_id, err) : 0;
    r->restore_id = 0;
    return rc;
}

static int remove_from(folder_run *r, const sync_plan *plan, int kind, ofs_error *err)
{
    size_t n = plan->count[kind], k = 0;
    if (!n)
        return 0;
    bool server = kind == ACT_EXPUNGE_SERVER;
    store_msg *msgs = xmalloc(n * sizeof *msgs);
    for (size_t i = 0; i < plan->n; i++)
        if (plan->v[i].kind == kind)
            msgs[k++] = server ? engine_srv_msg(r, &plan->v[i]) : engine_loc_msg(r, &plan->v[i]);
    store *s = server ? r->c->srv : r->c->loc;
    int rc = s->ops->remove_messages(s, msgs, k, err);
    free(msgs);
    return rc;
}

/* A mail reader renaming a file while the scan ran can hide it from readdir. Before a local
 * absence removes mail from the server, a second scan must agree that it is gone. */
typedef struct absence_check {
    key_idx *gone; /* the removals, sorted by key */
    size_t n;
    sync_plan *plan;
} absence_check;

static void still_there(absence_check *ac, const char *key)
{
    const key_idx *k = engine_find_key(ac->gone, ac->n, key);
    sync_action *a = k ? &ac->plan->v[k->idx] : NULL;
    if (a && a->kind == ACT_EXPUNGE_SERVER) {
        a->kind = ACT_NONE; /* still there: the next pass sees its true state */
        ac->plan->count[ACT_EXPUNGE_SERVER]--;
    }
}

/* A key is part of a file name, so it fits NAME_MAX. */
static void check_key(const char *key, size_t len, void *arg)
{
    char k[NAME_MAX + 1];
    if (len > NAME_MAX)
        return;
    memcpy(k, key, len);
    k[len] = '\0';
    still_there(arg, k);
}

static int confirm_local_absence(folder_run *r, sync_plan *plan, ofs_error *err)
{
    if (!plan->count[ACT_EXPUNGE_SERVER])
        return 0;
    /* The few removals sorted by key, looked up from the second look: no index of the folder. */
    absence_check ac = {xmalloc(plan->count[ACT_EXPUNGE_SERVER] * sizeof *ac.gone), 0, plan};
    for (size_t i = 0; i < plan->n; i++)
        if (plan->v[i].kind == ACT_EXPUNGE_SERVER)
            ac.gone[ac.n++] = (key_idx){r->pairs.v[plan->v[i].pair].key, (long)i};
    engine_sort_keys(ac.gone, ac.n);
    store *loc = r->c->loc; /* its names streamed: no second listing of the folder */
    int rc = loc->ops->each_key(loc, check_key, &ac, err);
    free(ac.gone);
    return rc < 0 ? -1 : 0;
}

/* A removal wins over flag changes the other side made meanwhile (a deletion is deliberate,
 * flags are not content); the summary counts them so the user knows. */
static void count_flag_losses(folder_run *r, const sync_plan *plan)
{
    for (size_t i = 0; i < plan->n; i++) {
        const sync_action *a = &plan->v[i];
        const state_pair *p = a->pair >= 0 ? &r->pairs.v[a->pair] : NULL;
        if (a->kind == ACT_EXPUNGE_SERVER && engine_srv_msg(r, a).flags != p->flags)
            r->flagged_removed++;
        else if (a->kind == ACT_EXPUNGE_LOCAL && engine_loc_msg(r, a).flags != p->flags)
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
    if (removals && engine_in_txn(r, mark_expunge_intents, plan, err) < 0)
        return -1;
    count_flag_losses(r, plan);
    if (remove_from(r, plan, ACT_EXPUNGE_SERVER, err) < 0 ||
        remove_from(r, plan, ACT_EXPUNGE_LOCAL, err) < 0)
        return -1;
    r->st.expunged_server += plan->count[ACT_EXPUNGE_SERVER];
    r->st.expunged_local += plan->count[ACT_EXPUNGE_LOCAL];
    return 0; /* the pairs are forgotten by finish_expunges once the server has answered */
}

static int finish_expunges(folder_run *r, sync_plan *plan, ofs_error *err)
{
    if (!any_expunge_step(plan))
        return 0;
    if (engine_in_txn(r, forget_pairs, (void *)plan, err) < 0)
        return -1;
    return r->restore_id ? engine_in_txn(r, flagops_drop_restore_intent, NULL, err) : 0;
}

/* Flag changes and removals. The server's part (its STOREs, and \Deleted with UID EXPUNGE)
 * leaves in one burst once every intent is in, and is settled only when the server has
 * answered all of it: one round trip for the folder, not one per flag group and step. */
int flagops_exec(folder_run *r, sync_plan *plan, ofs_error *err)
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
