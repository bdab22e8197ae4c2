/* plain.c: the line renderer: one line per folder that changed, one summary per pass.
 * A pass with nothing to do says so in one line, so a user sees it was checked. */
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ui/ui.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void ui_init(ui *u, FILE *out, int verbosity)
{
    u->out = out;
    u->verbosity = verbosity;
    u->timestamps = !isatty(fileno(out));
    u->pass_started = now();
}

static void line_start(ui *u)
{
    if (!u->timestamps)
        return;
    char stamp[32];
    time_t t = time(NULL);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", &tm);
    fprintf(u->out, "%s ", stamp);
}

static bool pass_did_nothing(const ofs_sync_stats *s)
{
    return !s->downloaded && !s->uploaded && !s->flags_to_local && !s->flags_to_server &&
           !s->expunged_local && !s->expunged_server && !s->folders_local && !s->folders_server;
}

static void pass_summary(ui *u, const ofs_event *ev)
{
    const ofs_sync_stats *s = ev->stats;
    double secs = now() - u->pass_started;
    line_start(u);
    if (pass_did_nothing(s)) {
        fprintf(u->out, "%s: nothing to do, %llu folders in sync (%.1f s)\n", ev->account,
                (unsigned long long)s->folders_seen, secs);
        return;
    }
    fprintf(u->out,
            "%s: %llu folders; local: +%llu messages, %llu flag changes, -%llu, %llu new "
            "folders; server: +%llu messages, %llu flag changes, -%llu, %llu new folders; "
            "%.1f KiB down, %.1f KiB up (%.1f s)\n",
            ev->account, (unsigned long long)s->folders_seen, (unsigned long long)s->downloaded,
            (unsigned long long)s->flags_to_local, (unsigned long long)s->expunged_local,
            (unsigned long long)s->folders_local, (unsigned long long)s->uploaded,
            (unsigned long long)s->flags_to_server, (unsigned long long)s->expunged_server,
            (unsigned long long)s->folders_server, (double)s->bytes_down / 1024.0,
            (double)s->bytes_up / 1024.0, secs);
}

void ui_on_event(const ofs_event *ev, void *ctx)
{
    ui *u = ctx;
    if (u->verbosity < 0)
        return;
    switch (ev->type) {
    case OFS_EV_PASS_START:
        u->pass_started = now();
        break;
    case OFS_EV_FOLDER_DONE:
        if (u->verbosity > 0 || strcmp(ev->text, "in sync") != 0) {
            line_start(u);
            fprintf(u->out, "%s/%s: %s\n", ev->account, ev->folder, ev->text);
        }
        break;
    case OFS_EV_PROGRESS:
        if (u->verbosity > 0) {
            line_start(u);
            fprintf(u->out, "%s/%s: %llu of %llu copied\n", ev->account, ev->folder,
                    (unsigned long long)ev->done, (unsigned long long)ev->total);
        }
        break;
    case OFS_EV_NOTICE:
        line_start(u);
        fprintf(u->out, "%s%s%s: %s\n", ev->account, ev->folder ? "/" : "",
                ev->folder ? ev->folder : "", ev->text);
        break;
    case OFS_EV_PASS_DONE:
        pass_summary(u, ev);
        break;
    default:
        break;
    }
    fflush(u->out);
}
