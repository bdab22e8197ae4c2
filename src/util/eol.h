/* eol.h: line-ending conversion between IMAP (CRLF on the wire) and Maildir (LF on disk).
 * Streaming: a conversion state carries a CR split across two chunks. */
#ifndef OFS_UTIL_EOL_H
#define OFS_UTIL_EOL_H

#include <stdbool.h>
#include <stddef.h>

typedef struct eol_state {
    bool cr; /* the previous chunk ended in CR */
} eol_state;

/* CRLF -> LF; a lone CR is kept. out needs n + 1 bytes. Call eol_to_lf_end at the end. */
size_t eol_to_lf(eol_state *s, const char *in, size_t n, char *out);
size_t eol_to_lf_end(eol_state *s, char *out);
/* Bare LF -> CRLF; existing CRLF untouched. out needs 2 * n bytes. */
size_t eol_to_crlf(eol_state *s, const char *in, size_t n, char *out);

#endif
