/* tls.c: TLS over the transport's socket (OpenSSL): TLS >= 1.2, SNI, chain + host name checks.
 * A failed check fails the handshake itself, and the error names what did not match. */
#include "imap/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "util/err.h"
#include "util/mem.h"

/* What the verify callback saw first: enough to say in one line what did not match. */
typedef struct tls_verify_info {
    int error; /* X509_V_OK: nothing failed */
    int depth;
    char subject[256];
    char issuer[256];
    char names[512];       /* the leaf's DNS and IP names, for a host name mismatch */
    char fingerprint[104]; /* the leaf's, "SHA256:..." */
} tls_verify_info;

typedef struct tls_state {
    SSL_CTX *ctx;
    SSL *ssl;
    const imap_transport_ops *lower; /* the TCP ops this layer sits on */
    void *lower_impl;
    tls_verify_info vi;
} tls_state;

static const imap_transport_ops tls_ops;

bool imap_host_is_loopback(const char *host)
{
    if (!host)
        return false;
    if (strcasecmp(host, "localhost") == 0 || strcasecmp(host, "localhost.") == 0)
        return true;
    struct in_addr a4;
    if (inet_aton(host, &a4) == 1) /* inet_aton: "127.1" is 127.0.0.1 to the resolver too */
        return (ntohl(a4.s_addr) >> 24) == 127;
    struct in6_addr a6;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6) || (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
    return false;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int imap_tls_parse_fingerprint(const char *s, unsigned char out[32], ofs_error *err)
{
    unsigned char tmp[32];
    size_t n = 0;
    const char *p = s;
    if (strncasecmp(p, "SHA256:", 7) != 0)
        goto bad;
    for (p += 7; *p; p++) {
        if (*p == ':' && n > 0 && p[1] != '\0')
            continue;
        int hi = hexval(p[0]), lo = hi < 0 ? -1 : hexval(p[1]);
        if (lo < 0 || n == sizeof tmp)
            goto bad;
        tmp[n++] = (unsigned char)(hi << 4 | lo);
        p++;
    }
    if (n != sizeof tmp)
        goto bad;
    if (out)
        memcpy(out, tmp, sizeof tmp);
    return 0;
bad:
    return err_set(err, OFS_E_CONFIG,
                   "fingerprint must be SHA256: followed by 64 hex digits (as printed by "
                   "openssl x509 -noout -fingerprint -sha256), not '%.80s'",
                   s);
}

static void fingerprint_format(const unsigned char md[32], char *out, size_t cap)
{
    size_t o = (size_t)snprintf(out, cap, "SHA256:");
    for (size_t i = 0; i < 32 && o + 3 < cap; i++)
        o += (size_t)snprintf(out + o, cap - o, "%s%02X", i ? ":" : "", md[i]);
}

static void cert_fingerprint(X509 *cert, char *out, size_t cap)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    out[0] = '\0';
    if (cert && X509_digest(cert, EVP_sha256(), md, &len) && len == 32)
        fingerprint_format(md, out, cap);
}

/* The leaf's subjectAltName entries ("DNS:a, IP:b"), or its CN when it has none. */
static void cert_names(X509 *cert, char *out, size_t cap)
{
    out[0] = '\0';
    size_t o = 0;
    GENERAL_NAMES *gens = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens) && o + 1 < cap; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        char ip[INET6_ADDRSTRLEN] = "";
        if (g->type == GEN_DNS) {
            const unsigned char *d = ASN1_STRING_get0_data(g->d.dNSName);
            o += (size_t)snprintf(out + o, cap - o, "%sDNS:%.*s", o ? ", " : "",
                                  ASN1_STRING_length(g->d.dNSName), (const char *)d);
        } else if (g->type == GEN_IPADD) {
            int len = ASN1_STRING_length(g->d.iPAddress);
            const unsigned char *d = ASN1_STRING_get0_data(g->d.iPAddress);
            if (len == 4 || len == 16)
                inet_ntop(len == 4 ? AF_INET : AF_INET6, d, ip, sizeof ip);
            o += (size_t)snprintf(out + o, cap - o, "%sIP:%s", o ? ", " : "", ip);
        }
    }
    GENERAL_NAMES_free(gens);
    if (o == 0)
        X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, out, (int)cap);
    /* Names come from the peer: keep the message one printable line. */
    for (char *p = out; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p == 0x7f)
            *p = '?';
}

