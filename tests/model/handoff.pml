/* handoff.pml: the notify queue's cross-thread handoff (src/notify/queue.c) as spin sees it.
 * Proves: no lost wake-up (every posted event is consumed) and no deadlock, peeks included.
 *
 * Why this works where the seed hung (compare seed_broken.pml, same shape):
 * - Here the consumer waits on `ready`, the eventfd level. The queue sets it when qlen goes
 *   0 -> 1 and clears it when qlen goes 1 -> 0, both inside the same mutex region as the change
 *   of qlen (modelled as atomic), so `ready == (qlen > 0)` always holds. A peek, by the consumer
 *   or by any stray code, reads the queue and leaves `ready` alone; so does poll().
 * - In the seed, the wait woke only for *unseen* messages (MsgWaitForMultipleObjects): a
 *   PeekMessage marked a pending message as seen, the wait then ignored it, and the waiter
 *   slept until an unrelated new message came. The wake-up depended on history (an edge);
 *   here it depends only on the present queue length (a level).
 * The wait is modelled without its deadline on purpose: correctness must not rest on timeouts,
 * which only turn a bug like the seed's into a slow path in the real code.
 * Bounds keep the state space tiny: NPROD producers x NEV events, and the consumer's
 * non-progress moves (peek and leave, take and put back) have budgets, as they are finite in
 * any real run. */

#define NPROD 2
#define NEV 2
#define TOTAL (NPROD * NEV)
#define PUT_BACKS 2
#define PEEKS 2

byte qlen;      /* events queued */
bool ready;    /* the eventfd is readable (counter > 0) */
byte held;     /* taken by the consumer, neither handled nor put back yet */
byte posted;   /* pushed by producers */
byte consumed; /* handled by the consumer */
byte put_backs = PUT_BACKS;
byte peeks = PEEKS;

/* Everything the mutex protects, checked after every change of it. */
inline check()
{
    assert(ready == (qlen > 0));
    assert(posted == qlen + held + consumed)
}

/* nq_push and nq_put_back: readiness set on the empty -> non-empty transition only. */
inline add()
{
    qlen++;
    if
    :: qlen == 1 -> ready = true
    :: else -> skip
    fi
}

active [NPROD] proctype producer()
{
    byte i;
    do
    :: i < NEV ->
        atomic { posted++; add(); check() };
        i++
    :: else -> break
    od
}

active proctype consumer()
{
    do
    :: consumed == TOTAL -> break
    :: else ->
        /* Stray code peeks before the wait (the seed's OLE PeekMessage): the level stays. */
        if
        :: qlen > 0 -> skip
        :: true -> skip
        fi;
        ready; /* nq_wait / poll(): returns once the fd is readable */
        do
        :: atomic {
               qlen > 0 -> qlen--; held++;
               if
               :: qlen == 0 -> ready = false
               :: else -> skip
               fi;
               check()
           };
           if
           :: atomic { held--; consumed++; check() }
           :: put_backs > 0 ->
               /* Cannot handle it yet: back to the front, then wait again without draining. */
               atomic { put_backs--; held--; add(); check() };
               break
           fi
        :: atomic { qlen > 0 && peeks > 0 -> peeks-- };
           break /* peeked and left it queued, then waits again: breaks "drain first" */
        :: qlen == 0 -> break /* drained */
        od
    od;
    assert(qlen == 0 && held == 0 && posted == TOTAL)
}

/* No lost wake-up: whatever is posted is eventually consumed (checked with weak fairness). */
ltl no_lost_wakeup { [] ((posted > consumed) -> <> (consumed == posted)) }
