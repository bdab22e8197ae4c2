/* client.c: one synchronous IMAP connection: command writer, response loop, the commands.
 * Untagged responses are handled whenever they arrive; each command waits for its own tag. */
#include "imap/client.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "imap/compress.h"
#include "imap/sasl.h"
#include "imap/tls.h"
#include "imap/transport.h"
#include "imap/utf7.h"
#include "sync/crashpoint.h"
#include "util/err.h"
#include "util/uidset.h"

/* How much of a response's start is kept to find its UID before a body literal's bytes. */
#define CLIENT_HDR_KEEP 4096

/* State of one UID FETCH ... BODY.PEEK[] command. */
typedef struct body_fetch {
    const store_sink *sink;
    const store_msg *msgs; /* the caller's messages for this command, uids ascending */
    uint32_t *uids;        /* owned */
    size_t n;
    unsigned tagno;
    bool open; /* a body literal is being streamed to fd */
    int fd;
    uint32_t open_uid; /* UID seen before the literal, 0 if the server put it after */
    uint32_t last_uid; /* the last body completed, for imap_doing() */
} body_fetch;

/* One UID FETCH ... BODY.PEEK[]<offset.length> command in flight. */
typedef struct range_fetch {
    imap_range r;
    unsigned tagno;
    bool streamed; /* the literal went to r.fd */
    bool answered; /* the FETCH response for the range arrived */
} range_fetch;

struct imap_client {
    imap_transport *t;
    imap_parser *p;
    char *host;
    char in[65536];
    size_t in_pos, in_len;
    buf hdr; /* the first bytes of the response being parsed */
    buf out;
    unsigned tagno;
    char tag[16];
    strlist caps;
    unsigned caps_gen; /* bumped whenever the server states its capabilities */
    bool preauth;
    bool dead;      /* the stream is out of step or closed: no more commands */
    bool in_logout; /* BYE is expected */
    imap_mailbox_info sel;
    bool selected;
    /* The last tagged completion. */
    imap_status last_status;
    char *last_text;
    char last_code[32];
    uint32_t appenduid_validity, appenduid_uid;
    body_fetch *bodies; /* body FETCHes sent and not yet waited for, oldest first */
    size_t nbodies, capbodies;
    char verb[24];        /* the command in progress ("UID FETCH"), for imap_doing() */
    uint64_t round_trips; /* waits for the server's answer */
    bool utf8;            /* UTF8=ACCEPT enabled: mailbox names are UTF-8 on the wire */
    /* Commands sent and not yet waited for: pipelined ones may complete in any order. */
    struct client_cmd *cmds;
    size_t ncmds, capcmds;
    bool condstore, qresync; /* ENABLEd (RFC 5161) */
    bool compressed;         /* COMPRESS=DEFLATE is active */
    range_fetch *ranges;     /* ranged FETCHes sent and not yet waited for, oldest first */
    size_t nranges, capranges;
    bool ranges_lost;     /* the connection died with answered ranges still to hand back */
    ofs_error ranges_err; /* why */
    char *label;          /* the selected folder's name for people, for stall reports */
    double last_answer;   /* monotonic time the server last completed a command */
    imap_trace_fn trace;  /* the protocol trace, or NULL */
    void *trace_ctx;
    bool secret;             /* the command being sent carries a secret: trace only its start */
    size_t secret_reveal;    /* bytes of the next flush the trace may show */
    const char *auth_secret; /* during the login: a server echoing it gets it masked */
    bool tls;                /* the connection runs over TLS (whatever layers sit above it) */
    bool cork;               /* commands collect in out and leave together at client_uncork */
    struct client_inflight *batch; /* imap_batch_begin: STOREs and EXPUNGEs answered at the end */
    size_t out_traced;             /* bytes of out already traced while corked */
};

/* A sent command; its completion is kept until someone waits for it. */
typedef struct client_cmd {
    unsigned tagno;
    bool detached; /* nobody will wait: the completion is dropped (ENABLE) */
    bool done;
    imap_status status;
    char *text;
    char code[32];
    uint32_t au_validity, au_uid;
} client_cmd;

typedef int (*client_data_fn)(imap_client *c, const imap_response *r, void *ctx, ofs_error *err);

/* ---- pure helpers ---- */

size_t imap_uidset(const uint32_t *uids, size_t n, size_t max, buf *out)
{
    size_t start = out->len, i = 0;
    bool first = true;
    while (i < n) {
        size_t j = i;
        while (j + 1 < n && (uint64_t)uids[j + 1] <= (uint64_t)uids[j] + 1)
            j++;
        char piece[32];
        int k;
        if (uids[i] == uids[j])
            k = snprintf(piece, sizeof piece, "%s%" PRIu32, first ? "" : ",", uids[i]);
        else
            k = snprintf(piece, sizeof piece, "%s%" PRIu32 ":%" PRIu32, first ? "" : ",", uids[i],
                         uids[j]);
        if (!first && out->len - start + (size_t)k > max)
            break;
        buf_add(out, piece, (size_t)k);
        first = false;
        i = j + 1;
    }
    return i;
}

static const struct {
    unsigned bit;
    const char *name;
} client_flag_names[] = {
    {FLAG_SEEN, "\\Seen"},       {FLAG_ANSWERED, "\\Answered"}, {FLAG_FLAGGED, "\\Flagged"},
    {FLAG_DELETED, "\\Deleted"}, {FLAG_DRAFT, "\\Draft"},
};

#define CLIENT_NFLAGS (sizeof client_flag_names / sizeof client_flag_names[0])

unsigned imap_flags_from_list(const imap_value *list)
{
    unsigned flags = 0;
    if (!list || list->type != IMAP_V_LIST)
        return 0;
    for (size_t i = 0; i < list->n; i++)
        for (size_t f = 0; f < CLIENT_NFLAGS; f++)
            if (imap_value_is(&list->items[i], client_flag_names[f].name))
                flags |= client_flag_names[f].bit;
    return flags;
}

void imap_flags_format(unsigned flags, buf *out)
{
    bool first = true;
    for (size_t f = 0; f < CLIENT_NFLAGS; f++) {
        if (!(flags & client_flag_names[f].bit))
            continue;
        if (!first)
            buf_addc(out, ' ');
        buf_adds(out, client_flag_names[f].name);
        first = false;
    }
}

static bool msgid_space(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

char *imap_header_msgid(const char *hdr, size_t len)
{
    static const char field[] = "Message-ID:";
    const size_t flen = sizeof field - 1;
    size_t i = 0;
    while (i < len) {
        if (hdr[i] == '\r' || hdr[i] == '\n')
            return NULL; /* the blank line that ends the header */
        if (len - i > flen && strncasecmp(hdr + i, field, flen) == 0)
            break;
        const char *nl = memchr(hdr + i, '\n', len - i);
        if (!nl)
            return NULL;
        i = (size_t)(nl - hdr) + 1;
    }
    if (i >= len)
        return NULL;
    buf v;
    buf_init(&v);
    for (i += flen; i < len; i++) {
        /* A line break ends the field unless the next line is a continuation (folding). */
        if (hdr[i] == '\n' && !(i + 1 < len && (hdr[i + 1] == ' ' || hdr[i + 1] == '\t')))
            break;
        if (hdr[i] != '\r' && hdr[i] != '\n')
            buf_addc(&v, hdr[i]);
    }
    size_t a = 0, b = v.len;
    while (a < b && msgid_space(v.data[a]))
        a++;
    while (b > a && msgid_space(v.data[b - 1]))
        b--;
    char *id = a < b ? xstrndup(v.data + a, b - a) : NULL;
    buf_free(&v);
    return id;
}

bool imap_quote(const char *s, buf *out)
{
    for (const char *p = s; *p; p++)
        if (*p == '\r' || *p == '\n' || (unsigned char)*p >= 0x80)
            return false;
    buf_addc(out, '"');
    for (const char *p = s; *p; p++) {
        if (*p == '"' || *p == '\\')
            buf_addc(out, '\\');
        buf_addc(out, *p);
    }
    buf_addc(out, '"');
    return true;
}

bool imap_quote_utf8(const char *s, buf *out)
{
    for (const char *p = s; *p;) {
        unsigned long cp;
        int n = (unsigned char)*p < 0x80 ? 1 : imap_utf8_next(p, &cp);
        if (n == 0 || *p == '\r' || *p == '\n')
            return false;
        p += n;
    }
    buf_addc(out, '"');
    for (const char *p = s; *p; p++) {
        if (*p == '"' || *p == '\\')
            buf_addc(out, '\\');
        buf_addc(out, *p);
    }
    buf_addc(out, '"');
    return true;
}

/* ---- accessors ---- */

bool imap_has_cap(const imap_client *c, const char *cap)
{
    for (size_t i = 0; i < c->caps.n; i++)
        if (strcasecmp(c->caps.v[i], cap) == 0)
            return true;
    return false;
}

const char *imap_host(const imap_client *c)
{
    return c->host;
}

void imap_byte_counts(const imap_client *c, uint64_t *in, uint64_t *out)
{
    *in = c->t ? c->t->bytes_in : 0;
    *out = c->t ? c->t->bytes_out : 0;
}

uint64_t imap_round_trips(const imap_client *c)
{
    return c->round_trips;
}

bool imap_utf8_enabled(const imap_client *c)
{
    return c->utf8;
}

void imap_set_activity(imap_client *c, imap_activity_fn fn, void *ctx)
{
    c->t->activity = fn;
    c->t->activity_ctx = ctx;
}

/* The UID a body fetch is on: the one streaming, else the next one asked for. */
static uint32_t doing_uid(const body_fetch *bf)
{
    if (bf->open && bf->open_uid)
        return bf->open_uid;
    for (size_t i = 0; i < bf->n; i++)
        if (bf->uids[i] > bf->last_uid)
            return bf->uids[i];
    return 0;
}

void imap_doing(const imap_client *c, const char *mailbox, buf *out)
{
    static const struct {
        const char *verb, *text;
        bool in_mailbox;
    } map[] = {
        {"UID FETCH", "fetching", true},
        {"FETCH", "fetching", true},
        {"SELECT", "opening", true},
        {"EXAMINE", "opening", true},
        {"APPEND", "uploading to", true},
        {"UID STORE", "changing flags in", true},
        {"STORE", "changing flags in", true},
        {"UID EXPUNGE", "expunging in", true},
        {"EXPUNGE", "expunging in", true},
        {"UID SEARCH", "searching", true},
        {"LIST", "listing folders", false},
        {"LOGIN", "logging in", false},
        {"AUTHENTICATE", "logging in", false},
        {"CREATE", "creating a folder", false},
        {"LOGOUT", "logging out", false},
        {"NOOP", "checking the connection", false},
        {"IDLE", "waiting for pushed changes (IDLE)", false},
        {"CAPABILITY", "asking for capabilities", false},
        {"ENABLE", "enabling extensions", false},
    };
    const char *mb = mailbox ? mailbox : "";
    for (size_t i = 0; i < sizeof map / sizeof *map; i++) {
        if (strcmp(c->verb, map[i].verb) != 0)
            continue;
        buf_adds(out, map[i].text);
        if (map[i].in_mailbox && *mb)
            buf_printf(out, " %s", mb);
        if (c->nbodies && doing_uid(&c->bodies[0]))
            buf_printf(out, " UID %" PRIu32, doing_uid(&c->bodies[0]));
        else if (c->nranges)
            buf_printf(out, " UID %" PRIu32, c->ranges[0].r.uid);
        return;
    }
    buf_printf(out, "%s%s", c->verb[0] ? "the answer to " : "the greeting", c->verb);
}

void imap_set_label(imap_client *c, const char *mailbox)
{
    free(c->label);
    c->label = mailbox ? xstrdup(mailbox) : NULL;
}

/* A link error says what we were doing: "no data from HOST for 60 s while fetching INBOX UID
 * 4711". */
static void client_name_stall(imap_client *c, ofs_error *err)
{
    if (!err || err->code != OFS_E_NET)
        return;
    buf b;
    buf_init(&b);
    buf_adds(&b, "");
    if (c->verb[0])
        imap_doing(c, c->label, &b);
    else
        buf_adds(&b, "waiting for the greeting");
    size_t len = strlen(err->message);
    snprintf(err->message + len, sizeof err->message - len, " while %s", b.data);
    buf_free(&b);
}

const imap_mailbox_info *imap_selected(const imap_client *c)
{
    return c->selected ? &c->sel : NULL;
}

/* ---- reading responses ---- */

static int client_broken(imap_client *c)
{
    c->dead = true;
    return -1;
}

/* The UID in a FETCH response's text before its first literal ("* 3 FETCH (UID 9 BODY[] {"). */
static uint32_t client_hdr_uid(const buf *hdr)
{
    if (!hdr->data)
        return 0;
    const char *end = memchr(hdr->data, '{', hdr->len);
    if (!end)
        end = hdr->data + hdr->len;
    for (const char *p = hdr->data; p + 5 < end; p++) {
        if ((p[0] != '(' && p[0] != ' ') || strncasecmp(p + 1, "UID ", 4) != 0)
            continue;
        uint64_t v = 0;
        const char *d = p + 5;
        while (d < end && *d >= '0' && *d <= '9' && v <= UINT32_MAX)
            v = v * 10 + (uint64_t)(*d++ - '0');
        if (d > p + 5 && d < end && (*d == ' ' || *d == ')') && v <= UINT32_MAX)
            return (uint32_t)v;
    }
    return 0;
}

/* The origin of a "BODY[]<N>" item name; false when it has none. */
static bool client_range_origin(const char *atom, uint64_t *origin)
{
    if (strncasecmp(atom, "BODY[]<", 7) != 0 || atom[7] < '0' || atom[7] > '9')
        return false;
    char *end;
    unsigned long long v = strtoull(atom + 7, &end, 10);
    *origin = v;
    return *end == '>' && end[1] == '\0';
}

/* The range in flight that an answer for uid (0: not said yet) at origin belongs to. */
static range_fetch *client_range_find(imap_client *c, uint32_t uid, uint64_t origin)
{
    for (size_t i = 0; i < c->nranges; i++) {
        range_fetch *f = &c->ranges[i];
        if (!f->answered && f->r.offset == origin && (!uid || f->r.uid == uid))
            return f;
    }
    return NULL;
}

/* A range's bytes go after exactly the bytes before it: anything else would put them at the
 * wrong place of an append-only partial file, so the connection ends instead. */
static int client_range_check(imap_client *c, const range_fetch *f, ofs_error *err)
{
    struct stat st;
    if (fstat(f->r.fd, &st) < 0)
        return err_errno(err, OFS_E_IO, errno, "cannot stat the file of UID %" PRIu32, f->r.uid);
    if ((uint64_t)st.st_size == f->r.offset)
        return 0;
    err_set(err, OFS_E_PROTO,
            "server %s: range at %" PRIu64 " of UID %" PRIu32 " arrived after %" PRIu64 " bytes",
            c->host, f->r.offset, f->r.uid, (uint64_t)st.st_size);
    return client_broken(c);
}

static int client_range_literal(imap_client *c, const char *atom, ofs_error *err)
{
    uint64_t origin;
    range_fetch *f = client_range_origin(atom, &origin)
                         ? client_range_find(c, client_hdr_uid(&c->hdr), origin)
                         : NULL;
    if (!f || f->streamed) {
        err_set(err, OFS_E_PROTO, "server %s sent a range %s that was not asked for", c->host,
                atom);
        return -2;
    }
    if (client_range_check(c, f, err) < 0)
        return -2;
    f->streamed = true;
    return f->r.fd;
}

/* Position of uid in the ascending array, or SIZE_MAX. */
static size_t uid_index(const uint32_t *uids, size_t n, uint32_t uid)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (uids[mid] == uid)
            return mid;
        if (uids[mid] < uid)
            lo = mid + 1;
        else
            hi = mid;
    }
    return SIZE_MAX;
}

