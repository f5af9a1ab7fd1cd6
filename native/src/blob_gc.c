/* blob_gc.c: value-log garbage collection (docs/design.md "Value logs"). An overwritten or
 * deleted large value leaves its record in a value log, which goes whole once no table file
 * lists it; but shadowed pointers stay in their tables until compactions or last-level
 * collections drop them, so a value log holding a few live records among many dead ones would
 * stay. The store counts each value log's dead bytes as writes and flushes shadow its records
 * (blob_note_dead); a file the open found is sampled instead (its first GC_SAMPLE bytes' keys
 * looked up). A worker takes the least live file below the memtables' floor when under
 * BLOB_GC_RATIO live, or, when the value logs hold too much garbage, whatever its share
 * (GC_SPACE_RATIO below; writers wait while it is far behind): it reads the file through and
 * writes again each record that is still its key's newest version (batch_flush: checked and
 * written under the writer's lock), then syncs the log. The file is then relocated: every
 * pointer to it left in a table is shadowed, and it goes in the next removal pass below the
 * durable floor, which the checkpointer runs at once (blob.c, blobset_unheld); a lookup that
 * found such a pointer just before is told the file went and looks its key up again
 * (LTR_EMOVED, store_read.c). A file with a damaged record (or a torn tail) is never
 * relocated, since the records past it would not be moved: it goes once no table lists it.
 * Only with the log (a bulk store's moved records would be durable only once flushed).
 * Depends on blob.c, store_log.c, store_read.c and store_write.c. */
#include <stdlib.h>
#include <string.h>

#include "lsmtrie_testing.h"
#include "store_int.h"

#define GC_CHUNK (4u << 20)     /* bytes of a value log read at a time */
#define GC_BATCH_BYTES (8u << 20) /* records checked and written again as one batch */
#define GC_BATCH_ITEMS 1024       /* ... and at most this many: the writer's lock is held
                                     across their lookups */
#define GC_SAMPLE (1u << 20)      /* the first bytes of a value log the open found whose
                                     records' keys estimate its live share (looked up one by
                                     one) */
/* Space: once the value logs hold more than GC_SPACE_RATIO x their live bytes (as counted) plus
 * a file, the GC moves the least live file whatever BLOB_GC_RATIO says (but not one at least
 * GC_PRESSED_MAX live): overwrites spread over many files leave each above BLOB_GC_RATIO for
 * long while together they hold as much garbage as live data (issue 23 part 1). Past
 * GC_SPACE_RATIO x their live bytes plus GC_WAIT_FILES files, writers of large values wait for
 * the GC (blobs.behind). */
#define GC_SPACE_RATIO 1.25
#define GC_PRESSED_MAX 0.9
#define GC_WAIT_FILES 2

static int gc_on = 1; /* ltr_test_blob_gc */

void ltr_test_blob_gc(int on) { __atomic_store_n(&gc_on, on, __ATOMIC_RELAXED); }

/* Whether the GC may run now. Not while the memtables are full: its writes would not go in (a
 * flush wakes the worker). Only with the log: in bulk mode the moved records would be durable
 * only once flushed, and the file they left goes before. Only beside a flusher thread: a write
 * may wait for a flush, which a store of one level leaves to this worker. */
static int gc_allowed(const ltr_store *s)
{
    return __atomic_load_n(&gc_on, __ATOMIC_RELAXED) && s->blobs.set && store_logging(s) &&
           !s->bg.error && s->bg.flusher_started && s->mem.nimm < MAX_IMMUTABLE;
}

/* The GC's choice of a file (blobset_gc_pick), for a store whose floor state_mu guards. */
static int choose(const ltr_store *s, gc_pick *pick)
{
    gc_policy p = {
        .below = s->blobs.floor,
        .written = __atomic_load_n(&s->blobs.written, __ATOMIC_RELAXED),
        .resample_min = blob_file_size(),
        .share = BLOB_GC_RATIO,
        .ratio = GC_SPACE_RATIO,
        .slack = blob_file_size(),
        .pressed_max = GC_PRESSED_MAX,
        .wait_slack = GC_WAIT_FILES * blob_file_size(),
    };
    return blobset_gc_pick(s->blobs.set, &p, pick);
}

/* Sets whether the GC is behind (state_mu held): writers of large values wait while it is
 * (store_write.c), and the worker runs the GC first (store_bg.c). */
static void note_behind(ltr_store *s, int allowed, const gc_pick *pick)
{
    int blocked = __atomic_load_n(&s->blobs.gc_blocked, __ATOMIC_RELAXED);
    __atomic_store_n(&s->blobs.behind, allowed && pick->behind && !blocked, __ATOMIC_RELAXED);
    __atomic_store_n(&s->blobs.looked_at, __atomic_load_n(&s->blobs.written, __ATOMIC_RELAXED),
                     __ATOMIC_RELAXED);
}

int blob_gc_due(ltr_store *s)
{
    gc_pick pick = {0};
    int due = gc_allowed(s) && choose(s, &pick);
    note_behind(s, due, &pick);
    return due;
}

