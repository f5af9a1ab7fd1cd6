/* store_read.c: lookups. A key is searched in the memtables, newest first, then in each trie node
 * on its hash path from the root down, newest table first; the first answer (value or tombstone)
 * wins. Readers pin a version and search it without holding any lock. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bloom.h"
#include "htable_read.h"
#include "store_int.h"

/* The newest memtable entry of the key (its memtable's builder in *b), or NULL; mem.lock is
 * held shared. */
static const staged *memtable_find(ltr_store *s, key_hash h, const uint8_t *key, uint32_t klen,
                                   const ltr_hbuild **b)
{
    const staged *st = hbuild_find(s->mem.active->b, h, key, klen);
    *b = s->mem.active->b;
    for (memtable *m = s->mem.imm; !st && m; m = m->next) {
        st = hbuild_find(m->b, h, key, klen);
        *b = m->b;
    }
    return st;
}

/* A found item's value appended to out: a pointer's read from its value log (from_table: found
 * in a table, so LTR_EMOVED may answer, blob_append_value). */
static int append_found(ltr_store *s, const uint8_t *key, uint32_t klen, const uint8_t *v,
                        uint32_t vlen, int kind, ltr_buf *out, int from_table)
{
    return kind == ITEM_POINTER ? blob_append_value(s, key, klen, v, out, from_table)
                                : buf_append(out, v, vlen);
}

/* 1 and the answer (a found value appended to out) when a memtable knows the key, else 0.
 * mem.lock is held: a pointer's value log is read under it, since the memtable is what keeps
 * that value log's records from being removed (blob.c). */
static int search_memtables(ltr_store *s, key_hash h, const uint8_t *key, uint32_t klen,
                            ltr_buf *out, int *status)
{
    const ltr_hbuild *b;
    const staged *st = memtable_find(s, h, key, klen, &b);
    if (!st)
        return 0;
    *status = st->kind == ITEM_TOMBSTONE ? LTR_DELETED : LTR_FOUND;
    int rc = st->kind == ITEM_TOMBSTONE ? LTR_OK
           : append_found(s, key, klen, staged_value(b, st), st->vlen, st->kind, out, 0);
    return rc ? rc : 1;
}

/* Where the filter of the key's bucket lies in table j of n (bits NULL: no filter). */
typedef struct fspan {
    const uint8_t *bits;
    uint32_t len;
} fspan;

static inline fspan filter_span(const vnode *n, uint32_t j, key_hash h)
{
    const vfilter *f = &n->flt[j];
    if (!f->foff)
        return (fspan){NULL, 0};
    const uint32_t *o = f->foff + hb_bucket(h, f->buckets);
    return (fspan){f->fbits + o[0], o[1] - o[0]};
}

/* The cache lines of a filter (at most 8): a bucket's filter (16 bits for each of its ~30
 * items) usually spans two or three lines, and its probes land anywhere in it. */
static inline void prefetch_span(fspan fs)
{
    if (!fs.bits)
        return;
    uintptr_t a = (uintptr_t)fs.bits & ~(uintptr_t)63, end = (uintptr_t)fs.bits + fs.len;
    for (int k = 0; a < end && k < 8; a += 64, k++)
        __builtin_prefetch((const void *)a);
}

/* Table j of n, whose filter for the key is fs. */
static int table_lookup(const vnode *n, uint32_t j, fspan fs, read_ctx *c, key_hash h,
                        const uint8_t *key, uint32_t klen, item_view *it)
{
    c->stats[ST_LOOKUPS]++;
    if (fs.bits && !bloom_may_contain(fs.bits, fs.len, n->flt[j].probes, hb_bloom(h))) {
        c->stats[ST_FNEG]++;
        return LTR_ABSENT;
    }
    return htable_probe(n->flt[j].t, c, h, key, klen, it);
}

/* The sealed tables of n from table `from` on, through the node's BloomCluster. */
static int cluster_lookup(const vnode *n, uint32_t from, read_ctx *c, key_hash h,
                          const uint8_t *key, uint32_t klen, item_view *it)
{
    if (!n->bc || n->sealed <= from)
        return LTR_ABSENT;
    /* one answer per table of the cluster; table j of the node is the cluster's skip + j */
    uint32_t covered = n->bc->tables;
    uint8_t small[256], *maybe = covered <= sizeof small ? small : malloc(covered);
    if (!maybe)
        return ltr_fail(LTR_ENOMEM, "out of memory");
    c->stats[ST_CLUSTER_READS]++;
    int r = cluster_probe(n->bc, c, hb_bucket(h, n->bc->buckets), hb_bloom(h), maybe);
    for (uint32_t j = n->sealed; !r && j-- > from;) {
        if (!maybe[n->skip + j])
            continue;
        r = htable_lookup(n->flt[j].t, c, h, key, klen, it);
        if (r == LTR_ABSENT)
            c->stats[ST_FFP]++; /* the cluster's filter said maybe */
        else
            break;
    }
    if (maybe != small)
        free(maybe);
    return r;
}

