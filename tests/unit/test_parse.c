/* test_parse.c: the IMAP response parser: every response shape, literals, limits, errors.
 * Trees are compared through a canonical dump so chunked and whole feeds can be checked equal. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "imap/parse.h"
#include "util/mem.h"

/* ---- helpers ---- */

static void dump_value(buf *b, const imap_value *v)
{
    switch (v->type) {
    case IMAP_V_ATOM:
        buf_printf(b, "%s", v->str);
        break;
    case IMAP_V_STRING:
        buf_addc(b, '"');
        for (size_t i = 0; i < v->len; i++) {
            unsigned char c = (unsigned char)v->str[i];
            if (c < 0x20 || c == '"' || c == '\\' || c >= 0x7f)
                buf_printf(b, "\\x%02x", c);
            else
                buf_addc(b, (char)c);
        }
        buf_addc(b, '"');
        break;
    case IMAP_V_NIL:
        buf_adds(b, "<NIL>");
        break;
    case IMAP_V_STREAMED:
        buf_printf(b, "<streamed %llu>", (unsigned long long)v->size);
        break;
    case IMAP_V_LIST:
        buf_addc(b, '(');
        for (size_t i = 0; i < v->n; i++) {
            if (i)
                buf_addc(b, ' ');
            dump_value(b, &v->items[i]);
        }
        buf_addc(b, ')');
        break;
    }
}

/* One line per response: type tag status [number] name [code] {text} args. */
static void dump_resp(buf *b, const imap_response *r)
{
    static const char *types[] = {"U", "T", "C"};
    buf_printf(b, "%s %s st=%d ", types[r->type], r->tag, (int)r->status);
    if (r->has_number)
        buf_printf(b, "#%u ", r->number);
    buf_printf(b, "%s ", r->name);
    if (r->has_code) {
        buf_addc(b, '[');
        dump_value(b, &r->code);
        buf_adds(b, "] ");
    }
    buf_printf(b, "{%s} ", r->text);
    dump_value(b, &r->args);
}

/* Feeds `len` bytes in chunks of `chunk` (0: whole), dumping every response, one per line.
 * Returns 0 or the error code; *consumed says how far it got. */
static int run_stream(imap_parser *p, const char *data, size_t len, size_t chunk, buf *out,
                      ofs_error *err)
{
    size_t pos = 0;
    buf_reset(out);
    while (pos < len) {
        size_t n = chunk ? chunk : len;
        if (n > len - pos)
            n = len - pos;
        long r = imap_parser_feed(p, data + pos, n, err);
        if (r < 0)
            return err->code;
        assert_true(r > 0);
        assert_true((size_t)r <= n);
        pos += (size_t)r;
        const imap_response *resp = imap_parser_response(p);
        if (resp) {
            dump_resp(out, resp);
            buf_addc(out, '\n');
        } else {
            assert_int_equal((size_t)r, n); /* stops early only for a complete response */
        }
    }
    return 0;
}

/* Parses exactly one response from s (whole), asserting it consumed everything. */
static const imap_response *parse1(imap_parser *p, const char *s)
{
    ofs_error err = {0};
    long r = imap_parser_feed(p, s, strlen(s), &err);
    if (r < 0)
        fail_msg("unexpected error %d: %s", err.code, err.message);
    assert_int_equal(r, (long)strlen(s));
    const imap_response *resp = imap_parser_response(p);
    assert_non_null(resp);
    return resp;
}

static void check_dump(const char *input, const char *want)
{
    imap_parser *p = imap_parser_new(NULL);
    buf b;
    buf_init(&b);
    dump_resp(&b, parse1(p, input));
    assert_string_equal(b.data, want);
    buf_free(&b);
    imap_parser_free(p);
}

/* Expects the whole input to fail with `code`, whole and byte by byte, and stay failed. */
static void check_error_len(const char *input, size_t len, int code, const char *msg_part,
                            const imap_parse_limits *lim)
{
    for (int pass = 0; pass < 2; pass++) {
        imap_parser *p = imap_parser_new(lim);
        ofs_error err = {0};
        buf out;
        buf_init(&out);
        int rc = run_stream(p, input, len, pass ? 1 : 0, &out, &err);
        if (rc != code)
            fail_msg("input %.60s: got code %d (%s), want %d", input, rc, err.message, code);
        if (msg_part && !strstr(err.message, msg_part))
            fail_msg("message \"%s\" lacks \"%s\"", err.message, msg_part);
        assert_null(strchr(err.message, '\n'));
        ofs_error again = {0};
        assert_int_equal(imap_parser_feed(p, "* OK x\r\n", 8, &again), -1);
        assert_int_equal(again.code, code);
        assert_null(imap_parser_response(p));
        buf_free(&out);
        imap_parser_free(p);
    }
}

static void check_error(const char *input, int code, const char *msg_part)
{
    check_error_len(input, strlen(input), code, msg_part, NULL);
}

typedef struct lit_ctx {
    int fd; /* what the callback returns */
    int calls;
    char atom[128]; /* the last atom it saw */
    uint64_t size;
} lit_ctx;

static int lit_cb(void *ctx, const char *atom, uint64_t size, ofs_error *err)
{
    lit_ctx *c = ctx;
    c->calls++;
    snprintf(c->atom, sizeof c->atom, "%s", atom);
    c->size = size;
    if (c->fd == -2) {
        err->code = OFS_E_IO;
        snprintf(err->message, sizeof err->message, "callback says no");
    }
    return c->fd;
}

