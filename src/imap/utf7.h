/* utf7.h: modified UTF-7 (RFC 3501 section 5.1.3), the IMAP encoding of folder names.
 * Strict both ways, so that decode(encode(x)) == x and every name has exactly one wire form. */
#ifndef OFS_IMAP_UTF7_H
#define OFS_IMAP_UTF7_H

#include "ofsync.h"

/* mUTF-7 -> UTF-8. Refuses raw 8-bit or control bytes, bad base64, non-minimal or
 * unterminated shifts, unpaired surrogates and encoded NUL (OFS_E_NAME). *out is malloc'd. */
int imap_utf7_decode(const char *in, char **out, ofs_error *err);

/* UTF-8 -> mUTF-7. Refuses invalid UTF-8 (overlong, surrogates, > U+10FFFF). */
int imap_utf7_encode(const char *in, char **out, ofs_error *err);

/* Decodes one strict UTF-8 sequence at s; returns its length (1-4) and sets *cp,
 * or 0 when s does not start with a valid, minimal, non-surrogate sequence. */
int imap_utf8_next(const char *s, unsigned long *cp);

#endif
