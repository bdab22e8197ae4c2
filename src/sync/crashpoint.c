/* crashpoint.c: one counter for the whole process, hit around every store change, so a test
 * can kill ofsync between any two durable steps (a random delay rarely lands there). */
#include "sync/crashpoint.h"

#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include "util/mem.h"

/* Atomic: the connections of a parallel pass hit them from several threads. */
static long crash_at = -1; /* -1: not read yet; 0: off */
static long crash_count;

void crashpoint_hit(void)
{
    long at = __atomic_load_n(&crash_at, __ATOMIC_RELAXED);
    if (at < 0) {
        const char *v = getenv("OFSYNC_CRASH_AT");
        at = v ? strtol(v, NULL, 10) : 0;
        if (at < 0)
            at = 0;
        __atomic_store_n(&crash_at, at, __ATOMIC_RELAXED);
    }
    if (at && __atomic_add_fetch(&crash_count, 1, __ATOMIC_RELAXED) == at)
        kill(getpid(), SIGKILL); /* like kill -9: no atexit, no buffered output, no cleanup */
}

typedef struct crash_store {
    store base;
    store_ops ops;
    store *in;
} crash_store;

static store *inner(store *s)
{
    return ((crash_store *)s)->in;
}

static int cs_list_folders(store *s, strlist *out, strlist *refused, ofs_error *err)
{
    return inner(s)->ops->list_folders(inner(s), out, refused, err);
}

static int cs_create_folder(store *s, const char *name, ofs_error *err)
{
    crashpoint_hit();
    int rc = inner(s)->ops->create_folder(inner(s), name, err);
    crashpoint_hit();
    return rc;
}

static int cs_rename_folder(store *s, const char *from, const char *to, ofs_error *err)
{
    crashpoint_hit();
    int rc = inner(s)->ops->rename_folder(inner(s), from, to, err);
    crashpoint_hit();
    return rc;
}

static int cs_delete_folder(store *s, const char *name, ofs_error *err)
{
    crashpoint_hit();
    int rc = inner(s)->ops->delete_folder(inner(s), name, err);
    crashpoint_hit();
    return rc;
}

static int cs_open_folder(store *s, const char *name, store_folder_info *info, ofs_error *err)
{
    return inner(s)->ops->open_folder(inner(s), name, info, err);
}

static int cs_each_message(store *s, const store_list_opts *o,
                           void (*fn)(const store_msg *m, void *arg), void *arg, ofs_error *err)
{
    return inner(s)->ops->each_message(inner(s), o, fn, arg, err);
}

static int cs_open_folder_unread(store *s, const char *name, ofs_error *err)
{
    return inner(s)->ops->open_folder_unread(inner(s), name, err);
}

static int cs_list_messages(store *s, const store_list_opts *o, store_msg_list *out, ofs_error *err)
{
    return inner(s)->ops->list_messages(inner(s), o, out, err);
}

static int cs_fetch_messages(store *s, const store_msg *msgs, size_t n, const store_sink *sink,
                             ofs_error *err)
{
    return inner(s)->ops->fetch_messages(inner(s), msgs, n, sink, err);
}

/* Reads only: the kills that matter are in the local store_message and flush it leads to. */
static int cs_fetch_ranges(store *s, store_range_feed *feed, ofs_error *err)
{
    return inner(s)->ops->fetch_ranges(inner(s), feed, err);
}

static int cs_fetch_batches(store *s, store_batch_feed *feed, ofs_error *err)
{
    return inner(s)->ops->fetch_batches(inner(s), feed, err);
}

static int cs_store_message(store *s, int fd, uint64_t size, unsigned flags, store_msg *out,
                            ofs_error *err)
{
    crashpoint_hit();
    int rc = inner(s)->ops->store_message(inner(s), fd, size, flags, out, err);
    crashpoint_hit();
    return rc;
}

static int cs_store_messages(store *s, store_upload *v, size_t n, ofs_error *err)
{
    crashpoint_hit();
    int rc = inner(s)->ops->store_messages(inner(s), v, n, err);
    crashpoint_hit();
    return rc;
}

static int cs_flush(store *s, ofs_error *err)
{
    crashpoint_hit();
    int rc = inner(s)->ops->flush(inner(s), err);
    crashpoint_hit();
    return rc;
}

