/* store_batch.c: a batch get whose answers come out in segments while it runs. Threads of the
 * store's pool (taskpool.h) look the keys up, a segment at a time in key order; the caller takes
 * the finished segments in order (ltr_batch_next) and can turn their values into objects of its
 * own while the threads go on. From Python that overlaps the making of a bytes object per value
 * (the GIL's work, a tenth of a batched hit) with the lookups.
 *
 * A store read through the page cache uses two threads while its lookups wait for memory, not
 * the device (more threads than cores would only take turns). With direct_io every bucket read
 * waits for the device, so a batch runs on LTR_BATCH_READ_DEPTH threads, each with one read in
 * flight: the device sees that queue depth. A buffered batch whose thread waited for the device
 * during a segment (pages of tables or BloomClusters not in the page cache: read blocks or major
 * faults in the thread's own rusage) deepens to as many threads, and the store's next batch
 * starts that deep until one runs without waiting: right after a load, or with data larger than
 * memory, the reads that miss the cache overlap instead of stalling the two threads
 * (docs/design.md "Batches that find pages evicted").
 *
 * Threads doing preads, not io_uring: on the project machine 32 threads doing O_DIRECT preads
 * of random 4 KB blocks of a 2 GB file got 51,700 to 58,800 reads/s, one io_uring kept 32 deep
 * by one thread 40,700 to 43,400, two rings of 16 on two threads 40,800 to 57,800 (alternated,
 * three times each; docs/design.md "Reads without the page cache"); and the threads need no
 * second way of looking a key up: each runs the lookups a single get runs, so the answers are
 * the same by construction. io_uring took less CPU per read (2.7 to 3.8 us against 5.0 to 5.5),
 * which matters less while the device is what a batch waits for.
 *
 * ltr_store_get_many (at the end) runs small batches on the caller's thread and large ones through
 * a streamed batch, gathering its segments into the caller's buffer; with direct_io, a batch of
 * up to FIRST_PASS_MAX keys first answers on the caller's thread the keys that need no read, and
 * streams only the others (get_direct). Depends on store_read.c and store_stats.c. */
#define _GNU_SOURCE /* RUSAGE_THREAD */
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "store_int.h"

static int batch_threads = -1; /* ltr_test_batch_threads: a cap on a batch's threads, or none */

void ltr_test_batch_threads(int n)
{
    __atomic_store_n(&batch_threads, n < 0 ? -1 : n, __ATOMIC_RELAXED);
}

/* ltr_test_batch_device: every segment counts as having waited, and every batch starts shallow */
static int device_test;
static uint64_t deepen_runs; /* runs deepenings posted (ltr_test_batch_deepen_runs) */

void ltr_test_batch_device(int on)
{
    __atomic_store_n(&device_test, on, __ATOMIC_RELAXED);
}

uint64_t ltr_test_batch_deepen_runs(void)
{
    return __atomic_load_n(&deepen_runs, __ATOMIC_RELAXED);
}

#define SEG_KEYS 2048 /* keys per segment: the last one's values are made after the lookups */
/* With direct_io a segment's keys wait for their reads one after the other: segments of at most
 * this many keys give each thread several (of a batch of 4 * depth * this many keys or more), so
 * that the threads finish together instead of a few reading alone at the end. */
#define DIRECT_SEG_KEYS 64
#define SEG_SKIPPED 1 /* a segment not looked up, after another one failed */
#define SMALL_SEGMENTS 16 /* segments of a buffered batch of fewer than this many SEG_KEYS */

typedef struct segment {
    ltr_buf values;
    int64_t *voffs; /* keys + 1 entries, from 0 */
    int done;       /* under mu */
    int rc;         /* LTR_OK, or the failure (the batch's err holds the first one) */
} segment;

