/* version.c: immutable, refcounted trie states. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blobset.h"
#include "htable_read.h"
#include "io.h"
#include "htable_read.h"
#include "version.h"

static uint64_t level_base(uint32_t level)
{
    return ((UINT64_C(1) << (3 * level)) - 1) / 7;
}

uint64_t node_id(uint32_t level, uint64_t trie_path)
{
    return level_base(level) + (level ? trie_path >> (36 - 3 * level) : 0);
}

uint64_t node_child(uint64_t id, uint32_t level, uint32_t digit)
{
    return level_base(level + 1) + (id - level_base(level)) * 8 + digit;
}

uint64_t node_parent(uint64_t id, uint32_t level)
{
    return level_base(level - 1) + (id - level_base(level)) / 8;
}

uint64_t node_count(uint32_t levels)
{
    return level_base(levels);
}

uint32_t node_level(uint64_t id)
{
    uint32_t l = 0;
    while (l + 1 < LTR_MAX_LEVELS && id >= level_base(l + 1))
        l++;
    return l;
}

tfile *tfile_hold(tfile *f)
{
    __atomic_fetch_add(&f->refs, 1, __ATOMIC_RELAXED);
    return f;
}

void tfile_release(tfile *f)
{
    if (!f || __atomic_sub_fetch(&f->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    if (f->unlink)
        io_unlink(f->unlink); /* (a failure leaves it for the next open's sweep) */
    if (f->bs) {
        blobset_release(f->bs, f->blobs, f->nblobs);
        blobset_unref(f->bs);
    }
    free(f->blobs);
    free(f->unlink);
    free(f);
}

void tfile_doom(tfile *f, char *path)
{
    free(__atomic_exchange_n(&f->unlink, path, __ATOMIC_ACQ_REL));
    tfile_release(f);
}

static tref *tref_make(uint64_t file, uint32_t level, ltr_htable *t, tfile *f)
{
    tref *r = f ? calloc(1, sizeof *r) : NULL;
    if (!r)
        return NULL;
    r->file = file;
    r->level = level;
    r->t = t;
    r->f = f;
    r->refs = 1;
    return r;
}

/* The file holds the value logs its table lists (out of memory: NULL). */
static tfile *tfile_new(const ltr_htable *t, blobset *bs)
{
    tfile *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->refs = 1;
    if (!bs || !t->nblobs)
        return f;
    if (!(f->blobs = malloc(sizeof *f->blobs * t->nblobs))) {
        free(f);
        return NULL;
    }
    memcpy(f->blobs, t->blobs, sizeof *f->blobs * t->nblobs);
    f->nblobs = t->nblobs;
    f->bs = bs;
    blobset_ref(bs);
    blobset_hold(bs, f->blobs, f->nblobs);
    return f;
}

tref *tref_new(uint64_t file, uint32_t level, ltr_htable *t, blobset *bs)
{
    tfile *f = tfile_new(t, bs);
    tref *r = tref_make(file, level, t, f);
    if (!r && f) {
        f->refs = 1;
        tfile_release(f);
    }
    return r;
}

tref *tref_new_sharing(const tref *from, uint32_t level, ltr_htable *t)
{
    tref *r = tref_make(from->file, level, t, from->f);
    if (r)
        tfile_hold(from->f);
    return r;
}

void tref_ref(tref *t) { __atomic_fetch_add(&t->refs, 1, __ATOMIC_RELAXED); }

