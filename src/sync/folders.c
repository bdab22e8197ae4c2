/* folders.c: the folder set of one pass: what each side has, what the state knew, the account's
 * `folders` patterns; creates, renames and deletes folders (write-ahead) until both sides agree. */
#include "sync/folders.h"

#include <fnmatch.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/err.h"

enum { MAX_ROUNDS = 64 }; /* a rename changes the set: it is computed again, this often at most */

bool folders_pattern_match(const char *patterns, const char *name)
{
    bool in = false;
    char *copy = xstrdup(patterns ? patterns : "*"), *save = NULL;
    for (char *p = strtok_r(copy, " \t", &save); p; p = strtok_r(NULL, " \t", &save)) {
        bool neg = *p == '!';
        /* No FNM_PATHNAME: a star spans levels, so "Lists/" plus a star takes all below Lists. */
        if (fnmatch(neg ? p + 1 : p, name, 0) == 0)
            in = !neg; /* the last pattern that matches decides */
    }
    free(copy);
    return in;
}

typedef struct folder_sets {
    strlist srv, loc, known;
} folder_sets;

static void sets_free(folder_sets *f)
{
    strlist_free(&f->srv);
    strlist_free(&f->loc);
    strlist_free(&f->known);
}

static void event(sync_ctx *c, enum ofs_event_type type, const char *folder, const char *text)
{
    if (!c->fn)
        return;
    ofs_event ev = {
        .type = type, .account = c->acct->name, .folder = folder, .text = text, .stats = &c->stats};
    c->fn(&ev, c->fn_ctx);
}

static void say(sync_ctx *c, const char *folder, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void say(sync_ctx *c, const char *folder, const char *fmt, ...)
{
    buf line;
    buf_init(&line);
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&line, fmt, ap);
    va_end(ap);
    event(c, OFS_EV_NOTICE, folder, line.data);
    buf_free(&line);
}

static void report_refused(sync_ctx *c, strlist *refused)
{
    for (size_t i = 0; i < refused->n; i++) {
        ofs_error e = {.code = OFS_E_NAME};
        snprintf(e.message, sizeof e.message, "%s", refused->v[i]);
        if (!c->folder_failures++)
            c->folder_err = e;
        event(c, OFS_EV_NOTICE, NULL, refused->v[i]);
    }
    strlist_free(refused);
}

static void keep_matching(const char *patterns, strlist *l)
{
    size_t k = 0;
    for (size_t i = 0; i < l->n; i++) {
        if (folders_pattern_match(patterns, l->v[i]))
            l->v[k++] = l->v[i];
        else
            free(l->v[i]);
    }
    l->n = k;
}

static int sets_load(sync_ctx *c, folder_sets *f, bool report, ofs_error *err)
{
    strlist refused;
    strlist_init(&f->srv);
    strlist_init(&f->loc);
    strlist_init(&f->known);
    strlist_init(&refused);
    int rc = c->srv->ops->list_folders(c->srv, &f->srv, &refused, err);
    if (rc == 0)
        rc = c->loc->ops->list_folders(c->loc, &f->loc, &refused, err);
    if (report)
        report_refused(c, &refused);
    else
        strlist_free(&refused);
    if (rc == 0)
        rc = state_folder_names(c->st, &f->known, err);
    keep_matching(c->acct->folders, &f->srv);
    keep_matching(c->acct->folders, &f->loc);
    keep_matching(c->acct->folders, &f->known);
    return rc;
}

static bool has(const strlist *l, const char *name)
{
    return strlist_find(l, name) >= 0;
}

/* ---- write-ahead folder operations ---- */

static int intent_begin(sync_ctx *c, const char *op, const char *folder, const char *arg,
                        int64_t *id, ofs_error *err)
{
    return state_intent_add(c->st, op, folder, arg, id, err);
}

/* Rename on side s, then the state, then the intent is dropped: a crash before the state
 * update leaves the intent, and resume_intents finishes the state's part. */
