/* mapguard.h: reading file mappings without dying of SIGBUS.
 *
 * Touching a page of a mapping that lies past the end of its file (a file cut short under the
 * mapping) or that the device cannot read raises SIGBUS, which would kill the interpreter. Code
 * that reads a mapping runs inside a guard; the process-wide SIGBUS handler (installed once, by
 * mapguard_install) jumps back to the innermost guard of the faulting thread, which reports an
 * error. Outside any guard the signal goes to the handler that was there before (or kills the
 * process, as it would have). Guarded code must hold no lock and own no allocation it would leak
 * when the jump abandons it.
 *
 *     map_guard g;
 *     if (MAP_GUARD_FAILED(&g))
 *         return map_guard_error(&g, path);   // the guard is already off
 *     map_guard_on(&g);
 *     ... read the mapping ...
 *     map_guard_off(&g);
 */
#ifndef LTR_MAPGUARD_H
#define LTR_MAPGUARD_H

#include <setjmp.h>
#include <stddef.h>

typedef struct map_guard {
    sigjmp_buf jb;
    struct map_guard *prev;
    int code; /* si_code of the SIGBUS that ended it */
} map_guard;

extern __thread map_guard *ltr_map_guard_top __attribute__((tls_model("initial-exec")));

/* Installs the handler (once per process; later calls do nothing). */
int mapguard_install(void);

/* The signal mask is neither saved nor restored (the handler runs with SA_NODEFER). */
#define MAP_GUARD_FAILED(g) (sigsetjmp((g)->jb, 0) != 0)

static inline void map_guard_on(map_guard *g)
{
    g->prev = ltr_map_guard_top;
    ltr_map_guard_top = g;
}

static inline void map_guard_off(map_guard *g) { ltr_map_guard_top = g->prev; }

/* Runs fn(arg) under a guard (when `mapped`, else as it is): fn's result, or the error of a
 * SIGBUS in the mapping of path. */
int map_guarded(int mapped, const char *path, int (*fn)(void *), void *arg);

/* memcpy from a mapping, guarded: LTR_OK, or the error of a SIGBUS. */
int map_copy(void *dst, const void *src, size_t n, const char *path);

/* The error of a guard that caught SIGBUS: the file was cut short (LTR_ECORRUPT) or a page of it
 * could not be read (LTR_EIO). */
int map_guard_error(const map_guard *g, const char *path);

#endif
