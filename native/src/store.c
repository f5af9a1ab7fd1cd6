/* store.c: opening, recovering and closing a store; the write path (log, memtables, group
 * commit); the background worker that flushes memtables and runs compactions (docs/design.md). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bucket.h"
#include "coding.h"
#include "io.h"
#include "store_int.h"

/* The error of failed background work, for the caller to see (state_mu or write_mu held). */
int store_bg_error(const ltr_store *s)
{
    return ltr_fail_as(s->bg_error, s->bg_errno, "%s", s->bg_message);
}

/* ---- obsolete files ---- */

#define GRACE_SECONDS 1.0

void store_remove_file(char *path, tfile *tf)
{
    if (tf) {
        tfile_doom(tf, path);
    } else {
        unlink(path);
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
    if (s->ngrave == s->grave_cap) {
        size_t cap = s->grave_cap ? 2 * s->grave_cap : 64;
        struct grave *g = realloc(s->grave, cap * sizeof *g);
        if (g) {
            s->grave = g;
            s->grave_cap = cap;
        }
    }
    if (s->ngrave < s->grave_cap) {
        s->grave[s->ngrave++] = (struct grave){path, store_now() + GRACE_SECONDS, pooled, tf};
        path = NULL;
    }
    pthread_mutex_unlock(&s->state_mu);
    if (path) { /* no memory to remember it: unlink at once (once its readers are done) */
        store_remove_file(path, tf);
        if (pooled)
            tpool_event(s->pool, pooled, TP_GONE);
    }
}

/* Whether no read-only open holds the store: then, until the lock is let go, none can start
 * (they take LOCK_SH on the directory before they read the manifest). */
static int no_readers(ltr_store *s)
{
    return s->dir_fd >= 0 && flock(s->dir_fd, LOCK_EX | LOCK_NB) == 0;
}

/* Hands the tables among the buried files to the pool at once when no reader process holds the
 * store (none can have them open: their drop is durable, so a reader that starts later does
 * not know them), and unlinks the files whose grace period is over (all of them when `all`);
 * state_mu not held (an unlink may wait for the device). */
static void reap(ltr_store *s, int all)
{
    pthread_mutex_lock(&s->state_mu);
    int pooled = 0;
    for (size_t i = 0; i < s->ngrave && !pooled; i++)
        pooled = s->grave[i].pooled != 0;
    pthread_mutex_unlock(&s->state_mu);
    int reuse = pooled && no_readers(s); /* holds LOCK_EX until the end: no reader starts */
    pthread_mutex_lock(&s->state_mu);
    double t = store_now();
    size_t k = 0, ndue = 0;
    struct grave *due = s->ngrave ? malloc(s->ngrave * sizeof *due) : NULL;
    for (size_t i = 0; i < s->ngrave; i++) {
        if (due && (all || s->grave[i].at <= t || (reuse && s->grave[i].pooled)))
            due[ndue++] = s->grave[i];
        else
            s->grave[k++] = s->grave[i];
    }
    s->ngrave = k;
    pthread_mutex_unlock(&s->state_mu);
    for (size_t i = 0; i < ndue; i++) {
        if (due[i].pooled && reuse) {
            tpool_event(s->pool, due[i].pooled, TP_CLEARED);
            tfile_release(due[i].tf); /* the pool waits for the readers itself */
            free(due[i].path);
        } else {
            store_remove_file(due[i].path, due[i].tf);
            if (due[i].pooled)
                tpool_event(s->pool, due[i].pooled, TP_GONE);
        }
    }
    if (reuse)
        flock(s->dir_fd, LOCK_UN);
    free(due);
}

/* ---- options ---- */

void ltr_store_opts_default(ltr_store_opts *o)
{
    memset(o, 0, sizeof *o);
    o->table_buckets = LTR_DEFAULT_BUCKETS;
    o->fill = LTR_DEFAULT_FILL;
    o->levels = LTR_DEFAULT_LEVELS;
    o->node_tables = LTR_DEFAULT_NODE_TABLES;
    o->bloom_bits_per_key = LTR_DEFAULT_BLOOM_BITS;
    o->gc_threshold = LTR_DEFAULT_GC_THRESHOLD;
    o->create = 1;
    o->use_log = 1;
    o->checkpoint_interval = CKPT_SECONDS;
}

static uint64_t table_capacity(const ltr_store_opts *o)
{
    return (uint64_t)(o->fill * o->table_buckets * LTR_BUCKET_PAYLOAD);
}

int store_opts_check(const ltr_store_opts *o)
{
    if (o->table_buckets < 1 || o->table_buckets > LTR_MAX_BUCKETS)
        return ltr_fail(LTR_EINVAL, "table_buckets must be 1..%d, got %u", LTR_MAX_BUCKETS,
                        o->table_buckets);
    if (!(o->fill > 0.0 && o->fill <= 1.0))
        return ltr_fail(LTR_EINVAL, "fill must be in (0, 1], got %g", o->fill);
    if (o->levels < 1 || o->levels > LTR_MAX_LEVELS)
        return ltr_fail(LTR_EINVAL, "levels must be 1..%d, got %u", LTR_MAX_LEVELS, o->levels);
    if (o->node_tables < 2 || o->node_tables > 1024)
        return ltr_fail(LTR_EINVAL, "node_tables must be 2..1024, got %u", o->node_tables);
    if (o->bloom_bits_per_key > 64)
        return ltr_fail(LTR_EINVAL, "bloom_bits_per_key must be 0..64, got %u",
                        o->bloom_bits_per_key);
    if (o->memtable_bytes < 1 || o->memtable_bytes > table_capacity(o))
        return ltr_fail(LTR_EINVAL, "memtable_bytes must be 1..%llu (one table's capacity), got %llu",
                        (unsigned long long)table_capacity(o), (unsigned long long)o->memtable_bytes);
    if (!(o->checkpoint_interval >= 0.0 && o->checkpoint_interval <= 3600.0))
        return ltr_fail(LTR_EINVAL, "checkpoint_interval must be 0..3600 seconds, got %g",
                        o->checkpoint_interval);
    if (o->max_open_files < -1)
        return ltr_fail(LTR_EINVAL, "max_open_files must be -1 (no bound), 0 (from the limit on "
                        "open files) or at least 1, got %lld", (long long)o->max_open_files);
    if (!(o->gc_threshold > 0.0 && o->gc_threshold < 1.0))
        return ltr_fail(LTR_EINVAL, "gc_threshold must be in (0, 1), got %g", o->gc_threshold);
    return LTR_OK;
}

/* Options the caller chose must equal the recorded ones; the rest come from the store. */
int store_opts_merge(ltr_store_opts *o, const ltr_store_opts *rec)
{
#define SAME(bit, field, fmt)                                                                     \
    do {                                                                                          \
        if ((o->given & (bit)) && o->field != rec->field)                                         \
            return ltr_fail(LTR_EINVAL, "option " #field "=" fmt " differs from the store's " fmt, \
                            o->field, rec->field);                                                \
        o->field = rec->field;                                                                    \
    } while (0)
    SAME(LTR_OPT_TABLE_BUCKETS, table_buckets, "%u");
    SAME(LTR_OPT_FILL, fill, "%g");
    SAME(LTR_OPT_LEVELS, levels, "%u");
    SAME(LTR_OPT_NODE_TABLES, node_tables, "%u");
    SAME(LTR_OPT_BLOOM_BITS, bloom_bits_per_key, "%u");
    SAME(LTR_OPT_MEMTABLE_BYTES, memtable_bytes, "%lu");
    SAME(LTR_OPT_HASH_SEED, hash_seed, "%u");
    SAME(LTR_OPT_GC_THRESHOLD, gc_threshold, "%g");
#undef SAME
    return store_opts_check(o);
}

void ltr_store_options(const ltr_store *s, ltr_store_opts *out) { *out = s->o; }

/* ---- files ---- */

char *store_file(const char *dir, uint64_t number, const char *ext)
{
    size_t n = strlen(dir) + 32;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%08llu.%s", dir, (unsigned long long)number, ext);
    return p;
}

void store_count(ltr_store *s, int counter, uint64_t n)
{
    __atomic_fetch_add(&s->counters[counter], n, __ATOMIC_RELAXED);
}

static int take_lock(ltr_store *s)
{
    char *p = malloc(strlen(s->dir) + 8);
    if (!p)
        return ltr_fail(LTR_ENOMEM, "out of memory");
    sprintf(p, "%s/LOCK", s->dir);
    s->lock_fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    int rc = LTR_OK;
    if (s->lock_fd < 0)
        rc = ltr_fail_errno(errno, "cannot open the lock file %s", p);
    else {
        /* flock, not fcntl: its lock belongs to this open file, so a second open of the store
         * in the same process conflicts too, and closing one never releases another's lock. */
        if (flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0)
            rc = (errno == EWOULDBLOCK || errno == EACCES)
                     ? ltr_fail(LTR_ELOCKED, "store %s is already open for writing (its lock %s is held)",
                                s->dir, p)
                     : ltr_fail_errno(errno, "cannot lock %s", p);
    }
    free(p);
    return rc;
}

int store_new_table(ltr_store *s, uint64_t *file, char **path)
{
    pthread_mutex_lock(&s->state_mu);
    *file = s->next_file++;
    pthread_mutex_unlock(&s->state_mu);
    *path = store_file(s->dir, *file, "ht");
    if (*path && s->pool)
        tpool_take(s->pool, *path); /* a dead table's file, overwritten in place */
    return *path ? LTR_OK : ltr_fail(LTR_ENOMEM, "out of memory");
}

/* ---- memtables ---- */

void store_table_opts(const ltr_store *s, ltr_table_opts *to)
{
    ltr_table_opts_default(to);
    to->buckets = s->o.table_buckets;
    to->fill = s->o.fill;
    to->bloom_bits_per_key = s->o.bloom_bits_per_key;
    to->hash_seed = s->o.hash_seed;
    to->sync = IO_IN_PLACE; /* the next checkpoint fsyncs the file and its directory */
}

static int memtable_new(ltr_store *s, uint64_t min_log, uint64_t min_off, memtable **out)
{
    ltr_table_opts to;
    store_table_opts(s, &to);
    memtable *m = calloc(1, sizeof *m);
    if (!m)
        return ltr_fail(LTR_ENOMEM, "out of memory");
    int rc = ltr_hbuild_new(&to, &m->b);
    /* sized for a full memtable of ~100-byte items at once (growing by doubling copies it) */
    if (!rc && (rc = hbuild_reserve(m->b, (size_t)(s->o.memtable_bytes / 100 + 64),
                                    (size_t)(s->o.memtable_bytes + s->o.memtable_bytes / 8))))
        ltr_hbuild_free(m->b);
    if (rc) {
        free(m);
        return rc;
    }
    m->min_log = min_log;
    m->min_off = min_off;
    m->log_mark = s->logged;
    *out = m;
    return LTR_OK;
}

static void memtable_free(memtable *m)
{
    if (m) {
        ltr_hbuild_free(m->b);
        free(m);
    }
}

/* ---- the log ---- */

/* fsyncs the current log; write_mu held (or no other thread). After a failed fsync the log is
 * first written again from the page cache: Linux may have marked the pages whose writeback
 * failed clean, and a second fsync would report success without writing them. */
static int wal_sync_locked(ltr_store *s, int fd)
{
    int rc = __atomic_load_n(&s->wal_resync, __ATOMIC_ACQUIRE) ? io_rewrite_path(s->wal.path)
                                                              : LTR_OK;
    if (!rc)
        rc = io_fsync_fd(fd, s->wal.path);
    __atomic_store_n(&s->wal_resync, rc != 0, __ATOMIC_RELEASE);
    return rc;
}

static int open_new_log(ltr_store *s)
{
    /* Everything in the old log reaches the disk before the new log's name does: a crash then
     * keeps a prefix of the writes, and only the newest log can end in a torn record (which
     * recovery cuts off; a damaged log with a newer one after it is corruption). */
    int rc = s->wal_file ? wal_sync_locked(s, s->wal.fd) : LTR_OK;
    if (rc)
        return rc;
    pthread_mutex_lock(&s->state_mu);
    uint64_t file = s->next_file++;
    pthread_mutex_unlock(&s->state_mu);
    char *p = store_file(s->dir, file, "wal");
    if (!p)
        return ltr_fail(LTR_ENOMEM, "out of memory");
    unlink(p);
    logw w;
    rc = logw_open(&w, p, store_log_base());
    if (!rc)
        rc = io_fsync_dir(p); /* the new log's name must survive a crash */
    free(p);
    if (rc) {
        logw_close(&w);
        return rc;
    }
    walset_add(&s->logs, file, 0);
    if (s->wal_file) {
        walset_settle(&s->logs, s->wal_file, s->wal.size - s->wal_base);
        logw_close(&s->wal);
    }
    s->wal = w;
    s->wal_file = file;
    s->wal_base = w.size;
    s->wal_hinted = w.size;
    /* everything logged so far is durable: the old log whole, the new one holds nothing yet */
    pthread_mutex_lock(&s->sync_mu);
    s->synced_file = file;
    s->synced_upto = w.size;
    pthread_cond_broadcast(&s->sync_cv);
    pthread_mutex_unlock(&s->sync_mu);
    return LTR_OK;
}

/* Makes the log durable up to byte `end` of log file `file` (group commit: one fsync covers
 * every writer waiting at that moment). */
static int log_sync(ltr_store *s, uint64_t file, uint64_t end)
{
    int rc = LTR_OK;
    pthread_mutex_lock(&s->sync_mu);
    while (!rc && (s->synced_file < file || (s->synced_file == file && s->synced_upto < end))) {
        if (s->syncing) {
            pthread_cond_wait(&s->sync_cv, &s->sync_mu);
            continue;
        }
        s->syncing = 1;
        pthread_mutex_unlock(&s->sync_mu);
        pthread_mutex_lock(&s->write_mu);
        uint64_t f = s->wal_file, upto = s->wal.size;
        int fd = -1;
        if (__atomic_load_n(&s->wal_resync, __ATOMIC_ACQUIRE)) {
            rc = wal_sync_locked(s, s->wal.fd); /* rarely: after a failure, writers wait */
        } else {
            fd = dup(s->wal.fd); /* the log may be rotated and closed while we sync */
            rc = fd < 0 ? ltr_fail_errno(errno, "cannot sync the log") : LTR_OK;
        }
        pthread_mutex_unlock(&s->write_mu);
        if (fd >= 0) {
            rc = io_fsync_fd(fd, "the log");
            if (rc) /* the next sync writes the log again first */
                __atomic_store_n(&s->wal_resync, 1, __ATOMIC_RELEASE);
            close(fd);
        }
        pthread_mutex_lock(&s->sync_mu);
        s->syncing = 0;
        if (!rc && (f > s->synced_file || (f == s->synced_file && upto > s->synced_upto))) {
            s->synced_file = f;
            s->synced_upto = upto;
        }
        pthread_cond_broadcast(&s->sync_cv);
    }
    pthread_mutex_unlock(&s->sync_mu);
    return rc;
}

int store_sync_log(ltr_store *s)
{
    if (!s->o.use_log || s->o.read_only)
        return LTR_OK;
    pthread_mutex_lock(&s->write_mu);
    uint64_t file = s->wal_file, end = s->wal.size;
    pthread_mutex_unlock(&s->write_mu);
    return file ? log_sync(s, file, end) : LTR_OK;
}

#define LOG_PIECE (256u << 10) /* log payload encoded and written at a time (logfile.h) */

/* Writes the pending piece of a record being logged. */
static int log_piece(ltr_store *s)
{
    int rc = s->enc.len ? logw_part(&s->wal, s->enc.data, s->enc.len) : LTR_OK;
    s->enc.len = 0;
    return rc;
}

/* Logs an item too large for a piece straight from the caller's buffers. */
static int log_large_item(ltr_store *s, const uint8_t *key, uint32_t klen, const uint8_t *val,
                          uint32_t vlen, int del)
{
    uint8_t h[ITEM_HEADER_MAX];
    size_t n = item_header(h, klen, vlen, del);
    int rc = log_piece(s);
    if (!rc)
        rc = logw_part(&s->wal, h, n);
    if (!rc && klen)
        rc = logw_part(&s->wal, key, klen);
    if (!rc && !del && vlen)
        rc = logw_part(&s->wal, val, vlen);
    return rc;
}

/* Appends a batch to the log as one BATCH record (docs/format/log.md), encoded and written a
 * piece at a time. On failure the log is as it was. */
static int log_batch(ltr_store *s, const uint8_t *kdata, const int64_t *koffs,
                     const uint8_t *vdata, const int64_t *voffs, const uint8_t *deleted, size_t n)
{
    uint64_t len = varint_len(n);
    for (size_t i = 0; i < n; i++)
        len += item_size((uint32_t)(koffs[i + 1] - koffs[i]), (uint32_t)(voffs[i + 1] - voffs[i]),
                         deleted && deleted[i]);
    if (len > LOG_MAX_PAYLOAD)
        return ltr_fail(LTR_EINVAL, "a batch of %llu bytes is over the 1 GiB limit of one write",
                        (unsigned long long)len);
    s->enc.len = 0;
    int rc = buf_reserve(&s->enc, LOG_PIECE);
    if (!rc)
        rc = logw_begin(&s->wal, 1, (size_t)len);
    if (rc)
        return rc;
    s->enc.len = put_varint(s->enc.data, n);
    for (size_t i = 0; i < n && !rc; i++) {
        uint32_t kl = (uint32_t)(koffs[i + 1] - koffs[i]), vl = (uint32_t)(voffs[i + 1] - voffs[i]);
        int del = deleted && deleted[i];
        size_t size = item_size(kl, vl, del);
        if (size > LOG_PIECE) {
            rc = log_large_item(s, kdata + koffs[i], kl, vdata + voffs[i], vl, del);
            continue;
        }
        if (s->enc.len + size > LOG_PIECE)
            rc = log_piece(s);
        if (!rc)
            s->enc.len += item_encode(s->enc.data + s->enc.len, kdata + koffs[i], kl,
                                      vdata + voffs[i], vl, del);
    }
    if (!rc)
        rc = log_piece(s);
    return rc ? rc : logw_end(&s->wal); /* (a failed part took the record back itself) */
}

/* ---- applying writes to memtables ---- */

static int pos_before(uint64_t f1, uint64_t o1, uint64_t f2, uint64_t o2)
{
    return f1 < f2 || (f1 == f2 && o1 < o2);
}

/* Moves the active memtable to the immutable list and starts a fresh one whose items start at
 * log position (min_log, min_off); write_mu and mem_lock (exclusive) are held. No I/O: it cannot
 * fail halfway. */
static int swap_active(ltr_store *s, uint64_t min_log, uint64_t min_off)
{
    memtable *m = NULL;
    int rc = memtable_new(s, min_log, min_off, &m);
    if (rc)
        return rc;
    s->active->next = s->imm;
    s->imm = s->active;
    s->nimm++;
    s->active = m;
    return LTR_OK;
}

static void wake_worker(ltr_store *s)
{
    pthread_mutex_lock(&s->state_mu);
    pthread_cond_broadcast(&s->state_cv);
    pthread_mutex_unlock(&s->state_mu);
}

static uint64_t log_rotate_max = LOG_ROTATE_MAX, log_disk_max = LOG_DISK_MAX; /* tests */

void ltr_test_log_limits(int64_t rotate_bytes, int64_t disk_bytes)
{
    __atomic_store_n(&log_rotate_max, rotate_bytes < 0 ? LOG_ROTATE_MAX : (uint64_t)rotate_bytes,
                     __ATOMIC_RELAXED);
    __atomic_store_n(&log_disk_max, disk_bytes < 0 ? LOG_DISK_MAX : (uint64_t)disk_bytes,
                     __ATOMIC_RELAXED);
}

void ltr_test_store_bump(ltr_store *s, uint64_t counter_base, uint64_t next_file)
{
    for (int i = 0; i < C_COUNT; i++)
        store_count(s, i, counter_base);
    pthread_mutex_lock(&s->state_mu);
    if (s->next_file < next_file)
        s->next_file = next_file;
    pthread_mutex_unlock(&s->state_mu);
}

uint64_t store_log_disk_max(void) { return __atomic_load_n(&log_disk_max, __ATOMIC_RELAXED); }

/* A log is rotated once it holds this much: several memtables share one log, so a flush costs
 * no log rotation (each rotation fsyncs the old log and the directory). */
static uint64_t log_rotate_bytes(const ltr_store *s)
{
    uint64_t b = 32 * s->o.memtable_bytes, max = __atomic_load_n(&log_rotate_max, __ATOMIC_RELAXED);
    return b < max ? b : max;
}

static int logging(const ltr_store *s) { return s->o.use_log && !s->o.read_only; }

/* Whether the current log is full: the next record goes to a new one. */
static int log_full(const ltr_store *s)
{
    return logging(s) && s->wal.size - s->wal_base >= log_rotate_bytes(s);
}

/* Starts a new memtable, and a new log when the current one is full (write_mu held). On failure
 * nothing changed. */
static int rotate(ltr_store *s)
{
    if (!ltr_hbuild_items(s->active->b))
        return LTR_OK;
    int rc = log_full(s) ? open_new_log(s) : LTR_OK;
    if (rc)
        return rc;
    pthread_rwlock_wrlock(&s->mem_lock);
    rc = s->wal_file ? swap_active(s, s->wal_file, s->wal.size)
                     : swap_active(s, s->active->min_log, s->active->min_off);
    pthread_rwlock_unlock(&s->mem_lock);
    wake_worker(s);
    return rc;
}

/* Whether the active memtable should be rotated before the next write: it is full, or the log
 * written since it started is MEMTABLE_LOG_SPAN times its size (it would hold the log floor
 * while the log grows: rewrites of the same keys fill the log, not the memtable). */
static int memtable_due(const ltr_store *s)
{
    const memtable *a = s->active;
    return ltr_hbuild_data_bytes(a->b) >= s->o.memtable_bytes ||
           (logging(s) && s->logged - a->log_mark >= MEMTABLE_LOG_SPAN * s->o.memtable_bytes);
}

/* Before a write (write_mu held): a due memtable is rotated (with the log when that is full), a
 * full log alone otherwise, whatever the size of the writes: a batch larger than a memtable
 * swaps memtables inside it, and the log must still move on between batches. On failure the
 * write has not been logged or applied at all. */
static int rotate_for_write(ltr_store *s)
{
    if (memtable_due(s) && ltr_hbuild_items(s->active->b))
        return rotate(s);
    return log_full(s) ? open_new_log(s) : LTR_OK;
}

uint64_t store_log_disk_bytes(ltr_store *s)
{
    return walset_bytes(&s->logs) + (s->wal_file ? s->wal.size - s->wal_base : 0);
}

/* Waits (write_mu held) until fewer than MAX_IMMUTABLE memtables await a flush. Recovery
 * (no worker yet) never waits: it flushes everything itself afterwards. */
static void wait_for_room(ltr_store *s)
{
    while (s->nworkers && s->nimm >= MAX_IMMUTABLE && !s->bg_error && !s->stopping) {
        __atomic_fetch_add(&s->write_stalls, 1, __ATOMIC_RELAXED);
        pthread_cond_wait(&s->write_cv, &s->write_mu);
    }
}

/* Waits (write_mu held) while the logs on disk hold more than their bound and some of them,
 * older than the current log, could go: a checkpoint whose floor passes them releases them, and
 * the checkpoint thread unlinks them and wakes the writers. The active memtable is rotated first
 * when it starts in an older log, since it would hold the floor there. Recovery never waits. */
static int wait_for_log_space(ltr_store *s)
{
    int rc = LTR_OK;
    while (!rc && s->nworkers && logging(s) && walset_bytes(&s->logs) > 0 &&
           store_log_disk_bytes(s) > store_log_disk_max()) {
        if (s->bg_error)
            return store_bg_error(s);
        if (s->active->min_log < s->wal_file && ltr_hbuild_items(s->active->b)) {
            wait_for_room(s);
            rc = s->bg_error ? store_bg_error(s) : rotate(s);
            continue;
        }
        __atomic_fetch_add(&s->write_stalls, 1, __ATOMIC_RELAXED);
        __atomic_fetch_add(&s->log_waiters, 1, __ATOMIC_RELAXED); /* a checkpoint is due now */
        wake_worker(s);
        pthread_cond_wait(&s->write_cv, &s->write_mu);
        __atomic_fetch_sub(&s->log_waiters, 1, __ATOMIC_RELAXED);
    }
    return rc;
}

/* Stages one item in the active memtable (mem_lock exclusive). A memtable that fills up is
 * swapped for a fresh one, which starts at the batch's record (log_file, log_off). */
static int apply_one(ltr_store *s, const uint8_t *key, uint32_t klen, const uint8_t *val,
                     uint32_t vlen, int del, uint64_t log_file, uint64_t log_off, int *swapped)
{
    uint8_t d[16];
    ltr_murmur3_128(key, klen, s->o.hash_seed, d);
    key_hash h = hb_from_digest(d);
    int r = hbuild_stage(s->active->b, h, key, klen, val, vlen, del);
    if (r != 0)
        return r < 0 ? r : LTR_OK;
    /* The fresh memtable's items start with this batch's record: once the full memtable is in
     * a table, replay may start there (the batch's first items, replayed again, are the same
     * items, newer than the table). Without a log it keeps the full one's position. */
    int rc = log_file ? swap_active(s, log_file, log_off)
                      : swap_active(s, s->active->min_log, s->active->min_off);
    if (rc)
        return rc;
    *swapped = 1;
    r = hbuild_stage(s->active->b, h, key, klen, val, vlen, del);
    return r < 0 ? r : LTR_OK;
}

/* Stages a decoded log record's items in the memtables under one exclusive hold of mem_lock,
 * so readers see all of it or none. */
int store_apply_items(ltr_store *s, const uint8_t *p, const uint8_t *end, uint64_t n,
                       uint64_t log_file, uint64_t log_off, int *swapped)
{
    int rc = LTR_OK;
    pthread_rwlock_wrlock(&s->mem_lock);
    for (uint64_t i = 0; i < n && !rc; i++) {
        item_view it;
        size_t k = item_decode(p, end, &it);
        if (!k) {
            rc = ltr_fail(LTR_ECORRUPT, "a log record holds a malformed item");
            break;
        }
        rc = apply_one(s, it.key, it.klen, it.value, it.vlen, it.deleted, log_file, log_off,
                       swapped);
        p += k;
    }
    pthread_rwlock_unlock(&s->mem_lock);
    return rc;
}

/* The same for a batch straight from the caller's buffers. */
static int apply_batch(ltr_store *s, const uint8_t *kdata, const int64_t *koffs,
                       const uint8_t *vdata, const int64_t *voffs, const uint8_t *deleted,
                       size_t n, uint64_t log_file, uint64_t log_off, int *swapped)
{
    int rc = LTR_OK;
    pthread_rwlock_wrlock(&s->mem_lock);
    for (size_t i = 0; i < n && !rc; i++) {
        int del = deleted && deleted[i];
        rc = apply_one(s, kdata + koffs[i], (uint32_t)(koffs[i + 1] - koffs[i]),
                       del ? NULL : vdata + voffs[i],
                       del ? 0 : (uint32_t)(voffs[i + 1] - voffs[i]), del, log_file, log_off,
                       swapped);
    }
    pthread_rwlock_unlock(&s->mem_lock);
    return rc;
}

static int check_batch(const int64_t *koffs, size_t klen_total, const int64_t *voffs,
                       size_t vlen_total, const uint8_t *deleted, size_t n, uint64_t *user)
{
    int rc = batch_check(koffs, n, klen_total, "keys");
    if (!rc)
        rc = batch_check(voffs, n, vlen_total, "values");
    for (size_t i = 0; !rc && i < n; i++) {
        int64_t kl = koffs[i + 1] - koffs[i], vl = voffs[i + 1] - voffs[i];
        if (deleted && deleted[i])
            vl = 0;
        if (kl > LTR_MAX_KEY)
            return ltr_fail(LTR_ETOOBIG, "key %zu is %lld bytes; the limit is %d bytes", i,
                            (long long)kl, LTR_MAX_KEY);
        if (vl > LTR_MAX_VALUE)
            return ltr_fail(LTR_ETOOBIG, "value %zu is %lld bytes; the limit is %d bytes", i,
                            (long long)vl, LTR_MAX_VALUE);
        *user += (uint64_t)(kl + vl);
    }
    return rc;
}

int ltr_store_write(ltr_store *s, const uint8_t *kdata, const int64_t *koffs, size_t klen_total,
                    const uint8_t *vdata, const int64_t *voffs, size_t vlen_total,
                    const uint8_t *deleted, size_t n, int sync)
{
    static const uint8_t none[1];
    uint64_t user = 0;
    if (s->o.read_only)
        return ltr_fail(LTR_EREADONLY, "store %s was opened read-only", s->dir);
    int rc = check_batch(koffs, klen_total, voffs, vlen_total, deleted, n, &user);
    if (rc || n == 0)
        return rc;
    kdata = kdata ? kdata : none;
    vdata = vdata ? vdata : none;
    pthread_mutex_lock(&s->write_mu);
    wait_for_room(s);
    if (s->bg_error)
        rc = store_bg_error(s);
    if (!rc)
        rc = rotate_for_write(s);
    if (!rc)
        rc = wait_for_log_space(s);
    uint64_t file = s->wal_file, start = s->wal.size, end = 0;
    if (!rc && file) {
        rc = log_batch(s, kdata, koffs, vdata, voffs, deleted, n);
        end = s->wal.size;
        s->logged += end - start;
        store_count(s, C_WRITTEN_LOG, end - start);
        if (end - s->wal_hinted >= LOG_WRITEBACK_STEP) {
            /* start writeback early, so the fsync at a rotation or a sync write waits less */
            sync_file_range(s->wal.fd, (off_t)s->wal_hinted, (off_t)(end - s->wal_hinted),
                            SYNC_FILE_RANGE_WRITE);
            s->wal_hinted = end;
        }
    }
    int swapped = 0;
    if (!rc)
        rc = apply_batch(s, kdata, koffs, vdata, voffs, deleted, n, file, start, &swapped);
    if (!rc)
        store_count(s, C_USER_BYTES, user);
    pthread_mutex_unlock(&s->write_mu);
    if (swapped)
        wake_worker(s);
    if (!rc && file && (sync < 0 ? s->o.sync : sync))
        rc = log_sync(s, file, end);
    return rc;
}

/* ---- background work ---- */

static void wake_writers(ltr_store *s);

int store_open_table(ltr_store *s, const char *path, uint32_t flags, ltr_htable **t)
{
    return htable_open_in(path, TABLE_FLAGS | flags, -1, s->fc, t);
}

static memtable *oldest_immutable(ltr_store *s)
{
    pthread_rwlock_rdlock(&s->mem_lock);
    memtable *m = s->imm;
    while (m && m->next)
        m = m->next;
    pthread_rwlock_unlock(&s->mem_lock);
    return m;
}

/* The log position recovery must replay from once m is in a table: the oldest start of the
 * other memtables (state_mu held). */
static void floor_without(ltr_store *s, const memtable *m, uint64_t *floor, uint64_t *off)
{
    pthread_rwlock_rdlock(&s->mem_lock);
    *floor = s->active->min_log;
    *off = s->active->min_off;
    for (memtable *x = s->imm; x; x = x->next)
        if (x != m && pos_before(x->min_log, x->min_off, *floor, *off)) {
            *floor = x->min_log;
            *off = x->min_off;
        }
    pthread_rwlock_unlock(&s->mem_lock);
}

/* Installs table r (file) of memtable m as the newest table of the root, with the log floor
 * that no longer needs m's records. */
static int install_flushed(ltr_store *s, const memtable *m, uint64_t file, tref *r)
{
    vedit_op op = {.add = 1, .node = 0, .level = 0, .table = r};
    medit e = {0};
    medit_table(&e, 1, 0, file);
    pthread_mutex_lock(&s->state_mu);
    uint64_t floor, off;
    floor_without(s, m, &floor, &off);
    medit_value(&e, OP_LOG_FLOOR, floor);
    medit_value(&e, OP_LOG_OFFSET, off);
    int rc = store_install(s, &op, 1, &e);
    if (!rc) {
        store_wrote(s, 0, file);
        s->log_floor = floor;
        s->log_floor_off = off;
    }
    if (!rc && s->o.levels == 1)
        lastlevel_note(s, 0);
    pthread_mutex_unlock(&s->state_mu);
    medit_free(&e);
    return rc;
}

/* The table is in the version: the memtable can go (readers search the version after it). */
static void drop_flushed(ltr_store *s, memtable *m)
{
    pthread_rwlock_wrlock(&s->mem_lock);
    memtable **pp = &s->imm;
    while (*pp != m)
        pp = &(*pp)->next;
    *pp = NULL;
    s->nimm--;
    pthread_rwlock_unlock(&s->mem_lock);
    memtable_free(m);
    wake_writers(s);
}

/* Writes the oldest immutable memtable as the newest table of the root. */
int store_flush_oldest(ltr_store *s)
{
    memtable *m = oldest_immutable(s);
    if (!m)
        return LTR_OK;
    uint64_t file;
    char *path;
    ltr_build_stats st;
    int rc = store_new_table(s, &file, &path);
    if (rc)
        return rc;
    rc = htable_write(m->b, path, &st); /* not ltr_hbuild_finish: a failed flush is retried */
    ltr_htable *t = NULL;
    if (!rc)
        rc = store_open_table(s, path, 0, &t);
    tref *r = t ? tref_new(file, 0, t) : NULL;
    if (t && !r) {
        ltr_htable_close(t);
        rc = ltr_fail(LTR_ENOMEM, "out of memory");
    }
    if (!rc) {
        store_count(s, C_WRITTEN_FLUSH, st.file_bytes);
        store_count(s, C_FLUSHES, 1);
        rc = install_flushed(s, m, file, r);
        tref_unref(r);
    }
    if (rc)
        unlink(path); /* not installed */
    free(path);
    if (!rc)
        drop_flushed(s, m);
    return rc;
}

/* The node worker `id` should compact next among levels [from, limit), if any. Both workers
 * compact every level above the last and run the last level's work, whose garbage collection
 * of a node must not overlap appends to it: a worker leaves alone the parent of the last-level
 * node the other works on (s->ll_node), and takes no last-level node whose parent the other
 * compacts (lastlevel.c). Two compactions never take the same node; a node and its child may
 * compact at once (one appends to the child's pile, the other removes its oldest tables).
 * state_mu is held. */
static int pick(const ltr_store *s, const version *v, int id, uint64_t *node, uint32_t from,
                uint32_t limit)
{
    uint64_t other = s->ll_node[!id];
    uint64_t busy_parent = other != NO_NODE && s->o.levels > 1
                         ? node_parent(other, s->o.levels - 1) : NO_NODE;
    return compaction_pick(s, v, node, from, limit, s->compacting[!id], busy_parent);
}

static int imm_pending(ltr_store *s);

/* One unit of background work for worker `id`: 1 done, 0 nothing to do, <0 failed. state_mu
 * is not held. The version is pinned and the node claimed under state_mu, which installs hold,
 * so the pinned version shows what the other worker finished. */
static int background_step(ltr_store *s, int id)
{
    pthread_mutex_lock(&s->state_mu);
    int have_imm = imm_pending(s);
    version *v = store_pin(s);
    uint64_t node = 0;
    /* Flushes come first unless some node is half again over its table budget: then it is
     * compacted first, so no node's pile (and no lookup's cost) grows without bound. */
    int compact = pick(s, v, id, &node, 0, s->o.levels - 1);
    const vnode *n = compact ? version_node(v, node) : NULL;
    int urgent = n && 2 * n->n >= 3 * s->o.node_tables;
    int flush = id == 0 && have_imm && !urgent && !s->flusher_started;
    /* The first worker turns to the last level's own work before the compactions of the upper
     * levels, but after those into the last level (which feed it). */
    uint32_t feed = s->o.levels >= 2 ? s->o.levels - 2 : 0;
    int last = 0;
    if (id == 0 && s->nworkers > 1 && compact && !urgent && !flush &&
        !pick(s, v, id, &node, feed, feed + 1))
        compact = !(last = lastlevel_ready(s, id));
    if (compact && !flush)
        s->compacting[id] = node;
    pthread_mutex_unlock(&s->state_mu);
    int rc = 0;
    if (flush) {
        rc = store_flush_oldest(s);
        rc = rc ? rc : 1;
    } else if (last) {
        rc = lastlevel_step(s, id);
    } else if (compact) {
        rc = compaction_run(s, v, node);
        rc = rc ? rc : 1;
        pthread_mutex_lock(&s->state_mu);
        s->compacting[id] = NO_NODE;
        pthread_mutex_unlock(&s->state_mu);
    } else {
        rc = lastlevel_step(s, id);
    }
    version_unref(v);
    return rc;
}

/* Whether the worker has anything to do; state_mu is held, so a rotation or an install that
 * happens after this check wakes the worker (they broadcast state_cv under state_mu). */
static int imm_pending(ltr_store *s)
{
    pthread_rwlock_rdlock(&s->mem_lock);
    int pending = s->imm != NULL;
    pthread_rwlock_unlock(&s->mem_lock);
    return pending;
}

static int work_available(ltr_store *s, int id)
{
    uint64_t node;
    return (id == 0 && !s->flusher_started && imm_pending(s)) ||
           pick(s, s->current, id, &node, 0, s->o.levels - 1) ||
           lastlevel_ready(s, id);
}

/* The flusher's turn: a memtable waits and the root is not at twice its budget (the worker,
 * which compacts the fullest node first, brings it down). */
static int flush_available(ltr_store *s)
{
    const vnode *root = version_node(s->current, 0);
    return imm_pending(s) && !(root && root->n >= 2 * s->o.node_tables);
}

static void record_bg_error(ltr_store *s, int rc); /* state_mu held */

static void wake_writers(ltr_store *s)
{
    pthread_mutex_lock(&s->write_mu);
    pthread_cond_broadcast(&s->write_cv);
    pthread_mutex_unlock(&s->write_mu);
}

static void *worker_main(void *arg)
{
    ltr_store *s = ((struct worker_arg *)arg)->s;
    int id = ((struct worker_arg *)arg)->id;
    pthread_setname_np(pthread_self(), id ? "ltr-compact1" : "ltr-compact0");
    pthread_mutex_lock(&s->state_mu);
    while (!s->stopping) {
        if (s->bg_error || !work_available(s, id)) {
            pthread_cond_wait(&s->state_cv, &s->state_mu);
            continue;
        }
        s->busy++;
        pthread_mutex_unlock(&s->state_mu);
        int rc = background_step(s, id);
        pthread_mutex_lock(&s->state_mu);
        s->busy--;
        if (rc < 0)
            record_bg_error(s, rc);
        pthread_cond_broadcast(&s->state_cv);
    }
    pthread_mutex_unlock(&s->state_mu);
    wake_writers(s);
    return NULL;
}

static void record_bg_error(ltr_store *s, int rc)
{
    s->bg_error = rc;
    s->bg_errno = ltr_last_errno();
    snprintf(s->bg_message, sizeof s->bg_message, "background work failed: %s", ltr_last_error());
    pthread_mutex_unlock(&s->state_mu);
    wake_writers(s); /* stalled writers must see the error, not wait for a flush */
    pthread_mutex_lock(&s->state_mu);
}

static void *flusher_main(void *arg)
{
    ltr_store *s = arg;
    pthread_setname_np(pthread_self(), "ltr-flush");
    pthread_mutex_lock(&s->state_mu);
    while (!s->stopping) {
        if (s->bg_error || !flush_available(s)) {
            pthread_cond_wait(&s->state_cv, &s->state_mu);
            continue;
        }
        s->flushing = 1;
        pthread_mutex_unlock(&s->state_mu);
        int rc = store_flush_oldest(s);
        pthread_mutex_lock(&s->state_mu);
        s->flushing = 0;
        if (rc < 0)
            record_bg_error(s, rc);
        pthread_cond_broadcast(&s->state_cv); /* the worker: the root may need compacting */
    }
    pthread_mutex_unlock(&s->state_mu);
    wake_writers(s);
    return NULL;
}

/* The checkpointer: makes the state durable when a checkpoint is due (store_checkpoint_due),
 * and deletes the files whose grace period is over (unlinking a
 * file that has blocks can wait for the device, which compactions should not). */
static void *syncer_main(void *arg)
{
    ltr_store *s = arg;
    pthread_setname_np(pthread_self(), "ltr-checkpoint");
    pthread_mutex_lock(&s->state_mu);
    while (!s->stopping) {
        if (s->ngrave) {
            pthread_mutex_unlock(&s->state_mu);
            reap(s, 0);
            pthread_mutex_lock(&s->state_mu);
        }
        if (walset_has_dead(&s->logs)) { /* the log space writers may wait for */
            pthread_mutex_unlock(&s->state_mu);
            walset_unlink_dead(&s->logs, s->dir);
            wake_writers(s);
            pthread_mutex_lock(&s->state_mu);
        }
        if (!s->bg_error && store_checkpoint_due(s)) {
            pthread_mutex_unlock(&s->state_mu);
            int rc = store_checkpoint(s, CKPT_BACKGROUND);
            pthread_mutex_lock(&s->state_mu);
            if (rc < 0)
                record_bg_error(s, rc);
            continue;
        }
        double wait = s->o.checkpoint_interval < 0.1 ? s->o.checkpoint_interval : 0.1;
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += (long)(wait * 1e9) + 100000;
        while (until.tv_nsec >= 1000000000) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&s->state_cv, &s->state_mu, &until);
    }
    pthread_mutex_unlock(&s->state_mu);
    return NULL;
}

