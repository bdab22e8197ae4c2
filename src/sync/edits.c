/* edits.c: local messages edited in place: found by their stamps and content, uploaded as
 * new messages, and their old server copies replaced once the new ones are paired. */
#include <stdlib.h>
#include <string.h>

#include "sync/engine_int.h"
#include "util/err.h"

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

/* Pairs whose file's stamp changed, with that file and stamp: few on most passes, so kept
 * as a list that grows, never an array per pair of the folder. */
typedef struct stamp_at {
    long pair, loc;
    uint64_t stamp;
} stamp_at;

typedef struct stamp_list {
    stamp_at *v;
    size_t n, cap;
} stamp_list;

static void stamp_push(stamp_list *l, long pair, long loc, uint64_t stamp)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 16;
        l->v = xrealloc(l->v, l->cap * sizeof *l->v);
    }
    l->v[l->n++] = (stamp_at){pair, loc, stamp};
}

static int record_stamps(folder_run *r, void *arg, ofs_error *err)
{
    const stamp_list *l = arg;
    for (size_t i = 0; i < l->n; i++) {
        state_pair *p = &r->pairs.v[l->v[i].pair];
        p->stamp = l->v[i].stamp;
        if (state_pair_update(r->c->st, p, err) < 0)
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
static int judge_stamps(folder_run *r, sync_plan *plan, const stamp_list *cand, stamp_list *found,
                        ofs_error *err)
{
    size_t n = cand->n;
    store_msg *msgs = xmalloc((n ? n : 1) * sizeof *msgs);
    for (size_t j = 0; j < n; j++)
        msgs[j] = r->loc.v[cand->v[j].loc];
    char **hashes = xcalloc(n ? n : 1, sizeof *hashes);
    uint64_t *sizes = xcalloc(n ? n : 1, sizeof *sizes);
    int rc = engine_hash_messages(r, r->c->loc, msgs, n, hashes, sizes, err);
    for (size_t j = 0; j < n && rc == 0; j++) {
        const stamp_at *c = &cand->v[j];
        state_pair *p = &r->pairs.v[c->pair];
        if (!hashes[j])
            continue; /* gone meanwhile: the next pass sees what became of it */
        rc = state_pair_load_strings(r->c->st, p, err);
        if (rc == 0 && (p->hash ? strcmp(p->hash, hashes[j]) == 0 : sizes[j] == p->size))
            stamp_push(found, c->pair, c->loc, c->stamp);
        else if (rc == 0)
            plan_edit(r, plan, c->pair, c->loc);
    }
    for (size_t j = 0; j < n; j++)
        free(hashes[j]);
    free(hashes);
    free(sizes);
    free(msgs);
    return rc;
}

static bool any_stamp(const store_msg_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        if (l->v[i].stamp)
            return true;
    return false;
}

int edits_find(folder_run *r, sync_plan *plan, ofs_error *err)
{
    if (!any_stamp(&r->loc))
        return 0; /* the folder's directories did not change: no file was rewritten */
    /* The pairs the plan kept are few, the listing is the folder: index the pairs by key and
     * walk the listing once against them. */
    key_idx *by_key = xmalloc((r->pairs.n ? r->pairs.n : 1) * sizeof *by_key);
    size_t nk = 0;
    for (size_t i = 0; i < r->pairs.n; i++) {
        const state_pair *p = &r->pairs.v[i];
        if (p->uid && !p->pending && p->key)
            by_key[nk++] = (key_idx){p->key, (long)i};
    }
    engine_sort_keys(by_key, nk);
    stamp_list cand = {0}, found = {0};
    for (size_t j = 0; j < r->loc.n && nk; j++) {
        const store_msg *m = &r->loc.v[j];
        const key_idx *k = m->stamp ? engine_find_key(by_key, nk, m->key) : NULL;
        const state_pair *p = k ? &r->pairs.v[k->idx] : NULL;
        if (p && m->stamp != p->stamp)
            stamp_push(p->stamp ? &cand : &found, k->idx, (long)j, m->stamp);
    }
    free(by_key);
    int rc = cand.n ? judge_stamps(r, plan, &cand, &found, err) : 0;
    if (rc == 0 && found.n && !r->c->dry_run)
        rc = engine_in_txn(r, record_stamps, &found, err);
    free(cand.v);
    free(found.v);
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

int edits_exec(folder_run *r, ofs_error *err)
{
    if (!r->n_edits)
        return 0;
    for (size_t i = 0; i < r->n_edits; i++)
        r->edited_gone += r->edits[i].srv_gone;
    return engine_in_txn(r, detach_edits, NULL, err);
}

void edits_free_replacements(folder_run *r)
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

static int load_replacement(folder_run *r, const state_intent *in, void *arg, ofs_error *err)
{
    (void)arg;
    char *uid_at = NULL, *key = NULL;
    unsigned long uv = in->arg ? strtoul(in->arg, &uid_at, 10) : 0;
    unsigned long uid = uid_at ? strtoul(uid_at, &key, 10) : 0;
    if (!uid || !key || *key != ' ' || !key[1] || uv != r->si.uidvalidity)
        return r->c->dry_run ? 0 : state_intent_delete(r->c->st, in->id, err);
    drop_listed(&r->srv, uid);
    uidset_add(&r->srv_gone, (uint32_t)uid, (uint32_t)uid); /* nor does the base stand for it */
    r->repl = xrealloc(r->repl, (r->n_repl + 1) * sizeof *r->repl);
    r->repl[r->n_repl++] = (replacement){in->id, (uint32_t)uid, xstrdup(key + 1)};
    return 0;
}

/* The replacements an earlier step of this pass, or a pass cut short, left: their old copies
 * are out of the listing. One recorded under another UIDVALIDITY names nothing any more. */
int edits_load_replacements(folder_run *r, ofs_error *err)
{
    return engine_each_intent(r, "replace-edited", load_replacement, NULL, err);
}

/* Without UIDPLUS the removal lifts \Deleted from the others for a moment: those the plan
 * left, and this pass's uploads that carry it (not in the listing), are recorded first. */
static int mark_replace_intents(folder_run *r, void *arg, ofs_error *err)
{
    const sync_plan *plan = arg;
    buf uids;
    buf_init(&uids);
    flagops_deleted_after_plan(r, plan, &uids);
    uint32_t *listed = xmalloc((r->srv.n ? r->srv.n : 1) * sizeof *listed);
    for (size_t i = 0; i < r->srv.n; i++)
        listed[i] = r->srv.v[i].uid;
    qsort(listed, r->srv.n, sizeof *listed, engine_cmp_u32);
    for (size_t i = 0; i < r->pairs.n; i++) {
        const state_pair *p = &r->pairs.v[i];
        if (p->uid && (p->flags & FLAG_DELETED) &&
            !bsearch(&p->uid, listed, r->srv.n, sizeof *listed, engine_cmp_u32) &&
            !engine_srv_in_base(r, p->uid))
            buf_printf(&uids, "%s%u", uids.len ? " " : "", p->uid);
    }
    free(listed);
    int rc = flagops_add_restore_intent(r, &uids, err);
    buf_free(&uids);
    return rc;
}

static int drop_replacements(folder_run *r, void *arg, ofs_error *err)
{
    const char *done = arg;
    for (size_t i = 0; i < r->n_repl; i++)
        if (done[i] && state_intent_delete(r->c->st, r->repl[i].intent, err) < 0)
            return -1;
    return flagops_drop_restore_intent(r, NULL, err);
}

/* Removes the old copies whose edited file is now paired with its new server copy. A file
 * gone before its upload was recorded gives its old copy back to the folder. */
int edits_replace(folder_run *r, const sync_plan *plan, ofs_error *err)
{
    if (!r->n_repl)
        return 0;
    if (engine_reload_pairs(r, err) < 0 || engine_list_unpaired(r, err) < 0)
        return -1;
    key_idx *loc = engine_index_keys(&r->loc);
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
        } else if (!p && !engine_find_key(loc, r->loc.n, r->repl[i].key)) {
            done[i] = 1;
        }
    }
    int rc = 0;
    if (n_go) {
        rc = engine_need_server(r, err);
        if (rc == 0)
            rc = engine_in_txn(r, mark_replace_intents, (void *)plan, err);
        if (rc == 0)
            rc = r->c->srv->ops->remove_messages(r->c->srv, go, n_go, err);
    }
    if (rc == 0)
        rc = engine_in_txn(r, drop_replacements, done, err);
    if (rc == 0)
        r->edited += n_go;
    free(done);
    free(go);
    free(loc);
    return rc;
}
