/* htable_write.c: turning staged items into an HTable file (docs/format/htable.md): place by
 * hash, build the per-bucket filters (before migration: migrated items stay in their home
 * bucket's filter), balance, pick the migration records worth caching, then write buckets,
 * overflow area, trailer and footer to a temporary file that is fsynced and renamed. */
#include <stdlib.h>
#include <string.h>

#include "bloom.h"
#include "bucket.h"
#include "coding.h"
#include "htable_build.h"
#include "htable_format.h"
#include "io.h"
#include "plan.h"

#define CHUNK_PAGES 256 /* buckets written per write() call: 1 MiB */

typedef struct filters {
    uint32_t *off; /* buckets + 1 */
    uint8_t *bits;
    uint32_t probes;
} filters;

static int filters_build(const ltr_hbuild *b, filters *f)
{
    uint32_t nb = b->o.buckets, bpk = b->o.bloom_bits_per_key;
    f->probes = bloom_probes_for(bpk);
    f->off = calloc(nb + 1, sizeof(uint32_t));
    if (!f->off)
        return ltr_fail(LTR_ENOMEM, "out of memory building filters");
    for (size_t i = 0; i < b->n; i++)
        f->off[hb_bucket(b->hash[i], nb) + 1]++;
    uint64_t total = 0;
    for (uint32_t k = 1; k <= nb; k++) {
        total += bloom_bytes_for(f->off[k], bpk);
        f->off[k] = (uint32_t)total;
    }
    f->bits = calloc(total ? total : 1, 1);
    if (!f->bits)
        return ltr_fail(LTR_ENOMEM, "out of memory building %llu filter bytes",
                        (unsigned long long)total);
    for (size_t i = 0; i < b->n; i++) {
        uint32_t k = hb_bucket(b->hash[i], nb);
        bloom_add(f->bits + f->off[k], f->off[k + 1] - f->off[k], f->probes, hb_bloom(b->hash[i]));
    }
    return LTR_OK;
}

static int by_flow(const void *a, const void *b)
{
    const mig_record *x = a, *y = b;
    if (x->flow != y->flow)
        return x->flow < y->flow ? 1 : -1;
    return x->source < y->source ? -1 : x->source > y->source;
}

/* Sorts the records by flow and returns how many to cache: the fewest such that lookups needing
 * an extra bucket read add up to at most 1% of the bucket-resident items. */
static uint32_t choose_cached(plan *p, uint32_t cap, uint64_t *extra_reads)
{
    qsort(p->records, p->nrecords, sizeof *p->records, by_flow);
    uint64_t rest = 0, allowed = (p->nitems - p->noverflow) / 100;
    for (uint32_t i = 0; i < p->nrecords; i++)
        rest += p->records[i].flow;
    uint32_t c = 0;
    while (c < p->nrecords && c < cap && rest > allowed)
        rest -= p->records[c++].flow;
    *extra_reads = rest;
    return c;
}

#define ENCODE_GROUP 32 /* items of a bucket whose bytes are fetched together */

/* Copies the items of bucket k into page, a group at a time: first their staged entries, then
 * every line of their key and value bytes (a compaction's held inputs, a memtable's arena: in
 * no order the bucket's) are prefetched, so that their misses overlap instead of stalling one
 * copy each. Writing the buckets (copies and write calls) took markedly less CPU per item
 * (docs/benchmarks.md, "Measurements behind choices in the code"). */
static size_t encode_items(const ltr_hbuild *b, const plan *p, uint32_t k, uint8_t *page)
{
    uint32_t g[ENCODE_GROUP];
    size_t used = 0;
    for (uint32_t i = p->head[k]; i != PLAN_END;) {
        uint32_t m = 0;
        for (; i != PLAN_END && m < ENCODE_GROUP; i = p->next[i]) {
            g[m++] = i;
            __builtin_prefetch(&b->items[i]);
        }
        for (uint32_t j = 0; j < m; j++) {
            const staged *s = &b->items[g[j]];
            __builtin_prefetch(staged_key(b, s));
            const uint8_t *v = staged_value(b, s);
            __builtin_prefetch(v);
            for (uint32_t o = 64; o < s->vlen; o += 64)
                __builtin_prefetch(v + o);
            __builtin_prefetch(v + s->vlen);
        }
        for (uint32_t j = 0; j < m; j++) {
            const staged *s = &b->items[g[j]];
            used += item_encode(page + used, staged_key(b, s), s->klen, staged_value(b, s),
                                s->vlen, s->deleted);
        }
    }
    return used;
}

