/* queue.h: the cross-thread event queue of the notification engine (DESIGN.md section 4).
 * Readiness is a level: its eventfd is readable exactly while the queue holds an event. */
#ifndef OFS_NOTIFY_QUEUE_H
#define OFS_NOTIFY_QUEUE_H

#include <stddef.h>
#include <stdint.h>

#include "ofsync.h"

/* Bound used when nq_create is given capacity 0: about 32 MiB of events at most. */
#define NQ_DEFAULT_CAP ((size_t)1 << 20)

/* One event. Generic on purpose: the meaning of type and ptr belongs to the sender;
 * the queue copies the struct and never follows or frees ptr. */
typedef struct nq_event {
    int type;
    uint32_t folder; /* folder id, when the event is about one folder */
    uint64_t gen;    /* the folder's dirty generation the sender saw (see dirty.h) */
    uint64_t seq;    /* sender's sequence number, for ordering and diagnostics */
    void *ptr;
} nq_event;

typedef struct nq nq;

/* Makes an empty queue. capacity bounds the number of queued events (0: NQ_DEFAULT_CAP);
 * storage grows on demand up to it. name is only used in error messages. */
int nq_create(const char *name, size_t capacity, nq **out, ofs_error *err);

/* Frees the queue and closes its fd. Events still queued are dropped: their ptr is not freed,
 * so an owner of ptrs pops until empty first. No other thread may use q any more. */
void nq_destroy(nq *q);

/* Appends an event; safe from any thread. Fails with OFS_E_LIMIT when the queue is full. */
int nq_push(nq *q, const nq_event *ev, ofs_error *err);

/* Takes the oldest event into *out: 1 if one was taken, 0 if the queue was empty. Never
 * blocks. The fd stops being readable only when this takes the last event. */
int nq_pop(nq *q, nq_event *out);

/* Copies the oldest event into *out without taking it: 1 or 0 as nq_pop. Readiness is not
 * touched: a peeked event is still pending and still keeps the fd readable. */
int nq_peek(nq *q, nq_event *out);

/* Returns an event a consumer took but cannot handle yet to the FRONT of the queue, so it is
 * the next one popped and the fd is readable again. Never fails and ignores the capacity:
 * refusing would lose the event, and the excess is at most the events consumers hold. */
void nq_put_back(nq *q, const nq_event *ev);

/* Number of queued events, for diagnostics: others may change it right after. */
size_t nq_len(nq *q);

/* The fd to poll() for POLLIN (level-triggered): readable exactly while the queue is not
 * empty. Poll it only; never read or write it, the queue owns its counter. */
int nq_fd(const nq *q);

/* Waits until the queue is not empty or timeout_ms passes: returns 1 (events pending),
 * 0 (timed out, queue empty) or -1. Every wait has a deadline: timeout_ms < 0 is refused.
 *
 * Consumer contract: on wake-up, pop until nq_pop returns 0, then wait again. Skipping that
 * cannot hang: a queue left non-empty (events peeked, put back or not taken) keeps the fd
 * readable, so the next wait or poll() returns at once. No wake-up depends on a new push. */
int nq_wait(nq *q, int timeout_ms, ofs_error *err);

#endif
