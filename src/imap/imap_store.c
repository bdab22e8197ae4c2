/* imap_store.c: the server side of the store interface, one IMAP connection per store.
 * Canonical names (UTF-8, '/' between levels) <-> server names (delimiter, modified UTF-7). */
#include "imap/imap_store.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "imap/client.h"
#include "imap/tls.h"
#include "imap/utf7.h"
#include "sync/config.h"
#include "util/err.h"
#include "util/mem.h"

typedef struct imap_store {
    store base;
    imap_client *c;
    char *host;
    bool delim_known;
    char delim;       /* '\0': a flat namespace */
    char *cur;        /* canonical name of the selected folder, NULL if none */
    char *cur_server; /* its server name */
    uint32_t uidvalidity;
    imap_store_activity_fn activity;
    void *activity_ctx;
    /* Folder status gathered for the whole pass (LIST-STATUS or pipelined STATUS). */
    struct istatus {
        char *name; /* canonical */
        store_folder_info info;
    } * status;
    size_t nstatus;
    int keepalive;      /* seconds of silence after which a NOOP checks the link first */
    imap_bodies bodies; /* small new messages of the selected folder, taken with its listing */
} imap_store;

/* New messages fetched whole with the listing when a folder announced at most this many:
 * it saves the body FETCH's round trip and holds at most PREFETCH_MSGS * PREFETCH_BYTES. */
enum { PREFETCH_MSGS = 64, PREFETCH_BYTES = 65536 };

static imap_store *istore(store *s)
{
    return (imap_store *)s;
}

/* ---- names ---- */

/* NULL when a canonical name component is safe, else why not. */
static const char *name_component_problem(const char *comp, size_t len, char delim)
{
    if (len == 0)
        return "an empty level";
    if ((len == 1 && comp[0] == '.') || (len == 2 && comp[0] == '.' && comp[1] == '.'))
        return "a \".\" or \"..\" level";
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)comp[i];
        if (ch < 0x20 || ch == 0x7f)
            return "a control character";
        /* U+0080..U+009F, the C1 controls, are C2 80..C2 9F in UTF-8. */
        if (ch == 0xc2 && i + 1 < len && (unsigned char)comp[i + 1] <= 0x9f)
            return "a control character";
        if (ch == '/')
            return "a '/' inside a level";
        if (delim && ch == (unsigned char)delim)
            return "the server's hierarchy delimiter inside a level";
    }
    return NULL;
}

static bool name_is_inbox(const char *s, size_t len)
{
    return len == 5 && strncasecmp(s, "INBOX", 5) == 0;
}

/* A copy of a name fit for a one-line message: C1 controls become '?' too (err.c does C0). */
static char *name_printable(const char *name)
{
    char *p = xstrdup(name);
    size_t o = 0;
    for (size_t i = 0; p[i]; i++) {
        if ((unsigned char)p[i] == 0xc2 && (unsigned char)p[i + 1] >= 0x80 &&
            (unsigned char)p[i + 1] <= 0x9f) {
            p[o++] = '?';
            i++;
        } else {
            p[o++] = p[i];
        }
    }
    p[o] = '\0';
    return p;
}

/* Server name (as listed, with its delimiter) -> canonical name. */
static int name_from_server(imap_store *is, const char *raw, char delim, char **out, ofs_error *err)
{
    char *dec;
    if (imap_utf8_enabled(is->c)) {
        /* UTF8=ACCEPT: the name is UTF-8 already; only its validity needs checking. */
        for (const char *q = raw; *q;) {
            unsigned long cp;
            int n = (unsigned char)*q < 0x80 ? 1 : imap_utf8_next(q, &cp);
            if (n == 0)
                return err_set(err, OFS_E_NAME,
                               "server %s has a folder name that is not valid UTF-8", is->host);
            q += n;
        }
        dec = xstrdup(raw);
    } else if (imap_utf7_decode(raw, &dec, err) < 0) {
        return err_prefix(err, "server %s", is->host);
    }
    buf b;
    buf_init(&b);
    buf_adds(&b, "");
    const char *p = dec, *why = NULL;
    for (;;) {
        const char *e = delim ? strchr(p, delim) : NULL;
        size_t len = e ? (size_t)(e - p) : strlen(p);
        /* Split on the delimiter, so only a '/' that is not the delimiter can remain. */
        why = name_component_problem(p, len, '\0');
        if (why)
            break;
        if (b.len)
            buf_addc(&b, '/');
        if (b.len == 0 && name_is_inbox(p, len))
            buf_adds(&b, "INBOX");
        else
            buf_add(&b, p, len);
        if (!e)
            break;
        p = e + 1;
    }
    if (why) {
        char *shown = name_printable(dec);
        err_set(err, OFS_E_NAME, "server %s has a folder \"%s\" that cannot be mapped safely: %s",
                is->host, shown, why);
        free(shown);
        free(dec);
        buf_free(&b);
        return -1;
    }
    free(dec);
    *out = b.data;
    return 0;
}

