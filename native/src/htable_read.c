/* htable_read.c: opening and validating an HTable, and looking keys up. A lookup costs one bucket
 * read in the common case: the filter answers most absent keys from memory, the cached HashMark
 * records send migrated keys straight to their bucket, and every page read is checksummed. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bloom.h"
#include "coding.h"
#include "hashbits.h"
#include "htable_format.h"
#include "fcache.h"
#include "htable_read.h"
#include "io.h"
#include "mapguard.h"

/* ---- opening ---- */

static int parse_footer(ltr_htable *t, const uint8_t *ft)
{
    const char *p = t->path;
    if (memcmp(ft + FT_MAGIC, HT_MAGIC, 8) != 0)
        return ltr_fail(LTR_ECORRUPT, "%s is not an HTable (bad magic)", p);
    if (get_u32(ft + FT_FOOTER_CRC) != ltr_crc32c(0, ft, FT_FOOTER_CRC))
        return ltr_fail(LTR_ECORRUPT, "%s: footer checksum mismatch", p);
    uint16_t version = get_u16(ft + FT_VERSION);
    if (version != HT_VERSION && version != HT_VERSION_BLOBS)
        return ltr_fail(LTR_EVERSION, "%s: format version %u, this build reads versions %d and %d",
                        p, version, HT_VERSION, HT_VERSION_BLOBS);
    t->nblobs = version == HT_VERSION_BLOBS ? get_u32(ft + FT_BLOB_REFS) : 0;
    t->buckets = get_u32(ft + FT_BUCKETS);
    t->seed = get_u32(ft + FT_SEED);
    t->bloom_bits = get_u32(ft + FT_BLOOM_BITS);
    t->probes = get_u32(ft + FT_BLOOM_PROBES);
    t->items = get_u64(ft + FT_ITEMS);
    t->tombstones = get_u64(ft + FT_TOMBSTONES);
    t->data_bytes = get_u64(ft + FT_DATA_BYTES);
    t->ovf_off = get_u64(ft + FT_OVF_OFFSET);
    t->ovf_bytes = get_u64(ft + FT_OVF_BYTES);
    t->ovf_items = get_u32(ft + FT_OVF_ITEMS);
    t->records = get_u32(ft + FT_RECORDS);
    t->built_cached = get_u32(ft + FT_CACHED);
    uint64_t trailer = get_u64(ft + FT_TRAILER_OFFSET);
    if (get_u16(ft + FT_FOOTER_SIZE) != HT_FOOTER_SIZE ||
        get_u32(ft + FT_BUCKET_SIZE) != LTR_BUCKET_SIZE || t->buckets < 1 ||
        t->buckets > LTR_MAX_BUCKETS || t->bloom_bits > 64 || t->probes > 30 ||
        (t->bloom_bits && !t->probes) || t->built_cached > t->records ||
        t->records > t->buckets || t->ovf_off != (uint64_t)t->buckets * LTR_BUCKET_SIZE ||
        t->ovf_bytes > t->file_bytes || trailer != t->ovf_off + t->ovf_bytes ||
        trailer > t->file_bytes - HT_FOOTER_SIZE ||
        t->tombstones > t->items || (version == HT_VERSION && get_u32(ft + FT_RESERVED)) ||
        (version == HT_VERSION_BLOBS && !t->nblobs))
        return ltr_fail(LTR_ECORRUPT, "%s: footer fields are inconsistent", p);
    return LTR_OK;
}

static int by_source(const void *a, const void *b)
{
    uint32_t x = get_u16(a), y = get_u16(b);
    return x < y ? -1 : x > y;
}

