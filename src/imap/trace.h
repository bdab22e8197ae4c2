/* trace.h: the -vv protocol trace: one printable line per command sent or response read.
 * Message bodies are shown as their size, and secrets never reach it (client.c masks them). */
#ifndef OFS_IMAP_TRACE_H
#define OFS_IMAP_TRACE_H

#include <stddef.h>

#include "imap/parse.h"
#include "util/mem.h"

/* Receives trace text: one line, or several separated by newlines (no final newline). */
typedef void (*imap_trace_fn)(void *ctx, const char *line);

/* Longest trace line; the rest is cut and marked with "...". */
#define TRACE_LINE_MAX 400

/* Appends a one-line rendering of r ("S: o3 OK [READ-ONLY] done", "S: * 2 FETCH (UID 7 BODY[]
 * {5120 bytes})"): control characters become '?', long strings are shortened. */
void imap_trace_response(const imap_response *r, buf *out);

/* Appends "C: " and the first line(s) of a command as sent, each CRLF shown as a line break,
 * control characters as '?', cut at TRACE_LINE_MAX. */
void imap_trace_command(const char *data, size_t len, buf *out);

#endif
