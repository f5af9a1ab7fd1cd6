/* store_scan.c: the store's full scan: every live key once, with its newest value, as of the
 * scan's start. Memtables are copied (they keep changing); the trie is a pinned version.
 *
 * An item read from table j of node N is live when no newer source has its key: not the
 * memtable copy, not tables j+1.. of N, not any table of N's ancestors (which sit on the key's
 * path). Those checks are point lookups, answered from the in-memory filters almost always. */
#include <stdlib.h>
#include <string.h>

#include "htable_read.h"
#include "store_int.h"

struct ltr_sscan {
    ltr_store *s;
    version *v;
    ltr_hbuild *mem;  /* copy of all memtables, newest version of each key */
    size_t mem_next;  /* next item of mem to return */
    viter it;         /* over v's nodes */
    const vnode *n;   /* the node being scanned, or NULL */
    uint32_t table;   /* tables of the node, newest first: n - 1 - table */
    ltr_scan *cur;    /* scan of the current table */
    ltr_items in;     /* the current batch read from it */
    size_t in_next;
    read_ctx c;
    blobset *bs;      /* the value logs, pinned: the memtable copy's pointers need them */
    ltr_buf value;    /* a value read from a value log */
};

static int stage_all(ltr_hbuild *b, const ltr_hbuild *src)
{
    int rc = 0;
    for (size_t i = 0; i < src->n && rc >= 0; i++) {
        const staged *st = &src->items[i];
        rc = hbuild_stage(b, src->hash[i], staged_key(src, st), st->klen, staged_value(src, st),
                          st->vlen, st->kind, NULL);
    }
    return rc;
}

/* Copies the memtables, oldest first so that newer items replace older ones. */
static int copy_memtables(ltr_store *s, ltr_hbuild **out, version **pinned)
{
    ltr_table_opts to;
    store_table_opts(s, &to);
    ltr_hbuild *b;
    int rc = ltr_hbuild_new(&to, &b);
    if (rc)
        return rc;
    b->capacity = UINT64_MAX; /* a private copy: no table is ever written from it */
    pthread_rwlock_rdlock(&s->mem.lock);
    size_t n = 0;
    for (memtable *m = s->mem.imm; m; m = m->next)
        n++;
    const ltr_hbuild **src = malloc(sizeof *src * (n + 1));
    if (!src)
        rc = ltr_fail(LTR_ENOMEM, "out of memory");
    n = 0;
    for (memtable *m = s->mem.imm; src && m; m = m->next)
        src[n++] = m->b; /* newest first */
    for (size_t k = n; src && k-- > 0 && rc >= 0;) /* oldest first; the active one last */
        rc = stage_all(b, src[k]);
    if (rc >= 0)
        rc = stage_all(b, s->mem.active->b);
    free(src);
    *pinned = store_pin(s); /* under mem.lock: consistent with the copy (store_int.h) */
    pthread_rwlock_unlock(&s->mem.lock);
    if (rc < 0) {
        version_unref(*pinned);
        *pinned = NULL;
        ltr_hbuild_free(b);
        return rc;
    }
    *out = b;
    return LTR_OK;
}

int ltr_store_scan_new(ltr_store *s, ltr_sscan **out)
{
    *out = NULL;
    ltr_sscan *sc = calloc(1, sizeof *sc);
    if (!sc)
        return ltr_fail(LTR_ENOMEM, "out of memory");
    sc->s = s;
    if ((sc->bs = s->blobs.set)) { /* before the memtables are copied */
        blobset_ref(sc->bs);
        blobset_pin(sc->bs, 1);
    }
    int rc = read_ctx_init(&sc->c);
    if (!rc)
        rc = copy_memtables(s, &sc->mem, &sc->v);
    if (rc) {
        ltr_store_scan_free(sc);
        return rc;
    }
    *out = sc;
    return LTR_OK;
}

void ltr_store_scan_free(ltr_sscan *sc)
{
    if (!sc)
        return;
    if (sc->v)
        version_unref(sc->v);
    ltr_hbuild_free(sc->mem);
    ltr_scan_free(sc->cur);
    ltr_items_free(&sc->in);
    read_ctx_free(&sc->c);
    if (sc->bs) {
        blobset_pin(sc->bs, -1);
        blobset_unref(sc->bs);
    }
    ltr_buf_free(&sc->value);
    free(sc);
}