static char *read_fd(int fd, size_t *len)
{
    off_t end = lseek(fd, 0, SEEK_END);
    assert_true(end >= 0);
    char *s = xmalloc((size_t)end + 1);
    assert_int_equal(pread(fd, s, (size_t)end, 0), end);
    s[end] = '\0';
    *len = (size_t)end;
    return s;
}

/* ---- shapes ---- */

static void test_untagged_number(void **st)
{
    check_dump("* 23 EXISTS\r\n", "U * st=0 #23 EXISTS {} ()");
    check_dump("* 4 expunge\r\n", "U * st=0 #4 EXPUNGE {} ()");
    check_dump("* 0 RECENT\n", "U * st=0 #0 RECENT {} ()");
    check_dump("* 5 FETCH (UID 9 FLAGS (\\Seen))\r\n",
               "U * st=0 #5 FETCH {} ((UID 9 FLAGS (\\Seen)))");
    check_dump("* 4294967295 EXISTS\r\n", "U * st=0 #4294967295 EXISTS {} ()");
}

static void test_untagged_status(void **st)
{
    check_dump("* OK [UIDVALIDITY 3] ok\r\n", "U * st=1 OK [(UIDVALIDITY 3)] {ok} ()");
    check_dump("* NO disk full\r\n", "U * st=2 NO {disk full} ()");
    check_dump("* BAD [PARSE] what\r\n", "U * st=3 BAD [(PARSE)] {what} ()");
    check_dump("* PREAUTH IMAP4rev1 ready\r\n", "U * st=4 PREAUTH {IMAP4rev1 ready} ()");
    check_dump("* BYE Logging out\r\n", "U * st=5 BYE {Logging out} ()");
    check_dump("* ok\r\n", "U * st=1 OK {} ()");
    check_dump("* OK [ALERT]\r\n", "U * st=1 OK [(ALERT)] {} ()");
    /* Free text is not tokenized: unbalanced quotes, brackets and parens are fine. */
    check_dump("* OK \"half ) [quoted ( text\r\n", "U * st=1 OK {\"half ) [quoted ( text} ()");
}

static void test_tagged(void **st)
{
    check_dump("a1 OK [APPENDUID 38505 3955] APPEND completed\r\n",
               "T a1 st=1 OK [(APPENDUID 38505 3955)] {APPEND completed} ()");
    check_dump("A0002 NO [TRYCREATE] no such mailbox\r\n",
               "T A0002 st=2 NO [(TRYCREATE)] {no such mailbox} ()");
    check_dump("x.3 bad Command unknown\r\n", "T x.3 st=3 BAD {Command unknown} ()");
    check_dump("a9 OK\r\n", "T a9 st=1 OK {} ()");
    check_dump("a9 OK [READ-WRITE] SELECT completed (0.001 + 0.000 secs).\r\n",
               "T a9 st=1 OK [(READ-WRITE)] {SELECT completed (0.001 + 0.000 secs).} ()");
}

static void test_continuation(void **st)
{
    check_dump("+ go ahead\r\n", "C + st=0  {go ahead} ()");
    check_dump("+ \r\n", "C + st=0  {} ()");
    check_dump("+\r\n", "C + st=0  {} ()");
    check_dump("+ YGgGCSqGSIb3EgECAgIAb1kwV6ADAgEFoQMCAQ+iSzBJoAMC==\r\n",
               "C + st=0  {YGgGCSqGSIb3EgECAgIAb1kwV6ADAgEFoQMCAQ+iSzBJoAMC==} ()");
}

static void test_data_responses(void **st)
{
    check_dump("* CAPABILITY IMAP4rev1 LITERAL+ AUTH=PLAIN\r\n",
               "U * st=0 CAPABILITY {} (IMAP4rev1 LITERAL+ AUTH=PLAIN)");
    check_dump("* LIST (\\Noselect) \"/\" foo\r\n", "U * st=0 LIST {} ((\\Noselect) \"/\" foo)");
    check_dump("* LSUB () \".\" \"Sent Items\"\r\n", "U * st=0 LSUB {} (() \".\" \"Sent Items\")");
    check_dump("* LIST (\\HasNoChildren) NIL INBOX\r\n",
               "U * st=0 LIST {} ((\\HasNoChildren) <NIL> INBOX)");
    check_dump("* STATUS blurdybloop (MESSAGES 231 UIDNEXT 44292)\r\n",
               "U * st=0 STATUS {} (blurdybloop (MESSAGES 231 UIDNEXT 44292))");
    check_dump("* SEARCH 2 84 882\r\n", "U * st=0 SEARCH {} (2 84 882)");
    check_dump("* SEARCH\r\n", "U * st=0 SEARCH {} ()");
    check_dump("* SEARCH 1 2 \r\n", "U * st=0 SEARCH {} (1 2)");
    check_dump("* ESEARCH (TAG \"a1\") UID COUNT 5 ALL 4:8,10\r\n",
               "U * st=0 ESEARCH {} ((TAG \"a1\") UID COUNT 5 ALL 4:8,10)");
    check_dump("* FLAGS (\\Answered \\Flagged $Forwarded)\r\n",
               "U * st=0 FLAGS {} ((\\Answered \\Flagged $Forwarded))");
    check_dump("* ENABLED CONDSTORE QRESYNC\r\n", "U * st=0 ENABLED {} (CONDSTORE QRESYNC)");
    check_dump("* VANISHED (EARLIER) 41,43:116\r\n", "U * st=0 VANISHED {} ((EARLIER) 41,43:116)");
    check_dump("* ID (\"name\" \"Dovecot\")\r\n", "U * st=0 ID {} ((\"name\" \"Dovecot\"))");
    check_dump("* ID NIL\r\n", "U * st=0 ID {} (<NIL>)");
    check_dump("* NAMESPACE ((\"\" \"/\")) NIL ((\"#shared/\" \"/\"))\r\n",
               "U * st=0 NAMESPACE {} (((\"\" \"/\")) <NIL> ((\"#shared/\" \"/\")))");
    check_dump("* 12 FETCH (UID 99 MODSEQ (624140003))\r\n",
               "U * st=0 #12 FETCH {} ((UID 99 MODSEQ (624140003)))");
}

