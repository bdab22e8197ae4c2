/* partial.c: big messages arrive in ranges into <local>/tmp/ofsync-partial.*, so a cut costs
 * only the bytes in flight; the file is named by folder hash, UIDVALIDITY and UID. */
#include "sync/partial.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/err.h"
#include "util/mem.h"

#define PARTIAL_PREFIX "ofsync-partial."

bool partial_wanted(const store *srv, const store_msg *m)
{
    return srv->ops->fetch_ranges && m->size > PARTIAL_THRESHOLD;
}

uint64_t partial_chunk(double rate)
{
    if (rate <= 0)
        return 64u * 1024;
    double c = rate * 8.0;
    if (c < 16.0 * 1024)
        c = 16.0 * 1024;
    if (c > 4.0 * 1024 * 1024)
        c = 4.0 * 1024 * 1024;
    return ((uint64_t)c + 4095) & ~(uint64_t)4095;
}

/* FNV-1a: a folder name of any length and any bytes becomes a fixed, safe file name part. */
static uint64_t partial_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static char *partial_dir(const char *root)
{
    return xasprintf("%s/tmp", root);
}

int partial_open(partial_file *pf, const char *root, const char *folder, uint32_t uidvalidity,
                 const store_msg *m, ofs_error *err)
{
    char *dir = partial_dir(root);
    pf->fd = -1;
    pf->have = 0;
    pf->path = xasprintf("%s/" PARTIAL_PREFIX "%016" PRIx64 ".%" PRIu32 ".%" PRIu32, dir,
                         partial_hash(folder), uidvalidity, m->uid);
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        err_errno(err, OFS_E_IO, errno, "cannot create %s", dir);
        free(dir);
        return -1;
    }
    free(dir);
    pf->fd = open(pf->path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    struct stat st;
    if (pf->fd < 0 || fstat(pf->fd, &st) < 0)
        return err_errno(err, OFS_E_IO, errno, "cannot open partial file %s", pf->path);
    pf->have = (uint64_t)st.st_size;
    if (pf->have > m->size) { /* not ours after all: start over */
        if (ftruncate(pf->fd, 0) < 0)
            return err_errno(err, OFS_E_IO, errno, "cannot truncate %s", pf->path);
        pf->have = 0;
    }
    return 0;
}

int partial_size(partial_file *pf, ofs_error *err)
{
    struct stat st;
    if (fstat(pf->fd, &st) < 0)
        return err_errno(err, OFS_E_IO, errno, "cannot stat %s", pf->path);
    pf->have = (uint64_t)st.st_size;
    return 0;
}

void partial_close(partial_file *pf, bool remove)
{
    if (pf->fd >= 0)
        close(pf->fd);
    pf->fd = -1;
    if (remove && pf->path)
        unlink(pf->path);
    free(pf->path);
    pf->path = NULL;
}

void partial_sweep(const char *root, const char *folder)
{
    char *dir = partial_dir(root);
    char prefix[64];
    snprintf(prefix, sizeof prefix, PARTIAL_PREFIX "%016" PRIx64 ".", partial_hash(folder));
    DIR *d = opendir(dir);
    free(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0)
            unlinkat(dirfd(d), e->d_name, 0);
    closedir(d);
}
