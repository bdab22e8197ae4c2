/* sasl.h: SASL mechanisms for IMAP AUTHENTICATE: which ones an account allows, and their bytes.
 * Pure functions (no I/O), so that every token is unit-tested; client.c runs the exchange. */
#ifndef OFS_IMAP_SASL_H
#define OFS_IMAP_SASL_H

#include <stdbool.h>
#include <stddef.h>

#include "ofsync.h"
#include "util/mem.h"

enum sasl_mech { SASL_PLAIN, SASL_LOGIN, SASL_XOAUTH2, SASL_OAUTHBEARER, SASL_NMECH };

/* The mechanisms allowed by an account's `auth` value ("plain login", "xoauth2", commas or
 * spaces, any case), in the user's order of preference. NULL or empty: plain, login.
 * OAuth mechanisms are used only when named: the secret is then a token, not a password. */
int sasl_parse_mechs(const char *auth, int mechs[SASL_NMECH], size_t *n, ofs_error *err);

/* "PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER". */
const char *sasl_mech_name(int mech);

/* True for mechanisms whose secret is a password (the IMAP LOGIN command may stand in). */
bool sasl_mech_is_password(int mech);

/* The client's first message, base64-encoded, appended to out (PLAIN, XOAUTH2, OAUTHBEARER;
 * LOGIN has none: its steps are the user name and the password, see sasl_base64). */
void sasl_initial_response(int mech, const char *user, const char *secret, const char *host,
                           int port, buf *out);

/* What a client answers to an OAuth error challenge (RFC 7628 3.2.3; XOAUTH2: empty). */
const char *sasl_oauth_error_reply(int mech);

/* Grows b so that n more bytes fit without moving it: a realloc would leave a copy of a secret
 * in freed memory. */
void sasl_reserve(buf *b, size_t n);

/* Appends the base64 (RFC 4648, padded) of data to out. */
void sasl_base64(const void *data, size_t len, buf *out);

#endif