static void test_response_codes(void **st)
{
    imap_parser *p = imap_parser_new(NULL);
    const imap_response *r = parse1(p, "* OK [PERMANENTFLAGS (\\Seen \\*)] Limited\r\n");
    assert_true(r->has_code);
    assert_int_equal(r->code.n, 2);
    assert_true(imap_value_is(&r->code.items[0], "permanentflags"));
    assert_int_equal(r->code.items[1].type, IMAP_V_LIST);
    assert_int_equal(r->code.items[1].n, 2);
    assert_string_equal(r->code.items[1].items[0].str, "\\Seen");
    assert_string_equal(r->code.items[1].items[1].str, "\\*");
    assert_string_equal(r->text, "Limited");

    r = parse1(p, "a5 OK [APPENDUID 38505 3955] done\r\n");
    uint32_t u;
    assert_true(imap_value_u32(&r->code.items[1], &u));
    assert_int_equal(u, 38505);
    assert_true(imap_value_u32(&r->code.items[2], &u));
    assert_int_equal(u, 3955);

    r = parse1(p, "* OK [UIDVALIDITY 3857529045] UIDs valid\r\n");
    assert_true(imap_value_is(&r->code.items[0], "UIDVALIDITY"));
    assert_true(imap_value_u32(&r->code.items[1], &u));
    assert_int_equal(u, 3857529045u);
    assert_false(r->has_number);
    imap_parser_free(p);

    check_dump("* OK [HIGHESTMODSEQ 715194045007] Highest\r\n",
               "U * st=1 OK [(HIGHESTMODSEQ 715194045007)] {Highest} ()");
    check_dump("a1 OK [COPYUID 38505 304,319:320 3956:3958] Done\r\n",
               "T a1 st=1 OK [(COPYUID 38505 304,319:320 3956:3958)] {Done} ()");
    check_dump("* NO [BADCHARSET (\"UTF-8\" US-ASCII)] x\r\n",
               "U * st=2 NO [(BADCHARSET (\"UTF-8\" US-ASCII))] {x} ()");
    check_dump("* OK [CAPABILITY IMAP4rev1 SASL-IR] Dovecot ready.\r\n",
               "U * st=1 OK [(CAPABILITY IMAP4rev1 SASL-IR)] {Dovecot ready.} ()");
    /* A code that does not tokenize is kept whole as one atom. */
    check_dump("* NO [BADCHARSET (UTF-8] nope\r\n", "U * st=2 NO [(BADCHARSET (UTF-8)] {nope} ()");
    check_dump("* NO [FOO \"x] y\r\n", "U * st=2 NO [(FOO \"x)] {y} ()");
    check_dump("* NO [] empty\r\n", "U * st=2 NO [()] {empty} ()");
    /* No closing bracket at all: no code, just text. */
    check_dump("* NO [unclosed text\r\n", "U * st=2 NO {[unclosed text} ()");
}

/* ---- tokens ---- */

static void test_quoted_and_nil(void **st)
{
    check_dump("* LIST () \"\\\\\" \"a \\\"b\\\" c\"\r\n",
               "U * st=0 LIST {} (() \"\\x5c\" \"a \\x22b\\x22 c\")");
    /* Other escapes are kept leniently: the char after the backslash. */
    check_dump("* X \"a\\qb\"\r\n", "U * st=0 X {} (\"aqb\")");
    check_dump("* X nil Nil NIL \"NIL\" NILS\r\n",
               "U * st=0 X {} (<NIL> <NIL> <NIL> \"NIL\" NILS)");
    check_dump("* X \"\" ()\r\n", "U * st=0 X {} (\"\" ())");
    check_dump("* X \"(unbalanced [ inside\"\r\n", "U * st=0 X {} (\"(unbalanced [ inside\")");
}

static void test_nested_lists(void **st)
{
    check_dump("* X (a (b (c (d))) ((e)) ())\r\n", "U * st=0 X {} ((a (b (c (d))) ((e)) ()))");
    check_dump("* 1 FETCH (BODYSTRUCTURE ((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL "
               "\"7bit\" 3 1) \"mixed\"))\r\n",
               "U * st=0 #1 FETCH {} ((BODYSTRUCTURE ((\"text\" \"plain\" (\"charset\" "
               "\"us-ascii\") <NIL> <NIL> \"7bit\" 3 1) \"mixed\")))");
}