int node_lookup(const vnode *n, uint32_t from, read_ctx *c, key_hash h, const uint8_t *key,
                uint32_t klen, item_view *it)
{
    uint32_t lo = from > n->sealed ? from : n->sealed;
    for (uint32_t j = n->n; j-- > lo;) {
        int r = table_lookup(n, j, filter_span(n, j, h), c, h, key, klen, it);
        if (r != LTR_ABSENT)
            return r;
    }
    return cluster_lookup(n, from, c, h, key, klen, it);
}

static uint64_t reads_so_far(const read_ctx *c)
{
    return c->stats[ST_BUCKET_READS] + c->stats[ST_OVF_READS] + c->stats[ST_CLUSTER_READS];
}

#define PLAN_MAX 64 /* filters located ahead of one lookup */

/* The filter spans of the unsealed tables on the key's path, in search order (level by level,
 * newest table first), located all at once: looked up one table at a time, each would wait for
 * its own two dependent cache misses, and a key passes a dozen tables on its way down. */
static uint32_t plan_filters(const vnode *const *path, uint32_t levels, key_hash h, fspan *fs)
{
    const uint32_t *at[PLAN_MAX];
    const vfilter *fl[PLAN_MAX];
    uint32_t m = 0;
    for (uint32_t l = 0; l < levels; l++)
        for (uint32_t j = path[l] ? path[l]->n : 0; m < PLAN_MAX && j && j > path[l]->sealed; m++) {
            j--;
            fl[m] = &path[l]->flt[j];
            at[m] = fl[m]->foff ? fl[m]->foff + hb_bucket(h, fl[m]->buckets) : NULL;
            if (at[m])
                __builtin_prefetch(at[m]);
        }
    for (uint32_t i = 0; i < m; i++) {
        fs[i] = at[i] ? (fspan){fl[i]->fbits + at[i][0], at[i][1] - at[i][0]} : (fspan){NULL, 0};
        prefetch_span(fs[i]);
    }
    return m;
}

/* The nodes on the key's path, root first (NULL where a node is empty). */
static void find_path(const ltr_store *s, const version *v, key_hash h, const vnode **path)
{
    uint64_t trie = hb_trie_path(h);
    for (uint32_t level = 0; level < v->depth; level++)
        path[level] = version_node_at(v, level, node_id(level, trie));
}

/* The key's answer through the nodes of its path: *status, and in *it the item when found
 * (pointing into c's buffers or a mapping: valid until the next read with c, while the
 * version is pinned). */
static int search_path(ltr_store *s, uint32_t depth, const vnode *const *path, read_ctx *c, key_hash h,
                       const uint8_t *key, uint32_t klen, item_view *it, int *status)
{
    uint64_t before = reads_so_far(c);
    const vnode *last = path[depth - 1];
    if (last && last->bc) /* its miss overlaps the upper levels' filter tests */
        cluster_prefetch(last->bc, hb_bucket(h, last->bc->buckets));
    fspan fs[PLAN_MAX];
    uint32_t planned = plan_filters(path, depth, h, fs), next = 0;
    for (uint32_t level = 0; level < depth; level++) {
        const vnode *n = path[level];
        int r = LTR_ABSENT;
        for (uint32_t j = n ? n->n : 0; r == LTR_ABSENT && j && j > n->sealed; next++) {
            j--;
            r = table_lookup(n, j, next < planned ? fs[next] : filter_span(n, j, h), c, h, key,
                             klen, it);
        }
        if (r == LTR_ABSENT && n)
            r = cluster_lookup(n, 0, c, h, key, klen, it);
        if (r < 0)
            return r;
        if (r != LTR_ABSENT) {
            *status = r;
            c->hits[level]++;
            c->hit_reads[level] += reads_so_far(c) - before;
            return LTR_OK;
        }
    }
    *status = LTR_ABSENT;
    return LTR_OK;
}

