/* client.h: a synchronous IMAP client over one connection: commands, responses, capabilities.
 * Mailbox names here are the server's own bytes (modified UTF-7); imap_store.c maps them. */
#ifndef OFS_IMAP_CLIENT_H
#define OFS_IMAP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imap/parse.h"
#include "imap/transport.h"
#include "imap/trace.h"
#include "ofsync.h"
#include "sync/store.h"
#include "util/mem.h"
#include "util/uidset.h"

typedef struct imap_client imap_client;

/* Longest UID set put in one command, so a command line stays under 8 KiB (RFC 7162 3.2.1). */
#define IMAP_UIDSET_MAX 7000

typedef struct imap_mailbox_info {
    uint32_t uidvalidity;
    uint32_t uidnext;       /* 0 when the server did not say */
    uint64_t highestmodseq; /* 0 without CONDSTORE or with NOMODSEQ */
    uint32_t exists;
    bool readonly;
} imap_mailbox_info;

typedef struct imap_list_entry {
    char *name;      /* server bytes */
    char delim;      /* hierarchy delimiter, '\0' for a flat name (NIL) */
    bool selectable; /* false for \Noselect and \NonExistent */
    bool has_status; /* LIST-STATUS answered for it: status is filled */
    imap_mailbox_info status;
} imap_list_entry;

/* Commands in flight at once when pipelining (STATUS, STORE, APPEND). */
#define IMAP_PIPELINE_WINDOW 64

enum imap_tls_mode { IMAP_TLS_IMPLICIT = 0, IMAP_TLS_STARTTLS, IMAP_TLS_NONE };

typedef struct imap_open_opts {
    const char *host;
    int port;
    int timeout;             /* seconds without data */
    int tls;                 /* enum imap_tls_mode */
    const char *ca_file;     /* TLS trust: this bundle instead of the system store */
    const char *fingerprint; /* TLS trust: "SHA256:..." pin instead of a CA */
    imap_trace_fn trace;     /* protocol trace (secrets masked), or NULL */
    void *trace_ctx;
} imap_open_opts;

/* Connects (TLS first for IMAP_TLS_IMPLICIT), reads the greeting, upgrades with STARTTLS for
 * IMAP_TLS_STARTTLS (a server without it is an error, never a downgrade), reads the
 * capabilities. */
int imap_open(const imap_open_opts *o, imap_client **out, ofs_error *err);
/* imap_open without TLS. */
int imap_connect(const char *host, int port, int timeout, imap_client **out, ofs_error *err);
void imap_client_free(imap_client *c); /* closes without LOGOUT; NULL is fine */

/* Case-insensitive lookup of a capability such as "UIDPLUS" or "AUTH=PLAIN". */
bool imap_has_cap(const imap_client *c, const char *cap);
const char *imap_host(const imap_client *c);
/* Bytes read from and written to the socket so far. */
void imap_byte_counts(const imap_client *c, uint64_t *in, uint64_t *out);
/* Commands (or literals) after which the client waited for the server. */
uint64_t imap_round_trips(const imap_client *c);
/* True once the server confirmed ENABLE UTF8=ACCEPT: names travel as UTF-8, not mUTF-7. */
bool imap_utf8_enabled(const imap_client *c);
/* Installs the transport's activity hook (see imap_activity_fn). */
void imap_set_activity(imap_client *c, imap_activity_fn fn, void *ctx);
/* Appends what the client is doing, for a person: "fetching INBOX UID 4711". mailbox is the
 * name to show for the selected folder (the caller's, UTF-8). */
void imap_doing(const imap_client *c, const char *mailbox, buf *out);
/* The name of the selected folder for people (UTF-8), so that a link error can say what was
 * going on: "no data from HOST for 60 s while fetching INBOX UID 4711". NULL clears it. */
void imap_set_label(imap_client *c, const char *mailbox);

/* NOOP when nothing was heard from the server for idle seconds: a link that died while we
 * worked locally is found by a cheap command, not in the middle of the next APPEND. */
int imap_keepalive(imap_client *c, int idle, ofs_error *err);

/* True when the connection runs over TLS. */
bool imap_is_tls(const imap_client *c);

typedef struct imap_auth_opts {
    const char *user;
    const char *secret; /* password, or an OAuth token for xoauth2/oauthbearer */
    const char *mechs;  /* the account's `auth` value; NULL: plain login */
    int port;           /* for OAUTHBEARER's port= */
    bool plaintext_ok;  /* credentials may go over a connection without TLS */
} imap_auth_opts;