static void test_section_atoms(void **st)
{
    check_dump("* 1 FETCH (BODY[HEADER.FIELDS (MESSAGE-ID)] \"x\" BODY[]<0> NIL)\r\n",
               "U * st=0 #1 FETCH {} ((BODY[HEADER.FIELDS (MESSAGE-ID)] \"x\" BODY[]<0> <NIL>))");
    check_dump("* 1 FETCH (BODY[1.2.MIME] \"\")\r\n",
               "U * st=0 #1 FETCH {} ((BODY[1.2.MIME] \"\"))");
}

static void test_fetch_literal_memory(void **st)
{
    imap_parser *p = imap_parser_new(NULL);
    const char *in = "* 3 FETCH (UID 17 FLAGS (\\Seen $Junk) RFC822.SIZE 14 BODY[] {14}\r\n"
                     "Subject: x\r\n\r\n)\r\n";
    const imap_response *r = parse1(p, in);
    assert_string_equal(r->name, "FETCH");
    assert_int_equal(r->number, 3);
    const imap_value *l = &r->args.items[0];
    assert_int_equal(l->n, 8);
    assert_true(imap_value_is(&l->items[0], "UID"));
    uint32_t u;
    assert_true(imap_value_u32(&l->items[1], &u));
    assert_int_equal(u, 17);
    assert_int_equal(l->items[3].n, 2);
    assert_true(imap_value_is(&l->items[6], "BODY[]"));
    assert_int_equal(l->items[7].type, IMAP_V_STRING);
    assert_int_equal(l->items[7].len, 14);
    assert_memory_equal(l->items[7].str, "Subject: x\r\n\r\n", 15);
    imap_parser_free(p);
}

static void test_fetch_literal_streamed(void **st)
{
    int fd = memfd_create("body", 0);
    assert_true(fd >= 0);
    lit_ctx c = {.fd = fd};
    imap_parser *p = imap_parser_new(NULL);
    imap_parser_set_literal_fn(p, lit_cb, &c);
    const char *in =
        "* 3 FETCH (UID 17 BODY[]<0> {20}\r\nFrom: a\r\n\r\nbody\r\n(\r\n FLAGS ())\r\n";
    buf out;
    buf_init(&out);
    ofs_error err = {0};
    assert_int_equal(run_stream(p, in, strlen(in), 3, &out, &err), 0);
    assert_string_equal(out.data,
                        "U * st=0 #3 FETCH {} ((UID 17 BODY[]<0> <streamed 20> FLAGS ()))\n");
    const imap_response *r = imap_parser_response(p);
    assert_non_null(r);
    const imap_value *v = &r->args.items[0].items[3];
    assert_int_equal(v->type, IMAP_V_STREAMED);
    assert_int_equal(v->fd, fd);
    assert_int_equal(v->size, 20);
    assert_null(imap_value_str(v));
    assert_int_equal(c.calls, 1);
    assert_string_equal(c.atom, "BODY[]<0>");
    assert_int_equal(c.size, 20);
    size_t len;
    char *body = read_fd(fd, &len);
    assert_int_equal(len, 20);
    assert_memory_equal(body, "From: a\r\n\r\nbody\r\n(\r\n", 20);
    free(body);
    buf_free(&out);
    imap_parser_free(p);
    close(fd);
}

static void test_callback_atoms(void **st)
{
    lit_ctx c = {.fd = -1};
    imap_parser *p = imap_parser_new(NULL);
    imap_parser_set_literal_fn(p, lit_cb, &c);
    const char *hdr = "Message-ID: <1234567890@example.org>\r\n\r\n\r\n";
    char *in =
        xasprintf("* 7 FETCH (BODY[HEADER.FIELDS (MESSAGE-ID)] {%zu}\r\n%s)\r\n", strlen(hdr), hdr);
    const imap_response *r = parse1(p, in);
    assert_string_equal(c.atom, "BODY[HEADER.FIELDS (MESSAGE-ID)]");
    const imap_value *l = &r->args.items[0];
    assert_int_equal(l->n, 2);
    assert_string_equal(l->items[0].str, "BODY[HEADER.FIELDS (MESSAGE-ID)]");
    assert_string_equal(l->items[1].str, hdr);
    free(in);

    r = parse1(p, "* 7 FETCH (BODY[HEADER.FIELDS (MESSAGE-ID)] {45}\r\n"
                  "Message-ID: <abcdefghijklmnopqrstu@x.org>\r\n\r\n)\r\n");
    assert_int_equal(r->args.items[0].items[1].len, 45);
    assert_string_equal(c.atom, "BODY[HEADER.FIELDS (MESSAGE-ID)]");

    /* A literal after a quoted string or first in a list has no atom before it. */
    r = parse1(p, "* LIST () \"/\" {3}\r\na b\r\n");
    assert_string_equal(c.atom, "");
    assert_string_equal(r->args.items[2].str, "a b");
    parse1(p, "* X ({2}\r\nab)\r\n");
    assert_string_equal(c.atom, "");
    assert_int_equal(c.calls, 4);
    imap_parser_free(p);
}

