/* store_stats.c: the store's counters: the persistent ones (bytes written by kind, flushes,
 * ...: `counters`, saved with every manifest edit) and those since the open (reads, stalls),
 * and ltr_store_stats_get, which reports them with the shape of the current version. Depends
 * on nothing else of the store. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cluster.h"
#include "store_int.h"

void store_count(ltr_store *s, int counter, uint64_t n)
{
    __atomic_fetch_add(&s->counters[counter], n, __ATOMIC_RELAXED);
}

void store_count_stall(ltr_store *s)
{
    __atomic_fetch_add(&s->since_open.write_stalls, 1, __ATOMIC_RELAXED);
}

void ltr_test_store_bump(ltr_store *s, uint64_t counter_base, uint64_t next_file)
{
    for (int i = 0; i < C_COUNT; i++)
        store_count(s, i, counter_base);
    pthread_mutex_lock(&s->state_mu);
    if (s->next_file < next_file)
        s->next_file = next_file;
    pthread_mutex_unlock(&s->state_mu);
}

void store_count_reads(ltr_store *s, const read_ctx *c, uint64_t gets)
{
    __atomic_fetch_add(&s->since_open.gets, gets, __ATOMIC_RELAXED);
    __atomic_fetch_add(&s->since_open.bucket_reads, c->stats[ST_BUCKET_READS] + c->stats[ST_OVF_READS],
                       __ATOMIC_RELAXED);
    __atomic_fetch_add(&s->since_open.false_positives, c->stats[ST_FFP], __ATOMIC_RELAXED);
    __atomic_fetch_add(&s->since_open.cluster_reads, c->stats[ST_CLUSTER_READS], __ATOMIC_RELAXED);
    for (uint32_t l = 0; l < LTR_MAX_LEVELS; l++) {
        if (c->hits[l])
            __atomic_fetch_add(&s->since_open.hits_per_level[l], c->hits[l], __ATOMIC_RELAXED);
        if (c->hit_reads[l])
            __atomic_fetch_add(&s->since_open.hit_reads_per_level[l], c->hit_reads[l], __ATOMIC_RELAXED);
    }
}

void ltr_store_stats_get(ltr_store *s, ltr_store_stats *o)
{
    memset(o, 0, sizeof *o);
    uint64_t c[C_COUNT];
    for (int i = 0; i < C_COUNT; i++)
        c[i] = __atomic_load_n(&s->counters[i], __ATOMIC_RELAXED);
    o->user_bytes_written = c[C_USER_BYTES];
    o->written_log = c[C_WRITTEN_LOG];
    o->written_flush = c[C_WRITTEN_FLUSH];
    o->written_clusters = c[C_WRITTEN_CLUSTERS];
    o->written_manifest = c[C_WRITTEN_MANIFEST];
    o->written_gc = c[C_WRITTEN_GC];
    o->written_load = c[C_WRITTEN_LOAD];
    o->written_blobs = c[C_WRITTEN_BLOBS];
    if (s->blobs.set)
        blobset_counts(s->blobs.set, &o->blob_files, &o->blob_bytes, &o->blob_files_open,
                       &o->blob_live_bytes);
    o->bytes_written = o->written_log + o->written_flush + o->written_clusters +
                       o->written_manifest + o->written_gc + o->written_load + o->written_blobs;
    for (int l = 0; l < LTR_MAX_LEVELS; l++) {
        o->hits_per_level[l] = __atomic_load_n(&s->since_open.hits_per_level[l], __ATOMIC_RELAXED);
        o->hit_reads_per_level[l] = __atomic_load_n(&s->since_open.hit_reads_per_level[l], __ATOMIC_RELAXED);
        o->written_compaction[l] = c[C_WRITTEN_COMPACTION + l];
        o->bytes_written += o->written_compaction[l];
    }
    o->flushes = c[C_FLUSHES];
    o->compactions = c[C_COMPACTIONS];
    o->gcs = c[C_GCS];
    o->gets = __atomic_load_n(&s->since_open.gets, __ATOMIC_RELAXED);
    o->bucket_reads = __atomic_load_n(&s->since_open.bucket_reads, __ATOMIC_RELAXED);
    o->cluster_reads = __atomic_load_n(&s->since_open.cluster_reads, __ATOMIC_RELAXED);
    o->filter_false_positives = __atomic_load_n(&s->since_open.false_positives, __ATOMIC_RELAXED);
    o->write_stalls = __atomic_load_n(&s->since_open.write_stalls, __ATOMIC_RELAXED);
    o->batches_deepened = __atomic_load_n(&s->since_open.batches_deepened, __ATOMIC_RELAXED);
    o->blob_gc_moved = __atomic_load_n(&s->since_open.blob_gc_moved, __ATOMIC_RELAXED);
    o->blob_gc_damaged = __atomic_load_n(&s->since_open.blob_gc_damaged, __ATOMIC_RELAXED);
    pthread_mutex_lock(&s->state_mu);
    o->checkpoints = s->ckpt.count;
    o->checkpoint_seconds = s->ckpt.seconds;
    pthread_mutex_unlock(&s->state_mu);
    if (s->files.pool)
        tpool_counts(s->files.pool, &o->files_reused, &o->files_reused_durable);
    if (s->files.fc)
        fcache_counts(s->files.fc, &o->table_files_open, &o->table_file_reopens);
    version *v = store_pin(s);
    o->levels = v->depth;
    viter it = {0};
    for (const vnode *n; (n = viter_next(v, &it));) {
        for (uint32_t j = 0; j < n->n; j++) {
            ltr_table_info info;
            ltr_htable_info(n->tables[j]->t, &info);
            o->tables_per_level[n->level]++;
            o->items_per_level[n->level] += info.items;
            o->table_bytes_per_level[n->level] += info.file_bytes;
            o->metadata_memory_bytes += info.filter_bytes + info.cached_record_bytes +
                                        info.overflow_index_bytes;
        }
        if (n->bc)
            o->metadata_memory_bytes += cluster_memory(n->bc);
    }
    version_unref(v);
    for (uint32_t l = 0; !s->files.fc && l < o->levels; l++) /* no bound: every table is open */
        o->table_files_open += o->tables_per_level[l];
    char journal[4096];
    snprintf(journal, sizeof journal, "%s/" LOAD_JOURNAL, s->dir);
    o->load_unfinished = access(journal, F_OK) == 0;
    pthread_rwlock_rdlock(&s->mem.lock);
    o->memtable_items = ltr_hbuild_items(s->mem.active->b);
    for (memtable *m = s->mem.imm; m; m = m->next)
        o->memtable_items += ltr_hbuild_items(m->b);
    pthread_rwlock_unlock(&s->mem.lock);
}
