/* seed_broken.pml: the seed's notification handoff (KB Q166534), which hangs; spin must find it.
 * Same shape as handoff.pml; only the wait differs: it wakes for unseen messages only. */

/* MsgWaitForMultipleObjects(..., INFINITE, QS_ALLINPUT) returns when a message arrived that
 * nobody has looked at yet. PeekMessage(PM_NOREMOVE), run by unrelated code on the main thread
 * (OLE, in the report), leaves the message queued but marks it seen. The notification thread
 * posts one message per batch to get its notifications delivered; once that message is seen,
 * the main thread waits for something new while the work sits in its queue: a lost wake-up.
 * check.sh requires spin to report this (an invalid end state and an acceptance cycle). */

#define NPROD 2
#define NEV 2
#define TOTAL (NPROD * NEV)

byte qlen;      /* messages queued */
byte unseen;   /* the newest `unseen` queued messages were not looked at yet */
byte posted;
byte consumed;

active [NPROD] proctype producer()
{
    byte i;
    do
    :: i < NEV ->
        atomic { posted++; qlen++; unseen++ }; /* PostMessage */
        i++
    :: else -> break
    od
}

active proctype consumer()
{
    do
    :: consumed == TOTAL -> break
    :: else ->
        /* Stray code peeks before the wait: pending messages become "seen". */
        if
        :: qlen > 0 -> unseen = 0
        :: true -> skip
        fi;
        atomic { unseen > 0 -> unseen = 0 }; /* the wait: only new input wakes it */
        do
        :: atomic {
               qlen > 0 -> qlen--; consumed++;
               if
               :: unseen > qlen -> unseen = qlen
               :: else -> skip
               fi
           }
        :: qlen == 0 -> break
        od
    od
}

ltl no_lost_wakeup { [] ((posted > consumed) -> <> (consumed == posted)) }
