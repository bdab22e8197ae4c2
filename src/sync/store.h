/* store.h: the one interface both mail stores implement, the IMAP server and the local Maildir.
 * The sync engine sees folders and messages only through it (isync's driver split). */
#ifndef OFS_SYNC_STORE_H
#define OFS_SYNC_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "ofsync.h"
#include "util/arena.h"
#include "util/mem.h"
#include "util/uidset.h"

/* System flags, as a bit set. Maildir letters: S R F T D. IMAP: \Seen \Answered ... */
enum {
    FLAG_SEEN = 1u << 0,     /* S  \Seen */
    FLAG_ANSWERED = 1u << 1, /* R  \Answered */
    FLAG_FLAGGED = 1u << 2,  /* F  \Flagged */
    FLAG_DELETED = 1u << 3,  /* T  \Deleted */
    FLAG_DRAFT = 1u << 4,    /* D  \Draft */
    FLAG_ALL = (1u << 5) - 1,
};

/* One message as a store lists it. The server fills uid, the Maildir fills key.
 * Folder names everywhere in this interface are canonical: UTF-8, '/' between levels,
 * "INBOX" for the inbox. Each store maps them to its own form and refuses unsafe ones. */
typedef struct store_msg {
    uint32_t uid;   /* server: UID; local: 0 */
    unsigned flags; /* FLAG_* */
    char *key;      /* local: Maildir base name (stable across flag renames); server: NULL */
    uint64_t size;  /* bytes, or 0 when the store did not need to look (Maildir scan) */
    char *msgid;    /* Message-ID header value, only when asked for (store_list_opts) */
    uint64_t stamp; /* local: the file's size, mtime and inode mixed, when asked for; a rename
                       (flags) keeps it, rewriting the file changes it. 0: not known */
} store_msg;

/* An order-free fingerprint of a folder's messages by key, flags and file stamp: equal digests
 * of a folder and of the sync state mean the same files with the same flags, not rewritten,
 * without holding either in memory. */
typedef struct store_digest {
    uint64_t sum, count;
} store_digest;

void store_digest_add(store_digest *d, const char *key, size_t key_len, unsigned flags,
                      uint64_t stamp);

/* A list owns its keys one by one (keys_from NULL), or every key lives in the arena keys_from,
 * which the list holds: a Maildir listing borrows the scan's names instead of copying them. */
typedef struct store_msg_list {
    store_msg *v;
    size_t n, cap;
    ofs_arena *keys_from;
} store_msg_list;

void store_msg_list_init(store_msg_list *l);
void store_msg_list_free(store_msg_list *l);
/* Appends a zeroed message and returns it. */
store_msg *store_msg_list_push(store_msg_list *l);
/* Room for n more messages without growing. */
void store_msg_list_reserve(store_msg_list *l, size_t n);
/* From now on l's keys live in a (l holds it); only while l is empty. */
void store_msg_list_borrow_keys(store_msg_list *l, ofs_arena *a);
/* A key for a message of l: s[0..n) copied where l keeps its keys. */
char *store_msg_list_key(store_msg_list *l, const char *s, size_t n);

typedef struct store_folder_info {
    uint32_t uidvalidity; /* server: UIDVALIDITY; local: 0 */
    uint32_t uidnext;     /* server: UIDNEXT (0 when the server did not say) */
    uint64_t highestmodseq;
    uint32_t exists;
} store_folder_info;

typedef struct store_list_opts {
    uint32_t since_uid; /* server: list only UIDs >= this (0: all) */
    bool want_msgid;    /* server: also fetch the Message-ID header */
    bool want_size;     /* both: fill size */
    bool want_stamp;    /* local: fill stamp (one stat per file) */
} store_list_opts;

/* Where fetched message bytes go. open() is called once per message before its bytes,
 * returns a writable fd (or -1 after filling err); done() is called when the whole message
 * has been written to that fd, with the message's flags and size. */
typedef struct store_sink {
    int (*open)(void *ctx, const store_msg *m, uint64_t size, ofs_error *err);
    int (*done)(void *ctx, const store_msg *m, int fd, uint64_t size, ofs_error *err);
    void *ctx;
} store_sink;

