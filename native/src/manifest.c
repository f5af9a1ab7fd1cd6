/* manifest.c: encoding, appending and replaying manifest edits (docs/format/manifest.md). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "coding.h"
#include "io.h"
#include "manifest.h"

#define MF_MAGIC "LTRMANI1"
#define MF_VERSION 1      /* written for stores with a fixed number of levels */
#define MF_VERSION_GROW 2 /* written for stores whose trie grows (levels 0): depth and
                             cluster-offset ops, which version-1 readers must refuse */

/* ---- building edits (sticky failure: medit_failed tells at the end) ---- */

static void put_var(medit *e, uint64_t v)
{
    uint8_t tmp[10];
    if (buf_append(&e->b, tmp, put_varint(tmp, v)))
        e->b.cap = SIZE_MAX; /* marks the edit as failed */
}

void medit_table(medit *e, int add, uint64_t node, uint64_t file)
{
    put_var(e, add ? OP_ADD_TABLE : OP_REMOVE_TABLE);
    put_var(e, node);
    put_var(e, file);
}

void medit_value(medit *e, int op, uint64_t value)
{
    put_var(e, (uint64_t)op);
    put_var(e, value);
}

void medit_counters(medit *e, const uint64_t *c)
{
    int n = c[C_WRITTEN_BLOBS] ? C_COUNT : C_WRITTEN_BLOBS;
    put_var(e, OP_COUNTERS);
    put_var(e, (uint64_t)n);
    for (int i = 0; i < n; i++)
        put_var(e, c[i]);
}

void medit_cluster(medit *e, uint64_t node, uint64_t file, uint32_t sealed, uint32_t skip)
{
    put_var(e, skip ? OP_SET_CLUSTER_AT : OP_SET_CLUSTER);
    put_var(e, node);
    put_var(e, file);
    put_var(e, sealed);
    if (skip)
        put_var(e, skip);
}

int medit_failed(const medit *e) { return e->b.cap == SIZE_MAX; }

void medit_free(medit *e)
{
    if (medit_failed(e))
        e->b.cap = 0;
    ltr_buf_free(&e->b);
}

/* ---- options record ---- */

static void put_f64(uint8_t *p, double d)
{
    uint64_t u;
    memcpy(&u, &d, 8);
    put_u64(p, u);
}

static double get_f64(const uint8_t *p)
{
    uint64_t u = get_u64(p);
    double d;
    memcpy(&d, &u, 8);
    return d;
}

static size_t encode_options(uint8_t *p, const ltr_store_opts *o, int elsewhere)
{
    size_t n = 0;
    memcpy(p, MF_MAGIC, 8);
    put_u16(p + 8, o->levels ? MF_VERSION : MF_VERSION_GROW);
    n = 10;
    n += put_varint(p + n, o->table_buckets);
    put_f64(p + n, o->fill);
    n += 8;
    n += put_varint(p + n, o->levels);
    n += put_varint(p + n, o->node_tables);
    n += put_varint(p + n, o->bloom_bits_per_key);
    n += put_varint(p + n, o->memtable_bytes);
    n += put_varint(p + n, o->hash_seed);
    put_f64(p + n, o->gc_threshold);
    n += 8;
    p[n++] = (uint8_t)(elsewhere != 0);
    if (o->value_format != LTR_VALUE_RAW) /* absent for raw values, as before it existed */
        n += put_varint(p + n, o->value_format);
    return n;
}

static int decode_options(const uint8_t *p, uint32_t len, ltr_store_opts *o, int *elsewhere,
                          const char *path)
{
    const uint8_t *end = p + len, *q = p + 10;
    uint64_t v[6];
    if (len < 10 || memcmp(p, MF_MAGIC, 8) != 0)
        return ltr_fail(LTR_ECORRUPT, "%s is not an lsmtrie manifest", path);
    uint16_t version = get_u16(p + 8);
    if (version != MF_VERSION && version != MF_VERSION_GROW)
        return ltr_fail(LTR_EVERSION, "%s: manifest version %u, this build reads %d and %d",
                        path, version, MF_VERSION, MF_VERSION_GROW);
    size_t k;
    memset(o, 0, sizeof *o);
    if (!(k = get_varint(q, end, &v[0])) || end - (q += k) < 8)
        goto bad;
    o->fill = get_f64(q);
    q += 8;
    for (int i = 1; i < 6; i++) {
        if (!(k = get_varint(q, end, &v[i])))
            goto bad;
        q += k;
    }
    if (end - q < 9)
        goto bad;
    uint64_t format = LTR_VALUE_RAW;
    if (end - q > 9 && (get_varint(q + 9, end, &format) != (size_t)(end - q - 9) ||
                        format == LTR_VALUE_RAW))
        goto bad;
    if (format > LTR_VALUE_MEMCACHED)
        return ltr_fail(LTR_EVERSION, "%s: values of format %llu, this build knows %d and %d",
                        path, (unsigned long long)format, LTR_VALUE_RAW, LTR_VALUE_MEMCACHED);
    o->value_format = (uint32_t)format;
    for (int i = 0; i < 6; i++) /* all but memtable_bytes are 32-bit: a wider value is damage */
        if (i != 4 && v[i] > UINT32_MAX)
            goto bad;
    o->gc_threshold = get_f64(q);
    *elsewhere = q[8];
    o->table_buckets = (uint32_t)v[0];
    o->levels = (uint32_t)v[1];
    if ((o->levels == 0) != (version == MF_VERSION_GROW))
        goto bad;
    o->node_tables = (uint32_t)v[2];
    o->bloom_bits_per_key = (uint32_t)v[3];
    o->memtable_bytes = v[4];
    o->hash_seed = (uint32_t)v[5];
    return LTR_OK;
bad:
    return ltr_fail(LTR_ECORRUPT, "%s: the options record is malformed", path);
}