/* Keeps the first `keep` records of the trailer (the most useful), sorted by source. */
static int load_records(ltr_htable *t, uint8_t *rec, uint32_t keep)
{
    for (uint32_t r = 0; r < t->records; r++) {
        uint32_t s = get_u16(rec + r * HT_RECORD_SIZE), d = get_u16(rec + r * HT_RECORD_SIZE + 2);
        if (s >= t->buckets || d >= t->buckets || s == d)
            return ltr_fail(LTR_ECORRUPT, "%s: migration record %u is invalid", t->path, r);
    }
    qsort(rec, keep, HT_RECORD_SIZE, by_source);
    t->ncached = keep;
    for (uint32_t r = 0; r < keep; r++) {
        t->rec_src[r] = get_u16(rec + r * HT_RECORD_SIZE);
        t->rec_dst[r] = get_u16(rec + r * HT_RECORD_SIZE + 2);
        t->rec_mark[r] = get_u32(rec + r * HT_RECORD_SIZE + 4);
        if (r && t->rec_src[r] == t->rec_src[r - 1])
            return ltr_fail(LTR_ECORRUPT, "%s: two records for bucket %u", t->path, t->rec_src[r]);
    }
    return LTR_OK;
}

static int load_overflow_index(ltr_htable *t, const uint8_t *e)
{
    uint32_t n = t->ovf_items;
    for (uint32_t j = 0; j < n; j++, e += HT_OVF_ENTRY_SIZE) {
        t->ovf_h2[j] = get_u64(e);
        t->ovf_at[j] = get_u64(e + 8);
        t->ovf_len[j] = get_u32(e + 16);
        uint64_t end = t->ovf_off + t->ovf_bytes; /* footer checks keep this from wrapping */
        if (t->ovf_len[j] < 6 || t->ovf_at[j] < t->ovf_off || t->ovf_at[j] > end ||
            t->ovf_len[j] > end - t->ovf_at[j] ||
            (j && t->ovf_h2[j] < t->ovf_h2[j - 1]))
            return ltr_fail(LTR_ECORRUPT, "%s: overflow index entry %u is invalid", t->path, j);
    }
    return LTR_OK;
}

/* The value-log references (version 2): ascending file numbers. */
static int load_blob_refs(ltr_htable *t, const uint8_t *e)
{
    if (!t->nblobs)
        return LTR_OK;
    t->blobs = malloc(sizeof *t->blobs * t->nblobs);
    if (!t->blobs)
        return ltr_fail(LTR_ENOMEM, "out of memory opening %s", t->path);
    for (uint32_t j = 0; j < t->nblobs; j++, e += HT_BLOB_REF_SIZE) {
        t->blobs[j] = (blob_ref){get_u64(e), get_u64(e + 8)};
        if (!t->blobs[j].file || (j && t->blobs[j].file <= t->blobs[j - 1].file))
            return ltr_fail(LTR_ECORRUPT, "%s: value-log reference %u is invalid", t->path, j);
    }
    return LTR_OK;
}

static int load_filters(ltr_htable *t, const uint8_t *offs, const uint8_t *bits, size_t nbits)
{
    uint32_t nb = t->buckets;
    for (uint32_t k = 0; k < nb; k++)
        if (get_u32(offs + 4 * k) > get_u32(offs + 4 * (k + 1)))
            return ltr_fail(LTR_ECORRUPT, "%s: filter offsets decrease at bucket %u", t->path, k);
    if (get_u32(offs) != 0 || get_u32(offs + 4 * nb) != nbits)
        return ltr_fail(LTR_ECORRUPT, "%s: filter offsets do not match the filter bytes", t->path);
    if (!t->foff)
        return LTR_OK; /* no filters: every lookup reads its bucket */
    for (uint32_t k = 0; k <= nb; k++)
        t->foff[k] = get_u32(offs + 4 * k);
    memcpy(t->fbits, bits, nbits);
    return LTR_OK;
}

/* One block for the arrays a table keeps in memory, carved in the order a lookup reads them
 * (HashMark records, filter offsets, filter bits; the overflow index last): one allocation per
 * open, and a table's metadata together however the heap was used meanwhile. */
