/* maildir.c: one Maildir folder: a key -> file table from one readdir of new/ and cur/,
 * delivery batched through tmp/ (one sync per batch), and renames that survive mail readers. */
#include "maildir/maildir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sync/store.h"
#include "util/eol.h"
#include "util/err.h"
#include "util/mem.h"

/* Each connection holds two of these (read, converted); 16 KiB takes most mail in one read. */
#define MD_IOBUF (16 * 1024)
/* Up to this many delivered files keep their fd for a per-file fsync; a bigger batch is made
 * durable with one syncfs(), which costs one journal commit instead of one per file. */
#define MD_OPEN_PENDING 16

/* ---- names ---- */

size_t maildir_key_len(const char *name, const char **info)
{
    for (const char *p = name; *p; p++) {
        if ((*p == ':' || *p == '!') && p[1] == '2' && p[2] == ',') {
            if (info)
                *info = p + 3;
            return (size_t)(p - name);
        }
    }
    if (info)
        *info = NULL;
    return strlen(name);
}

static const struct {
    char letter;
    unsigned flag;
} md_letters[] = {
    {'D', FLAG_DRAFT}, {'F', FLAG_FLAGGED}, {'R', FLAG_ANSWERED},
    {'S', FLAG_SEEN},  {'T', FLAG_DELETED},
};

static unsigned md_letter_flag(unsigned char c)
{
    for (size_t i = 0; i < sizeof md_letters / sizeof md_letters[0]; i++)
        if ((unsigned char)md_letters[i].letter == c)
            return md_letters[i].flag;
    return 0;
}

unsigned maildir_info_flags(const char *info)
{
    unsigned flags = 0;
    for (const unsigned char *p = (const unsigned char *)info; p && *p; p++)
        flags |= md_letter_flag(*p);
    return flags;
}

char *maildir_name_with_flags(const char *name, unsigned flags)
{
    const char *info;
    size_t kl = maildir_key_len(name, &info);
    char sep = info ? info[-3] : ':'; /* keep a "!2," name's separator */
    bool present[256] = {false};
    for (const unsigned char *p = (const unsigned char *)info; p && *p; p++)
        if (!md_letter_flag(*p))
            present[*p] = true;
    for (size_t i = 0; i < sizeof md_letters / sizeof md_letters[0]; i++)
        if (flags & md_letters[i].flag)
            present[(unsigned char)md_letters[i].letter] = true;
    buf b;
    buf_init(&b);
    buf_add(&b, name, kl);
    buf_addc(&b, sep);
    buf_adds(&b, "2,");
    for (int c = 1; c < 256; c++)
        if (present[c])
            buf_addc(&b, (char)c);
    return b.data;
}

char *maildir_new_key(void)
{
    static unsigned long counter;
    unsigned long q = __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    char host[256];
    if (gethostname(host, sizeof host) != 0)
        strcpy(host, "localhost");
    host[sizeof host - 1] = '\0';
    buf h;
    buf_init(&h);
    buf_adds(&h, "");
    for (const char *p = host; *p; p++) {
        if (*p == '/')
            buf_adds(&h, "\\057");
        else if (*p == ':')
            buf_adds(&h, "\\072");
        else
            buf_addc(&h, *p);
    }
    char *key = xasprintf("%lld.M%06ldP%ldQ%lu.%s", (long long)ts.tv_sec, ts.tv_nsec / 1000,
                          (long)getpid(), q, h.data);
    buf_free(&h);
    return key;
}

/* ---- the key table ---- */

static size_t md_hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return (size_t)(h ^ (h >> 32));
}

static long md_lookup(const maildir *md, const char *key, size_t len)
{
    if (!md->nslots)
        return -1;
    size_t mask = md->nslots - 1;
    for (size_t i = md_hash(key, len) & mask;; i = (i + 1) & mask) {
        uint32_t s = md->slots[i];
        if (!s)
            return -1;
        const maildir_entry *e = &md->v[s - 1];
        if (e->key_len == len && memcmp(e->key, key, len) == 0)
            return (long)(s - 1);
    }
}

static void md_slot_put(maildir *md, size_t idx)
{
    const maildir_entry *e = &md->v[idx];
    size_t mask = md->nslots - 1;
    size_t i = md_hash(e->key, e->key_len) & mask;
    while (md->slots[i])
        i = (i + 1) & mask;
    md->slots[i] = (uint32_t)(idx + 1);
}

