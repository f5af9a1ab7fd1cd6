/* cluster.c: writing, opening and probing BloomClusters (docs/format/cluster.md). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bloom.h"
#include "cluster.h"
#include "coding.h"
#include "io.h"
#include "mapguard.h"

#define BC_MAGIC "LTRBCLU1"
#define BC_VERSION 2  /* writes 2 (a column directory per unit); reads 1 and 2 */
#define BC_DIR 8       /* v2 directory entry: u32 column end, u32 column CRC */
#define BC_FOOTER 64
#define BC_ENTRY 12
#define BC_UNIT_TARGET 4096

/* ---- reading units ---- */

/* Unit u: *p points into the mapping (a probe, which runs under a map guard), or into buf: read
 * with pread when the file could not be mapped, or copied out of the mapping under a guard for a
 * cluster rebuild (`check`: the unit's CRC is verified; rebuilds read whole units, version-2
 * probes check only the column they use). */
static int read_unit(cluster *bc, uint32_t u, ltr_buf *buf, int check, int guarded,
                     const uint8_t **p, size_t *n)
{
    uint64_t at = bc->off[u], len = bc->off[u + 1] - at;
    int rc = LTR_OK;
    if (bc->map && guarded) {
        *p = bc->map + at;
    } else {
        buf->len = 0;
        rc = buf_reserve(buf, (size_t)len + 1);
        if (!rc)
            rc = bc->map ? map_copy(buf->data, bc->map + at, (size_t)len, bc->path)
                         : io_pread(bc->fd, buf->data, (size_t)len, at, bc->path);
        if (!rc && bc->map) /* read once (rebuild, verify): not to stay resident */
            io_map_forget(bc->map, at, (size_t)len);
        if (!rc)
            buf->len = (size_t)len;
        *p = buf->data;
    }
    if (!rc && check && ltr_crc32c(0, *p, (size_t)len) != bc->crc[u])
        rc = ltr_fail(LTR_ECORRUPT, "%s: unit %u at offset %llu has a bad checksum", bc->path, u,
                      (unsigned long long)at);
    *n = (size_t)len;
    return rc;
}

int cluster_verify(cluster *bc, uint64_t *bytes)
{
    ltr_buf buf = {0};
    int rc = LTR_OK;
    for (uint32_t u = 0; !rc && u < bc->units; u++) {
        const uint8_t *p;
        size_t n;
        rc = read_unit(bc, u, &buf, 1, 0, &p, &n); /* copied out (guarded), or read */
        *bytes += n;
    }
    ltr_buf_free(&buf);
    return rc;
}

/* Length of one column's entries starting at p (tables varint-prefixed filters), or 0 if bad. */
static size_t column_span(const uint8_t *p, const uint8_t *end, uint32_t tables)
{
    const uint8_t *q = p;
    for (uint32_t t = 0; t < tables; t++) {
        uint64_t len;
        size_t k = get_varint(q, end, &len);
        if (!k || (uint64_t)(end - q - k) < len)
            return 0;
        q += k + len;
    }
    return (size_t)(q - p); /* each table has a length byte, so 0 only when tables == 0 */
}

static uint32_t unit_columns(const cluster *bc, uint32_t u)
{
    uint32_t c0 = u * bc->cpu;
    return bc->buckets - c0 < bc->cpu ? bc->buckets - c0 : bc->cpu;
}

static uint32_t column_crc(uint32_t column, const uint8_t *p, size_t n)
{
    uint8_t idx[4];
    put_u32(idx, column);
    return ltr_crc32c(ltr_crc32c(0, idx, 4), p, n);
}

/* The entries of `column` in its unit (p, len): through the directory (version 2, checking the
 * column's CRC), or by skipping the columns before it (version 1, whose unit CRC the caller
 * checked). */
static int find_column(const cluster *bc, uint32_t column, const uint8_t *p, size_t len,
                       const uint8_t **col, size_t *n)
{
    uint32_t u = column / bc->cpu, i = column - u * bc->cpu;
    if (bc->version == 1) {
        const uint8_t *end = p + len;
        for (uint32_t c = 0; c <= i; c++) {
            *n = column_span(p, end, bc->tables);
            if (!*n)
                return ltr_fail(LTR_ECORRUPT, "%s: unit %u is malformed", bc->path, u);
            *col = p;
            p += *n;
        }
        return LTR_OK;
    }
    uint64_t dir = (uint64_t)BC_DIR * unit_columns(bc, u);
    if (dir > len)
        return ltr_fail(LTR_ECORRUPT, "%s: unit %u is shorter than its directory", bc->path, u);
    uint32_t start = i ? get_u32(p + BC_DIR * (i - 1)) : 0, end = get_u32(p + BC_DIR * i);
    if (start > end || end > len - dir ||
        column_span(p + dir + start, p + dir + end, bc->tables) != end - start)
        return ltr_fail(LTR_ECORRUPT, "%s: column %u of unit %u is malformed", bc->path, column, u);
    *col = p + dir + start;
    *n = end - start;
    if (column_crc(column, *col, *n) != get_u32(p + BC_DIR * i + 4))
        return ltr_fail(LTR_ECORRUPT, "%s: column %u of unit %u has a bad checksum", bc->path,
                        column, u);
    return LTR_OK;
}

