/* store_write.c: the write path. A batch is checked, logged as one record (store_log.c) and
 * staged in the active memtable under one exclusive hold of mem.lock; memtables and logs are
 * rotated before a write when due, and writers wait while the immutable memtables or the logs on
 * disk are at their bounds. Recovery replays log records through store_apply_items. Depends on
 * memtable.c, store_log.c, store_flush.c, store_stats.c and blob.c. */
#include <stdlib.h>

#include "bucket.h"
#include "store_int.h"

/* On failure nothing changed. */
int store_rotate(ltr_store *s)
{
    if (!ltr_hbuild_items(s->mem.active->b))
        return LTR_OK;
    int rc = store_log_full(s) ? store_log_open_new(s) : LTR_OK;
    if (rc)
        return rc;
    pthread_rwlock_wrlock(&s->mem.lock);
    rc = s->log.file ? memtable_swap(s, s->log.file, s->log.wal.size)
                     : memtable_swap(s, s->mem.active->min_log, s->mem.active->min_off);
    pthread_rwlock_unlock(&s->mem.lock);
    store_wake_background(s);
    return rc;
}

/* Whether the active memtable holds as many items as a working_memory cap lets it. */
static int memtable_counted_full(const ltr_store *s)
{
    uint64_t cap = s->mem.budget.memtable_items;
    return cap && ltr_hbuild_items(s->mem.active->b) >= cap;
}

/* Whether the active memtable should be rotated before the next write: it is full, or the log
 * written since it started is MEMTABLE_LOG_SPAN times its size (it would hold the log floor
 * while the log grows: rewrites of the same keys fill the log, not the memtable). */
static int memtable_due(const ltr_store *s)
{
    const memtable *a = s->mem.active;
    const store_budget *b = &s->mem.budget;
    uint64_t blobs = __atomic_load_n(&s->blobs.written, __ATOMIC_RELAXED) - a->blob_mark;
    return ltr_hbuild_data_bytes(a->b) >= b->memtable_bytes || memtable_counted_full(s) ||
           (store_logging(s) && s->log.logged - a->log_mark >= MEMTABLE_LOG_SPAN * b->memtable_bytes) ||
           blobs >= BLOB_MEMTABLE_SPAN;
}

/* Before a write (write_mu held): a due memtable is rotated (with the log when that is full), a
 * full log alone otherwise, whatever the size of the writes: a batch larger than a memtable
 * swaps memtables inside it, and the log must still move on between batches. On failure the
 * write has not been logged or applied at all. */
static int rotate_for_write(ltr_store *s)
{
    if (memtable_due(s) && ltr_hbuild_items(s->mem.active->b))
        return store_rotate(s);
    return store_log_full(s) ? store_log_open_new(s) : LTR_OK;
}

/* Waits (write_mu held) until fewer than MAX_IMMUTABLE memtables await a flush. Recovery
 * (no worker yet) never waits: it flushes everything itself afterwards. */
static void wait_for_room(ltr_store *s)
{
    while (s->bg.nworkers && s->mem.nimm >= MAX_IMMUTABLE && !s->bg.error && !s->bg.stopping) {
        store_count_stall(s);
        pthread_cond_wait(&s->write_cv, &s->write_mu);
    }
}

/* Waits (write_mu held) while the value-log GC waits for write_mu, and, when the batch has
 * values for the value logs, while the GC is behind: the value logs hold more garbage than
 * their bound (blob_gc.c). But not while the logs on disk are over their bound: the GC's writes
 * wait for a checkpoint then, which wait_for_log_space asks for. A quarter of a value log after
 * the GC last looked, the worker is woken (once) to look again. The flag is looked at every
 * 10 ms (the worker sets it without write_mu). The GC's writes never come here. */
