/* version.c: immutable, refcounted trie states. */
#include <stdlib.h>
#include <string.h>

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

uint32_t node_level(uint64_t id)
{
    uint32_t l = 0;
    while (l + 1 < LTR_MAX_LEVELS && id >= level_base(l + 1))
        l++;
    return l;
}

tref *tref_new(uint64_t file, uint32_t level, ltr_htable *t)
{
    tref *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->file = file;
    r->level = level;
    r->t = t;
    r->refs = 1;
    return r;
}

void tref_ref(tref *t) { __atomic_fetch_add(&t->refs, 1, __ATOMIC_RELAXED); }

void tref_unref(tref *t)
{
    if (t && __atomic_sub_fetch(&t->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        ltr_htable_close(t->t);
        free(t);
    }
}

version *version_empty(void)
{
    version *v = calloc(1, sizeof *v);
    if (v)
        v->refs = 1;
    return v;
}

void version_ref(version *v) { __atomic_fetch_add(&v->refs, 1, __ATOMIC_RELAXED); }

static void version_free(version *v)
{
    for (uint32_t i = 0; i < v->nnodes; i++) {
        for (uint32_t j = 0; j < v->nodes[i].n; j++)
            tref_unref(v->nodes[i].tables[j]);
        free(v->nodes[i].tables);
        cluster_unref(v->nodes[i].bc);
    }
    free(v->nodes);
    free(v);
}

void version_unref(version *v)
{
    if (v && __atomic_sub_fetch(&v->refs, 1, __ATOMIC_ACQ_REL) == 0)
        version_free(v);
}

static uint32_t lower_bound(const vnode *nodes, uint32_t n, uint64_t id)
{
    uint32_t lo = 0, hi = n;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (nodes[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

const vnode *version_node(const version *v, uint64_t id)
{
    uint32_t i = lower_bound(v->nodes, v->nnodes, id);
    return i < v->nnodes && v->nodes[i].id == id ? &v->nodes[i] : NULL;
}

/* Deep copy of the node array (each version owns its arrays and a reference per table). */
static int copy_nodes(const version *v, version *w, size_t extra)
{
    w->nodes = calloc(v->nnodes + extra + 1, sizeof *w->nodes);
    if (!w->nodes)
        return ltr_fail(LTR_ENOMEM, "out of memory building a version");
    for (uint32_t i = 0; i < v->nnodes; i++) {
        vnode *d = &w->nodes[i];
        *d = v->nodes[i];
        d->tables = malloc(sizeof(tref *) * (d->n + 1));
        if (!d->tables) {
            w->nnodes = i;
            return ltr_fail(LTR_ENOMEM, "out of memory building a version");
        }
        memcpy(d->tables, v->nodes[i].tables, sizeof(tref *) * d->n);
        for (uint32_t j = 0; j < d->n; j++)
            tref_ref(d->tables[j]);
        if (d->bc)
            cluster_ref(d->bc);
    }
    w->nnodes = v->nnodes;
    return LTR_OK;
}

static vnode *node_for(version *w, uint64_t id, uint32_t level)
{
    uint32_t i = lower_bound(w->nodes, w->nnodes, id);
    if (i < w->nnodes && w->nodes[i].id == id)
        return &w->nodes[i];
    memmove(&w->nodes[i + 1], &w->nodes[i], sizeof(vnode) * (w->nnodes - i));
    w->nnodes++;
    memset(&w->nodes[i], 0, sizeof(vnode));
    w->nodes[i].id = id;
    w->nodes[i].level = level;
    return &w->nodes[i];
}

static int find_file(const vnode *d, uint64_t file)
{
    for (uint32_t j = 0; j < d->n; j++)
        if (d->tables[j]->file == file)
            return (int)j;
    return -1;
}

static int apply_op(version *w, const vedit_op *op)
{
    vnode *d = node_for(w, op->node, op->level);
    if (op->add == VOP_CLUSTER) {
        if (op->sealed > d->n || (op->bc && op->bc->tables != op->sealed))
            return ltr_fail(LTR_ECORRUPT, "node %llu: a cluster of %u tables for %u tables",
                            (unsigned long long)op->node, op->sealed, d->n);
        cluster_unref(d->bc);
        d->bc = op->bc;
        d->sealed = op->sealed;
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
    if ((uint32_t)j < d->sealed)
        return ltr_fail(LTR_ECORRUPT, "node %llu: removing table %llu under its cluster",
                        (unsigned long long)op->node, (unsigned long long)op->file);
    tref_unref(d->tables[j]);
    memmove(&d->tables[j], &d->tables[j + 1], sizeof(tref *) * (d->n - j - 1));
    d->n--;
    return LTR_OK;
}

int version_apply(const version *v, const vedit_op *ops, size_t n, version **out)
{
    *out = NULL;
    version *w = calloc(1, sizeof *w);
    if (!w)
        return ltr_fail(LTR_ENOMEM, "out of memory building a version");
    w->refs = 1;
    int rc = copy_nodes(v, w, n);
    for (size_t i = 0; !rc && i < n; i++)
        rc = apply_op(w, &ops[i]);
    if (rc) {
        version_free(w);
        return rc;
    }
    uint32_t k = 0; /* drop nodes left empty */
    for (uint32_t i = 0; i < w->nnodes; i++) {
        if (w->nodes[i].n || w->nodes[i].bc)
            w->nodes[k++] = w->nodes[i];
        else
            free(w->nodes[i].tables);
    }
    w->nnodes = k;
    *out = w;
    return LTR_OK;
}
