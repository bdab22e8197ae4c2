/* secret.c: the dumpable guard around secrets (prctl), counted so that nested users compose
 * and threads of one process agree (the attribute is per process). */
#include "util/secret.h"

#include <pthread.h>
#include <sys/prctl.h>

static pthread_mutex_t secret_lock = PTHREAD_MUTEX_INITIALIZER;
static int secret_depth;
static int secret_saved = 1;

void secret_guard_begin(void)
{
    pthread_mutex_lock(&secret_lock);
    if (secret_depth++ == 0) {
        int was = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
        secret_saved = was < 0 ? 1 : was;
        prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    pthread_mutex_unlock(&secret_lock);
}

void secret_guard_end(void)
{
    pthread_mutex_lock(&secret_lock);
    if (secret_depth > 0 && --secret_depth == 0)
        prctl(PR_SET_DUMPABLE, secret_saved, 0, 0, 0);
    pthread_mutex_unlock(&secret_lock);
}
