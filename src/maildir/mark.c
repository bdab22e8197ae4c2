/* mark.c: fingerprints of Maildir folders from two stat() calls, so an unchanged folder need not
 * be read. Every add, delete and flag rename updates its directory's mtime and ctime. */
#include "maildir/mark.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>

#include "util/mem.h"

/* File timestamps tick at the kernel's coarse clock (a few ms), or at whole seconds on some
 * file systems: a change made in the same tick as the one we recorded would leave the mtime
 * equal. A directory whose last change is this recent is not trusted (like git's "racily
 * clean" index entries); the folder is then simply read. Whole-second stamps get 2 s. */
#define MARK_SETTLE_NS 100000000LL
#define MARK_SETTLE_COARSE_NS 2000000000LL

static long long ts_ns(const struct timespec *t)
{
    return (long long)t->tv_sec * 1000000000LL + t->tv_nsec;
}

char *maildir_mark(const char *path)
{
    static const char *const subs[] = {"cur", "new"};
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    buf b;
    buf_init(&b);
    for (size_t i = 0; i < 2; i++) {
        char *p = xasprintf("%s/%s", path, subs[i]);
        struct stat st;
        int rc = stat(p, &st);
        free(p);
        long long m = rc == 0 ? ts_ns(&st.st_mtim) : 0, c = rc == 0 ? ts_ns(&st.st_ctim) : 0;
        long long latest = m > c ? m : c;
        bool coarse = m % 1000000000LL == 0 && c % 1000000000LL == 0;
        if (rc != 0 || latest > ts_ns(&now) - (coarse ? MARK_SETTLE_COARSE_NS : MARK_SETTLE_NS)) {
            buf_free(&b);
            return NULL;
        }
        buf_printf(&b, "%s%llu.%llu:%lld:%lld:%lld", i ? " " : "", (unsigned long long)st.st_dev,
                   (unsigned long long)st.st_ino, (long long)st.st_size, m, c);
    }
    return b.data;
}