static void encode_bucket(const ltr_hbuild *b, const plan *p, const mig_record *rec, uint32_t k,
                          uint8_t *page)
{
    memset(page, 0, LTR_BUCKET_SIZE);
    size_t used = encode_items(b, p, k, page);
    bucket_footer f = {(uint16_t)p->nitems_in[k], (uint16_t)used, (uint16_t)k, 0, 0};
    if (rec) {
        f.target = rec->target;
        f.flags = BK_FLAG_MIGRATED;
        f.hashmark = rec->hashmark;
    }
    bucket_seal(page, k, &f);
}

static int write_buckets(const ltr_hbuild *b, const plan *p, wfile *w)
{
    uint32_t nb = b->o.buckets;
    int32_t *rec_of = malloc(sizeof(int32_t) * nb);
    uint8_t *chunk = aligned_alloc(LTR_BUCKET_SIZE, (size_t)CHUNK_PAGES * LTR_BUCKET_SIZE);
    int rc = (rec_of && chunk) ? LTR_OK : ltr_fail(LTR_ENOMEM, "out of memory writing buckets");
    if (!rc) {
        for (uint32_t k = 0; k < nb; k++)
            rec_of[k] = -1;
        for (uint32_t r = 0; r < p->nrecords; r++)
            rec_of[p->records[r].source] = (int32_t)r;
    }
    for (uint32_t k0 = 0; !rc && k0 < nb; k0 += CHUNK_PAGES) {
        uint32_t pages = nb - k0 < CHUNK_PAGES ? nb - k0 : CHUNK_PAGES;
        for (uint32_t j = 0; j < pages; j++) {
            int32_t r = rec_of[k0 + j];
            encode_bucket(b, p, r >= 0 ? &p->records[r] : NULL, k0 + j,
                          chunk + (size_t)j * LTR_BUCKET_SIZE);
        }
        rc = io_write(w, chunk, (size_t)pages * LTR_BUCKET_SIZE);
    }
    free(rec_of);
    free(chunk);
    return rc;
}

typedef struct by_hash {
    uint64_t h2;
    uint32_t item;
} by_hash;

static int by_h2(const void *a, const void *b)
{
    const by_hash *x = a, *y = b;
    if (x->h2 != y->h2)
        return x->h2 < y->h2 ? -1 : 1;
    return x->item < y->item ? -1 : x->item > y->item;
}

/* Orders the overflow items by h2, the key of the overflow index. */
static int sort_overflow(const ltr_hbuild *b, plan *p)
{
    by_hash *o = malloc(sizeof *o * (p->noverflow ? p->noverflow : 1));
    if (!o)
        return ltr_fail(LTR_ENOMEM, "out of memory sorting the overflow area");
    for (uint32_t j = 0; j < p->noverflow; j++) {
        o[j].h2 = b->hash[p->overflow[j]].h2;
        o[j].item = p->overflow[j];
    }
    qsort(o, p->noverflow, sizeof *o, by_h2);
    for (uint32_t j = 0; j < p->noverflow; j++)
        p->overflow[j] = o[j].item;
    free(o);
    return LTR_OK;
}

/* Writes the overflow records in h2 order and appends their index entries to idx. */
static int write_overflow(const ltr_hbuild *b, plan *p, wfile *w, ltr_buf *idx)
{
    ltr_buf rec = {0};
    int rc = sort_overflow(b, p);
    for (uint32_t j = 0; !rc && j < p->noverflow; j++) {
        const staged *s = &b->items[p->overflow[j]];
        uint64_t at = w->bytes;
        rec.len = 0;
        if ((rc = buf_reserve(&rec, 4 + (size_t)s->size)))
            break;
        size_t n = item_encode(rec.data + 4, staged_key(b, s), s->klen, staged_value(b, s),
                               s->vlen, s->deleted);
        put_u32(rec.data, ltr_crc32c(0, rec.data + 4, n));
        uint8_t e[HT_OVF_ENTRY_SIZE];
        put_u64(e, b->hash[p->overflow[j]].h2);
        put_u64(e + 8, at);
        put_u32(e + 16, (uint32_t)(n + 4));
        rc = io_write(w, rec.data, n + 4);
        if (!rc)
            rc = buf_append(idx, e, sizeof e);
    }
    ltr_buf_free(&rec);
    return rc;
}

