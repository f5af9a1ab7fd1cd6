/* route.c: ltr_route, the server twemproxy 0.5.0 sends a key to (its server_pool_idx),
 * computed offline. The pool is built as the proxy builds it with every server live (its
 * auto_eject_hosts off, or no server ejected): the servers put in the proxy's order, by name
 * (its configuration check sorts them: shorter names first, then by bytes); a ketama
 * continuum or a modula table over that order; then for each key the hash tag, the hash and
 * the dispatch. The answer is the server's index in the caller's order. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "htable_read.h" /* items_reset (scan.c) */
#include "ltr_int.h"
#include "lsmtrie_route.h"
#include "md5.h"
#include "route_hash.h"

#define KETAMA_POINTS 160   /* points of a server of average weight: 40 names of 4 points */
#define KETAMA_NAME_MAX 272 /* the proxy formats point names into 273 bytes: longer ones are cut */
#define SELECT_CHUNK 1024   /* keys routed at a time by ltr_route_select */

enum { DIST_KETAMA, DIST_MODULA };

struct ltr_route {
    route_hash_fn hash;
    int dist;
    uint32_t nservers;
    int tagged;
    uint8_t tag[2];
    /* ketama: the continuum, ascending, and each point's shard */
    uint32_t npoints;
    uint32_t *values;
    uint32_t *point_shards;
    /* modula: the shards in the proxy's order and their cumulative weights */
    uint32_t *order;
    uint64_t *ends;
    uint64_t total_weight;
};

/* A server as the proxy sees it. */
typedef struct server {
    const char *name;
    size_t len;
    uint32_t weight, shard;
} server;

/* A continuum point; seq (the order points were made in) decides between equal values as the
 * proxy's qsort does with glibc (a merge sort, stable for arrays this small). */
typedef struct point {
    uint32_t value, seq, shard;
} point;

static int by_name(const void *a, const void *b)
{
    const server *x = a, *y = b;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    return memcmp(x->name, y->name, x->len);
}

