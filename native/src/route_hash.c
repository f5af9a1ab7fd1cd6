/* route_hash.c: twemproxy 0.5.0's key hashes, written from its behaviour (src/hashkit), for
 * ltr_route. Each must give the proxy's value bit for bit, quirks included:
 * - twemproxy reads keys through `const char *`, and char is signed on x86-64: several hashes
 *   mix in a byte >= 0x80 sign-extended (0xFFFFFF80, not 0x80). sx() does the same. (An ARM
 *   build of twemproxy, where char is unsigned, routes such keys differently.)
 * - The 64-bit FNVs return the low 32 bits, and fnv1a_64 even runs in 32 bits with the 64-bit
 *   constants truncated (which gives the same low 32 bits).
 * - crc16 never masks its register to 16 bits: the value keeps the bits shifted past them.
 * - crc32 is the top half of the CRC, less its highest bit (a 15-bit value); crc32a the CRC.
 * - murmur is MurmurHash2 seeded with 0xdeadbeef * length; jenkins is Bob Jenkins' lookup3
 *   hashlittle with initval 13 (little-endian words); hsieh is Paul Hsieh's SuperFastHash. */
#include <pthread.h>
#include <string.h>

#include "md5.h"
#include "route_hash.h"

/* A key byte as twemproxy's `(uint32_t) key[i]` sees it on x86-64 (signed char). */
static inline uint32_t sx(uint8_t b)
{
    return (uint32_t)(int32_t)(int8_t)b;
}

static inline uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint32_t le16(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8;
}

/* ---- the CRC tables, made once ---- */

static uint32_t crc32_table[256]; /* reflected 0xEDB88320, as zlib's */
static uint32_t crc16_table[256]; /* 0x1021 most significant bit first (XMODEM) */
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

static void tables_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t r = i, f = i << 8;
        for (int k = 0; k < 8; k++) {
            r = (r >> 1) ^ ((r & 1) ? 0xEDB88320u : 0);
            f = (f << 1) ^ ((f & 0x8000) ? 0x1021u : 0);
        }
        crc32_table[i] = r;
        crc16_table[i] = f & 0xffff;
    }
}

static uint32_t crc32_register(const uint8_t *key, size_t len)
{
    pthread_once(&tables_once, tables_init);
    uint32_t crc = ~0u;
    for (size_t i = 0; i < len; i++)
        crc = (crc >> 8) ^ crc32_table[(crc ^ key[i]) & 0xff];
    return crc;
}

static uint32_t h_crc32(const uint8_t *key, size_t len)
{
    return (~crc32_register(key, len) >> 16) & 0x7fff;
}

static uint32_t h_crc32a(const uint8_t *key, size_t len)
{
    return ~crc32_register(key, len);
}

static uint32_t h_crc16(const uint8_t *key, size_t len)
{
    pthread_once(&tables_once, tables_init);
    uint32_t crc = 0; /* 32 bits on purpose: twemproxy lets it grow past 16 */
    for (size_t i = 0; i < len; i++)
        crc = (crc << 8) ^ crc16_table[((crc >> 8) ^ key[i]) & 0xff];
    return crc;
}

/* ---- the FNVs ---- */

static uint32_t h_fnv1_64(const uint8_t *key, size_t len)
{
    uint64_t h = 0xcbf29ce484222325u;
    for (size_t i = 0; i < len; i++) {
        h *= 0x100000001b3u;
        h ^= (uint64_t)(int64_t)(int8_t)key[i];
    }
    return (uint32_t)h;
}

static uint32_t h_fnv1a_64(const uint8_t *key, size_t len)
{
    uint32_t h = 0x84222325u; /* the 64-bit basis and prime, cut to 32 bits */
    for (size_t i = 0; i < len; i++) {
        h ^= sx(key[i]);
        h *= 0x1b3u;
    }
    return h;
}

static uint32_t h_fnv1_32(const uint8_t *key, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) {
        h *= 16777619u;
        h ^= sx(key[i]);
    }
    return h;
}

static uint32_t h_fnv1a_32(const uint8_t *key, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) {
        h ^= sx(key[i]);
        h *= 16777619u;
    }
    return h;
}

/* ---- the others ---- */

static uint32_t h_one_at_a_time(const uint8_t *key, size_t len)
{
    uint32_t h = 0;
    for (size_t i = 0; i < len; i++) {
        h += sx(key[i]);
        h += h << 10;
        h ^= h >> 6;
    }
    h += h << 3;
    h ^= h >> 11;
    h += h << 15;
    return h;
}

static uint32_t h_md5(const uint8_t *key, size_t len)
{
    uint8_t d[16];
    md5_digest(key, len, d);
    return le32(d);
}

