/* carry.c: carries the flag change made on one side to the copy of a message the other side
 * moved (found by content among the pairs made since the last complete pass). */
#include "sync/carry.h"

#include <stdlib.h>
#include <string.h>

#include "util/err.h"

/* One removal, as engine.c's carry_intent writes it: "PAIR ADD DEL HASH". */
typedef struct removal {
    const state_intent *in;
    long long pair;
    unsigned add, del;
    const char *hash;
    bool drop; /* settled without a change: dropped with the others at the end */
} removal;

static int removal_parse(const state_intent *in, removal *out)
{
    const char *arg = in->arg;
    char *e1 = NULL, *e2 = NULL, *e3 = NULL;
    long long pair = arg ? strtoll(arg, &e1, 10) : 0;
    unsigned long add = e1 ? strtoul(e1, &e2, 10) : 0;
    unsigned long del = e2 ? strtoul(e2, &e3, 10) : 0;
    if (!e3 || *e3 != ' ' || !e3[1])
        return -1;
    *out = (removal){in, pair, (unsigned)add & FLAG_ALL, (unsigned)del & FLAG_ALL, e3 + 1, false};
    return 0;
}

static int cmp_removal(const void *a, const void *b)
{
    const removal *x = a, *y = b;
    int c = strcmp(x->hash, y->hash);
    return c ? c : (x->pair > y->pair) - (x->pair < y->pair);
}

static void carry_notice(sync_ctx *c, const char *folder, const char *from)
{
    if (!c->fn)
        return;
    char *text = xasprintf("1 message moved here from %s gets the flag changes made to it there "
                           "on the other side",
                           from);
    ofs_event ev = {.type = OFS_EV_NOTICE,
                    .account = c->acct->name,
                    .folder = folder,
                    .text = text,
                    .stats = &c->stats};
    c->fn(&ev, c->fn_ctx);
    free(text);
}

static int drop_removals(sync_ctx *c, const removal *v, size_t n, ofs_error *err)
{
    for (size_t i = 0; i < n; i++)
        if (state_intent_delete(c->st, v[i].in->id, err) < 0)
            return -1;
    return 0;
}

/* The pair's new base and the removals it settles, in one commit; the folder's record no
 * longer describes it, so the next pass reads it again. */
static int carry_commit(sync_ctx *c, const state_pair *p, int64_t folder_id, const removal *v,
                        size_t n, ofs_error *err)
{
    if (state_begin(c->st, err) < 0)
        return -1;
    if (state_pair_update(c->st, p, err) < 0 || state_mark_clear(c->st, folder_id, err) < 0 ||
        drop_removals(c, v, n, err) < 0) {
        state_rollback(c->st);
        return -1;
    }
    return state_commit(c->st, err);
}

/* The one of the removals (of the same message) that carries a flag change, or NULL. */
static const removal *changed(const removal *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (v[i].add || v[i].del)
            return &v[i];
    return NULL;
}

/* Both copies of the pair get the change, then its base: a kill in between leaves the same
 * change on both sides and the removals, which apply it again (adding a flag twice is adding
 * it once). A folder recreated on the server since names other messages by those UIDs:
 * nothing is changed there. */
static int carry_apply(sync_ctx *c, const removal *v, size_t n, state_pair *p, const char *folder,
                       ofs_error *err)
{
    state_folder sf;
    int rc = state_folder_get(c->st, folder, &sf, err);
    if (rc != 0)
        return rc < 0 ? -1 : 0;
    const removal *k = changed(v, n);
    store_folder_info si, li;
    store_msg s = {.uid = p->uid}, l = {.key = p->key, .flags = p->flags};
    rc = c->srv->ops->open_folder(c->srv, folder, &si, err);
    if (rc == 0 && si.uidvalidity == sf.uidvalidity) {
        rc = c->loc->ops->open_folder(c->loc, folder, &li, err);
        if (rc == 0)
            rc = c->srv->ops->set_flags(c->srv, &s, 1, k->add, k->del, err);
        if (rc == 0)
            rc = c->loc->ops->set_flags(c->loc, &l, 1, k->add, k->del, err);
        p->flags = (p->flags | k->add) & ~k->del;
        if (rc == 0)
            carry_notice(c, folder, k->in->folder);
    }
    if (rc == 0)
        rc = carry_commit(c, p, sf.id, v, n, err);
    state_folder_free(&sf);
    return rc;
}

/* The removals of one content (the same removal may be written twice by a pass cut short).
 * Exactly one removed message and exactly one new copy: a move. More of either cannot be told
 * apart: removal wins, as when there is no copy at the end of a complete pass. */
static int carry_group(sync_ctx *c, removal *v, size_t n, bool complete, ofs_error *err)
{
    bool one_removed = true;
    for (size_t i = 1; i < n; i++)
        one_removed = one_removed && v[i].pair == v[0].pair;
    state_pair p;
    char *folder = NULL;
    int found = state_pair_by_hash(c->st, v[0].hash, &p, &folder, err);
    if (found < 0)
        return -1;
    int rc = 0;
    if (found == 0 && one_removed && changed(v, n))
        rc = carry_apply(c, v, n, &p, folder, err);
    else if (found != 1 || complete)
        for (size_t i = 0; i < n; i++)
            v[i].drop = true;
    if (found != 1) {
        free(p.key);
        free(p.msgid);
        free(p.hash);
        free(folder);
    }
    return rc;
}

/* The removals settled without a change and, after a complete pass that added pairs, the
 * next generation: one commit, and none at all for a pass that removed and added nothing. */
static int carry_finish(sync_ctx *c, const removal *v, size_t n, bool complete, ofs_error *err)
{
    bool dirty = false, drops = false;
    for (size_t i = 0; i < n; i++)
        drops = drops || v[i].drop;
    if (complete && state_generation_dirty(c->st, &dirty, err) < 0)
        return -1;
    if (!drops && !dirty)
        return 0;
    if (state_begin(c->st, err) < 0)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        if (v[i].drop)
            rc = state_intent_delete(c->st, v[i].in->id, err);
    if (rc == 0 && dirty)
        rc = state_generation_next(c->st, err);
    if (rc < 0) {
        state_rollback(c->st);
        return -1;
    }
    return state_commit(c->st, err);
}

int sync_carry_flags(sync_ctx *c, bool complete, ofs_error *err)
{
    state_intent_list l;
    if (state_intents_load(c->st, &l, err) < 0)
        return -1;
    removal *v = xmalloc((l.n ? l.n : 1) * sizeof *v);
    size_t n = 0;
    int rc = 0;
    for (size_t i = 0; i < l.n && rc == 0; i++)
        if (strcmp(l.v[i].op, "carry-flags") == 0 && removal_parse(&l.v[i], &v[n]) == 0)
            n++;
        else if (strcmp(l.v[i].op, "carry-flags") == 0)
            rc = state_intent_delete(c->st, l.v[i].id, err);
    qsort(v, n, sizeof *v, cmp_removal);
    for (size_t i = 0, j; i < n && rc == 0; i = j) {
        for (j = i + 1; j < n && strcmp(v[j].hash, v[i].hash) == 0;)
            j++;
        rc = carry_group(c, v + i, j - i, complete, err);
    }
    if (rc == 0)
        rc = carry_finish(c, v, n, complete, err);
    free(v);
    state_intent_list_free(&l);
    return rc;
}