void store_remove_old_logs(ltr_store *s)
{
    pthread_mutex_lock(&s->state_mu);
    uint64_t floor = s->durable_floor;
    pthread_mutex_unlock(&s->state_mu);
    walset_release_below(&s->logs, floor);
    /* unlinked by the checkpoint thread, not here: freeing a large log's blocks took 30 ms
     * each, which flush() would wait for. A read-only open reads its logs through descriptors
     * it opened before reading the manifest, so no grace period is needed. */
    wake_worker(s);
}

/* Writes every memtable out now (used by recovery and by close in bulk mode). */
static int flush_all_now(ltr_store *s)
{
    int rc = LTR_OK;
    pthread_mutex_lock(&s->write_mu);
    pthread_rwlock_wrlock(&s->mem_lock);
    if (ltr_hbuild_items(s->active->b))
        rc = swap_active(s, s->active->min_log, s->active->min_off);
    pthread_rwlock_unlock(&s->mem_lock);
    pthread_mutex_unlock(&s->write_mu);
    while (!rc && s->imm)
        rc = store_flush_oldest(s);
    return rc;
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
    s->fc = fcache_new((uint32_t)(limit > UINT32_MAX ? UINT32_MAX : limit));
    return s->fc ? LTR_OK : ltr_fail(LTR_ENOMEM, "out of memory opening %s", s->dir);
}

