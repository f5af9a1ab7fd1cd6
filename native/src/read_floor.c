/* read_floor.c: ltr_store_read_floor, the benchmark's reference for reads. It reads random
 * buckets of the current version's tables the way a lookup reads its bucket (pread through the
 * table's descriptor cache, then the bucket's CRC32C) and nothing else, so a batched lookup's
 * cost can be set against what its bucket read alone costs on the machine as it is then. */
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "htable_read.h"
#include "store_int.h"

#define FLOOR_THREADS 8

typedef struct floor_job {
    ltr_htable *const *t;
    const uint64_t *upto; /* upto[i]: the buckets of tables 0..i */
    size_t ntables;
    uint64_t n, seed;
    double cpu;
    ltr_error err;
} floor_job;

static double thread_cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The table holding bucket b of all of them (upto is sorted). */
static size_t table_of(const floor_job *j, uint64_t b)
{
    size_t lo = 0, hi = j->ntables - 1;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (j->upto[mid] <= b)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void *floor_run(void *arg)
{
    floor_job *j = arg;
    double c0 = thread_cpu();
    read_ctx c;
    int rc = read_ctx_init(&c);
    uint64_t x = j->seed * 0x9E3779B97F4A7C15ull + 1, total = j->upto[j->ntables - 1];
    for (uint64_t i = 0; i < j->n && !rc; i++) {
        x ^= x << 13; /* xorshift64 */
        x ^= x >> 7;
        x ^= x << 17;
        uint64_t b = x % total;
        size_t k = table_of(j, b);
        bucket_footer f;
        uint32_t bucket = (uint32_t)(b - (k ? j->upto[k - 1] : 0));
        if (!table_bucket(j->t[k], &c, bucket, &f, &rc) && !rc)
            rc = ltr_fail(LTR_ECORRUPT, "bucket read failed");
    }
    read_ctx_free(&c);
    if (rc)
        ltr_error_keep(&j->err, rc);
    j->cpu = thread_cpu() - c0;
    return NULL;
}

/* The tables of v and their cumulative bucket counts. */
static int collect_tables(const version *v, ltr_htable ***t, uint64_t **upto, size_t *n)
{
    size_t k = 0;
    viter it = {0};
    *n = 0;
    for (const vnode *nd; (nd = viter_next(v, &it));)
        *n += nd->n;
    if (!*n)
        return ltr_fail(LTR_EINVAL, "the store has no tables to read");
    *t = malloc(sizeof **t * *n);
    *upto = malloc(sizeof **upto * *n);
    if (!*t || !*upto)
        return ltr_fail(LTR_ENOMEM, "out of memory");
    it = (viter){0};
    for (const vnode *nd; (nd = viter_next(v, &it));)
        for (uint32_t i = 0; i < nd->n; i++, k++) {
            (*t)[k] = nd->tables[i]->t;
            (*upto)[k] = (k ? (*upto)[k - 1] : 0) + (*t)[k]->buckets;
        }
    return LTR_OK;
}

int ltr_store_read_floor(ltr_store *s, uint64_t n, uint32_t threads, uint64_t seed,
                         double *seconds, double *cpu_seconds)
{
    *seconds = *cpu_seconds = 0;
    if (threads < 1 || threads > FLOOR_THREADS)
        return ltr_fail(LTR_EINVAL, "threads must be 1..%d, got %u", FLOOR_THREADS, threads);
    version *v = store_pin(s);
    ltr_htable **t = NULL;
    uint64_t *upto = NULL;
    size_t ntables;
    int rc = collect_tables(v, &t, &upto, &ntables);
    floor_job jobs[FLOOR_THREADS];
    pthread_t tid[FLOOR_THREADS];
    uint32_t started = 0;
    double t0 = store_now();
    for (uint32_t i = 0; !rc && i < threads; i++, started++) {
        jobs[i] = (floor_job){t, upto, ntables, n / threads + (i < n % threads), seed + i, 0, {0}};
        if (i && pthread_create(&tid[i], NULL, floor_run, &jobs[i]) != 0) {
            rc = ltr_fail(LTR_ENOMEM, "cannot start a reading thread");
            break;
        }
    }
    if (started) /* the first share runs here, also when a thread could not start */
        floor_run(&jobs[0]);
    for (uint32_t i = 1; i < started; i++)
        pthread_join(tid[i], NULL);
    *seconds = store_now() - t0;
    for (uint32_t i = 0; i < started; i++) {
        *cpu_seconds += jobs[i].cpu;
        if (!rc && jobs[i].err.rc)
            rc = ltr_error_raise(&jobs[i].err);
    }
    free(t);
    free(upto);
    version_unref(v);
    return rc;
}
