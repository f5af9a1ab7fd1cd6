/* lsmtrie_route.h: for shard builders. Which server of a twemproxy (nutcracker) 0.5.0 pool the
 * proxy sends each key to, computed offline bit for bit, so that shards built apart (lsmtrie
 * load --shard I/N --route ...) hold exactly the keys the proxy will ask them for
 * (docs/scale-out.md "Routing"). Conventions of lsmtrie.h. An ltr_route is immutable once made:
 * any number of threads may use one at once. */
#ifndef LSMTRIE_ROUTE_H
#define LSMTRIE_ROUTE_H

#include "lsmtrie.h"

#ifdef __cplusplus
extern "C" {
#endif

#pragma GCC visibility push(default)
/* cdef-begin */

#define LTR_ROUTE_MAX_SERVERS 65535

typedef struct ltr_route ltr_route;

/* A pool as the proxy's configuration gives it:
 * - hash: one_at_a_time, md5, crc16, crc32, crc32a, fnv1_64, fnv1a_64, fnv1_32, fnv1a_32,
 *   hsieh, murmur or jenkins; distribution: ketama or modula (random is refused with
 *   LTR_EINVAL: the proxy draws its server per request, which nothing offline can know);
 * - nservers servers, 1..LTR_ROUTE_MAX_SERVERS, in the configuration's order, which is the
 *   order of the shard indices this API answers with (the proxy itself orders its servers by
 *   name; the route does too, and answers in the caller's order);
 * - names[i]: the name ketama hashes its points from: the server's configured name, or when it
 *   has none "host:port" ("host" alone for port 11211); distinct and not empty. NULL: "shard0",
 *   "shard1", ...;
 * - weights[i], 1..2^31-1, totalling at most 2^32-1; NULL: 1 each;
 * - hash_tag: two characters ("{}"), or NULL or "" for none: a key holding tag[0] and, later, a
 *   tag[1] with something between them is routed by that part alone. */
int ltr_route_new(const char *hash, const char *distribution, uint32_t nservers,
                  const char *const *names, const uint32_t *weights, const char *hash_tag,
                  ltr_route **out);
/* The shard (0..nservers-1) of each key of a packed batch (keys as for ltr_store_write). */
int ltr_route_shards(const ltr_route *r, const uint8_t *kdata, const int64_t *koffs,
                     size_t klen_total, size_t n, uint32_t *shard_out);
/* The 32-bit hash the distribution receives for each key: the pool's hash of the key (of its
 * hash-tagged part), 0 for an empty one. For tests against the proxy's hash functions. */
int ltr_route_hashes(const ltr_route *r, const uint8_t *kdata, const int64_t *koffs,
                     size_t klen_total, size_t n, uint32_t *hash_out);
/* Fills out (emptied first; its buffers are reused) with the items of a packed batch whose
 * keys go to `shard`, in order. */
int ltr_route_select(const ltr_route *r, uint32_t shard, const uint8_t *kdata,
                     const int64_t *koffs, size_t klen_total, const uint8_t *vdata,
                     const int64_t *voffs, size_t vlen_total, size_t n, ltr_items *out);
void ltr_route_free(ltr_route *r);

/* cdef-end */
#pragma GCC visibility pop

#ifdef __cplusplus
}
#endif
#endif /* LSMTRIE_ROUTE_H */
