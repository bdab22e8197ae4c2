/* message.c: Message-ID extraction from a message header (RFC 5322 folding rules).
 * Reads only the header block and bounds it, whatever the file holds. */
#include "sync/message.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "util/mem.h"

/* Headers are read in growing steps up to HEADER_MAX: most fit the first step, and every
 * connection of a parallel pass holds these buffers at once. */
enum { HEADER_STEP = 16 * 1024, HEADER_MAX = 256 * 1024, HASH_CHUNK = 64 * 1024 };

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
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(md);
        return NULL;
    }
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
        EVP_DigestUpdate(md, chunk, (size_t)r);
        off += r;
    }
    free(chunk);
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned dn = 0;
    char *hex = NULL;
    if (ok && EVP_DigestFinal_ex(md, d, &dn) == 1) {
        hex = xmalloc(2 * dn + 1);
        for (unsigned i = 0; i < dn; i++)
            snprintf(hex + 2 * i, 3, "%02x", d[i]);
    }
    EVP_MD_CTX_free(md);
    return hex;
}