static int tls_verify_cb(int ok, X509_STORE_CTX *x)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx());
    tls_state *st = ssl ? SSL_get_app_data(ssl) : NULL;
    if (ok || !st || st->vi.error != X509_V_OK)
        return ok;
    tls_verify_info *vi = &st->vi;
    vi->error = X509_STORE_CTX_get_error(x);
    vi->depth = X509_STORE_CTX_get_error_depth(x);
    X509 *cur = X509_STORE_CTX_get_current_cert(x);
    X509 *leaf = X509_STORE_CTX_get0_cert(x);
    if (cur) {
        X509_NAME_oneline(X509_get_subject_name(cur), vi->subject, sizeof vi->subject);
        X509_NAME_oneline(X509_get_issuer_name(cur), vi->issuer, sizeof vi->issuer);
    }
    if (leaf) {
        cert_names(leaf, vi->names, sizeof vi->names);
        cert_fingerprint(leaf, vi->fingerprint, sizeof vi->fingerprint);
    }
    return 0;
}

/* One line saying what did not match, for a handshake the verify callback stopped. */
static int tls_verify_failed(const imap_transport *t, const tls_verify_info *vi, ofs_error *err)
{
    const char *what = X509_verify_cert_error_string(vi->error);
    switch (vi->error) {
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
        return err_set_final(err, OFS_E_NET,
                             "TLS certificate of %s:%d does not match the host name: it is for %s, "
                             "not %s",
                             t->host, t->port, vi->names[0] ? vi->names : "no name", t->host);
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
        return err_set_final(
            err, OFS_E_NET,
            "TLS certificate of %s:%d is signed by an unknown CA (%s): set ca-file "
            "to that CA's certificate, or pin the server's certificate with "
            "fingerprint = %s if you have checked it",
            t->host, t->port, vi->issuer, vi->fingerprint);
    case X509_V_ERR_CERT_HAS_EXPIRED:
    case X509_V_ERR_CERT_NOT_YET_VALID:
        return err_set_final(
            err, OFS_E_NET, "TLS certificate of %s:%d (%s) %s", t->host, t->port, vi->subject,
            vi->error == X509_V_ERR_CERT_HAS_EXPIRED ? "has expired" : "is not valid yet");
    default:
        return err_set_final(err, OFS_E_NET,
                             "TLS certificate of %s:%d failed verification: %s (certificate %s, "
                             "depth %d)",
                             t->host, t->port, what, vi->subject, vi->depth);
    }
}

/* The first OpenSSL error as one line, with a hint for the usual port/mode mix-ups. */
static int tls_handshake_failed(const imap_transport *t, int sslerr, ofs_error *err)
{
    unsigned long e = ERR_peek_last_error();
    if (sslerr == SSL_ERROR_SYSCALL && e == 0)
        return err_set_final(err, OFS_E_NET,
                             "server %s:%d closed the connection during the TLS handshake", t->host,
                             t->port);
    const char *reason = e ? ERR_reason_error_string(e) : NULL;
    if (!reason)
        reason = "unknown error";
    const char *hint = "";
    if (ERR_GET_REASON(e) == SSL_R_WRONG_VERSION_NUMBER)
        hint = " (is this a TLS port? tls = starttls talks plain IMAP first, usually on 143)";
    else if (ERR_GET_REASON(e) == SSL_R_UNSUPPORTED_PROTOCOL ||
             ERR_GET_REASON(e) == SSL_R_TLSV1_ALERT_PROTOCOL_VERSION)
        hint = " (ofsync needs TLS 1.2 or later)";
    return err_set_final(err, OFS_E_NET, "TLS handshake with %s:%d failed: %s%s", t->host, t->port,
                         reason, hint);
}

/* Waits for what OpenSSL asked for; 1 to retry, -1 on timeout or another error. */
static int tls_want(imap_transport *t, int sslerr, ofs_error *err)
{
    if (sslerr == SSL_ERROR_WANT_READ)
        return imap_transport_wait(t, POLLIN, err) < 0 ? -1 : 1;
    if (sslerr == SSL_ERROR_WANT_WRITE)
        return imap_transport_wait(t, POLLOUT, err) < 0 ? -1 : 1;
    return 0;
}

