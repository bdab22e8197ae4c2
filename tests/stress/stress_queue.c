/* stress_queue.c: many producers, one consumer that peeks, puts back and leaves events behind;
 * proves every event is delivered exactly once, in order, and no wait outlives a pending event.
 * Usage: stress_queue [EVENTS [PRODUCERS [CAPACITY]]]   (defaults 1000000 4 0) */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "notify/queue.h"
#include "util/mem.h"

/* A poll that times out while events are queued is a lost wake-up; this is far above any
 * scheduling delay, even under sanitizers on a loaded machine. */
#define POLL_TIMEOUT_MS 2000

typedef struct producer {
    pthread_t thread;
    uint32_t id;
    uint64_t count;
    uint64_t full_retries;
} producer;

static nq *queue;
static atomic_uint producers_done;
static atomic_int stop; /* set on the first failure, so a full queue cannot hold producers */

static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void small_delay(uint64_t *rng)
{
    struct timespec ts = {0, (long)(rng_next(rng) % 50001)};
    nanosleep(&ts, NULL);
}

static void *producer_run(void *arg)
{
    producer *p = arg;
    uint64_t rng = 0x9e3779b97f4a7c15ULL * (p->id + 1);
    for (uint64_t i = 0; i < p->count; i++) {
        nq_event ev = {.type = 1, .folder = p->id, .gen = i, .seq = i, .ptr = NULL};
        /* A full queue is back-pressure, not loss: retry until the consumer makes room. */
        while (nq_push(queue, &ev, NULL) != 0) {
            if (atomic_load(&stop))
                goto out;
            p->full_retries++;
            sched_yield();
        }
        if ((rng_next(&rng) & 31) == 0)
            small_delay(&rng);
    }
out:
    atomic_fetch_add(&producers_done, 1);
    return NULL;
}

/* What the consumer saw; the exactly-once and per-producer order checks happen here. */
typedef struct tally {
    uint32_t nprod;
    uint64_t *base, *next; /* per producer: first slot in seen[], next expected seq */
    uint8_t *seen;         /* delivery count per event, saturating */
    producer *prod;
    uint64_t delivered, reordered, bogus, peeks_left, put_backs, lost_wakeups, polls, drained;
} tally;

static void tally_record(tally *t, const nq_event *ev)
{
    if (ev->folder >= t->nprod || ev->seq >= t->prod[ev->folder].count) {
        t->bogus++;
        return;
    }
    uint8_t *s = &t->seen[t->base[ev->folder] + ev->seq];
    if (*s < 255)
        (*s)++;
    if (ev->seq != t->next[ev->folder])
        t->reordered++;
    t->next[ev->folder] = ev->seq + 1;
    t->delivered++;
}

static int readable_now(void)
{
    struct pollfd p = {.fd = nq_fd(queue), .events = POLLIN};
    return poll(&p, 1, 0) > 0 && (p.revents & POLLIN);
}

/* Events are queued (only this thread takes them): the fd must say so right now. */
static void lost_if_not_readable(tally *t, const char *after)
{
    if (readable_now())
        return;
    fprintf(stderr, "stress_queue: lost wake-up: fd not readable after %s with %zu events queued\n",
            after, nq_len(queue));
    t->lost_wakeups++;
}

/* One wake-up's worth of work. Breaks the "drain before waiting" rule on purpose, now and
 * then, the way the seed's stray PeekMessage did: the level must make that harmless. */
static void consume_some(tally *t, uint64_t *rng)
{
    nq_event ev, again;
    for (;;) {
        uint64_t r = rng_next(rng) & 63;
        if (r == 0 && nq_peek(queue, &ev)) {
            t->peeks_left++; /* peeked, not handled: go back to waiting */
            lost_if_not_readable(t, "a peek");
            return;
        }
        if (r == 1 && nq_pop(queue, &ev)) {
            nq_put_back(queue, &ev); /* taken but cannot be handled yet */
            t->put_backs++;
            lost_if_not_readable(t, "a put-back");
            return;
        }
        if (r == 2 && nq_peek(queue, &ev)) {
            /* Only this thread takes events, so the front cannot change under us. */
            if (!nq_pop(queue, &again) || again.folder != ev.folder || again.seq != ev.seq)
                t->bogus++;
            tally_record(t, &again);
            continue;
        }
        if (!nq_pop(queue, &ev)) {
            t->drained++; /* the next wake-up must come from a push */
            return;
        }
        tally_record(t, &ev);
    }
}

