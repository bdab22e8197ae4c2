/* test_pending.c: what the layers under the IMAP client hold while the socket is quiet, and
 * what the COMPRESS layer hands the server. A poll loop (watch's push connections) sleeps on the
 * socket unless imap_transport_pending says a response waits in a layer: it must say so exactly,
 * or a wake-up is lost or a read hangs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include "imap/compress.h"
#include "imap/transport.h"

enum { PBUF = 65536 }; /* what the IMAP client reads at once */

typedef struct pipe_pair {
    imap_transport *t; /* the client's side, with the COMPRESS layer */
    int server;        /* the peer's socket */
    z_stream def;      /* the peer's compressor */
} pipe_pair;

/* The peer's compressor starts first: what it sends before the client's layer exists is
 * handed to imap_compress_start, as the IMAP client does with what it read past the OK. */
static void pair_open_after(pipe_pair *pp, const char *early, size_t early_len)
{
    memset(&pp->def, 0, sizeof pp->def);
    assert_int_equal(
        deflateInit2(&pp->def, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY),
        Z_OK);
    static unsigned char first[1 << 18];
    size_t first_len = 0;
    if (early_len) {
        pp->def.next_in = (unsigned char *)early;
        pp->def.avail_in = (uInt)early_len;
        pp->def.next_out = first;
        pp->def.avail_out = sizeof first;
        assert_int_equal(deflate(&pp->def, Z_SYNC_FLUSH), Z_OK);
        first_len = sizeof first - pp->def.avail_out;
    }
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(l, 1), 0);
    assert_int_equal(getsockname(l, (struct sockaddr *)&a, &al), 0);
    ofs_error err = {0};
    assert_int_equal(imap_transport_connect("127.0.0.1", ntohs(a.sin_port), 5, &pp->t, &err), 0);
    pp->server = accept(l, NULL, NULL);
    assert_true(pp->server >= 0);
    close(l);
    assert_int_equal(imap_compress_start(pp->t, first, first_len, &err), 0);
}

static void pair_open(pipe_pair *pp)
{
    pair_open_after(pp, "", 0);
}

static void pair_close(pipe_pair *pp)
{
    deflateEnd(&pp->def);
    close(pp->server);
    imap_transport_close(pp->t);
}

/* The peer sends data as one flush, the way a server answers. */
static void peer_send(pipe_pair *pp, const char *data, size_t len)
{
    unsigned char out[1 << 18];
    pp->def.next_in = (unsigned char *)data;
    pp->def.avail_in = (uInt)len;
    pp->def.next_out = out;
    pp->def.avail_out = sizeof out;
    assert_int_equal(deflate(&pp->def, Z_SYNC_FLUSH), Z_OK);
    assert_int_equal(pp->def.avail_in, 0);
    size_t n = sizeof out - pp->def.avail_out;
    assert_int_equal(write(pp->server, out, n), (ssize_t)n);
}

static bool socket_quiet(const pipe_pair *pp)
{
    struct pollfd p = {.fd = pp->t->fd, .events = POLLIN};
    return poll(&p, 1, 0) == 0;
}

/* Reads exactly len bytes (a layer may hand them up in pieces) and compares them. */
static void read_expect(pipe_pair *pp, const char *want, size_t len)
{
    static char got[2 * PBUF];
    size_t have = 0;
    ofs_error err = {0};
    while (have < len) {
        long n = imap_transport_read(pp->t, got + have, len - have, &err);
        assert_true(n > 0);
        have += (size_t)n;
    }
    assert_memory_equal(got, want, len);
}

/* Untagged filler lines ending in a tagged OK, exactly len bytes. */
static char *responses(size_t len)
{
    char *s = malloc(len + 1);
    const char *ok = "a1 OK done\r\n";
    size_t at = 0;
    for (unsigned i = 0; at + 40 < len - strlen(ok); i++)
        at += (size_t)snprintf(s + at, len - at, "* OK filler %u %08x\r\n", i, i * 2654435761u);
    memset(s + at, 'x', len - strlen(ok) - at - 2);
    memcpy(s + len - strlen(ok) - 2, "\r\n", 2);
    memcpy(s + len - strlen(ok), ok, strlen(ok) + 1);
    return s;
}

/* The tagged OK fills the layer's buffer to the byte and "* 1 EXISTS" follows in the same
 * flush: once the OK is read, the socket is quiet and the EXISTS waits in zlib. */
static void test_compress_response_behind_a_full_buffer(void **st)
{
    (void)st;
    pipe_pair pp;
    pair_open(&pp);
    char *first = responses(PBUF);
    const char *exists = "* 1 EXISTS\r\n";
    char *both = malloc(PBUF + strlen(exists));
    memcpy(both, first, PBUF);
    memcpy(both + PBUF, exists, strlen(exists));
    peer_send(&pp, both, PBUF + strlen(exists));
    read_expect(&pp, first, PBUF);
    assert_true(socket_quiet(&pp));
    assert_true(imap_transport_pending(pp.t));
    read_expect(&pp, exists, strlen(exists));
    assert_false(imap_transport_pending(pp.t));
    free(both);
    free(first);
    pair_close(&pp);
}

