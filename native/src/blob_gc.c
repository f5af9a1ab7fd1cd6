/* blob_gc.c: value-log garbage collection (docs/design.md "Value logs"). An overwritten or
 * deleted large value leaves its record in a value log, which goes whole once no table file
 * lists it; but shadowed pointers stay in their tables until compactions or last-level
 * collections drop them, so a value log holding a few live records among many dead ones would
 * stay. So a worker looks at the value logs below the memtables' floor, oldest first: it looks
 * the keys of a file's first records up (GC_SAMPLE bytes), and when less than BLOB_GC_RATIO of
 * those bytes are their keys' newest versions, it reads the file through and writes again each
 * record that still is (rewrite_current: checked and written under the writer's lock), then
 * syncs the log. The file is then relocated: every pointer to it left in a table is shadowed
 * (reads never follow one), and it goes two checkpoints later (blob.c, blobset_unheld). A
 * file found mostly live is looked at again once as much was written to value logs. Only with
 * the log (a bulk store's moved records would be durable only once flushed). Depends on
 * store_log.c, store_read.c and store_write.c. */
#include <stdlib.h>
#include <string.h>

#include "lsmtrie_testing.h"
#include "store_int.h"

#define GC_CHUNK (4u << 20)     /* bytes of a value log read at a time */
#define GC_BATCH_BYTES (8u << 20) /* records checked and written again as one batch */
#define GC_BATCH_ITEMS 1024       /* ... and at most this many: the writer's lock is held
                                     across their lookups */
#define GC_SAMPLE (1u << 20)      /* a value log's first bytes whose records decide whether it
                                     is collected (looked up one by one) */

static int gc_on = 1; /* ltr_test_blob_gc */

void ltr_test_blob_gc(int on) { __atomic_store_n(&gc_on, on, __ATOMIC_RELAXED); }

int blob_gc_due(const ltr_store *s)
{
    uint64_t number;
    if (!__atomic_load_n(&gc_on, __ATOMIC_RELAXED))
        return 0;
    /* Not while the memtables are full: its writes would not go in (a flush wakes the worker).
     * Only beside a flusher thread: a write may wait for a flush, which a store of one level
     * leaves to this worker. */
    return s->blobs.set && store_logging(s) && !s->bg.error && s->bg.flusher_started &&
           s->mem.nimm < MAX_IMMUTABLE &&
           blobset_gc_pick(s->blobs.set, s->blobs.floor,
                           __atomic_load_n(&s->blobs.written, __ATOMIC_RELAXED), &number);
}

/* The records read so far, as a batch, and where each was. */
typedef struct gc_batch {
    ltr_buf keys, values, koffs, voffs, ptrs, scratch;
    size_t n;
    uint64_t first; /* the file offset of its first record */
} gc_batch;

static void batch_reset(gc_batch *b)
{
    int64_t zero = 0;
    b->keys.len = b->values.len = b->koffs.len = b->voffs.len = b->ptrs.len = 0;
    b->n = 0;
    buf_append(&b->koffs, &zero, sizeof zero); /* (reserved at start: cannot fail) */
    buf_append(&b->voffs, &zero, sizeof zero);
}

static void batch_free(gc_batch *b)
{
    ltr_buf_free(&b->keys);
    ltr_buf_free(&b->values);
    ltr_buf_free(&b->koffs);
    ltr_buf_free(&b->voffs);
    ltr_buf_free(&b->ptrs);
    ltr_buf_free(&b->scratch);
}

static int batch_add(gc_batch *b, const uint8_t *key, uint32_t klen, const uint8_t *val,
                     uint32_t vlen, const blob_ptr *where)
{
    uint8_t ptr[BLOB_POINTER_SIZE];
    blob_ptr_encode(ptr, where);
    int rc = buf_append(&b->keys, key, klen);
    if (!rc)
        rc = buf_append(&b->values, val, vlen);
    int64_t ko = (int64_t)b->keys.len, vo = (int64_t)b->values.len;
    if (!rc)
        rc = buf_append(&b->koffs, &ko, sizeof ko);
    if (!rc)
        rc = buf_append(&b->voffs, &vo, sizeof vo);
    if (!rc)
        rc = buf_append(&b->ptrs, ptr, sizeof ptr);
    if (!rc)
        b->n++;
    return rc;
}

/* Of n items read from a value log (ptrs: where each was, 20 bytes apiece), writes again those
 * whose key's newest item is still that pointer, as one batch under the writer's lock (so no
 * write comes between the check and the write); *written of them. LTR_EAGAIN, writing nothing,
 * when the memtables are full: it never waits for a flush (its worker may be the one to do it).
 * scratch: a buffer for the batch kept. */
