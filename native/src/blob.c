/* blob.c: the store's value logs (docs/design.md "Value logs", docs/format/vlog.md). A write's
 * values of at least min_blob_size bytes are appended to the active value log before the batch
 * is logged; the write-ahead log and the memtable then hold 20-byte pointers in their place, so
 * memtables fill with small items, tables hold small items, and compactions move pointers.
 *
 * Durability: the value logs are fsynced before every fsync of the write-ahead log and before
 * every checkpoint, so a durable pointer leads to a durable record; recovery checks every record
 * the replayed logs point to, and treats a pointer to a record a crash lost like a torn tail.
 * Lifetime: a value log goes in a removal pass (after each checkpoint, and when the value-log
 * GC asks) once no table file lists it, or the GC moved its live records (blob_gc.c), and no
 * log recovery would replay can point into it (the durable floor). Depends on store_files.c and
 * store_stats.c. */
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "bucket.h"
#include "lsmtrie_testing.h"
#include "store_int.h"

static uint32_t max_open_test; /* ltr_test_blob_max_open */

void ltr_test_blob_max_open(uint32_t n) { __atomic_store_n(&max_open_test, n, __ATOMIC_RELAXED); }

/* Value-log descriptors kept open: a sixteenth of the limit on open files (the tables' cache
 * takes three quarters, fcache.c), at least 8. */
static uint32_t blob_max_open(void)
{
    uint32_t test = __atomic_load_n(&max_open_test, __ATOMIC_RELAXED);
    if (test)
        return test;
    struct rlimit rl;
    uint64_t soft = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? rl.rlim_cur : 1024;
    if (soft == RLIM_INFINITY || soft > (1u << 30))
        soft = 1u << 30;
    return soft / 16 > 8 ? (uint32_t)(soft / 16) : 8;
}

int blob_open(ltr_store *s)
{
    s->blobs.set = blobset_new(s->dir, s->o.direct_io, blob_max_open());
    if (!s->blobs.set)
        return ltr_fail(LTR_ENOMEM, "out of memory");
    s->blobs.floor = s->blobs.durable_floor = 0;
    return blobset_open_all(s->blobs.set, &s->blobs.seen);
}

int blob_open_counter(ltr_store *s)
{
    /* A reader listed the value logs before it read the manifest, but a writer at work may
     * have started one since and named a table pointing into it: the reader lists them again,
     * or that table's values read as missing. (A reader removes no value log, so the holds its
     * tables could not take on the new ones do not matter; a writer's lock keeps the
     * directory's value logs its own.) */
    uint64_t seen = 0;
    int rc = s->o.read_only && s->blobs.set ? blobset_open_all(s->blobs.set, &seen) : LTR_OK;
    if (seen > s->blobs.seen)
        s->blobs.seen = seen;
    /* a value log started after the last checkpoint is newer than the counter it recorded */
    if (s->blobs.seen >= s->next_file)
        s->next_file = s->blobs.seen + 1;
    return rc;
}

void blob_close(ltr_store *s)
{
    blobset_unref(s->blobs.set);
    s->blobs.set = NULL;
    ltr_buf_free(&s->blobs.enc);
    ltr_buf_free(&s->blobs.vals);
    ltr_buf_free(&s->blobs.offs);
    ltr_buf_free(&s->blobs.kinds);
}

/* ---- writing ---- */

static int kind_of(const uint8_t *deleted, size_t i)
{
    return deleted && deleted[i] ? ITEM_TOMBSTONE : ITEM_VALUE;
}

/* Whether the batch holds a value for the value log (its records' bytes in *bytes). */
static int wants_blob(const ltr_store *s, const int64_t *koffs, const int64_t *voffs,
                      const uint8_t *deleted, size_t n, uint64_t *bytes)
{
    uint32_t min = s->o.min_blob_size;
    *bytes = 0;
    for (size_t i = 0; min && i < n; i++) {
        int64_t vl = voffs[i + 1] - voffs[i];
        if (kind_of(deleted, i) == ITEM_VALUE && vl >= min)
            *bytes += blob_record_size((uint32_t)(koffs[i + 1] - koffs[i]), (uint32_t)vl);
    }
    return *bytes != 0;
}

static uint64_t file_bytes = BLOB_FILE_BYTES; /* tests: ltr_test_blob_file_bytes */

int blob_files_exist(ltr_store *s)
{
    uint64_t files = 0, bytes, open, live;
    if (s->blobs.set)
        blobset_counts(s->blobs.set, &files, &bytes, &open, &live);
    return files != 0;
}

