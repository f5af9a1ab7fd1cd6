/* bucket.h: item records and the 4096-byte bucket page (docs/format/htable.md). */
#ifndef LTR_BUCKET_H
#define LTR_BUCKET_H

#include <stddef.h>
#include <stdint.h>

/* What an item holds (docs/format/htable.md "Item record"): a value, a tombstone, or a
 * pointer to its value in a value log (blob.h): BLOB_POINTER_SIZE bytes in place of the value. */
enum { ITEM_VALUE = 0, ITEM_TOMBSTONE = 1, ITEM_POINTER = 2 };
/* The value field that marks a pointer: the largest a table's 4-byte varint holds, far above
 * any value length + 1 (LTR_MAX_VALUE + 1 = 2^24 + 1). */
#define VFIELD_POINTER 0x0FFFFFFFu
#define BLOB_POINTER_SIZE 20

typedef struct item_view {
    const uint8_t *key;
    const uint8_t *value; /* NULL for a tombstone; the pointer's bytes for a pointer */
    uint32_t klen;
    uint32_t vlen;        /* 0 for a tombstone, BLOB_POINTER_SIZE for a pointer */
    int kind;             /* ITEM_VALUE, ITEM_TOMBSTONE or ITEM_POINTER */
} item_view;

typedef struct bucket_footer {
    uint16_t count;
    uint16_t used;
    uint16_t target;
    uint16_t flags;
    uint32_t hashmark;
} bucket_footer;

/* Sizes and encodings of an item of this kind; vlen is BLOB_POINTER_SIZE for a pointer and is
 * ignored for a tombstone. */
size_t item_size(uint32_t klen, uint32_t vlen, int kind);
/* The record's header (key length, value field) alone, at most ITEM_HEADER_MAX bytes: what
 * item_encode writes before the key and value. */
#define ITEM_HEADER_MAX 20
size_t item_header(uint8_t *p, uint32_t klen, uint32_t vlen, int kind);
size_t item_encode(uint8_t *p, const uint8_t *key, uint32_t klen, const uint8_t *value,
                   uint32_t vlen, int kind);
/* Decodes one item from [p, end); returns its size, or 0 if it is malformed. */
size_t item_decode(const uint8_t *p, const uint8_t *end, item_view *it);

/* Writes the footer and the checksum of a page whose items are already in place. */
void bucket_seal(uint8_t *page, uint32_t index, const bucket_footer *f);
/* Verifies the checksum and footer of page `index`; LTR_ECORRUPT names path and offset. */
int bucket_check(const uint8_t *page, uint32_t index, uint32_t buckets, bucket_footer *f,
                 const char *path);
/* Looks for key in a checked page: 1 and *out when found, 0 when not, LTR_ECORRUPT. */
int bucket_find(const uint8_t *page, const bucket_footer *f, const uint8_t *key, uint32_t klen,
                item_view *out, const char *path, uint32_t index);

#endif
