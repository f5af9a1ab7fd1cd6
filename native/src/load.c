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
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bucket.h"
#include "io.h"
#include "store_int.h"

#define LOAD_MEMORY_DEFAULT (1ull << 30)
#define LOAD_THREADS 2
#define SPILL_MIN (64u << 10) /* a partition's buffer is spilled from this size on */

typedef struct part {
    ltr_buf buf;        /* items not yet spilled: item records (bucket.h) */
    uint64_t spilled;   /* bytes in its file */
    uint64_t items;
} part;

/* A table the build wrote, waiting in the load's directory for the install. */
typedef struct built {
    uint64_t node;      /* target node id */
    uint32_t seq;       /* the node's tables in order: older first */
    uint32_t name;      /* load-local file name: T<name>.ht */
    uint64_t bytes;
} built;

struct ltr_load {
    ltr_store *s;
    uint64_t memory;
    char *dir;          /* STORE/load: the built tables (and the spills, unless tmp_dir) */
    char *spill_dir;
    uint32_t depth;     /* partitions are the nodes at this depth */
    uint32_t nparts;
    part *parts;
    uint64_t buffered;  /* bytes in the partitions' buffers */
    uint32_t target;    /* the level the tables go to (set by ltr_load_finish) */

    pthread_mutex_t mu; /* the build's shared state: next unit, built tables, error */
    uint32_t nunits;
    uint32_t next_part;
    built *tables;
    size_t ntables, tables_cap;
    uint32_t next_name;
    int failed;
    ltr_error err;      /* the first failure of a build thread */

    ltr_load_stats st;  /* counters read by ltr_load_stats_get while a load runs (atomics) */
    int finished;
};

static void count(uint64_t *c, uint64_t n) { __atomic_fetch_add(c, n, __ATOMIC_RELAXED); }

/* ---- the plan: options of a new store, partition depth, target level ---- */

void ltr_load_plan_options(uint64_t expected_bytes, ltr_store_opts *o)
{
    /* The smallest trie whose last-level nodes each receive at most one default-sized table:
     * then most items end in the last level, under BloomClusters, and tables are sized to the
     * nodes' share (with a tenth more for the variation between nodes), so that a node's data
     * fills one table. */
    double fill = o->fill > 0 ? o->fill : LTR_DEFAULT_FILL;
    double table = fill * LTR_DEFAULT_BUCKETS * LTR_BUCKET_PAYLOAD;
    uint32_t levels = 2;
    while (levels < LTR_MAX_LEVELS - 1 && (double)expected_bytes / (double)(1ull << 3 * (levels - 1)) > table)
        levels++;
    double share = 1.1 * (double)expected_bytes / (double)(1ull << 3 * (levels - 1));
    uint64_t buckets = (uint64_t)(share / (fill * LTR_BUCKET_PAYLOAD)) + 1;
    o->levels = levels;
    o->table_buckets = (uint32_t)(buckets < 64 ? 64 : buckets > LTR_DEFAULT_BUCKETS ? LTR_DEFAULT_BUCKETS
                                                                                   : buckets);
    o->given |= LTR_OPT_LEVELS | LTR_OPT_TABLE_BUCKETS;
}

static uint64_t table_capacity(const ltr_store *s)
{
    return (uint64_t)(s->o.fill * s->o.table_buckets * LTR_BUCKET_PAYLOAD);
}

/* The partition depth: partitions of at most a sixth of the memory each (a partition is held
 * whole while two threads build, with about twice its size in builders), at most 4,096 of them
 * and no deeper than the last level. */
static uint32_t plan_depth(const ltr_store *s, uint64_t expected, uint64_t memory)
{
    uint32_t d = 0;
    while (d + 1 < s->o.levels && d < 4 && expected / (1ull << 3 * d) > memory / 6)
        d++;
    return d;
}

/* The level the loaded tables go to: the deepest whose nodes each get at least half a table's
 * worth (or the last level), so that small loads do not scatter nearly empty tables. */
