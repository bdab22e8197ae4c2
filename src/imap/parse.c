/* parse.c: the incremental IMAP response parser declared in parse.h.
 * Bytes are framed into line segments and literals first, then the whole response is tokenized. */
#include "imap/parse.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "util/err.h"
#include "util/mem.h"

#define DEF_MAX_LINE ((size_t)4 << 20)
#define DEF_MAX_LITERAL_MEM ((size_t)1 << 20)
#define DEF_MAX_LITERAL_STREAM ((uint64_t)2 << 30)
#define DEF_MAX_DEPTH 64
/* A huge response buffer is dropped after use so one big reply does not pin memory forever. */
#define KEEP_TEXT_CAP ((size_t)64 << 10)

enum parse_state { PS_LINE, PS_LITERAL, PS_READY, PS_FAILED };

struct imap_parser {
    imap_parse_limits lim;
    imap_literal_fn lit_fn;
    void *lit_ctx;
    enum parse_state state;
    /* Response text outside literals; each literal is replaced by one NUL byte, which cannot
     * come from the server because a NUL in a line is rejected. */
    buf text;
    size_t seg_start; /* start of the current line segment in text */
    size_t raw;       /* server bytes outside literals in finished segments, for max_line */
    imap_value *lits; /* the literals of this response, in order */
    size_t nlits, cap_lits, lit_next;
    uint64_t lit_left; /* bytes of the current literal still to come */
    buf lit_mem;       /* the current literal when kept in memory */
    imap_response resp;
    ofs_error fail; /* why the parser stopped, repeated to every later caller */
};

typedef struct lexer {
    imap_parser *p;
    const char *start, *pos, *end;
    bool code; /* inside a response code, where ']' ends an atom and the code */
    ofs_error *err;
} lexer;

/* ---- values ---- */

static void value_free(imap_value *v)
{
    if (v->type == IMAP_V_LIST) {
        for (size_t i = 0; i < v->n; i++)
            value_free(&v->items[i]);
        free(v->items);
    }
    free(v->str);
    memset(v, 0, sizeof *v);
    v->fd = -1;
}

static void value_empty_list(imap_value *v)
{
    memset(v, 0, sizeof *v);
    v->type = IMAP_V_LIST;
    v->fd = -1;
}

/* Appends a zeroed slot, so a half-built child is always reachable for freeing. */
static imap_value *list_push(imap_value *list, size_t *cap)
{
    if (list->n == *cap) {
        *cap = *cap ? *cap * 2 : 4;
        list->items = xrealloc(list->items, *cap * sizeof *list->items);
    }
    imap_value *v = &list->items[list->n++];
    memset(v, 0, sizeof *v);
    v->fd = -1;
    return v;
}

static bool parse_digits(const char *s, size_t n, uint64_t *out)
{
    if (n == 0 || n > 20)
        return false;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        unsigned d = (unsigned)(s[i] - '0');
        if (x > (UINT64_MAX - d) / 10)
            return false;
        x = x * 10 + d;
    }
    *out = x;
    return true;
}

bool imap_value_u64(const imap_value *v, uint64_t *out)
{
    if (!v || v->type != IMAP_V_ATOM || !v->str)
        return false;
    return parse_digits(v->str, v->len, out);
}

bool imap_value_u32(const imap_value *v, uint32_t *out)
{
    uint64_t x;
    if (!imap_value_u64(v, &x) || x > UINT32_MAX)
        return false;
    *out = (uint32_t)x;
    return true;
}

bool imap_value_is(const imap_value *v, const char *s)
{
    return v && v->type == IMAP_V_ATOM && v->str && strcasecmp(v->str, s) == 0;
}

const char *imap_value_str(const imap_value *v)
{
    if (!v || (v->type != IMAP_V_ATOM && v->type != IMAP_V_STRING))
        return NULL;
    return v->str;
}

/* ---- error excerpts ---- */

