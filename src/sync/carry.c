/* carry.c: carries the flag change made on one side to the copy of a message the other side
 * moved (found by content among the pairs made since the last complete pass). */
#include "sync/carry.h"

#include <stdlib.h>
#include <string.h>

#include "util/err.h"

typedef struct carry {
    unsigned add, del;
    const char *hash;
} carry;

/* "ADD DEL HASH", as engine.c's carry_intent writes it. */
static int carry_parse(const char *arg, carry *out)
{
    char *end1 = NULL, *end2 = NULL;
    unsigned long add = arg ? strtoul(arg, &end1, 10) : 0;
    unsigned long del = end1 ? strtoul(end1, &end2, 10) : 0;
    if (!end2 || *end2 != ' ' || !end2[1])
        return -1;
    *out = (carry){(unsigned)add & FLAG_ALL, (unsigned)del & FLAG_ALL, end2 + 1};
    return 0;
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

typedef struct carry_done {
    state_pair *p;
    int64_t folder_id, intent;
} carry_done;

static int carry_commit(sync_ctx *c, const carry_done *d, ofs_error *err)
{
    if (state_begin(c->st, err) < 0)
        return -1;
    /* The folder's record no longer describes it: the next pass reads it again. */
    if (state_pair_update(c->st, d->p, err) < 0 || state_mark_clear(c->st, d->folder_id, err) < 0 ||
        state_intent_delete(c->st, d->intent, err) < 0) {
        state_rollback(c->st);
        return -1;
    }
    return state_commit(c->st, err);
}

/* Both copies of the pair get the change, then its base: a kill in between leaves the same
 * change on both sides and in the intent, which is applied again (adding a flag twice is
 * adding it once). A folder recreated on the server since names other messages by those
 * UIDs: nothing is changed there. */
static int carry_apply(sync_ctx *c, const state_intent *in, const carry *k, state_pair *p,
                       const char *folder, ofs_error *err)
{
    state_folder sf;
    int rc = state_folder_get(c->st, folder, &sf, err);
    if (rc != 0)
        return rc < 0 ? -1 : 0;
    store_folder_info si, li;
    store_msg s = {.uid = p->uid}, l = {.key = p->key};
    rc = c->srv->ops->open_folder(c->srv, folder, &si, err);
    if (rc == 0 && si.uidvalidity == sf.uidvalidity) {
        rc = c->loc->ops->open_folder(c->loc, folder, &li, err);
        if (rc == 0)
            rc = c->srv->ops->set_flags(c->srv, &s, 1, k->add, k->del, err);
        if (rc == 0)
            rc = c->loc->ops->set_flags(c->loc, &l, 1, k->add, k->del, err);
        p->flags = (p->flags | k->add) & ~k->del;
        if (rc == 0)
            carry_notice(c, folder, in->folder);
    }
    carry_done d = {p, sf.id, in->id};
    if (rc == 0)
        rc = carry_commit(c, &d, err);
    state_folder_free(&sf);
    return rc;
}

static int carry_one(sync_ctx *c, const state_intent *in, bool complete, ofs_error *err)
{
    carry k;
    state_pair p;
    char *folder = NULL;
    int found =
        carry_parse(in->arg, &k) < 0 ? 1 : state_pair_by_hash(c->st, k.hash, &p, &folder, err);
    if (found < 0)
        return -1;
    if (found == 1)
        return complete ? state_intent_delete(c->st, in->id, err) : 0;
    int rc = carry_apply(c, in, &k, &p, folder, err);
    free(p.key);
    free(p.msgid);
    free(p.hash);
    free(folder);
    return rc;
}

int sync_carry_flags(sync_ctx *c, bool complete, ofs_error *err)
{
    state_intent_list l;
    if (state_intents_load(c->st, &l, err) < 0)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < l.n && rc == 0; i++)
        if (strcmp(l.v[i].op, "carry-flags") == 0)
            rc = carry_one(c, &l.v[i], complete, err);
    state_intent_list_free(&l);
    if (rc == 0 && complete)
        rc = state_generation_next(c->st, err);
    return rc;
}
