/* folders.h: the folder set of a pass: patterns, creation, renames and deletions on both sides.
 * Every folder change is a write-ahead intent in the state, so a killed pass resumes cleanly. */
#ifndef OFS_SYNC_FOLDERS_H
#define OFS_SYNC_FOLDERS_H

#include <stdbool.h>

#include "sync/engine.h"

/* Whether the account's `folders` patterns take name: space-separated shell globs on
 * canonical names, "!" excluding; the last pattern that matches decides (none: excluded). */
bool folders_pattern_match(const char *patterns, const char *name);

/* Makes both sides agree on the folder set (creating, renaming, deleting as the state and
 * the account's policies say) and fills todo with the folders to sync, which then exist on
 * both sides. A dry run only reports and lists the folders present on both sides. */
int folders_align(sync_ctx *c, strlist *todo, ofs_error *err);

#endif
