/* maildir_store.c: the local side of the store interface over a tree of Maildirs.
 * Thin glue: names.c maps folder names, maildir.c does the per-folder work. */
#include "maildir/maildir_store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "maildir/maildir.h"
#include "maildir/mark.h"
#include "maildir/names.h"
#include "sync/config.h"
#include "util/eol.h"
#include "util/err.h"

#define MS_IOBUF (256 * 1024)

typedef struct md_store {
    store base;
    char *root;
    int layout;
    maildir *md; /* the current folder, NULL before open_folder */
    char *name;  /* its canonical name */
    bool fresh;  /* md was scanned by open_folder and not yet listed */
    char *iobuf;
} md_store;

static md_store *ms_of(store *s)
{
    return (md_store *)s;
}

/* mkdir -p: every missing level of path, 0700. */
static int ms_mkdir_p(const char *path, ofs_error *err)
{
    char *p = xstrdup(path);
    for (char *slash = strchr(p + 1, '/');; slash = strchr(slash + 1, '/')) {
        if (slash)
            *slash = '\0';
        if (mkdir(p, 0700) != 0 && errno != EEXIST) {
            err_errno(err, OFS_E_IO, errno, "cannot create directory %s", p);
            free(p);
            return -1;
        }
        if (!slash)
            break;
        *slash = '/';
    }
    free(p);
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return err_set(err, OFS_E_IO, "%s exists but is not a directory", path);
    return 0;
}

static int ms_need_folder(md_store *ms, const char *what, ofs_error *err)
{
    if (ms->md)
        return 0;
    return err_set(err, OFS_E_IO, "local store %s: cannot %s before a folder is opened", ms->root,
                   what);
}

static int ms_list_folders(store *s, strlist *out, strlist *refused, ofs_error *err)
{
    md_store *ms = ms_of(s);
    return names_list(ms->root, ms->layout, out, err);
}

static int ms_create_folder(store *s, const char *name, ofs_error *err)
{
    md_store *ms = ms_of(s);
    char *path;
    if (names_to_path(ms->root, ms->layout, name, &path, err) != 0)
        return -1;
    static const char *const subs[] = {"cur", "new", "tmp"};
    int rc = ms_mkdir_p(path, err);
    for (size_t i = 0; i < 3 && rc == 0; i++) {
        char *sub = xasprintf("%s/%s", path, subs[i]);
        if (mkdir(sub, 0700) != 0 && errno != EEXIST)
            rc = err_errno(err, OFS_E_IO, errno, "cannot create directory %s", sub);
        free(sub);
    }
    free(path);
    return rc;
}

/* The open folder may be the one that moves or goes: flush and drop it first. */
static int ms_release_current(md_store *ms, ofs_error *err)
{
    if (ms->md && maildir_flush(ms->md, err) != 0)
        return -1;
    maildir_close(ms->md);
    ms->md = NULL;
    free(ms->name);
    ms->name = NULL;
    return 0;
}

static int ms_rename_dir(md_store *ms, const char *from, const char *to, ofs_error *err)
{
    char *a = NULL, *b = NULL;
    int rc = names_to_path(ms->root, ms->layout, from, &a, err);
    if (rc == 0)
        rc = names_to_path(ms->root, ms->layout, to, &b, err);
    if (rc == 0) {
        char *parent = xstrdup(b);
        char *slash = strrchr(parent, '/');
        if (slash && slash != parent) {
            *slash = '\0';
            rc = ms_mkdir_p(parent, err);
        }
        free(parent);
    }
    struct stat st;
    if (rc == 0 && stat(b, &st) == 0)
        rc = err_set(err, OFS_E_IO, "cannot rename %s to %s: the target exists", a, b);
    if (rc == 0 && rename(a, b) != 0)
        rc = err_errno(err, OFS_E_IO, errno, "cannot rename %s to %s", a, b);
    free(a);
    free(b);
    return rc;
}

/* Verbatim nests folders, so one directory rename moves the children too. Maildir++ keeps
 * them beside it (.A.B), so they are renamed one by one, deepest last, like IMAP RENAME. */