static int by_value(const void *a, const void *b)
{
    const point *x = a, *y = b;
    if (x->value != y->value)
        return x->value < y->value ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int parse_dist(const char *name, int *out)
{
    if (name && strcmp(name, "ketama") == 0)
        *out = DIST_KETAMA;
    else if (name && strcmp(name, "modula") == 0)
        *out = DIST_MODULA;
    else if (name && strcmp(name, "random") == 0)
        return ltr_fail(LTR_EINVAL, "distribution 'random' cannot be computed offline: the proxy "
                                    "draws a server at random for every request");
    else
        return ltr_fail(LTR_EINVAL, "unknown distribution '%s'; one of ketama, modula",
                        name ? name : "(null)");
    return LTR_OK;
}

/* Names ketama gives a server: the proxy's float arithmetic exactly (a float share of the
 * total weight, times 40 names a server on average, nudged in double and floored in float),
 * since rounding there decides how many points a server gets. */
static uint32_t ketama_names(uint32_t weight, uint64_t total, uint32_t nservers)
{
    float share = (float)weight / (float)total;
    float names = share * (float)KETAMA_POINTS / 4.0f * (float)nservers;
    return (uint32_t)floorf((float)((double)names + 0.0000000001));
}

/* Appends the 4 points of the name "<server name>-<i>": the 4 little-endian words of its MD5. */
static void ketama_add(point *pts, uint32_t *np, const server *s, uint32_t i)
{
    char host[KETAMA_NAME_MAX + 1];
    int len = snprintf(host, sizeof host, "%.*s-%u", (int)s->len, s->name, i);
    size_t hl = len > KETAMA_NAME_MAX ? KETAMA_NAME_MAX : (size_t)len;
    uint8_t d[16];
    md5_digest((const uint8_t *)host, hl, d);
    for (int w = 0; w < 4; w++, (*np)++) {
        pts[*np].value = (uint32_t)d[4 * w] | (uint32_t)d[4 * w + 1] << 8 |
                         (uint32_t)d[4 * w + 2] << 16 | (uint32_t)d[4 * w + 3] << 24;
        pts[*np].seq = *np;
        pts[*np].shard = s->shard;
    }
}

static int ketama_build(ltr_route *r, const server *sv)
{
    uint64_t count = 0;
    for (uint32_t i = 0; i < r->nservers; i++)
        count += 4 * (uint64_t)ketama_names(sv[i].weight, r->total_weight, r->nservers);
    point *pts = malloc((size_t)count * sizeof *pts);
    r->values = malloc((size_t)count * sizeof *r->values);
    r->point_shards = malloc((size_t)count * sizeof *r->point_shards);
    if (!pts || !r->values || !r->point_shards) {
        free(pts);
        return ltr_fail(LTR_ENOMEM, "no memory for a continuum of %llu points",
                        (unsigned long long)count);
    }
    uint32_t np = 0;
    for (uint32_t i = 0; i < r->nservers; i++) {
        uint32_t names = ketama_names(sv[i].weight, r->total_weight, r->nservers);
        for (uint32_t k = 0; k < names; k++)
            ketama_add(pts, &np, &sv[i], k);
    }
    qsort(pts, np, sizeof *pts, by_value);
    for (uint32_t i = 0; i < np; i++) {
        r->values[i] = pts[i].value;
        r->point_shards[i] = pts[i].shard;
    }
    r->npoints = np;
    free(pts);
    return LTR_OK;
}

static int modula_build(ltr_route *r, const server *sv)
{
    r->order = malloc(r->nservers * sizeof *r->order);
    r->ends = malloc(r->nservers * sizeof *r->ends);
    if (!r->order || !r->ends)
        return ltr_fail(LTR_ENOMEM, "no memory for a pool of %u servers", r->nservers);
    uint64_t end = 0;
    for (uint32_t i = 0; i < r->nservers; i++) {
        end += sv[i].weight;
        r->order[i] = sv[i].shard;
        r->ends[i] = end;
    }
    return LTR_OK;
}

/* The servers in the proxy's order, checked; *total gets their weight. */
static int servers_sorted(uint32_t n, const char *const *names, const uint32_t *weights,
                          server *sv, char (*made)[16], uint64_t *total)
{
    *total = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (!names)
            snprintf(made[i], sizeof made[i], "shard%u", i);
        sv[i].name = names ? names[i] : made[i];
        if (!sv[i].name || !sv[i].name[0])
            return ltr_fail(LTR_EINVAL, "server %u has no name", i);
        sv[i].len = strlen(sv[i].name);
        sv[i].weight = weights ? weights[i] : 1;
        sv[i].shard = i;
        if (sv[i].weight < 1 || sv[i].weight > INT32_MAX)
            return ltr_fail(LTR_EINVAL, "server %u ('%s'): weight %u is not 1..%d", i,
                            sv[i].name, sv[i].weight, INT32_MAX);
        *total += sv[i].weight;
    }
    if (*total > UINT32_MAX)
        return ltr_fail(LTR_EINVAL, "the weights total %llu, over the proxy's 32 bits",
                        (unsigned long long)*total);
    qsort(sv, n, sizeof *sv, by_name);
    for (uint32_t i = 1; i < n; i++)
        if (by_name(&sv[i - 1], &sv[i]) == 0)
            return ltr_fail(LTR_EINVAL, "servers %u and %u are both named '%s'",
                            sv[i - 1].shard, sv[i].shard, sv[i].name);
    return LTR_OK;
}

static int route_check(const char *hash, uint32_t nservers, const char *hash_tag,
                       route_hash_fn *fn)
{
    *fn = hash ? route_hash_by_name(hash) : NULL;
    if (!*fn)
        return ltr_fail(LTR_EINVAL, "unknown hash '%s'; one of %s", hash ? hash : "(null)",
                        route_hash_names());
    if (nservers < 1 || nservers > LTR_ROUTE_MAX_SERVERS)
        return ltr_fail(LTR_EINVAL, "a pool has 1..%d servers, not %u", LTR_ROUTE_MAX_SERVERS,
                        nservers);
    if (hash_tag && hash_tag[0] && strlen(hash_tag) != 2)
        return ltr_fail(LTR_EINVAL, "hash_tag '%s' is not two characters", hash_tag);
    return LTR_OK;
}

