/* fswatch.c: inotify watches on a Maildir tree: message watches on cur/ and new/ of each
 * folder, structure watches on the directories folders live in. No polling, no timers. */
#include "notify/fswatch.h"

#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "maildir/names.h"
#include "sync/config.h"
#include "util/err.h"
#include "util/mem.h"

#define FSW_MSG_MASK                                                                               \
    (IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF |         \
     IN_ONLYDIR)
#define FSW_DIR_MASK FSW_MSG_MASK

typedef struct fsw_entry {
    int wd;
    bool structure; /* false: a cur/ or new/ directory of folder */
    char *folder;   /* canonical name (message watches only) */
} fsw_entry;

typedef struct fsw_table {
    fsw_entry *v;
    size_t n, cap;
} fsw_table;

struct fswatch {
    int fd;
    char *root;
    int layout;
    fsw_table t;
};

static void table_free(fsw_table *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->v[i].folder);
    free(t->v);
    memset(t, 0, sizeof *t);
}

static const fsw_entry *table_find(const fsw_table *t, int wd)
{
    for (size_t i = 0; i < t->n; i++)
        if (t->v[i].wd == wd)
            return &t->v[i];
    return NULL;
}

int fswatch_open(const char *root, int layout, fswatch **out, ofs_error *err)
{
    int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd < 0)
        return err_errno(err, OFS_E_IO, errno, "cannot watch %s for changes (inotify)", root);
    fswatch *w = xcalloc(1, sizeof *w);
    w->fd = fd;
    w->root = xstrdup(root);
    w->layout = layout;
    *out = w;
    return 0;
}

void fswatch_close(fswatch *w)
{
    if (!w)
        return;
    close(w->fd);
    table_free(&w->t);
    free(w->root);
    free(w);
}

int fswatch_fd(const fswatch *w)
{
    return w->fd;
}

size_t fswatch_count(const fswatch *w)
{
    return w->t.n;
}

/* Adds (or keeps: the kernel returns the same wd for the same inode) a watch on path.
 * A directory that vanished meanwhile is skipped: its parent's watch reported it. */
static int add_watch(fswatch *w, fsw_table *t, const char *path, const char *folder, ofs_error *err)
{
    int wd = inotify_add_watch(w->fd, path, FSW_DIR_MASK);
    if (wd < 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            return 0;
        if (errno == ENOSPC)
            return err_set(err, OFS_E_LIMIT,
                           "cannot watch %s: inotify watch limit reached (raise "
                           "fs.inotify.max_user_watches)",
                           path);
        return err_errno(err, OFS_E_IO, errno, "cannot watch %s", path);
    }
    if (table_find(t, wd)) /* the same directory reached twice (a symlink): one entry */
        return 0;
    if (t->n == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 32;
        t->v = xrealloc(t->v, t->cap * sizeof *t->v);
    }
    t->v[t->n++] =
        (fsw_entry){.wd = wd, .structure = !folder, .folder = folder ? xstrdup(folder) : NULL};
    return 0;
}

/* Message watches on dir/cur and dir/new of one folder. */
static int add_folder(fswatch *w, fsw_table *t, const char *dir, const char *folder, ofs_error *err)
{
    static const char *const subs[] = {"cur", "new"};
    for (size_t i = 0; i < 2; i++) {
        char *p = xasprintf("%s/%s", dir, subs[i]);
        int rc = add_watch(w, t, p, folder, err);
        free(p);
        if (rc < 0)
            return -1;
    }
    return 0;
}

static bool is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Maildir++: the root holds INBOX's cur/ new/ and every folder as a ".A.B" directory. */
static int scan_mdpp(fswatch *w, fsw_table *t, ofs_error *err)
{
    if (add_watch(w, t, w->root, NULL, err) < 0 || add_folder(w, t, w->root, "INBOX", err) < 0)
        return -1;
    DIR *d = opendir(w->root);
    if (!d)
        return err_errno(err, OFS_E_IO, errno, "cannot read %s", w->root);
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d))) {
        char *name = e->d_name[0] == '.' ? names_from_mdpp(e->d_name) : NULL;
        if (!name)
            continue;
        char *dir = xasprintf("%s/%s", w->root, e->d_name);
        if (is_dir(dir)) {
            rc = add_watch(w, t, dir, NULL, err); /* sees cur/ and new/ being created */
            if (rc == 0)
                rc = add_folder(w, t, dir, name, err);
        }
        free(dir);
        free(name);
    }
    closedir(d);
    return rc;
}