static int store_learn_delim(imap_store *is, ofs_error *err)
{
    if (is->delim_known)
        return 0;
    imap_list_entry *v;
    size_t n;
    if (imap_list(is->c, "", &v, &n, err) < 0)
        return -1;
    is->delim = n ? v[0].delim : '\0';
    is->delim_known = true;
    imap_list_free(v, n);
    return 0;
}

/* Canonical name -> server name (mUTF-7, server delimiter). */
static int name_to_server(imap_store *is, const char *canon, char **out, ofs_error *err)
{
    if (store_learn_delim(is, err) < 0)
        return -1;
    buf b;
    buf_init(&b);
    buf_adds(&b, "");
    const char *p = canon, *why = NULL;
    for (;;) {
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        why = name_component_problem(p, len, is->delim);
        if (!why && e && !is->delim)
            why = "levels, but the server has a flat namespace";
        if (why)
            break;
        if (b.len)
            buf_addc(&b, is->delim);
        if (b.len == 0 && name_is_inbox(p, len))
            buf_adds(&b, "INBOX");
        else
            buf_add(&b, p, len);
        if (!e)
            break;
        p = e + 1;
    }
    if (why) {
        buf_free(&b);
        char *shown = name_printable(canon);
        err_set(err, OFS_E_NAME, "folder \"%s\" cannot be mapped to server %s: it has %s", shown,
                is->host, why);
        free(shown);
        return -1;
    }
    if (imap_utf8_enabled(is->c)) {
        *out = b.data;
        return 0;
    }
    int r = imap_utf7_encode(b.data, out, err);
    buf_free(&b);
    return r;
}

/* ---- store ops ---- */

static void istore_status_clear(imap_store *is)
{
    for (size_t i = 0; i < is->nstatus; i++)
        free(is->status[i].name);
    free(is->status);
    is->status = NULL;
    is->nstatus = 0;
}

/* Only a status with a modseq can prove a folder unchanged; others are not kept. */
static void istore_status_add(imap_store *is, const char *name, const imap_mailbox_info *mi)
{
    if (!mi->highestmodseq || !mi->uidvalidity)
        return;
    is->status = xrealloc(is->status, (is->nstatus + 1) * sizeof *is->status);
    struct istatus *e = &is->status[is->nstatus++];
    e->name = xstrdup(name);
    e->info = (store_folder_info){.uidvalidity = mi->uidvalidity,
                                  .uidnext = mi->uidnext,
                                  .highestmodseq = mi->highestmodseq,
                                  .exists = mi->exists};
}

static int istore_folder_status(store *s, const char *name, store_folder_info *info)
{
    imap_store *is = istore(s);
    for (size_t i = 0; i < is->nstatus; i++)
        if (strcmp(is->status[i].name, name) == 0) {
            *info = is->status[i].info;
            return 0;
        }
    return 1;
}