int ltr_route_new(const char *hash, const char *distribution, uint32_t nservers,
                  const char *const *names, const uint32_t *weights, const char *hash_tag,
                  ltr_route **out)
{
    *out = NULL;
    route_hash_fn fn;
    int dist = DIST_KETAMA, rc = route_check(hash, nservers, hash_tag, &fn);
    if (!rc)
        rc = parse_dist(distribution, &dist);
    if (rc)
        return rc;
    ltr_route *r = calloc(1, sizeof *r);
    server *sv = calloc(nservers, sizeof *sv);
    char (*made)[16] = names ? NULL : calloc(nservers, sizeof *made);
    if (!r || !sv || (!names && !made)) {
        rc = ltr_fail(LTR_ENOMEM, "no memory for a pool of %u servers", nservers);
        goto done;
    }
    r->hash = fn;
    r->dist = dist;
    r->nservers = nservers;
    r->tagged = hash_tag && hash_tag[0];
    if (r->tagged)
        memcpy(r->tag, hash_tag, 2);
    rc = servers_sorted(nservers, names, weights, sv, made, &r->total_weight);
    if (!rc)
        rc = dist == DIST_KETAMA ? ketama_build(r, sv) : modula_build(r, sv);
done:
    free(sv);
    free(made);
    if (rc)
        ltr_route_free(r);
    else
        *out = r;
    return rc;
}

void ltr_route_free(ltr_route *r)
{
    if (!r)
        return;
    free(r->values);
    free(r->point_shards);
    free(r->order);
    free(r->ends);
    free(r);
}

/* The part of a key the proxy hashes: with a hash tag "ab", what lies between the key's first
 * 'a' and the next 'b' after it, when that is not empty; else the whole key. */
static const uint8_t *tagged_part(const ltr_route *r, const uint8_t *k, size_t *len)
{
    if (!r->tagged || !*len)
        return k;
    const uint8_t *start = memchr(k, r->tag[0], *len);
    if (!start || start + 1 == k + *len)
        return k;
    const uint8_t *end = memchr(start + 1, r->tag[1], (size_t)(k + *len - start - 1));
    if (!end || end == start + 1)
        return k;
    *len = (size_t)(end - start - 1);
    return start + 1;
}

static uint32_t tagged_hash(const ltr_route *r, const uint8_t *k, size_t len)
{
    k = tagged_part(r, k, &len);
    return len ? r->hash(k, len) : 0; /* the proxy hashes no empty key */
}

/* The first point at or after h on the circle (past the last one: the first). */
static uint32_t ketama_dispatch(const ltr_route *r, uint32_t h)
{
    uint32_t lo = 0, hi = r->npoints;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (r->values[mid] < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    return r->point_shards[lo == r->npoints ? 0 : lo];
}

/* Slot h mod (total weight) of a table holding each server weight times, in the proxy's order. */
static uint32_t modula_dispatch(const ltr_route *r, uint32_t h)
{
    uint64_t slot = h % r->total_weight;
    uint32_t lo = 0, hi = r->nservers - 1;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (r->ends[mid] <= slot)
            lo = mid + 1;
        else
            hi = mid;
    }
    return r->order[lo];
}

static uint32_t route_key(const ltr_route *r, const uint8_t *k, size_t len)
{
    if (r->nservers == 1) /* the proxy skips hashing for a pool of one */
        return 0;
    uint32_t h = tagged_hash(r, k, len);
    return r->dist == DIST_KETAMA ? ketama_dispatch(r, h) : modula_dispatch(r, h);
}