void tref_unref(tref *t)
{
    if (t && __atomic_sub_fetch(&t->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        ltr_htable_close(t->t);
        tfile_release(t->f); /* after the close: a dropped file goes with its last reader */
        if (t->reuse) { /* closed: nothing in this process reads the file any more */
            if (t->durable)
                tpool_event(t->reuse, t->file, TP_FREED);
            else
                tpool_put(t->reuse, t->file);
            tpool_unref(t->reuse);
        }
        free(t);
    }
}

version *version_empty(uint32_t depth)
{
    version *v = calloc(1, sizeof *v);
    if (v) {
        v->refs = 1;
        v->depth = depth;
    }
    return v;
}

void version_ref(version *v) { __atomic_fetch_add(&v->refs, 1, __ATOMIC_RELAXED); }

static void vnode_unref(vnode *n)
{
    if (!n || __atomic_sub_fetch(&n->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    for (uint32_t j = 0; j < n->n; j++)
        tref_unref(n->tables[j]);
    free(n->tables);
    cluster_unref(n->bc); /* flt lies in n's block */
    free(n);
}

static void vchunk_unref(vchunk *c)
{
    if (!c || __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    for (uint32_t i = 0; i < VCHUNK; i++)
        vnode_unref(c->node[i]);
    free(c);
}

static void vlevel_unref(vlevel *l)
{
    if (!l || __atomic_sub_fetch(&l->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    for (uint32_t i = 0; i < l->nchunks; i++)
        vchunk_unref(l->chunks[i]);
    free(l->chunks);
    free(l);
}

static void version_free(version *v)
{
    for (uint32_t l = 0; l < LTR_MAX_LEVELS; l++)
        vlevel_unref(v->lv[l]);
    free(v);
}

void version_unref(version *v)
{
    if (v && __atomic_sub_fetch(&v->refs, 1, __ATOMIC_ACQ_REL) == 0)
        version_free(v);
}

const vnode *viter_next(const version *v, viter *it)
{
    for (; it->level < LTR_MAX_LEVELS; it->level++, it->i = it->j = 0) {
        const vlevel *l = v->lv[it->level];
        for (; l && it->i < l->nchunks; it->i++, it->j = 0) {
            const vchunk *c = l->chunks[it->i];
            while (it->j < VCHUNK) {
                const vnode *n = c->node[it->j++];
                if (n)
                    return n;
            }
        }
    }
    return NULL;
}

/* Chunks a level can have: 8^level ids, VCHUNK per chunk. */
static uint64_t chunks_of(uint32_t level)
{
    return ((UINT64_C(1) << (3 * level)) + VCHUNK - 1) / VCHUNK;
}

/* The position of chunk idx in l (or where it would go). */
static uint32_t chunk_pos(const vlevel *l, uint64_t idx)
{
    uint32_t lo = 0, hi = l->nchunks;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (l->chunks[mid]->idx < idx)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

const vnode *version_node(const version *v, uint64_t id)
{
    return version_node_at(v, node_level(id), id);
}

vnode *const *version_slot_at(const version *v, uint32_t level, uint64_t id)
{
    const vlevel *l = v->lv[level];
    if (!l)
        return NULL;
    uint64_t rel = id - level_base(level), idx = rel / VCHUNK;
    const vchunk *c;
    if (l->nchunks == chunks_of(level)) { /* every chunk of the level: index by id */
        c = l->chunks[idx];
    } else {
        uint32_t i = chunk_pos(l, idx);
        c = i < l->nchunks && l->chunks[i]->idx == idx ? l->chunks[i] : NULL;
    }
    return c ? &c->node[rel % VCHUNK] : NULL;
}

const vnode *version_node_at(const version *v, uint32_t level, uint64_t id)
{
    vnode *const *slot = version_slot_at(v, level, id);
    return slot ? *slot : NULL;
}

/* ---- building a version: copy on write, by level, chunk and node ---- */

typedef struct builder {
    version *w;
    uint32_t own_levels;  /* bit l: w->lv[l] is w's private copy */
} builder;

static int oom(void) { return ltr_fail(LTR_ENOMEM, "out of memory building a version"); }

/* w's level `level` made private (its chunk pointers copied; the chunks stay shared). */
static int own_level(builder *b, uint32_t level)
{
    if (b->own_levels & (1u << level))
        return LTR_OK;
    vlevel *old = b->w->lv[level];
    uint32_t n = old ? old->nchunks : 0;
    vlevel *l = calloc(1, sizeof *l);
    if (l)
        l->chunks = malloc(sizeof(vchunk *) * (n + 1));
    if (!l || !l->chunks) {
        free(l);
        return oom();
    }
    l->refs = 1;
    l->nchunks = n;
    l->n = old ? old->n : 0;
    for (uint32_t i = 0; i < n; i++) {
        l->chunks[i] = old->chunks[i];
        __atomic_fetch_add(&l->chunks[i]->refs, 1, __ATOMIC_RELAXED);
    }
    vlevel_unref(old);
    b->w->lv[level] = l;
    b->own_levels |= 1u << level;
    return LTR_OK;
}

/* A private copy of chunk idx of a private level (created empty when absent), or NULL. */
static vchunk *own_chunk(vlevel *l, uint64_t idx)
{
    uint32_t i = chunk_pos(l, idx);
    int have = i < l->nchunks && l->chunks[i]->idx == idx;
    if (have && l->chunks[i]->building)
        return l->chunks[i];
    vchunk *c = calloc(1, sizeof *c);
    if (!c) {
        oom();
        return NULL;
    }
    c->refs = 1;
    c->idx = (uint32_t)idx;
    c->building = 1;
    if (have) { /* copy the shared chunk: its nodes are shared */
        vchunk *o = l->chunks[i];
        for (uint32_t k = 0; k < VCHUNK; k++)
            if ((c->node[k] = o->node[k]))
                __atomic_fetch_add(&c->node[k]->refs, 1, __ATOMIC_RELAXED);
        c->n = o->n;
        l->chunks[i] = c;
        vchunk_unref(o);
        return c;
    }
    vchunk **p = realloc(l->chunks, sizeof(vchunk *) * (l->nchunks + 1));
    if (!p) {
        free(c);
        oom();
        return NULL;
    }
    l->chunks = p;
    memmove(&l->chunks[i + 1], &l->chunks[i], sizeof(vchunk *) * (l->nchunks - i));
    l->chunks[i] = c;
    l->nchunks++;
    return c;
}

/* A private copy of node `id` in w (created empty when absent), or NULL (out of memory). */
static vnode *node_for(builder *b, uint64_t id, uint32_t level)
{
    if (own_level(b, level))
        return NULL;
    uint64_t rel = id - level_base(level);
    vchunk *c = own_chunk(b->w->lv[level], rel / VCHUNK);
    if (!c)
        return NULL;
    vnode **slot = &c->node[rel % VCHUNK];
    if (*slot && (*slot)->building)
        return *slot;
    vnode *d = calloc(1, sizeof *d);
    if (!d) {
        oom();
        return NULL;
    }
    d->refs = 1;
    d->building = 1;
    d->id = id;
    d->level = level;
    vnode *o = *slot;
    if (o) { /* copy the shared node */
        d->tables = malloc(sizeof(tref *) * (o->n + 1));
        if (!d->tables) {
            free(d);
            oom();
            return NULL;
        }
        d->n = o->n;
        memcpy(d->tables, o->tables, sizeof(tref *) * o->n);
        for (uint32_t j = 0; j < d->n; j++)
            tref_ref(d->tables[j]);
        d->bc = o->bc;
        d->sealed = o->sealed;
        d->skip = o->skip;
        d->gc_ratio = o->gc_ratio;
        d->gc_items = o->gc_items;
        if (d->bc)
            cluster_ref(d->bc);
        vnode_unref(o);
    }
    *slot = d;
    return d;
}

static int find_file(const vnode *d, uint64_t file)
{
    for (uint32_t j = 0; j < d->n; j++)
        if (d->tables[j]->file == file)
            return (int)j;
    return -1;
}

/* Removes table j of d; the oldest table under the cluster moves the cluster on. */
static int remove_table(vnode *d, uint32_t j, uint64_t file)
{
    if (j < d->sealed && j != 0)
        return ltr_fail(LTR_ECORRUPT, "node %llu: removing table %llu from the middle of its "
                        "cluster", (unsigned long long)d->id, (unsigned long long)file);
    if (j < d->sealed) {
        d->skip++;
        if (!--d->sealed) {
            cluster_unref(d->bc);
            d->bc = NULL;
            d->skip = 0;
        }
    }
    tref_unref(d->tables[j]);
    memmove(&d->tables[j], &d->tables[j + 1], sizeof(tref *) * (d->n - j - 1));
    d->n--;
    return LTR_OK;
}

static int apply_op(builder *b, const vedit_op *op)
{
    if (op->add == VOP_DEPTH) {
        if (op->level < 1 || op->level > LTR_MAX_LEVELS)
            return ltr_fail(LTR_ECORRUPT, "a trie depth of %u", op->level);
        b->w->depth = op->level;
        return LTR_OK;
    }
    if (op->level >= LTR_MAX_LEVELS || op->node < level_base(op->level) ||
        op->node - level_base(op->level) >= UINT64_C(1) << (3 * op->level))
        return ltr_fail(LTR_ECORRUPT, "node %llu is not a node of level %u",
                        (unsigned long long)op->node, op->level);
    vnode *d = node_for(b, op->node, op->level);
    if (!d)
        return LTR_ENOMEM;
    if (op->add == VOP_CLUSTER) {
        if (op->sealed > d->n || (op->bc && op->bc->tables != op->skip + op->sealed))
            return ltr_fail(LTR_ECORRUPT, "node %llu: a cluster of %u tables for %u tables",
                            (unsigned long long)op->node, op->sealed, d->n);
        cluster_unref(d->bc);
        d->bc = op->bc;
        d->sealed = op->bc ? op->sealed : 0;
        d->skip = op->bc ? op->skip : 0;
        if (d->bc)
            cluster_ref(d->bc);
        return LTR_OK;
    }
    if (op->add == VOP_ADD) {
        tref **t = realloc(d->tables, sizeof(tref *) * (d->n + 1));
        if (!t)
            return ltr_fail(LTR_ENOMEM, "out of memory building a version");
        d->tables = t;
        d->tables[d->n++] = op->table;
        tref_ref(op->table);
        return LTR_OK;
    }
    int j = find_file(d, op->add == VOP_REPLACE ? op->table->file : op->file);
    if (j < 0)
        return ltr_fail(LTR_ECORRUPT, "table %llu is not in node %llu",
                        (unsigned long long)(op->add == VOP_REPLACE ? op->table->file : op->file),
                        (unsigned long long)op->node);
    if (op->add == VOP_REPLACE) {
        tref_unref(d->tables[j]);
        d->tables[j] = op->table;
        tref_ref(op->table);
        return LTR_OK;
    }
    return remove_table(d, (uint32_t)j, op->file);
}

/* A node the edit built, moved into its final block: the node and, right after it, its filter
 * array (its tables are final), so that a lookup finds the filters in the lines that follow the
 * node's rather than wherever the heap put them. The node is private to the edit: only *slot
 * points to it. */
static int set_filters(vnode **slot)
{
    vnode *d = *slot;
    size_t bytes = VNODE_FLT_AT + sizeof(vfilter) * d->n;
    vnode *f = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
    if (!f)
        return ltr_fail(LTR_ENOMEM, "out of memory building a version");
    *f = *d;
    f->flt = d->n ? (vfilter *)((char *)f + VNODE_FLT_AT) : NULL;
    for (uint32_t j = 0; j < d->n; j++) {
        ltr_htable *t = d->tables[j]->t;
        f->flt[j] = (vfilter){t->foff, t->fbits, t->buckets, t->probes, t};
    }
    free(d); /* its tables, cluster and counts now belong to f */
    *slot = f;
    return LTR_OK;
}

/* Sets the filters of the nodes the edit built in chunk c. */
static int chunk_filters(vchunk *c)
{
    for (uint32_t k = 0; k < VCHUNK; k++)
        if (c->node[k] && c->node[k]->building && set_filters(&c->node[k]))
            return LTR_ENOMEM;
    return LTR_OK;
}

/* Finishes a chunk the edit built: its nodes final, the empty ones dropped, n and fullest. */
static void finish_chunk(vchunk *c)
{
    c->n = 0;
    c->tables = 0;
    c->fullest = NULL;
    c->building = 0;
    for (uint32_t k = 0; k < VCHUNK; k++) {
        vnode *d = c->node[k];
        if (!d)
            continue;
        d->building = 0;
        if (!d->n && !d->bc) {
            vnode_unref(d);
            c->node[k] = NULL;
            continue;
        }
        c->n++;
        c->tables += d->n;
        if (!c->fullest || d->n > c->fullest->n)
            c->fullest = d;
    }
}

/* Finishes the chunks the edit built, drops the empty ones from the levels it changed, and
 * counts the nodes: work in proportion to the chunks of those levels, not to their nodes. */
static int finish(builder *b)
{
    version *w = b->w;
    for (uint32_t l = 0; l < LTR_MAX_LEVELS; l++) /* first, so that a failure changes nothing */
        for (uint32_t i = 0; w->lv[l] && (b->own_levels & (1u << l)) && i < w->lv[l]->nchunks; i++)
            if (w->lv[l]->chunks[i]->building && chunk_filters(w->lv[l]->chunks[i]))
                return LTR_ENOMEM;
    w->nnodes = 0;
    for (uint32_t l = 0; l < LTR_MAX_LEVELS; l++) {
        vlevel *lv = w->lv[l];
        if (lv && (b->own_levels & (1u << l))) {
            uint32_t k = 0;
            lv->n = 0;
            lv->tables = 0;
            lv->fullest = NULL;
            for (uint32_t i = 0; i < lv->nchunks; i++) {
                vchunk *c = lv->chunks[i];
                if (c->building)
                    finish_chunk(c);
                if (!c->n) {
                    vchunk_unref(c);
                    continue;
                }
                lv->chunks[k++] = c;
                lv->n += c->n;
                lv->tables += c->tables;
                if (!lv->fullest || c->fullest->n > lv->fullest->n)
                    lv->fullest = c->fullest;
            }
            lv->nchunks = k;
            if (!k) {
                vlevel_unref(lv);
                w->lv[l] = NULL;
                continue;
            }
        }
        w->nnodes += lv ? lv->n : 0;
    }
    return LTR_OK;
}

int version_apply(const version *v, const vedit_op *ops, size_t n, version **out)
{
    *out = NULL;
    builder b = {.w = calloc(1, sizeof(version))};
    if (!b.w)
        return ltr_fail(LTR_ENOMEM, "out of memory building a version");
    b.w->refs = 1;
    b.w->depth = v->depth;
    for (uint32_t l = 0; l < LTR_MAX_LEVELS; l++) {
        b.w->lv[l] = v->lv[l];
        if (v->lv[l])
            __atomic_fetch_add(&v->lv[l]->refs, 1, __ATOMIC_RELAXED);
    }
    int rc = LTR_OK;
    for (size_t i = 0; !rc && i < n; i++)
        rc = apply_op(&b, &ops[i]);
    if (!rc)
        rc = finish(&b);
    if (rc) {
        version_free(b.w);
        return rc;
    }
    *out = b.w;
    return LTR_OK;
}
