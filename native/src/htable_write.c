/* htable_write.c: turning staged items into an HTable file (docs/format/htable.md): place by
 * hash, build the per-bucket filters (before migration: migrated items stay in their home
 * bucket's filter), balance, pick the migration records worth caching, then write buckets,
 * overflow area, trailer and footer.
 *
 * A table is written in ascending windows of buckets: a builder's table is one window, the
 * whole table; a compaction's outputs are written a window at a time (ltr_hstream), so that it
 * holds a window of its inputs and outputs in memory instead of whole tables. Items are
 * balanced among the buckets of their window: an item's home decides its window, and
 * migration records may name any bucket, so the file is the same format either way. */
#include <stdlib.h>
#include <string.h>

#include "blob_format.h"
#include "bloom.h"
#include "bucket.h"
#include "coding.h"
#include "htable_build.h"
#include "htable_format.h"
#include "io.h"
#include "plan.h"

#define CHUNK_PAGES 256 /* buckets written per write call: 1 MiB */

typedef struct ovf_entry {
    uint64_t h2, at;
    uint32_t len;
} ovf_entry;

/* A table being written, and what its trailer and footer gather window by window. */
typedef struct twrite {
    ltr_table_opts o;
    wfile w;
    int opened;
    uint32_t next;       /* buckets written so far */
    uint32_t fnext;      /* buckets whose filters are placed */
    uint64_t ovf_bytes;  /* overflow records written, from buckets * 4096 */
    ovf_entry *ovf;      /* the overflow index */
    size_t novf, ovf_cap;
    uint32_t *foff;      /* buckets + 1 filter offsets */
    ltr_buf fbits;
    uint32_t probes;
    mig_record *records;
    size_t nrecords, rec_cap;
    uint64_t items, tombstones, data_bytes, migrated;
    uint32_t max_chain, overloaded;
    blob_ref *refs;      /* the value logs its pointers lead to, by file number */
    size_t nrefs, refs_cap;
} twrite;

static int tw_init(twrite *t, const ltr_table_opts *o)
{
    memset(t, 0, sizeof *t);
    t->o = *o;
    t->w.fd = -1;
    t->probes = bloom_probes_for(o->bloom_bits_per_key);
    t->foff = calloc((size_t)o->buckets + 1, sizeof(uint32_t));
    return t->foff ? LTR_OK : ltr_fail(LTR_ENOMEM, "out of memory building filters");
}

static void tw_free(twrite *t)
{
    if (t->opened)
        io_abort(&t->w); /* no-op after a successful commit */
    free(t->ovf);
    free(t->foff);
    ltr_buf_free(&t->fbits);
    free(t->records);
    free(t->refs);
    memset(t, 0, sizeof *t);
}

/* Places the filters of the window's buckets, which hold every item homed there (migrated and
 * overflow items included); buckets skipped since the last window get empty ones. */
static int tw_filters(twrite *t, const ltr_hbuild *b, const plan *p)
{
    uint32_t bpk = t->o.bloom_bits_per_key, end = p->base + p->buckets;
    for (; t->fnext < p->base; t->fnext++)
        t->foff[t->fnext + 1] = t->foff[t->fnext];
    uint32_t *off = t->foff + p->base; /* off[k]: filter k of the window starts here */
    for (uint32_t k = 1; k <= p->buckets; k++)
        off[k] = 0;
    for (size_t i = 0; i < b->n; i++)
        off[hb_bucket(b->hash[i], t->o.buckets) - p->base + 1]++;
    uint64_t total = off[0];
    for (uint32_t k = 1; k <= p->buckets; k++) {
        total += bloom_bytes_for(off[k], bpk);
        if (total > UINT32_MAX)
            return ltr_fail(LTR_EINVAL, "too many items for one table's filters");
        off[k] = (uint32_t)total;
    }
    t->fnext = end;
    size_t before = t->fbits.len, add = off[p->buckets] - off[0];
    int rc = buf_reserve(&t->fbits, add ? add : 1);
    if (rc)
        return rc;
    memset(t->fbits.data + before, 0, add);
    t->fbits.len = before + add;
    for (size_t i = 0; i < b->n; i++) {
        uint32_t k = hb_bucket(b->hash[i], t->o.buckets) - p->base;
        bloom_add(t->fbits.data + off[k], off[k + 1] - off[k], t->probes, hb_bloom(b->hash[i]));
    }
    return LTR_OK;
}