static int carve_arrays(ltr_htable *t, uint32_t keep, size_t nbits)
{
    int filters = !(t->flags & LTR_OPEN_NO_FILTERS) && t->bloom_bits != 0;
    size_t nr = keep + 1, no = (size_t)t->ovf_items + 1, nf = filters ? t->buckets + 1 : 0;
    size_t at[8], sz[8] = {2 * nr, 2 * nr, 4 * nr, 4 * nf, filters ? nbits : 0, 8 * no, 8 * no,
                           4 * no};
    size_t total = 0;
    for (int i = 0; i < 8; i++) {
        at[i] = total;
        total += (sz[i] + 7) & ~(size_t)7;
    }
    uint8_t *m = malloc(total);
    if (!m)
        return ltr_fail(LTR_ENOMEM, "out of memory opening %s", t->path);
    t->meta = m;
    t->rec_src = (uint16_t *)(m + at[0]);
    t->rec_dst = (uint16_t *)(m + at[1]);
    t->rec_mark = (uint32_t *)(m + at[2]);
    t->foff = filters ? (uint32_t *)(m + at[3]) : NULL;
    t->fbits = filters ? m + at[4] : NULL;
    t->ovf_h2 = (uint64_t *)(m + at[5]);
    t->ovf_at = (uint64_t *)(m + at[6]);
    t->ovf_len = (uint32_t *)(m + at[7]);
    return LTR_OK;
}

static int load_trailer(ltr_htable *t, abuf *b, uint64_t trailer_at, uint32_t trailer_crc,
                        int32_t max_cached)
{
    uint64_t len = t->file_bytes - HT_FOOTER_SIZE - trailer_at;
    uint64_t fixed = (uint64_t)t->records * HT_RECORD_SIZE +
                     (uint64_t)t->ovf_items * HT_OVF_ENTRY_SIZE + 4ull * (t->buckets + 1) +
                     (uint64_t)t->nblobs * HT_BLOB_REF_SIZE;
    if (len < fixed)
        return ltr_fail(LTR_ECORRUPT, "%s: trailer is too short", t->path);
    uint8_t *tr;
    int rc = table_read_range(t, b, trailer_at, len, &tr);
    if (!rc && ltr_crc32c(0, tr, len) != trailer_crc)
        rc = ltr_fail(LTR_ECORRUPT, "%s: trailer checksum mismatch", t->path);
    uint32_t keep = max_cached < 0 ? t->built_cached
                  : (uint32_t)max_cached < t->records ? (uint32_t)max_cached : t->records;
    uint8_t *ovf = tr + (uint64_t)t->records * HT_RECORD_SIZE;
    uint8_t *offs = ovf + (uint64_t)t->ovf_items * HT_OVF_ENTRY_SIZE;
    uint8_t *bits = offs + 4ull * (t->buckets + 1);
    if (!rc)
        rc = carve_arrays(t, keep, len - fixed);
    if (!rc)
        rc = load_records(t, tr, keep);
    if (!rc)
        rc = load_overflow_index(t, ovf);
    if (!rc)
        rc = load_filters(t, offs, bits, len - fixed);
    if (!rc)
        rc = load_blob_refs(t, bits + (len - fixed));
    return rc;
}

/* Reads the footer and trailer of the table in [base, base + file_bytes) of t->fd, and maps
 * those bytes unless it reads with pread. */
static int load_table(ltr_htable *t, int32_t max_cached)
{
    if (t->file_bytes < LTR_BUCKET_SIZE + HT_FOOTER_SIZE)
        return ltr_fail(LTR_ECORRUPT, "%s is too small (%llu bytes) to be an HTable", t->path,
                        (unsigned long long)t->file_bytes);
    abuf b = {0}; /* the footer's bytes, then the trailer's */
    uint8_t *ft;
    int rc = table_read_range(t, &b, t->file_bytes - HT_FOOTER_SIZE, HT_FOOTER_SIZE, &ft);
    if (!rc)
        rc = parse_footer(t, ft);
    if (!rc)
        rc = load_trailer(t, &b, get_u64(ft + FT_TRAILER_OFFSET), get_u32(ft + FT_TRAILER_CRC),
                          max_cached);
    abuf_free(&b);
    if (!rc && !(t->flags & LTR_OPEN_PREAD)) {
        rc = mapguard_install(); /* reads of the mapping run under map guards */
        const void *m = rc ? NULL : io_map_read(t->fd, t->base, t->file_bytes, 1);
        if (rc)
            return rc;
        if (!m)
            return ltr_fail_errno(errno, "cannot map %s", t->path);
        t->map = m;
    }
    return rc;
}