/* ---- lookahead in a batch ----
 * A lookup's chain of dependent cache misses (a chunk's node slot, the node, its filter
 * pointers and cluster, then the filter offsets and the cluster's directory, and at the last
 * level the tables' lookup fields, then their HashMark records and every line of the filter
 * bits) is walked one step per key for the keys ahead of the one searched, each step
 * prefetching what the next reads: by a key's turn, a lookup or more later for each step, its
 * metadata is in cache, and only the cluster's column is still to come (search_path overlaps
 * it). Each step, and fetching all of each filter's lines rather than its first, took CPU off
 * a batched hit and a single get when measured (docs/benchmarks.md, "Measurements behind
 * choices in the code"). */
#define AHEAD 5 /* steps: slots, nodes, filter pointers, filter offsets, records and bits */
#define FLT_PER_LINE (sizeof(vfilter) >= 64 ? 1 : 64 / sizeof(vfilter)) /* a prefetch each line */
#define SEALED_AHEAD 4 /* a last-level node's newest sealed tables whose fields are fetched */

static void ahead_slots(const ltr_store *s, const version *v, key_hash h)
{
    uint64_t trie = hb_trie_path(h);
    for (uint32_t level = 0; level < v->depth; level++) {
        vnode *const *slot = version_slot_at(v, level, node_id(level, trie));
        if (slot)
            __builtin_prefetch(slot);
    }
}

static void ahead_nodes(const ltr_store *s, uint32_t depth, const vnode *const *path)
{
    for (uint32_t level = 0; level < depth; level++)
        if (path[level]) {
            __builtin_prefetch(path[level]);
            __builtin_prefetch((const char *)path[level] + sizeof(vnode) - 1);
        }
}

/* The oldest of a last-level node's sealed tables whose fields the lookahead fetches. */
static uint32_t sealed_ahead_from(const vnode *n)
{
    return n->sealed > SEALED_AHEAD ? n->sealed - SEALED_AHEAD : 0;
}

static void ahead_filters(const ltr_store *s, uint32_t depth, const vnode *const *path)
{
    for (uint32_t level = 0; level < depth; level++) {
        const vnode *n = path[level];
        if (!n)
            continue;
        uint32_t from = n->bc ? sealed_ahead_from(n) : n->sealed;
        for (uint32_t j = from; j < n->n; j += FLT_PER_LINE)
            __builtin_prefetch(&n->flt[j]);
        if (n->bc)
            __builtin_prefetch(n->bc);
    }
}

static void ahead_offsets(const ltr_store *s, uint32_t depth, const vnode *const *path, key_hash h)
{
    for (uint32_t level = 0; level < depth; level++) {
        const vnode *n = path[level];
        if (!n)
            continue;
        for (uint32_t j = n->sealed; j < n->n; j++)
            if (n->flt[j].foff)
                __builtin_prefetch(n->flt[j].foff + hb_bucket(h, n->flt[j].buckets));
        if (!n->bc)
            continue;
        cluster_prefetch(n->bc, hb_bucket(h, n->bc->buckets));
        for (uint32_t j = sealed_ahead_from(n); j < n->sealed; j++)
            htable_prefetch_hdr(n->flt[j].t);
    }
}

static void ahead_records(const ltr_store *s, uint32_t depth, const vnode *const *path)
{
    const vnode *n = path[depth - 1];
    if (n && n->bc)
        for (uint32_t j = sealed_ahead_from(n); j < n->sealed; j++)
            htable_prefetch_records(n->flt[j].t);
}

/* Every line of the unsealed tables' filters (their offsets came a step earlier), which
 * search_path's plan_filters would otherwise wait for; a single get leaves them to it. */
static void ahead_bits(const ltr_store *s, uint32_t depth, const vnode *const *path, key_hash h)
{
    for (uint32_t level = 0; level < depth; level++) {
        const vnode *n = path[level];
        for (uint32_t j = n ? n->sealed : 0; n && j < n->n; j++)
            prefetch_span(filter_span(n, j, h));
    }
}

/* The lookahead steps at key i of [0, m), for the keys that ask the version (ask[k] == -1,
 * not answered by a memtable); key k's path is kept in paths[k % AHEAD] from its second step
 * until its search. */