static int tls_io_failed(imap_transport *t, int sslerr, ofs_error *err)
{
    if (sslerr == SSL_ERROR_ZERO_RETURN)
        return err_set(err, OFS_E_NET, "server %s:%d closed the connection", t->host, t->port);
    if (sslerr == SSL_ERROR_SYSCALL && ERR_peek_last_error() == 0) {
        if (errno == 0 || errno == EPIPE)
            return err_set(err, OFS_E_NET, "server %s:%d closed the connection", t->host, t->port);
        return err_errno(err, OFS_E_NET, errno, "connection to %s:%d lost", t->host, t->port);
    }
    const char *reason = ERR_reason_error_string(ERR_peek_last_error());
    return err_set(err, OFS_E_NET, "TLS error on the connection to %s:%d: %s", t->host, t->port,
                   reason ? reason : "unknown error");
}

static long tls_read(imap_transport *t, void *data, size_t len, ofs_error *err)
{
    tls_state *st = t->impl;
    for (;;) {
        ERR_clear_error();
        errno = 0;
        size_t n = 0;
        if (SSL_read_ex(st->ssl, data, len, &n) == 1)
            return (long)n;
        int e = SSL_get_error(st->ssl, 0);
        int w = tls_want(t, e, err);
        if (w < 0)
            return -1;
        if (w == 0)
            return tls_io_failed(t, e, err);
    }
}

/* OpenSSL writes with write(2): keep a vanished peer's SIGPIPE from killing the process
 * without touching the process-wide disposition (this is a library). */
