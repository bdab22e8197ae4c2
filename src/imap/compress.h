/* compress.h: COMPRESS=DEFLATE (RFC 4978) as a layer over any transport (TCP or TLS).
 * Raw deflate both ways; every write is flushed so a command never waits in the compressor.
 * What it holds uninflated (and what TLS below it holds) shows in imap_transport_pending(). */
#ifndef OFS_IMAP_COMPRESS_H
#define OFS_IMAP_COMPRESS_H

#include <stddef.h>

#include "imap/transport.h"

/* Puts the deflate layer over t, from the next byte on. pending/len: bytes already read from t
 * after the server's OK, which belong to the compressed stream. From then on the byte
 * counters of t count uncompressed bytes. */
int imap_compress_start(imap_transport *t, const void *pending, size_t len, ofs_error *err);

#endif