static int is_direct(const ltr_htable *t) { return (t->flags & LTR_OPEN_DIRECT) != 0; }

static int open_file(ltr_htable *t, int32_t max_cached)
{
    t->fd = io_open_read_as(t->path, is_direct(t));
    if (t->fd < 0)
        return is_direct(t) && errno == EINVAL ? io_direct_refused(t->path)
                                               : ltr_fail_errno(errno, "cannot open %s", t->path);
    io_stat sb;
    int rc = io_fstat(t->fd, t->path, &sb);
    if (rc)
        return rc;
    t->file_bytes = sb.size;
    t->dev = sb.dev;
    t->ino = sb.ino;
    return load_table(t, max_cached);
}

static ltr_htable *table_new(const char *name, uint32_t flags)
{
    ltr_htable *t = aligned_alloc(_Alignof(ltr_htable), sizeof *t); /* a multiple of it */
    if (t)
        memset(t, 0, sizeof *t);
    if (!t || !(t->path = strdup(name))) {
        free(t);
        ltr_fail(LTR_ENOMEM, "out of memory opening %s", name);
        return NULL;
    }
    t->fd = -1;
    t->slot = FC_NO_SLOT;
    /* a mapping reads through the page cache: a direct table reads with pread */
    t->flags = flags & LTR_OPEN_DIRECT ? flags | LTR_OPEN_PREAD : flags;
    return t;
}

int ltr_htable_open_at(int fd, const char *name, uint64_t offset, uint64_t length,
                       uint32_t flags, int32_t max_cached, ltr_htable **out)
{
    *out = NULL;
    if (offset % LTR_BUCKET_SIZE)
        return ltr_fail(LTR_EINVAL, "a table's offset in %s must be a multiple of %d, not %llu",
                        name, LTR_BUCKET_SIZE, (unsigned long long)offset);
    if (flags & LTR_OPEN_DIRECT) /* the descriptor is the caller's, opened as the caller chose */
        return ltr_fail(LTR_EINVAL, "%s: a table inside a file is not opened with "
                        "LTR_OPEN_DIRECT", name);
    io_stat sb;
    int rc = io_fstat(fd, name, &sb);
    if (rc)
        return rc;
    if (offset > sb.size || length > sb.size - offset)
        return ltr_fail(LTR_ECORRUPT, "%s holds %llu bytes, not the table's [%llu, %llu)", name,
                        (unsigned long long)sb.size, (unsigned long long)offset,
                        (unsigned long long)(offset + length));
    ltr_htable *t = table_new(name, flags);
    if (!t)
        return LTR_ENOMEM;
    t->fd = fd;
    t->fd_shared = 1;
    t->base = offset;
    t->file_bytes = length;
    t->dev = sb.dev;
    t->ino = sb.ino;
    rc = load_table(t, max_cached);
    if (rc) {
        ltr_htable_close(t);
        return rc;
    }
    *out = t;
    return LTR_OK;
}

int htable_open_in(const char *path, uint32_t flags, int32_t max_cached, fcache *fc,
                   ltr_htable **out)
{
    *out = NULL;
    ltr_htable *t = table_new(path, flags);
    if (!t)
        return LTR_ENOMEM;
    int rc = open_file(t, max_cached);
    if (!rc && fc)
        rc = fcache_admit(fc, t);
    if (rc) {
        ltr_htable_close(t);
        return rc;
    }
    *out = t;
    return LTR_OK;
}

int ltr_htable_open(const char *path, uint32_t flags, int32_t max_cached, ltr_htable **out)
{
    return htable_open_in(path, flags, max_cached, NULL, out);
}

