/* pread_files.c: what one 4 KB pread from the page cache costs as the same bytes are spread
 * over more files (bench/pread_files.py builds and runs it). A store's lookups read one bucket
 * of a random table; with a table per file, the kernel's per-file structures (descriptor,
 * inode, page-cache tree) of thousands of files miss the CPU caches on most reads.
 *
 * With URING_BATCH > 0, each layout is also read through io_uring, URING_BATCH reads per
 * submission on registered descriptors (the same pages in the same order), to see whether
 * batching the system calls of a get_many would pay.
 *
 * usage: pread_files DIR TOTAL_MB READS ROUNDS URING_BATCH FILES...
 * (prints FILES<TAB>MODE<TAB>us per read, a line per layout, mode and round) */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/io_uring.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "uring.h"

#define PAGE 4096
#define MAX_BATCH 256

/* Process CPU: io_uring may hand work to its own worker threads. */
static double cpu_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static uint64_t next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Writes `files` files of `pages` pages each under dir and opens them for reading. */
static int *make_files(const char *dir, int files, long pages, char *buf)
{
    int *fds = malloc(sizeof(int) * files);
    char name[4096];
    uint64_t s = 0x9E3779B97F4A7C15ull;
    if (!fds) {
        perror("malloc");
        exit(1);
    }
    for (int i = 0; i < files; i++) {
        snprintf(name, sizeof name, "%s/%d", dir, i);
        int w = open(name, O_CREAT | O_WRONLY | O_TRUNC, 0644);
        for (long p = 0; w >= 0 && p < pages; p++) {
            for (int j = 0; j < PAGE; j += 8)
                *(uint64_t *)(buf + j) = next(&s);
            if (write(w, buf, PAGE) != PAGE) {
                perror("write");
                exit(1);
            }
        }
        if (w < 0 || close(w) || (fds[i] = open(name, O_RDONLY)) < 0) {
            perror(name);
            exit(1);
        }
    }
    return fds;
}

static void drop_files(const char *dir, int *fds, int files)
{
    char name[4096];
    for (int i = 0; i < files; i++) {
        close(fds[i]);
        snprintf(name, sizeof name, "%s/%d", dir, i);
        unlink(name);
    }
    free(fds);
}

static void die(const char *what) { ring_die(what); }

/* A ring of MAX_BATCH entries with the files registered. */
static void ring_open(ring *r, int *fds, int files)
{
    ring_setup(r, MAX_BATCH);
    if (syscall(__NR_io_uring_register, r->fd, IORING_REGISTER_FILES, fds, files) < 0)
        die("io_uring_register");
}

/* CPU microseconds per read through the ring, batch reads per submission (the pages of
 * time_reads, in its order). */
static double time_uring(ring *r, int files, long pages, long reads, int batch, char *bufs)
{
    uint64_t s = 88172645463325252ull;
    double t0 = cpu_now();
    for (long i = 0; i < reads; i += batch) {
        unsigned tail = *r->sq_tail;
        for (int b = 0; b < batch; b++) {
            uint64_t x = next(&s);
            struct io_uring_sqe *e = &r->sqes[(tail + b) & *r->sq_mask];
            memset(e, 0, sizeof *e);
            e->opcode = IORING_OP_READ;
            e->flags = IOSQE_FIXED_FILE;
            e->fd = (int)(x % files);
            e->addr = (uint64_t)(uintptr_t)(bufs + (size_t)b * PAGE);
            e->len = PAGE;
            e->off = (x >> 32) % pages * PAGE;
        }
        __atomic_store_n(r->sq_tail, tail + batch, __ATOMIC_RELEASE);
        if (syscall(__NR_io_uring_enter, r->fd, batch, batch, IORING_ENTER_GETEVENTS, NULL, 0) !=
            batch)
            die("io_uring_enter");
        unsigned h = *r->cq_head, t = __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE);
        if (t - h != (unsigned)batch) {
            fprintf(stderr, "io_uring: %u completions of %d\n", t - h, batch);
            exit(1);
        }
        for (; h != t; h++)
            if (r->cqes[h & *r->cq_mask].res != PAGE) {
                fprintf(stderr, "io_uring read: %d\n", r->cqes[h & *r->cq_mask].res);
                exit(1);
            }
        __atomic_store_n(r->cq_head, h, __ATOMIC_RELEASE);
    }
    return (cpu_now() - t0) / reads * 1e6;
}

/* CPU microseconds per pread of a random page of a random file. */
static double time_reads(int *fds, int files, long pages, long reads, char *buf)
{
    uint64_t s = 88172645463325252ull;
    double t0 = cpu_now();
    for (long i = 0; i < reads; i++) {
        uint64_t r = next(&s);
        if (pread(fds[r % files], buf, PAGE, (off_t)((r >> 32) % pages) * PAGE) != PAGE) {
            perror("pread");
            exit(1);
        }
    }
    return (cpu_now() - t0) / reads * 1e6;
}

int main(int argc, char **argv)
{
    if (argc < 7) {
        fprintf(stderr, "usage: %s DIR TOTAL_MB READS ROUNDS URING_BATCH FILES...\n", argv[0]);
        return 2;
    }
    long total = atol(argv[2]) * (1024 * 1024 / PAGE), reads = atol(argv[3]);
    int rounds = atoi(argv[4]), batch = atoi(argv[5]);
    if (batch < 0 || batch > MAX_BATCH || (batch && reads % batch)) {
        fprintf(stderr, "URING_BATCH: 0 to %d, dividing READS\n", MAX_BATCH);
        return 2;
    }
    char *buf = aligned_alloc(PAGE, (size_t)PAGE * MAX_BATCH);
    if (!buf)
        die("aligned_alloc");
    for (int r = 0; r < rounds; r++)
        for (int a = 6; a < argc; a++) { /* layouts alternate within each round */
            int files = atoi(argv[a]);
            long pages = total / files;
            int *fds = make_files(argv[1], files, pages, buf);
            time_reads(fds, files, pages, reads / 4, buf); /* warms the caches */
            printf("%d\tpread\t%.3f\n", files, time_reads(fds, files, pages, reads, buf));
            if (batch) {
                ring q;
                ring_open(&q, fds, files);
                printf("%d\turing\t%.3f\n", files, time_uring(&q, files, pages, reads, batch, buf));
                close(q.fd); /* (its mappings go with the process) */
            }
            fflush(stdout);
            drop_files(argv[1], fds, files);
        }
    return 0;
}