static int ms_rename_folder(store *s, const char *from, const char *to, ofs_error *err)
{
    md_store *ms = ms_of(s);
    if (ms_release_current(ms, err) < 0)
        return -1;
    if (ms->layout == CFG_LAYOUT_VERBATIM)
        return ms_rename_dir(ms, from, to, err);
    strlist all;
    strlist_init(&all);
    if (names_list(ms->root, ms->layout, &all, err) < 0)
        return -1;
    size_t n = strlen(from);
    int rc = 0;
    for (size_t i = 0; i < all.n && rc == 0; i++) {
        const char *name = all.v[i];
        if (strncmp(name, from, n) != 0 || (name[n] != '\0' && name[n] != '/'))
            continue;
        char *target = xasprintf("%s%s", to, name + n);
        rc = ms_rename_dir(ms, name, target, err);
        free(target);
    }
    strlist_free(&all);
    return rc;
}

static int ms_unlink_all(const char *dir, ofs_error *err)
{
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? 0 : err_errno(err, OFS_E_IO, errno, "cannot open %s", dir);
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if (unlinkat(dirfd(d), e->d_name, 0) != 0 && errno != ENOENT)
            rc = err_errno(err, OFS_E_IO, errno, "cannot remove %s/%s", dir, e->d_name);
    }
    closedir(d);
    if (rc == 0 && rmdir(dir) != 0 && errno != ENOENT)
        rc = err_errno(err, OFS_E_IO, errno, "cannot remove %s", dir);
    return rc;
}

/* First cur/ is renamed away in one step: a directory without cur/ is no folder, so a crash
 * midway never leaves a half-emptied folder that looks like messages deleted by the user.
 * A directory still holding sub-folders or other tools' files is kept. */
static int ms_delete_folder(store *s, const char *name, ofs_error *err)
{
    md_store *ms = ms_of(s);
    if (ms_release_current(ms, err) < 0)
        return -1;
    char *path;
    if (names_to_path(ms->root, ms->layout, name, &path, err) != 0)
        return -1;
    char *cur = xasprintf("%s/cur", path), *gone = xasprintf("%s/.ofsync-deleted", path);
    int rc = 0;
    if (rename(cur, gone) != 0 && errno != ENOENT)
        rc = err_errno(err, OFS_E_IO, errno, "cannot remove folder %s", path);
    static const char *const subs[] = {".ofsync-deleted", "new", "tmp"};
    for (size_t i = 0; i < 3 && rc == 0; i++) {
        char *sub = xasprintf("%s/%s", path, subs[i]);
        rc = ms_unlink_all(sub, err);
        free(sub);
    }
    if (rc == 0 && strcmp(name, "INBOX") != 0 && rmdir(path) != 0 && errno != ENOENT &&
        errno != ENOTEMPTY && errno != EEXIST)
        rc = err_errno(err, OFS_E_IO, errno, "cannot remove %s", path);
    free(cur);
    free(gone);
    free(path);
    return rc;
}

static int ms_open(md_store *ms, const char *name, bool scan, store_folder_info *info,
                   ofs_error *err)
{
    char *path;
    /* Deliveries the engine forgot to flush are still good mail: publish rather than drop. */
    if (ms->md && maildir_flush(ms->md, err) != 0)
        return -1;
    maildir_close(ms->md);
    ms->md = NULL;
    free(ms->name);
    ms->name = NULL;
    if (names_to_path(ms->root, ms->layout, name, &path, err) != 0)
        return -1;
    int rc = scan ? maildir_open(path, &ms->md, err) : maildir_open_unread(path, &ms->md, err);
    free(path);
    if (rc != 0)
        return err_prefix(err, "local folder \"%s\"", name);
    ms->name = xstrdup(name);
    ms->fresh = scan;
    if (info) {
        memset(info, 0, sizeof *info);
        info->exists = (uint32_t)ms->md->live;
    }
    return 0;
}

