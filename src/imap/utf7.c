/* utf7.c: modified UTF-7 <-> UTF-8 for IMAP folder names.
 * Strict: anything the encoder would not have produced is refused, so names map one to one. */
#include "imap/utf7.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/err.h"
#include "util/mem.h"

static const char utf7_b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

static int utf7_b64_value(char ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '+')
        return 62;
    if (ch == ',')
        return 63;
    return -1;
}

static bool utf7_direct(unsigned long cp)
{
    return cp >= 0x20 && cp <= 0x7e;
}

int imap_utf8_next(const char *s, unsigned long *cp)
{
    const unsigned char *u = (const unsigned char *)s;
    unsigned long c;
    int len;
    unsigned long min;
    if (u[0] < 0x80) {
        *cp = u[0];
        return u[0] ? 1 : 0;
    } else if ((u[0] & 0xe0) == 0xc0) {
        c = u[0] & 0x1f, len = 2, min = 0x80;
    } else if ((u[0] & 0xf0) == 0xe0) {
        c = u[0] & 0x0f, len = 3, min = 0x800;
    } else if ((u[0] & 0xf8) == 0xf0) {
        c = u[0] & 0x07, len = 4, min = 0x10000;
    } else {
        return 0;
    }
    for (int i = 1; i < len; i++) {
        if ((u[i] & 0xc0) != 0x80)
            return 0; /* also catches a NUL that truncates the sequence */
        c = (c << 6) | (u[i] & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    *cp = c;
    return len;
}

static void utf8_put(buf *out, unsigned long cp)
{
    if (cp < 0x80) {
        buf_addc(out, (char)cp);
    } else if (cp < 0x800) {
        buf_addc(out, (char)(0xc0 | (cp >> 6)));
        buf_addc(out, (char)(0x80 | (cp & 0x3f)));
    } else if (cp < 0x10000) {
        buf_addc(out, (char)(0xe0 | (cp >> 12)));
        buf_addc(out, (char)(0x80 | ((cp >> 6) & 0x3f)));
        buf_addc(out, (char)(0x80 | (cp & 0x3f)));
    } else {
        buf_addc(out, (char)(0xf0 | (cp >> 18)));
        buf_addc(out, (char)(0x80 | ((cp >> 12) & 0x3f)));
        buf_addc(out, (char)(0x80 | ((cp >> 6) & 0x3f)));
        buf_addc(out, (char)(0x80 | (cp & 0x3f)));
    }
}

/* State of one base64 run while decoding. */
typedef struct utf7_run {
    uint32_t acc;
    int nbits;
    unsigned long high; /* pending high surrogate, 0 if none */
    size_t units;
} utf7_run;

/* Returns NULL or why the unit is refused. */
static const char *utf7_unit(utf7_run *r, unsigned long unit, buf *out)
{
    r->units++;
    if (r->high) {
        if (unit < 0xdc00 || unit > 0xdfff)
            return "a high surrogate is not followed by a low one";
        utf8_put(out, 0x10000 + ((r->high - 0xd800) << 10) + (unit - 0xdc00));
        r->high = 0;
        return NULL;
    }
    if (unit >= 0xd800 && unit <= 0xdbff) {
        r->high = unit;
        return NULL;
    }
    if (unit >= 0xdc00 && unit <= 0xdfff)
        return "a low surrogate without a high one";
    if (unit == 0)
        return "an encoded NUL";
    if (utf7_direct(unit))
        return "printable ASCII inside a base64 shift";
    utf8_put(out, unit);
    return NULL;
}

/* Decodes the run starting just after '&' at *pos; leaves *pos after its '-'. */
static const char *utf7_decode_run(const char *in, size_t *pos, buf *out)
{
    utf7_run r = {0};
    size_t i = *pos;
    for (;; i++) {
        if (in[i] == '\0')
            return "unterminated base64 shift";
        if (in[i] == '-')
            break;
        int v = utf7_b64_value(in[i]);
        if (v < 0)
            return "bad base64 character in a shift";
        r.acc = (r.acc << 6) | (uint32_t)v;
        r.nbits += 6;
        if (r.nbits >= 16) {
            r.nbits -= 16;
            const char *why = utf7_unit(&r, (r.acc >> r.nbits) & 0xffff, out);
            if (why)
                return why;
        }
    }
    if (r.nbits >= 6 || (r.acc & ((1u << r.nbits) - 1)) != 0)
        return "base64 shift with extra or non-zero padding bits";
    if (r.high)
        return "a high surrogate at the end of a shift";
    if (r.units == 0)
        return "empty base64 shift";
    *pos = i + 1;
    return NULL;
}

int imap_utf7_decode(const char *in, char **out, ofs_error *err)
{
    buf b;
    buf_init(&b);
    buf_adds(&b, "");
    const char *why = NULL;
    bool after_run = false;
    size_t i = 0;
    while (in[i] && !why) {
        unsigned char ch = (unsigned char)in[i];
        if (!utf7_direct(ch)) {
            why = "a raw 8-bit or control byte";
        } else if (ch != '&') {
            buf_addc(&b, (char)ch);
            after_run = false;
            i++;
        } else if (in[i + 1] == '-') {
            buf_addc(&b, '&');
            after_run = false;
            i += 2;
        } else if (after_run) {
            why = "two base64 shifts in a row";
        } else {
            i++;
            why = utf7_decode_run(in, &i, &b);
            after_run = true;
        }
    }
    if (why) {
        buf_free(&b);
        return err_set(err, OFS_E_NAME, "folder name \"%s\" is not valid modified UTF-7: %s", in,
                       why);
    }
    *out = b.data;
    return 0;
}

static void utf7_flush_run(buf *out, const uint16_t *units, size_t n)
{
    uint32_t acc = 0;
    int nbits = 0;
    buf_addc(out, '&');
    for (size_t i = 0; i < n; i++) {
        acc = (acc << 16) | units[i];
        nbits += 16;
        while (nbits >= 6) {
            nbits -= 6;
            buf_addc(out, utf7_b64[(acc >> nbits) & 0x3f]);
        }
        acc &= (1u << nbits) - 1;
    }
    if (nbits > 0)
        buf_addc(out, utf7_b64[(acc << (6 - nbits)) & 0x3f]);
    buf_addc(out, '-');
}

int imap_utf7_encode(const char *in, char **out, ofs_error *err)
{
    buf b;
    buf_init(&b);
    buf_adds(&b, "");
    size_t len = strlen(in);
    uint16_t *units = xmalloc((len * 2 + 1) * sizeof *units);
    size_t n = 0;
    size_t i = 0;
    while (in[i]) {
        unsigned long cp;
        int step = imap_utf8_next(in + i, &cp);
        if (step == 0) {
            free(units);
            buf_free(&b);
            return err_set(err, OFS_E_NAME, "folder name \"%s\" is not valid UTF-8", in);
        }
        i += (size_t)step;
        if (utf7_direct(cp)) {
            if (n) {
                utf7_flush_run(&b, units, n);
                n = 0;
            }
            buf_adds(&b, cp == '&' ? "&-" : (char[]){(char)cp, '\0'});
        } else if (cp >= 0x10000) {
            units[n++] = (uint16_t)(0xd800 + ((cp - 0x10000) >> 10));
            units[n++] = (uint16_t)(0xdc00 + ((cp - 0x10000) & 0x3ff));
        } else {
            units[n++] = (uint16_t)cp;
        }
    }
    if (n)
        utf7_flush_run(&b, units, n);
    free(units);
    *out = b.data;
    return 0;
}
