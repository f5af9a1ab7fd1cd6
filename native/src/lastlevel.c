/* lastlevel.c: upkeep of the last level, which grows by appending tables and never compacts
 * downward (paper §2.4.3).
 *
 * BloomClusters: a node's sealed tables are answered by its cluster; tables appended since keep
 * their filters in memory until those reach a quarter of the cluster's bytes, when a new cluster
 * covering every table is written (docs/format/cluster.md "Growth without quadratic rewrites").
 *
 * Garbage: after a node receives tables, a sample of its items estimates the share that is
 * garbage (tombstones, and versions shadowed by a newer table of the node). Past gc_threshold
 * the node is garbage-collected (compaction.c, gc_run). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bloom.h"
#include "io.h"
#include "store_int.h"

#define GC_SAMPLES 256

static uint64_t fresh_filter_bytes(const ltr_store *s, const vnode *n)
{
    uint64_t bytes = 0;
    for (uint32_t j = n->sealed; j < n->n; j++) {
        ltr_table_info info;
        ltr_htable_info(n->tables[j]->t, &info);
        bytes += info.filter_bytes - 4ull * (s->o.table_buckets + 1);
    }
    return bytes;
}

static int needs_cluster(const ltr_store *s, const version *v, const vnode *n)
{
    if (n->level + 1 != v->depth || !s->o.bloom_bits_per_key || n->n == n->sealed)
        return 0;
    return !n->bc || 4 * fresh_filter_bytes(s, n) >= n->bc->data_bytes;
}

static int work_held; /* ltr_test_hold_last_level */

void ltr_test_hold_last_level(int on) { __atomic_store_n(&work_held, on, __ATOMIC_SEQ_CST); }

int lastlevel_pending(const ltr_store *s)
{
    /* only nodes that received tables can need work */
    return s->llq.n > 0 && !__atomic_load_n(&work_held, __ATOMIC_SEQ_CST);
}

/* The index in the queue (s->llq) of the newest noted node that worker id may work on, or -1: not the
 * node the other worker works on, nor a child of the node it compacts (appends to a node must
 * not overlap its garbage collection). state_mu is held. */
static long claimable(const ltr_store *s, int id)
{
    if (__atomic_load_n(&work_held, __ATOMIC_SEQ_CST))
        return -1;
    uint64_t busy = s->bg.compacting[!id], other = s->bg.ll_node[!id];
    for (size_t i = s->llq.n; i-- > 0;) {
        uint64_t node = s->llq.nodes[i];
        if (node != other && (busy == NO_NODE || node_level(node) == 0 ||
                              node_parent(node, node_level(node)) != busy))
            return (long)i;
    }
    return -1;
}

int lastlevel_ready(const ltr_store *s, int id) { return claimable(s, id) >= 0; }

/* ---- clusters ---- */

static int reopen_without_filters(ltr_store *s, const tref *r, tref **out)
{
    char *p = store_file(s->dir, r->file, "ht");
    ltr_htable *t = NULL;
    int rc = p ? store_open_table(s, p, LTR_OPEN_NO_FILTERS, &t)
               : ltr_fail(LTR_ENOMEM, "out of memory");
    free(p);
    if (!rc && !(*out = tref_new_sharing(r, r->level, t))) {
        ltr_htable_close(t);
        rc = ltr_fail(LTR_ENOMEM, "out of memory");
    }
    if (!rc)
        (*out)->reopened = 1; /* older versions may still read the file through r */
    return rc;
}

static int install_cluster(ltr_store *s, const vnode *n, cluster *bc, tref **fresh)
{
    uint32_t nf = n->n - n->sealed;
    vedit_op *ops = calloc(nf + 1, sizeof *ops);
    if (!ops)
        return ltr_fail(LTR_ENOMEM, "out of memory");
    for (uint32_t i = 0; i < nf; i++)
        ops[i] = (vedit_op){.add = VOP_REPLACE, .node = n->id, .level = n->level, .table = fresh[i]};
    ops[nf] = (vedit_op){.add = VOP_CLUSTER, .node = n->id, .level = n->level, .bc = bc,
                         .sealed = n->n};
    medit e = {0};
    medit_cluster(&e, n->id, bc->file, n->n, 0);
    pthread_mutex_lock(&s->state_mu);
    int rc = store_install(s, ops, nf + 1, &e);
    if (!rc)
        store_wrote(s, 1, bc->file);
    pthread_mutex_unlock(&s->state_mu);
    medit_free(&e);
    free(ops);
    return rc;
}