/* Keeps the load at most three quarters: probes stay short, and a big folder's table costs
 * 5.3-10.7 bytes per message rather than 8-16. */
static void md_table_reserve(maildir *md, size_t n)
{
    if (n * 4 <= md->nslots * 3)
        return;
    size_t ns = md->nslots ? md->nslots : 64;
    while (n * 4 > ns * 3)
        ns *= 2;
    free(md->slots);
    md->slots = xcalloc(ns, sizeof *md->slots);
    md->nslots = ns;
    for (size_t i = 0; i < md->n; i++)
        md_slot_put(md, i);
}

const char *maildir_entry_rest(const maildir_entry *e)
{
    return e->key + e->key_len + 1;
}

/* Points e at a copy of the file name (key_len bytes of key, then the rest) in the arena. */
static void md_name_entry(maildir *md, maildir_entry *e, const char *name, size_t key_len)
{
    if (!md->names)
        md->names = arena_new();
    e->key = arena_add_pair(md->names, name, key_len, name + key_len);
    e->key_len = (uint32_t)key_len;
}

/* Grows by half: a scan's table has at most a third of slack, not half. */
static void md_push(maildir *md, const char *name, size_t key_len, unsigned flags, bool in_cur)
{
    if (md->n == md->cap) {
        md->cap = md->cap >= 256 ? md->cap + md->cap / 2 : 256;
        md->v = xrealloc(md->v, md->cap * sizeof *md->v);
    }
    md_table_reserve(md, md->n + 1);
    maildir_entry *e = &md->v[md->n];
    *e = (maildir_entry){.flags = (uint8_t)flags, .in_cur = in_cur};
    md_name_entry(md, e, name, key_len);
    md_slot_put(md, md->n++);
    md->live++;
}

/* A listing may still hold the old names: the arena goes when its last holder lets go. */
static void md_reset(maildir *md)
{
    arena_unref(md->names);
    md->names = NULL;
    md->n = md->live = 0;
    if (md->slots)
        memset(md->slots, 0, md->nslots * sizeof *md->slots);
    md->dupes = 0;
    free(md->dupe_example);
    md->dupe_example = NULL;
}

/* ---- scanning ---- */

static char *md_rel(bool cur, const char *name)
{
    return xasprintf("%s/%s", cur ? "cur" : "new", name);
}

/* The path of e's file relative to the folder. */
static char *md_entry_rel(const maildir_entry *e)
{
    return xasprintf("%s/%s%s", e->in_cur ? "cur" : "new", e->key, maildir_entry_rest(e));
}

/* e's file name (key and rest), malloc'd. */
static char *md_entry_name(const maildir_entry *e)
{
    return xasprintf("%s%s", e->key, maildir_entry_rest(e));
}

/* Takes rel (malloc'd). */
static bool md_exists(const maildir *md, char *rel)
{
    struct stat st;
    bool ok = fstatat(md->dfd, rel, &st, AT_SYMLINK_NOFOLLOW) == 0;
    free(rel);
    return ok;
}

/* A second file with a known key. A reader renaming (or moving new/ -> cur/) during our
 * readdir shows both names; that is a race, not a duplicate: keep whichever still exists. */
static void md_second_file(maildir *md, long idx, const char *name, unsigned flags, bool cur)
{
    maildir_entry *e = &md->v[idx];
    bool old_there = md_exists(md, md_entry_rel(e));
    bool new_there = md_exists(md, md_rel(cur, name));
    bool take_new;
    if (old_there && new_there) {
        md->dupes++;
        take_new = cur && !e->in_cur; /* cur/ is the copy a reader has seen */
        if (!md->dupe_example)
            md->dupe_example = take_new ? md_entry_rel(e) : md_rel(cur, name);
    } else {
        take_new = !old_there && new_there;
    }
    if (take_new) {
        md_name_entry(md, e, name, e->key_len);
        e->flags = (uint8_t)flags;
        e->in_cur = cur;
    }
}

static void md_scanned(maildir *md, const char *name, bool cur)
{
    const char *info;
    size_t kl = maildir_key_len(name, &info);
    if (kl == 0)
        return;
    unsigned flags = cur ? maildir_info_flags(info) : 0;
    long idx = md_lookup(md, name, kl);
    if (idx < 0)
        md_push(md, name, kl, flags, cur);
    else
        md_second_file(md, idx, name, flags, cur);
}