/* The body FETCH in flight that asked for uid; the oldest when the UID is not known yet (the
 * server put it after the body). Pipelined FETCHes may be answered interleaved. */
static body_fetch *client_body_route(imap_client *c, uint32_t uid)
{
    for (size_t i = 0; uid && i < c->nbodies; i++)
        if (uid_index(c->bodies[i].uids, c->bodies[i].n, uid) != SIZE_MAX)
            return &c->bodies[i];
    return &c->bodies[0];
}

static void client_body_pop(imap_client *c)
{
    free(c->bodies[0].uids);
    memmove(c->bodies, c->bodies + 1, --c->nbodies * sizeof *c->bodies);
}

static int client_literal(void *ctx, const char *atom, uint64_t size, ofs_error *err)
{
    imap_client *c = ctx;
    if (c->nranges && strncasecmp(atom, "BODY[]<", 7) == 0)
        return client_range_literal(c, atom, err);
    if (!c->nbodies || strcasecmp(atom, "BODY[]") != 0)
        return -1;
    body_fetch *bf = client_body_route(c, client_hdr_uid(&c->hdr));
    if (bf->open) {
        err_set(err, OFS_E_PROTO, "server %s sent two message bodies in one response", c->host);
        return -2;
    }
    store_msg m = {.uid = client_hdr_uid(&c->hdr), .size = size};
    int fd = bf->sink->open(bf->sink->ctx, &m, size, err);
    if (fd < 0)
        return -2;
    bf->open = true;
    bf->fd = fd;
    bf->open_uid = m.uid;
    return fd;
}

/* Overwrites every copy of secret in s with '*' (a server may echo what it was sent). */
static void client_mask(char *s, const char *secret)
{
    size_t n = secret ? strlen(secret) : 0;
    if (n == 0)
        return;
    for (char *p = strstr(s, secret); p; p = strstr(p + n, secret))
        memset(p, '*', n);
}

static void client_trace_response(imap_client *c, const imap_response *r)
{
    buf line;
    buf_init(&line);
    imap_trace_response(r, &line);
    client_mask(line.data, c->auth_secret);
    c->trace(c->trace_ctx, line.data);
    buf_free(&line);
}

/* Traces what is about to be sent; a command with a secret shows only its first bytes. */
static void client_trace_out(imap_client *c)
{
    const char *data = c->out.data + c->out_traced;
    size_t len = c->out.len - c->out_traced;
    if (len == 2 && !c->secret) /* the CRLF that ends an APPEND after its literal */
        return;
    buf line;
    buf_init(&line);
    if (!c->secret) {
        imap_trace_command(data, len, &line);
    } else {
        imap_trace_command(data, c->secret_reveal, &line);
        buf_adds(&line, c->secret_reveal ? " <secret hidden>" : "<secret hidden>");
        c->secret_reveal = 0;
    }
    c->trace(c->trace_ctx, line.data);
    buf_free(&line);
}

static int client_next(imap_client *c, const imap_response **out, ofs_error *err)
{
    if (c->dead)
        return err_set(err, OFS_E_NET, "connection to %s is no longer usable", c->host);
    for (;;) {
        if (c->in_pos < c->in_len) {
            size_t avail = c->in_len - c->in_pos;
            if ((c->nbodies || c->nranges) && c->hdr.len < CLIENT_HDR_KEEP)
                buf_add(&c->hdr, c->in + c->in_pos,
                        avail < CLIENT_HDR_KEEP - c->hdr.len ? avail
                                                             : CLIENT_HDR_KEEP - c->hdr.len);
            long n = imap_parser_feed(c->p, c->in + c->in_pos, avail, err);
            if (n < 0)
                return client_broken(c);
            c->in_pos += (size_t)n;
            const imap_response *r = imap_parser_response(c->p);
            if (r) {
                buf_reset(&c->hdr);
                if (c->trace)
                    client_trace_response(c, r);
                *out = r;
                return 0;
            }
            if ((size_t)n < avail) { /* the parser promised to eat all it was given */
                err_set(err, OFS_E_PROTO, "response parser stalled on data from %s", c->host);
                return client_broken(c);
            }
        }
        c->in_pos = c->in_len = 0;
        long n = imap_transport_read(c->t, c->in, sizeof c->in, err);
        if (n < 0) {
            client_name_stall(c, err);
            return client_broken(c);
        }
        c->in_len = (size_t)n;
    }
}

static void client_set_caps(imap_client *c, const imap_value *items, size_t from, size_t n)
{
    strlist_free(&c->caps);
    for (size_t i = from; i < n; i++) {
        const char *s = imap_value_str(&items[i]);
        if (s)
            strlist_add(&c->caps, s);
    }
    c->caps_gen++;
}

/* Response codes matter wherever they appear: greeting, untagged OK, tagged completion. */
static void client_code(imap_client *c, const imap_value *code)
{
    if (code->type != IMAP_V_LIST || code->n == 0)
        return;
    const imap_value *a = code->items;
    if (imap_value_is(a, "CAPABILITY"))
        client_set_caps(c, code->items, 1, code->n);
    else if (imap_value_is(a, "UIDVALIDITY") && code->n > 1)
        imap_value_u32(&a[1], &c->sel.uidvalidity);
    else if (imap_value_is(a, "UIDNEXT") && code->n > 1)
        imap_value_u32(&a[1], &c->sel.uidnext);
    else if (imap_value_is(a, "HIGHESTMODSEQ") && code->n > 1)
        imap_value_u64(&a[1], &c->sel.highestmodseq);
    else if (imap_value_is(a, "NOMODSEQ"))
        c->sel.highestmodseq = 0;
    else if (imap_value_is(a, "READ-ONLY"))
        c->sel.readonly = true;
    else if (imap_value_is(a, "APPENDUID") && code->n > 2) {
        if (!imap_value_u32(&a[1], &c->appenduid_validity) ||
            !imap_value_u32(&a[2], &c->appenduid_uid))
            c->appenduid_validity = c->appenduid_uid = 0;
    }
}

static void client_note_enabled(imap_client *c, const imap_response *r)
{
    for (size_t i = 0; i < r->args.n; i++) {
        if (imap_value_is(&r->args.items[i], "QRESYNC"))
            c->qresync = c->condstore = true;
        else if (imap_value_is(&r->args.items[i], "CONDSTORE"))
            c->condstore = true;
    }
}

/* With QRESYNC, expunges arrive as VANISHED uid-sets instead of EXPUNGE (RFC 7162 3.2.10). */
static void client_on_vanished_now(imap_client *c, const imap_value *set)
{
    const char *text = imap_value_str(set);
    uidset u;
    uidset_init(&u);
    if (text && uidset_parse(&u, text)) {
        uint64_t n = uidset_count(&u);
        c->sel.exists = n >= c->sel.exists ? 0 : c->sel.exists - (uint32_t)n;
    }
    uidset_free(&u);
}

static int client_untagged(imap_client *c, const imap_response *r, ofs_error *err)
{
    if (r->has_code)
        client_code(c, &r->code);
    if (r->status == IMAP_S_BYE) {
        if (c->in_logout)
            return 0;
        err_set(err, OFS_E_NET, "server %s closed the connection: %s", c->host, r->text);
        return client_broken(c);
    }
    if (r->status != IMAP_S_NONE)
        return 0;
    if (strcmp(r->name, "CAPABILITY") == 0)
        client_set_caps(c, r->args.items, 0, r->args.n);
    else if (strcmp(r->name, "EXISTS") == 0 && r->has_number)
        c->sel.exists = r->number;
    else if (strcmp(r->name, "EXPUNGE") == 0 && c->sel.exists > 0)
        c->sel.exists--;
    else if (strcmp(r->name, "ENABLED") == 0)
        client_note_enabled(c, r);
    else if (strcmp(r->name, "VANISHED") == 0 && r->args.n == 1)
        client_on_vanished_now(c, &r->args.items[0]); /* (EARLIER) ones are the command's */
    return 0;
}

/* What a wait accepts as its end besides an error. */
enum client_until {
    UNTIL_TAGGED, /* the command's completion: 0 on OK */
    UNTIL_CONT,   /* a continuation request: 1; a tagged OK is a protocol error */
    UNTIL_EITHER, /* 1 for a continuation, 0 for a tagged OK */
};

