/* tty.c: the live display on a terminal: a line per active folder (bar, counts, bytes, rate,
 * ETA or what it waits for) and a total line, redrawn in place, erased on exit and signals. */
#include <errno.h>
#include <locale.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <wchar.h>

#include "ui/ui.h"

#define TTY_MAX_FOLDERS 32  /* active folders followed: one per connection at most */
#define TTY_MAX_LINES 16    /* folder lines shown; more are counted on the total line */
#define TTY_REDRAW_GAP 0.1  /* at most 10 redraws a second */
#define TTY_RATE_WINDOW 5.0 /* seconds of history behind the rate */
#define TTY_SAMPLES 64

typedef struct tty_folder {
    char *account, *name;
    uint64_t done, total, bytes_done, bytes_total;
    bool waiting;
    double waited;
    char *doing;
} tty_folder;

typedef struct rate_sample {
    double t;
    uint64_t bytes;
} rate_sample;

struct ui_tty {
    FILE *out;
    int fd;
    int verbosity;
    int width, height;
    tty_folder f[TTY_MAX_FOLDERS];
    size_t nf;
    /* The pass: messages and bytes copied in finished folders, wire bytes, a wait outside
     * any folder (login, LIST). */
    uint64_t msgs_done, bytes_done, folders_done, net;
    double pass_start;
    bool pass_waiting;
    double pass_waited;
    char *pass_doing;
    rate_sample s[TTY_SAMPLES];
    size_t ns, s_head;
    /* What is on the screen: the live lines' widths, to move back over them. */
    size_t drawn[TTY_MAX_LINES + 1];
    size_t lines;
    double last_draw;
    locale_t utf8;
};

/* The signal handlers' view: a ready-made erase sequence for the lines now on screen. */
static ui_tty *volatile tty_active;
static int tty_fd = -1;
static char tty_erase[64];
static volatile sig_atomic_t tty_erase_len;
static volatile sig_atomic_t tty_resized;
static struct sigaction tty_old_int, tty_old_term, tty_old_hup, tty_old_winch;

static void on_winch(int sig)
{
    (void)sig;
    tty_resized = 1;
}

/* Leaves a clean screen, then lets the signal do what it would have done. */
static void on_fatal(int sig)
{
    if (tty_erase_len > 0) {
        ssize_t r = write(tty_fd, tty_erase, (size_t)tty_erase_len);
        (void)r;
    }
    static const char show[] = "\033[?25h";
    ssize_t r = write(tty_fd, show, sizeof show - 1);
    (void)r;
    signal(sig, SIG_DFL);
    raise(sig);
}

/* The terminal's size, from the terminal or else $COLUMNS and $LINES (80x24). */
static void term_size(ui_tty *t)
{
    struct winsize ws = {0};
    bool known = ioctl(t->fd, TIOCGWINSZ, &ws) == 0;
    const char *c = getenv("COLUMNS"), *l = getenv("LINES");
    int w = c ? (int)strtol(c, NULL, 10) : 0, h = l ? (int)strtol(l, NULL, 10) : 0;
    t->width = known && ws.ws_col > 0 ? ws.ws_col : w > 0 ? w : 80;
    t->height = known && ws.ws_row > 0 ? ws.ws_row : h > 0 ? h : 24;
}

ui_tty *ui_tty_new(FILE *out, int verbosity)
{
    ui_tty *t = xcalloc(1, sizeof *t);
    t->out = out;
    t->fd = fileno(out);
    t->verbosity = verbosity;
    term_size(t);
    t->pass_start = ui_now();
    t->utf8 = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
    tty_active = t;
    tty_fd = t->fd;
    struct sigaction sa = {.sa_handler = on_winch, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGWINCH, &sa, &tty_old_winch);
    sa.sa_handler = on_fatal;
    sa.sa_flags = SA_RESETHAND;
    sigaction(SIGINT, &sa, &tty_old_int);
    sigaction(SIGTERM, &sa, &tty_old_term);
    sigaction(SIGHUP, &sa, &tty_old_hup);
    return t;
}