static int do_rename(sync_ctx *c, store *s, const char *from, const char *to, ofs_error *err)
{
    int64_t id;
    const char *op = s == c->srv ? "rename-server" : "rename-local";
    if (intent_begin(c, op, from, to, &id, err) < 0 || s->ops->rename_folder(s, from, to, err) < 0)
        return -1;
    if (state_begin(c->st, err) < 0)
        return -1;
    if (state_folder_rename(c->st, from, to, err) < 0 || state_intent_delete(c->st, id, err) < 0) {
        state_rollback(c->st);
        return -1;
    }
    return state_commit(c->st, err);
}

static int forget_folder(sync_ctx *c, const char *name, ofs_error *err)
{
    state_folder f = {0};
    int rc = state_folder_get(c->st, name, &f, err);
    if (rc == 0)
        rc = state_folder_delete(c->st, f.id, err);
    state_folder_free(&f);
    return rc < 0 ? -1 : 0;
}

static int do_delete(sync_ctx *c, store *s, const char *name, ofs_error *err)
{
    int64_t id;
    const char *op = s == c->srv ? "delete-server" : "delete-local";
    if (intent_begin(c, op, name, NULL, &id, err) < 0 || s->ops->delete_folder(s, name, err) < 0)
        return -1;
    if (state_begin(c->st, err) < 0)
        return -1;
    if (forget_folder(c, name, err) < 0 || state_intent_delete(c->st, id, err) < 0) {
        state_rollback(c->st);
        return -1;
    }
    return state_commit(c->st, err);
}

static int do_create(sync_ctx *c, store *s, const char *name, ofs_error *err)
{
    int64_t id;
    const char *op = s == c->srv ? "create-server" : "create-local";
    if (intent_begin(c, op, name, NULL, &id, err) < 0 || s->ops->create_folder(s, name, err) < 0 ||
        state_intent_delete(c->st, id, err) < 0)
        return -1;
    if (s == c->srv)
        c->stats.folders_server++;
    else
        c->stats.folders_local++;
    return 0;
}

/* Intents left by a killed pass. A rename or deletion that reached its store gets its state
 * part done now; one that did not is decided again from scratch by this pass. Returns 1 when
 * there were any (the state may have changed). */
static int resume_intents(sync_ctx *c, const folder_sets *f, ofs_error *err)
{
    bool resumed = false;
    state_intent_list l;
    if (state_intents_load(c->st, &l, err) < 0)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < l.n && rc == 0; i++) {
        const state_intent *in = &l.v[i];
        bool server = strstr(in->op, "-server") != NULL;
        const strlist *side = server ? &f->srv : &f->loc;
        if (!strncmp(in->op, "rename-", 7) && in->arg && !has(side, in->folder) &&
            has(side, in->arg) && has(&f->known, in->folder))
            rc = state_folder_rename(c->st, in->folder, in->arg, err);
        else if (!strncmp(in->op, "delete-", 7) && !has(side, in->folder))
            rc = forget_folder(c, in->folder, err);
        else if (strncmp(in->op, "rename-", 7) && strncmp(in->op, "delete-", 7) &&
                 strncmp(in->op, "create-", 7))
            continue; /* a message-level intent: the engine resolves it in its folder */
        if (rc == 0)
            rc = state_intent_delete(c->st, in->id, err);
        resumed = true;
    }
    state_intent_list_free(&l);
    return rc < 0 ? -1 : resumed;
}

/* ---- renames ---- */

/* How many of the known folder's pairs the candidate holds: by key on the local side (a
 * directory rename keeps file names), by Message-ID on the server (RENAME keeps messages). */
static int rename_score(sync_ctx *c, store *s, const char *cand, const state_pair_list *pairs,
                        size_t *score, ofs_error *err)
{
    *score = 0;
    store_folder_info info;
    store_msg_list l;
    store_msg_list_init(&l);
    store_list_opts o = {.want_msgid = s == c->srv};
    int rc = s->ops->open_folder(s, cand, &info, err);
    if (rc == 0)
        rc = s->ops->list_messages(s, &o, &l, err);
    for (size_t i = 0; rc == 0 && i < l.n; i++) {
        const store_msg *m = &l.v[i];
        for (size_t j = 0; j < pairs->n; j++) {
            const char *a = s == c->srv ? m->msgid : m->key;
            const char *b = s == c->srv ? pairs->v[j].msgid : pairs->v[j].key;
            if (a && b && !strcmp(a, b)) {
                (*score)++;
                break;
            }
        }
    }
    store_msg_list_free(&l);
    return rc;
}

