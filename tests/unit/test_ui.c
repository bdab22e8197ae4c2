/* test_ui.c: the renderers' pure parts: JSON string escaping (every line must parse, whatever
 * bytes a folder name holds), sizes and durations, the summary and waiting lines. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_escapes),        cmocka_unit_test(test_json_invalid_utf8),
        cmocka_unit_test(test_sizes_and_durations), cmocka_unit_test(test_waiting_and_summary),
        cmocka_unit_test(test_quote_utf8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
