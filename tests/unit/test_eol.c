/* test_eol.c: CRLF <-> LF conversion, including a CR split across chunks.
 * Every message crossing between the server and the Maildir goes through it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "util/eol.h"

static void to_lf_in_chunks(const char *in, size_t chunk, const char *want)
{
    char out[256];
    size_t o = 0, n = strlen(in);
    eol_state s = {0};
    for (size_t i = 0; i < n; i += chunk)
        o += eol_to_lf(&s, in + i, n - i < chunk ? n - i : chunk, out + o);
    o += eol_to_lf_end(&s, out + o);
    assert_int_equal(o, strlen(want));
    assert_memory_equal(out, want, o);
}

static void test_to_lf(void **st)
{
    (void)st;
    const char *in = "a\r\nb\rc\r\n\r\nd\r";
    const char *want = "a\nb\rc\n\nd\r";
    for (size_t chunk = 1; chunk <= strlen(in); chunk++)
        to_lf_in_chunks(in, chunk, want);
}

static void test_to_crlf(void **st)
{
    (void)st;
    char out[64];
    eol_state s = {0};
    size_t o = eol_to_crlf(&s, "a\nb\r", 4, out);
    o += eol_to_crlf(&s, "\nc\n", 3, out + o); /* CR at the end of the first chunk */
    assert_int_equal(o, 9);
    assert_memory_equal(out, "a\r\nb\r\nc\r\n", 9);
}

static void test_round_trip(void **st)
{
    (void)st;
    const char *lf = "From: x\n\nline\n\n";
    char crlf[64], back[64];
    eol_state a = {0}, b = {0};
    size_t n = eol_to_crlf(&a, lf, strlen(lf), crlf);
    size_t m = eol_to_lf(&b, crlf, n, back);
    m += eol_to_lf_end(&b, back + m);
    assert_int_equal(m, strlen(lf));
    assert_memory_equal(back, lf, m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_to_lf),
        cmocka_unit_test(test_to_crlf),
        cmocka_unit_test(test_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