/* Writes a cluster covering every table of n and moves the fresh tables under it. */
static int build_cluster(ltr_store *s, const vnode *n)
{
    uint32_t nf = n->n - n->sealed;
    ltr_htable **src = calloc(nf, sizeof *src);
    tref **fresh = calloc(nf, sizeof *fresh);
    cluster *bc = NULL;
    pthread_mutex_lock(&s->state_mu);
    uint64_t file = s->next_file++;
    pthread_mutex_unlock(&s->state_mu);
    char *path = store_file(cluster_dir(s), file, "bc");
    if (path && s->files.pool && !s->meta_dir)
        tpool_take(s->files.pool, path); /* a dead table's file (same directory), overwritten in place */
    int rc = (src && fresh && path) ? LTR_OK : ltr_fail(LTR_ENOMEM, "out of memory");
    for (uint32_t i = 0; i < nf && !rc; i++)
        src[i] = n->tables[n->sealed + i]->t;
    uint64_t written = 0;
    if (!rc)
        rc = cluster_build(path, file, n->id, s->o.table_buckets,
                           bloom_probes_for(s->o.bloom_bits_per_key), n->bc, src, nf, &written);
    store_count(s, C_WRITTEN_CLUSTERS, written);
    if (!rc)
        rc = cluster_open(path, file, &bc);
    for (uint32_t i = 0; i < nf && !rc; i++)
        rc = reopen_without_filters(s, n->tables[n->sealed + i], &fresh[i]);
    if (!rc)
        rc = install_cluster(s, n, bc, fresh);
    if (rc && path)
        io_unlink(path);
    if (!rc && n->bc) /* the old cluster is out of the state */
        store_drop(s, 1, n->bc->file, NULL);
    for (uint32_t i = 0; fresh && i < nf; i++)
        tref_unref(fresh[i]);
    cluster_unref(bc);
    free(fresh);
    free(src);
    free(path);
    return rc;
}

/* ---- garbage ---- */

