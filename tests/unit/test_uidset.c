/* test_uidset.c: UID range sets as QRESYNC's VANISHED delivers them: parse, merge, membership,
 * and no expansion of huge ranges. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "util/uidset.h"

static void test_parse_and_has(void **ctx)
{
    (void)ctx;
    uidset s;
    uidset_init(&s);
    assert_true(uidset_parse(&s, "41,43:116,5,7:6"));
    assert_true(uidset_has(&s, 5));
    assert_true(uidset_has(&s, 6));
    assert_true(uidset_has(&s, 7));
    assert_false(uidset_has(&s, 8));
    assert_true(uidset_has(&s, 41));
    assert_false(uidset_has(&s, 42));
    assert_true(uidset_has(&s, 43));
    assert_true(uidset_has(&s, 116));
    assert_false(uidset_has(&s, 117));
    assert_false(uidset_has(&s, 1));
    assert_int_equal(uidset_count(&s), 3 + 1 + 74);
    uidset_free(&s);
}

static void test_merge_adjacent(void **ctx)
{
    (void)ctx;
    uidset s;
    uidset_init(&s);
    for (uint32_t u = 100; u > 0; u--)
        uidset_add(&s, u, u);
    assert_int_equal(uidset_count(&s), 100);
    assert_true(uidset_has(&s, 1) && uidset_has(&s, 100) && !uidset_has(&s, 101));
    assert_int_equal(s.n, 1);
    uidset_free(&s);
}

static void test_huge_range_not_expanded(void **ctx)
{
    (void)ctx;
    uidset s;
    uidset_init(&s);
    assert_true(uidset_parse(&s, "1:4294967295"));
    assert_true(uidset_has(&s, 4294967295u));
    assert_true(uidset_count(&s) == 4294967295ull);
    assert_int_equal(s.n, 1);
    uidset_free(&s);
}

static void test_bad_syntax(void **ctx)
{
    (void)ctx;
    static const char *const bad[] = {"",    "0",          "1:", ":3",  "1,,2",
                                      "1:*", "4294967296", "a",  "1 2", "1,"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uidset s;
        uidset_init(&s);
        assert_false(uidset_parse(&s, bad[i]));
        uidset_free(&s);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_and_has),
        cmocka_unit_test(test_merge_adjacent),
        cmocka_unit_test(test_huge_range_not_expanded),
        cmocka_unit_test(test_bad_syntax),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