int maildir_walk(int dfd, const char *path, bool cur, maildir_name_fn fn, void *arg, ofs_error *err)
{
    const char *sub = cur ? "cur" : "new";
    int fd = openat(dfd, sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        return err_errno(err, OFS_E_IO, e, "cannot read %s/%s", path, sub);
    }
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(d);
        if (!de) {
            int e = errno;
            closedir(d);
            if (e)
                return err_errno(err, OFS_E_IO, e, "cannot read %s/%s", path, sub);
            return 0;
        }
        if (de->d_name[0] != '.' && de->d_type != DT_DIR)
            fn(de->d_name, cur, arg);
    }
}

static void md_scanned_fn(const char *name, bool cur, void *arg)
{
    md_scanned(arg, name, cur);
}

static int md_scan_dir(maildir *md, bool cur, ofs_error *err)
{
    return maildir_walk(md->dfd, md->path, cur, md_scanned_fn, md, err);
}

int maildir_scan(maildir *md, ofs_error *err)
{
    md_reset(md);
    /* new/ first: a message moved to cur/ between the two passes is then seen twice, not lost. */
    if (md_scan_dir(md, false, err) != 0 || md_scan_dir(md, true, err) != 0)
        return -1;
    md->scanned = true;
    if (md->cap > md->n + md->n / 8) { /* the slack of growing by half, given back */
        md->cap = md->n ? md->n : 1;
        md->v = xrealloc(md->v, md->cap * sizeof *md->v);
    }
    return 0;
}

static int md_open(const char *path, bool scan, maildir **out, ofs_error *err)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return err_errno(err, OFS_E_IO, errno, "cannot open Maildir folder %s", path);
    static const char *const subs[] = {"cur", "new", "tmp"};
    for (size_t i = 0; i < 3; i++) {
        if (mkdirat(fd, subs[i], 0700) != 0 && errno != EEXIST) {
            int e = errno;
            close(fd);
            return err_errno(err, OFS_E_IO, e, "cannot create %s/%s", path, subs[i]);
        }
    }
    maildir *md = xcalloc(1, sizeof *md);
    md->path = xstrdup(path);
    md->dfd = fd;
    if (scan && maildir_scan(md, err) != 0) {
        maildir_close(md);
        return -1;
    }
    *out = md;
    return 0;
}

int maildir_open(const char *path, maildir **out, ofs_error *err)
{
    return md_open(path, true, out, err);
}

int maildir_open_unread(const char *path, maildir **out, ofs_error *err)
{
    return md_open(path, false, out, err);
}

void maildir_close(maildir *md)
{
    if (!md)
        return;
    for (size_t i = 0; i < md->npend; i++) {
        if (md->pend[i].fd >= 0)
            close(md->pend[i].fd);
        char *tmp = xasprintf("tmp/%s", md->pend[i].key);
        unlinkat(md->dfd, tmp, 0);
        free(tmp);
        free(md->pend[i].key);
    }
    free(md->pend);
    md_reset(md);
    free(md->v);
    free(md->slots);
    free(md->iobuf);
    free(md->path);
    close(md->dfd);
    free(md);
}

const maildir_entry *maildir_find(const maildir *md, const char *key)
{
    long idx = md_lookup(md, key, strlen(key));
    if (idx < 0 || md->v[idx].gone)
        return NULL;
    return &md->v[idx];
}

char *maildir_entry_path(const maildir *md, const maildir_entry *e)
{
    return xasprintf("%s/%s/%s%s", md->path, e->in_cur ? "cur" : "new", e->key,
                     maildir_entry_rest(e));
}

uint64_t maildir_entry_size(const maildir *md, const maildir_entry *e)
{
    const char *s = memmem(e->key, e->key_len, ",S=", 3);
    if (s) {
        const char *end = e->key + e->key_len;
        uint64_t v = 0;
        const char *p = s + 3;
        for (; p < end && *p >= '0' && *p <= '9'; p++)
            v = v * 10 + (uint64_t)(*p - '0');
        if (p > s + 3)
            return v;
    }
    char *rel = md_entry_rel(e);
    struct stat st;
    uint64_t size = fstatat(md->dfd, rel, &st, 0) == 0 ? (uint64_t)st.st_size : 0;
    free(rel);
    return size;
}