static client_cmd *client_cmd_find(imap_client *c, unsigned tagno)
{
    for (size_t i = 0; i < c->ncmds; i++)
        if (c->cmds[i].tagno == tagno)
            return &c->cmds[i];
    return NULL;
}

static void client_cmd_drop(imap_client *c, client_cmd *cmd)
{
    free(cmd->text);
    size_t i = (size_t)(cmd - c->cmds);
    memmove(cmd, cmd + 1, (c->ncmds - i - 1) * sizeof *cmd);
    c->ncmds--;
}

/* The tag number of a tag we sent ("o17"), or 0. */
static unsigned client_tagno(const char *tag)
{
    if (tag[0] != 'o' || tag[1] < '1' || tag[1] > '9')
        return 0;
    char *end;
    unsigned long v = strtoul(tag + 1, &end, 10);
    return *end || v > UINT32_MAX ? 0 : (unsigned)v;
}

/* Keeps a tagged completion with its command, for whoever waits for it. */
static int client_tagged(imap_client *c, const imap_response *r, ofs_error *err)
{
    unsigned no = client_tagno(r->tag);
    client_cmd *cmd = no ? client_cmd_find(c, no) : NULL;
    if (!cmd || cmd->done) {
        err_set(err, OFS_E_PROTO, "server %s answered command tag \"%s\", which was never sent",
                c->host, r->tag);
        return client_broken(c);
    }
    c->appenduid_validity = c->appenduid_uid = 0;
    c->last_answer = imap_now();
    cmd->done = true;
    cmd->status = r->status;
    cmd->text = xstrdup(r->text);
    if (r->has_code) {
        client_code(c, &r->code);
        const char *code = imap_value_str(r->code.n ? &r->code.items[0] : NULL);
        snprintf(cmd->code, sizeof cmd->code, "%s", code ? code : "");
    }
    cmd->au_validity = c->appenduid_validity;
    cmd->au_uid = c->appenduid_uid;
    if (cmd->detached)
        client_cmd_drop(c, cmd);
    return 0;
}

/* Makes a completed command the "last" one and judges it: 0 on OK, -1 otherwise. */
static int client_finish(imap_client *c, client_cmd *cmd, const char *what, enum client_until until,
                         ofs_error *err)
{
    imap_status status = cmd->status;
    c->last_status = status;
    free(c->last_text);
    c->last_text = cmd->text;
    cmd->text = NULL;
    memcpy(c->last_code, cmd->code, sizeof c->last_code);
    c->appenduid_validity = cmd->au_validity;
    c->appenduid_uid = cmd->au_uid;
    client_cmd_drop(c, cmd);
    if (status == IMAP_S_OK) {
        if (until != UNTIL_CONT)
            return 0;
        err_set(err, OFS_E_PROTO, "server %s completed %s without asking for its data", c->host,
                what);
        return client_broken(c);
    }
    if (status != IMAP_S_NO && status != IMAP_S_BAD) {
        err_set(err, OFS_E_PROTO, "server %s answered %s with an unknown status", c->host, what);
        return client_broken(c);
    }
    return err_set(err, OFS_E_SERVER, "%s on server %s failed: server said: %s", what, c->host,
                   c->last_text);
}

static int client_write_out(imap_client *c, ofs_error *err);

/* Reads until command tagno completes or a continuation request arrives, as `until` says.
 * Completions of other pipelined commands are kept for their own waits. Errors from fn do
 * not stop the reading, so the connection stays in step; the first one is returned at the end.
 */
static int client_wait_tag(imap_client *c, unsigned tagno, const char *what, client_data_fn fn,
                           void *ctx, enum client_until until, ofs_error *err)
{
    ofs_error fn_err = {0};
    bool fn_failed = false;
    if (c->cork && c->out.len && client_write_out(c, err) < 0)
        return -1; /* whatever waits needs the corked commands to have left */
    c->round_trips++;
    for (;;) {
        client_cmd *cmd = client_cmd_find(c, tagno);
        if (!cmd)
            return err_set(err, OFS_E_STATE, "waiting for %s, which was never sent", what);
        if (cmd->done) {
            int rc = client_finish(c, cmd, what, until, err);
            if (rc == 0 && fn_failed) {
                *err = fn_err;
                return -1;
            }
            return rc;
        }
        const imap_response *r;
        if (client_next(c, &r, err) < 0)
            return -1;
        if (r->type == IMAP_R_UNTAGGED) {
            if (client_untagged(c, r, err) < 0)
                return -1;
            if (fn && !fn_failed && fn(c, r, ctx, &fn_err) < 0) {
                fn_failed = true;
                if (c->dead) {
                    *err = fn_err;
                    return -1;
                }
            }
            continue;
        }
        if (r->type == IMAP_R_CONTINUATION) {
            if (until != UNTIL_TAGGED)
                return 1;
            err_set(err, OFS_E_PROTO, "server %s sent an unexpected continuation during %s",
                    c->host, what);
            return client_broken(c);
        }
        if (client_tagged(c, r, err) < 0)
            return -1;
    }
}

/* The same for the command begun last. */
static int client_wait(imap_client *c, const char *what, client_data_fn fn, void *ctx,
                       enum client_until until, ofs_error *err)
{
    return client_wait_tag(c, c->tagno, what, fn, ctx, until, err);
}

/* ---- writing commands ---- */

static void client_begin(imap_client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void client_begin(imap_client *c, const char *fmt, ...)
{
    if (!c->cork)
        buf_reset(&c->out);
    snprintf(c->tag, sizeof c->tag, "o%u", ++c->tagno);
    buf_printf(&c->out, "%s ", c->tag);
    size_t start = c->out.len;
    if (c->ncmds == c->capcmds) {
        c->capcmds = c->capcmds ? c->capcmds * 2 : 8;
        c->cmds = xrealloc(c->cmds, c->capcmds * sizeof *c->cmds);
    }
    c->cmds[c->ncmds++] = (client_cmd){.tagno = c->tagno};
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&c->out, fmt, ap);
    va_end(ap);
    /* The verb: the first word, two for UID commands; never arguments (a password). */
    const char *v = c->out.data + start;
    size_t n = strcspn(v, " \r\n");
    if (n == 3 && strncasecmp(v, "UID", 3) == 0 && v[3] == ' ')
        n = 4 + strcspn(v + 4, " \r\n");
    snprintf(c->verb, sizeof c->verb, "%.*s", (int)n, v);
}

static int client_write_out(imap_client *c, ofs_error *err)
{
    if (c->dead)
        return err_set(err, OFS_E_NET, "connection to %s is no longer usable", c->host);
    if (c->trace && c->out.len > c->out_traced)
        client_trace_out(c);
    int r = c->out.len ? imap_transport_write(c->t, c->out.data, c->out.len, err) : 0;
    if (r < 0)
        client_name_stall(c, err);
    /* The buffer may have held a password: do not leave it lying in freed memory. */
    if (c->out.data)
        explicit_bzero(c->out.data, c->out.cap);
    buf_reset(&c->out);
    c->out_traced = 0;
    return r < 0 ? client_broken(c) : 0;
}

/* Sends what is buffered, unless corked: then it waits for the rest of the burst. */
static int client_flush(imap_client *c, ofs_error *err)
{
    if (!c->cork || c->dead)
        return client_write_out(c, err);
    if (c->trace && c->out.len > c->out_traced)
        client_trace_out(c);
    c->out_traced = c->out.len;
    return 0;
}

/* Commands from here on leave in one write, at client_uncork: the server answers a burst,
 * not each command after a gap the round trip counters would see. */
static void client_cork(imap_client *c)
{
    c->cork = true;
}

static int client_uncork(imap_client *c, ofs_error *err)
{
    c->cork = false;
    return client_write_out(c, err);
}

/* Adds a literal header; for a synchronizing literal, sends what is buffered and waits for the
 * server's go-ahead. The literal's bytes come next, then the rest of the command. */
static int client_literal_head(imap_client *c, uint64_t size, const char *what, ofs_error *err)
{
    bool plus = imap_has_cap(c, "LITERAL+") || (imap_has_cap(c, "LITERAL-") && size <= 4096);
    buf_printf(&c->out, "{%" PRIu64 "%s}\r\n", size, plus ? "+" : "");
    if (plus)
        return 0;
    if (client_write_out(c, err) < 0) /* even when corked: the server must say go on */
        return -1;
    return client_wait(c, what, NULL, NULL, UNTIL_CONT, err) == 1 ? 0 : -1;
}

/* Adds s as a quoted string, or as a literal when it cannot be quoted. */
static int client_astring(imap_client *c, const char *s, const char *what, ofs_error *err)
{
    if (imap_quote(s, &c->out))
        return 0;
    if (c->utf8 && imap_quote_utf8(s, &c->out))
        return 0;
    if (client_literal_head(c, strlen(s), what, err) < 0)
        return -1;
    buf_adds(&c->out, s);
    return 0;
}

/* Ends the command begun last and sends it without waiting; returns its tag number or 0. */
static unsigned client_send(imap_client *c, ofs_error *err)
{
    buf_adds(&c->out, "\r\n");
    return client_flush(c, err) < 0 ? 0 : c->tagno;
}

static int client_end(imap_client *c, const char *what, client_data_fn fn, void *ctx,
                      ofs_error *err)
{
    unsigned no = client_send(c, err);
    if (!no)
        return -1;
    return client_wait_tag(c, no, what, fn, ctx, UNTIL_TAGGED, err);
}

static int client_simple(imap_client *c, const char *cmd, client_data_fn fn, void *ctx,
                         ofs_error *err)
{
    client_begin(c, "%s", cmd);
    return client_end(c, cmd, fn, ctx, err);
}

/* ---- connection and login ---- */

static int client_greeting(imap_client *c, const char *host, int port, ofs_error *err)
{
    const imap_response *r;
    if (client_next(c, &r, err) < 0) {
        if (err->code == OFS_E_NET && strncmp(err->message, "no data", 7) == 0)
            err_set(err, OFS_E_NET,
                    "no greeting from %s:%d in %d s (a TLS port? then use tls = implicit)", host,
                    port, c->t->timeout);
        return -1;
    }
    if (r->type != IMAP_R_UNTAGGED ||
        (r->status != IMAP_S_OK && r->status != IMAP_S_PREAUTH && r->status != IMAP_S_BYE))
        return err_set(err, OFS_E_PROTO, "server %s:%d did not greet like an IMAP server", host,
                       port);
    if (r->status == IMAP_S_BYE)
        return err_set_final(err, OFS_E_NET, "server %s:%d refused the connection: %s", host, port,
                             r->text);
    c->preauth = r->status == IMAP_S_PREAUTH;
    if (r->has_code)
        client_code(c, &r->code);
    return 0;
}

/* RFC 3501 6.2.1. Never a downgrade: no STARTTLS offered is an error, and so is a PREAUTH
 * greeting (the session would start unencrypted). Bytes that came with the tagged OK were
 * sent before TLS and could be injected: they end the connection too. */
static int client_starttls(imap_client *c, const imap_tls_opts *tls, ofs_error *err)
{
    if (c->preauth)
        return err_set(err, OFS_E_PROTO,
                       "server %s greeted with PREAUTH, so STARTTLS is impossible: refusing to "
                       "go on without TLS (tls = starttls)",
                       c->host);
    if (c->caps_gen == 0 && client_simple(c, "CAPABILITY", NULL, NULL, err) < 0)
        return -1;
    if (!imap_has_cap(c, "STARTTLS"))
        return err_set(err, OFS_E_PROTO,
                       "server %s does not offer STARTTLS: refusing to go on without TLS "
                       "(tls = starttls; use tls = implicit if it has a TLS port)",
                       c->host);
    if (client_simple(c, "STARTTLS", NULL, NULL, err) < 0)
        return -1;
    if (c->in_pos < c->in_len) {
        err_set(err, OFS_E_PROTO,
                "server %s sent data after its STARTTLS answer, before TLS began (injected?)",
                c->host);
        return client_broken(c);
    }
    if (imap_tls_start(c->t, tls, err) < 0)
        return client_broken(c);
    c->tls = true;
    /* Whatever was said before TLS may have been forged: ask again (RFC 3501 6.2.1). */
    strlist_free(&c->caps);
    c->caps_gen = 0;
    return 0;
}

