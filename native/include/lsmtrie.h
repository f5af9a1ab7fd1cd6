/* lsmtrie.h: the C API of the lsmtrie store, and what every part of the API shares (status
 * codes, limits, errors, buffers). The HTable component has its own header (lsmtrie_htable.h),
 * and tests and benchmarks theirs (lsmtrie_testing.h).
 *
 * Conventions (they hold for every function of the three headers):
 * - Every fallible call returns an int status: LTR_OK (0) or one negative LTR_E* code. A
 *   human-readable detail of the last failure in the calling thread is ltr_last_error().
 * - Results come back through out-parameters. Keys and values are (pointer, length) pairs; batches
 *   are packed: one data buffer plus n+1 int64 offsets, item i being data[off[i], off[i+1]).
 * - Handles are opaque. An ltr_store may be used from many threads at once; an ltr_sscan and
 *   an ltr_batch belong to one thread at a time.
 * - The core never calls back into Python and never touches Python objects; cffi releases the GIL
 *   around every call.
 * - Buffers the core allocates for the caller (ltr_buf, ltr_items) are freed with their _free call.
 */
#ifndef LSMTRIE_H
#define LSMTRIE_H

#include <stddef.h>
#include <stdint.h>

/* Option defaults that are not integers (cffi reads only integer #defines; Python takes them
 * from ltr_table_opts_default and ltr_store_opts_default). */
#define LTR_DEFAULT_FILL 0.95        /* fraction of a table's bucket payload it accepts */
#define LTR_DEFAULT_GC_THRESHOLD 0.5 /* last-level garbage ratio that triggers its GC */

#ifdef __cplusplus
extern "C" {
#endif

/* Everything declared between the cdef markers is the library's API: exported from the library
 * (which is built with -fvisibility=hidden, so that nothing else is) and fed verbatim to cffi,
 * so it holds only typedefs, prototypes and integer #defines. */
#pragma GCC visibility push(default)
/* cdef-begin */

/* Status codes. */
#define LTR_OK 0
#define LTR_EINVAL -1    /* bad argument (caller error) */
#define LTR_ENOMEM -2    /* out of memory */
#define LTR_EIO -3       /* operating-system I/O error */
#define LTR_ECORRUPT -4  /* checksum or structure check failed */
#define LTR_ENOSPC -5    /* the device is full */
#define LTR_ETOOBIG -6   /* key or value over the size limit */
#define LTR_EVERSION -7  /* file written by an unknown format version */
#define LTR_EAGAIN -8    /* output buffer too small; the needed size was reported */
#define LTR_ELOCKED -9   /* another process holds the store's writer lock */
#define LTR_EREADONLY -10 /* the store was opened read-only */

/* Limits and geometry (docs/format/htable.md). */
#define LTR_BUCKET_SIZE 4096
#define LTR_BUCKET_PAYLOAD 4080
#define LTR_MAX_KEY 65535
#define LTR_MAX_VALUE 16777216
#define LTR_MAX_BUCKETS 65535
#define LTR_TRIE_LEVELS 12

/* Answers of a lookup. */
#define LTR_ABSENT 0
#define LTR_FOUND 1
#define LTR_DELETED 2

const char *ltr_version(void);
const char *ltr_strerror(int rc);
const char *ltr_last_error(void);
int ltr_last_errno(void); /* errno behind the last LTR_EIO/LTR_ENOSPC in this thread, else 0 */

/* Option defaults, named once: the C defaults functions and the Python API read these (and
 * LTR_DEFAULT_FILL, LTR_DEFAULT_GC_THRESHOLD above, which cffi cannot read). */
#define LTR_DEFAULT_BUCKETS 8191    /* a table of 8191 buckets: 32 MB */
#define LTR_DEFAULT_BLOOM_BITS 16   /* filter bits per key */
#define LTR_DEFAULT_MAX_CACHED 2048 /* migration records a reader keeps in memory */
#define LTR_DEFAULT_MIN_BLOB_SIZE 4096 /* values this large go to value logs: what cannot share
                                          a bucket (docs/design.md "Value logs") */
#define LTR_MIN_BLOB_SIZE_LEAST 32   /* the least min_blob_size other than 0 */

/* ---- buffers the core fills for the caller ---- */

typedef struct ltr_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
} ltr_buf;

