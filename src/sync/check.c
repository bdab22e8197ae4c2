/* check.c: `ofsync check`: the Maildir against the state, folder by folder: files the state
 * expects but lacks, files it does not know, duplicate keys, bad names; --repair fixes the safe
 * ones. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "maildir/maildir.h"
#include "maildir/names.h"
#include "sync/engine.h"
#include "util/err.h"

enum { TMP_STALE_SECS = 36 * 3600 }; /* the Maildir convention for abandoned tmp/ files */

typedef struct check_run {
    const cfg_account *a;
    state *st;
    bool repair;
    ofs_event_fn fn;
    void *fn_ctx;
    ofs_check_result *res;
} check_run;

typedef struct local_file {
    char *name; /* base name in cur/ or new/ */
    size_t key_len;
    bool cur;
} local_file;

typedef struct file_list {
    local_file *v;
    size_t n, cap;
} file_list;

static void say(check_run *k, const char *folder, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void say(check_run *k, const char *folder, const char *fmt, ...)
{
    buf line;
    buf_init(&line);
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&line, fmt, ap);
    va_end(ap);
    if (k->fn) {
        ofs_event ev = {
            .type = OFS_EV_NOTICE, .account = k->a->name, .folder = folder, .text = line.data};
        k->fn(&ev, k->fn_ctx);
    }
    buf_free(&line);
}

static void files_free(file_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i].name);
    free(l->v);
    memset(l, 0, sizeof *l);
}

static int cmp_key(const local_file *x, const local_file *y)
{
    size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    int c = memcmp(x->name, y->name, n);
    if (c)
        return c;
    return x->key_len == y->key_len ? 0 : x->key_len < y->key_len ? -1 : 1;
}

static int cmp_file(const void *a, const void *b)
{
    const local_file *x = a, *y = b;
    int c = cmp_key(x, y);
    /* The cur/ copy first: it is the one readers have seen, so it is the one kept. */
    return c ? c : (int)y->cur - (int)x->cur;
}

static const char why_suffix[] = "in cur/ without a \":2,\" flags suffix";

/* NULL for a good name, else why it is bad. */
static const char *bad_name(const char *name, size_t key_len, bool cur)
{
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return "control character in the name";
    if (key_len == 0)
        return "no key before the flags";
    if (cur && !name[key_len])
        return why_suffix;
    return NULL;
}

static int read_dir(check_run *k, const char *folder, const char *path, bool cur, file_list *out,
                    ofs_error *err)
{
    char *dir = xasprintf("%s/%s", path, cur ? "cur" : "new");
    DIR *d = opendir(dir);
    if (!d) {
        int e = errno;
        free(dir);
        return e == ENOENT ? 0 : err_errno(err, OFS_E_IO, e, "cannot read %s", path);
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.' || de->d_type == DT_DIR)
            continue;
        size_t kl = maildir_key_len(de->d_name, NULL);
        const char *why = bad_name(de->d_name, kl, cur);
        if (why) {
            k->res->bad_names++;
            bool fixable = why == why_suffix;
            if (k->repair && fixable) {
                char *to = xasprintf("%s:2,", de->d_name);
                if (renameat(dirfd(d), de->d_name, dirfd(d), to) == 0) {
                    k->res->repaired++;
                    say(k, folder, "%s/%s: %s: renamed to %s", cur ? "cur" : "new", de->d_name, why,
                        to);
                }
                free(to);
            } else {
                say(k, folder, "%s/%s: bad name: %s%s", cur ? "cur" : "new", de->d_name, why,
                    fixable ? " (--repair adds the suffix)" : " (left alone)");
            }
            if (!fixable || !k->repair)
                continue;
        }
        if (out->n == out->cap) {
            out->cap = out->cap ? out->cap * 2 : 256;
            out->v = xrealloc(out->v, out->cap * sizeof *out->v);
        }
        out->v[out->n++] = (local_file){xstrdup(de->d_name), kl, cur};
    }
    closedir(d);
    free(dir);
    return 0;
}

static bool same_content(const char *a, const char *b)
{
    FILE *x = fopen(a, "rb"), *y = fopen(b, "rb");
    bool same = x && y;
    while (same) {
        int c = fgetc(x), d = fgetc(y);
        same = c == d;
        if (c == EOF)
            break;
    }
    if (x)
        fclose(x);
    if (y)
        fclose(y);
    return same;
}

