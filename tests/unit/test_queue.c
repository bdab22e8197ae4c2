/* test_queue.c: the level-triggered readiness of the notify queue and dirty generations.
 * Each check polls the real eventfd with timeout 0, as a host application's loop would. */
/* cmocka.h needs these first. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "notify/dirty.h"
#include "notify/queue.h"

static int readable(nq *q)
{
    struct pollfd p = {.fd = nq_fd(q), .events = POLLIN};
    int rc = poll(&p, 1, 0);
    assert_true(rc >= 0);
    return rc > 0 && (p.revents & POLLIN);
}

static nq_event ev(uint64_t seq)
{
    return (nq_event){.type = 7, .folder = 3, .gen = 1, .seq = seq, .ptr = NULL};
}

static nq *make(size_t cap)
{
    nq *q = NULL;
    ofs_error err = {0};
    assert_int_equal(nq_create("test", cap, &q, &err), 0);
    assert_non_null(q);
    return q;
}

static void push(nq *q, uint64_t seq)
{
    ofs_error err = {0};
    nq_event e = ev(seq);
    assert_int_equal(nq_push(q, &e, &err), 0);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void test_empty_not_readable(void **state)
{
    nq *q = make(0);
    nq_event e;
    assert_false(readable(q));
    assert_int_equal(nq_pop(q, &e), 0);
    assert_int_equal(nq_peek(q, &e), 0);
    assert_false(readable(q));
    nq_destroy(q);
}

static void test_level_follows_length(void **state)
{
    nq *q = make(0);
    nq_event e;
    push(q, 1);
    assert_true(readable(q));
    assert_true(readable(q)); /* polling does not consume the level */
    push(q, 2);
    assert_true(readable(q));

    /* The seed's bug: a peek must not make a pending event invisible to the waiter. */
    assert_int_equal(nq_peek(q, &e), 1);
    assert_int_equal(e.seq, 1);
    assert_true(readable(q));
    assert_int_equal(nq_len(q), 2);

    assert_int_equal(nq_pop(q, &e), 1);
    assert_int_equal(e.seq, 1);
    assert_int_equal(e.type, 7);
    assert_int_equal(e.folder, 3);
    assert_true(readable(q)); /* one of two left */

    assert_int_equal(nq_pop(q, &e), 1);
    assert_int_equal(e.seq, 2);
    assert_false(readable(q)); /* the last pop clears the level */
    assert_int_equal(nq_pop(q, &e), 0);
    nq_destroy(q);
}

static void test_put_back(void **state)
{
    nq *q = make(0);
    nq_event e;
    push(q, 1);
    assert_int_equal(nq_pop(q, &e), 1);
    assert_false(readable(q));
    nq_put_back(q, &e);
    assert_true(readable(q)); /* returned to an empty queue: readable again */

    push(q, 2);
    assert_int_equal(nq_pop(q, &e), 1);
    assert_int_equal(e.seq, 1);
    nq_put_back(q, &e); /* to the front, ahead of 2 */
    assert_true(readable(q));
    assert_int_equal(nq_pop(q, &e), 1);
    assert_int_equal(e.seq, 1);
    assert_int_equal(nq_pop(q, &e), 1);
    assert_int_equal(e.seq, 2);
    assert_false(readable(q));
    nq_destroy(q);
}

static void test_order_across_growth(void **state)
{
    nq *q = make(0);
    nq_event e;
    /* Wrap the ring first, so growth has to unroll it. */
    for (uint64_t i = 0; i < 40; i++)
        push(q, i);
    for (uint64_t i = 0; i < 40; i++)
        assert_int_equal(nq_pop(q, &e), 1);
    for (uint64_t i = 0; i < 1000; i++)
        push(q, i);
    e = ev(999999);
    nq_put_back(q, &e);
    assert_int_equal(nq_len(q), 1001);
    assert_int_equal(nq_pop(q, &e), 1);
    assert_int_equal(e.seq, 999999);
    for (uint64_t i = 0; i < 1000; i++) {
        assert_true(readable(q));
        assert_int_equal(nq_pop(q, &e), 1);
        assert_int_equal(e.seq, i);
    }
    assert_false(readable(q));
    nq_destroy(q);
}

