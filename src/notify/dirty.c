/* dirty.c: the generation table behind dirty.h, one mutex for the whole table.
 * Bumps are rare (one per server or file system notification), so a lock costs nothing. */
#include "notify/dirty.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "util/mem.h"

typedef struct dirty_folder {
    uint64_t gen;   /* bumped on every change */
    uint64_t clean; /* the generation the last successful pass covered */
} dirty_folder;

struct dirty_set {
    pthread_mutex_t lock;
    dirty_folder *v;
    size_t n;
};

dirty_set *dirty_create(void)
{
    dirty_set *d = xcalloc(1, sizeof *d);
    pthread_mutex_init(&d->lock, NULL);
    return d;
}

void dirty_destroy(dirty_set *d)
{
    if (!d)
        return;
    pthread_mutex_destroy(&d->lock);
    free(d->v);
    free(d);
}

/* The folder's slot, growing the table; called with the lock held. */
static dirty_folder *dirty_slot(dirty_set *d, uint32_t folder)
{
    if (folder >= d->n) {
        size_t n = d->n ? d->n : 16;
        while (n <= folder)
            n *= 2;
        d->v = xrealloc(d->v, n * sizeof *d->v);
        memset(d->v + d->n, 0, (n - d->n) * sizeof *d->v);
        d->n = n;
    }
    return &d->v[folder];
}

uint64_t dirty_bump(dirty_set *d, uint32_t folder)
{
    pthread_mutex_lock(&d->lock);
    uint64_t gen = ++dirty_slot(d, folder)->gen;
    pthread_mutex_unlock(&d->lock);
    return gen;
}

uint64_t dirty_begin(dirty_set *d, uint32_t folder)
{
    pthread_mutex_lock(&d->lock);
    uint64_t gen = dirty_slot(d, folder)->gen;
    pthread_mutex_unlock(&d->lock);
    return gen;
}

int dirty_mark_clean(dirty_set *d, uint32_t folder, uint64_t begin_gen)
{
    pthread_mutex_lock(&d->lock);
    dirty_folder *f = dirty_slot(d, folder);
    /* Never move clean backwards: a slower, older pass must not undo a newer one's result. */
    if (begin_gen > f->clean && begin_gen <= f->gen)
        f->clean = begin_gen;
    int clean = f->clean == f->gen;
    pthread_mutex_unlock(&d->lock);
    return clean;
}

int dirty_is_dirty(dirty_set *d, uint32_t folder)
{
    pthread_mutex_lock(&d->lock);
    int dirty = folder < d->n && d->v[folder].gen != d->v[folder].clean;
    pthread_mutex_unlock(&d->lock);
    return dirty;
}

int dirty_next(dirty_set *d, uint32_t from, uint32_t *folder)
{
    pthread_mutex_lock(&d->lock);
    int found = 0;
    for (size_t i = from; i < d->n && !found; i++) {
        if (d->v[i].gen != d->v[i].clean) {
            *folder = (uint32_t)i;
            found = 1;
        }
    }
    pthread_mutex_unlock(&d->lock);
    return found;
}