/* Looks again after a step, waking the writers when the GC is no longer behind. */
static void refresh_behind(ltr_store *s)
{
    pthread_mutex_lock(&s->state_mu);
    int was = __atomic_load_n(&s->blobs.behind, __ATOMIC_RELAXED);
    blob_gc_due(s);
    int now = __atomic_load_n(&s->blobs.behind, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&s->state_mu);
    if (was && !now)
        store_wake_writers(s);
}

/* 1 when the key's newest item is the pointer ptr (20 bytes), 0 when not, <0 on error. */
static int is_current(ltr_store *s, const uint8_t *key, uint32_t klen, const uint8_t *ptr)
{
    uint8_t now[BLOB_POINTER_SIZE];
    int r = store_newest_pointer(s, key, klen, now);
    return r <= 0 ? r : !memcmp(now, ptr, BLOB_POINTER_SIZE);
}

/* The records read so far, as a batch (items), where each was (ptrs: 20 bytes apiece), and
 * the file offset of the first. */
typedef struct gc_batch {
    ltr_items items, kept; /* kept: those still current, written again */
    ltr_buf ptrs;
    uint64_t first;
} gc_batch;

static int batch_reset(gc_batch *b)
{
    b->ptrs.len = 0;
    return items_reset(&b->items);
}

static void batch_free(gc_batch *b)
{
    ltr_items_free(&b->items);
    ltr_items_free(&b->kept);
    ltr_buf_free(&b->ptrs);
}

static int batch_add(gc_batch *b, const vlog_record *r, const blob_ptr *where)
{
    uint8_t ptr[BLOB_POINTER_SIZE];
    blob_ptr_encode(ptr, where);
    if (!b->items.n)
        b->first = where->offset;
    int rc = items_push(&b->items, &(item_view){.key = r->key, .klen = r->klen,
                                                .value = r->value, .vlen = r->vlen});
    return rc ? rc : buf_append(&b->ptrs, ptr, sizeof ptr);
}

/* Writes again the batch's records whose keys' newest items are still their pointers, as one
 * batch under the writer's lock (so no write comes between the check and the write), and
 * empties the batch. LTR_EAGAIN, writing nothing: it never waits, for a flush (the caller may
 * be the worker that would do it) or for log space (a checkpoint, which close() stops); nor does
 * it write while a load installs its tables or after a background failure (latched already). */
static int batch_flush(ltr_store *s, gc_batch *b)
{
    const ltr_items *in = &b->items;
    if (!in->n)
        return LTR_OK;
    /* writers hold write_mu across large appends and take it again at once: they let the GC
     * in first (wait_for_blob_space), or it would wait behind them for seconds */
    __atomic_store_n(&s->blobs.gc_waiting, 1, __ATOMIC_RELAXED);
    pthread_mutex_lock(&s->write_mu);
    __atomic_store_n(&s->blobs.gc_waiting, 0, __ATOMIC_RELAXED);
    pthread_cond_broadcast(&s->write_cv);
    int rc = items_reset(&b->kept);
    if (!rc && (s->bg.error || s->blobs.gc_blocked ||
                (s->bg.nworkers && s->mem.nimm >= MAX_IMMUTABLE) ||
                (walset_bytes(&s->log.set) > 0 && store_log_disk_bytes(s) > store_log_disk_max())))
        rc = LTR_EAGAIN;
    const int64_t *ko = (const int64_t *)in->koffs.data, *vo = (const int64_t *)in->voffs.data;
    for (size_t i = 0; !rc && i < in->n; i++) {
        item_view it = {.key = in->keys.data + ko[i], .klen = (uint32_t)(ko[i + 1] - ko[i]),
                        .value = in->values.data + vo[i], .vlen = (uint32_t)(vo[i + 1] - vo[i])};
        int r = is_current(s, it.key, it.klen, b->ptrs.data + i * BLOB_POINTER_SIZE);
        rc = r < 0 ? r : r ? items_push(&b->kept, &it) : LTR_OK;
    }
    uint64_t file, end;
    int swapped = 0;
    const ltr_items *k = &b->kept;
    if (!rc && k->n)
        rc = store_write_locked(s, k->keys.data, (const int64_t *)k->koffs.data, k->values.data,
                                (const int64_t *)k->voffs.data, NULL, k->n, &file, &end,
                                &swapped);
    pthread_mutex_unlock(&s->write_mu);
    if (swapped)
        store_wake_background(s);
    int reset = batch_reset(b);
    return rc ? rc : reset;
}

/* Parses the records of chunk[0, got) (file offset `off`) into the batch, writing it whenever
 * it is full: *used bytes of whole records; *stop when what follows is not a record (damaged,
 * or a crash's torn tail). */
