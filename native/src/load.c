/* load.c: the bulk loader (docs/design.md "The loader"). An item's node is a pure function of
 * its key's hash, so a load needs no sort and no compaction cascade:
 *
 * 1. adding: each item is hashed and appended to the partition of its trie node at depth
 *    `depth` (8^depth partitions), in input order; when the partitions' buffers pass half the
 *    working memory they are appended to their files (spilled);
 * 2. building: the partitions are read back one at a time on each of two threads, their items
 *    counted out by target node (stable: input order is kept) and staged in one builder per node,
 *    where a later item of a key replaces an earlier one; each node's tables are written to the
 *    load's directory and fsynced, and the partition's file is removed;
 * 3. installing: the store's levels above the target level are compacted into it (so nothing
 *    older sits above the loaded tables), the tables are linked into the store under fresh
 *    numbers, and one manifest edit makes all of them the newest tables of their nodes at once.
 *
 * Until that edit is durable the store shows its state before the load; a crash leaves only the
 * load's directory, which the next load removes. */
#define _GNU_SOURCE
#include <math.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bloom.h"
#include "bucket.h"
#include "io.h"
#include "load_int.h"

#define LOAD_MEMORY_DEFAULT (1ull << 30)
#define PART_BUF_MIN 4096u /* a partition's buffer holds at least this much */

static void count(uint64_t *c, uint64_t n) { __atomic_fetch_add(c, n, __ATOMIC_RELAXED); }

/* ---- the plan: options of a new store, partition depth, target level ---- */

void ltr_load_plan_options(uint64_t expected_bytes, uint64_t expected_items, ltr_store_opts *o)
{
    /* The smallest trie whose last-level nodes each receive at most one default-sized table:
     * then most items end in the last level, under BloomClusters, and tables are sized to the
     * nodes' share, so that a node's data fills one table. The share varies between nodes by
     * about one over the root of a node's items: four times that (at least 2%) is added, so
     * that a node rarely needs a second, nearly empty table. */
    double fill = o->fill > 0 ? o->fill : LTR_DEFAULT_FILL;
    double table = fill * LTR_DEFAULT_BUCKETS * LTR_BUCKET_PAYLOAD;
    uint32_t levels = 2;
    while (levels < LTR_MAX_LEVELS - 1 &&
           (double)expected_bytes / (double)(1ull << 3 * (levels - 1)) > table)
        levels++;
    double nodes = (double)(1ull << 3 * (levels - 1));
    double items = expected_items ? (double)expected_items : (double)expected_bytes / 34.0;
    double spread = items / nodes >= 1 ? 4.0 / sqrt(items / nodes) : 1.0;
    double share = (1.0 + (spread > 0.02 ? spread : 0.02)) * (double)expected_bytes / nodes;
    uint64_t buckets = (uint64_t)(share / (fill * LTR_BUCKET_PAYLOAD)) + 1;
    if (o->levels) /* a fixed trie gets this depth; a growing one (0) reaches it at install */
        o->levels = levels;
    o->table_buckets = (uint32_t)(buckets < 16 ? 16 : buckets > LTR_DEFAULT_BUCKETS ? LTR_DEFAULT_BUCKETS
                                                                                   : buckets);
    o->given |= (o->levels ? LTR_OPT_LEVELS : 0) | LTR_OPT_TABLE_BUCKETS;
}

static uint64_t table_capacity(const ltr_store *s) { return store_table_capacity(&s->o); }

/* The partition depth: partitions of at most a sixth of the memory each (a partition is held
 * whole while two threads build, with about twice its size in builders), at most 4,096 of them
 * and no deeper than the last level. With no estimate, 512 partitions (or the last level's
 * nodes): enough for a hundred times the memory, and a small load does not spill anyway. */
static uint32_t plan_depth(const ltr_store *s, uint64_t expected, uint64_t memory)
{
    uint32_t d = 0, last = store_max_levels(s) - 1;
    if (!expected)
        return last < 3 ? last : 3;
    while (d < last && d < 4 && expected / (1ull << 3 * d) > memory / 6)
        d++;
    return d;
}

/* The level the loaded tables go to: the deepest whose nodes each get at least half a table's
 * worth (or the last level), so that small loads do not scatter nearly empty tables. A growing
 * trie is deepened at install when that level lies below its last one. */
static uint32_t plan_target(const ltr_store *s, uint64_t bytes)
{
    uint32_t l = 0;
    while (l + 1 < store_max_levels(s) && bytes / (1ull << 3 * (l + 1)) >= table_capacity(s) / 2)
        l++;
    return l;
}

/* ---- adding ---- */

/* A partition's file, and a built table's file (malloc'd; NULL without memory). */
static char *spill_path(const ltr_load *l, uint32_t part)
{
    size_t len = strlen(l->spill_dir) + 24;
    char *p = malloc(len);
    if (p)
        snprintf(p, len, "%s/P%05u.spill", l->spill_dir, part);
    return p;
}

static char *table_path(const ltr_load *l, uint32_t name)
{
    size_t len = strlen(l->dir) + 24;
    char *p = malloc(len);
    if (p)
        snprintf(p, len, "%s/T%08u.ht", l->dir, name);
    return p;
}

/* A partition buffer's size: its share of half the working memory. */
static size_t part_buffer(const ltr_load *l)
{
    uint64_t share = l->memory / 2 / l->nparts;
    return (size_t)(share > PART_BUF_MIN ? share : PART_BUF_MIN);
}