/* Adds a live item to the batch; a pointer's value is read from its value log. */
static int push_live(ltr_sscan *sc, ltr_items *out, const uint8_t *key, uint32_t klen,
                     const uint8_t *value, uint32_t vlen, int kind)
{
    if (kind == ITEM_POINTER) {
        blob_ptr p;
        blob_ptr_decode(value, &p);
        int rc = sc->bs ? buf_reserve(&sc->value, (size_t)p.vlen + 1)
                        : ltr_fail(LTR_ECORRUPT, "a pointer into a value log the store lacks");
        if (!rc)
            rc = blobset_read(sc->bs, &p, key, klen, sc->value.data, 0);
        if (rc)
            return rc;
        value = sc->value.data;
        vlen = p.vlen;
    }
    return items_push(out, &(item_view){.key = key, .klen = klen, .value = value, .vlen = vlen});
}

/* 1 when a source newer than table `j` of node `n` has the key, 0 if none, <0 on error. */
static int shadowed(ltr_sscan *sc, const vnode *n, uint32_t j, key_hash h, const uint8_t *key,
                    uint32_t klen)
{
    if (hbuild_find(sc->mem, h, key, klen))
        return 1;
    item_view it;
    int r = node_lookup(n, j + 1, &sc->c, h, key, klen, &it);
    uint64_t path = hb_trie_path(h);
    for (uint32_t level = 0; r == LTR_ABSENT && level < n->level; level++) {
        const vnode *a = version_node(sc->v, node_id(level, path));
        r = a ? node_lookup(a, 0, &sc->c, h, key, klen, &it) : LTR_ABSENT;
    }
    return r < 0 ? r : r != LTR_ABSENT;
}

/* Moves to the next table (newest first within a node, nodes in order); 0 at the end. */
static int next_table(ltr_sscan *sc)
{
    ltr_scan_free(sc->cur);
    sc->cur = NULL;
    while (sc->n || (sc->n = viter_next(sc->v, &sc->it))) {
        if (sc->table < sc->n->n) {
            int rc = ltr_scan_new(sc->n->tables[sc->n->n - 1 - sc->table]->t, &sc->cur);
            sc->table++;
            return rc ? rc : 1;
        }
        sc->n = NULL;
        sc->table = 0;
    }
    return 0;
}

static int scan_tables(ltr_sscan *sc, size_t max_items, ltr_items *out)
{
    int rc = LTR_OK;
    while (!rc && out->n < max_items) {
        if (sc->in_next >= sc->in.n) {
            if (sc->cur && (rc = ltr_scan_next(sc->cur, 4096, &sc->in)))
                break;
            sc->in_next = 0;
            if (!sc->cur || sc->in.n == 0) {
                int more = next_table(sc);
                if (more <= 0)
                    return more;
                continue;
            }
        }
        const vnode *n = sc->n;
        uint32_t j = n->n - sc->table; /* index of the table being scanned */
        const int64_t *ko = (const int64_t *)sc->in.koffs.data;
        const int64_t *vo = (const int64_t *)sc->in.voffs.data;
        size_t i = sc->in_next++;
        const uint8_t *key = sc->in.keys.data + ko[i];
        uint32_t klen = (uint32_t)(ko[i + 1] - ko[i]);
        uint8_t d[16];
        ltr_murmur3_128(key, klen, sc->s->o.hash_seed, d);
        int sh = shadowed(sc, n, j, hb_from_digest(d), key, klen);
        if (sh < 0)
            rc = sh;
        else if (!sh && sc->in.deleted.data[i] != ITEM_TOMBSTONE) /* (the kind: scan.c) */
            rc = push_live(sc, out, key, klen, sc->in.values.data + vo[i],
                           (uint32_t)(vo[i + 1] - vo[i]), sc->in.deleted.data[i]);
    }
    return rc;
}

int ltr_store_scan_next(ltr_sscan *sc, size_t max_items, ltr_items *out)
{
    int rc = items_reset(out);
    if (max_items < 1)
        max_items = 1;
    for (; !rc && sc->mem_next < sc->mem->n && out->n < max_items; sc->mem_next++) {
        const staged *st = &sc->mem->items[sc->mem_next];
        if (st->kind != ITEM_TOMBSTONE)
            rc = push_live(sc, out, staged_key(sc->mem, st), st->klen,
                           staged_value(sc->mem, st), st->vlen, st->kind);
    }
    if (!rc && out->n < max_items)
        rc = scan_tables(sc, max_items, out);
    return rc;
}