static int probe(cluster *bc, read_ctx *c, uint32_t column, uint32_t bloom, uint8_t *maybe)
{
    const uint8_t *p, *end;
    size_t len;
    int rc = read_unit(bc, column / bc->cpu, &c->scratch, bc->version == 1, 1, &p, &len);
    if (!rc)
        rc = find_column(bc, column, p, len, &p, &len);
    if (rc)
        return rc;
    end = p + len;
    for (uint32_t t = 0; t < bc->tables; t++) { /* find_column checked the lengths */
        uint64_t flen = 0;
        size_t k = get_varint(p, end, &flen);
        maybe[t] = (uint8_t)bloom_may_contain(p + k, (size_t)flen, bc->probes, bloom);
        p += k + flen;
    }
    return LTR_OK;
}

typedef struct probe_call {
    cluster *bc;
    read_ctx *c;
    uint32_t column, bloom;
    uint8_t *maybe;
} probe_call;

static int run_probe(void *arg)
{
    probe_call *p = arg;
    return probe(p->bc, p->c, p->column, p->bloom, p->maybe);
}

/* The mapping is read under a guard: the file may have been cut short (mapguard.h). */
int cluster_probe(cluster *bc, read_ctx *c, uint32_t column, uint32_t bloom, uint8_t *maybe)
{
    probe_call p = {bc, c, column, bloom, maybe};
    return map_guarded(bc->map != NULL, bc->path, run_probe, &p);
}

void cluster_prefetch(const cluster *bc, uint32_t column)
{
    if (bc->map && bc->version != 1) {
        uint32_t u = column / bc->cpu;
        __builtin_prefetch(bc->map + bc->off[u] + (uint64_t)BC_DIR * (column - u * bc->cpu));
    }
}

/* ---- opening ---- */

static int parse(cluster *bc, const uint8_t *ft, uint64_t size)
{
    if (memcmp(ft, BC_MAGIC, 8) != 0 || get_u32(ft + 60) != ltr_crc32c(0, ft, 60))
        return ltr_fail(LTR_ECORRUPT, "%s is not a valid BloomCluster (footer)", bc->path);
    bc->version = get_u16(ft + 8);
    if (bc->version != 1 && bc->version != BC_VERSION)
        return ltr_fail(LTR_EVERSION, "%s: cluster version %u, this build reads 1 and %d",
                        bc->path, bc->version, BC_VERSION);
    bc->buckets = get_u32(ft + 12);
    bc->tables = get_u32(ft + 16);
    bc->probes = get_u32(ft + 20);
    bc->cpu = get_u32(ft + 24);
    bc->units = get_u32(ft + 28);
    bc->data_bytes = get_u64(ft + 32);
    bc->node = get_u64(ft + 40);
    if (get_u16(ft + 10) != BC_FOOTER || !bc->buckets || bc->buckets > LTR_MAX_BUCKETS ||
        !bc->tables || !bc->cpu || bc->probes > 30 ||
        bc->units != (bc->buckets + bc->cpu - 1) / bc->cpu ||
        bc->data_bytes + (uint64_t)(bc->units + 1) * BC_ENTRY + BC_FOOTER != size)
        return ltr_fail(LTR_ECORRUPT, "%s: footer fields are inconsistent", bc->path);
    return LTR_OK;
}

static int load_index(cluster *bc, uint32_t index_crc)
{
    size_t n = (size_t)(bc->units + 1) * BC_ENTRY;
    uint8_t *ix = malloc(n);
    bc->off = bc->units + 1 <= sizeof bc->off_small / sizeof *bc->off_small
                  ? bc->off_small : malloc(8 * (bc->units + 1));
    bc->crc = malloc(4 * (bc->units + 1));
    if (!ix || !bc->off || !bc->crc) {
        free(ix);
        return ltr_fail(LTR_ENOMEM, "out of memory");
    }
    int rc = io_pread(bc->fd, ix, n, bc->data_bytes, bc->path);
    if (!rc && ltr_crc32c(0, ix, n) != index_crc)
        rc = ltr_fail(LTR_ECORRUPT, "%s: index checksum mismatch", bc->path);
    for (uint32_t u = 0; !rc && u <= bc->units; u++) {
        bc->off[u] = get_u64(ix + u * BC_ENTRY);
        bc->crc[u] = get_u32(ix + u * BC_ENTRY + 8);
        if ((u == 0 && bc->off[0] != 0) || (u && bc->off[u] <= bc->off[u - 1]) ||
            (u == bc->units && bc->off[u] != bc->data_bytes))
            rc = ltr_fail(LTR_ECORRUPT, "%s: index entry %u is invalid", bc->path, u);
    }
    free(ix);
    return rc;
}

