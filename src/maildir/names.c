/* names.c: mapping canonical folder names to Maildir directories (maildir++ or verbatim) and back.
 * Names come from servers, so everything that could leave the root or confuse a reader is refused.
 */
#include "maildir/names.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sync/config.h"
#include "util/err.h"

#define NAMES_MAX_COMPONENT 255 /* NAME_MAX of every Linux file system we care about */

int names_utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    while (p < end) {
        unsigned c = *p++;
        if (c < 0x80)
            continue;
        size_t more;
        unsigned cp, min;
        if ((c & 0xe0) == 0xc0) {
            more = 1, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            more = 2, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            more = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return -1;
        }
        if ((size_t)(end - p) < more)
            return -1;
        for (size_t i = 0; i < more; i++, p++) {
            if ((*p & 0xc0) != 0x80)
                return -1;
            cp = (cp << 6) | (*p & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return -1;
    }
    return 0;
}

/* A copy of name safe to show on one terminal line: controls and stray bytes as \xNN. */
static char *names_printable(const char *name)
{
    bool utf8 = names_utf8_valid(name, strlen(name)) == 0;
    buf b;
    buf_init(&b);
    buf_adds(&b, "");
    for (const unsigned char *p = (const unsigned char *)name; *p && b.len < 200; p++) {
        if (*p < 0x20 || *p == 0x7f || (*p >= 0x80 && !utf8) || *p == '\\')
            buf_printf(&b, "\\x%02x", *p);
        else
            buf_addc(&b, (char)*p);
    }
    return b.data;
}

static int names_refuse(ofs_error *err, const char *name, const char *why)
{
    char *shown = names_printable(name);
    err_set(err, OFS_E_NAME, "refusing folder name \"%s\": %s", shown, why);
    free(shown);
    return -1;
}

int names_check(const char *name, ofs_error *err)
{
    if (!name || !*name)
        return names_refuse(err, "", "it is empty");
    if (name[0] == '/')
        return names_refuse(err, name, "it starts with '/'");
    size_t len = strlen(name);
    if (name[len - 1] == '/')
        return names_refuse(err, name, "it ends with '/'");
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return names_refuse(err, name, "it contains a control character");
    if (names_utf8_valid(name, len) != 0)
        return names_refuse(err, name, "it is not valid UTF-8");
    size_t depth = 0;
    for (const char *c = name;; depth++) {
        const char *slash = strchr(c, '/');
        size_t n = slash ? (size_t)(slash - c) : strlen(c);
        if (n == 0)
            return names_refuse(err, name, "it has an empty level (\"//\")");
        if ((n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
            return names_refuse(err, name, "a level is \".\" or \"..\"");
        if (n > NAMES_MAX_COMPONENT)
            return names_refuse(err, name, "a level is longer than 255 bytes");
        if (!slash)
            break;
        c = slash + 1;
    }
    if (depth >= NAMES_MAX_DEPTH)
        return names_refuse(err, name, "it is nested more than 32 levels deep");
    return 0;
}

/* root without trailing slashes, so joined paths stay canonical ("/" stays "/"). */
static size_t names_root_len(const char *root)
{
    size_t n = strlen(root);
    while (n > 1 && root[n - 1] == '/')
        n--;
    return n;
}

static int names_to_mdpp(const char *root, const char *name, char **out, ofs_error *err)
{
    size_t rlen = names_root_len(root);
    if (strcmp(name, "INBOX") == 0) {
        *out = xstrndup(root, rlen);
        return 0;
    }
    for (const char *c = name;; c++) {
        const char *slash = strchr(c, '/');
        size_t n = slash ? (size_t)(slash - c) : strlen(c);
        if (memchr(c, '.', n))
            return names_refuse(err, name,
                                "a '.' inside a level cannot be represented in the maildir++ "
                                "layout (use the verbatim layout)");
        if (!slash)
            break;
        c = slash;
    }
    if (strlen(name) + 1 > NAMES_MAX_COMPONENT)
        return names_refuse(err, name, "too long for one maildir++ directory name");
    char *path = xasprintf("%.*s/.%s", (int)rlen, root, name);
    for (char *p = path + rlen + 2; *p; p++)
        if (*p == '/')
            *p = '.';
    *out = path;
    return 0;
}

static bool names_is_maildir_subdir(const char *c, size_t n)
{
    return n == 3 && (!memcmp(c, "cur", 3) || !memcmp(c, "new", 3) || !memcmp(c, "tmp", 3));
}

static int names_to_verbatim(const char *root, const char *name, char **out, ofs_error *err)
{
    for (const char *c = name;; c++) {
        const char *slash = strchr(c, '/');
        size_t n = slash ? (size_t)(slash - c) : strlen(c);
        if (names_is_maildir_subdir(c, n))
            return names_refuse(err, name,
                                "a level named cur, new or tmp would clash with a Maildir's own "
                                "directories");
        if (!slash)
            break;
        c = slash;
    }
    size_t rlen = names_root_len(root);
    *out = xasprintf("%.*s/%s", (int)rlen, root, name);
    return 0;
}

int names_to_path(const char *root, int layout, const char *name, char **out, ofs_error *err)
{
    *out = NULL;
    if (names_check(name, err) != 0)
        return -1;
    if (layout == CFG_LAYOUT_VERBATIM)
        return names_to_verbatim(root, name, out, err);
    return names_to_mdpp(root, name, out, err);
}

char *names_from_mdpp(const char *entry)
{
    if (entry[0] != '.' || entry[1] == '\0')
        return NULL;
    char *name = xstrdup(entry + 1);
    for (char *p = name; *p; p++)
        if (*p == '.')
            *p = '/';
    /* ".INBOX" would shadow the inbox, which is the root itself in this layout. */
    if (names_check(name, NULL) != 0 || strcmp(name, "INBOX") == 0) {
        free(name);
        return NULL;
    }
    return name;
}

static bool names_has_cur(int dfd, const char *entry)
{
    char *p = xasprintf("%s/cur", entry);
    struct stat st;
    bool ok = fstatat(dfd, p, &st, 0) == 0 && S_ISDIR(st.st_mode);
    free(p);
    return ok;
}

static void names_list_mdpp(DIR *d, strlist *out)
{
    int dfd = dirfd(d);
    if (names_has_cur(dfd, "."))
        strlist_add(out, "INBOX");
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] != '.' || !names_has_cur(dfd, e->d_name))
            continue;
        char *name = names_from_mdpp(e->d_name);
        if (name)
            strlist_add_owned(out, name);
    }
}