/* Appends n bytes to partition i's file. */
static int spill_bytes(ltr_load *l, uint32_t i, const uint8_t *data, size_t n)
{
    part *p = &l->parts[i];
    char *path = spill_path(l, i);
    if (!path)
        return ltr_fail(LTR_ENOMEM, "out of memory");
    int fd;
    int rc = io_open(&fd, path, O_WRONLY | O_CREAT | O_APPEND, 0644, "the load's partition");
    if (!rc) {
        rc = io_write_fd(fd, data, n, path, p->spilled);
        int r = io_close_checked(fd, path);
        rc = rc ? rc : r;
    }
    free(path);
    if (!rc) {
        p->spilled += n;
        count(&l->st.spill_bytes, n);
    }
    return rc;
}

/* Writes partition i's buffer to its file. */
static int spill_one(ltr_load *l, uint32_t i)
{
    part *p = &l->parts[i];
    int rc = p->buf.len ? spill_bytes(l, i, p->buf.data, p->buf.len) : LTR_OK;
    if (!rc)
        p->buf.len = 0;
    return rc;
}

/* Appends one item to partition i: to its buffer, which is written to its file when full (an
 * item larger than the buffer goes straight to the file). The buffers have a fixed size, their
 * share of half the working memory, so they never hold more. */
/* An item record whose value is `flags` bytes of zeros (a memcached item's flags 0, see
 * ltr_load_add) and then val. */
static size_t encode_item(uint8_t *p, const uint8_t *key, uint32_t kl, const uint8_t *val,
                          uint32_t vl, uint32_t flags)
{
    size_t n = item_header(p, kl, flags + vl, ITEM_VALUE);
    memcpy(p + n, key, kl);
    memset(p + n + kl, 0, flags);
    if (vl)
        memcpy(p + n + kl + flags, val, vl);
    return n + kl + flags + vl;
}

static int part_add(ltr_load *l, uint32_t i, const uint8_t *key, uint32_t kl, const uint8_t *val,
                    uint32_t vl, uint32_t flags)
{
    part *p = &l->parts[i];
    size_t size = item_size(kl, flags + vl, ITEM_VALUE);
    int rc = LTR_OK;
    if (p->buf.len + size > l->part_cap && (rc = spill_one(l, i)))
        return rc;
    if (size > l->part_cap) {
        uint8_t *rec = malloc(size);
        if (!rec)
            return ltr_fail(LTR_ENOMEM, "out of memory");
        encode_item(rec, key, kl, val, vl, flags);
        rc = spill_bytes(l, i, rec, size);
        free(rec);
    } else {
        if (!p->buf.cap && !(p->buf.data = malloc(l->part_cap)))
            return ltr_fail(LTR_ENOMEM, "out of memory");
        p->buf.cap = l->part_cap;
        p->buf.len += encode_item(p->buf.data + p->buf.len, key, kl, val, vl, flags);
    }
    if (!rc)
        p->items++;
    return rc;
}

int ltr_load_add(ltr_load *l, const uint8_t *kdata, const int64_t *koffs, size_t klen_total,
                 const uint8_t *vdata, const int64_t *voffs, size_t vlen_total, size_t n)
{
    if (l->finished)
        return ltr_fail(LTR_EINVAL, "the load was already finished");
    uint64_t user = 0;
    int rc = store_check_batch(koffs, klen_total, voffs, vlen_total, NULL, n, &user);
    if (rc) /* (nothing of the batch was added) */
        return rc;
    /* A store of memcached items (value_format) holds each value after its flags: what a load
     * adds is data, stored with flags 0, so that the store's values stay items. */
    int items = l->s->o.value_format == LTR_VALUE_MEMCACHED;
    uint32_t flags = items && !l->values_are_items ? LTR_MEMCACHED_FLAGS_BYTES : 0;
    for (size_t i = 0; items && !flags && i < n; i++)
        if (voffs[i + 1] - voffs[i] < LTR_MEMCACHED_FLAGS_BYTES)
            return ltr_fail(LTR_EINVAL, "value %zu is %lld bytes: no memcached item (4 bytes of "
                            "flags, then the data)", i, (long long)(voffs[i + 1] - voffs[i]));
    for (size_t i = 0; flags && i < n; i++)
        if (voffs[i + 1] - voffs[i] > LTR_MAX_VALUE - (int64_t)flags)
            return ltr_fail(LTR_ETOOBIG, "value %zu is %lld bytes; the limit is %d bytes in a "
                            "store of memcached items (their flags take 4)", i,
                            (long long)(voffs[i + 1] - voffs[i]), LTR_MAX_VALUE - (int)flags);
    size_t i = 0;
    for (; i < n && !rc; i++) {
        const uint8_t *key = kdata + koffs[i], *val = vdata + voffs[i];
        uint32_t kl = (uint32_t)(koffs[i + 1] - koffs[i]), vl = (uint32_t)(voffs[i + 1] - voffs[i]);
        uint8_t d[16];
        ltr_murmur3_128(key, kl, l->s->o.hash_seed, d);
        uint64_t path = hb_trie_path(hb_from_digest(d));
        uint32_t at = l->depth ? (uint32_t)(path >> (HB_TRIE_BITS - 3 * l->depth)) : 0;
        rc = part_add(l, at, key, kl, val, vl, flags);
    }
    /* A failure (a full disk) ends the load: its counters matter no more, but stay whole. */
    count(&l->st.items_added, rc ? i - 1 : n);
    count(&l->st.user_bytes, user);
    return rc;
}

/* ---- building ---- */

/* One unit of the build: the items of a partition, counted out by target node. */
typedef struct unit {
    uint8_t *data;       /* the partition's items: its file, then its buffer */
    size_t len;
    uint64_t n;
    key_hash *hash;      /* per item, in input order */
    uint32_t *node_of;   /* per item: the target node, counted from the partition's first */
    uint32_t *order;     /* item indexes grouped by target node, input order kept */
    uint64_t *starts;    /* per target node: where its items start in order[] (+1 entry) */
    const uint8_t **at;  /* per item: its record */
    uint32_t nodes;
} unit;

