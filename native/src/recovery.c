/* recovery.c: opening a store's durable state (docs/format/manifest.md "Recovery"): the
 * manifest replayed into the first version, every table and cluster it names opened, the logs at
 * or above the floor replayed into memtables, and files nothing refers to removed. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "coding.h"
#include "io.h"
#include "store_int.h"

typedef struct loaded {
    ltr_store *s;
    int elsewhere;
    vedit_op *ops; /* table adds and removes in manifest order */
    size_t nops, cap;
    vedit_op *clusters; /* SET_CLUSTER ops in manifest order; then the last of each node, by node */
    size_t nclusters, clusters_cap;
    uint32_t depth;     /* the last SET_DEPTH (0: none) */
} loaded;

static int on_options(void *ctx, const ltr_store_opts *rec, int elsewhere)
{
    loaded *l = ctx;
    l->elsewhere = elsewhere;
    return store_opts_merge(&l->s->o, rec);
}

static int grow_ops(vedit_op **ops, size_t n, size_t *cap)
{
    if (n < *cap)
        return LTR_OK;
    size_t c = *cap ? 2 * *cap : 64;
    vedit_op *p = realloc(*ops, c * sizeof *p);
    if (!p)
        return ltr_fail(LTR_ENOMEM, "out of memory loading the manifest");
    *ops = p;
    *cap = c;
    return LTR_OK;
}

static int on_cluster(loaded *l, uint64_t node, uint64_t file, uint64_t sealed, uint64_t skip)
{
    int rc = grow_ops(&l->clusters, l->nclusters, &l->clusters_cap);
    if (!rc)
        l->clusters[l->nclusters++] = (vedit_op){.add = VOP_CLUSTER, .node = node,
                                                 .level = node_level(node), .file = file,
                                                 .sealed = (uint32_t)sealed,
                                                 .skip = (uint32_t)skip};
    return rc;
}

/* Whether an op's node (and a cluster's count of sealed tables) can be in this store: a
 * sound record with a value no writer could have written is damage, never an index. */
static int op_in_range(const ltr_store *s, int op, const uint64_t *a)
{
    switch (op) {
    case OP_ADD_TABLE:
    case OP_REMOVE_TABLE: return a[0] < node_count(store_max_levels(s));
    case OP_SET_CLUSTER: return a[0] < node_count(store_max_levels(s)) && a[2] <= UINT32_MAX;
    case OP_SET_CLUSTER_AT:
        return !s->o.levels && a[0] < node_count(LTR_MAX_LEVELS) && a[2] <= UINT32_MAX &&
               a[3] <= UINT32_MAX;
    case OP_SET_DEPTH: return !s->o.levels && a[0] >= 1 && a[0] <= LTR_MAX_LEVELS;
    default: return 1;
    }
}

static int on_op(void *ctx, int op, const uint64_t *a, const uint64_t *counters)
{
    loaded *l = ctx;
    ltr_store *s = l->s;
    if (!op_in_range(s, op, a))
        return ltr_fail(LTR_ECORRUPT, "%s: manifest op %d is out of range (node %llu in a trie of %u levels)",
                        s->dir, op, (unsigned long long)a[0], store_max_levels(s));
    switch (op) {
    case OP_LOG_FLOOR: s->log_floor = a[0]; s->log_floor_off = 0; return LTR_OK;
    case OP_LOG_OFFSET: s->log_floor_off = a[0]; return LTR_OK;
    case OP_NEXT_FILE: s->next_file = a[0]; return LTR_OK;
    case OP_COUNTERS: memcpy(s->counters, counters, sizeof s->counters); return LTR_OK;
    case OP_SET_CLUSTER: return on_cluster(l, a[0], a[1], a[2], 0);
    case OP_SET_CLUSTER_AT: return on_cluster(l, a[0], a[1], a[2], a[3]);
    case OP_SET_DEPTH: l->depth = (uint32_t)a[0]; return LTR_OK;
    default: break;
    }
    int rc = grow_ops(&l->ops, l->nops, &l->cap);
    if (rc)
        return rc;
    vedit_op *o = &l->ops[l->nops++];
    memset(o, 0, sizeof *o);
    o->add = op == OP_ADD_TABLE ? VOP_ADD : VOP_REMOVE;
    o->node = a[0];
    o->file = a[1];
    o->level = node_level(a[0]);
    return LTR_OK;
}

