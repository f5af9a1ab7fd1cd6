/* migrate.c: balancing a table's buckets by greedy paired migration (paper §2.4.2, Fig. 6).
 *
 * The most overloaded bucket gives its highest-ranked items to the least loaded bucket that has
 * never given any; the rank order is the bucket's own (hashbits.h), so the cut is one number, the
 * HashMark. A target pushed over the payload becomes a source later (a chain). Chains stop at
 * LTR_MAX_CHAIN hops, and when no bucket has room: the excess then goes to the overflow area. */
#include <stdlib.h>
#include <string.h>

#include "ltr_int.h"
#include "plan.h"

/* ---- an indexed binary heap over bucket ids, keyed by load ---- */

typedef struct heap {
    uint32_t *ids;
    uint32_t *pos; /* position of each id in ids, or PLAN_END when absent */
    uint32_t n;
    const uint32_t *key;
    int max; /* 1: max-heap, 0: min-heap */
} heap;

static int heap_above(const heap *h, uint32_t a, uint32_t b)
{
    uint32_t ka = h->key[a], kb = h->key[b];
    if (ka != kb)
        return h->max ? ka > kb : ka < kb;
    return a < b; /* deterministic ties */
}

static void heap_swap(heap *h, uint32_t i, uint32_t j)
{
    uint32_t a = h->ids[i], b = h->ids[j];
    h->ids[i] = b;
    h->ids[j] = a;
    h->pos[b] = i;
    h->pos[a] = j;
}

