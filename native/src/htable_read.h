/* htable_read.h: the reader's state, shared by htable_read.c (open, lookups) and scan.c. */
#ifndef LTR_HTABLE_READ_H
#define LTR_HTABLE_READ_H

#include "blob_format.h"
#include "bucket.h"
#include "hashbits.h"
#include "ltr_int.h"

enum {
    ST_LOOKUPS, ST_FOUND, ST_DELETED, ST_BUCKET_READS, ST_OVF_READS, ST_FNEG, ST_FFP,
    ST_CLUSTER_READS, /* counted by the store, not by tables */
    ST_N
};

/* The fields a lookup reads come first, in the first two cache lines of a 64-byte aligned
 * allocation, so that a batch's lookahead fetches them with two prefetches (htable_prefetch). */
struct ltr_htable {
    /* the descriptor: -1 while a store's fcache has it closed (fcache.h explains the protocol) */
    int fd;
    uint32_t users;   /* atomic: reads in progress on fd (with a cache only) */
    uint8_t used;     /* atomic: read since the cache's hand last passed */
    uint32_t buckets, probes, ovf_items;
    /* in memory: cached migration records sorted by source */
    uint32_t ncached;
    struct fcache *fc; /* NULL: the descriptor stays open for the table's life */
    const uint8_t *map; /* whole file, read-only, MADV_RANDOM; NULL in pread mode */
    uint16_t *rec_src;
    uint16_t *rec_dst;
    uint32_t *rec_mark;
    /* in memory: the per-bucket filters (NULL with LTR_OPEN_NO_FILTERS) */
    uint32_t *foff;
    uint8_t *fbits;
    char *path;
    /* in memory: the overflow index */
    uint64_t *ovf_h2;
    uint64_t *ovf_at;
    uint32_t *ovf_len;
    /* the rest of the footer, and what the cache and reopening need */
    uint32_t seed, bloom_bits;
    uint64_t items, tombstones, data_bytes, ovf_off, ovf_bytes;
    uint32_t records, built_cached;
    uint32_t flags;
    uint32_t slot;    /* place in the cache's ring (its lock), or FC_NO_SLOT */
    uint64_t file_bytes; /* the table's bytes (all of its file, or its extent's length) */
    uint64_t base;       /* where in the file the table starts: 0, or its extent's offset */
    uint8_t fd_shared;   /* an extent's descriptor: the caller's, never closed here */
    uint64_t dev, ino; /* of the file, checked when it is reopened */
    uint64_t stats[ST_N];
    blob_ref *blobs;  /* the value logs its pointers lead to (format version 2), by file */
    uint32_t nblobs;
    void *meta;       /* the one block holding the arrays above (carve_arrays) */
} __attribute__((aligned(64)));
_Static_assert(offsetof(struct ltr_htable, ovf_h2) <= 128, "a lookup's fields fit two lines");

/* Brings a table's lookup fields and the HashMark records near bucket k into cache: the first
 * call (hdr) one lookup ahead of the second (records), which reads what the first fetched. */
static inline void htable_prefetch_hdr(const struct ltr_htable *t)
{
    __builtin_prefetch(t);
    __builtin_prefetch((const char *)t + 64);
}

static inline void htable_prefetch_records(const struct ltr_htable *t)
{
    if (t->ncached)
        __builtin_prefetch(t->rec_src + t->ncached / 2);
}

/* A buffer aligned to IO_DIRECT_ALIGN that grows on demand (its bytes are not kept). */
typedef struct abuf {
    uint8_t *data;
    size_t cap;
} abuf;

int abuf_reserve(abuf *b, size_t n);
void abuf_free(abuf *b);

/* What a lookup with read_ctx.defer set returns when it must read a table: not a failure (a
 * batch's first pass leaves such keys to its threads, store_batch.c); never returned to callers
 * of the library. */
#define LTR_EDEFER (-1000)

/* Scratch space of one lookup or scan: a page buffer for pread, room for overflow records and
 * counters, added to the shared ones once per call (atomics per key would make the threads of
 * one batch fight over a cache line). Both buffers are aligned for direct reads. */
