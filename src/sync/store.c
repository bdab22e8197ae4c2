/* store.c: helpers shared by both store implementations.
 * Message lists grow geometrically; each message owns its key and Message-ID strings. */
#include "sync/store.h"

#include <stdlib.h>
#include <string.h>

void store_msg_list_init(store_msg_list *l)
{
    l->v = NULL;
    l->n = l->cap = 0;
}

void store_msg_list_free(store_msg_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i].key);
        free(l->v[i].msgid);
    }
    free(l->v);
    store_msg_list_init(l);
}

store_msg *store_msg_list_push(store_msg_list *l)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->v = xrealloc(l->v, l->cap * sizeof *l->v);
    }
    store_msg *m = &l->v[l->n++];
    memset(m, 0, sizeof *m);
    return m;
}