static int write_trailer(const plan *p, const filters *f, uint32_t nb, const ltr_buf *idx,
                         wfile *w, uint32_t *crc)
{
    ltr_buf t = {0};
    int rc = buf_reserve(&t, (size_t)p->nrecords * HT_RECORD_SIZE + idx->len + 4 * (nb + 1));
    for (uint32_t r = 0; !rc && r < p->nrecords; r++) {
        uint8_t e[HT_RECORD_SIZE];
        put_u16(e, p->records[r].source);
        put_u16(e + 2, p->records[r].target);
        put_u32(e + 4, p->records[r].hashmark);
        put_u32(e + 8, p->records[r].flow);
        buf_append(&t, e, sizeof e);
    }
    if (!rc)
        rc = buf_append(&t, idx->data, idx->len);
    for (uint32_t k = 0; !rc && k <= nb; k++) {
        uint8_t e[4];
        put_u32(e, f->off[k]);
        buf_append(&t, e, 4);
    }
    if (!rc)
        rc = buf_append(&t, f->bits, f->off[nb]);
    if (!rc) {
        *crc = ltr_crc32c(0, t.data, t.len);
        rc = io_write(w, t.data, t.len);
    }
    ltr_buf_free(&t);
    return rc;
}

static void fill_footer(uint8_t *ft, const ltr_hbuild *b, const plan *p, const filters *f,
                        uint64_t tomb, uint64_t ovf_bytes, uint32_t cached, uint32_t tcrc)
{
    uint64_t ovf_off = (uint64_t)b->o.buckets * LTR_BUCKET_SIZE;
    memset(ft, 0, HT_FOOTER_SIZE);
    memcpy(ft + FT_MAGIC, HT_MAGIC, 8);
    put_u16(ft + FT_VERSION, HT_VERSION);
    put_u16(ft + FT_FOOTER_SIZE, HT_FOOTER_SIZE);
    put_u32(ft + FT_BUCKET_SIZE, LTR_BUCKET_SIZE);
    put_u32(ft + FT_BUCKETS, b->o.buckets);
    put_u32(ft + FT_SEED, b->o.hash_seed);
    put_u32(ft + FT_BLOOM_BITS, b->o.bloom_bits_per_key);
    put_u32(ft + FT_BLOOM_PROBES, f->probes);
    put_u64(ft + FT_ITEMS, b->n);
    put_u64(ft + FT_TOMBSTONES, tomb);
    put_u64(ft + FT_DATA_BYTES, b->data_bytes);
    put_u64(ft + FT_OVF_OFFSET, ovf_off);
    put_u64(ft + FT_OVF_BYTES, ovf_bytes);
    put_u32(ft + FT_OVF_ITEMS, p->noverflow);
    put_u32(ft + FT_RECORDS, p->nrecords);
    put_u32(ft + FT_CACHED, cached);
    put_u64(ft + FT_TRAILER_OFFSET, ovf_off + ovf_bytes);
    put_u32(ft + FT_TRAILER_CRC, tcrc);
    put_u32(ft + FT_FOOTER_CRC, ltr_crc32c(0, ft, FT_FOOTER_CRC));
}

/* The table's size in bytes, known once it is planned: buckets, overflow records, trailer
 * (migration records, overflow index, filter offsets and bits) and footer. */
static uint64_t table_size(const ltr_hbuild *b, const plan *p, const filters *f)
{
    uint64_t n = (uint64_t)b->o.buckets * LTR_BUCKET_SIZE;
    for (uint32_t j = 0; j < p->noverflow; j++)
        n += 4 + (uint64_t)b->items[p->overflow[j]].size;
    n += (uint64_t)p->nrecords * HT_RECORD_SIZE + (uint64_t)p->noverflow * HT_OVF_ENTRY_SIZE;
    n += 4ull * (b->o.buckets + 1) + f->off[b->o.buckets];
    return n + HT_FOOTER_SIZE;
}