/* A second file with a key already seen. An identical copy goes; a different one gets a key
 * of its own, so the next sync uploads it as the separate message it is. */
static void repair_dupe(check_run *k, const char *folder, const char *path, const local_file *keep,
                        const local_file *f)
{
    char *a = xasprintf("%s/%s/%s", path, keep->cur ? "cur" : "new", keep->name);
    char *b = xasprintf("%s/%s/%s", path, f->cur ? "cur" : "new", f->name);
    if (same_content(a, b)) {
        if (unlink(b) == 0) {
            k->res->repaired++;
            say(k, folder, "%s/%s: identical copy of %s/%s removed", f->cur ? "cur" : "new",
                f->name, keep->cur ? "cur" : "new", keep->name);
        }
    } else {
        char *key = maildir_new_key();
        char *to = xasprintf("%s/%s/%s%s", path, f->cur ? "cur" : "new", key, f->name + f->key_len);
        if (rename(b, to) == 0) {
            k->res->repaired++;
            say(k, folder, "%s/%s: different message under a taken key: renamed to %s",
                f->cur ? "cur" : "new", f->name, strrchr(to, '/') + 1);
        }
        free(key);
        free(to);
    }
    free(a);
    free(b);
}

static int cmp_keyp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool file_has_key(const file_list *l, const char *key)
{
    const local_file probe = {(char *)key, strlen(key), true};
    size_t lo = 0, hi = l->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = cmp_key(&l->v[mid], &probe);
        if (c == 0)
            return true;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

/* Pairs whose file is gone would read as deletions by the user at the next sync and be
 * expunged on the server; --repair forgets them, so the next sync downloads them again. */
static int check_pairs(check_run *k, const char *folder, const file_list *files,
                       state_pair_list *pairs, ofs_error *err)
{
    size_t missing = 0, pending = 0;
    char **keys = xmalloc((pairs->n ? pairs->n : 1) * sizeof *keys);
    size_t nk = 0;
    int rc = 0;
    for (size_t i = 0; i < pairs->n; i++) {
        state_pair *p = &pairs->v[i];
        if (p->key)
            keys[nk++] = p->key;
        if (p->pending != PENDING_NONE) {
            pending++;
            continue;
        }
        if (!p->key || !p->uid || file_has_key(files, p->key))
            continue;
        missing++;
        if (k->repair && rc == 0) {
            rc = state_pair_delete(k->st, p->id, err);
            k->res->repaired += rc == 0;
        }
    }
    if (nk)
        qsort(keys, nk, sizeof *keys, cmp_keyp);
    size_t unknown = 0;
    for (size_t i = 0; i < files->n; i++) {
        char *key = xstrndup(files->v[i].name, files->v[i].key_len);
        if (!bsearch(&key, keys, nk, sizeof *keys, cmp_keyp) &&
            (i == 0 || cmp_key(&files->v[i - 1], &files->v[i]) != 0))
            unknown++;
        free(key);
    }
    free(keys);
    if (missing)
        say(k, folder, "%zu messages the state has are missing locally%s", missing,
            k->repair ? ": forgotten, the next sync downloads them again"
                      : " (the next sync would remove them from the server; --repair keeps them)");
    if (unknown)
        say(k, folder, "%zu messages not in the state (new here: the next sync uploads them)",
            unknown);
    if (pending)
        say(k, folder, "%zu interrupted operations (the next sync resumes them)", pending);
    k->res->missing += missing;
    k->res->unknown += unknown;
    k->res->pending += pending;
    return rc;
}

static void check_tmp(check_run *k, const char *folder, const char *path)
{
    char *dir = xasprintf("%s/tmp", path);
    DIR *d = opendir(dir);
    free(dir);
    if (!d)
        return;
    size_t n = 0, removed = 0;
    time_t now = time(NULL);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        struct stat st;
        if (de->d_name[0] == '.' || fstatat(dirfd(d), de->d_name, &st, 0) != 0 ||
            !S_ISREG(st.st_mode))
            continue;
        n++;
        if (k->repair && now - st.st_mtime > TMP_STALE_SECS &&
            unlinkat(dirfd(d), de->d_name, 0) == 0)
            removed++;
    }
    closedir(d);
    if (n)
        say(k, folder, "%zu files in tmp/ (deliveries that never finished)%s", n,
            removed ? "; the stale ones were removed" : "");
    k->res->repaired += removed;
}