void ltr_buf_free(ltr_buf *b);

typedef struct ltr_items {
    ltr_buf keys;
    ltr_buf values;
    ltr_buf koffs;   /* int64[n+1] */
    ltr_buf voffs;   /* int64[n+1] */
    ltr_buf deleted; /* uint8[n] */
    size_t n;
} ltr_items;

void ltr_items_free(ltr_items *it);

/* ---- the store (docs/design.md) ---- */

#define LTR_MAX_LEVELS 12
#define LTR_DEFAULT_LEVELS 0 /* the trie grows with the data */
#define LTR_DEFAULT_NODE_TABLES 8

/* Bits of ltr_store_opts.given: which options the caller chose. On reopen a chosen option must
 * equal the recorded one; the others are taken from the store. */
#define LTR_OPT_TABLE_BUCKETS 1
#define LTR_OPT_FILL 2
#define LTR_OPT_LEVELS 4
#define LTR_OPT_NODE_TABLES 8
#define LTR_OPT_BLOOM_BITS 16
#define LTR_OPT_MEMTABLE_BYTES 32
#define LTR_OPT_HASH_SEED 64
#define LTR_OPT_GC_THRESHOLD 128
#define LTR_OPT_VALUE_FORMAT 256

/* What a store's values are (ltr_store_opts.value_format), recorded for the tools that read
 * them: the store itself never looks inside a value. */
#define LTR_VALUE_RAW 0       /* the bytes the caller wrote */
#define LTR_VALUE_MEMCACHED 1 /* a memcached item: its 32-bit flags (little-endian), then its
                                 data (`lsmtrie serve`, docs/format/manifest.md). A load
                                 (ltr_load_add) into such a store adds data: each value is
                                 stored with flags 0 */
#define LTR_MEMCACHED_FLAGS_BYTES 4

typedef struct ltr_store_opts {
    uint32_t given;              /* LTR_OPT_* bits */
    uint32_t table_buckets;      /* default LTR_DEFAULT_BUCKETS */
    double fill;                 /* default LTR_DEFAULT_FILL */
    uint32_t levels;             /* trie levels, the last one grows by appending; 0 (the
                                    default): as many as the data needs, deepened as it grows */
    uint32_t node_tables;        /* tables a node holds before it is compacted; default
                                    LTR_DEFAULT_NODE_TABLES */
    uint32_t bloom_bits_per_key; /* default LTR_DEFAULT_BLOOM_BITS */
    uint64_t memtable_bytes;     /* encoded item bytes per memtable; default: one table's worth */
    uint32_t hash_seed;          /* default: drawn at random when the store is created */
    double gc_threshold;         /* last-level garbage ratio that triggers its GC; default
                                    LTR_DEFAULT_GC_THRESHOLD */
    uint32_t value_format;       /* LTR_VALUE_*; default LTR_VALUE_RAW */
    int create;                  /* create the store when it does not exist */
    int read_only;               /* open for reading only; takes no lock */
    int sync;                    /* default durability of writes: fdatasync before returning */
    int use_log;                 /* 0: bulk mode, no write-ahead log (durable at flush/close) */
    double checkpoint_interval;  /* seconds between checkpoints of the state; default 1 (not
                                    recorded: a property of this open) */
    const char *metadata_path;   /* directory for BloomClusters; NULL keeps them in the store */
    uint64_t working_memory;     /* bytes the store's working memory may take: memtables and
                                    the buffers of flushes and compactions (docs/design.md,
                                    "Memory"); 0 (default): memtable_bytes memtables and two
                                    compactions at once. Not recorded */
    int64_t max_open_files;      /* table files kept open at once: 0 (default) the soft
                                    RLIMIT_NOFILE less a quarter of it (at least 64 less, at
                                    least 16 left), -1 no bound (not recorded) */
    int direct_io;               /* read table files with O_DIRECT into aligned buffers,
                                    bypassing the page cache (BloomClusters stay mapped);
                                    batched gets then keep LTR_BATCH_READ_DEPTH reads in
                                    flight. A file system that refuses O_DIRECT fails the open
                                    (LTR_EINVAL). Default 0 (not recorded: a property of this
                                    open) */
    uint32_t min_blob_size;      /* values of at least this many bytes are kept in value logs
                                    apart from the tables (docs/design.md "Value logs"); 0:
                                    none. Default LTR_DEFAULT_MIN_BLOB_SIZE (not recorded: a
                                    property of this open; every store reads both kinds) */
} ltr_store_opts;