int imap_open(const imap_open_opts *o, imap_client **out, ofs_error *err)
{
    imap_transport *t;
    if (imap_transport_connect(o->host, o->port, o->timeout, &t, err) < 0)
        return -1;
    imap_tls_opts tls = {.ca_file = o->ca_file, .fingerprint = o->fingerprint};
    if (o->tls == IMAP_TLS_IMPLICIT && imap_tls_start(t, &tls, err) < 0) {
        imap_transport_close(t);
        return -1;
    }
    imap_client *c = xcalloc(1, sizeof *c);
    c->t = t;
    c->tls = o->tls == IMAP_TLS_IMPLICIT;
    c->host = xstrdup(o->host);
    c->trace = o->trace;
    c->trace_ctx = o->trace_ctx;
    c->p = imap_parser_new(NULL);
    imap_parser_set_literal_fn(c->p, client_literal, c);
    buf_init(&c->out);
    buf_init(&c->hdr);
    strlist_init(&c->caps);
    if (client_greeting(c, o->host, o->port, err) < 0)
        goto fail;
    if (o->tls == IMAP_TLS_STARTTLS && client_starttls(c, &tls, err) < 0)
        goto fail;
    if (c->caps_gen == 0 && client_simple(c, "CAPABILITY", NULL, NULL, err) < 0)
        goto fail;
    c->last_answer = imap_now(); /* the greeting counts: no keepalive right after it */
    *out = c;
    return 0;
fail:
    imap_client_free(c);
    return -1;
}

int imap_connect(const char *host, int port, int timeout, imap_client **out, ofs_error *err)
{
    imap_open_opts o = {.host = host, .port = port, .timeout = timeout, .tls = IMAP_TLS_NONE};
    return imap_open(&o, out, err);
}

bool imap_is_tls(const imap_client *c)
{
    return c->tls;
}

void imap_client_free(imap_client *c)
{
    if (!c)
        return;
    imap_transport_close(c->t);
    imap_parser_free(c->p);
    free(c->host);
    free(c->label);
    free(c->last_text);
    if (c->out.data)
        explicit_bzero(c->out.data, c->out.cap);
    buf_free(&c->out);
    buf_free(&c->hdr);
    strlist_free(&c->caps);
    for (size_t i = 0; i < c->ncmds; i++)
        free(c->cmds[i].text);
    free(c->cmds);
    free(c->batch);
    free(c->ranges);
    while (c->nbodies)
        client_body_pop(c);
    free(c->bodies);
    free(c);
}

/* Starts a command whose first `reveal` bytes may be traced and the rest not. */
static void client_begin_secret(imap_client *c, size_t reserve)
{
    buf_reset(&c->out);
    sasl_reserve(&c->out, reserve);
    c->secret = true;
    c->secret_reveal = 0;
}

/* Sends one client response to a SASL challenge (base64 text), hidden from the trace. */
static int client_sasl_send(imap_client *c, const char *line, size_t len, ofs_error *err)
{
    client_begin_secret(c, len + 2);
    buf_add(&c->out, line, len);
    buf_adds(&c->out, "\r\n");
    return client_flush(c, err);
}

/* AUTHENTICATE mech, ir the initial response (or NULL), steps the answers to the server's
 * challenges in order. A challenge after the steps is the server reporting a failure (OAuth)
 * or wanting more than the mechanism gives: it gets `extra`, once, then a cancel ("*").
 * Returns 0 on a tagged OK; -1 with last_status NO/BAD when the server refused. */
static int client_sasl(imap_client *c, int mech, const buf *ir, const buf *steps, size_t nsteps,
                       const char *extra, ofs_error *err)
{
    const char *name = sasl_mech_name(mech);
    client_begin(c, "AUTHENTICATE %s", name);
    sasl_reserve(&c->out, 8 + (ir ? ir->len : 0));
    c->secret = true;
    c->secret_reveal = c->out.len;
    bool use_ir = ir && imap_has_cap(c, "SASL-IR");
    if (use_ir) {
        buf_addc(&c->out, ' ');
        buf_add(&c->out, ir->data, ir->len);
    }
    buf_adds(&c->out, "\r\n");
    int r = client_flush(c, err);
    size_t step = 0, extras = 0;
    bool ir_pending = ir && !use_ir;
    while (r == 0) {
        r = client_wait(c, "AUTHENTICATE", NULL, NULL, UNTIL_EITHER, err);
        if (r != 1)
            break;
        if (ir_pending) {
            ir_pending = false;
            r = client_sasl_send(c, ir->data, ir->len, err);
        } else if (step < nsteps) {
            r = client_sasl_send(c, steps[step].data, steps[step].len, err);
            step++;
        } else if (extras++ == 0 && extra) {
            r = client_sasl_send(c, extra, strlen(extra), err);
        } else {
            r = client_sasl_send(c, "*", 1, err);
            if (r == 0 && client_wait(c, "AUTHENTICATE", NULL, NULL, UNTIL_TAGGED, err) == 0)
                r = err_set(err, OFS_E_PROTO, "server %s wanted more than %s gives", c->host, name);
            else
                r = -1;
        }
    }
    c->secret = false;
    return r;
}

static int client_auth_mech(imap_client *c, int mech, const char *user, const char *secret,
                            int port, ofs_error *err)
{
    buf tok[2];
    buf_init(&tok[0]);
    buf_init(&tok[1]);
    int r;
    if (mech == SASL_LOGIN) {
        sasl_reserve(&tok[0], strlen(user) * 4 / 3 + 8);
        sasl_reserve(&tok[1], strlen(secret) * 4 / 3 + 8);
        sasl_base64(user, strlen(user), &tok[0]);
        sasl_base64(secret, strlen(secret), &tok[1]);
        r = client_sasl(c, mech, NULL, tok, 2, NULL, err);
    } else {
        sasl_initial_response(mech, user, secret, c->host, port, &tok[0]);
        const char *extra = mech == SASL_PLAIN ? NULL : sasl_oauth_error_reply(mech);
        r = client_sasl(c, mech, &tok[0], NULL, 0, extra, err);
    }
    for (int i = 0; i < 2; i++) {
        if (tok[i].data)
            explicit_bzero(tok[i].data, tok[i].cap);
        buf_free(&tok[i]);
    }
    return r;
}

static int client_login_cmd(imap_client *c, const char *user, const char *password, ofs_error *err)
{
    client_begin(c, "LOGIN ");
    sasl_reserve(&c->out, strlen(user) + strlen(password) + 64);
    c->secret = true;
    c->secret_reveal = c->out.len - 1;
    int r = client_astring(c, user, "LOGIN", err);
    if (r == 0) {
        buf_addc(&c->out, ' ');
        r = client_astring(c, password, "LOGIN", err);
    }
    if (r == 0)
        r = client_end(c, "LOGIN", NULL, NULL, err);
    c->secret = false;
    return r;
}

static int client_on_enabled(imap_client *c, const imap_response *r, void *ctx, ofs_error *err)
{
    if (strcmp(r->name, "ENABLED") != 0)
        return 0;
    for (size_t i = 0; i < r->args.n; i++)
        if (imap_value_is(&r->args.items[i], "UTF8=ACCEPT"))
            c->utf8 = true;
    return 0;
}

/* RFC 6855: with UTF8=ACCEPT, names are UTF-8 on the wire, so a server's non-ASCII names need
 * no modified UTF-7 at all. Only a server's ENABLED reply switches the mode on. */
static int client_enable_utf8(imap_client *c, ofs_error *err)
{
    if (!imap_has_cap(c, "UTF8=ACCEPT") || !imap_has_cap(c, "ENABLE"))
        return 0;
    int r = client_simple(c, "ENABLE UTF8=ACCEPT", client_on_enabled, NULL, err);
    if (r < 0 && !c->dead && c->last_status != IMAP_S_OK)
        return 0; /* a refusal leaves us in the mUTF-7 mode, which always works */
    return r;
}

/* The mechanism to use: the first allowed one the server offers; SASL_NMECH for the LOGIN
 * command, when a password mechanism is allowed but none offered. */
static int client_pick_mech(imap_client *c, const int *mechs, size_t n, const char *auth,
                            ofs_error *err)
{
    bool password_ok = false;
    for (size_t i = 0; i < n; i++) {
        buf cap;
        buf_init(&cap);
        buf_printf(&cap, "AUTH=%s", sasl_mech_name(mechs[i]));
        bool offered = imap_has_cap(c, cap.data);
        buf_free(&cap);
        if (offered)
            return mechs[i];
        password_ok |= sasl_mech_is_password(mechs[i]);
    }
    if (password_ok && !imap_has_cap(c, "LOGINDISABLED"))
        return SASL_NMECH;
    if (password_ok)
        return err_set(err, OFS_E_AUTH,
                       "server %s does not accept a password on this connection "
                       "(LOGINDISABLED)%s",
                       c->host, imap_is_tls(c) ? "" : ": use tls = implicit or starttls");
    buf offered;
    buf_init(&offered);
    for (size_t i = 0; i < c->caps.n; i++)
        if (strncasecmp(c->caps.v[i], "AUTH=", 5) == 0)
            buf_printf(&offered, "%s%s", offered.len ? " " : "", c->caps.v[i] + 5);
    err_set(err, OFS_E_AUTH, "server %s offers none of the mechanisms in auth = %s (it offers: %s)",
            c->host, auth, offered.len ? offered.data : "none");
    buf_free(&offered);
    return -1;
}

int imap_authenticate(imap_client *c, const imap_auth_opts *o, ofs_error *err)
{
    if (c->preauth)
        return 0;
    int mechs[SASL_NMECH];
    size_t n;
    if (sasl_parse_mechs(o->mechs, mechs, &n, err) < 0)
        return -1;
    if (!o->plaintext_ok && !imap_is_tls(c))
        return err_set(err, OFS_E_AUTH, "refusing to send the credentials for %s to %s without TLS",
                       o->user, c->host);
    int mech = client_pick_mech(c, mechs, n, o->mechs ? o->mechs : "plain login", err);
    if (mech < 0)
        return -1;
    unsigned gen = c->caps_gen;
    c->last_status = IMAP_S_NONE;
    c->auth_secret = o->secret;
    int r = mech == SASL_NMECH ? client_login_cmd(c, o->user, o->secret, err)
                               : client_auth_mech(c, mech, o->user, o->secret, o->port, err);
    c->auth_secret = NULL;
    if (r < 0) {
        /* Reported once, never retried with another mechanism: each try counts against the
         * account on servers that lock it after a few failures. */
        if (!c->dead && (c->last_status == IMAP_S_NO || c->last_status == IMAP_S_BAD))
            err_set(err, OFS_E_AUTH, "server %s refused the login for %s (%s): %s", c->host,
                    o->user, mech == SASL_NMECH ? "LOGIN" : sasl_mech_name(mech),
                    c->last_text ? c->last_text : "");
        client_mask(err->message, o->secret);
        return -1;
    }
    if (c->caps_gen == gen && client_simple(c, "CAPABILITY", NULL, NULL, err) < 0)
        return -1;
    return client_enable_utf8(c, err);
}

int imap_login(imap_client *c, const char *user, const char *password, ofs_error *err)
{
    imap_auth_opts o = {.user = user, .secret = password, .plaintext_ok = true};
    return imap_authenticate(c, &o, err);
}

/* ---- mailboxes ---- */

typedef struct list_ctx {
    imap_list_entry *v;
    size_t n, cap;
} list_ctx;