/* ---- text width ---- */

/* Columns of one code point on a terminal. */
static int cp_width(ui_tty *t, wchar_t wc)
{
    if (!t->utf8)
        return 1;
    locale_t old = uselocale(t->utf8);
    int w = wcwidth(wc);
    uselocale(old);
    return w < 0 ? 1 : w;
}

/* Decodes one UTF-8 sequence (or a lone byte as U+FFFD); returns its length. */
static size_t next_cp(const unsigned char *s, wchar_t *wc)
{
    if (s[0] < 0x80) {
        *wc = s[0];
        return 1;
    }
    int n = s[0] >= 0xf0 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc0 ? 2 : 0;
    unsigned cp = n == 2 ? s[0] & 0x1f : n == 3 ? s[0] & 0x0f : s[0] & 0x07;
    for (int i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            n = 0;
            break;
        }
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if (n == 0) {
        *wc = 0xfffd;
        return 1;
    }
    *wc = (wchar_t)cp;
    return (size_t)n;
}

/* Appends s cut to at most cols columns (control characters shown as '?'); returns the
 * columns used. */
static size_t add_cols(ui_tty *t, buf *b, const char *s, size_t cols)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t used = 0;
    while (*p) {
        wchar_t wc;
        size_t n = next_cp(p, &wc);
        bool ctl = wc < 0x20 || wc == 0x7f || (wc >= 0x80 && wc < 0xa0) || wc == 0xfffd;
        size_t w = ctl ? 1 : (size_t)cp_width(t, wc);
        if (used + w > cols)
            break;
        if (ctl)
            buf_addc(b, '?');
        else
            buf_add(b, p, n);
        used += w;
        p += n;
    }
    return used;
}

static size_t text_cols(ui_tty *t, const char *s)
{
    buf b;
    buf_init(&b);
    size_t n = add_cols(t, &b, s, SIZE_MAX);
    buf_free(&b);
    return n;
}

/* ---- rate and ETA ---- */

static void rate_add(ui_tty *t, double now, uint64_t bytes)
{
    if (t->ns && now - t->s[(t->s_head + t->ns - 1) % TTY_SAMPLES].t < 0.2)
        return;
    if (t->ns == TTY_SAMPLES) {
        t->s_head = (t->s_head + 1) % TTY_SAMPLES;
        t->ns--;
    }
    t->s[(t->s_head + t->ns) % TTY_SAMPLES] = (rate_sample){now, bytes};
    t->ns++;
    while (t->ns > 2 && now - t->s[t->s_head].t > TTY_RATE_WINDOW) {
        t->s_head = (t->s_head + 1) % TTY_SAMPLES;
        t->ns--;
    }
}

/* Bytes per second over the last few seconds of wire traffic; 0 when unknown. */
static double rate_now(const ui_tty *t)
{
    if (t->ns < 2)
        return 0;
    const rate_sample *a = &t->s[t->s_head], *z = &t->s[(t->s_head + t->ns - 1) % TTY_SAMPLES];
    double dt = z->t - a->t;
    return dt > 0.2 ? (double)(z->bytes - a->bytes) / dt : 0;
}

/* ---- lines ---- */

static void add_bar(buf *b, uint64_t done, uint64_t total, size_t width)
{
    size_t fill = total ? (size_t)((double)width * (double)done / (double)total) : 0;
    if (fill > width)
        fill = width;
    buf_addc(b, '[');
    for (size_t i = 0; i < width; i++)
        buf_addc(b, i < fill ? '#' : '-');
    buf_addc(b, ']');
}

