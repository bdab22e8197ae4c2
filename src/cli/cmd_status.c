/* cmd_status.c: `ofsync status [ACCOUNT]`: what the last sync left and what waits to be sent.
 * Offline by design: it reads the state and scans the Maildir, and never contacts the server. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "maildir/maildir_store.h"
#include "state/health.h"
#include "state/state.h"
#include "sync/config.h"
#include "ui/ui.h"
#include "util/err.h"

static const char usage[] = "usage: ofsync status [--config FILE] [-v] [--json] [ACCOUNT]\n";

/* Local changes of one folder not yet sent to the server, found by comparing the Maildir
 * with the state: the same comparison a sync starts with. */
typedef struct folder_status {
    char *name;
    int64_t last_sync;    /* 0: never completed */
    bool in_state;        /* the state knows the folder */
    bool local;           /* the folder exists locally */
    uint64_t messages;    /* local messages */
    uint64_t added;       /* new locally: will be uploaded */
    uint64_t flagged;     /* flags changed locally */
    uint64_t deleted;     /* removed locally: will be expunged on the server */
    uint64_t unfinished;  /* copies an interrupted pass left to resolve */
    char *problem;        /* the folder could not be scanned: why */
    state_held_list held; /* left on the server (max-size) by the last complete pass */
    uint64_t held_bytes;
} folder_status;

typedef struct account_status {
    const cfg_account *a;
    bool have_state;
    int health; /* 0 ok, 1 problems, -1 unreadable */
    char *health_report;
    folder_status *f;
    size_t n;
} account_status;

typedef struct local_key {
    const char *key;
    unsigned flags;
    bool paired;
} local_key;

static int cmp_local_key(const void *a, const void *b)
{
    return strcmp(((const local_key *)a)->key, ((const local_key *)b)->key);
}

static void compare(folder_status *fs, const state_pair_list *pairs, const store_msg_list *loc)
{
    local_key *k = xmalloc((loc->n ? loc->n : 1) * sizeof *k);
    for (size_t i = 0; i < loc->n; i++)
        k[i] = (local_key){loc->v[i].key, loc->v[i].flags, false};
    qsort(k, loc->n, sizeof *k, cmp_local_key);
    for (size_t i = 0; i < pairs->n; i++) {
        const state_pair *p = &pairs->v[i];
        if (p->pending != PENDING_NONE)
            fs->unfinished++;
        if (!p->key)
            continue;
        local_key probe = {.key = p->key};
        local_key *hit = bsearch(&probe, k, loc->n, sizeof *k, cmp_local_key);
        if (hit)
            hit->paired = true;
        if (p->pending != PENDING_NONE)
            continue;
        if (!hit)
            fs->deleted++;
        else if (hit->flags != p->flags)
            fs->flagged++;
    }
    for (size_t i = 0; i < loc->n; i++)
        fs->added += !k[i].paired;
    fs->messages = loc->n;
    free(k);
}

static void scan_folder(state *st, store *loc, folder_status *fs)
{
    ofs_error err = {0};
    state_folder sf = {0};
    state_pair_list pairs = {0};
    store_msg_list msgs;
    store_msg_list_init(&msgs);
    int rc = 0;
    if (st && (rc = state_folder_get(st, fs->name, &sf, &err)) == 0) {
        fs->in_state = true;
        fs->last_sync = sf.last_sync;
        rc = state_pairs_load(st, sf.id, &pairs, &err);
        if (rc == 0)
            rc = state_held_load(st, sf.id, &fs->held, &err);
        for (size_t i = 0; i < fs->held.n; i++)
            fs->held_bytes += fs->held.v[i].size;
    } else if (rc == 1) {
        rc = 0;
    }
    store_list_opts lo = {0};
    if (rc == 0 && fs->local && (rc = loc->ops->open_folder(loc, fs->name, NULL, &err)) == 0)
        rc = loc->ops->list_messages(loc, &lo, &msgs, &err);
    if (rc < 0)
        fs->problem = xstrdup(err.message);
    else if (fs->local)
        compare(fs, &pairs, &msgs);
    store_msg_list_free(&msgs);
    state_pair_list_free(&pairs);
    state_folder_free(&sf);
}

static void add_folder(account_status *as, const char *name, bool local)
{
    for (size_t i = 0; i < as->n; i++)
        if (!strcmp(as->f[i].name, name)) {
            as->f[i].local |= local;
            return;
        }
    as->f = xrealloc(as->f, (as->n + 1) * sizeof *as->f);
    as->f[as->n++] = (folder_status){.name = xstrdup(name), .local = local};
}

static int cmp_folder(const void *a, const void *b)
{
    return strcmp(((const folder_status *)a)->name, ((const folder_status *)b)->name);
}