static int by_node(const void *a, const void *b)
{
    uint64_t x = ((const vedit_op *)a)->node, y = ((const vedit_op *)b)->node;
    return x < y ? -1 : x > y;
}

/* The node's cluster (l->clusters settled), or NULL. A binary search: a store may have
 * millions of tables and hundreds of thousands of last-level nodes. */
static const vedit_op *cluster_of(const loaded *l, uint64_t node)
{
    vedit_op key = {.node = node};
    const vedit_op *c = bsearch(&key, l->clusters, l->nclusters, sizeof key, by_node);
    return c && c->file ? c : NULL;
}

typedef struct place {
    uint64_t node;
    size_t op;
} place;

static int by_node_then_op(const void *a, const void *b);

/* Keeps the last SET_CLUSTER of each node, sorted by node. */
static int settle_clusters(loaded *l)
{
    place *pl = malloc(sizeof *pl * (l->nclusters + 1));
    vedit_op *out = malloc(sizeof *out * (l->nclusters + 1));
    if (!pl || !out) {
        free(pl);
        free(out);
        return ltr_fail(LTR_ENOMEM, "out of memory loading the manifest");
    }
    for (size_t i = 0; i < l->nclusters; i++)
        pl[i] = (place){l->clusters[i].node, i};
    qsort(pl, l->nclusters, sizeof *pl, by_node_then_op);
    size_t n = 0;
    for (size_t i = 0; i < l->nclusters; i++)
        if (i + 1 == l->nclusters || pl[i + 1].node != pl[i].node)
            out[n++] = l->clusters[pl[i].op];
    free(pl);
    free(l->clusters);
    l->clusters = out;
    l->nclusters = n;
    return LTR_OK;
}

/* Opens the clusters the manifest lists, as VOP_CLUSTER ops appended to ops[0..k). */
static int load_clusters(ltr_store *s, loaded *l, size_t *k)
{
    int rc = LTR_OK;
    for (size_t i = 0; i < l->nclusters && !rc; i++) {
        vedit_op *c = &l->clusters[i];
        if (!c->file)
            continue;
        char *p = store_file(cluster_dir(s), c->file, "bc");
        rc = p ? cluster_open(p, c->file, &c->bc) : ltr_fail(LTR_ENOMEM, "out of memory");
        free(p);
        if (!rc && (rc = grow_ops(&l->ops, *k, &l->cap)) == LTR_OK)
            l->ops[(*k)++] = *c;
    }
    return rc;
}

static int cmp_u64(const void *a, const void *b);

static int by_node_then_op(const void *a, const void *b)
{
    const place *x = a, *y = b;
    if (x->node != y->node)
        return x->node < y->node ? -1 : 1;
    return x->op < y->op ? -1 : x->op > y->op;
}

/* For each surviving ADD_TABLE op (one no later op removes: file numbers are never reused), its
 * place among its node's surviving tables (pos[i]); other ops get UINT32_MAX. Sorting, not
 * quadratic scans: a manifest may hold many thousands of edits. */