static void wait_for_blob_space(ltr_store *s, const int64_t *voffs, const uint8_t *deleted,
                                size_t n)
{
    uint32_t least = s->o.min_blob_size;
    int large = 0, stalled = 0;
    for (size_t i = 0; least && !large && i < n; i++)
        large = !(deleted && deleted[i]) && voffs[i + 1] - voffs[i] >= (int64_t)least;
    uint64_t written = __atomic_load_n(&s->blobs.written, __ATOMIC_RELAXED);
    uint64_t looked = __atomic_load_n(&s->blobs.looked_at, __ATOMIC_RELAXED);
    if (large && written - looked >= blob_file_size() / 4 &&
        __atomic_compare_exchange_n(&s->blobs.looked_at, &looked, written, 0, __ATOMIC_RELAXED,
                                    __ATOMIC_RELAXED))
        store_wake_background(s);
    for (;;) {
        int behind = large && __atomic_load_n(&s->blobs.behind, __ATOMIC_RELAXED) &&
                     !__atomic_load_n(&s->blobs.gc_blocked, __ATOMIC_RELAXED) &&
                     !(walset_bytes(&s->log.set) > 0 &&
                       store_log_disk_bytes(s) > store_log_disk_max());
        if ((!behind && !__atomic_load_n(&s->blobs.gc_waiting, __ATOMIC_RELAXED)) ||
            s->bg.error || s->bg.stopping || !s->bg.flusher_started || s->bg.paused)
            return;
        if (behind && !stalled++)
            store_count_stall(s);
        else if (behind) /* the worker looks again (it may sleep while the GC may not run) */
            store_wake_background(s);
        struct timespec until = store_deadline(10000000); /* 10 ms */
        pthread_cond_timedwait(&s->write_cv, &s->write_mu, &until);
    }
}

/* Waits (write_mu held) while the logs on disk hold more than their bound and some of them,
 * older than the current log, could go: a checkpoint whose floor passes them releases them, and
 * the checkpoint thread unlinks them and wakes the writers. The active memtable is rotated first
 * when it starts in an older log, since it would hold the floor there. Recovery never waits. */
static int wait_for_log_space(ltr_store *s)
{
    int rc = LTR_OK;
    while (!rc && s->bg.nworkers && store_logging(s) && walset_bytes(&s->log.set) > 0 &&
           store_log_disk_bytes(s) > store_log_disk_max()) {
        if (s->bg.error)
            return store_bg_error(s);
        if (s->mem.active->min_log < s->log.file && ltr_hbuild_items(s->mem.active->b)) {
            wait_for_room(s);
            rc = s->bg.error ? store_bg_error(s) : store_rotate(s);
            continue;
        }
        store_count_stall(s);
        __atomic_fetch_add(&s->log.waiters, 1, __ATOMIC_RELAXED); /* a checkpoint is due now */
        store_wake_background(s);
        pthread_cond_wait(&s->write_cv, &s->write_mu);
        __atomic_fetch_sub(&s->log.waiters, 1, __ATOMIC_RELAXED);
    }
    return rc;
}

/* Stages one item in the active memtable (mem.lock exclusive). A memtable that fills up is
 * swapped for a fresh one, which starts at the batch's record (log_file, log_off). */
static int apply_one(ltr_store *s, const uint8_t *key, uint32_t klen, const uint8_t *val,
                     uint32_t vlen, int kind, uint64_t log_file, uint64_t log_off, int *swapped)
{
    uint8_t d[16];
    ltr_murmur3_128(key, klen, s->o.hash_seed, d);
    key_hash h = hb_from_digest(d);
    item_view was; /* the item this one replaces in the memtable: a pointer is now dead */
    int r = memtable_counted_full(s) ? 0
                                      : hbuild_stage(s->mem.active->b, h, key, klen, val, vlen,
                                                     kind, &was);
    if (r > 0 && was.kind == ITEM_POINTER)
        blob_note_dead(s, klen, was.value);
    if (r != 0)
        return r < 0 ? r : LTR_OK;
    /* The fresh memtable's items start with this batch's record: once the full memtable is in
     * a table, replay may start there (the batch's first items, replayed again, are the same
     * items, newer than the table). Without a log it keeps the full one's position. */
    int rc = log_file ? memtable_swap(s, log_file, log_off)
                      : memtable_swap(s, s->mem.active->min_log, s->mem.active->min_off);
    if (rc)
        return rc;
    *swapped = 1;
    r = hbuild_stage(s->mem.active->b, h, key, klen, val, vlen, kind, NULL);
    return r < 0 ? r : LTR_OK;
}

/* Stages a decoded log record's items in the memtables under one exclusive hold of mem.lock,
 * so readers see all of it or none. */
