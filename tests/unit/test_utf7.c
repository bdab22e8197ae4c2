/* test_utf7.c: modified UTF-7 folder names, and the IMAP client's pure helpers
 * (UID sets, flag lists, Message-ID extraction, quoting) that need no server. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imap/client.h"
#include "imap/utf7.h"
#include "util/mem.h"

static void check_decode(const char *in, const char *want)
{
    ofs_error err = {0};
    char *out = NULL;
    assert_int_equal(imap_utf7_decode(in, &out, &err), 0);
    assert_string_equal(out, want);
    free(out);
}

static void check_encode(const char *in, const char *want)
{
    ofs_error err = {0};
    char *out = NULL;
    assert_int_equal(imap_utf7_encode(in, &out, &err), 0);
    assert_string_equal(out, want);
    free(out);
}

static void check_decode_fails(const char *in)
{
    ofs_error err = {0};
    char *out = NULL;
    if (imap_utf7_decode(in, &out, &err) == 0)
        fail_msg("decoding \"%s\" should fail, gave \"%s\"", in, out);
    assert_int_equal(err.code, OFS_E_NAME);
    assert_non_null(strstr(err.message, "modified UTF-7"));
    assert_null(out);
}

static void check_encode_fails(const char *in)
{
    ofs_error err = {0};
    char *out = NULL;
    assert_int_equal(imap_utf7_encode(in, &out, &err), -1);
    assert_int_equal(err.code, OFS_E_NAME);
    assert_null(out);
}

static void test_rfc3501_example(void **state)
{
    (void)state;
    check_decode("~peter/mail/&U,BTFw-/&ZeVnLIqe-", "~peter/mail/\xe5\x8f\xb0\xe5\x8c\x97/"
                                                    "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e");
    check_encode("~peter/mail/\xe5\x8f\xb0\xe5\x8c\x97/\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e",
                 "~peter/mail/&U,BTFw-/&ZeVnLIqe-");
}

static void test_ampersand_and_ascii(void **state)
{
    (void)state;
    check_decode("Tom &- Jerry", "Tom & Jerry");
    check_encode("Tom & Jerry", "Tom &- Jerry");
    check_decode("", "");
    check_encode("", "");
    check_encode("plain.name~!", "plain.name~!");
    check_encode("&&", "&-&-");
    /* A '&-' right after a shift is an ampersand, not a second shift. */
    check_decode("&APw-&-", "\xc3\xbc&");
}

static void test_non_bmp_and_controls(void **state)
{
    (void)state;
    check_encode("\xf0\x9f\x98\x80", "&2D3eAA-"); /* U+1F600 as a surrogate pair */
    check_decode("&2D3eAA-", "\xf0\x9f\x98\x80");
    check_encode("Entw\xc3\xbc"
                 "rfe",
                 "Entw&APw-rfe");
    /* Control characters are not printable ASCII, so they are shifted, not passed raw. */
    check_encode("a\tb", "a&AAk-b");
    check_decode("a&AAk-b", "a\tb");
}

static void test_round_trips(void **state)
{
    (void)state;
    const char *names[] = {
        "INBOX",
        "Archive/2022",
        "\xc3\xa9t\xc3\xa9",
        "\xe6\x97\xa5\xe6\x9c\xac&x",
        "\xf0\x9f\x93\xa7 mail \xf0\x9f\x93\xa8\xf0\x9f\x93\xa9",
        "a\xc2\xa0"
        "b",
        "\xef\xbf\xbd",
        "\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac-",
        "-&-",
        "x\xc3\xbf"
        "y",
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        ofs_error err = {0};
        char *enc = NULL, *dec = NULL;
        assert_int_equal(imap_utf7_encode(names[i], &enc, &err), 0);
        for (const char *p = enc; *p; p++)
            assert_true(*p >= 0x20 && *p <= 0x7e);
        assert_int_equal(imap_utf7_decode(enc, &dec, &err), 0);
        assert_string_equal(dec, names[i]);
        free(enc);
        free(dec);
    }
}