static int ms_open_folder(store *s, const char *name, store_folder_info *info, ofs_error *err)
{
    return ms_open(ms_of(s), name, true, info, err);
}

static int ms_open_folder_unread(store *s, const char *name, ofs_error *err)
{
    return ms_open(ms_of(s), name, false, NULL, err);
}

static int ms_list_messages(store *s, const store_list_opts *o, store_msg_list *out, ofs_error *err)
{
    md_store *ms = ms_of(s);
    if (ms_need_folder(ms, "list messages", err) != 0)
        return -1;
    /* open_folder just scanned; a later listing must see the disk as it is now. */
    if (!ms->fresh && maildir_scan(ms->md, err) != 0)
        return -1;
    ms->fresh = false;
    const maildir *md = ms->md;
    /* The keys are the scan's own, held by the listing: no copy per message. */
    if (md->names)
        store_msg_list_borrow_keys(out, md->names);
    store_msg_list_reserve(out, md->live);
    for (size_t i = 0; i < md->n; i++) {
        const maildir_entry *e = &md->v[i];
        if (e->gone)
            continue;
        store_msg *m = store_msg_list_push(out);
        m->key = out->keys_from == md->names ? e->key : store_msg_list_key(out, e->key, e->key_len);
        m->flags = e->flags;
        if (o && o->want_size)
            m->size = maildir_entry_size(md, e);
        if (o && o->want_stamp)
            m->stamp = maildir_entry_stamp(md, e);
    }
    return 0;
}

static int ms_write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Copies a message file out in IMAP form: bare LF becomes CRLF. *done counts bytes written. */
static int ms_copy_out(md_store *ms, int in, int out, const char *key, uint64_t *done,
                       ofs_error *err)
{
    if (!ms->iobuf)
        ms->iobuf = xmalloc(3 * MS_IOBUF);
    char *conv = ms->iobuf + MS_IOBUF;
    eol_state eol = {0};
    *done = 0;
    for (;;) {
        ssize_t r = read(in, ms->iobuf, MS_IOBUF);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return err_errno(err, OFS_E_IO, errno, "cannot read message %s in %s", key,
                             ms->md->path);
        if (r == 0)
            return 0;
        size_t n = eol_to_crlf(&eol, ms->iobuf, (size_t)r, conv);
        if (ms_write_all(out, conv, n) != 0)
            return err_errno(err, OFS_E_IO, errno, "cannot copy message %s out of %s", key,
                             ms->md->path);
        *done += (uint64_t)n;
    }
}

/* 0 done, 1 vanished (skipped), -1 error. */
static int ms_fetch_one(md_store *ms, const store_msg *msg, const store_sink *sink, ofs_error *err)
{
    int in;
    unsigned flags;
    int r = maildir_open_message(ms->md, msg->key, msg->flags, &in, &flags, err);
    if (r != 0)
        return r;
    struct stat st;
    if (fstat(in, &st) != 0) {
        err_errno(err, OFS_E_IO, errno, "cannot read message %s in %s", msg->key, ms->md->path);
        close(in);
        return -1;
    }
    store_msg m = *msg;
    m.flags = flags;
    m.size = (uint64_t)st.st_size;
    m.stamp = maildir_stat_stamp(&st);
    int out = sink->open(sink->ctx, &m, m.size, err);
    uint64_t done = 0;
    if (out < 0 || ms_copy_out(ms, in, out, msg->key, &done, err) != 0) {
        close(in);
        return -1;
    }
    close(in);
    m.size = done;
    return sink->done(sink->ctx, &m, out, done, err) != 0 ? -1 : 0;
}

static int ms_fetch_messages(store *s, const store_msg *msgs, size_t n, const store_sink *sink,
                             ofs_error *err)
{
    md_store *ms = ms_of(s);
    if (ms_need_folder(ms, "fetch messages", err) != 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (!msgs[i].key)
            return err_set(err, OFS_E_IO, "local folder %s: message to fetch has no key",
                           ms->md->path);
        if (ms_fetch_one(ms, &msgs[i], sink, err) < 0)
            return -1;
    }
    return 0;
}