/* A known folder gone from side x while a folder new on x alone holds most of its messages
 * was renamed there. Returns the new name (malloc'd) or NULL. */
static int find_rename(sync_ctx *c, const folder_sets *f, store *x, const char *name, char **out,
                       ofs_error *err)
{
    *out = NULL;
    const strlist *xs = x == c->srv ? &f->srv : &f->loc, *ys = x == c->srv ? &f->loc : &f->srv;
    state_folder sf = {0};
    state_pair_list pairs = {0};
    int rc = state_folder_get(c->st, name, &sf, err);
    if (rc != 0)
        return rc < 0 ? -1 : 0;
    rc = state_pairs_load(c->st, sf.id, &pairs, err);
    size_t best = 0;
    for (size_t i = 0; rc == 0 && pairs.n && i < xs->n; i++) {
        const char *cand = xs->v[i];
        if (has(&f->known, cand) || has(ys, cand) || !strcmp(cand, "INBOX"))
            continue;
        size_t score;
        rc = rename_score(c, x, cand, &pairs, &score, err);
        if (rc == 0 && score > best && 2 * score >= pairs.n) {
            best = score;
            free(*out);
            *out = xstrdup(cand);
        }
    }
    state_pair_list_free(&pairs);
    state_folder_free(&sf);
    return rc;
}

/* ---- deletions ---- */

/* Messages in the folder on side s that the state never paired: never synced to the side
 * where the folder was deleted, so deleting it here would lose them. */
static int count_unsynced(sync_ctx *c, store *s, const char *name, size_t *n, ofs_error *err)
{
    *n = 0;
    state_folder sf = {0};
    state_pair_list pairs = {0};
    store_msg_list l;
    store_msg_list_init(&l);
    store_folder_info info;
    store_list_opts o = {0};
    int rc = state_folder_get(c->st, name, &sf, err);
    if (rc == 0)
        rc = state_pairs_load(c->st, sf.id, &pairs, err);
    if (rc == 0)
        rc = s->ops->open_folder(s, name, &info, err);
    if (rc == 0)
        rc = s->ops->list_messages(s, &o, &l, err);
    for (size_t i = 0; rc == 0 && i < l.n; i++) {
        bool paired = false;
        for (size_t j = 0; j < pairs.n && !paired; j++) {
            const state_pair *p = &pairs.v[j];
            paired = p->pending == PENDING_NONE &&
                     (s == c->srv ? (p->uid && p->uid == l.v[i].uid)
                                  : (p->key && l.v[i].key && !strcmp(p->key, l.v[i].key)));
        }
        *n += !paired;
    }
    store_msg_list_free(&l);
    state_pair_list_free(&pairs);
    state_folder_free(&sf);
    return rc < 0 ? -1 : 0;
}

/* The folder was deleted on side x and still exists on y. Returns 1 when it is now gone from
 * both sides, 0 when it was restored on x (or would be, in a dry run). */
static int folder_deleted(sync_ctx *c, store *x, store *y, const char *name, ofs_error *err)
{
    size_t unsynced = 0;
    if (c->acct->remove_folders && strcmp(name, "INBOX") != 0) {
        if (count_unsynced(c, y, name, &unsynced, err) < 0)
            return -1;
        if (!unsynced) {
            if (c->dry_run) {
                say(c, name, "would delete the folder on the %s side (deleted on the %s side)",
                    y->ops->side, x->ops->side);
                return 1;
            }
            say(c, name, "folder deleted on the %s side: deleting it on the %s side too",
                x->ops->side, y->ops->side);
            return do_delete(c, y, name, err) < 0 ? -1 : 1;
        }
        say(c, name,
            "folder deleted on the %s side, but %zu of its messages on the %s side were never "
            "synced: not deleting it; restoring it on the %s side with everything",
            x->ops->side, unsynced, y->ops->side, x->ops->side);
    } else {
        say(c, name, "folder is gone on the %s side; restoring it from the other side%s",
            x->ops->side, c->acct->remove_folders ? "" : " (remove-folders = no)");
    }
    if (c->dry_run)
        return 0;
    /* Forgotten first: its pairs would otherwise read as messages deleted on x. */
    if (forget_folder(c, name, err) < 0)
        return -1;
    return do_create(c, x, name, err);
}

