/* arena.h: a shared, append-only store of strings, freed at once when its last holder lets go.
 * One malloc per block instead of one per string; lets a listing borrow a scan's names. */
#ifndef OFS_UTIL_ARENA_H
#define OFS_UTIL_ARENA_H

#include <stddef.h>

typedef struct ofs_arena ofs_arena;

/* A new arena with one holder (the caller). */
ofs_arena *arena_new(void);
/* One more holder; returns a. */
ofs_arena *arena_ref(ofs_arena *a);
/* The caller stops holding a; the last holder's call frees every string in it. NULL is fine. */
void arena_unref(ofs_arena *a);
/* Copies s[0..n) and a NUL terminator into a; the copy lives as long as a does. */
char *arena_strndup(ofs_arena *a, const char *s, size_t n);
/* Copies head[0..nhead), a NUL, then the string tail with its NUL: two strings in one place. */
char *arena_add_pair(ofs_arena *a, const char *head, size_t nhead, const char *tail);
/* Bytes the arena holds from malloc (blocks and their slack), for tests and profiles. */
size_t arena_footprint(const ofs_arena *a);

#endif
