/* bloom.c: per-bucket Bloom filters. Probe positions come two at a time from a SplitMix64
 * sequence seeded by the key's 32-bit bloom field, which keeps the probes independent even in
 * filters of a few hundred bits (plain double hashing is measurably worse there). */
#include <math.h>

#include "bloom.h"

static inline uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static inline uint32_t reduce(uint32_t x, uint64_t m) { return (uint32_t)(((uint64_t)x * m) >> 32); }

uint32_t bloom_probes_for(uint32_t bits_per_key)
{
    if (bits_per_key == 0)
        return 0;
    long k = lround(bits_per_key * 0.6931471805599453);
    return (uint32_t)(k < 1 ? 1 : k > 30 ? 30 : k);
}

size_t bloom_bytes_for(uint64_t items, uint32_t bits_per_key)
{
    return (size_t)((items * bits_per_key + 7) / 8);
}

void bloom_add(uint8_t *filter, size_t bytes, uint32_t probes, uint32_t field)
{
    uint64_t m = (uint64_t)bytes * 8, s = field;
    if (!m)
        return;
    for (uint32_t i = 0; i < probes; i += 2) {
        uint64_t z = splitmix(&s);
        uint32_t p = reduce((uint32_t)z, m);
        filter[p >> 3] |= (uint8_t)(1u << (p & 7));
        if (i + 1 < probes) {
            p = reduce((uint32_t)(z >> 32), m);
            filter[p >> 3] |= (uint8_t)(1u << (p & 7));
        }
    }
}

int bloom_may_contain(const uint8_t *filter, size_t bytes, uint32_t probes, uint32_t field)
{
    uint64_t m = (uint64_t)bytes * 8, s = field;
    if (!m)
        return 0;
    for (uint32_t i = 0; i < probes; i += 2) {
        uint64_t z = splitmix(&s);
        uint32_t p = reduce((uint32_t)z, m);
        if (!(filter[p >> 3] & (1u << (p & 7))))
            return 0;
        if (i + 1 < probes) {
            p = reduce((uint32_t)(z >> 32), m);
            if (!(filter[p >> 3] & (1u << (p & 7))))
                return 0;
        }
    }
    return 1;
}