/* Reads a batched get keeps in flight with direct_io: as many threads, each waiting for one. */
#define LTR_BATCH_READ_DEPTH 32

typedef struct ltr_store_stats {
    uint64_t user_bytes_written;   /* key + value bytes handed to writes */
    uint64_t bytes_written;        /* every byte the store wrote */
    uint64_t written_log;
    uint64_t written_flush;
    uint64_t written_compaction[LTR_MAX_LEVELS]; /* by the level written to */
    uint64_t written_clusters;
    uint64_t written_gc;           /* last-level garbage collection */
    uint64_t written_manifest;
    uint64_t written_load;         /* the bulk loader's partitions and tables */
    uint64_t written_blobs;        /* value logs: values of at least min_blob_size bytes */
    uint64_t blob_files;           /* value logs on disk now, and their bytes */
    uint64_t blob_bytes;
    uint64_t blob_live_bytes;      /* ... of them not known dead: the value-log GC counts the
                                      records overwritten or deleted since the open, and
                                      estimates those of the files the open found by sampling */
    uint64_t blob_files_open;      /* value logs with descriptors open now */
    uint64_t blob_gc_moved;        /* value logs whose live records the GC moved (since open) */
    uint64_t blob_gc_damaged;      /* value logs the GC left alone: a record it read was damaged
                                      (since open; the file stays while a table lists it) */
    uint64_t tables_per_level[LTR_MAX_LEVELS];
    uint64_t items_per_level[LTR_MAX_LEVELS];
    uint64_t table_bytes_per_level[LTR_MAX_LEVELS];
    uint64_t memtable_items;
    uint64_t metadata_memory_bytes; /* filters, cached migration records, overflow indexes */
    uint64_t gets;
    uint64_t bucket_reads;
    uint64_t cluster_reads;
    uint64_t filter_false_positives;
    uint64_t batches_deepened;     /* batches of 512 keys or more of a buffered store that
                                      waited for the device (pages not in the page cache) and
                                      went on up to LTR_BATCH_READ_DEPTH threads */
    uint64_t hits_per_level[LTR_MAX_LEVELS];       /* gets answered (value or tombstone) there */
    uint64_t hit_reads_per_level[LTR_MAX_LEVELS];  /* bucket and cluster reads those gets took */
    uint64_t flushes;
    uint64_t compactions;
    uint64_t gcs;
    uint64_t write_stalls;
    uint64_t checkpoints;          /* checkpoints that synced files or wrote an edit (since open) */
    double checkpoint_seconds;     /* the time they took */
    uint64_t files_reused;         /* table files reused for new tables (since open) */
    uint64_t files_reused_durable; /* of those, files that a checkpoint had named */
    uint64_t table_files_open;     /* table descriptors open now */
    uint64_t table_file_reopens;   /* tables reopened after max_open_files closed them */
    uint32_t levels;               /* levels in use (a growing trie's depth now) */
    uint32_t load_unfinished;      /* an unfinished load's journal is in the store (--resume) */
} ltr_store_stats;

typedef struct ltr_store ltr_store;
typedef struct ltr_sscan ltr_sscan;

void ltr_store_opts_default(ltr_store_opts *o);
int ltr_store_open(const char *path, const ltr_store_opts *o, ltr_store **out);
/* The effective options (recorded ones after a reopen). */
void ltr_store_options(const ltr_store *s, ltr_store_opts *out);
/* Applies a batch atomically (one log record). sync: 1 yes, 0 no, -1 the store's default. */
int ltr_store_write(ltr_store *s, const uint8_t *kdata, const int64_t *koffs, size_t klen_total,
                    const uint8_t *vdata, const int64_t *voffs, size_t vlen_total,
                    const uint8_t *deleted, size_t n, int sync);
