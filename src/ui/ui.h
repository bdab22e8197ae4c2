/* ui.h: turns engine events into what a person or a log reads.
 * Plain lines now: timestamped when stdout is not a terminal (cron, systemd, logs). */
#ifndef OFS_UI_UI_H
#define OFS_UI_UI_H

#include <stdbool.h>
#include <stdio.h>

#include "ofsync.h"

typedef struct ui {
    FILE *out;
    int verbosity;   /* -1 quiet, 0 normal, 1 verbose */
    bool timestamps; /* prefix lines with the local time */
    double pass_started;
} ui;

void ui_init(ui *u, FILE *out, int verbosity);
/* An ofs_event_fn: pass the ui as ctx. */
void ui_on_event(const ofs_event *ev, void *ctx);

#endif