static int ms_store_message(store *s, int fd, uint64_t size, unsigned flags, store_msg *out,
                            ofs_error *err)
{
    md_store *ms = ms_of(s);
    if (ms_need_folder(ms, "store a message", err) != 0)
        return -1;
    char *key;
    uint64_t written;
    if (maildir_deliver(ms->md, fd, size, flags & FLAG_ALL, &key, &written, err) != 0)
        return -1;
    out->uid = 0;
    out->key = key;
    out->flags = flags & FLAG_ALL;
    out->size = written;
    out->stamp = ms->md->last_stamp; /* the flush renames it, which keeps the stamp */
    return 0;
}

static int ms_flush(store *s, ofs_error *err)
{
    md_store *ms = ms_of(s);
    return ms->md ? maildir_flush(ms->md, err) : 0;
}

/* A message that vanished meanwhile is not an error: the next pass sees it gone. */
static int ms_set_flags(store *s, const store_msg *msgs, size_t n, unsigned add, unsigned del,
                        ofs_error *err)
{
    md_store *ms = ms_of(s);
    if (ms_need_folder(ms, "change flags", err) != 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (!msgs[i].key)
            return err_set(err, OFS_E_IO, "local folder %s: message to change has no key",
                           ms->md->path);
        if (maildir_set_flags(ms->md, msgs[i].key, msgs[i].flags, add & FLAG_ALL, del & FLAG_ALL,
                              err) < 0)
            return -1;
    }
    return 0;
}

static int ms_remove_messages(store *s, const store_msg *msgs, size_t n, ofs_error *err)
{
    md_store *ms = ms_of(s);
    if (ms_need_folder(ms, "remove messages", err) != 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (!msgs[i].key)
            return err_set(err, OFS_E_IO, "local folder %s: message to remove has no key",
                           ms->md->path);
        if (maildir_remove(ms->md, msgs[i].key, msgs[i].flags, err) < 0)
            return -1;
    }
    return 0;
}

static void ms_close(store *s)
{
    md_store *ms = ms_of(s);
    if (!ms)
        return;
    maildir_close(ms->md);
    free(ms->name);
    free(ms->root);
    free(ms->iobuf);
    free(ms);
}

static char *ms_folder_mark(store *s, const char *name)
{
    md_store *ms = ms_of(s);
    char *path;
    ofs_error e;
    if (names_to_path(ms->root, ms->layout, name, &path, &e) != 0)
        return NULL;
    char *mark = maildir_mark(path);
    free(path);
    return mark;
}

typedef struct ms_msg_walk {
    int dfd;
    const store_list_opts *o;
    void (*fn)(const store_msg *m, void *arg);
    void *arg;
} ms_msg_walk;

static void ms_msg_of_name(const char *name, bool cur, void *arg)
{
    const ms_msg_walk *w = arg;
    const char *info;
    size_t kl = maildir_key_len(name, &info);
    char key[NAME_MAX + 1];
    if (!kl || kl > NAME_MAX)
        return;
    memcpy(key, name, kl);
    key[kl] = '\0';
    store_msg m = {.key = key, .flags = cur ? maildir_info_flags(info) : 0};
    char rel[PATH_MAX];
    struct stat st;
    bool want_stat = w->o && (w->o->want_stamp || w->o->want_size);
    if (want_stat &&
        snprintf(rel, sizeof rel, "%s/%s", cur ? "cur" : "new", name) < (int)sizeof rel &&
        fstatat(w->dfd, rel, &st, 0) == 0) {
        m.stamp = w->o->want_stamp ? maildir_stat_stamp(&st) : 0;
        m.size = w->o->want_size ? (uint64_t)st.st_size : 0;
    }
    w->fn(&m, w->arg);
}