/* Creates dir unless it exists, and then syncs its parent: a store's first synced writes must
 * not vanish with its directory in a power cut. */
static int make_dir(const char *dir, const char *what)
{
    if (mkdir(dir, 0755) != 0)
        return errno == EEXIST ? LTR_OK
                               : ltr_fail_errno(errno, "cannot create the %s directory %s", what, dir);
    return io_fsync_dir(dir);
}

/* Creates the directories (a writer), takes the writer lock or a reader's shared lock on the
 * directory, and opens the table-file cache. */
static int open_dirs(ltr_store *s)
{
    int rc = s->o.read_only ? LTR_OK : make_dir(s->dir, "store");
    if (!rc && s->meta_dir && !s->o.read_only)
        rc = make_dir(s->meta_dir, "metadata");
    if (!rc && !s->o.read_only)
        rc = take_lock(s);
    /* A reader holds LOCK_SH on the directory while it is open, taken before it reads the
     * manifest: the writer reuses the files of durable dropped tables only when it can take
     * LOCK_EX (no reader could have them open, and none can start meanwhile). */
    s->dir_fd = rc ? -1 : open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s->o.read_only && s->dir_fd >= 0 && flock(s->dir_fd, LOCK_SH) != 0)
        rc = ltr_fail_errno(errno, "cannot lock the directory of %s for reading", s->dir);
    return rc ? rc : open_cache(s);
}

