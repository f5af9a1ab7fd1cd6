/* scan.c: a full scan of a table's items, bucket by bucket and then the overflow area, in
 * batches. Every item is returned exactly once, wherever migration put it; every page and record
 * is checksummed on the way. Compaction and verification are built on it. */
#include <stdlib.h>
#include <string.h>

#include "bucket.h"
#include "htable_read.h"
#include "mapguard.h"
#include "io.h"

#define SCAN_CHUNK 64 /* buckets read with one pread (256 KiB) when the table is not mapped */

struct ltr_scan {
    ltr_htable *t;
    uint32_t next_bucket;
    uint32_t next_overflow;
    read_ctx c;
    uint8_t *chunk;       /* buckets [chunk_first, chunk_first + chunk_n) */
    uint32_t chunk_first, chunk_n;
};

int ltr_scan_new(ltr_htable *t, ltr_scan **out)
{
    *out = NULL;
    ltr_scan *s = calloc(1, sizeof *s);
    if (!s)
        return ltr_fail(LTR_ENOMEM, "out of memory starting a scan");
    int rc = read_ctx_init(&s->c);
    if (rc) {
        free(s);
        return rc;
    }
    s->t = t;
    *out = s;
    return LTR_OK;
}

void ltr_scan_free(ltr_scan *s)
{
    if (!s)
        return;
    read_ctx_free(&s->c);
    free(s->chunk);
    free(s);
}

/* Bucket k, checked: from the map, or from a chunk of buckets read at once (a scan reads them
 * all, so one system call per chunk instead of one per bucket). */
static const uint8_t *scan_page(ltr_scan *s, uint32_t k, bucket_footer *f, int *rc)
{
    ltr_htable *t = s->t;
    if (t->map)
        return table_bucket(t, &s->c, k, f, rc);
    if (k < s->chunk_first || k >= s->chunk_first + s->chunk_n) {
        uint32_t n = t->buckets - k < SCAN_CHUNK ? t->buckets - k : SCAN_CHUNK;
        /* aligned: a table opened with LTR_OPEN_DIRECT reads into it */
        if (!s->chunk &&
            !(s->chunk = aligned_alloc(IO_DIRECT_ALIGN, (size_t)SCAN_CHUNK * LTR_BUCKET_SIZE))) {
            *rc = ltr_fail(LTR_ENOMEM, "out of memory scanning %s", t->path);
            return NULL;
        }
        s->chunk_n = 0;
        *rc = table_pread(t, s->chunk, (size_t)n * LTR_BUCKET_SIZE, (uint64_t)k * LTR_BUCKET_SIZE);
        if (*rc)
            return NULL;
        s->chunk_first = k;
        s->chunk_n = n;
    }
    const uint8_t *page = s->chunk + (size_t)(k - s->chunk_first) * LTR_BUCKET_SIZE;
    s->c.stats[ST_BUCKET_READS]++;
    *rc = bucket_check(page, k, t->buckets, f, t->path);
    return *rc ? NULL : page;
}

void ltr_items_free(ltr_items *it)
{
    if (!it)
        return;
    ltr_buf_free(&it->keys);
    ltr_buf_free(&it->values);
    ltr_buf_free(&it->koffs);
    ltr_buf_free(&it->voffs);
    ltr_buf_free(&it->deleted);
    it->n = 0;
}

int items_reset(ltr_items *o)
{
    int64_t zero = 0;
    o->keys.len = o->values.len = o->koffs.len = o->voffs.len = o->deleted.len = 0;
    o->n = 0;
    int rc = buf_append(&o->koffs, &zero, sizeof zero);
    return rc ? rc : buf_append(&o->voffs, &zero, sizeof zero);
}

int items_push(ltr_items *o, const item_view *it)
{
    uint8_t del = (uint8_t)it->kind; /* 1: a tombstone; 2: a pointer (ltr_items) */
    int rc = buf_append(&o->keys, it->key, it->klen);
    if (!rc)
        rc = buf_append(&o->values, it->value, it->kind == ITEM_TOMBSTONE ? 0 : it->vlen);
    int64_t ko = (int64_t)o->keys.len, vo = (int64_t)o->values.len;
    if (!rc)
        rc = buf_append(&o->koffs, &ko, sizeof ko);
    if (!rc)
        rc = buf_append(&o->voffs, &vo, sizeof vo);
    if (!rc)
        rc = buf_append(&o->deleted, &del, 1);
    if (!rc)
        o->n++;
    return rc;
}

/* Calls fn for each item of the next bucket, then moves past it. */
static int bucket_each(ltr_scan *s, int (*fn)(void *ctx, const item_view *it), void *ctx)
{
    bucket_footer f;
    int rc;
    uint32_t k = s->next_bucket;
    const uint8_t *page = scan_page(s, k, &f, &rc);
    if (!page)
        return rc;
    const uint8_t *p = page, *end = page + f.used;
    for (uint32_t i = 0; i < f.count; i++) {
        item_view it;
        size_t n = item_decode(p, end, &it);
        if (!n)
            return ltr_fail(LTR_ECORRUPT, "%s: bucket %u holds a malformed item", s->t->path, k);
        if ((rc = fn(ctx, &it)))
            return rc;
        p += n;
    }
    s->next_bucket++;
    return LTR_OK;
}

static int push_item(void *ctx, const item_view *it) { return items_push(ctx, it); }

int scan_each(ltr_scan *s, int (*fn)(void *ctx, const item_view *it), void *ctx)
{
    ltr_htable *t = s->t;
    int rc = LTR_OK;
    while (!rc && s->next_bucket < t->buckets)
        rc = bucket_each(s, fn, ctx);
    while (!rc && s->next_overflow < t->ovf_items) {
        item_view it;
        rc = table_overflow_item(t, &s->c, s->next_overflow, &it);
        if (!rc && !(rc = fn(ctx, &it)))
            s->next_overflow++;
    }
    return rc;
}

static int scan_next(ltr_scan *s, size_t max_items, ltr_items *out)
{
    ltr_htable *t = s->t;
    int rc = items_reset(out);
    if (max_items < 1)
        max_items = 1;
    /* Whole buckets only, so a batch may exceed max_items by one bucket's items. */
    while (!rc && s->next_bucket < t->buckets && out->n < max_items)
        rc = bucket_each(s, push_item, out);
    while (!rc && s->next_bucket >= t->buckets && s->next_overflow < t->ovf_items &&
           out->n < max_items) {
        item_view it;
        rc = table_overflow_item(t, &s->c, s->next_overflow, &it);
        if (!rc)
            rc = items_push(out, &it);
        if (!rc)
            s->next_overflow++;
    }
    return rc;
}

typedef struct next_call {
    ltr_scan *s;
    size_t max_items;
    ltr_items *out;
} next_call;

static int run_next(void *arg)
{
    next_call *n = arg;
    return scan_next(n->s, n->max_items, n->out);
}

/* A mapped table is read under a guard (mapguard.h). */
int ltr_scan_next(ltr_scan *s, size_t max_items, ltr_items *out)
{
    next_call n = {s, max_items, out};
    return map_guarded(s->t->map != NULL, s->t->path, run_next, &n);
}