/* Verbatim: nested directories; a directory with cur/ is a folder, any may hold more. */
static int scan_verbatim(fswatch *w, fsw_table *t, const char *dir, const char *rel, int depth,
                         ofs_error *err)
{
    if (depth > NAMES_MAX_DEPTH)
        return 0;
    if (add_watch(w, t, dir, NULL, err) < 0)
        return -1;
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? 0 : err_errno(err, OFS_E_IO, errno, "cannot read %s", dir);
    int rc = 0;
    bool folder = false;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d))) {
        const char *n = e->d_name;
        if (n[0] == '.')
            continue;
        if (!strcmp(n, "cur") || !strcmp(n, "new")) {
            folder = true;
            continue;
        }
        if (!strcmp(n, "tmp"))
            continue;
        char *sub = xasprintf("%s/%s", dir, n);
        char *subrel = rel ? xasprintf("%s/%s", rel, n) : xstrdup(n);
        if (is_dir(sub))
            rc = scan_verbatim(w, t, sub, subrel, depth + 1, err);
        free(sub);
        free(subrel);
    }
    closedir(d);
    if (rc == 0 && folder && rel)
        rc = add_folder(w, t, dir, rel, err);
    return rc;
}

int fswatch_rescan(fswatch *w, ofs_error *err)
{
    fsw_table t = {0};
    int rc = w->layout == CFG_LAYOUT_VERBATIM ? scan_verbatim(w, &t, w->root, NULL, 0, err)
                                              : scan_mdpp(w, &t, err);
    if (rc < 0) {
        /* Keep the old watches too: a partial set still reports what it can. */
        for (size_t i = 0; i < w->t.n; i++)
            if (!table_find(&t, w->t.v[i].wd))
                inotify_rm_watch(w->fd, w->t.v[i].wd);
        table_free(&w->t);
        w->t = t;
        return -1;
    }
    /* Only now drop watches of directories that are gone from the tree. */
    for (size_t i = 0; i < w->t.n; i++)
        if (!table_find(&t, w->t.v[i].wd))
            inotify_rm_watch(w->fd, w->t.v[i].wd);
    table_free(&w->t);
    w->t = t;
    return 0;
}

static void handle_event(fswatch *w, const struct inotify_event *ev, fswatch_fn fn, void *ctx)
{
    if (ev->mask & IN_Q_OVERFLOW) {
        fn(ctx, FSW_ALL, NULL);
        return;
    }
    if (ev->mask & IN_IGNORED) /* watch removed: by us (rescan) or after DELETE_SELF */
        return;
    const fsw_entry *e = table_find(&w->t, ev->wd);
    if (!e) /* a late event of a watch a rescan dropped */
        return;
    bool self = ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF);
    if (e->structure) {
        if (self || (ev->mask & IN_ISDIR))
            fn(ctx, FSW_STRUCTURE, NULL);
        return;
    }
    if (self)
        fn(ctx, FSW_STRUCTURE, NULL);
    else if (!(ev->len && ev->name[0] == '.')) /* dot files are not messages (Maildir spec) */
        fn(ctx, FSW_FOLDER, e->folder);
}

int fswatch_read(fswatch *w, fswatch_fn fn, void *ctx, ofs_error *err)
{
    char data[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (;;) {
        ssize_t n = read(w->fd, data, sizeof data);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        if (n <= 0)
            return err_errno(err, OFS_E_IO, n < 0 ? errno : EIO, "reading inotify events for %s",
                             w->root);
        for (char *p = data; p < data + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)p;
            handle_event(w, ev, fn, ctx);
            p += sizeof *ev + ev->len;
        }
    }
}