static int istore_prefetch_status(store *s, const strlist *names, ofs_error *err)
{
    imap_store *is = istore(s);
    if (!imap_has_cap(is->c, "CONDSTORE"))
        return 0; /* without a modseq, a status cannot prove a folder unchanged */
    strlist want;
    strlist_init(&want);
    store_folder_info dummy;
    for (size_t i = 0; i < names->n; i++) {
        char *srv;
        if (istore_folder_status(s, names->v[i], &dummy) == 0)
            continue;
        ofs_error e;
        if (name_to_server(is, names->v[i], &srv, &e) < 0)
            continue; /* refused names are reported where the folder is synced */
        strlist_add_owned(&want, srv);
    }
    int rc = 0;
    if (want.n) {
        imap_mailbox_info *mi = xcalloc(want.n, sizeof *mi);
        bool *ok = xcalloc(want.n, sizeof *ok);
        rc = imap_status_many(is->c, (const char *const *)want.v, want.n, mi, ok, err);
        for (size_t i = 0; i < want.n && rc == 0; i++) {
            char *canon;
            ofs_error e;
            if (ok[i] && name_from_server(is, want.v[i], is->delim, &canon, &e) == 0) {
                istore_status_add(is, canon, &mi[i]);
                free(canon);
            }
        }
        free(mi);
        free(ok);
    }
    strlist_free(&want);
    return rc;
}

/* Before a command: a link that sat idle while we worked locally is checked first. */
static int istore_begin(imap_store *is, ofs_error *err)
{
    return imap_keepalive(is->c, is->keepalive, err);
}

static int istore_list_folders(store *s, strlist *out, strlist *refused, ofs_error *err)
{
    imap_store *is = istore(s);
    imap_list_entry *v;
    size_t n;
    istore_status_clear(is);
    if (istore_begin(is, err) < 0 ||
        imap_list_ex(is->c, "*", imap_has_cap(is->c, "CONDSTORE"), &v, &n, err) < 0)
        return -1;
    strlist names;
    strlist_init(&names);
    int r = 0;
    for (size_t i = 0; i < n && r == 0; i++) {
        if (v[i].delim && !is->delim_known) {
            is->delim = v[i].delim;
            is->delim_known = true;
        }
        if (!v[i].selectable)
            continue;
        char *name = NULL;
        r = name_from_server(is, v[i].name, v[i].delim, &name, err);
        if (r < 0 && err->code == OFS_E_NAME && refused) {
            strlist_add(refused, err->message);
            r = 0;
            continue;
        }
        if (r == 0 && v[i].has_status)
            istore_status_add(is, name, &v[i].status);
        if (r == 0 && strlist_find(&names, name) < 0)
            strlist_add_owned(&names, name);
        else if (r == 0)
            free(name);
    }
    imap_list_free(v, n);
    if (r < 0) {
        strlist_free(&names);
        return -1;
    }
    strlist_sort(&names);
    for (size_t i = 0; i < names.n; i++)
        strlist_add_owned(out, names.v[i]);
    free(names.v);
    return 0;
}

static int istore_create_folder(store *s, const char *name, ofs_error *err)
{
    imap_store *is = istore(s);
    char *srv;
    if (istore_begin(is, err) < 0 || name_to_server(is, name, &srv, err) < 0)
        return -1;
    int r = imap_create(is->c, srv, err);
    free(srv);
    return r < 0 ? err_prefix(err, "creating folder %s", name) : 0;
}

/* No folder selected as far as the store knows: what it kept of the last one goes. */
static void istore_forget_folder(imap_store *is)
{
    free(is->cur);
    free(is->cur_server);
    is->cur = is->cur_server = NULL;
    imap_bodies_clear(&is->bodies);
}

/* A folder about to be renamed or deleted may be the selected one: Dovecot drops a connection
 * whose selected mailbox is deleted, so step onto INBOX (read-only: nothing expunged) first. */
static int istore_leave(imap_store *is, const char *name, ofs_error *err)
{
    size_t n = strlen(name);
    if (!is->cur || strncmp(is->cur, name, n) != 0 || (is->cur[n] != '\0' && is->cur[n] != '/'))
        return 0;
    istore_forget_folder(is);
    return imap_select(is->c, "INBOX", true, NULL, err);
}

static int istore_rename_folder(store *s, const char *from, const char *to, ofs_error *err)
{
    imap_store *is = istore(s);
    char *a = NULL, *b = NULL;
    int r = istore_leave(is, from, err);
    if (r == 0)
        r = name_to_server(is, from, &a, err);
    if (r == 0)
        r = name_to_server(is, to, &b, err);
    if (r == 0)
        r = imap_rename(is->c, a, b, err);
    free(a);
    free(b);
    return r < 0 ? err_prefix(err, "renaming folder %s to %s", from, to) : 0;
}

