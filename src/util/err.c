/* err.c: formatting of the one error type.
 * Messages are single lines: control characters from servers are replaced. */
#include "util/err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static void sanitize(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            *s = '?';
}

__attribute__((format(printf, 4, 0))) static void err_vset(ofs_error *err, int code, int final,
                                                           const char *fmt, va_list ap)
{
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    sanitize(err->message);
    err->code = code;
    err->final = final;
}

int err_set(ofs_error *err, int code, const char *fmt, ...)
{
    if (!err)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    err_vset(err, code, 0, fmt, ap);
    va_end(ap);
    return -1;
}

int err_set_final(ofs_error *err, int code, const char *fmt, ...)
{
    if (!err)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    err_vset(err, code, 1, fmt, ap);
    va_end(ap);
    return -1;
}

int err_errno(ofs_error *err, int code, int errnum, const char *fmt, ...)
{
    if (!err)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    size_t n = strlen(err->message);
    snprintf(err->message + n, sizeof err->message - n, ": %s", strerror(errnum));
    sanitize(err->message);
    err->code = (errnum == ENOSPC || errnum == EDQUOT) ? OFS_E_NOSPC : code;
    err->final = 0;
    return -1;
}

int err_prefix(ofs_error *err, const char *fmt, ...)
{
    if (!err)
        return -1;
    char prefix[256], old[sizeof err->message];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->message, sizeof old);
    size_t n = strlen(prefix);
    if (n > sizeof err->message - 3)
        n = sizeof err->message - 3;
    memcpy(err->message, prefix, n);
    memcpy(err->message + n, ": ", 2);
    size_t rest = sizeof err->message - n - 3;
    size_t olen = strnlen(old, rest);
    memcpy(err->message + n + 2, old, olen);
    err->message[n + 2 + olen] = '\0';
    sanitize(err->message);
    return -1;
}

void err_clear(ofs_error *err)
{
    if (err) {
        err->code = OFS_OK;
        err->message[0] = '\0';
    }
}
