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
    o->min_blob_size = LTR_DEFAULT_MIN_BLOB_SIZE;
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
    if (o->min_blob_size && (o->min_blob_size < LTR_MIN_BLOB_SIZE_LEAST ||
                             o->min_blob_size > LTR_MAX_VALUE))
        return ltr_fail(LTR_EINVAL, "min_blob_size must be 0 (values stay in the tables) or "
                        "%d..%d bytes, got %u", LTR_MIN_BLOB_SIZE_LEAST, LTR_MAX_VALUE,
                        o->min_blob_size);
    if (!(o->gc_threshold > 0.0 && o->gc_threshold < 1.0))
        return ltr_fail(LTR_EINVAL, "gc_threshold must be in (0, 1), got %g", o->gc_threshold);
    if (o->value_format > LTR_VALUE_MEMCACHED)
        return ltr_fail(LTR_EINVAL, "value_format must be %d (raw) or %d (memcached), got %u",
                        LTR_VALUE_RAW, LTR_VALUE_MEMCACHED, o->value_format);
    store_budget b;
    return store_budget_plan(o, &b);
}

/* ---- the working memory (docs/design.md, "Memory") ---- */

/* A memtable item's index (staged entry 32 bytes, hash 16, open-addressing slots up to 16) and
 * its share of the flush's plan (24): the memory an item takes besides its bytes. */
#define MEM_ITEM_BYTES 88

/* One compaction: a window of each input and of the buckets its records lead to (about a third
 * more), each output's items of the window (their index takes about a window's bytes), each
 * output's filters (the whole table's, written last: at ~40-byte items), and a write chunk. */
static uint64_t job_bytes(const ltr_store_opts *o, uint32_t window)
{
    uint64_t win = (uint64_t)window * LTR_BUCKET_SIZE;
    uint64_t filters = store_table_capacity(o) / 40 * o->bloom_bits_per_key / 8;
    return win * (o->node_tables * 4 / 3 + 8) + 8 * filters + (1 << 20);
}

static uint64_t memtable_need(uint64_t bytes, uint64_t items)
{
    return bytes * 9 / 8 + items * MEM_ITEM_BYTES; /* the arena keeps an eighth to spare */
}

/* The least a memtable may be under a cap: a quarter of a table (a flush writes a whole table
 * whatever it holds: smaller memtables would multiply what flushes write), or memtable_bytes. */
static uint64_t least_memtable(const ltr_store_opts *o)
{
    uint64_t q = store_table_capacity(o) / 4;
    return o->memtable_bytes < q ? o->memtable_bytes : q;
}

/* The shape for a cap of w bytes: 1 when it fits, 0 when w is too small. */
static int plan_for(const ltr_store_opts *o, uint64_t w, store_budget *b)
{
    b->memtable_bytes = o->memtable_bytes;
    b->memtable_items = 0;
    b->window = COMPACTION_WINDOW;
    b->compactions = 2;
    if (!w)
        return 1;
    /* Compactions take up to a third: two at once with windows down to 64 buckets, else one
     * with windows down to COMPACTION_WINDOW_MIN. The memtables share the rest. */
    while (b->compactions * job_bytes(o, b->window) > w / 3) {
        if (b->window > 64 || (b->compactions == 1 && b->window > COMPACTION_WINDOW_MIN))
            b->window /= 2;
        else if (b->compactions == 2)
            b->compactions = 1, b->window = COMPACTION_WINDOW;
        else
            break;
    }
    uint64_t jobs = b->compactions * job_bytes(o, b->window);
    uint64_t each = jobs < w ? (w - jobs) / (1 + MAX_IMMUTABLE) : 0;
    uint64_t bytes = each / 2 * 8 / 9; /* item bytes take half a memtable's share at most */
    if (bytes < b->memtable_bytes)
        b->memtable_bytes = bytes;
    b->memtable_items = (each - memtable_need(b->memtable_bytes, 0)) / MEM_ITEM_BYTES;
    return jobs <= w && b->memtable_bytes >= least_memtable(o) && b->memtable_items >= 1024;
}

int store_budget_plan(const ltr_store_opts *o, store_budget *b)
{
    if (plan_for(o, o->working_memory, b))
        return LTR_OK;
    uint64_t lo = o->working_memory, hi = (uint64_t)1 << 50; /* the least that fits */
    while (hi - lo > (1 << 20)) {
        uint64_t mid = lo + (hi - lo) / 2;
        store_budget t;
        *(plan_for(o, mid, &t) ? &hi : &lo) = mid;
    }
    return ltr_fail(LTR_EINVAL, "working_memory=%llu bytes is less than this store needs: at "
                    "least %llu MiB with its table_buckets, fill, node_tables, memtable_bytes "
                    "and bloom_bits_per_key", (unsigned long long)o->working_memory,
                    (unsigned long long)((hi + (1 << 20) - 1) >> 20));
}

static const char *format_name(uint32_t format)
{
    return format == LTR_VALUE_RAW ? "raw" : format == LTR_VALUE_MEMCACHED ? "memcached" : "unknown";
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
    if ((o->given & LTR_OPT_VALUE_FORMAT) && o->value_format != rec->value_format)
        return ltr_fail(LTR_EINVAL, "option value_format=%s differs from the store's %s",
                        format_name(o->value_format), format_name(rec->value_format));
    o->value_format = rec->value_format;
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