/* "* STATUS mbox (MESSAGES 3 UIDNEXT 9 ...)": the mailbox name and its values, or NULL. */
static const char *client_status_parse(const imap_response *r, imap_mailbox_info *mi)
{
    if (strcmp(r->name, "STATUS") != 0 || r->args.n < 2 || r->args.items[1].type != IMAP_V_LIST)
        return NULL;
    const imap_value *a = r->args.items[1].items;
    size_t n = r->args.items[1].n;
    memset(mi, 0, sizeof *mi);
    for (size_t i = 0; i + 1 < n; i += 2) {
        if (imap_value_is(&a[i], "MESSAGES"))
            imap_value_u32(&a[i + 1], &mi->exists);
        else if (imap_value_is(&a[i], "UIDNEXT"))
            imap_value_u32(&a[i + 1], &mi->uidnext);
        else if (imap_value_is(&a[i], "UIDVALIDITY"))
            imap_value_u32(&a[i + 1], &mi->uidvalidity);
        else if (imap_value_is(&a[i], "HIGHESTMODSEQ"))
            imap_value_u64(&a[i + 1], &mi->highestmodseq);
    }
    return imap_value_str(&r->args.items[0]);
}

static bool client_same_mbox(const char *a, const char *b)
{
    return strcmp(a, b) == 0 || (strcasecmp(a, "INBOX") == 0 && strcasecmp(b, "INBOX") == 0);
}

static void client_list_status(list_ctx *l, const imap_response *r)
{
    imap_mailbox_info mi;
    const char *name = client_status_parse(r, &mi);
    if (!name)
        return;
    for (size_t i = l->n; i-- > 0;)
        if (client_same_mbox(l->v[i].name, name)) {
            l->v[i].has_status = true;
            l->v[i].status = mi;
            return;
        }
}

static int client_on_list(imap_client *c, const imap_response *r, void *ctx, ofs_error *err)
{
    list_ctx *l = ctx;
    if (strcmp(r->name, "STATUS") == 0)
        client_list_status(l, r);
    if (strcmp(r->name, "LIST") != 0)
        return 0;
    const imap_value *a = r->args.items;
    if (r->args.n < 3 || a[0].type != IMAP_V_LIST)
        return err_set(err, OFS_E_PROTO, "server %s sent a malformed LIST response", c->host);
    const char *name = imap_value_str(&a[2]);
    const char *delim = imap_value_str(&a[1]);
    if (!name || (a[1].type != IMAP_V_NIL && (!delim || strlen(delim) != 1)))
        return err_set(err, OFS_E_PROTO, "server %s sent a malformed LIST response", c->host);
    if (strlen(name) != a[2].len)
        return err_set(err, OFS_E_NAME, "server %s listed a folder name containing NUL", c->host);
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 16;
        l->v = xrealloc(l->v, l->cap * sizeof *l->v);
    }
    imap_list_entry *e = &l->v[l->n++];
    memset(e, 0, sizeof *e);
    e->name = xstrdup(name);
    e->delim = delim ? delim[0] : '\0';
    e->selectable = true;
    for (size_t i = 0; i < a[0].n; i++)
        if (imap_value_is(&a[0].items[i], "\\Noselect") ||
            imap_value_is(&a[0].items[i], "\\NonExistent"))
            e->selectable = false;
    return 0;
}

const char *imap_status_items(const imap_client *c)
{
    return imap_has_cap(c, "CONDSTORE") ? "MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ"
                                        : "MESSAGES UIDNEXT UIDVALIDITY";
}

int imap_list(imap_client *c, const char *pattern, imap_list_entry **out, size_t *n, ofs_error *err)
{
    return imap_list_ex(c, pattern, false, out, n, err);
}

int imap_list_ex(imap_client *c, const char *pattern, bool want_status, imap_list_entry **out,
                 size_t *n, ofs_error *err)
{
    list_ctx l = {0};
    client_begin(c, "LIST \"\" ");
    int r = client_astring(c, pattern, "LIST", err);
    if (r == 0 && want_status && imap_has_cap(c, "LIST-STATUS"))
        buf_printf(&c->out, " RETURN (STATUS (%s))", imap_status_items(c));
    if (r == 0)
        r = client_end(c, "LIST", client_on_list, &l, err);
    if (r < 0) {
        imap_list_free(l.v, l.n);
        return -1;
    }
    *out = l.v;
    *n = l.n;
    return 0;
}

void imap_list_free(imap_list_entry *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i].name);
    free(v);
}

int imap_select(imap_client *c, const char *mbox, bool readonly, imap_mailbox_info *info,
                ofs_error *err)
{
    const char *cmd = readonly ? "EXAMINE" : "SELECT";
    memset(&c->sel, 0, sizeof c->sel);
    c->selected = false;
    client_begin(c, "%s ", cmd);
    if (client_astring(c, mbox, cmd, err) < 0)
        return -1;
    /* HIGHESTMODSEQ is only promised once CONDSTORE is enabled (RFC 7162 3.1.8). */
    if (imap_has_cap(c, "CONDSTORE"))
        buf_adds(&c->out, " (CONDSTORE)");
    if (client_end(c, cmd, NULL, NULL, err) < 0) {
        memset(&c->sel, 0, sizeof c->sel);
        return -1;
    }
    if (strcasecmp(c->last_code, "READ-ONLY") == 0)
        c->sel.readonly = true;
    c->selected = true;
    /* Without a valid UIDVALIDITY (a non-zero 32-bit number) no UID can be trusted. */
    if (c->sel.uidvalidity == 0)
        return err_set(err, OFS_E_PROTO, "server %s sent no valid UIDVALIDITY for \"%s\"", c->host,
                       mbox);
    if (info)
        *info = c->sel;
    return 0;
}

typedef struct qresync_ctx {
    store_msg_list *changed;
    uidset *vanished;
} qresync_ctx;

static int client_on_qresync(imap_client *c, const imap_response *r, void *ctx, ofs_error *err)
{
    qresync_ctx *q = ctx;
    if (strcmp(r->name, "VANISHED") == 0 && r->args.n == 2) {
        const char *set = imap_value_str(&r->args.items[1]);
        if (!set || !uidset_parse(q->vanished, set))
            return err_set(err, OFS_E_PROTO, "server %s sent a malformed VANISHED response",
                           c->host);
        return 0;
    }
    if (strcmp(r->name, "FETCH") != 0 || r->args.n < 1 || r->args.items[0].type != IMAP_V_LIST)
        return 0;
    const imap_value *it = r->args.items[0].items;
    bool has_uid = false, has_flags = false;
    uint32_t uid = 0;
    unsigned flags = 0;
    for (size_t i = 0; i + 1 < r->args.items[0].n; i += 2) {
        if (imap_value_is(&it[i], "UID"))
            has_uid = imap_value_u32(&it[i + 1], &uid);
        else if (imap_value_is(&it[i], "FLAGS") && it[i + 1].type == IMAP_V_LIST)
            has_flags = true, flags = imap_flags_from_list(&it[i + 1]);
    }
    if (!has_uid || !has_flags)
        return err_set(err, OFS_E_PROTO, "server %s sent a FETCH without UID or FLAGS on SELECT",
                       c->host);
    store_msg *m = store_msg_list_push(q->changed);
    m->uid = uid;
    m->flags = flags;
    return 0;
}

static void client_list_cmd(imap_client *c, uint32_t from, uint32_t last, bool want_size,
                            bool want_msgid, uint32_t body_max);
static int client_on_meta(imap_client *c, const imap_response *r, void *ctx, ofs_error *err);

typedef struct meta_ctx {
    store_msg_list *out;
    size_t start; /* first entry added by this command */
    uint32_t first, last;
    bool want_size, want_msgid;
    imap_bodies *bodies; /* complete bodies that came with the listing, or NULL */
} meta_ctx;

/* Sends SELECT (with QRESYNC or CONDSTORE as asked and offered) and, without waiting, the
 * listing; returns the SELECT's tag number and the listing's in *list_tag (0: none), or 0. */
static unsigned client_select_send(imap_client *c, const char *mbox, const imap_select_opts *o,
                                   unsigned *list_tag, ofs_error *err)
{
    memset(&c->sel, 0, sizeof c->sel);
    c->selected = false;
    *list_tag = 0;
    client_cork(c);
    client_begin(c, "SELECT ");
    if (client_astring(c, mbox, "SELECT", err) < 0) {
        c->cork = false;
        return 0;
    }
    if (o->qresync)
        buf_printf(&c->out, " (QRESYNC (%" PRIu32 " %" PRIu64 "))", o->uidvalidity, o->modseq);
    else if (imap_has_cap(c, "CONDSTORE")) /* HIGHESTMODSEQ only then (RFC 7162 3.1.8) */
        buf_adds(&c->out, " (CONDSTORE)");
    unsigned sel_tag = client_send(c, err);
    if (sel_tag && o->list_from) {
        client_list_cmd(c, o->list_from, 0, true, false, o->body_max);
        *list_tag = client_send(c, err);
    }
    if (client_uncork(c, err) < 0 || (o->list_from && !*list_tag))
        return 0;
    return sel_tag;
}

/* The SELECT's completion, judged before anything its listing said is believed. */
static int client_select_done(imap_client *c, const char *mbox, unsigned tag, qresync_ctx *q,
                              ofs_error *err)
{
    if (client_wait_tag(c, tag, "SELECT", q->changed ? client_on_qresync : NULL, q, UNTIL_TAGGED,
                        err) < 0) {
        memset(&c->sel, 0, sizeof c->sel);
        return -1;
    }
    if (strcasecmp(c->last_code, "READ-ONLY") == 0)
        c->sel.readonly = true;
    c->selected = true;
    /* Without a valid UIDVALIDITY (a non-zero 32-bit number) no UID can be trusted. */
    if (c->sel.uidvalidity == 0)
        return err_set(err, OFS_E_PROTO, "server %s sent no valid UIDVALIDITY for \"%s\"", c->host,
                       mbox);
    return 0;
}

int imap_select_list(imap_client *c, const char *mbox, const imap_select_opts *o,
                     imap_mailbox_info *info, imap_select_out *out, ofs_error *err)
{
    unsigned list_tag;
    unsigned sel_tag = client_select_send(c, mbox, o, &list_tag, err);
    if (!sel_tag)
        return -1;
    qresync_ctx q = {o->qresync ? out->changed : NULL, out->vanished};
    int rc = client_select_done(c, mbox, sel_tag, &q, err);
    if (!list_tag)
        return rc < 0 ? -1 : (info ? (*info = c->sel, 0) : 0);
    /* The listing is read either way, to stay in step; after a failed SELECT it says nothing
     * about this folder (the server answers it for no folder, or for the one before). */
    meta_ctx m = {.out = out->listed,
                  .start = out->listed->n,
                  .first = o->list_from,
                  .want_size = true,
                  .bodies = rc == 0 ? out->bodies : NULL};
    ofs_error list_err;
    int lr = client_wait_tag(c, list_tag, "UID FETCH", client_on_meta, &m, UNTIL_TAGGED,
                             rc == 0 ? err : &list_err);
    if (rc < 0 || lr < 0)
        return -1;
    if (info)
        *info = c->sel;
    return 0;
}

int imap_compress(imap_client *c, ofs_error *err)
{
    if (!imap_has_cap(c, "COMPRESS=DEFLATE"))
        return 0;
    ofs_error e;
    if (client_simple(c, "COMPRESS DEFLATE", NULL, NULL, &e) < 0) {
        if (c->dead) {
            *err = e;
            return -1;
        }
        return 0; /* refused (say, already compressed by a proxy): go on without */
    }
    /* The server compresses from the byte after its OK; whatever we hold past it is deflated. */
    int r = imap_compress_start(c->t, c->in + c->in_pos, c->in_len - c->in_pos, err);
    c->in_pos = c->in_len = 0;
    if (r < 0)
        return client_broken(c);
    c->compressed = true;
    return 0;
}

bool imap_compressed(const imap_client *c)
{
    return c->compressed;
}

bool imap_qresync(const imap_client *c)
{
    return c->qresync;
}

int imap_enable(imap_client *c, ofs_error *err)
{
    const char *ext = imap_has_cap(c, "QRESYNC")     ? "QRESYNC"
                      : imap_has_cap(c, "CONDSTORE") ? "CONDSTORE"
                                                     : NULL;
    if (!ext || !imap_has_cap(c, "ENABLE"))
        return 0;
    client_begin(c, "ENABLE %s", ext);
    unsigned no = client_send(c, err);
    if (!no)
        return -1;
    client_cmd_find(c, no)->detached = true; /* ENABLED comes as untagged data; no wait */
    return 0;
}

