/* store_int.h: the store's state and the calls its files make to one another.
 *
 * The store is split into files that each own one part of this state (docs/development.md
 * "Where things are"); each may call only the files listed before it here, so the calls form
 * a tree:
 *
 *   store_opts.c     options: defaults, checks, the options of the tables the store writes
 *   store_files.c    file names, opening and creating table files, delayed deletes (`files`)
 *   store_stats.c    counters and ltr_store_stats_get (`since_open`, `counters`)
 *   blob.c           the value logs: values kept apart from the tables (`blobs`)
 *   lastlevel_queue.c  last-level nodes awaiting upkeep (`llq`)
 *   memtable.c       the memtables (`mem`)
 *   store_read.c     lookups of one key and of a chunk of keys
 *   store_log.c      the write-ahead log and its group commit, the logs on disk (`log`)
 *   checkpoint.c     the durable state: manifest edits, fsyncs, releases (`ckpt`)
 *   store_flush.c    writing the oldest memtable as the root's newest table
 *   store_write.c    the write path: ltr_store_write, memtable and log rotation
 *   store_batch.c    batched lookups (ltr_store_get_many, streamed batches)
 *   store_scan.c, store_verify.c, read_floor.c   whole-store reads
 *   compaction.c     splitting a node into its children; last-level garbage collection
 *   blob_gc.c        value-log garbage collection: live records of a mostly dead value log moved
 *   lastlevel.c      BloomClusters and garbage checks of last-level nodes
 *   recovery.c       loading the manifest, replaying the logs, removing orphans
 *   store_bg.c       the background threads (`bg`): flusher, compaction workers, checkpointer
 *   store_open.c     ltr_store_open, ltr_store_flush, ltr_store_close
 *   load_journal.c   the bulk loader's journal (what --resume reads)
 *   load.c           the bulk loader: partitions, tables built per node, one install
 *
 * Lock order: write_mu, then ckpt.mu, then state_mu, then mem.lock, then ver_mu; log.sync_mu
 * and the walset's mutex (the logs on disk) are taken alone.
 * Readers search the memtables and pin the current version while holding mem.lock shared: a
 * flush installs its table in a new version before it takes its memtable out of the list, so a
 * reader sees the data in one or the other. They never hold a lock across table I/O. */
#ifndef LTR_STORE_INT_H
#define LTR_STORE_INT_H

#include <pthread.h>
#include <time.h>

#include "blobset.h"
#include "fcache.h"
#include "htable_build.h"
#include "htable_read.h"
#include "logfile.h"
#include "manifest.h"
#include "pool.h"
#include "taskpool.h"
#include "version.h"
#include "walset.h"

#define MAX_IMMUTABLE 1 /* memtables waiting to be flushed before writers stall */

/* The working memory's shape (docs/design.md, "Memory"): how large a memtable grows and how
 * compactions run, from the options (store_budget_plan). */
typedef struct store_budget {
    uint64_t memtable_bytes; /* item bytes a memtable takes before it is rotated */
    uint64_t memtable_items; /* items a memtable takes before it is rotated; 0: no bound */
    uint32_t window;         /* buckets a compaction holds of each input and output */
    uint32_t compactions;    /* compactions running at once: 1 or 2 */
} store_budget;
/* Compaction windows: the default, and the least a working_memory cap may shrink them to. */
#define COMPACTION_WINDOW 256
#define COMPACTION_WINDOW_MIN 16
#define POOL_BYTES (512u << 20) /* dead table files kept for reuse: about this much disk */
#define LOG_ROTATE_MAX (64u << 20) /* a log is rotated at this size (or 32 memtables) */
/* Writers wait while the logs on disk hold more than this (and some of them could go): the
 * bound on log space whatever the load (docs/design.md "Logs on disk"). Twice CKPT_LOG_BYTES,
 * so that a checkpoint started at CKPT_LOG_BYTES has as long again to finish. */
#define LOG_DISK_MAX (2ull << 30)
/* A memtable is rotated once the log written since it started holds this many times its size
 * (rewrites of the same keys grow the log, not the memtable, and a memtable holds the log floor
 * until it is flushed). */