/* new/ first, as the scan: a file moved to cur/ in between is seen twice, not missed. */
static int ms_walk_messages(int dfd, const char *path, const store_list_opts *o,
                            void (*fn)(const store_msg *m, void *arg), void *arg, ofs_error *err)
{
    ms_msg_walk w = {dfd, o, fn, arg};
    if (maildir_walk(dfd, path, false, ms_msg_of_name, &w, err) != 0)
        return -1;
    return maildir_walk(dfd, path, true, ms_msg_of_name, &w, err);
}

typedef struct ms_key_walk {
    void (*fn)(const char *key, size_t len, void *arg);
    void *arg;
} ms_key_walk;

static void ms_key_of_msg(const store_msg *m, void *arg)
{
    const ms_key_walk *w = arg;
    w->fn(m->key, strlen(m->key), w->arg);
}

static int ms_each_key(store *s, void (*fn)(const char *key, size_t len, void *arg), void *arg,
                       ofs_error *err)
{
    md_store *ms = ms_of(s);
    ms_key_walk w = {fn, arg};
    if (ms_need_folder(ms, "read message names", err) != 0)
        return -1;
    return ms_walk_messages(ms->md->dfd, ms->md->path, NULL, ms_key_of_msg, &w, err);
}

static int ms_each_message(store *s, const store_list_opts *o,
                           void (*fn)(const store_msg *m, void *arg), void *arg, ofs_error *err)
{
    md_store *ms = ms_of(s);
    if (ms_need_folder(ms, "read messages", err) != 0)
        return -1;
    return ms_walk_messages(ms->md->dfd, ms->md->path, o, fn, arg, err);
}

static void ms_digest_msg(const store_msg *m, void *arg)
{
    /* A file gone meanwhile has stamp 0, which no pair has: no match. */
    store_digest_add(arg, m->key, strlen(m->key), m->flags, m->stamp);
}

/* The mark first, then the names: a change after the mark changes the next mark. */
static char *ms_folder_digest(store *s, const char *name, store_digest *d)
{
    md_store *ms = ms_of(s);
    char *path, *mark = NULL;
    ofs_error e;
    if (names_to_path(ms->root, ms->layout, name, &path, &e) != 0)
        return NULL;
    int dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    store_digest g = {0};
    store_list_opts o = {.want_stamp = true};
    if (dfd >= 0 && (mark = maildir_mark(path))) {
        if (ms_walk_messages(dfd, path, &o, ms_digest_msg, &g, &e) == 0) {
            *d = g;
        } else {
            free(mark);
            mark = NULL;
        }
    }
    if (dfd >= 0)
        close(dfd);
    free(path);
    return mark;
}

static const store_ops ms_ops = {
    .side = "local",
    .list_folders = ms_list_folders,
    .create_folder = ms_create_folder,
    .rename_folder = ms_rename_folder,
    .delete_folder = ms_delete_folder,
    .open_folder = ms_open_folder,
    .open_folder_unread = ms_open_folder_unread,
    .list_messages = ms_list_messages,
    .each_key = ms_each_key,
    .each_message = ms_each_message,
    .fetch_messages = ms_fetch_messages,
    .store_message = ms_store_message,
    .flush = ms_flush,
    .set_flags = ms_set_flags,
    .remove_messages = ms_remove_messages,
    .close = ms_close,
    .folder_mark = ms_folder_mark,
    .folder_digest = ms_folder_digest,
};

int maildir_store_open(const char *root, int layout, store **out, ofs_error *err)
{
    *out = NULL;
    if (!root || !*root)
        return err_set(err, OFS_E_CONFIG, "no local Maildir root configured");
    if (layout != CFG_LAYOUT_MAILDIRPP && layout != CFG_LAYOUT_VERBATIM)
        return err_set(err, OFS_E_CONFIG, "local store %s: unknown folder layout %d", root, layout);
    if (ms_mkdir_p(root, err) != 0)
        return err_prefix(err, "local store");
    md_store *ms = xcalloc(1, sizeof *ms);
    ms->base.ops = &ms_ops;
    ms->root = xstrdup(root);
    ms->layout = layout;
    *out = &ms->base;
    return 0;
}
