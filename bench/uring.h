/* uring.h: a bare io_uring for the benchmarks' C helpers (pread_files.c, device_reads.c), made
 * with raw system calls (no liburing here). Header only: each helper is one gcc command. */
#ifndef BENCH_URING_H
#define BENCH_URING_H

#include <linux/io_uring.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

typedef struct ring {
    int fd;
    unsigned *sq_tail, *sq_mask, *cq_head, *cq_tail, *cq_mask;
    struct io_uring_sqe *sqes;
    struct io_uring_cqe *cqes;
} ring;

static void ring_die(const char *what)
{
    perror(what);
    exit(1);
}

/* A ring of `entries` submission entries, its queues mapped, entry i at index i. */
static void ring_setup(ring *r, unsigned entries)
{
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    if ((r->fd = (int)syscall(__NR_io_uring_setup, entries, &p)) < 0)
        ring_die("io_uring_setup");
    if (!(p.features & IORING_FEAT_SINGLE_MMAP)) {
        fprintf(stderr, "io_uring without IORING_FEAT_SINGLE_MMAP\n");
        exit(1);
    }
    size_t sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    size_t cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    char *q = mmap(NULL, sq_len > cq_len ? sq_len : cq_len, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQ_RING);
    r->sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQES);
    if (q == MAP_FAILED || r->sqes == MAP_FAILED)
        ring_die("mmap of the ring");
    r->sq_tail = (unsigned *)(q + p.sq_off.tail);
    r->sq_mask = (unsigned *)(q + p.sq_off.ring_mask);
    r->cq_head = (unsigned *)(q + p.cq_off.head);
    r->cq_tail = (unsigned *)(q + p.cq_off.tail);
    r->cq_mask = (unsigned *)(q + p.cq_off.ring_mask);
    r->cqes = (struct io_uring_cqe *)(q + p.cq_off.cqes);
    unsigned *array = (unsigned *)(q + p.sq_off.array);
    for (unsigned i = 0; i < p.sq_entries; i++)
        array[i] = i;
}

#endif