#define MEMTABLE_LOG_SPAN 2
#define LOG_WRITEBACK_STEP (1u << 20) /* log writeback is started every this many bytes */
/* Store tables are read with pread: a mapping would count every page a compaction or a lookup
 * touched in the process's resident memory, and the page cache keeps them anyway. */
#define TABLE_FLAGS LTR_OPEN_PREAD
#define BATCH_THREADS 2 /* a batched get's threads when the store reads through the page cache */

#define CKPT_SECONDS 1.0 /* default checkpoint_interval */
/* A background checkpoint waits, after the previous checkpoint, this many times as long as that
 * one took: a busy store's upper-level tables live for seconds, and syncing all of them every
 * second kept the device busy with tables that died soon after (checkpoint.c). */
#define CKPT_SPACING 4.0
/* but starts at once when this much log was written since the last one started: that bounds
 * the logs kept on disk and their replay after a crash */
#define CKPT_LOG_BYTES (1ull << 30)

#define NO_NODE UINT64_MAX

/* The bulk loader's working directory in the store, and its journal there (load.c): the next
 * writer open leaves them alone; stats report an unfinished load. */
#define LOAD_DIR "load"
#define LOAD_JOURNAL LOAD_DIR "/JOURNAL" /* (load_journal_path) */

/* A file written since the last checkpoint, or dropped while the durable state names it. */
typedef struct pfile {
    uint64_t number;
    uint8_t cluster; /* a BloomCluster (.bc in cluster_dir), else a table (.ht) */
    uint8_t named;   /* a failed manifest append may have named it: never unlinked early */
    uint8_t pooled;  /* a dropped table whose file the pool may reuse (pool.h) */
    uint8_t failed;  /* its fsync failed: written again before the next one */
    tfile *tf;       /* a dropped table's hold on its file (version.h), or NULL */
} pfile;

typedef struct pfiles {
    pfile *v;
    size_t n, cap;
} pfiles;

typedef struct memtable {
    ltr_hbuild *b;
    uint64_t min_log;      /* its items are in the logs from here on: file number, */
    uint64_t min_off;      /* and the offset of its first record in that file */
    uint64_t log_mark;     /* the log's `logged` when it started */
    uint64_t blob_first;   /* its pointers lead to value logs numbered from here on */
    uint64_t blob_mark;    /* the value logs' `written` when it started */
    struct memtable *next; /* next older immutable memtable */
} memtable;

/* store_files.c: the store's files on disk, and the ones on their way out. */
struct store_files {
    tpool *pool;             /* table files for reuse (NULL: none) */
    fcache *fc;              /* bounds the open table files (NULL: max_open_files -1) */
    int dir_fd;              /* the store directory: readers hold flock(LOCK_SH) on it, and a
                                writer reuses a durable table's file only when it gets LOCK_EX */
    /* files out of the durable state, unlinked (or reused) after a grace period so that
     * read-only opens racing a compaction rarely miss a table they were about to open
     * (state_mu) */
    struct grave {
        char *path;
        double at;
        uint64_t pooled; /* a table file the pool may reuse (pool.h), else 0 */
        tfile *tf;       /* a table's hold on its file: unlinked when its readers are gone */
    } *grave;
    size_t ngrave, grave_cap;
};

/* store_stats.c: counters since the open, not persisted (atomics). */
struct store_since_open {
    uint64_t gets, bucket_reads, cluster_reads, false_positives, write_stalls, batches_deepened;
    uint64_t blob_gc_moved, blob_gc_damaged;
    uint64_t hits_per_level[LTR_MAX_LEVELS], hit_reads_per_level[LTR_MAX_LEVELS];
};

/* lastlevel_queue.c: last-level nodes that received tables and await their cluster and garbage
 * checks (state_mu). */
struct store_llq {
    uint64_t *nodes;
    size_t n, cap;
};

/* memtable.c: the active memtable and the immutable ones waiting for a flush. */
struct store_mem {
    pthread_rwlock_t lock;
    memtable *active;
    memtable *imm;           /* newest first */
    uint32_t nimm;
    store_budget budget;     /* what the working memory allows (store_opts.c) */
};

/* blob.c: the value logs (blobset.h): a writer's appends under write_mu; the floors under
 * state_mu. */
