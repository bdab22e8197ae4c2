/* maildir.h: one Maildir folder: scanning cur/ and new/, batched delivery, flag renames, removal.
 * Mail readers rename files under us at any time; every operation tolerates that. */
#ifndef OFS_MAILDIR_MAILDIR_H
#define OFS_MAILDIR_MAILDIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ofsync.h"
#include "util/arena.h"

/* One message file, its name kept in the folder's arena as two strings: the key (the stable
 * part, before ":2,"), a NUL, then the rest of the name (":2,FS", "!2,S", or "" in new/). */
typedef struct maildir_entry {
    char *key;        /* NUL-terminated, in md->names: a listing may borrow it */
    uint32_t key_len; /* strlen(key) */
    uint8_t flags;    /* FLAG_* from the info letters (always 0 in new/) */
    bool in_cur;      /* false: the file is in new/ */
    bool gone;        /* we removed it; the slot stays until the next scan */
} maildir_entry;

/* The rest of e's file name after its key: e's name is key followed by this. */
const char *maildir_entry_rest(const maildir_entry *e);

/* A message written to tmp/ and waiting for maildir_flush() to become visible. */
typedef struct maildir_pending {
    char *key;
    unsigned flags;
    int fd; /* still open for a per-file fsync, or -1 (then flush uses syncfs) */
} maildir_pending;

typedef struct maildir {
    char *path;       /* the folder directory (holding cur/ new/ tmp/) */
    int dfd;          /* open on path: every file operation is relative to it */
    ofs_arena *names; /* every entry's name; a rename or rescan adds, a rescan starts anew */
    maildir_entry *v;
    size_t n, cap, live;
    uint32_t *slots; /* open-addressing table of entry index + 1 (0: empty), by key */
    size_t nslots;
    size_t dupes;       /* duplicate keys found by the last scan (one copy is kept) */
    char *dupe_example; /* relative path of one ignored duplicate, for the report */
    maildir_pending *pend;
    size_t npend, cappend;
    bool dirty_cur, dirty_new; /* renames or unlinks since the last directory fsync */
    bool scanned;              /* false: opened unread; the table holds only what was found */
    uint64_t last_stamp;       /* the stamp of the file the last maildir_deliver wrote */
    char *iobuf;
} maildir;

/* Opens the folder at path (which must exist), creating any of cur/ new/ tmp/ it lacks,
 * and scans it. */
int maildir_open(const char *path, maildir **out, ofs_error *err);
/* Opens the folder without reading it, for a caller that knows its messages: each operation
 * finds its file by the name its key and flags give (maildir_name_with_flags, in cur/, or the
 * bare key in new/), and the first miss reads the folder after all. */
int maildir_open_unread(const char *path, maildir **out, ofs_error *err);
/* Frees md; messages stored but never flushed are removed from tmp/. NULL is fine. */
void maildir_close(maildir *md);

/* Re-reads cur/ and new/ (one readdir pass each, no stat per file). */
int maildir_scan(maildir *md, ofs_error *err);

/* Calls fn on each message file name in cur/ (cur true) or new/ of the Maildir open as dfd,
 * skipping dot files and directories; path names it in errors. Holds nothing. */
typedef void (*maildir_name_fn)(const char *name, bool cur, void *arg);
int maildir_walk(int dfd, const char *path, bool cur, maildir_name_fn fn, void *arg,
                 ofs_error *err);
/* The live entry with this key, or NULL. Pointers are valid until the next call that changes md. */
const maildir_entry *maildir_find(const maildir *md, const char *key);
/* The path of e, malloc'd. */
char *maildir_entry_path(const maildir *md, const maildir_entry *e);
/* Message size from a ",S=<bytes>" field in the key (Dovecot writes one), else by stat; 0 if gone.
 */
uint64_t maildir_entry_size(const maildir *md, const maildir_entry *e);
/* The file's stamp (size, mtime, inode mixed; see store_msg.stamp), 0 if gone. */
uint64_t maildir_entry_stamp(const maildir *md, const maildir_entry *e);
struct stat;
uint64_t maildir_stat_stamp(const struct stat *st);

/* Name parsing, exposed for tests. Returns the key length of a file name; *info points just
 * after ":2," (or "!2,") or is NULL when the name has no info. */
size_t maildir_key_len(const char *name, const char **info);
unsigned maildir_info_flags(const char *info);
/* The name of a file in cur/ carrying flags: known letters replaced, unknown letters kept,
 * all in ASCII order ("FPRS"). name may be a bare key. malloc'd. */
char *maildir_name_with_flags(const char *name, unsigned flags);
/* A fresh unique key: <sec>.M<usec>P<pid>Q<counter>.<host>, malloc'd. */
char *maildir_new_key(void);

/* These return 0 when done, 1 when the message vanished (after one rescan to follow a
 * concurrent rename), -1 on error. flags: what the caller knows the message's flags to be,
 * which names its file in a folder opened unread (maildir_open_unread). */
int maildir_set_flags(maildir *md, const char *key, unsigned flags, unsigned add, unsigned del,
                      ofs_error *err);
int maildir_remove(maildir *md, const char *key, unsigned flags, ofs_error *err);
/* Opens the message for reading; *got gets its current flags. */
int maildir_open_message(maildir *md, const char *key, unsigned flags, int *fd, unsigned *got,
                         ofs_error *err);

/* Copies size bytes from fd (until EOF when size is 0) into tmp/, without fsync.
 * *key gets the new key (malloc'd); *written the byte count. Visible only after flush. */
int maildir_deliver(maildir *md, int fd, uint64_t size, unsigned flags, char **key,
                    uint64_t *written, ofs_error *err);
/* Makes the batch durable (fsync of the files, or syncfs), renames each into cur/ or new/,
 * then fsyncs those directories; also makes earlier renames and unlinks durable. */
int maildir_flush(maildir *md, ofs_error *err);

#endif
