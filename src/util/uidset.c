/* uidset.c: UID ranges: parse an IMAP sequence set, sort and merge, binary-search membership.
 * Never expands a range, so a hostile "1:4294967295" costs nothing. */
#include "util/uidset.h"

#include <stdlib.h>
#include <string.h>

#include "util/mem.h"

void uidset_init(uidset *s)
{
    memset(s, 0, sizeof *s);
}

void uidset_free(uidset *s)
{
    free(s->v);
    uidset_init(s);
}

void uidset_add(uidset *s, uint32_t lo, uint32_t hi)
{
    if (lo > hi) {
        uint32_t t = lo;
        lo = hi;
        hi = t;
    }
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 8;
        s->v = xrealloc(s->v, s->cap * 2 * sizeof *s->v);
    }
    s->v[2 * s->n] = lo;
    s->v[2 * s->n + 1] = hi;
    s->n++;
}

static int cmp_range(const void *a, const void *b)
{
    const uint32_t *x = a, *y = b;
    return (x[0] > y[0]) - (x[0] < y[0]);
}

/* Sorts and merges overlapping or adjacent ranges; cheap when already normal. */
static void uidset_normalize(uidset *s)
{
    bool sorted = true;
    for (size_t i = 1; i < s->n && sorted; i++)
        sorted = s->v[2 * i] > (uint64_t)s->v[2 * i - 1] + 1;
    if (sorted)
        return;
    qsort(s->v, s->n, 2 * sizeof *s->v, cmp_range);
    size_t o = 0;
    for (size_t i = 0; i < s->n; i++) {
        uint32_t lo = s->v[2 * i], hi = s->v[2 * i + 1];
        if (o && lo <= (uint64_t)s->v[2 * o - 1] + 1) {
            if (hi > s->v[2 * o - 1])
                s->v[2 * o - 1] = hi;
            continue;
        }
        s->v[2 * o] = lo;
        s->v[2 * o + 1] = hi;
        o++;
    }
    s->n = o;
}

static bool parse_u32(const char **p, uint32_t *out)
{
    uint64_t v = 0;
    const char *q = *p;
    if (*q < '1' || *q > '9')
        return false;
    while (*q >= '0' && *q <= '9') {
        v = v * 10 + (uint64_t)(*q++ - '0');
        if (v > UINT32_MAX)
            return false;
    }
    *out = (uint32_t)v;
    *p = q;
    return true;
}

bool uidset_parse(uidset *s, const char *text)
{
    const char *p = text;
    for (;;) {
        uint32_t lo, hi;
        if (!parse_u32(&p, &lo))
            return false;
        hi = lo;
        if (*p == ':') {
            p++;
            if (!parse_u32(&p, &hi))
                return false;
        }
        uidset_add(s, lo, hi);
        if (*p == '\0')
            return true;
        if (*p++ != ',')
            return false;
    }
}

bool uidset_has(uidset *s, uint32_t uid)
{
    uidset_normalize(s);
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (uid < s->v[2 * mid])
            hi = mid;
        else if (uid > s->v[2 * mid + 1])
            lo = mid + 1;
        else
            return true;
    }
    return false;
}

uint64_t uidset_count(uidset *s)
{
    uidset_normalize(s);
    uint64_t n = 0;
    for (size_t i = 0; i < s->n; i++)
        n += (uint64_t)s->v[2 * i + 1] - s->v[2 * i] + 1;
    return n;
}