static void test_literal_variants(void **st)
{
    imap_parser *p = imap_parser_new(NULL);
    static const char bin[] = "* 1 FETCH (BINARY[] ~{5}\r\na\0b\0c UID 4)\r\n";
    ofs_error err = {0};
    assert_int_equal(imap_parser_feed(p, bin, sizeof bin - 1, &err), (long)sizeof bin - 1);
    const imap_response *r = imap_parser_response(p);
    const imap_value *v = &r->args.items[0].items[1];
    assert_int_equal(v->type, IMAP_V_STRING);
    assert_int_equal(v->len, 5);
    assert_memory_equal(v->str, "a\0b\0c", 6);
    assert_true(imap_value_is(&r->args.items[0].items[3], "4"));

    static const char plus[] = "* X {3+}\r\n\0\0\0 {0}\r\n {0+}\r\n\r\n";
    assert_int_equal(imap_parser_feed(p, plus, sizeof plus - 1, &err), (long)sizeof plus - 1);
    r = imap_parser_response(p);
    assert_int_equal(r->args.n, 3);
    assert_int_equal(r->args.items[0].len, 3);
    assert_memory_equal(r->args.items[0].str, "\0\0\0", 4);
    assert_int_equal(r->args.items[1].len, 0);
    assert_string_equal(r->args.items[2].str, "");
    imap_parser_free(p);

    /* A streamed empty literal: the callback is still asked, nothing is written. */
    int fd = memfd_create("empty", 0);
    lit_ctx c = {.fd = fd};
    p = imap_parser_new(NULL);
    imap_parser_set_literal_fn(p, lit_cb, &c);
    r = parse1(p, "* 1 FETCH (BODY[] {0}\r\n)\r\n");
    assert_int_equal(r->args.items[0].items[1].type, IMAP_V_STREAMED);
    assert_int_equal(r->args.items[0].items[1].size, 0);
    assert_int_equal(lseek(fd, 0, SEEK_END), 0);
    imap_parser_free(p);
    close(fd);
}

/* ---- streams ---- */

static const char stream[] =
    "* OK [CAPABILITY IMAP4rev1 LITERAL+] Dovecot ready.\r\n"
    "* 1 FETCH (UID 5 FLAGS (\\Seen) BODY[] {12}\r\nline1\r\nline2 BODY[HEADER] {0}\r\n)\r\n"
    "* LIST (\\HasNoChildren) \".\" {10}\r\nSent\r\nMail\r\n"
    "+ go\r\n"
    "* 2 FETCH (BINARY[] ~{4}\r\n\0\r\n\0)\n"
    "* NAMESPACE ((\"\" \".\")) NIL NIL\r\n"
    "* SEARCH\r\n"
    "a1 OK [APPENDUID 1 2] done\r\n";

static void test_chunking_identical(void **st)
{
    buf whole, part;
    buf_init(&whole);
    buf_init(&part);
    ofs_error err = {0};
    imap_parser *p = imap_parser_new(NULL);
    assert_int_equal(run_stream(p, stream, sizeof stream - 1, 0, &whole, &err), 0);
    imap_parser_free(p);
    assert_non_null(strstr(whole.data, "\"line1\\x0d\\x0aline2\""));
    assert_non_null(strstr(whole.data, "\"\\x00\\x0d\\x0a\\x00\""));
    int lines = 0;
    for (const char *s = whole.data; (s = strchr(s, '\n')); s++)
        lines++;
    assert_int_equal(lines, 8);
    for (size_t chunk = 1; chunk <= 70; chunk++) {
        p = imap_parser_new(NULL);
        assert_int_equal(run_stream(p, stream, sizeof stream - 1, chunk, &part, &err), 0);
        assert_string_equal(part.data, whole.data);
        imap_parser_free(p);
    }
    buf_free(&whole);
    buf_free(&part);
}

static void test_several_in_one_buffer(void **st)
{
    const char *in = "* 1 EXISTS\r\n* 0 RECENT\r\na1 OK done\r\n";
    imap_parser *p = imap_parser_new(NULL);
    ofs_error err = {0};
    long r = imap_parser_feed(p, in, strlen(in), &err);
    assert_int_equal(r, 12);
    assert_string_equal(imap_parser_response(p)->name, "EXISTS");
    /* The response stays until the next feed. */
    assert_non_null(imap_parser_response(p));
    assert_string_equal(imap_parser_response(p)->name, "EXISTS");
    long r2 = imap_parser_feed(p, in + r, strlen(in) - (size_t)r, &err);
    assert_int_equal(r2, 12);
    assert_string_equal(imap_parser_response(p)->name, "RECENT");
    long r3 = imap_parser_feed(p, in + r + r2, strlen(in) - (size_t)(r + r2), &err);
    assert_int_equal(r3, 12);
    assert_string_equal(imap_parser_response(p)->tag, "a1");
    /* An empty feed releases the response and waits for more. */
    assert_int_equal(imap_parser_feed(p, "", 0, &err), 0);
    assert_null(imap_parser_response(p));
    imap_parser_free(p);
}

static void test_truncated(void **st)
{
    /* Every prefix of the stream: no crash, no leak, responses only for complete ones. */
    for (size_t cut = 0; cut < sizeof stream - 1; cut++) {
        imap_parser *p = imap_parser_new(NULL);
        buf out;
        buf_init(&out);
        ofs_error err = {0};
        assert_int_equal(run_stream(p, stream, cut, 0, &out, &err), 0);
        buf_free(&out);
        imap_parser_free(p);
    }
    imap_parser *p = imap_parser_new(NULL);
    ofs_error err = {0};
    assert_int_equal(imap_parser_feed(p, "* 1 FETCH (BODY[] {100}\r\nabc", 28, &err), 28);
    assert_null(imap_parser_response(p));
    assert_int_equal(imap_parser_feed(p, "* 1 EXISTS", 10, &err), 10);
    assert_null(imap_parser_response(p));
    imap_parser_free(p);
}

