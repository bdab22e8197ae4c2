/* uidset.h: a set of UIDs kept as sorted, merged ranges, so "1:4000000000" costs 8 bytes.
 * Holds what a server reports in ranges (QRESYNC's VANISHED) without expanding it. */
#ifndef OFS_UTIL_UIDSET_H
#define OFS_UTIL_UIDSET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct uidset {
    uint32_t *v; /* lo0, hi0, lo1, hi1, ...: sorted, disjoint, not adjacent once normalized */
    size_t n;    /* ranges */
    size_t cap;  /* ranges allocated */
} uidset;

void uidset_init(uidset *s);
void uidset_free(uidset *s);
/* Adds lo..hi (either order). The set is normalized lazily, by uidset_has and uidset_count. */
void uidset_add(uidset *s, uint32_t lo, uint32_t hi);
/* Parses an IMAP sequence set of UIDs ("1:5,9,12:40"; no '*'). False on bad syntax. */
bool uidset_parse(uidset *s, const char *text);
bool uidset_has(uidset *s, uint32_t uid);
uint64_t uidset_count(uidset *s);

#endif
