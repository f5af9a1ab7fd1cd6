/* htable_build.c: staging a table's items. Items are hashed as they arrive, deduplicated (a
 * later write of a key replaces the earlier one, which is what compaction needs when it feeds
 * tables oldest first), and admitted until the fill budget is reached. */
#include <stdlib.h>
#include <string.h>

#include "bucket.h"
#include "htable_build.h"

void ltr_table_opts_default(ltr_table_opts *o)
{
    o->buckets = LTR_DEFAULT_BUCKETS;
    o->fill = LTR_DEFAULT_FILL;
    o->bloom_bits_per_key = LTR_DEFAULT_BLOOM_BITS;
    o->hash_seed = 0;
    o->max_cached_records = LTR_DEFAULT_MAX_CACHED;
    o->sync = 1;
}

static int opts_check(const ltr_table_opts *o)
{
    if (o->buckets < 1 || o->buckets > LTR_MAX_BUCKETS)
        return ltr_fail(LTR_EINVAL, "buckets must be 1..%d, got %u", LTR_MAX_BUCKETS, o->buckets);
    if (!(o->fill > 0.0 && o->fill <= 1.0))
        return ltr_fail(LTR_EINVAL, "fill must be in (0, 1], got %g", o->fill);
    if (o->bloom_bits_per_key > 64)
        return ltr_fail(LTR_EINVAL, "bloom_bits_per_key must be 0..64, got %u",
                        o->bloom_bits_per_key);
    return LTR_OK;
}

int ltr_hbuild_new(const ltr_table_opts *o, ltr_hbuild **out)
{
    *out = NULL;
    int rc = opts_check(o);
    if (rc)
        return rc;
    ltr_hbuild *b = calloc(1, sizeof *b);
    if (!b)
        return ltr_fail(LTR_ENOMEM, "out of memory creating a builder");
    b->o = *o;
    b->capacity = (uint64_t)(o->fill * o->buckets * LTR_BUCKET_PAYLOAD);
    *out = b;
    return LTR_OK;
}

void ltr_hbuild_free(ltr_hbuild *b)
{
    if (!b)
        return;
    ltr_buf_free(&b->arena);
    free(b->items);
    free(b->hash);
    free(b->slots);
    free(b);
}

uint64_t ltr_hbuild_items(const ltr_hbuild *b) { return b->n; }
uint64_t ltr_hbuild_data_bytes(const ltr_hbuild *b) { return b->data_bytes; }
uint64_t ltr_hbuild_capacity(const ltr_hbuild *b) { return b->capacity; }

static int grow_items(ltr_hbuild *b, size_t want)
{
    if (want <= b->cap)
        return LTR_OK;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < want)
        cap *= 2;
    staged *it = realloc(b->items, cap * sizeof *it);
    if (it)
        b->items = it;
    key_hash *h = realloc(b->hash, cap * sizeof *h);
    if (h)
        b->hash = h;
    if (!it || !h)
        return ltr_fail(LTR_ENOMEM, "out of memory staging %zu items", cap);
    b->cap = cap;
    return LTR_OK;
}

static size_t slot_of(const ltr_hbuild *b, key_hash h)
{
    return (size_t)(h.h2 ^ (h.h1 >> 17)) & (b->nslots - 1);
}

static int grow_slots(ltr_hbuild *b, size_t want)
{
    if (b->nslots >= 2 * want)
        return LTR_OK;
    size_t ns = b->nslots ? b->nslots : 2048;
    while (ns < 2 * want)
        ns *= 2;
    uint32_t *s = calloc(ns, sizeof *s);
    if (!s)
        return ltr_fail(LTR_ENOMEM, "out of memory indexing %zu items", b->n);
    free(b->slots);
    b->slots = s;
    b->nslots = ns;
    for (size_t i = 0; i < b->n; i++) {
        size_t j = slot_of(b, b->hash[i]);
        while (s[j])
            j = (j + 1) & (ns - 1);
        s[j] = (uint32_t)i + 1;
    }
    return LTR_OK;
}

/* The slot holding key, or the empty slot where it would go. */
static size_t find_slot(const ltr_hbuild *b, key_hash h, const uint8_t *key, uint32_t klen)
{
    size_t j = slot_of(b, h);
    while (b->slots[j]) {
        const staged *s = &b->items[b->slots[j] - 1];
        const key_hash *g = &b->hash[b->slots[j] - 1];
        if (g->h1 == h.h1 && g->h2 == h.h2 && s->klen == klen &&
            bytes_eq(staged_key(b, s), key, klen))
            return j;
        j = (j + 1) & (b->nslots - 1);
    }
    return j;
}

