/* err.h: filling the one error type (ofs_error) deep inside, reporting it at the top.
 * Every fallible function returns 0 on success and -1 after filling *err. */
#ifndef OFS_UTIL_ERR_H
#define OFS_UTIL_ERR_H

#include "ofsync.h"

/* Sets code and message; returns -1 so callers can `return err_set(...)`. err may be NULL. */
int err_set(ofs_error *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Like err_set, and marks the error final: reconnecting would meet the same refusal. */
int err_set_final(ofs_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Like err_set, appending ": strerror(errnum)"; ENOSPC/EDQUOT turn the code into OFS_E_NOSPC. */
int err_errno(ofs_error *err, int code, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Puts "prefix: " in front of the message, to say where an error from below happened. */
int err_prefix(ofs_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void err_clear(ofs_error *err);

#endif