uint64_t maildir_stat_stamp(const struct stat *st)
{
    /* FNV-1a over the three: a rewrite changes mtime (and mostly size or inode); a rename
     * changes none of them. Never 0, which means "not known". */
    uint64_t v[4] = {(uint64_t)st->st_size, (uint64_t)st->st_mtim.tv_sec,
                     (uint64_t)st->st_mtim.tv_nsec, (uint64_t)st->st_ino};
    uint64_t h = 14695981039346656037ULL;
    for (size_t i = 0; i < 4; i++)
        for (int b = 0; b < 64; b += 8)
            h = (h ^ ((v[i] >> b) & 0xff)) * 1099511628211ULL;
    return h ? h : 1;
}

uint64_t maildir_entry_stamp(const maildir *md, const maildir_entry *e)
{
    char *rel = md_entry_rel(e);
    struct stat st;
    uint64_t stamp = fstatat(md->dfd, rel, &st, 0) == 0 ? maildir_stat_stamp(&st) : 0;
    free(rel);
    return stamp;
}

/* ---- changes to existing messages ---- */

/* One attempt at an operation on the entry at idx: 0 done, 1 the file was not there, -1 error. */
typedef int (*md_op)(maildir *md, size_t idx, void *arg, ofs_error *err);

/* In a folder opened unread: the entry of key's file where its flags put it, found by one
 * stat per place (a bare key in new/ is where a flagless delivery stays), or -1. */
static long md_probe(maildir *md, const char *key, unsigned flags)
{
    char *cur = maildir_name_with_flags(key, flags);
    bool in_new = !flags && md_exists(md, md_rel(false, key));
    bool in_cur = !in_new && md_exists(md, md_rel(true, cur));
    if (in_new || in_cur)
        md_push(md, in_new ? key : cur, strlen(key), in_new ? 0 : flags, in_cur);
    free(cur);
    return in_new || in_cur ? (long)md->n - 1 : -1;
}

/* Runs op on key; when the file is missing, rescans once to follow a concurrent rename. */
static int md_with_retry(maildir *md, const char *key, unsigned flags, md_op op, void *arg,
                         ofs_error *err)
{
    for (int attempt = 0;; attempt++) {
        long idx = md_lookup(md, key, strlen(key));
        if (idx < 0 && !md->scanned)
            idx = md_probe(md, key, flags);
        if (idx >= 0 && !md->v[idx].gone) {
            int r = op(md, (size_t)idx, arg, err);
            if (r != 1)
                return r;
        }
        if (attempt > 0)
            return 1;
        if (maildir_scan(md, err) != 0)
            return -1;
    }
}

struct md_flag_change {
    unsigned add, del;
};

static int md_rename_op(maildir *md, size_t idx, void *arg, ofs_error *err)
{
    const struct md_flag_change *fc = arg;
    maildir_entry *e = &md->v[idx];
    unsigned flags = (e->flags | fc->add) & ~fc->del;
    if (flags == e->flags && (e->in_cur || flags == 0))
        return 0;
    char *newname;
    if (e->in_cur) {
        char *name = md_entry_name(e);
        newname = maildir_name_with_flags(name, flags);
        free(name);
    } else {
        newname = maildir_name_with_flags(e->key, flags); /* new/ files carry no info to keep */
    }
    char *from = md_entry_rel(e);
    char *to = md_rel(true, newname);
    int rc = renameat(md->dfd, from, md->dfd, to);
    int en = errno;
    free(to);
    if (rc != 0) {
        free(newname);
        if (en == ENOENT) {
            free(from);
            return 1;
        }
        err_errno(err, OFS_E_IO, en, "cannot rename %s/%s to change its flags", md->path, from);
        free(from);
        return -1;
    }
    free(from);
    if (!e->in_cur)
        md->dirty_new = true;
    md->dirty_cur = true;
    md_name_entry(md, e, newname, e->key_len);
    free(newname);
    e->flags = (uint8_t)flags;
    e->in_cur = true;
    return 0;
}

int maildir_set_flags(maildir *md, const char *key, unsigned flags, unsigned add, unsigned del,
                      ofs_error *err)
{
    struct md_flag_change fc = {add, del};
    return md_with_retry(md, key, flags, md_rename_op, &fc, err);
}