static uint64_t next_random(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static uint64_t node_items(const vnode *n)
{
    uint64_t total = 0;
    for (uint32_t j = 0; j < n->n; j++)
        total += n->tables[j]->t->items;
    return total;
}

/* Is one sampled item garbage? 1 yes, 0 no, <0 error. ends[j]: items in tables [0, j]. */
static int sample_one(ltr_store *s, const vnode *n, const uint64_t *ends, read_ctx *c,
                      uint64_t *rng, ltr_buf *key, int *got)
{
    *got = 0;
    if (!n->n || !ends[n->n - 1])
        return 0;
    uint64_t pick = next_random(rng) % ends[n->n - 1]; /* a table by its share of the items */
    uint32_t t = 0;
    while (pick >= ends[t])
        t++;
    bucket_footer f;
    int rc;
    const uint8_t *page = table_bucket(n->tables[t]->t, c, (uint32_t)(next_random(rng) % s->o.table_buckets), &f, &rc);
    if (!page)
        return rc;
    if (!f.count)
        return 0;
    item_view it;
    const uint8_t *p = page, *end = page + f.used;
    for (uint32_t i = (uint32_t)(next_random(rng) % f.count) + 1; i-- > 0; p += rc) {
        rc = (int)item_decode(p, end, &it);
        if (!rc)
            return ltr_fail(LTR_ECORRUPT, "a bucket holds a malformed item");
    }
    *got = 1;
    if (it.kind == ITEM_TOMBSTONE)
        return 1;
    key->len = 0;
    if ((rc = buf_append(key, it.key, it.klen))) /* the next read may reuse the page */
        return rc;
    uint8_t d[16];
    ltr_murmur3_128(key->data, it.klen, s->o.hash_seed, d);
    rc = node_lookup(n, t + 1, c, hb_from_digest(d), key->data, it.klen, &it);
    return rc < 0 ? rc : rc != LTR_ABSENT;
}

static int garbage_ratio(ltr_store *s, const vnode *n, double *ratio)
{
    read_ctx c;
    ltr_buf key = {0};
    uint64_t rng = n->id * 0x9E3779B97F4A7C15ULL ^ n->n ^ s->o.hash_seed;
    uint32_t samples = 0, garbage = 0;
    uint64_t *ends = malloc(sizeof *ends * (n->n + 1));
    int rc = ends ? read_ctx_init(&c) : ltr_fail(LTR_ENOMEM, "out of memory");
    if (rc) {
        free(ends);
        return rc;
    }
    for (uint32_t j = 0; j < n->n; j++)
        ends[j] = (j ? ends[j - 1] : 0) + n->tables[j]->t->items;
    for (uint32_t tries = 0; !rc && samples < GC_SAMPLES && tries < 4 * GC_SAMPLES; tries++) {
        int got, r = sample_one(s, n, ends, &c, &rng, &key, &got);
        if (r < 0)
            rc = r;
        samples += (uint32_t)got;
        garbage += (uint32_t)(r > 0);
    }
    read_ctx_free(&c);
    ltr_buf_free(&key);
    free(ends);
    *ratio = samples ? (double)garbage / samples : 0.0;
    return rc;
}

/* Whether n's garbage may have passed the threshold since its last estimate. Each item appended
 * since adds at most two garbage items (a tombstone is garbage and shadows one older version;
 * a put shadows one), so while even that bound stays under the threshold the node needs no new
 * sample: a load of new keys samples a node about every other append, not at every one.
 * And with or without an estimate, the garbage is at most the tombstones plus the items of every
 * table but the oldest (each shadowed version maps to the next newer version of its key, in a
 * newer table): a node's first table needs no sample unless it is mostly tombstones. */
static int garbage_may_pass(const ltr_store *s, const vnode *n, uint64_t items)
{
    double limit = s->o.gc_threshold * (double)items;
    uint64_t held = 0;
    for (uint32_t j = 0; j < n->n; j++)
        held += n->tables[j]->t->tombstones + (j ? n->tables[j]->t->items : 0);
    if ((double)held <= limit)
        return 0;
    if (!n->gc_items || items <= n->gc_items)
        return 1;
    double bound = n->gc_ratio * (double)n->gc_items + 2.0 * (double)(items - n->gc_items);
    return bound > limit;
}

int lastlevel_step(ltr_store *s, int id)
{
    pthread_mutex_lock(&s->state_mu);
    uint64_t node = 0;
    long at = claimable(s, id);
    int have = at >= 0;
    version *v = NULL;
    if (have) {
        node = s->llq.nodes[at];
        memmove(&s->llq.nodes[at], &s->llq.nodes[at + 1],
                (s->llq.n - (size_t)at - 1) * sizeof *s->llq.nodes);
        s->llq.n--;
        s->bg.ll_node[id] = node;
        v = store_pin(s); /* after the claim: no append to the node is under way or unseen */
    }
    pthread_mutex_unlock(&s->state_mu);
    const vnode *n = have ? version_node(v, node) : NULL;
    int rc = LTR_OK;
    if (n && n->n && n->level + 1 == v->depth) { /* (a node the trie outgrew is compacted) */
        double ratio = 0;
        uint64_t items = node_items(n);
        if (garbage_may_pass(s, n, items)) {
            rc = garbage_ratio(s, n, &ratio);
            vnode *w = (vnode *)n; /* ours while claimed: no other thread reads these fields */
            w->gc_ratio = ratio;
            w->gc_items = items;
        }
        if (!rc && ratio > s->o.gc_threshold)
            rc = gc_run(s, v, node); /* notes the node again: its new table needs a cluster */
        else if (!rc && needs_cluster(s, v, n))
            rc = build_cluster(s, n);
    }
    if (have) {
        pthread_mutex_lock(&s->state_mu);
        s->bg.ll_node[id] = NO_NODE;
        if (rc) /* retried with the work that failed */
            lastlevel_note(s, node);
        pthread_mutex_unlock(&s->state_mu);
        version_unref(v);
    }
    return rc ? rc : have;
}

