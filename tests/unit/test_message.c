/* test_message.c: Message-ID extraction, the key that re-pairs messages after an APPEND
 * without UIDPLUS and after a UIDVALIDITY change. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "sync/message.h"

static void expect_id(const char *text, const char *want)
{
    char *got = msg_parse_msgid(text, strlen(text));
    if (!want) {
        assert_null(got);
        return;
    }
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

static void test_simple(void **st)
{
    (void)st;
    expect_id("From: a@b\r\nMessage-ID: <1@x>\r\n\r\nbody", "<1@x>");
    expect_id("message-id:<2@x>\n\nbody", "<2@x>");
    expect_id("MESSAGE-ID:   <3@x>   \n", "<3@x>");
}

static void test_folded(void **st)
{
    (void)st;
    expect_id("Subject: s\r\nMessage-Id:\r\n <4@x>\r\n\r\n", "<4@x>");
    expect_id("Message-Id: <5@\n\tx>\nX: y\n\n", "<5@ x>");
}

static void test_absent_or_in_body(void **st)
{
    (void)st;
    expect_id("From: a\r\n\r\nMessage-ID: <body@x>\r\n", NULL);
    expect_id("", NULL);
    expect_id("Message-ID:\r\n\r\n", NULL);
    expect_id("X-Message-ID: <no@x>\r\n\r\n", NULL);
}

static void test_truncated_header(void **st)
{
    (void)st;
    expect_id("Message-ID: <6@x", "<6@x");
    expect_id("Message-ID:", NULL);
}

static void test_from_fd_restores_offset(void **st)
{
    (void)st;
    int fd = memfd_create("msg", 0);
    assert_true(fd >= 0);
    const char *text = "Message-ID: <7@x>\r\n\r\nhello";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    char *id = msg_read_msgid(fd);
    assert_string_equal(id, "<7@x>");
    assert_int_equal(lseek(fd, 0, SEEK_CUR), (off_t)strlen(text));
    free(id);
    close(fd);
}

/* The header is read in growing steps: a Message-ID far down a long header, or folded across a
 * step's edge, is still found; one past the 256 KiB bound is not looked for. */
static char *msgid_after_padding(size_t pad, const char *field)
{
    int fd = memfd_create("msg", 0);
    assert_true(fd >= 0);
    char line[80];
    memset(line, 'x', sizeof line);
    memcpy(line, "X-Pad: ", 7);
    line[sizeof line - 2] = '\r';
    line[sizeof line - 1] = '\n';
    for (size_t done = 0; done < pad; done += sizeof line)
        assert_int_equal(write(fd, line, sizeof line), (ssize_t)sizeof line);
    assert_int_equal(write(fd, field, strlen(field)), (ssize_t)strlen(field));
    char *id = msg_read_msgid(fd);
    close(fd);
    return id;
}

static void test_from_fd_long_header(void **st)
{
    (void)st;
    const char *field = "Message-ID:\r\n <8@x>\r\n\r\nbody\r\n";
    for (size_t pad = 16 * 1024 - 160; pad < 16 * 1024 + 160; pad += 40) {
        char *id = msgid_after_padding(pad, field); /* the folding falls on both sides of 16 KiB */
        assert_non_null(id);
        assert_string_equal(id, "<8@x>");
        free(id);
    }
    char *deep = msgid_after_padding(200 * 1024, field);
    assert_string_equal(deep, "<8@x>");
    free(deep);
    assert_null(msgid_after_padding(300 * 1024, field));
}

static void test_hash_fd(void **state)
{
    (void)state;
    FILE *f = tmpfile();
    int fd = fileno(f);
    char *empty = msg_hash_fd(fd);
    assert_string_equal(empty, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert_int_equal(write(fd, "abc", 3), 3);
    char *abc = msg_hash_fd(fd);
    assert_string_equal(abc, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_int_equal(lseek(fd, 0, SEEK_CUR), 3); /* offset kept */
    free(empty);
    free(abc);
    fclose(f);
    /* FIPS 180-2's million a's: many chunks, the last one partial. */
    f = tmpfile();
    fd = fileno(f);
    char *a = malloc(1000000);
    assert_non_null(a);
    memset(a, 'a', 1000000);
    assert_int_equal(write(fd, a, 1000000), 1000000);
    char *million = msg_hash_fd(fd);
    assert_string_equal(million,
                        "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    free(million);
    free(a);
    fclose(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple),
        cmocka_unit_test(test_folded),
        cmocka_unit_test(test_absent_or_in_body),
        cmocka_unit_test(test_truncated_header),
        cmocka_unit_test(test_from_fd_restores_offset),
        cmocka_unit_test(test_from_fd_long_header),
        cmocka_unit_test(test_hash_fd),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