static void test_decode_invalid(void **state)
{
    (void)state;
    check_decode_fails("&");           /* unterminated */
    check_decode_fails("&APw");        /* unterminated */
    check_decode_fails("&AP*-");       /* not modified base64 */
    check_decode_fails("&AP/-");       /* '/' is ',' in modified base64 */
    check_decode_fails("&APx-");       /* non-zero padding bits */
    check_decode_fails("&APwA-");      /* a spare base64 character */
    check_decode_fails("&A-");         /* less than one UTF-16 unit */
    check_decode_fails("&AGE-");       /* 'a' must not be shifted */
    check_decode_fails("&ACY-");       /* '&' must be "&-" */
    check_decode_fails("&APw-&APw-");  /* two shifts in a row: not minimal */
    check_decode_fails("&2D0-");       /* high surrogate at the end */
    check_decode_fails("&3gA-");       /* low surrogate alone */
    check_decode_fails("&2D0A,A-");    /* high surrogate then a non-surrogate */
    check_decode_fails("&2D0-&3gA-");  /* a pair split over two shifts */
    check_decode_fails("&AAA-");       /* NUL */
    check_decode_fails("caf\xc3\xa9"); /* raw 8-bit */
    check_decode_fails("a\tb");        /* raw control */
    check_decode_fails("a\x7f");       /* raw DEL */
}

static void test_encode_invalid(void **state)
{
    (void)state;
    check_encode_fails("\xc0\x80");         /* overlong NUL */
    check_encode_fails("\xe0\x80\xaf");     /* overlong '/' */
    check_encode_fails("\xed\xa0\x80");     /* UTF-16 surrogate */
    check_encode_fails("\xf4\x90\x80\x80"); /* above U+10FFFF */
    check_encode_fails("\xe6\x97");         /* truncated */
    check_encode_fails("\x80");             /* lone continuation byte */
    check_encode_fails("ok\xff");
}

static void check_uidset(const uint32_t *uids, size_t n, size_t max, const char *want,
                         size_t want_used)
{
    buf b;
    buf_init(&b);
    buf_adds(&b, "");
    assert_int_equal(imap_uidset(uids, n, max, &b), want_used);
    assert_string_equal(b.data, want);
    buf_free(&b);
}

static void test_uidset(void **state)
{
    (void)state;
    uint32_t a[] = {1, 2, 3, 4, 5, 9, 12, 13, 14, 15, 16, 17, 18, 19, 20, 40};
    check_uidset(a, 16, 1000, "1:5,9,12:20,40", 16);
    uint32_t dup[] = {3, 3, 4, 7, 7};
    check_uidset(dup, 5, 1000, "3:4,7", 5);
    uint32_t one[] = {42};
    check_uidset(one, 1, 1000, "42", 1);
    uint32_t top[] = {4294967294u, 4294967295u};
    check_uidset(top, 2, 1000, "4294967294:4294967295", 2);
    /* The cap splits between ranges; the first range is always taken. */
    check_uidset(a, 16, 5, "1:5,9", 6);
    check_uidset(a + 6, 10, 3, "12:20", 9);
    check_uidset(a, 16, 4, "1:5", 5);
}

static void test_uidset_split_covers_all(void **state)
{
    (void)state;
    size_t n = 5000;
    uint32_t *u = malloc(n * sizeof *u);
    for (size_t i = 0; i < n; i++)
        u[i] = (uint32_t)(i * 2 + 1); /* no two adjacent: every UID is its own range */
    size_t done = 0, commands = 0;
    while (done < n) {
        buf b;
        buf_init(&b);
        size_t k = imap_uidset(u + done, n - done, 200, &b);
        assert_true(k > 0);
        assert_true(b.len <= 200);
        /* The set ends with the last UID it consumed. */
        char tail[16];
        snprintf(tail, sizeof tail, "%" PRIu32, u[done + k - 1]);
        assert_string_equal(b.data + b.len - strlen(tail), tail);
        done += k;
        commands++;
        buf_free(&b);
    }
    assert_int_equal(done, n);
    assert_true(commands > 1);
    free(u);
}