typedef struct status_ctx {
    const char *const *names;
    size_t n;
    imap_mailbox_info *out;
    bool *ok;
} status_ctx;

static int client_on_status(imap_client *c, const imap_response *r, void *ctx, ofs_error *err)
{
    status_ctx *s = ctx;
    imap_mailbox_info mi;
    const char *name = client_status_parse(r, &mi);
    if (!name)
        return 0;
    for (size_t i = 0; i < s->n; i++)
        if (client_same_mbox(s->names[i], name)) {
            s->out[i] = mi;
            s->ok[i] = true;
        }
    return 0;
}

int imap_status_many(imap_client *c, const char *const *names, size_t n, imap_mailbox_info *out,
                     bool *ok, ofs_error *err)
{
    status_ctx s = {names, n, out, ok};
    unsigned *tags = xmalloc((n ? n : 1) * sizeof *tags);
    size_t sent = 0, waited = 0;
    int rc = 0;
    memset(ok, 0, n * sizeof *ok);
    while (waited < n && rc == 0) {
        /* A bounded window: the server's answers cannot pile up unread without limit. */
        while (sent < n && sent - waited < IMAP_PIPELINE_WINDOW && rc == 0) {
            client_begin(c, "STATUS ");
            if (client_astring(c, names[sent], "STATUS", err) < 0) {
                rc = -1;
                break;
            }
            buf_printf(&c->out, " (%s)", imap_status_items(c));
            tags[sent] = client_send(c, err);
            rc = tags[sent++] ? 0 : -1;
        }
        if (rc == 0) {
            ofs_error e;
            /* A folder that cannot be asked about is just not known: no error. */
            if (client_wait_tag(c, tags[waited++], "STATUS", client_on_status, &s, UNTIL_TAGGED,
                                &e) < 0 &&
                c->dead) {
                *err = e;
                rc = -1;
            }
        }
    }
    free(tags);
    return rc;
}

int imap_create(imap_client *c, const char *mbox, ofs_error *err)
{
    client_begin(c, "CREATE ");
    if (client_astring(c, mbox, "CREATE", err) < 0)
        return -1;
    int r = client_end(c, "CREATE", NULL, NULL, err);
    if (r < 0 && !c->dead && c->last_status == IMAP_S_NO &&
        strcasecmp(c->last_code, "ALREADYEXISTS") == 0)
        return 0;
    return r;
}

int imap_rename(imap_client *c, const char *from, const char *to, ofs_error *err)
{
    client_begin(c, "RENAME ");
    if (client_astring(c, from, "RENAME", err) < 0)
        return -1;
    buf_addc(&c->out, ' ');
    if (client_astring(c, to, "RENAME", err) < 0)
        return -1;
    return client_end(c, "RENAME", NULL, NULL, err);
}

int imap_delete(imap_client *c, const char *mbox, ofs_error *err)
{
    client_begin(c, "DELETE ");
    if (client_astring(c, mbox, "DELETE", err) < 0)
        return -1;
    int r = client_end(c, "DELETE", NULL, NULL, err);
    if (r < 0 && !c->dead && c->last_status == IMAP_S_NO &&
        strcasecmp(c->last_code, "NONEXISTENT") == 0)
        return 0; /* already gone: what we wanted */
    return r;
}

/* ---- FETCH ---- */

void imap_bodies_add(imap_bodies *b, uint32_t uid, unsigned flags, const char *data, size_t len,
                     uint64_t size)
{
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 16;
        b->v = xrealloc(b->v, b->cap * sizeof *b->v);
    }
    char *copy = xmalloc(len ? len : 1);
    memcpy(copy, data, len);
    b->v[b->n++] = (imap_body){.uid = uid, .flags = flags, .data = copy, .len = len, .size = size};
}

const imap_body *imap_bodies_find(const imap_bodies *b, uint32_t uid)
{
    for (size_t i = 0; i < b->n; i++)
        if (b->v[i].uid == uid)
            return &b->v[i];
    return NULL;
}

void imap_bodies_clear(imap_bodies *b)
{
    for (size_t i = 0; i < b->n; i++)
        free(b->v[i].data);
    free(b->v);
    memset(b, 0, sizeof *b);
}

/* The items of one FETCH response that matter here. */
typedef struct fetch_items {
    bool has_uid, has_flags, has_size;
    uint32_t uid;
    unsigned flags;
    uint64_t size;
    const imap_value *header; /* BODY[HEADER.FIELDS ...] value */
    const imap_value *body;   /* BODY[] value */
    bool has_origin;          /* the body is a range: BODY[]<origin> */
    uint64_t origin;
} fetch_items;

static int client_fetch_items(imap_client *c, const imap_response *r, fetch_items *fi,
                              ofs_error *err)
{
    memset(fi, 0, sizeof *fi);
    if (r->args.n < 1 || r->args.items[0].type != IMAP_V_LIST || r->args.items[0].n % 2)
        return err_set(err, OFS_E_PROTO, "server %s sent a malformed FETCH response", c->host);
    const imap_value *it = r->args.items[0].items;
    for (size_t i = 0; i + 1 < r->args.items[0].n; i += 2) {
        const imap_value *k = &it[i], *v = &it[i + 1];
        if (imap_value_is(k, "UID"))
            fi->has_uid = imap_value_u32(v, &fi->uid);
        else if (imap_value_is(k, "FLAGS") && v->type == IMAP_V_LIST)
            fi->has_flags = true, fi->flags = imap_flags_from_list(v);
        else if (imap_value_is(k, "RFC822.SIZE"))
            fi->has_size = imap_value_u64(v, &fi->size);
        else if (imap_value_is(k, "BODY[]"))
            fi->body = v;
        else if (k->type == IMAP_V_ATOM && strncasecmp(k->str, "BODY[]<", 7) == 0)
            fi->body = v, fi->has_origin = client_range_origin(k->str, &fi->origin);
        else if (k->type == IMAP_V_ATOM && strncasecmp(k->str, "BODY[HEADER", 11) == 0)
            fi->header = v;
    }
    return 0;
}

static store_msg *meta_find(meta_ctx *m, uint32_t uid)
{
    size_t lo = m->start, hi = m->out->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (m->out->v[mid].uid == uid)
            return &m->out->v[mid];
        if (m->out->v[mid].uid < uid)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static int client_on_meta(imap_client *c, const imap_response *r, void *ctx, ofs_error *err)
{
    meta_ctx *m = ctx;
    fetch_items fi;
    if (strcmp(r->name, "FETCH") != 0)
        return 0;
    if (client_fetch_items(c, r, &fi, err) < 0)
        return -1;
    if (!fi.has_uid || fi.uid < m->first || (m->last && fi.uid > m->last))
        return 0;
    bool complete = fi.has_flags && (!m->want_size || fi.has_size) && (!m->want_msgid || fi.header);
    if (!complete) { /* an unsolicited flag update interleaved with our answers */
        store_msg *old = meta_find(m, fi.uid);
        if (old && fi.has_flags)
            old->flags = fi.flags;
        return 0;
    }
    if (m->out->n > m->start && m->out->v[m->out->n - 1].uid >= fi.uid) {
        store_msg *old = meta_find(m, fi.uid);
        if (old) {
            old->flags = fi.flags;
            return 0;
        }
        return err_set(err, OFS_E_PROTO, "server %s sent FETCH responses out of UID order",
                       c->host);
    }
    store_msg *s = store_msg_list_push(m->out);
    s->uid = fi.uid;
    s->flags = fi.flags;
    s->size = fi.has_size ? fi.size : 0;
    const char *h = fi.header ? imap_value_str(fi.header) : NULL;
    if (h)
        s->msgid = imap_header_msgid(h, fi.header->len);
    /* A bigger message's first bytes are kept too: its ranged download starts after them. */
    if (m->bodies && fi.body && fi.has_size && fi.body->type == IMAP_V_STRING &&
        fi.body->len <= fi.size && fi.body->len > 0)
        imap_bodies_add(m->bodies, fi.uid, fi.flags, fi.body->str, fi.body->len, fi.size);
    return 0;
}

static void client_list_cmd(imap_client *c, uint32_t first, uint32_t last, bool want_size,
                            bool want_msgid, uint32_t body_max)
{
    char range[32], body[48] = "";
    if (last)
        snprintf(range, sizeof range, "%" PRIu32 ":%" PRIu32, first, last);
    else
        snprintf(range, sizeof range, "%" PRIu32 ":*", first);
    if (body_max)
        snprintf(body, sizeof body, " BODY.PEEK[]<0.%" PRIu32 ">", body_max);
    client_begin(c, "UID FETCH %s (UID FLAGS%s%s%s)", range, want_size ? " RFC822.SIZE" : "",
                 want_msgid ? " BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]" : "", body);
}

int imap_fetch_meta(imap_client *c, uint32_t first, uint32_t last, bool want_size, bool want_msgid,
                    store_msg_list *out, ofs_error *err)
{
    if (first == 0)
        first = 1;
    meta_ctx m = {.out = out,
                  .start = out->n,
                  .first = first,
                  .last = last,
                  .want_size = want_size,
                  .want_msgid = want_msgid};
    client_list_cmd(c, first, last, want_size, want_msgid, 0);
    return client_end(c, "UID FETCH", client_on_meta, &m, err);
}

/* A body held in memory: written through the sink like a streamed one. */
static int client_sink_bytes(imap_client *c, const store_sink *sink, store_msg *m, const char *data,
                             size_t len, ofs_error *err)
{
    m->size = len;
    int fd = sink->open(sink->ctx, m, len, err);
    if (fd < 0)
        return -1;
    for (size_t off = 0; off < len;) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return err_errno(err, OFS_E_IO, errno, "writing message UID %" PRIu32 " from %s",
                             m->uid, c->host);
        off += (size_t)w;
    }
    return sink->done(sink->ctx, m, fd, len, err);
}

static int client_body_copy(imap_client *c, body_fetch *bf, store_msg *m, const imap_value *v,
                            ofs_error *err)
{
    return client_sink_bytes(c, bf->sink, m, v->str, v->len, err);
}

int imap_body_deliver(imap_client *c, const imap_body *b, const store_msg *m,
                      const store_sink *sink, ofs_error *err)
{
    store_msg copy = *m;
    copy.flags = b->flags;
    return client_sink_bytes(c, sink, &copy, b->data, b->len, err);
}

/* The body FETCH a response with a body belongs to: by its UID, else the one streaming. */
static body_fetch *client_body_owner(imap_client *c, const fetch_items *fi)
{
    if (fi->has_uid)
        return client_body_route(c, fi->uid);
    for (size_t i = 0; i < c->nbodies; i++)
        if (c->bodies[i].open)
            return &c->bodies[i];
    return &c->bodies[0];
}

static int client_on_body(imap_client *c, const imap_response *r, void *ctx, ofs_error *err)
{
    (void)ctx;
    fetch_items fi;
    if (strcmp(r->name, "FETCH") != 0)
        return 0;
    if (client_fetch_items(c, r, &fi, err) < 0)
        return client_broken(c);
    if (!fi.body || fi.body->type == IMAP_V_NIL) /* a flag update, or a vanished message */
        return 0;
    body_fetch *bf = client_body_owner(c, &fi);
    store_msg m = {.uid = fi.has_uid ? fi.uid : bf->open_uid, .flags = fi.flags};
    if (uid_index(bf->uids, bf->n, m.uid) == SIZE_MAX) {
        err_set(err, OFS_E_PROTO, "server %s sent a body for UID %" PRIu32 ", not asked for",
                c->host, m.uid);
        return client_broken(c);
    }
    m.msgid = bf->msgs[uid_index(bf->uids, bf->n, m.uid)].msgid;
    int rc;
    if (fi.body->type == IMAP_V_STREAMED) {
        if (!bf->open || fi.body->fd != bf->fd) {
            err_set(err, OFS_E_PROTO, "server %s: message body arrived out of step", c->host);
            return client_broken(c);
        }
        bf->open = false;
        m.size = fi.body->size;
        rc = bf->sink->done(bf->sink->ctx, &m, fi.body->fd, fi.body->size, err);
        bf->last_uid = m.uid;
    } else if (fi.body->type == IMAP_V_STRING || fi.body->type == IMAP_V_ATOM) {
        rc = client_body_copy(c, bf, &m, fi.body, err);
        bf->last_uid = m.uid;
    } else {
        err_set(err, OFS_E_PROTO, "server %s sent a malformed message body", c->host);
        return client_broken(c);
    }
    /* A failed sink leaves us no way to keep the rest of the batch in step. */
    return rc < 0 ? client_broken(c) : 0;
}