static int check_folder(check_run *k, const char *folder, const char *path, ofs_error *err)
{
    file_list files = {0};
    int rc = read_dir(k, folder, path, false, &files, err);
    if (rc == 0)
        rc = read_dir(k, folder, path, true, &files, err);
    if (rc < 0) {
        files_free(&files);
        return -1;
    }
    if (files.n)
        qsort(files.v, files.n, sizeof *files.v, cmp_file);
    size_t dupes = 0;
    for (size_t i = 1; i < files.n; i++) {
        size_t first = i - 1;
        while (i < files.n && cmp_key(&files.v[first], &files.v[i]) == 0) {
            dupes++;
            if (k->repair)
                repair_dupe(k, folder, path, &files.v[first], &files.v[i]);
            else
                say(k, folder, "%s/%s: duplicate key (also %s/%s); --repair separates them",
                    files.v[i].cur ? "cur" : "new", files.v[i].name,
                    files.v[first].cur ? "cur" : "new", files.v[first].name);
            i++;
        }
    }
    k->res->duplicates += dupes;
    k->res->messages += files.n - dupes;
    check_tmp(k, folder, path);
    state_folder sf = {0};
    state_pair_list pairs = {0};
    rc = state_folder_get(k->st, folder, &sf, err);
    if (rc == 0)
        rc = state_pairs_load(k->st, sf.id, &pairs, err);
    if (rc == 0) {
        rc = check_pairs(k, folder, &files, &pairs, err);
    } else if (rc == 1) {
        rc = 0;
        k->res->unknown += files.n - dupes;
        if (files.n - dupes)
            say(k, folder,
                "folder not in the state: its %zu messages are uploaded at the next "
                "sync",
                files.n - dupes);
    }
    state_pair_list_free(&pairs);
    state_folder_free(&sf);
    files_free(&files);
    return rc;
}

static int check_all(check_run *k, ofs_error *err)
{
    strlist local, known;
    strlist_init(&local);
    int rc = names_list(k->a->local, k->a->layout, &local, err);
    if (rc == 0)
        rc = state_folder_names(k->st, &known, err);
    else
        strlist_init(&known);
    if (rc == 0 && k->repair)
        rc = state_begin(k->st, err);
    for (size_t i = 0; rc == 0 && i < local.n; i++) {
        char *path;
        rc = names_to_path(k->a->local, k->a->layout, local.v[i], &path, err);
        if (rc == 0)
            rc = check_folder(k, local.v[i], path, err);
        free(path);
        k->res->folders++;
    }
    for (size_t i = 0; rc == 0 && i < known.n; i++)
        if (strlist_find(&local, known.v[i]) < 0) {
            say(k, known.v[i],
                "folder in the state is missing locally (the next sync restores "
                "it, or deletes it on the server with remove-folders = yes)");
            k->res->missing_folders++;
        }
    if (k->repair) {
        if (rc == 0)
            rc = state_commit(k->st, err);
        else
            state_rollback(k->st);
    }
    strlist_free(&local);
    strlist_free(&known);
    return rc;
}

int ofs_check_account(const ofs_config *cfg, const char *account, int repair, ofs_event_fn fn,
                      void *ctx, ofs_check_result *res, ofs_error *err)
{
    memset(res, 0, sizeof *res);
    for (size_t i = 0; i < cfg->n_accounts; i++) {
        const cfg_account *a = &cfg->accounts[i];
        if (account && strcmp(a->name, account) != 0)
            continue;
        check_run k = {.a = a, .repair = repair, .fn = fn, .fn_ctx = ctx, .res = res};
        int lock = -1;
        int rc = sync_lock_account(a, &lock, err);
        if (rc == 0)
            rc = state_open(a->state, &k.st, err);
        if (rc == 0)
            rc = check_all(&k, err);
        state_close(k.st);
        if (lock >= 0)
            close(lock);
        if (rc < 0)
            return err_prefix(err, "%s", a->name);
        if (account)
            return 0;
    }
    if (account)
        return err_set(err, OFS_E_USAGE, "no account '%s' in %s", account, cfg->path);
    return 0;
}