/* A response that ends exactly where the buffer does leaves only the flush marker behind:
 * that is no response, and saying otherwise sends the reader into a read that waits for the
 * server (an IDLE that stays silent: a timeout and a needless reconnect). */
static void test_compress_flush_marker_is_not_pending(void **st)
{
    (void)st;
    pipe_pair pp;
    pair_open(&pp);
    char *first = responses(PBUF);
    peer_send(&pp, first, PBUF);
    read_expect(&pp, first, PBUF);
    assert_true(socket_quiet(&pp));
    assert_false(imap_transport_pending(pp.t));
    /* The stream goes on as before. */
    peer_send(&pp, "* 2 EXISTS\r\n", 12);
    read_expect(&pp, "* 2 EXISTS\r\n", 12);
    assert_false(imap_transport_pending(pp.t));
    free(first);
    pair_close(&pp);
}

/* A reader that takes a few bytes at a time: the rest stays pending until it is read. */
static void test_compress_small_reads(void **st)
{
    (void)st;
    pipe_pair pp;
    pair_open(&pp);
    const char *text = "+ idling\r\n* 3 EXISTS\r\n";
    peer_send(&pp, text, strlen(text));
    struct pollfd p = {.fd = pp.t->fd, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 5000), 1);
    for (size_t at = 0; at < strlen(text); at += 4) {
        size_t n = strlen(text) - at < 4 ? strlen(text) - at : 4;
        read_expect(&pp, text + at, n);
        assert_true(imap_transport_pending(pp.t) == (at + n < strlen(text)));
    }
    pair_close(&pp);
}

/* Inflates what the peer received with a window of wbits, a few bytes of output at a time
 * (as a server does: a match may reach back only into the window, not into a large output
 * buffer); true when it is want, exactly. */
static bool inflates_to(const unsigned char *z, size_t zlen, int wbits, const char *want,
                        size_t len)
{
    z_stream inf = {0};
    assert_int_equal(inflateInit2(&inf, -wbits), Z_OK);
    char *out = malloc(len + 1);
    inf.next_in = (unsigned char *)z;
    inf.avail_in = (uInt)zlen;
    inf.next_out = (unsigned char *)out;
    int rc = Z_OK;
    while (rc == Z_OK && inf.total_out <= len) {
        inf.avail_out = 512 < len + 1 - inf.total_out ? 512 : (uInt)(len + 1 - inf.total_out);
        rc = inflate(&inf, Z_SYNC_FLUSH);
    }
    bool same = rc == Z_BUF_ERROR && inf.total_out == len && inf.avail_in == 0 &&
                memcmp(out, want, len) == 0;
    inflateEnd(&inf);
    free(out);
    return same;
}

/* Commands and APPENDs leave through a 4 KiB window (the client's zlib state stays small):
 * a server inflating with the usual 15 bits reads them, and so would one with 12 bits, which
 * a 32 KiB window breaks as soon as a match reaches further back (here: 6,000 bytes). */
static void test_compress_sends_a_small_window(void **st)
{
    (void)st;
    pipe_pair pp;
    pair_open(&pp);
    enum { BLOCK = 6000, LEN = 100000 };
    char *data = malloc(LEN);
    uint32_t x = 12345;
    for (size_t i = 0; i < LEN; i++) {
        x = x * 1103515245u + 12345u;
        data[i] = (char)('a' + (x >> 16) % 26);
    }
    for (size_t i = BLOCK; i < LEN; i++)
        data[i] = data[i % BLOCK];
    ofs_error err = {0};
    assert_int_equal(imap_transport_write(pp.t, data, LEN, &err), 0);
    static unsigned char z[1 << 18];
    size_t zlen = 0;
    while (!inflates_to(z, zlen, 15, data, LEN)) {
        ssize_t n = read(pp.server, z + zlen, sizeof z - zlen);
        assert_true(n > 0);
        zlen += (size_t)n;
    }
    assert_true(inflates_to(z, zlen, 12, data, LEN));
    free(data);
    pair_close(&pp);
}

/* More compressed bytes than the layer reads at once may come before it starts: all count. */
static void test_compress_takes_a_long_start(void **st)
{
    (void)st;
    enum { LEN = 70000 }; /* past the 64 KiB a fixed buffer once took */
    char *early = malloc(LEN);
    uint32_t x = 777;
    for (size_t i = 0; i < LEN; i++) {
        x = x * 1103515245u + 12345u;
        early[i] = (char)(x >> 16);
    }
    pipe_pair pp;
    pair_open_after(&pp, early, LEN);
    read_expect(&pp, early, LEN);
    assert_false(imap_transport_pending(pp.t));
    free(early);
    pair_close(&pp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_compress_response_behind_a_full_buffer),
        cmocka_unit_test(test_compress_flush_marker_is_not_pending),
        cmocka_unit_test(test_compress_small_reads),
        cmocka_unit_test(test_compress_sends_a_small_window),
        cmocka_unit_test(test_compress_takes_a_long_start),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