static void heap_up(heap *h, uint32_t i)
{
    while (i > 0 && heap_above(h, h->ids[i], h->ids[(i - 1) / 2])) {
        heap_swap(h, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static void heap_down(heap *h, uint32_t i)
{
    for (;;) {
        uint32_t l = 2 * i + 1, r = l + 1, best = i;
        if (l < h->n && heap_above(h, h->ids[l], h->ids[best]))
            best = l;
        if (r < h->n && heap_above(h, h->ids[r], h->ids[best]))
            best = r;
        if (best == i)
            return;
        heap_swap(h, i, best);
        i = best;
    }
}

static void heap_push(heap *h, uint32_t id)
{
    h->ids[h->n] = id;
    h->pos[id] = h->n;
    heap_up(h, h->n++);
}

static void heap_remove(heap *h, uint32_t id)
{
    uint32_t i = h->pos[id];
    if (i == PLAN_END)
        return;
    heap_swap(h, i, --h->n);
    h->pos[id] = PLAN_END;
    if (i < h->n) {
        heap_up(h, i);
        heap_down(h, i);
    }
}

static void heap_fix(heap *h, uint32_t id)
{
    if (h->pos[id] == PLAN_END)
        return;
    heap_up(h, h->pos[id]);
    heap_down(h, h->pos[id]);
}

static int heap_init(heap *h, uint32_t cap, const uint32_t *key, int max)
{
    h->ids = malloc(sizeof(uint32_t) * (cap ? cap : 1));
    h->pos = malloc(sizeof(uint32_t) * (cap ? cap : 1));
    h->n = 0;
    h->key = key;
    h->max = max;
    if (!h->ids || !h->pos)
        return ltr_fail(LTR_ENOMEM, "out of memory balancing a table");
    for (uint32_t i = 0; i < cap; i++)
        h->pos[i] = PLAN_END;
    return LTR_OK;
}

static void heap_free(heap *h)
{
    free(h->ids);
    free(h->pos);
}

/* ---- the plan ---- */

typedef struct ranked {
    uint32_t rank;
    uint32_t item;
} ranked;

static int before(const ranked *x, const ranked *y) /* rank descending, then item ascending */
{
    return x->rank != y->rank ? x->rank > y->rank : x->item < y->item;
}

static int by_rank_desc(const void *a, const void *b)
{
    return before(a, b) ? -1 : before(b, a);
}

int plan_init(plan *p, uint32_t table_buckets, uint32_t base, uint32_t buckets, uint32_t nitems,
              const key_hash *hash, const uint32_t *size)
{
    memset(p, 0, sizeof *p);
    p->buckets = buckets;
    p->base = base;
    p->table_buckets = table_buckets;
    p->nitems = nitems;
    p->hash = hash;
    p->size = size;
    p->next = malloc(sizeof(uint32_t) * (nitems ? nitems : 1));
    p->head = malloc(sizeof(uint32_t) * buckets);
    p->load = calloc(buckets, sizeof(uint32_t));
    p->nitems_in = calloc(buckets, sizeof(uint32_t));
    p->depth = calloc(buckets, 1);
    p->is_source = calloc(buckets, 1);
    p->records = malloc(sizeof(mig_record) * buckets);
    p->overflow = malloc(sizeof(uint32_t) * (nitems ? nitems : 1));
    if (!p->next || !p->head || !p->load || !p->nitems_in || !p->depth || !p->is_source ||
        !p->records || !p->overflow) {
        plan_free(p);
        return ltr_fail(LTR_ENOMEM, "out of memory planning a table of %u items", nitems);
    }
    for (uint32_t b = 0; b < buckets; b++)
        p->head[b] = PLAN_END;
    /* Filed in reverse so that each bucket lists its items in insertion order. */
    for (uint32_t i = nitems; i-- > 0;) {
        if (size[i] > LTR_BUCKET_PAYLOAD) {
            p->overflow[p->noverflow++] = i;
            continue;
        }
        uint32_t b = hb_bucket(hash[i], table_buckets) - base;
        if (b >= buckets) {
            plan_free(p);
            return ltr_fail(LTR_EINVAL, "an item's home bucket lies outside the window planned");
        }
        p->next[i] = p->head[b];
        p->head[b] = i;
        p->load[b] += size[i];
        p->nitems_in[b]++;
    }
    return LTR_OK;
}

void plan_free(plan *p)
{
    free(p->next);
    free(p->head);
    free(p->load);
    free(p->nitems_in);
    free(p->depth);
    free(p->is_source);
    free(p->records);
    free(p->overflow);
    memset(p, 0, sizeof *p);
}

/* Collects bucket s's items ordered by rank in s, highest first; returns how many. */
static uint32_t collect_ranked(const plan *p, uint32_t s, ranked *out)
{
    uint32_t n = 0;
    for (uint32_t i = p->head[s]; i != PLAN_END; i = p->next[i]) {
        out[n].rank = hb_rank(p->hash[i], p->base + s);
        out[n].item = i;
        n++;
    }
    if (n > 64) { /* a crowded bucket (adversarial keys can put a whole table in one) */
        qsort(out, n, sizeof *out, by_rank_desc);
        return n;
    }
    /* insertion sort: a bucket holds tens of items, and qsort's calls cost more here */
    for (uint32_t i = 1; i < n; i++) {
        ranked r = out[i];
        uint32_t j = i;
        for (; j > 0 && before(&r, &out[j - 1]); j--)
            out[j] = out[j - 1];
        out[j] = r;
    }
    return n;
}

/* The fewest highest-ranked items to shed, extended so no rank straddles the cut. */
static uint32_t choose_cut(const plan *p, uint32_t s, const ranked *r, uint32_t n, uint32_t *bytes)
{
    uint32_t excess = p->load[s] - LTR_BUCKET_PAYLOAD, moved = 0, k = 0;
    while (k < n && moved < excess)
        moved += p->size[r[k++].item];
    while (k < n && r[k].rank == r[k - 1].rank)
        moved += p->size[r[k++].item];
    *bytes = moved;
    return k;
}

/* Rebuilds s's list with the kept items r[k..n) and takes the shed ones out of its load. */
static void keep_tail(plan *p, uint32_t s, const ranked *r, uint32_t k, uint32_t n, uint32_t bytes)
{
    p->head[s] = PLAN_END;
    for (uint32_t j = n; j-- > k;) {
        p->next[r[j].item] = p->head[s];
        p->head[s] = r[j].item;
    }
    p->load[s] -= bytes;
    p->nitems_in[s] = n - k;
}

static void move_items(plan *p, uint32_t s, uint32_t t, const ranked *r, uint32_t k, uint32_t bytes)
{
    for (uint32_t j = 0; j < k; j++) {
        p->next[r[j].item] = p->head[t];
        p->head[t] = r[j].item;
    }
    p->load[t] += bytes;
    p->nitems_in[t] += k;
    if (p->depth[t] < p->depth[s] + 1)
        p->depth[t] = (uint8_t)(p->depth[s] + 1);
    if (p->depth[t] > p->max_chain)
        p->max_chain = p->depth[t];
    p->migrated += k;
    mig_record *rec = &p->records[p->nrecords++];
    rec->source = (uint16_t)(p->base + s);
    rec->target = (uint16_t)(p->base + t);
    rec->hashmark = r[k - 1].rank;
    rec->flow = k;
}

int plan_balance(plan *p)
{
    heap over, under;
    ranked *r = malloc(sizeof(ranked) * (p->nitems ? p->nitems : 1));
    int rc = r ? LTR_OK : ltr_fail(LTR_ENOMEM, "out of memory balancing a table");
    if (!rc)
        rc = heap_init(&over, p->buckets, p->load, 1);
    if (!rc)
        rc = heap_init(&under, p->buckets, p->load, 0);
    if (rc) {
        free(r);
        return rc;
    }
    for (uint32_t b = 0; b < p->buckets; b++) {
        heap_push(&under, b);
        if (p->load[b] > LTR_BUCKET_PAYLOAD) {
            heap_push(&over, b);
            p->overloaded++;
        }
    }
    while (over.n) {
        uint32_t s = over.ids[0], bytes;
        heap_remove(&over, s);
        heap_remove(&under, s);
        p->is_source[s] = 1;
        uint32_t n = collect_ranked(p, s, r);
        uint32_t k = choose_cut(p, s, r, n, &bytes);
        uint32_t t = under.n ? under.ids[0] : PLAN_END;
        int room = t != PLAN_END && p->load[t] < LTR_BUCKET_PAYLOAD;
        if (room && p->depth[s] < LTR_MAX_CHAIN) {
            move_items(p, s, t, r, k, bytes);
            heap_fix(&under, t);
            if (p->load[t] > LTR_BUCKET_PAYLOAD && over.pos[t] == PLAN_END)
                heap_push(&over, t);
        } else {
            for (uint32_t j = 0; j < k; j++)
                p->overflow[p->noverflow++] = r[j].item;
        }
        keep_tail(p, s, r, k, n, bytes);
    }
    heap_free(&over);
    heap_free(&under);
    free(r);
    return LTR_OK;
}
