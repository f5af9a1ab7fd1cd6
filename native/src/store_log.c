/* store_log.c: the write-ahead log (docs/format/log.md): appending a write batch as one record,
 * group commit of its fsyncs, rotation to a new log file, and the logs kept on disk until a
 * checkpoint's floor passes them (docs/design.md "Logs on disk"). Depends on store_files.c and
 * store_stats.c. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "bucket.h"
#include "coding.h"
#include "io.h"
#include "store_int.h"

/* ---- the log ---- */

/* fsyncs the current log; write_mu held (or no other thread). After a failed fsync the log is
 * first written again from the page cache: Linux may have marked the pages whose writeback
 * failed clean, and a second fsync would report success without writing them. */
static int wal_sync_locked(ltr_store *s, int fd)
{
    int rc = blob_sync(s); /* what the log points to reaches the disk before the log does */
    if (!rc && __atomic_load_n(&s->log.resync, __ATOMIC_ACQUIRE))
        rc = io_rewrite_path(s->log.wal.path);
    if (!rc)
        rc = io_fsync_fd(fd, s->log.wal.path);
    __atomic_store_n(&s->log.resync, rc != 0, __ATOMIC_RELEASE);
    return rc;
}

int store_log_open_new(ltr_store *s)
{
    /* Everything in the old log reaches the disk before the new log's name does: a crash then
     * keeps a prefix of the writes, and only the newest log can end in a torn record (which
     * recovery cuts off; a damaged log with a newer one after it is corruption). */
    int rc = s->log.file ? wal_sync_locked(s, s->log.wal.fd) : LTR_OK;
    if (rc)
        return rc;
    pthread_mutex_lock(&s->state_mu);
    uint64_t file = s->next_file++;
    pthread_mutex_unlock(&s->state_mu);
    char *p = store_file(s->dir, file, "wal");
    if (!p)
        return ltr_fail(LTR_ENOMEM, "out of memory");
    io_unlink(p);
    logw w;
    rc = logw_open(&w, p, store_log_base());
    if (!rc)
        rc = io_fsync_dir(p); /* the new log's name must survive a crash */
    free(p);
    if (rc) {
        logw_close(&w);
        return rc;
    }
    walset_add(&s->log.set, file, 0);
    if (s->log.file) {
        walset_settle(&s->log.set, s->log.file, s->log.wal.size - s->log.base);
        logw_close(&s->log.wal);
    }
    s->log.wal = w;
    s->log.file = file;
    s->log.base = w.size;
    s->log.hinted = w.size;
    /* everything logged so far is durable: the old log whole, the new one holds nothing yet */
    pthread_mutex_lock(&s->log.sync_mu);
    s->log.synced_file = file;
    s->log.synced_upto = w.size;
    pthread_cond_broadcast(&s->log.sync_cv);
    pthread_mutex_unlock(&s->log.sync_mu);
    return LTR_OK;
}

/* Group commit: one fsync covers every writer waiting at that moment. */
int store_log_sync_to(ltr_store *s, uint64_t file, uint64_t end)
{
    int rc = LTR_OK;
    pthread_mutex_lock(&s->log.sync_mu);
    while (!rc && (s->log.synced_file < file || (s->log.synced_file == file && s->log.synced_upto < end))) {
        if (s->log.syncing) {
            pthread_cond_wait(&s->log.sync_cv, &s->log.sync_mu);
            continue;
        }
        s->log.syncing = 1;
        pthread_mutex_unlock(&s->log.sync_mu);
        pthread_mutex_lock(&s->write_mu);
        uint64_t f = s->log.file, upto = s->log.wal.size;
        int fd = -1;
        if (__atomic_load_n(&s->log.resync, __ATOMIC_ACQUIRE)) {
            rc = wal_sync_locked(s, s->log.wal.fd); /* rarely: after a failure, writers wait */
        } else {
            rc = io_dup(s->log.wal.fd, &fd, s->log.wal.path); /* the log may be rotated and
                                                                 closed while we sync */
        }
        pthread_mutex_unlock(&s->write_mu);
        if (fd >= 0) {
            rc = blob_sync(s); /* the value logs first: the log's pointers lead there */
            if (!rc)
                rc = io_fsync_fd(fd, "the log");
            if (rc) /* the next sync writes the log again first */
                __atomic_store_n(&s->log.resync, 1, __ATOMIC_RELEASE);
            io_close(fd);
        }
        pthread_mutex_lock(&s->log.sync_mu);
        s->log.syncing = 0;
        if (!rc && (f > s->log.synced_file || (f == s->log.synced_file && upto > s->log.synced_upto))) {
            s->log.synced_file = f;
            s->log.synced_upto = upto;
        }
        pthread_cond_broadcast(&s->log.sync_cv);
    }
    pthread_mutex_unlock(&s->log.sync_mu);
    return rc;
}

