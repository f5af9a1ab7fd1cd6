/* compaction.c: splitting one node's pile into its eight children (paper §2.3). The node's
 * tables are fed oldest first into one builder per child, chosen by the key's trie digit at the
 * node's depth; a later version of a key replaces an earlier one. The outputs become the newest
 * tables of the children; data already in the children is never rewritten.
 *
 * A compaction streams: it reads its inputs a window of home buckets at a time (window_read.h)
 * and writes each child's table the same window at a time (ltr_hstream), so it holds a window
 * of each input and output, not whole tables (docs/design.md, "Memory"). An item's home bucket
 * is the same in every table of the store (same bucket count), so a window of the inputs makes
 * exactly that window of the outputs.
 *
 * Garbage collection of a last-level node (which never compacts downward) uses the same
 * machinery with one output, the node itself, a table at a time: its tables are read newest
 * first and only live items are kept: no shadowed versions, no tombstones (nothing lies below
 * the last level). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bucket.h"
#include "htable_build.h"
#include "htable_read.h"
#include "io.h"
#include "store_int.h"
#include "window_read.h"

/* The buckets of each input and output a compaction holds at once come from the working
 * memory's budget (store_budget_plan; COMPACTION_WINDOW, 1 MiB, by default): larger windows
 * cost memory, smaller ones more read calls and balancing among fewer buckets. The testing knob
 * overrides it: -1 (default) the store's, 0 whole tables (as gc). */
static int64_t test_window = -1; /* ltr_test_compaction_window */

void ltr_test_compaction_window(int64_t buckets)
{
    __atomic_store_n(&test_window, buckets < 0 ? -1 : buckets > LTR_MAX_BUCKETS
                                                     ? LTR_MAX_BUCKETS : buckets,
                     __ATOMIC_RELAXED);
}

static uint32_t window_of(const ltr_store *s)
{
    int64_t w = __atomic_load_n(&test_window, __ATOMIC_RELAXED);
    return w < 0 ? s->mem.budget.window : (uint32_t)w;
}

typedef struct output {
    uint64_t node;
    uint64_t file;
    char *path;
    tref *table;
    /* while a streamed compaction writes it: */
    ltr_hstream *hs;
    ltr_hbuild *wb; /* its items of the current window */
    int32_t next;   /* the child's next output (one more when a window overfills), or -1 */
} output;

typedef struct job {
    ltr_store *s;
    const vnode *src;
    uint32_t depth;  /* of the version the job read */
    uint32_t nin;    /* inputs: the node's oldest tables */
    int gc;          /* garbage collection: outputs replace the node's own tables */
    read_ctx c;      /* for the liveness checks of gc */
    ltr_hbuild *b[8];
    uint64_t share_items, share_bytes; /* an output's expected items and key + value bytes */
    output *out;
    size_t nout, cap;
    uint64_t bytes;
    /* a streamed compaction: per child its first output, and the one taking the window's items */
    int32_t head[8], cur[8];
    uint64_t budget; /* bytes an output takes from one window */
    uint32_t window; /* buckets a window: 0, whole tables */
} job;

/* The fullest node of level l other than skip and skip2 (the chunks' own fullest, and a scan of
 * a chunk only when its fullest is one of them). */
static const vnode *fullest(const vlevel *lv, uint64_t skip, uint64_t skip2)
{
    if (!lv || (lv->fullest->id != skip && lv->fullest->id != skip2))
        return lv ? lv->fullest : NULL;
    const vnode *best = NULL;
    for (uint32_t i = 0; i < lv->nchunks; i++) {
        const vchunk *c = lv->chunks[i];
        if (c->fullest->id != skip && c->fullest->id != skip2) {
            if (!best || c->fullest->n > best->n)
                best = c->fullest;
            continue;
        }
        for (uint32_t k = 0; k < VCHUNK; k++) {
            const vnode *n = c->node[k];
            if (n && n->id != skip && n->id != skip2 && (!best || n->n > best->n))
                best = n;
        }
    }
    return best;
}

int compaction_pick(const ltr_store *s, const version *v, uint64_t *node, uint32_t from,
                    uint32_t limit, uint64_t skip, uint64_t skip2)
{
    /* The fullest node; among equals the shallowest, then the first (ids are breadth-first). */
    uint32_t best = 0;
    for (uint32_t l = from; l < limit && l + 1 < v->depth; l++) {
        const vnode *n = fullest(v->lv[l], skip, skip2);
        if (n && n->n >= s->o.node_tables && n->n > best) {
            best = n->n;
            *node = n->id;
        }
    }
    return best > 0;
}