void ltr_htable_close(ltr_htable *t)
{
    if (!t)
        return;
    if (t->fc)
        fcache_forget(t->fc, t);
    io_unmap(t->map, t->file_bytes);
    if (!t->fd_shared)
        io_close(t->fd);
    free(t->meta); /* every array (carve_arrays) */
    free(t->blobs);
    free(t->path);
    free(t);
}

void ltr_htable_info(const ltr_htable *t, ltr_table_info *o)
{
    memset(o, 0, sizeof *o);
    o->buckets = t->buckets;
    o->hash_seed = t->seed;
    o->bloom_bits_per_key = t->bloom_bits;
    o->bloom_probes = t->probes;
    o->items = t->items;
    o->tombstones = t->tombstones;
    o->data_bytes = t->data_bytes;
    o->file_bytes = t->file_bytes;
    o->overflow_items = t->ovf_items;
    o->records = t->records;
    o->cached_records = t->ncached;
    o->cached_record_bytes = 8ull * t->ncached; /* u16 source, u16 target, u32 hashmark */
    o->filter_bytes = t->foff ? 4ull * (t->buckets + 1) + t->foff[t->buckets] : 0;
    o->overflow_index_bytes = (uint64_t)HT_OVF_ENTRY_SIZE * t->ovf_items;
}

void ltr_htable_read_stats(const ltr_htable *t, ltr_read_stats *o)
{
    uint64_t v[ST_N];
    for (int i = 0; i < ST_N; i++)
        v[i] = __atomic_load_n(&t->stats[i], __ATOMIC_RELAXED);
    o->lookups = v[ST_LOOKUPS];
    o->found = v[ST_FOUND];
    o->deleted = v[ST_DELETED];
    o->bucket_reads = v[ST_BUCKET_READS];
    o->overflow_reads = v[ST_OVF_READS];
    o->filter_negatives = v[ST_FNEG];
    o->filter_false_positives = v[ST_FFP];
}

void ltr_htable_reset_stats(ltr_htable *t)
{
    for (int i = 0; i < ST_N; i++)
        __atomic_store_n(&t->stats[i], 0, __ATOMIC_RELAXED);
}

/* ---- reading pages and overflow records ---- */

int abuf_reserve(abuf *b, size_t n)
{
    if (n <= b->cap)
        return LTR_OK;
    size_t cap = (n + IO_DIRECT_ALIGN - 1) & ~(size_t)(IO_DIRECT_ALIGN - 1);
    uint8_t *p = aligned_alloc(IO_DIRECT_ALIGN, cap);
    if (!p)
        return ltr_fail(LTR_ENOMEM, "out of memory (%zu bytes)", cap);
    free(b->data);
    b->data = p;
    b->cap = cap;
    return LTR_OK;
}

void abuf_free(abuf *b)
{
    free(b->data);
    b->data = NULL;
    b->cap = 0;
}

int read_ctx_init(read_ctx *c)
{
    memset(c, 0, sizeof *c);
    c->page = aligned_alloc(LTR_BUCKET_SIZE, LTR_BUCKET_SIZE);
    c->own_page = 1;
    return c->page ? LTR_OK : ltr_fail(LTR_ENOMEM, "out of memory");
}

void read_ctx_init_page(read_ctx *c, uint8_t *page)
{
    memset(c, 0, sizeof *c);
    c->page = page;
}

void read_ctx_free(read_ctx *c)
{
    if (c->own_page)
        free(c->page);
    abuf_free(&c->span);
    ltr_buf_free(&c->scratch);
}

static void ctx_flush_stats(ltr_htable *t, read_ctx *c)
{
    for (int i = 0; i < ST_N; i++)
        if (c->stats[i])
            __atomic_fetch_add(&t->stats[i], c->stats[i], __ATOMIC_RELAXED);
}

static int fd_pread(const ltr_htable *t, int fd, void *p, size_t n, uint64_t off, size_t need)
{
    return is_direct(t) ? io_pread_direct(fd, p, n, t->base + off, need, t->path)
                        : io_pread(fd, p, n, t->base + off, t->path);
}

