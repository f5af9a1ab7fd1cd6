/* store_open.c: a store's life: ltr_store_open (directories, lock, recovery, then the
 * recovered writes settled in tables and the background threads started), ltr_store_flush and
 * ltr_store_close. Depends on every other file of the store but store_read.c and the whole-store
 * reads. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io.h"
#include "store_int.h"

static int take_lock(ltr_store *s)
{
    char *p = malloc(strlen(s->dir) + 8);
    if (!p)
        return ltr_fail(LTR_ENOMEM, "out of memory");
    sprintf(p, "%s/LOCK", s->dir);
    int rc = io_open(&s->lock_fd, p, O_RDWR | O_CREAT, 0644, "lock file");
    if (!rc) {
        /* flock, not fcntl: its lock belongs to this open file, so a second open of the store
         * in the same process conflicts too, and closing one never releases another's lock. */
        if (io_flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0)
            rc = (errno == EWOULDBLOCK || errno == EACCES)
                     ? ltr_fail(LTR_ELOCKED, "store %s is already open for writing (its lock %s is held)",
                                s->dir, p)
                     : ltr_fail_errno(errno, "cannot lock %s", p);
    }
    free(p);
    return rc;
}

/* Creates dir unless it exists, and then syncs its parent: a store's first synced writes must
 * not vanish with its directory in a power cut. */
static int make_dir(const char *dir, const char *what)
{
    if (io_mkdir(dir, 0755) != 0)
        return errno == EEXIST ? LTR_OK
                               : ltr_fail_errno(errno, "cannot create the %s directory %s", what, dir);
    return io_fsync_dir(dir);
}

/* Creates the directories and takes the lock (a writer), then opens the store's files. */
static int open_dirs(ltr_store *s)
{
    int rc = s->o.read_only ? LTR_OK : make_dir(s->dir, "store");
    if (!rc && s->meta_dir && !s->o.read_only)
        rc = make_dir(s->meta_dir, "metadata");
    if (!rc && !s->o.read_only)
        rc = take_lock(s);
    return rc ? rc : store_files_open(s);
}

/* The state of the manifest, then the logs above its floor replayed into a memtable. */
static int recover(ltr_store *s)
{
    loglist logs = {0};
    int rc = recovery_take_logs(s, &logs, s->o.read_only); /* a reader: before the manifest */
    if (!rc) /* before the tables, which hold the value logs they list */
        rc = blob_open(s);
    if (!rc)
        rc = recovery_load_state(s);
    if (!rc)
        rc = blob_open_counter(s);
    /* logs below the durable floor are gone, or go with the orphans */
    s->ckpt.durable_floor = s->log_floor;
    if (!rc && !s->o.read_only) /* the options are the store's now */
        store_files_start_pool(s);
    if (!rc) /* the options are final: the working memory's shape follows */
        rc = store_budget_plan(&s->o, &s->mem.budget);
    s->blobs.replaying = 1; /* its memtables may point into any value log */
    if (!rc)
        rc = memtable_new(s, s->log_floor, s->log_floor_off, &s->mem.active);
    if (!rc)
        rc = recovery_replay_logs(s, &logs);
    s->blobs.replaying = 0;
    for (size_t i = 0; !rc && !s->o.read_only && i < logs.n; i++)
        if (logs.files[i] >= s->log_floor) /* those below are orphans, removed as such */
            store_log_recovered(s, logs.files[i]);
    recovery_free_logs(&logs);
    return rc;
}

/* A writer puts the recovered writes in tables at once and starts a new log above them, so
 * that every old log can go; the checkpoint makes that durable. */
static int settle_recovered(ltr_store *s)
{
    int rc = store_flush_all_now(s);
    if (!rc && s->o.use_log) {
        rc = store_log_open_new(s);
        s->mem.active->min_log = s->log.file;
        s->mem.active->min_off = s->log.base;
    }
    /* the replayed memtables are in tables: the new one points only into new value logs */
    s->mem.active->blob_first = s->next_file;
    /* Those tables point into value-log records a crashed process may have left in the page
     * cache only: durable before the checkpoint names the tables (and releases the logs). */
    if (!rc)
        rc = blob_sync_all(s);
    if (!rc) {
        pthread_mutex_lock(&s->state_mu);
        medit e = {0};
        s->log_floor = s->o.use_log ? s->log.file : s->next_file;
        s->log_floor_off = s->o.use_log ? s->log.base : 0;
        medit_value(&e, OP_LOG_FLOOR, s->log_floor);
        medit_value(&e, OP_LOG_OFFSET, s->log_floor_off);
        s->blobs.floor = s->mem.active->blob_first;
        rc = store_install(s, NULL, 0, &e);
        medit_free(&e);
        pthread_mutex_unlock(&s->state_mu);
    }
    if (!rc)
        rc = store_checkpoint(s, CKPT_FORCE);
    if (!rc) {
        recovery_remove_orphans(s);
        lastlevel_note_all(s); /* work a crash interrupted: checked again */
    }
    return rc;
}