const staged *hbuild_find(const ltr_hbuild *b, key_hash h, const uint8_t *key, uint32_t klen)
{
    if (!b->nslots)
        return NULL;
    size_t j = find_slot(b, h, key, klen);
    return b->slots[j] ? &b->items[b->slots[j] - 1] : NULL;
}

static int validate(const uint8_t *kdata, const int64_t *koffs, size_t klen_total,
                    const uint8_t *vdata, const int64_t *voffs, size_t vlen_total,
                    const uint8_t *deleted, size_t n)
{
    int rc = batch_check(koffs, n, klen_total, "keys");
    if (!rc)
        rc = batch_check(voffs, n, vlen_total, "values");
    if (rc)
        return rc;
    if ((n && !kdata && koffs[n] > koffs[0]) || (n && !vdata && voffs[n] > voffs[0]))
        return ltr_fail(LTR_EINVAL, "missing key or value data");
    for (size_t i = 0; i < n; i++) {
        int64_t kl = koffs[i + 1] - koffs[i], vl = voffs[i + 1] - voffs[i];
        if (kl > LTR_MAX_KEY)
            return ltr_fail(LTR_ETOOBIG, "key %zu is %lld bytes; the limit is %d bytes", i,
                            (long long)kl, LTR_MAX_KEY);
        if (vl > LTR_MAX_VALUE && !(deleted && deleted[i]))
            return ltr_fail(LTR_ETOOBIG, "value %zu is %lld bytes; the limit is %d bytes", i,
                            (long long)vl, LTR_MAX_VALUE);
    }
    return LTR_OK;
}

/* What an item of this encoded size counts against the fill budget. */
static uint64_t counted_size(const ltr_hbuild *b, uint32_t size)
{
    return b->resident_only && size > LTR_BUCKET_PAYLOAD ? 0 : size;
}

int hbuild_stage(ltr_hbuild *b, key_hash h, const uint8_t *key, uint32_t klen,
                 const uint8_t *val, uint32_t vlen, int kind, item_view *was)
{
    int del = kind == ITEM_TOMBSTONE;
    uint32_t size = (uint32_t)item_size(klen, del ? 0 : vlen, kind);
    int rc = grow_slots(b, b->n + 1);
    if (rc)
        return rc;
    size_t j = find_slot(b, h, key, klen);
    staged *old = b->slots[j] ? &b->items[b->slots[j] - 1] : NULL;
    uint64_t after = b->data_bytes - (old ? old->size : 0) + size;
    uint64_t counted = b->counted - (old ? counted_size(b, old->size) : 0) + counted_size(b, size);
    if (counted > b->capacity && b->n > 0 && (!old || size > old->size))
        return 0;
    if (!b->by_ref && (rc = buf_reserve(&b->arena, (uint64_t)klen + (del ? 0 : vlen))))
        return rc;
    if (was) /* (after the reserve: the arena does not move again in this call) */
        *was = old ? (item_view){.value = staged_value(b, old), .vlen = old->vlen,
                                 .kind = old->kind}
                   : (item_view){.kind = -1};
    if (!old) {
        if ((rc = grow_items(b, b->n + 1)))
            return rc;
        old = &b->items[b->n];
        b->hash[b->n] = h;
        old->koff = b->by_ref ? (uint64_t)(uintptr_t)key : b->arena.len;
        old->klen = klen;
        if (!b->by_ref)
            buf_append(&b->arena, key, klen);
        b->slots[j] = (uint32_t)++b->n;
    }
    old->voff = b->by_ref ? (uint64_t)(uintptr_t)val : b->arena.len;
    old->vlen = del ? 0 : vlen;
    old->kind = (uint8_t)kind;
    old->size = size;
    if (!del && !b->by_ref)
        buf_append(&b->arena, val, vlen);
    b->data_bytes = after;
    b->counted = counted;
    return 1;
}

void hbuild_count_resident(ltr_hbuild *b)
{
    if (!b->n)
        b->resident_only = 1;
}

void hbuild_by_reference(ltr_hbuild *b)
{
    if (!b->n)
        b->by_ref = 1;
}

