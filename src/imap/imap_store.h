/* imap_store.h: the server side of the store interface, over one IMAP connection.
 * Maps canonical folder names to the server's (delimiter, modified UTF-7) and back. */
#ifndef OFS_IMAP_STORE_H
#define OFS_IMAP_STORE_H

#include <stdbool.h>

#include "imap/client.h"
#include "imap/trace.h"
#include "sync/store.h"

/* What the connection is doing, at most every IMAP_ACTIVITY_PERIOD s: idle is how long the
 * current wait for the server has lasted (0 while bytes flow), doing says on what
 * ("fetching INBOX UID 4711"). */
typedef void (*imap_store_activity_fn)(void *ctx, double idle, const char *doing);

typedef struct imap_store_opts {
    const char *host;
    int port;
    int tls; /* enum cfg_tls */
    const char *user;
    const char *password;            /* or the OAuth token */
    int timeout;                     /* seconds without data before a read fails */
    imap_store_activity_fn activity; /* optional */
    void *activity_ctx;
    bool compress; /* COMPRESS=DEFLATE when the server offers it */
    const char *ca_file;
    const char *fingerprint;
    bool allow_plaintext; /* tls = none to a host that is not loopback */
    const char *auth;     /* allowed SASL mechanisms (the account's `auth`) */
    imap_trace_fn trace;  /* protocol trace, or NULL */
    void *trace_ctx;
} imap_store_opts;

/* Connects (refusing tls = none to a non-loopback host unless allow_plaintext), logs in,
 * reads capabilities. */
int imap_store_open(const imap_store_opts *o, store **out, ofs_error *err);

/* Bytes on the wire and round trips of the store's connection so far. */
void imap_store_counters(store *s, uint64_t *in, uint64_t *out, uint64_t *round_trips);
/* The connection under an IMAP store, for commands outside the store interface (STATUS,
 * IDLE, NOTIFY). Commands that select a folder leave the store's own idea of it stale. */
imap_client *imap_store_client(store *s);
/* The server's name (delimiter, modified UTF-7) of a canonical folder name, malloc'd. */
int imap_store_server_name(store *s, const char *canon, char **out, ofs_error *err);

#endif
