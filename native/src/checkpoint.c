/* checkpoint.c: the store's durable state (docs/design.md "Checkpoints").
 *
 * Flushes, compactions, cluster rebuilds and garbage collections change the state in memory
 * at once (store_install) and queue their manifest edit; the files they wrote are not fsynced
 * then. A checkpoint, at every flush() and close() and in the background (checkpoint_interval
 * seconds after the first queued edit, spaced by CKPT_SPACING times the previous checkpoint's
 * duration, or once CKPT_LOG_BYTES of log were written since the last), fsyncs the files
 * written since the last one, fsyncs their directories, and appends every queued edit as one
 * manifest record, fsynced: the durable state moves from one consistent state to a later one
 * in a single atomic step. Only then may what those edits dropped leave the disk: input tables,
 * replaced clusters, logs below the new floor.
 *
 * So a table that lives less than the time between checkpoints (most tables of the upper levels,
 * on a busy store) is never fsynced and, unlinked before the kernel writes it back, never reaches
 * the device; and no flush or compaction waits for a disk flush. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "io.h"
#include "store_int.h"

static char *pfile_path(const ltr_store *s, const pfile *f)
{
    return f->cluster ? store_file(cluster_dir(s), f->number, "bc")
                      : store_file(s->dir, f->number, "ht");
}

static int pfiles_push(pfiles *l, pfile f)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        pfile *v = realloc(l->v, cap * sizeof *v);
        if (!v)
            return ltr_fail(LTR_ENOMEM, "out of memory");
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = f;
    return LTR_OK;
}

/* Appends all of `from` to `to` (freeing `from`); on failure to grow, `to` keeps what fit. */
static int pfiles_move(pfiles *to, pfiles *from)
{
    int rc = LTR_OK;
    for (size_t i = 0; i < from->n; i++)
        if (rc || (rc = pfiles_push(to, from->v[i])))
            tfile_release(from->v[i].tf); /* left on disk: the next writer open removes it */
    free(from->v);
    *from = (pfiles){0};
    return rc;
}

static void pfiles_free(pfiles *l)
{
    for (size_t i = 0; i < l->n; i++)
        tfile_release(l->v[i].tf);
    free(l->v);
    *l = (pfiles){0};
}

/* ---- installing: in memory only ---- */

int store_install(ltr_store *s, const vedit_op *ops, size_t nops, medit *e)
{
    if (medit_failed(e))
        return ltr_fail(LTR_ENOMEM, "out of memory building a manifest edit");
    version *next;
    int rc = version_apply(s->current, ops, nops, &next);
    if (!rc && (rc = buf_append(&s->ckpt.pending, e->b.data, e->b.len)))
        version_unref(next);
    if (rc)
        return rc;
    if (!s->ckpt.pending_since)
        s->ckpt.pending_since = store_now();
    pthread_mutex_lock(&s->ver_mu);
    version *old = s->current;
    s->current = next;
    pthread_mutex_unlock(&s->ver_mu);
    version_unref(old);
    return LTR_OK;
}

void store_wrote(ltr_store *s, int cluster, uint64_t number)
{
    /* out of memory: the next checkpoint syncs the whole filesystem instead */
    if (pfiles_push(&s->ckpt.unsynced, (pfile){.number = number, .cluster = (uint8_t)cluster}))
        s->ckpt.unsynced_lost = 1;
}

