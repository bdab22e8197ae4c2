/* poll_loop.c: ofsync embedded in a plain poll() loop, as a GUI or daemon would do it.
 * Usage: poll_loop CONFIG ACCOUNT sync|watch [SECONDS]. Watch stops after SECONDS or SIGTERM. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "ofsync.h"

static const char *type_name(enum ofs_event_type t)
{
    static const char *const names[] = {"pass-start", "folder-start", "progress", "folder-done",
                                        "notice",     "pass-done",    "waiting",  "error",
                                        "change",     "done"};
    return (size_t)t < sizeof names / sizeof *names ? names[t] : "?";
}

typedef struct host {
    unsigned long counts[16];
    int result;
} host;

/* Runs on the host's thread, from ofs_dispatch: safe to touch host state without locks. */
static void on_event(const ofs_event *ev, void *ctx)
{
    host *h = ctx;
    h->counts[ev->type & 15]++;
    if (ev->type == OFS_EV_DONE)
        h->result = ev->code;
    if (ev->type == OFS_EV_PROGRESS)
        return;
    printf("event %s %s%s%s%s%s\n", type_name(ev->type), ev->account, ev->folder ? "/" : "",
           ev->folder ? ev->folder : "", ev->text ? ": " : "", ev->text ? ev->text : "");
    fflush(stdout);
}

int main(int argc, char **argv)
{
    if (argc < 4 || (strcmp(argv[3], "sync") && strcmp(argv[3], "watch"))) {
        fprintf(stderr, "usage: %s CONFIG ACCOUNT sync|watch [SECONDS]\n", argv[0]);
        return 2;
    }
    int seconds = argc > 4 ? atoi(argv[4]) : 10;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_BLOCK, &set, NULL);
    int sfd = signalfd(-1, &set, SFD_CLOEXEC);

    ofs_config *cfg;
    ofs_session *s;
    ofs_error err = {0};
    host h = {.result = -1};
    if (ofs_config_load(argv[1], &cfg, &err) < 0 || ofs_open(cfg, argv[2], &s, &err) < 0 ||
        ofs_subscribe(s, OFS_EVMASK_ALL, on_event, &h, &err) < 0 ||
        (!strcmp(argv[3], "sync") ? ofs_start_sync(s, &err) : ofs_start_watch(s, &err)) < 0) {
        fprintf(stderr, "poll_loop: %s\n", err.message);
        return 1;
    }
    /* The host's loop: its own fds (here a signalfd) plus ofsync's one fd. Every wait has a
     * deadline; the ofsync fd is level-triggered, so a dispatch that leaves events behind just
     * makes the next poll return at once. */
    int waited_ms = 0, stopping = 0, wakeups = 0;
    while (!ofs_done(s)) {
        struct pollfd p[2] = {{.fd = ofs_fd(s), .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
        int r = poll(p, 2, 250);
        if (r < 0 && errno != EINTR)
            break;
        wakeups++;
        if (p[0].revents & POLLIN)
            ofs_dispatch(s);
        struct signalfd_siginfo si;
        if ((p[1].revents & POLLIN) && read(sfd, &si, sizeof si) > 0 && !stopping) {
            ofs_stop(s);
            stopping = 1;
        }
        if (r == 0)
            waited_ms += 250;
        if (!stopping && waited_ms >= seconds * 1000) {
            ofs_stop(s);
            stopping = 1;
        }
    }
    printf("summary: passes=%lu changes=%lu errors=%lu done=%lu result=%d wakeups=%d\n",
           h.counts[OFS_EV_PASS_DONE], h.counts[OFS_EV_CHANGE], h.counts[OFS_EV_ERROR],
           h.counts[OFS_EV_DONE], h.result, wakeups);
    if (ofs_close(s, &err) < 0) {
        fprintf(stderr, "poll_loop: %s\n", err.message);
        return 1;
    }
    ofs_config_free(cfg);
    close(sfd);
    return h.result == 0 ? 0 : 1;
}