/* Opens where the table goes: its own file (path), or an extent of an open file. */
static int open_dest(const ltr_hbuild *b, const table_dest *d, uint64_t size, wfile *w)
{
    if (!d->path) {
        if (size > d->cap)
            return ltr_fail(LTR_EAGAIN, "the table needs %llu bytes, over the %llu of its extent "
                            "in %s", (unsigned long long)size, (unsigned long long)d->cap,
                            d->name);
        return io_create_extent(w, d->fd, d->name, d->base);
    }
    return io_create(w, d->path, b->o.sync);
}

static int write_file(const ltr_hbuild *b, plan *p, const filters *f, uint32_t cached,
                      const table_dest *d, uint64_t *file_bytes)
{
    wfile w;
    ltr_buf idx = {0};
    uint32_t tcrc = 0;
    uint64_t tomb = 0, size = table_size(b, p, f);
    for (size_t i = 0; i < b->n; i++)
        tomb += b->items[i].deleted;
    *file_bytes = size;
    int rc = open_dest(b, d, size, &w);
    if (rc)
        return rc;
    rc = write_buckets(b, p, &w);
    uint64_t ovf_start = w.bytes;
    if (!rc)
        rc = write_overflow(b, p, &w, &idx);
    uint64_t ovf_bytes = w.bytes - ovf_start;
    if (!rc)
        rc = write_trailer(p, f, b->o.buckets, &idx, &w, &tcrc);
    if (!rc) {
        uint8_t ft[HT_FOOTER_SIZE];
        fill_footer(ft, b, p, f, tomb, ovf_bytes, cached, tcrc);
        rc = io_write(&w, ft, sizeof ft);
    }
    if (!rc && w.bytes != size)
        rc = ltr_fail(LTR_EINVAL, "%s: wrote %llu table bytes, planned %llu", w.path,
                      (unsigned long long)w.bytes, (unsigned long long)size);
    if (!rc)
        rc = io_commit(&w, b->o.sync);
    io_abort(&w); /* no-op after a successful commit */
    ltr_buf_free(&idx);
    return rc;
}

static int write_table(ltr_hbuild *b, const table_dest *d, ltr_build_stats *st)
{
    uint32_t n = (uint32_t)b->n;
    uint32_t *sizes = malloc(sizeof(uint32_t) * (n ? n : 1));
    filters f = {0};
    plan p;
    if (!sizes)
        return ltr_fail(LTR_ENOMEM, "out of memory writing a table");
    for (uint32_t i = 0; i < n; i++)
        sizes[i] = b->items[i].size;
    int rc = plan_init(&p, b->o.buckets, n, b->hash, sizes);
    if (rc) {
        free(sizes);
        return rc;
    }
    rc = filters_build(b, &f);
    if (!rc)
        rc = plan_balance(&p);
    uint64_t extra = 0, file_bytes = 0;
    uint32_t cached = 0;
    if (!rc) {
        cached = choose_cached(&p, b->o.max_cached_records, &extra);
        rc = write_file(b, &p, &f, cached, d, &file_bytes);
    }
    if (rc == LTR_EAGAIN && st) {
        memset(st, 0, sizeof *st);
        st->file_bytes = file_bytes; /* the size it needs */
    }
    if (!rc && st) {
        memset(st, 0, sizeof *st);
        st->items = n;
        for (uint32_t i = 0; i < n; i++)
            st->tombstones += b->items[i].deleted;
        st->data_bytes = b->data_bytes;
        st->file_bytes = file_bytes;
        st->migrated_items = p.migrated;
        st->overflow_items = p.noverflow;
        st->records = p.nrecords;
        st->cached_records = cached;
        st->max_chain = p.max_chain;
        st->overloaded_buckets = p.overloaded;
        st->expected_reads = n ? (double)(n + extra) / n : 0.0;
    }
    plan_free(&p);
    free(f.off);
    free(f.bits);
    free(sizes);
    return rc;
}

int htable_write(ltr_hbuild *b, const char *path, ltr_build_stats *st)
{
    table_dest d = {.path = path};
    return write_table(b, &d, st);
}

int htable_write_at(ltr_hbuild *b, int fd, const char *name, uint64_t base, uint64_t cap,
                    ltr_build_stats *st)
{
    if (base % LTR_BUCKET_SIZE)
        return ltr_fail(LTR_EINVAL, "a table's offset in %s must be a multiple of %d, not %llu",
                        name, LTR_BUCKET_SIZE, (unsigned long long)base);
    table_dest d = {.fd = fd, .name = name, .base = base, .cap = cap};
    return write_table(b, &d, st);
}