void store_drop(ltr_store *s, int cluster, uint64_t number, tref *t)
{
    /* a table whose only reference is t may have its file reused (pool.h) */
    int reusable = t && !cluster && !t->reopened && s->files.pool && !t->reuse;
    /* Readers of older versions may still read t (and reopen its file): the file is unlinked
     * only once they are done (version.h, tfile). */
    pfile f = {.number = number, .cluster = (uint8_t)cluster,
               .tf = t && !cluster ? tfile_hold(t->f) : NULL};
    int now = 0, doomed = 0; /* doomed: recorded to go after the next checkpoint */
    pthread_mutex_lock(&s->state_mu);
    for (size_t i = 0; i < s->ckpt.unsynced.n; i++) {
        pfile *u = &s->ckpt.unsynced.v[i];
        if (u->number == number && u->cluster == cluster) {
            /* written and dropped between two checkpoints: no durable state ever named it */
            now = !u->named;
            *u = s->ckpt.unsynced.v[--s->ckpt.unsynced.n];
            break;
        }
    }
    f.pooled = (uint8_t)(reusable && !now);
    if (!now) /* (out of memory: it stays on disk; the next writer open removes it) */
        doomed = pfiles_push(&s->ckpt.doomed, f) == LTR_OK;
    pthread_mutex_unlock(&s->state_mu);
    if (!now && !doomed)
        tfile_release(f.tf);
    if (reusable && (now || doomed)) {
        tpool_ref(s->files.pool);
        t->durable = (uint8_t)!now; /* then its grave tells the pool when others are done */
        t->reuse = s->files.pool;         /* the pool hears when the versions that hold t are gone */
        if (now)
            tfile_release(f.tf); /* the pool takes the file once t is freed */
    } else if (now) {
        char *p = pfile_path(s, &f);
        if (p)
            store_remove_file(p, f.tf);
        else
            tfile_release(f.tf); /* (out of memory: the next writer open removes it) */
    }
}

/* ---- the manifest ---- */

/* The state a checkpoint makes durable, taken under state_mu. */
typedef struct durable_view {
    uint64_t next_file, floor, floor_off;
    uint64_t blob_floor; /* the value logs the logs above the floor may point into start here */
    uint64_t counters[C_COUNT];
    int snapshot;        /* 1: a new manifest holding snap (a failed append broke the old one's
                            tail); 2: the same because the old one grew (else an append will do) */
    uint64_t snap_number; /* the new manifest's file number */
    medit snap;
} durable_view;

#define ROTATE_MIN (1u << 20) /* a manifest is replaced once past this size (and 4 snapshots) */
static uint64_t rotate_min = ROTATE_MIN;

void ltr_test_manifest_rotation(uint64_t min_bytes)
{
    __atomic_store_n(&rotate_min, min_bytes ? min_bytes : ROTATE_MIN, __ATOMIC_RELAXED);
}

static double ckpt_spacing = CKPT_SPACING;
static uint64_t ckpt_log_bytes = CKPT_LOG_BYTES;

/* A checkpoint that someone waits for and that names this many files or more syncs their
 * filesystems instead, one syncfs each: an fsync per file costs a device cache flush per file,
 * and at the end of a load of thousands of files those flushes kept the device busy while it
 * wrote almost nothing (docs/benchmarks.md, "Measurements behind choices in the code"). syncfs also writes other dirty files of the
 * filesystem (the pool's dead files are clean or truncated by then) and cannot say which file
 * failed: after a failure every file is rewritten and synced on its own (sync_one). */
#define SYNCFS_MIN 1024
static int64_t syncfs_min = SYNCFS_MIN;

void ltr_test_syncfs_min(int64_t files)
{
    __atomic_store_n(&syncfs_min, files < 0 ? SYNCFS_MIN : files, __ATOMIC_RELAXED);
}

void ltr_test_checkpoint_policy(double spacing, int64_t log_bytes)
{
    double v = spacing < 0 ? CKPT_SPACING : spacing;
    __atomic_store(&ckpt_spacing, &v, __ATOMIC_RELAXED);
    __atomic_store_n(&ckpt_log_bytes, log_bytes < 0 ? CKPT_LOG_BYTES : (uint64_t)log_bytes,
                     __ATOMIC_RELAXED);
}

/* Whether the next manifest write must be a snapshot (ckpt.mu held). */
static int snapshot_due(const ltr_store *s)
{
    if (s->ckpt.mf_broken)
        return 1;
    uint64_t size = s->ckpt.mf.w.size;
    return size >= __atomic_load_n(&rotate_min, __ATOMIC_RELAXED) && size >= 4 * s->ckpt.mf.snapshot
               ? 2 : 0;
}

/* The snapshot is encoded here, not when it is written: holding the version until then would
 * keep every table dropped meanwhile alive (and open) across the checkpoint's fsyncs. */
