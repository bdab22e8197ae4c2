/* arena.c: the shared string arena: a chain of blocks, growing up to a cap so a small folder
 * costs little and a large one wastes at most one block's tail. Holders are counted. */
#include "util/arena.h"

#include <stdlib.h>
#include <string.h>

#include "util/mem.h"

#define ARENA_FIRST_BLOCK 4096
#define ARENA_MAX_BLOCK (64 * 1024)

typedef struct arena_block {
    struct arena_block *next;
    size_t used, cap;
    char data[];
} arena_block;

struct ofs_arena {
    arena_block *head; /* the block being filled; older ones follow */
    size_t holders;
    size_t footprint;
};

ofs_arena *arena_new(void)
{
    ofs_arena *a = xcalloc(1, sizeof *a);
    a->holders = 1;
    return a;
}

ofs_arena *arena_ref(ofs_arena *a)
{
    a->holders++;
    return a;
}

void arena_unref(ofs_arena *a)
{
    if (!a || --a->holders > 0)
        return;
    for (arena_block *b = a->head, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    free(a);
}

/* n bytes that stay where they are until the arena is freed. */
static char *arena_take(ofs_arena *a, size_t n)
{
    arena_block *b = a->head;
    if (!b || b->cap - b->used < n) {
        size_t cap = b ? b->cap * 2 : ARENA_FIRST_BLOCK;
        if (cap > ARENA_MAX_BLOCK)
            cap = ARENA_MAX_BLOCK;
        if (cap < n)
            cap = n;
        arena_block *nb = xmalloc(sizeof *nb + cap);
        nb->next = b;
        nb->used = 0;
        nb->cap = cap;
        a->head = b = nb;
        a->footprint += sizeof *nb + cap;
    }
    char *p = b->data + b->used;
    b->used += n;
    return p;
}

char *arena_strndup(ofs_arena *a, const char *s, size_t n)
{
    char *p = arena_take(a, n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *arena_add_pair(ofs_arena *a, const char *head, size_t nhead, const char *tail)
{
    size_t ntail = strlen(tail);
    char *p = arena_take(a, nhead + 1 + ntail + 1);
    memcpy(p, head, nhead);
    p[nhead] = '\0';
    memcpy(p + nhead + 1, tail, ntail + 1);
    return p;
}

size_t arena_footprint(const ofs_arena *a)
{
    return a ? a->footprint : 0;
}
