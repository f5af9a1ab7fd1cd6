/* window_read.c: reading the items homed in a window of a table's buckets (window_read.h).
 *
 * An item sits in its home bucket, in a bucket its home's migration record leads to (and on
 * along a chain: a target may pass items on), or in the overflow area. So a window is its own
 * buckets, read with one call, then the buckets outside it that records in what was read lead
 * to, read one by one (a target is the least loaded bucket anywhere in the table), then the
 * overflow items homed in it, found through an index of their homes made once. Items read that
 * are homed elsewhere are left for their own window. */
#include <stdlib.h>
#include <string.h>

#include "htable_format.h"
#include "htable_read.h"
#include "io.h"
#include "window_read.h"

typedef struct ovf_home {
    uint32_t home, j; /* overflow item j of the table is homed in bucket `home` */
} ovf_home;

struct wread {
    ltr_htable *t;
    int fd;            /* a direct table's cached descriptor (table_open_cached), or -1 */
    uint8_t *pages;    /* the window's buckets */
    size_t pages_cap;  /* in buckets */
    uint8_t *extra;    /* buckets outside the window that its records lead to */
    uint32_t *extra_id;
    size_t nextra, extra_cap;
    uint8_t *seen;     /* per bucket of the table: read for this window */
    ovf_home *ovf;     /* sorted by home */
    ltr_buf arena;     /* the window's overflow items */
    uint64_t returned;
};

/* Reads through the page cache: a compaction's inputs are mostly fresh tables not yet written
 * back, which an O_DIRECT read would first have to write (docs/design.md). */
static int wpread(wread *r, void *p, size_t n, uint64_t off)
{
    return r->fd < 0 ? table_pread(r->t, p, n, off)
                     : io_pread(r->fd, p, n, r->t->base + off, r->t->path);
}

static key_hash hash_of(const ltr_htable *t, const item_view *it)
{
    uint8_t d[16];
    ltr_murmur3_128(it->key, it->klen, t->seed, d);
    return hb_from_digest(d);
}

static int by_home(const void *a, const void *b)
{
    const ovf_home *x = a, *y = b;
    if (x->home != y->home)
        return x->home < y->home ? -1 : 1;
    return x->j < y->j ? -1 : x->j > y->j;
}

/* The home of every overflow item, read once (a well-balanced table has none or few). */
static int index_overflow(wread *r)
{
    ltr_htable *t = r->t;
    r->ovf = malloc(sizeof *r->ovf * (t->ovf_items ? t->ovf_items : 1));
    if (!r->ovf)
        return ltr_fail(LTR_ENOMEM, "out of memory reading %s", t->path);
    for (uint32_t j = 0; j < t->ovf_items; j++) {
        item_view it;
        r->arena.len = 0;
        int rc = buf_reserve(&r->arena, t->ovf_len[j]);
        if (!rc)
            rc = wpread(r, r->arena.data, t->ovf_len[j], t->ovf_at[j]);
        if (!rc)
            rc = table_overflow_check(t, j, r->arena.data, &it);
        if (rc)
            return rc;
        r->ovf[j] = (ovf_home){hb_bucket(hash_of(t, &it), t->buckets), j};
    }
    qsort(r->ovf, t->ovf_items, sizeof *r->ovf, by_home);
    return LTR_OK;
}

int wread_new(ltr_htable *t, wread **out)
{
    *out = NULL;
    wread *r = calloc(1, sizeof *r);
    if (!r)
        return ltr_fail(LTR_ENOMEM, "out of memory reading %s", t->path);
    r->t = t;
    r->fd = -1;
    r->seen = calloc(t->buckets, 1);
    int rc = r->seen ? table_open_cached(t, &r->fd)
                 : ltr_fail(LTR_ENOMEM, "out of memory reading %s", t->path);
    if (!rc)
        rc = index_overflow(r);
    if (rc) {
        wread_free(r);
        return rc;
    }
    *out = r;
    return LTR_OK;
}

void wread_free(wread *r)
{
    if (!r)
        return;
    io_close(r->fd);
    free(r->pages);
    free(r->extra);
    free(r->extra_id);
    free(r->seen);
    free(r->ovf);
    ltr_buf_free(&r->arena);
    free(r);
}

uint64_t wread_returned(const wread *r) { return r->returned; }

static int read_window(wread *r, uint32_t first, uint32_t n)
{
    if (n > r->pages_cap) {
        free(r->pages);
        r->pages = malloc((size_t)n * LTR_BUCKET_SIZE);
        r->pages_cap = r->pages ? n : 0;
        if (!r->pages)
            return ltr_fail(LTR_ENOMEM, "out of memory reading %s", r->t->path);
    }
    int rc = wpread(r, r->pages, (size_t)n * LTR_BUCKET_SIZE, (uint64_t)first * LTR_BUCKET_SIZE);
    for (uint32_t i = 0; !rc && i < n; i++) {
        bucket_footer f;
        rc = bucket_check(r->pages + (size_t)i * LTR_BUCKET_SIZE, first + i, r->t->buckets, &f,
                          r->t->path);
        r->seen[first + i] = 1;
    }
    return rc;
}

