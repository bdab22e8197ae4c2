/* ofsync.h: the public library API of ofsync, offline IMAP folders.
 * Small on purpose: opaque handles, every name prefixed ofs_, errors returned. */
#ifndef OFSYNC_H
#define OFSYNC_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define OFS_VERSION "0.1.0"

/* Error categories; they map to the CLI's exit statuses (see docs/ofsync.1). */
enum ofs_errcode {
    OFS_OK = 0,
    OFS_E_USAGE = 2,  /* bad command line */
    OFS_E_CONFIG = 3, /* bad or missing configuration */
    OFS_E_NET = 4,    /* cannot reach the server, connection lost, timeout */
    OFS_E_AUTH = 5,   /* server refused the credentials */
    OFS_E_PROTO = 6,  /* malformed or unexpected server reply */
    OFS_E_SERVER = 7, /* server answered NO/BAD to a command */
    OFS_E_IO = 8,     /* local file system error */
    OFS_E_NOSPC = 9,  /* local disk full */
    OFS_E_STATE = 10, /* sync state database error */
    OFS_E_LIMIT = 11, /* a hard limit was exceeded (line, literal, size) */
    OFS_E_NAME = 12,  /* a folder name that cannot be mapped safely */
};

/* The one error type: a category and one line for the user saying what and where. */
typedef struct ofs_error {
    int code;
    char message[1024];
    int final; /* 1: trying again cannot help (a certificate that does not verify, a server
                  refusing us at the greeting): no reconnect loop retries it */
} ofs_error;

/* Counters of one sync pass, per direction. */
typedef struct ofs_sync_stats {
    uint64_t downloaded, uploaded;            /* messages copied server->local, local->server */
    uint64_t flags_to_local, flags_to_server; /* messages whose flags changed on that side */
    uint64_t expunged_local, expunged_server; /* messages removed from that side */
    uint64_t folders_local, folders_server;   /* folders created on that side */
    uint64_t bytes_down, bytes_up;            /* message bytes moved */
    uint64_t folders_seen;
    uint64_t folders_verified;     /* proven in sync by their names alone, not listed */
    uint64_t folders_local_unread; /* changed on the server only: planned from the state alone */
    uint64_t local_listed; /* local files held in memory: those that differ from the state */
    uint64_t edited;       /* local files edited in place whose new version went to the server */
    uint64_t folders_removed_local, folders_removed_server; /* folders deleted on that side */
    uint64_t folders_renamed;                               /* renames carried to the other side */
    uint64_t held_back, held_back_bytes; /* messages kept on the server (max-size), their bytes */
    uint64_t net_in, net_out;            /* bytes on the wire, from and to the server */
    uint64_t round_trips;                /* times the client waited for the server's answer */
    uint64_t elapsed_ms;                 /* wall time of the pass */
    uint64_t reconnects;                 /* connections re-made after a dropped or stalled link */
} ofs_sync_stats;

typedef struct ofs_config ofs_config;

/* Loads an INI config; NULL path means $XDG_CONFIG_HOME/ofsync/config. */
int ofs_config_load(const char *path, ofs_config **out, ofs_error *err);
/* Asks for OFS_EV_TRACE events (the IMAP protocol, passwords masked) from passes over cfg. */
void ofs_config_set_trace(ofs_config *cfg, int on);
void ofs_config_free(ofs_config *cfg);

/* Events of a pass or a watch. With ofs_sync_account the callback runs on the syncing threads
 * (one per server connection), one call at a time; with a session (below) on the thread that
 * calls ofs_dispatch. */
enum ofs_event_type {
    OFS_EV_PASS_START,
    OFS_EV_FOLDER_START,
    OFS_EV_PROGRESS,
    OFS_EV_FOLDER_DONE,
    OFS_EV_NOTICE,
    OFS_EV_PASS_DONE,
    OFS_EV_WAITING, /* nothing moved for a while: text says on what, waited for how long */
    OFS_EV_ERROR,   /* text is the error line, code its category; folder NULL: the pass ended */
    OFS_EV_CHANGE,  /* watch: folder (NULL: the folder set) changed; text: "server", "local"... */
    OFS_EV_DONE,    /* session: the sync or watch ended; code 0 or the error, text its line */
    OFS_EV_TRACE,   /* one protocol trace line in text (secrets masked); only when asked for */
};