static void view_take(ltr_store *s, durable_view *d)
{
    memset(d, 0, sizeof *d);
    d->floor = s->log_floor;
    d->floor_off = s->log_floor_off;
    d->blob_floor = s->blobs.floor;
    for (int i = 0; i < C_COUNT; i++)
        d->counters[i] = __atomic_load_n(&s->counters[i], __ATOMIC_RELAXED);
    if ((d->snapshot = snapshot_due(s))) {
        d->snap_number = s->next_file++;
        store_encode_snapshot(s->current, !s->o.levels, s->next_file, d->floor, d->floor_off,
                              d->counters, &d->snap);
    }
    d->next_file = s->next_file;
}

void store_encode_snapshot(const version *v, int grow, uint64_t next_file, uint64_t floor,
                           uint64_t floor_off, const uint64_t *counters, medit *e)
{
    if (grow)
        medit_value(e, OP_SET_DEPTH, v->depth);
    medit_value(e, OP_NEXT_FILE, next_file);
    medit_value(e, OP_LOG_FLOOR, floor);
    medit_value(e, OP_LOG_OFFSET, floor_off);
    medit_counters(e, counters);
    viter it = {0};
    for (const vnode *n; (n = viter_next(v, &it));) {
        for (uint32_t j = 0; j < n->n; j++)
            medit_table(e, 1, n->id, n->tables[j]->file);
        if (n->bc)
            medit_cluster(e, n->id, n->bc->file, n->sealed, n->skip);
    }
}

/* Starts a new manifest holding the snapshot of d (ckpt.mu held). */
static int rewrite_manifest(ltr_store *s, durable_view *d)
{
    manifest fresh;
    uint64_t written = 0;
    int rc = medit_failed(&d->snap) ? ltr_fail(LTR_ENOMEM, "out of memory")
                                    : manifest_create(&fresh, s->dir, d->snap_number, &s->o,
                                                      s->meta_dir != NULL, &d->snap, &written);
    store_count(s, C_WRITTEN_MANIFEST, written);
    if (rc)
        return rc;
    char name[40];
    snprintf(name, sizeof name, "MANIFEST-%08llu", (unsigned long long)s->ckpt.mf.number);
    char *old = malloc(strlen(s->dir) + sizeof name + 2);
    if (old) {
        sprintf(old, "%s/%s", s->dir, name);
        io_unlink(old);
        free(old);
    }
    manifest_close(&s->ckpt.mf);
    s->ckpt.mf = fresh;
    s->ckpt.mf_broken = 0;
    return LTR_OK;
}

/* Appends the queued edits as one record, or starts a new manifest when the old one's tail is
 * unknown (a failed append) or it has grown well past its snapshot. */
static int write_manifest(ltr_store *s, const ltr_buf *ops, durable_view *d)
{
    if (d->snapshot == 1)
        return rewrite_manifest(s, d);
    if (d->snapshot == 2 && rewrite_manifest(s, d) == LTR_OK)
        return LTR_OK;
    /* (a failed rotation leaves the current manifest in force: the edits are appended to it) */
    medit e = {0};
    if (ops->len)
        buf_append(&e.b, ops->data, ops->len);
    medit_value(&e, OP_NEXT_FILE, d->next_file);
    medit_counters(&e, d->counters);
    uint64_t written = 0;
    int rc = manifest_append(&s->ckpt.mf, &e, &written);
    medit_free(&e);
    store_count(s, C_WRITTEN_MANIFEST, written);
    if (rc) {
        s->ckpt.mf_broken = 1;
        return rc;
    }
    return LTR_OK;
}

/* ---- checkpoints ---- */

/* Syncs one file. One whose fsync failed before is first written again from what is in memory
 * (the page cache): after a failed writeback Linux may mark its pages clean, and a second fsync
 * would then report success for data never written. */
static int sync_one(const ltr_store *s, pfile *f)
{
    char *p = pfile_path(s, f);
    int rc = p ? LTR_OK : ltr_fail(LTR_ENOMEM, "out of memory");
    if (!rc && f->failed)
        rc = io_rewrite_path(p);
    if (!rc)
        rc = io_fsync_path(p);
    if (rc)
        f->failed = 1;
    free(p);
    return rc;
}

/* A checkpoint that someone waits for (flush(), close(), or the background one while a flush()
 * waits for it) syncs its files on several threads: a lone fsync waits for a device flush of its
 * own, while concurrent ones share flushes (the block layer merges them), and the checkpoint at
 * the end of a load names thousands of files. The background checkpoint otherwise syncs one file
 * at a time: finishing sooner would only start the next one sooner and sync more of the tables
 * that would have died unsynced (measured: 3.9 times the user bytes reached the device instead
 * of 3.1, no faster). */