/* The right-hand part of a folder line: counts, bytes, rate, ETA; or what it waits for. */
static void folder_tail(ui_tty *t, const tty_folder *f, buf *b)
{
    buf_printf(b, " %llu/%llu", (unsigned long long)f->done, (unsigned long long)f->total);
    if (f->waiting) {
        ofs_event ev = {.waited = f->waited, .text = f->doing};
        buf_adds(b, "  ");
        ui_waiting_text(&ev, b);
        return;
    }
    buf_adds(b, "  ");
    ui_fmt_bytes(b, f->bytes_done);
    bool bytes_known = f->bytes_total >= f->bytes_done && f->bytes_total > 0;
    if (bytes_known) {
        buf_adds(b, "/");
        ui_fmt_bytes(b, f->bytes_total);
    }
    /* The rate is the wire's: a folder's own only while no other one shares it. */
    double rate = t->nf == 1 ? rate_now(t) : 0;
    if (rate > 0) {
        buf_adds(b, "  ");
        ui_fmt_bytes(b, (uint64_t)rate);
        buf_adds(b, "/s");
        if (bytes_known && f->done < f->total) {
            buf_adds(b, "  ETA ");
            ui_fmt_duration(b, (double)(f->bytes_total - f->bytes_done) / rate);
        }
    }
}

static void folder_line(ui_tty *t, const tty_folder *f, buf *out)
{
    size_t width = (size_t)t->width - 1; /* never the last column: no autowrap surprises */
    buf tail;
    buf_init(&tail);
    buf_adds(&tail, "");
    folder_tail(t, f, &tail);
    size_t tail_cols = text_cols(t, tail.data);
    size_t name_cols = text_cols(t, f->name);
    if (name_cols > 24)
        name_cols = 24;
    size_t used = add_cols(t, out, f->name, name_cols);
    for (; used < name_cols; used++)
        buf_addc(out, ' ');
    buf_addc(out, ' ');
    used++;
    /* The bar takes what the tail leaves, 10 to 30 columns; on a narrow terminal the tail
     * is cut first, then the bar goes. */
    size_t avail = width > used ? width - used : 0;
    /* What a wait is about matters more than the bar: the bar gives way to it. */
    bool bar = f->waiting ? avail >= tail_cols + 12 : avail >= 12;
    if (bar) {
        size_t bw = avail > tail_cols + 2 ? avail - tail_cols - 2 : 0;
        bw = bw < 10 ? 10 : bw > 30 ? 30 : bw;
        add_bar(out, f->done, f->total, bw);
        used += bw + 2;
    }
    if (used < width)
        add_cols(t, out, tail.data, width - used);
    buf_free(&tail);
}

/* Folder lines that fit: at most TTY_MAX_LINES, and the total line below them on screen
 * (lines scrolled off the top could not be redrawn in place). */
static size_t shown_folders(const ui_tty *t)
{
    size_t fit = t->height > 2 ? (size_t)t->height - 2 : 0;
    fit = fit < TTY_MAX_LINES ? fit : TTY_MAX_LINES;
    return t->nf < fit ? t->nf : fit;
}

/* Bytes the active folders have left to copy, or -1 when some folder's total is unknown. */
static double bytes_left(const ui_tty *t)
{
    double left = 0;
    for (size_t i = 0; i < t->nf; i++) {
        const tty_folder *f = &t->f[i];
        if (f->bytes_total < f->bytes_done || (!f->bytes_total && f->done < f->total))
            return -1;
        left += (double)(f->bytes_total - f->bytes_done);
    }
    return left;
}

static void total_line(ui_tty *t, buf *out)
{
    uint64_t msgs = t->msgs_done, bytes = t->bytes_done;
    for (size_t i = 0; i < t->nf; i++) {
        msgs += t->f[i].done;
        bytes += t->f[i].bytes_done;
    }
    buf line;
    buf_init(&line);
    buf_printf(&line, "total: %llu folders done, %llu messages, ",
               (unsigned long long)t->folders_done, (unsigned long long)msgs);
    ui_fmt_bytes(&line, bytes);
    double rate = rate_now(t), left = bytes_left(t);
    if (rate > 0) {
        buf_adds(&line, ", ");
        ui_fmt_bytes(&line, (uint64_t)rate);
        buf_adds(&line, "/s");
        if (left > 0) {
            buf_adds(&line, ", ETA ");
            ui_fmt_duration(&line, left / rate);
        }
    }
    buf_adds(&line, ", ");
    ui_fmt_duration(&line, ui_now() - t->pass_start);
    if (t->nf > shown_folders(t))
        buf_printf(&line, " (+%zu more folders active)", t->nf - shown_folders(t));
    if (t->pass_waiting) {
        ofs_event ev = {.waited = t->pass_waited, .text = t->pass_doing};
        buf_adds(&line, "; ");
        ui_waiting_text(&ev, &line);
    }
    add_cols(t, out, line.data, (size_t)t->width - 1);
    buf_free(&line);
}