uint64_t blob_file_size(void) { return __atomic_load_n(&file_bytes, __ATOMIC_RELAXED); }

void ltr_test_blob_file_bytes(uint64_t bytes)
{
    __atomic_store_n(&file_bytes, bytes ? bytes : BLOB_FILE_BYTES, __ATOMIC_RELAXED);
}

/* The active value log, a new one when there is none or it is full (write_mu held). */
static int active_log(ltr_store *s, uint64_t *file, uint64_t *at)
{
    *file = blobset_active(s->blobs.set, at);
    if (*file && *at < __atomic_load_n(&file_bytes, __ATOMIC_RELAXED))
        return LTR_OK;
    pthread_mutex_lock(&s->state_mu);
    uint64_t number = s->next_file++;
    pthread_mutex_unlock(&s->state_mu);
    int rc = blobset_start(s->blobs.set, number);
    *file = rc ? 0 : blobset_active(s->blobs.set, at);
    return rc;
}

/* Encodes value i's record at offset `at` of the value log and its pointer in vals. */
static void put_record(ltr_store *s, const uint8_t *key, uint32_t klen, const uint8_t *val,
                       uint32_t vlen, uint64_t file, uint64_t at)
{
    ltr_buf *e = &s->blobs.enc;
    uint8_t *rec = e->data + e->len;
    size_t h = 4 + put_varint(rec + 4, klen);
    h += put_varint(rec + h, vlen);
    if (klen)
        memcpy(rec + h, key, klen);
    if (vlen)
        memcpy(rec + h + klen, val, vlen);
    size_t size = h + klen + vlen;
    put_u32(rec, ltr_crc32c(0, rec + 4, size - 4));
    e->len += size;
    uint8_t ptr[BLOB_POINTER_SIZE];
    blob_ptr_encode(ptr, &(blob_ptr){file, at, vlen});
    buf_append(&s->blobs.vals, ptr, sizeof ptr); /* (reserved by the caller) */
}

/* Builds the batch with pointers (its arrays in s->blobs) and the records for the log. */
static int rebuild(ltr_store *s, const uint8_t *kdata, const int64_t *koffs, const uint8_t *vdata,
                   const int64_t *voffs, const uint8_t *deleted, size_t n, uint64_t file,
                   uint64_t at, uint64_t bytes)
{
    struct store_blobs *b = &s->blobs;
    b->enc.len = b->vals.len = b->offs.len = b->kinds.len = 0;
    int rc = buf_reserve(&b->enc, bytes);
    if (!rc)
        rc = buf_reserve(&b->vals, (size_t)(voffs[n] - voffs[0]) + 1);
    if (!rc)
        rc = buf_reserve(&b->offs, (n + 1) * sizeof(int64_t));
    if (!rc)
        rc = buf_reserve(&b->kinds, n + 1);
    if (rc)
        return rc;
    int64_t *offs = (int64_t *)b->offs.data;
    offs[0] = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t kl = (uint32_t)(koffs[i + 1] - koffs[i]), vl = (uint32_t)(voffs[i + 1] - voffs[i]);
        int kind = kind_of(deleted, i);
        if (kind == ITEM_VALUE && file && vl >= s->o.min_blob_size) {
            put_record(s, kdata + koffs[i], kl, vdata + voffs[i], vl, file, at + b->enc.len);
            kind = ITEM_POINTER;
        } else if (kind == ITEM_VALUE) {
            buf_append(&b->vals, vdata + voffs[i], vl);
        }
        b->kinds.data[i] = (uint8_t)kind;
        offs[i + 1] = (int64_t)b->vals.len;
    }
    return LTR_OK;
}

int blob_separate(ltr_store *s, const uint8_t *kdata, const int64_t *koffs,
                  const uint8_t **vdata, const int64_t **voffs, const uint8_t *deleted,
                  size_t n, const uint8_t **kinds)
{
    uint64_t bytes = 0, file = 0, at = 0;
    int rc = LTR_OK, any = s->blobs.set && wants_blob(s, koffs, *voffs, deleted, n, &bytes);
    int odd = 0; /* any nonzero byte deletes; the kinds the log takes are 0, 1 and 2 */
    for (size_t i = 0; deleted && i < n && !any; i++)
        odd |= deleted[i] > 1;
    *kinds = deleted;
    if (!any && !odd)
        return LTR_OK;
    if (any)
        rc = active_log(s, &file, &at);
    if (!rc)
        rc = rebuild(s, kdata, koffs, *vdata, *voffs, deleted, n, file, at, bytes + 1);
    if (!rc && any)
        rc = blobset_append(s->blobs.set, s->blobs.enc.data, s->blobs.enc.len, at);
    if (rc)
        return rc;
    if (any) {
        __atomic_fetch_add(&s->blobs.written, s->blobs.enc.len, __ATOMIC_RELAXED);
        store_count(s, C_WRITTEN_BLOBS, s->blobs.enc.len);
    }
    *vdata = s->blobs.vals.data;
    *voffs = (const int64_t *)s->blobs.offs.data;
    *kinds = s->blobs.kinds.data;
    return LTR_OK;
}