static int istore_delete_folder(store *s, const char *name, ofs_error *err)
{
    imap_store *is = istore(s);
    char *srv;
    if (name_to_server(is, name, &srv, err) < 0)
        return -1;
    int r = istore_leave(is, name, err);
    if (r == 0)
        r = imap_delete(is->c, srv, err);
    free(srv);
    return r < 0 ? err_prefix(err, "deleting folder %s", name) : 0;
}

static int istore_open_folder(store *s, const char *name, store_folder_info *info, ofs_error *err)
{
    imap_store *is = istore(s);
    istore_forget_folder(is);
    char *srv;
    if (istore_begin(is, err) < 0 || name_to_server(is, name, &srv, err) < 0)
        return -1;
    imap_set_label(is->c, name);
    imap_mailbox_info mi;
    if (imap_select(is->c, srv, false, &mi, err) < 0) {
        free(srv);
        return err_prefix(err, "folder %s", name);
    }
    is->cur = xstrdup(name);
    is->cur_server = srv;
    is->uidvalidity = mi.uidvalidity;
    if (info) {
        info->uidvalidity = mi.uidvalidity;
        info->uidnext = mi.uidnext;
        info->highestmodseq = mi.highestmodseq;
        info->exists = mi.exists;
    }
    return 0;
}

static int istore_list_messages(store *s, const store_list_opts *o, store_msg_list *out,
                                ofs_error *err);

/* One burst: SELECT (with QRESYNC when it can say what changed) and the listing the engine
 * needs next, with the bodies of a few small new messages. */
static int istore_open_folder_changes(store *s, const char *name, store_changes *ch,
                                      store_folder_info *info, ofs_error *err)
{
    imap_store *is = istore(s);
    istore_forget_folder(is);
    char *srv;
    if (istore_begin(is, err) < 0 || name_to_server(is, name, &srv, err) < 0)
        return -1;
    imap_set_label(is->c, name);
    bool qresync = imap_qresync(is->c) && ch->uidvalidity && ch->modseq;
    imap_select_opts o = {.qresync = qresync,
                          .uidvalidity = ch->uidvalidity,
                          .modseq = ch->modseq,
                          .list_from = qresync && ch->list_from ? ch->list_from : 1};
    if (qresync && ch->expect_new && ch->expect_new <= PREFETCH_MSGS)
        o.body_max = PREFETCH_BYTES;
    imap_select_out out = {&ch->changed, &ch->vanished, &ch->listed, &is->bodies};
    imap_mailbox_info mi;
    if (imap_select_list(is->c, srv, &o, &mi, &out, err) < 0) {
        free(srv);
        imap_bodies_clear(&is->bodies);
        return err_prefix(err, "folder %s", name);
    }
    is->cur = xstrdup(name);
    is->cur_server = srv;
    is->uidvalidity = mi.uidvalidity;
    *info = (store_folder_info){.uidvalidity = mi.uidvalidity,
                                .uidnext = mi.uidnext,
                                .highestmodseq = mi.highestmodseq,
                                .exists = mi.exists};
    if (!qresync)
        return 1; /* listed from UID 1: the whole folder */
    if (mi.uidvalidity == ch->uidvalidity && mi.highestmodseq)
        return 0;
    /* A new UIDVALIDITY (the server ignored our modseq) or NOMODSEQ: nothing reported holds. */
    store_msg_list_free(&ch->changed);
    uidset_free(&ch->vanished);
    store_msg_list_free(&ch->listed);
    imap_bodies_clear(&is->bodies);
    store_list_opts lo = {.want_size = true};
    return istore_list_messages(s, &lo, &ch->listed, err) < 0 ? -1 : 1;
}

static int istore_need_folder(imap_store *is, const char *what, ofs_error *err)
{
    if (is->cur && imap_selected(is->c))
        return 0;
    return err_set(err, OFS_E_STATE, "%s on server %s without an open folder", what, is->host);
}