static void test_capacity(void **state)
{
    nq *q = make(2);
    ofs_error err = {0};
    nq_event e = ev(3);
    push(q, 1);
    push(q, 2);
    assert_int_equal(nq_push(q, &e, &err), -1);
    assert_int_equal(err.code, OFS_E_LIMIT);
    assert_non_null(strstr(err.message, "test"));
    assert_non_null(strstr(err.message, "full"));

    /* A consumer returning an event is never refused, even at the cap. */
    assert_int_equal(nq_pop(q, &e), 1);
    push(q, 3);
    nq_put_back(q, &e);
    assert_int_equal(nq_len(q), 3);
    for (uint64_t i = 1; i <= 3; i++) {
        assert_int_equal(nq_pop(q, &e), 1);
        assert_int_equal(e.seq, i);
    }
    nq_destroy(q);
}

static void test_wait_timeout(void **state)
{
    nq *q = make(0);
    ofs_error err = {0};
    int64_t t0 = now_ms();
    assert_int_equal(nq_wait(q, 100, &err), 0);
    int64_t took = now_ms() - t0;
    assert_true(took >= 100);
    assert_true(took < 1000);

    assert_int_equal(nq_wait(q, 0, &err), 0);
    assert_int_equal(nq_wait(q, -1, &err), -1); /* no infinite waits */
    assert_int_equal(err.code, OFS_E_LIMIT);

    push(q, 1);
    nq_event e;
    assert_int_equal(nq_peek(q, &e), 1);
    t0 = now_ms();
    assert_int_equal(nq_wait(q, 5000, &err), 1); /* pending after a peek: returns at once */
    assert_true(now_ms() - t0 < 1000);
    nq_destroy(q);
}

static void *push_later(void *arg)
{
    struct timespec ts = {0, 50 * 1000000};
    nanosleep(&ts, NULL);
    push(arg, 42);
    return NULL;
}

static void test_wait_wakes_on_push(void **state)
{
    nq *q = make(0);
    ofs_error err = {0};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, push_later, q), 0);
    int64_t t0 = now_ms();
    assert_int_equal(nq_wait(q, 10000, &err), 1);
    assert_true(now_ms() - t0 < 5000);
    pthread_join(t, NULL);
    nq_event e;
    assert_int_equal(nq_pop(q, &e), 1);
    assert_int_equal(e.seq, 42);
    nq_destroy(q);
}

static void test_outsider_read_repaired(void **state)
{
    nq *q = make(0);
    ofs_error err = {0};
    uint64_t v;
    push(q, 1);
    /* Someone broke the rule and read the fd: the queue length still decides. */
    assert_int_equal(read(nq_fd(q), &v, sizeof v), (ssize_t)sizeof v);
    assert_false(readable(q));
    assert_int_equal(nq_wait(q, 0, &err), 1);
    assert_true(readable(q));
    nq_destroy(q);
}

static void test_dirty_generations(void **state)
{
    dirty_set *d = dirty_create();
    assert_false(dirty_is_dirty(d, 5));
    uint32_t f = 0;
    assert_int_equal(dirty_next(d, 0, &f), 0);

    assert_int_equal(dirty_bump(d, 5), 1);
    assert_true(dirty_is_dirty(d, 5));
    assert_int_equal(dirty_next(d, 0, &f), 1);
    assert_int_equal(f, 5);

    /* A pass that saw no change during it marks the folder clean. */
    uint64_t g = dirty_begin(d, 5);
    assert_int_equal(dirty_mark_clean(d, 5, g), 1);
    assert_false(dirty_is_dirty(d, 5));

    /* A change during the pass keeps the folder dirty. */
    dirty_bump(d, 5);
    g = dirty_begin(d, 5);
    assert_int_equal(dirty_bump(d, 5), 3);
    assert_int_equal(dirty_mark_clean(d, 5, g), 0);
    assert_true(dirty_is_dirty(d, 5));

    /* The next pass covers it; an older, slower pass must not undo that. */
    uint64_t g2 = dirty_begin(d, 5);
    assert_int_equal(dirty_mark_clean(d, 5, g2), 1);
    assert_int_equal(dirty_mark_clean(d, 5, g), 1);
    assert_false(dirty_is_dirty(d, 5));

    /* Folders are independent; the table grows past its first size. */
    dirty_bump(d, 700);
    assert_false(dirty_is_dirty(d, 5));
    assert_int_equal(dirty_next(d, 6, &f), 1);
    assert_int_equal(f, 700);
    assert_int_equal(dirty_next(d, 701, &f), 0);
    dirty_destroy(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_not_readable), cmocka_unit_test(test_level_follows_length),
        cmocka_unit_test(test_put_back),           cmocka_unit_test(test_order_across_growth),
        cmocka_unit_test(test_capacity),           cmocka_unit_test(test_wait_timeout),
        cmocka_unit_test(test_wait_wakes_on_push), cmocka_unit_test(test_outsider_read_repaired),
        cmocka_unit_test(test_dirty_generations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
