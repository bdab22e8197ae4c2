/* ui.h: turns engine events into what a person, a log or a program reads.
 * Three renderers: live bars on a terminal (tty.c), timestamped lines (plain.c), JSON (json.c). */
#ifndef OFS_UI_UI_H
#define OFS_UI_UI_H

#include <stdbool.h>
#include <stdio.h>

#include "ofsync.h"
#include "ui/pace.h"
#include "util/mem.h"

enum ui_mode { UI_PLAIN, UI_TTY, UI_JSON };

typedef struct ui_tty ui_tty;

typedef struct ui {
    FILE *out;
    int verbosity;   /* -1 quiet, 0 normal, 1 verbose */
    int mode;        /* enum ui_mode */
    bool timestamps; /* plain: prefix lines with the local time */
    double pass_started;
    ui_pace pace; /* plain and json: per-folder clocks (folders sync in parallel) */
    ui_tty *tty;
} ui;

/* Plain lines, or live bars when out is a terminal and not quiet. */
void ui_init(ui *u, FILE *out, int verbosity);
/* The same, or JSON events when json is set (then verbosity does not matter). */
void ui_open(ui *u, FILE *out, int verbosity, bool json);
/* An ofs_event_fn: pass the ui as ctx. */
void ui_on_event(const ofs_event *ev, void *ctx);
/* Ends the live display (the terminal is left clean); call before printing an error. */
void ui_close(ui *u);

/* ---- shared by the renderers ---- */

double ui_now(void); /* monotonic seconds */
/* "1.2 MiB", "512 B" */
void ui_fmt_bytes(buf *b, uint64_t n);
/* "42 s", "3:07", "1:02:03" */
void ui_fmt_duration(buf *b, double secs);
/* One line summing a pass up: per side added, flags, expunged, folders; held back, bytes,
 * round trips, time. "nothing to do" when the pass changed nothing. */
void ui_summary_line(const ofs_event *ev, buf *b);
/* "waiting for server: 12 s, fetching INBOX UID 4711" */
void ui_waiting_text(const ofs_event *ev, buf *b);

void ui_plain_event(ui *u, const ofs_event *ev);
void ui_json_event(ui *u, const ofs_event *ev);
ui_tty *ui_tty_new(FILE *out, int verbosity);
void ui_tty_event(ui_tty *t, const ofs_event *ev);
void ui_tty_free(ui_tty *t); /* erases the live lines, shows the cursor */

/* Appends s as a JSON string: quotes, escapes, control characters as \u00XX, and every byte
 * that is not part of valid UTF-8 as U+FFFD, so any folder name gives a parseable line. */
void json_str(buf *b, const char *s);

#endif