#define BLOB_FILE_BYTES (256ull << 20) /* a value log is closed once past this size */
/* A memtable is rotated once this much value log was written since it started: recovery reads
 * back (to check them) the records the logs it replays point to (docs/design.md "Value logs"). */
#define BLOB_MEMTABLE_SPAN (1ull << 30)
struct store_blobs {
    blobset *set;            /* NULL: no value logs (a read-only store without any, say) */
    ltr_buf enc;             /* the records of the batch being written */
    ltr_buf vals;            /* its values, pointers in place of the large ones */
    ltr_buf offs;            /* their ends (int64, n + 1) */
    ltr_buf kinds;           /* each item's kind (uint8, bucket.h) */
    uint64_t written;        /* value-log bytes written since the open (atomic) */
    int replaying;           /* recovery's memtables may point anywhere (blob_first 0) */
    uint64_t seen;           /* the largest value-log number found at open */
    uint64_t floor;          /* the value logs the memtables may point into start here */
    uint64_t durable_floor;  /* ... of the memtables of the durable log floor: lower ones are
                                removed once no table file lists them */
    uint64_t gc_file, gc_off; /* the value-log GC's file and where it goes on (its worker) */
    int collect_asked;       /* a relocated value log waits for a pass (state_mu): the
                                checkpointer runs one at once (store_collect_values) */
    int gc_blocked;          /* the GC writes nothing meanwhile (write_mu): blob_gc_block */
    int behind;              /* the GC is behind: writers of large values wait (blob_gc_due) */
    int gc_waiting;          /* the GC waits for write_mu: writers let it in first */
    uint64_t looked_at;      /* `written` when the GC last looked whether it is behind: a
                                writer wakes the worker to look again a quarter file on */
};
/* The value-log GC moves the live records of a value log when less than this share of its first
 * records' bytes are their keys' newest versions (blob_gc.c). */
#define BLOB_GC_RATIO 0.5

/* store_log.c: the write-ahead log (write_mu guards all but the group commit's fields). */
struct store_log {
    logw wal;
    uint64_t file;           /* the current log's number; 0: no log (bulk mode, read-only) */
    uint64_t base;           /* the offset of its first record (store_log_base) */
    uint64_t hinted;         /* its bytes whose writeback has been started */
    int resync;              /* an fsync of the log failed: write it again before the next */
    ltr_buf enc;             /* log payload being encoded */
    uint64_t logged;         /* log bytes written since the open */
    walset set;              /* the logs on disk (its own leaf lock) */
    int waiters;             /* writers waiting for log space: checkpoint now (atomic) */
    /* group commit: sync_mu guards the rest */
    pthread_mutex_t sync_mu;
    pthread_cond_t sync_cv;
    uint64_t synced_file, synced_upto;
    int syncing;
};

/* checkpoint.c: what the next checkpoint makes durable. mu is taken before state_mu and
 * guards mf and mf_broken; the rest is state_mu's. */
struct store_ckpt {
    pthread_mutex_t mu;      /* one checkpoint at a time */
    int waiters;             /* callers in store_checkpoint without CKPT_BACKGROUND (atomic) */
    manifest mf;
    int mf_broken;           /* an append failed: the file's tail is unknown until rewritten */
    ltr_buf pending;         /* ops of the edits installed since the last checkpoint */
    double pending_since;    /* when the oldest of them was installed; 0: none */
    pfiles unsynced;         /* files those edits added, not yet fsynced */
    int unsynced_lost;       /* one could not be recorded: the checkpoint syncs everything */
    pfiles doomed;           /* files dropped in memory that the durable state still names */
    double next;             /* no background checkpoint before this time (CKPT_SPACING) */
    uint64_t count;          /* checkpoints that did something, and their time (stats) */
    double seconds;
    uint64_t log_mark;       /* log bytes written when the last checkpoint started */
    uint64_t durable_floor;  /* the log floor of the manifest on disk */
};

/* store_bg.c: the background threads. The worker compacts (and flushes when there is no
 * flusher); the flusher only flushes, so a flush never waits behind a compaction. state_mu
 * guards the rest. */