/* The first allowed SASL mechanism the server offers (SASL-IR when possible); the LOGIN
 * command when a password mechanism is allowed but none is offered. Refreshes capabilities.
 * A refusal is OFS_E_AUTH, reported once: no other mechanism is tried after a NO.
 * No-op after PREAUTH. */
int imap_authenticate(imap_client *c, const imap_auth_opts *o, ofs_error *err);
/* imap_authenticate with plain/login and plaintext allowed. */
int imap_login(imap_client *c, const char *user, const char *password, ofs_error *err);

/* LIST "" pattern; *out is a malloc'd array of n entries (free with imap_list_free). */
int imap_list(imap_client *c, const char *pattern, imap_list_entry **out, size_t *n,
              ofs_error *err);
void imap_list_free(imap_list_entry *v, size_t n);
/* LIST with, when want_status and the server offers LIST-STATUS (RFC 5819), each folder's
 * status in the same round trip (entries' has_status). */
int imap_list_ex(imap_client *c, const char *pattern, bool want_status, imap_list_entry **out,
                 size_t *n, ofs_error *err);
/* The STATUS items this server can answer: HIGHESTMODSEQ only with CONDSTORE. */
const char *imap_status_items(const imap_client *c);
/* STATUS of each name, pipelined (one round trip for a window of folders). ok[i] says whether
 * names[i] was answered; a refused folder is not an error. */
int imap_status_many(imap_client *c, const char *const *names, size_t n, imap_mailbox_info *out,
                     bool *ok, ofs_error *err);

/* Sends ENABLE QRESYNC (or CONDSTORE) when offered, without waiting: the ENABLED answer is
 * read with the next command's responses. */
int imap_enable(imap_client *c, ofs_error *err);
/* COMPRESS DEFLATE (RFC 4978) when offered; a refusal is not an error. Call with no command
 * in flight. */
int imap_compress(imap_client *c, ofs_error *err);
bool imap_compressed(const imap_client *c);
/* QRESYNC has been ENABLEd on this connection. */
bool imap_qresync(const imap_client *c);
/* Messages' bytes that came with a listing (imap_select_opts.body_max): small ones whole,
 * bigger ones their first body_max bytes (len < size). */
typedef struct imap_body {
    uint32_t uid;
    unsigned flags;
    char *data;
    size_t len;
    uint64_t size; /* the whole message's */
} imap_body;

typedef struct imap_bodies {
    imap_body *v;
    size_t n, cap;
} imap_bodies;

void imap_bodies_add(imap_bodies *b, uint32_t uid, unsigned flags, const char *data, size_t len,
                     uint64_t size);
const imap_body *imap_bodies_find(const imap_bodies *b, uint32_t uid);
void imap_bodies_clear(imap_bodies *b);
/* Writes a body taken with a listing through the sink, as imap_fetch_bodies would (m: the
 * caller's message; uid, size and flags as the listing said). */
int imap_body_deliver(imap_client *c, const imap_body *b, const store_msg *m,
                      const store_sink *sink, ofs_error *err);

typedef struct imap_select_opts {
    bool qresync; /* SELECT mbox (QRESYNC (uidvalidity modseq)); else (CONDSTORE) if offered */
    uint32_t uidvalidity;
    uint64_t modseq;
    uint32_t list_from; /* non-zero: UID FETCH list_from:* (UID FLAGS RFC822.SIZE), pipelined */
    uint32_t body_max;  /* non-zero: and BODY.PEEK[]<0.body_max>: messages up to it come whole */
} imap_select_opts;

typedef struct imap_select_out {
    store_msg_list *changed; /* QRESYNC: messages whose flags changed since modseq (uid, flags) */
    uidset *vanished;        /* QRESYNC: UIDs expunged since */
    store_msg_list *listed;  /* list_from: the messages from that UID on, in UID order */
    imap_bodies *bodies;     /* body_max: the listed messages' bodies, or their first bytes */
} imap_select_out;

/* SELECT, and the listing of o->list_from:* sent with it in one burst. The SELECT's completion
 * is checked before anything the listing said is kept: a failed SELECT fails the whole. With
 * QRESYNC, a different UIDVALIDITY makes it a plain SELECT: check info->uidvalidity. */