void hbuild_clear(ltr_hbuild *b, uint64_t capacity)
{
    if (b->nslots)
        memset(b->slots, 0, b->nslots * sizeof *b->slots);
    b->arena.len = 0;
    b->n = 0;
    b->data_bytes = 0;
    b->counted = 0;
    b->finished = 0;
    b->capacity = capacity;
}

int hbuild_reserve(ltr_hbuild *b, size_t items, size_t bytes)
{
    int rc = grow_items(b, b->n + items);
    if (!rc)
        rc = grow_slots(b, b->n + items);
    return rc || b->by_ref ? rc : buf_reserve(&b->arena, bytes);
}

/* Sizes the arrays once for the part of a batch that can fit, instead of doubling per item. */
static int reserve_for(ltr_hbuild *b, size_t n, size_t bytes)
{
    uint64_t room = b->capacity > b->counted ? b->capacity - b->counted : 0;
    uint64_t avg = n ? bytes / n + 2 : 1;
    uint64_t fit = room / avg + room / avg / 4 + 64;
    size_t want = n < fit ? n : (size_t)fit;
    int rc = grow_items(b, b->n + want);
    if (!rc)
        rc = grow_slots(b, b->n + want);
    if (!rc)
        rc = buf_reserve(&b->arena, (size_t)(want * (avg + 2)));
    return rc;
}

#define GROUP 16 /* keys hashed ahead, so their slots can be prefetched */

int ltr_hbuild_add(ltr_hbuild *b, const uint8_t *kdata, const int64_t *koffs, size_t klen_total,
                   const uint8_t *vdata, const int64_t *voffs, size_t vlen_total,
                   const uint8_t *deleted, size_t n, size_t *n_added)
{
    *n_added = 0;
    if (b->finished)
        return ltr_fail(LTR_EINVAL, "the builder has already written its table");
    int rc = validate(kdata, koffs, klen_total, vdata, voffs, vlen_total, deleted, n);
    if (rc)
        return rc;
    static const uint8_t none[1];
    kdata = kdata ? kdata : none; /* all-empty batches may come without a buffer */
    vdata = vdata ? vdata : none;
    if ((rc = reserve_for(b, n, (size_t)(koffs[n] - koffs[0] + voffs[n] - voffs[0]))))
        return rc;
    key_hash h[GROUP];
    for (size_t g = 0; g < n; g += GROUP) {
        size_t m = n - g < GROUP ? n - g : GROUP;
        for (size_t j = 0; j < m; j++) {
            uint8_t d[16];
            size_t i = g + j;
            ltr_murmur3_128(kdata + koffs[i], (size_t)(koffs[i + 1] - koffs[i]), b->o.hash_seed, d);
            h[j] = hb_from_digest(d);
            __builtin_prefetch(&b->slots[slot_of(b, h[j])]);
        }
        for (size_t j = 0; j < m; j++) {
            size_t i = g + j;
            rc = hbuild_stage(b, h[j], kdata + koffs[i], (uint32_t)(koffs[i + 1] - koffs[i]),
                           vdata + voffs[i], (uint32_t)(voffs[i + 1] - voffs[i]),
                           deleted && deleted[i] ? ITEM_TOMBSTONE : ITEM_VALUE, NULL);
            if (rc < 0)
                return rc;
            if (rc == 0)
                return LTR_OK;
            ++*n_added;
        }
    }
    return LTR_OK;
}

static int finish_check(const ltr_hbuild *b)
{
    if (b->finished)
        return ltr_fail(LTR_EINVAL, "the builder has already written its table");
    if (b->n > UINT32_MAX / 2)
        return ltr_fail(LTR_EINVAL, "too many items for one table");
    return LTR_OK;
}

int ltr_hbuild_finish(ltr_hbuild *b, const char *path, ltr_build_stats *st)
{
    int rc = finish_check(b);
    if (!rc)
        rc = htable_write(b, path, st);
    if (!rc)
        b->finished = 1;
    return rc;
}

int ltr_hbuild_finish_at(ltr_hbuild *b, int fd, const char *name, uint64_t offset,
                         uint64_t max_bytes, ltr_build_stats *st)
{
    int rc = finish_check(b);
    if (!rc)
        rc = htable_write_at(b, fd, name, offset, max_bytes, st);
    if (!rc)
        b->finished = 1;
    return rc;
}