struct store_bg {
    pthread_t workers[2], flusher, syncer;
    struct worker_arg {
        struct ltr_store *s;
        int id;
    } wargs[2];
    int nworkers, flusher_started, syncer_started;
    uint64_t compacting[2];  /* the node each worker compacts, or NO_NODE */
    uint64_t ll_node[2];     /* the last-level node each worker collects or clusters, or
                                NO_NODE: the other leaves its parent alone */
    int stopping;
    int busy;                /* workers running a job */
    int flushing;            /* the flusher runs a flush */
    int paused;              /* no new job starts (a load installs: store_bg_pause) */
    int error;               /* a background failure stops writes until flush() retries */
    int error_errno;
    char message[512];
};

struct ltr_store {
    char *dir;
    char *meta_dir;
    ltr_store_opts o;
    int lock_fd;             /* the writer's lock (store_open.c) */

    /* writers: write_cv wakes those waiting for an immutable slot or for log space */
    pthread_mutex_t write_mu;
    pthread_cond_t write_cv;

    /* the state: `current` in memory; the manifest holds it as of the last checkpoint */
    pthread_mutex_t ver_mu;  /* leaf lock: guards `current` for pinning (inside mem.lock too) */
    pthread_mutex_t state_mu;
    pthread_cond_t state_cv; /* wakes the background threads and flush() waiters */
    version *current;
    uint64_t next_file;
    uint64_t log_floor;      /* replay starts at this log, */
    uint64_t log_floor_off;  /* at this offset */
    uint64_t counters[C_COUNT]; /* updated with atomics, persisted with each edit */

    struct store_files files;
    struct store_blobs blobs;
    struct store_since_open since_open;
    struct store_llq llq;
    struct store_mem mem;
    struct store_log log;
    struct store_ckpt ckpt;
    struct store_bg bg;
    /* the threads of batched gets (store_batch.c), started when a batch first needs them: at
     * most LTR_BATCH_READ_DEPTH (made and freed by store_open.c); a store read through the page
     * cache uses BATCH_THREADS until a batch waits for the device */
    taskpool *batch_pool;
    int batch_deep; /* atomic: the last batch of a buffered store waited for the device */
};

/* The flags of the store's table opens: pread, and O_DIRECT with direct_io. */
static inline uint32_t store_table_flags(const ltr_store *s)
{
    return TABLE_FLAGS | (s->o.direct_io ? LTR_OPEN_DIRECT : 0);
}

/* ---- shared by all: the state's clock, version pins, wake-ups, background errors ---- */

static inline double store_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

/* The levels nodes may occupy: the option, or all of them in a store whose trie grows with
 * its data (levels 0: a version's depth says how many are in use). */
static inline uint32_t store_max_levels(const ltr_store *s)
{
    return s->o.levels ? s->o.levels : LTR_MAX_LEVELS;
}

/* A growing store's first depth: the root and eight last-level nodes. */
#define GROW_START_DEPTH 2

/* The current version, referenced: the caller unrefs it. */
static inline version *store_pin(ltr_store *s)
{
    pthread_mutex_lock(&s->ver_mu);
    version *v = s->current;
    version_ref(v);
    pthread_mutex_unlock(&s->ver_mu);
    return v;
}

/* The CLOCK_REALTIME time `ns` nanoseconds from now, for pthread_cond_timedwait. */
static inline struct timespec store_deadline(uint64_t ns)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    ns += (uint64_t)t.tv_nsec;
    t.tv_sec += (time_t)(ns / 1000000000u);
    t.tv_nsec = (long)(ns % 1000000000u);
    return t;
}

/* Wakes the background threads (and flush() waiters): there may be work. */
static inline void store_wake_background(ltr_store *s)
{
    pthread_mutex_lock(&s->state_mu);
    pthread_cond_broadcast(&s->state_cv);
    pthread_mutex_unlock(&s->state_mu);
}

/* Wakes writers waiting for an immutable slot or log space. */
static inline void store_wake_writers(ltr_store *s)
{
    pthread_mutex_lock(&s->write_mu);
    pthread_cond_broadcast(&s->write_cv);
    pthread_mutex_unlock(&s->write_mu);
}

/* The error of failed background work, for the caller to see (state_mu or write_mu held). */
static inline int store_bg_error(const ltr_store *s)
{
    return ltr_fail_as(s->bg.error, s->bg.error_errno, "%s", s->bg.message);
}