/* open_folder_changes' question and answer. */
typedef struct store_changes {
    uint32_t uidvalidity; /* in: as recorded by the last complete pass; 0: none */
    uint64_t modseq;
    uint32_t list_from;     /* in: list messages from this UID on (flags, size) */
    uint32_t expect_new;    /* in: new messages the folder's status announced (0: unknown); when
                               few, small ones may be fetched whole with the listing */
    store_msg_list changed; /* out: flags changed since modseq (or new): uid, flags */
    uidset vanished;        /* out: expunged since modseq */
    store_msg_list listed;  /* out: see open_folder_changes */
} store_changes;

/* One message for store_messages. */
typedef struct store_upload {
    int fd; /* positioned at 0 */
    uint64_t size;
    unsigned flags;
    bool ok;      /* out: stored */
    uint32_t uid; /* out: server: its UID, 0 when the server did not say */
} store_upload;

/* One range of a big message for fetch_ranges. */
typedef struct store_range {
    const store_msg *m;
    uint64_t offset, len;
    int fd;        /* holds exactly offset bytes of m when the range's bytes come */
    void *ctx;     /* the caller's */
    double asked;  /* the caller's: when next() handed it out */
    uint64_t got;  /* out: bytes of the range received, fewer than len at the message's end */
    uint64_t held; /* out: of those, bytes the store held already (no time on the link) */
    bool gone;     /* out: the message is no longer there */
} store_range;

/* The caller's side of fetch_ranges. */
typedef struct store_range_feed {
    /* 1: *r filled with the next range to ask for; 0: none for now (asked again after the
     * next done, and the fetch ends when none is in flight); -1: error. */
    int (*next)(void *ctx, store_range *r, ofs_error *err);
    /* Range r was answered (got, gone); -1 ends the fetch. */
    int (*done)(void *ctx, store_range *r, ofs_error *err);
    void *ctx;
    uint64_t window; /* bytes asked for and not yet answered, at most (read at each refill) */
} store_range_feed;

/* The caller's side of fetch_batches. */
typedef struct store_batch_feed {
    /* 1: *msgs and *n set to the next batch to ask for (valid until next is called again: the
     * store copies what it keeps); 0: no more; -1: error. */
    int (*next)(void *ctx, const store_msg **msgs, size_t *n, ofs_error *err);
    store_sink sink; /* every batch's messages, in the order they arrive; its ctx is next's */
} store_batch_feed;

typedef struct store store;

