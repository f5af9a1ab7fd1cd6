/* store_files.c: the store's files: their names, creating and opening table files (through
 * the pool of dead table files and the cache of open descriptors), and the delayed deletion of
 * files that left the durable state. Depends on nothing else of the store. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <unistd.h>

#include "io.h"
#include "store_int.h"

/* ---- obsolete files ---- */

#define GRACE_SECONDS 1.0

void store_remove_file(char *path, tfile *tf)
{
    if (tf) {
        tfile_doom(tf, path);
    } else {
        io_unlink(path);
        free(path);
    }
}

void store_bury(ltr_store *s, char *path, uint64_t pooled, tfile *tf)
{
    if (!path) {
        tfile_release(tf); /* (out of memory: the next writer open removes the file) */
        return;
    }
    pthread_mutex_lock(&s->state_mu);
    if (s->files.ngrave == s->files.grave_cap) {
        size_t cap = s->files.grave_cap ? 2 * s->files.grave_cap : 64;
        struct grave *g = realloc(s->files.grave, cap * sizeof *g);
        if (g) {
            s->files.grave = g;
            s->files.grave_cap = cap;
        }
    }
    if (s->files.ngrave < s->files.grave_cap) {
        s->files.grave[s->files.ngrave++] = (struct grave){path, store_now() + GRACE_SECONDS, pooled, tf};
        path = NULL;
    }
    pthread_mutex_unlock(&s->state_mu);
    if (path) { /* no memory to remember it: unlink at once (once its readers are done) */
        store_remove_file(path, tf);
        if (pooled)
            tpool_event(s->files.pool, pooled, TP_GONE);
    }
}

/* Whether no read-only open holds the store: then, until the lock is let go, none can start
 * (they take LOCK_SH on the directory before they read the manifest). */
static int no_readers(ltr_store *s)
{
    return s->files.dir_fd >= 0 && io_flock(s->files.dir_fd, LOCK_EX | LOCK_NB) == 0;
}

/* Unlinks the buried files, or hands the tables among them to the pool, at once when no reader
 * process holds the store (none can have them open, and a reader that starts later needs none
 * of them: a dropped table's drop is durable, and a relocated value log's pointers left in
 * tables are shadowed by the moved records, durable in the log or in newer tables), else once
 * their grace period is over (all of them when `all`); state_mu not held (an unlink may wait
 * for the device). Without the first, a store whose value-log GC collects files quickly kept
 * each collected file a grace period longer. */
void store_reap(ltr_store *s, int all)
{
    pthread_mutex_lock(&s->state_mu);
    int some = s->files.ngrave != 0;
    pthread_mutex_unlock(&s->state_mu);
    int alone = some && no_readers(s); /* holds LOCK_EX until the end: no reader starts */
    pthread_mutex_lock(&s->state_mu);
    double t = store_now();
    size_t k = 0, ndue = 0;
    struct grave *due = s->files.ngrave ? malloc(s->files.ngrave * sizeof *due) : NULL;
    for (size_t i = 0; i < s->files.ngrave; i++) {
        /* value logs and clusters at once; tables outside the pool keep their grace period (at
         * once, an unlink-fault test left dead tables behind now and then: not understood) */
        if (due && (all || (alone && (s->files.grave[i].pooled || !s->files.grave[i].tf)) ||
                    s->files.grave[i].at <= t))
            due[ndue++] = s->files.grave[i];
        else
            s->files.grave[k++] = s->files.grave[i];
    }
    s->files.ngrave = k;
    pthread_mutex_unlock(&s->state_mu);
    for (size_t i = 0; i < ndue; i++) {
        if (due[i].pooled && alone) {
            tpool_event(s->files.pool, due[i].pooled, TP_CLEARED);
            tfile_release(due[i].tf); /* the pool waits for the readers itself */
            free(due[i].path);
        } else {
            store_remove_file(due[i].path, due[i].tf);
            if (due[i].pooled)
                tpool_event(s->files.pool, due[i].pooled, TP_GONE);
        }
    }
    if (alone)
        io_flock(s->files.dir_fd, LOCK_UN);
    free(due);
}

/* ---- files ---- */

char *store_file(const char *dir, uint64_t number, const char *ext)
{
    size_t n = strlen(dir) + 32;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%08llu.%s", dir, (unsigned long long)number, ext);
    return p;
}

