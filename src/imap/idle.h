/* idle.h: the commands of push: IDLE (RFC 2177), NOTIFY (RFC 5465) and its STATUS events.
 * IDLE is split into send / read / DONE so that a poll loop drives it with its own deadlines. */
#ifndef OFS_IMAP_IDLE_H
#define OFS_IMAP_IDLE_H

#include <stdbool.h>
#include <stdint.h>

#include "imap/client.h"

/* What a STATUS response said; have says which fields it held. */
enum { IMAP_ST_MESSAGES = 1, IMAP_ST_UIDNEXT = 2, IMAP_ST_UIDVALIDITY = 4, IMAP_ST_MODSEQ = 8 };

typedef struct imap_status_info {
    unsigned have;
    uint32_t messages, uidnext, uidvalidity;
    uint64_t highestmodseq;
} imap_status_info;

/* Reads a "* STATUS mbox (...)" response: true and *mbox (the server's name, valid as long as
 * r) and *out filled, or false for any other response. */
bool imap_status_parse(const imap_response *r, const char **mbox, imap_status_info *out);

/* NOTIFY SET for every personal mailbox: new, expunged and flag-changed messages and folder
 * creation, deletion and renames. Events then arrive as untagged STATUS and LIST responses. */
int imap_notify_set(imap_client *c, ofs_error *err);

/* Sends IDLE; imap_idle_read reports the server's go-ahead. */
int imap_idle_start(imap_client *c, ofs_error *err);
/* Sends DONE; imap_idle_read reports the IDLE command's completion. */
int imap_idle_done(imap_client *c, ofs_error *err);

enum imap_idle_event {
    IMAP_IDLE_QUIET,    /* nothing more within the timeout */
    IMAP_IDLE_ACCEPTED, /* the continuation after IDLE: idling now */
    IMAP_IDLE_ENDED,    /* IDLE completed OK (after DONE) */
};

/* Reads what arrives within timeout_ms (0: only what is already there), passing untagged
 * responses to fn. Returns the first enum imap_idle_event that is not QUIET, QUIET, or -1 (a
 * refused IDLE is OFS_E_SERVER; BYE, EOF and stalls are OFS_E_NET). */
int imap_idle_read(imap_client *c, int timeout_ms, imap_data_fn fn, void *ctx, ofs_error *err);

#endif