static int consume_all(tally *t, uint64_t total)
{
    uint64_t rng = 0x2545f4914f6cdd1dULL;
    while (t->delivered < total && t->lost_wakeups == 0) {
        unsigned done = atomic_load(&producers_done);
        struct pollfd p = {.fd = nq_fd(queue), .events = POLLIN};
        int rc = poll(&p, 1, POLL_TIMEOUT_MS);
        t->polls++;
        if (rc < 0 && errno != EINTR) {
            perror("stress_queue: poll");
            return -1;
        }
        /* A push may land just after the timeout; then the fd is readable again, so only
         * queued events behind an unreadable fd are a lost wake-up (the queue cannot shrink:
         * this is the only consumer). */
        if (rc == 0 && nq_len(queue) > 0 && !readable_now()) {
            fprintf(stderr,
                    "stress_queue: lost wake-up: poll timed out after %d ms with %zu "
                    "events queued\n",
                    POLL_TIMEOUT_MS, nq_len(queue));
            t->lost_wakeups++;
        }
        if (rc == 0 && done == t->nprod && nq_len(queue) == 0)
            return 0; /* everyone finished, nothing queued: what is missing was lost */
        consume_some(t, &rng);
    }
    return t->lost_wakeups ? -1 : 0;
}

int main(int argc, char **argv)
{
    uint64_t total = argc > 1 ? strtoull(argv[1], NULL, 10) : 1000000;
    uint32_t nprod = argc > 2 ? (uint32_t)strtoul(argv[2], NULL, 10) : 4;
    size_t cap = argc > 3 ? strtoull(argv[3], NULL, 10) : 0;
    if (total == 0 || nprod == 0 || nprod > 1024) {
        fprintf(stderr, "usage: stress_queue [EVENTS [PRODUCERS (1-1024) [CAPACITY]]]\n");
        return 2;
    }
    alarm(600); /* a hang anywhere is a failure, never a stuck CI job */
    ofs_error err = {0};
    if (nq_create("stress", cap, &queue, &err) != 0) {
        fprintf(stderr, "stress_queue: %s\n", err.message);
        return 1;
    }
    tally t = {.nprod = nprod};
    t.prod = xcalloc(nprod, sizeof *t.prod);
    t.base = xcalloc(nprod, sizeof *t.base);
    t.next = xcalloc(nprod, sizeof *t.next);
    t.seen = xcalloc(total, 1);
    for (uint32_t i = 0; i < nprod; i++) {
        t.prod[i].id = i;
        t.prod[i].count = total / nprod + (i < total % nprod);
        t.base[i] = i ? t.base[i - 1] + t.prod[i - 1].count : 0;
    }

    double t0 = now_s();
    for (uint32_t i = 0; i < nprod; i++)
        if (pthread_create(&t.prod[i].thread, NULL, producer_run, &t.prod[i]) != 0) {
            fprintf(stderr, "stress_queue: cannot start producer %u\n", i);
            return 1;
        }
    int rc = consume_all(&t, total);
    atomic_store(&stop, 1);
    uint64_t full = 0;
    for (uint32_t i = 0; i < nprod; i++) {
        pthread_join(t.prod[i].thread, NULL);
        full += t.prod[i].full_retries;
    }
    double elapsed = now_s() - t0;

    nq_event ev;
    while (rc == 0 && nq_pop(queue, &ev))
        t.bogus++; /* anything left after every event was delivered is a duplicate */
    uint64_t lost = 0, dup = 0;
    for (uint64_t i = 0; i < total; i++) {
        lost += t.seen[i] == 0;
        dup += t.seen[i] > 1 ? t.seen[i] - 1u : 0;
    }
    printf("events: %" PRIu64 ", lost: %" PRIu64 ", duplicated: %" PRIu64 "\n", total, lost, dup);
    printf("producers: %u, reordered: %" PRIu64 ", bogus: %" PRIu64 ", lost wake-ups: %" PRIu64
           ", peeked and left: %" PRIu64 ", put back: %" PRIu64 ", polls: %" PRIu64
           ", drained: %" PRIu64 ", full retries: %" PRIu64 ", %.2f s\n",
           nprod, t.reordered, t.bogus, t.lost_wakeups, t.peeks_left, t.put_backs, t.polls,
           t.drained, full, elapsed);
    int ok = rc == 0 && lost == 0 && dup == 0 && t.reordered == 0 && t.bogus == 0 &&
             t.lost_wakeups == 0 && readable_now() == 0;
    free(t.prod);
    free(t.base);
    free(t.next);
    free(t.seen);
    nq_destroy(queue);
    return ok ? 0 : 1;
}