static int istore_list_messages(store *s, const store_list_opts *o, store_msg_list *out,
                                ofs_error *err)
{
    imap_store *is = istore(s);
    if (istore_need_folder(is, "listing messages", err) < 0)
        return -1;
    if (imap_selected(is->c)->exists == 0)
        return 0;
    if (istore_begin(is, err) < 0)
        return -1;
    if (imap_fetch_meta(is->c, o->since_uid, 0, o->want_size, o->want_msgid, out, err) < 0)
        return err_prefix(err, "folder %s", is->cur);
    return 0;
}

/* The whole body of uid when it came with the listing (not just its first bytes). */
static const imap_body *istore_whole_body(const imap_store *is, uint32_t uid)
{
    const imap_body *b = imap_bodies_find(&is->bodies, uid);
    return b && b->len == b->size ? b : NULL;
}

/* Caller's order is kept: each strictly ascending run of UIDs not taken with the listing is
 * one batch; those that were are handed over from memory in their place. */
static int istore_fetch_messages(store *s, const store_msg *msgs, size_t n, const store_sink *sink,
                                 ofs_error *err)
{
    imap_store *is = istore(s);
    if (istore_need_folder(is, "fetching messages", err) < 0 || istore_begin(is, err) < 0)
        return -1;
    size_t i = 0;
    while (i < n) {
        const imap_body *b = istore_whole_body(is, msgs[i].uid);
        if (b) {
            if (imap_body_deliver(is->c, b, &msgs[i], sink, err) < 0)
                return err_prefix(err, "folder %s", is->cur);
            i++;
            continue;
        }
        size_t j = i + 1;
        while (j < n && msgs[j].uid > msgs[j - 1].uid && !istore_whole_body(is, msgs[j].uid))
            j++;
        if (imap_fetch_bodies(is->c, msgs + i, j - i, sink, err) < 0)
            return err_prefix(err, "folder %s", is->cur);
        i = j;
    }
    return 0;
}

/* A batch asked for: its messages not taken with the listing, in UID order, and how many
 * FETCH commands carry them. */
typedef struct body_batch {
    store_msg *wire;
    int cmds;
} body_batch;

static int cmp_msg_uid(const void *a, const void *b)
{
    uint32_t x = ((const store_msg *)a)->uid, y = ((const store_msg *)b)->uid;
    return x < y ? -1 : x > y;
}

/* Bodies that came with the listing go to the sink now; the rest are asked for. */
static int istore_batch_ask(imap_store *is, const store_msg *msgs, size_t n, const store_sink *sink,
                            body_batch *out, ofs_error *err)
{
    out->wire = xmalloc((n ? n : 1) * sizeof *out->wire);
    out->cmds = 0;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const imap_body *b = istore_whole_body(is, msgs[i].uid);
        if (!b)
            out->wire[k++] = msgs[i];
        else if (imap_body_deliver(is->c, b, &msgs[i], sink, err) < 0)
            return -1;
    }
    if (k)
        qsort(out->wire, k, sizeof *out->wire, cmp_msg_uid);
    size_t d = 0;
    for (size_t i = 0; i < k; i++)
        if (d == 0 || out->wire[i].uid != out->wire[d - 1].uid)
            out->wire[d++] = out->wire[i];
    out->cmds = imap_bodies_send(is->c, out->wire, d, sink, err);
    return out->cmds < 0 ? -1 : 0;
}

static int istore_batch_wait(imap_store *is, body_batch *b, ofs_error *err)
{
    int rc = 0;
    for (int i = 0; i < b->cmds && rc == 0; i++)
        rc = imap_bodies_wait(is->c, err);
    free(b->wire);
    return rc;
}

/* One batch streams while the next one's FETCH is on its way: the link does not idle. */
static int istore_fetch_batches(store *s, store_batch_feed *feed, ofs_error *err)
{
    imap_store *is = istore(s);
    if (istore_need_folder(is, "fetching messages", err) < 0 || istore_begin(is, err) < 0)
        return -1;
    body_batch q[2];
    size_t nq = 0;
    int rc = 0;
    bool more = true;
    while (rc == 0 && (more || nq)) {
        const store_msg *msgs;
        size_t n;
        int got = more && nq < 2 ? feed->next(feed->sink.ctx, &msgs, &n, err) : 0;
        if (got < 0 || (got && istore_batch_ask(is, msgs, n, &feed->sink, &q[nq++], err) < 0))
            rc = -1;
        more = more && got > 0;
        if (rc == 0 && (nq == 2 || (!more && nq))) {
            rc = istore_batch_wait(is, &q[0], err);
            q[0] = q[1];
            nq--;
        }
    }
    if (rc < 0)
        imap_bodies_abandon(is->c);
    for (size_t i = 0; i < nq; i++)
        free(q[i].wire);
    return rc < 0 ? err_prefix(err, "folder %s", is->cur) : 0;
}