/* Sends UID FETCH (UID FLAGS BODY.PEEK[]) for uids[0..n) (owned from here on). */
static int client_body_send(imap_client *c, const store_msg *msgs, uint32_t *uids, size_t n,
                            const store_sink *sink, ofs_error *err)
{
    client_begin(c, "UID FETCH ");
    imap_uidset(uids, n, SIZE_MAX, &c->out);
    buf_adds(&c->out, " (UID FLAGS BODY.PEEK[])");
    unsigned no = client_send(c, err);
    if (!no) {
        free(uids);
        return -1;
    }
    if (c->nbodies == c->capbodies) {
        c->capbodies = c->capbodies ? c->capbodies * 2 : 4;
        c->bodies = xrealloc(c->bodies, c->capbodies * sizeof *c->bodies);
    }
    c->bodies[c->nbodies++] =
        (body_fetch){.sink = sink, .msgs = msgs, .uids = uids, .n = n, .tagno = no, .fd = -1};
    return 0;
}

int imap_bodies_send(imap_client *c, const store_msg *msgs, size_t n, const store_sink *sink,
                     ofs_error *err)
{
    int sent = 0;
    for (size_t done = 0; done < n; sent++) {
        uint32_t *uids = xmalloc((n - done) * sizeof *uids);
        for (size_t i = done; i < n; i++)
            uids[i - done] = msgs[i].uid;
        buf probe;
        buf_init(&probe);
        size_t k = imap_uidset(uids, n - done, IMAP_UIDSET_MAX, &probe);
        buf_free(&probe);
        if (client_body_send(c, msgs + done, uids, k, sink, err) < 0)
            return -1;
        done += k;
    }
    return sent;
}

int imap_bodies_wait(imap_client *c, ofs_error *err)
{
    if (!c->nbodies)
        return err_set(err, OFS_E_STATE, "waiting for message bodies never asked for");
    int r = client_wait_tag(c, c->bodies[0].tagno, "UID FETCH", client_on_body, NULL, UNTIL_TAGGED,
                            err);
    bool open = c->bodies[0].open;
    client_body_pop(c);
    if (r == 0 && open) {
        err_set(err, OFS_E_PROTO, "server %s: message body arrived out of step", c->host);
        return client_broken(c);
    }
    /* NO to a FETCH means some messages could not be fetched (expunged meanwhile). */
    if (r < 0 && !c->dead && c->last_status == IMAP_S_NO)
        return 0;
    return r;
}

void imap_bodies_abandon(imap_client *c)
{
    if (c->nbodies)
        client_broken(c); /* their answers would go to sinks no one holds */
    while (c->nbodies)
        client_body_pop(c);
}

int imap_fetch_bodies(imap_client *c, const store_msg *msgs, size_t n, const store_sink *sink,
                      ofs_error *err)
{
    int k = imap_bodies_send(c, msgs, n, sink, err), r = k < 0 ? -1 : 0;
    for (int i = 0; i < k && r == 0; i++)
        r = imap_bodies_wait(c, err);
    if (r < 0)
        imap_bodies_abandon(c);
    return r;
}

static int client_on_part(imap_client *c, const imap_response *r, void *ctx, ofs_error *err)
{
    (void)ctx;
    fetch_items fi;
    if (strcmp(r->name, "FETCH") != 0)
        return 0;
    if (client_fetch_items(c, r, &fi, err) < 0)
        return client_broken(c);
    if (!fi.body || !fi.has_origin)
        return 0; /* a flag update */
    range_fetch *f = client_range_find(c, fi.has_uid ? fi.uid : 0, fi.origin);
    if (!f)
        return 0; /* not ours: another message's, maybe, the server's own idea */
    f->answered = true;
    if (fi.body->type == IMAP_V_STREAMED) {
        f->r.got = fi.body->size;
        return 0;
    }
    if (fi.body->type == IMAP_V_NIL)
        return 0;
    if (fi.body->type != IMAP_V_STRING && fi.body->type != IMAP_V_ATOM) {
        err_set(err, OFS_E_PROTO, "server %s sent a malformed message range", c->host);
        return client_broken(c);
    }
    if (client_range_check(c, f, err) < 0)
        return -1;
    for (size_t off = 0; off < fi.body->len;) {
        ssize_t w = write(f->r.fd, fi.body->str + off, fi.body->len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            err_errno(err, OFS_E_IO, errno, "writing message UID %" PRIu32 " from %s", f->r.uid,
                      c->host);
            return client_broken(c);
        }
        off += (size_t)w;
    }
    f->r.got = fi.body->len;
    return 0;
}

/* Once the link is lost, every step of the pipeline says why, not that it is unusable now. */
static int client_ranges_lost(imap_client *c, ofs_error *err)
{
    *err = c->ranges_err;
    return -1;
}

int imap_range_send(imap_client *c, const imap_range *r, ofs_error *err)
{
    if (c->ranges_lost)
        return client_ranges_lost(c, err);
    client_cork(c);
    client_begin(c, "UID FETCH %" PRIu32 " (UID BODY.PEEK[]<%" PRIu64 ".%" PRIu64 ">)", r->uid,
                 r->offset, r->len);
    unsigned no = client_send(c, err);
    if (!no)
        return -1;
    if (c->nranges == c->capranges) {
        c->capranges = c->capranges ? c->capranges * 2 : 16;
        c->ranges = xrealloc(c->ranges, c->capranges * sizeof *c->ranges);
    }
    c->ranges[c->nranges++] = (range_fetch){.r = *r, .tagno = no};
    c->ranges[c->nranges - 1].r.got = 0;
    c->ranges[c->nranges - 1].r.gone = false;
    return 0;
}

int imap_ranges_flush(imap_client *c, ofs_error *err)
{
    if (c->ranges_lost)
        return client_ranges_lost(c, err);
    return client_uncork(c, err);
}

int imap_range_wait(imap_client *c, imap_range *out, ofs_error *err)
{
    if (!c->nranges)
        return err_set(err, OFS_E_STATE, "waiting for a range that was never asked for");
    int r = -1;
    if (c->ranges_lost)
        client_ranges_lost(c, err);
    else if (!c->cork || client_uncork(c, err) == 0)
        r = client_wait_tag(c, c->ranges[0].tagno, "UID FETCH", client_on_part, NULL, UNTIL_TAGGED,
                            err);
    range_fetch f = c->ranges[0];
    memmove(c->ranges, c->ranges + 1, --c->nranges * sizeof *c->ranges);
    *out = f.r;
    /* No answer, or NO: the message was expunged meanwhile. */
    if ((r == 0 && !f.answered) || (r < 0 && !c->dead && c->last_status == IMAP_S_NO)) {
        out->gone = true;
        return 0;
    }
    /* Cut after the range's whole answer came (its completion may trail other answers): its
     * bytes are all there. The ranges after it get the same error, or their answers too. */
    if (r < 0 && c->dead && f.answered) {
        if (!c->ranges_lost)
            c->ranges_err = *err;
        c->ranges_lost = true;
        return 0;
    }
    if (r < 0)
        imap_ranges_abandon(c);
    return r;
}

void imap_ranges_abandon(imap_client *c)
{
    if (c->nranges)
        client_broken(c); /* their answers would stream into files no one holds open */
    c->nranges = 0;
    c->cork = false;
    c->ranges_lost = false;
}

/* ---- flags, append, expunge ---- */

/* Tags of pipelined commands not yet waited for. */
typedef struct client_inflight {
    unsigned tags[IMAP_PIPELINE_WINDOW];
    size_t n;
    int rc;
    ofs_error first;
} client_inflight;

/* Waits for the oldest command in flight; the first failure is kept, reading goes on. */
static void client_inflight_pop(imap_client *c, client_inflight *f, const char *what)
{
    ofs_error e;
    if (client_wait_tag(c, f->tags[0], what, NULL, NULL, UNTIL_TAGGED, &e) < 0 && f->rc == 0) {
        f->rc = -1;
        f->first = e;
    }
    memmove(f->tags, f->tags + 1, --f->n * sizeof *f->tags);
}

static int client_inflight_push(imap_client *c, client_inflight *f, const char *what,
                                ofs_error *err)
{
    if (f->n == IMAP_PIPELINE_WINDOW)
        client_inflight_pop(c, f, what);
    unsigned no = client_send(c, err);
    if (!no)
        return -1;
    f->tags[f->n++] = no;
    return 0;
}

static int client_inflight_drain(imap_client *c, client_inflight *f, const char *what,
                                 ofs_error *err)
{
    while (f->n && !c->dead)
        client_inflight_pop(c, f, what);
    if (f->rc < 0)
        *err = f->first;
    return f->rc;
}

static int client_store_send(imap_client *c, client_inflight *f, const uint32_t *uids, size_t n,
                             bool add, unsigned flags, ofs_error *err)
{
    flags &= FLAG_ALL;
    while (flags && n > 0) {
        client_begin(c, "UID STORE ");
        size_t k = imap_uidset(uids, n, IMAP_UIDSET_MAX, &c->out);
        buf_printf(&c->out, " %cFLAGS.SILENT (", add ? '+' : '-');
        imap_flags_format(flags, &c->out);
        buf_addc(&c->out, ')');
        if (client_inflight_push(c, f, "UID STORE", err) < 0)
            return -1;
        uids += k;
        n -= k;
    }
    return 0;
}

int imap_store_flags(imap_client *c, const uint32_t *uids, size_t n, bool add, unsigned flags,
                     ofs_error *err)
{
    return imap_store_flag_changes(c, uids, n, add ? flags : 0, add ? 0 : flags, err);
}

int imap_store_flag_changes(imap_client *c, const uint32_t *uids, size_t n, unsigned add,
                            unsigned del, ofs_error *err)
{
    client_inflight own = {0}, *f = c->batch ? c->batch : &own;
    if (client_store_send(c, f, uids, n, true, add, err) < 0 ||
        client_store_send(c, f, uids, n, false, del, err) < 0)
        return -1;
    return c->batch ? 0 : client_inflight_drain(c, f, "UID STORE", err);
}

void imap_batch_begin(imap_client *c)
{
    if (c->batch)
        return;
    c->batch = xcalloc(1, sizeof *c->batch);
    client_cork(c);
}

int imap_batch_end(imap_client *c, ofs_error *err)
{
    client_inflight *f = c->batch;
    if (!f)
        return 0;
    c->batch = NULL;
    int rc = client_uncork(c, err);
    ofs_error drain_err;
    if (client_inflight_drain(c, f, "UID STORE", rc < 0 ? &drain_err : err) < 0)
        rc = -1;
    free(f);
    return rc;
}

/* Sends size bytes from fd as the literal's body, or with `buffered` adds them to the corked
 * output, untraced (message bytes stay out of the trace). A short file leaves the server
 * waiting for bytes we promised, so the connection is given up. */
static int client_send_fd(imap_client *c, int fd, uint64_t size, bool buffered, ofs_error *err)
{
    char chunk[65536];
    uint64_t left = size;
    while (left > 0) {
        ssize_t n = read(fd, chunk, left < sizeof chunk ? (size_t)left : sizeof chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            err_errno(err, OFS_E_IO, errno, "reading a message to upload to %s", c->host);
            return client_broken(c);
        }
        if (n == 0) {
            err_set(err, OFS_E_IO,
                    "message to upload to %s is shorter than announced (%" PRIu64 " of %" PRIu64
                    " bytes)",
                    c->host, size - left, size);
            return client_broken(c);
        }
        if (buffered) {
            buf_add(&c->out, chunk, (size_t)n);
        } else if (imap_transport_write(c->t, chunk, (size_t)n, err) < 0) {
            client_name_stall(c, err);
            return client_broken(c);
        }
        left -= (uint64_t)n;
    }
    if (buffered)
        c->out_traced = c->out.len;
    return 0;
}