/* ---- store_opts.c ---- */
int store_opts_check(const ltr_store_opts *o);
int store_opts_merge(ltr_store_opts *o, const ltr_store_opts *rec);
uint64_t store_table_capacity(const ltr_store_opts *o); /* item bytes one table takes */
/* The working memory's shape for these options; LTR_EINVAL when working_memory is too small. */
int store_budget_plan(const ltr_store_opts *o, store_budget *b);
/* Options of the tables this store writes (memtables, compaction outputs). */
void store_table_opts(const ltr_store *s, ltr_table_opts *to);

/* ---- store_files.c ---- */
/* dir/NNNNNNNN.ext (malloc'd; NULL without memory). */
char *store_file(const char *dir, uint64_t number, const char *ext);
const char *cluster_dir(const ltr_store *s); /* where BloomClusters live */
/* A new table file's number and path (from the pool when it has a dead table's file). */
int store_new_table(ltr_store *s, uint64_t *file, char **path);
/* Opens one of the store's table files for reading (TABLE_FLAGS | flags), its descriptor in
 * the store's cache of open files. */
int store_open_table(ltr_store *s, const char *path, uint32_t flags, ltr_htable **t);
/* Opens the store's directory (a reader holds LOCK_SH on it) and the cache of table
 * descriptors (max_open_files). */
int store_files_open(ltr_store *s);
/* A writer's pool of dead table files, once the options are known. */
void store_files_start_pool(ltr_store *s);
/* Frees what store_files_open and the pool hold, forgets buried files (the next writer open
 * removes them as orphans) and lets the directory's lock go. */
void store_files_close(ltr_store *s);
/* Unlinks path (taken over) after the grace period; state_mu must not be held. `pooled`: the
 * number of a table file the pool may reuse instead (pool.h), else 0; `tf`: a table's hold on
 * its file (taken over), which defers the unlink until its readers are gone. */
void store_bury(ltr_store *s, char *path, uint64_t pooled, tfile *tf);
/* Unlinks path (taken over) now, or with tf's last holder when tf is not NULL. */
void store_remove_file(char *path, tfile *tf);
/* Unlinks (or hands to the pool) the buried files whose grace period is over, all of them when
 * `all`; state_mu not held (an unlink may wait for the device). */
void store_reap(ltr_store *s, int all);

/* ---- store_stats.c ---- */
void store_count(ltr_store *s, int counter, uint64_t n); /* a persistent counter */
/* Adds a call's read counters (gets lookups) to the store's. */
void store_count_reads(ltr_store *s, const read_ctx *c, uint64_t gets);
void store_count_stall(ltr_store *s);

/* ---- blob.c ---- */
/* A writer's or reader's value logs at open (all those in the directory, before the tables
 * that hold them), and, once the manifest gave the file counter, the counter moved past them
 * (a reader lists them again then: a writer may have started one the manifest's tables use). */
int blob_open(ltr_store *s);
int blob_open_counter(ltr_store *s);
void blob_close(ltr_store *s);
/* A batch as the log and the memtable take it: with value logs, each value of at least
 * min_blob_size bytes appended to the active value log and replaced by its pointer; *kinds
 * gets each item's kind (NULL: all values). The arrays live until the next write (write_mu). */
int blob_separate(ltr_store *s, const uint8_t *kdata, const int64_t *koffs,
                  const uint8_t **vdata, const int64_t **voffs, const uint8_t *deleted,
                  size_t n, const uint8_t **kinds);
/* The value a pointer item leads to, appended to out or copied to dst (vlen bytes).
 * from_table: the pointer was found in a table file, so LTR_EMOVED may answer (blobset_read):
 * the caller looks the key up again. */
int blob_append_value(ltr_store *s, const uint8_t *key, uint32_t klen, const uint8_t *ptr,
                      ltr_buf *out, int from_table);
int blob_copy_value(ltr_store *s, const uint8_t *key, uint32_t klen, const uint8_t *ptr,
                    uint8_t *dst, int from_table);