static int collect(account_status *as, ofs_error *err)
{
    const cfg_account *a = as->a;
    state *st = NULL;
    as->have_state = access(a->state, F_OK) == 0;
    if (as->have_state) {
        as->health = state_health(a->state, &as->health_report, err);
        if (as->health < 0) {
            as->health_report = xstrdup(err->message);
            return 0; /* reported as the database's health, not as a failure to run */
        }
        if (state_open(a->state, &st, err) < 0)
            return -1;
    }
    store *loc = NULL;
    strlist names, known;
    strlist_init(&names);
    strlist_init(&known);
    int rc = maildir_store_open(a->local, a->layout, &loc, err);
    if (rc == 0)
        rc = loc->ops->list_folders(loc, &names, NULL, err);
    if (rc == 0 && st)
        rc = state_folder_names(st, &known, err);
    for (size_t i = 0; rc == 0 && i < names.n; i++)
        add_folder(as, names.v[i], true);
    for (size_t i = 0; rc == 0 && i < known.n; i++)
        add_folder(as, known.v[i], false);
    if (as->n)
        qsort(as->f, as->n, sizeof *as->f, cmp_folder);
    for (size_t i = 0; rc == 0 && i < as->n; i++)
        scan_folder(st, loc, &as->f[i]);
    strlist_free(&names);
    strlist_free(&known);
    if (loc)
        loc->ops->close(loc);
    state_close(st);
    return rc;
}

static void account_status_free(account_status *as)
{
    for (size_t i = 0; i < as->n; i++) {
        free(as->f[i].name);
        free(as->f[i].problem);
        state_held_list_free(&as->f[i].held);
    }
    free(as->f);
    free(as->health_report);
}

/* ---- output ---- */

static void fmt_time(int64_t t, char *out, size_t len)
{
    time_t tt = (time_t)t;
    struct tm tm;
    localtime_r(&tt, &tm);
    strftime(out, len, "%Y-%m-%d %H:%M:%S", &tm);
}

static const char *health_word(const account_status *as)
{
    if (!as->have_state)
        return "none yet (never synced)";
    return as->health == 0 ? "ok" : as->health > 0 ? "DAMAGED" : "UNREADABLE";
}

static const state_held *largest_held(const folder_status *f)
{
    const state_held *big = NULL;
    for (size_t i = 0; i < f->held.n; i++)
        if (!big || f->held.v[i].size > big->size)
            big = &f->held.v[i];
    return big;
}

/* "; 2 held back on the server (1.2 MiB), largest UID 7 (1.0 MiB)", and with -v one line
 * per message below the folder's. */
static void print_held(const folder_status *f, buf *line, buf *below, bool verbose)
{
    const state_held *big = largest_held(f);
    if (!big)
        return;
    buf_printf(line, "; %zu held back on the server (", f->held.n);
    ui_fmt_bytes(line, f->held_bytes);
    buf_printf(line, "), largest UID %u (", big->uid);
    ui_fmt_bytes(line, big->size);
    buf_adds(line, ")");
    for (size_t i = 0; verbose && i < f->held.n; i++) {
        buf_printf(below, "    held back: UID %u, ", f->held.v[i].uid);
        ui_fmt_bytes(below, f->held.v[i].size);
        buf_adds(below, "\n");
    }
}

static void print_text(const account_status *as, bool verbose)
{
    const cfg_account *a = as->a;
    printf("%s: %s@%s:%d <-> %s\n", a->name, a->user ? a->user : "?", a->host ? a->host : "?",
           a->port, a->local);
    printf("  state database %s: %s%s%s\n", a->state, health_word(as),
           as->health_report ? ": " : "", as->health_report ? as->health_report : "");
    uint64_t added = 0, flagged = 0, deleted = 0, unfinished = 0, held = 0, held_bytes = 0;
    buf line, below;
    buf_init(&line);
    buf_init(&below);
    for (size_t i = 0; i < as->n; i++) {
        const folder_status *f = &as->f[i];
        char when[32];
        if (f->last_sync)
            fmt_time(f->last_sync, when, sizeof when);
        printf("  %s: %s%s", f->name, f->last_sync ? "last synced " : "never synced",
               f->last_sync ? when : "");
        if (f->problem)
            printf("; cannot scan: %s", f->problem);
        else if (!f->local)
            printf("; missing locally (the next sync restores it)");
        else if (f->added || f->flagged || f->deleted)
            printf("; to send: %llu new, %llu flagged, %llu deleted", (unsigned long long)f->added,
                   (unsigned long long)f->flagged, (unsigned long long)f->deleted);
        else
            printf("; nothing to send");
        if (f->unfinished)
            printf("; %llu copies of an interrupted sync to finish",
                   (unsigned long long)f->unfinished);
        buf_reset(&line);
        buf_reset(&below);
        print_held(f, &line, &below, verbose);
        printf("%s\n%s", line.len ? line.data : "", below.len ? below.data : "");
        held += f->held.n;
        held_bytes += f->held_bytes;
        added += f->added;
        flagged += f->flagged;
        deleted += f->deleted;
        unfinished += f->unfinished;
    }
    printf("  waiting to be sent: %llu new, %llu flagged, %llu deleted", (unsigned long long)added,
           (unsigned long long)flagged, (unsigned long long)deleted);
    if (unfinished)
        printf("; %llu unfinished copies", (unsigned long long)unfinished);
    putchar('\n');
    if (held) {
        buf_reset(&line);
        ui_fmt_bytes(&line, held_bytes);
        printf("  held back on the server (larger than max-size): %llu (%s)\n",
               (unsigned long long)held, line.data);
    }
    buf_free(&line);
    buf_free(&below);
}