int imap_select_list(imap_client *c, const char *mbox, const imap_select_opts *o,
                     imap_mailbox_info *info, imap_select_out *out, ofs_error *err);

/* SELECT (readonly: EXAMINE). On failure no mailbox is selected. */
int imap_select(imap_client *c, const char *mbox, bool readonly, imap_mailbox_info *info,
                ofs_error *err);
/* What the server said about the selected mailbox so far (EXISTS follows new mail). */
const imap_mailbox_info *imap_selected(const imap_client *c);

/* UID FETCH first:last (UID FLAGS [RFC822.SIZE] [Message-ID header]); last 0 means '*'.
 * Appends messages with uid >= first to out, in server order. */
int imap_fetch_meta(imap_client *c, uint32_t first, uint32_t last, bool want_size, bool want_msgid,
                    store_msg_list *out, ofs_error *err);

/* UID FETCH (UID FLAGS BODY.PEEK[]) of msgs[].uid, streaming each body to the sink's fd.
 * UIDs strictly ascending; long sets are split. A message the server no longer has is skipped.
 * The sink sees uid (0 in open() if the server puts UID after the body), flags, size and the
 * caller's msgid. A failing sink ends the connection (the rest of the batch is unread). */
int imap_fetch_bodies(imap_client *c, const store_msg *msgs, size_t n, const store_sink *sink,
                      ofs_error *err);

/* The same, pipelined: sends the UID FETCHes for msgs (UIDs strictly ascending; msgs and sink
 * must outlive the wait) without waiting, and returns how many commands that took (long sets
 * are split), or -1. Several batches may be in flight; their answers reach each batch's sink
 * by UID, in whatever order the server sends them. */
int imap_bodies_send(imap_client *c, const store_msg *msgs, size_t n, const store_sink *sink,
                     ofs_error *err);
/* Waits for the oldest body FETCH command sent. */
int imap_bodies_wait(imap_client *c, ofs_error *err);
/* Body FETCHes in flight will not be waited for: the connection is given up. */
void imap_bodies_abandon(imap_client *c);

/* One range of a message, UID FETCH uid (BODY.PEEK[]<offset.len>), for the pipeline below. */
typedef struct imap_range {
    uint32_t uid;
    uint64_t offset, len;
    int fd;       /* the bytes are appended as they arrive; it must hold exactly offset bytes */
    uint64_t got; /* out: bytes of the range received, fewer than len at the message's end */
    bool gone;    /* out: the message is no longer on the server */
} imap_range;

/* Queues the range's FETCH; queued ones leave together at imap_ranges_flush or the next wait.
 * After a cut, each fd holds every byte received. */
int imap_range_send(imap_client *c, const imap_range *r, ofs_error *err);
int imap_ranges_flush(imap_client *c, ofs_error *err);
/* Waits for the oldest range sent and hands it back (got, gone filled). */
int imap_range_wait(imap_client *c, imap_range *out, ofs_error *err);
/* Ranges in flight will not be waited for: the connection is given up (their answers would
 * arrive for files no longer held). */
void imap_ranges_abandon(imap_client *c);

/* UID STORE uids +FLAGS.SILENT (add) or -FLAGS.SILENT; uids sorted ascending. */
int imap_store_flags(imap_client *c, const uint32_t *uids, size_t n, bool add, unsigned flags,
                     ofs_error *err);
/* Both at once: +FLAGS add and -FLAGS del, every command pipelined (one round trip). */
int imap_store_flag_changes(imap_client *c, const uint32_t *uids, size_t n, unsigned add,
                            unsigned del, ofs_error *err);

/* Between these two, imap_store_flag_changes, imap_store_flags and imap_expunge_uids (with
 * UIDPLUS) only queue their commands; they leave in one burst and their answers are read,
 * one by one, at imap_batch_end, which returns the first failure (the others stand). */
void imap_batch_begin(imap_client *c);
int imap_batch_end(imap_client *c, ofs_error *err);

/* Bytes of APPEND literals sent and not yet answered, at most (imap_append_many). */
#define IMAP_APPEND_WINDOW (1u << 20)

typedef struct imap_upload {
    int fd; /* positioned at 0 */
    uint64_t size;
    unsigned flags;
    bool ok;                   /* out: the server stored it */
    uint32_t uidvalidity, uid; /* out: its APPENDUID, or 0 and 0 */
} imap_upload;