/* A range asked for: pre bytes of it came from the listing's prefetched prefix; sent: the rest
 * is on the wire (else the prefix covered it all). */
typedef struct range_slot {
    store_range r;
    uint64_t pre;
    bool sent;
} range_slot;

typedef struct range_queue {
    range_slot v[IMAP_PIPELINE_WINDOW];
    size_t n;
    uint64_t bytes; /* asked for and not yet handed back */
} range_queue;

static int write_all(int fd, const char *data, size_t len, ofs_error *err)
{
    for (size_t off = 0; off < len;) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return err_errno(err, OFS_E_IO, errno, "cannot write a partial file");
        off += (size_t)w;
    }
    return 0;
}

/* Asks for r: a new message's first bytes prefetched with the listing are written from memory,
 * and only the rest goes on the wire. */
static int istore_range_ask(imap_store *is, range_queue *q, const store_range *r, ofs_error *err)
{
    range_slot *sl = &q->v[q->n];
    *sl = (range_slot){.r = *r};
    const imap_body *b = r->offset == 0 ? imap_bodies_find(&is->bodies, r->m->uid) : NULL;
    if (b && b->len < b->size) {
        sl->pre = b->len < r->len ? b->len : r->len;
        if (write_all(r->fd, b->data, sl->pre, err) < 0)
            return -1;
    }
    if (sl->pre < r->len) {
        imap_range ir = {
            .uid = r->m->uid, .offset = r->offset + sl->pre, .len = r->len - sl->pre, .fd = r->fd};
        if (imap_range_send(is->c, &ir, err) < 0)
            return -1;
        sl->sent = true;
    }
    q->n++;
    q->bytes += r->len;
    return 0;
}

/* The oldest range, answered. */
static int istore_range_take(imap_store *is, range_queue *q, store_range *out, ofs_error *err)
{
    range_slot sl = q->v[0];
    memmove(q->v, q->v + 1, --q->n * sizeof *q->v);
    q->bytes -= sl.r.len;
    *out = sl.r;
    out->got = out->held = sl.pre;
    out->gone = false;
    if (!sl.sent)
        return 0;
    imap_range ir;
    if (imap_range_wait(is->c, &ir, err) < 0)
        return -1;
    out->got += ir.got;
    out->gone = ir.gone;
    return 0;
}

/* Refills when half the window arrived, so requests leave in bursts: one round trip per
 * burst, and the link never idles while the window holds at least one range. */
static int istore_range_refill(imap_store *is, range_queue *q, store_range_feed *feed, bool *more,
                               ofs_error *err)
{
    if (q->n && q->bytes > feed->window / 2)
        return 0;
    while (*more && q->n < IMAP_PIPELINE_WINDOW && (!q->n || q->bytes < feed->window)) {
        store_range r = {0};
        int rc = feed->next(feed->ctx, &r, err);
        if (rc < 0)
            return -1;
        if (rc == 0) {
            *more = false;
            break;
        }
        if (istore_range_ask(is, q, &r, err) < 0)
            return -1;
    }
    return imap_ranges_flush(is->c, err);
}

static int istore_fetch_ranges(store *s, store_range_feed *feed, ofs_error *err)
{
    imap_store *is = istore(s);
    if (istore_need_folder(is, "fetching a message", err) < 0 || istore_begin(is, err) < 0)
        return -1;
    range_queue *q = xcalloc(1, sizeof *q);
    int rc = 0;
    ofs_error later = {0};
    for (;;) {
        bool more = true;
        if (rc == 0 && istore_range_refill(is, q, feed, &more, err) < 0)
            rc = -1; /* what was asked for and has arrived is still handed back */
        if (!q->n)
            break;
        store_range r;
        ofs_error *e = rc < 0 ? &later : err;
        if (istore_range_take(is, q, &r, e) < 0 || feed->done(feed->ctx, &r, e) < 0) {
            rc = -1;
            break;
        }
    }
    if (rc < 0)
        imap_ranges_abandon(is->c);
    free(q);
    return rc < 0 ? err_prefix(err, "folder %s", is->cur) : 0;
}