/* A short printable piece of server data around `at`, for an error message. */
static void excerpt(const char *s, size_t len, size_t at, char out[96])
{
    size_t from = at > 32 ? at - 32 : 0;
    size_t n = len - from < 64 ? len - from : 64;
    size_t o = 0;
    if (from > 0) {
        memcpy(out, "...", 3);
        o = 3;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[from + i];
        out[o++] = (c < 0x20 || c >= 0x7f) ? '?' : (char)c;
    }
    if (from + n < len) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

static int lex_fail(lexer *lx, const char *why)
{
    char ex[96];
    excerpt(lx->start, (size_t)(lx->end - lx->start), (size_t)(lx->pos - lx->start), ex);
    return err_set(lx->err, OFS_E_PROTO, "malformed server response (%s) near \"%s\"", why, ex);
}

/* ---- tokenizer ---- */

static bool is_atom_end(const lexer *lx, char c)
{
    return c == ' ' || c == '(' || c == ')' || c == '"' || c == '\0' || c == '\r' || c == '\n' ||
           (c == ']' && lx->code);
}

static int lex_items(lexer *lx, imap_value *list, char close, size_t depth);

/* An atom may hold a bracketed section with spaces and parens: BODY[HEADER.FIELDS (X)]<0>. */
static int lex_atom(lexer *lx, imap_value *v)
{
    const char *a = lx->pos;
    while (lx->pos < lx->end && !is_atom_end(lx, *lx->pos)) {
        if (*lx->pos != '[') {
            lx->pos++;
            continue;
        }
        size_t depth = 0;
        do {
            if (*lx->pos == '\0')
                return lex_fail(lx, "unterminated '['");
            if (*lx->pos == '[')
                depth++;
            else if (*lx->pos == ']')
                depth--;
            lx->pos++;
        } while (depth > 0 && lx->pos < lx->end);
        if (depth > 0)
            return lex_fail(lx, "unterminated '['");
    }
    size_t n = (size_t)(lx->pos - a);
    if (n == 0)
        return lex_fail(lx, "unexpected character");
    if ((a[0] == '{' && n > 1 && a[1] >= '0' && a[1] <= '9') ||
        (a[0] == '~' && n > 1 && a[1] == '{')) {
        lx->pos = a;
        return lex_fail(lx, "literal header not at end of line");
    }
    if (n == 3 && strncasecmp(a, "NIL", 3) == 0) {
        v->type = IMAP_V_NIL;
        return 0;
    }
    v->type = IMAP_V_ATOM;
    v->str = xstrndup(a, n);
    v->len = n;
    return 0;
}

/* Backslash escapes keep the next character, whatever it is: lenient on purpose. */
static int lex_quoted(lexer *lx, imap_value *v)
{
    const char *q = lx->pos + 1;
    size_t n = 0;
    while (q < lx->end && *q != '"') {
        if (*q == '\\')
            q++;
        if (q >= lx->end || *q == '\0')
            return lex_fail(lx, "unterminated quoted string");
        q++;
        n++;
    }
    if (q >= lx->end)
        return lex_fail(lx, "unterminated quoted string");
    char *s = xmalloc(n + 1);
    size_t o = 0;
    for (const char *r = lx->pos + 1; r < q; r++) {
        if (*r == '\\')
            r++;
        s[o++] = *r;
    }
    s[o] = '\0';
    v->type = IMAP_V_STRING;
    v->str = s;
    v->len = o;
    lx->pos = q + 1;
    return 0;
}

static int lex_literal(lexer *lx, imap_value *v)
{
    imap_parser *p = lx->p;
    if (p->lit_next >= p->nlits)
        return lex_fail(lx, "literal out of place");
    *v = p->lits[p->lit_next];
    memset(&p->lits[p->lit_next], 0, sizeof *v);
    p->lits[p->lit_next++].fd = -1;
    lx->pos++;
    return 0;
}

static int lex_value(lexer *lx, imap_value *v, size_t depth)
{
    switch (*lx->pos) {
    case '(':
        if (depth + 1 > lx->p->lim.max_depth)
            return lex_fail(lx, "lists nested too deeply");
        lx->pos++;
        value_empty_list(v);
        return lex_items(lx, v, ')', depth + 1);
    case '"':
        return lex_quoted(lx, v);
    case '\0':
        return lex_literal(lx, v);
    default:
        return lex_atom(lx, v);
    }
}

/* Values separated by spaces up to `close` (')', ']' in a code, or '\0' for the end). */
static int lex_items(lexer *lx, imap_value *list, char close, size_t depth)
{
    size_t cap = 0;
    for (;;) {
        while (lx->pos < lx->end && *lx->pos == ' ')
            lx->pos++;
        if (lx->pos == lx->end) {
            if (close == '\0')
                return 0;
            return lex_fail(lx, close == ')' ? "missing ')'" : "missing ']'");
        }
        char c = *lx->pos;
        if (c == ')' || (c == ']' && lx->code)) {
            if (c != close)
                return lex_fail(lx, c == ')' ? "unbalanced ')'" : "unbalanced ']'");
            lx->pos++;
            return 0;
        }
        if (lex_value(lx, list_push(list, &cap), depth) < 0)
            return -1;
        if (lx->pos < lx->end && *lx->pos != ' ' && *lx->pos != ')' &&
            !(*lx->pos == ']' && lx->code))
            return lex_fail(lx, "garbage after a value");
    }
}

/* ---- response shapes ---- */

/* A word up to the next space: tag, number or response name. */
static int lex_word(lexer *lx, const char **w, size_t *n)
{
    *w = lx->pos;
    while (lx->pos < lx->end && *lx->pos != ' ') {
        char c = *lx->pos;
        if (c == '(' || c == ')' || c == '"' || c == '\0' || c == '\r' || c == '[' || c == ']')
            return lex_fail(lx, "unexpected character");
        lx->pos++;
    }
    *n = (size_t)(lx->pos - *w);
    return 0;
}

static char *upper_dup(const char *s, size_t n)
{
    char *u = xstrndup(s, n);
    for (char *c = u; *c; c++)
        if (*c >= 'a' && *c <= 'z')
            *c = (char)(*c - 'a' + 'A');
    return u;
}

static imap_status status_of(const char *name)
{
    static const struct {
        const char *name;
        imap_status st;
    } tab[] = {{"OK", IMAP_S_OK},
               {"NO", IMAP_S_NO},
               {"BAD", IMAP_S_BAD},
               {"PREAUTH", IMAP_S_PREAUTH},
               {"BYE", IMAP_S_BYE}};
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
        if (strcmp(name, tab[i].name) == 0)
            return tab[i].st;
    return IMAP_S_NONE;
}

/* A code that does not tokenize is kept whole as one atom: servers put odd things there. */
static int code_fallback(lexer *lx, imap_response *r, const char *open)
{
    value_free(&r->code);
    value_empty_list(&r->code);
    r->has_code = false;
    lx->pos = open;
    const char *close = memchr(open, ']', (size_t)(lx->end - open));
    if (!close)
        return 0;
    size_t n = (size_t)(close - open - 1);
    if (memchr(open + 1, '\0', n))
        return lex_fail(lx, "literal in a response code");
    size_t cap = 0;
    imap_value *v = list_push(&r->code, &cap);
    v->type = IMAP_V_ATOM;
    v->str = xstrndup(open + 1, n);
    v->len = n;
    r->has_code = true;
    lx->pos = close + 1;
    return 0;
}

/* Optional "[code ...]", then free text that is never tokenized. */
static int lex_resp_text(lexer *lx, imap_response *r)
{
    if (lx->pos < lx->end && *lx->pos == ' ')
        lx->pos++;
    if (lx->pos < lx->end && *lx->pos == '[') {
        const char *open = lx->pos;
        ofs_error scratch;
        lexer sub = *lx;
        sub.pos++;
        sub.code = true;
        sub.err = &scratch;
        r->has_code = true;
        if (lex_items(&sub, &r->code, ']', 0) < 0 || r->code.n == 0 ||
            r->code.items[0].type != IMAP_V_ATOM) {
            if (code_fallback(lx, r, open) < 0)
                return -1;
        } else {
            lx->pos = sub.pos;
        }
        if (r->has_code && lx->pos < lx->end && *lx->pos == ' ')
            lx->pos++;
    }
    size_t n = (size_t)(lx->end - lx->pos);
    if (memchr(lx->pos, '\0', n))
        return lex_fail(lx, "literal in status text");
    r->text = xstrndup(lx->pos, n);
    lx->pos = lx->end;
    return 0;
}

static int lex_untagged(lexer *lx, imap_response *r)
{
    const char *w = NULL;
    size_t n = 0;
    r->type = IMAP_R_UNTAGGED;
    r->tag = xstrdup("*");
    if (lx->pos + 1 >= lx->end || lx->pos[1] != ' ')
        return lex_fail(lx, "missing response name");
    lx->pos += 2;
    if (lex_word(lx, &w, &n) < 0)
        return -1;
    if (n > 0 && w[0] >= '0' && w[0] <= '9') {
        uint64_t num;
        if (!parse_digits(w, n, &num) || num > UINT32_MAX)
            return lex_fail(lx, "bad message number");
        r->has_number = true;
        r->number = (uint32_t)num;
        if (lx->pos < lx->end)
            lx->pos++;
        if (lex_word(lx, &w, &n) < 0)
            return -1;
    }
    if (n == 0)
        return lex_fail(lx, "missing response name");
    r->name = upper_dup(w, n);
    r->status = r->has_number ? IMAP_S_NONE : status_of(r->name);
    if (r->status != IMAP_S_NONE)
        return lex_resp_text(lx, r);
    return lex_items(lx, &r->args, '\0', 0);
}

static int lex_tagged(lexer *lx, imap_response *r)
{
    const char *w = NULL;
    size_t n = 0;
    r->type = IMAP_R_TAGGED;
    if (lex_word(lx, &w, &n) < 0)
        return -1;
    if (n == 0)
        return lex_fail(lx, "missing tag");
    r->tag = xstrndup(w, n);
    if (lx->pos < lx->end)
        lx->pos++;
    if (lex_word(lx, &w, &n) < 0)
        return -1;
    r->name = upper_dup(w, n);
    r->status = status_of(r->name);
    if (r->status != IMAP_S_OK && r->status != IMAP_S_NO && r->status != IMAP_S_BAD)
        return lex_fail(lx, "tagged response without OK, NO or BAD");
    return lex_resp_text(lx, r);
}

static int resp_build(imap_parser *p, ofs_error *err)
{
    imap_response *r = &p->resp;
    lexer lx = {.p = p,
                .start = p->text.data,
                .pos = p->text.data,
                .end = p->text.data + p->text.len,
                .err = err};
    int rc;
    if (p->text.len == 0) {
        rc = lex_fail(&lx, "empty line");
    } else if (lx.pos[0] == '+') {
        r->type = IMAP_R_CONTINUATION;
        r->tag = xstrdup("+");
        lx.pos++;
        rc = lex_resp_text(&lx, r);
    } else if (lx.pos[0] == '*') {
        rc = lex_untagged(&lx, r);
    } else {
        rc = lex_tagged(&lx, r);
    }
    if (!r->tag)
        r->tag = xstrdup("");
    if (!r->name)
        r->name = xstrdup("");
    if (!r->text)
        r->text = xstrdup("");
    return rc;
}

/* ---- framing ---- */

static void resp_clear(imap_parser *p)
{
    imap_response *r = &p->resp;
    free(r->tag);
    free(r->name);
    free(r->text);
    value_free(&r->code);
    value_free(&r->args);
    memset(r, 0, sizeof *r);
    value_empty_list(&r->code);
    value_empty_list(&r->args);
    for (size_t i = 0; i < p->nlits; i++)
        value_free(&p->lits[i]);
    p->nlits = p->lit_next = 0;
    if (p->text.cap > KEEP_TEXT_CAP)
        buf_free(&p->text);
    buf_reset(&p->text);
    buf_free(&p->lit_mem);
    p->seg_start = p->raw = 0;
    p->lit_left = 0;
}

imap_parser *imap_parser_new(const imap_parse_limits *lim)
{
    imap_parser *p = xcalloc(1, sizeof *p);
    if (lim)
        p->lim = *lim;
    /* Zero fields mean "default", so callers can set only the limit they care about. */
    if (!p->lim.max_line)
        p->lim.max_line = DEF_MAX_LINE;
    if (!p->lim.max_literal_mem)
        p->lim.max_literal_mem = DEF_MAX_LITERAL_MEM;
    if (!p->lim.max_literal_stream)
        p->lim.max_literal_stream = DEF_MAX_LITERAL_STREAM;
    if (!p->lim.max_depth)
        p->lim.max_depth = DEF_MAX_DEPTH;
    buf_init(&p->text);
    buf_init(&p->lit_mem);
    resp_clear(p);
    p->state = PS_LINE;
    return p;
}

void imap_parser_free(imap_parser *p)
{
    if (!p)
        return;
    resp_clear(p);
    buf_free(&p->text);
    free(p->lits);
    free(p);
}

void imap_parser_set_literal_fn(imap_parser *p, imap_literal_fn fn, void *ctx)
{
    p->lit_fn = fn;
    p->lit_ctx = ctx;
}

const imap_response *imap_parser_response(imap_parser *p)
{
    return p && p->state == PS_READY ? &p->resp : NULL;
}

/* The atom just before a literal header at `end` (for the literal callback), or "". */
static char *prev_atom(const char *s, size_t end)
{
    if (end > 0 && s[end - 1] == ' ')
        end--;
    size_t i = end;
    while (i > 0) {
        char c = s[i - 1];
        if (c == ']') {
            /* Walk back over a bracketed section, which may hold spaces and parens. */
            size_t j = i - 1, depth = 0;
            for (;;) {
                if (s[j] == ']')
                    depth++;
                else if (s[j] == '\0' || (s[j] == '[' && --depth == 0))
                    break;
                if (j == 0)
                    break;
                j--;
            }
            if (depth != 0 || s[j] != '[')
                break;
            i = j;
            continue;
        }
        if (c == ' ' || c == '(' || c == ')' || c == '"' || c == '\0' || c == '\r')
            break;
        i--;
    }
    return xstrndup(s + i, end - i);
}

/* Finds "{n}", "{n+}" or "~{n}" ending the current segment: 1 found, 0 none, -1 error. */
static int find_literal_header(imap_parser *p, size_t *hdr, uint64_t *size, ofs_error *err)
{
    const char *s = p->text.data;
    size_t k = p->text.len;
    if (k <= p->seg_start || s[k - 1] != '}')
        return 0;
    k--;
    if (k > p->seg_start && s[k - 1] == '+')
        k--;
    size_t dend = k;
    while (k > p->seg_start && s[k - 1] >= '0' && s[k - 1] <= '9')
        k--;
    if (k == dend || k == p->seg_start || s[k - 1] != '{')
        return 0;
    size_t nd = dend - k;
    if (!parse_digits(s + k, nd, size))
        return err_set(err, OFS_E_LIMIT, "server announced a literal of %.*s%s bytes: too large",
                       (int)(nd > 24 ? 24 : nd), s + k, nd > 24 ? "..." : "");
    k--;
    if (k > p->seg_start && s[k - 1] == '~')
        k--;
    *hdr = k;
    return 1;
}

static void literal_done(imap_parser *p)
{
    imap_value *v = &p->lits[p->nlits - 1];
    if (v->type == IMAP_V_STRING) {
        v->len = p->lit_mem.len;
        v->str = p->lit_mem.data ? p->lit_mem.data : xstrdup("");
        buf_init(&p->lit_mem);
    }
    p->state = PS_LINE;
}

/* Asks the callback where the literal goes: fd >= 0, or -1 for memory. */
static int literal_target(imap_parser *p, size_t hdr, uint64_t size, int *fd, ofs_error *err)
{
    *fd = -1;
    if (!p->lit_fn)
        return 0;
    char *atom = prev_atom(p->text.data, hdr);
    ofs_error e;
    err_clear(&e);
    *fd = p->lit_fn(p->lit_ctx, atom, size, &e);
    free(atom);
    if (*fd >= -1)
        return 0;
    if (e.code == OFS_OK)
        return err_set(err, OFS_E_IO, "no place to store a %llu-byte literal from the server",
                       (unsigned long long)size);
    if (err)
        *err = e;
    return -1;
}

static int literal_start(imap_parser *p, size_t hdr, uint64_t size, ofs_error *err)
{
    uint64_t most = p->lim.max_literal_stream > p->lim.max_literal_mem
                        ? p->lim.max_literal_stream
                        : (uint64_t)p->lim.max_literal_mem;
    if (size > most)
        return err_set(err, OFS_E_LIMIT,
                       "server announced a literal of %llu bytes, over the limit of %llu",
                       (unsigned long long)size, (unsigned long long)most);
    int fd;
    if (literal_target(p, hdr, size, &fd, err) < 0)
        return -1;
    if (fd >= 0 && size > p->lim.max_literal_stream)
        return err_set(err, OFS_E_LIMIT, "server literal of %llu bytes is over the limit of %llu",
                       (unsigned long long)size, (unsigned long long)p->lim.max_literal_stream);
    if (fd < 0 && size > p->lim.max_literal_mem)
        return err_set(err, OFS_E_LIMIT,
                       "server literal of %llu bytes is over the in-memory limit of %zu",
                       (unsigned long long)size, p->lim.max_literal_mem);
    if (p->nlits == p->cap_lits) {
        p->cap_lits = p->cap_lits ? p->cap_lits * 2 : 4;
        p->lits = xrealloc(p->lits, p->cap_lits * sizeof *p->lits);
    }
    imap_value *v = &p->lits[p->nlits++];
    memset(v, 0, sizeof *v);
    v->type = fd >= 0 ? IMAP_V_STREAMED : IMAP_V_STRING;
    v->fd = fd;
    p->text.len = hdr;
    buf_add(&p->text, "", 1);
    p->seg_start = p->text.len;
    p->lit_left = size;
    p->state = PS_LITERAL;
    if (size == 0)
        literal_done(p);
    return 0;
}

/* A line segment just ended: either a literal follows or the response is complete. */
static int segment_end(imap_parser *p, ofs_error *err)
{
    size_t hdr = 0;
    uint64_t size = 0;
    int r = find_literal_header(p, &hdr, &size, err);
    if (r < 0)
        return -1;
    if (r > 0)
        return literal_start(p, hdr, size, err);
    if (resp_build(p, err) < 0)
        return -1;
    p->state = PS_READY;
    return 0;
}

static int line_too_long(imap_parser *p, ofs_error *err)
{
    return err_set(err, OFS_E_LIMIT, "server response line longer than %zu bytes", p->lim.max_line);
}

static long feed_line(imap_parser *p, const char *d, size_t n, ofs_error *err)
{
    const char *lf = memchr(d, '\n', n);
    size_t take = lf ? (size_t)(lf - d) : n;
    /* One extra byte of slack: it may be the CR of the CRLF, which does not count. */
    size_t total = p->raw + (p->text.len - p->seg_start) + take;
    if (total > p->lim.max_line && total - p->lim.max_line > 1)
        return line_too_long(p, err);
    const char *nul = memchr(d, '\0', take);
    if (nul) {
        char ex[96];
        buf_add(&p->text, d, (size_t)(nul - d));
        size_t seg = p->text.len - p->seg_start;
        excerpt(p->text.data + p->seg_start, seg, seg, ex);
        return err_set(err, OFS_E_PROTO, "NUL byte in a server response line after \"%s\"", ex);
    }
    buf_add(&p->text, d, take);
    if (!lf)
        return (long)take;
    if (p->text.len > p->seg_start && p->text.data[p->text.len - 1] == '\r')
        p->text.data[--p->text.len] = '\0';
    p->raw += p->text.len - p->seg_start;
    if (p->raw > p->lim.max_line)
        return line_too_long(p, err);
    if (segment_end(p, err) < 0)
        return -1;
    return (long)take + 1;
}

static int write_all(int fd, const char *d, size_t n, ofs_error *err)
{
    while (n > 0) {
        ssize_t w = write(fd, d, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return err_errno(err, OFS_E_IO, w < 0 ? errno : EIO,
                             "cannot write a message from the server to its file");
        d += w;
        n -= (size_t)w;
    }
    return 0;
}

static long feed_literal(imap_parser *p, const char *d, size_t n, ofs_error *err)
{
    size_t take = n < p->lit_left ? n : (size_t)p->lit_left;
    imap_value *v = &p->lits[p->nlits - 1];
    if (v->type == IMAP_V_STREAMED) {
        if (write_all(v->fd, d, take, err) < 0)
            return -1;
        v->size += take;
    } else {
        buf_add(&p->lit_mem, d, take);
    }
    p->lit_left -= take;
    if (p->lit_left == 0)
        literal_done(p);
    return (long)take;
}

long imap_parser_feed(imap_parser *p, const char *data, size_t len, ofs_error *err)
{
    if (p->state == PS_FAILED) {
        if (err)
            *err = p->fail;
        return -1;
    }
    if (p->state == PS_READY) {
        resp_clear(p);
        p->state = PS_LINE;
    }
    if (len > LONG_MAX)
        len = LONG_MAX;
    size_t i = 0;
    while (i < len && p->state != PS_READY) {
        long n = p->state == PS_LINE ? feed_line(p, data + i, len - i, &p->fail)
                                     : feed_literal(p, data + i, len - i, &p->fail);
        if (n < 0) {
            p->state = PS_FAILED;
            resp_clear(p);
            if (err)
                *err = p->fail;
            return -1;
        }
        i += (size_t)n;
    }
    return (long)i;
}
