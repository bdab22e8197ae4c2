/* message.c: Message-ID extraction from a message header (RFC 5322 folding rules).
 * Reads only the header block and bounds it, whatever the file holds. */
#include "sync/message.h"

/* SHA256_Init and friends are deprecated in OpenSSL 3 in favour of EVP, whose first use loads
 * the provider machinery: 2 MiB of resident pages for a hash, on every pass that downloads over
 * a plain link. The direct interface computes the same digest without it. */
#define OPENSSL_SUPPRESS_DEPRECATED

#include <ctype.h>
#include <errno.h>
#include <openssl/sha.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "util/mem.h"

/* Headers are read in growing steps up to HEADER_MAX: most fit the first step, and every
 * connection of a parallel pass holds these buffers at once. */
enum { HEADER_STEP = 16 * 1024, HEADER_MAX = 256 * 1024, HASH_CHUNK = 16 * 1024 };

/* Length of the line starting at p, including its line ending. */
static size_t line_len(const char *p, const char *end)
{
    const char *q = p;
    while (q < end && *q != '\n')
        q++;
    return (size_t)(q - p) + (q < end);
}

static int is_blank_line(const char *p, size_t n)
{
    return n == 0 || (n == 1 && p[0] == '\n') || (n == 2 && p[0] == '\r' && p[1] == '\n');
}

char *msg_parse_msgid(const char *text, size_t len)
{
    static const char name[] = "message-id:";
    const char *p = text, *end = text + len;
    while (p < end) {
        size_t n = line_len(p, end);
        if (is_blank_line(p, n))
            return NULL;
        if (n >= sizeof name - 1 && strncasecmp(p, name, sizeof name - 1) == 0) {
            buf value;
            buf_init(&value);
            const char *v = p + sizeof name - 1;
            size_t vn = n - (sizeof name - 1);
            for (;;) {
                for (size_t i = 0; i < vn; i++)
                    if (v[i] != '\r' && v[i] != '\n')
                        buf_addc(&value, v[i] == '\t' ? ' ' : v[i]);
                p = v + vn;
                if (p >= end || (*p != ' ' && *p != '\t'))
                    break;
                v = p;
                vn = line_len(p, end);
            }
            char *s = value.data ? value.data : xstrdup("");
            char *b = s;
            while (*b && isspace((unsigned char)*b))
                b++;
            size_t bl = strlen(b);
            while (bl && isspace((unsigned char)b[bl - 1]))
                bl--;
            char *out = bl ? xstrndup(b, bl) : NULL;
            free(s);
            return out;
        }
        p += n;
    }
    return NULL;
}

/* Whether text holds the blank line that ends a header. */
static bool header_complete(const char *text, size_t len)
{
    if (len && (text[0] == '\n' || (len > 1 && text[0] == '\r' && text[1] == '\n')))
        return true;
    return memmem(text, len, "\n\n", 2) || memmem(text, len, "\n\r\n", 3);
}

char *msg_read_msgid(int fd)
{
    off_t at = lseek(fd, 0, SEEK_CUR);
    size_t cap = HEADER_STEP, len = 0;
    char *text = xmalloc(cap);
    for (;;) {
        ssize_t r = pread(fd, text + len, cap - len, (off_t)len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
        if (len < cap)
            continue;
        if (cap == HEADER_MAX || header_complete(text, len))
            break;
        cap *= 2;
        text = xrealloc(text, cap);
    }
    char *id = msg_parse_msgid(text, len);
    free(text);
    if (at >= 0)
        lseek(fd, at, SEEK_SET);
    return id;
}

char *msg_hash_fd(int fd)
{
    SHA256_CTX md;
    if (SHA256_Init(&md) != 1)
        return NULL;
    char *chunk = xmalloc(HASH_CHUNK);
    off_t off = 0;
    bool ok = true;
    for (;;) {
        ssize_t r = pread(fd, chunk, HASH_CHUNK, off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            ok = r == 0;
            break;
        }
        SHA256_Update(&md, chunk, (size_t)r);
        off += r;
    }
    free(chunk);
    unsigned char d[SHA256_DIGEST_LENGTH];
    if (SHA256_Final(d, &md) != 1 || !ok)
        return NULL;
    char *hex = xmalloc(2 * sizeof d + 1);
    for (size_t i = 0; i < sizeof d; i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    return hex;
}
