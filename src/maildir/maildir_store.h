/* maildir_store.h: the local side of the store interface, a tree of Maildirs.
 * Layout maildir++ (INBOX is the root, ".A.B" sub-folders) or verbatim (nested A/B dirs). */
#ifndef OFS_MAILDIR_STORE_H
#define OFS_MAILDIR_STORE_H

#include "sync/store.h"

/* root is created when missing. layout is enum cfg_layout. */
int maildir_store_open(const char *root, int layout, store **out, ofs_error *err);

#endif
