/* store_verify.c: ltr_store_verify (lsmtrie.h). Each table's file is opened afresh (its footer
 * and trailer read and checked as they are now) and read whole through a scan, which checks
 * every bucket page and overflow record; each item's key is hashed to check that it lies in the
 * node holding the table. Each BloomCluster's units are read and checked against their CRCs
 * (its footer and index were checked when the store opened it). The version is pinned, so its
 * files stay while it runs. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cluster.h"
#include "htable_read.h"
#include "store_int.h"

typedef struct report {
    char *p;
    size_t cap, len;
} report;

/* A damaged file: the last error (which names it) becomes a line of the report. */
static void note_damage(report *r, ltr_verify_stats *out)
{
    out->bad_files++;
    if (r->len + 1 >= r->cap)
        return;
    int k = snprintf(r->p + r->len, r->cap - r->len, "%s\n", ltr_last_error());
    if (k > 0)
        r->len = r->len + (size_t)k < r->cap ? r->len + (size_t)k : r->cap - 1;
}

typedef struct placed {
    ltr_store *s;
    const vnode *n;
    uint32_t seed;
    uint64_t items;
    const char *path;
} placed;

static int check_item(void *ctx, const item_view *it)
{
    placed *p = ctx;
    uint8_t d[16];
    ltr_murmur3_128(it->key, it->klen, p->seed, d);
    if (node_id(p->n->level, hb_trie_path(hb_from_digest(d))) != p->n->id)
        return ltr_fail(LTR_ECORRUPT, "%s: item %llu does not belong to node %llu of level %u",
                        p->path, (unsigned long long)p->items, (unsigned long long)p->n->id,
                        p->n->level);
    p->items++;
    if (it->kind != ITEM_POINTER)
        return LTR_OK;
    /* A pointer that is its key's newest version must lead to its value: the record read whole,
     * its checksum and key checked. A shadowed one may lead into a value log the GC moved and
     * removed (blob_gc.c): nothing reads it any more. */
    int r = LTR_EMOVED;
    for (int tries = 0; r == LTR_EMOVED && tries < 2; tries++) {
        uint8_t now[BLOB_POINTER_SIZE];
        r = store_newest_pointer(p->s, it->key, it->klen, now);
        if (r <= 0 || memcmp(now, it->value, BLOB_POINTER_SIZE))
            return r < 0 ? r : LTR_OK;
        /* LTR_EMOVED: moved since it was the newest; asked again, it is not */
        r = blob_copy_value(p->s, it->key, it->klen, it->value, NULL, 1);
    }
    return r == LTR_EMOVED ? LTR_ECORRUPT : r;
}

/* Opens the table's file afresh (which reads and checks its footer and trailer again, as they
 * are on disk now) and scans it whole; it must still be the table the store opened. A reader's
 * view may hold a table whose file the writer has since removed (readers see the store as of
 * opening): that one is read through the reader's own descriptor, its footer and trailer as
 * checked when the reader opened it. */
static int check_table(ltr_store *s, const vnode *n, const tref *r)
{
    const char *path = r->t->path;
    ltr_htable *fresh = NULL;
    uint32_t direct = s->o.direct_io ? LTR_OPEN_DIRECT : 0;
    int rc = ltr_htable_open(path, LTR_OPEN_NO_FILTERS | direct, 0, &fresh);
    if (rc == LTR_EIO && ltr_last_errno() == ENOENT && s->o.read_only)
        rc = LTR_OK;
    if (rc)
        return rc;
    ltr_htable *t = fresh ? fresh : r->t;
    ltr_table_info was, now;
    ltr_htable_info(r->t, &was);
    ltr_htable_info(t, &now);
    if (now.file_bytes != was.file_bytes || now.items != was.items || now.buckets != was.buckets)
        rc = ltr_fail(LTR_ECORRUPT, "%s: not the table the store opened (%llu items in %llu "
                      "bytes, against %llu in %llu)", path, (unsigned long long)now.items,
                      (unsigned long long)now.file_bytes, (unsigned long long)was.items,
                      (unsigned long long)was.file_bytes);
    placed p = {s, n, s->o.hash_seed, 0, path};
    ltr_scan *sc = NULL;
    if (!rc)
        rc = ltr_scan_new(t, &sc);
    if (!rc)
        rc = scan_each(sc, check_item, &p);
    ltr_scan_free(sc);
    if (fresh)
        ltr_htable_close(fresh);
    if (!rc && p.items != now.items)
        rc = ltr_fail(LTR_ECORRUPT, "%s: %llu items found, the footer says %llu", path,
                      (unsigned long long)p.items, (unsigned long long)now.items);
    return rc;
}

static int verify_table(ltr_store *s, const vnode *n, const tref *r, ltr_verify_stats *out,
                        report *rep)
{
    int rc = check_table(s, n, r);
    if (rc == LTR_ECORRUPT) {
        note_damage(rep, out);
        return LTR_OK;
    }
    if (!rc) { /* sound: its items and bytes are those the store opened */
        ltr_table_info ti;
        ltr_htable_info(r->t, &ti);
        out->tables++;
        out->items += ti.items;
        out->table_bytes += ti.file_bytes;
    }
    return rc;
}

static int verify_cluster(cluster *bc, ltr_verify_stats *out, report *rep)
{
    uint64_t bytes = 0;
    int rc = cluster_verify(bc, &bytes);
    if (rc == LTR_ECORRUPT) {
        note_damage(rep, out);
        return LTR_OK;
    }
    if (!rc) {
        out->clusters++;
        out->cluster_bytes += bytes;
    }
    return rc;
}

int ltr_store_verify(ltr_store *s, ltr_verify_stats *out, char *report_buf, size_t cap)
{
    memset(out, 0, sizeof *out);
    report rep = {report_buf, cap, 0};
    if (cap)
        report_buf[0] = 0;
    version *v = store_pin(s);
    int rc = LTR_OK;
    viter it = {0};
    for (const vnode *n; !rc && (n = viter_next(v, &it));) {
        for (uint32_t t = 0; !rc && t < n->n; t++)
            rc = verify_table(s, n, n->tables[t], out, &rep);
        if (!rc && n->bc)
            rc = verify_cluster(n->bc, out, &rep);
    }
    version_unref(v);
    if (!rc && out->bad_files)
        rc = ltr_fail(LTR_ECORRUPT, "%s: %llu damaged files", s->dir,
                      (unsigned long long)out->bad_files);
    return rc;
}