/* pread of n bytes at off (at least `need` of them: a direct read may pass the file's end). */
static int table_io(ltr_htable *t, void *p, size_t n, uint64_t off, size_t need)
{
    if (!t->fc)
        return fd_pread(t, t->fd, p, n, off, need);
    __atomic_add_fetch(&t->users, 1, __ATOMIC_SEQ_CST);
    int fd = __atomic_load_n(&t->fd, __ATOMIC_SEQ_CST);
    int rc = LTR_OK;
    if (fd < 0)
        rc = fcache_reopen(t->fc, t, &fd);
    else if (!__atomic_load_n(&t->used, __ATOMIC_RELAXED))
        __atomic_store_n(&t->used, 1, __ATOMIC_RELAXED);
    if (!rc)
        rc = fd_pread(t, fd, p, n, off, need);
    __atomic_sub_fetch(&t->users, 1, __ATOMIC_SEQ_CST);
    return rc;
}

int table_pread(ltr_htable *t, void *p, size_t n, uint64_t off) { return table_io(t, p, n, off, n); }

int table_read_range(ltr_htable *t, abuf *b, uint64_t off, size_t n, uint8_t **p)
{
    uint64_t lo = off, len = n;
    if (is_direct(t)) { /* the whole blocks around them; the file's end may come first */
        lo = off & ~(uint64_t)(IO_DIRECT_ALIGN - 1);
        len = (off + n - lo + IO_DIRECT_ALIGN - 1) & ~(uint64_t)(IO_DIRECT_ALIGN - 1);
    }
    int rc = abuf_reserve(b, len ? (size_t)len : 1);
    if (!rc)
        rc = table_io(t, b->data, (size_t)len, lo, (size_t)(off + n - lo));
    *p = b->data + (off - lo);
    return rc;
}

/* Compaction reads its inputs through the page cache even with direct_io: they are
 * mostly fresh tables, written since the last checkpoint and still dirty in the cache (most die
 * before the kernel writes them back: docs/design.md "Checkpoints"), and the kernel writes a
 * range back before it reads it with O_DIRECT; their pages go when the inputs are unlinked. */
int table_open_cached(const ltr_htable *t, int *fd)
{
    *fd = -1;
    return is_direct(t) ? fcache_open_again(t, 0, "to read it through the page cache", fd)
                        : LTR_OK;
}

const uint8_t *table_bucket(ltr_htable *t, read_ctx *c, uint32_t k, bucket_footer *f, int *rc)
{
    const uint8_t *page = c->page;
    uint64_t at = (uint64_t)k * LTR_BUCKET_SIZE;
    if (c->defer && !t->map) {
        *rc = LTR_EDEFER;
        return NULL;
    }
    c->stats[ST_BUCKET_READS]++;
    if (t->map)
        page = t->map + at;
    else if ((*rc = table_pread(t, c->page, LTR_BUCKET_SIZE, at)))
        return NULL;
    *rc = bucket_check(page, k, t->buckets, f, t->path);
    return *rc ? NULL : page;
}

int table_overflow_item(ltr_htable *t, read_ctx *c, uint32_t j, item_view *it)
{
    if (c->defer && !t->map)
        return LTR_EDEFER;
    c->stats[ST_OVF_READS]++;
    if (t->map)
        return table_overflow_check(t, j, t->map + t->ovf_at[j], it);
    uint8_t *rec;
    int rc = table_read_range(t, &c->span, t->ovf_at[j], t->ovf_len[j], &rec);
    return rc ? rc : table_overflow_check(t, j, rec, it);
}

int table_overflow_check(const ltr_htable *t, uint32_t j, const uint8_t *rec, item_view *it)
{
    uint32_t len = t->ovf_len[j];
    if (get_u32(rec) != ltr_crc32c(0, rec + 4, len - 4) || item_decode(rec + 4, rec + len, it) != len - 4)
        return ltr_fail(LTR_ECORRUPT, "%s: overflow record at offset %llu is corrupt", t->path,
                        (unsigned long long)t->ovf_at[j]);
    return LTR_OK;
}

