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

static void waiting(ui *u, const ofs_event *ev)
{
    if (ev->waited < WAIT_FIRST) {
        u->next_wait_line = WAIT_FIRST;
        return;
    }
    if (u->next_wait_line < WAIT_FIRST)
        u->next_wait_line = WAIT_FIRST;
    if (ev->waited < u->next_wait_line)
        return;
    u->next_wait_line = ev->waited + WAIT_AGAIN;
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
        u->next_wait_line = 0;
        if (u->verbosity > 0)
            line(u, "%s/%s: checking", ev->account, ev->folder);
        break;
    case OFS_EV_FOLDER_DONE:
        if (u->verbosity > 0 || strcmp(ev->text, "in sync") != 0)
            line(u, "%s/%s: %s", ev->account, ev->folder, ev->text);
        break;
    case OFS_EV_PROGRESS:
        if (ev->waited == 0 && ev->folder)
            u->next_wait_line = 0;
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
        if (ev->folder)
            line(u, "%s: error: %s", ev->account, ev->text);
        break;
    case OFS_EV_PASS_DONE:
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