static void unit_free(unit *u)
{
    free(u->data);
    free(u->hash);
    free(u->node_of);
    free(u->order);
    free(u->starts);
    free(u->at);
    memset(u, 0, sizeof *u);
}

/* The unit's level: partitions when the target level is at or below them, else the target
 * nodes (a small load: each gathers the partitions below it). */
static uint32_t unit_level(const ltr_load *l) { return l->target < l->depth ? l->target : l->depth; }

static int part_read(ltr_load *l, uint32_t i, uint8_t *to)
{
    part *p = &l->parts[i];
    int rc = LTR_OK;
    if (p->spilled) {
        char *path = spill_path(l, i);
        int fd = -1;
        rc = path ? io_open(&fd, path, O_RDONLY, 0, "the load's partition")
                  : ltr_fail(LTR_ENOMEM, "out of memory");
        if (!rc)
            rc = io_pread(fd, to, (size_t)p->spilled, 0, path);
        io_close(fd);
        free(path);
    }
    if (!rc && p->buf.len)
        memcpy(to + p->spilled, p->buf.data, p->buf.len);
    ltr_buf_free(&p->buf);
    return rc;
}

/* Reads unit i's partitions whole, in order. */
static int unit_read(ltr_load *l, uint32_t i, unit *u)
{
    uint32_t per = 1u << 3 * (l->depth - unit_level(l)), first = i * per;
    part *p = &l->parts[first];
    if (per == 1 && !p->spilled) { /* all in memory: the buffer itself */
        u->data = p->buf.data;
        u->len = p->buf.len;
        u->n = p->items;
        p->buf = (ltr_buf){0};
        return LTR_OK;
    }
    for (uint32_t k = first; k < first + per; k++) {
        u->len += (size_t)(l->parts[k].spilled + l->parts[k].buf.len);
        u->n += l->parts[k].items;
    }
    u->data = malloc(u->len ? u->len : 1);
    if (!u->data)
        return ltr_fail(LTR_ENOMEM, "out of memory reading %zu bytes of the load", u->len);
    size_t at = 0;
    int rc = LTR_OK;
    for (uint32_t k = first; k < first + per && !rc; k++) {
        size_t len = (size_t)(l->parts[k].spilled + l->parts[k].buf.len);
        rc = part_read(l, k, u->data + at);
        at += len;
    }
    return rc;
}

/* Hashes every item and groups them by target node (a counting sort, stable). */
static int unit_sort(ltr_load *l, uint32_t i, unit *u)
{
    uint32_t shift = 3 * (l->target - unit_level(l));
    u->nodes = 1u << shift;
    u->hash = malloc((u->n ? u->n : 1) * sizeof *u->hash);
    u->node_of = malloc((u->n ? u->n : 1) * sizeof *u->node_of);
    u->order = malloc((u->n ? u->n : 1) * sizeof *u->order);
    u->at = malloc((u->n ? u->n : 1) * sizeof *u->at);
    u->starts = calloc((size_t)u->nodes + 1, sizeof *u->starts);
    if (!u->hash || !u->node_of || !u->order || !u->at || !u->starts)
        return ltr_fail(LTR_ENOMEM, "out of memory sorting a partition of %llu items",
                        (unsigned long long)u->n);
    const uint8_t *p = u->data, *end = u->data + u->len;
    uint64_t first = (uint64_t)i << shift;
    for (uint64_t k = 0; k < u->n; k++) {
        item_view it;
        size_t used = item_decode(p, end, &it);
        if (!used || it.kind != ITEM_VALUE) /* (a partition holds only values: zeroed bytes
                                                decode as a tombstone) */
            return ltr_fail(LTR_ECORRUPT, "a partition of the load holds a malformed item");
        uint8_t d[16];
        ltr_murmur3_128(it.key, it.klen, l->s->o.hash_seed, d);
        u->hash[k] = hb_from_digest(d);
        uint64_t idx = hb_trie_path(u->hash[k]) >> (HB_TRIE_BITS - 3 * l->target);
        /* A damaged partition (bytes a crash or the disk changed) may hold an item of another
         * node: its node_of would index past starts[] and corrupt the heap. */
        if (l->target && (idx < first || idx - first >= u->nodes))
            return ltr_fail(LTR_ECORRUPT, "a partition of the load holds an item of another node");
        u->node_of[k] = (uint32_t)(l->target ? idx - first : 0);
        u->at[k] = p;
        u->starts[u->node_of[k] + 1]++;
        p += used;
    }
    if (p != end) /* (its items counted, bytes remain: it was damaged, the items are not these) */
        return ltr_fail(LTR_ECORRUPT, "a partition of the load holds %zu bytes more than its items",
                        (size_t)(end - p));
    for (uint32_t j = 0; j < u->nodes; j++)
        u->starts[j + 1] += u->starts[j];
    uint64_t *fill = malloc(((size_t)u->nodes + 1) * sizeof *fill);
    if (!fill)
        return ltr_fail(LTR_ENOMEM, "out of memory");
    memcpy(fill, u->starts, ((size_t)u->nodes + 1) * sizeof *fill);
    for (uint64_t k = 0; k < u->n; k++)
        u->order[fill[u->node_of[k]]++] = (uint32_t)k;
    free(fill);
    return LTR_OK;
}

/* Records a table written for node (seq-th of the node) under a fresh load-local name. */
static int note_built(ltr_load *l, uint64_t node, uint32_t seq, uint32_t name, uint64_t bytes)
{
    pthread_mutex_lock(&l->mu);
    int rc = LTR_OK;
    if (l->ntables == l->tables_cap) {
        size_t cap = l->tables_cap ? 2 * l->tables_cap : 256;
        built *t = realloc(l->tables, cap * sizeof *t);
        if (!t)
            rc = ltr_fail(LTR_ENOMEM, "out of memory");
        else {
            l->tables = t;
            l->tables_cap = cap;
        }
    }
    if (!rc)
        l->tables[l->ntables++] = (built){node, seq, name, bytes, 0};
    pthread_mutex_unlock(&l->mu);
    return rc;
}

