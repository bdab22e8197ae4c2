/* imap_store.h: the server side of the store interface, over one IMAP connection.
 * Maps canonical folder names to the server's (delimiter, modified UTF-7) and back. */
#ifndef OFS_IMAP_STORE_H
#define OFS_IMAP_STORE_H

#include "sync/store.h"

typedef struct imap_store_opts {
    const char *host;
    int port;
    int tls; /* enum cfg_tls; only CFG_TLS_NONE is implemented so far */
    const char *user;
    const char *password;
    int timeout; /* seconds without data before a read fails */
} imap_store_opts;

/* Connects, logs in, reads capabilities. */
int imap_store_open(const imap_store_opts *o, store **out, ofs_error *err);

#endif
