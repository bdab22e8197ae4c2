/* config.h: the parsed configuration: accounts and their settings.
 * INI-style file, one [account NAME] section each; every error names the file and line. */
#ifndef OFS_SYNC_CONFIG_H
#define OFS_SYNC_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ofsync.h"

enum cfg_tls { CFG_TLS_IMPLICIT = 0, CFG_TLS_STARTTLS, CFG_TLS_NONE };
enum cfg_layout { CFG_LAYOUT_MAILDIRPP = 0, CFG_LAYOUT_VERBATIM };
enum cfg_expunge { CFG_EXPUNGE_BOTH = 0, CFG_EXPUNGE_SERVER, CFG_EXPUNGE_LOCAL, CFG_EXPUNGE_NONE };

typedef struct cfg_account {
    char *name;
    char *host;
    int port; /* default 993 for implicit TLS, 143 otherwise */
    int tls;  /* enum cfg_tls */
    char *user;
    char *pass_cmd; /* shell command printing the password */
    char *password_file;
    char *local;         /* Maildir root, ~ expanded */
    char *state;         /* database path; default $XDG_STATE_HOME/ofsync/NAME.db */
    int layout;          /* enum cfg_layout */
    int timeout;         /* seconds of silence before a read fails (default 60) */
    int expunge;         /* enum cfg_expunge: which sides deletions are carried to (default both) */
    bool remove_folders; /* propagate folder deletions (default no) */
    char *folders;       /* include/exclude patterns, e.g. "* !Trash !Spam" (default "*") */
    int connections;     /* parallel server connections (default 4) */
    int parallel_budget; /* messages of folders synced at once, at most; 0: automatic */
    bool compress;       /* COMPRESS=DEFLATE when offered (default yes) */
    uint64_t max_size;   /* larger messages stay on the server; 0 = no limit (default) */
    int reconnect_attempts; /* after a dropped link, per pass (default 5) */
    char *watch_folders;    /* folders kept under IDLE by `watch` (default "INBOX") */
    int poll_interval;      /* seconds between status polls of the rest in `watch` (300) */
    char *ca_file;          /* CA bundle for TLS verification (default: the system store) */
    char *fingerprint;      /* "SHA256:hex" pin of the server certificate, instead of a CA */
    bool allow_plaintext;   /* permit tls = none to a host that is not loopback (default no) */
    char *auth;             /* allowed SASL mechanisms, e.g. "plain login" (default: any) */
} cfg_account;

struct ofs_config {
    char *path;
    cfg_account *accounts;
    size_t n_accounts;
    bool trace; /* emit OFS_EV_TRACE (ofs_config_set_trace) */
};

/* Parses text as if read from path (for tests and the fuzzer). */
int cfg_parse(const char *path, const char *text, size_t len, ofs_config **out, ofs_error *err);
const cfg_account *cfg_find_account(const ofs_config *cfg, const char *name);
/* $XDG_CONFIG_HOME/ofsync/config or ~/.config/ofsync/config (malloc'd), NULL without either. */
char *cfg_default_path(void);
/* Runs pass-cmd or reads password-file (refusing one readable by group or others).
 * Returns a malloc'd password without its trailing newline. */
int cfg_account_password(const cfg_account *a, char **out, ofs_error *err);

#endif
