/* fuzz_names.c: libFuzzer harness for Maildir file names and folder directory names
 * (src/maildir/maildir.c, names.c): keys survive flag changes; no name maps outside the root. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "maildir/maildir.h"
#include "maildir/names.h"
#include "sync/config.h"
#include "sync/store.h"

static void check_file_name(const char *name, unsigned flags)
{
    const char *info = NULL;
    size_t key = maildir_key_len(name, &info);
    if (key > strlen(name) || (info && (info < name + key || info > name + strlen(name))))
        abort();
    unsigned have = info ? maildir_info_flags(info) : 0;
    if (have & ~FLAG_ALL)
        abort();
    char *renamed = maildir_name_with_flags(name, flags & FLAG_ALL);
    const char *info2 = NULL;
    size_t key2 = maildir_key_len(renamed, &info2);
    /* The key is the message's identity: a flag change must never alter it. */
    if (key2 != key || memcmp(renamed, name, key) != 0 || !info2)
        abort();
    if (maildir_info_flags(info2) != (flags & FLAG_ALL))
        abort();
    char *again = maildir_name_with_flags(renamed, flags & FLAG_ALL);
    if (strcmp(again, renamed) != 0) /* idempotent */
        abort();
    free(again);
    free(renamed);
}

static void check_folder_entry(const char *entry)
{
    char *name = names_from_mdpp(entry);
    if (!name)
        return;
    ofs_error err;
    for (int layout = CFG_LAYOUT_MAILDIRPP; layout <= CFG_LAYOUT_VERBATIM; layout++) {
        char *path = NULL;
        if (names_to_path("/r/Mail", layout, name, &path, &err) != 0) {
            if (err.code != OFS_E_NAME)
                abort();
            continue;
        }
        /* Under the root, and no component may climb out of it. */
        if (strncmp(path, "/r/Mail", 7) != 0 || (path[7] && path[7] != '/'))
            abort();
        for (const char *p = path + 7; *p; p++)
            if (p[0] == '/' && p[1] == '.' &&
                (p[2] == '/' || !p[2] || (p[2] == '.' && (p[3] == '/' || !p[3]))))
                abort();
        free(path);
    }
    free(name);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned flags = data[0];
    char *s = malloc(size);
    memcpy(s, data + 1, size - 1);
    s[size - 1] = '\0';
    check_file_name(s, flags);
    check_folder_entry(s);
    ofs_error err;
    if (names_check(s, &err) == 0) {
        char *path = NULL;
        if (names_to_path("/r/Mail", CFG_LAYOUT_VERBATIM, s, &path, &err) == 0) {
            if (strncmp(path, "/r/Mail/", 8) != 0 && strcmp(path, "/r/Mail") != 0)
                abort();
            free(path);
        }
    } else if (err.code != OFS_E_NAME) {
        abort();
    }
    free(s);
    return 0;
}