static void output_opts(const job *j, ltr_table_opts *to)
{
    store_table_opts(j->s, to);
    /* Outputs may fill a table's whole payload: a child's share of node_tables tables at the
     * fill target varies a little, and a second, nearly empty table per child would double the
     * bytes written. The fill target still leaves room on average for balancing. */
    to->fill = 1.0;
    /* The next checkpoint fsyncs the outputs still alive then. The last level's live long (they
     * are most of the data): their writeback starts at once, so the device works on them while
     * the load goes on, not while flush() waits. (Starting the level above's too wrote more to
     * the device, no faster: docs/benchmarks.md, "Measurements behind choices in the code".) */
    uint32_t level = j->src->level + !j->gc;
    to->sync = level + 1 >= j->depth ? IO_IN_PLACE_WRITEBACK : IO_IN_PLACE;
}

static int new_builder(job *j, ltr_hbuild **b)
{
    ltr_table_opts to;
    output_opts(j, &to);
    int rc = ltr_hbuild_new(&to, b);
    if (!rc) /* sized once for its share of the inputs, instead of doubling as items come */
        rc = hbuild_reserve(*b, (size_t)j->share_items, (size_t)j->share_bytes);
    return rc;
}

/* A new output of child d (of the node itself for gc), with its file's name, at the end of
 * j->out (which may move). */
static int new_output(job *j, uint32_t d, output **out)
{
    if (j->nout == j->cap) {
        size_t cap = j->cap ? 2 * j->cap : 16;
        output *o = realloc(j->out, cap * sizeof *o);
        if (!o)
            return ltr_fail(LTR_ENOMEM, "out of memory");
        j->out = o;
        j->cap = cap;
    }
    output *o = &j->out[j->nout++];
    memset(o, 0, sizeof *o);
    o->next = -1;
    o->node = j->gc ? j->src->id : node_child(j->src->id, j->src->level, d);
    *out = o;
    return store_new_table(j->s, &o->file, &o->path);
}

/* Opens a written output as a table of the store. */
static int open_output(job *j, output *o, const ltr_build_stats *st)
{
    ltr_htable *t = NULL;
    int rc = store_open_table(j->s, o->path, 0, &t);
    if (!rc && !(o->table = tref_new(o->file, j->src->level + !j->gc, t, j->s->blobs.set))) {
        ltr_htable_close(t);
        rc = ltr_fail(LTR_ENOMEM, "out of memory");
    }
    if (!rc)
        j->bytes += st->file_bytes;
    return rc;
}

/* Writes child d's builder as a table and starts it afresh (NULL). */
static int emit(job *j, uint32_t d)
{
    ltr_hbuild *b = j->b[d];
    j->b[d] = NULL;
    if (!b)
        return LTR_OK;
    int rc = LTR_OK;
    if (ltr_hbuild_items(b)) {
        output *o = NULL;
        ltr_build_stats st;
        rc = new_output(j, d, &o);
        if (!rc)
            rc = ltr_hbuild_finish(b, o->path, &st);
        if (!rc)
            rc = open_output(j, o, &st);
    }
    ltr_hbuild_free(b);
    return rc;
}

static int route(job *j, key_hash h, const uint8_t *key, uint32_t klen, const uint8_t *val,
                 uint32_t vlen, int kind)
{
    uint32_t d = j->gc ? 0 : hb_trie_digit(h, j->src->level);
    int rc = j->b[d] ? LTR_OK : new_builder(j, &j->b[d]);
    int r = rc ? rc : hbuild_stage(j->b[d], h, key, klen, val, vlen, kind, NULL);
    if (r == 0) { /* this child's table is full: it gets one more */
        rc = emit(j, d);
        if (!rc)
            rc = new_builder(j, &j->b[d]);
        r = rc ? rc : hbuild_stage(j->b[d], h, key, klen, val, vlen, kind, NULL);
    }
    return r < 0 ? r : LTR_OK;
}

/* For gc: is the item of table `t` live (not a tombstone, no newer version in the node)? */
static int live(job *j, uint32_t t, key_hash h, const uint8_t *key, uint32_t klen, int del)
{
    if (del)
        return 0;
    item_view it;
    int r = node_lookup(j->src, t + 1, &j->c, h, key, klen, &it);
    return r < 0 ? r : r == LTR_ABSENT;
}