struct ltr_batch {
    ltr_store *s;
    const uint8_t *kdata;
    const int64_t *koffs;
    size_t n, nseg;
    int8_t *status;
    segment *seg;
    size_t next_seg;  /* atomic: the next segment a thread (or the caller: claim) takes */
    int stop;         /* atomic: a segment failed; the rest are not looked up */
    size_t taken;     /* segments handed to the caller */
    size_t seg_keys;  /* keys per segment */
    taskgroup group;  /* the threads' runs of batch_worker */
    unsigned planned; /* runs asked for at the start (set before they are posted) */
    unsigned threads; /* runs posted (0: the caller looks each segment up) */
    int deep;         /* atomic: the batch runs (or was posted to run) LTR_BATCH_READ_DEPTH deep */
    taskgroup more;   /* the runs its deepening added (by a run of `group` or the caller) */
    unsigned more_threads; /* runs posted in `more` (0: none) */
    int waited;       /* atomic: a segment's thread waited for the device */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    ltr_error err;    /* the first failure, under mu */
};

static void seg_bounds(const ltr_batch *b, size_t i, size_t *lo, size_t *hi)
{
    *lo = i * b->seg_keys;
    *hi = *lo + b->seg_keys < b->n ? *lo + b->seg_keys : b->n;
}

static int run_segment(ltr_batch *b, read_ctx *c, ltr_buf *mem, size_t i)
{
    size_t lo, hi;
    seg_bounds(b, i, &lo, &hi);
    segment *g = &b->seg[i];
    g->voffs = malloc(sizeof(int64_t) * (hi - lo + 1));
    if (!g->voffs)
        return ltr_fail(LTR_ENOMEM, "out of memory in a batch get");
    g->voffs[0] = 0;
    int rc = LTR_OK;
    for (size_t at = lo; at < hi && !rc; at += GET_CHUNK)
        rc = store_get_chunk(b->s, c, b->kdata, b->koffs, at,
                             at + GET_CHUNK < hi ? at + GET_CHUNK : hi, b->status, g->voffs, lo,
                             &g->values, mem);
    return rc;
}

