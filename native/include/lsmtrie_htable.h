/* lsmtrie_htable.h: the HTable component on its own (docs/format/htable.md): building a table
 * file, reading it, scanning it, and the hashing that places keys (docs/format/hashing.md). The
 * conventions of lsmtrie.h hold. An ltr_htable (reader) may be used from many threads at once;
 * an ltr_hbuild (builder) and an ltr_scan belong to one thread at a time. */
#ifndef LSMTRIE_HTABLE_H
#define LSMTRIE_HTABLE_H

#include "lsmtrie.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Everything declared between the cdef markers is the library's API: exported from the library
 * (which is built with -fvisibility=hidden, so that nothing else is) and fed verbatim to cffi,
 * so it holds only typedefs, prototypes and integer #defines. */
#pragma GCC visibility push(default)
/* cdef-begin */

/* ---- hashing (docs/format/hashing.md) ---- */

typedef struct ltr_hash_fields {
    uint64_t h1;
    uint64_t h2;
    uint64_t trie_path;   /* 36 bits: h1[63:28] */
    uint32_t bucket;      /* bucket index for the given bucket count */
    uint32_t rank;        /* rank in that bucket (rotated) */
    uint32_t bloom;       /* bloom seed field */
} ltr_hash_fields;

void ltr_murmur3_128(const uint8_t *key, size_t len, uint32_t seed, uint8_t *out16);
int ltr_hash_many(const uint8_t *data, const int64_t *offs, size_t n, size_t data_len,
                  uint32_t seed, uint8_t *out16n);
int ltr_hash_fields_of(const uint8_t *digest16, uint32_t buckets, ltr_hash_fields *out);
uint32_t ltr_trie_digit(const uint8_t *digest16, uint32_t depth);
uint32_t ltr_crc32c(uint32_t crc, const uint8_t *data, size_t len);
/* ---- HTable builder (docs/format/htable.md) ---- */

typedef struct ltr_table_opts {
    uint32_t buckets;            /* 1..LTR_MAX_BUCKETS, default LTR_DEFAULT_BUCKETS */
    double fill;                 /* fraction of bucket payload a table accepts, default
                                    LTR_DEFAULT_FILL */
    uint32_t bloom_bits_per_key; /* 0 (no filters) or 1..64, default LTR_DEFAULT_BLOOM_BITS */
    uint32_t hash_seed;          /* default 0 */
    uint32_t max_cached_records; /* cap of recommended in-memory migration records, default
                                    LTR_DEFAULT_MAX_CACHED */
    int sync;                    /* 1: fsync the file and its directory (default); 2: the file
                                    only (the caller fsyncs the directory once for a batch of
                                    files); 3: start writeback only (the caller fsyncs the
                                    files and the directory later, before it relies on them);
                                    0: none */
} ltr_table_opts;

typedef struct ltr_build_stats {
    uint64_t items;
    uint64_t tombstones;
    uint64_t data_bytes;         /* sum of encoded item sizes */
    uint64_t file_bytes;         /* size of the table file */
    uint64_t migrated_items;     /* item moves (an item moved twice counts twice) */
    uint64_t overflow_items;
    uint32_t records;            /* migration records */
    uint32_t cached_records;     /* recommended in-memory records */
    uint32_t max_chain;          /* longest migration chain, in hops */
    uint32_t overloaded_buckets; /* buckets over 4080 bytes before balancing */
    double expected_reads;       /* bucket reads per present-key lookup with the cached records */
} ltr_build_stats;

typedef struct ltr_hbuild ltr_hbuild;

void ltr_table_opts_default(ltr_table_opts *o);
int ltr_hbuild_new(const ltr_table_opts *o, ltr_hbuild **out);
/* Adds items in order until the fill budget is reached; *n_added tells how many were taken.
 * A later item with the same key replaces an earlier one. deleted may be NULL; deleted[i] != 0
 * makes item i a tombstone (its value is ignored). The whole batch is validated before anything
 * is added: on error nothing is added. */
int ltr_hbuild_add(ltr_hbuild *b, const uint8_t *kdata, const int64_t *koffs, size_t klen_total,
                   const uint8_t *vdata, const int64_t *voffs, size_t vlen_total,
                   const uint8_t *deleted, size_t n, size_t *n_added);
uint64_t ltr_hbuild_items(const ltr_hbuild *b);
uint64_t ltr_hbuild_data_bytes(const ltr_hbuild *b);
uint64_t ltr_hbuild_capacity(const ltr_hbuild *b);
/* Places, filters, balances and writes the table durably to path. The builder stays valid
 * (and empty again only after ltr_hbuild_free); finishing twice is an error. */
