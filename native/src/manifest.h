/* manifest.h: the store's durable state as a log of edits (docs/format/manifest.md). The store
 * builds edits with the medit_* calls and appends each one atomically; loading replays them. */
#ifndef LTR_MANIFEST_H
#define LTR_MANIFEST_H

#include <stdint.h>

#include "logfile.h"
#include "ltr_int.h"

#define MF_TYPE_OPTIONS 16
#define MF_TYPE_EDIT 17

enum {
    OP_ADD_TABLE = 1, OP_REMOVE_TABLE = 2, OP_LOG_FLOOR = 3, OP_NEXT_FILE = 4, OP_COUNTERS = 5,
    OP_SET_CLUSTER = 6, OP_LOG_OFFSET = 7,
    /* manifest version 2 (stores whose trie grows with the data, option levels 0) */
    OP_SET_DEPTH = 8, OP_SET_CLUSTER_AT = 9
};

/* Counters persisted with every edit (index order is part of the format). */
enum {
    C_USER_BYTES, C_WRITTEN_LOG, C_WRITTEN_FLUSH, C_WRITTEN_CLUSTERS, C_WRITTEN_MANIFEST,
    C_FLUSHES, C_COMPACTIONS, C_GCS, C_WRITTEN_GC, C_WRITTEN_COMPACTION, /* then one per level */
    C_WRITTEN_LOAD = C_WRITTEN_COMPACTION + LTR_MAX_LEVELS, /* the loader's partitions and tables */
    C_WRITTEN_BLOBS, /* value logs (written only once nonzero: older builds read 22 values) */
    C_COUNT
};

typedef struct medit {
    ltr_buf b;
} medit;

void medit_table(medit *e, int add, uint64_t node, uint64_t file);
void medit_value(medit *e, int op, uint64_t value);
void medit_counters(medit *e, const uint64_t *c);
/* A node's cluster: `file` (0: none) covering its oldest `sealed` tables after its first `skip`
 * entries (skip > 0 only in a growing store: OP_SET_CLUSTER_AT). */
void medit_cluster(medit *e, uint64_t node, uint64_t file, uint32_t sealed, uint32_t skip);
int medit_failed(const medit *e);
void medit_free(medit *e);

typedef struct manifest {
    logw w;
    char *dir;
    uint64_t number;   /* MANIFEST-<number> */
    uint64_t snapshot; /* bytes it held when opened or started (rotation compares with it) */
} manifest;

/* What loading found; ops go to the callback in order. */
typedef struct manifest_sink {
    void *ctx;
    int (*options)(void *ctx, const ltr_store_opts *o, int clusters_elsewhere);
    int (*op)(void *ctx, int op, const uint64_t *args, const uint64_t *counters);
} manifest_sink;

/* Creates MANIFEST-<number> holding options and the snapshot edit, then points CURRENT at it. */
int manifest_create(manifest *m, const char *dir, uint64_t number, const ltr_store_opts *o,
                    int clusters_elsewhere, const medit *snapshot, uint64_t *written);
/* Replays the current manifest into sink. With `writable`, m is left open for appending (a torn
 * tail is cut off first); *number gets the manifest's number. */
int manifest_load(manifest *m, const char *dir, const manifest_sink *sink, int writable);
/* Appends one edit and fsyncs it: the edit is durable when this returns. */
int manifest_append(manifest *m, const medit *e, uint64_t *written);
void manifest_close(manifest *m);

#endif