static void look_ahead(const ltr_store *s, const version *v, const key_hash *h,
                       const int8_t *ask, size_t i, size_t m,
                       const vnode *paths[AHEAD][LTR_MAX_LEVELS])
{
    if (i + 5 < m && ask[i + 5] == -1)
        ahead_slots(s, v, h[i + 5]);
    if (i + 4 < m && ask[i + 4] == -1) {
        find_path(s, v, h[i + 4], paths[(i + 4) % AHEAD]);
        ahead_nodes(s, v->depth, paths[(i + 4) % AHEAD]);
    }
    if (i + 3 < m && ask[i + 3] == -1)
        ahead_filters(s, v->depth, paths[(i + 3) % AHEAD]);
    if (i + 2 < m && ask[i + 2] == -1)
        ahead_offsets(s, v->depth, paths[(i + 2) % AHEAD], h[i + 2]);
    if (i + 1 < m && ask[i + 1] == -1) {
        ahead_records(s, v->depth, paths[(i + 1) % AHEAD]);
        ahead_bits(s, v->depth, paths[(i + 1) % AHEAD], h[i + 1]);
    }
}

/* One key's search (a single get), its chain of misses walked first a step at a time for every
 * level at once: each step's misses overlap one another, where the search would meet them one
 * after the other (less CPU per get: docs/benchmarks.md, "Measurements behind choices in the
 * code"). */
static int search_version(ltr_store *s, const version *v, read_ctx *c, key_hash h,
                          const uint8_t *key, uint32_t klen, item_view *it, int *status)
{
    const vnode *path[LTR_MAX_LEVELS];
    find_path(s, v, h, path);
    ahead_nodes(s, v->depth, path);
    ahead_filters(s, v->depth, path);
    ahead_offsets(s, v->depth, path, h);
    ahead_records(s, v->depth, path);
    return search_path(s, v->depth, path, c, h, key, klen, it, status);
}

static key_hash hash_key(const ltr_store *s, const uint8_t *key, uint32_t klen)
{
    uint8_t d[16];
    ltr_murmur3_128(key, klen, s->o.hash_seed, d);
    return hb_from_digest(d);
}

/* The found value's length, copied to vbuf when it fits. */
static int64_t give_value(const uint8_t *v, size_t n, uint8_t *vbuf, size_t vcap)
{
    if (n <= vcap && n)
        memcpy(vbuf, v, n);
    return (int64_t)n;
}

/* The same for a found item of any kind: its length, or an error. */
static int64_t give_found(ltr_store *s, const uint8_t *key, uint32_t klen, const uint8_t *v,
                          uint32_t vlen, int kind, uint8_t *vbuf, size_t vcap, int from_table)
{
    if (kind != ITEM_POINTER)
        return give_value(v, vlen, vbuf, vcap);
    uint32_t n = blob_value_len(v);
    if (n > vcap || !n) /* (the caller asks again with room for it) */
        return (int64_t)n;
    int rc = blob_copy_value(s, key, klen, v, vbuf, from_table);
    return rc ? rc : (int64_t)n;
}

/* A lookup's reads counted without its hit (another lookup of the same key counts it). */
static void forget_hits(read_ctx *c)
{
    memset(c->hits, 0, sizeof c->hits);
    memset(c->hit_reads, 0, sizeof c->hit_reads);
}

/* Lookups of a key whose value log the GC collected while they held a pointer into it
 * (LTR_EMOVED) start again, at most this many times: each finds the moved record, which only a
 * later collection could move again. */
#define MOVED_RETRIES 8

/* One lookup of a key: the memtables, then a version pinned before they are let go; the value
 * goes straight to the caller's buffer. */
static int64_t get_once(ltr_store *s, key_hash h, const uint8_t *key, size_t klen, uint8_t *vbuf,
                        size_t vcap)
{
    const ltr_hbuild *b;
    int64_t rc = LTR_NONE;
    pthread_rwlock_rdlock(&s->mem.lock);
    const staged *st = memtable_find(s, h, key, (uint32_t)klen, &b);
    if (st && st->kind != ITEM_TOMBSTONE) /* (under mem.lock: see search_memtables) */
        rc = give_found(s, key, (uint32_t)klen, staged_value(b, st), st->vlen, st->kind, vbuf,
                        vcap, 0);
    version *v = st ? NULL : store_pin(s);
    pthread_rwlock_unlock(&s->mem.lock);
    if (!v) {
        __atomic_fetch_add(&s->since_open.gets, 1, __ATOMIC_RELAXED);
        return rc;
    }
    read_ctx c;
    uint8_t page[LTR_BUCKET_SIZE] __attribute__((aligned(LTR_BUCKET_SIZE))); /* direct reads */
    read_ctx_init_page(&c, page);
    item_view it;
    int status, r = search_version(s, v, &c, h, key, (uint32_t)klen, &it, &status);
    if (r < 0)
        rc = r;
    else if (status == LTR_FOUND) /* (the pinned version keeps a pointer's value log, unless
                                     the GC moved its records: LTR_EMOVED) */
        rc = give_found(s, key, (uint32_t)klen, it.value, it.vlen, it.kind, vbuf, vcap, 1);
    version_unref(v);
    if (rc == LTR_EMOVED) /* looked up again: that lookup counts the get and its hit */
        forget_hits(&c);
    store_count_reads(s, &c, rc != LTR_EMOVED);
    read_ctx_free(&c);
    return rc;
}