uint32_t blob_value_len(const uint8_t *ptr);
/* Checks that the pointer items of a log record lead to whole records (recovery). */
int blob_check_items(ltr_store *s, const uint8_t *p, const uint8_t *end, uint64_t n);
/* Makes the value logs durable to their end (before the log, and before a checkpoint). */
int blob_sync(ltr_store *s);
/* Makes every value log durable (a writer's open, after its recovery: see blobset.h). */
int blob_sync_all(ltr_store *s);
/* While blocked (d 1, then -1), the value-log GC writes nothing: a load's install, whose tables
 * must be newer than everything in the memtables (takes write_mu). */
void blob_gc_block(ltr_store *s, int d);
/* After a checkpoint: removes the value logs below the durable floor that no table file lists
 * or whose records the GC relocated (a removal pass); ckpt.mu held. 1 when a relocated one
 * below the floor stayed (a scan pinned the set). */
int blob_collect(ltr_store *s);
/* Whether the store has any value log. */
int blob_files_exist(ltr_store *s);
/* The size past which a value log is closed (BLOB_FILE_BYTES, or the testing knob's). */
uint64_t blob_file_size(void);
/* Whether a scan pins the value logs now: no removal pass can take any. */
int blob_removal_pinned(ltr_store *s);
/* A pointer (20 bytes) to the record of a key of klen bytes was shadowed: a newer item of its
 * key replaced it in a memtable, or is about to be flushed over it (the GC's count of each
 * value log's dead bytes). */
void blob_note_dead(ltr_store *s, uint32_t klen, const uint8_t *ptr);
/* The same for the (file, record bytes) uint64 pairs of store_tables_shadowed. */
void blob_note_dead_list(ltr_store *s, const ltr_buf *pairs);

/* ---- lastlevel_queue.c (state_mu held) ---- */
void lastlevel_note(ltr_store *s, uint64_t node);
void lastlevel_note_all(ltr_store *s); /* at open: every last-level node */

/* ---- memtable.c ---- */
int memtable_new(ltr_store *s, uint64_t min_log, uint64_t min_off, memtable **out);
void memtable_free(memtable *m);
/* Moves the active memtable to the immutable list and starts a fresh one whose items start at
 * log position (min_log, min_off); write_mu and mem.lock (exclusive) held. No I/O. */
int memtable_swap(ltr_store *s, uint64_t min_log, uint64_t min_off);
memtable *memtable_oldest(ltr_store *s); /* the oldest immutable one, or NULL */
/* The first value-log number the memtables may point into. */
uint64_t memtable_blob_floor(ltr_store *s);
int memtable_pending(ltr_store *s);      /* some immutable memtable waits for a flush */
/* The log position recovery must replay from once m is in a table: the oldest start of the
 * other memtables. */
void memtable_floor_without(ltr_store *s, const memtable *m, uint64_t *floor, uint64_t *off);
/* Takes m (flushed) out of the immutable list and frees it. */
void memtable_drop(ltr_store *s, memtable *m);
void memtable_free_all(ltr_store *s);

/* ---- store_log.c ---- */
/* New logs start at this offset (0 but in tests: ltr_test_log_base), and replay from it. */
uint64_t store_log_base(void);
/* Whether writes are logged (not bulk mode, not read-only). */
int store_logging(const ltr_store *s);
/* Syncs the current log and starts a new one (write_mu held, or no other thread). */
int store_log_open_new(ltr_store *s);
/* Whether the current log is full: the next record goes to a new one (write_mu held). */
int store_log_full(const ltr_store *s);
/* Appends a batch as one record (write_mu held); on failure the log is as it was. */
int store_log_batch(ltr_store *s, const uint8_t *kdata, const int64_t *koffs,
                    const uint8_t *vdata, const int64_t *voffs, const uint8_t *deleted, size_t n);
/* Makes the log durable up to byte `end` of log file `file` (group commit). */
int store_log_sync_to(ltr_store *s, uint64_t file, uint64_t end);
/* Makes every record logged so far durable (no lock held; takes write_mu and log.sync_mu). */
int store_sync_log(ltr_store *s);
/* Bytes of the logs on disk, and their bound (LOG_DISK_MAX but in tests). */
uint64_t store_log_disk_bytes(ltr_store *s);
uint64_t store_log_disk_max(void);
/* The logs below floor hold nothing the durable state needs (the checkpoint thread unlinks
 * them). */
void store_log_release_below(ltr_store *s, uint64_t floor);
/* Whether released logs wait to be unlinked, and their unlinking (no lock held: freeing a
 * large log's blocks can wait for the device). */
