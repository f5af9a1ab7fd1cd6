/* store_verify.c: ltr_store_verify (lsmtrie.h). Each table is read whole through a scan, which
 * checks every bucket page and overflow record (the footer and trailer were checked when the
 * table was opened); each item's key is hashed to check that it lies in the node holding the
 * table; each BloomCluster's units are read and checked against their CRCs (its footer and
 * index were checked at open). The version is pinned, so its files stay while it runs. */
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
    return LTR_OK;
}

static int verify_table(ltr_store *s, const vnode *n, const tref *r, ltr_verify_stats *out,
                        report *rep)
{
    ltr_table_info ti;
    ltr_htable_info(r->t, &ti);
    placed p = {n, s->o.hash_seed, 0, r->t->path};
    ltr_scan *sc;
    int rc = ltr_scan_new(r->t, &sc);
    if (rc)
        return rc;
    rc = scan_each(sc, check_item, &p);
    ltr_scan_free(sc);
    if (!rc && p.items != ti.items)
        rc = ltr_fail(LTR_ECORRUPT, "%s: %llu items found, the footer says %llu", p.path,
                      (unsigned long long)p.items, (unsigned long long)ti.items);
    if (rc == LTR_ECORRUPT) {
        note_damage(rep, out);
        return LTR_OK;
    }
    if (!rc) {
        out->tables++;
        out->items += p.items;
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