/* ---- the set ---- */

/* Known folders missing on a side: renamed there, deleted there, or gone from both.
 * Returns 1 when it renamed something (the sets must be read again). */
static int align_known(sync_ctx *c, folder_sets *f, strlist *skip, strlist *restored,
                       ofs_error *err)
{
    for (size_t i = 0; i < f->known.n; i++) {
        const char *name = f->known.v[i];
        bool on_s = has(&f->srv, name), on_l = has(&f->loc, name);
        if (on_s && on_l)
            continue;
        if (!on_s && !on_l) {
            strlist_add(skip, name);
            if (!c->dry_run && forget_folder(c, name, err) < 0)
                return -1;
            continue;
        }
        store *x = on_s ? c->loc : c->srv, *y = on_s ? c->srv : c->loc;
        char *to = NULL;
        if (strcmp(name, "INBOX") != 0 && find_rename(c, f, x, name, &to, err) < 0)
            return -1;
        if (to && c->dry_run) {
            say(c, name, "would rename the folder to %s on the %s side (renamed on the %s side)",
                to, y->ops->side, x->ops->side);
            strlist_add(skip, name);
            strlist_add(skip, to);
            free(to);
            continue;
        }
        if (to) {
            say(c, name, "folder renamed to %s on the %s side: renaming it on the %s side", to,
                x->ops->side, y->ops->side);
            int rc = do_rename(c, y, name, to, err);
            free(to);
            return rc < 0 ? -1 : 1;
        }
        int rc = folder_deleted(c, x, y, name, err);
        if (rc < 0)
            return -1;
        strlist_add(rc == 1 ? skip : restored, name);
    }
    return 0;
}

static int align_round(sync_ctx *c, folder_sets *f, strlist *todo, ofs_error *err)
{
    strlist skip, restored, all;
    strlist_init(&skip);
    strlist_init(&restored);
    strlist_init(&all);
    int rc = align_known(c, f, &skip, &restored, err);
    if (folders_pattern_match(c->acct->folders, "INBOX"))
        strlist_add(&all, "INBOX");
    for (size_t i = 0; i < f->srv.n; i++)
        if (!has(&all, f->srv.v[i]))
            strlist_add(&all, f->srv.v[i]);
    for (size_t i = 0; i < f->loc.n; i++)
        if (!has(&all, f->loc.v[i]))
            strlist_add(&all, f->loc.v[i]);
    strlist_sort(&all);
    for (size_t i = 0; i < all.n && rc == 0; i++) {
        const char *name = all.v[i];
        bool on_s = has(&f->srv, name), on_l = has(&f->loc, name);
        if (has(&skip, name) || (!on_s && !on_l))
            continue;
        if (!on_s || !on_l) {
            store *x = on_s ? c->loc : c->srv;
            if (c->dry_run) {
                if (!has(&restored, name))
                    say(c, name, "would create the folder on the %s side", x->ops->side);
                continue; /* nothing to list on the missing side */
            }
            if (!has(&restored, name))
                rc = do_create(c, x, name, err);
        }
        if (rc == 0)
            strlist_add(todo, name);
    }
    strlist_free(&skip);
    strlist_free(&restored);
    strlist_free(&all);
    return rc;
}

int folders_align(sync_ctx *c, strlist *todo, ofs_error *err)
{
    strlist_init(todo);
    for (int round = 0; round < MAX_ROUNDS; round++) {
        folder_sets f;
        int rc = sets_load(c, &f, round == 0, err);
        if (rc == 0 && round == 0 && !c->dry_run)
            rc = resume_intents(c, &f, err);
        if (rc == 1) { /* the intents changed the state: read the sets again */
            sets_free(&f);
            rc = sets_load(c, &f, false, err);
        }
        if (rc == 0)
            rc = align_round(c, &f, todo, err);
        sets_free(&f);
        if (rc <= 0)
            return rc;
        strlist_free(todo); /* renamed: read the sets again */
        strlist_init(todo);
    }
    return err_set(err, OFS_E_STATE, "folder renames did not settle after %d rounds", MAX_ROUNDS);
}