/* Counts a pointer's value bytes against its file in the table's sorted list of value logs. */
static int add_ref(twrite *t, uint64_t file, uint64_t bytes)
{
    size_t lo = 0, hi = t->nrefs;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (t->refs[mid].file < file)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < t->nrefs && t->refs[lo].file == file) {
        t->refs[lo].bytes += bytes;
        return LTR_OK;
    }
    if (t->nrefs == t->refs_cap) {
        size_t cap = t->refs_cap ? 2 * t->refs_cap : 8;
        blob_ref *r = realloc(t->refs, cap * sizeof *r);
        if (!r)
            return ltr_fail(LTR_ENOMEM, "out of memory listing a table's value logs");
        t->refs = r;
        t->refs_cap = cap;
    }
    memmove(t->refs + lo + 1, t->refs + lo, (t->nrefs - lo) * sizeof *t->refs);
    t->refs[lo] = (blob_ref){file, bytes};
    t->nrefs++;
    return LTR_OK;
}

/* The value logs the window's pointers lead to (htable.md "Value-log references"): a store
 * keeps a value log while some table lists it. */
static int tw_refs(twrite *t, const ltr_hbuild *b)
{
    int rc = LTR_OK;
    for (size_t i = 0; !rc && i < b->n; i++) {
        const staged *s = &b->items[i];
        if (s->kind != ITEM_POINTER)
            continue;
        blob_ptr bp;
        blob_ptr_decode(staged_value(b, s), &bp);
        rc = add_ref(t, bp.file, bp.vlen);
    }
    return rc;
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
static uint32_t choose_cached(twrite *t, uint64_t *extra_reads)
{
    if (t->nrecords) /* (qsort and memcpy take no NULL, even for nothing) */
        qsort(t->records, t->nrecords, sizeof *t->records, by_flow);
    uint64_t rest = 0, allowed = (t->items - t->novf) / 100;
    for (size_t i = 0; i < t->nrecords; i++)
        rest += t->records[i].flow;
    uint32_t c = 0, cap = t->o.max_cached_records;
    while (c < t->nrecords && c < cap && rest > allowed)
        rest -= t->records[c++].flow;
    *extra_reads = rest;
    return c;
}

#define ENCODE_GROUP 32 /* items of a bucket whose bytes are fetched together */

/* Copies the items of bucket k into page, a group at a time: first their staged entries, then
 * every line of their key and value bytes (a compaction's inputs, a memtable's arena: in
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
                                s->vlen, s->kind);
        }
    }
    return used;
}

/* Bucket `index` with the items of the window's bucket k (none when p is NULL). */
static void encode_bucket(const ltr_hbuild *b, const plan *p, const mig_record *rec, uint32_t k,
                          uint32_t index, uint8_t *page)
{
    memset(page, 0, LTR_BUCKET_SIZE);
    size_t used = p ? encode_items(b, p, k, page) : 0;
    bucket_footer f = {(uint16_t)(p ? p->nitems_in[k] : 0), (uint16_t)used, (uint16_t)index, 0, 0};
    if (rec) {
        f.target = rec->target;
        f.flags = BK_FLAG_MIGRATED;
        f.hashmark = rec->hashmark;
    }
    bucket_seal(page, index, &f);
}

/* Writes buckets [t->next, end): the window's from its plan, those before it empty. */
static int write_buckets(twrite *t, const ltr_hbuild *b, const plan *p, uint32_t end)
{
    uint32_t base = p ? p->base : end, n = p ? p->buckets : 0;
    int32_t *rec_of = malloc(sizeof(int32_t) * (n ? n : 1));
    uint8_t *chunk = aligned_alloc(LTR_BUCKET_SIZE, (size_t)CHUNK_PAGES * LTR_BUCKET_SIZE);
    int rc = (rec_of && chunk) ? LTR_OK : ltr_fail(LTR_ENOMEM, "out of memory writing buckets");
    for (uint32_t k = 0; !rc && k < n; k++)
        rec_of[k] = -1;
    for (uint32_t r = 0; !rc && p && r < p->nrecords; r++)
        rec_of[p->records[r].source - base] = (int32_t)r;
    for (uint32_t k0 = t->next; !rc && k0 < end; k0 += CHUNK_PAGES) {
        uint32_t pages = end - k0 < CHUNK_PAGES ? end - k0 : CHUNK_PAGES;
        for (uint32_t j = 0; j < pages; j++) {
            uint32_t k = k0 + j;
            int in = k >= base;
            int32_t r = in ? rec_of[k - base] : -1;
            encode_bucket(b, in ? p : NULL, r >= 0 ? &p->records[r] : NULL, k - (in ? base : 0),
                          k, chunk + (size_t)j * LTR_BUCKET_SIZE);
        }
        rc = io_write_at(&t->w, chunk, (size_t)pages * LTR_BUCKET_SIZE,
                         (uint64_t)k0 * LTR_BUCKET_SIZE);
    }
    if (!rc)
        t->next = end;
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

/* Orders the window's overflow items by h2, the key of the overflow index. */
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

/* Appends the window's overflow records (in h2 order) to the overflow area, and their entries
 * to the index. */
static int write_overflow(twrite *t, const ltr_hbuild *b, plan *p)
{
    ltr_buf rec = {0};
    int rc = sort_overflow(b, p);
    if (!rc && t->novf + p->noverflow > t->ovf_cap) {
        size_t cap = t->novf + p->noverflow + t->ovf_cap;
        ovf_entry *e = realloc(t->ovf, cap * sizeof *e);
        rc = e ? LTR_OK : ltr_fail(LTR_ENOMEM, "out of memory indexing the overflow area");
        if (e) {
            t->ovf = e;
            t->ovf_cap = cap;
        }
    }
    uint64_t area = (uint64_t)t->o.buckets * LTR_BUCKET_SIZE;
    for (uint32_t j = 0; !rc && j < p->noverflow; j++) {
        const staged *s = &b->items[p->overflow[j]];
        rec.len = 0;
        if ((rc = buf_reserve(&rec, 4 + (size_t)s->size)))
            break;
        size_t n = item_encode(rec.data + 4, staged_key(b, s), s->klen, staged_value(b, s),
                               s->vlen, s->kind);
        put_u32(rec.data, ltr_crc32c(0, rec.data + 4, n));
        uint64_t at = area + t->ovf_bytes;
        rc = io_write_at(&t->w, rec.data, n + 4, at);
        if (!rc) {
            t->ovf[t->novf++] = (ovf_entry){b->hash[p->overflow[j]].h2, at, (uint32_t)(n + 4)};
            t->ovf_bytes += n + 4;
        }
    }
    ltr_buf_free(&rec);
    return rc;
}

static int keep_records(twrite *t, const plan *p)
{
    if (t->nrecords + p->nrecords > t->rec_cap) {
        size_t cap = t->nrecords + p->nrecords + t->rec_cap;
        mig_record *r = realloc(t->records, cap * sizeof *r);
        if (!r)
            return ltr_fail(LTR_ENOMEM, "out of memory keeping migration records");
        t->records = r;
        t->rec_cap = cap;
    }
    if (p->nrecords)
        memcpy(t->records + t->nrecords, p->records, p->nrecords * sizeof *p->records);
    t->nrecords += p->nrecords;
    return LTR_OK;
}

/* Writes a planned window whose filters are placed: its buckets (and the empty ones before
 * it), its overflow records, and keeps what the trailer and footer need. */
static int tw_window(twrite *t, const ltr_hbuild *b, plan *p)
{
    int rc = write_buckets(t, b, p, p->base + p->buckets);
    if (!rc)
        rc = write_overflow(t, b, p);
    if (!rc)
        rc = keep_records(t, p);
    if (rc)
        return rc;
    for (size_t i = 0; i < b->n; i++)
        t->tombstones += b->items[i].kind == ITEM_TOMBSTONE;
    t->items += b->n;
    t->data_bytes += b->data_bytes;
    t->migrated += p->migrated;
    t->overloaded += p->overloaded;
    t->max_chain = p->max_chain > t->max_chain ? p->max_chain : t->max_chain;
    return LTR_OK;
}

static int by_index_key(const void *a, const void *b)
{
    const ovf_entry *x = a, *y = b;
    if (x->h2 != y->h2)
        return x->h2 < y->h2 ? -1 : 1;
    return x->at < y->at ? -1 : x->at > y->at;
}

/* Migration records, overflow index, filter offsets and filter bytes (htable.md "Trailer"). */
static int write_trailer(twrite *t, uint32_t *crc)
{
    uint32_t nb = t->o.buckets;
    uint64_t at = (uint64_t)nb * LTR_BUCKET_SIZE + t->ovf_bytes;
    if (t->novf)
        qsort(t->ovf, t->novf, sizeof *t->ovf, by_index_key);
    ltr_buf b = {0};
    int rc = buf_reserve(&b, t->nrecords * HT_RECORD_SIZE + t->novf * HT_OVF_ENTRY_SIZE +
                                 4 * ((size_t)nb + 1) + t->fbits.len +
                                 t->nrefs * HT_BLOB_REF_SIZE);
    for (size_t r = 0; !rc && r < t->nrecords; r++) {
        uint8_t e[HT_RECORD_SIZE];
        put_u16(e, t->records[r].source);
        put_u16(e + 2, t->records[r].target);
        put_u32(e + 4, t->records[r].hashmark);
        put_u32(e + 8, t->records[r].flow);
        buf_append(&b, e, sizeof e);
    }
    for (size_t j = 0; !rc && j < t->novf; j++) {
        uint8_t e[HT_OVF_ENTRY_SIZE];
        put_u64(e, t->ovf[j].h2);
        put_u64(e + 8, t->ovf[j].at);
        put_u32(e + 16, t->ovf[j].len);
        buf_append(&b, e, sizeof e);
    }
    for (uint32_t k = 0; !rc && k <= nb; k++) {
        uint8_t e[4];
        put_u32(e, t->foff[k]);
        buf_append(&b, e, 4);
    }
    if (!rc)
        rc = buf_append(&b, t->fbits.data, t->fbits.len);
    for (size_t j = 0; !rc && j < t->nrefs; j++) {
        uint8_t e[HT_BLOB_REF_SIZE];
        put_u64(e, t->refs[j].file);
        put_u64(e + 8, t->refs[j].bytes);
        buf_append(&b, e, sizeof e);
    }
    if (!rc) {
        *crc = ltr_crc32c(0, b.data, b.len);
        rc = io_write_at(&t->w, b.data, b.len, at);
    }
    ltr_buf_free(&b);
    return rc;
}

static void fill_footer(uint8_t *ft, const twrite *t, uint32_t cached, uint32_t tcrc)
{
    uint64_t ovf_off = (uint64_t)t->o.buckets * LTR_BUCKET_SIZE;
    memset(ft, 0, HT_FOOTER_SIZE);
    memcpy(ft + FT_MAGIC, HT_MAGIC, 8);
    /* version 1 unless the table holds pointers: older readers keep reading the rest */
    put_u16(ft + FT_VERSION, t->nrefs ? HT_VERSION_BLOBS : HT_VERSION);
    put_u16(ft + FT_FOOTER_SIZE, HT_FOOTER_SIZE);
    put_u32(ft + FT_BUCKET_SIZE, LTR_BUCKET_SIZE);
    put_u32(ft + FT_BUCKETS, t->o.buckets);
    put_u32(ft + FT_SEED, t->o.hash_seed);
    put_u32(ft + FT_BLOOM_BITS, t->o.bloom_bits_per_key);
    put_u32(ft + FT_BLOOM_PROBES, t->probes);
    put_u64(ft + FT_ITEMS, t->items);
    put_u64(ft + FT_TOMBSTONES, t->tombstones);
    put_u64(ft + FT_DATA_BYTES, t->data_bytes);
    put_u64(ft + FT_OVF_OFFSET, ovf_off);
    put_u64(ft + FT_OVF_BYTES, t->ovf_bytes);
    put_u32(ft + FT_OVF_ITEMS, (uint32_t)t->novf);
    put_u32(ft + FT_RECORDS, (uint32_t)t->nrecords);
    put_u32(ft + FT_CACHED, cached);
    put_u32(ft + FT_BLOB_REFS, (uint32_t)t->nrefs);
    put_u64(ft + FT_TRAILER_OFFSET, ovf_off + t->ovf_bytes);
    put_u32(ft + FT_TRAILER_CRC, tcrc);
    put_u32(ft + FT_FOOTER_CRC, ltr_crc32c(0, ft, FT_FOOTER_CRC));
}

/* The rest of the table once its last window is written: empty buckets to the end, trailer,
 * footer; then the file is committed. planned: the size it must have (0: any). */
static int tw_finish(twrite *t, uint64_t planned, ltr_build_stats *st)
{
    int rc = write_buckets(t, NULL, NULL, t->o.buckets);
    for (; t->fnext < t->o.buckets; t->fnext++)
        t->foff[t->fnext + 1] = t->foff[t->fnext];
    uint64_t extra = 0;
    uint32_t cached = choose_cached(t, &extra), tcrc = 0;
    if (!rc)
        rc = write_trailer(t, &tcrc);
    uint64_t size = (uint64_t)t->o.buckets * LTR_BUCKET_SIZE + t->ovf_bytes +
                    t->nrecords * HT_RECORD_SIZE + t->novf * HT_OVF_ENTRY_SIZE +
                    4ull * (t->o.buckets + 1) + t->fbits.len + t->nrefs * HT_BLOB_REF_SIZE;
    if (!rc) {
        uint8_t ft[HT_FOOTER_SIZE];
        fill_footer(ft, t, cached, tcrc);
        rc = io_write_at(&t->w, ft, sizeof ft, size);
        size += HT_FOOTER_SIZE;
    }
    if (!rc && ((planned && size != planned) || t->w.bytes != size))
        rc = ltr_fail(LTR_EINVAL, "%s: wrote %llu table bytes, planned %llu", t->w.path,
                      (unsigned long long)t->w.bytes, (unsigned long long)size);
    if (!rc)
        rc = io_commit(&t->w, t->o.sync);
    if (!rc && st) {
        memset(st, 0, sizeof *st);
        st->items = t->items;
        st->tombstones = t->tombstones;
        st->data_bytes = t->data_bytes;
        st->file_bytes = size;
        st->migrated_items = t->migrated;
        st->overflow_items = t->novf;
        st->records = t->nrecords;
        st->cached_records = cached;
        st->max_chain = t->max_chain;
        st->overloaded_buckets = t->overloaded;
        st->expected_reads = t->items ? (double)(t->items + extra) / (double)t->items : 0.0;
    }
    return rc;
}

/* ---- a builder's table: one window, planned whole before anything is written ---- */

/* The table's size in bytes, known once it is planned: buckets, overflow records, trailer
 * (migration records, overflow index, filter offsets and bits) and footer. */
static uint64_t table_size(const ltr_hbuild *b, const plan *p, const twrite *t)
{
    uint64_t n = (uint64_t)b->o.buckets * LTR_BUCKET_SIZE;
    for (uint32_t j = 0; j < p->noverflow; j++)
        n += 4 + (uint64_t)b->items[p->overflow[j]].size;
    n += (uint64_t)p->nrecords * HT_RECORD_SIZE + (uint64_t)p->noverflow * HT_OVF_ENTRY_SIZE;
    n += 4ull * (b->o.buckets + 1) + t->fbits.len + t->nrefs * HT_BLOB_REF_SIZE;
    return n + HT_FOOTER_SIZE;
}

/* Opens where the table goes: its own file (path), or an extent of an open file. */
static int open_dest(twrite *t, const table_dest *d, uint64_t size)
{
    int rc;
    if (!d->path) {
        if (size > d->cap)
            return ltr_fail(LTR_EAGAIN, "the table needs %llu bytes, over the %llu of its extent "
                            "in %s", (unsigned long long)size, (unsigned long long)d->cap,
                            d->name);
        rc = io_create_extent(&t->w, d->fd, d->name, d->base);
    } else {
        rc = io_create(&t->w, d->path, t->o.sync);
    }
    t->opened = !rc;
    return rc;
}

/* Plans b's items, all homed in [first, first + n), as that window of the table (balanced);
 * the plan owns its sizes array (plan_drop frees both). */
static int plan_window(const ltr_hbuild *b, uint32_t first, uint32_t n, plan *p)
{
    uint32_t *sizes = malloc(sizeof(uint32_t) * (b->n ? b->n : 1));
    if (!sizes)
        return ltr_fail(LTR_ENOMEM, "out of memory writing a table");
    for (size_t i = 0; i < b->n; i++)
        sizes[i] = b->items[i].size;
    int rc = plan_init(p, b->o.buckets, first, n, (uint32_t)b->n, b->hash, sizes);
    if (!rc && (rc = plan_balance(p)))
        plan_free(p);
    if (rc)
        free(sizes);
    return rc;
}

static void plan_drop(plan *p)
{
    free((void *)p->size);
    plan_free(p);
}

static int write_table(ltr_hbuild *b, const table_dest *d, ltr_build_stats *st)
{
    twrite t;
    plan p;
    int rc = tw_init(&t, &b->o);
    if (rc)
        return rc;
    if ((rc = plan_window(b, 0, b->o.buckets, &p))) {
        tw_free(&t);
        return rc;
    }
    rc = tw_filters(&t, b, &p);
    if (!rc)
        rc = tw_refs(&t, b);
    uint64_t size = rc ? 0 : table_size(b, &p, &t);
    if (!rc)
        rc = open_dest(&t, d, size);
    if (!rc)
        rc = tw_window(&t, b, &p);
    if (!rc)
        rc = tw_finish(&t, size, st);
    if (rc == LTR_EAGAIN && st) {
        memset(st, 0, sizeof *st);
        st->file_bytes = size; /* the size it needs */
    }
    plan_drop(&p);
    tw_free(&t);
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

/* ---- a table written window by window ---- */

struct ltr_hstream {
    twrite t;
};

int hstream_new(const ltr_table_opts *o, const char *path, ltr_hstream **out)
{
    *out = NULL;
    ltr_hstream *hs = calloc(1, sizeof *hs);
    if (!hs)
        return ltr_fail(LTR_ENOMEM, "out of memory starting a table");
    table_dest d = {.path = path};
    int rc = tw_init(&hs->t, o);
    if (!rc)
        rc = open_dest(&hs->t, &d, 0);
    if (rc) {
        hstream_free(hs);
        return rc;
    }
    *out = hs;
    return LTR_OK;
}

int hstream_window(ltr_hstream *hs, ltr_hbuild *b, uint32_t first, uint32_t n)
{
    twrite *t = &hs->t;
    if (first < t->next || n > t->o.buckets - first || b->o.buckets != t->o.buckets)
        return ltr_fail(LTR_EINVAL, "windows of a table are written in order, inside it");
    plan p;
    int rc = plan_window(b, first, n, &p);
    if (rc)
        return rc;
    rc = tw_filters(t, b, &p);
    if (!rc)
        rc = tw_refs(t, b);
    if (!rc)
        rc = tw_window(t, b, &p);
    plan_drop(&p);
    return rc;
}

int hstream_finish(ltr_hstream *hs, ltr_build_stats *st)
{
    return tw_finish(&hs->t, 0, st);
}

void hstream_free(ltr_hstream *hs)
{
    if (!hs)
        return;
    tw_free(&hs->t);
    free(hs);
}
