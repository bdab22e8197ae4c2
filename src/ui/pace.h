/* pace.h: per-folder clocks of the line renderers: when a folder's last progress event was
 * written (--json), when its wait is reported next (plain). Folders syncing at once never share
 * one. */
#ifndef OFS_UI_PACE_H
#define OFS_UI_PACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ofsync.h"

/* More than the folders that can be active at once (one per connection, at most 32); when
 * full anyway, the folder heard from least recently gives way. */
#define UI_PACE_SLOTS 64

/* Progress events of a folder closer together than this are left out (the next one carries
 * the newer figures). */
#define UI_PROGRESS_GAP 0.2

typedef struct ui_pace_slot {
    char *account, *folder; /* folder "" stands for events outside any folder */
    unsigned long used;     /* when it was last looked up, for eviction */
    double written;         /* json: monotonic time of the last progress event written */
    uint64_t done_written;  /* json: its done count */
    double wait_next;       /* plain: the wait is reported when waited reaches this */
    double waited;          /* plain: the wait's length at its last event */
} ui_pace_slot;

typedef struct ui_pace {
    ui_pace_slot s[UI_PACE_SLOTS];
    size_t n;
    unsigned long tick;
} ui_pace;

/* The folder's slot, made fresh (all clocks zero) if it had none; *fresh says so. */
ui_pace_slot *ui_pace_get(ui_pace *p, const char *account, const char *folder, bool *fresh);
/* The folder is done: its clocks start over if it is synced again. */
void ui_pace_forget(ui_pace *p, const char *account, const char *folder);
void ui_pace_clear(ui_pace *p);

/* --json: whether the progress event ev, arriving at now (monotonic seconds), is written.
 * Per folder: its first one, the first that reaches done == total (> 0), and any at least
 * UI_PROGRESS_GAP after the last one written. */
bool ui_pace_progress(ui_pace *p, const ofs_event *ev, double now);

#endif