/* Is entry a real directory (not a symlink)? Uses d_type, falling back to lstat-like fstatat. */
static bool names_is_dir(int dfd, const struct dirent *e)
{
    if (e->d_type == DT_DIR)
        return true;
    if (e->d_type != DT_UNKNOWN)
        return false;
    struct stat st;
    return fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
}

static void names_walk(DIR *d, const char *prefix, int depth, strlist *out)
{
    int dfd = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *n = e->d_name;
        if (!strcmp(n, ".") || !strcmp(n, "..") || names_is_maildir_subdir(n, strlen(n)))
            continue;
        if (!names_is_dir(dfd, e))
            continue;
        char *name = prefix ? xasprintf("%s/%s", prefix, n) : xstrdup(n);
        if (names_check(name, NULL) != 0) {
            free(name);
            continue;
        }
        if (names_has_cur(dfd, n))
            strlist_add(out, name);
        if (depth + 1 < NAMES_MAX_DEPTH) {
            int sub = openat(dfd, n, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            DIR *sd = sub >= 0 ? fdopendir(sub) : NULL;
            if (sd) {
                names_walk(sd, name, depth + 1, out);
                closedir(sd);
            } else if (sub >= 0) {
                close(sub);
            }
        }
        free(name);
    }
}

int names_list(const char *root, int layout, strlist *out, ofs_error *err)
{
    DIR *d = opendir(root);
    if (!d)
        return err_errno(err, OFS_E_IO, errno, "cannot list folders in %s", root);
    if (layout == CFG_LAYOUT_VERBATIM)
        names_walk(d, NULL, 0, out);
    else
        names_list_mdpp(d, out);
    closedir(d);
    strlist_sort(out);
    return 0;
}
