/* test_security.c: SASL messages, mechanism choice, fingerprint parsing, loopback detection,
 * the protocol trace's rendering and the non-dumpable guard. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>
#include <sys/prctl.h>

#include "imap/parse.h"
#include "imap/sasl.h"
#include "imap/tls.h"
#include "imap/trace.h"
#include "util/secret.h"

static void b64(const void *data, size_t len, const char *want)
{
    buf b;
    buf_init(&b);
    sasl_base64(data, len, &b);
    assert_string_equal(b.data ? b.data : "", want);
    buf_free(&b);
}

static void test_base64(void **st)
{
    (void)st;
    b64("", 0, "");
    b64("f", 1, "Zg==");
    b64("fo", 2, "Zm8=");
    b64("foo", 3, "Zm9v");
    b64("foobar", 6, "Zm9vYmFy");
    b64("\xff\xfe\xfd", 3, "//79");
}

static void initial(int mech, const char *want)
{
    buf b;
    buf_init(&b);
    sasl_initial_response(mech, "alice", "s3cr\"t", "imap.example.org", 993, &b);
    assert_string_equal(b.data, want);
    buf_free(&b);
}

static void test_initial_responses(void **st)
{
    (void)st;
    /* base64("\0alice\0s3cr\"t") */
    initial(SASL_PLAIN, "AGFsaWNlAHMzY3IidA==");
    /* base64("user=alice\1auth=Bearer s3cr\"t\1\1") */
    initial(SASL_XOAUTH2, "dXNlcj1hbGljZQFhdXRoPUJlYXJlciBzM2NyInQBAQ==");
    /* base64("n,a=alice,\1host=imap.example.org\1port=993\1auth=Bearer s3cr\"t\1\1") */
    initial(SASL_OAUTHBEARER,
            "bixhPWFsaWNlLAFob3N0PWltYXAuZXhhbXBsZS5vcmcBcG9ydD05OTMBYXV0aD1CZWFyZXIgczNjciJ0AQE=");
    assert_string_equal(sasl_oauth_error_reply(SASL_OAUTHBEARER), "AQ==");
    assert_string_equal(sasl_oauth_error_reply(SASL_XOAUTH2), "");
}

static void test_parse_mechs(void **st)
{
    (void)st;
    int m[SASL_NMECH];
    size_t n;
    ofs_error err;
    assert_int_equal(sasl_parse_mechs(NULL, m, &n, &err), 0);
    assert_int_equal(n, 2);
    assert_int_equal(m[0], SASL_PLAIN);
    assert_int_equal(m[1], SASL_LOGIN);
    assert_int_equal(sasl_parse_mechs(" OAuthBearer, xoauth2 login,login ", m, &n, &err), 0);
    assert_int_equal(n, 3);
    assert_int_equal(m[0], SASL_OAUTHBEARER);
    assert_int_equal(m[1], SASL_XOAUTH2);
    assert_int_equal(m[2], SASL_LOGIN);
    assert_false(sasl_mech_is_password(SASL_XOAUTH2));
    assert_true(sasl_mech_is_password(SASL_LOGIN));
    assert_int_equal(sasl_parse_mechs("plain cram-md5", m, &n, &err), -1);
    assert_int_equal(err.code, OFS_E_CONFIG);
    assert_non_null(strstr(err.message, "'cram-md5'"));
}

static void test_fingerprint(void **st)
{
    (void)st;
    unsigned char md[32];
    ofs_error err;
    const char *hex = "SHA256:00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
    assert_int_equal(imap_tls_parse_fingerprint(hex, md, &err), 0);
    assert_int_equal(md[0], 0x00);
    assert_int_equal(md[1], 0x11);
    assert_int_equal(md[31], 0xff);
    const char *colons = "sha256:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:"
                         "00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF";
    unsigned char md2[32];
    assert_int_equal(imap_tls_parse_fingerprint(colons, md2, &err), 0);
    assert_memory_equal(md, md2, 32);
    const char *bad[] = {
        "SHA256:ab01",
        "SHA1:0011",
        "00112233",
        "SHA256:",
        "SHA256::00",
        "SHA256:00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF00",
        "SHA256:0g112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF",
        "SHA256:00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEF"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(imap_tls_parse_fingerprint(bad[i], md, &err), -1);
        assert_int_equal(err.code, OFS_E_CONFIG);
    }
}

static void test_loopback(void **st)
{
    (void)st;
    const char *yes[] = {"localhost", "LOCALHOST", "localhost.", "127.0.0.1",
                         "127.1.2.3", "127.1",     "::1",        "::ffff:127.0.0.1"};
    const char *no[] = {"",    "localhost.example.org", "128.0.0.1",       "10.0.0.1",
                        "::2", "imap.example.org",      "::ffff:10.0.0.1", "127.0.0.1.example.org"};
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++)
        assert_true(imap_host_is_loopback(yes[i]));
    for (size_t i = 0; i < sizeof no / sizeof *no; i++)
        assert_false(imap_host_is_loopback(no[i]));
    assert_false(imap_host_is_loopback(NULL));
}

static void parse_one(imap_parser *p, const char *line, buf *out)
{
    ofs_error err;
    assert_int_equal(imap_parser_feed(p, line, strlen(line), &err), (long)strlen(line));
    const imap_response *r = imap_parser_response(p);
    assert_non_null(r);
    buf_reset(out);
    imap_trace_response(r, out);
}

static void test_trace_render(void **st)
{
    (void)st;
    imap_parser *p = imap_parser_new(NULL);
    buf b;
    buf_init(&b);
    parse_one(p, "o3 OK [READ-WRITE] Select done\r\n", &b);
    assert_string_equal(b.data, "S: o3 OK [READ-WRITE] Select done");
    parse_one(p, "* 2 FETCH (UID 7 FLAGS (\\Seen))\r\n", &b);
    assert_string_equal(b.data, "S: * 2 FETCH (UID 7 FLAGS (\\Seen))");
    parse_one(p, "+ VXNlcm5hbWU6\r\n", &b);
    assert_string_equal(b.data, "S: + VXNlcm5hbWU6");
    /* A control character from the server cannot reach the terminal. */
    parse_one(p, "* LIST () \"/\" {7}\r\na\033[2Jb\x01\r\n", &b);
    assert_null(strchr(b.data, '\033'));
    assert_null(strchr(b.data, '\x01'));
    /* A long line is cut. */
    buf big;
    buf_init(&big);
    buf_adds(&big, "* OK ");
    for (int i = 0; i < 5000; i++)
        buf_addc(&big, 'x');
    buf_adds(&big, "\r\n");
    parse_one(p, big.data, &b);
    assert_true(b.len <= TRACE_LINE_MAX + 3);
    assert_string_equal(b.data + b.len - 3, "...");
    buf_free(&big);
    buf_reset(&b);
    imap_trace_command("o1 LOGIN a b\r\n", 14, &b);
    assert_string_equal(b.data, "C: o1 LOGIN a b");
    buf_free(&b);
    imap_parser_free(p);
}

static void test_dumpable_guard(void **st)
{
    (void)st;
    assert_int_equal(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), 1);
    secret_guard_begin();
    assert_int_equal(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), 0);
    secret_guard_begin();
    secret_guard_end();
    assert_int_equal(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), 0); /* still one holder */
    secret_guard_end();
    assert_int_equal(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base64),         cmocka_unit_test(test_initial_responses),
        cmocka_unit_test(test_parse_mechs),    cmocka_unit_test(test_fingerprint),
        cmocka_unit_test(test_loopback),       cmocka_unit_test(test_trace_render),
        cmocka_unit_test(test_dumpable_guard),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
