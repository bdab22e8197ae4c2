/* cmd_watch.c: `ofsync watch [ACCOUNT]`: continuous two-way sync until SIGINT or SIGTERM.
 * Built on the embedding API (one session per account, polled with a signalfd), like any host. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "sync/config.h"
#include "ui/ui.h"

static const char usage[] = "usage: ofsync watch [--config FILE] [-v | -q] [ACCOUNT]\n"
                            "Keeps ACCOUNT (default: every account) in sync until SIGINT or "
                            "SIGTERM.\n";

enum { WATCH_MAX_ACCOUNTS = 64, WAKE_MS = 60 * 1000 };

typedef struct watch_cli {
    ui u;
    int verbosity;
    bool json; /* every event goes to the JSON renderer */
    int exit_code;
} watch_cli;

static void line(watch_cli *w, const ofs_event *ev, const char *prefix, const char *what,
                 const char *suffix)
{
    if (w->u.timestamps) {
        char stamp[32];
        time_t t = (time_t)ev->since;
        struct tm tm;
        localtime_r(&t, &tm);
        strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S ", &tm);
        fputs(stamp, stdout);
    }
    printf("%s%s%s: ", ev->account, ev->folder ? "/" : "", ev->folder ? ev->folder : "");
    printf("%s%s%s\n", prefix, what ? what : "", suffix);
    fflush(stdout);
}

static bool pass_idle(const ofs_sync_stats *s)
{
    return !s->downloaded && !s->uploaded && !s->flags_to_local && !s->flags_to_server &&
           !s->expunged_local && !s->expunged_server && !s->folders_local && !s->folders_server;
}

/* The watch's own events here; pass events go to the usual renderer. A pass that found
 * nothing to do (often the echo of our own changes) is only shown with -v. */
static void on_event(const ofs_event *ev, void *ctx)
{
    watch_cli *w = ctx;
    if (w->json && ev->type != OFS_EV_DONE) {
        ui_on_event(ev, &w->u);
        return;
    }
    switch (ev->type) {
    case OFS_EV_CHANGE:
        if (w->verbosity > 0)
            line(w, ev, "change (", ev->text, ")");
        break;
    case OFS_EV_WAITING:
        if (ev->waited > 0) /* a pass waiting for the server: the renderer paces those */
            ui_on_event(ev, &w->u);
        else if (w->verbosity >= 0)
            line(w, ev, "", ev->text, "");
        break;
    case OFS_EV_ERROR:
        line(w, ev, "", ev->text, "");
        break;
    case OFS_EV_DONE:
        if (ev->code && !w->exit_code) {
            fprintf(stderr, "ofsync: %s\n", ev->text);
            w->exit_code = ev->code;
        }
        break;
    case OFS_EV_PASS_DONE:
        if (w->verbosity > 0 || !pass_idle(ev->stats))
            ui_on_event(ev, &w->u);
        break;
    default:
        ui_on_event(ev, &w->u);
    }
}

static int open_signals(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigprocmask(SIG_BLOCK, &set, NULL);
    return signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
}

static int start_all(ofs_config *cfg, const char *account, watch_cli *w, ofs_session **s, size_t *n)
{
    ofs_error err = {0};
    size_t want = account ? 1 : cfg->n_accounts;
    if (want > WATCH_MAX_ACCOUNTS)
        want = WATCH_MAX_ACCOUNTS;
    for (*n = 0; *n < want; (*n)++) {
        const char *name = account ? account : cfg->accounts[*n].name;
        if (ofs_open(cfg, name, &s[*n], &err) < 0 ||
            ofs_subscribe(s[*n], OFS_EVMASK_ALL, on_event, w, &err) < 0 ||
            ofs_start_watch(s[*n], &err) < 0) {
            if (s[*n])
                ofs_close(s[*n], NULL);
            return cli_fail(&err);
        }
    }
    return 0;
}

/* Dispatches until every session has ended; the first signal asks them to stop, a second one
 * leaves at once (the state is crash-safe: the next run resumes). */
static void run_loop(ofs_session **s, size_t n, int sfd, watch_cli *w)
{
    bool stopping = false;
    for (;;) {
        struct pollfd p[WATCH_MAX_ACCOUNTS + 1];
        size_t live = 0;
        for (size_t i = 0; i < n; i++) {
            p[i] = (struct pollfd){.fd = ofs_fd(s[i]), .events = POLLIN};
            live += !ofs_done(s[i]);
        }
        if (!live)
            return;
        if (w->exit_code && !stopping) { /* one account failed for good: end them all */
            for (size_t i = 0; i < n; i++)
                ofs_stop(s[i]);
            stopping = true;
        }
        p[n] = (struct pollfd){.fd = sfd, .events = POLLIN};
        if (poll(p, n + 1, WAKE_MS) < 0 && errno != EINTR)
            return;
        for (size_t i = 0; i < n; i++)
            ofs_dispatch(s[i]);
        struct signalfd_siginfo si;
        if (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
            if (stopping)
                _exit(128 + (int)si.ssi_signo);
            for (size_t i = 0; i < n; i++)
                ofs_stop(s[i]);
            stopping = true;
        }
    }
}

int cmd_watch(cli_opts *o, int argc, char **argv)
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
            return cli_usage_error(usage, "unknown option for watch");
    }
    if (argc - optind > 1)
        return cli_usage_error(usage, "watch takes at most one ACCOUNT");
    ofs_config *cfg = NULL;
    int rc = cli_load_config(o, &cfg);
    if (rc)
        return rc;
    watch_cli w = {.verbosity = o->verbosity, .json = o->json};
    ui_open(&w.u, stdout, o->verbosity, o->json);
    int sfd = open_signals();
    ofs_session *s[WATCH_MAX_ACCOUNTS] = {0};
    size_t n = 0;
    rc = sfd < 0 ? 1 : start_all(cfg, optind < argc ? argv[optind] : NULL, &w, s, &n);
    if (rc == 0)
        run_loop(s, n, sfd, &w);
    for (size_t i = 0; i < n; i++) {
        ofs_error err = {0};
        if (ofs_close(s[i], &err) < 0 && !w.exit_code)
            w.exit_code = cli_fail(&err);
    }
    ui_close(&w.u);
    if (sfd >= 0)
        close(sfd);
    ofs_config_free(cfg);
    return rc ? rc : w.exit_code;
}