typedef struct store_ops {
    const char *side; /* "server" or "local", for messages */
    /* Every selectable folder, canonical names. A folder whose name cannot be mapped safely
     * is left out and one line saying why goes into refused (the pass goes on without it). */
    int (*list_folders)(store *s, strlist *out, strlist *refused, ofs_error *err);
    int (*create_folder)(store *s, const char *name, ofs_error *err);
    /* Renames a folder, and the folders below it with it (IMAP RENAME semantics). */
    int (*rename_folder)(store *s, const char *from, const char *to, ofs_error *err);
    /* Deletes a folder and the messages in it; folders below it stay. Missing is fine. */
    int (*delete_folder)(store *s, const char *name, ofs_error *err);
    /* Makes name the current folder; the message operations below act on it. */
    int (*open_folder)(store *s, const char *name, store_folder_info *info, ofs_error *err);
    /* Optional (local side): open_folder without reading the folder, for a caller whose state
     * already says what it holds. The message operations then find each message by the key and
     * flags they are given; the first that is not where those say reads the folder after all. */
    int (*open_folder_unread)(store *s, const char *name, ofs_error *err);
    int (*list_messages)(store *s, const store_list_opts *o, store_msg_list *out, ofs_error *err);
    /* The local store's: calls fn with each message key of the current folder as it is now,
     * holding nothing (a second look without a second listing). */
    int (*each_key)(store *s, void (*fn)(const char *key, size_t len, void *arg), void *arg,
                    ofs_error *err);
    /* Optional (local side): calls fn with each message of the current folder as the listing
     * gives it (key, flags, stamp; size with want_size), one at a time, holding nothing. The
     * message and its key are valid during the call only. */
    int (*each_message)(store *s, const store_list_opts *o,
                        void (*fn)(const store_msg *m, void *arg), void *arg, ofs_error *err);
    /* Copies messages out, in the order given, through the sink. A message that vanished
     * meanwhile is skipped (sink not called) rather than failing the batch. */
    int (*fetch_messages)(store *s, const store_msg *msgs, size_t n, const store_sink *sink,
                          ofs_error *err);
    /* Server only (NULL on the local side): fetches the ranges feed->next hands out, several
     * in flight (feed->window), each appended to its fd as it arrives, so that after a cut
     * every fd holds every byte received; feed->done sees each answered, in the order asked. */
    int (*fetch_ranges)(store *s, store_range_feed *feed, ofs_error *err);
    /* Optional: fetch_messages for each batch feed->next hands out, the next one asked for
     * while the one before streams (two in flight at most), so the link does not idle between
     * them. A message that vanished meanwhile is skipped. */
    int (*fetch_batches)(store *s, store_batch_feed *feed, ofs_error *err);
    /* Stores size bytes read from fd (positioned at 0) as a new message in the current folder.
     * Fills out->uid (server, 0 when the server does not say: no UIDPLUS) or out->key (local).
     * The local side makes it visible and durable only at flush(). */
    int (*store_message)(store *s, int fd, uint64_t size, unsigned flags, store_msg *out,
                         ofs_error *err);
    /* Optional: store_message for v[0..n) in order, in as few round trips as the store can.
     * v[i].ok says which were stored (uid as store_message fills it); the first failure is
     * returned after the others were tried. */
    int (*store_messages)(store *s, store_upload *v, size_t n, ofs_error *err);
    /* Makes every message stored since the last flush durable and visible. */
    int (*flush)(store *s, ofs_error *err);
    /* Adds and removes flags on the given messages. */
    int (*set_flags)(store *s, const store_msg *msgs, size_t n, unsigned add, unsigned del,
                     ofs_error *err);
    /* Removes the given messages for good (server: \Deleted + UID EXPUNGE, or a safe fallback). */
    int (*remove_messages)(store *s, const store_msg *msgs, size_t n, ofs_error *err);
    void (*close)(store *s); /* frees the store */

    /* ---- optional (NULL when a store cannot): what makes a no-change pass cheap ---- */
    /* Gathers the status (UIDVALIDITY, UIDNEXT, MESSAGES as exists, HIGHESTMODSEQ) of the named
     * folders in as few round trips as it can, for folder_status to answer. */
    int (*prefetch_status)(store *s, const strlist *names, ofs_error *err);
    /* 0 and info filled when a status with a modseq is known for name, 1 when it is not. */
    int (*folder_status)(store *s, const char *name, store_folder_info *info);
    /* open_folder that also reports what changed since the last complete pass and lists the
     * newer messages, in as few round trips as it can (see store_changes). Returns 0 when
     * changed, vanished and listed (from list_from on) say everything, 1 when it could not
     * tell what changed (no QRESYNC, no uidvalidity/modseq given, a new UIDVALIDITY): then
     * listed holds every message of the folder. */
    int (*open_folder_changes)(store *s, const char *name, store_changes *ch,
                               store_folder_info *info, ofs_error *err);
    /* set_flags and remove_messages between these two may only be queued: they take effect,
     * and their failures are reported, at end_batch (the first failure; the others stand). */
    void (*begin_batch)(store *s);
    int (*end_batch)(store *s, ofs_error *err);
    /* A short text that changes whenever the folder's messages or their flags may have changed,
     * malloc'd; NULL when it cannot be told now (then the folder is scanned). */
    char *(*folder_mark)(store *s, const char *name);
    /* The folder's mark (as folder_mark; NULL with *d untouched when it cannot be told now)
     * and, read after it, the digest of its messages' keys, flags and stamps (store_digest_add). */
    char *(*folder_digest)(store *s, const char *name, store_digest *d);
} store_ops;

struct store {
    const store_ops *ops;
};

#endif