int64_t ltr_store_get(ltr_store *s, const uint8_t *key, size_t klen, uint8_t *vbuf, size_t vcap)
{
    if (klen > LTR_MAX_KEY)
        return LTR_NONE; /* such a key can never have been stored */
    key_hash h = hash_key(s, key, (uint32_t)klen);
    int64_t rc = get_once(s, h, key, klen, vbuf, vcap);
    for (int tries = 1; rc == LTR_EMOVED && tries <= MOVED_RETRIES; tries++)
        rc = get_once(s, h, key, klen, vbuf, vcap);
    if (rc != LTR_EMOVED)
        return rc;
    __atomic_fetch_add(&s->since_open.gets, 1, __ATOMIC_RELAXED); /* (no attempt counted it) */
    return LTR_ECORRUPT; /* (the message says which value log) */
}

/* A key found in the version chunk's lookup pinned, whose value log the GC collected since
 * (LTR_EMOVED): looked up again afresh, its value appended to out. */
static int lookup_again(ltr_store *s, key_hash h, const uint8_t *key, uint32_t klen,
                        ltr_buf *out, int *status)
{
    size_t len = out->len;
    int rc = LTR_EMOVED;
    for (int tries = 0; rc == LTR_EMOVED && tries < MOVED_RETRIES; tries++) {
        out->len = len;
        *status = LTR_ABSENT;
        pthread_rwlock_rdlock(&s->mem.lock);
        rc = search_memtables(s, h, key, klen, out, status);
        version *v = rc ? NULL : store_pin(s);
        pthread_rwlock_unlock(&s->mem.lock);
        if (!v)
            continue;
        read_ctx c;
        uint8_t page[LTR_BUCKET_SIZE] __attribute__((aligned(LTR_BUCKET_SIZE)));
        read_ctx_init_page(&c, page);
        item_view it;
        rc = search_version(s, v, &c, h, key, klen, &it, status);
        if (!rc && *status == LTR_FOUND)
            rc = append_found(s, key, klen, it.value, it.vlen, it.kind, out, 1);
        version_unref(v);
        forget_hits(&c); /* (the chunk counted the key's get and hit) */
        store_count_reads(s, &c, 0);
        read_ctx_free(&c);
    }
    return rc == LTR_EMOVED ? LTR_ECORRUPT : rc < 0 ? rc : LTR_OK;
}

int64_t ltr_store_get_each(ltr_store *s, const uint8_t *kdata, const int64_t *koffs, size_t n)
{
    uint8_t value[4096];
    int64_t found = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t r = ltr_store_get(s, kdata + koffs[i], (size_t)(koffs[i + 1] - koffs[i]), value,
                                  sizeof value);
        if (r < 0 && r != LTR_NONE)
            return r;
        found += r >= 0;
    }
    return found;
}

int store_newest_pointer(ltr_store *s, const uint8_t *key, uint32_t klen, uint8_t *ptr)
{
    key_hash h = hash_key(s, key, klen);
    const ltr_hbuild *b;
    int found = 0;
    pthread_rwlock_rdlock(&s->mem.lock);
    const staged *st = memtable_find(s, h, key, klen, &b);
    if (st && (found = st->kind == ITEM_POINTER))
        memcpy(ptr, staged_value(b, st), BLOB_POINTER_SIZE);
    version *v = st ? NULL : store_pin(s);
    pthread_rwlock_unlock(&s->mem.lock);
    if (!v)
        return found;
    read_ctx c;
    uint8_t page[LTR_BUCKET_SIZE] __attribute__((aligned(LTR_BUCKET_SIZE)));
    read_ctx_init_page(&c, page);
    item_view it;
    int status, r = search_version(s, v, &c, h, key, klen, &it, &status);
    if (!r && status == LTR_FOUND && (found = it.kind == ITEM_POINTER))
        memcpy(ptr, it.value, BLOB_POINTER_SIZE);
    version_unref(v);
    read_ctx_free(&c);
    return r < 0 ? r : found;
}

