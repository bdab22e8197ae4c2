/* test_links.c: the pure parts of slow-link handling: range sizes from the link rate, the
 * reconnect backoff's bounds, and the transport turning silence into a named error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "imap/transport.h"
#include "sync/partial.h"
#include "sync/retry.h"

static void test_chunk_follows_rate(void **st)
{
    (void)st;
    assert_int_equal(partial_chunk(0), 64 * 1024);
    /* 56 kbit/s is 7,000 bytes/s: about 8 s of it, rounded up to 4 KiB. */
    assert_int_equal(partial_chunk(7000), 57344);
    assert_int_equal(partial_chunk(10), 16 * 1024);
    assert_int_equal(partial_chunk(1e9), 4 * 1024 * 1024);
    assert_true(partial_chunk(100000) > partial_chunk(50000));
}

static void test_backoff_doubles_with_jitter_and_cap(void **st)
{
    (void)st;
    for (int n = 1; n <= 40; n++) {
        double full = n >= 9 ? 30.0 : 0.25 * (double)(1u << (n - 1));
        if (full > 30.0)
            full = 30.0;
        assert_true(sync_backoff(n, 0.0) >= full * 0.5 - 1e-9);
        assert_true(sync_backoff(n, 0.999999) <= full + 1e-9);
    }
    assert_true(sync_backoff(2, 0.5) > sync_backoff(1, 0.5));
    assert_true(sync_backoff(3, 0.0) != sync_backoff(3, 0.9));
}

static int ticks;
static double last_waited;

static void on_tick(void *ctx, double waited)
{
    (void)ctx;
    ticks++;
    last_waited = waited;
}

/* A peer that accepts and says nothing: the read fails by name, after ticking meanwhile. */
static void test_silence_is_named(void **st)
{
    (void)st;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(l, 1), 0);
    assert_int_equal(getsockname(l, (struct sockaddr *)&a, &al), 0);
    imap_transport *t;
    ofs_error err = {0};
    assert_int_equal(imap_transport_connect("127.0.0.1", ntohs(a.sin_port), 2, &t, &err), 0);
    t->activity = on_tick;
    char b[16];
    assert_int_equal(imap_transport_read(t, b, sizeof b, &err), -1);
    assert_int_equal(err.code, OFS_E_NET);
    assert_string_equal(err.message, "no data from 127.0.0.1 for 2 s");
    assert_true(ticks >= 1);
    assert_true(last_waited >= 1.0);
    imap_transport_close(t);
    close(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chunk_follows_rate),
        cmocka_unit_test(test_backoff_doubles_with_jitter_and_cap),
        cmocka_unit_test(test_silence_is_named),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
