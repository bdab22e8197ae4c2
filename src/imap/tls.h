/* tls.h: the TLS layer of the transport (OpenSSL): handshake, verification, pinning, policy.
 * It slots under the IMAP client by swapping the transport's ops; the TCP socket stays below. */
#ifndef OFS_IMAP_TLS_H
#define OFS_IMAP_TLS_H

#include <stdbool.h>

#include "imap/transport.h"
#include "ofsync.h"

typedef struct imap_tls_opts {
    const char *ca_file;     /* PEM bundle to trust instead of the system store; NULL: system */
    const char *fingerprint; /* "SHA256:hex" pin of the server certificate; NULL: verify chain */
} imap_tls_opts;

/* Runs a TLS (>= 1.2) handshake over t's connected socket, with SNI, then verifies the
 * certificate chain and host name (or the pinned fingerprint). On success t reads and writes
 * through TLS; on failure t is unchanged (the caller closes it) and err says what did not
 * match. Nothing is sent over t before this returns 0. */
int imap_tls_start(imap_transport *t, const imap_tls_opts *o, ofs_error *err);

/* True when t runs over TLS. */
bool imap_tls_active(const imap_transport *t);

/* Checks "SHA256:" followed by 32 bytes in hex (colons between bytes allowed) and, when out is
 * not NULL, stores the bytes. */
int imap_tls_parse_fingerprint(const char *s, unsigned char out[32], ofs_error *err);

/* True for names that never leave the machine: localhost, 127.0.0.0/8, ::1. */
bool imap_host_is_loopback(const char *host);

#endif