static int survivors(const loaded *l, uint32_t *pos)
{
    uint64_t *gone = malloc(sizeof *gone * (l->nops + 1));
    place *pl = malloc(sizeof *pl * (l->nops + 1));
    if (!gone || !pl) {
        free(gone);
        free(pl);
        return ltr_fail(LTR_ENOMEM, "out of memory loading the manifest");
    }
    size_t ng = 0, np = 0;
    for (size_t i = 0; i < l->nops; i++)
        if (!l->ops[i].add)
            gone[ng++] = l->ops[i].file;
    qsort(gone, ng, sizeof *gone, cmp_u64);
    for (size_t i = 0; i < l->nops; i++) {
        pos[i] = UINT32_MAX;
        uint64_t f = l->ops[i].file;
        if (l->ops[i].add && !bsearch(&f, gone, ng, sizeof *gone, cmp_u64))
            pl[np++] = (place){l->ops[i].node, i};
    }
    qsort(pl, np, sizeof *pl, by_node_then_op);
    for (size_t k = 0, at = 0; k < np; k++) {
        at = (k && pl[k].node == pl[k - 1].node) ? at + 1 : 0;
        pos[pl[k].op] = (uint32_t)at;
    }
    free(gone);
    free(pl);
    return LTR_OK;
}

/* Opens every table the manifest lists and builds the first version. */
static int load_tables(ltr_store *s, loaded *l)
{
    uint32_t *place_of = malloc(sizeof *place_of * (l->nops + 1));
    int rc = place_of ? survivors(l, place_of) : ltr_fail(LTR_ENOMEM, "out of memory");
    if (!rc)
        rc = settle_clusters(l);
    for (size_t i = 0; i < l->nops && !rc; i++) {
        vedit_op *o = &l->ops[i];
        if (!o->add || place_of[i] == UINT32_MAX) /* removed by a later edit */
            continue;
        uint32_t pos = place_of[i]; /* the table's place in its node */
        const vedit_op *bc = cluster_of(l, o->node);
        char *p = store_file(s->dir, o->file, "ht");
        ltr_htable *t = NULL;
        if (p)
            rc = store_open_table(s, p, bc && pos < bc->sealed ? LTR_OPEN_NO_FILTERS : 0, &t);
        free(p);
        if (!p)
            rc = ltr_fail(LTR_ENOMEM, "out of memory");
        if (t) {
            ltr_table_info info;
            ltr_htable_info(t, &info);
            if (info.hash_seed != s->o.hash_seed)
                rc = ltr_fail(LTR_ECORRUPT, "table %llu has hash seed %u, the store %u",
                              (unsigned long long)o->file, info.hash_seed, s->o.hash_seed);
            o->table = tref_new(o->file, o->level, t, s->blobs.set);
            if (!o->table) {
                ltr_htable_close(t);
                rc = ltr_fail(LTR_ENOMEM, "out of memory");
            }
        }
    }
    free(place_of);
    size_t k = 0, tables; /* keep only the surviving adds, in order */
    for (size_t i = 0; i < l->nops; i++)
        if (l->ops[i].add == VOP_ADD && l->ops[i].table)
            l->ops[k++] = l->ops[i];
    tables = k;
    if (!rc)
        rc = load_clusters(s, l, &k);
    version *v = NULL;
    if (!rc)
        rc = version_apply(s->current, l->ops, k, &v);
    if (!rc) /* still private: no reader has it yet */
        v->depth = s->o.levels ? s->o.levels : l->depth ? l->depth : GROW_START_DEPTH;
    for (uint32_t lv = v ? v->depth : 0; !rc && lv < LTR_MAX_LEVELS; lv++)
        if (v->lv[lv])
            rc = ltr_fail(LTR_ECORRUPT, "%s: tables at level %u of a trie %u levels deep",
                          s->dir, lv, v->depth);
    if (!rc) {
        version_unref(s->current);
        s->current = v;
    } else if (v) {
        version_unref(v);
    }
    for (size_t i = 0; i < tables; i++) /* the version holds its own references */
        tref_unref(l->ops[i].table);
    for (size_t i = 0; i < l->nclusters; i++)
        cluster_unref(l->clusters[i].bc);
    return rc;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

typedef struct numbered {
    const char *ext;
    uint64_t *v;
    size_t n, cap;
} numbered;

static int on_numbered(void *arg, const char *name)
{
    numbered *l = arg;
    const char *dot = strchr(name, '.');
    char *endp;
    unsigned long long num = strtoull(name, &endp, 10);
    if (!dot || endp != dot || dot == name || strcmp(dot + 1, l->ext) != 0)
        return LTR_OK;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        uint64_t *p = realloc(l->v, cap * sizeof *p);
        if (!p)
            return ltr_fail(LTR_ENOMEM, "out of memory");
        l->v = p;
        l->cap = cap;
    }
    l->v[l->n++] = num;
    return LTR_OK;
}

