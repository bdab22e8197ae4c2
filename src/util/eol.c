/* eol.c: CRLF <-> LF conversion for message bodies crossing between IMAP and Maildir.
 * Mail readers expect LF in a Maildir; IMAP requires CRLF; both directions stream in chunks. */
#include "util/eol.h"

size_t eol_to_lf(eol_state *s, const char *in, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = in[i];
        if (s->cr && c != '\n')
            out[o++] = '\r'; /* a lone CR is content */
        s->cr = c == '\r';
        if (!s->cr)
            out[o++] = c;
    }
    return o;
}

size_t eol_to_lf_end(eol_state *s, char *out)
{
    size_t o = 0;
    if (s->cr)
        out[o++] = '\r';
    s->cr = false;
    return o;
}

size_t eol_to_crlf(eol_state *s, const char *in, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = in[i];
        if (c == '\n' && !s->cr)
            out[o++] = '\r';
        out[o++] = c;
        s->cr = c == '\r';
    }
    return o;
}