static uint32_t take_name(ltr_load *l)
{
    return __atomic_fetch_add(&l->next_name, 1, __ATOMIC_RELAXED);
}

static int write_table(ltr_load *l, ltr_hbuild *b, uint64_t node, uint32_t seq)
{
    uint32_t name = take_name(l);
    char *path = table_path(l, name);
    if (!path)
        return ltr_fail(LTR_ENOMEM, "out of memory");
    ltr_build_stats st;
    int rc = htable_write(b, path, &st);
    free(path);
    if (!rc) {
        count(&l->st.tables, 1);
        count(&l->st.table_bytes, st.file_bytes);
        count(&l->st.items_loaded, st.items);
        rc = note_built(l, node, seq, name, st.file_bytes);
    }
    return rc;
}

static int new_builder(ltr_load *l, size_t items, ltr_hbuild **b)
{
    ltr_table_opts to;
    store_table_opts(l->s, &to);
    to.sync = 2; /* the file now; the directory once, before the install */
    int rc = ltr_hbuild_new(&to, b);
    if (!rc) {
        hbuild_by_reference(*b); /* the unit's bytes outlive the builder */
        rc = hbuild_reserve(*b, items, 0);
    }
    return rc;
}

/* Writes the staged items of `all` (one version of each key, no budget) as tables of the
 * store's size, in the order they were first staged, each built by reference as well. */
static int split_tables(ltr_load *l, ltr_hbuild *all, uint64_t node)
{
    uint64_t per_table = table_capacity(l->s) / (all->data_bytes / (all->n ? all->n : 1) + 1) + 16;
    ltr_hbuild *b = NULL;
    uint32_t seq = 0;
    int rc = LTR_OK;
    for (size_t i = 0; i < all->n && !rc; i++) {
        const staged *it = &all->items[i];
        if (!b && (rc = new_builder(l, (size_t)(per_table < all->n - i ? per_table : all->n - i), &b)))
            break;
        int r = hbuild_stage(b, all->hash[i], staged_key(all, it), it->klen, staged_value(all, it),
                             it->vlen, 0, NULL);
        if (r == 0) { /* full: this table is written, the item starts the next */
            rc = write_table(l, b, node, seq++);
            ltr_hbuild_free(b);
            b = NULL;
            i--;
        } else if (r < 0) {
            rc = r;
        }
    }
    if (!rc && b && ltr_hbuild_items(b))
        rc = write_table(l, b, node, seq);
    ltr_hbuild_free(b);
    return rc;
}

/* The tables of one target node. Its items are staged in input order into one builder without
 * a budget, where a later item of a key replaces the earlier one; what remains is written as
 * one table when it fits, else split into several (with no key in two of them). */
static int build_node(ltr_load *l, const unit *u, uint64_t node, uint64_t from, uint64_t to)
{
    ltr_hbuild *all;
    int rc = new_builder(l, (size_t)(to - from), &all);
    if (rc)
        return rc;
    all->capacity = UINT64_MAX; /* every item is staged; tables are cut below */
    for (uint64_t k = from; k < to && !rc; k++) {
        uint32_t i = u->order[k];
        item_view it;
        item_decode(u->at[i], u->data + u->len, &it);
        int r = hbuild_stage(all, u->hash[i], it.key, it.klen, it.value, it.vlen, ITEM_VALUE, NULL);
        rc = r < 0 ? r : LTR_OK;
    }
    if (!rc) {
        count(&l->st.duplicates, (to - from) - all->n);
        rc = all->data_bytes <= table_capacity(l->s) ? write_table(l, all, node, 0)
                                                     : split_tables(l, all, node);
    }
    ltr_hbuild_free(all);
    return rc;
}

/* Unit i's partitions [*first, *first + *per). */
static void unit_parts(const ltr_load *l, uint32_t i, uint32_t *first, uint32_t *per)
{
    *per = 1u << 3 * (l->depth - unit_level(l));
    *first = i * *per;
}

/* A unit's tables are written: with a journal, its directory entries are synced and the unit is
 * recorded as built before its partitions go (a resume skips it). */
static int unit_done(ltr_load *l, uint32_t i)
{
    uint32_t first, per;
    unit_parts(l, i, &first, &per);
    int rc = LTR_OK;
    pthread_mutex_lock(&l->mu);
    for (uint32_t k = first; k < first + per; k++)
        l->parts[k].built = 1;
    if (l->journaled) {
        char *any = table_path(l, 0); /* io_fsync_dir syncs the directory holding a path */
        rc = any ? io_fsync_dir(any) : ltr_fail(LTR_ENOMEM, "out of memory");
        free(any);
        if (!rc)
            rc = load_journal_write(l);
    }
    pthread_mutex_unlock(&l->mu);
    for (uint32_t k = first; !rc && k < first + per; k++) {
        char *path = spill_path(l, k);
        if (path)
            io_unlink(path);
        free(path);
    }
    if (!rc)
        count(&l->st.partitions_built, per);
    return rc;
}

static int build_unit(ltr_load *l, uint32_t i)
{
    unit u = {0};
    int rc = unit_read(l, i, &u);
    if (!rc)
        rc = unit_sort(l, i, &u);
    uint32_t shift = 3 * (l->target - unit_level(l));
    uint64_t base = node_id(l->target, 0), first = (uint64_t)i << shift;
    for (uint32_t j = 0; !rc && j < u.nodes; j++)
        if (u.starts[j + 1] > u.starts[j])
            rc = build_node(l, &u, base + first + j, u.starts[j], u.starts[j + 1]);
    unit_free(&u);
    return rc ? rc : unit_done(l, i);
}

