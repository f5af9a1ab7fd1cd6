/* store_int.h: the store's state, shared by store.c (open, write path, background work),
 * store_read.c (lookups) and compaction.c.
 *
 * Lock order: write_mu, then ckpt_mu, then state_mu, then mem_lock, then ver_mu; sync_mu and
 * the walset's mutex (the logs on disk) are taken alone.
 * Readers search the memtables and pin the current version while holding mem_lock shared: a
 * flush installs its table in a new version before it takes its memtable out of the list, so a
 * reader sees the data in one or the other. They never hold a lock across table I/O. */
#ifndef LTR_STORE_INT_H
#define LTR_STORE_INT_H

#include <pthread.h>

#include "fcache.h"
#include "htable_build.h"
#include "htable_read.h"
#include "logfile.h"
#include "manifest.h"
#include "version.h"
#include "walset.h"

#define MAX_IMMUTABLE 2 /* memtables waiting to be flushed before writers stall */
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

#define CKPT_SECONDS 1.0 /* default checkpoint_interval */
/* A background checkpoint waits, after the previous checkpoint, this many times as long as that
 * one took: a busy store's upper-level tables live for seconds, and syncing all of them every
 * second kept the device busy with tables that died soon after (checkpoint.c). */
#define CKPT_SPACING 4.0
/* but starts at once when this much log was written since the last one started: that bounds
 * the logs kept on disk and their replay after a crash */
#define CKPT_LOG_BYTES (1ull << 30)

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
    uint64_t log_mark;     /* the store's `logged` when it started */
    struct memtable *next; /* next older immutable memtable */
} memtable;

struct ltr_store {
    char *dir;
    char *meta_dir;
    ltr_store_opts o;
    int lock_fd;

    /* writers */
    pthread_mutex_t write_mu;
    pthread_cond_t write_cv; /* writers waiting for an immutable slot */
    logw wal;
    uint64_t wal_file;       /* 0 when there is no log (bulk mode, read-only) */
    uint64_t wal_hinted;     /* log bytes whose writeback has been started */
    int wal_resync;          /* an fsync of the log failed: write it again before the next */
    ltr_buf enc;             /* log payload being encoded */
    uint64_t logged;         /* log bytes written since the open */
    walset logs;             /* the logs on disk (its own leaf lock) */
    uint64_t wal_base;       /* the offset of the current log's first record (store_log_base) */
    int log_waiters;         /* writers waiting for log space: checkpoint now (atomic) */

    /* group commit of the log */
    pthread_mutex_t sync_mu;
    pthread_cond_t sync_cv;
    uint64_t synced_file, synced_upto;
    int syncing;

    /* memtables */
    pthread_rwlock_t mem_lock;
    memtable *active;
    memtable *imm;           /* newest first */
    uint32_t nimm;

    /* the state: `current` in memory; the manifest holds it as of the last checkpoint */
    pthread_mutex_t ver_mu;  /* leaf lock: guards `current` for pinning (inside mem_lock too) */
    pthread_mutex_t state_mu;
    pthread_cond_t state_cv; /* wakes the background threads and flush() waiters */
    version *current;

    /* checkpoints (checkpoint.c); ckpt_mu is taken before state_mu, the rest is state_mu's */
    pthread_mutex_t ckpt_mu; /* one checkpoint at a time; guards mf and mf_broken */
    int ckpt_waiters;        /* callers in store_checkpoint without CKPT_BACKGROUND (atomic) */
    manifest mf;
    int mf_broken;           /* an append failed: the file's tail is unknown until rewritten */
    ltr_buf pending;         /* ops of the edits installed since the last checkpoint */
    double pending_since;    /* when the oldest of them was installed; 0: none */
    pfiles unsynced;         /* files those edits added, not yet fsynced */
    double ckpt_next;        /* no background checkpoint before this time (CKPT_SPACING) */
    uint64_t ckpt_count;     /* checkpoints that did something, and their time (stats) */
    double ckpt_seconds;
    uint64_t ckpt_log_mark;  /* log bytes written when the last checkpoint started */
    int unsynced_lost;       /* one could not be recorded: the checkpoint syncs everything */
    pfiles doomed;           /* files dropped in memory that the durable state still names */
    uint64_t durable_floor;  /* the log floor of the manifest on disk */
    tpool *pool;             /* table files for reuse (NULL: none) */
    fcache *fc;              /* bounds the open table files (NULL: max_open_files -1) */
    int dir_fd;              /* the store directory: readers hold flock(LOCK_SH) on it, and a
                                writer reuses a durable table's file only when it gets LOCK_EX */
    uint64_t next_file;
    uint64_t log_floor;      /* replay starts at this log, */
    uint64_t log_floor_off;  /* at this offset */
    uint64_t counters[C_COUNT]; /* updated with atomics, persisted with each edit */

    /* background work: the worker compacts (and flushes when there is no flusher); the flusher
     * only flushes, so a flush never waits behind a compaction */
    pthread_t workers[2], flusher, syncer;
    struct worker_arg {
        struct ltr_store *s;
        int id;
    } wargs[2];
    int nworkers, flusher_started, syncer_started;
    uint64_t compacting[2];  /* the node each worker compacts, or NO_NODE (state_mu) */
    uint64_t ll_node[2];     /* the last-level node each worker collects or clusters, or
                                NO_NODE (state_mu): the other leaves its parent alone */
    int stopping;
    int busy;              /* workers running a job */
    int flushing;          /* the flusher runs a flush */
    int bg_error;          /* a background failure stops writes until flush() retries */
    int bg_errno;
    char bg_message[512];