/* A log recovery replayed, counted with its size on disk until a checkpoint releases it. */
static void note_recovered_log(ltr_store *s, uint64_t file)
{
    char *p = store_file(s->dir, file, "wal");
    struct stat sb;
    uint64_t base = store_log_base(); /* (tests: the hole before the first record) */
    if (p && stat(p, &sb) == 0)
        walset_add(&s->logs, file, (uint64_t)sb.st_size > base ? (uint64_t)sb.st_size - base : 0);
    free(p);
}

/* The state of the manifest, then the logs above its floor replayed into a memtable. */
static int recover(ltr_store *s)
{
    loglist logs = {0};
    int rc = recovery_take_logs(s, &logs, s->o.read_only); /* a reader: before the manifest */
    if (!rc)
        rc = recovery_load_state(s);
    /* logs below the durable floor are gone, or go with the orphans */
    s->durable_floor = s->log_floor;
    if (!rc && !s->o.read_only) { /* the options are the store's now; no pool only costs speed */
        uint64_t files = POOL_BYTES / ((uint64_t)s->o.table_buckets * LTR_BUCKET_SIZE);
        s->pool = tpool_new(s->dir, (uint32_t)(files < 8 ? 8 : files > 4096 ? 4096 : files));
    }
    if (!rc)
        rc = memtable_new(s, s->log_floor, s->log_floor_off, &s->active);
    if (!rc)
        rc = recovery_replay_logs(s, &logs);
    for (size_t i = 0; !rc && !s->o.read_only && i < logs.n; i++)
        if (logs.files[i] >= s->log_floor) /* those below are orphans, removed as such */
            note_recovered_log(s, logs.files[i]);
    recovery_free_logs(&logs);
    return rc;
}