static int parse_chunk(ltr_store *s, uint64_t number, const uint8_t *chunk, size_t got,
                       uint64_t off, gc_batch *b, size_t *used, int *stop)
{
    *used = 0;
    *stop = 0;
    for (;;) {
        vlog_record r;
        int p = vlog_record_parse(chunk + *used, got - *used, &r);
        if (p <= 0) {
            *stop = p < 0;
            return LTR_OK;
        }
        blob_ptr where = {number, off + *used, r.vlen};
        int rc = batch_add(b, &r, &where);
        *used += (size_t)r.size;
        if (!rc && (b->items.values.len >= GC_BATCH_BYTES || b->items.n >= GC_BATCH_ITEMS))
            rc = batch_flush(s, b);
        if (rc)
            return rc;
    }
}

/* How a relocation ended (relocate's *ended). */
enum { READ_THROUGH, NOT_A_RECORD, FILE_GONE };

/* Reads file `number` through from *off, writing its current records again; on LTR_EAGAIN
 * *off is where to go on (the first record not written yet). *ended: READ_THROUGH, or
 * NOT_A_RECORD when it stopped at bytes that are no whole record (a damaged record, a damaged
 * length that claims more than the file holds, a torn tail: the records past them, which may
 * live, were not moved), or FILE_GONE (no table listed it any more). */
static int relocate(ltr_store *s, uint64_t number, uint64_t *off, int *ended)
{
    *ended = READ_THROUGH;
    gc_batch b = {0};
    ltr_buf chunk = {0};
    int rc = buf_reserve(&chunk, GC_CHUNK);
    if (!rc)
        rc = batch_reset(&b);
    while (!rc) {
        size_t got, used;
        int stop;
        if ((rc = blobset_read_at(s->blobs.set, number, *off, chunk.data, chunk.cap, &got)) || !got) {
            if (rc == LTR_EINVAL) /* gone meanwhile (no table listed it any more): done */
                rc = LTR_OK, *ended = FILE_GONE;
            break;
        }
        rc = parse_chunk(s, number, chunk.data, got, *off, &b, &used, &stop);
        /* stop: not a record; or no whole record where the file ends before the chunk does: a
         * length claiming more bytes than the file has (damaged) or a torn tail */
        if (!rc && (stop || (!used && got < chunk.cap))) {
            *ended = NOT_A_RECORD;
            break;
        }
        if (rc)
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
        vlog_record r;
        uint8_t was[BLOB_POINTER_SIZE];
        if (vlog_record_parse(chunk.data + used, got - used, &r) <= 0)
            break;
        blob_ptr_encode(was, &(blob_ptr){number, VLOG_HEADER_SIZE + used, r.vlen});
        int cur = is_current(s, r.key, r.klen, was);
        if (cur < 0)
            rc = cur;
        current += cur > 0 ? r.size : 0;
        total += r.size;
        used += (size_t)r.size;
    }
    ltr_buf_free(&chunk);
    *live = total ? (double)current / (double)total : 1.0;
    return rc;
}

static int step(ltr_store *s);

int blob_gc_step(ltr_store *s)
{
    int rc = step(s);
    refresh_behind(s);
    return rc;
}

static int step(ltr_store *s)
{
    /* (the worker calls this whenever it has nothing else to do, woken for any reason: the
     * conditions of blob_gc_due hold here too) */
    pthread_mutex_lock(&s->state_mu);
    gc_pick pick = {0};
    uint64_t written = __atomic_load_n(&s->blobs.written, __ATOMIC_RELAXED);
    int due = gc_allowed(s) && choose(s, &pick);
    pthread_mutex_unlock(&s->state_mu);
    if (!due)
        return 0;
    uint64_t number = pick.number;
    if (!pick.take) { /* a file opened with the store: how much of it lives, roughly */
        double live = 1;
        int rc = sample(s, number, &live);
        if (!rc)
            blobset_set_sampled(s->blobs.set, number, written, live);
        return rc ? rc : 1;
    }
    /* a step that found the memtables full goes on where it stopped */
    int resume = s->blobs.gc_file == number;
    int rc;
    uint64_t off = resume ? s->blobs.gc_off : VLOG_HEADER_SIZE;
    int ended;
    rc = relocate(s, number, &off, &ended);
    s->blobs.gc_file = rc == LTR_EAGAIN ? number : 0;
    s->blobs.gc_off = off;
    if (rc == LTR_EAGAIN)
        return 1;
    if (!rc) /* the moved records durable before the file may go (a crash would revive it) */
        rc = store_sync_log(s);
    if (rc)
        return rc;
    if (ended == FILE_GONE)
        return 1;
    if (ended == NOT_A_RECORD) { /* kept whole: what follows is read through its pointers */
        blobset_set_damaged(s->blobs.set, number);
        __atomic_fetch_add(&s->since_open.blob_gc_damaged, 1, __ATOMIC_RELAXED);
        return 1;
    }
    __atomic_fetch_add(&s->since_open.blob_gc_moved, 1, __ATOMIC_RELAXED);
    blobset_set_relocated(s->blobs.set, number);
    pthread_mutex_lock(&s->state_mu);
    s->blobs.collect_asked = 1; /* (the checkpointer looks at least every tenth of a second) */
    pthread_mutex_unlock(&s->state_mu);
    return 1;
}