int store_apply_items(ltr_store *s, const uint8_t *p, const uint8_t *end, uint64_t n,
                       uint64_t log_file, uint64_t log_off, int *swapped)
{
    int rc = LTR_OK;
    pthread_rwlock_wrlock(&s->mem.lock);
    for (uint64_t i = 0; i < n && !rc; i++) {
        item_view it;
        size_t k = item_decode(p, end, &it);
        if (!k) {
            rc = ltr_fail(LTR_ECORRUPT, "a log record holds a malformed item");
            break;
        }
        rc = apply_one(s, it.key, it.klen, it.value, it.vlen, it.kind, log_file, log_off,
                       swapped);
        p += k;
    }
    pthread_rwlock_unlock(&s->mem.lock);
    return rc;
}

/* The same for a batch straight from the caller's buffers (kinds: bucket.h's, NULL: values). */
static int apply_batch(ltr_store *s, const uint8_t *kdata, const int64_t *koffs,
                       const uint8_t *vdata, const int64_t *voffs, const uint8_t *kinds,
                       size_t n, uint64_t log_file, uint64_t log_off, int *swapped)
{
    int rc = LTR_OK;
    pthread_rwlock_wrlock(&s->mem.lock);
    for (size_t i = 0; i < n && !rc; i++) {
        int kind = kinds ? kinds[i] : ITEM_VALUE, del = kind == ITEM_TOMBSTONE;
        rc = apply_one(s, kdata + koffs[i], (uint32_t)(koffs[i + 1] - koffs[i]),
                       del ? NULL : vdata + voffs[i],
                       del ? 0 : (uint32_t)(voffs[i + 1] - voffs[i]), kind, log_file, log_off,
                       swapped);
    }
    pthread_rwlock_unlock(&s->mem.lock);
    return rc;
}

int store_check_batch(const int64_t *koffs, size_t klen_total, const int64_t *voffs,
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

int store_write_locked(ltr_store *s, const uint8_t *kdata, const int64_t *koffs,
                       const uint8_t *vdata, const int64_t *voffs, const uint8_t *deleted,
                       size_t n, uint64_t *file, uint64_t *end, int *swapped)
{
    int rc = rotate_for_write(s);
    if (!rc)
        rc = wait_for_log_space(s);
    const uint8_t *kinds = NULL; /* large values to the value log first: the log points there */
    if (!rc)
        rc = blob_separate(s, kdata, koffs, &vdata, &voffs, deleted, n, &kinds);
    uint64_t start = s->log.wal.size;
    *file = s->log.file;
    *end = 0;
    if (!rc && *file) {
        rc = store_log_batch(s, kdata, koffs, vdata, voffs, kinds, n);
        *end = s->log.wal.size;
    }
    if (!rc)
        rc = apply_batch(s, kdata, koffs, vdata, voffs, kinds, n, *file, start, swapped);
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
    int rc = store_check_batch(koffs, klen_total, voffs, vlen_total, deleted, n, &user);
    if (rc || n == 0)
        return rc;
    kdata = kdata ? kdata : none;
    vdata = vdata ? vdata : none;
    pthread_mutex_lock(&s->write_mu);
    wait_for_blob_space(s, voffs, deleted, n); /* (first: wait_for_room's check holds after) */
    wait_for_room(s);
    if (s->bg.error)
        rc = store_bg_error(s);
    uint64_t file = 0, end = 0;
    int swapped = 0;
    if (!rc)
        rc = store_write_locked(s, kdata, koffs, vdata, voffs, deleted, n, &file, &end, &swapped);
    if (!rc)
        store_count(s, C_USER_BYTES, user);
    pthread_mutex_unlock(&s->write_mu);
    if (swapped)
        store_wake_background(s);
    if (!rc && file && (sync < 0 ? s->o.sync : sync))
        rc = store_log_sync_to(s, file, end);
    return rc;
}

int store_flush_all_now(ltr_store *s)
{
    int rc = LTR_OK;
    pthread_mutex_lock(&s->write_mu);
    pthread_rwlock_wrlock(&s->mem.lock);
    if (ltr_hbuild_items(s->mem.active->b))
        rc = memtable_swap(s, s->mem.active->min_log, s->mem.active->min_off);
    pthread_rwlock_unlock(&s->mem.lock);
    pthread_mutex_unlock(&s->write_mu);
    while (!rc && s->mem.imm)
        rc = store_flush_oldest(s);
    return rc;
}
