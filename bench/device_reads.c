/* device_reads.c: the device's own rate of random 4 KB O_DIRECT reads at a queue depth, the
 * baseline bench/store.py --direct sets a direct_io store's gets against (measure.py builds and
 * runs it). Each read takes a random file of those given (weighted by its size) and a random
 * whole 4 KB block of it, as a get takes a random bucket of a random table.
 *
 * Two ways to keep DEPTH reads in flight: `threads` (DEPTH threads, each waiting in pread for
 * one read: what the store's batched gets do) and `uring` (one thread keeping DEPTH reads
 * queued in one io_uring, raw system calls). DEPTH 1 with `threads` is one synchronous reader.
 *
 * usage: device_reads SECONDS DEPTH threads|uring < FILES (one name a line: a store has
 * thousands of tables)
 * prints: reads<TAB>seconds<TAB>cpu_seconds (every thread of the process) */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/io_uring.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "uring.h"

#define BLOCK 4096
#define MAX_DEPTH 256

static int nfiles;
static int *fds;
static uint64_t *upto; /* upto[i]: the blocks of files 0..i */
static double deadline;

static double now(clockid_t clock)
{
    struct timespec t;
    clock_gettime(clock, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static uint64_t next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void die(const char *what) { ring_die(what); }

/* A random whole block of a random file: its descriptor, and its offset in *off. */
static int pick(uint64_t *s, uint64_t *off)
{
    uint64_t b = next(s) % upto[nfiles - 1];
    int lo = 0, hi = nfiles - 1;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (upto[mid] <= b)
            lo = mid + 1;
        else
            hi = mid;
    }
    *off = (b - (lo ? upto[lo - 1] : 0)) * BLOCK;
    return fds[lo];
}

/* Opens each file named on standard input for O_DIRECT reads. */
static void open_files(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    char name[4096];
    for (int cap = 0; fgets(name, sizeof name, stdin);) {
        name[strcspn(name, "\n")] = 0;
        if (!name[0])
            continue;
        if (nfiles == cap) {
            cap = cap ? 2 * cap : 1024;
            fds = realloc(fds, sizeof(int) * (size_t)cap);
            upto = realloc(upto, sizeof(uint64_t) * (size_t)cap);
            if (!fds || !upto)
                die("realloc");
        }
        struct stat st;
        int fd = open(name, O_RDONLY | O_DIRECT);
        if (fd < 0 || fstat(fd, &st) != 0)
            die(name);
        uint64_t blocks = (uint64_t)st.st_size / BLOCK; /* whole blocks only */
        if (!blocks) {
            close(fd);
            continue;
        }
        fds[nfiles] = fd;
        upto[nfiles] = (nfiles ? upto[nfiles - 1] : 0) + blocks;
        nfiles++;
    }
    if (!nfiles) {
        fprintf(stderr, "no file of a whole block\n");
        exit(1);
    }
}

static void *reader(void *arg)
{
    uint64_t s = (uintptr_t)arg * 0x9E3779B97F4A7C15ull + 1, reads = 0, off;
    void *buf;
    if (posix_memalign(&buf, BLOCK, BLOCK))
        die("posix_memalign");
    while (now(CLOCK_MONOTONIC) < deadline) {
        int fd = pick(&s, &off);
        if (pread(fd, buf, BLOCK, (off_t)off) != BLOCK)
            die("pread");
        reads++;
    }
    free(buf);
    return (void *)(uintptr_t)reads;
}

static uint64_t run_threads(int depth)
{
    pthread_t t[MAX_DEPTH];
    uint64_t reads = 0;
    for (int i = 0; i < depth; i++)
        if (pthread_create(&t[i], NULL, reader, (void *)(uintptr_t)(i + 1)))
            die("pthread_create");
    for (int i = 0; i < depth; i++) {
        void *r;
        pthread_join(t[i], &r);
        reads += (uintptr_t)r;
    }
    return reads;
}

/* Queues reads into the free buffers (their indexes in free_[0, *nfree)); returns how many. */
static unsigned submit(ring *r, char *bufs, int *free_, int *nfree, uint64_t *s)
{
    unsigned tail = *r->sq_tail, k = 0;
    while (*nfree) {
        int b = free_[--*nfree];
        uint64_t off;
        struct io_uring_sqe *e = &r->sqes[(tail + k++) & *r->sq_mask];
        memset(e, 0, sizeof *e);
        e->opcode = IORING_OP_READ;
        e->fd = pick(s, &off);
        e->off = off;
        e->addr = (uint64_t)(uintptr_t)(bufs + (size_t)b * BLOCK);
        e->len = BLOCK;
        e->user_data = (uint64_t)b;
    }
    __atomic_store_n(r->sq_tail, tail + k, __ATOMIC_RELEASE);
    return k;
}

static uint64_t run_uring(int depth)
{
    ring r;
    ring_setup(&r, (unsigned)depth);
    char *bufs;
    int free_[MAX_DEPTH], nfree = depth, inflight = 0;
    uint64_t s = 88172645463325252ull, reads = 0;
    if (posix_memalign((void **)&bufs, BLOCK, (size_t)depth * BLOCK))
        die("posix_memalign");
    for (int i = 0; i < depth; i++)
        free_[i] = i;
    unsigned unsubmitted = 0; /* queued in the ring, not yet taken by the kernel */
    while (inflight || now(CLOCK_MONOTONIC) < deadline) {
        unsigned k = now(CLOCK_MONOTONIC) < deadline ? submit(&r, bufs, free_, &nfree, &s) : 0;
        inflight += (int)k;
        unsubmitted += k;
        long took = syscall(__NR_io_uring_enter, r.fd, unsubmitted, 1, IORING_ENTER_GETEVENTS,
                            NULL, 0);
        if (took < 0)
            die("io_uring_enter");
        unsubmitted -= (unsigned)took; /* the kernel may take fewer than offered */
        unsigned head = *r.cq_head, tail = __atomic_load_n(r.cq_tail, __ATOMIC_ACQUIRE);
        for (; head != tail; head++) {
            struct io_uring_cqe *c = &r.cqes[head & *r.cq_mask];
            if (c->res != BLOCK) {
                fprintf(stderr, "a read returned %d\n", c->res);
                exit(1);
            }
            free_[nfree++] = (int)c->user_data;
            inflight--;
            reads++;
        }
        __atomic_store_n(r.cq_head, head, __ATOMIC_RELEASE);
    }
    free(bufs);
    return reads;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s SECONDS DEPTH threads|uring < FILES\n", argv[0]);
        return 2;
    }
    double seconds = atof(argv[1]);
    int depth = atoi(argv[2]);
    int uring = strcmp(argv[3], "uring") == 0;
    if (depth < 1 || depth > MAX_DEPTH || (!uring && strcmp(argv[3], "threads") != 0)) {
        fprintf(stderr, "DEPTH must be 1..%d and the mode threads or uring\n", MAX_DEPTH);
        return 2;
    }
    open_files();
    double t0 = now(CLOCK_MONOTONIC), c0 = now(CLOCK_PROCESS_CPUTIME_ID);
    deadline = t0 + seconds;
    uint64_t reads = uring ? run_uring(depth) : run_threads(depth);
    printf("%llu\t%.6f\t%.6f\n", (unsigned long long)reads, now(CLOCK_MONOTONIC) - t0,
           now(CLOCK_PROCESS_CPUTIME_ID) - c0);
    return 0;
}