    /* read counters (atomic) */
    uint64_t gets, bucket_reads, cluster_reads, false_positives, write_stalls;
    uint64_t hits_per_level[LTR_MAX_LEVELS], hit_reads_per_level[LTR_MAX_LEVELS];

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

    /* last-level nodes that received tables and await a garbage check (state_mu) */
    uint64_t *gc_pending;
    size_t ngc_pending, gc_cap;
};

/* checkpoint.c */
double store_now(void);
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
/* Makes every record logged so far durable (no lock held; takes write_mu and sync_mu). */
int store_sync_log(ltr_store *s);
int store_checkpoint_due(const ltr_store *s); /* state_mu held */
void store_encode_snapshot(const version *v, uint64_t next_file, uint64_t floor,
                           uint64_t floor_off, const uint64_t *counters, medit *e);
void pfiles_free(pfiles *l);

/* store.c */
int store_bg_error(const ltr_store *s);
int store_opts_check(const ltr_store_opts *o);
int store_opts_merge(ltr_store_opts *o, const ltr_store_opts *rec);
void store_remove_old_logs(ltr_store *s); /* below the durable floor (state_mu not held) */
/* Bytes of the logs on disk, and their bound (LOG_DISK_MAX but in tests). */
uint64_t store_log_disk_bytes(ltr_store *s);
uint64_t store_log_disk_max(void);
/* Stages the n items of a log record that starts at offset log_off of log file log_file. */
int store_apply_items(ltr_store *s, const uint8_t *p, const uint8_t *end, uint64_t n,
                      uint64_t log_file, uint64_t log_off, int *swapped);
/* Options of the tables this store writes (memtables, compaction outputs). */
void store_table_opts(const ltr_store *s, ltr_table_opts *to);
/* Unlinks path (taken over) after the grace period; state_mu must not be held. */
/* `pooled`: the number of a table file the pool may reuse instead (pool.h), else 0; `tf`: a
 * table's hold on its file (taken over), which defers the unlink until its readers are gone. */
void store_bury(ltr_store *s, char *path, uint64_t pooled, tfile *tf);
/* Unlinks path (taken over) now, or with tf's last holder when tf is not NULL. */
void store_remove_file(char *path, tfile *tf);
char *store_file(const char *dir, uint64_t number, const char *ext);
/* Opens one of the store's table files for reading (TABLE_FLAGS | flags), its descriptor in
 * the store's cache of open files. */
int store_open_table(ltr_store *s, const char *path, uint32_t flags, ltr_htable **t);
/* Writes the oldest immutable memtable as the newest table of the root. */
int store_flush_oldest(ltr_store *s);
int store_new_table(ltr_store *s, uint64_t *file, char **path);
void store_count(ltr_store *s, int counter, uint64_t n);

/* recovery.c */
typedef struct loglist {
    uint64_t *files;
    logr *logs; /* contents, read up front by a read-only open */
    size_t n;
} loglist;

int recovery_load_state(ltr_store *s);       /* the manifest, its tables and clusters */
int recovery_take_logs(ltr_store *s, loglist *l, int read);
/* Replays the logs from the floor on. A writer writes out the oldest memtable whenever more
 * than RECOVERY_IMMUTABLE are full, so a long log does not have to fit in memory. */
#define RECOVERY_IMMUTABLE 8
int recovery_replay_logs(ltr_store *s, loglist *l);
/* New logs start at this offset (0 but in tests: ltr_test_log_base), and replay from it. */
uint64_t store_log_base(void);
void recovery_free_logs(loglist *l);
void recovery_remove_orphans(ltr_store *s);

/* compaction.c */
#define NO_NODE UINT64_MAX
/* The fullest node of levels [from, limit) that should be compacted now, other than skip and
 * skip2 (its id in *node), or 0 when none. */
int compaction_pick(const ltr_store *s, const version *v, uint64_t *node, uint32_t from,
                    uint32_t limit, uint64_t skip, uint64_t skip2);
int compaction_run(ltr_store *s, version *v, uint64_t node);
/* Garbage collection of a last-level node: its tables rewritten with only live items. */
int gc_run(ltr_store *s, version *v, uint64_t node);

/* lastlevel.c: BloomCluster upkeep and garbage collection of last-level nodes */
void lastlevel_note(ltr_store *s, uint64_t node); /* state_mu held */
void lastlevel_note_all(ltr_store *s);             /* at open: every last-level node */
int lastlevel_step(ltr_store *s, int id); /* worker id: 1 did work, 0 nothing to do, <0 error */
int lastlevel_pending(const ltr_store *s); /* some node awaits work (state_mu held) */
int lastlevel_ready(const ltr_store *s, int id); /* ... that worker id may take now (state_mu held) */
const char *cluster_dir(const ltr_store *s);

/* store_read.c */
/* Searches tables [from, n) of a node, newest first; the cluster answers for the sealed ones. */
int node_lookup(const vnode *n, uint32_t from, read_ctx *c, key_hash h, const uint8_t *key,
                uint32_t klen, item_view *it);
version *store_pin(ltr_store *s);
/* Keys [lo, hi) of a batch, at most GET_CHUNK: status[i], found values appended to values and
 * their ends in voffs[i + 1 - vbase]; mem is scratch for the memtables' answers. */
#define GET_CHUNK 256
int store_get_chunk(ltr_store *s, read_ctx *c, const uint8_t *kdata, const int64_t *koffs,
                    size_t lo, size_t hi, int8_t *status, int64_t *voffs, size_t vbase,
                    ltr_buf *values, ltr_buf *mem);
/* Adds a call's counters (gets lookups) to the store's. */
void store_count_reads(ltr_store *s, const read_ctx *c, uint64_t gets);

#endif