/* ---- limits ---- */

static void test_limit_line(void **st)
{
    imap_parse_limits lim = {.max_line = 20};
    /* "* SEARCH 1 2 3 4 5 6" is exactly 20 bytes. */
    imap_parser *p = imap_parser_new(&lim);
    ofs_error err = {0};
    assert_int_equal(imap_parser_feed(p, "* SEARCH 1 2 3 4 5 6\r\n", 22, &err), 22);
    assert_non_null(imap_parser_response(p));
    imap_parser_free(p);
    check_error_len("* SEARCH 1 2 3 4 5 67\r\n", 23, OFS_E_LIMIT,
                    "server response line longer than 20 bytes", &lim);
    /* Without a line end, memory is bounded too. */
    check_error_len("* SEARCH 1 2 3 4 5 6789", 23, OFS_E_LIMIT, "longer than", &lim);
    /* Text across literals adds up; literal bytes do not count. */
    const char *lits = "* X {2}\r\nab {2}\r\ncd {2}\r\nef {2}\r\ngh {2}\r\nij\r\n";
    check_error_len(lits, strlen(lits), OFS_E_LIMIT, "longer", &lim);
    p = imap_parser_new(&lim);
    assert_int_equal(
        imap_parser_feed(p, "* X {30}\r\n012345678901234567890123456789 Y\r\n", 44, &err), 44);
    assert_non_null(imap_parser_response(p));
    imap_parser_free(p);

    /* The default is 4 MiB. */
    size_t big = ((size_t)4 << 20) + 10;
    char *s = xmalloc(big);
    memset(s, 'a', big);
    memcpy(s, "* X ", 4);
    check_error_len(s, big, OFS_E_LIMIT, "server response line longer than 4194304 bytes", NULL);
    free(s);
}

static void test_limit_literals(void **st)
{
    imap_parse_limits lim = {.max_literal_mem = 10, .max_literal_stream = 20};
    imap_parser *p = imap_parser_new(&lim);
    ofs_error err = {0};
    assert_int_equal(imap_parser_feed(p, "* X {10}\r\n0123456789\r\n", 22, &err), 22);
    imap_parser_free(p);
    check_error_len("* X {11}\r\n01234567890\r\n", 23, OFS_E_LIMIT, "11", &lim);
    check_error_len("* X {21}\r\n", 10, OFS_E_LIMIT, "21", &lim);

    int fd = memfd_create("lim", 0);
    lit_ctx c = {.fd = fd};
    p = imap_parser_new(&lim);
    imap_parser_set_literal_fn(p, lit_cb, &c);
    const char *in = "* X {20}\r\n01234567890123456789\r\n";
    assert_int_equal(imap_parser_feed(p, in, strlen(in), &err), (long)strlen(in));
    imap_parser_free(p);
    /* Streamed, but the stream limit is below the memory one. */
    imap_parse_limits lim2 = {.max_literal_mem = 30, .max_literal_stream = 5};
    p = imap_parser_new(&lim2);
    imap_parser_set_literal_fn(p, lit_cb, &c);
    assert_int_equal(imap_parser_feed(p, "* X {6}\r\n", 9, &err), -1);
    assert_int_equal(err.code, OFS_E_LIMIT);
    imap_parser_free(p);
    /* Kept in memory by the callback's choice: the memory limit applies. */
    c.fd = -1;
    p = imap_parser_new(&lim);
    imap_parser_set_literal_fn(p, lit_cb, &c);
    assert_int_equal(imap_parser_feed(p, "* X {15}\r\n", 10, &err), -1);
    assert_int_equal(err.code, OFS_E_LIMIT);
    imap_parser_free(p);
    close(fd);
}

static void test_huge_literal_numbers(void **st)
{
    check_error("* 1 FETCH (BODY[] {18446744073709551615}\r\n", OFS_E_LIMIT,
                "18446744073709551615");
    check_error("* 1 FETCH (BODY[] {18446744073709551616}\r\n", OFS_E_LIMIT, "too large");
    check_error("* 1 FETCH (BODY[] {99999999999999999999999}\r\n", OFS_E_LIMIT, "too large");
    check_error("* 1 FETCH (BODY[] ~{999999999999999999999999999999999999999}\r\n", OFS_E_LIMIT,
                "...");
    check_error("* X {2147483649}\r\n", OFS_E_LIMIT, "2147483649");
    /* The callback is not even asked about a literal no limit allows. */
    lit_ctx c = {.fd = -1};
    imap_parser *p = imap_parser_new(NULL);
    imap_parser_set_literal_fn(p, lit_cb, &c);
    ofs_error err = {0};
    assert_int_equal(imap_parser_feed(p, "* X {4294967296}\r\n", 18, &err), -1);
    assert_int_equal(c.calls, 0);
    imap_parser_free(p);
}

