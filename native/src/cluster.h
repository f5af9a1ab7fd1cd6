/* cluster.h: BloomClusters, the last level's per-bucket filters clustered by bucket column
 * (docs/format/cluster.md). Immutable and refcounted like tables. */
#ifndef LTR_CLUSTER_H
#define LTR_CLUSTER_H

#include <stdint.h>

#include "htable_read.h"

typedef struct cluster {
    char *path;
    int fd;
    uint64_t file;
    uint64_t node;
    uint32_t version; /* of the format: 1 or 2 (docs/format/cluster.md) */
    uint32_t buckets, tables, probes, cpu, units;
    uint64_t *off;        /* units + 1: off_small when they fit, else allocated */
    uint32_t *crc;        /* units */
    const uint8_t *map;   /* the whole file, read-only; NULL: read with pread */
    /* a small index lives here, beside map and cpu: a probe then finds its unit without a
     * cache miss of its own (the struct was allocated whenever the cluster was written) */
    uint64_t off_small[3];
    uint64_t data_bytes;  /* bytes of the units */
    size_t map_len;
    int refs;             /* atomic */
} cluster;

/* Writes a cluster covering old's tables (if any) followed by the fresh tables, whose filters
 * must be in memory. *written gets the file's size. */
int cluster_build(const char *path, uint64_t file, uint64_t node, uint32_t buckets,
                  uint32_t probes, cluster *old, ltr_htable *const *fresh, uint32_t nfresh,
                  uint64_t *written);
int cluster_open(const char *path, uint64_t file, cluster **out);
void cluster_ref(cluster *bc);
void cluster_unref(cluster *bc);
/* Reads the unit of bucket `column` and sets maybe[t] for each covered table t whose filter may
 * hold a key with this bloom field. One read; counted by the caller. */
int cluster_probe(cluster *bc, read_ctx *c, uint32_t column, uint32_t bloom, uint8_t *maybe);
/* Starts loading the directory entry of bucket `column` into the cache (mapped version-2
 * clusters), so that a probe made later finds it there. */
void cluster_prefetch(const cluster *bc, uint32_t column);
/* Reads every unit and checks its CRC; *bytes grows by the bytes read. */
int cluster_verify(cluster *bc, uint64_t *bytes);
/* Bytes of memory the cluster's index takes. */
uint64_t cluster_memory(const cluster *bc);

#endif
