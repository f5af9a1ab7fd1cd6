/* hashbits.h: the only code that reads bit fields out of a key digest. The allocation table is
 * docs/format/hashing.md; fields never overlap. */
#ifndef LTR_HASHBITS_H
#define LTR_HASHBITS_H

#include <stdint.h>

#include "coding.h"

typedef struct key_hash {
    uint64_t h1; /* trie path (bits 63..28) and bucket field (bits 27..0) */
    uint64_t h2; /* rank (bits 63..32) and bloom field (bits 31..0) */
} key_hash;

#define HB_TRIE_BITS 36
#define HB_BUCKET_BITS 28
#define HB_BUCKET_MASK ((UINT64_C(1) << HB_BUCKET_BITS) - 1)

static inline key_hash hb_from_digest(const uint8_t *d)
{
    key_hash h = {get_u64(d), get_u64(d + 8)};
    return h;
}

static inline uint64_t hb_trie_path(key_hash h) { return h.h1 >> HB_BUCKET_BITS; }

static inline uint32_t hb_trie_digit(key_hash h, uint32_t depth)
{
    return (uint32_t)(h.h1 >> (61 - 3 * depth)) & 7;
}

static inline uint32_t hb_bucket(key_hash h, uint32_t buckets)
{
    return (uint32_t)(((h.h1 & HB_BUCKET_MASK) * (uint64_t)buckets) >> HB_BUCKET_BITS);
}

static inline uint32_t rotl32(uint32_t x, uint32_t r)
{
    r &= 31;
    return r ? (x << r) | (x >> (32 - r)) : x;
}

/* The rank of an item inside bucket b: each bucket has its own order (paper §2.4.2). */
static inline uint32_t hb_rank(key_hash h, uint32_t bucket)
{
    return rotl32((uint32_t)(h.h2 >> 32), bucket % 32);
}

static inline uint32_t hb_bloom(key_hash h) { return (uint32_t)h.h2; }

#endif
