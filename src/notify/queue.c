/* queue.c: a mutex-protected ring of events whose eventfd mirrors "not empty".
 * The eventfd counter changes only under the mutex, at the empty <-> non-empty transitions. */
#include "notify/queue.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "util/err.h"
#include "util/mem.h"

#define NQ_INITIAL_ALLOC 64

struct nq {
    pthread_mutex_t lock;
    nq_event *ring; /* alloc slots, a power of two; events at head .. head+len-1 (mod alloc) */
    size_t alloc, head, len, cap;
    int efd;
    char *name;
};

int nq_create(const char *name, size_t capacity, nq **out, ofs_error *err)
{
    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd < 0)
        return err_errno(err, OFS_E_IO, errno, "notify queue %s: eventfd", name);
    nq *q = xcalloc(1, sizeof *q);
    pthread_mutex_init(&q->lock, NULL);
    q->cap = capacity ? capacity : NQ_DEFAULT_CAP;
    q->alloc = NQ_INITIAL_ALLOC;
    q->ring = xmalloc(q->alloc * sizeof *q->ring);
    q->efd = efd;
    q->name = xstrdup(name);
    *out = q;
    return 0;
}

void nq_destroy(nq *q)
{
    if (!q)
        return;
    close(q->efd);
    pthread_mutex_destroy(&q->lock);
    free(q->ring);
    free(q->name);
    free(q);
}

/* The level: the counter is non-zero while len > 0 and 0 otherwise. Called with the lock held
 * at each empty <-> non-empty transition, so poll() sees the same truth as nq_pop. The counter
 * stays tiny, so the write cannot block; a read that fails found it 0 already, the goal. */
static void nq_set_level(nq *q)
{
    uint64_t v = 1;
    ssize_t n;
    if (q->len > 0)
        n = write(q->efd, &v, sizeof v);
    else
        n = read(q->efd, &v, sizeof v);
    (void)n;
}

/* Doubles the ring, keeping event order; called with the lock held. */
static void nq_grow(nq *q)
{
    nq_event *ring = xmalloc(2 * q->alloc * sizeof *ring);
    for (size_t i = 0; i < q->len; i++)
        ring[i] = q->ring[(q->head + i) & (q->alloc - 1)];
    free(q->ring);
    q->ring = ring;
    q->head = 0;
    q->alloc *= 2;
}

int nq_push(nq *q, const nq_event *ev, ofs_error *err)
{
    pthread_mutex_lock(&q->lock);
    if (q->len >= q->cap) {
        size_t cap = q->cap;
        pthread_mutex_unlock(&q->lock);
        return err_set(err, OFS_E_LIMIT, "notify queue %s: full (%zu events pending)", q->name,
                       cap);
    }
    if (q->len == q->alloc)
        nq_grow(q);
    q->ring[(q->head + q->len) & (q->alloc - 1)] = *ev;
    if (q->len++ == 0)
        nq_set_level(q);
    pthread_mutex_unlock(&q->lock);
    return 0;
}

int nq_pop(nq *q, nq_event *out)
{
    pthread_mutex_lock(&q->lock);
    int got = q->len > 0;
    if (got) {
        *out = q->ring[q->head];
        q->head = (q->head + 1) & (q->alloc - 1);
        if (--q->len == 0)
            nq_set_level(q);
    }
    pthread_mutex_unlock(&q->lock);
    return got;
}

int nq_peek(nq *q, nq_event *out)
{
    pthread_mutex_lock(&q->lock);
    int got = q->len > 0;
    if (got)
        *out = q->ring[q->head];
    pthread_mutex_unlock(&q->lock);
    return got;
}

void nq_put_back(nq *q, const nq_event *ev)
{
    pthread_mutex_lock(&q->lock);
    if (q->len == q->alloc)
        nq_grow(q);
    q->head = (q->head - 1) & (q->alloc - 1);
    q->ring[q->head] = *ev;
    if (q->len++ == 0)
        nq_set_level(q);
    pthread_mutex_unlock(&q->lock);
}

size_t nq_len(nq *q)
{
    pthread_mutex_lock(&q->lock);
    size_t n = q->len;
    pthread_mutex_unlock(&q->lock);
    return n;
}

int nq_fd(const nq *q)
{
    return q->efd;
}

static int64_t nq_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The queue length decides, not the fd: if both disagree (an outsider read or wrote the fd),
 * the level is put right so that poll() users are not misled either. */
static int nq_check(nq *q, int fd_readable)
{
    pthread_mutex_lock(&q->lock);
    int pending = q->len > 0;
    if (pending != fd_readable)
        nq_set_level(q);
    pthread_mutex_unlock(&q->lock);
    return pending;
}

int nq_wait(nq *q, int timeout_ms, ofs_error *err)
{
    if (timeout_ms < 0)
        return err_set(err, OFS_E_LIMIT,
                       "notify queue %s: wait without a deadline (timeout %d ms) refused", q->name,
                       timeout_ms);
    int64_t deadline = nq_now_ms() + timeout_ms;
    for (;;) {
        struct pollfd p = {.fd = q->efd, .events = POLLIN};
        int64_t left = deadline - nq_now_ms();
        int rc = poll(&p, 1, left > 0 ? (int)left : 0);
        if (rc < 0 && errno != EINTR)
            return err_errno(err, OFS_E_IO, errno, "notify queue %s: poll", q->name);
        int readable = rc > 0 && (p.revents & POLLIN);
        if (nq_check(q, readable))
            return 1;
        if (left <= 0)
            return 0;
        /* Readable but empty: another consumer took the events first; wait on. */
    }
}