int ltr_hbuild_finish(ltr_hbuild *b, const char *path, ltr_build_stats *st);
/* The same into bytes [offset, offset + max_bytes) of the open file fd instead of a file of
 * its own (the file grows when the extent passes its end; bytes past the table are left as
 * they were). offset must be a multiple of LTR_BUCKET_SIZE. When the table needs more than
 * max_bytes, LTR_EAGAIN before anything is written, with the size needed in st->file_bytes;
 * the builder can then be finished again. With the builder's sync option (the default) the
 * file is fdatasynced; name names it in errors. */
int ltr_hbuild_finish_at(ltr_hbuild *b, int fd, const char *name, uint64_t offset,
                         uint64_t max_bytes, ltr_build_stats *st);
void ltr_hbuild_free(ltr_hbuild *b);

/* ---- HTable reader ---- */

#define LTR_OPEN_NO_FILTERS 1  /* do not load the per-bucket filters (last-level tables) */
#define LTR_OPEN_PREAD 2       /* read buckets with pread instead of an mmap */
#define LTR_OPEN_DIRECT 4      /* read with O_DIRECT into aligned buffers, bypassing the page
                                  cache (never mapped: implies LTR_OPEN_PREAD); a file whose
                                  file system refuses O_DIRECT fails the open (LTR_EINVAL); not
                                  for ltr_htable_open_at */

typedef struct ltr_table_info {
    uint32_t buckets;
    uint32_t hash_seed;
    uint32_t bloom_bits_per_key;
    uint32_t bloom_probes;
    uint64_t items;
    uint64_t tombstones;
    uint64_t data_bytes;
    uint64_t file_bytes;
    uint64_t overflow_items;
    uint32_t records;
    uint32_t cached_records;        /* records kept in memory by this reader */
    uint64_t cached_record_bytes;   /* memory they take */
    uint64_t filter_bytes;          /* memory the filters take (0 with LTR_OPEN_NO_FILTERS) */
    uint64_t overflow_index_bytes;  /* memory the overflow index takes */
} ltr_table_info;

typedef struct ltr_read_stats {
    uint64_t lookups;
    uint64_t found;
    uint64_t deleted;
    uint64_t bucket_reads;
    uint64_t overflow_reads;
    uint64_t filter_negatives;        /* lookups answered by the filter alone */
    uint64_t filter_false_positives;  /* filter said maybe, key absent */
} ltr_read_stats;

typedef struct ltr_htable ltr_htable;

/* max_cached < 0 keeps the builder's recommendation. */
int ltr_htable_open(const char *path, uint32_t flags, int32_t max_cached, ltr_htable **out);
/* Opens the table held in bytes [offset, offset + length) of the open file fd (written by
 * ltr_hbuild_finish_at): offset a multiple of LTR_BUCKET_SIZE, length the table's size
 * (ltr_build_stats.file_bytes). fd stays the caller's, who keeps it open until the table is
 * closed; name names the file in errors. */
int ltr_htable_open_at(int fd, const char *name, uint64_t offset, uint64_t length,
                       uint32_t flags, int32_t max_cached, ltr_htable **out);
void ltr_htable_close(ltr_htable *t);
void ltr_htable_info(const ltr_htable *t, ltr_table_info *out);
void ltr_htable_read_stats(const ltr_htable *t, ltr_read_stats *out);
void ltr_htable_reset_stats(ltr_htable *t);
/* One key. *status gets LTR_FOUND, LTR_DELETED or LTR_ABSENT. When found, the value is copied to
 * vbuf if it fits in vcap, else LTR_EAGAIN is returned; *vlen always gets the value's length. */
int ltr_htable_get(ltr_htable *t, const uint8_t *key, size_t klen, uint8_t *vbuf, size_t vcap,
                   size_t *vlen, int *status);
/* A batch. status[i] as above; found values are appended to *values and voffs (n+1 entries)
 * delimit them (empty for absent and deleted). */
int ltr_htable_get_many(ltr_htable *t, const uint8_t *kdata, const int64_t *koffs,
                        size_t klen_total, size_t n, int8_t *status, int64_t *voffs,
                        ltr_buf *values);

/* ---- full scan ---- */

typedef struct ltr_scan ltr_scan;

int ltr_scan_new(ltr_htable *t, ltr_scan **out);
/* Fills out with the next items (replacing its previous content): about max_items, whole buckets
 * at a time, so up to one bucket more; out->n == 0 at the end.
 * The table must outlive the scan. */
int ltr_scan_next(ltr_scan *s, size_t max_items, ltr_items *out);
void ltr_scan_free(ltr_scan *s);

/* cdef-end */
#pragma GCC visibility pop

#ifdef __cplusplus
}
#endif
#endif /* LSMTRIE_HTABLE_H */
