/* mem.h: allocation that cannot fail quietly, growable byte buffers and string lists.
 * Out of memory aborts with a message: no caller can do better, and it keeps paths short. */
#ifndef OFS_UTIL_MEM_H
#define OFS_UTIL_MEM_H

#include <stdarg.h>
#include <stddef.h>

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A byte buffer, always NUL-terminated after data[len] once anything was added. */
typedef struct buf {
    char *data;
    size_t len, cap;
} buf;

void buf_init(buf *b);
void buf_free(buf *b);
void buf_reset(buf *b);
void buf_add(buf *b, const void *p, size_t n);
void buf_adds(buf *b, const char *s);
void buf_addc(buf *b, char c);
void buf_printf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_vprintf(buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Removes the first n bytes. */
void buf_consume(buf *b, size_t n);

/* A list of owned strings. */
typedef struct strlist {
    char **v;
    size_t n, cap;
} strlist;

void strlist_init(strlist *l);
void strlist_free(strlist *l);
void strlist_add(strlist *l, const char *s);
void strlist_add_owned(strlist *l, char *s);
/* Index of s, or -1. Linear: lists here are folder lists, not message lists. */
long strlist_find(const strlist *l, const char *s);
void strlist_sort(strlist *l);

#endif
