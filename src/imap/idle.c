/* idle.c: IDLE and NOTIFY on top of the client's command primitives.
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
        if (!imap_is_own_tag(c, r)) /* an earlier command sent without waiting (ENABLE) */
            continue;
        if (r->status == IMAP_S_OK)
            return IMAP_IDLE_ENDED;
        return err_set(err, OFS_E_SERVER, "IDLE on server %s failed: server said: %s", imap_host(c),
                       r->text);
    }
}