static int tls_write_nosigpipe(SSL *ssl, const char *p, size_t len, size_t *done)
{
    sigset_t pipe_set, old;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    sigset_t pending;
    sigpending(&pending);
    bool was_pending = sigismember(&pending, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    int r = SSL_write_ex(ssl, p, len, done);
    int saved = errno;
    if (!was_pending) {
        struct timespec zero = {0, 0};
        while (sigtimedwait(&pipe_set, NULL, &zero) == SIGPIPE) {
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    errno = saved;
    return r;
}

static int tls_write(imap_transport *t, const void *data, size_t len, ofs_error *err)
{
    tls_state *st = t->impl;
    const char *p = data;
    while (len > 0) {
        ERR_clear_error();
        errno = 0;
        size_t n = 0;
        if (tls_write_nosigpipe(st->ssl, p, len, &n) == 1) {
            p += n;
            len -= n;
            continue;
        }
        int e = SSL_get_error(st->ssl, 0);
        int w = tls_want(t, e, err);
        if (w < 0)
            return -1;
        if (w == 0)
            return tls_io_failed(t, e, err);
    }
    return 0;
}

static void tls_state_free(tls_state *st)
{
    if (!st)
        return;
    SSL_free(st->ssl);
    SSL_CTX_free(st->ctx);
    free(st);
}

static void tls_close(imap_transport *t)
{
    tls_state *st = t->impl;
    /* One try at close_notify; the socket is non-blocking, so this never waits. */
    SSL_shutdown(st->ssl);
    t->ops = st->lower;
    t->impl = st->lower_impl;
    tls_state_free(st);
    t->ops->close(t);
}

/* The client reads 64 KiB at a time, more than a record holds, and without read-ahead OpenSSL
 * takes one record at a time off the socket: nothing stays in here today, and a next record
 * keeps the socket readable. This keeps watch right if either changes (read-ahead on, it
 * matters: wakeup_* in tests/hostile/test_hostile.py). Unprocessed bytes: a record begun. */
static bool tls_pending(imap_transport *t)
{
    const tls_state *st = t->impl;
    return SSL_pending(st->ssl) > 0 || SSL_has_pending(st->ssl);
}

static const imap_transport_ops tls_ops = {
    .read = tls_read,
    .write = tls_write,
    .close = tls_close,
    .pending = tls_pending,
};

bool imap_tls_active(const imap_transport *t)
{
    return t && t->ops == &tls_ops;
}

static int tls_setup(imap_transport *t, const imap_tls_opts *o, tls_state *st, ofs_error *err)
{
    st->ctx = SSL_CTX_new(TLS_client_method());
    if (!st->ctx)
        return err_set(err, OFS_E_NET, "cannot set up TLS: %s",
                       ERR_reason_error_string(ERR_peek_last_error()));
    SSL_CTX_set_min_proto_version(st->ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(st->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_AUTO_RETRY);
    bool pinned = o->fingerprint && *o->fingerprint;
    if (!pinned) {
        if (o->ca_file && *o->ca_file) {
            if (SSL_CTX_load_verify_locations(st->ctx, o->ca_file, NULL) != 1)
                return err_set(err, OFS_E_CONFIG, "cannot load ca-file %s: %s", o->ca_file,
                               ERR_reason_error_string(ERR_peek_last_error()));
        } else if (SSL_CTX_set_default_verify_paths(st->ctx) != 1) {
            return err_set(err, OFS_E_CONFIG, "cannot load the system's CA certificates: %s",
                           ERR_reason_error_string(ERR_peek_last_error()));
        }
        /* A pinned certificate is checked after the handshake instead (tls_check_pin). */
        SSL_CTX_set_verify(st->ctx, SSL_VERIFY_PEER, tls_verify_cb);
    }
    st->ssl = SSL_new(st->ctx);
    if (!st->ssl || SSL_set_fd(st->ssl, t->fd) != 1)
        return err_set(err, OFS_E_NET, "cannot set up TLS for %s", t->host);
    SSL_set_app_data(st->ssl, st);
    struct in6_addr ip;
    bool literal = inet_pton(AF_INET, t->host, &ip) == 1 || inet_pton(AF_INET6, t->host, &ip) == 1;
    if (!literal && SSL_set_tlsext_host_name(st->ssl, t->host) != 1) /* SNI: names only */
        return err_set(err, OFS_E_CONFIG, "bad server name for TLS: %s", t->host);
    if (!pinned) {
        int ok = literal ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(st->ssl), t->host)
                         : SSL_set1_host(st->ssl, t->host);
        if (ok != 1)
            return err_set(err, OFS_E_CONFIG, "bad server name for TLS: %s", t->host);
        SSL_set_hostflags(st->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    }
    return 0;
}

static int tls_check_pin(const imap_transport *t, const tls_state *st, const unsigned char *want,
                         const char *want_text, ofs_error *err)
{
    X509 *cert = SSL_get0_peer_certificate(st->ssl);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (!cert || !X509_digest(cert, EVP_sha256(), md, &len) || len != 32)
        return err_set_final(err, OFS_E_NET, "server %s:%d sent no TLS certificate", t->host,
                             t->port);
    if (CRYPTO_memcmp(md, want, 32) == 0)
        return 0;
    char got[104];
    fingerprint_format(md, got, sizeof got);
    return err_set_final(err, OFS_E_NET,
                         "TLS certificate of %s:%d has fingerprint %s, not the pinned %s", t->host,
                         t->port, got, want_text);
}

int imap_tls_start(imap_transport *t, const imap_tls_opts *o, ofs_error *err)
{
    unsigned char pin[32];
    bool pinned = o->fingerprint && *o->fingerprint;
    if (pinned && imap_tls_parse_fingerprint(o->fingerprint, pin, err) < 0)
        return -1;
    tls_state *st = xcalloc(1, sizeof *st);
    st->vi.error = X509_V_OK;
    ERR_clear_error();
    if (tls_setup(t, o, st, err) < 0) {
        tls_state_free(st);
        return -1;
    }
    for (;;) {
        ERR_clear_error();
        errno = 0;
        int r = SSL_connect(st->ssl);
        if (r == 1)
            break;
        int e = SSL_get_error(st->ssl, r);
        int w = tls_want(t, e, err);
        if (w > 0)
            continue;
        if (w == 0) {
            if (st->vi.error != X509_V_OK)
                tls_verify_failed(t, &st->vi, err);
            else
                tls_handshake_failed(t, e, err);
        }
        tls_state_free(st);
        return -1;
    }
    if (pinned && tls_check_pin(t, st, pin, o->fingerprint, err) < 0) {
        tls_state_free(st);
        return -1;
    }
    st->lower = t->ops;
    st->lower_impl = t->impl;
    t->ops = &tls_ops;
    t->impl = st;
    return 0;
}