int store_sync_log(ltr_store *s)
{
    if (!s->o.use_log || s->o.read_only)
        return LTR_OK;
    pthread_mutex_lock(&s->write_mu);
    uint64_t file = s->log.file, end = s->log.wal.size;
    pthread_mutex_unlock(&s->write_mu);
    return file ? store_log_sync_to(s, file, end) : LTR_OK;
}

/* Writes the pending piece of a record being logged. */
#define LOG_PIECE (256u << 10) /* log payload encoded and written at a time (logfile.h) */

static int log_piece(ltr_store *s)
{
    int rc = s->log.enc.len ? logw_part(&s->log.wal, s->log.enc.data, s->log.enc.len) : LTR_OK;
    s->log.enc.len = 0;
    return rc;
}

/* Logs an item too large for a piece straight from the caller's buffers. */
static int log_large_item(ltr_store *s, const uint8_t *key, uint32_t klen, const uint8_t *val,
                          uint32_t vlen, int kind)
{
    uint8_t h[ITEM_HEADER_MAX];
    size_t n = item_header(h, klen, vlen, kind);
    int rc = log_piece(s);
    if (!rc)
        rc = logw_part(&s->log.wal, h, n);
    if (!rc && klen)
        rc = logw_part(&s->log.wal, key, klen);
    if (!rc && kind != ITEM_TOMBSTONE && vlen)
        rc = logw_part(&s->log.wal, val, vlen);
    return rc;
}

/* Appends a batch to the log as one BATCH record (docs/format/log.md), encoded and written a
 * piece at a time. On failure the log is as it was. */
static int log_record(ltr_store *s, const uint8_t *kdata, const int64_t *koffs,
                      const uint8_t *vdata, const int64_t *voffs, const uint8_t *kinds, size_t n)
{
    uint64_t len = varint_len(n);
    for (size_t i = 0; i < n; i++)
        len += item_size((uint32_t)(koffs[i + 1] - koffs[i]), (uint32_t)(voffs[i + 1] - voffs[i]),
                         kinds ? kinds[i] : ITEM_VALUE);
    if (len > LOG_MAX_PAYLOAD)
        return ltr_fail(LTR_EINVAL, "a batch of %llu bytes is over the 1 GiB limit of one write",
                        (unsigned long long)len);
    s->log.enc.len = 0;
    int rc = buf_reserve(&s->log.enc, LOG_PIECE);
    if (!rc)
        rc = logw_begin(&s->log.wal, 1, (size_t)len);
    if (rc)
        return rc;
    s->log.enc.len = put_varint(s->log.enc.data, n);
    for (size_t i = 0; i < n && !rc; i++) {
        uint32_t kl = (uint32_t)(koffs[i + 1] - koffs[i]), vl = (uint32_t)(voffs[i + 1] - voffs[i]);
        int kind = kinds ? kinds[i] : ITEM_VALUE;
        size_t size = item_size(kl, vl, kind);
        if (size > LOG_PIECE) {
            rc = log_large_item(s, kdata + koffs[i], kl, vdata + voffs[i], vl, kind);
            continue;
        }
        if (s->log.enc.len + size > LOG_PIECE)
            rc = log_piece(s);
        if (!rc)
            s->log.enc.len += item_encode(s->log.enc.data + s->log.enc.len, kdata + koffs[i], kl,
                                      vdata + voffs[i], vl, kind);
    }
    if (!rc)
        rc = log_piece(s);
    return rc ? rc : logw_end(&s->log.wal); /* (a failed part took the record back itself) */
}