/* ---- lookups ---- */

static int cached_record(const ltr_htable *t, uint32_t k)
{
    uint32_t lo = 0, hi = t->ncached;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (t->rec_src[mid] < k)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < t->ncached && t->rec_src[lo] == k ? (int)lo : -1;
}

/* 1 and *it if the key is in the overflow area, 0 if not, <0 on error. */
static int find_overflow(ltr_htable *t, read_ctx *c, key_hash h, const uint8_t *key,
                         uint32_t klen, item_view *it)
{
    uint32_t lo = 0, hi = t->ovf_items;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (t->ovf_h2[mid] < h.h2)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (; lo < t->ovf_items && t->ovf_h2[lo] == h.h2; lo++) {
        int rc = table_overflow_item(t, c, lo, it);
        if (rc)
            return rc;
        if (it->klen == klen && bytes_eq(it->key, key, klen))
            return 1;
    }
    return 0;
}

/* Follows migration records from bucket k to the bucket that must hold the key, and scans it. */
static int find_in_buckets(ltr_htable *t, read_ctx *c, key_hash h, const uint8_t *key,
                           uint32_t klen, uint32_t k, item_view *it)
{
    for (uint32_t hops = 0; hops <= t->buckets; hops++) {
        uint32_t rank = hb_rank(h, k);
        int r = cached_record(t, k);
        if (r >= 0 && rank >= t->rec_mark[r]) {
            k = t->rec_dst[r]; /* moved on: no need to read bucket k at all */
            continue;
        }
        bucket_footer f;
        int rc;
        const uint8_t *page = table_bucket(t, c, k, &f, &rc);
        if (!page)
            return rc;
        if ((f.flags & BK_FLAG_MIGRATED) && rank >= f.hashmark) {
            k = f.target;
            continue;
        }
        return bucket_find(page, &f, key, klen, it, t->path, k);
    }
    return ltr_fail(LTR_ECORRUPT, "%s: migration records form a loop", t->path);
}

int htable_probe(ltr_htable *t, read_ctx *c, key_hash h, const uint8_t *key, uint32_t klen,
                 item_view *it)
{
    int rc = t->ovf_items ? find_overflow(t, c, h, key, klen, it) : 0;
    if (rc == 0)
        rc = find_in_buckets(t, c, h, key, klen, hb_bucket(h, t->buckets), it);
    if (rc < 0)
        return rc;
    if (rc == 0) {
        if (t->foff)
            c->stats[ST_FFP]++;
        return LTR_ABSENT;
    }
    c->stats[it->kind == ITEM_TOMBSTONE ? ST_DELETED : ST_FOUND]++;
    return it->kind == ITEM_TOMBSTONE ? LTR_DELETED : LTR_FOUND;
}

int htable_lookup(ltr_htable *t, read_ctx *c, key_hash h, const uint8_t *key, uint32_t klen,
                  item_view *it)
{
    uint32_t k = hb_bucket(h, t->buckets);
    c->stats[ST_LOOKUPS]++;
    if (t->foff && !bloom_may_contain(t->fbits + t->foff[k], t->foff[k + 1] - t->foff[k],
                                      t->probes, hb_bloom(h))) {
        c->stats[ST_FNEG]++;
        return LTR_ABSENT;
    }
    return htable_probe(t, c, h, key, klen, it);
}

static int lookup(ltr_htable *t, read_ctx *c, const uint8_t *key, uint32_t klen, item_view *it)
{
    uint8_t d[16];
    ltr_murmur3_128(key, klen, t->seed, d);
    return htable_lookup(t, c, hb_from_digest(d), key, klen, it);
}

typedef struct get_call {
    ltr_htable *t;
    read_ctx *c;
    const uint8_t *kdata;
    const int64_t *koffs;
    size_t n;
    uint8_t *vbuf;         /* one key: its value goes here (vcap bytes), */
    size_t vcap, *vlen;
    int8_t *status;        /* many: their statuses, value ends and values */
    int64_t *voffs;
    ltr_buf *values;
} get_call;