int store_new_table(ltr_store *s, uint64_t *file, char **path)
{
    pthread_mutex_lock(&s->state_mu);
    *file = s->next_file++;
    pthread_mutex_unlock(&s->state_mu);
    *path = store_file(s->dir, *file, "ht");
    if (*path && s->files.pool)
        tpool_take(s->files.pool, *path); /* a dead table's file, overwritten in place */
    return *path ? LTR_OK : ltr_fail(LTR_ENOMEM, "out of memory");
}

int store_open_table(ltr_store *s, const char *path, uint32_t flags, ltr_htable **t)
{
    return htable_open_in(path, store_table_flags(s) | flags, -1, s->files.fc, t);
}

/* The bound on open table files: by default the soft limit less a quarter of it, or less 64
 * when that is more, for logs, tables being written and the rest of the process (at least 16). */
static int open_cache(ltr_store *s)
{
    int64_t limit = s->o.max_open_files;
    if (limit == 0) {
        struct rlimit rl;
        rlim_t soft = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? rl.rlim_cur : 1024;
        int64_t n = soft == RLIM_INFINITY || soft > (1u << 30) ? (1 << 30) : (int64_t)soft;
        limit = n - (n / 4 > 64 ? n / 4 : 64);
        if (limit < 16)
            limit = 16;
    }
    if (limit < 0)
        return LTR_OK;
    s->files.fc = fcache_new((uint32_t)(limit > UINT32_MAX ? UINT32_MAX : limit));
    return s->files.fc ? LTR_OK : ltr_fail(LTR_ENOMEM, "out of memory opening %s", s->dir);
}

const char *cluster_dir(const ltr_store *s) { return s->meta_dir ? s->meta_dir : s->dir; }

/* direct_io on a file system that refuses O_DIRECT (tmpfs before Linux 6.6, say) fails the
 * open, before any table is read, rather than falling back to the page cache unasked. Tried on
 * a file the store has by now: a writer's lock file, a reader's CURRENT. */
static int check_direct(ltr_store *s)
{
    const char *name = s->o.read_only ? "CURRENT" : "LOCK";
    char *p = malloc(strlen(s->dir) + strlen(name) + 2);
    if (!p)
        return ltr_fail(LTR_ENOMEM, "out of memory");
    sprintf(p, "%s/%s", s->dir, name);
    int rc = io_check_direct(p);
    free(p);
    return rc;
}

int store_files_open(ltr_store *s)
{
    /* A reader holds LOCK_SH on the directory while it is open, taken before it reads the
     * manifest: the writer reuses the files of durable dropped tables only when it can take
     * LOCK_EX (no reader could have them open, and none can start meanwhile). */
    int opened = io_open_dir(&s->files.dir_fd, s->dir);
    if (opened != LTR_OK && s->o.read_only) /* unlocked, it could read what a writer unlinks */
        return ltr_last_errno() == ENOENT ? ltr_fail_errno(ENOENT, "no store at %s", s->dir)
                                          : opened;
    if (opened != LTR_OK)
        s->files.dir_fd = -1; /* a writer then never reuses or unlinks at once durable files */
    if (s->o.read_only && io_flock(s->files.dir_fd, LOCK_SH) != 0)
        return ltr_fail_errno(errno, "cannot lock the directory of %s for reading", s->dir);
    int rc = s->o.direct_io ? check_direct(s) : LTR_OK;
    return rc ? rc : open_cache(s);
}

void store_files_start_pool(ltr_store *s)
{
    /* no pool only costs speed: new tables then get new files */
    uint64_t files = POOL_BYTES / ((uint64_t)s->o.table_buckets * LTR_BUCKET_SIZE);
    s->files.pool = tpool_new(s->dir, (uint32_t)(files < 8 ? 8 : files > 4096 ? 4096 : files));
}

void store_files_close(ltr_store *s)
{
    fcache_unref(s->files.fc); /* tables a scan still holds keep it */
    if (s->files.pool) { /* tables still referenced elsewhere (a scan) unlink their file when freed */
        tpool_close(s->files.pool);
        tpool_unref(s->files.pool);
    }
    for (size_t i = 0; i < s->files.ngrave; i++) { /* a failed open: the next writer open removes them */
        free(s->files.grave[i].path);
        tfile_release(s->files.grave[i].tf);
    }
    free(s->files.grave);
    if (s->files.dir_fd >= 0)
        io_close(s->files.dir_fd); /* a reader's LOCK_SH goes with it */
}