/* The next unit to build (UINT32_MAX: none), skipping those a resumed load had built. */
static uint32_t next_unit(ltr_load *l)
{
    pthread_mutex_lock(&l->mu);
    uint32_t i = UINT32_MAX;
    while (!l->failed && l->next_unit < l->nunits) {
        uint32_t first, per, k = l->next_unit++;
        unit_parts(l, k, &first, &per);
        if (!l->parts[first].built) {
            i = k;
            break;
        }
    }
    pthread_mutex_unlock(&l->mu);
    return i;
}

static void *build_thread(void *arg)
{
    ltr_load *l = arg;
    for (uint32_t i; (i = next_unit(l)) != UINT32_MAX;) {
        int rc = build_unit(l, i);
        if (rc) {
            pthread_mutex_lock(&l->mu);
            if (!l->failed) {
                l->failed = 1;
                ltr_error_keep(&l->err, rc);
            }
            pthread_mutex_unlock(&l->mu);
        }
    }
    return NULL;
}

static int build_all(ltr_load *l)
{
    pthread_t helper;
    int started = pthread_create(&helper, NULL, build_thread, l) == 0;
    build_thread(l); /* the caller's thread is the other builder */
    if (started)
        pthread_join(helper, NULL);
    if (l->failed)
        return ltr_error_raise(&l->err);
    char *any = table_path(l, 0); /* io_fsync_dir syncs the directory holding a path */
    int rc = any ? io_fsync_dir(any) : ltr_fail(LTR_ENOMEM, "out of memory");
    free(any);
    return rc;
}

/* ---- installing ---- */

/* Compacts every node above the target level into its children until none holds a table:
 * nothing older may sit above the loaded tables (a lookup takes the first answer it meets on
 * the way down). Background work is paused. */
static int compact_above(ltr_load *l)
{
    ltr_store *s = l->s;
    int rc = LTR_OK;
    for (uint32_t level = 0; level < l->target && !rc; level++) {
        for (;;) {
            version *v = store_pin(s);
            viter it = {.level = level};
            const vnode *n = viter_next(v, &it);
            if (!n || n->level != level) {
                version_unref(v);
                break;
            }
            rc = compaction_run(s, v, n->id);
            version_unref(v);
            if (rc)
                break;
        }
    }
    return rc;
}

/* A growing trie whose last level lies above the target is deepened to it first (its last
 * level's nodes are then compacted down like the levels above). Background work is paused. */
static int deepen_to_target(ltr_load *l)
{
    ltr_store *s = l->s;
    int rc = LTR_OK;
    pthread_mutex_lock(&s->state_mu);
    while (!rc && !s->o.levels && s->current->depth < l->target + 1)
        rc = compaction_deepen(s);
    pthread_mutex_unlock(&s->state_mu);
    return rc;
}

