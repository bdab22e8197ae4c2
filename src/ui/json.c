/* json.c: --json output: one JSON object per event and line, for other programs.
 * The fields are a contract documented in docs/json-events.md; every line parses as JSON. */
#include <string.h>
#include <time.h>

#include "ui/ui.h"

/* Length of the valid UTF-8 sequence at s (1-4), or 0: overlong forms, surrogates and code
 * points above U+10FFFF are invalid, as are truncated sequences. */
static int utf8_len(const unsigned char *s)
{
    unsigned c = s[0];
    int n;
    unsigned cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4, cp = c & 0x07;
    else
        return 0;
    for (int i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

void json_str(buf *b, const char *s)
{
    buf_addc(b, '"');
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    while (*p) {
        int n = utf8_len(p);
        if (n == 0) {
            buf_adds(b, "\\ufffd");
            p++;
            continue;
        }
        if (n > 1) {
            buf_add(b, p, (size_t)n);
            p += n;
            continue;
        }
        unsigned char c = *p++;
        if (c == '"' || c == '\\')
            buf_printf(b, "\\%c", c);
        else if (c == '\n')
            buf_adds(b, "\\n");
        else if (c == '\t')
            buf_adds(b, "\\t");
        else if (c < 0x20 || c == 0x7f)
            buf_printf(b, "\\u%04x", c);
        else
            buf_addc(b, (char)c);
    }
    buf_addc(b, '"');
}

static void key_str(buf *b, const char *key, const char *val)
{
    buf_printf(b, ",\"%s\":", key);
    if (val)
        json_str(b, val);
    else
        buf_adds(b, "null");
}

static void key_u64(buf *b, const char *key, uint64_t v)
{
    buf_printf(b, ",\"%s\":%llu", key, (unsigned long long)v);
}

static void begin(buf *b, const char *type, const ofs_event *ev)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char stamp[40];
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    buf_printf(b, "{\"type\":\"%s\",\"time\":\"%s.%03ldZ\"", type, stamp, ts.tv_nsec / 1000000);
    key_str(b, "account", ev->account);
}

static void progress_fields(buf *b, const ofs_event *ev)
{
    key_str(b, "folder", ev->folder);
    key_u64(b, "done", ev->done);
    key_u64(b, "total", ev->total);
    key_u64(b, "bytes_done", ev->bytes_done);
    key_u64(b, "bytes_total", ev->bytes_total);
    key_u64(b, "net_in", ev->net_in);
    key_u64(b, "net_out", ev->net_out);
}

static void side(buf *b, const char *name, uint64_t added, uint64_t flags, uint64_t expunged,
                 uint64_t created, uint64_t removed)
{
    buf_printf(b,
               ",\"%s\":{\"added\":%llu,\"flags_changed\":%llu,\"expunged\":%llu,"
               "\"folders_created\":%llu,\"folders_removed\":%llu}",
               name, (unsigned long long)added, (unsigned long long)flags,
               (unsigned long long)expunged, (unsigned long long)created,
               (unsigned long long)removed);
}

static void summary(buf *b, const ofs_event *ev)
{
    const ofs_sync_stats *s = ev->stats;
    begin(b, "summary", ev);
    side(b, "local", s->downloaded, s->flags_to_local, s->expunged_local, s->folders_local,
         s->folders_removed_local);
    side(b, "server", s->uploaded, s->flags_to_server, s->expunged_server, s->folders_server,
         s->folders_removed_server);
    key_u64(b, "folders", s->folders_seen);
    key_u64(b, "folders_verified", s->folders_verified);
    key_u64(b, "folders_local_unread", s->folders_local_unread);
    key_u64(b, "local_listed", s->local_listed);
    key_u64(b, "edited", s->edited);
    key_u64(b, "folders_renamed", s->folders_renamed);
    key_u64(b, "held_back", s->held_back);
    key_u64(b, "held_back_bytes", s->held_back_bytes);
    key_u64(b, "bytes_down", s->bytes_down);
    key_u64(b, "bytes_up", s->bytes_up);
    key_u64(b, "net_in", s->net_in);
    key_u64(b, "net_out", s->net_out);
    key_u64(b, "round_trips", s->round_trips);
    key_u64(b, "reconnects", s->reconnects);
    buf_printf(b, ",\"elapsed\":%.3f}\n", (double)s->elapsed_ms / 1000.0);
}

/* Folder-level counters of a folder-done event. */
static void folder_stats(buf *b, const ofs_sync_stats *s)
{
    key_u64(b, "downloaded", s->downloaded);
    key_u64(b, "uploaded", s->uploaded);
    key_u64(b, "flags_to_local", s->flags_to_local);
    key_u64(b, "flags_to_server", s->flags_to_server);
    key_u64(b, "expunged_local", s->expunged_local);
    key_u64(b, "expunged_server", s->expunged_server);
    key_u64(b, "bytes_down", s->bytes_down);
    key_u64(b, "bytes_up", s->bytes_up);
}

/* Returns false when the event is left out (merged progress). */
static bool render(ui *u, const ofs_event *ev, buf *b)
{
    switch (ev->type) {
    case OFS_EV_PASS_START:
        begin(b, "pass-start", ev);
        break;
    case OFS_EV_FOLDER_START:
        begin(b, "folder-start", ev);
        key_str(b, "folder", ev->folder);
        break;
    case OFS_EV_PROGRESS:
        /* A heartbeat outside any folder is only a rate: nothing to report. */
        if (!ev->folder || !ui_pace_progress(&u->pace, ev, ui_now()))
            return false;
        begin(b, "progress", ev);
        progress_fields(b, ev);
        break;
    case OFS_EV_WAITING:
        begin(b, "waiting", ev);
        progress_fields(b, ev);
        buf_printf(b, ",\"waited\":%.1f", ev->waited);
        key_str(b, "doing", ev->text);
        break;
    case OFS_EV_FOLDER_DONE:
        ui_pace_forget(&u->pace, ev->account, ev->folder);
        begin(b, "folder-done", ev);
        key_str(b, "folder", ev->folder);
        key_str(b, "result", ev->text);
        folder_stats(b, ev->stats);
        break;
    case OFS_EV_NOTICE:
        begin(b, "notice", ev);
        key_str(b, "folder", ev->folder);
        key_str(b, "message", ev->text);
        break;
    case OFS_EV_TRACE:
        begin(b, "trace", ev);
        key_str(b, "line", ev->text);
        break;
    case OFS_EV_ERROR:
        if (ev->folder) /* the folder failed: it is done */
            ui_pace_forget(&u->pace, ev->account, ev->folder);
        else /* the pass ended: so did its folders */
            ui_pace_clear(&u->pace);
        begin(b, "error", ev);
        key_str(b, "folder", ev->folder);
        key_u64(b, "code", (uint64_t)ev->code);
        key_str(b, "message", ev->text);
        break;
    case OFS_EV_CHANGE:
        begin(b, "change", ev);
        key_str(b, "folder", ev->folder);
        key_str(b, "source", ev->text);
        break;
    case OFS_EV_PASS_DONE:
        ui_pace_clear(&u->pace); /* folders a pass-level error cut short */
        begin(b, "pass-done", ev);
        buf_printf(b, ",\"ok\":%s", ev->code ? "false" : "true");
        key_u64(b, "status", (uint64_t)ev->code);
        buf_printf(b, ",\"elapsed\":%.3f}\n", (double)ev->stats->elapsed_ms / 1000.0);
        summary(b, ev);
        return true;
    default:
        return false;
    }
    buf_adds(b, "}\n");
    return true;
}

void ui_json_event(ui *u, const ofs_event *ev)
{
    buf b;
    buf_init(&b);
    if (render(u, ev, &b)) {
        fwrite(b.data, 1, b.len, u->out);
        fflush(u->out);
    }
    buf_free(&b);
}