static int md_unlink_op(maildir *md, size_t idx, void *arg, ofs_error *err)
{
    maildir_entry *e = &md->v[idx];
    char *rel = md_entry_rel(e);
    if (unlinkat(md->dfd, rel, 0) != 0) {
        int en = errno;
        if (en != ENOENT)
            err_errno(err, OFS_E_IO, en, "cannot remove %s/%s", md->path, rel);
        free(rel);
        return en == ENOENT ? 1 : -1;
    }
    free(rel);
    *(e->in_cur ? &md->dirty_cur : &md->dirty_new) = true;
    e->gone = true;
    md->live--;
    return 0;
}

int maildir_remove(maildir *md, const char *key, unsigned flags, ofs_error *err)
{
    return md_with_retry(md, key, flags, md_unlink_op, NULL, err);
}

struct md_open_result {
    int fd;
    unsigned flags;
};

static int md_open_op(maildir *md, size_t idx, void *arg, ofs_error *err)
{
    struct md_open_result *res = arg;
    const maildir_entry *e = &md->v[idx];
    char *rel = md_entry_rel(e);
    res->fd = openat(md->dfd, rel, O_RDONLY | O_CLOEXEC);
    if (res->fd < 0) {
        int en = errno;
        if (en != ENOENT)
            err_errno(err, OFS_E_IO, en, "cannot open %s/%s", md->path, rel);
        free(rel);
        return en == ENOENT ? 1 : -1;
    }
    free(rel);
    res->flags = e->flags;
    return 0;
}

int maildir_open_message(maildir *md, const char *key, unsigned flags, int *fd, unsigned *got,
                         ofs_error *err)
{
    struct md_open_result res = {-1, 0};
    int r = md_with_retry(md, key, flags, md_open_op, &res, err);
    *fd = res.fd;
    if (got)
        *got = res.flags;
    return r;
}

/* ---- delivery ---- */

static int md_write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int md_disk_error(maildir *md, int en, const char *rel, ofs_error *err)
{
    if (en == ENOSPC || en == EDQUOT)
        return err_set(err, OFS_E_NOSPC, "local disk full while writing %s/%s", md->path, rel);
    return err_errno(err, OFS_E_IO, en, "cannot write %s/%s", md->path, rel);
}

/* Copies the message into the tmp/ file; size 0 means "until end of file". The store
 * interface carries IMAP's CRLF; on disk a Maildir holds LF, as mail readers expect. */
static int md_copy_in(maildir *md, int in, int out, uint64_t size, const char *rel, uint64_t *done,
                      ofs_error *err)
{
    if (!md->iobuf)
        md->iobuf = xmalloc(2 * MD_IOBUF + 1);
    char *conv = md->iobuf + MD_IOBUF;
    eol_state eol = {0};
    *done = 0;
    for (;;) {
        size_t want = MD_IOBUF;
        if (size && size - *done < want)
            want = (size_t)(size - *done);
        ssize_t r = (size && want == 0) ? 0 : read(in, md->iobuf, want);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return err_errno(err, OFS_E_IO, errno, "cannot read the message to store in %s",
                             md->path);
        if (r == 0 && size && *done < size)
            return err_set(err, OFS_E_IO, "message to store in %s ended after %llu of %llu bytes",
                           md->path, (unsigned long long)*done, (unsigned long long)size);
        size_t n = r == 0 ? eol_to_lf_end(&eol, conv) : eol_to_lf(&eol, md->iobuf, (size_t)r, conv);
        if (md_write_all(out, conv, n) != 0)
            return md_disk_error(md, errno, rel, err);
        if (r == 0)
            return 0;
        *done += (uint64_t)r;
    }
}

