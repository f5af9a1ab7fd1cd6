/* pread_files.c: what one 4 KB pread from the page cache costs as the same bytes are spread
 * over more files (bench/pread_files.py builds and runs it). A store's lookups read one bucket
 * of a random table; with a table per file, the kernel's per-file structures (descriptor,
 * inode, page-cache tree) of thousands of files miss the CPU caches on most reads.
 *
 * usage: pread_files DIR TOTAL_MB READS ROUNDS FILES...   (prints FILES<TAB>us per read, a line per layout and round) */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096

static double cpu_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
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
    if (argc < 6) {
        fprintf(stderr, "usage: %s DIR TOTAL_MB READS ROUNDS FILES...\n", argv[0]);
        return 2;
    }
    long total = atol(argv[2]) * (1024 * 1024 / PAGE), reads = atol(argv[3]);
    int rounds = atoi(argv[4]);
    char *buf = aligned_alloc(PAGE, PAGE);
    for (int r = 0; r < rounds; r++)
        for (int a = 5; a < argc; a++) { /* layouts alternate within each round */
            int files = atoi(argv[a]);
            long pages = total / files;
            int *fds = make_files(argv[1], files, pages, buf);
            time_reads(fds, files, pages, reads / 4, buf); /* warms the caches */
            double us = time_reads(fds, files, pages, reads, buf);
            printf("%d\t%.3f\n", files, us);
            fflush(stdout);
            drop_files(argv[1], fds, files);
        }
    return 0;
}
