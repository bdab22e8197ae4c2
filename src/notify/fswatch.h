/* fswatch.h: local change detection: inotify on every folder's cur/ and new/ of a Maildir tree,
 * and on the directories where new folders appear. Turns kernel events into folder names. */
#ifndef OFS_NOTIFY_FSWATCH_H
#define OFS_NOTIFY_FSWATCH_H

#include <stddef.h>

#include "ofsync.h"

typedef struct fswatch fswatch;

enum fswatch_kind {
    FSW_FOLDER,    /* messages in one folder changed */
    FSW_STRUCTURE, /* a folder directory appeared, vanished or moved: rescan the tree */
    FSW_ALL,       /* the kernel dropped events (queue overflow): anything may have changed */
};

/* Called for each change found; folder is the canonical name for FSW_FOLDER, else NULL. */
typedef void (*fswatch_fn)(void *ctx, enum fswatch_kind kind, const char *folder);

/* layout is enum cfg_layout. Nothing is watched until the first fswatch_rescan. */
int fswatch_open(const char *root, int layout, fswatch **out, ofs_error *err);
void fswatch_close(fswatch *w); /* NULL is fine */

/* The inotify fd: poll it for POLLIN, then call fswatch_read. */
int fswatch_fd(const fswatch *w);

/* Makes the watch set match the tree as it is now. Call it BEFORE listing folders: whatever
 * changes after the watch on a directory exists is an event, whatever changed before is seen
 * by the listing, so nothing falls between the two. Directories already watched keep their
 * watch (no gap). */
int fswatch_rescan(fswatch *w, ofs_error *err);

/* Reads every pending event without blocking and reports it through fn. */
int fswatch_read(fswatch *w, fswatch_fn fn, void *ctx, ofs_error *err);

/* Number of directories watched, for diagnostics and tests. */
size_t fswatch_count(const fswatch *w);

#endif