static uint32_t plan_target(const ltr_store *s, uint64_t bytes)
{
    uint32_t l = 0;
    while (l + 1 < s->o.levels && bytes / (1ull << 3 * (l + 1)) >= table_capacity(s) / 2)
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

static int spill_one(ltr_load *l, uint32_t i)
{
    part *p = &l->parts[i];
    if (!p->buf.len)
        return LTR_OK;
    char *path = spill_path(l, i);
    if (!path)
        return ltr_fail(LTR_ENOMEM, "out of memory");
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    int rc = fd < 0 ? ltr_fail_errno(errno, "cannot open the load's partition %s", path)
                    : io_write_fd(fd, p->buf.data, p->buf.len, path, p->spilled);
    if (fd >= 0)
        close(fd);
    free(path);
    if (rc)
        return rc;
    p->spilled += p->buf.len;
    count(&l->st.spill_bytes, p->buf.len);
    l->buffered -= p->buf.len;
    p->buf.len = 0;
    return LTR_OK;
}

/* Spills the partitions' buffers, largest first, until half of the working memory is free. */
static int spill(ltr_load *l)
{
    int rc = LTR_OK;
    while (!rc && l->buffered > l->memory / 4) {
        uint32_t big = 0;
        for (uint32_t i = 1; i < l->nparts; i++)
            if (l->parts[i].buf.len > l->parts[big].buf.len)
                big = i;
        if (l->parts[big].buf.len < SPILL_MIN && l->buffered <= l->memory / 2)
            break;
        rc = spill_one(l, big);
    }
    return rc;
}

int ltr_load_add(ltr_load *l, const uint8_t *kdata, const int64_t *koffs, size_t klen_total,
                 const uint8_t *vdata, const int64_t *voffs, size_t vlen_total, size_t n)
{
    if (l->finished)
        return ltr_fail(LTR_EINVAL, "the load was already finished");
    int rc = batch_check(koffs, n, klen_total, "keys");
    if (!rc)
        rc = batch_check(voffs, n, vlen_total, "values");
    for (size_t i = 0; !rc && i < n; i++) {
        int64_t kl = koffs[i + 1] - koffs[i], vl = voffs[i + 1] - voffs[i];
        if (kl > LTR_MAX_KEY)
            return ltr_fail(LTR_ETOOBIG, "key %zu is %lld bytes; the limit is %d bytes", i,
                            (long long)kl, LTR_MAX_KEY);
        if (vl > LTR_MAX_VALUE)
            return ltr_fail(LTR_ETOOBIG, "value %zu is %lld bytes; the limit is %d bytes", i,
                            (long long)vl, LTR_MAX_VALUE);
    }
    uint64_t user = 0;
    for (size_t i = 0; !rc && i < n; i++) {
        const uint8_t *key = kdata + koffs[i], *val = vdata + voffs[i];
        uint32_t kl = (uint32_t)(koffs[i + 1] - koffs[i]), vl = (uint32_t)(voffs[i + 1] - voffs[i]);
        uint8_t d[16];
        ltr_murmur3_128(key, kl, l->s->o.hash_seed, d);
        uint32_t at = l->depth ? (uint32_t)(hb_trie_path(hb_from_digest(d)) >> (HB_TRIE_BITS - 3 * l->depth)) : 0;
        part *p = &l->parts[at];
        size_t size = item_size(kl, vl, 0);
        if ((rc = buf_reserve(&p->buf, p->buf.len + size)))
            break;
        p->buf.len += item_encode(p->buf.data + p->buf.len, key, kl, val, vl, 0);
        p->items++;
        l->buffered += size;
        user += kl + vl;
        if (l->buffered > l->memory / 2)
            rc = spill(l);
    }
    count(&l->st.items_added, n);
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
        int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
        rc = !path ? ltr_fail(LTR_ENOMEM, "out of memory")
             : fd < 0 ? ltr_fail_errno(errno, "cannot open the load's partition %s", path)
                      : io_pread(fd, to, (size_t)p->spilled, 0, path);
        if (fd >= 0)
            close(fd);
        if (!rc)
            unlink(path); /* read whole: its items go to tables before anything is installed */
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
        if (!used)
            return ltr_fail(LTR_ECORRUPT, "a partition of the load holds a malformed item");
        uint8_t d[16];
        ltr_murmur3_128(it.key, it.klen, l->s->o.hash_seed, d);
        u->hash[k] = hb_from_digest(d);
        uint64_t idx = hb_trie_path(u->hash[k]) >> (HB_TRIE_BITS - 3 * l->target);
        u->node_of[k] = (uint32_t)(l->target ? idx - first : 0);
        u->at[k] = p;
        u->starts[u->node_of[k] + 1]++;
        p += used;
    }
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
        l->tables[l->ntables++] = (built){node, seq, name, bytes};
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
                             it->vlen, 0);
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
        int r = hbuild_stage(all, u->hash[i], it.key, it.klen, it.value, it.vlen, 0);
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
    if (!rc)
        count(&l->st.partitions_built, 1);
    return rc;
}