int cluster_open(const char *path, uint64_t file, cluster **out)
{
    *out = NULL;
    cluster *bc = calloc(1, sizeof *bc);
    if (!bc || !(bc->path = strdup(path))) {
        free(bc);
        return ltr_fail(LTR_ENOMEM, "out of memory");
    }
    bc->refs = 1;
    bc->file = file;
    bc->fd = io_open_read(path);
    int rc = bc->fd < 0 ? ltr_fail_errno(errno, "cannot open %s", path) : LTR_OK;
    uint64_t size = 0;
    uint8_t ft[BC_FOOTER];
    if (!rc)
        rc = io_fsize(bc->fd, path, &size);
    if (!rc && size < BC_FOOTER + BC_ENTRY)
        rc = ltr_fail(LTR_ECORRUPT, "%s is too small to be a BloomCluster", path);
    if (!rc)
        rc = io_pread(bc->fd, ft, BC_FOOTER, size - BC_FOOTER, path);
    if (!rc)
        rc = parse(bc, ft, size);
    if (!rc)
        rc = load_index(bc, get_u32(ft + 48));
    if (rc) {
        cluster_unref(bc);
        return rc;
    }
    /* Probes read one unit anywhere in the file: a mapping (random access, no readahead) saves
     * a system call and a copy per probe. Clusters are small (the last level's filters); the
     * pages are the page cache's, counted in resident memory while mapped. */
    const void *m = mapguard_install() == LTR_OK /* (else read with pread) */
                        ? io_map_read(bc->fd, 0, (size_t)size, 1)
                        : NULL;
    if (m) {
        bc->map = m;
        bc->map_len = (size_t)size;
        io_close(bc->fd); /* the mapping keeps the file: one open file fewer per last-level node */
        bc->fd = -1;
    }
    *out = bc;
    return LTR_OK;
}

void cluster_ref(cluster *bc) { __atomic_fetch_add(&bc->refs, 1, __ATOMIC_RELAXED); }