int store_log_has_released(ltr_store *s);
void store_log_remove_released(ltr_store *s);
/* A log recovery replayed, counted with its size on disk until a checkpoint releases it. */
void store_log_recovered(ltr_store *s, uint64_t file);
void store_log_close(ltr_store *s);

/* ---- checkpoint.c ---- */
/* Applies ops to the current version and queues the edit for the next checkpoint; state_mu
 * held, no I/O. Files the ops add must be passed to store_wrote (under the same hold). */
int store_install(ltr_store *s, const vedit_op *ops, size_t nops, medit *e);
void store_wrote(ltr_store *s, int cluster, uint64_t number);
/* A file left the state in memory (state_mu not held). When no durable state ever named it, a
 * table's file goes to the pool once its reference t is freed (or is unlinked at once); else it
 * is unlinked after the checkpoint that drops it (and the grace period). */
void store_drop(ltr_store *s, int cluster, uint64_t number, tref *t);
/* Makes the state in memory durable (see checkpoint.c). Flags: CKPT_FORCE writes an edit even
 * when nothing is queued (the counters); CKPT_BACKGROUND, the checkpoint thread's, syncs files
 * on one thread unless a caller is waiting for a checkpoint meanwhile. */
#define CKPT_FORCE 1
#define CKPT_BACKGROUND 2
int store_checkpoint(ltr_store *s, int flags);
int store_checkpoint_due(const ltr_store *s); /* state_mu held */
/* A removal pass of the value logs between checkpoints (blob_collect), which the checkpoints'
 * own do not overlap: one that a GC relocation asked for (blobs.collect_asked). 1 when a
 * relocated file below the durable floor stayed (a scan pinned the set): ask again. (One not
 * below it yet goes in the pass of the checkpoint that moves the floor.) */
int store_collect_values(ltr_store *s);
void store_encode_snapshot(const version *v, int grow, uint64_t next_file, uint64_t floor,
                           uint64_t floor_off, const uint64_t *counters, medit *e);
void store_ckpt_free(ltr_store *s);

/* ---- store_flush.c ---- */
/* Writes the oldest immutable memtable as the newest table of the root. */
int store_flush_oldest(ltr_store *s);

/* ---- store_write.c ---- */
/* Checks a packed batch: offsets, and each key and value (deleted[i]: no value) within the
 * limits; *user grows by their bytes. */
int store_check_batch(const int64_t *koffs, size_t klen_total, const int64_t *voffs,
                      size_t vlen_total, const uint8_t *deleted, size_t n, uint64_t *user);
/* Stages the n items of a log record that starts at offset log_off of log file log_file. */
int store_apply_items(ltr_store *s, const uint8_t *p, const uint8_t *end, uint64_t n,
                      uint64_t log_file, uint64_t log_off, int *swapped);
/* Starts a new memtable (and log, when that is full) unless the active one is empty;
 * write_mu held. */
int store_rotate(ltr_store *s);
/* Writes every memtable out now (recovery, and close in bulk mode). */
int store_flush_all_now(ltr_store *s);
/* Logs and applies a checked batch (write_mu held, room for it made): rotations first, then the
 * large values to the value log, the record to the log, the items to the memtable. The log
 * position to sync to in *file and *end (file 0: not logged); *swapped: a memtable was. */
int store_write_locked(ltr_store *s, const uint8_t *kdata, const int64_t *koffs,
                       const uint8_t *vdata, const int64_t *voffs, const uint8_t *deleted,
                       size_t n, uint64_t *file, uint64_t *end, int *swapped);

/* ---- store_read.c ---- */
/* Searches tables [from, n) of a node, newest first; the cluster answers for the sealed ones. */
int node_lookup(const vnode *n, uint32_t from, read_ctx *c, key_hash h, const uint8_t *key,
                uint32_t klen, item_view *it);
/* Keys [lo, hi) of a batch, at most GET_CHUNK: status[i], found values appended to values and
 * their ends in voffs[i + 1 - vbase]; mem is scratch for the memtables' answers. With c->defer,
 * a key whose lookup must read a table gets GET_DEFERRED (and no value; its partial counts are
 * taken back), for the batch to look it up again elsewhere. */
