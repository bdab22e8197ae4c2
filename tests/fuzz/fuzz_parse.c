/* fuzz_parse.c: libFuzzer harness for the IMAP response parser (src/imap/parse.c).
 * Two leading bytes pick chunk sizes, limits and literal targets; the rest is the server stream. */
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "imap/parse.h"
#include "util/err.h"
#include "util/mem.h"

static int devnull = -1;

/* Streams, keeps or refuses a literal, deterministically from its size and the mode byte. */
static int fuzz_literal(void *ctx, const char *atom, uint64_t size, ofs_error *err)
{
    unsigned mode = *(const unsigned *)ctx;
    if (!atom)
        abort();
    switch ((mode + size + strlen(atom)) % 4) {
    case 0:
        return devnull;
    case 1:
        err_set(err, OFS_E_IO, "refused");
        return -2;
    default:
        return -1;
    }
}

static void dump_value(buf *b, const imap_value *v)
{
    switch (v->type) {
    case IMAP_V_ATOM:
        if (!v->str || strlen(v->str) != v->len)
            abort();
        buf_printf(b, "A%zu:", v->len);
        buf_add(b, v->str, v->len);
        break;
    case IMAP_V_STRING:
        if (!v->str || v->str[v->len] != '\0')
            abort();
        buf_printf(b, "S%zu:", v->len);
        buf_add(b, v->str, v->len);
        break;
    case IMAP_V_NIL:
        buf_adds(b, "N");
        break;
    case IMAP_V_STREAMED:
        buf_printf(b, "F%llu", (unsigned long long)v->size);
        break;
    case IMAP_V_LIST:
        buf_adds(b, "(");
        for (size_t i = 0; i < v->n; i++)
            dump_value(b, &v->items[i]);
        buf_adds(b, ")");
        break;
    default:
        abort();
    }
}

static void dump_resp(buf *b, const imap_response *r)
{
    if (!r->tag || !r->name || !r->text || r->args.type != IMAP_V_LIST ||
        r->code.type != IMAP_V_LIST)
        abort();
    buf_printf(b, "%d %s %d %d %u %s %d [", (int)r->type, r->tag, (int)r->status, r->has_number,
               r->number, r->name, r->has_code);
    dump_value(b, &r->code);
    buf_printf(b, "] %s ", r->text);
    dump_value(b, &r->args);
    buf_adds(b, "\n");
}

/* Feeds the stream in chunks (0: whole) and records every response; returns false on error. */
static bool run(const uint8_t *data, size_t size, unsigned mode, uint32_t seed, buf *out)
{
    imap_parse_limits small = {
        .max_line = 300, .max_literal_mem = 64, .max_literal_stream = 200, .max_depth = 5};
    imap_parser *p = imap_parser_new(mode & 1 ? &small : NULL);
    if (mode & 2)
        imap_parser_set_literal_fn(p, fuzz_literal, &mode);
    size_t pos = 0;
    bool ok = true;
    while (pos < size) {
        size_t n = size - pos;
        if (seed) {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            size_t c = 1 + seed % (1 + (mode >> 2) % 64);
            n = c < n ? c : n;
        }
        ofs_error err;
        long r = imap_parser_feed(p, (const char *)data + pos, n, &err);
        if (r < 0) {
            if (err.code != OFS_E_PROTO && err.code != OFS_E_LIMIT && err.code != OFS_E_IO)
                abort();
            ok = false;
            break;
        }
        if (r == 0 || (size_t)r > n)
            abort();
        pos += (size_t)r;
        const imap_response *resp = imap_parser_response(p);
        if (resp)
            dump_resp(out, resp);
        else if ((size_t)r != n)
            abort();
    }
    imap_parser_free(p);
    return ok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    if (devnull < 0)
        devnull = open("/dev/null", O_WRONLY);
    unsigned mode = data[0];
    uint32_t seed = data[1] | 0x100u;
    data += 2;
    size -= 2;
    buf whole, chunked;
    buf_init(&whole);
    buf_init(&chunked);
    bool ok1 = run(data, size, mode, 0, &whole);
    bool ok2 = run(data, size, mode, seed, &chunked);
    /* Chunking must not change the result: same responses, and failing at the same one. */
    if (ok1 != ok2 || whole.len != chunked.len ||
        (whole.len && memcmp(whole.data, chunked.data, whole.len) != 0))
        abort();
    buf_free(&whole);
    buf_free(&chunked);
    return 0;
}
