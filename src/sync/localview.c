/* localview.c: a changed local folder compared with its pairs one file at a time, so that only
 * the files that differ from the state are listed; the others stand as their pairs say. */
#include <stdlib.h>
#include <string.h>

#include "sync/engine_int.h"

/* One pair: its key's hash, its flags and whether its file was found exactly as it says,
 * packed in one word (tag), and the stamp that file must have. 16 bytes a pair. */
typedef struct lv_slot {
    uint64_t tag; /* hash << 9 | flags << 1 | seen; 0: empty slot */
    uint64_t stamp;
} lv_slot;

enum { LV_SEEN = 1, LV_FLAG_BITS = 8, LV_INFO_BITS = LV_FLAG_BITS + 1 };

struct local_view {
    lv_slot *v;
    size_t cap, n;
    bool odd; /* a key seen twice: what the folder holds is for the full listing to judge */
    folder_run *r;
};

/* The tag of a key and flags, seen bit clear; never 0. */
static uint64_t lv_tag(const char *key, unsigned flags)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a, then a finalizer so slots spread */
    for (const char *p = key; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    h = (h ^ (h >> 31)) * 0x94d049bb133111ebULL;
    h ^= h >> 29;
    h <<= LV_INFO_BITS;
    return (h ? h : (uint64_t)1 << LV_INFO_BITS) | (uint64_t)flags << 1;
}

static bool lv_fits(unsigned flags)
{
    return flags < 1u << LV_FLAG_BITS;
}

/* The slot of the pair (tag, stamp), or the empty one where it would go. Pairs whose tags
 * agree get a slot each: they differ in stamp, or two pairs are alike and the view gives up. */
static lv_slot *lv_find(const struct local_view *v, uint64_t tag, uint64_t stamp)
{
    for (size_t i = (tag >> LV_INFO_BITS) % v->cap;; i = (i + 1) % v->cap) {
        lv_slot *s = &v->v[i];
        if (!s->tag || ((s->tag & ~(uint64_t)LV_SEEN) == tag && s->stamp == stamp))
            return s;
    }
}

/* Whether a file with this key was found unchanged, whatever its flags. */
static bool lv_key_seen(const struct local_view *v, uint64_t tag)
{
    uint64_t hash_part = ~(((uint64_t)1 << LV_INFO_BITS) - 1);
    for (size_t i = (tag >> LV_INFO_BITS) % v->cap; v->v[i].tag; i = (i + 1) % v->cap)
        if ((v->v[i].tag & hash_part) == (tag & hash_part) && (v->v[i].tag & LV_SEEN))
            return true;
    return false;
}

/* Keeps the table at most 7/8 full, so probes stay short; grows by half. */
static void lv_grow(struct local_view *v)
{
    if ((v->n + 1) * 8 <= v->cap * 7)
        return;
    struct local_view old = *v;
    v->cap = old.cap + old.cap / 2;
    v->v = xcalloc(v->cap, sizeof *v->v);
    for (size_t i = 0; i < old.cap; i++)
        if (old.v[i].tag)
            *lv_find(v, old.v[i].tag & ~(uint64_t)LV_SEEN, old.v[i].stamp) = old.v[i];
    free(old.v);
}

static int add_pairs(const state_pair_list *w, void *arg, ofs_error *err)
{
    (void)err;
    struct local_view *v = arg;
    for (size_t i = 0; i < w->n; i++) {
        const state_pair *p = &w->v[i];
        if (!p->key || !p->stamp || !lv_fits(p->flags))
            continue; /* nothing to match: its file, if any, is listed */
        lv_grow(v);
        uint64_t tag = lv_tag(p->key, p->flags);
        lv_slot *s = lv_find(v, tag, p->stamp);
        if (s->tag) { /* two pairs alike down to the stamp: let the listing judge */
            v->odd = true;
            return 1;
        }
        *s = (lv_slot){.tag = tag, .stamp = p->stamp};
        v->n++;
    }
    return 0;
}

/* A file as the listing gives it: matched with its pair, or listed. */
static void see_file(const store_msg *m, void *arg)
{
    struct local_view *v = arg;
    lv_slot *s =
        m->stamp && lv_fits(m->flags) ? lv_find(v, lv_tag(m->key, m->flags), m->stamp) : NULL;
    if (s && s->tag) {
        v->odd = v->odd || (s->tag & LV_SEEN);
        s->tag |= LV_SEEN;
        return;
    }
    store_msg *l = store_msg_list_push(&v->r->loc);
    *l = *m;
    l->key = store_msg_list_key(&v->r->loc, m->key, strlen(m->key));
}

static int cmp_key(const void *a, const void *b)
{
    return strcmp(((const store_msg *)a)->key, ((const store_msg *)b)->key);
}

/* A listed file whose key is also one found unchanged, or listed twice, is a file seen twice
 * (a reader renaming during the walk, or a copy): only the full listing's rules tell. */
static bool seen_twice(struct local_view *v)
{
    store_msg_list *l = &v->r->loc;
    if (l->n > 1)
        qsort(l->v, l->n, sizeof *l->v, cmp_key);
    for (size_t i = 0; i < l->n; i++)
        if ((i && strcmp(l->v[i - 1].key, l->v[i].key) == 0) ||
            lv_key_seen(v, lv_tag(l->v[i].key, 0)))
            return true;
    return false;
}

int localview_build(folder_run *r, ofs_error *err)
{
    struct local_view *v = xcalloc(1, sizeof *v);
    v->r = r;
    v->cap = 64;
    v->v = xcalloc(v->cap, sizeof *v->v);
    store *loc = r->c->loc;
    store_list_opts o = {.want_stamp = true};
    int rc = state_pairs_walk(r->c->st, r->sf.id, PAIR_WINDOW, add_pairs, v, err);
    if (rc == 0 && !v->odd)
        rc = loc->ops->each_message(loc, &o, see_file, v, err);
    if (rc == 0 && (v->odd || seen_twice(v)))
        rc = 1;
    if (rc != 0) {
        localview_free(v);
        store_msg_list_free(&r->loc);
        store_msg_list_init(&r->loc);
        return rc < 0 ? -1 : 1;
    }
    r->lview = v;
    return 0;
}

bool localview_has(const state_pair *p, void *arg)
{
    const struct local_view *v = arg;
    if (!v)
        return true; /* a folder opened unread: every pair's file is there */
    if (!p->stamp || !lv_fits(p->flags))
        return false;
    const lv_slot *s = lv_find(v, lv_tag(p->key, p->flags), p->stamp);
    return (s->tag & LV_SEEN) != 0;
}

void localview_free(struct local_view *v)
{
    if (!v)
        return;
    free(v->v);
    free(v);
}
