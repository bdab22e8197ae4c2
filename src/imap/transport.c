/* transport.c: plain TCP for the IMAP client: connect with a timeout, read/write with deadlines.
 * The socket is non-blocking; every wait is a poll() bounded by the account's timeout. */
#include "imap/transport.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "util/err.h"
#include "util/mem.h"

#define TRANSPORT_DEFAULT_TIMEOUT 60

static int tcp_poll(int fd, short events, int timeout)
{
    struct pollfd p = {.fd = fd, .events = events};
    for (;;) {
        int r = poll(&p, 1, timeout * 1000);
        if (r >= 0 || errno != EINTR)
            return r;
    }
}

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void activity_tick(imap_transport *t, double idle, double now)
{
    if (!t->activity || now - t->activity_last < IMAP_ACTIVITY_PERIOD)
        return;
    t->activity_last = now;
    t->activity(t->activity_ctx, idle);
}

double imap_now(void)
{
    return mono_now();
}

/* Bytes we sent that the peer has not acknowledged yet, or -1 when unknown. */
static long transport_unacked(int fd)
{
    int q = 0;
    return ioctl(fd, SIOCOUTQ, &q) == 0 ? q : -1;
}

/* Polls in slices so the activity hook hears about a long wait while it lasts. The deadline is
 * absolute (EINTR and slices cannot stretch it); only progress moves it: the peer acknowledging
 * bytes we sent, as when a big APPEND drains over a slow link before any answer can come. */
static int tcp_poll_reporting(imap_transport *t, short events)
{
    double start = mono_now(), deadline = start + t->timeout;
    long unacked = transport_unacked(t->fd);
    for (;;) {
        double now = mono_now();
        if (now >= deadline)
            return 0;
        double left = deadline - now;
        int ms = (int)((left < IMAP_ACTIVITY_PERIOD ? left : IMAP_ACTIVITY_PERIOD) * 1000) + 1;
        struct pollfd p = {.fd = t->fd, .events = events};
        int r = poll(&p, 1, ms);
        if (r < 0 && errno == EINTR)
            continue;
        if (r != 0)
            return r;
        now = mono_now();
        long q = transport_unacked(t->fd);
        if (q >= 0 && unacked >= 0 && q < unacked) {
            start = now;
            deadline = now + t->timeout;
        }
        unacked = q;
        activity_tick(t, now - start, now);
    }
}

int imap_transport_wait(imap_transport *t, short events, ofs_error *err)
{
    int r = tcp_poll_reporting(t, events);
    if (r < 0)
        return err_errno(err, OFS_E_NET, errno, "waiting for %s:%d", t->host, t->port);
    if (r == 0) {
        if (events & POLLIN)
            return err_set(err, OFS_E_NET, "no data from %s for %d s", t->host, t->timeout);
        return err_set(err, OFS_E_NET, "cannot send to %s for %d s", t->host, t->timeout);
    }
    return 0;
}

static int tcp_lost(imap_transport *t, int errnum, ofs_error *err)
{
    return err_errno(err, OFS_E_NET, errnum, "connection to %s:%d lost", t->host, t->port);
}

static long tcp_read(imap_transport *t, void *data, size_t len, ofs_error *err)
{
    for (;;) {
        ssize_t n = recv(t->fd, data, len, 0);
        if (n > 0)
            return (long)n;
        if (n == 0)
            return err_set(err, OFS_E_NET, "server %s:%d closed the connection", t->host, t->port);
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return tcp_lost(t, errno, err);
        if (imap_transport_wait(t, POLLIN, err) < 0)
            return -1;
    }
}

static int tcp_write(imap_transport *t, const void *data, size_t len, ofs_error *err)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = send(t->fd, p, len, MSG_NOSIGNAL);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            return tcp_lost(t, errno, err);
        if (imap_transport_wait(t, POLLOUT, err) < 0)
            return -1;
    }
    return 0;
}

static void tcp_close(imap_transport *t)
{
    if (t->fd >= 0)
        close(t->fd);
    free(t->host);
    free(t);
}

static const imap_transport_ops tcp_ops = {
    .read = tcp_read,
    .write = tcp_write,
    .close = tcp_close,
};

/* One non-blocking connect attempt; returns the fd or -1 with errno set (ETIMEDOUT on timeout). */
static int tcp_try(const struct addrinfo *ai, int timeout)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0)
        return -1;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
        if (errno != EINPROGRESS) {
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
        int r = tcp_poll(fd, POLLOUT, timeout);
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if (r == 0)
            soerr = ETIMEDOUT;
        else if (r < 0)
            soerr = errno;
        else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
            soerr = errno;
        if (soerr) {
            close(fd);
            errno = soerr;
            return -1;
        }
    }
    /* Commands are small and answered one by one: do not let Nagle hold them back. */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

int imap_transport_connect(const char *host, int port, int timeout, imap_transport **out,
                           ofs_error *err)
{
    if (timeout <= 0)
        timeout = TRANSPORT_DEFAULT_TIMEOUT;
    if (port <= 0 || port > 65535)
        return err_set(err, OFS_E_CONFIG, "bad port %d for server %s", port, host);
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int g = getaddrinfo(host, portstr, &hints, &res);
    if (g != 0)
        return err_set(err, OFS_E_NET, "cannot resolve server %s: %s", host,
                       g == EAI_SYSTEM ? strerror(errno) : gai_strerror(g));
    int fd = -1, last = ECONNREFUSED;
    for (const struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = tcp_try(ai, timeout);
        if (fd < 0)
            last = errno;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        if (last == ETIMEDOUT)
            return err_set(err, OFS_E_NET, "cannot connect to %s:%d: no answer in %d s", host, port,
                           timeout);
        return err_errno(err, OFS_E_NET, last, "cannot connect to %s:%d", host, port);
    }
    imap_transport *t = xcalloc(1, sizeof *t);
    t->ops = &tcp_ops;
    t->fd = fd;
    t->host = xstrdup(host);
    t->port = port;
    t->timeout = timeout;
    *out = t;
    return 0;
}

long imap_transport_read(imap_transport *t, void *data, size_t len, ofs_error *err)
{
    long n = t->ops->read(t, data, len, err);
    if (n > 0) {
        t->bytes_in += (uint64_t)n;
        if (t->activity)
            activity_tick(t, 0, mono_now());
    }
    return n;
}

int imap_transport_write(imap_transport *t, const void *data, size_t len, ofs_error *err)
{
    if (t->ops->write(t, data, len, err) < 0)
        return -1;
    t->bytes_out += len;
    if (t->activity)
        activity_tick(t, 0, mono_now());
    return 0;
}

bool imap_transport_pending(imap_transport *t)
{
    return t->ops->pending && t->ops->pending(t);
}

void imap_transport_close(imap_transport *t)
{
    if (t)
        t->ops->close(t);
}
