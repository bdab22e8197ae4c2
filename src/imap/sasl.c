/* sasl.c: SASL mechanism selection and message building (RFC 4616 PLAIN, LOGIN, RFC 7628
 * OAUTHBEARER, Google's XOAUTH2). Every buffer that held a secret is wiped before it is freed. */
#include "imap/sasl.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "util/err.h"

static const char *const sasl_names[SASL_NMECH] = {"PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER"};

const char *sasl_mech_name(int mech)
{
    return mech >= 0 && mech < SASL_NMECH ? sasl_names[mech] : "?";
}

bool sasl_mech_is_password(int mech)
{
    return mech == SASL_PLAIN || mech == SASL_LOGIN;
}

int sasl_parse_mechs(const char *auth, int mechs[SASL_NMECH], size_t *n, ofs_error *err)
{
    *n = 0;
    const char *p = auth ? auth : "";
    while (*p) {
        size_t len = strcspn(p, " \t,");
        if (len == 0) {
            p++;
            continue;
        }
        int m = -1;
        for (int i = 0; i < SASL_NMECH; i++)
            if (strlen(sasl_names[i]) == len && strncasecmp(p, sasl_names[i], len) == 0)
                m = i;
        if (m < 0)
            return err_set(err, OFS_E_CONFIG,
                           "unknown mechanism '%.*s' in auth (use plain, login, xoauth2 or "
                           "oauthbearer)",
                           (int)(len > 40 ? 40 : len), p);
        bool dup = false;
        for (size_t i = 0; i < *n; i++)
            dup |= mechs[i] == m;
        if (!dup)
            mechs[(*n)++] = m;
        p += len;
    }
    if (*n == 0) {
        mechs[0] = SASL_PLAIN;
        mechs[1] = SASL_LOGIN;
        *n = 2;
    }
    return 0;
}

void sasl_reserve(buf *b, size_t n)
{
    size_t keep = b->len;
    buf_printf(b, "%*s", (int)n, "");
    b->len = keep;
    b->data[keep] = '\0';
}

void sasl_base64(const void *data, size_t len, buf *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *in = data;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < len)
            v |= in[i + 2];
        buf_addc(out, tab[(v >> 18) & 63]);
        buf_addc(out, tab[(v >> 12) & 63]);
        buf_addc(out, i + 1 < len ? tab[(v >> 6) & 63] : '=');
        buf_addc(out, i + 2 < len ? tab[v & 63] : '=');
    }
}

void sasl_initial_response(int mech, const char *user, const char *secret, const char *host,
                           int port, buf *out)
{
    buf raw;
    buf_init(&raw);
    size_t need = strlen(user) + strlen(secret) + (host ? strlen(host) : 0) + 64;
    sasl_reserve(&raw, need);
    sasl_reserve(out, need * 4 / 3 + 8);
    switch (mech) {
    case SASL_PLAIN: /* authzid NUL authcid NUL password; empty authzid: act as ourselves */
        buf_addc(&raw, '\0');
        buf_adds(&raw, user);
        buf_addc(&raw, '\0');
        buf_adds(&raw, secret);
        break;
    case SASL_XOAUTH2:
        buf_printf(&raw, "user=%s\001auth=Bearer %s\001\001", user, secret);
        break;
    case SASL_OAUTHBEARER: /* GS2 header, then key=value pairs separated by ^A */
        buf_printf(&raw, "n,a=%s,\001host=%s\001port=%d\001auth=Bearer %s\001\001", user, host,
                   port, secret);
        break;
    default:
        break;
    }
    sasl_base64(raw.data, raw.len, out);
    if (raw.data)
        explicit_bzero(raw.data, raw.cap);
    buf_free(&raw);
}

const char *sasl_oauth_error_reply(int mech)
{
    /* OAUTHBEARER: a lone ^A (base64 "AQ==") asks the server to finish with a failure. */
    return mech == SASL_OAUTHBEARER ? "AQ==" : "";
}