#define SYNC_THREADS 16
#define SYNC_PARALLEL_MIN 32 /* fewer files left are synced by the caller alone */

typedef struct sync_job {
    const ltr_store *s;
    pfiles *files;
    size_t next;         /* the next file to take (atomic) */
    int failed;          /* some sync failed: take no more (atomic) */
    pthread_mutex_t mu;  /* guards err */
    ltr_error err;       /* the first failure */
} sync_job;

/* Syncs the next file; 0 once none is left (or one failed). */
static int sync_next(sync_job *j)
{
    if (__atomic_load_n(&j->failed, __ATOMIC_RELAXED))
        return 0;
    size_t i = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED);
    if (i >= j->files->n)
        return 0;
    int rc = sync_one(j->s, &j->files->v[i]);
    if (rc) {
        pthread_mutex_lock(&j->mu);
        if (!j->err.rc)
            ltr_error_keep(&j->err, rc);
        pthread_mutex_unlock(&j->mu);
        __atomic_store_n(&j->failed, 1, __ATOMIC_RELAXED);
    }
    return 1;
}

static void *sync_helper(void *arg)
{
    while (sync_next(arg))
        ;
    return NULL;
}

static int parallel_wanted(const ltr_store *s, const sync_job *j, int flags)
{
    size_t taken = __atomic_load_n(&j->next, __ATOMIC_RELAXED);
    return taken + SYNC_PARALLEL_MIN <= j->files->n &&
           (!(flags & CKPT_BACKGROUND) || __atomic_load_n(&s->ckpt.waiters, __ATOMIC_RELAXED));
}

static int syncfs_wanted(const ltr_store *s, const pfiles *files, int flags)
{
    if ((int64_t)files->n < __atomic_load_n(&syncfs_min, __ATOMIC_RELAXED) ||
        ((flags & CKPT_BACKGROUND) && !__atomic_load_n(&s->ckpt.waiters, __ATOMIC_RELAXED)))
        return 0;
    for (size_t i = 0; i < files->n; i++)
        if (files->v[i].failed) /* it must be written again first: one by one */
            return 0;
    return 1;
}

/* The filesystems of the store's files (the metadata directory's too when it holds some). */
static int sync_filesystems(const ltr_store *s, pfiles *files, int clusters)
{
    int rc = io_syncfs_dir(s->dir);
    if (!rc && clusters && s->meta_dir)
        rc = io_syncfs_dir(s->meta_dir);
    for (size_t i = 0; rc && i < files->n; i++)
        files->v[i].failed = 1; /* which one failed is unknown */
    return rc;
}

/* fsyncs each file, on several threads when wanted (above); 1 when a flush() came to wait for
 * a background checkpoint with enough files left for syncfs to take over (the caller's). */
static int sync_each(ltr_store *s, pfiles *files, int flags)
{
    sync_job j = {.s = s, .files = files};
    pthread_mutex_init(&j.mu, NULL);
    pthread_t t[SYNC_THREADS - 1];
    int helpers = 0, tried = 0, handover = 0;
    do {
        if (!tried && parallel_wanted(s, &j, flags)) {
            tried = 1; /* (without threads the caller syncs them all) */
            if ((flags & CKPT_BACKGROUND) && syncfs_wanted(s, files, flags)) {
                handover = 1;
                break;
            }
            while (helpers < SYNC_THREADS - 1 &&
                   pthread_create(&t[helpers], NULL, sync_helper, &j) == 0)
                helpers++;
        }
    } while (sync_next(&j));
    for (int i = 0; i < helpers; i++)
        pthread_join(t[i], NULL);
    pthread_mutex_destroy(&j.mu);
    return j.err.rc ? ltr_error_raise(&j.err) : handover;
}

static int sync_dir(const char *dir, const char *ext)
{
    char *probe = store_file(dir, 0, ext); /* a path in the directory, for io_fsync_dir */
    int rc = probe ? io_fsync_dir(probe) : ltr_fail(LTR_ENOMEM, "out of memory");
    free(probe);
    return rc;
}