/* A writer puts the recovered writes in tables at once and starts a new log above them, so
 * that every old log can go; the checkpoint makes that durable. */
static int settle_recovered(ltr_store *s)
{
    int rc = flush_all_now(s);
    if (!rc && s->o.use_log) {
        rc = open_new_log(s);
        s->active->min_log = s->wal_file;
        s->active->min_off = s->wal_base;
    }
    if (!rc) {
        pthread_mutex_lock(&s->state_mu);
        medit e = {0};
        s->log_floor = s->o.use_log ? s->wal_file : s->next_file;
        s->log_floor_off = s->o.use_log ? s->wal_base : 0;
        medit_value(&e, OP_LOG_FLOOR, s->log_floor);
        medit_value(&e, OP_LOG_OFFSET, s->log_floor_off);
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

/* The flusher, the syncer and one or two workers. With one level the root is the last level,
 * whose garbage collection must not overlap appends to it: the worker then flushes too. The
 * flusher starts first, so the worker knows from its start whether it flushes. */
static int start_threads(ltr_store *s)
{
    if (s->o.levels > 1 && pthread_create(&s->flusher, NULL, flusher_main, s) == 0)
        s->flusher_started = 1;
    if (pthread_create(&s->syncer, NULL, syncer_main, s) == 0)
        s->syncer_started = 1;
    int want = s->o.levels >= 2 ? 2 : 1; /* a second worker when there are levels to compact */
    for (int i = 0; s->syncer_started && i < want && s->nworkers == i; i++) {
        s->wargs[i] = (struct worker_arg){s, i}; /* workers 0 .. nworkers-1 run */
        if (pthread_create(&s->workers[i], NULL, worker_main, &s->wargs[i]) == 0)
            s->nworkers++;
    }
    if (s->nworkers)
        return LTR_OK;
    pthread_mutex_lock(&s->state_mu);
    s->stopping = 1;
    pthread_cond_broadcast(&s->state_cv);
    pthread_mutex_unlock(&s->state_mu);
    if (s->flusher_started)
        pthread_join(s->flusher, NULL);
    if (s->syncer_started)
        pthread_join(s->syncer, NULL);
    s->flusher_started = s->syncer_started = 0;
    return ltr_fail(LTR_ENOMEM, "cannot start the background threads");
}

static int start(ltr_store *s)
{
    if (s->o.memtable_bytes == 0)
        s->o.memtable_bytes = table_capacity(&s->o);
    int rc = open_dirs(s);
    if (!rc)
        rc = recover(s);
    if (rc || s->o.read_only)
        return rc;
    rc = settle_recovered(s);
    return rc ? rc : start_threads(s);
}

static void store_free(ltr_store *s)
{
    if (s->current)
        version_unref(s->current);
    fcache_unref(s->fc); /* tables a scan still holds keep it */
    if (s->pool) { /* tables still referenced elsewhere (a scan) unlink their file when freed */
        tpool_close(s->pool);
        tpool_unref(s->pool);
    }
    memtable_free(s->active);
    while (s->imm) {
        memtable *m = s->imm;
        s->imm = m->next;
        memtable_free(m);
    }
    if (s->wal_file)
        logw_close(&s->wal);
    manifest_close(&s->mf);
    ltr_buf_free(&s->pending);
    pfiles_free(&s->unsynced);
    pfiles_free(&s->doomed);
    if (s->lock_fd >= 0)
        close(s->lock_fd); /* releases the lock */
    ltr_buf_free(&s->enc);
    free(s->gc_pending);
    walset_free(&s->logs);
    for (size_t i = 0; i < s->ngrave; i++) { /* a failed open: the next writer open removes them */
        free(s->grave[i].path);
        tfile_release(s->grave[i].tf);
    }
    free(s->grave);
    if (s->dir_fd >= 0)
        close(s->dir_fd); /* a reader's LOCK_SH goes with it */
    pthread_mutex_destroy(&s->write_mu);
    pthread_cond_destroy(&s->write_cv);
    pthread_mutex_destroy(&s->sync_mu);
    pthread_cond_destroy(&s->sync_cv);
    pthread_rwlock_destroy(&s->mem_lock);
    pthread_mutex_destroy(&s->state_mu);
    pthread_mutex_destroy(&s->ver_mu);
    pthread_mutex_destroy(&s->ckpt_mu);
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
    int yes = access(p, F_OK) == 0;
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
    s->dir_fd = -1;
    s->compacting[0] = s->compacting[1] = s->ll_node[0] = s->ll_node[1] = NO_NODE;
    s->mf.w.fd = -1;
    s->wal.fd = -1;
    s->dir = strdup(path);
    s->meta_dir = o->metadata_path ? strdup(o->metadata_path) : NULL;
    s->o.metadata_path = NULL;
    s->current = version_empty();
    pthread_mutex_init(&s->write_mu, NULL);
    pthread_cond_init(&s->write_cv, NULL);
    pthread_mutex_init(&s->sync_mu, NULL);
    pthread_cond_init(&s->sync_cv, NULL);
    pthread_rwlock_init(&s->mem_lock, NULL);
    pthread_mutex_init(&s->state_mu, NULL);
    pthread_mutex_init(&s->ver_mu, NULL);
    pthread_mutex_init(&s->ckpt_mu, NULL);
    pthread_cond_init(&s->state_cv, NULL);
    walset_init(&s->logs);
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

/* Waits until no memtable waits for a flush and no compaction is due. */
static int wait_idle(ltr_store *s)
{
    pthread_mutex_lock(&s->state_mu);
    for (;;) {
        if (s->bg_error)
            break;
        pthread_rwlock_rdlock(&s->mem_lock);
        int pending = s->imm != NULL;
        pthread_rwlock_unlock(&s->mem_lock);
        uint64_t node;
        if (!pending && !s->busy && !s->flushing &&
            !compaction_pick(s, s->current, &node, 0, s->o.levels, NO_NODE, NO_NODE) &&
            !lastlevel_pending(s))
            break;
        pthread_cond_broadcast(&s->state_cv);
        pthread_cond_wait(&s->state_cv, &s->state_mu);
    }
    int rc = s->bg_error ? store_bg_error(s) : LTR_OK;
    pthread_mutex_unlock(&s->state_mu);
    return rc;
}

int ltr_store_flush(ltr_store *s)
{
    if (s->o.read_only)
        return LTR_OK;
    pthread_mutex_lock(&s->state_mu);
    while (s->busy || s->flushing) /* a job under way may still fail: let it finish first */
        pthread_cond_wait(&s->state_cv, &s->state_mu);
    s->bg_error = 0; /* an explicit flush retries failed background work */
    pthread_cond_broadcast(&s->state_cv);
    pthread_mutex_unlock(&s->state_mu);
    pthread_mutex_lock(&s->write_mu);
    int rc = rotate(s);
    pthread_mutex_unlock(&s->write_mu);
    if (!rc)
        rc = wait_idle(s);
    return rc ? rc : store_checkpoint(s, 0);
}

int ltr_store_close(ltr_store *s)
{
    int rc = LTR_OK;
    if (!s->o.read_only) {
        if (!s->o.use_log)
            rc = ltr_store_flush(s); /* bulk mode: the memtable is durable only in a table */
        pthread_mutex_lock(&s->state_mu);
        s->stopping = 1;
        pthread_cond_broadcast(&s->state_cv);
        pthread_mutex_unlock(&s->state_mu);
        for (int i = 0; i < s->nworkers; i++)
            pthread_join(s->workers[i], NULL);
        if (s->flusher_started)
            pthread_join(s->flusher, NULL);
        if (s->syncer_started)
            pthread_join(s->syncer, NULL);
        int r = store_sync_log(s); /* first: whatever the checkpoint does */
        rc = rc ? rc : r;
        /* what the background work did, and the counters of the writes since the last edit */
        r = store_checkpoint(s, CKPT_FORCE);
        rc = rc ? rc : r;
        reap(s, 1);
        walset_unlink_dead(&s->logs, s->dir);
    }
    store_free(s);
    return rc;
}