typedef struct read_ctx {
    uint8_t *page;     /* LTR_BUCKET_SIZE bytes, aligned to it */
    int own_page;      /* page is allocated by read_ctx_init (else the caller's) */
    abuf span;         /* overflow records (a direct table's: the blocks covering them) */
    ltr_buf scratch;   /* for other readers' use (a BloomCluster's unit copied out) */
    int defer;         /* a read of a table (not of a mapping) stops the lookup: LTR_EDEFER */
    uint64_t stats[ST_N];
    uint64_t hits[LTR_MAX_LEVELS], hit_reads[LTR_MAX_LEVELS]; /* store lookups, by level */
} read_ctx;

int read_ctx_init(read_ctx *c);
/* The same with the caller's page (LTR_BUCKET_SIZE bytes aligned to LTR_BUCKET_SIZE, which
 * direct reads need), e.g. on the stack: no allocation. */
void read_ctx_init_page(read_ctx *c, uint8_t *page);
void read_ctx_free(read_ctx *c);
/* Opens a table whose descriptor joins fc (NULL: kept open, as ltr_htable_open does). */
int htable_open_in(const char *path, uint32_t flags, int32_t max_cached, struct fcache *fc,
                   ltr_htable **out);
/* pread on the table's file, reopened first when its cache closed it. A table opened with
 * LTR_OPEN_DIRECT reads whole aligned blocks: p, n and off multiples of IO_DIRECT_ALIGN, inside
 * the file (table_read_range takes any range). */
int table_pread(ltr_htable *t, void *p, size_t n, uint64_t off);
/* Bytes [off, off + n) of the table read into b (grown as needed), and *p at byte off: for a
 * table opened with LTR_OPEN_DIRECT, the span of whole blocks covering them. */
int table_read_range(ltr_htable *t, abuf *b, uint64_t off, size_t n, uint8_t **p);
/* For a table opened with LTR_OPEN_DIRECT, a second descriptor reading through the page cache
 * (the caller closes it); -1 for others, which table_pread reads through the cache already:
 * for a reader of many ranges of one table (a streamed compaction's input). */
int table_open_cached(const ltr_htable *t, int *fd);
/* Returns the checked page of bucket k (pointing into the map or c->page), or NULL and *rc. */
const uint8_t *table_bucket(ltr_htable *t, read_ctx *c, uint32_t k, bucket_footer *f, int *rc);
/* Calls fn for each item of the scan not yet returned, bucket by bucket, then the overflow
 * area (no copies: `it` points into the scan's buffers, valid during the call); stops at the
 * first non-zero return of fn and returns it. */
int scan_each(ltr_scan *s, int (*fn)(void *ctx, const item_view *it), void *ctx);
/* One key with a known hash: LTR_FOUND, LTR_DELETED or LTR_ABSENT, or <0. *it stays valid until
 * the next read with c. Counts go to c->stats. */
int htable_lookup(ltr_htable *t, read_ctx *c, key_hash h, const uint8_t *key, uint32_t klen,
                  item_view *it);
/* The same after the filter said maybe (or without filters): ST_LOOKUPS is not counted. */
int htable_probe(ltr_htable *t, read_ctx *c, key_hash h, const uint8_t *key, uint32_t klen,
                 item_view *it);
/* The in-memory filter of bucket b (tables opened with their filters only). */
int htable_filter(const ltr_htable *t, uint32_t b, const uint8_t **f, size_t *len);
int htable_has_filters(const ltr_htable *t);
/* Empties a batch of scanned items; appends one item (copied) to it. */
int items_reset(ltr_items *o);
int items_push(ltr_items *o, const item_view *it);
/* Reads and checks overflow record j; *it points into the map or c->scratch. */
int table_overflow_item(ltr_htable *t, read_ctx *c, uint32_t j, item_view *it);
/* Checks overflow record j, whose bytes are at rec; *it points into them. */
int table_overflow_check(const ltr_htable *t, uint32_t j, const uint8_t *rec, item_view *it);

#endif