typedef struct ofs_event {
    enum ofs_event_type type;
    const char *account;
    const char *folder;               /* NULL for pass-wide events */
    const char *text;                 /* a human line for NOTICE and FOLDER_DONE */
    uint64_t done, total;             /* messages done/total for PROGRESS */
    const ofs_sync_stats *stats;      /* for FOLDER_DONE (folder) and PASS_DONE (pass) */
    uint64_t bytes_done, bytes_total; /* message bytes done/total of the folder's copies */
    uint64_t net_in, net_out;         /* bytes on the wire so far in this pass */
    double waited;                    /* WAITING: seconds since the server last sent a byte */
    int code;                         /* ERROR: enum ofs_errcode */
    int64_t since;                    /* unix time the event was raised at (watch and session) */
} ofs_event;

typedef void (*ofs_event_fn)(const ofs_event *ev, void *ctx);

/* One pass over one account (NULL: every account in the config). */
int ofs_sync_account(const ofs_config *cfg, const char *account, ofs_event_fn fn, void *ctx,
                     ofs_sync_stats *stats, ofs_error *err);

/* How a pass runs; all zero is a normal pass. */
typedef struct ofs_sync_opts {
    int dry_run; /* plan and report every folder; change nothing on either side */
} ofs_sync_opts;

int ofs_sync_account_opts(const ofs_config *cfg, const char *account, const ofs_sync_opts *opts,
                          ofs_event_fn fn, void *ctx, ofs_sync_stats *stats, ofs_error *err);

/* What `ofsync check` found in the Maildir compared with the state. */
typedef struct ofs_check_result {
    uint64_t folders, messages;
    uint64_t missing;         /* in the state, file gone */
    uint64_t unknown;         /* file not in the state (not synced yet) */
    uint64_t duplicates;      /* second files with a key already taken */
    uint64_t bad_names;       /* files in cur/ or new/ that are no valid Maildir message name */
    uint64_t pending;         /* interrupted operations waiting for the next sync */
    uint64_t missing_folders; /* folders in the state without a local directory */
    uint64_t repaired;        /* fixes made by --repair */
} ofs_check_result;

/* Verifies the Maildir of one account (NULL: all) against its state; repair fixes what is
 * safe (nothing is ever deleted that is not an identical copy). Findings are NOTICE events. */
int ofs_check_account(const ofs_config *cfg, const char *account, int repair, ofs_event_fn fn,
                      void *ctx, ofs_check_result *res, ofs_error *err);

/* ---- sessions: ofsync embedded in a host's own event loop ----
 * A session runs one account's sync or watch on a worker thread of its own. Its events cross
 * to the host through a queue whose fd (ofs_fd) is readable exactly while events are pending:
 * poll it for POLLIN (level-triggered) and call ofs_dispatch when it is readable. A dispatch
 * that leaves events behind keeps the fd readable, so no wake-up can be missed. */
typedef struct ofs_session ofs_session;

#define OFS_EVMASK(type) (1u << (type))
#define OFS_EVMASK_ALL 0xffffffffu

/* Opens a session on account (NULL: the config's only account). cfg must outlive it. */
int ofs_open(const ofs_config *cfg, const char *account, ofs_session **out, ofs_error *err);
/* Calls fn(ev, ctx) from ofs_dispatch for events whose type is in mask (OFS_EVMASK bits).
 * Up to 8 subscribers, added before the start. */
int ofs_subscribe(ofs_session *s, unsigned mask, ofs_event_fn fn, void *ctx, ofs_error *err);
/* Starts one pass, or a watch that runs until ofs_stop. One start per session. */
int ofs_start_sync(ofs_session *s, ofs_error *err);
int ofs_start_watch(ofs_session *s, ofs_error *err);
/* The fd to poll for POLLIN; never read or write it. */
int ofs_fd(const ofs_session *s);
/* Delivers pending events to the subscribers on the calling thread, at most a bounded batch
 * per call so a GUI stays responsive. Returns how many were delivered. */
int ofs_dispatch(ofs_session *s);
/* True once the OFS_EV_DONE event was dispatched: the run is over. */
int ofs_done(const ofs_session *s);
/* Asks the run to end: the current folder step finishes, then OFS_EV_DONE follows. Safe from
 * any thread and from a signal-free context; returns at once. */
void ofs_stop(ofs_session *s);
/* Stops the run, waits for the worker (bounded by the account timeout) and frees the session.
 * Events not dispatched are dropped. Fails only if the worker did not end in time (then the
 * session is leaked rather than freed under it). */
int ofs_close(ofs_session *s, ofs_error *err);

#ifdef __cplusplus
}
#endif
#endif
