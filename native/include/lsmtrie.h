/* lsmtrie.h: the public C API of the lsmtrie core.
 *
 * Conventions (they hold for every function below):
 * - Every fallible call returns an int status: LTR_OK (0) or one negative LTR_E* code. A
 *   human-readable detail of the last failure in the calling thread is ltr_last_error().
 * - Results come back through out-parameters. Keys and values are (pointer, length) pairs; batches
 *   are packed: one data buffer plus n+1 int64 offsets, item i being data[off[i], off[i+1]).
 * - Handles are opaque. An ltr_htable (reader) may be used from many threads at once; an
 *   ltr_hbuild (builder) and an ltr_scan belong to one thread at a time.
 * - The core never calls back into Python and never touches Python objects; cffi releases the GIL
 *   around every call.
 * - Buffers the core allocates for the caller (ltr_buf, ltr_items) are freed with their _free call.
 *
 * The region between the cdef markers is fed verbatim to cffi, so it holds only typedefs,
 * prototypes and integer #defines.
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
/* For tests: one implementation of CRC32C by name, so that each is checked on any CPU.
 * ltr_crc32c_impls() is a bit mask of those this CPU can run (1 << LTR_CRC_SOFT always);
 * ltr_crc32c_using returns -1 for one it cannot, else 0 with the CRC in *out. */
#define LTR_CRC_SOFT 0 /* slicing-by-8 tables, the fallback */
#define LTR_CRC_HW 1   /* the SSE4.2 crc32 instruction, three streams (ltr_crc32c's choice) */
int ltr_crc32c_impls(void);
int ltr_crc32c_using(int impl, uint32_t crc, const uint8_t *data, size_t len, uint32_t *out);

/* ---- HTable builder (docs/format/htable.md) ---- */

/* Option defaults, named once: the C defaults functions and the Python API read these. */
#define LTR_DEFAULT_BUCKETS 8191    /* a 32 MB table */
#define LTR_DEFAULT_BLOOM_BITS 16   /* filter bits per key: about 0.05% false positives */
#define LTR_DEFAULT_MAX_CACHED 2048 /* migration records a reader keeps in memory */

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

typedef struct ltr_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
} ltr_buf;

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
void ltr_buf_free(ltr_buf *b);

/* ---- full scan ---- */

typedef struct ltr_items {
    ltr_buf keys;
    ltr_buf values;
    ltr_buf koffs;   /* int64[n+1] */
    ltr_buf voffs;   /* int64[n+1] */
    ltr_buf deleted; /* uint8[n] */
    size_t n;
} ltr_items;

typedef struct ltr_scan ltr_scan;

int ltr_scan_new(ltr_htable *t, ltr_scan **out);
/* Fills out with the next items (replacing its previous content): about max_items, whole buckets
 * at a time, so up to one bucket more; out->n == 0 at the end.
 * The table must outlive the scan. */
int ltr_scan_next(ltr_scan *s, size_t max_items, ltr_items *out);
void ltr_scan_free(ltr_scan *s);
void ltr_items_free(ltr_items *it);

/* ---- the store (docs/design.md) ---- */

#define LTR_MAX_LEVELS 12
#define LTR_DEFAULT_LEVELS 5
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

typedef struct ltr_store_opts {
    uint32_t given;              /* LTR_OPT_* bits */
    uint32_t table_buckets;      /* default LTR_DEFAULT_BUCKETS */
    double fill;                 /* default LTR_DEFAULT_FILL */
    uint32_t levels;             /* trie levels, the last one grows by appending; default
                                    LTR_DEFAULT_LEVELS */
    uint32_t node_tables;        /* tables a node holds before it is compacted; default
                                    LTR_DEFAULT_NODE_TABLES */
    uint32_t bloom_bits_per_key; /* default LTR_DEFAULT_BLOOM_BITS */
    uint64_t memtable_bytes;     /* encoded item bytes per memtable; default: one table's worth */
    uint32_t hash_seed;          /* default: drawn at random when the store is created */
    double gc_threshold;         /* last-level garbage ratio that triggers its GC; default
                                    LTR_DEFAULT_GC_THRESHOLD */
    int create;                  /* create the store when it does not exist */
    int read_only;               /* open for reading only; takes no lock */
    int sync;                    /* default durability of writes: fdatasync before returning */
    int use_log;                 /* 0: bulk mode, no write-ahead log (durable at flush/close) */
    double checkpoint_interval;  /* seconds between checkpoints of the state; default 1 (not
                                    recorded: a property of this open) */
    const char *metadata_path;   /* directory for BloomClusters; NULL keeps them in the store */
    int64_t max_open_files;      /* table files kept open at once: 0 (default) the soft
                                    RLIMIT_NOFILE less a quarter of it (at least 64 less, at
                                    least 16 left), -1 no bound (not recorded) */
} ltr_store_opts;

