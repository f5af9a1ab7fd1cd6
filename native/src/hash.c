/* hash.c: the hashing entry points of the public API, over single keys and packed batches. */
#include "hashbits.h"
#include "ltr_int.h"

int ltr_hash_many(const uint8_t *data, const int64_t *offs, size_t n, size_t data_len,
                  uint32_t seed, uint8_t *out16n)
{
    int rc = batch_check(offs, n, data_len, "keys");
    if (rc)
        return rc;
    for (size_t i = 0; i < n; i++)
        ltr_murmur3_128(data + offs[i], (size_t)(offs[i + 1] - offs[i]), seed, out16n + 16 * i);
    return LTR_OK;
}

int ltr_hash_fields_of(const uint8_t *digest16, uint32_t buckets, ltr_hash_fields *out)
{
    if (buckets < 1 || buckets > LTR_MAX_BUCKETS)
        return ltr_fail(LTR_EINVAL, "buckets must be 1..%d, got %u", LTR_MAX_BUCKETS, buckets);
    key_hash h = hb_from_digest(digest16);
    out->h1 = h.h1;
    out->h2 = h.h2;
    out->trie_path = hb_trie_path(h);
    out->bucket = hb_bucket(h, buckets);
    out->rank = hb_rank(h, out->bucket);
    out->bloom = hb_bloom(h);
    return LTR_OK;
}

uint32_t ltr_trie_digit(const uint8_t *digest16, uint32_t depth)
{
    if (depth >= LTR_TRIE_LEVELS)
        return 0;
    return hb_trie_digit(hb_from_digest(digest16), depth);
}