/* Makes every file durable, then the directories that name them: the store's for tables, and
 * for clusters too when there is no metadata directory (a checkpoint may name only clusters:
 * a cluster rebuilt after its node's tables were made durable). */
static int sync_files(ltr_store *s, pfiles *files, int flags)
{
    int tables = 0, clusters = 0;
    for (size_t i = 0; i < files->n; i++) {
        tables |= !files->v[i].cluster;
        clusters |= files->v[i].cluster;
    }
    int rc = syncfs_wanted(s, files, flags) ? 1 : sync_each(s, files, flags);
    if (rc == 1)
        rc = sync_filesystems(s, files, clusters);
    if (!rc && (tables || (clusters && !s->meta_dir)))
        rc = sync_dir(s->dir, "ht");
    if (!rc && clusters && s->meta_dir)
        rc = sync_dir(s->meta_dir, "bc");
    return rc;
}

static void bury_all(ltr_store *s, pfiles *l)
{
    for (size_t i = 0; i < l->n; i++) {
        store_bury(s, pfile_path(s, &l->v[i]), l->v[i].pooled ? l->v[i].number : 0, l->v[i].tf);
        l->v[i].tf = NULL; /* the grave has it */
    }
}

static int checkpoint(ltr_store *s, int flags);

int store_checkpoint(ltr_store *s, int flags)
{
    int waiter = !(flags & CKPT_BACKGROUND);
    if (waiter) /* a background checkpoint under way speeds up for us */
        __atomic_fetch_add(&s->ckpt.waiters, 1, __ATOMIC_RELAXED);
    pthread_mutex_lock(&s->ckpt.mu);
    int rc = checkpoint(s, flags);
    pthread_mutex_unlock(&s->ckpt.mu);
    if (waiter)
        __atomic_fetch_sub(&s->ckpt.waiters, 1, __ATOMIC_RELAXED);
    return rc;
}

/* What one checkpoint makes durable, taken from the store at its start. */
typedef struct ckpt_work {
    ltr_buf ops;          /* manifest edits */
    pfiles files, doomed; /* tables to sync first; dropped tables to bury after */
    int lost;             /* a table file was not recorded: sync the filesystems */
    durable_view d;
} ckpt_work;

/* Takes the pending work (state_mu held); 0 when there is none and none is forced. */
static int take_work(ltr_store *s, int flags, ckpt_work *w)
{
    if (!(flags & CKPT_FORCE) && !s->ckpt.pending.len && !s->ckpt.unsynced.n && !s->ckpt.doomed.n &&
        !s->ckpt.mf_broken)
        return 0;
    w->ops = s->ckpt.pending;
    w->files = s->ckpt.unsynced;
    w->doomed = s->ckpt.doomed;
    s->ckpt.pending = (ltr_buf){0};
    s->ckpt.unsynced = s->ckpt.doomed = (pfiles){0};
    s->ckpt.pending_since = 0;
    w->lost = s->ckpt.unsynced_lost;
    s->ckpt.unsynced_lost = 0;
    view_take(s, &w->d);
    s->ckpt.log_mark = w->d.counters[C_WRITTEN_LOG];
    return 1;
}

/* The work is durable: the floor moves up, and the dropped tables go to their graves (the
 * checkpoint thread reaps them when due). */
static void work_done(ltr_store *s, ckpt_work *w)
{
    pthread_mutex_lock(&s->state_mu);
    s->ckpt.durable_floor = w->d.floor;
    s->blobs.durable_floor = w->d.blob_floor;
    pthread_mutex_unlock(&s->state_mu);
    bury_all(s, &w->doomed);
    pfiles_free(&w->files);
    pfiles_free(&w->doomed);
    ltr_buf_free(&w->ops);
}

/* The work failed: everything goes back in front of what came meanwhile, and the next
 * checkpoint retries. A file the failed append may have named (tried) stays on disk if it is
 * dropped. */