static void test_limit_depth(void **st)
{
    imap_parse_limits lim = {.max_depth = 3};
    imap_parser *p = imap_parser_new(&lim);
    ofs_error err = {0};
    assert_int_equal(imap_parser_feed(p, "* X (((a)))\r\n", 13, &err), 13);
    imap_parser_free(p);
    check_error_len("* X ((((a))))\r\n", 15, OFS_E_PROTO, "nested", &lim);
    /* The default is 64. */
    buf b;
    buf_init(&b);
    buf_adds(&b, "* X ");
    for (int i = 0; i < 65; i++)
        buf_addc(&b, '(');
    for (int i = 0; i < 65; i++)
        buf_addc(&b, ')');
    buf_adds(&b, "\r\n");
    check_error(b.data, OFS_E_PROTO, "nested");
    buf_reset(&b);
    buf_adds(&b, "* X ");
    for (int i = 0; i < 64; i++)
        buf_addc(&b, '(');
    for (int i = 0; i < 64; i++)
        buf_addc(&b, ')');
    buf_adds(&b, "\r\n");
    p = imap_parser_new(NULL);
    parse1(p, b.data);
    imap_parser_free(p);
    buf_free(&b);
}

/* ---- errors ---- */

static void test_malformed(void **st)
{
    check_error("* 1 FETCH (UID 1))\r\n", OFS_E_PROTO, "unbalanced ')'");
    check_error("* 1 FETCH (UID 1\r\n", OFS_E_PROTO, "missing ')'");
    check_error("* X \"abc\"def\r\n", OFS_E_PROTO, "garbage after a value");
    check_error("* X (a)b\r\n", OFS_E_PROTO, "garbage");
    check_error(" OK done\r\n", OFS_E_PROTO, "missing tag");
    check_error("\r\n", OFS_E_PROTO, "empty line");
    check_error("*\r\n", OFS_E_PROTO, "missing response name");
    check_error("* \r\n", OFS_E_PROTO, "missing response name");
    check_error("*X\r\n", OFS_E_PROTO, NULL);
    check_error("* 5\r\n", OFS_E_PROTO, "missing response name");
    check_error("* 4294967296 EXISTS\r\n", OFS_E_PROTO, "bad message number");
    check_error("a1 MAYBE fine\r\n", OFS_E_PROTO, "tagged response");
    check_error("a1\r\n", OFS_E_PROTO, "tagged response");
    check_error("a1 PREAUTH x\r\n", OFS_E_PROTO, "tagged response");
    check_error("* X \"abc\r\n", OFS_E_PROTO, "unterminated quoted string");
    check_error("* X \"abc\\\r\n", OFS_E_PROTO, "unterminated quoted string");
    check_error("* X \"abc {3}\r\nabc\"\r\n", OFS_E_PROTO, "unterminated quoted string");
    check_error("* X {3} a\r\n", OFS_E_PROTO, "literal header not at end of line");
    check_error("* X ~{3} a\r\n", OFS_E_PROTO, "literal header not at end of line");
    check_error("* X BODY[HEADER\r\n", OFS_E_PROTO, "unterminated '['");
    check_error("* X a\rb\r\n", OFS_E_PROTO, NULL);
    check_error("* OK text {3}\r\nabc\r\n", OFS_E_PROTO, "literal in status text");
    check_error("* X abc{3}\r\nabc\r\n", OFS_E_PROTO, "garbage");
    check_error("* NO [X ({3}\r\nabc] t\r\n", OFS_E_PROTO, "literal in a response code");
    check_error_len("* X a\0b\r\n", 9, OFS_E_PROTO,
                    "NUL byte in a server response line after \"* X a\"", NULL);
    check_error_len("* X {1}\r\n\0 a\0b\r\n", 15, OFS_E_PROTO, "after \" a\"", NULL);
    /* The excerpt is printable and quotes the bad spot. */
    imap_parser *p = imap_parser_new(NULL);
    ofs_error err = {0};
    const char *in = "* 1 FETCH (UID 1 FLAGS (\\Seen)) trailing)\r\n";
    assert_int_equal(imap_parser_feed(p, in, strlen(in), &err), -1);
    assert_non_null(strstr(err.message, "(UID 1 FLAGS (\\Seen)) trailing)\""));
    imap_parser_free(p);
}

static int fd_cb_fail(void *ctx, const char *atom, uint64_t size, ofs_error *err)
{
    return -2; /* without setting err: the parser must still say something */
}

static void test_callback_failures(void **st)
{
    lit_ctx c = {.fd = -2};
    imap_parser *p = imap_parser_new(NULL);
    imap_parser_set_literal_fn(p, lit_cb, &c);
    ofs_error err = {0};
    assert_int_equal(imap_parser_feed(p, "* 1 FETCH (BODY[] {3}\r\nabc)\r\n", 29, &err), -1);
    assert_int_equal(err.code, OFS_E_IO);
    assert_string_equal(err.message, "callback says no");
    imap_parser_free(p);

    p = imap_parser_new(NULL);
    imap_parser_set_literal_fn(p, fd_cb_fail, NULL);
    assert_int_equal(imap_parser_feed(p, "* 1 FETCH (BODY[] {3}\r\nabc)\r\n", 29, &err), -1);
    assert_int_not_equal(err.code, OFS_OK);
    assert_true(err.message[0] != '\0');
    imap_parser_free(p);

    /* A write failure on the chosen fd is an I/O error. */
    int ro = open("/dev/null", O_RDONLY);
    c.fd = ro;
    p = imap_parser_new(NULL);
    imap_parser_set_literal_fn(p, lit_cb, &c);
    assert_int_equal(imap_parser_feed(p, "* 1 FETCH (BODY[] {3}\r\nabc)\r\n", 29, &err), -1);
    assert_int_equal(err.code, OFS_E_IO);
    assert_int_equal(imap_parser_feed(p, "x", 1, &err), -1);
    imap_parser_free(p);
    close(ro);
}

