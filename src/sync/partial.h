/* partial.h: resumable downloads of big messages: ranges into a partial file in the local
 * root's tmp/, keyed by folder, UIDVALIDITY and UID, kept across cuts and passes. */
#ifndef OFS_SYNC_PARTIAL_H
#define OFS_SYNC_PARTIAL_H

#include <stdbool.h>
#include <stdint.h>

#include "sync/store.h"

/* Messages larger than this are fetched in ranges (when the store can). */
#define PARTIAL_THRESHOLD (64u * 1024)

typedef struct partial_file {
    char *path;
    int fd;        /* open for appending and reading, or -1 */
    uint64_t have; /* bytes already in the file */
} partial_file;

bool partial_wanted(const store *srv, const store_msg *m);

/* Opens (creating tmp/ and the file if needed) the partial file of message m of folder.
 * A file longer than the message is stale and starts over. */
int partial_open(partial_file *pf, const char *root, const char *folder, uint32_t uidvalidity,
                 const store_msg *m, ofs_error *err);

/* Sets pf->have from the file's size: the truth about what arrived, whatever answers said. */
int partial_size(partial_file *pf, ofs_error *err);

/* Closes; remove: also deletes the file. */
void partial_close(partial_file *pf, bool remove);

/* Deletes every partial file of folder (after all its downloads are done). */
void partial_sweep(const char *root, const char *folder);

/* The range length for a link moving rate bytes/s: about 8 s of data, 16 KiB..4 MiB;
 * 64 KiB while the rate is unknown. */
uint64_t partial_chunk(double rate);

#endif