/* One key: the value's length when found (the value is copied to vbuf when it fits in vcap;
 * otherwise ask again with room for that many bytes), LTR_NONE when the key is absent or
 * deleted, or a negative LTR_E* code. One call and no out-parameters: the cost of a single get
 * from Python is mostly the call's. */
#define LTR_NONE -100
int64_t ltr_store_get(ltr_store *s, const uint8_t *key, size_t klen, uint8_t *vbuf, size_t vcap);
int ltr_store_get_many(ltr_store *s, const uint8_t *kdata, const int64_t *koffs,
                       size_t klen_total, size_t n, int8_t *status, int64_t *voffs,
                       ltr_buf *values);
/* A batch get whose answers come in segments, in key order, while two threads look the keys
 * up (up to LTR_BATCH_READ_DEPTH with direct_io, or once a read waited for the device:
 * store_batch.c): for callers that make objects of the values, which can then overlap the
 * lookups. status[i] is set as by ltr_store_get_many; kdata, koffs and status must stay valid
 * until ltr_batch_free. */
typedef struct ltr_batch ltr_batch;
int ltr_store_batch_start(ltr_store *s, const uint8_t *kdata, const int64_t *koffs,
                          size_t klen_total, size_t n, int8_t *status, ltr_batch **out);
/* Waits for the next segment (or looks it up on the caller's thread when the batch could
 * start no thread): keys [*lo, *hi), their found values in *values with ends
 * *voffs (*hi - *lo + 1 entries, from 0), valid until the next call. At the end *lo == *hi == n.
 * A failed lookup's error is returned when its segment's turn comes. */
int ltr_batch_next(ltr_batch *b, size_t *lo, size_t *hi, const uint8_t **values,
                   const int64_t **voffs);
/* Stops the lookups not yet started, waits for the threads, frees the batch. */
void ltr_batch_free(ltr_batch *b);
/* Writes the memtables out and waits until no flush or compaction is pending. */
int ltr_store_flush(ltr_store *s);
void ltr_store_stats_get(ltr_store *s, ltr_store_stats *out);
/* Stops the background work, makes every acknowledged write durable, frees the handle (also
 * when it reports an error). */
int ltr_store_close(ltr_store *s);
/* Live items, newest version of each key, no tombstones, as of the call. */
int ltr_store_scan_new(ltr_store *s, ltr_sscan **out);
int ltr_store_scan_next(ltr_sscan *sc, size_t max_items, ltr_items *out);
void ltr_store_scan_free(ltr_sscan *sc);

/* Verification: every table and BloomCluster of the store as of the call (a pinned version:
 * writes and compactions go on meanwhile) read whole with every check the formats have (each
 * table file opened afresh, so its footer and trailer are read again), and each item's key
 * hashed to check it lies in its node. A damaged file does not stop it: report
 * gets a line per damaged file (cut to fit cap bytes, NUL-terminated) and the call returns
 * LTR_ECORRUPT with bad_files set. Other failures (I/O, memory) stop it with their status. */
typedef struct ltr_verify_stats {
    uint64_t tables;        /* tables read whole and found sound */
    uint64_t items;         /* their items, shadowed versions and tombstones included */
    uint64_t table_bytes;   /* their file bytes */
    uint64_t clusters;      /* BloomClusters read whole and found sound */
    uint64_t cluster_bytes; /* their unit bytes */
    uint64_t bad_files;     /* tables and clusters that failed a check */
} ltr_verify_stats;
int ltr_store_verify(ltr_store *s, ltr_verify_stats *out, char *report, size_t cap);

/* ---- bulk loading (docs/design.md "The loader") ----
 * A load partitions its items by hash prefix, builds each trie node's tables from its share,
 * and installs all of them in one manifest edit: until ltr_load_finish returns, the store
 * (and any reader) shows its state before the load; then all of the load at once. A later item
 * of a key replaces an earlier one, and the load's items replace what the store held. The
 * store must be open for writing; a write made while a load runs lands before or after it. */

