/* mapguard.c: the SIGBUS handler behind map guards (mapguard.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>

#include "ltr_int.h"
#include "mapguard.h"

__thread map_guard *ltr_map_guard_top __attribute__((tls_model("initial-exec")));

static struct sigaction previous;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int install_rc;

static void on_sigbus(int sig, siginfo_t *si, void *ctx)
{
    map_guard *g = ltr_map_guard_top;
    if (g) {
        ltr_map_guard_top = g->prev;
        g->code = si ? si->si_code : 0;
        siglongjmp(g->jb, 1);
    }
    /* Not a guarded read: what would have happened without us. Returning re-runs the faulting
     * instruction, which then meets the restored default action. */
    if (previous.sa_flags & SA_SIGINFO) {
        if (previous.sa_sigaction) {
            previous.sa_sigaction(sig, si, ctx);
            return;
        }
    } else if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN) {
        previous.sa_handler(sig);
        return;
    }
    signal(SIGBUS, SIG_DFL);
}

static void install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    install_rc = sigaction(SIGBUS, &sa, &previous) == 0 ? LTR_OK : LTR_EIO;
}

int mapguard_install(void)
{
    pthread_once(&once, install);
    return install_rc ? ltr_fail(LTR_EIO, "cannot install the SIGBUS handler for mapped files")
                      : LTR_OK;
}

int map_guard_error(const map_guard *g, const char *path)
{
    if (g->code == BUS_ADRERR)
        return ltr_fail(LTR_ECORRUPT, "%s was cut short under its mapping (SIGBUS)", path);
    return ltr_fail_as(LTR_EIO, EIO, "%s: a mapped page could not be read (SIGBUS)",
                       path);
}

int map_copy(void *dst, const void *src, size_t n, const char *path)
{
    map_guard g;
    if (MAP_GUARD_FAILED(&g))
        return map_guard_error(&g, path);
    map_guard_on(&g);
    memcpy(dst, src, n);
    map_guard_off(&g);
    return LTR_OK;
}

int map_guarded(int mapped, const char *path, int (*fn)(void *), void *arg)
{
    if (!mapped)
        return fn(arg);
    map_guard g;
    if (MAP_GUARD_FAILED(&g))
        return map_guard_error(&g, path);
    map_guard_on(&g);
    int rc = fn(arg);
    map_guard_off(&g);
    return rc;
}
