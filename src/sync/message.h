/* message.h: the little the engine needs to know about a message's content.
 * Just enough header reading to pair a message by Message-ID after an APPEND. */
#ifndef OFS_SYNC_MESSAGE_H
#define OFS_SYNC_MESSAGE_H

#include <stddef.h>

/* Returns the Message-ID header value (unfolded, trimmed, malloc'd) of the message in
 * text[0..len), or NULL when it has none. Stops at the end of the header. */
char *msg_parse_msgid(const char *text, size_t len);

/* Same, reading the header from the start of fd (at most 256 KiB); the offset is restored. */
char *msg_read_msgid(int fd);

/* SHA-256 of the whole content of fd, as 64 hex digits (malloc'd), or NULL when it cannot be
 * read. Read with pread: the offset is kept. Pairs messages by content across both sides. */
char *msg_hash_fd(int fd);

#endif
