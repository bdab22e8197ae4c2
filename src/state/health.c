/* health.c: PRAGMA quick_check of a state database, opened read-only so that checking can
 * never change or lock it; a sync running meanwhile is not disturbed (WAL readers). */
#include "state/health.h"

#include <sqlite3.h>
#include <string.h>

#include "util/err.h"
#include "util/mem.h"

#define HEALTH_MAX_LINES 5

int state_health(const char *path, char **report, ofs_error *err)
{
    *report = NULL;
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL);
    if (rc == SQLITE_OK)
        sqlite3_busy_timeout(db, 5000);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db, "PRAGMA quick_check", -1, &q, NULL);
    if (rc != SQLITE_OK) {
        err_set(err, OFS_E_STATE, "state database %s cannot be read: %s", path,
                db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_finalize(q);
        sqlite3_close(db);
        return -1;
    }
    buf b;
    buf_init(&b);
    int lines = 0;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        const char *line = (const char *)sqlite3_column_text(q, 0);
        if (lines++ < HEALTH_MAX_LINES)
            buf_printf(&b, "%s%s", b.len ? "; " : "", line ? line : "");
    }
    int result;
    if (rc != SQLITE_DONE) {
        err_set(err, OFS_E_STATE, "state database %s cannot be checked: %s", path,
                sqlite3_errmsg(db));
        result = -1;
    } else if (lines == 1 && strcmp(b.data, "ok") == 0) {
        result = 0;
    } else {
        result = 1;
        *report = xstrdup(b.data ? b.data : "no answer");
    }
    buf_free(&b);
    sqlite3_finalize(q);
    sqlite3_close(db);
    return result;
}
