/* route_hash.h: the twelve key hashes twemproxy 0.5.0 offers (`hash:` in its configuration),
 * computed as its x86-64 build computes them (route_hash.c says where that differs from the
 * hashes' published definitions). */
#ifndef LTR_ROUTE_HASH_H
#define LTR_ROUTE_HASH_H

#include <stddef.h>
#include <stdint.h>

typedef uint32_t (*route_hash_fn)(const uint8_t *key, size_t len);

/* The hash named `name` (one_at_a_time, md5, crc16, crc32, crc32a, fnv1_64, fnv1a_64,
 * fnv1_32, fnv1a_32, hsieh, murmur, jenkins), or NULL. */
route_hash_fn route_hash_by_name(const char *name);
/* The names, comma-separated, for error messages. */
const char *route_hash_names(void);

#endif
