/* test_ui.c: the renderers' pure parts: JSON string escaping (every line must parse, whatever
 * bytes a folder name holds), sizes and durations, the summary and waiting lines, and the
 * per-folder pacing of progress events and wait lines when folders sync at once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imap/client.h"
#include "ui/ui.h"

static void json_is(const char *in, const char *want)
{
    buf b;
    buf_init(&b);
    json_str(&b, in);
    assert_string_equal(b.data, want);
    buf_free(&b);
}

static void test_json_escapes(void **state)
{
    (void)state;
    json_is("INBOX", "\"INBOX\"");
    json_is("", "\"\"");
    json_is("a\"b\\c", "\"a\\\"b\\\\c\"");
    json_is("line\nnext\ttab\r\x01\x1f\x7f", "\"line\\nnext\\ttab\\u000d\\u0001\\u001f\\u007f\"");
    json_is("Entwürfe/日本/📬", "\"Entwürfe/日本/📬\"");
}

static void test_json_invalid_utf8(void **state)
{
    (void)state;
    json_is("caf\xe9", "\"caf\\ufffd\"");                            /* Latin-1 */
    json_is("\xc0\xaf", "\"\\ufffd\\ufffd\"");                       /* overlong '/' */
    json_is("\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\"");            /* a surrogate */
    json_is("\xf4\x90\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\""); /* above U+10FFFF */
    json_is("ab\xe6\x97", "\"ab\\ufffd\\ufffd\"");                   /* truncated at the end */
    json_is("\xe6\x97\xa5\xff", "\"日\\ufffd\"");
}

static void test_sizes_and_durations(void **state)
{
    (void)state;
    buf b;
    buf_init(&b);
    ui_fmt_bytes(&b, 512);
    buf_adds(&b, "|");
    ui_fmt_bytes(&b, 1536);
    buf_adds(&b, "|");
    ui_fmt_bytes(&b, 52 * 1024 * 1024);
    buf_adds(&b, "|");
    ui_fmt_duration(&b, 12.2);
    buf_adds(&b, "|");
    ui_fmt_duration(&b, 187);
    buf_adds(&b, "|");
    ui_fmt_duration(&b, 3723);
    assert_string_equal(b.data, "512 B|1.5 KiB|52 MiB|12 s|3:07|1:02:03");
    buf_free(&b);
}

static void test_waiting_and_summary(void **state)
{
    (void)state;
    ofs_sync_stats s = {.downloaded = 12,
                        .flags_to_server = 3,
                        .expunged_local = 1,
                        .folders_local = 2,
                        .folders_seen = 5,
                        .held_back = 2,
                        .held_back_bytes = 30 * 1024 * 1024,
                        .net_in = 2048,
                        .net_out = 100,
                        .round_trips = 14,
                        .elapsed_ms = 2345};
    ofs_event ev = {.type = OFS_EV_PASS_DONE, .account = "work", .stats = &s};
    buf b;
    buf_init(&b);
    ui_summary_line(&ev, &b);
    assert_string_equal(b.data, "work: 5 folders; local: +12 added, 0 flags changed, -1 expunged, "
                                "folders +2 -0; server: +0 added, 3 flags changed, -0 expunged; 2 "
                                "held back on the server (30 MiB); 2.0 KiB in, 100 B out, 14 round "
                                "trips, 2.3 s");
    buf_reset(&b);
    ofs_sync_stats none = {.folders_seen = 3, .elapsed_ms = 100};
    ev.stats = &none;
    ui_summary_line(&ev, &b);
    assert_non_null(strstr(b.data, "work: nothing to do, 3 folders in sync"));
    buf_reset(&b);
    ofs_event w = {.type = OFS_EV_WAITING, .waited = 12.4, .text = "fetching INBOX UID 4711"};
    ui_waiting_text(&w, &b);
    assert_string_equal(b.data, "waiting for server: 12 s, fetching INBOX UID 4711");
    buf_free(&b);
}

