/* version.h: the trie's state: which tables each node holds, oldest first. A version is
 * immutable once built; readers pin one (refcount) and search it without locks while flushes and
 * compactions build and install the next. Tables are refcounted too: a table dropped by a
 * compaction is closed when the last version holding it goes. */
#ifndef LTR_VERSION_H
#define LTR_VERSION_H

#include <stdint.h>

#include "blob_format.h"
#include "cluster.h"
#include "ltr_int.h"
#include "pool.h"

/* A table file's holders in this process: its table objects (two when a table was reopened
 * without its filters) and the state's pending removal of it. A dropped file is unlinked only
 * when its last holder lets go, so a table object can always reopen its file after its
 * descriptor was closed (fcache.h), even once the state no longer names it. */
typedef struct tfile {
    int refs;     /* atomic */
    char *unlink; /* set when the state dropped the file: unlinked by the last holder */
    /* the value logs the table's pointers lead to, held in the store's set while the file is
     * (blobset.h: a value log outlives every table file that lists it) */
    struct blobset *bs;
    blob_ref *blobs;
    uint32_t nblobs;
} tfile;

tfile *tfile_hold(tfile *f); /* one more holder; returns f */
void tfile_release(tfile *f);
/* The file goes once no holder is left (path taken over); lets go of the caller's hold. */
void tfile_doom(tfile *f, char *path);

typedef struct tref {
    uint64_t file;
    uint32_t level;
    ltr_htable *t;
    tfile *f;       /* shared with the other table objects of the same file */
    int refs;       /* atomic */
    uint8_t reopened; /* a second reference to a file (another may still be open) */
    uint8_t durable;  /* with reuse: the file was durable (the pool waits for its grave) */
    tpool *reuse;   /* set when the table was dropped: the pool hears when this is freed */
} tref;

/* A table's in-memory filters, copied into its node so that a lookup reaches them without
 * following node -> table reference -> table (three dependent cache misses per table); and the
 * table itself, for the bucket read when the filter says maybe. */
typedef struct vfilter {
    const uint32_t *foff; /* NULL: the table has no filters in memory */
    const uint8_t *fbits;
    uint32_t buckets, probes;
    ltr_htable *t;        /* tables[j]->t */
} vfilter;

typedef struct vnode {
    int refs;         /* atomic: the levels that hold this node */
    uint64_t id;
    uint32_t level;
    uint32_t n;       /* tables, oldest first */
    tref **tables;
    vfilter *flt;     /* n entries, one per table, at VNODE_FLT_AT in the node's own block (set
                         when the version is finished) */
    cluster *bc;      /* the BloomCluster of tables [0, sealed), or NULL: a last-level node's,
                         kept by a node the trie outgrew until its tables are compacted away */
    uint32_t sealed;  /* those tables are open without filters; the rest keep theirs */
    uint32_t skip;    /* the cluster's first entries, of tables compacted away: table j < sealed
                         is the cluster's table skip + j */
    uint8_t building; /* made by the version_apply under way: private to it, mutable */
    /* last level: the latest garbage estimate and the node's items then (0: none), kept by the
     * worker holding the node's claim (lastlevel.c) and carried to the node's next copies */
    double gc_ratio;
    uint64_t gc_items;
} vnode;

/* Where a finished node's filter array starts in the node's block (which is 64-byte aligned). */
#define VNODE_FLT_AT ((sizeof(vnode) + 15) & ~(size_t)15)

/* VCHUNK consecutive node ids of a level: ids base(L) + idx * VCHUNK + [0, VCHUNK). Shared by
 * the levels that did not change it. */
#define VCHUNK 64

typedef struct vchunk {
    int refs;         /* atomic: the levels that hold this chunk */
    uint32_t idx;
    uint32_t n;       /* non-empty nodes */
    uint64_t tables;  /* of those nodes */
    uint8_t building; /* made by the version_apply under way: private to it, mutable */
    const vnode *fullest;   /* the node with the most tables (the first of equals) */
    vnode *node[VCHUNK];    /* by id; NULL: an empty node */
} vchunk;

/* The non-empty chunks of one level, sorted by idx. Shared by the versions that did not change
 * the level: an edit copies only the levels, chunks and nodes it touches (an edit to a level of
 * 4,096 nodes copies 64 chunk pointers and a chunk, not 4,096 node pointers). */
typedef struct vlevel {
    int refs;         /* atomic */
    uint32_t n;       /* non-empty nodes */
    uint64_t tables;  /* of those nodes */
    uint32_t nchunks;
    vchunk **chunks;
    const vnode *fullest; /* the node with the most tables (the first of equals) */
} vlevel;

typedef struct version {
    int refs;         /* atomic */
    uint32_t nnodes;  /* non-empty nodes in all levels */
    uint32_t depth;   /* levels in use: depth - 1 is the last level (appended to, under
                         BloomClusters); deeper levels are empty */
    vlevel *lv[LTR_MAX_LEVELS]; /* NULL: an empty level */
} version;

/* Iteration over the non-empty nodes, level by level, each level by id:
 * `viter it = {0}; for (const vnode *n; (n = viter_next(v, &it));)`. */
typedef struct viter {
    uint32_t level, i, j; /* chunk i of the level, slot j */
} viter;

const vnode *viter_next(const version *v, viter *it);

enum { VOP_REMOVE = 0, VOP_ADD = 1, VOP_REPLACE = 2, VOP_CLUSTER = 3, VOP_DEPTH = 4 };

typedef struct vedit_op {
    int add;          /* VOP_ADD: `table` becomes the newest of `node`; VOP_REMOVE: file `file`
                         leaves it; VOP_REPLACE: `table` takes the place of the table with its
                         file; VOP_CLUSTER: the node's cluster becomes `bc` covering `sealed`
                         tables after its first `skip` entries; VOP_DEPTH: the version's depth
                         becomes `level` (node unused). Removing a node's oldest table under its
                         cluster moves the cluster on: sealed - 1, skip + 1 (none left: no
                         cluster) */
    uint64_t node;
    uint32_t level;
    tref *table;
    uint64_t file;
    cluster *bc;
    uint32_t sealed, skip;
} vedit_op;

/* Node ids number the trie breadth-first: level L holds ids base(L) .. base(L) + 8^L - 1. */
uint64_t node_id(uint32_t level, uint64_t trie_path);
uint64_t node_child(uint64_t id, uint32_t level, uint32_t digit);
uint64_t node_parent(uint64_t id, uint32_t level); /* level >= 1 */
uint32_t node_level(uint64_t id);
uint64_t node_count(uint32_t levels); /* nodes of a trie of that many levels */

/* bs: the store's value logs, held for the table's references while its file is (NULL: none,
 * as in a read-only store, which removes nothing). */
tref *tref_new(uint64_t file, uint32_t level, ltr_htable *t, struct blobset *bs);
/* Another table object of from's file (reopened): it holds the file too. */
tref *tref_new_sharing(const tref *from, uint32_t level, ltr_htable *t);
void tref_ref(tref *t);
void tref_unref(tref *t);

version *version_empty(uint32_t depth);
void version_ref(version *v);
void version_unref(version *v);
const vnode *version_node(const version *v, uint64_t id);
const vnode *version_node_at(const version *v, uint32_t level, uint64_t id); /* id's level */
/* Where version_node_at finds the node (without reading it: for prefetches), or NULL. */
vnode *const *version_slot_at(const version *v, uint32_t level, uint64_t id);
/* A new version: v with the ops applied in order. Removing a table that is not there is an
 * error (the state and the manifest disagree). */
int version_apply(const version *v, const vedit_op *ops, size_t n, version **out);

#endif