static imap_value atom(const char *s)
{
    imap_value v = {.type = IMAP_V_ATOM, .str = (char *)s, .len = strlen(s), .fd = -1};
    return v;
}

static void test_flags(void **state)
{
    (void)state;
    imap_value items[] = {atom("\\Seen"),  atom("\\RECENT"),   atom("$Junk"),    atom("\\flagged"),
                          atom("\\Draft"), atom("\\Answered"), atom("\\Deleted")};
    imap_value list = {.type = IMAP_V_LIST, .items = items, .n = 7, .fd = -1};
    assert_int_equal(imap_flags_from_list(&list), FLAG_ALL);
    list.n = 3;
    assert_int_equal(imap_flags_from_list(&list), FLAG_SEEN);
    list.n = 0;
    assert_int_equal(imap_flags_from_list(&list), 0);
    imap_value notlist = atom("\\Seen");
    assert_int_equal(imap_flags_from_list(&notlist), 0);

    buf b;
    buf_init(&b);
    buf_adds(&b, "");
    imap_flags_format(FLAG_SEEN | FLAG_FLAGGED | FLAG_DRAFT, &b);
    assert_string_equal(b.data, "\\Seen \\Flagged \\Draft");
    buf_reset(&b);
    imap_flags_format(FLAG_ALL, &b);
    assert_string_equal(b.data, "\\Seen \\Answered \\Flagged \\Deleted \\Draft");
    buf_reset(&b);
    imap_flags_format(0, &b);
    assert_string_equal(b.data, "");
    buf_free(&b);
}

static void check_msgid(const char *hdr, const char *want)
{
    char *id = imap_header_msgid(hdr, strlen(hdr));
    if (!want) {
        assert_null(id);
        return;
    }
    assert_non_null(id);
    assert_string_equal(id, want);
    free(id);
}

static void test_msgid(void **state)
{
    (void)state;
    check_msgid("Message-ID: <a@b.example>\r\n\r\n", "<a@b.example>");
    check_msgid("message-id:   <a@b>  \r\n\r\n", "<a@b>");
    check_msgid("Message-Id:\r\n <folded@x>\r\n\r\n", "<folded@x>");
    check_msgid("Message-ID: <part1\r\n\tpart2@x>\r\n\r\n", "<part1\tpart2@x>");
    check_msgid("X-Message-ID: <no@x>\r\n\r\n", NULL);
    check_msgid("Subject: hi\r\nMessage-ID: <second@x>\r\n\r\n", "<second@x>");
    check_msgid("\r\n", NULL);
    check_msgid("", NULL);
    check_msgid("Message-ID:   \r\n\r\n", NULL);
    check_msgid("Message-ID: <lf-only@x>\n\n", "<lf-only@x>");
    /* Only the header block counts. */
    check_msgid("\r\nMessage-ID: <body@x>\r\n", NULL);
}

static void test_quote(void **state)
{
    (void)state;
    buf b;
    buf_init(&b);
    assert_true(imap_quote("a \"b\" \\c", &b));
    assert_string_equal(b.data, "\"a \\\"b\\\" \\\\c\"");
    buf_reset(&b);
    assert_true(imap_quote("", &b));
    assert_string_equal(b.data, "\"\"");
    buf_reset(&b);
    assert_false(imap_quote("p\xc3\xa4ss", &b));
    assert_false(imap_quote("two\r\nlines", &b));
    assert_int_equal(b.len, 0);
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc3501_example),
        cmocka_unit_test(test_ampersand_and_ascii),
        cmocka_unit_test(test_non_bmp_and_controls),
        cmocka_unit_test(test_round_trips),
        cmocka_unit_test(test_decode_invalid),
        cmocka_unit_test(test_encode_invalid),
        cmocka_unit_test(test_uidset),
        cmocka_unit_test(test_uidset_split_covers_all),
        cmocka_unit_test(test_flags),
        cmocka_unit_test(test_msgid),
        cmocka_unit_test(test_quote),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