static uint64_t log_rotate_max = LOG_ROTATE_MAX, log_disk_max = LOG_DISK_MAX; /* tests */

void ltr_test_log_limits(int64_t rotate_bytes, int64_t disk_bytes)
{
    __atomic_store_n(&log_rotate_max, rotate_bytes < 0 ? LOG_ROTATE_MAX : (uint64_t)rotate_bytes,
                     __ATOMIC_RELAXED);
    __atomic_store_n(&log_disk_max, disk_bytes < 0 ? LOG_DISK_MAX : (uint64_t)disk_bytes,
                     __ATOMIC_RELAXED);
}

uint64_t store_log_disk_max(void) { return __atomic_load_n(&log_disk_max, __ATOMIC_RELAXED); }

/* A log is rotated once it holds this much: several memtables share one log, so a flush costs
 * no log rotation (each rotation fsyncs the old log and the directory). */
static uint64_t log_rotate_bytes(const ltr_store *s)
{
    uint64_t b = 32 * s->o.memtable_bytes, max = __atomic_load_n(&log_rotate_max, __ATOMIC_RELAXED);
    return b < max ? b : max;
}

int store_logging(const ltr_store *s) { return s->o.use_log && !s->o.read_only; }

/* Whether the current log is full: the next record goes to a new one. */
int store_log_full(const ltr_store *s)
{
    return store_logging(s) && s->log.wal.size - s->log.base >= log_rotate_bytes(s);
}

uint64_t store_log_disk_bytes(ltr_store *s)
{
    return walset_bytes(&s->log.set) + (s->log.file ? s->log.wal.size - s->log.base : 0);
}

void store_log_release_below(ltr_store *s, uint64_t floor)
{
    walset_release_below(&s->log.set, floor);
    /* unlinked by the checkpoint thread, not here: freeing a large log's blocks takes long
     * enough (docs/benchmarks.md) that flush() should not wait for it. A read-only open reads its logs through descriptors
     * it opened before reading the manifest, so no grace period is needed. */
    store_wake_background(s);
}

void store_log_recovered(ltr_store *s, uint64_t file)
{
    char *p = store_file(s->dir, file, "wal");
    uint64_t size = 0, base = store_log_base(); /* (tests: the hole before the first record) */
    if (p && io_size_path(p, &size) == 0)
        walset_add(&s->log.set, file, size > base ? size - base : 0);
    free(p);
}

static uint64_t log_base; /* ltr_test_log_base */

void ltr_test_log_base(uint64_t offset) { __atomic_store_n(&log_base, offset, __ATOMIC_RELAXED); }

uint64_t store_log_base(void) { return __atomic_load_n(&log_base, __ATOMIC_RELAXED); }

/* Appends the batch as one record, counts its bytes and starts their writeback every
 * LOG_WRITEBACK_STEP bytes, so the fsync at a rotation or a sync write waits less. */
int store_log_batch(ltr_store *s, const uint8_t *kdata, const int64_t *koffs,
                    const uint8_t *vdata, const int64_t *voffs, const uint8_t *kinds, size_t n)
{
    uint64_t start = s->log.wal.size;
    int rc = log_record(s, kdata, koffs, vdata, voffs, kinds, n);
    uint64_t end = s->log.wal.size; /* (start after a failure) */
    s->log.logged += end - start;
    store_count(s, C_WRITTEN_LOG, end - start);
    if (end - s->log.hinted >= LOG_WRITEBACK_STEP) {
        io_sync_range(s->log.wal.fd, s->log.hinted, end - s->log.hinted);
        s->log.hinted = end;
    }
    return rc;
}

int store_log_has_released(ltr_store *s) { return walset_has_dead(&s->log.set); }

void store_log_remove_released(ltr_store *s) { walset_unlink_dead(&s->log.set, s->dir); }

void store_log_close(ltr_store *s)
{
    if (s->log.file)
        logw_close(&s->log.wal);
    ltr_buf_free(&s->log.enc);
    walset_free(&s->log.set);
}