/* Each key's shard (want_shards) or hash: the loop of the two per-key calls. */
static int per_key(const ltr_route *r, const uint8_t *kdata, const int64_t *koffs,
                   size_t klen_total, size_t n, int want_shards, uint32_t *out)
{
    int rc = batch_check(koffs, n, klen_total, "keys");
    if (rc)
        return rc;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *k = kdata + koffs[i];
        size_t len = (size_t)(koffs[i + 1] - koffs[i]);
        out[i] = want_shards ? route_key(r, k, len) : tagged_hash(r, k, len);
    }
    return LTR_OK;
}

int ltr_route_shards(const ltr_route *r, const uint8_t *kdata, const int64_t *koffs,
                     size_t klen_total, size_t n, uint32_t *shard_out)
{
    return per_key(r, kdata, koffs, klen_total, n, 1, shard_out);
}

int ltr_route_hashes(const ltr_route *r, const uint8_t *kdata, const int64_t *koffs,
                     size_t klen_total, size_t n, uint32_t *hash_out)
{
    return per_key(r, kdata, koffs, klen_total, n, 0, hash_out);
}

/* ---- ltr_route_select ---- */

typedef struct packed {
    const uint8_t *data;
    const int64_t *offs;
} packed;

/* Appends the bytes of records [lo, hi) of p to data, and their end offsets, moved to where
 * they now lie, to offs. */
static int append_records(ltr_buf *data, ltr_buf *offs, packed p, size_t lo, size_t hi)
{
    int64_t shift = (int64_t)data->len - p.offs[lo];
    int rc = buf_append(data, p.data + p.offs[lo], (size_t)(p.offs[hi] - p.offs[lo]));
    if (!rc)
        rc = buf_reserve(offs, (hi - lo) * sizeof(int64_t));
    if (rc)
        return rc;
    for (size_t i = lo + 1; i <= hi; i++) {
        int64_t end = p.offs[i] + shift;
        memcpy(offs->data + offs->len, &end, sizeof end);
        offs->len += sizeof end;
    }
    return LTR_OK;
}

/* Appends items [lo, hi) of the batch, which are consecutive, to out. */
static int append_run(ltr_items *out, packed k, packed v, size_t lo, size_t hi)
{
    int rc = append_records(&out->keys, &out->koffs, k, lo, hi);
    if (!rc)
        rc = append_records(&out->values, &out->voffs, v, lo, hi);
    if (!rc)
        rc = buf_reserve(&out->deleted, hi - lo);
    if (rc)
        return rc;
    memset(out->deleted.data + out->deleted.len, 0, hi - lo); /* no deletions in a load */
    out->deleted.len += hi - lo;
    out->n += hi - lo;
    return LTR_OK;
}

int ltr_route_select(const ltr_route *r, uint32_t shard, const uint8_t *kdata,
                     const int64_t *koffs, size_t klen_total, const uint8_t *vdata,
                     const int64_t *voffs, size_t vlen_total, size_t n, ltr_items *out)
{
    int rc = batch_check(koffs, n, klen_total, "keys");
    if (!rc)
        rc = batch_check(voffs, n, vlen_total, "values");
    if (!rc && shard >= r->nservers)
        rc = ltr_fail(LTR_EINVAL, "shard %u of a pool of %u servers", shard, r->nservers);
    if (!rc)
        rc = items_reset(out);
    packed k = {kdata, koffs}, v = {vdata, voffs};
    uint32_t to[SELECT_CHUNK];
    for (size_t at = 0; !rc && at < n; at += SELECT_CHUNK) {
        size_t m = n - at < SELECT_CHUNK ? n - at : SELECT_CHUNK;
        for (size_t i = 0; i < m; i++)
            to[i] = route_key(r, kdata + koffs[at + i], (size_t)(koffs[at + i + 1] - koffs[at + i]));
        /* runs of consecutive kept items, copied a run at a time */
        for (size_t i = 0; !rc && i < m;) {
            if (to[i] != shard) {
                i++;
                continue;
            }
            size_t j = i;
            while (j < m && to[j] == shard)
                j++;
            rc = append_run(out, k, v, at + i, at + j);
            i = j;
        }
    }
    return rc;
}