static int rewrite_current(ltr_store *s, const uint8_t *kdata, const int64_t *koffs,
                           const uint8_t *vdata, const int64_t *voffs, const uint8_t *ptrs,
                           size_t n, ltr_buf *scratch, size_t *written)
{
    *written = 0;
    pthread_mutex_lock(&s->write_mu);
    /* Never waits, for a flush (the caller may be the worker that would do it) or for log space
     * (a checkpoint, which close() stops); writes nothing while a load installs its tables or
     * after a background failure (latched already). */
    if (s->bg.error || s->blobs.gc_blocked || (s->bg.nworkers && s->mem.nimm >= MAX_IMMUTABLE) ||
        (walset_bytes(&s->log.set) > 0 && store_log_disk_bytes(s) > store_log_disk_max())) {
        pthread_mutex_unlock(&s->write_mu);
        return LTR_EAGAIN;
    }
    int rc;
    /* the items still current, packed into scratch: keys, then values, then both offsets */
    size_t keep = 0, bytes = (size_t)(koffs[n] + voffs[n]);
    if ((rc = buf_reserve(scratch, bytes + 8 + 16 * (n + 1)))) {
        pthread_mutex_unlock(&s->write_mu);
        return rc;
    }
    uint8_t *kd = scratch->data, *vd = kd + koffs[n];
    int64_t *ko = (int64_t *)(kd + bytes + (8 - bytes % 8) % 8);
    int64_t *vo = ko + n + 1;
    ko[0] = vo[0] = 0;
    for (size_t i = 0; !rc && i < n; i++) {
        uint8_t now[BLOB_POINTER_SIZE];
        int64_t kl = koffs[i + 1] - koffs[i], vl = voffs[i + 1] - voffs[i];
        int r = store_newest_pointer(s, kdata + koffs[i], (uint32_t)kl, now);
        if (r < 0)
            rc = r;
        if (r <= 0 || memcmp(now, ptrs + i * BLOB_POINTER_SIZE, BLOB_POINTER_SIZE))
            continue;
        memcpy(kd + ko[keep], kdata + koffs[i], (size_t)kl);
        memcpy(vd + vo[keep], vdata + voffs[i], (size_t)vl);
        ko[keep + 1] = ko[keep] + kl;
        vo[keep + 1] = vo[keep] + vl;
        keep++;
    }
    uint64_t file = 0, end = 0;
    int swapped = 0;
    if (!rc && keep)
        rc = store_write_locked(s, kd, ko, vd, vo, NULL, keep, &file, &end, &swapped);
    pthread_mutex_unlock(&s->write_mu);
    if (swapped)
        store_wake_background(s);
    *written = rc ? 0 : keep;
    return rc;
}

/* Writes the batch's still-current records again; 0, or LTR_EAGAIN when the memtables are
 * full (the step ends there and the file is picked again later). */
static int batch_flush(ltr_store *s, gc_batch *b)
{
    size_t written = 0;
    int rc = b->n ? rewrite_current(s, b->keys.data, (const int64_t *)b->koffs.data,
                                          b->values.data, (const int64_t *)b->voffs.data,
                                          b->ptrs.data, b->n, &b->scratch, &written)
                  : LTR_OK;
    batch_reset(b);
    return rc;
}

/* Parses one record at buf[0..avail): its size in *size, 0 when it runs past avail (read
 * more), <0 when it is not a record. */
static int parse_record(const uint8_t *buf, size_t avail, item_view *it, uint64_t *size)
{
    uint64_t kl, vl;
    size_t a, c;
    if (avail < 6)
        return 0;
    if (!(a = get_varint(buf + 4, buf + avail, &kl)) || !(c = get_varint(buf + 4 + a, buf + avail, &vl)))
        return avail >= VLOG_RECORD_MAX_HEADER ? -1 : 0;
    if (kl > LTR_MAX_KEY || vl > LTR_MAX_VALUE)
        return -1;
    *size = 4 + a + c + kl + vl;
    if (*size > avail)
        return 0;
    if (get_u32(buf) != ltr_crc32c(0, buf + 4, (size_t)*size - 4))
        return -1;
    it->key = buf + 4 + a + c;
    it->klen = (uint32_t)kl;
    it->value = it->key + kl;
    it->vlen = (uint32_t)vl;
    return 1;
}

/* Parses the records of chunk[0, got) (file offset `off`) into the batch, writing it whenever
 * it is full: *used bytes of whole records; *stop when what follows is not a record (a
 * crash's torn tail: the rest of the file is left alone). */