typedef struct ltr_load_opts {
    uint64_t memory_bytes;   /* working memory; 0: 1 GiB */
    const char *tmp_dir;     /* where partitions spill; NULL: the store's load directory */
    uint64_t expected_bytes; /* encoded bytes expected (key + value + 2 to 8 each), 0: unknown;
                                sizes the partitions */
    const char *identity;    /* the caller's name for the load's arguments, recorded in its
                                journal: a resume must give the same (NULL: "") */
    int values_are_items;    /* into a store of memcached items: the values given already are
                                items (4 bytes of flags, then the data: a dump of such a
                                store) and are stored as they are; 0: they are data, stored
                                with flags 0 */
} ltr_load_opts;

#define LTR_LOAD_ADDING 0
#define LTR_LOAD_BUILDING 1
#define LTR_LOAD_INSTALLING 2
#define LTR_LOAD_DONE 3

typedef struct ltr_load_stats {  /* every field a uint64_t (read with atomics while it runs) */
    uint64_t phase;              /* LTR_LOAD_* */
    uint64_t items_added;        /* items handed to ltr_load_add */
    uint64_t items_loaded;       /* items in the tables written */
    uint64_t duplicates;         /* items replaced by a later one of the same key */
    uint64_t user_bytes;         /* their keys and values */
    uint64_t spill_bytes;        /* written to partitions on disk */
    uint64_t table_bytes;        /* tables written */
    uint64_t tables;
    uint64_t partitions, partitions_built;
    uint64_t target_level;       /* the level the tables went to */
} ltr_load_stats;

typedef struct ltr_load ltr_load;

/* Options for a new store that is to receive about expected_bytes (encoded) in expected_items
 * items (0: unknown) in one load: the levels and table size that put most of the items in the
 * last level, one table a node (sets o->levels, o->table_buckets and their `given` bits). */
void ltr_load_plan_options(uint64_t expected_bytes, uint64_t expected_items, ltr_store_opts *o);
/* Starts a load (removing what an unfinished earlier one left). */
int ltr_load_begin(ltr_store *s, const ltr_load_opts *o, ltr_load **out);
/* Takes up the unfinished load whose journal is in the store (o->identity must match it):
 * its phase is in its stats; while LTR_LOAD_ADDING, the caller adds again from the position of
 * its last checkpoint (ltr_load_position); then ltr_load_finish. LTR_EINVAL when there is no
 * such load or it was started with another identity. */
int ltr_load_resume(ltr_store *s, const ltr_load_opts *o, ltr_load **out);
/* Makes everything added so far durable, with the caller's input position (any bytes) that a
 * resume starts again from: the items added after it are added again. Only while adding. */
int ltr_load_checkpoint(ltr_load *l, const uint8_t *position, size_t len);
/* The position of the last checkpoint (empty before any). */
int ltr_load_position(const ltr_load *l, ltr_buf *out);
/* Adds a packed batch (keys and values as for ltr_store_write, no deletions). In a store of
 * memcached items (LTR_VALUE_MEMCACHED) each value is stored after 4 bytes of flags 0, unless
 * the load's values_are_items (then a value shorter than its flags is refused). */
int ltr_load_add(ltr_load *l, const uint8_t *kdata, const int64_t *koffs, size_t klen_total,
                 const uint8_t *vdata, const int64_t *voffs, size_t vlen_total, size_t n);
/* Builds the tables on two threads and installs them. On failure the store is as before. */
int ltr_load_finish(ltr_load *l);
/* The load's counters, from any thread while it runs. */
void ltr_load_stats_get(const ltr_load *l, ltr_load_stats *out);
/* Frees the handle. An unfinished load's files stay in the store for a resume (its journal,
 * from its first checkpoint on) or for the next load to remove. */
void ltr_load_free(ltr_load *l);
/* Frees the handle and removes everything an unfinished load wrote: the store is as before it. */
void ltr_load_abort(ltr_load *l);

/* cdef-end */
#pragma GCC visibility pop

#ifdef __cplusplus
}
#endif
#endif /* LSMTRIE_H */
