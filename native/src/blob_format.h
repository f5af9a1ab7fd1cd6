/* blob_format.h: the value log's record and the pointer to it (docs/format/vlog.md), and a
 * table's list of the value logs it points into (docs/format/htable.md, version 2). Values of
 * at least min_blob_size bytes are kept in value logs, apart from the hash tables, so that a
 * table holds small items only and compactions move 20-byte pointers, not the values. */
#ifndef LTR_BLOB_FORMAT_H
#define LTR_BLOB_FORMAT_H

#include <stdint.h>

#include "coding.h"
#include "ltr_int.h"

#define VLOG_MAGIC "LTRVLOG1"
#define VLOG_VERSION 1
#define VLOG_HEADER_SIZE 16 /* magic, version u16, reserved u16, crc u32 of bytes [0, 12) */
#define VLOG_RECORD_MAX_HEADER 12 /* crc u32, then two varints of at most 4 bytes */

/* Where a value lies: value log `file`, its record at `offset`, and the value's length. */
typedef struct blob_ptr {
    uint64_t file;
    uint64_t offset;
    uint32_t vlen;
} blob_ptr;

/* A table's pointers into value log `file` lead to `bytes` of values. */
typedef struct blob_ref {
    uint64_t file;
    uint64_t bytes;
} blob_ref;

/* The pointer's 20 bytes (BLOB_POINTER_SIZE): file u64, offset u64, vlen u32. */
static inline void blob_ptr_encode(uint8_t *p, const blob_ptr *b)
{
    put_u64(p, b->file);
    put_u64(p + 8, b->offset);
    put_u32(p + 16, b->vlen);
}

static inline void blob_ptr_decode(const uint8_t *p, blob_ptr *b)
{
    b->file = get_u64(p);
    b->offset = get_u64(p + 8);
    b->vlen = get_u32(p + 16);
}

/* A record's bytes: crc, key length, value length, key, value. */
static inline uint64_t blob_record_size(uint32_t klen, uint32_t vlen)
{
    return 4 + varint_len(klen) + varint_len(vlen) + (uint64_t)klen + vlen;
}

/* One record at p[0, avail): 1 with its fields when it is whole and its checksum holds, 0
 * when it runs past avail (read more), -1 when it is not a record. */
typedef struct vlog_record {
    const uint8_t *key, *value;
    uint32_t klen, vlen;
    uint64_t size;
} vlog_record;

static inline int vlog_record_parse(const uint8_t *p, size_t avail, vlog_record *r)
{
    uint64_t kl, vl;
    size_t a, c;
    if (avail < 6)
        return 0;
    if (!(a = get_varint(p + 4, p + avail, &kl)) || !(c = get_varint(p + 4 + a, p + avail, &vl)))
        return avail >= VLOG_RECORD_MAX_HEADER ? -1 : 0;
    if (kl > LTR_MAX_KEY || vl > LTR_MAX_VALUE)
        return -1;
    r->size = 4 + a + c + kl + vl;
    if (r->size > avail)
        return 0;
    if (get_u32(p) != ltr_crc32c(0, p + 4, (size_t)r->size - 4))
        return -1;
    r->key = p + 4 + a + c;
    r->klen = (uint32_t)kl;
    r->value = r->key + kl;
    r->vlen = (uint32_t)vl;
    return 1;
}

#endif