typedef struct feed {
    job *j;
    uint32_t t; /* the input table */
} feed;

static int feed_item(void *ctx, const item_view *it)
{
    feed *f = ctx;
    job *j = f->j;
    uint8_t dg[16];
    ltr_murmur3_128(it->key, it->klen, j->s->o.hash_seed, dg);
    key_hash h = hb_from_digest(dg);
    int del = it->kind == ITEM_TOMBSTONE;
    int keep = j->gc ? live(j, f->t, h, it->key, it->klen, del) : 1;
    if (keep <= 0)
        return keep;
    static const uint8_t none[1];
    const uint8_t *value = del || !it->value ? none : it->value;
    return route(j, h, it->key, it->klen, value, del ? 0 : it->vlen, it->kind);
}

static int feed_table(job *j, uint32_t t)
{
    ltr_scan *sc;
    feed f = {j, t};
    int rc = ltr_scan_new(j->src->tables[t]->t, &sc);
    if (!rc)
        rc = scan_each(sc, feed_item, &f);
    ltr_scan_free(sc);
    return rc;
}

/* ---- a compaction streamed by windows of home buckets ---- */

/* Whether the inputs can be streamed: they share the outputs' bucket count (so a window of
 * theirs makes the same window of the outputs) and are read with pread. Not for gc, whose
 * liveness checks look items up across the node's tables. */
static int can_stream(const job *j)
{
    if (j->gc || !j->window)
        return 0;
    for (uint32_t i = 0; i < j->nin; i++) {
        const ltr_htable *t = j->src->tables[i]->t;
        if (t->buckets != j->s->o.table_buckets || t->map)
            return 0;
    }
    return 1;
}

/* One more output for child d, after its last one: its file, and a builder for its windows. */
static int add_stream(job *j, uint32_t d, int32_t *idx)
{
    output *o;
    ltr_table_opts to;
    output_opts(j, &to);
    int rc = new_output(j, d, &o);
    if (!rc)
        rc = hstream_new(&to, o->path, &o->hs);
    if (!rc)
        rc = ltr_hbuild_new(&to, &o->wb);
    if (rc)
        return rc;
    hbuild_by_reference(o->wb); /* the window's input pages outlive its items */
    hbuild_count_resident(o->wb); /* the window's budget is its buckets' payload */
    hbuild_clear(o->wb, j->budget);
    *idx = (int32_t)(o - j->out);
    if (j->head[d] < 0) {
        j->head[d] = *idx;
    } else {
        int32_t last = j->head[d];
        while (j->out[last].next >= 0)
            last = j->out[last].next;
        j->out[last].next = *idx;
    }
    return LTR_OK;
}

/* Stages an item of the window in its child's output. When that output's share of the window
 * is full, the rest of the window's items for the child go to its next output (made on
 * demand), which is installed after it: a newer version there shadows an older one left
 * behind, as with tables filled one after another. */
static int stage_window_item(void *ctx, key_hash h, const item_view *it)
{
    job *j = ctx;
    uint32_t d = hb_trie_digit(h, j->src->level);
    static const uint8_t none[1];
    int del = it->kind == ITEM_TOMBSTONE;
    const uint8_t *value = del || !it->value ? none : it->value;
    uint32_t vlen = del ? 0 : it->vlen;
    for (;;) {
        int32_t i = j->cur[d] >= 0 ? j->cur[d] : j->head[d];
        int rc = i >= 0 ? LTR_OK : add_stream(j, d, &i);
        if (rc)
            return rc;
        j->cur[d] = i;
        int r = hbuild_stage(j->out[i].wb, h, it->key, it->klen, value, vlen, it->kind, NULL);
        if (r != 0)
            return r < 0 ? r : LTR_OK;
        i = j->out[i].next; /* full: an empty builder always takes its first item */
        if (i < 0 && (rc = add_stream(j, d, &i)))
            return rc;
        j->cur[d] = i;
    }
}

/* Writes the window [first, first + n) of every output that has items in it. */
static int write_window(job *j, uint32_t first, uint32_t n)
{
    int rc = LTR_OK;
    for (size_t i = 0; !rc && i < j->nout; i++) {
        output *o = &j->out[i];
        if (ltr_hbuild_items(o->wb)) /* (stream() empties the builders for the next) */
            rc = hstream_window(o->hs, o->wb, first, n);
    }
    return rc;
}