/* Numbers of the files in dir named <digits>.<ext>, sorted. */
static int list_files(const char *dir, const char *ext, uint64_t **out, size_t *n)
{
    numbered l = {ext, NULL, 0, 0};
    int rc = io_list_dir(dir, on_numbered, &l);
    if (!rc && l.n > 1)
        qsort(l.v, l.n, sizeof *l.v, cmp_u64);
    if (rc) {
        free(l.v);
        l.v = NULL;
        l.n = 0;
    }
    *out = l.v;
    *n = l.n;
    return rc;
}

void recovery_free_logs(loglist *l)
{
    for (size_t i = 0; l->logs && i < l->n; i++)
        logr_close(&l->logs[i]);
    free(l->logs);
    free(l->files);
    memset(l, 0, sizeof *l);
}

/* Lists the logs and, when `read`, opens them all. A read-only open does that before it reads
 * the manifest: a log a writer deletes afterwards stays readable through its descriptor, and
 * one deleted before holds only data of a table that the manifest, read later, lists. Nothing
 * is read yet: replay reads a record at a time, from the floor on. */
int recovery_take_logs(ltr_store *s, loglist *l, int read)
{
    memset(l, 0, sizeof *l);
    if (!io_exists(s->dir))
        return LTR_OK; /* no store yet: open_state reports it */
    int rc = list_files(s->dir, "wal", &l->files, &l->n);
    if (!rc && read && l->n && !(l->logs = calloc(l->n, sizeof *l->logs)))
        rc = ltr_fail(LTR_ENOMEM, "out of memory");
    for (size_t i = 0; l->logs && i < l->n; i++)
        l->logs[i].fd = -1;
    for (size_t i = 0; !rc && read && i < l->n; i++) {
        char *p = store_file(s->dir, l->files[i], "wal");
        rc = p ? logr_open(&l->logs[i], p) : ltr_fail(LTR_ENOMEM, "out of memory");
        if (rc && ltr_last_errno() == ENOENT) { /* deleted meanwhile: its data is in a table */
            l->files[i] = 0;
            rc = LTR_OK;
        }
        l->logs[i].path = NULL; /* set again while it is replayed */
        free(p);
    }
    return rc;
}

/* Replays one log into the memtables; a writer cuts off a torn tail. The floor is the one the
 * manifest gave (writing memtables out during the replay moves s->log_floor on). Records are
 * read one at a time, so memory holds the memtables and one record, however long the log. */
static int replay_one(ltr_store *s, uint64_t file, logr *r, int newest, uint64_t floor,
                      uint64_t floor_off)
{
    uint8_t type;
    const uint8_t *pl;
    uint32_t len;
    int got = LOGR_END, swapped = 0, rc = LTR_OK;
    uint64_t from = store_log_base(); /* 0 but in tests that place logs at high offsets */
    if (file == floor && floor_off > from) /* the records before the floor's offset are in tables */
        from = floor_off;
    logr_seek(r, from);
    uint64_t at = r->pos, cut = UINT64_MAX;
    for (; !rc && (got = logr_next(r, &type, &pl, &len)) == LOGR_RECORD; at = r->pos) {
        uint64_t count = 0;
        size_t k = get_varint(pl, pl + len, &count);
        rc = (type != 1 || !k) ? ltr_fail(LTR_ECORRUPT, "%s: unknown log record", r->path)
                               : blob_check_items(s, pl + k, pl + len, count);
        if (rc == LTR_ECORRUPT && newest) {
            /* A record whose values a crash lost (the log reached the disk, the value log had
             * not: no fsync covered them) ends the log like a torn tail. */
            cut = at;
            rc = LTR_OK;
            got = LOGR_TORN;
            break;
        }
        if (!rc)
            rc = store_apply_items(s, pl + k, pl + len, count, file, at, &swapped);
        /* (a working_memory cap holds replay to the memtables it has room for) */
        while (!rc && !s->o.read_only &&
               s->mem.nimm > (s->o.working_memory ? MAX_IMMUTABLE : RECOVERY_IMMUTABLE))
            rc = store_flush_oldest(s);
    }
    if (!rc && got < 0)
        rc = got;
    if (!rc && (got == LOGR_CORRUPT || (got == LOGR_TORN && !newest)))
        rc = ltr_fail(LTR_ECORRUPT, "%s is damaged at offset %llu and %s", r->path,
                      (unsigned long long)r->pos,
                      got == LOGR_CORRUPT ? "records follow the damage" : "newer logs follow it");
    if (!rc && got == LOGR_TORN && !s->o.read_only) {
        logw w; /* cut the torn tail off, so later opens never meet it in an older log */
        rc = logw_open(&w, r->path, cut != UINT64_MAX ? cut : r->pos);
        logw_close(&w);
    }
    return rc;
}