/* ---- value helpers ---- */

static void test_value_helpers(void **st)
{
    imap_value v = {.type = IMAP_V_ATOM, .fd = -1};
    uint32_t u;
    uint64_t q;
    struct {
        const char *s;
        bool ok32, ok64;
    } cases[] = {
        {"0", true, true},
        {"4294967295", true, true},
        {"4294967296", false, true},
        {"18446744073709551615", false, true},
        {"18446744073709551616", false, false},
        {"000000000000000000001", false, false},
        {"", false, false},
        {"-1", false, false},
        {"+1", false, false},
        {"12a", false, false},
        {" 1", false, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        v.str = (char *)cases[i].s;
        v.len = strlen(cases[i].s);
        assert_int_equal(imap_value_u32(&v, &u), cases[i].ok32);
        assert_int_equal(imap_value_u64(&v, &q), cases[i].ok64);
    }
    v.str = "4294967295";
    v.len = 10;
    assert_true(imap_value_u32(&v, &u));
    assert_int_equal(u, 4294967295u);
    v.type = IMAP_V_STRING;
    assert_false(imap_value_u32(&v, &u));
    assert_false(imap_value_is(&v, "4294967295"));
    assert_string_equal(imap_value_str(&v), "4294967295");
    v.type = IMAP_V_ATOM;
    v.str = "Fetch";
    v.len = 5;
    assert_true(imap_value_is(&v, "FETCH"));
    assert_false(imap_value_is(&v, "FETC"));
    assert_string_equal(imap_value_str(&v), "Fetch");
    v.type = IMAP_V_NIL;
    assert_null(imap_value_str(&v));
    assert_false(imap_value_is(&v, "NIL"));
    assert_false(imap_value_u32(NULL, &u));
}

/* ---- robustness ---- */

static uint32_t rng_state = 12345;
static uint32_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

static void test_random_garbage(void **st)
{
    static const char *pieces[] = {
        "* ",          "a1 ",     "+ ",      "OK ",      "FETCH ",
        "(",           ")",       "\"",      "\\",       "[",
        "]",           "{3}\r\n", "{0}\r\n", "~{2}\r\n", "{99999999999999999999}\r\n",
        "{5+}\r\n",    "NIL",     " ",       "\r\n",     "\n",
        "BODY[]",      "<0>",     "12",      "\0",       "\r",
        "abc",         "{",       "}",       "~",        "\\Seen",
        "* 1 FETCH (", "[ALERT ",
    };
    imap_parse_limits lim = {.max_line = 512, .max_literal_mem = 64, .max_depth = 8};
    int devnull = open("/dev/null", O_WRONLY);
    lit_ctx c = {0};
    char data[600];
    long responses = 0;
    for (int iter = 0; iter < 20000; iter++) {
        size_t len = 0, want = rng() % sizeof data;
        while (len < want) {
            if (rng() % 3 == 0) {
                data[len++] = (char)rng();
                continue;
            }
            const char *pc = pieces[rng() % (sizeof pieces / sizeof pieces[0])];
            size_t n = pc[0] ? strlen(pc) : 1;
            if (n > want - len)
                break;
            memcpy(data + len, pc, n);
            len += n;
        }
        c.fd = rng() % 2 ? devnull : -1;
        imap_parser *p = imap_parser_new(iter % 2 ? &lim : NULL);
        imap_parser_set_literal_fn(p, lit_cb, &c);
        size_t pos = 0, chunk = 1 + rng() % 40;
        buf out;
        buf_init(&out);
        while (pos < len) {
            ofs_error err = {0};
            size_t n = chunk < len - pos ? chunk : len - pos;
            long r = imap_parser_feed(p, data + pos, n, &err);
            if (r < 0) {
                assert_true(err.code == OFS_E_PROTO || err.code == OFS_E_LIMIT);
                assert_true(err.message[0] != '\0');
                break;
            }
            assert_true(r > 0);
            pos += (size_t)r;
            const imap_response *resp = imap_parser_response(p);
            if (resp) {
                responses++;
                buf_reset(&out);
                dump_resp(&out, resp);
            }
        }
        buf_free(&out);
        imap_parser_free(p);
    }
    close(devnull);
    assert_true(responses > 100); /* the generator does reach complete responses */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_untagged_number),
        cmocka_unit_test(test_untagged_status),
        cmocka_unit_test(test_tagged),
        cmocka_unit_test(test_continuation),
        cmocka_unit_test(test_data_responses),
        cmocka_unit_test(test_response_codes),
        cmocka_unit_test(test_quoted_and_nil),
        cmocka_unit_test(test_nested_lists),
        cmocka_unit_test(test_section_atoms),
        cmocka_unit_test(test_fetch_literal_memory),
        cmocka_unit_test(test_fetch_literal_streamed),
        cmocka_unit_test(test_callback_atoms),
        cmocka_unit_test(test_literal_variants),
        cmocka_unit_test(test_chunking_identical),
        cmocka_unit_test(test_several_in_one_buffer),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_limit_line),
        cmocka_unit_test(test_limit_literals),
        cmocka_unit_test(test_huge_literal_numbers),
        cmocka_unit_test(test_limit_depth),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_callback_failures),
        cmocka_unit_test(test_value_helpers),
        cmocka_unit_test(test_random_garbage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