/* ---- files ---- */

static char *path_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (p) {
        memcpy(p, dir, a);
        p[a] = '/';
        memcpy(p + a + 1, name, b + 1);
    }
    return p;
}

static char *manifest_path(const char *dir, uint64_t number)
{
    char name[40];
    snprintf(name, sizeof name, "MANIFEST-%08llu", (unsigned long long)number);
    return path_join(dir, name);
}

static int set_current(const char *dir, uint64_t number)
{
    char text[40];
    int n = snprintf(text, sizeof text, "MANIFEST-%08llu\n", (unsigned long long)number);
    char *p = path_join(dir, "CURRENT");
    if (!p)
        return ltr_fail(LTR_ENOMEM, "out of memory");
    int rc = io_write_file_atomic(p, text, (size_t)n);
    free(p);
    return rc;
}

int manifest_create(manifest *m, const char *dir, uint64_t number, const ltr_store_opts *o,
                    int clusters_elsewhere, const medit *snapshot, uint64_t *written)
{
    uint8_t opt[128];
    memset(m, 0, sizeof *m);
    m->w.fd = -1;
    m->dir = strdup(dir);
    char *p = manifest_path(dir, number);
    if (!m->dir || !p) {
        free(p);
        manifest_close(m);
        return ltr_fail(LTR_ENOMEM, "out of memory");
    }
    io_unlink(p); /* a leftover of a crashed rotation holds nothing CURRENT refers to */
    int rc = logw_open(&m->w, p, 0);
    if (!rc)
        rc = logw_append(&m->w, MF_TYPE_OPTIONS, opt, encode_options(opt, o, clusters_elsewhere));
    if (!rc)
        rc = logw_append(&m->w, MF_TYPE_EDIT, snapshot->b.data, snapshot->b.len);
    if (!rc)
        rc = logw_sync(&m->w);
    if (!rc)
        rc = set_current(dir, number);
    free(p);
    if (rc) {
        manifest_close(m);
        return rc;
    }
    m->number = number;
    m->snapshot = m->w.size;
    *written += m->w.size;
    return LTR_OK;
}

static int read_current(const char *dir, uint64_t *number)
{
    char *p = path_join(dir, "CURRENT");
    if (!p)
        return ltr_fail(LTR_ENOMEM, "out of memory");
    char *text = NULL;
    size_t len;
    int rc = io_read_file(p, 1u << 20, &text, &len);
    unsigned long long n;
    if (rc)
        ;
    else if (sscanf(text, "MANIFEST-%llu\n", &n) != 1)
        rc = ltr_fail(LTR_ECORRUPT, "%s does not name a manifest", p);
    else
        *number = n;
    free(text);
    free(p);
    return rc;
}

static int replay_edit(const uint8_t *p, uint32_t len, const manifest_sink *s, const char *path)
{
    static const int nargs[] = {0, 2, 2, 1, 1, 0, 3, 1, 1, 4}; /* per op (counters: own form) */
    const uint8_t *end = p + len;
    uint64_t c[C_COUNT], a[4];
    while (p < end) {
        uint64_t op;
        size_t k = get_varint(p, end, &op);
        if (!k || op < OP_ADD_TABLE || op > OP_SET_CLUSTER_AT)
            goto bad;
        p += k;
        if (op == OP_COUNTERS) {
            uint64_t n;
            if (!(k = get_varint(p, end, &n)) || n > C_COUNT)
                goto bad;
            p += k;
            memset(c, 0, sizeof c);
            for (uint64_t i = 0; i < n; i++, p += k)
                if (!(k = get_varint(p, end, &c[i])))
                    goto bad;
        }
        for (int i = 0; i < nargs[op]; i++, p += k)
            if (!(k = get_varint(p, end, &a[i])))
                goto bad;
        int rc = s->op(s->ctx, (int)op, a, c);
        if (rc)
            return rc;
    }
    return LTR_OK;
bad:
    return ltr_fail(LTR_ECORRUPT, "%s: malformed edit", path);
}

