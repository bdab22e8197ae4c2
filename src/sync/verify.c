/* verify.c: a folder proven in sync without listing it, after a pass that wrote into it: the
 * names in cur/ and new/ against the pairs, by digest, one row and one name at a time. */
#include <stdlib.h>
#include <string.h>

#include "sync/engine_int.h"

enum { VERIFY_WINDOW = 1024 };

typedef struct pair_digest {
    store_digest d;
    bool pending;
} pair_digest;

/* One window of the folder's pairs into the digest; 1 stops at an interrupted step, which only
 * the full run resolves. */
static int add_pairs(const state_pair_list *w, void *arg, ofs_error *err)
{
    (void)err;
    pair_digest *p = arg;
    for (size_t i = 0; i < w->n; i++) {
        const state_pair *q = &w->v[i];
        if (q->pending != PENDING_NONE) {
            p->pending = true;
            return 1;
        }
        if (q->key)
            store_digest_add(&p->d, q->key, strlen(q->key), q->flags, q->stamp);
    }
    return 0;
}

static bool has_intent(const state_intent_list *l, const char *folder)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i].folder, folder) == 0)
            return true;
    return false;
}

static int record_mark(folder_run *r, void *arg, ofs_error *err)
{
    state_mark m = {.messages = r->mark.messages, .local_mark = arg};
    return state_mark_set(r->c->st, r->sf.id, &m, err);
}

int verify_local(folder_run *r, ofs_error *err)
{
    store *loc = r->c->loc;
    if (!loc->ops->folder_digest)
        return 0;
    state_intent_list intents;
    if (state_intents_load(r->c->st, &intents, err) < 0)
        return -1;
    bool busy = has_intent(&intents, r->name);
    state_intent_list_free(&intents);
    if (busy)
        return 0;
    pair_digest want = {0};
    int rc = state_pairs_walk(r->c->st, r->sf.id, VERIFY_WINDOW, add_pairs, &want, err);
    if (rc < 0)
        return -1;
    if (want.pending)
        return 0;
    store_digest have = {0};
    char *mark = loc->ops->folder_digest(loc, r->name, &have);
    if (!mark || have.sum != want.d.sum || have.count != want.d.count) {
        free(mark);
        return 0;
    }
    rc = r->c->dry_run ? 0 : engine_in_lazy_txn(r, record_mark, mark, err);
    free(mark);
    if (rc < 0)
        return -1;
    r->st.folders_verified++;
    return 1;
}