static void put_back(ltr_store *s, ckpt_work *w, int tried)
{
    pthread_mutex_lock(&s->state_mu);
    for (size_t i = 0; tried && i < w->files.n; i++)
        w->files.v[i].named = 1;
    if (buf_append(&w->ops, s->ckpt.pending.data, s->ckpt.pending.len) == LTR_OK) {
        ltr_buf_free(&s->ckpt.pending);
        s->ckpt.pending = w->ops;
    } else {
        ltr_buf_free(&w->ops);
        s->ckpt.mf_broken = 1; /* the snapshot rewrite then records the whole state */
    }
    if (pfiles_move(&w->files, &s->ckpt.unsynced))
        s->ckpt.unsynced_lost = 1;
    s->ckpt.unsynced = w->files;
    pfiles_move(&w->doomed, &s->ckpt.doomed); /* (out of memory: the next open removes the rest) */
    s->ckpt.doomed = w->doomed;
    s->ckpt.unsynced_lost |= w->lost;
    s->ckpt.pending_since = store_now();
    pthread_mutex_unlock(&s->state_mu);
}

/* Syncs the tables, then the log, then appends the edits to the manifest. *tried: the append
 * was attempted. */
static int make_durable(ltr_store *s, ckpt_work *w, int flags, int *tried)
{
    /* a file we failed to record must still be synced: fall back to syncing the filesystems */
    int rc = w->lost ? sync_filesystems(s, &w->files, 1) : LTR_OK;
    if (!rc)
        rc = sync_files(s, &w->files, flags);
    if (!rc) /* the tables' pointers lead into the value logs (the log's too: it syncs them) */
        rc = blob_sync(s);
    /* The tables hold the items of records that no sync may have covered yet (a log synced
     * only by writers that asked). Once the manifest names the tables, recovery replays the
     * log from the floor over them; a record lost from the log while later ones sit in those
     * tables would break the prefix (replayed older records shadow newer table items, and a
     * batch split across memtables would be half there). So the log is made durable first. */
    if (!rc)
        rc = store_sync_log(s);
    *tried = !rc;
    return rc ? rc : write_manifest(s, &w->ops, &w->d);
}

/* ckpt.mu held */
static int checkpoint(ltr_store *s, int flags)
{
    ckpt_work w = {0};
    pthread_mutex_lock(&s->state_mu);
    int some = take_work(s, flags, &w);
    pthread_mutex_unlock(&s->state_mu);
    if (!some)
        return LTR_OK;
    double started = store_now();
    int tried = 0;
    int rc = make_durable(s, &w, flags, &tried);
    if (!rc)
        work_done(s, &w);
    else
        put_back(s, &w, tried);
    medit_free(&w.d.snap);
    if (!rc) {
        store_log_release_below(s, w.d.floor);
        blob_collect(s);
    }
    double ended = store_now();
    pthread_mutex_lock(&s->state_mu);
    double spacing;
    __atomic_load(&ckpt_spacing, &spacing, __ATOMIC_RELAXED);
    s->ckpt.next = ended + spacing * (ended - started);
    s->ckpt.count++;
    s->ckpt.seconds += ended - started;
    pthread_mutex_unlock(&s->state_mu);
    return rc;
}

int store_collect_values(ltr_store *s)
{
    if (blob_removal_pinned(s)) /* (asked again until the scans are done) */
        return 1;
    pthread_mutex_lock(&s->ckpt.mu);
    int left = blob_collect(s);
    pthread_mutex_unlock(&s->ckpt.mu);
    return left;
}

int store_checkpoint_due(const ltr_store *s)
{
    if (!s->ckpt.pending_since)
        return 0;
    uint64_t log = __atomic_load_n(&s->counters[C_WRITTEN_LOG], __ATOMIC_RELAXED);
    if (log - s->ckpt.log_mark >= __atomic_load_n(&ckpt_log_bytes, __ATOMIC_RELAXED))
        return 1;
    /* a writer waits until the logs below the floor in memory leave the disk */
    if (__atomic_load_n(&s->log.waiters, __ATOMIC_RELAXED) && s->log_floor > s->ckpt.durable_floor)
        return 1;
    double now = store_now();
    return now - s->ckpt.pending_since >= s->o.checkpoint_interval && now >= s->ckpt.next;
}


void store_ckpt_free(ltr_store *s)
{
    manifest_close(&s->ckpt.mf);
    ltr_buf_free(&s->ckpt.pending);
    pfiles_free(&s->ckpt.unsynced);
    pfiles_free(&s->ckpt.doomed);
}
