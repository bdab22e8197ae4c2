/* names.h: canonical folder names (UTF-8, '/' between levels, "INBOX") <-> Maildir directories.
 * The one place that decides whether a name is safe to put under the local root. */
#ifndef OFS_MAILDIR_NAMES_H
#define OFS_MAILDIR_NAMES_H

#include "ofsync.h"
#include "util/mem.h"

/* Deepest folder hierarchy we map or walk; deeper trees are ignored when listing. */
#define NAMES_MAX_DEPTH 32

/* 0 when s[0..len) is well-formed UTF-8 (no overlongs, surrogates or code points > U+10FFFF). */
int names_utf8_valid(const char *s, size_t len);

/* Refuses (OFS_E_NAME) a canonical name that is unsafe in any layout: empty, leading or trailing
 * '/', empty, "." or ".." components, control characters, invalid UTF-8, over-long components. */
int names_check(const char *name, ofs_error *err);

/* The directory of folder name under root for layout (enum cfg_layout), malloc'd in *out.
 * Maildir++: "INBOX" is root, "A/B" is root/.A.B (a '.' in a component is refused).
 * Verbatim: "A/B" is root/A/B (components "cur", "new", "tmp" are refused). */
int names_to_path(const char *root, int layout, const char *name, char **out, ofs_error *err);

/* The canonical name of a Maildir++ sub-folder directory entry (".A.B" -> "A/B"),
 * malloc'd, or NULL when the entry is not a representable folder name. */
char *names_from_mdpp(const char *entry);

/* Every folder under root (directories with a cur/ subdirectory), canonical names, sorted. */
int names_list(const char *root, int layout, strlist *out, ofs_error *err);

#endif