static int finish_streams(job *j)
{
    int rc = LTR_OK;
    for (size_t i = 0; !rc && i < j->nout; i++) {
        ltr_build_stats st;
        rc = hstream_finish(j->out[i].hs, &st);
        if (!rc)
            rc = open_output(j, &j->out[i], &st);
    }
    return rc;
}

/* Reads the inputs a window at a time, oldest first within each (a newer version replaces an
 * older one in the builders), and writes each window of the outputs before the next. */
static int stream(job *j)
{
    uint32_t nb = j->s->o.table_buckets, w = j->window;
    wread **in = calloc(j->nin ? j->nin : 1, sizeof *in);
    int rc = in ? LTR_OK : ltr_fail(LTR_ENOMEM, "out of memory");
    for (uint32_t i = 0; !rc && i < j->nin; i++)
        rc = wread_new(j->src->tables[i]->t, &in[i]);
    for (uint32_t d = 0; d < 8; d++)
        j->head[d] = -1;
    for (uint32_t first = 0; !rc && first < nb; first += w) {
        uint32_t n = nb - first < w ? nb - first : w;
        j->budget = (uint64_t)n * LTR_BUCKET_PAYLOAD; /* outputs fill to 1.0 (output_opts) */
        for (size_t i = 0; i < j->nout; i++)
            hbuild_clear(j->out[i].wb, j->budget);
        for (uint32_t d = 0; d < 8; d++)
            j->cur[d] = -1;
        for (uint32_t i = 0; !rc && i < j->nin; i++)
            rc = wread_items(in[i], first, n, stage_window_item, j);
        if (!rc)
            rc = write_window(j, first, n);
    }
    for (uint32_t i = 0; !rc && i < j->nin; i++) /* every item was found in some window */
        if (wread_returned(in[i]) != j->src->tables[i]->t->items)
            rc = ltr_fail(LTR_ECORRUPT, "%s holds %llu items, but its buckets lead to %llu",
                          j->src->tables[i]->t->path,
                          (unsigned long long)j->src->tables[i]->t->items,
                          (unsigned long long)wread_returned(in[i]));
    for (uint32_t i = 0; in && i < j->nin; i++)
        wread_free(in[i]);
    free(in);
    return rc ? rc : finish_streams(j);
}

/* Each output's expected share of the inputs: an eighth (compaction) or all (gc), plus 10%,
 * capped by what a table holds. */
static void estimate_shares(job *j)
{
    uint64_t items = 0, bytes = 0;
    for (uint32_t i = 0; i < j->nin; i++) {
        ltr_table_info info;
        ltr_htable_info(j->src->tables[i]->t, &info);
        items += info.items;
        bytes += info.data_bytes;
    }
    uint64_t parts = j->gc ? 1 : 8, cap = (uint64_t)j->s->o.table_buckets * LTR_BUCKET_PAYLOAD;
    j->share_items = items / parts + items / parts / 10 + 16;
    j->share_bytes = bytes / parts + bytes / parts / 10 + 256;
    if (j->share_bytes > cap)
        j->share_bytes = cap;
    if (j->share_items > cap / 3)
        j->share_items = cap / 3; /* an item takes at least 3 bytes */
}

/* The whole-table path: gc, and inputs that cannot be streamed. Each output is staged whole. */
static int feed_whole(job *j)
{
    estimate_shares(j);
    int rc = read_ctx_init(&j->c);
    /* Compaction feeds oldest first (newer versions replace older ones in the builders); gc
     * reads newest first and keeps only what nothing newer shadows. */
    for (uint32_t i = 0; i < j->nin && !rc; i++)
        rc = feed_table(j, j->gc ? j->nin - 1 - i : i);
    for (uint32_t d = 0; d < 8; d++) {
        int r = rc ? (ltr_hbuild_free(j->b[d]), LTR_OK) : emit(j, d);
        rc = rc ? rc : r;
    }
    read_ctx_free(&j->c);
    return rc;
}