/* A table read on its own has no value logs: a value kept in one is its store's to read. */
static int standalone(const ltr_htable *t, const item_view *it)
{
    return it->kind == ITEM_POINTER
               ? ltr_fail(LTR_EINVAL, "%s: a value of this table is kept in its store's value "
                          "log; read it through the store", t->path)
               : LTR_OK;
}

static int get_one(void *arg)
{
    get_call *g = arg;
    item_view it;
    int rc = lookup(g->t, g->c, g->kdata, (uint32_t)g->n, &it);
    if (rc < 0)
        return rc;
    *g->status = (int8_t)rc;
    if (rc == LTR_FOUND && (rc = standalone(g->t, &it)))
        return rc;
    return *g->status == LTR_FOUND ? copy_value(it.value, it.vlen, g->vbuf, g->vcap, g->vlen) : LTR_OK;
}

static int get_batch(void *arg)
{
    get_call *g = arg;
    int rc = LTR_OK;
    for (size_t i = 0; i < g->n && !rc; i++) {
        item_view it;
        int64_t kl = g->koffs[i + 1] - g->koffs[i];
        int s = kl > LTR_MAX_KEY ? LTR_ABSENT
                                 : lookup(g->t, g->c, g->kdata + g->koffs[i], (uint32_t)kl, &it);
        if (s < 0)
            return s;
        g->status[i] = (int8_t)s;
        if (s == LTR_FOUND && !(rc = standalone(g->t, &it)))
            rc = buf_append(g->values, it.value, it.vlen);
        g->voffs[i + 1] = (int64_t)g->values->len;
    }
    return rc;
}

/* Lookups read the mapping, when there is one, under a guard (mapguard.h). */
int ltr_htable_get(ltr_htable *t, const uint8_t *key, size_t klen, uint8_t *vbuf, size_t vcap,
                   size_t *vlen, int *status)
{
    *vlen = 0;
    *status = LTR_ABSENT;
    if (klen > LTR_MAX_KEY)
        return LTR_OK; /* such a key can never have been stored */
    read_ctx c;
    int rc = read_ctx_init(&c);
    if (rc)
        return rc;
    int8_t st = LTR_ABSENT;
    get_call g = {.t = t, .c = &c, .kdata = key, .n = klen, .vbuf = vbuf, .vcap = vcap,
                  .vlen = vlen, .status = &st};
    rc = map_guarded(t->map != NULL, t->path, get_one, &g);
    *status = st;
    ctx_flush_stats(t, &c);
    read_ctx_free(&c);
    return rc;
}

int ltr_htable_get_many(ltr_htable *t, const uint8_t *kdata, const int64_t *koffs,
                        size_t klen_total, size_t n, int8_t *status, int64_t *voffs,
                        ltr_buf *values)
{
    int rc = batch_check(koffs, n, klen_total, "keys");
    if (rc)
        return rc;
    read_ctx c;
    if ((rc = read_ctx_init(&c)))
        return rc;
    voffs[0] = (int64_t)values->len;
    get_call g = {.t = t, .c = &c, .kdata = kdata, .koffs = koffs, .n = n, .status = status,
                  .voffs = voffs, .values = values};
    rc = map_guarded(t->map != NULL, t->path, get_batch, &g);
    ctx_flush_stats(t, &c);
    read_ctx_free(&c);
    return rc;
}

int htable_filter(const ltr_htable *t, uint32_t b, const uint8_t **f, size_t *len)
{
    if (!t->foff || b >= t->buckets)
        return ltr_fail(LTR_EINVAL, "%s: no filter for bucket %u in memory", t->path, b);
    *f = t->fbits + t->foff[b];
    *len = t->foff[b + 1] - t->foff[b];
    return LTR_OK;
}

int htable_has_filters(const ltr_htable *t) { return t->foff != NULL; }
