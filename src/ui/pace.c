/* pace.c: the renderers' per-folder clocks: a small table keyed by account and folder that
 * folders enter with their first event and leave when they are done. */
#include "ui/pace.h"

#include <stdlib.h>
#include <string.h>

#include "util/mem.h"

static const char *key(const char *s)
{
    return s ? s : "";
}

static void slot_free(ui_pace_slot *s)
{
    free(s->account);
    free(s->folder);
}

static ui_pace_slot *find(ui_pace *p, const char *account, const char *folder)
{
    for (size_t i = 0; i < p->n; i++)
        if (!strcmp(p->s[i].folder, key(folder)) && !strcmp(p->s[i].account, key(account)))
            return &p->s[i];
    return NULL;
}

static ui_pace_slot *least_recent(ui_pace *p)
{
    ui_pace_slot *old = &p->s[0];
    for (size_t i = 1; i < p->n; i++)
        if (p->s[i].used < old->used)
            old = &p->s[i];
    return old;
}

ui_pace_slot *ui_pace_get(ui_pace *p, const char *account, const char *folder, bool *fresh)
{
    ui_pace_slot *s = find(p, account, folder);
    *fresh = !s;
    if (!s) {
        if (p->n < UI_PACE_SLOTS) {
            s = &p->s[p->n++];
        } else {
            s = least_recent(p);
            slot_free(s);
        }
        *s = (ui_pace_slot){.account = xstrdup(key(account)), .folder = xstrdup(key(folder))};
    }
    s->used = ++p->tick;
    return s;
}

void ui_pace_forget(ui_pace *p, const char *account, const char *folder)
{
    ui_pace_slot *s = find(p, account, folder);
    if (!s)
        return;
    slot_free(s);
    *s = p->s[--p->n];
}

void ui_pace_clear(ui_pace *p)
{
    for (size_t i = 0; i < p->n; i++)
        slot_free(&p->s[i]);
    p->n = 0;
}

bool ui_pace_progress(ui_pace *p, const ofs_event *ev, double now)
{
    bool fresh;
    ui_pace_slot *s = ui_pace_get(p, ev->account, ev->folder, &fresh);
    bool finished = ev->total && ev->done == ev->total && ev->done != s->done_written;
    if (!fresh && !finished && now - s->written < UI_PROGRESS_GAP)
        return false;
    s->written = now;
    s->done_written = ev->done;
    return true;
}