static void *build_thread(void *arg)
{
    ltr_load *l = arg;
    for (;;) {
        pthread_mutex_lock(&l->mu);
        uint32_t i = l->next_part < l->nunits && !l->failed ? l->next_part++ : UINT32_MAX;
        pthread_mutex_unlock(&l->mu);
        if (i == UINT32_MAX)
            return NULL;
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

static int by_node_seq(const void *a, const void *b)
{
    const built *x = a, *y = b;
    if (x->node != y->node)
        return x->node < y->node ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Links the built tables into the store under fresh numbers and opens them (refs[i]). */
static int link_tables(ltr_load *l, uint64_t *numbers, tref **refs)
{
    ltr_store *s = l->s;
    int rc = LTR_OK;
    for (size_t i = 0; i < l->ntables && !rc; i++) {
        pthread_mutex_lock(&s->state_mu);
        numbers[i] = s->next_file++;
        pthread_mutex_unlock(&s->state_mu);
        char *from = table_path(l, l->tables[i].name);
        char *to = store_file(s->dir, numbers[i], "ht");
        if (!from || !to)
            rc = ltr_fail(LTR_ENOMEM, "out of memory");
        else if (link(from, to) != 0)
            rc = ltr_fail_errno(errno, "cannot link the loaded table %s as %s", from, to);
        ltr_htable *t = NULL;
        if (!rc)
            rc = store_open_table(s, to, 0, &t);
        if (!rc && !(refs[i] = tref_new(numbers[i], l->target, t))) {
            ltr_htable_close(t);
            rc = ltr_fail(LTR_ENOMEM, "out of memory");
        }
        free(from);
        free(to);
    }
    if (!rc && l->ntables) { /* the links' names must survive a crash once installed */
        char *any = store_file(s->dir, numbers[0], "ht");
        rc = any ? io_fsync_dir(any) : ltr_fail(LTR_ENOMEM, "out of memory");
        free(any);
    }
    return rc;
}

/* One edit adds every loaded table as the newest of its node (in the order they were built). */
static int install_tables(ltr_load *l, const uint64_t *numbers, tref **refs)
{
    ltr_store *s = l->s;
    vedit_op *ops = calloc(l->ntables ? l->ntables : 1, sizeof *ops);
    if (!ops)
        return ltr_fail(LTR_ENOMEM, "out of memory");
    medit e = {0};
    for (size_t i = 0; i < l->ntables; i++) {
        ops[i] = (vedit_op){.add = VOP_ADD, .node = l->tables[i].node, .level = l->target,
                            .table = refs[i]};
        medit_table(&e, 1, l->tables[i].node, numbers[i]);
    }
    pthread_mutex_lock(&s->state_mu);
    int rc = store_install(s, ops, l->ntables, &e);
    for (size_t i = 0; !rc && i < l->ntables; i++)
        if (l->target + 1 == s->o.levels)
            lastlevel_note(s, l->tables[i].node);
    pthread_mutex_unlock(&s->state_mu);
    medit_free(&e);
    free(ops);
    if (!rc) {
        store_count(s, C_USER_BYTES, l->st.user_bytes);
        store_count(s, C_WRITTEN_LOAD, l->st.table_bytes + l->st.spill_bytes);
    }
    /* durable in one manifest record: the tables were fsynced when written */
    return rc ? rc : store_checkpoint(s, CKPT_FORCE);
}

static int install(ltr_load *l)
{
    int rc = ltr_store_flush(l->s); /* the memtables' items are older than the load's */
    if (rc)
        return rc;
    store_bg_pause(l->s);
    rc = compact_above(l);
    qsort(l->tables, l->ntables, sizeof *l->tables, by_node_seq);
    uint64_t *numbers = calloc(l->ntables ? l->ntables : 1, sizeof *numbers);
    tref **refs = calloc(l->ntables ? l->ntables : 1, sizeof *refs);
    if (!rc && (!numbers || !refs))
        rc = ltr_fail(LTR_ENOMEM, "out of memory");
    if (!rc)
        rc = link_tables(l, numbers, refs);
    if (!rc)
        rc = install_tables(l, numbers, refs);
    for (size_t i = 0; refs && i < l->ntables; i++)
        tref_unref(refs[i]);
    for (size_t i = 0; rc && numbers && i < l->ntables; i++) { /* not installed */
        char *p = numbers[i] ? store_file(l->s->dir, numbers[i], "ht") : NULL;
        if (p)
            unlink(p);
        free(p);
    }
    free(numbers);
    free(refs);
    store_bg_resume(l->s);
    return rc;
}

/* ---- the API ---- */

/* Empties a directory of the files an earlier load left (it holds nothing else). */
static void clear_dir(const char *dir)
{
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        size_t len = strlen(dir) + strlen(e->d_name) + 2;
        char *p = malloc(len);
        if (p) {
            snprintf(p, len, "%s/%s", dir, e->d_name);
            unlink(p);
        }
        free(p);
    }
    if (d)
        closedir(d);
}

/* Removes the files a load left: its partitions (up to nparts) and tables (up to ntables). */
static void remove_files(const ltr_load *l, uint32_t nparts, uint32_t ntables)
{
    for (uint32_t i = 0; i < nparts + ntables; i++) {
        char *p = i < nparts ? spill_path(l, i) : table_path(l, i - nparts);
        if (p)
            unlink(p);
        free(p);
    }
}

int ltr_load_begin(ltr_store *s, const ltr_load_opts *o, ltr_load **out)
{
    *out = NULL;
    if (s->o.read_only)
        return ltr_fail(LTR_EREADONLY, "store %s was opened read-only", s->dir);
    ltr_load *l = calloc(1, sizeof *l);
    if (!l)
        return ltr_fail(LTR_ENOMEM, "out of memory");
    l->s = s;
    l->memory = o && o->memory_bytes ? o->memory_bytes : LOAD_MEMORY_DEFAULT;
    l->depth = plan_depth(s, o ? o->expected_bytes : 0, l->memory);
    l->nparts = 1u << 3 * l->depth;
    pthread_mutex_init(&l->mu, NULL);
    l->dir = malloc(strlen(s->dir) + 8);
    l->parts = calloc(l->nparts, sizeof *l->parts);
    int rc = l->dir && l->parts ? LTR_OK : ltr_fail(LTR_ENOMEM, "out of memory");
    if (!rc) {
        sprintf(l->dir, "%s/load", s->dir);
        l->spill_dir = strdup(o && o->tmp_dir ? o->tmp_dir : l->dir);
        rc = l->spill_dir ? LTR_OK : ltr_fail(LTR_ENOMEM, "out of memory");
    }
    if (!rc && mkdir(l->dir, 0755) != 0 && errno != EEXIST)
        rc = ltr_fail_errno(errno, "cannot create the load's directory %s", l->dir);
    if (!rc && strcmp(l->spill_dir, l->dir) != 0 && mkdir(l->spill_dir, 0755) != 0 && errno != EEXIST)
        rc = ltr_fail_errno(errno, "cannot create the load's partition directory %s", l->spill_dir);
    if (!rc) { /* what an earlier load that did not finish left */
        clear_dir(l->dir);
        clear_dir(l->spill_dir);
    }
    if (rc) {
        ltr_load_free(l);
        return rc;
    }
    l->st.partitions = l->nparts;
    *out = l;
    return LTR_OK;
}

int ltr_load_finish(ltr_load *l)
{
    if (l->finished)
        return ltr_fail(LTR_EINVAL, "the load was already finished");
    l->finished = 1;
    uint64_t bytes = 0;
    for (uint32_t i = 0; i < l->nparts; i++)
        bytes += l->parts[i].spilled + l->parts[i].buf.len;
    l->target = plan_target(l->s, bytes);
    l->nunits = 1u << 3 * unit_level(l);
    l->st.target_level = l->target;
    __atomic_store_n(&l->st.phase, LTR_LOAD_BUILDING, __ATOMIC_RELAXED);
    int rc = build_all(l);
    if (!rc) {
        __atomic_store_n(&l->st.phase, LTR_LOAD_INSTALLING, __ATOMIC_RELAXED);
        rc = install(l);
    }
    if (!rc)
        __atomic_store_n(&l->st.phase, LTR_LOAD_DONE, __ATOMIC_RELAXED);
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
    if (l->dir) { /* what an unfinished load wrote: its partitions and tables */
        if (l->spill_dir)
            remove_files(l, l->nparts, l->next_name);
        if (l->spill_dir && strcmp(l->spill_dir, l->dir) != 0)
            rmdir(l->spill_dir);
        rmdir(l->dir);
    }
    free(l->parts);
    free(l->tables);
    free(l->dir);
    free(l->spill_dir);
    pthread_mutex_destroy(&l->mu);
    free(l);
}