typedef struct ltr_store_stats {
    uint64_t user_bytes_written;   /* key + value bytes handed to writes */
    uint64_t bytes_written;        /* every byte the store wrote */
    uint64_t written_log;
    uint64_t written_flush;
    uint64_t written_compaction[LTR_MAX_LEVELS]; /* by the level written to */
    uint64_t written_clusters;
    uint64_t written_gc;           /* last-level garbage collection */
    uint64_t written_manifest;
    uint64_t tables_per_level[LTR_MAX_LEVELS];
    uint64_t items_per_level[LTR_MAX_LEVELS];
    uint64_t table_bytes_per_level[LTR_MAX_LEVELS];
    uint64_t memtable_items;
    uint64_t metadata_memory_bytes; /* filters, cached migration records, overflow indexes */
    uint64_t gets;
    uint64_t bucket_reads;
    uint64_t cluster_reads;
    uint64_t filter_false_positives;
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
    uint32_t levels;
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
 * up (store_batch.c): for callers that make objects of the values, which can then overlap the
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
/* Benchmark reference, the floor under a batched lookup: n reads of random buckets of the
 * current version's tables, each read and checked as a lookup reads it (pread and CRC32C), on
 * `threads` threads (1 to 8). *seconds gets the wall time, *cpu_seconds the threads' CPU time.
 * Not counted in the statistics. */
int ltr_store_read_floor(ltr_store *s, uint64_t n, uint32_t threads, uint64_t seed,
                         double *seconds, double *cpu_seconds);
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

/* ---- fault injection, for tests only ---- */

#define LTR_FAULT_WRITE 1     /* write, pwrite */
#define LTR_FAULT_FSYNC 2     /* fsync, fdatasync, syncfs */
#define LTR_FAULT_OPEN 3      /* open of a file or a directory */
#define LTR_FAULT_RENAME 4
#define LTR_FAULT_UNLINK 5
#define LTR_FAULT_FTRUNCATE 6
#define LTR_FAULT_MKDIR 7
#define LTR_FAULT_PREAD 8

/* After `after` more successful operations of kind op, fail the next ones with errno err until
 * cleared with err = 0. Process-wide. */
void ltr_fault_set(int op, int64_t after, int err);
/* A manifest is replaced by a snapshot once it has grown past this many bytes (and four times
 * its snapshot); 0 restores the default, 1 MiB. Process-wide. */
void ltr_test_manifest_rotation(uint64_t min_bytes);
/* Background checkpoints wait `spacing` times the previous checkpoint's duration after it, and
 * start at once after `log_bytes` of log; negative values restore the defaults (4, 1 GiB).
 * Process-wide. */
void ltr_test_checkpoint_policy(double spacing, int64_t log_bytes);
/* A checkpoint someone waits for syncs whole filesystems (syncfs) from this many files on;
 * negative restores the default (1,024). Process-wide. */
void ltr_test_syncfs_min(int64_t files);
/* Threads a batch get starts (at most 2); 0: the caller's thread looks each segment up as it
 * asks for it, as when no thread can start; negative restores the default. Process-wide. */
void ltr_test_batch_threads(int n);
/* While on, no worker starts work on the last level (cluster builds, garbage collection); work
 * already noted waits, and flush() does not wait for it. Process-wide. */
void ltr_test_hold_last_level(int on);
/* A log is rotated at `rotate_bytes` (or 32 memtables, if less), and writers wait while the logs
 * on disk hold more than `disk_bytes`; negative values restore the defaults (64 MiB, 2 GiB).
 * Process-wide. */
void ltr_test_log_limits(int64_t rotate_bytes, int64_t disk_bytes);
/* New logs place their first record at this byte offset (a hole before it), and replay starts
 * every log there: log offsets past 2^35 without writing 32 GiB. 0 (the default) is the real
 * format; a store written with an offset must be reopened with the same one. Process-wide. */
void ltr_test_log_base(uint64_t offset);
/* Adds `counter_base` to every persistent counter of the store (bytes written by kind, flushes,
 * ...) and raises its file counter to at least `next_file`: numbers near the top of their
 * ranges, persisted by the next checkpoint. */
void ltr_test_store_bump(ltr_store *s, uint64_t counter_base, uint64_t next_file);
/* The store's varint decoder (docs/format/htable.md "varint") over p[0, len): the bytes it
 * took, or 0 when they are no varint of a 64-bit value. */
size_t ltr_test_varint_decode(const uint8_t *p, size_t len, uint64_t *value);
/* What the manifest decoder makes of a store's manifest (CURRENT's), with no table opened. */
typedef struct ltr_manifest_summary {
    uint64_t tables_added, tables_removed, clusters_set;
    uint64_t next_file, log_floor, log_offset;
    uint64_t counters[32];   /* the last COUNTERS op's values, */
    uint32_t ncounters;      /* how many it held */
    uint32_t levels;
} ltr_manifest_summary;
int ltr_test_manifest_read(const char *dir, ltr_manifest_summary *out);

/* cdef-end */

#ifdef __cplusplus
}
#endif
#endif /* LSMTRIE_H */