static int istore_store_message(store *s, int fd, uint64_t size, unsigned flags, store_msg *out,
                                ofs_error *err)
{
    imap_store *is = istore(s);
    if (istore_need_folder(is, "storing a message", err) < 0 || istore_begin(is, err) < 0)
        return -1;
    uint32_t uv, uid;
    if (imap_append(is->c, is->cur_server, fd, size, flags, &uv, &uid, err) < 0)
        return err_prefix(err, "folder %s", is->cur);
    out->uid = (uid && uv == is->uidvalidity) ? uid : 0;
    out->flags = flags & FLAG_ALL;
    out->size = size;
    return 0;
}

static int istore_store_messages(store *s, store_upload *v, size_t n, ofs_error *err)
{
    imap_store *is = istore(s);
    if (istore_need_folder(is, "storing messages", err) < 0 || istore_begin(is, err) < 0)
        return -1;
    imap_upload *u = xcalloc(n ? n : 1, sizeof *u);
    for (size_t i = 0; i < n; i++)
        u[i] = (imap_upload){.fd = v[i].fd, .size = v[i].size, .flags = v[i].flags};
    int rc = imap_append_many(is->c, is->cur_server, u, n, err);
    for (size_t i = 0; i < n; i++) {
        v[i].ok = u[i].ok;
        v[i].uid = (u[i].uid && u[i].uidvalidity == is->uidvalidity) ? u[i].uid : 0;
    }
    free(u);
    return rc < 0 ? err_prefix(err, "folder %s", is->cur) : 0;
}