void store_tables_shadowed(ltr_store *s, const memtable *m, ltr_buf *pairs)
{
    if (!blob_files_exist(s))
        return;
    const ltr_hbuild *b = m->b;
    version *v = store_pin(s);
    read_ctx c;
    uint8_t page[LTR_BUCKET_SIZE] __attribute__((aligned(LTR_BUCKET_SIZE)));
    read_ctx_init_page(&c, page);
    for (size_t i = 0; i < b->n; i++) {
        const staged *st = &b->items[i];
        item_view it;
        int status;
        /* a failed lookup (a damaged page, no memory) only leaves a record uncounted */
        if ((st->kind != ITEM_POINTER && st->kind != ITEM_TOMBSTONE) ||
            search_version(s, v, &c, b->hash[i], staged_key(b, st), st->klen, &it, &status) ||
            status != LTR_FOUND || it.kind != ITEM_POINTER)
            continue;
        blob_ptr p;
        blob_ptr_decode(it.value, &p);
        uint64_t pair[2] = {p.file, blob_record_size(st->klen, p.vlen)};
        if (buf_append(pairs, pair, sizeof pair))
            break;
    }
    version_unref(v);
    read_ctx_free(&c);
}

/* A chunk of keys [lo, hi): all memtable answers and the version pin under one shared lock,
 * then the version for the rest. */
int store_get_chunk(ltr_store *s, read_ctx *c, const uint8_t *kdata, const int64_t *koffs,
                    size_t lo, size_t hi, int8_t *status, int64_t *voffs, size_t vbase,
                    ltr_buf *values, ltr_buf *mem)
{
    key_hash h[GET_CHUNK];
    int64_t moff[GET_CHUNK + 1];
    int rc = LTR_OK;
    mem->len = 0;
    pthread_rwlock_rdlock(&s->mem.lock);
    for (size_t i = lo; i < hi && !rc; i++) {
        int64_t kl = koffs[i + 1] - koffs[i];
        int st = LTR_ABSENT;
        moff[i - lo] = (int64_t)mem->len;
        if (kl <= LTR_MAX_KEY) {
            h[i - lo] = hash_key(s, kdata + koffs[i], (uint32_t)kl);
            int r = search_memtables(s, h[i - lo], kdata + koffs[i], (uint32_t)kl, mem, &st);
            rc = r < 0 ? r : LTR_OK;
            st = r > 0 ? st : -1; /* -1: ask the version */
        }
        status[i] = (int8_t)st;
    }
    moff[hi - lo] = (int64_t)mem->len;
    version *v = store_pin(s);
    pthread_rwlock_unlock(&s->mem.lock);
    const vnode *paths[AHEAD][LTR_MAX_LEVELS];
    const int8_t *ask = status + lo; /* -1: the version is asked */
    for (size_t k = 0; k < AHEAD - 1 && k < hi - lo; k++) /* the first keys: no lookahead */
        if (ask[k] == -1)
            find_path(s, v, h[k], paths[k % AHEAD]);
    for (size_t i = lo; i < hi && !rc; i++) {
        int64_t kl = koffs[i + 1] - koffs[i];
        look_ahead(s, v, h, ask, i - lo, hi - lo, paths);
        if (status[i] == -1) {
            int st = LTR_ABSENT;
            item_view it;
            uint64_t counted[ST_N];
            if (c->defer)
                memcpy(counted, c->stats, sizeof counted);
            rc = search_path(s, v->depth, paths[(i - lo) % AHEAD], c, h[i - lo], kdata + koffs[i],
                             (uint32_t)kl, &it, &st);
            if (rc == LTR_EDEFER) { /* it must read: looked up again (and counted) elsewhere */
                memcpy(c->stats, counted, sizeof counted);
                rc = LTR_OK;
                st = GET_DEFERRED;
            } else if (!rc && st == LTR_FOUND) {
                rc = append_found(s, kdata + koffs[i], (uint32_t)kl, it.value, it.vlen, it.kind,
                                  values, 1);
                if (rc == LTR_EMOVED)
                    rc = lookup_again(s, h[i - lo], kdata + koffs[i], (uint32_t)kl, values, &st);
            }
            status[i] = (int8_t)st;
        } else if (status[i] == LTR_FOUND) {
            rc = buf_append(values, mem->data + moff[i - lo], (size_t)(moff[i - lo + 1] - moff[i - lo]));
        }
        voffs[i + 1 - vbase] = (int64_t)values->len;
    }
    version_unref(v);
    return rc;
}