static void test_quote_utf8(void **state)
{
    (void)state;
    buf b;
    buf_init(&b);
    assert_true(imap_quote_utf8("Entwürfe \"x\"", &b));
    assert_string_equal(b.data, "\"Entwürfe \\\"x\\\"\"");
    buf_reset(&b);
    assert_false(imap_quote_utf8("caf\xe9", &b));
    assert_false(imap_quote_utf8("a\r\nb", &b));
    assert_false(imap_quote("Entwürfe", &b));
    buf_free(&b);
}

static bool progress_at(ui_pace *p, const char *folder, uint64_t done, uint64_t total, double now)
{
    ofs_event ev = {
        .type = OFS_EV_PROGRESS, .account = "work", .folder = folder, .done = done, .total = total};
    return ui_pace_progress(p, &ev, now);
}

static void test_progress_paced_per_folder(void **state)
{
    (void)state;
    ui_pace p = {0};
    assert_true(progress_at(&p, "A", 0, 8, 100.0));  /* a folder's first one */
    assert_true(progress_at(&p, "B", 0, 8, 100.05)); /* B's own clock: not A's */
    assert_false(progress_at(&p, "A", 1, 8, 100.1));
    assert_false(progress_at(&p, "B", 1, 8, 100.2));
    assert_true(progress_at(&p, "A", 1, 8, 100.2)); /* UI_PROGRESS_GAP after A's last */
    assert_true(progress_at(&p, "B", 1, 8, 100.25));
    assert_true(progress_at(&p, "A", 8, 8, 100.3));   /* reaching done == total: always */
    assert_false(progress_at(&p, "A", 8, 8, 100.35)); /* not again: nothing new */
    assert_true(progress_at(&p, "A", 8, 8, 100.5));
    assert_false(progress_at(&p, "B", 0, 0, 100.3)); /* nothing to copy is not finished */
    /* The same folder name in another account has its own clock. */
    ofs_event other = {.type = OFS_EV_PROGRESS, .account = "home", .folder = "A", .total = 8};
    assert_true(ui_pace_progress(&p, &other, 100.51));
    /* A folder that is done leaves the table; synced again, it starts afresh. */
    assert_int_equal(p.n, 3);
    ui_pace_forget(&p, "work", "A");
    assert_int_equal(p.n, 2);
    assert_true(progress_at(&p, "A", 0, 3, 100.52));
    ui_pace_clear(&p);
    assert_int_equal(p.n, 0);
}

static void test_pace_table_is_bounded(void **state)
{
    (void)state;
    ui_pace p = {0};
    char name[16];
    for (int i = 0; i < UI_PACE_SLOTS; i++) {
        snprintf(name, sizeof name, "F%d", i);
        assert_true(progress_at(&p, name, 0, 5, 10.0));
    }
    assert_false(progress_at(&p, "F0", 1, 5, 10.01)); /* F0 is the most recent now */
    for (int i = UI_PACE_SLOTS; i < UI_PACE_SLOTS + 10; i++) {
        snprintf(name, sizeof name, "F%d", i);
        assert_true(progress_at(&p, name, 0, 5, 10.0));
    }
    assert_int_equal(p.n, UI_PACE_SLOTS);
    /* The least recently heard from gave way (F1..F10), the others kept their clocks. */
    assert_true(progress_at(&p, "F1", 1, 5, 10.02));
    assert_false(progress_at(&p, "F0", 1, 5, 10.02));
    assert_false(progress_at(&p, "F70", 1, 5, 10.02));
    ui_pace_clear(&p);
}

/* Lines a renderer wrote for events, read back from memory. */
typedef struct capture {
    char *text;
    size_t len;
    ui u;
} capture;

static void capture_open(capture *c, int mode)
{
    *c = (capture){0};
    c->u.out = open_memstream(&c->text, &c->len);
    assert_non_null(c->u.out);
    c->u.mode = mode;
}

