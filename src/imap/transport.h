/* transport.h: the byte pipe under the IMAP client: plain TCP now, TLS later, same vtable.
 * Every wait is a poll() with the configured timeout, so nothing can block forever. */
#ifndef OFS_IMAP_TRANSPORT_H
#define OFS_IMAP_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ofsync.h"

typedef struct imap_transport imap_transport;

/* Called at most every IMAP_ACTIVITY_PERIOD s while bytes flow (idle 0) or while a wait for
 * the server goes on (idle: seconds since the wait began), so a display can say what it waits
 * for without a timer thread of its own. */
typedef void (*imap_activity_fn)(void *ctx, double idle);
#define IMAP_ACTIVITY_PERIOD 0.5

typedef struct imap_transport_ops {
    /* Reads at least 1 byte; end of stream is an error (OFS_E_NET). Returns bytes or -1. */
    long (*read)(imap_transport *t, void *data, size_t len, ofs_error *err);
    /* Writes all len bytes or fails. */
    int (*write)(imap_transport *t, const void *data, size_t len, ofs_error *err);
    /* Closes the connection and frees t. */
    void (*close)(imap_transport *t);
    /* Whether this layer (or one below it) holds bytes that the next read returns without the
     * socket becoming readable: decrypted TLS records, inflated COMPRESS output. NULL: never. */
    bool (*pending)(imap_transport *t);
} imap_transport_ops;

struct imap_transport {
    const imap_transport_ops *ops;
    int fd;     /* the connected, non-blocking socket */
    char *host; /* for messages */
    int port;
    int timeout;                  /* seconds without progress before a wait fails */
    uint64_t bytes_in, bytes_out; /* counted by the wrappers below, whatever the ops */
    void *impl;                   /* private state of the layer above TCP (TLS) */
    imap_activity_fn activity;    /* optional, see imap_activity_fn */
    void *activity_ctx;
    double activity_last; /* monotonic time of the last call */
};

/* Resolves host, tries each address with a connect timeout; returns a plain TCP transport. */
int imap_transport_connect(const char *host, int port, int timeout, imap_transport **out,
                           ofs_error *err);

long imap_transport_read(imap_transport *t, void *data, size_t len, ofs_error *err);
int imap_transport_write(imap_transport *t, const void *data, size_t len, ofs_error *err);
void imap_transport_close(imap_transport *t); /* NULL is fine */
/* See imap_transport_ops.pending: a poll() on t->fd alone would sleep on these bytes. */
bool imap_transport_pending(imap_transport *t);

/* Monotonic seconds, for deadlines and rates. */
double imap_now(void);

/* Waits until t->fd is ready for events (POLLIN/POLLOUT) or t->timeout passes (OFS_E_NET).
 * For layers above TCP that need to wait on the socket themselves. */
int imap_transport_wait(imap_transport *t, short events, ofs_error *err);

#endif