int manifest_load(manifest *m, const char *dir, const manifest_sink *sink, int writable)
{
    memset(m, 0, sizeof *m);
    m->w.fd = -1;
    uint64_t number = 0;
    int rc = read_current(dir, &number);
    char *p = rc ? NULL : manifest_path(dir, number);
    logr r;
    if (rc || !p || (rc = logr_open(&r, p))) {
        free(p);
        return rc ? rc : ltr_fail(LTR_ENOMEM, "out of memory");
    }
    uint8_t type;
    const uint8_t *pl;
    uint32_t len;
    int got = LOGR_END, records = 0;
    uint64_t snap_end = 0; /* the options and snapshot records: what a rotation writes anew */
    while (!rc && (got = logr_next(&r, &type, &pl, &len)) == LOGR_RECORD) {
        if (records == 1)
            snap_end = r.pos;
        if (records++ == 0) {
            ltr_store_opts o;
            int elsewhere = 0;
            rc = type != MF_TYPE_OPTIONS
                     ? ltr_fail(LTR_ECORRUPT, "%s does not start with options", p)
                     : decode_options(pl, len, &o, &elsewhere, p);
            if (!rc)
                rc = sink->options(sink->ctx, &o, elsewhere);
        } else {
            rc = type != MF_TYPE_EDIT ? ltr_fail(LTR_ECORRUPT, "%s: unknown record type %u", p, type)
                                      : replay_edit(pl, len, sink, p);
        }
    }
    if (!rc && got < 0)
        rc = got;
    if (!rc && got == LOGR_CORRUPT)
        rc = ltr_fail(LTR_ECORRUPT, "%s is damaged at offset %llu and more edits follow", p,
                      (unsigned long long)r.pos);
    if (!rc && records < 2) /* options and the snapshot are written and synced together */
        rc = ltr_fail(LTR_ECORRUPT, "%s is incomplete", p);
    uint64_t good = r.pos;
    logr_close(&r);
    m->number = number;
    /* Growth is measured from the snapshot, not from the size at open: a store reopened often
     * must still rotate a manifest that grows a little in each session. */
    m->snapshot = snap_end ? snap_end : good;
    if (!rc && writable) {
        m->dir = strdup(dir);
        rc = m->dir ? logw_open(&m->w, p, good) : ltr_fail(LTR_ENOMEM, "out of memory");
    }
    free(p);
    if (rc)
        manifest_close(m);
    return rc;
}

int manifest_append(manifest *m, const medit *e, uint64_t *written)
{
    if (medit_failed(e))
        return ltr_fail(LTR_ENOMEM, "out of memory building a manifest edit");
    uint64_t before = m->w.size;
    int rc = logw_append(&m->w, MF_TYPE_EDIT, e->b.data, e->b.len);
    if (!rc)
        rc = logw_sync(&m->w);
    *written += m->w.size - before;
    return rc;
}

void manifest_close(manifest *m)
{
    logw_close(&m->w);
    free(m->dir);
    m->dir = NULL;
}


/* ---- the decoder alone, for tests (ltr_test_manifest_read) ---- */

static int summary_options(void *ctx, const ltr_store_opts *o, int elsewhere)
{
    ltr_manifest_summary *m = ctx;
    m->levels = o->levels;
    return LTR_OK;
}

static int summary_op(void *ctx, int op, const uint64_t *a, const uint64_t *counters)
{
    ltr_manifest_summary *m = ctx;
    switch (op) {
    case OP_ADD_TABLE: m->tables_added++; break;
    case OP_REMOVE_TABLE: m->tables_removed++; break;
    case OP_SET_CLUSTER: m->clusters_set++; break;
    case OP_SET_CLUSTER_AT: m->clusters_set++; m->clusters_skipping++; break;
    case OP_SET_DEPTH: m->depth = a[0]; break;
    case OP_NEXT_FILE: m->next_file = a[0]; break;
    case OP_LOG_FLOOR: m->log_floor = a[0]; m->log_offset = 0; break;
    case OP_LOG_OFFSET: m->log_offset = a[0]; break;
    case OP_COUNTERS:
        m->ncounters = C_COUNT;
        memcpy(m->counters, counters, C_COUNT * sizeof *counters);
        break;
    }
    return LTR_OK;
}

int ltr_test_manifest_read(const char *dir, ltr_manifest_summary *out)
{
    memset(out, 0, sizeof *out);
    manifest m;
    manifest_sink sink = {out, summary_options, summary_op};
    int rc = manifest_load(&m, dir, &sink, 0);
    if (!rc)
        manifest_close(&m);
    return rc;
}