/* Opens a fresh tmp/ file; the key is new each try, so EEXIST only means "try again". */
static int md_create_tmp(maildir *md, char **key, char **rel, ofs_error *err)
{
    for (int tries = 0; tries < 64; tries++) {
        *key = maildir_new_key();
        *rel = xasprintf("tmp/%s", *key);
        int fd = openat(md->dfd, *rel, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        int en = errno;
        if (fd >= 0)
            return fd;
        free(*key);
        free(*rel);
        *key = *rel = NULL;
        if (en != EEXIST)
            return md_disk_error(md, en, "tmp", err);
    }
    return err_set(err, OFS_E_IO, "cannot find a free file name in %s/tmp", md->path);
}

int maildir_deliver(maildir *md, int fd, uint64_t size, unsigned flags, char **keyp,
                    uint64_t *written, ofs_error *err)
{
    char *key, *rel;
    *keyp = NULL;
    int out = md_create_tmp(md, &key, &rel, err);
    if (out < 0)
        return -1;
    uint64_t done = 0;
    if (md_copy_in(md, fd, out, size, rel, &done, err) != 0) {
        close(out);
        unlinkat(md->dfd, rel, 0);
        free(key);
        free(rel);
        return -1;
    }
    /* Start writeback now, so the batch's sync at flush mostly waits for work already done. */
    sync_file_range(out, 0, 0, SYNC_FILE_RANGE_WRITE);
    struct stat st;
    md->last_stamp = fstat(out, &st) == 0 ? maildir_stat_stamp(&st) : 0;
    if (md->npend >= MD_OPEN_PENDING) {
        if (close(out) != 0) {
            md_disk_error(md, errno, rel, err);
            unlinkat(md->dfd, rel, 0);
            free(key);
            free(rel);
            return -1;
        }
        out = -1;
    }
    free(rel);
    if (md->npend == md->cappend) {
        md->cappend = md->cappend ? md->cappend * 2 : 64;
        md->pend = xrealloc(md->pend, md->cappend * sizeof *md->pend);
    }
    md->pend[md->npend++] = (maildir_pending){.key = key, .flags = flags, .fd = out};
    *keyp = xstrdup(key);
    if (written)
        *written = done;
    return 0;
}

static int md_sync_pending(maildir *md, ofs_error *err)
{
    bool all_open = true;
    for (size_t i = 0; i < md->npend; i++)
        all_open = all_open && md->pend[i].fd >= 0;
    if (all_open) {
        for (size_t i = 0; i < md->npend; i++) {
            if (fsync(md->pend[i].fd) != 0) {
                char *rel = xasprintf("tmp/%s", md->pend[i].key);
                md_disk_error(md, errno, rel, err);
                free(rel);
                return -1;
            }
        }
    } else {
        int tfd = openat(md->dfd, "tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (tfd < 0 || syncfs(tfd) != 0) {
            int en = errno;
            if (tfd >= 0)
                close(tfd);
            return md_disk_error(md, en, "tmp", err);
        }
        close(tfd);
    }
    for (size_t i = 0; i < md->npend; i++) {
        if (md->pend[i].fd >= 0)
            close(md->pend[i].fd);
        md->pend[i].fd = -1;
    }
    return 0;
}

static int md_publish_one(maildir *md, maildir_pending *p, ofs_error *err)
{
    char *name = p->flags ? maildir_name_with_flags(p->key, p->flags) : xstrdup(p->key);
    bool cur = p->flags != 0;
    char *from = xasprintf("tmp/%s", p->key);
    char *to = md_rel(cur, name);
    int rc = renameat(md->dfd, from, md->dfd, to);
    int en = errno;
    free(to);
    if (rc != 0) {
        err_errno(err, OFS_E_IO, en, "cannot move %s/%s into %s", md->path, from,
                  cur ? "cur" : "new");
        free(from);
        free(name);
        return -1;
    }
    free(from);
    *(cur ? &md->dirty_cur : &md->dirty_new) = true;
    /* A folder opened unread finds the file by the name just given it: remembering every
     * delivery would hold the table a listing does (a 20,000-message download: 2 MB). */
    if (md->scanned)
        md_push(md, name, strlen(p->key), cur ? p->flags : 0, cur);
    free(name);
    free(p->key);
    return 0;
}

static int md_fsync_dir(maildir *md, const char *sub, ofs_error *err)
{
    int fd = openat(md->dfd, sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0) {
        int en = errno;
        if (fd >= 0)
            close(fd);
        return err_errno(err, OFS_E_IO, en, "cannot sync directory %s/%s", md->path, sub);
    }
    close(fd);
    return 0;
}

int maildir_flush(maildir *md, ofs_error *err)
{
    if (md->npend) {
        if (md_sync_pending(md, err) != 0)
            return -1;
        size_t i = 0;
        int rc = 0;
        for (; i < md->npend && rc == 0; i++)
            rc = md_publish_one(md, &md->pend[i], err);
        if (rc != 0)
            i--; /* the failed one stays pending */
        memmove(md->pend, md->pend + i, (md->npend - i) * sizeof *md->pend);
        md->npend -= i;
        if (rc != 0)
            return -1;
    }
    if (md->dirty_cur && md_fsync_dir(md, "cur", err) != 0)
        return -1;
    md->dirty_cur = false;
    if (md->dirty_new && md_fsync_dir(md, "new", err) != 0)
        return -1;
    md->dirty_new = false;
    return 0;
}