/* ---- drawing ---- */

/* Rows the lines now on screen take at the current width (a resize may have wrapped them). */
static size_t drawn_rows(const ui_tty *t)
{
    size_t rows = 0, w = t->width > 1 ? (size_t)t->width : 1;
    for (size_t i = 0; i < t->lines; i++)
        rows += t->drawn[i] > w ? (t->drawn[i] + w - 1) / w : 1;
    return rows;
}

static void erase_seq(size_t rows, buf *b)
{
    if (rows)
        buf_printf(b, "\033[%zuA\r\033[J", rows);
}

static void set_signal_erase(ui_tty *t)
{
    buf b;
    buf_init(&b);
    buf_adds(&b, "");
    erase_seq(drawn_rows(t), &b);
    tty_erase_len = 0;
    if (b.len < sizeof tty_erase) {
        memcpy(tty_erase, b.data, b.len);
        tty_erase_len = (sig_atomic_t)b.len;
    }
    buf_free(&b);
}

static void write_all(ui_tty *t, const buf *b)
{
    fflush(t->out);
    for (size_t off = 0; off < b->len;) {
        ssize_t n = write(t->fd, b->data + off, b->len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return; /* a display that cannot be written is no reason to stop a sync */
        off += (size_t)n;
    }
}

static void redraw(ui_tty *t, const char *permanent)
{
    if (tty_resized) {
        tty_resized = 0;
        term_size(t);
    }
    buf b;
    buf_init(&b);
    buf_adds(&b, "\033[?25l");
    erase_seq(drawn_rows(t), &b);
    if (permanent)
        buf_printf(&b, "%s\n", permanent);
    t->lines = 0;
    for (size_t i = 0; i < shown_folders(t); i++) {
        size_t start = b.len;
        folder_line(t, &t->f[i], &b);
        t->drawn[t->lines++] = text_cols(t, b.data + start);
        buf_adds(&b, "\033[K\n");
    }
    size_t start = b.len;
    total_line(t, &b);
    t->drawn[t->lines++] = text_cols(t, b.data + start);
    buf_adds(&b, "\033[K\n");
    write_all(t, &b);
    buf_free(&b);
    set_signal_erase(t);
    t->last_draw = ui_now();
}

static void maybe_redraw(ui_tty *t)
{
    if (tty_resized || ui_now() - t->last_draw >= TTY_REDRAW_GAP)
        redraw(t, NULL);
}

/* ---- events ---- */

static tty_folder *find_folder(ui_tty *t, const ofs_event *ev, bool add)
{
    if (!ev->folder)
        return NULL;
    for (size_t i = 0; i < t->nf; i++)
        if (!strcmp(t->f[i].name, ev->folder) && !strcmp(t->f[i].account, ev->account))
            return &t->f[i];
    if (!add || t->nf == TTY_MAX_FOLDERS)
        return NULL;
    tty_folder *f = &t->f[t->nf++];
    *f = (tty_folder){.account = xstrdup(ev->account), .name = xstrdup(ev->folder)};
    return f;
}

static void folder_free(tty_folder *f)
{
    free(f->account);
    free(f->name);
    free(f->doing);
}

static void drop_folder(ui_tty *t, tty_folder *f)
{
    t->msgs_done += f->done;
    t->bytes_done += f->bytes_done;
    folder_free(f);
    size_t i = (size_t)(f - t->f);
    memmove(&t->f[i], &t->f[i + 1], (t->nf - i - 1) * sizeof *t->f);
    t->nf--;
}

static void update(ui_tty *t, const ofs_event *ev)
{
    bool waiting = ev->type == OFS_EV_WAITING;
    if (ev->net_in || ev->net_out) {
        t->net = ev->net_in + ev->net_out;
        rate_add(t, ui_now(), t->net);
    }
    if (!ev->folder) {
        t->pass_waiting = waiting;
        t->pass_waited = ev->waited;
        free(t->pass_doing);
        t->pass_doing = waiting && ev->text ? xstrdup(ev->text) : NULL;
        return;
    }
    tty_folder *f = find_folder(t, ev, true);
    if (!f)
        return;
    t->pass_waiting = false;
    f->done = ev->done;
    f->total = ev->total;
    f->bytes_done = ev->bytes_done;
    f->bytes_total = ev->bytes_total;
    f->waiting = waiting;
    f->waited = ev->waited;
    free(f->doing);
    f->doing = waiting && ev->text ? xstrdup(ev->text) : NULL;
}

static void permanent_line(ui_tty *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void permanent_line(ui_tty *t, const char *fmt, ...)
{
    buf b;
    buf_init(&b);
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&b, fmt, ap);
    va_end(ap);
    redraw(t, b.data);
    buf_free(&b);
}

void ui_tty_event(ui_tty *t, const ofs_event *ev)
{
    tty_folder *f;
    switch (ev->type) {
    case OFS_EV_PASS_START:
        t->pass_start = ui_now();
        t->msgs_done = t->bytes_done = t->folders_done = 0;
        t->ns = 0;
        redraw(t, NULL);
        break;
    case OFS_EV_FOLDER_START:
        update(t, ev);
        maybe_redraw(t);
        break;
    case OFS_EV_PROGRESS:
    case OFS_EV_WAITING:
        update(t, ev);
        maybe_redraw(t);
        break;
    case OFS_EV_FOLDER_DONE:
        t->folders_done++;
        if ((f = find_folder(t, ev, false)))
            drop_folder(t, f);
        if (t->verbosity > 0 || strcmp(ev->text, "in sync") != 0)
            permanent_line(t, "%s/%s: %s", ev->account, ev->folder, ev->text);
        else
            maybe_redraw(t);
        break;
    case OFS_EV_NOTICE:
        permanent_line(t, "%s%s%s: %s", ev->account, ev->folder ? "/" : "",
                       ev->folder ? ev->folder : "", ev->text);
        break;
    case OFS_EV_ERROR:
        if ((f = find_folder(t, ev, false)))
            drop_folder(t, f);
        if (ev->folder)
            permanent_line(t, "%s: error: %s", ev->account, ev->text);
        break;
    case OFS_EV_PASS_DONE: {
        while (t->nf)
            drop_folder(t, &t->f[t->nf - 1]);
        t->pass_waiting = false;
        buf b;
        buf_init(&b);
        ui_summary_line(ev, &b);
        /* The summary replaces the live lines: nothing is left to redraw after it. */
        buf out;
        buf_init(&out);
        buf_adds(&out, "");
        erase_seq(drawn_rows(t), &out);
        buf_printf(&out, "%s\n\033[?25h", b.data);
        t->lines = 0;
        set_signal_erase(t);
        write_all(t, &out);
        buf_free(&out);
        buf_free(&b);
        break;
    }
    default:
        break;
    }
}

void ui_tty_free(ui_tty *t)
{
    buf b;
    buf_init(&b);
    buf_adds(&b, "");
    erase_seq(drawn_rows(t), &b);
    buf_adds(&b, "\033[?25h");
    write_all(t, &b);
    buf_free(&b);
    tty_erase_len = 0;
    sigaction(SIGWINCH, &tty_old_winch, NULL);
    sigaction(SIGINT, &tty_old_int, NULL);
    sigaction(SIGTERM, &tty_old_term, NULL);
    sigaction(SIGHUP, &tty_old_hup, NULL);
    tty_active = NULL;
    for (size_t i = 0; i < t->nf; i++)
        folder_free(&t->f[i]);
    free(t->pass_doing);
    if (t->utf8)
        freelocale(t->utf8);
    free(t);
}