static int cs_set_flags(store *s, const store_msg *msgs, size_t n, unsigned add, unsigned del,
                        ofs_error *err)
{
    crashpoint_hit();
    int rc = inner(s)->ops->set_flags(inner(s), msgs, n, add, del, err);
    crashpoint_hit();
    return rc;
}

static int cs_remove_messages(store *s, const store_msg *msgs, size_t n, ofs_error *err)
{
    crashpoint_hit();
    int rc = inner(s)->ops->remove_messages(inner(s), msgs, n, err);
    crashpoint_hit();
    return rc;
}

static void cs_begin_batch(store *s)
{
    inner(s)->ops->begin_batch(inner(s));
}

static int cs_end_batch(store *s, ofs_error *err)
{
    crashpoint_hit();
    int rc = inner(s)->ops->end_batch(inner(s), err);
    crashpoint_hit();
    return rc;
}

/* The optional, read-only ops: forwarded as they are, so a torture run takes the same fast
 * paths (unchanged folders skipped, QRESYNC) as a normal one. */
static int cs_prefetch_status(store *s, const strlist *names, ofs_error *err)
{
    return inner(s)->ops->prefetch_status(inner(s), names, err);
}

static int cs_folder_status(store *s, const char *name, store_folder_info *info)
{
    return inner(s)->ops->folder_status(inner(s), name, info);
}

static int cs_open_folder_changes(store *s, const char *name, store_changes *ch,
                                  store_folder_info *info, ofs_error *err)
{
    return inner(s)->ops->open_folder_changes(inner(s), name, ch, info, err);
}

static char *cs_folder_mark(store *s, const char *name)
{
    return inner(s)->ops->folder_mark(inner(s), name);
}

static int cs_each_key(store *s, void (*fn)(const char *key, size_t len, void *arg), void *arg,
                       ofs_error *err)
{
    return inner(s)->ops->each_key(inner(s), fn, arg, err);
}

static char *cs_folder_digest(store *s, const char *name, store_digest *d)
{
    return inner(s)->ops->folder_digest(inner(s), name, d);
}

static void cs_close(store *s)
{
    inner(s)->ops->close(inner(s));
    free(s);
}

store *crashpoint_wrap(store *s)
{
    const char *v = getenv("OFSYNC_CRASH_AT");
    if (!s || !v || strtol(v, NULL, 10) <= 0)
        return s;
    crash_store *cs = xcalloc(1, sizeof *cs);
    cs->in = s;
    cs->ops = (store_ops){
        .side = s->ops->side,
        .list_folders = cs_list_folders,
        .create_folder = cs_create_folder,
        .rename_folder = cs_rename_folder,
        .delete_folder = cs_delete_folder,
        .open_folder = cs_open_folder,
        .open_folder_unread = s->ops->open_folder_unread ? cs_open_folder_unread : NULL,
        .list_messages = cs_list_messages,
        .each_key = s->ops->each_key ? cs_each_key : NULL, /* the local store's */
        .each_message = s->ops->each_message ? cs_each_message : NULL,
        .fetch_messages = cs_fetch_messages,
        .fetch_ranges = s->ops->fetch_ranges ? cs_fetch_ranges : NULL,
        .fetch_batches = s->ops->fetch_batches ? cs_fetch_batches : NULL,
        .store_message = cs_store_message,
        .store_messages = s->ops->store_messages ? cs_store_messages : NULL,
        .flush = cs_flush,
        .set_flags = cs_set_flags,
        .remove_messages = cs_remove_messages,
        .close = cs_close,
        .prefetch_status = s->ops->prefetch_status ? cs_prefetch_status : NULL,
        .folder_status = s->ops->folder_status ? cs_folder_status : NULL,
        .open_folder_changes = s->ops->open_folder_changes ? cs_open_folder_changes : NULL,
        .folder_mark = s->ops->folder_mark ? cs_folder_mark : NULL,
        .folder_digest = s->ops->folder_digest ? cs_folder_digest : NULL,
        .begin_batch = s->ops->begin_batch ? cs_begin_batch : NULL,
        .end_batch = s->ops->end_batch ? cs_end_batch : NULL,
    };
    cs->base.ops = &cs->ops;
    return &cs->base;
}

store *crashpoint_unwrap(store *s)
{
    return s && s->ops->close == cs_close ? inner(s) : s;
}
