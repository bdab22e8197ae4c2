/* idle.c: IDLE, NOTIFY, STATUS and ENABLE on top of the client's command primitives.
 * Nothing here waits without a deadline: reads take the caller's timeout or the connection's. */
#include "imap/idle.h"

#include <stdlib.h>
#include <string.h>

#include "util/err.h"
#include "util/mem.h"

bool imap_status_parse(const imap_response *r, const char **mbox, imap_status_info *out)
{
    if (r->type != IMAP_R_UNTAGGED || r->status != IMAP_S_NONE || strcmp(r->name, "STATUS") != 0)
        return false;
    if (r->args.n < 2 || r->args.items[1].type != IMAP_V_LIST)
        return false;
    const char *name = imap_value_str(&r->args.items[0]);
    if (!name)
        return false;
    memset(out, 0, sizeof *out);
    const imap_value *l = &r->args.items[1];
    for (size_t i = 0; i + 1 < l->n; i += 2) {
        const imap_value *k = &l->items[i], *v = &l->items[i + 1];
        if (imap_value_is(k, "MESSAGES") && imap_value_u32(v, &out->messages))
            out->have |= IMAP_ST_MESSAGES;
        else if (imap_value_is(k, "UIDNEXT") && imap_value_u32(v, &out->uidnext))
            out->have |= IMAP_ST_UIDNEXT;
        else if (imap_value_is(k, "UIDVALIDITY") && imap_value_u32(v, &out->uidvalidity))
            out->have |= IMAP_ST_UIDVALIDITY;
        else if (imap_value_is(k, "HIGHESTMODSEQ") && imap_value_u64(v, &out->highestmodseq))
            out->have |= IMAP_ST_MODSEQ;
    }
    *mbox = name;
    return true;
}

typedef struct status_ctx {
    const char *mbox;
    imap_status_info *out;
    bool got;
} status_ctx;

static int on_status(imap_client *c, const imap_response *r, void *ctx, ofs_error *err)
{
    status_ctx *s = ctx;
    const char *name;
    imap_status_info info;
    if (!imap_status_parse(r, &name, &info) || strcmp(name, s->mbox) != 0)
        return 0;
    *s->out = info;
    s->got = true;
    return 0;
}

int imap_folder_status(imap_client *c, const char *mbox, imap_status_info *out, ofs_error *err)
{
    buf cmd;
    buf_init(&cmd);
    buf_adds(&cmd, "STATUS ");
    if (!imap_quote(mbox, &cmd)) {
        buf_free(&cmd);
        return err_set(err, OFS_E_NAME, "folder name %s cannot be sent in a STATUS command", mbox);
    }
    buf_printf(&cmd, " (MESSAGES UIDNEXT UIDVALIDITY%s)",
               imap_has_cap(c, "CONDSTORE") ? " HIGHESTMODSEQ" : "");
    status_ctx s = {.mbox = mbox, .out = out};
    memset(out, 0, sizeof *out);
    int r = imap_command(c, "STATUS", cmd.data, on_status, &s, err);
    buf_free(&cmd);
    if (r == 0 && !s.got)
        return err_set(err, OFS_E_PROTO, "server %s answered STATUS %s without its data",
                       imap_host(c), mbox);
    return r;
}

int imap_enable(imap_client *c, const char *ext, ofs_error *err)
{
    if (!imap_has_cap(c, "ENABLE"))
        return err_set(err, OFS_E_SERVER, "server %s cannot ENABLE %s", imap_host(c), ext);
    char *cmd = xasprintf("ENABLE %s", ext);
    int r = imap_command(c, "ENABLE", cmd, NULL, NULL, err);
    free(cmd);
    return r;
}

int imap_notify_set(imap_client *c, ofs_error *err)
{
    /* RFC 5465 5.4: FlagChange needs MessageNew and MessageExpunge beside it. */
    return imap_command(c, "NOTIFY",
                        "NOTIFY SET (personal (MessageNew MessageExpunge FlagChange "
                        "MailboxName SubscriptionChange))",
                        NULL, NULL, err);
}

int imap_idle_start(imap_client *c, ofs_error *err)
{
    return imap_command_send(c, "IDLE", err);
}

int imap_idle_done(imap_client *c, ofs_error *err)
{
    return imap_send_line(c, "DONE", err);
}

int imap_idle_read(imap_client *c, int timeout_ms, imap_data_fn fn, void *ctx, ofs_error *err)
{
    for (;;) {
        const imap_response *r;
        int got = imap_read_within(c, timeout_ms, &r, err);
        if (got <= 0)
            return got < 0 ? -1 : IMAP_IDLE_QUIET;
        timeout_ms = 0; /* after the first response: only what is already there */
        if (r->type == IMAP_R_CONTINUATION)
            return IMAP_IDLE_ACCEPTED;
        if (r->type == IMAP_R_UNTAGGED) {
            if (fn && fn(c, r, ctx, err) < 0)
                return -1;
            continue;
        }
        if (!imap_is_own_tag(c, r))
            return err_set(err, OFS_E_PROTO,
                           "server %s answered command tag \"%s\", which was never sent",
                           imap_host(c), r->tag);
        if (r->status == IMAP_S_OK)
            return IMAP_IDLE_ENDED;
        return err_set(err, OFS_E_SERVER, "IDLE on server %s failed: server said: %s", imap_host(c),
                       r->text);
    }
}
