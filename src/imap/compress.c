/* compress.c: the DEFLATE layer of RFC 4978 between the IMAP client and its transport.
 * It swaps the transport's ops and calls the layer below with that layer's own private state. */
#include "imap/compress.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "util/err.h"
#include "util/mem.h"

/* What the server sends arrives ZIN_BUF compressed bytes at a time (the reader above takes
 * several times that once inflated); what is sent leaves ZOUT_BUF bytes at a time. */
#define ZIN_BUF (16 * 1024)
#define ZOUT_BUF (16 * 1024)

/* The client's side carries commands and the odd APPEND: a 4 KiB window and a small hash
 * (about 24 KiB of zlib state, against 256 KiB for the defaults) lose 1 % of ratio on mail.
 * The server's inflate takes any window up to 15 bits (RFC 1951); ours must take 15. */
#define ZOUT_WINDOW_BITS 12
#define ZOUT_MEM_LEVEL 4

typedef struct zlayer {
    const imap_transport_ops *below;
    void *below_impl;
    z_stream in, out;
    unsigned char obuf[ZOUT_BUF];
    size_t ibuf_size;
    unsigned char ibuf[]; /* ZIN_BUF, or more when more came before compression began */
} zlayer;

static long z_below_read(imap_transport *t, zlayer *z, void *data, size_t len, ofs_error *err)
{
    t->impl = z->below_impl;
    long n = z->below->read(t, data, len, err);
    t->impl = z;
    return n;
}

static int z_below_write(imap_transport *t, zlayer *z, const void *data, size_t len, ofs_error *err)
{
    t->impl = z->below_impl;
    int r = z->below->write(t, data, len, err);
    t->impl = z;
    return r;
}

static bool z_below_pending(imap_transport *t, zlayer *z)
{
    if (!z->below->pending)
        return false;
    t->impl = z->below_impl;
    bool p = z->below->pending(t);
    t->impl = z;
    return p;
}

static long z_read(imap_transport *t, void *data, size_t len, ofs_error *err)
{
    zlayer *z = t->impl;
    for (;;) {
        if (z->in.avail_in > 0) {
            z->in.next_out = data;
            z->in.avail_out = (uInt)(len > UINT32_MAX ? UINT32_MAX : len);
            int rc = inflate(&z->in, Z_SYNC_FLUSH);
            size_t got = len - z->in.avail_out;
            if (got > 0)
                return (long)got;
            if (rc == Z_STREAM_END)
                return err_set(err, OFS_E_NET, "server %s:%d ended its compressed stream", t->host,
                               t->port);
            if (rc != Z_OK && rc != Z_BUF_ERROR)
                return err_set(err, OFS_E_PROTO, "server %s:%d sent corrupt compressed data: %s",
                               t->host, t->port, z->in.msg ? z->in.msg : "inflate failed");
        }
        long n = z_below_read(t, z, z->ibuf, z->ibuf_size, err);
        if (n < 0)
            return -1;
        z->in.next_in = z->ibuf;
        z->in.avail_in = (uInt)n;
    }
}

static int z_write(imap_transport *t, const void *data, size_t len, ofs_error *err)
{
    zlayer *z = t->impl;
    z->out.next_in = (unsigned char *)data;
    z->out.avail_in = (uInt)len;
    do {
        z->out.next_out = z->obuf;
        z->out.avail_out = sizeof z->obuf;
        if (deflate(&z->out, Z_SYNC_FLUSH) == Z_STREAM_ERROR)
            return err_set(err, OFS_E_IO, "compressing data for %s:%d failed", t->host, t->port);
        size_t have = sizeof z->obuf - z->out.avail_out;
        if (have && z_below_write(t, z, z->obuf, have, err) < 0)
            return -1;
    } while (z->out.avail_out == 0 || z->out.avail_in > 0);
    return 0;
}

static void z_close(imap_transport *t)
{
    zlayer *z = t->impl;
    inflateEnd(&z->in);
    deflateEnd(&z->out);
    t->ops = z->below;
    t->impl = z->below_impl;
    free(z);
    t->ops->close(t);
}

/* Input left means output left: inflate stops with input only when the reader's buffer is
 * full, and it goes on through a block's end and the flush marker without output space, so a
 * response that ends at the buffer's end leaves nothing behind that looks like more. */
static bool z_pending(imap_transport *t)
{
    zlayer *z = t->impl;
    return z->in.avail_in > 0 || z_below_pending(t, z);
}

static const imap_transport_ops z_ops = {
    .read = z_read,
    .write = z_write,
    .close = z_close,
    .pending = z_pending,
};

int imap_compress_start(imap_transport *t, const void *pending, size_t len, ofs_error *err)
{
    size_t ibuf_size = len > ZIN_BUF ? len : ZIN_BUF;
    zlayer *z = xcalloc(1, sizeof *z + ibuf_size);
    z->ibuf_size = ibuf_size;
    /* Raw deflate, no zlib header (RFC 4978 section 4). */
    if (inflateInit2(&z->in, -15) != Z_OK) {
        free(z);
        return err_set(err, OFS_E_IO, "cannot start decompression for %s", t->host);
    }
    if (deflateInit2(&z->out, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -ZOUT_WINDOW_BITS, ZOUT_MEM_LEVEL,
                     Z_DEFAULT_STRATEGY) != Z_OK) {
        inflateEnd(&z->in);
        free(z);
        return err_set(err, OFS_E_IO, "cannot start compression for %s", t->host);
    }
    memcpy(z->ibuf, pending, len);
    z->in.next_in = z->ibuf;
    z->in.avail_in = (uInt)len;
    z->below = t->ops;
    z->below_impl = t->impl;
    t->ops = &z_ops;
    t->impl = z;
    return 0;
}