static int parse_chunk(ltr_store *s, uint64_t number, const uint8_t *chunk, size_t got,
                       uint64_t off, gc_batch *b, size_t *used, int *stop)
{
    *used = 0;
    *stop = 0;
    for (;;) {
        item_view it;
        uint64_t size;
        int r = parse_record(chunk + *used, got - *used, &it, &size);
        if (r <= 0) {
            *stop = r < 0;
            return LTR_OK;
        }
        if (!b->n)
            b->first = off + *used;
        blob_ptr where = {number, off + *used, it.vlen};
        int rc = batch_add(b, it.key, it.klen, it.value, it.vlen, &where);
        *used += (size_t)size;
        if (!rc && (b->values.len >= GC_BATCH_BYTES || b->n >= GC_BATCH_ITEMS))
            rc = batch_flush(s, b);
        if (rc)
            return rc;
    }
}

/* Reads file `number` through from *off, writing its current records again; on LTR_EAGAIN
 * *off is where to go on (the first record not written yet). */
static int relocate(ltr_store *s, uint64_t number, uint64_t *off)
{
    gc_batch b = {0};
    ltr_buf chunk = {0};
    int rc = buf_reserve(&chunk, GC_CHUNK);
    if (!rc && !(rc = buf_reserve(&b.koffs, 8)))
        rc = buf_reserve(&b.voffs, 8);
    if (!rc)
        batch_reset(&b);
    while (!rc) {
        size_t got, used;
        int stop;
        if ((rc = blobset_read_at(s->blobs.set, number, *off, chunk.data, chunk.cap, &got)) || !got) {
            if (rc == LTR_EINVAL) /* gone meanwhile (no table listed it any more): done */
                rc = LTR_OK;
            break;
        }
        rc = parse_chunk(s, number, chunk.data, got, *off, &b, &used, &stop);
        if (rc || stop)
            break;
        if (!used && got < chunk.cap) /* the file ends inside a record (a torn tail) */
            break;
        if (!used) /* a record larger than the chunk */
            rc = buf_reserve(&chunk, chunk.cap * 2);
        *off += used;
    }
    if (!rc)
        rc = batch_flush(s, &b);
    if (rc == LTR_EAGAIN)
        *off = b.first;
    batch_free(&b);
    ltr_buf_free(&chunk);
    return rc;
}

/* The share of the bytes of file `number`'s first records (up to a chunk) that are still their
 * keys' newest versions, in *live (1 for a file with no whole record there). */
static int sample(ltr_store *s, uint64_t number, double *live)
{
    ltr_buf chunk = {0};
    uint64_t total = 0, current = 0;
    size_t got = 0, used = 0;
    int rc = buf_reserve(&chunk, GC_SAMPLE);
    if (!rc)
        rc = blobset_read_at(s->blobs.set, number, VLOG_HEADER_SIZE, chunk.data, chunk.cap, &got);
    if (rc == LTR_EINVAL) /* gone meanwhile: nothing to move */
        rc = LTR_OK, got = 0;
    while (!rc) {
        item_view it;
        uint64_t size;
        uint8_t now[BLOB_POINTER_SIZE], was[BLOB_POINTER_SIZE];
        if (parse_record(chunk.data + used, got - used, &it, &size) <= 0)
            break;
        blob_ptr_encode(was, &(blob_ptr){number, VLOG_HEADER_SIZE + used, it.vlen});
        int r = store_newest_pointer(s, it.key, it.klen, now);
        if (r < 0)
            rc = r;
        else if (r && !memcmp(now, was, sizeof now))
            current += size;
        total += size;
        used += (size_t)size;
    }
    ltr_buf_free(&chunk);
    *live = total ? (double)current / (double)total : 1.0;
    return rc;
}

int blob_gc_step(ltr_store *s)
{
    pthread_mutex_lock(&s->state_mu);
    uint64_t number = 0, written = __atomic_load_n(&s->blobs.written, __ATOMIC_RELAXED);
    int due = s->blobs.set && blobset_gc_pick(s->blobs.set, s->blobs.floor, written, &number);
    pthread_mutex_unlock(&s->state_mu);
    if (!due)
        return 0;
    /* a step that found the memtables full goes on where it stopped, without a new look */
    int resume = s->blobs.gc_file == number;
    double live = 0;
    int rc = resume ? LTR_OK : sample(s, number, &live);
    if (rc)
        return rc;
    if (!resume && live >= BLOB_GC_RATIO) {
        blobset_set_sampled(s->blobs.set, number, written); /* looked at again later */
        return 1;
    }
    uint64_t off = resume ? s->blobs.gc_off : VLOG_HEADER_SIZE;
    rc = relocate(s, number, &off);
    s->blobs.gc_file = rc == LTR_EAGAIN ? number : 0;
    s->blobs.gc_off = off;
    if (rc == LTR_EAGAIN)
        return 1;
    if (!rc) /* the moved records durable before the file may go (a crash would revive it) */
        rc = store_sync_log(s);
    if (rc)
        return rc;
    pthread_mutex_lock(&s->state_mu);
    uint64_t pass = s->blobs.collects;
    pthread_mutex_unlock(&s->state_mu);
    blobset_set_relocated(s->blobs.set, number, pass);
    return 1;
}
