/* trace.c: renders commands and parsed responses as printable lines for the protocol trace.
 * Bounded output whatever the server sends: long strings and literals are summarized. */
#include "imap/trace.h"

#include <stdbool.h>
#include <string.h>

#define TRACE_STR_MAX 80 /* longer strings are shown as their first bytes and a size */

static void trace_bytes(buf *out, const char *s, size_t len)
{
    for (size_t i = 0; i < len && out->len < TRACE_LINE_MAX; i++) {
        unsigned char ch = (unsigned char)s[i];
        buf_addc(out, ch < 0x20 || ch == 0x7f ? '?' : (char)ch);
    }
}

static void trace_value(buf *out, const imap_value *v, size_t depth)
{
    if (out->len >= TRACE_LINE_MAX)
        return;
    switch (v->type) {
    case IMAP_V_ATOM:
        trace_bytes(out, v->str, v->len);
        break;
    case IMAP_V_STRING:
        buf_addc(out, '"');
        trace_bytes(out, v->str, v->len < TRACE_STR_MAX ? v->len : TRACE_STR_MAX);
        if (v->len > TRACE_STR_MAX)
            buf_printf(out, "...\" (%zu bytes)", v->len);
        else
            buf_addc(out, '"');
        break;
    case IMAP_V_NIL:
        buf_adds(out, "NIL");
        break;
    case IMAP_V_STREAMED:
        buf_printf(out, "{%llu bytes}", (unsigned long long)v->size);
        break;
    case IMAP_V_LIST:
        if (depth > 8) {
            buf_adds(out, "(...)");
            break;
        }
        buf_addc(out, '(');
        for (size_t i = 0; i < v->n && out->len < TRACE_LINE_MAX; i++) {
            if (i)
                buf_addc(out, ' ');
            trace_value(out, &v->items[i], depth + 1);
        }
        buf_addc(out, ')');
        break;
    }
}

static void trace_cut(buf *out, size_t start)
{
    if (out->len - start >= TRACE_LINE_MAX) {
        out->len = start + TRACE_LINE_MAX;
        out->data[out->len] = '\0';
        buf_adds(out, "...");
    }
}

void imap_trace_response(const imap_response *r, buf *out)
{
    size_t start = out->len;
    buf_adds(out, "S: ");
    if (r->type == IMAP_R_CONTINUATION) {
        buf_adds(out, "+ ");
    } else {
        trace_bytes(out, r->tag, strlen(r->tag));
        buf_addc(out, ' ');
    }
    if (r->has_number)
        buf_printf(out, "%u ", r->number);
    if (r->type != IMAP_R_CONTINUATION && r->name[0]) {
        trace_bytes(out, r->name, strlen(r->name));
        buf_addc(out, ' ');
    }
    if (r->has_code) {
        buf_addc(out, '[');
        for (size_t i = 0; i < r->code.n; i++) {
            if (i)
                buf_addc(out, ' ');
            trace_value(out, &r->code.items[i], 1);
        }
        buf_adds(out, "] ");
    }
    for (size_t i = 0; i < r->args.n && out->len - start < TRACE_LINE_MAX; i++) {
        trace_value(out, &r->args.items[i], 1);
        buf_addc(out, ' ');
    }
    trace_bytes(out, r->text, strlen(r->text));
    while (out->len > start && out->data[out->len - 1] == ' ')
        out->data[--out->len] = '\0';
    trace_cut(out, start);
}

void imap_trace_command(const char *data, size_t len, buf *out)
{
    size_t start = out->len;
    buf_adds(out, "C: ");
    for (size_t i = 0; i < len; i++) {
        if (data[i] == '\r' && i + 1 < len && data[i + 1] == '\n') {
            if (i + 2 < len)
                buf_adds(out, "\nC: ");
            i++;
            continue;
        }
        unsigned char ch = (unsigned char)data[i];
        buf_addc(out, ch < 0x20 || ch == 0x7f ? '?' : (char)ch);
        if (out->len - start > TRACE_LINE_MAX)
            break;
    }
    trace_cut(out, start);
}