static int istore_flush(store *s, ofs_error *err)
{
    return 0; /* every APPEND is complete when the server answers it */
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* The sorted, distinct, non-zero UIDs of msgs; malloc'd. */
static uint32_t *istore_uids(const store_msg *msgs, size_t n, size_t *out_n)
{
    uint32_t *u = xmalloc((n ? n : 1) * sizeof *u);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (msgs[i].uid)
            u[k++] = msgs[i].uid;
    if (k)
        qsort(u, k, sizeof *u, cmp_u32);
    size_t d = 0;
    for (size_t i = 0; i < k; i++)
        if (d == 0 || u[i] != u[d - 1])
            u[d++] = u[i];
    *out_n = d;
    return u;
}

static int istore_set_flags(store *s, const store_msg *msgs, size_t n, unsigned add, unsigned del,
                            ofs_error *err)
{
    imap_store *is = istore(s);
    if (istore_need_folder(is, "changing flags", err) < 0 || istore_begin(is, err) < 0)
        return -1;
    size_t k;
    uint32_t *u = istore_uids(msgs, n, &k);
    int r = imap_store_flag_changes(is->c, u, k, add, del, err);
    free(u);
    return r < 0 ? err_prefix(err, "folder %s", is->cur) : 0;
}

static int istore_remove_messages(store *s, const store_msg *msgs, size_t n, ofs_error *err)
{
    imap_store *is = istore(s);
    if (istore_need_folder(is, "removing messages", err) < 0 || istore_begin(is, err) < 0)
        return -1;
    size_t k;
    uint32_t *u = istore_uids(msgs, n, &k);
    int r = imap_store_flags(is->c, u, k, true, FLAG_DELETED, err);
    if (r == 0)
        r = imap_expunge_uids(is->c, u, k, err);
    free(u);
    return r < 0 ? err_prefix(err, "folder %s", is->cur) : 0;
}

static void istore_begin_batch(store *s)
{
    imap_batch_begin(istore(s)->c);
}

static int istore_end_batch(store *s, ofs_error *err)
{
    imap_store *is = istore(s);
    if (imap_batch_end(is->c, err) < 0)
        return is->cur ? err_prefix(err, "folder %s", is->cur) : -1;
    return 0;
}

static void istore_close(store *s)
{
    imap_store *is = istore(s);
    ofs_error ignored;
    imap_logout(is->c, &ignored); /* best effort: the server cleans up either way */
    imap_client_free(is->c);
    free(is->host);
    free(is->cur);
    free(is->cur_server);
    imap_bodies_clear(&is->bodies);
    istore_status_clear(is);
    free(is);
}

static const store_ops imap_store_ops = {
    .side = "server",
    .list_folders = istore_list_folders,
    .create_folder = istore_create_folder,
    .rename_folder = istore_rename_folder,
    .delete_folder = istore_delete_folder,
    .open_folder = istore_open_folder,
    .list_messages = istore_list_messages,
    .fetch_messages = istore_fetch_messages,
    .fetch_ranges = istore_fetch_ranges,
    .fetch_batches = istore_fetch_batches,
    .store_message = istore_store_message,
    .store_messages = istore_store_messages,
    .flush = istore_flush,
    .set_flags = istore_set_flags,
    .remove_messages = istore_remove_messages,
    .close = istore_close,
    .prefetch_status = istore_prefetch_status,
    .folder_status = istore_folder_status,
    .open_folder_changes = istore_open_folder_changes,
    .begin_batch = istore_begin_batch,
    .end_batch = istore_end_batch,
};

static void istore_activity(void *ctx, double idle)
{
    imap_store *is = ctx;
    buf b;
    buf_init(&b);
    buf_adds(&b, "");
    imap_doing(is->c, is->cur, &b);
    is->activity(is->activity_ctx, idle, b.data);
    buf_free(&b);
}

void imap_store_counters(store *s, uint64_t *in, uint64_t *out, uint64_t *round_trips)
{
    imap_store *is = istore(s);
    imap_byte_counts(is->c, in, out);
    *round_trips = imap_round_trips(is->c);
}

int imap_store_open(const imap_store_opts *o, store **out, ofs_error *err)
{
    /* Loopback never leaves the machine, so it needs no TLS (and the tests rely on it). */
    bool plain = o->tls == CFG_TLS_NONE;
    if (plain && !o->allow_plaintext && !imap_host_is_loopback(o->host))
        return err_set(err, OFS_E_CONFIG,
                       "tls = none would send the password for %s to %s in clear: use "
                       "tls = implicit or starttls, or set allow-plaintext = yes",
                       o->user, o->host);
    imap_open_opts oo = {.host = o->host,
                         .port = o->port,
                         .timeout = o->timeout,
                         .tls = plain                        ? IMAP_TLS_NONE
                                : o->tls == CFG_TLS_STARTTLS ? IMAP_TLS_STARTTLS
                                                             : IMAP_TLS_IMPLICIT,
                         .ca_file = o->ca_file,
                         .fingerprint = o->fingerprint,
                         .trace = o->trace,
                         .trace_ctx = o->trace_ctx};
    imap_auth_opts ao = {.user = o->user,
                         .secret = o->password,
                         .mechs = o->auth,
                         .port = o->port,
                         .plaintext_ok = plain};
    imap_client *c;
    if (imap_open(&oo, &c, err) < 0)
        return -1;
    imap_store *is = xcalloc(1, sizeof *is);
    is->base.ops = &imap_store_ops;
    is->c = c;
    is->host = xstrdup(o->host);
    is->activity = o->activity;
    is->activity_ctx = o->activity_ctx;
    is->keepalive = o->timeout > 0 ? o->timeout : 60;
    if (o->activity)
        imap_set_activity(c, istore_activity, is);
    if (imap_authenticate(c, &ao, err) < 0 || (o->compress && imap_compress(c, err) < 0) ||
        imap_enable(c, err) < 0) {
        imap_client_free(c);
        free(is->host);
        free(is);
        return -1;
    }
    *out = &is->base;
    return 0;
}

/* ---- for push (watch): the connection under the store and the server's folder names ---- */

imap_client *imap_store_client(store *s)
{
    return istore(s)->c;
}

int imap_store_server_name(store *s, const char *canon, char **out, ofs_error *err)
{
    return name_to_server(istore(s), canon, out, err);
}
