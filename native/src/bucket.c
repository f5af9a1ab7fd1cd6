/* bucket.c: encoding and decoding of item records and bucket pages. */
#include <string.h>

#include "bucket.h"
#include "coding.h"
#include "htable_format.h"
#include "ltr_int.h"

static uint64_t vfield_of(uint32_t vlen, int kind)
{
    return kind == ITEM_TOMBSTONE ? 0 : kind == ITEM_POINTER ? VFIELD_POINTER : (uint64_t)vlen + 1;
}

size_t item_size(uint32_t klen, uint32_t vlen, int kind)
{
    return varint_len(klen) + varint_len(vfield_of(vlen, kind)) + klen +
           (kind == ITEM_TOMBSTONE ? 0 : vlen);
}

size_t item_header(uint8_t *p, uint32_t klen, uint32_t vlen, int kind)
{
    size_t n = put_varint(p, klen);
    return n + put_varint(p + n, vfield_of(vlen, kind));
}

size_t item_encode(uint8_t *p, const uint8_t *key, uint32_t klen, const uint8_t *value,
                   uint32_t vlen, int kind)
{
    size_t n = item_header(p, klen, vlen, kind);
    if (klen) /* an empty key may come from a buffer that was never allocated */
        memcpy(p + n, key, klen);
    n += klen;
    if (kind != ITEM_TOMBSTONE && vlen) {
        memcpy(p + n, value, vlen);
        n += vlen;
    }
    return n;
}

size_t item_decode(const uint8_t *p, const uint8_t *end, item_view *it)
{
    uint64_t klen, vfield;
    size_t a = get_varint(p, end, &klen);
    if (!a || klen > LTR_MAX_KEY)
        return 0;
    size_t b = get_varint(p + a, end, &vfield);
    if (!b || (vfield > (uint64_t)LTR_MAX_VALUE + 1 && vfield != VFIELD_POINTER))
        return 0;
    int kind = vfield == 0 ? ITEM_TOMBSTONE : vfield == VFIELD_POINTER ? ITEM_POINTER : ITEM_VALUE;
    uint64_t vlen = kind == ITEM_POINTER ? BLOB_POINTER_SIZE : vfield ? vfield - 1 : 0;
    const uint8_t *key = p + a + b;
    if ((uint64_t)(end - key) < klen + vlen)
        return 0;
    it->key = key;
    it->klen = (uint32_t)klen;
    it->kind = kind;
    it->value = kind == ITEM_TOMBSTONE ? NULL : key + klen;
    it->vlen = (uint32_t)vlen;
    return a + b + klen + vlen;
}

static uint32_t page_crc(const uint8_t *page, uint32_t index)
{
    uint8_t idx[4];
    put_u32(idx, index);
    return ltr_crc32c(ltr_crc32c(0, idx, 4), page, BK_CRC);
}

void bucket_seal(uint8_t *page, uint32_t index, const bucket_footer *f)
{
    put_u16(page + BK_COUNT, f->count);
    put_u16(page + BK_USED, f->used);
    put_u16(page + BK_TARGET, f->target);
    put_u16(page + BK_FLAGS, f->flags);
    put_u32(page + BK_HASHMARK, f->hashmark);
    put_u32(page + BK_CRC, page_crc(page, index));
}

int bucket_check(const uint8_t *page, uint32_t index, uint32_t buckets, bucket_footer *f,
                 const char *path)
{
    unsigned long long off = (unsigned long long)index * LTR_BUCKET_SIZE;
    if (get_u32(page + BK_CRC) != page_crc(page, index))
        return ltr_fail(LTR_ECORRUPT, "%s: bucket %u at offset %llu has a bad checksum", path,
                        index, off);
    f->count = get_u16(page + BK_COUNT);
    f->used = get_u16(page + BK_USED);
    f->target = get_u16(page + BK_TARGET);
    f->flags = get_u16(page + BK_FLAGS);
    f->hashmark = get_u32(page + BK_HASHMARK);
    int migrated = f->flags & BK_FLAG_MIGRATED;
    if (f->used > LTR_BUCKET_PAYLOAD || (f->flags & ~BK_FLAG_MIGRATED) ||
        f->target >= buckets || (migrated && f->target == index) ||
        (!migrated && f->target != index))
        return ltr_fail(LTR_ECORRUPT, "%s: bucket %u at offset %llu has an invalid footer", path,
                        index, off);
    return LTR_OK;
}

int bucket_find(const uint8_t *page, const bucket_footer *f, const uint8_t *key, uint32_t klen,
                item_view *out, const char *path, uint32_t index)
{
    const uint8_t *p = page, *end = page + f->used;
    for (uint32_t i = 0; i < f->count; i++) {
        size_t n = item_decode(p, end, out);
        if (!n)
            return ltr_fail(LTR_ECORRUPT, "%s: bucket %u holds a malformed item", path, index);
        if (out->klen == klen && bytes_eq(out->key, key, klen))
            return 1;
        p += n;
    }
    return 0;
}

size_t ltr_test_varint_decode(const uint8_t *p, size_t len, uint64_t *value)
{
    return get_varint(p, p + len, value);
}
