/* lsmtrie_testing.h: hooks for the test suite and the benchmarks: fault injection, limits
 * and policies made small, counters made large, one CRC32C implementation by name, and the
 * read floor a benchmark compares lookups with. Not for applications: most hooks are
 * process-wide. */
#ifndef LSMTRIE_TESTING_H
#define LSMTRIE_TESTING_H

#include "lsmtrie_htable.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Everything declared between the cdef markers is the library's API: exported from the library
 * (which is built with -fvisibility=hidden, so that nothing else is) and fed verbatim to cffi,
 * so it holds only typedefs, prototypes and integer #defines. */
#pragma GCC visibility push(default)
/* cdef-begin */

/* For tests: one implementation of CRC32C by name, so that each is checked on any CPU.
 * ltr_crc32c_impls() is a bit mask of those this CPU can run (1 << LTR_CRC_SOFT always);
 * ltr_crc32c_using returns -1 for one it cannot, else 0 with the CRC in *out. */
#define LTR_CRC_SOFT 0 /* slicing-by-8 tables, the fallback */
#define LTR_CRC_HW 1   /* the SSE4.2 crc32 instruction, three streams (ltr_crc32c's choice) */
int ltr_crc32c_impls(void);
int ltr_crc32c_using(int impl, uint32_t crc, const uint8_t *data, size_t len, uint32_t *out);


/* ---- benchmark reference ---- */

/* Benchmark reference, the floor under a batched lookup: n reads of random buckets of the
 * current version's tables, each read and checked as a lookup reads it (pread and CRC32C), on
 * `threads` threads (1 to 8). *seconds gets the wall time, *cpu_seconds the threads' CPU time.
 * Not counted in the statistics. */
int ltr_store_read_floor(ltr_store *s, uint64_t n, uint32_t threads, uint64_t seed,
                         double *seconds, double *cpu_seconds);
/* Benchmark reference, single gets without the Python call: ltr_store_get of each of the n keys
 * (kdata, koffs as for ltr_store_get_many) in turn on the caller's thread, values copied into a
 * 4 KB buffer (longer ones only measured). Returns how many were found, or an error. */
int64_t ltr_store_get_each(ltr_store *s, const uint8_t *kdata, const int64_t *koffs, size_t n);
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
 * cleared with err = 0; a negative err fails only the next one, with errno -err. Process-wide. */
void ltr_fault_set(int op, int64_t after, int err);
/* While on, every open with O_DIRECT fails with EINVAL, as on a file system without direct
 * I/O (tmpfs before Linux 6.6): direct_io's refusal, testable on any file system. Process-wide. */
void ltr_test_refuse_direct(int on);
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
/* At most n threads for a batch get (which takes 2, or with direct_io LTR_BATCH_READ_DEPTH, of
 * its store's pool); 0: the caller's thread looks each segment up as it asks for it, as when no
 * thread can start; negative restores the default. Process-wide. */
void ltr_test_batch_threads(int n);
/* While on, every segment a buffered store's batch looks up counts as having waited for the
 * device, as pages missing from the page cache do, and every batch starts on its two threads: so
 * each batch deepens, adding threads up to LTR_BATCH_READ_DEPTH (store_batch.c). Process-wide. */
void ltr_test_batch_device(int on);
/* The runs that deepened batches have added to the pool since the process started. */
uint64_t ltr_test_batch_deepen_runs(void);
/* A compaction streams its inputs and outputs this many buckets at a time (at least 1);
 * 0: it stages whole tables instead (as garbage collection does); negative restores the
 * default (COMPACTION_WINDOW, 256). Process-wide. */
void ltr_test_compaction_window(int64_t buckets);
/* While on, no worker starts work on the last level (cluster builds, garbage collection); work
 * already noted waits, and flush() does not wait for it. Process-wide. */
void ltr_test_hold_last_level(int on);
/* A log is rotated at `rotate_bytes` (or 32 memtables, if less), and writers wait while the logs
 * on disk hold more than `disk_bytes`; negative values restore the defaults (64 MiB, 2 GiB).
 * Process-wide. */
void ltr_test_log_limits(int64_t rotate_bytes, int64_t disk_bytes);

/* The size past which a value log is closed and the next one started (0: the default,
 * BLOB_FILE_BYTES), so that tests see value logs come and go. */
void ltr_test_blob_file_bytes(uint64_t bytes);
/* Value-log descriptors a store opened from now on keeps open at once (0: the default, a
 * sixteenth of the limit on open files), so that tests see them closed and reopened. */
void ltr_test_blob_max_open(uint32_t n);
/* 0: the value-log garbage collection does not run (so that tests can read value logs holding
 * exactly the writes made); 1 (the default): it does. Process-wide. */
void ltr_test_blob_gc(int on);
/* The next n reads of a value by its pointer find its value log collected (as when the GC
 * removed it while a lookup held the pointer), so that tests see lookups start again; 0 (the
 * default) stops it. Process-wide. */
void ltr_test_blob_moved_reads(int n);
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
    uint64_t clusters_skipping; /* of those, clusters past entries of tables compacted away */
    uint64_t depth;             /* the last SET_DEPTH (0: none: a store of fixed levels) */
    uint64_t next_file, log_floor, log_offset;
    uint64_t counters[32];   /* the last COUNTERS op's values, */
    uint32_t ncounters;      /* how many it held */
    uint32_t levels;
} ltr_manifest_summary;
int ltr_test_manifest_read(const char *dir, ltr_manifest_summary *out);

/* cdef-end */
#pragma GCC visibility pop

#ifdef __cplusplus
}
#endif
#endif /* LSMTRIE_TESTING_H */