int blob_sync(ltr_store *s)
{
    return s->blobs.set ? blobset_sync(s->blobs.set) : LTR_OK;
}

int blob_sync_all(ltr_store *s)
{
    return s->blobs.set ? blobset_sync_all(s->blobs.set) : LTR_OK;
}

void blob_gc_block(ltr_store *s, int d)
{
    pthread_mutex_lock(&s->write_mu);
    __atomic_add_fetch(&s->blobs.gc_blocked, d, __ATOMIC_RELAXED); /* (read without write_mu too) */
    pthread_mutex_unlock(&s->write_mu);
}

/* ---- reading ---- */

uint32_t blob_value_len(const uint8_t *ptr)
{
    blob_ptr p;
    blob_ptr_decode(ptr, &p);
    return p.vlen;
}

int blob_copy_value(ltr_store *s, const uint8_t *key, uint32_t klen, const uint8_t *ptr,
                    uint8_t *dst, int from_table)
{
    blob_ptr p;
    blob_ptr_decode(ptr, &p);
    if (!s->blobs.set)
        return ltr_fail(LTR_ECORRUPT, "%s: a pointer into value log %08llu, which this store "
                        "does not have", s->dir, (unsigned long long)p.file);
    return blobset_read(s->blobs.set, &p, key, klen, dst, from_table);
}

int blob_append_value(ltr_store *s, const uint8_t *key, uint32_t klen, const uint8_t *ptr,
                      ltr_buf *out, int from_table)
{
    uint32_t vlen = blob_value_len(ptr);
    int rc = buf_reserve(out, (size_t)vlen + 1);
    if (!rc)
        rc = blob_copy_value(s, key, klen, ptr, out->data + out->len, from_table);
    if (!rc)
        out->len += vlen;
    return rc;
}

int blob_check_items(ltr_store *s, const uint8_t *p, const uint8_t *end, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        item_view it;
        size_t k = item_decode(p, end, &it);
        if (!k)
            return LTR_OK; /* (the replay reports the malformed item) */
        int rc = it.kind == ITEM_POINTER ? blob_copy_value(s, it.key, it.klen, it.value, NULL, 0)
                                         : LTR_OK;
        if (rc)
            return rc;
        p += k;
    }
    return LTR_OK;
}

/* ---- lifetime ---- */

int blob_removal_pinned(ltr_store *s) { return s->blobs.set && blobset_pinned(s->blobs.set); }

/* A removal pass (ckpt.mu held: checkpoint.c); 1 when a relocated file below the floor stayed
 * (a scan pinned the set, or no memory). */
int blob_collect(ltr_store *s)
{
    if (!s->blobs.set || s->o.read_only)
        return 0;
    pthread_mutex_lock(&s->state_mu);
    uint64_t below = s->blobs.durable_floor;
    pthread_mutex_unlock(&s->state_mu);
    uint64_t *dead;
    size_t n;
    if (blobset_unheld(s->blobs.set, below, &dead, &n))
        return 1; /* (out of memory: they wait for the next pass) */
    for (size_t i = 0; i < n; i++) {
        char *path;
        blobset_forget(s->blobs.set, dead[i], &path);
        if (path) /* as dropped tables: at once unless a read-only open holds the store */
            store_bury(s, path, 0, NULL);
    }
    free(dead);
    return blobset_moved_left(s->blobs.set, below);
}

void blob_note_dead(ltr_store *s, uint32_t klen, const uint8_t *ptr)
{
    blob_ptr p;
    blob_ptr_decode(ptr, &p);
    if (s->blobs.set)
        blobset_add_dead(s->blobs.set, p.file, blob_record_size(klen, p.vlen));
}

void blob_note_dead_list(ltr_store *s, const ltr_buf *pairs)
{
    const uint64_t *v = (const uint64_t *)pairs->data;
    for (size_t i = 0; s->blobs.set && i + 1 < pairs->len / sizeof *v; i += 2)
        blobset_add_dead(s->blobs.set, v[i], v[i + 1]);
}
