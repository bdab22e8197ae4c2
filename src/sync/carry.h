/* carry.h: flag changes made to a message on one side while the other side moved it: given
 * to the moved copy at the end of a pass, whichever folder was synced first. */
#ifndef OFS_SYNC_CARRY_H
#define OFS_SYNC_CARRY_H

#include <stdbool.h>

#include "sync/engine.h"

/* Applies the carry-flags intents the pass's folders left to the copies made since the last
 * complete pass. complete: every folder was synced without error; then an intent whose copy
 * is not there is dropped (it was a deletion, not a move: removal wins) and the next pass
 * starts a new generation of pairs. */
int sync_carry_flags(sync_ctx *c, bool complete, ofs_error *err);

#endif