/* Replays every log at or above the floor, in number order (docs/format/log.md "Reading"). */
int recovery_replay_logs(ltr_store *s, loglist *l)
{
    int rc = LTR_OK;
    size_t last = l->n;
    uint64_t floor = s->log_floor, floor_off = s->log_floor_off;
    while (last > 0 && !l->files[last - 1])
        last--;
    for (size_t i = 0; i < l->n && !rc; i++) {
        uint64_t file = l->files[i];
        if (!file || file < floor)
            continue;
        logr own = {.fd = -1}, *r = l->logs ? &l->logs[i] : &own;
        char *p = store_file(s->dir, file, "wal");
        if (!p)
            return ltr_fail(LTR_ENOMEM, "out of memory");
        if (!l->logs)
            rc = logr_open(&own, p);
        r->path = p;
        if (!rc)
            rc = replay_one(s, file, r, i + 1 == last, floor, floor_off);
        if (!l->logs)
            logr_close(&own);
        r->path = NULL;
        free(p);
        if (file >= s->next_file)
            s->next_file = file + 1;
    }
    return rc;
}

/* Deletes what no durable state refers to: tables of unfinished flushes and compactions,
 * logs below the floor, old manifests, temporary files. */
static int referenced_cluster(const ltr_store *s, uint64_t num)
{
    viter it = {0};
    for (const vnode *n; (n = viter_next(s->current, &it));)
        if (n->bc && n->bc->file == num)
            return 1;
    return 0;
}

/* Unlinks name in dir (a failure leaves the file for the next open's sweep). */
static void remove_in(const char *dir, const char *name)
{
    char *p = malloc(strlen(dir) + strlen(name) + 2);
    if (p) {
        sprintf(p, "%s/%s", dir, name);
        io_unlink(p);
        free(p);
    }
}

static int on_cluster_file(void *arg, const char *name)
{
    ltr_store *s = arg;
    const char *dot = strrchr(name, '.');
    unsigned long long num = strtoull(name, NULL, 10);
    int bc = dot && strcmp(dot, ".bc") == 0, tmp = dot && strcmp(dot, ".tmp") == 0;
    if ((bc && !referenced_cluster(s, num)) || (tmp && strstr(name, ".bc.tmp")))
        remove_in(cluster_dir(s), name);
    return LTR_OK;
}

/* Clusters no node refers to, and temporary files, in the cluster directory. */
static void remove_orphan_clusters(ltr_store *s)
{
    io_list_dir(cluster_dir(s), on_cluster_file, s); /* (unreadable: they stay) */
}