/* APPENDs of v[0..n) in order. With LITERAL+ (LITERAL- for small ones) they are sent without
 * waiting for continuations, within IMAP_APPEND_WINDOW bytes and IMAP_PIPELINE_WINDOW commands
 * in flight, and the answers are read in order; without, one by one. The first failure is
 * returned after every answer was read (v[i].ok says which stand). */
int imap_append_many(imap_client *c, const char *mbox, imap_upload *v, size_t n, ofs_error *err);

/* APPEND size bytes read from fd. Sets the uidvalidity and uid of APPENDUID, or 0 and 0. */
int imap_append(imap_client *c, const char *mbox, int fd, uint64_t size, unsigned flags,
                uint32_t *uidvalidity, uint32_t *uid, ofs_error *err);

/* CREATE; a mailbox that already exists ([ALREADYEXISTS]) is success. */
int imap_create(imap_client *c, const char *mbox, ofs_error *err);
/* RENAME (the server renames the folders below it too) and DELETE (a missing one is fine). */
int imap_rename(imap_client *c, const char *from, const char *to, ofs_error *err);
int imap_delete(imap_client *c, const char *mbox, ofs_error *err);

/* Expunges exactly the given \Deleted messages: UID EXPUNGE with UIDPLUS, else the
 * RFC 4315 2.1 fallback that shields other \Deleted messages during a plain EXPUNGE. */
int imap_expunge_uids(imap_client *c, const uint32_t *uids, size_t n, ofs_error *err);

/* UID SEARCH <criteria>; appends the UIDs found to *out (malloc'd, *n entries). */
int imap_search_uids(imap_client *c, const char *criteria, uint32_t **out, size_t *n,
                     ofs_error *err);

int imap_noop(imap_client *c, ofs_error *err);
int imap_logout(imap_client *c, ofs_error *err);

/* ---- pure helpers, exposed for tests ---- */

/* Appends a compact set ("1:5,9,12:40") of the sorted uids to out, no longer than max bytes
 * (at least one range is always taken). Duplicates are skipped. Returns uids consumed. */
size_t imap_uidset(const uint32_t *uids, size_t n, size_t max, buf *out);

/* FLAG_* from a FLAGS list; \Recent and keywords are ignored. */
unsigned imap_flags_from_list(const imap_value *list);
/* Appends "\Seen \Flagged" (no parentheses) for the FLAG_* bits. */
void imap_flags_format(unsigned flags, buf *out);

/* The Message-ID from a header block (unfolded, trimmed), malloc'd, or NULL when absent. */
char *imap_header_msgid(const char *hdr, size_t len);

/* Appends s as an IMAP quoted string; false (nothing appended) when it needs a literal. */
bool imap_quote(const char *s, buf *out);
/* The same for a UTF-8 quoted string (RFC 6855, after ENABLE UTF8=ACCEPT): valid UTF-8 only. */
bool imap_quote_utf8(const char *s, buf *out);

/* ---- building blocks for commands kept in their own files (idle.c) ---- */

/* Sees each untagged response of a command; an error is returned at the command's end. */
typedef int (*imap_data_fn)(imap_client *c, const imap_response *r, void *ctx, ofs_error *err);

/* Sends "TAG text" and reads until its completion; what names the command in errors. */
int imap_command(imap_client *c, const char *what, const char *text, imap_data_fn fn, void *ctx,
                 ofs_error *err);
/* Sends "TAG text" and returns at once; the caller reads the answers (imap_read_within). */
int imap_command_send(imap_client *c, const char *text, ofs_error *err);
/* Sends one untagged line (IDLE's "DONE"). */
int imap_send_line(imap_client *c, const char *line, ofs_error *err);
/* True for the tagged completion of the last command sent. */
bool imap_is_own_tag(const imap_client *c, const imap_response *r);
/* Reads one response if one starts within timeout_ms: 1 (*out set, valid until the next read),
 * 0 (none), -1. Untagged state (EXISTS, capabilities, BYE) is tracked as for any command. */
int imap_read_within(imap_client *c, int timeout_ms, const imap_response **out, ofs_error *err);
/* The socket to poll, and whether responses wait in our buffer (then do not poll: read). */
int imap_client_fd(const imap_client *c);
bool imap_client_buffered(const imap_client *c);

#endif
