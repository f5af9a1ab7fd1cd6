/* memtable.c: the memtables: the active one, which writes stage their items in, and the
 * immutable ones waiting to be flushed, newest first. Depends on store_opts.c only. */
#include <stdlib.h>

#include "htable_build.h"
#include "store_int.h"

int memtable_new(ltr_store *s, uint64_t min_log, uint64_t min_off, memtable **out)
{
    ltr_table_opts to;
    store_table_opts(s, &to);
    memtable *m = calloc(1, sizeof *m);
    if (!m)
        return ltr_fail(LTR_ENOMEM, "out of memory");
    const store_budget *b = &s->mem.budget;
    int rc = ltr_hbuild_new(&to, &m->b);
    /* Under a working_memory cap the memtable refuses items past its share even within a
     * batch (it is then rotated, store_write.c); else past a table's fill budget. */
    if (!rc && s->o.working_memory && b->memtable_bytes < ltr_hbuild_capacity(m->b))
        hbuild_clear(m->b, b->memtable_bytes);
    /* sized for a full memtable of ~100-byte items at once (growing by doubling copies it) */
    size_t items = (size_t)(b->memtable_bytes / 100 + 64);
    if (b->memtable_items && items > b->memtable_items)
        items = (size_t)b->memtable_items;
    if (!rc && (rc = hbuild_reserve(m->b, items,
                                    (size_t)(b->memtable_bytes + b->memtable_bytes / 8))))
        ltr_hbuild_free(m->b);
    if (rc) {
        free(m);
        return rc;
    }
    m->min_log = min_log;
    m->min_off = min_off;
    m->log_mark = s->log.logged;
    m->blob_mark = __atomic_load_n(&s->blobs.written, __ATOMIC_RELAXED);
    /* its pointers lead to the active value log or later ones (recovery's: to any) */
    uint64_t size, active = s->blobs.set ? blobset_active(s->blobs.set, &size) : 0;
    m->blob_first = s->blobs.replaying ? 0
                  : active ? active : __atomic_load_n(&s->next_file, __ATOMIC_RELAXED);
    *out = m;
    return LTR_OK;
}

void memtable_free(memtable *m)
{
    if (m) {
        ltr_hbuild_free(m->b);
        free(m);
    }
}

static int pos_before(uint64_t f1, uint64_t o1, uint64_t f2, uint64_t o2)
{
    return f1 < f2 || (f1 == f2 && o1 < o2);
}

/* No I/O: it cannot fail halfway. */
int memtable_swap(ltr_store *s, uint64_t min_log, uint64_t min_off)
{
    memtable *m = NULL;
    int rc = memtable_new(s, min_log, min_off, &m);
    if (rc)
        return rc;
    s->mem.active->next = s->mem.imm;
    s->mem.imm = s->mem.active;
    s->mem.nimm++;
    s->mem.active = m;
    return LTR_OK;
}

uint64_t memtable_blob_floor(ltr_store *s)
{
    pthread_rwlock_rdlock(&s->mem.lock);
    uint64_t floor = s->mem.active->blob_first;
    for (const memtable *m = s->mem.imm; m; m = m->next)
        floor = m->blob_first < floor ? m->blob_first : floor;
    pthread_rwlock_unlock(&s->mem.lock);
    return floor;
}

memtable *memtable_oldest(ltr_store *s)
{
    pthread_rwlock_rdlock(&s->mem.lock);
    memtable *m = s->mem.imm;
    while (m && m->next)
        m = m->next;
    pthread_rwlock_unlock(&s->mem.lock);
    return m;
}

void memtable_floor_without(ltr_store *s, const memtable *m, uint64_t *floor, uint64_t *off)
{
    pthread_rwlock_rdlock(&s->mem.lock);
    *floor = s->mem.active->min_log;
    *off = s->mem.active->min_off;
    for (memtable *x = s->mem.imm; x; x = x->next)
        if (x != m && pos_before(x->min_log, x->min_off, *floor, *off)) {
            *floor = x->min_log;
            *off = x->min_off;
        }
    pthread_rwlock_unlock(&s->mem.lock);
}

int memtable_pending(ltr_store *s)
{
    pthread_rwlock_rdlock(&s->mem.lock);
    int pending = s->mem.imm != NULL;
    pthread_rwlock_unlock(&s->mem.lock);
    return pending;
}

void memtable_drop(ltr_store *s, memtable *m)
{
    pthread_rwlock_wrlock(&s->mem.lock);
    memtable **pp = &s->mem.imm;
    while (*pp != m)
        pp = &(*pp)->next;
    *pp = NULL;
    s->mem.nimm--;
    pthread_rwlock_unlock(&s->mem.lock);
    memtable_free(m);
}

void memtable_free_all(ltr_store *s)
{
    memtable_free(s->mem.active);
    s->mem.active = NULL;
    while (s->mem.imm) {
        memtable *m = s->mem.imm;
        s->mem.imm = m->next;
        memtable_free(m);
    }
}
