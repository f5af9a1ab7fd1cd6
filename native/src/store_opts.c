/* store_opts.c: the store's options: defaults, checks, the merge with the recorded ones, and
 * the options of the tables the store writes. Depends on nothing else of the store. */
#include <string.h>

#include "io.h"
#include "store_int.h"

void ltr_store_opts_default(ltr_store_opts *o)
{
    memset(o, 0, sizeof *o);
    o->table_buckets = LTR_DEFAULT_BUCKETS;
    o->fill = LTR_DEFAULT_FILL;
    o->levels = LTR_DEFAULT_LEVELS;
    o->node_tables = LTR_DEFAULT_NODE_TABLES;
    o->bloom_bits_per_key = LTR_DEFAULT_BLOOM_BITS;
    o->gc_threshold = LTR_DEFAULT_GC_THRESHOLD;
    o->create = 1;
    o->use_log = 1;
    o->checkpoint_interval = CKPT_SECONDS;
}

uint64_t store_table_capacity(const ltr_store_opts *o)
{
    return (uint64_t)(o->fill * o->table_buckets * LTR_BUCKET_PAYLOAD);
}

int store_opts_check(const ltr_store_opts *o)
{
    if (o->table_buckets < 1 || o->table_buckets > LTR_MAX_BUCKETS)
        return ltr_fail(LTR_EINVAL, "table_buckets must be 1..%d, got %u", LTR_MAX_BUCKETS,
                        o->table_buckets);
    if (!(o->fill > 0.0 && o->fill <= 1.0))
        return ltr_fail(LTR_EINVAL, "fill must be in (0, 1], got %g", o->fill);
    if (o->levels > LTR_MAX_LEVELS)
        return ltr_fail(LTR_EINVAL, "levels must be 0 (the trie grows with the data) or 1..%d, "
                        "got %u", LTR_MAX_LEVELS, o->levels);
    if (o->node_tables < 2 || o->node_tables > 1024)
        return ltr_fail(LTR_EINVAL, "node_tables must be 2..1024, got %u", o->node_tables);
    if (o->bloom_bits_per_key > 64)
        return ltr_fail(LTR_EINVAL, "bloom_bits_per_key must be 0..64, got %u",
                        o->bloom_bits_per_key);
    if (o->memtable_bytes < 1 || o->memtable_bytes > store_table_capacity(o))
        return ltr_fail(LTR_EINVAL, "memtable_bytes must be 1..%llu (one table's capacity), got %llu",
                        (unsigned long long)store_table_capacity(o), (unsigned long long)o->memtable_bytes);
    if (!(o->checkpoint_interval >= 0.0 && o->checkpoint_interval <= 3600.0))
        return ltr_fail(LTR_EINVAL, "checkpoint_interval must be 0..3600 seconds, got %g",
                        o->checkpoint_interval);
    if (o->max_open_files < -1)
        return ltr_fail(LTR_EINVAL, "max_open_files must be -1 (no bound), 0 (from the limit on "
                        "open files) or at least 1, got %lld", (long long)o->max_open_files);
    if (!(o->gc_threshold > 0.0 && o->gc_threshold < 1.0))
        return ltr_fail(LTR_EINVAL, "gc_threshold must be in (0, 1), got %g", o->gc_threshold);
    return LTR_OK;
}

/* Options the caller chose must equal the recorded ones; the rest come from the store. */
int store_opts_merge(ltr_store_opts *o, const ltr_store_opts *rec)
{
#define SAME(bit, field, fmt)                                                                     \
    do {                                                                                          \
        if ((o->given & (bit)) && o->field != rec->field)                                         \
            return ltr_fail(LTR_EINVAL, "option " #field "=" fmt " differs from the store's " fmt, \
                            o->field, rec->field);                                                \
        o->field = rec->field;                                                                    \
    } while (0)
    SAME(LTR_OPT_TABLE_BUCKETS, table_buckets, "%u");
    SAME(LTR_OPT_FILL, fill, "%g");
    SAME(LTR_OPT_LEVELS, levels, "%u");
    SAME(LTR_OPT_NODE_TABLES, node_tables, "%u");
    SAME(LTR_OPT_BLOOM_BITS, bloom_bits_per_key, "%u");
    SAME(LTR_OPT_MEMTABLE_BYTES, memtable_bytes, "%lu");
    SAME(LTR_OPT_HASH_SEED, hash_seed, "%u");
    SAME(LTR_OPT_GC_THRESHOLD, gc_threshold, "%g");
#undef SAME
    return store_opts_check(o);
}

void ltr_store_options(const ltr_store *s, ltr_store_opts *out) { *out = s->o; }

/* ---- memtables ---- */

void store_table_opts(const ltr_store *s, ltr_table_opts *to)
{
    ltr_table_opts_default(to);
    to->buckets = s->o.table_buckets;
    to->fill = s->o.fill;
    to->bloom_bits_per_key = s->o.bloom_bits_per_key;
    to->hash_seed = s->o.hash_seed;
    to->sync = IO_IN_PLACE; /* the next checkpoint fsyncs the file and its directory */
}