static uint32_t h_hsieh(const uint8_t *key, size_t len)
{
    if (!len)
        return 0;
    uint32_t h = 0;
    for (size_t words = len >> 2; words; words--, key += 4) {
        h += le16(key);
        h = (h << 16) ^ ((le16(key + 2) << 11) ^ h);
        h += h >> 11;
    }
    switch (len & 3) {
    case 3:
        h += le16(key);
        h ^= h << 16;
        h ^= sx(key[2]) << 18; /* the one signed read of the original */
        h += h >> 11;
        break;
    case 2:
        h += le16(key);
        h ^= h << 11;
        h += h >> 17;
        break;
    case 1:
        h += key[0];
        h ^= h << 10;
        h += h >> 1;
        break;
    }
    h ^= h << 3;
    h += h >> 5;
    h ^= h << 4;
    h += h >> 17;
    h ^= h << 25;
    h += h >> 6;
    return h;
}

static uint32_t h_murmur(const uint8_t *key, size_t len)
{
    const uint32_t m = 0x5bd1e995;
    uint32_t h = (0xdeadbeefu * (uint32_t)len) ^ (uint32_t)len;
    for (; len >= 4; len -= 4, key += 4) {
        uint32_t k = le32(key) * m;
        k ^= k >> 24;
        h = (h * m) ^ (k * m);
    }
    if (len) {
        for (size_t i = len; i-- > 0;)
            h ^= (uint32_t)key[i] << (8 * i);
        h *= m;
    }
    h ^= h >> 13;
    h *= m;
    h ^= h >> 15;
    return h;
}

static inline uint32_t rot(uint32_t x, unsigned k)
{
    return (x << k) | (x >> (32 - k));
}

/* lookup3's mix of one 12-byte block into (a, b, c) */
static void jenkins_mix(uint32_t *a, uint32_t *b, uint32_t *c)
{
    *a -= *c; *a ^= rot(*c, 4);  *c += *b;
    *b -= *a; *b ^= rot(*a, 6);  *a += *c;
    *c -= *b; *c ^= rot(*b, 8);  *b += *a;
    *a -= *c; *a ^= rot(*c, 16); *c += *b;
    *b -= *a; *b ^= rot(*a, 19); *a += *c;
    *c -= *b; *c ^= rot(*b, 4);  *b += *a;
}

/* lookup3's final mix, after the last block */
static uint32_t jenkins_final(uint32_t a, uint32_t b, uint32_t c)
{
    c ^= b; c -= rot(b, 14);
    a ^= c; a -= rot(c, 11);
    b ^= a; b -= rot(a, 25);
    c ^= b; c -= rot(b, 16);
    a ^= c; a -= rot(c, 4);
    b ^= a; b -= rot(a, 14);
    c ^= b; c -= rot(b, 24);
    return c;
}

static uint32_t h_jenkins(const uint8_t *key, size_t len)
{
    uint32_t w[3];
    w[0] = w[1] = w[2] = 0xdeadbeefu + (uint32_t)len + 13;
    for (; len > 12; len -= 12, key += 12) {
        w[0] += le32(key);
        w[1] += le32(key + 4);
        w[2] += le32(key + 8);
        jenkins_mix(&w[0], &w[1], &w[2]);
    }
    if (!len) /* only an empty key: a longer one keeps 1..12 bytes for here */
        return w[2];
    /* the last 1..12 bytes, little-endian into a, b, c (lookup3's masked reads) */
    for (size_t i = 0; i < len; i++)
        w[i / 4] += (uint32_t)key[i] << (8 * (i % 4));
    return jenkins_final(w[0], w[1], w[2]);
}

static const struct {
    const char *name;
    route_hash_fn fn;
} HASHES[] = {
    {"one_at_a_time", h_one_at_a_time}, {"md5", h_md5},         {"crc16", h_crc16},
    {"crc32", h_crc32},                 {"crc32a", h_crc32a},   {"fnv1_64", h_fnv1_64},
    {"fnv1a_64", h_fnv1a_64},           {"fnv1_32", h_fnv1_32}, {"fnv1a_32", h_fnv1a_32},
    {"hsieh", h_hsieh},                 {"murmur", h_murmur},   {"jenkins", h_jenkins},
};

route_hash_fn route_hash_by_name(const char *name)
{
    for (size_t i = 0; i < sizeof HASHES / sizeof HASHES[0]; i++)
        if (strcmp(HASHES[i].name, name) == 0)
            return HASHES[i].fn;
    return NULL;
}

const char *route_hash_names(void)
{
    return "one_at_a_time, md5, crc16, crc32, crc32a, fnv1_64, fnv1a_64, fnv1_32, fnv1a_32, "
           "hsieh, murmur, jenkins";
}