static int by_node_seq(const void *a, const void *b)
{
    const built *x = a, *y = b;
    if (x->node != y->node)
        return x->node < y->node ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Gives every built table a fresh number in the store (recorded in the journal before any
 * link, so that a resume can tell whether the install happened). */
static int number_tables(ltr_load *l)
{
    ltr_store *s = l->s;
    pthread_mutex_lock(&s->state_mu);
    for (size_t i = 0; i < l->ntables; i++)
        l->tables[i].number = s->next_file++;
    pthread_mutex_unlock(&s->state_mu);
    __atomic_store_n(&l->st.phase, LTR_LOAD_INSTALLING, __ATOMIC_RELAXED);
    return l->journaled ? load_journal_write(l) : LTR_OK;
}

/* Links the built tables into the store under their numbers. */
static int link_tables(ltr_load *l)
{
    ltr_store *s = l->s;
    int rc = LTR_OK;
    for (size_t i = 0; i < l->ntables && !rc; i++) {
        char *from = table_path(l, l->tables[i].name);
        char *to = store_file(s->dir, l->tables[i].number, "ht");
        if (!from || !to)
            rc = ltr_fail(LTR_ENOMEM, "out of memory");
        else if (!(rc = io_unlink(to))) /* (a name an interrupted install left) */
            rc = io_link(from, to);
        free(from);
        free(to);
    }
    if (!rc && l->ntables) { /* the links' names must survive a crash once installed */
        char *any = store_file(s->dir, l->tables[0].number, "ht");
        rc = any ? io_fsync_dir(any) : ltr_fail(LTR_ENOMEM, "out of memory");
        free(any);
    }
    return rc;
}

/* What the install adds to one target node: its loaded tables and, for an empty node of the
 * last level, the BloomCluster covering them. */
typedef struct node_add {
    size_t first, n;   /* its tables in l->tables */
    cluster *bc;       /* NULL: none (the background work clusters the node later) */
} node_add;

static int open_table(ltr_load *l, const built *b, uint32_t flags, tref **out)
{
    char *path = store_file(l->s->dir, b->number, "ht");
    ltr_htable *t = NULL;
    int rc = path ? store_open_table(l->s, path, flags, &t) : ltr_fail(LTR_ENOMEM, "out of memory");
    free(path);
    if (!rc && !(*out = tref_new(b->number, l->target, t, l->s->blobs.set))) {
        ltr_htable_close(t);
        rc = ltr_fail(LTR_ENOMEM, "out of memory");
    }
    return rc;
}

/* Writes the cluster of an empty last-level node from its tables' filters, read a node at a
 * time (the filters of a whole load would not fit in memory; a cluster answers for them). */
static int build_node_cluster(ltr_load *l, node_add *na)
{
    ltr_store *s = l->s;
    ltr_htable **src = calloc(na->n, sizeof *src);
    pthread_mutex_lock(&s->state_mu);
    uint64_t file = s->next_file++;
    pthread_mutex_unlock(&s->state_mu);
    char *path = store_file(cluster_dir(s), file, "bc");
    int rc = src && path ? LTR_OK : ltr_fail(LTR_ENOMEM, "out of memory");
    for (size_t i = 0; i < na->n && !rc; i++) {
        char *tp = store_file(s->dir, l->tables[na->first + i].number, "ht");
        rc = tp ? store_open_table(s, tp, 0, &src[i]) : ltr_fail(LTR_ENOMEM, "out of memory");
        free(tp);
    }
    uint64_t written = 0;
    if (!rc)
        rc = cluster_build(path, file, l->tables[na->first].node, s->o.table_buckets,
                           bloom_probes_for(s->o.bloom_bits_per_key), NULL, src,
                           (uint32_t)na->n, &written);
    store_count(s, C_WRITTEN_CLUSTERS, written);
    if (!rc)
        rc = cluster_open(path, file, &na->bc);
    for (size_t i = 0; src && i < na->n; i++)
        if (src[i])
            ltr_htable_close(src[i]);
    if (rc && path)
        io_unlink(path);
    free(src);
    free(path);
    return rc;
}

/* The ops that add one node's tables (opened without their filters when a cluster covers them)
 * and its cluster. */
static int node_ops(ltr_load *l, node_add *na, vedit_op *ops, size_t *k, medit *e, tref **refs)
{
    int rc = LTR_OK;
    for (size_t i = 0; i < na->n && !rc; i++) {
        const built *b = &l->tables[na->first + i];
        rc = open_table(l, b, na->bc ? LTR_OPEN_NO_FILTERS : 0, &refs[na->first + i]);
        if (!rc) {
            ops[(*k)++] = (vedit_op){.add = VOP_ADD, .node = b->node, .level = l->target,
                                     .table = refs[na->first + i]};
            medit_table(e, 1, b->node, b->number);
        }
    }
    uint64_t node = l->tables[na->first].node;
    if (!rc && na->bc) {
        ops[(*k)++] = (vedit_op){.add = VOP_CLUSTER, .node = node, .level = l->target,
                                 .bc = na->bc, .sealed = (uint32_t)na->n};
        medit_cluster(e, node, na->bc->file, na->n, 0);
    }
    return rc;
}

/* Groups the tables by node and writes the clusters of empty last-level nodes. */
static int plan_nodes(ltr_load *l, node_add **out, size_t *nout)
{
    ltr_store *s = l->s;
    node_add *na = calloc(l->ntables ? l->ntables : 1, sizeof *na);
    if (!na)
        return ltr_fail(LTR_ENOMEM, "out of memory");
    size_t n = 0;
    for (size_t i = 0; i < l->ntables; i++) {
        if (n && l->tables[na[n - 1].first].node == l->tables[i].node)
            na[n - 1].n++;
        else
            na[n++] = (node_add){i, 1, NULL};
    }
    *out = na;
    *nout = n;
    int rc = LTR_OK;
    version *v = store_pin(s); /* background work is paused: it stays current */
    int last = l->target + 1 == v->depth && s->o.bloom_bits_per_key;
    for (size_t j = 0; last && j < n && !rc; j++)
        if (!version_node(v, l->tables[na[j].first].node))
            rc = build_node_cluster(l, &na[j]);
    version_unref(v);
    return rc;
}

/* One edit adds every loaded table as the newest of its node (in the order they were built),
 * with the clusters, made durable in one manifest record (the tables were fsynced when
 * written; the clusters are synced by the checkpoint, before the record). */
static int install_tables(ltr_load *l)
{
    ltr_store *s = l->s;
    node_add *na = NULL;
    size_t nn = 0, k = 0;
    vedit_op *ops = calloc(2 * l->ntables + 1, sizeof *ops);
    tref **refs = calloc(l->ntables + 1, sizeof *refs);
    int rc = ops && refs ? plan_nodes(l, &na, &nn) : ltr_fail(LTR_ENOMEM, "out of memory");
    medit e = {0};
    for (size_t j = 0; j < nn && !rc; j++)
        rc = node_ops(l, &na[j], ops, &k, &e, refs);
    if (!rc) {
        store_count(s, C_USER_BYTES, l->st.user_bytes);
        store_count(s, C_WRITTEN_LOAD, l->st.table_bytes + l->st.spill_bytes);
        pthread_mutex_lock(&s->state_mu);
        rc = store_install(s, ops, k, &e);
        for (size_t j = 0; !rc && j < nn; j++) {
            if (na[j].bc)
                store_wrote(s, 1, na[j].bc->file);
            else if (l->target + 1 == s->current->depth)
                lastlevel_note(s, l->tables[na[j].first].node);
        }
        pthread_mutex_unlock(&s->state_mu);
    }
    for (size_t j = 0; j < nn; j++) {
        if (rc && na[j].bc) /* not installed */
            io_unlink(na[j].bc->path);
        cluster_unref(na[j].bc);
    }
    for (size_t i = 0; refs && i < l->ntables; i++)
        tref_unref(refs[i]);
    medit_free(&e);
    free(na);
    free(ops);
    free(refs);
    return rc ? rc : store_checkpoint(s, CKPT_FORCE);
}

/* Whether a resumed load's install happened before the crash: every table it numbered is in
 * its node of the current version. */
static int installed(ltr_load *l)
{
    version *v = store_pin(l->s);
    int all = l->ntables > 0;
    for (size_t i = 0; all && i < l->ntables; i++) {
        const vnode *n = version_node(v, l->tables[i].node);
        int found = 0;
        for (uint32_t j = 0; n && j < n->n && !found; j++)
            found = n->tables[j]->file == l->tables[i].number;
        all = found;
    }
    version_unref(v);
    return all;
}

static int install(ltr_load *l)
{
    /* The memtables' items are older than the load's, and stay so: the value-log GC, which
     * writes old values again, writes nothing until the load's tables are in. */
    blob_gc_block(l->s, 1);
    int rc = ltr_store_flush(l->s);
    if (rc) {
        blob_gc_block(l->s, -1);
        return rc;
    }
    store_bg_pause(l->s);
    rc = deepen_to_target(l);
    if (!rc)
        rc = compact_above(l);
    qsort(l->tables, l->ntables, sizeof *l->tables, by_node_seq);
    if (!rc)
        rc = number_tables(l);
    if (!rc)
        rc = link_tables(l);
    if (!rc)
        rc = install_tables(l);
    store_bg_resume(l->s);
    blob_gc_block(l->s, -1);
    return rc; /* (links of a failed install are orphans: the next writer open removes them) */
}

/* ---- the API ---- */

typedef struct in_dir {
    const char *dir;
    const char *prefix, *suffix;
} in_dir;

/* Unlinks one of the load's own files (name: prefix...suffix) of a directory. */
static int remove_own(void *arg, const char *name)
{
    const in_dir *w = arg;
    size_t n = strlen(name), ls = strlen(w->suffix);
    if (strncmp(name, w->prefix, strlen(w->prefix)) != 0 || n < ls ||
        strcmp(name + n - ls, w->suffix) != 0)
        return LTR_OK;
    char *p = malloc(strlen(w->dir) + n + 2);
    if (p) {
        sprintf(p, "%s/%s", w->dir, name);
        io_unlink(p);
    }
    free(p);
    return LTR_OK;
}

/* Removes the load's files of a kind from dir (and temporary ones), then dir when empty. */
static void remove_dir(const char *dir, const char *prefix, const char *suffix)
{
    in_dir own = {dir, prefix, suffix}, tmp = {dir, "", ".tmp"};
    io_list_dir(dir, remove_own, &own); /* (unreadable: they stay) */
    io_list_dir(dir, remove_own, &tmp);
    io_rmdir(dir); /* (not empty: a failure left something, or it is another's too) */
}

/* Everything the load wrote goes: the journal first (a resume then finds no load). */
static void remove_all(ltr_load *l)
{
    char *j = load_journal_path(l);
    if (j)
        io_unlink(j);
    free(j);
    remove_dir(l->spill_dir, "P", ".spill");
    remove_dir(l->dir, "T", ".ht");
}

static int make_dir(const char *dir, const char *what)
{
    if (io_mkdir(dir, 0755) != 0 && errno != EEXIST)
        return ltr_fail_errno(errno, "cannot create the load's %s directory %s", what, dir);
    return LTR_OK;
}

/* Where the partitions go: the load's directory, or with tmp_dir a subdirectory of it named
 * after the store (so that loads of two stores may share tmp_dir, and only the load's own
 * files are ever removed from it). */
static char *spill_dir_of(const ltr_store *s, const char *tmp_dir, const char *dir)
{
    if (!tmp_dir)
        return strdup(dir);
    uint8_t d[16];
    ltr_murmur3_128((const uint8_t *)s->dir, strlen(s->dir), 0, d);
    size_t len = strlen(tmp_dir) + 48;
    char *p = malloc(len);
    if (p)
        snprintf(p, len, "%s/lsmtrie-load-%016llx", tmp_dir, (unsigned long long)get_u64(d));
    return p;
}

/* A load's handle over store s, with its directories (not yet created). */
static int load_new(ltr_store *s, const ltr_load_opts *o, ltr_load **out)
{
    *out = NULL;
    if (s->o.read_only)
        return ltr_fail(LTR_EREADONLY, "store %s was opened read-only", s->dir);
    ltr_load *l = calloc(1, sizeof *l);
    if (!l)
        return ltr_fail(LTR_ENOMEM, "out of memory");
    pthread_mutex_init(&l->mu, NULL);
    l->s = s;
    l->memory = o && o->memory_bytes ? o->memory_bytes : LOAD_MEMORY_DEFAULT;
    l->dir = malloc(strlen(s->dir) + sizeof LOAD_DIR + 2);
    if (l->dir)
        sprintf(l->dir, "%s/" LOAD_DIR, s->dir);
    l->spill_dir = l->dir ? spill_dir_of(s, o && o->tmp_dir ? o->tmp_dir : NULL, l->dir) : NULL;
    l->identity = strdup(o && o->identity ? o->identity : "");
    l->values_are_items = o && o->values_are_items;
    *out = l;
    return l->dir && l->spill_dir && l->identity ? LTR_OK : ltr_fail(LTR_ENOMEM, "out of memory");
}

int ltr_load_begin(ltr_store *s, const ltr_load_opts *o, ltr_load **out)
{
    ltr_load *l;
    int rc = load_new(s, o, &l);
    if (!rc) {
        remove_all(l); /* what an earlier load that did not finish left: a new load starts over */
        l->depth = plan_depth(s, o ? o->expected_bytes : 0, l->memory);
        l->nparts = 1u << 3 * l->depth;
        l->parts = calloc(l->nparts, sizeof *l->parts);
        l->part_cap = part_buffer(l);
        rc = l->parts ? LTR_OK : ltr_fail(LTR_ENOMEM, "out of memory");
    }
    if (!rc)
        rc = make_dir(l->dir, "working");
    if (!rc && strcmp(l->spill_dir, l->dir) != 0)
        rc = make_dir(l->spill_dir, "partition");
    if (rc) {
        ltr_load_abort(l);
        return rc;
    }
    l->st.partitions = l->nparts;
    *out = l;
    return LTR_OK;
}

/* Cuts the partitions to their journaled lengths (what was added after the last durable point
 * is added again) and removes those of built units. */
static int restore_parts(ltr_load *l)
{
    int rc = LTR_OK;
    for (uint32_t i = 0; i < l->nparts && !rc; i++) {
        char *path = spill_path(l, i);
        if (!path)
            return ltr_fail(LTR_ENOMEM, "out of memory");
        if (l->parts[i].built) {
            io_unlink(path);
        } else if (l->parts[i].spilled) {
            int fd = -1;
            uint64_t size = 0;
            rc = io_open(&fd, path, O_WRONLY, 0, "the load's partition");
            if (!rc)
                rc = io_fsize(fd, path, &size);
            /* Shorter than its journal says (a disk that lost synced bytes, a cleaner of the tmp
             * directory): ftruncate would fill it with zeros, which are no items. */
            if (!rc && size < l->parts[i].spilled)
                rc = ltr_fail(LTR_ECORRUPT, "%s holds %llu bytes, fewer than the %llu the load's "
                              "journal recorded; start the load over", path,
                              (unsigned long long)size, (unsigned long long)l->parts[i].spilled);
            if (!rc)
                rc = io_ftruncate(fd, l->parts[i].spilled, path);
            io_close(fd);
        } else {
            io_unlink(path);
        }
        free(path);
    }
    return rc;
}

int ltr_load_resume(ltr_store *s, const ltr_load_opts *o, ltr_load **out)
{
    ltr_load *l;
    int rc = load_new(s, o, &l);
    char *given = l && l->identity ? strdup(l->identity) : NULL;
    if (!rc && !given)
        rc = ltr_fail(LTR_ENOMEM, "out of memory");
    if (!rc)
        rc = load_journal_read(l);
    if (!rc && strcmp(given, l->identity) != 0)
        rc = ltr_fail(LTR_EINVAL, "the unfinished load in %s was started with other arguments "
                      "(%s); resume it with those, or start a new load", l->dir, l->identity);
    if (!rc)
        rc = restore_parts(l);
    free(given);
    if (rc) {
        ltr_load_free(l); /* (its files stay: a resume with the right arguments can go on) */
        return rc;
    }
    for (uint32_t i = 0; i < l->nparts; i++)
        l->st.partitions_built += l->parts[i].built;
    l->part_cap = part_buffer(l);
    l->st.partitions = l->nparts;
    l->st.target_level = l->target;
    *out = l;
    return LTR_OK;
}

int ltr_load_position(const ltr_load *l, ltr_buf *out)
{
    out->len = 0;
    return buf_append(out, l->position.data, l->position.len);
}

/* Writes every partition's buffer to its file, then (durable) syncs the partitions' file
 * system: all that was added is then on disk. */
static int spill_all(ltr_load *l, int durable)
{
    int rc = LTR_OK;
    for (uint32_t i = 0; i < l->nparts && !rc; i++)
        rc = spill_one(l, i);
    return rc || !durable ? rc : io_syncfs_dir(l->spill_dir);
}

int ltr_load_checkpoint(ltr_load *l, const uint8_t *position, size_t len)
{
    if (l->st.phase != LTR_LOAD_ADDING || l->finished)
        return ltr_fail(LTR_EINVAL, "a load takes checkpoints only while items are added");
    int rc = spill_all(l, 1);
    l->position.len = 0;
    if (!rc)
        rc = buf_append(&l->position, position, len);
    return rc ? rc : load_journal_write(l);
}

int ltr_load_finish(ltr_load *l)
{
    if (l->finished)
        return ltr_fail(LTR_EINVAL, "the load was already finished");
    l->finished = 1;
    int rc = LTR_OK;
    if (l->st.phase == LTR_LOAD_ADDING) { /* (a resumed load may be past it) */
        uint64_t bytes = 0;
        int spilled = 0;
        for (uint32_t i = 0; i < l->nparts; i++) {
            bytes += l->parts[i].spilled + l->parts[i].buf.len;
            spilled |= l->parts[i].spilled > 0;
        }
        l->target = plan_target(l->s, bytes);
        l->st.target_level = l->target;
        __atomic_store_n(&l->st.phase, LTR_LOAD_BUILDING, __ATOMIC_RELAXED);
        /* A load that spilled spills the rest and frees the buffers: the build then holds only
         * the units it works on. One that did not builds from its buffers. With a journal,
         * every unit built from here on is recorded. */
        if (spilled || l->journaled)
            rc = spill_all(l, l->journaled);
        for (uint32_t i = 0; !rc && spilled && i < l->nparts; i++)
            ltr_buf_free(&l->parts[i].buf);
        if (!rc && l->journaled)
            rc = load_journal_write(l);
    }
    l->nunits = 1u << 3 * unit_level(l);
    if (!rc && l->st.phase == LTR_LOAD_BUILDING)
        rc = build_all(l);
    if (!rc && !installed(l))
        rc = install(l);
    if (!rc) {
        __atomic_store_n(&l->st.phase, LTR_LOAD_DONE, __ATOMIC_RELAXED);
        remove_all(l);
    }
    return rc;
}

void ltr_load_stats_get(const ltr_load *l, ltr_load_stats *out)
{
    const uint64_t *from = (const uint64_t *)&l->st;
    uint64_t *to = (uint64_t *)out;
    for (size_t i = 0; i < sizeof *out / sizeof(uint64_t); i++)
        to[i] = __atomic_load_n(&from[i], __ATOMIC_RELAXED);
}

void ltr_load_free(ltr_load *l)
{
    if (!l)
        return;
    for (uint32_t i = 0; l->parts && i < l->nparts; i++)
        ltr_buf_free(&l->parts[i].buf);
    free(l->parts);
    free(l->tables);
    free(l->dir);
    free(l->spill_dir);
    free(l->identity);
    ltr_buf_free(&l->position);
    pthread_mutex_destroy(&l->mu);
    free(l);
}

void ltr_load_abort(ltr_load *l)
{
    if (l && l->dir && l->spill_dir)
        remove_all(l);
    ltr_load_free(l);
}