#define GET_CHUNK 256
#define GET_DEFERRED 3
int store_get_chunk(ltr_store *s, read_ctx *c, const uint8_t *kdata, const int64_t *koffs,
                    size_t lo, size_t hi, int8_t *status, int64_t *voffs, size_t vbase,
                    ltr_buf *values, ltr_buf *mem);

/* 1 and the pointer's bytes in ptr when the key's newest item is a pointer, 0 when it is not
 * (a value, a tombstone, none), <0 on error (the value-log GC: blob_gc.c). */
int store_newest_pointer(ltr_store *s, const uint8_t *key, uint32_t klen, uint8_t *ptr);
/* For each pointer or tombstone item of memtable m (about to be flushed), the pointer its key
 * has as newest item in the current version's tables, if any: appended to pairs as (value-log
 * number, record bytes) uint64s. Nothing when the store has no value logs; a lookup that fails
 * (or no memory) only leaves records out: the counts are the GC's, not the data. */
void store_tables_shadowed(ltr_store *s, const memtable *m, ltr_buf *pairs);

/* ---- compaction.c ---- */
/* The fullest node of levels [from, limit) that should be compacted now, other than skip and
 * skip2 (its id in *node), or 0 when none. */
int compaction_pick(const ltr_store *s, const version *v, uint64_t *node, uint32_t from,
                    uint32_t limit, uint64_t skip, uint64_t skip2);
int compaction_run(ltr_store *s, version *v, uint64_t node);
/* A growing trie takes one more level once its last level holds DEEPEN_TABLES_PER_NODE x
 * node_tables tables a node on average (docs/design.md "A trie as deep as the data"). Due:
 * state_mu held, v pinned. compaction_deepen: state_mu held, no last-level work claimed. */
#define DEEPEN_TABLES_PER_NODE 3
int compaction_deepen_due(const ltr_store *s, const version *v);
int compaction_deepen(ltr_store *s);
/* Garbage collection of a last-level node: its tables rewritten with only live items. */
int gc_run(ltr_store *s, version *v, uint64_t node);

/* ---- blob_gc.c: value-log garbage collection ---- */
/* A value log is worth collecting (state_mu held); notes whether the GC is behind: the value
 * logs hold more garbage than their bound and it has a file to move (blobs.behind). */
int blob_gc_due(ltr_store *s);
int blob_gc_step(ltr_store *s);      /* collects one: 1 did work, 0 nothing to do, <0 error */

/* ---- lastlevel.c: BloomCluster upkeep and garbage collection of last-level nodes ---- */
int lastlevel_step(ltr_store *s, int id); /* worker id: 1 did work, 0 nothing to do, <0 error */
int lastlevel_pending(const ltr_store *s); /* some node awaits work (state_mu held) */
int lastlevel_ready(const ltr_store *s, int id); /* ... that worker id may take now (state_mu held) */

/* ---- recovery.c ---- */
typedef struct loglist {
    uint64_t *files;
    logr *logs; /* a read-only open's logs, opened up front */
    size_t n;
} loglist;

int recovery_load_state(ltr_store *s);       /* the manifest, its tables and clusters */
int recovery_take_logs(ltr_store *s, loglist *l, int read);
/* Replays the logs from the floor on. A writer writes out the oldest memtable whenever more
 * than RECOVERY_IMMUTABLE are full, so a long log does not have to fit in memory. */
#define RECOVERY_IMMUTABLE 8
int recovery_replay_logs(ltr_store *s, loglist *l);
void recovery_free_logs(loglist *l);
void recovery_remove_orphans(ltr_store *s);

/* ---- store_bg.c ---- */
int store_bg_start(ltr_store *s);
void store_bg_stop(ltr_store *s);
/* Waits until no memtable waits for a flush and no compaction is due; the background error,
 * if any. */
int store_bg_wait_idle(ltr_store *s);
/* Lets failed background work run again (flush()), once no job is under way. */
void store_bg_retry(ltr_store *s);
/* No background job starts until store_bg_resume (calls nest); returns once the jobs under
 * way are done. A writer stalled on full memtables waits meanwhile. */
void store_bg_pause(ltr_store *s);
void store_bg_resume(ltr_store *s);

#endif
