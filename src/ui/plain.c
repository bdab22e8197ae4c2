/* plain.c: the line renderer for logs, cron and systemd: timestamped when not a terminal.
 * One line per folder that changed, per long wait, per error, and one summary per pass. */
#include <string.h>
#include <time.h>

#include "ui/ui.h"

/* A wait is reported once it reaches WAIT_FIRST s, then every WAIT_AGAIN s while it lasts. */
#define WAIT_FIRST 10.0
#define WAIT_AGAIN 30.0

static void line(ui *u, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void line(ui *u, const char *fmt, ...)
{
    if (u->timestamps) {
        char stamp[32];
        time_t t = time(NULL);
        struct tm tm;
        localtime_r(&t, &tm);
        strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", &tm);
        fprintf(u->out, "%s ", stamp);
    }
    va_list ap;
    va_start(ap, fmt);
    vfprintf(u->out, fmt, ap);
    va_end(ap);
    fputc('\n', u->out);
}

/* Whether a wait of ev's folder (or outside any folder) is reported now: per folder, so that
 * folders syncing at once neither hide nor repeat each other's waits. */
static bool wait_due(ui *u, const ofs_event *ev)
{
    bool fresh;
    ui_pace_slot *s = ui_pace_get(&u->pace, ev->account, ev->folder, &fresh);
    if (ev->waited < s->waited || s->wait_next < WAIT_FIRST) /* a new wait */
        s->wait_next = WAIT_FIRST;
    s->waited = ev->waited;
    if (ev->waited < s->wait_next)
        return false;
    s->wait_next = ev->waited + WAIT_AGAIN;
    return true;
}

/* Something moved for ev's folder: its next wait is a new one. */
static void wait_over(ui *u, const ofs_event *ev)
{
    bool fresh;
    ui_pace_slot *s = ui_pace_get(&u->pace, ev->account, ev->folder, &fresh);
    s->wait_next = 0;
    s->waited = 0;
}

static void waiting(ui *u, const ofs_event *ev)
{
    if (!wait_due(u, ev))
        return;
    buf b;
    buf_init(&b);
    ui_waiting_text(ev, &b);
    line(u, "%s%s%s: %s", ev->account, ev->folder ? "/" : "", ev->folder ? ev->folder : "", b.data);
    buf_free(&b);
}

void ui_plain_event(ui *u, const ofs_event *ev)
{
    buf b;
    switch (ev->type) {
    case OFS_EV_PASS_START:
        u->pass_started = ui_now();
        if (u->verbosity > 0)
            line(u, "%s: pass started", ev->account);
        break;
    case OFS_EV_FOLDER_START:
        wait_over(u, ev);
        if (u->verbosity > 0)
            line(u, "%s/%s: checking", ev->account, ev->folder);
        break;
    case OFS_EV_FOLDER_DONE:
        ui_pace_forget(&u->pace, ev->account, ev->folder);
        if (u->verbosity > 0 || strcmp(ev->text, "in sync") != 0)
            line(u, "%s/%s: %s", ev->account, ev->folder, ev->text);
        break;
    case OFS_EV_PROGRESS:
        if (ev->waited == 0)
            wait_over(u, ev);
        break;
    case OFS_EV_WAITING:
        waiting(u, ev);
        break;
    case OFS_EV_NOTICE:
        line(u, "%s%s%s: %s", ev->account, ev->folder ? "/" : "", ev->folder ? ev->folder : "",
             ev->text);
        break;
    case OFS_EV_ERROR:
        /* A folder's error; the pass's own error is the command's one line on stderr. */
        if (ev->folder) {
            line(u, "%s: error: %s", ev->account, ev->text);
            ui_pace_forget(&u->pace, ev->account, ev->folder);
        } else {
            ui_pace_clear(&u->pace);
        }
        break;
    case OFS_EV_PASS_DONE:
        ui_pace_clear(&u->pace);
        buf_init(&b);
        ui_summary_line(ev, &b);
        line(u, "%s", b.data);
        buf_free(&b);
        break;
    case OFS_EV_TRACE: /* on stderr, so that stdout stays the report */
        fprintf(stderr, "%s: %s\n", ev->account, ev->text);
        break;
    default:
        break;
    }
    fflush(u->out);
}