static int capture_lines(capture *c, const char *needle)
{
    fflush(c->u.out);
    int n = 0;
    for (const char *p = c->text; (p = strstr(p, needle)); p++)
        n++;
    return n;
}

static void capture_close(capture *c)
{
    ui_close(&c->u);
    fclose(c->u.out);
    free(c->text);
}

static void send(capture *c, enum ofs_event_type type, const char *folder, double waited)
{
    static const ofs_sync_stats none;
    ofs_event ev = {.type = type,
                    .stats = &none,
                    .account = "work",
                    .folder = folder,
                    .waited = waited,
                    .total = 4,
                    .text = folder ? folder : "logging in"};
    ui_on_event(&ev, &c->u);
}

static void test_json_progress_of_each_folder(void **state)
{
    (void)state;
    capture c;
    capture_open(&c, UI_JSON);
    send(&c, OFS_EV_PROGRESS, "A", 0);
    send(&c, OFS_EV_PROGRESS, "B", 0); /* at once: a global limit would drop it */
    send(&c, OFS_EV_PROGRESS, "A", 0);
    assert_int_equal(capture_lines(&c, "\"folder\":\"A\""), 1);
    assert_int_equal(capture_lines(&c, "\"folder\":\"B\""), 1);
    send(&c, OFS_EV_FOLDER_DONE, "A", 0);
    send(&c, OFS_EV_PROGRESS, "A", 0); /* synced again: a first one again */
    assert_int_equal(capture_lines(&c, "\"type\":\"progress\","), 3);
    capture_close(&c);
}

/* Whether a waiting event of folder (NULL: none) made the plain renderer write a line. */
static bool wait_line(capture *c, const char *folder, double waited)
{
    int before = capture_lines(c, "waiting for server");
    send(c, OFS_EV_WAITING, folder, waited);
    return capture_lines(c, "waiting for server") > before;
}

static void test_plain_waits_per_folder(void **state)
{
    (void)state;
    capture c;
    capture_open(&c, UI_PLAIN);
    assert_false(wait_line(&c, "A", 9.5)); /* short waits are not worth a line */
    assert_true(wait_line(&c, "A", 10.0));
    assert_int_equal(capture_lines(&c, "work/A: waiting for server: 10 s, A\n"), 1);
    /* B waits too, while A's wait goes on: B gets its own line. */
    assert_true(wait_line(&c, "B", 12.0));
    assert_int_equal(capture_lines(&c, "work/B: waiting for server: 12 s, B\n"), 1);
    /* B moves on, C starts; A still waits: no repeat before WAIT_AGAIN. */
    send(&c, OFS_EV_PROGRESS, "B", 0);
    send(&c, OFS_EV_FOLDER_START, "C", 0);
    assert_false(wait_line(&c, "A", 10.5));
    assert_false(wait_line(&c, "A", 39.5));
    assert_true(wait_line(&c, "A", 40.0));
    /* A new wait of A (it moved in between) is reported at WAIT_FIRST again. */
    send(&c, OFS_EV_PROGRESS, "A", 0);
    assert_false(wait_line(&c, "A", 9.0));
    assert_true(wait_line(&c, "A", 10.0));
    /* Outside any folder (an extra connection logging in): the account alone. */
    assert_true(wait_line(&c, NULL, 11.0));
    assert_int_equal(capture_lines(&c, "work: waiting for server: 11 s, logging in\n"), 1);
    capture_close(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_escapes),
        cmocka_unit_test(test_json_invalid_utf8),
        cmocka_unit_test(test_sizes_and_durations),
        cmocka_unit_test(test_waiting_and_summary),
        cmocka_unit_test(test_quote_utf8),
        cmocka_unit_test(test_progress_paced_per_folder),
        cmocka_unit_test(test_pace_table_is_bounded),
        cmocka_unit_test(test_json_progress_of_each_folder),
        cmocka_unit_test(test_plain_waits_per_folder),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