static void json_key(buf *b, const char *k, const char *v)
{
    buf_printf(b, "\"%s\":", k);
    if (v)
        json_str(b, v);
    else
        buf_adds(b, "null");
}

static void json_time(buf *b, const char *k, int64_t t)
{
    if (!t) {
        buf_printf(b, "\"%s\":null", k);
        return;
    }
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    char s[32];
    strftime(s, sizeof s, "%Y-%m-%dT%H:%M:%SZ", &tm);
    buf_printf(b, "\"%s\":\"%s\"", k, s);
}

static void print_json(const account_status *as)
{
    buf b;
    buf_init(&b);
    buf_adds(&b, "{\"type\":\"status\",");
    json_key(&b, "account", as->a->name);
    buf_adds(&b, ",\"state\":{");
    json_key(&b, "path", as->a->state);
    buf_printf(&b, ",\"exists\":%s,\"healthy\":%s,", as->have_state ? "true" : "false",
               as->health == 0 ? "true" : "false");
    json_key(&b, "problem", as->health_report);
    buf_adds(&b, "},\"folders\":[");
    uint64_t t[4] = {0};
    for (size_t i = 0; i < as->n; i++) {
        const folder_status *f = &as->f[i];
        buf_adds(&b, i ? ",{" : "{");
        json_key(&b, "name", f->name);
        buf_adds(&b, ",");
        json_time(&b, "last_sync", f->last_sync);
        buf_printf(&b,
                   ",\"local\":%s,\"messages\":%llu,\"new\":%llu,\"flagged\":%llu,"
                   "\"deleted\":%llu,\"unfinished\":%llu,",
                   f->local ? "true" : "false", (unsigned long long)f->messages,
                   (unsigned long long)f->added, (unsigned long long)f->flagged,
                   (unsigned long long)f->deleted, (unsigned long long)f->unfinished);
        json_key(&b, "problem", f->problem);
        buf_printf(&b, ",\"held_back_bytes\":%llu,\"held_back\":[",
                   (unsigned long long)f->held_bytes);
        for (size_t j = 0; j < f->held.n; j++)
            buf_printf(&b, "%s{\"uid\":%u,\"size\":%llu}", j ? "," : "", f->held.v[j].uid,
                       (unsigned long long)f->held.v[j].size);
        buf_adds(&b, "]}");
        t[0] += f->added;
        t[1] += f->flagged;
        t[2] += f->deleted;
        t[3] += f->unfinished;
    }
    buf_printf(&b,
               "],\"to_send\":{\"new\":%llu,\"flagged\":%llu,\"deleted\":%llu},"
               "\"unfinished\":%llu}\n",
               (unsigned long long)t[0], (unsigned long long)t[1], (unsigned long long)t[2],
               (unsigned long long)t[3]);
    fwrite(b.data, 1, b.len, stdout);
    buf_free(&b);
}

static int status_one(const cfg_account *a, bool json, bool verbose)
{
    account_status as = {.a = a};
    ofs_error err = {0};
    int rc = collect(&as, &err);
    if (rc == 0) {
        if (json)
            print_json(&as);
        else
            print_text(&as, verbose);
    }
    fflush(stdout);
    int damaged = as.have_state && as.health != 0;
    account_status_free(&as);
    if (rc < 0) {
        err_prefix(&err, "%s", a->name);
        return cli_fail(&err);
    }
    return damaged ? OFS_E_STATE : 0;
}

int cmd_status(cli_opts *o, int argc, char **argv)
{
    static const struct option longopts[] = {CLI_COMMON_LONGOPTS, {NULL, 0, NULL, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, CLI_COMMON_SHORTOPTS, longopts, NULL)) != -1) {
        int r = cli_common_option(o, ch, optarg);
        if (r < 0) {
            fputs(usage, stdout);
            return 0;
        }
        if (r == 0)
            return cli_usage_error(usage, "unknown option for status");
    }
    if (argc - optind > 1)
        return cli_usage_error(usage, "status takes at most one ACCOUNT");
    ofs_config *cfg = NULL;
    int rc = cli_load_config(o, &cfg);
    if (rc)
        return rc;
    if (optind < argc) {
        const cfg_account *a = cfg_find_account(cfg, argv[optind]);
        if (!a) {
            fprintf(stderr, "ofsync: no account '%s' in %s\n", argv[optind], cfg->path);
            ofs_config_free(cfg);
            return OFS_E_USAGE;
        }
        rc = status_one(a, o->json, o->verbosity > 0);
    } else {
        for (size_t i = 0; i < cfg->n_accounts; i++) {
            int r = status_one(&cfg->accounts[i], o->json, o->verbosity > 0);
            if (r && !rc)
                rc = r;
        }
    }
    ofs_config_free(cfg);
    return rc;
}
