/* mark.h: a cheap fingerprint of a Maildir folder's cur/ and new/ directories.
 * Equal marks mean no message was added, removed or renamed (flags) in between. */
#ifndef OFS_MAILDIR_MARK_H
#define OFS_MAILDIR_MARK_H

/* malloc'd mark of the Maildir at path, or NULL when it cannot be trusted now: a directory
 * changed too recently for its timestamp to tell the next change apart, or stat failed. */
char *maildir_mark(const char *path);

#endif
