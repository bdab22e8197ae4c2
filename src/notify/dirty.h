/* dirty.h: per-folder dirty generations (DESIGN.md section 4), so a change during a pass is
 * never lost: a pass may mark a folder clean only if nothing bumped it since the pass began. */
#ifndef OFS_NOTIFY_DIRTY_H
#define OFS_NOTIFY_DIRTY_H

#include <stdint.h>

/* Folder ids are small dense indexes (the engine's folder list): the table grows to the
 * largest id used. A folder never bumped is clean at generation 0. */
typedef struct dirty_set dirty_set;

dirty_set *dirty_create(void);
void dirty_destroy(dirty_set *d);

/* Records a change to folder from any thread (IDLE, NOTIFY, inotify, timer): returns the
 * folder's new generation, which also makes it dirty. */
uint64_t dirty_bump(dirty_set *d, uint32_t folder);

/* The generation a pass over folder starts from; pass it to dirty_mark_clean at the end. */
uint64_t dirty_begin(dirty_set *d, uint32_t folder);

/* Marks folder clean as of begin_gen: returns 1 if the folder is now clean, 0 if it was bumped
 * after begin_gen (it stays dirty and needs another pass). Atomic against dirty_bump. */
int dirty_mark_clean(dirty_set *d, uint32_t folder, uint64_t begin_gen);

int dirty_is_dirty(dirty_set *d, uint32_t folder);

/* Finds the first dirty folder with id >= from: 1 and *folder set, or 0 if none. */
int dirty_next(dirty_set *d, uint32_t from, uint32_t *folder);

#endif
