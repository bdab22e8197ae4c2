/* store.c: helpers shared by both store implementations.
 * Message lists grow geometrically; each message owns its Message-ID, and its key unless the
 * list borrows all keys from an arena. */
#include "sync/store.h"

#include <stdlib.h>
#include <string.h>

void store_msg_list_init(store_msg_list *l)
{
    l->v = NULL;
    l->n = l->cap = 0;
    l->keys_from = NULL;
}

void store_msg_list_free(store_msg_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        if (!l->keys_from)
            free(l->v[i].key);
        free(l->v[i].msgid);
    }
    free(l->v);
    arena_unref(l->keys_from);
    store_msg_list_init(l);
}

void store_msg_list_reserve(store_msg_list *l, size_t n)
{
    if (l->cap - l->n >= n)
        return;
    l->cap = l->n + n;
    l->v = xrealloc(l->v, l->cap * sizeof *l->v);
}

store_msg *store_msg_list_push(store_msg_list *l)
{
    if (l->n == l->cap)
        store_msg_list_reserve(l, l->cap ? l->cap : 64);
    store_msg *m = &l->v[l->n++];
    memset(m, 0, sizeof *m);
    return m;
}

/* FNV-1a over the key, flags and stamp folded in, then a full-avalanche finalizer (splitmix64)
 * so that the sum of many such values does not cancel out for similar keys. */
void store_digest_add(store_digest *d, const char *key, size_t key_len, unsigned flags,
                      uint64_t stamp)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < key_len; i++)
        h = (h ^ (unsigned char)key[i]) * 1099511628211ULL;
    h = (h ^ stamp) * 1099511628211ULL;
    h ^= (uint64_t)flags << 32 | key_len;
    h += 0x9e3779b97f4a7c15ULL;
    h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ULL;
    h = (h ^ (h >> 27)) * 0x94d049bb133111ebULL;
    d->sum += h ^ (h >> 31);
    d->count++;
}

void store_msg_list_borrow_keys(store_msg_list *l, ofs_arena *a)
{
    if (l->n == 0 && !l->keys_from)
        l->keys_from = arena_ref(a);
}

char *store_msg_list_key(store_msg_list *l, const char *s, size_t n)
{
    return l->keys_from ? arena_strndup(l->keys_from, s, n) : xstrndup(s, n);
}
