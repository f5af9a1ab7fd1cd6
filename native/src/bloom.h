/* bloom.h: one per-bucket Bloom filter (probe sequence: docs/format/hashing.md). A filter is a
 * byte array; its size and the probe count are stored by the file that holds it. */
#ifndef LTR_BLOOM_H
#define LTR_BLOOM_H

#include <stddef.h>
#include <stdint.h>

uint32_t bloom_probes_for(uint32_t bits_per_key);
size_t bloom_bytes_for(uint64_t items, uint32_t bits_per_key);
void bloom_add(uint8_t *filter, size_t bytes, uint32_t probes, uint32_t field);
/* 1 when the key may be present, 0 when it is certainly absent. A 0-byte filter is empty. */
int bloom_may_contain(const uint8_t *filter, size_t bytes, uint32_t probes, uint32_t field);

#endif
