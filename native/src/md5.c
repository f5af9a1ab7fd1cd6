/* md5.c: MD5 as RFC 1321 describes it, in one call over a whole message (keys and ketama point
 * names are short, so there is no streaming interface). Written from the RFC's description:
 * four rounds of sixteen steps over each 64-byte block, the message padded with 0x80, zeros
 * and its bit length (little-endian) to a multiple of 64 bytes. */
#include <string.h>

#include "md5.h"

/* The RFC's T[i] = floor(2^32 * |sin(i + 1)|), i = 0..63. */
static const uint32_t T[64] = {
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
};

/* Left rotations of each round's four steps (the RFC's S11..S44). */
static const uint8_t SHIFT[4][4] = {{7, 12, 17, 22}, {5, 9, 14, 20}, {4, 11, 16, 23}, {6, 10, 15, 21}};

static inline uint32_t rotl(uint32_t x, unsigned s)
{
    return (x << s) | (x >> (32 - s));
}

static inline uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* One 64-byte block into the state abcd[4]. Step i of round r takes word g of the block:
 * i, 5i+1, 3i+5 and 7i (mod 16) in rounds 1 to 4, and mixes with F, G, H and I. */
static void block(uint32_t abcd[4], const uint8_t *p)
{
    uint32_t x[16];
    for (int i = 0; i < 16; i++)
        x[i] = le32(p + 4 * i);
    uint32_t a = abcd[0], b = abcd[1], c = abcd[2], d = abcd[3];
    for (unsigned i = 0; i < 64; i++) {
        unsigned round = i >> 4, g;
        uint32_t f;
        if (round == 0) {
            f = (b & c) | (~b & d);
            g = i;
        } else if (round == 1) {
            f = (b & d) | (c & ~d);
            g = (5 * i + 1) & 15;
        } else if (round == 2) {
            f = b ^ c ^ d;
            g = (3 * i + 5) & 15;
        } else {
            f = c ^ (b | ~d);
            g = (7 * i) & 15;
        }
        uint32_t next = b + rotl(a + f + T[i] + x[g], SHIFT[round][i & 3]);
        a = d;
        d = c;
        c = b;
        b = next;
    }
    abcd[0] += a;
    abcd[1] += b;
    abcd[2] += c;
    abcd[3] += d;
}

void md5_digest(const uint8_t *data, size_t len, uint8_t out[16])
{
    uint32_t abcd[4] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476};
    size_t whole = len & ~(size_t)63;
    for (size_t off = 0; off < whole; off += 64)
        block(abcd, data + off);
    /* the tail, 0x80, zeros up to 56 mod 64, then the length in bits: one or two blocks */
    uint8_t tail[128] = {0};
    size_t rest = len - whole;
    if (rest)
        memcpy(tail, data + whole, rest);
    tail[rest] = 0x80;
    size_t end = rest < 56 ? 64 : 128;
    uint64_t bits = (uint64_t)len << 3;
    for (int i = 0; i < 8; i++)
        tail[end - 8 + i] = (uint8_t)(bits >> (8 * i));
    for (size_t off = 0; off < end; off += 64)
        block(abcd, tail + off);
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < 4; k++)
            out[4 * i + k] = (uint8_t)(abcd[i] >> (8 * k));
}