void cluster_unref(cluster *bc)
{
    if (!bc || __atomic_sub_fetch(&bc->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    io_unmap(bc->map, bc->map_len);
    io_close(bc->fd);
    if (bc->off != bc->off_small)
        free(bc->off);
    free(bc->crc);
    free(bc->path);
    free(bc);
}

uint64_t cluster_memory(const cluster *bc) { return (uint64_t)(bc->units + 1) * BC_ENTRY; }

/* ---- writing ---- */

typedef struct old_cursor {
    cluster *bc;
    uint32_t unit;       /* the unit at data (when loaded) */
    int loaded;
    const uint8_t *data; /* in the mapping or in buf */
    size_t len, pos;
    ltr_buf buf;
} old_cursor;

/* The raw entries of the old cluster's next column (in column order). */
static int old_next(old_cursor *oc, uint32_t col, const uint8_t **p, size_t *n)
{
    cluster *bc = oc->bc;
    uint32_t u = col / bc->cpu;
    int rc = LTR_OK;
    if (u != oc->unit || !oc->loaded) {
        rc = read_unit(bc, u, &oc->buf, 1, 0, &oc->data, &oc->len);
        oc->unit = u;
        oc->loaded = !rc;
        oc->pos = 0;
    }
    if (rc || bc->version != 1)
        return rc ? rc : find_column(bc, col, oc->data, oc->len, p, n);
    *p = oc->data + oc->pos;
    *n = column_span(*p, oc->data + oc->len, bc->tables);
    if (!*n)
        return ltr_fail(LTR_ECORRUPT, "%s: unit %u is malformed", bc->path, u);
    oc->pos += *n;
    return LTR_OK;
}

static int put_filter(ltr_buf *b, const uint8_t *f, size_t len)
{
    uint8_t v[10];
    int rc = buf_append(b, v, put_varint(v, len));
    return rc ? rc : buf_append(b, f, len);
}

static uint32_t choose_cpu(uint32_t buckets, cluster *old, ltr_htable *const *fresh, uint32_t nfresh)
{
    uint64_t dir = (uint64_t)BC_DIR * buckets;
    uint64_t total = dir + (old ? old->data_bytes - (old->version == 1 ? 0 : dir) : 0);
    for (uint32_t i = 0; i < nfresh; i++) {
        const uint8_t *f;
        size_t len;
        for (uint32_t c = 0; c < buckets; c += 64) /* a cheap estimate: sample every 64th */
            if (!htable_filter(fresh[i], c, &f, &len))
                total += 64 * (len + 1);
    }
    uint64_t cpu = total ? (uint64_t)BC_UNIT_TARGET * buckets / total : buckets;
    return (uint32_t)(cpu < 1 ? 1 : cpu > buckets ? buckets : cpu);
}

/* Unit after unit: the directory (end and CRC of each column), then the columns, each the
 * old cluster's entries followed by the fresh tables' filters. */
static int write_units(wfile *w, uint32_t buckets, uint32_t cpu, cluster *old,
                       ltr_htable *const *fresh, uint32_t nfresh, ltr_buf *index)
{
    old_cursor oc = {.bc = old, .unit = UINT32_MAX};
    ltr_buf dir = {0}, body = {0};
    int rc = LTR_OK;
    for (uint32_t c0 = 0; !rc && c0 < buckets; c0 += cpu) {
        dir.len = body.len = 0;
        for (uint32_t c = c0; !rc && c < c0 + cpu && c < buckets; c++) {
            const uint8_t *p;
            size_t n, start = body.len;
            if (old && !(rc = old_next(&oc, c, &p, &n)))
                rc = buf_append(&body, p, n);
            for (uint32_t i = 0; !rc && i < nfresh; i++)
                if (!(rc = htable_filter(fresh[i], c, &p, &n)))
                    rc = put_filter(&body, p, n);
            uint8_t e[BC_DIR];
            put_u32(e, (uint32_t)body.len);
            put_u32(e + 4, column_crc(c, body.data + start, body.len - start));
            if (!rc && body.len > UINT32_MAX)
                rc = ltr_fail(LTR_EINVAL, "a BloomCluster unit over 4 GB");
            if (!rc)
                rc = buf_append(&dir, e, sizeof e);
        }
        uint8_t e[BC_ENTRY];
        put_u64(e, w->bytes);
        put_u32(e + 8, ltr_crc32c(ltr_crc32c(0, dir.data, dir.len), body.data, body.len));
        if (!rc)
            rc = buf_append(index, e, sizeof e);
        if (!rc)
            rc = io_write(w, dir.data, dir.len);
        if (!rc)
            rc = io_write(w, body.data, body.len);
    }
    ltr_buf_free(&dir);
    ltr_buf_free(&body);
    ltr_buf_free(&oc.buf);
    return rc;
}

int cluster_build(const char *path, uint64_t file, uint64_t node, uint32_t buckets,
                  uint32_t probes, cluster *old, ltr_htable *const *fresh, uint32_t nfresh,
                  uint64_t *written)
{
    (void)file;
    uint32_t tables = (old ? old->tables : 0) + nfresh;
    if (!tables || (old && old->buckets != buckets))
        return ltr_fail(LTR_EINVAL, "a cluster needs tables of %u buckets", buckets);
    uint32_t cpu = choose_cpu(buckets, old, fresh, nfresh), units = (buckets + cpu - 1) / cpu;
    wfile w;
    ltr_buf index = {0};
    int rc = io_create(&w, path, IO_IN_PLACE_WRITEBACK); /* clusters live long */
    if (rc)
        return rc;
    rc = write_units(&w, buckets, cpu, old, fresh, nfresh, &index);
    uint64_t data = w.bytes;
    uint8_t e[BC_ENTRY] = {0}, ft[BC_FOOTER] = {0};
    put_u64(e, data);
    if (!rc)
        rc = buf_append(&index, e, sizeof e);
    if (!rc)
        rc = io_write(&w, index.data, index.len);
    if (!rc) {
        memcpy(ft, BC_MAGIC, 8);
        put_u16(ft + 8, BC_VERSION);
        put_u16(ft + 10, BC_FOOTER);
        put_u32(ft + 12, buckets);
        put_u32(ft + 16, tables);
        put_u32(ft + 20, probes);
        put_u32(ft + 24, cpu);
        put_u32(ft + 28, units);
        put_u64(ft + 32, data);
        put_u64(ft + 40, node);
        put_u32(ft + 48, ltr_crc32c(0, index.data, index.len));
        put_u32(ft + 60, ltr_crc32c(0, ft, 60));
        rc = io_write(&w, ft, sizeof ft);
    }
    *written = w.bytes;
    if (!rc)
        rc = io_commit(&w, IO_IN_PLACE_WRITEBACK); /* the next checkpoint fsyncs it and its
                                                      directory */
    io_abort(&w);
    ltr_buf_free(&index);
    return rc;
}