/* Starts APPEND mbox (flags) {size} and sends it up to the literal's first byte (after the
 * go-ahead when the literal synchronizes). */
static int client_append_head(imap_client *c, const char *mbox, unsigned flags, uint64_t size,
                              ofs_error *err)
{
    c->appenduid_validity = c->appenduid_uid = 0;
    client_begin(c, "APPEND ");
    if (client_astring(c, mbox, "APPEND", err) < 0)
        return -1;
    if (flags & FLAG_ALL) {
        buf_adds(&c->out, " (");
        imap_flags_format(flags, &c->out);
        buf_addc(&c->out, ')');
    }
    buf_addc(&c->out, ' ');
    if (client_literal_head(c, size, "APPEND", err) < 0)
        return -1;
    return client_flush(c, err);
}

/* The APPENDUID of the command just answered, or zeros. */
static void client_appenduid(const imap_client *c, uint32_t *uidvalidity, uint32_t *uid)
{
    bool known = imap_has_cap(c, "UIDPLUS") && strcasecmp(c->last_code, "APPENDUID") == 0;
    *uidvalidity = known ? c->appenduid_validity : 0;
    *uid = known ? c->appenduid_uid : 0;
}

int imap_append(imap_client *c, const char *mbox, int fd, uint64_t size, unsigned flags,
                uint32_t *uidvalidity, uint32_t *uid, ofs_error *err)
{
    *uidvalidity = *uid = 0;
    if (client_append_head(c, mbox, flags, size, err) < 0 ||
        client_send_fd(c, fd, size, false, err) < 0 || client_end(c, "APPEND", NULL, NULL, err) < 0)
        return -1;
    client_appenduid(c, uidvalidity, uid);
    return 0;
}

/* Sends one APPEND whole: its head, the literal's bytes and the command's end. */
static int client_append_send(imap_client *c, const char *mbox, const imap_upload *u,
                              ofs_error *err)
{
    if (client_append_head(c, mbox, u->flags, u->size, err) < 0)
        return -1;
    /* Small literals join the burst; a big one is streamed, never held in memory. */
    bool buffered = c->cork && u->size <= IMAP_APPEND_WINDOW / 4;
    if ((!buffered && client_write_out(c, err) < 0) ||
        client_send_fd(c, u->fd, u->size, buffered, err) < 0)
        return -1;
    return client_send(c, err) ? 0 : -1;
}

/* Reads one pipelined APPEND's answer into u; the first failure is kept in *rc, *first. */
static void client_append_answer(imap_client *c, unsigned tag, imap_upload *u, int *rc,
                                 ofs_error *first)
{
    ofs_error e;
    if (client_wait_tag(c, tag, "APPEND", NULL, NULL, UNTIL_TAGGED, &e) < 0) {
        if (*rc == 0)
            *first = e;
        *rc = -1;
        return;
    }
    u->ok = true;
    client_appenduid(c, &u->uidvalidity, &u->uid);
}

static bool client_literal_plus(const imap_client *c, const imap_upload *v, size_t n)
{
    if (imap_has_cap(c, "LITERAL+"))
        return true;
    if (!imap_has_cap(c, "LITERAL-"))
        return false;
    for (size_t i = 0; i < n; i++)
        if (v[i].size > 4096)
            return false;
    return true;
}

int imap_append_many(imap_client *c, const char *mbox, imap_upload *v, size_t n, ofs_error *err)
{
    int rc = 0;
    if (!client_literal_plus(c, v, n)) { /* each literal waits for its go-ahead anyway */
        for (size_t i = 0; i < n && rc == 0; i++) {
            rc = imap_append(c, mbox, v[i].fd, v[i].size, v[i].flags, &v[i].uidvalidity, &v[i].uid,
                             err);
            v[i].ok = rc == 0;
        }
        return rc;
    }
    unsigned tags[IMAP_PIPELINE_WINDOW];
    size_t oldest = 0, next = 0;
    uint64_t in_flight = 0;
    ofs_error first = {0};
    client_cork(c);
    for (; next < n && !c->dead; next++) {
        while (next > oldest && (next - oldest == IMAP_PIPELINE_WINDOW ||
                                 in_flight + v[next].size > IMAP_APPEND_WINDOW)) {
            client_append_answer(c, tags[oldest % IMAP_PIPELINE_WINDOW], &v[oldest], &rc, &first);
            in_flight -= v[oldest].size;
            oldest++;
        }
        ofs_error e;
        if (client_append_send(c, mbox, &v[next], &e) < 0) {
            if (rc == 0)
                first = e;
            rc = -1;
            break;
        }
        tags[next % IMAP_PIPELINE_WINDOW] = c->tagno;
        in_flight += v[next].size;
        crashpoint_hit(); /* sent, its answer unread: what resolve_upload_intents is for */
    }
    ofs_error e;
    if (client_uncork(c, &e) < 0 && rc == 0) {
        first = e;
        rc = -1;
    }
    for (; oldest < next && !c->dead; oldest++)
        client_append_answer(c, tags[oldest % IMAP_PIPELINE_WINDOW], &v[oldest], &rc, &first);
    if (rc < 0)
        *err = first;
    return rc;
}

typedef struct search_ctx {
    uint32_t *v;
    size_t n, cap;
} search_ctx;

static int client_on_search(imap_client *c, const imap_response *r, void *ctx, ofs_error *err)
{
    search_ctx *s = ctx;
    if (strcmp(r->name, "SEARCH") != 0)
        return 0;
    for (size_t i = 0; i < r->args.n; i++) {
        uint32_t uid;
        if (!imap_value_u32(&r->args.items[i], &uid))
            continue; /* e.g. (MODSEQ n) with CONDSTORE */
        if (s->n == s->cap) {
            s->cap = s->cap ? s->cap * 2 : 64;
            s->v = xrealloc(s->v, s->cap * sizeof *s->v);
        }
        s->v[s->n++] = uid;
    }
    return 0;
}

int imap_search_uids(imap_client *c, const char *criteria, uint32_t **out, size_t *n,
                     ofs_error *err)
{
    search_ctx s = {0};
    client_begin(c, "UID SEARCH %s", criteria);
    if (client_end(c, "UID SEARCH", client_on_search, &s, err) < 0) {
        free(s.v);
        return -1;
    }
    *out = s.v;
    *n = s.n;
    return 0;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* RFC 4315 2.1: without UID EXPUNGE, take \Deleted off every other message for the time of a
 * plain EXPUNGE, so that only ours go, then put it back. */
static int client_expunge_fallback(imap_client *c, const uint32_t *uids, size_t n, ofs_error *err)
{
    uint32_t *del;
    size_t ndel;
    if (imap_search_uids(c, "DELETED", &del, &ndel, err) < 0)
        return -1;
    if (ndel)
        qsort(del, ndel, sizeof *del, cmp_u32);
    size_t others = 0;
    for (size_t i = 0; i < ndel; i++)
        if (uid_index(uids, n, del[i]) == SIZE_MAX)
            del[others++] = del[i];
    int r = 0;
    if (others)
        r = imap_store_flags(c, del, others, false, FLAG_DELETED, err);
    if (r == 0)
        r = client_simple(c, "EXPUNGE", NULL, NULL, err);
    if (others)
        crashpoint_hit(); /* the window the engine's restore-deleted intent covers */
    if (others && !c->dead) {
        ofs_error restore_err;
        if (imap_store_flags(c, del, others, true, FLAG_DELETED, &restore_err) < 0 && r == 0) {
            *err = restore_err;
            r = -1;
        }
    }
    free(del);
    return r;
}

int imap_expunge_uids(imap_client *c, const uint32_t *uids, size_t n, ofs_error *err)
{
    if (n == 0)
        return 0;
    if (!imap_has_cap(c, "UIDPLUS")) {
        /* Its steps depend on each other's answers: no batching inside, whatever waits. */
        client_inflight *batch = c->batch;
        c->batch = NULL;
        int r = client_expunge_fallback(c, uids, n, err);
        c->batch = batch;
        return r;
    }
    while (n > 0) {
        client_begin(c, "UID EXPUNGE ");
        size_t k = imap_uidset(uids, n, IMAP_UIDSET_MAX, &c->out);
        int r = c->batch ? client_inflight_push(c, c->batch, "UID EXPUNGE", err)
                         : client_end(c, "UID EXPUNGE", NULL, NULL, err);
        if (r < 0)
            return -1;
        uids += k;
        n -= k;
    }
    return 0;
}

int imap_noop(imap_client *c, ofs_error *err)
{
    return client_simple(c, "NOOP", NULL, NULL, err);
}

int imap_keepalive(imap_client *c, int idle, ofs_error *err)
{
    if (c->dead || imap_now() - c->last_answer < idle)
        return 0;
    return imap_noop(c, err);
}

int imap_logout(imap_client *c, ofs_error *err)
{
    c->in_logout = true;
    int r = client_simple(c, "LOGOUT", NULL, NULL, err);
    c->dead = true;
    return r;
}

/* ---- building blocks for commands that live in their own files (idle.c) ---- */

int imap_command(imap_client *c, const char *what, const char *text, imap_data_fn fn, void *ctx,
                 ofs_error *err)
{
    client_begin(c, "%s", text);
    return client_end(c, what, fn, ctx, err);
}

int imap_command_send(imap_client *c, const char *text, ofs_error *err)
{
    client_begin(c, "%s\r\n", text);
    return client_flush(c, err);
}

int imap_send_line(imap_client *c, const char *line, ofs_error *err)
{
    buf_reset(&c->out);
    buf_printf(&c->out, "%s\r\n", line);
    return client_flush(c, err);
}

bool imap_is_own_tag(const imap_client *c, const imap_response *r)
{
    return r->type == IMAP_R_TAGGED && client_tagno(r->tag) == c->tagno;
}

int imap_client_fd(const imap_client *c)
{
    return c->t ? c->t->fd : -1;
}

/* Bytes already read but not parsed count as readable: polling the socket alone would sleep
 * on a response that is sitting in our own buffer (a lost wake-up). The layers below us (TLS,
 * COMPRESS) report what they hold through the transport. */
bool imap_client_buffered(const imap_client *c)
{
    return c->in_pos < c->in_len || (c->t && imap_transport_pending(c->t));
}

int imap_read_within(imap_client *c, int timeout_ms, const imap_response **out, ofs_error *err)
{
    if (c->dead)
        return err_set(err, OFS_E_NET, "connection to %s is no longer usable", c->host);
    if (!imap_client_buffered(c)) {
        struct pollfd p = {.fd = c->t->fd, .events = POLLIN};
        int r;
        do
            r = poll(&p, 1, timeout_ms < 0 ? 0 : timeout_ms);
        while (r < 0 && errno == EINTR);
        if (r < 0)
            return err_errno(err, OFS_E_NET, errno, "waiting for %s", c->host);
        if (r == 0)
            return 0;
    }
    /* Once a response has begun, the rest follows within the connection's timeout. */
    if (client_next(c, out, err) < 0)
        return -1;
    const imap_response *r = *out;
    if (r->type == IMAP_R_UNTAGGED && client_untagged(c, r, err) < 0)
        return -1;
    if (r->type != IMAP_R_TAGGED)
        return 1;
    /* Completions are booked as for any command; the caller's own (the last sent) is handed
     * up and forgotten here, an earlier detached one (ENABLE) is dropped by the booking. */
    if (client_tagged(c, r, err) < 0)
        return -1;
    client_cmd *cmd = client_cmd_find(c, c->tagno);
    if (client_tagno(r->tag) == c->tagno && cmd)
        client_cmd_drop(c, cmd);
    return 1;
}