static void finish_segment(ltr_batch *b, size_t i, int rc)
{
    pthread_mutex_lock(&b->mu);
    if (rc < 0 && !b->err.rc)
        ltr_error_keep(&b->err, rc);
    b->seg[i].rc = rc;
    b->seg[i].done = 1;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

/* Reads from the device this thread has waited for so far: blocks read in (a pread that missed
 * the page cache) and major faults (a BloomCluster page not in it). 0 for a direct_io store's
 * batch, whose every read goes to the device and which runs deep from the start. */
static uint64_t device_waits(const ltr_batch *b)
{
    struct rusage ru;
    if (b->s->o.direct_io || getrusage(RUSAGE_THREAD, &ru))
        return 0;
    return (uint64_t)ru.ru_inblock + (uint64_t)ru.ru_majflt;
}

static unsigned batch_runs(const ltr_store *s, size_t nseg, int deep);
static void batch_worker(void *arg);

/* A buffered batch waited for the device: the rest of it runs LTR_BATCH_READ_DEPTH deep, one
 * thread a segment left (once; called by a run of b->group or by the caller's thread, so
 * ltr_batch_free sees more_threads after waiting for those runs). */
static void deepen(ltr_batch *b)
{
    int no = 0;
    if (!__atomic_compare_exchange_n(&b->deep, &no, 1, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED) ||
        !b->s->batch_pool || __atomic_load_n(&b->stop, __ATOMIC_RELAXED))
        return;
    size_t next = __atomic_load_n(&b->next_seg, __ATOMIC_RELAXED);
    size_t left = next < b->nseg ? b->nseg - next : 0;
    unsigned want = batch_runs(b->s, b->nseg, 1);
    unsigned add = want > b->planned ? want - b->planned : 0;
    add = add < left ? add : (unsigned)left;
    b->more_threads = taskpool_post(b->s->batch_pool, &b->more, batch_worker, b, add);
    __atomic_fetch_add(&deepen_runs, b->more_threads, __ATOMIC_RELAXED);
}

/* run_segment, deepening a buffered batch whose thread waited for the device meanwhile; *waits
 * is the thread's count before (device_waits), updated to after: one system call a segment. */
static int run_watched(ltr_batch *b, read_ctx *c, ltr_buf *mem, size_t i, uint64_t *waits)
{
    if (b->s->o.direct_io)
        return run_segment(b, c, mem, i);
    int rc = run_segment(b, c, mem, i);
    uint64_t now = device_waits(b);
    if (!rc && (now != *waits || __atomic_load_n(&device_test, __ATOMIC_RELAXED))) {
        __atomic_store_n(&b->waited, 1, __ATOMIC_RELAXED);
        deepen(b);
    }
    *waits = now;
    return rc;
}

static void batch_worker(void *arg)
{
    ltr_batch *b = arg;
    read_ctx c;
    ltr_buf mem = {0};
    int rc = read_ctx_init(&c);
    size_t keys = 0;
    uint64_t waits = device_waits(b);
    for (;;) {
        size_t i = __atomic_fetch_add(&b->next_seg, 1, __ATOMIC_RELAXED);
        if (i >= b->nseg)
            break;
        int r = rc                                            ? rc
              : __atomic_load_n(&b->stop, __ATOMIC_RELAXED) ? SEG_SKIPPED
                                                              : run_watched(b, &c, &mem, i, &waits);
        if (r < 0)
            __atomic_store_n(&b->stop, 1, __ATOMIC_RELAXED);
        size_t lo, hi;
        seg_bounds(b, i, &lo, &hi);
        keys += r ? 0 : hi - lo;
        finish_segment(b, i, r);
    }
    ltr_buf_free(&mem);
    store_count_reads(b->s, &c, keys);
    read_ctx_free(&c);
}

/* Segment i on the caller's thread. */
static void run_inline(ltr_batch *b, size_t i)
{
    read_ctx c;
    ltr_buf mem = {0};
    int rc = read_ctx_init(&c);
    uint64_t waits = device_waits(b);
    if (!rc)
        rc = run_watched(b, &c, &mem, i, &waits);
    if (!rc) {
        size_t lo, hi;
        seg_bounds(b, i, &lo, &hi);
        store_count_reads(b->s, &c, hi - lo);
    }
    ltr_buf_free(&mem);
    read_ctx_free(&c);
    finish_segment(b, i, rc);
}

/* The caller's next segment, i, is looked up on its thread when no thread of the pool has taken
 * it yet: none could start, or none is awake yet (a small batch then does not wait for them to
 * wake, and answers as fast as on the caller's thread alone). The threads take segments in
 * order, so once one has taken i the caller waits for it: no more than the pool's threads read
 * at once while they keep up. */
static void claim(ltr_batch *b, size_t i)
{
    size_t next = i;
    if (__atomic_compare_exchange_n(&b->next_seg, &next, i + 1, 0, __ATOMIC_RELAXED,
                                    __ATOMIC_RELAXED))
        run_inline(b, i);
}

static void batch_free(ltr_batch *b)
{
    for (size_t i = 0; i < b->nseg; i++) {
        ltr_buf_free(&b->seg[i].values);
        free(b->seg[i].voffs);
    }
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
    free(b->seg);
    free(b);
}

/* Keys per segment: with direct_io, few enough that each thread gets four segments or more. */
static size_t segment_keys(const ltr_store *s, size_t n)
{
    /* a small batch: SMALL_SEGMENTS, shared by the caller and the threads (and as many reads in
     * flight when it deepens) */
    if (!s->o.direct_io)
        return n >= SMALL_SEGMENTS * SEG_KEYS ? SEG_KEYS : n / SMALL_SEGMENTS + 1;
    size_t k = n / (4 * LTR_BATCH_READ_DEPTH);
    return k < 1 ? 1 : k > DIRECT_SEG_KEYS ? DIRECT_SEG_KEYS : k;
}

/* Threads for a batch of nseg segments: the pool's, at most one per segment. */
static unsigned batch_runs(const ltr_store *s, size_t nseg, int deep)
{
    int cap = __atomic_load_n(&batch_threads, __ATOMIC_RELAXED);
    size_t want = deep ? LTR_BATCH_READ_DEPTH : BATCH_THREADS;
    if (cap >= 0 && (size_t)cap < want)
        want = (size_t)cap;
    return (unsigned)(want < nseg ? want : nseg);
}

int ltr_store_batch_start(ltr_store *s, const uint8_t *kdata, const int64_t *koffs,
                          size_t klen_total, size_t n, int8_t *status, ltr_batch **out)
{
    *out = NULL;
    int rc = batch_check(koffs, n, klen_total, "keys");
    if (rc)
        return rc;
    ltr_batch *b = calloc(1, sizeof *b);
    size_t per = segment_keys(s, n), nseg = (n + per - 1) / per;
    if (b)
        b->seg = calloc(nseg ? nseg : 1, sizeof(segment));
    if (!b || !b->seg) {
        free(b);
        return ltr_fail(LTR_ENOMEM, "out of memory starting a batch get");
    }
    /* a buffered store's batch after one that waited for the device starts deep */
    int deep = s->o.direct_io || (__atomic_load_n(&s->batch_deep, __ATOMIC_RELAXED) &&
                                  !__atomic_load_n(&device_test, __ATOMIC_RELAXED));
    unsigned runs = batch_runs(s, nseg, deep);
    *b = (ltr_batch){.s = s, .kdata = kdata, .koffs = koffs, .n = n, .nseg = nseg,
                     .status = status, .seg = b->seg, .seg_keys = per, .deep = deep,
                     .planned = runs};
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    /* 0 (no thread could start): ltr_batch_next looks each segment up itself */
    b->threads = runs && s->batch_pool ? taskpool_post(s->batch_pool, &b->group, batch_worker, b, runs)
                                       : 0;
    *out = b;
    return LTR_OK;
}

int ltr_batch_next(ltr_batch *b, size_t *lo, size_t *hi, const uint8_t **values,
                   const int64_t **voffs)
{
    if (b->taken) { /* the caller is done with the previous segment */
        segment *p = &b->seg[b->taken - 1];
        ltr_buf_free(&p->values);
        free(p->voffs);
        p->voffs = NULL;
    }
    if (b->taken == b->nseg) {
        *lo = *hi = b->n;
        *values = NULL;
        *voffs = NULL;
        return LTR_OK;
    }
    segment *g = &b->seg[b->taken];
    claim(b, b->taken);
    pthread_mutex_lock(&b->mu);
    while (!g->done)
        pthread_cond_wait(&b->cv, &b->mu);
    int rc = g->rc ? ltr_error_raise(&b->err) : LTR_OK;
    pthread_mutex_unlock(&b->mu);
    if (rc)
        return rc;
    seg_bounds(b, b->taken++, lo, hi);
    *values = g->values.data;
    *voffs = g->voffs;
    return LTR_OK;
}

void ltr_batch_free(ltr_batch *b)
{
    if (!b)
        return;
    __atomic_store_n(&b->stop, 1, __ATOMIC_RELAXED); /* the caller may have given up early */
    if (b->threads) {
        taskpool_cancel(b->s->batch_pool, &b->group); /* runs not started: nothing left for them */
        taskpool_wait(b->s->batch_pool, &b->group);
    }
    if (b->more_threads) { /* posted by the caller or a run of group (all finished now) */
        taskpool_cancel(b->s->batch_pool, &b->more);
        taskpool_wait(b->s->batch_pool, &b->more);
    }
    if (!b->s->o.direct_io) { /* the next batch starts deep while batches wait for the device */
        int waited = __atomic_load_n(&b->waited, __ATOMIC_RELAXED);
        __atomic_store_n(&b->s->batch_deep, waited, __ATOMIC_RELAXED);
        if (waited)
            __atomic_fetch_add(&b->s->since_open.batches_deepened, 1, __ATOMIC_RELAXED);
    }
    batch_free(b);
}


/* A small batch on the caller's thread: keys [0, n) a chunk at a time. With defer, the keys that
 * must read a table are left GET_DEFERRED (not counted: get_direct looks them up again). */
static int get_inline(ltr_store *s, const uint8_t *kdata, const int64_t *koffs, size_t n,
                      int8_t *status, int64_t *voffs, ltr_buf *values, int defer)
{
    read_ctx c;
    ltr_buf mem = {0};
    int rc = read_ctx_init(&c);
    c.defer = defer;
    for (size_t lo = 0; lo < n && !rc; lo += GET_CHUNK)
        rc = store_get_chunk(s, &c, kdata, koffs, lo, lo + GET_CHUNK < n ? lo + GET_CHUNK : n,
                             status, voffs, 0, values, &mem);
    ltr_buf_free(&mem);
    size_t answered = n;
    for (size_t i = 0; defer && i < n; i++)
        answered -= status[i] == GET_DEFERRED;
    if (!rc)
        store_count_reads(s, &c, answered);
    read_ctx_free(&c);
    return rc;
}

/* A large batch through the streamed one (store_batch.c), its segments' values appended in
 * order. */
static int get_streamed(ltr_store *s, const uint8_t *kdata, const int64_t *koffs,
                        size_t klen_total, size_t n, int8_t *status, int64_t *voffs,
                        ltr_buf *values)
{
    ltr_batch *b;
    int rc = ltr_store_batch_start(s, kdata, koffs, klen_total, n, status, &b);
    for (size_t lo = 0, hi = 0; !rc;) {
        const uint8_t *data;
        const int64_t *ends;
        if ((rc = ltr_batch_next(b, &lo, &hi, &data, &ends)) || lo == hi)
            break;
        size_t base = values->len;
        if ((rc = buf_append(values, data, (size_t)ends[hi - lo])))
            break;
        for (size_t i = lo; i < hi; i++)
            voffs[i + 1] = (int64_t)base + ends[i - lo + 1];
    }
    ltr_batch_free(b);
    return rc;
}

/* ---- with direct_io: a first pass on the caller's thread, then the reads on the pool's ---- */

/* The keys a first pass deferred, packed as a batch of their own, and their answers. */
typedef struct deferred {
    size_t n;
    ltr_buf keys;
    int64_t *koffs;  /* n + 1 */
    int8_t *status;
    int64_t *voffs;  /* n + 1, from 0 */
    ltr_buf values;
} deferred;

static int defer_collect(deferred *d, const uint8_t *kdata, const int64_t *koffs,
                         const int8_t *status, size_t n)
{
    for (size_t i = 0; i < n; i++)
        d->n += status[i] == GET_DEFERRED;
    d->koffs = malloc(sizeof(int64_t) * (d->n + 1));
    d->voffs = malloc(sizeof(int64_t) * (d->n + 1));
    d->status = malloc(d->n ? d->n : 1);
    if (!d->koffs || !d->voffs || !d->status)
        return ltr_fail(LTR_ENOMEM, "out of memory in a batch get");
    d->koffs[0] = d->voffs[0] = 0;
    int rc = LTR_OK;
    for (size_t i = 0, j = 0; i < n && !rc; i++)
        if (status[i] == GET_DEFERRED) {
            rc = buf_append(&d->keys, kdata + koffs[i], (size_t)(koffs[i + 1] - koffs[i]));
            d->koffs[++j] = (int64_t)d->keys.len;
        }
    return rc;
}

static void defer_free(deferred *d)
{
    ltr_buf_free(&d->keys);
    ltr_buf_free(&d->values);
    free(d->koffs);
    free(d->status);
    free(d->voffs);
}

/* Appends bytes [from[k], from[k + 1]) of data to values. */
static int append_value(ltr_buf *values, const ltr_buf *data, const int64_t *from, size_t k)
{
    size_t len = (size_t)(from[k + 1] - from[k]);
    return len ? buf_append(values, data->data + from[k], len) : LTR_OK;
}

/* The answers of both passes, in key order, into the caller's status, voffs and values. */
static int merge_passes(size_t n, int8_t *status, const int64_t *fo, const ltr_buf *first,
                        const deferred *d, int64_t *voffs, ltr_buf *values)
{
    int rc = LTR_OK;
    for (size_t i = 0, j = 0; i < n && !rc; i++) {
        if (status[i] == GET_DEFERRED) {
            status[i] = d->status[j];
            rc = append_value(values, &d->values, d->voffs, j++);
        } else {
            rc = append_value(values, first, fo, i);
        }
        voffs[i + 1] = (int64_t)values->len;
    }
    return rc;
}

/* A batch of a direct store (of two keys or more). A first pass on the caller's thread answers
 * every key that needs no read of a table (memtables, filters, BloomClusters: most misses) and
 * defers the others, which are then looked up again from the start, by the pool's threads when
 * two or more can read at once. So a batch waits for threads only when reads can overlap
 * (started on the pool, a batch of 32 misses took six times as long as the same gets one by
 * one), and every answer is a single get's. */
static int get_direct(ltr_store *s, const uint8_t *kdata, const int64_t *koffs, size_t n,
                      int8_t *status, int64_t *voffs, ltr_buf *values)
{
    ltr_buf first = {0};
    deferred d = {0};
    int64_t *fo = malloc(sizeof(int64_t) * (n + 1));
    int rc = fo ? LTR_OK : ltr_fail(LTR_ENOMEM, "out of memory in a batch get");
    if (!rc) {
        fo[0] = 0;
        rc = get_inline(s, kdata, koffs, n, status, fo, &first, 1);
    }
    if (!rc)
        rc = defer_collect(&d, kdata, koffs, status, n);
    if (!rc && d.n > 1)
        rc = get_streamed(s, d.keys.data, d.koffs, d.keys.len, d.n, d.status, d.voffs, &d.values);
    else if (!rc && d.n)
        rc = get_inline(s, d.keys.data, d.koffs, d.n, d.status, d.voffs, &d.values, 0);
    if (!rc)
        rc = merge_passes(n, status, fo, &first, &d, voffs, values);
    defer_free(&d);
    ltr_buf_free(&first);
    free(fo);
    return rc;
}

/* Smaller batches are not worth waking the pool's threads. The threads live as long as the
 * store, so waking them is cheap: batches of 1,000 keys (a common size) gained a fifth to a half
 * on two threads over the caller's alone (docs/benchmarks.md, "Measurements behind choices in
 * the code"). */
#define PARALLEL_MIN 512
/* With direct_io, batches of two keys up to this many take get_direct's first pass; larger ones
 * go to the pool at once, where waking its threads costs little beside the batch (1,024 misses
 * took 0.58 times as long as one by one) and a first pass would delay every read. */
#define FIRST_PASS_MAX 512

int ltr_store_get_many(ltr_store *s, const uint8_t *kdata, const int64_t *koffs,
                       size_t klen_total, size_t n, int8_t *status, int64_t *voffs,
                       ltr_buf *values)
{
    int rc = batch_check(koffs, n, klen_total, "keys");
    if (rc)
        return rc;
    voffs[0] = (int64_t)values->len;
    if (s->o.direct_io && n > 1 && n <= FIRST_PASS_MAX)
        return get_direct(s, kdata, koffs, n, status, voffs, values);
    if (n >= PARALLEL_MIN || (s->o.direct_io && n > 1))
        return get_streamed(s, kdata, koffs, klen_total, n, status, voffs, values);
    return get_inline(s, kdata, koffs, n, status, voffs, values, 0);
}