static int start(ltr_store *s)
{
    if (s->o.memtable_bytes == 0)
        s->o.memtable_bytes = store_table_capacity(&s->o);
    int rc = open_dirs(s);
    if (!rc)
        rc = recover(s);
    if (rc || s->o.read_only)
        return rc;
    rc = settle_recovered(s);
    return rc ? rc : store_bg_start(s);
}

static void store_free(ltr_store *s)
{
    taskpool_free(s->batch_pool); /* no batch runs any more */
    if (s->current)
        version_unref(s->current);
    store_files_close(s);
    memtable_free_all(s);
    blob_close(s); /* (after the tables: the set lives on in those that scans still hold) */
    store_log_close(s);
    store_ckpt_free(s);
    free(s->llq.nodes);
    if (s->lock_fd >= 0)
        io_close(s->lock_fd); /* releases the lock */
    pthread_mutex_destroy(&s->write_mu);
    pthread_cond_destroy(&s->write_cv);
    pthread_mutex_destroy(&s->log.sync_mu);
    pthread_cond_destroy(&s->log.sync_cv);
    pthread_rwlock_destroy(&s->mem.lock);
    pthread_mutex_destroy(&s->state_mu);
    pthread_mutex_destroy(&s->ver_mu);
    pthread_mutex_destroy(&s->ckpt.mu);
    pthread_cond_destroy(&s->state_cv);
    free(s->dir);
    free(s->meta_dir);
    free(s);
}

static int has_current(const char *dir)
{
    char *p = malloc(strlen(dir) + 9);
    if (!p)
        return 0;
    sprintf(p, "%s/CURRENT", dir);
    int yes = io_exists(p);
    free(p);
    return yes;
}

static ltr_store *store_new(const char *path, const ltr_store_opts *o)
{
    ltr_store *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->o = *o;
    s->lock_fd = -1;
    s->files.dir_fd = -1;
    s->bg.compacting[0] = s->bg.compacting[1] = s->bg.ll_node[0] = s->bg.ll_node[1] = NO_NODE;
    s->ckpt.mf.w.fd = -1;
    s->log.wal.fd = -1;
    s->dir = strdup(path);
    s->meta_dir = o->metadata_path ? strdup(o->metadata_path) : NULL;
    s->o.metadata_path = NULL;
    s->current = version_empty(o->levels); /* a growing store's depth: set by recovery */
    pthread_mutex_init(&s->write_mu, NULL);
    pthread_cond_init(&s->write_cv, NULL);
    pthread_mutex_init(&s->log.sync_mu, NULL);
    pthread_cond_init(&s->log.sync_cv, NULL);
    pthread_rwlock_init(&s->mem.lock, NULL);
    pthread_mutex_init(&s->state_mu, NULL);
    pthread_mutex_init(&s->ver_mu, NULL);
    pthread_mutex_init(&s->ckpt.mu, NULL);
    pthread_cond_init(&s->state_cv, NULL);
    walset_init(&s->log.set);
    /* (NULL, out of memory: batches then run on the caller's thread) */
    s->batch_pool = taskpool_new(LTR_BATCH_READ_DEPTH);
    if (!s->dir || !s->current || (o->metadata_path && !s->meta_dir)) {
        store_free(s);
        return NULL;
    }
    return s;
}

int ltr_store_open(const char *path, const ltr_store_opts *o, ltr_store **out)
{
    *out = NULL;
    for (int attempt = 0;; attempt++) {
        ltr_store *s = store_new(path, o);
        if (!s)
            return ltr_fail(LTR_ENOMEM, "out of memory");
        int rc = start(s);
        if (!rc) {
            s->o.metadata_path = s->meta_dir;
            *out = s;
            return LTR_OK;
        }
        store_free(s);
        /* A reader racing a writer (a file the manifest named already compacted away, or the
         * manifest moved on meanwhile) starts again from the newer manifest. */
        if (!o->read_only || ltr_last_errno() != ENOENT || attempt == 100 || !has_current(path))
            return rc;
        usleep(200u * (unsigned)(attempt % 10 + 1));
    }
}

int ltr_store_flush(ltr_store *s)
{
    if (s->o.read_only)
        return LTR_OK;
    store_bg_retry(s); /* an explicit flush retries failed background work */
    pthread_mutex_lock(&s->write_mu);
    int rc = store_rotate(s);
    pthread_mutex_unlock(&s->write_mu);
    if (!rc)
        rc = store_bg_wait_idle(s);
    return rc ? rc : store_checkpoint(s, 0);
}

int ltr_store_close(ltr_store *s)
{
    int rc = LTR_OK;
    if (!s->o.read_only) {
        if (!s->o.use_log)
            rc = ltr_store_flush(s); /* bulk mode: the memtable is durable only in a table */
        store_bg_stop(s);
        int r = store_sync_log(s); /* first: whatever the checkpoint does */
        rc = rc ? rc : r;
        /* what the background work did, and the counters of the writes since the last edit */
        r = store_checkpoint(s, CKPT_FORCE);
        rc = rc ? rc : r;
        store_reap(s, 1);
        store_log_remove_released(s);
    }
    store_free(s);
    return rc;
}
