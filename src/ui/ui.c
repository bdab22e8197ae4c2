/* ui.c: picks the renderer for an output (terminal, log, --json) and hands it the events.
 * Also the formatting every renderer shares: sizes, durations, the pass summary line. */
#include <time.h>
#include <unistd.h>

#include "ui/ui.h"

double ui_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void ui_open(ui *u, FILE *out, int verbosity, bool json)
{
    *u = (ui){.out = out, .verbosity = verbosity, .pass_started = ui_now()};
    bool term = isatty(fileno(out));
    u->timestamps = !term;
    if (json)
        u->mode = UI_JSON;
    else if (term && verbosity >= 0 && verbosity < 2 && (u->tty = ui_tty_new(out, verbosity)))
        u->mode = UI_TTY;
    else
        u->mode = UI_PLAIN;
}

void ui_init(ui *u, FILE *out, int verbosity)
{
    ui_open(u, out, verbosity, false);
}

void ui_close(ui *u)
{
    if (u->tty)
        ui_tty_free(u->tty);
    u->tty = NULL;
    if (u->mode == UI_TTY)
        u->mode = UI_PLAIN;
    ui_pace_clear(&u->pace);
    fflush(u->out);
}

void ui_on_event(const ofs_event *ev, void *ctx)
{
    ui *u = ctx;
    switch (u->mode) {
    case UI_JSON:
        ui_json_event(u, ev);
        break;
    case UI_TTY:
        ui_tty_event(u->tty, ev);
        break;
    default:
        if (u->verbosity >= 0)
            ui_plain_event(u, ev);
        break;
    }
}

void ui_fmt_bytes(buf *b, uint64_t n)
{
    static const char *unit[] = {"KiB", "MiB", "GiB", "TiB"};
    if (n < 1024) {
        buf_printf(b, "%llu B", (unsigned long long)n);
        return;
    }
    double v = (double)n / 1024.0;
    size_t i = 0;
    while (v >= 1024.0 && i + 1 < sizeof unit / sizeof *unit) {
        v /= 1024.0;
        i++;
    }
    buf_printf(b, v < 10 ? "%.1f %s" : "%.0f %s", v, unit[i]);
}

void ui_fmt_duration(buf *b, double secs)
{
    if (secs < 0)
        secs = 0;
    unsigned long s = (unsigned long)(secs + 0.5);
    if (s < 60)
        buf_printf(b, "%lu s", s);
    else if (s < 3600)
        buf_printf(b, "%lu:%02lu", s / 60, s % 60);
    else
        buf_printf(b, "%lu:%02lu:%02lu", s / 3600, s / 60 % 60, s % 60);
}

static bool pass_did_nothing(const ofs_sync_stats *s)
{
    return !s->downloaded && !s->uploaded && !s->flags_to_local && !s->flags_to_server &&
           !s->expunged_local && !s->expunged_server && !s->folders_local && !s->folders_server &&
           !s->folders_removed_local && !s->folders_removed_server && !s->folders_renamed;
}

static void side_summary(buf *b, const char *side, uint64_t added, uint64_t flags,
                         uint64_t expunged, uint64_t created, uint64_t removed)
{
    buf_printf(b, "%s: +%llu added, %llu flags changed, -%llu expunged", side,
               (unsigned long long)added, (unsigned long long)flags, (unsigned long long)expunged);
    if (created || removed)
        buf_printf(b, ", folders +%llu -%llu", (unsigned long long)created,
                   (unsigned long long)removed);
}

void ui_summary_line(const ofs_event *ev, buf *b)
{
    const ofs_sync_stats *s = ev->stats;
    buf_printf(b, "%s: ", ev->account);
    if (pass_did_nothing(s)) {
        buf_printf(b, "nothing to do, %llu folders in sync", (unsigned long long)s->folders_seen);
    } else {
        buf_printf(b, "%llu folders; ", (unsigned long long)s->folders_seen);
        side_summary(b, "local", s->downloaded, s->flags_to_local, s->expunged_local,
                     s->folders_local, s->folders_removed_local);
        buf_adds(b, "; ");
        side_summary(b, "server", s->uploaded, s->flags_to_server, s->expunged_server,
                     s->folders_server, s->folders_removed_server);
        if (s->folders_renamed)
            buf_printf(b, "; %llu folders renamed", (unsigned long long)s->folders_renamed);
    }
    if (s->held_back) {
        buf_printf(b, "; %llu held back on the server (", (unsigned long long)s->held_back);
        ui_fmt_bytes(b, s->held_back_bytes);
        buf_adds(b, ")");
    }
    buf_adds(b, "; ");
    ui_fmt_bytes(b, s->net_in);
    buf_adds(b, " in, ");
    ui_fmt_bytes(b, s->net_out);
    buf_printf(b, " out, %llu round trips, ", (unsigned long long)s->round_trips);
    if (s->reconnects)
        buf_printf(b, "%llu reconnects, ", (unsigned long long)s->reconnects);
    buf_printf(b, "%.1f s", (double)s->elapsed_ms / 1000.0);
}

void ui_waiting_text(const ofs_event *ev, buf *b)
{
    buf_adds(b, "waiting for server: ");
    ui_fmt_duration(b, ev->waited);
    if (ev->text && *ev->text)
        buf_printf(b, ", %s", ev->text);
}
