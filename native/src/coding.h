/* coding.h: little-endian fixed-width integers and LEB128 varints. Every integer the core writes
 * to disk goes through these helpers; no struct is ever written raw. */
#ifndef LTR_CODING_H
#define LTR_CODING_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Loads and stores go through memcpy (one move on x86) with a swap only on big-endian hosts.
 * Byte-by-byte shifts compile to the same move one at a time, but gcc's vectorizer may merge two
 * neighbouring put_u64s into a 16-byte store assembled through the stack, which stalled the
 * store forwarding and made MurmurHash3 of a 16-byte key (its digest is two put_u64s) several
 * times slower (docs/benchmarks.md, "Measurements behind choices in the code"). */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define LE16(v) __builtin_bswap16(v)
#define LE32(v) __builtin_bswap32(v)
#define LE64(v) __builtin_bswap64(v)
#else
#define LE16(v) (v)
#define LE32(v) (v)
#define LE64(v) (v)
#endif

static inline void put_u16(uint8_t *p, uint16_t v)
{
    v = LE16(v);
    memcpy(p, &v, 2);
}
static inline void put_u32(uint8_t *p, uint32_t v)
{
    v = LE32(v);
    memcpy(p, &v, 4);
}
static inline void put_u64(uint8_t *p, uint64_t v)
{
    v = LE64(v);
    memcpy(p, &v, 8);
}
static inline uint16_t get_u16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return LE16(v);
}
static inline uint32_t get_u32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return LE32(v);
}
static inline uint64_t get_u64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return LE64(v);
}

static inline size_t varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static inline size_t put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

/* The longest varint: ten bytes carry 64 bits (7 per byte), the tenth only the top bit. */
#define VARINT_MAX 10

/* Decodes a varint of up to 64 bits from [p, end). Returns the bytes consumed, or 0 when the
 * input is truncated or cannot be the encoding of a 64-bit value (more than ten bytes, or a
 * tenth byte above 1): callers treat 0 as corruption. Longer forms than needed (a zero top
 * group with its continuation bit) are accepted, as every LEB128 reader does. */
static inline size_t get_varint(const uint8_t *p, const uint8_t *end, uint64_t *v)
{
    uint64_t r = 0;
    for (size_t i = 0; i < VARINT_MAX && p + i < end; i++) {
        uint64_t b = p[i];
        if (i == VARINT_MAX - 1 && b > 1)
            return 0; /* bits past the 64th */
        r |= (b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *v = r;
            return i + 1;
        }
    }
    return 0;
}

#endif