/* The numbers of the current version's tables, sorted (NULL when out of memory: keep all). */
static uint64_t *live_tables(const ltr_store *s, size_t *n)
{
    size_t k = 0, cap = 1;
    viter it = {0};
    for (const vnode *nd; (nd = viter_next(s->current, &it));)
        cap += nd->n;
    uint64_t *v = malloc(sizeof *v * cap);
    it = (viter){0};
    for (const vnode *nd; v && (nd = viter_next(s->current, &it));)
        for (uint32_t j = 0; j < nd->n; j++)
            v[k++] = nd->tables[j]->file;
    if (v)
        qsort(v, k, sizeof *v, cmp_u64);
    *n = k;
    return v;
}

typedef struct sweep {
    ltr_store *s;
    uint64_t *live;
    size_t nlive;
    char current[40];
} sweep;

static int on_store_file(void *arg, const char *name)
{
    sweep *w = arg;
    const char *dot = strrchr(name, '.');
    unsigned long long num = strtoull(name, NULL, 10);
    int drop = 0;
    if (dot && strcmp(dot, ".tmp") == 0)
        drop = 1;
    else if (strncmp(name, "MANIFEST-", 9) == 0)
        drop = strcmp(name, w->current) != 0;
    else if (dot && strcmp(dot, ".wal") == 0)
        drop = num < w->s->log_floor;
    else if (dot && strcmp(dot, ".ht") == 0) {
        uint64_t f = num;
        drop = !bsearch(&f, w->live, w->nlive, sizeof *w->live, cmp_u64);
    }
    if (drop)
        remove_in(w->s->dir, name);
    return LTR_OK;
}

void recovery_remove_orphans(ltr_store *s)
{
    remove_orphan_clusters(s);
    sweep w = {.s = s};
    w.live = live_tables(s, &w.nlive);
    snprintf(w.current, sizeof w.current, "MANIFEST-%08llu", (unsigned long long)s->ckpt.mf.number);
    if (w.live) /* (out of memory: every table file stays) */
        io_list_dir(s->dir, on_store_file, &w);
    free(w.live);
}

static int create_store(ltr_store *s)
{
    if (!s->o.create)
        return ltr_fail_errno(ENOENT, "no store at %s (pass create=True to make one)", s->dir);
    if (!(s->o.given & LTR_OPT_HASH_SEED) && getrandom(&s->o.hash_seed, 4, 0) != 4)
        s->o.hash_seed = (uint32_t)getpid() * 2654435761u;
    int rc = store_opts_check(&s->o);
    if (rc)
        return rc;
    s->next_file = 2;
    s->log_floor = 0;
    s->current->depth = s->o.levels ? s->o.levels : GROW_START_DEPTH; /* not shared yet */
    medit e = {0};
    store_encode_snapshot(s->current, !s->o.levels, s->next_file, s->log_floor, s->log_floor_off, s->counters, &e);
    uint64_t written = 0;
    rc = manifest_create(&s->ckpt.mf, s->dir, 1, &s->o, s->meta_dir != NULL, &e, &written);
    medit_free(&e);
    store_count(s, C_WRITTEN_MANIFEST, written);
    return rc;
}

int recovery_load_state(ltr_store *s)
{
    char *cur = malloc(strlen(s->dir) + 9);
    if (!cur)
        return ltr_fail(LTR_ENOMEM, "out of memory");
    sprintf(cur, "%s/CURRENT", s->dir);
    int exists = io_exists(cur);
    free(cur);
    if (!exists)
        return s->o.read_only ? ltr_fail_errno(ENOENT, "no store at %s", s->dir) : create_store(s);
    loaded l = {.s = s};
    manifest_sink sink = {&l, on_options, on_op};
    int rc = manifest_load(&s->ckpt.mf, s->dir, &sink, !s->o.read_only);
    if (!rc && l.elsewhere && !s->meta_dir)
        rc = ltr_fail(LTR_EINVAL, "store %s keeps BloomClusters elsewhere: pass metadata_path", s->dir);
    if (!rc && !l.elsewhere && s->meta_dir)
        rc = ltr_fail(LTR_EINVAL, "store %s keeps its BloomClusters inside the store: open it "
                      "without metadata_path", s->dir);
    if (!rc)
        rc = load_tables(s, &l);
    free(l.ops);
    free(l.clusters);
    return rc;
}