/* Reads bucket k (outside the window) into the extra pages. */
static int read_extra(wread *r, uint32_t k)
{
    if (r->nextra == r->extra_cap) {
        size_t cap = r->extra_cap ? 2 * r->extra_cap : 16;
        uint8_t *p = realloc(r->extra, cap * LTR_BUCKET_SIZE);
        if (p)
            r->extra = p;
        uint32_t *id = p ? realloc(r->extra_id, cap * sizeof *id) : NULL;
        if (!id)
            return ltr_fail(LTR_ENOMEM, "out of memory reading %s", r->t->path);
        r->extra_id = id;
        r->extra_cap = cap;
    }
    uint8_t *page = r->extra + r->nextra * LTR_BUCKET_SIZE;
    bucket_footer f;
    int rc = wpread(r, page, LTR_BUCKET_SIZE, (uint64_t)k * LTR_BUCKET_SIZE);
    if (!rc)
        rc = bucket_check(page, k, r->t->buckets, &f, r->t->path);
    if (!rc)
        r->extra_id[r->nextra++] = k;
    return rc;
}

static const uint8_t *page_at(const wread *r, size_t i, uint32_t n)
{
    return i < n ? r->pages + i * LTR_BUCKET_SIZE : r->extra + (i - n) * LTR_BUCKET_SIZE;
}

/* Follows the migration records of the pages read (the window's, then each extra page as it
 * comes) to the buckets outside the window they lead to, until none is left unread. */
static int follow_records(wread *r, uint32_t n)
{
    int rc = LTR_OK;
    for (size_t i = 0; !rc && i < n + r->nextra; i++) {
        const uint8_t *page = page_at(r, i, n);
        uint16_t flags = get_u16(page + BK_FLAGS), target = get_u16(page + BK_TARGET);
        if (!(flags & BK_FLAG_MIGRATED) || target >= r->t->buckets || r->seen[target])
            continue;
        r->seen[target] = 1;
        rc = read_extra(r, target);
    }
    return rc;
}

/* Calls fn for the items of page (bucket k) homed in the window. */
static int page_items(wread *r, const uint8_t *page, uint32_t k, uint32_t first, uint32_t n,
                      wread_fn fn, void *ctx)
{
    uint32_t count = get_u16(page + BK_COUNT), used = get_u16(page + BK_USED);
    const uint8_t *p = page, *end = page + used;
    for (uint32_t i = 0; i < count; i++) {
        item_view it;
        size_t len = item_decode(p, end, &it);
        if (!len)
            return ltr_fail(LTR_ECORRUPT, "%s: bucket %u holds a malformed item", r->t->path, k);
        p += len;
        key_hash h = hash_of(r->t, &it);
        if (hb_bucket(h, r->t->buckets) - first >= n)
            continue; /* migrated here from another window */
        int rc = fn(ctx, h, &it);
        if (rc)
            return rc;
        r->returned++;
    }
    return LTR_OK;
}

/* The overflow items homed in the window, read into the arena (sized first: the items'
 * bytes must not move once handed out). */
static int overflow_items(wread *r, uint32_t first, uint32_t n, wread_fn fn, void *ctx)
{
    ltr_htable *t = r->t;
    uint32_t lo = 0, hi = t->ovf_items;
    while (lo < hi) { /* the first entry homed at or after `first` */
        uint32_t mid = lo + (hi - lo) / 2;
        if (r->ovf[mid].home < first)
            lo = mid + 1;
        else
            hi = mid;
    }
    uint32_t end = lo;
    uint64_t bytes = 0;
    for (; end < t->ovf_items && r->ovf[end].home - first < n; end++)
        bytes += t->ovf_len[r->ovf[end].j];
    r->arena.len = 0;
    int rc = buf_reserve(&r->arena, bytes ? bytes : 1);
    for (uint32_t e = lo; !rc && e < end; e++) {
        uint32_t j = r->ovf[e].j, len = t->ovf_len[j];
        uint8_t *rec = r->arena.data + r->arena.len;
        item_view it;
        rc = wpread(r, rec, len, t->ovf_at[j]);
        if (!rc)
            rc = table_overflow_check(t, j, rec, &it);
        r->arena.len += len;
        if (!rc && !(rc = fn(ctx, hash_of(t, &it), &it)))
            r->returned++;
    }
    return rc;
}

int wread_items(wread *r, uint32_t first, uint32_t n, wread_fn fn, void *ctx)
{
    if (first >= r->t->buckets || n > r->t->buckets - first)
        return ltr_fail(LTR_EINVAL, "a window outside the buckets of %s", r->t->path);
    for (size_t i = 0; i < r->nextra; i++)
        r->seen[r->extra_id[i]] = 0;
    r->nextra = 0;
    int rc = read_window(r, first, n);
    if (!rc)
        rc = follow_records(r, n);
    for (uint32_t i = 0; i < n; i++)
        r->seen[first + i] = 0;
    for (size_t i = 0; !rc && i < n + r->nextra; i++)
        rc = page_items(r, page_at(r, i, n), i < n ? first + (uint32_t)i : r->extra_id[i - n],
                        first, n, fn, ctx);
    if (!rc)
        rc = overflow_items(r, first, n, fn, ctx);
    return rc;
}
