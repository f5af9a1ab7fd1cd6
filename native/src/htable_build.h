/* htable_build.h: the builder's staged items, shared by htable_build.c (staging) and
 * htable_write.c (placing and writing the file). */
#ifndef LTR_HTABLE_BUILD_H
#define LTR_HTABLE_BUILD_H

#include "bucket.h"
#include "hashbits.h"
#include "ltr_int.h"

typedef struct staged {
    uint64_t koff; /* key bytes: an offset in the arena, or (by reference) their address */
    uint64_t voff; /* value bytes, the same way */
    uint32_t klen;
    uint32_t vlen;
    uint32_t size; /* encoded size */
    uint8_t kind;  /* ITEM_VALUE, ITEM_TOMBSTONE or ITEM_POINTER (bucket.h) */
} staged;

struct ltr_hbuild {
    ltr_table_opts o;
    ltr_buf arena;       /* key and value bytes; replaced values stay as garbage */
    staged *items;
    key_hash *hash;      /* parallel to items */
    size_t n, cap;
    uint32_t *slots;     /* open addressing: item index + 1, 0 = empty */
    size_t nslots;       /* power of two, at least twice n */
    uint64_t data_bytes; /* sum of encoded sizes of the live items */
    uint64_t capacity;   /* fill budget in bytes */
    uint64_t counted;    /* the bytes the budget counts: data_bytes, or (resident_only) those
                            of the items that fit a bucket */
    int resident_only;   /* items larger than a bucket (overflow records) are not counted */
    int finished;
    int by_ref;          /* items are the caller's bytes, not copies in the arena */
};

static inline const uint8_t *staged_key(const struct ltr_hbuild *b, const staged *s)
{
    return b->by_ref ? (const uint8_t *)(uintptr_t)s->koff : b->arena.data + s->koff;
}

static inline const uint8_t *staged_value(const struct ltr_hbuild *b, const staged *s)
{
    return b->by_ref ? (const uint8_t *)(uintptr_t)s->voff : b->arena.data + s->voff;
}

/* Items staged from now on are referenced, not copied: the caller keeps their bytes alive and
 * unchanged until the table is written (a compaction holds its inputs in memory). Only for a
 * builder with no items yet. */
void hbuild_by_reference(ltr_hbuild *b);

int htable_write(ltr_hbuild *b, const char *path, ltr_build_stats *st);
/* Where a table goes: its own file at path, or (path NULL) the extent [base, base + cap) of the
 * open file fd, named `name` in errors. */
typedef struct table_dest {
    const char *path;
    int fd;
    const char *name;
    uint64_t base, cap;
} table_dest;
/* Writes the table into the extent at base (a multiple of the bucket size) of fd, at most cap
 * bytes: LTR_EAGAIN, with the size it needs in st->file_bytes, before anything is written when
 * it does not fit. */
int htable_write_at(ltr_hbuild *b, int fd, const char *name, uint64_t base, uint64_t cap,
                    ltr_build_stats *st);

/* Stages one item of this kind (bucket.h) whose hash is known: 1 staged, 0 refused (the fill
 * budget is reached), <0 error. A repeated key replaces the earlier item; when `was` is not
 * NULL it gets that item's kind and value (valid until the next change of the builder; kind
 * -1 when none was replaced). */
int hbuild_stage(ltr_hbuild *b, key_hash h, const uint8_t *key, uint32_t klen,
                 const uint8_t *val, uint32_t vlen, int kind, item_view *was);
/* Room for `items` more items holding `bytes` of keys and values, made at once. */
int hbuild_reserve(ltr_hbuild *b, size_t items, size_t bytes);
/* From now on the fill budget counts only items that fit a bucket: a window of a streamed
 * compaction's output budgets its buckets, while larger items go to the overflow area whatever
 * their number (counting them would spill a window holding one large value into a table of
 * its own). Only for a builder with no items yet. */
void hbuild_count_resident(ltr_hbuild *b);

/* Empties the builder for reuse (its arrays stay allocated) with a new fill budget in bytes:
 * a compaction stages each window of a table in one builder. */
void hbuild_clear(ltr_hbuild *b, uint64_t capacity);

/* A table written window by window (htable_write.c): a compaction's output, built while only
 * a window of its inputs is in memory. Windows come in ascending order; each is staged in a
 * builder (of the same bucket count) whose items all have their home bucket in it, and is
 * balanced among its own buckets. Buckets no window covered are written empty. */
typedef struct ltr_hstream ltr_hstream;
/* Creates the table's file at path (o->sync as for ltr_hbuild_finish, or IO_IN_PLACE*). */
int hstream_new(const ltr_table_opts *o, const char *path, ltr_hstream **out);
/* Writes buckets [first, first + n) from b's items (and the empty buckets before them). */
int hstream_window(ltr_hstream *hs, ltr_hbuild *b, uint32_t first, uint32_t n);
/* Writes the empty buckets left, the trailer and the footer, and commits the file. */
int hstream_finish(ltr_hstream *hs, ltr_build_stats *st);
/* Frees the stream; an unfinished file is closed but left for the caller to remove. */
void hstream_free(ltr_hstream *hs);

/* The staged item with this key, or NULL (its bytes: staged_key, staged_value). */
const staged *hbuild_find(const ltr_hbuild *b, key_hash h, const uint8_t *key, uint32_t klen);

#endif