static int install(job *j)
{
    ltr_store *s = j->s;
    size_t nops = 1 + j->nin + j->nout, k = 0;
    vedit_op *ops = calloc(nops, sizeof *ops);
    if (!ops)
        return ltr_fail(LTR_ENOMEM, "out of memory");
    medit e = {0};
    if (j->gc) { /* the cluster covered the old tables: the outputs start without one */
        ops[k++] = (vedit_op){.add = VOP_CLUSTER, .node = j->src->id, .level = j->src->level};
        medit_cluster(&e, j->src->id, 0, 0, 0);
    } else if (j->src->bc) {
        /* A node the trie outgrew: its oldest tables leave from under its cluster, which
         * answers for the rest after skipping their entries (version.c moves it on as the
         * removes apply; the manifest records where it ends). */
        uint32_t gone = j->nin < j->src->sealed ? j->nin : j->src->sealed;
        uint32_t sealed = j->src->sealed - gone;
        medit_cluster(&e, j->src->id, sealed ? j->src->bc->file : 0, sealed,
                      sealed ? j->src->skip + gone : 0);
    }
    for (uint32_t i = 0; i < j->nin; i++) {
        ops[k++] = (vedit_op){.add = VOP_REMOVE, .node = j->src->id, .level = j->src->level,
                              .file = j->src->tables[i]->file};
        medit_table(&e, 0, j->src->id, j->src->tables[i]->file);
    }
    for (size_t i = 0; i < j->nout; i++) {
        ops[k++] = (vedit_op){.add = VOP_ADD, .node = j->out[i].node,
                              .level = j->src->level + !j->gc, .table = j->out[i].table};
        medit_table(&e, 1, j->out[i].node, j->out[i].file);
    }
    store_count(s, j->gc ? C_WRITTEN_GC : C_WRITTEN_COMPACTION + j->src->level + 1, j->bytes);
    store_count(s, j->gc ? C_GCS : C_COMPACTIONS, 1);
    pthread_mutex_lock(&s->state_mu);
    int rc = store_install(s, ops, k, &e);
    for (size_t i = 0; !rc && i < j->nout; i++) {
        store_wrote(s, 0, j->out[i].file);
        if (j->gc || j->src->level + 2 == s->current->depth)
            lastlevel_note(s, j->out[i].node);
    }
    pthread_mutex_unlock(&s->state_mu);
    medit_free(&e);
    free(ops);
    return rc;
}

static int run(job *j)
{
    ltr_store *s = j->s;
    int rc = can_stream(j) ? stream(j) : feed_whole(j);
    if (!rc)
        rc = install(j);
    for (size_t i = 0; i < j->nout; i++) {
        hstream_free(j->out[i].hs);
        ltr_hbuild_free(j->out[i].wb);
        if (rc && j->out[i].path)
            io_unlink(j->out[i].path); /* never installed */
        tref_unref(j->out[i].table);
        free(j->out[i].path);
    }
    free(j->out);
    if (rc)
        return rc;
    /* The inputs are out of the state; open handles keep them readable meanwhile. */
    for (uint32_t i = 0; i < j->nin; i++)
        store_drop(s, 0, j->src->tables[i]->file, j->src->tables[i]);
    if (j->src->bc && (j->gc || j->nin >= j->src->sealed)) /* no table left under it */
        store_drop(s, 1, j->src->bc->file, NULL);
    return LTR_OK;
}

int compaction_run(ltr_store *s, version *v, uint64_t node)
{
    job j = {.s = s, .src = version_node(v, node), .depth = v->depth, .window = window_of(s)};
    j.nin = j.src->n < s->o.node_tables ? j.src->n : s->o.node_tables; /* the oldest ones */
    return run(&j);
}

int gc_run(ltr_store *s, version *v, uint64_t node)
{
    job j = {.s = s, .src = version_node(v, node), .gc = 1, .depth = v->depth};
    j.nin = j.src->n;
    return run(&j);
}

/* ---- a trie as deep as the data ---- */

int compaction_deepen_due(const ltr_store *s, const version *v)
{
    if (s->o.levels || v->depth >= LTR_MAX_LEVELS)
        return 0;
    const vlevel *last = v->lv[v->depth - 1];
    uint64_t nodes = UINT64_C(1) << 3 * (v->depth - 1);
    return last && last->tables >= (uint64_t)DEEPEN_TABLES_PER_NODE * s->o.node_tables * nodes;
}

/* The last level becomes an upper one: its nodes, each holding about DEEPEN_TABLES_PER_NODE
 * piles, are compacted into the new level like any other full node (fullest first), their
 * clusters answering for the tables not yet compacted. Each item is written once more, as it
 * would have been in a trie this deep from the start. */
int compaction_deepen(ltr_store *s)
{
    uint32_t depth = s->current->depth + 1;
    vedit_op op = {.add = VOP_DEPTH, .level = depth};
    medit e = {0};
    medit_value(&e, OP_SET_DEPTH, depth);
    int rc = store_install(s, &op, 1, &e);
    medit_free(&e);
    return rc;
}
