/* powercut.c: an LD_PRELOAD library for the power-cut tests (tests/powercut.py).
 *
 * A SIGKILL loses nothing the process handed to the kernel, so it cannot show a missing fsync.
 * This library keeps, while the process runs, the image a power cut would leave of the watched
 * directories under the weakest POSIX model:
 *   - a file holds the bytes it had at its last fsync or fdatasync (nothing before its first);
 *   - a directory holds the entries it had at its last fsync (its own, not its files');
 *   - syncfs and sync make everything durable as it is.
 * The image lives in a shadow directory: per watched directory a listing (its files' names,
 * inodes and generations, its subdirectories' names) and per inode generation a file's bytes,
 * each written to a temporary name and renamed, so a SIGKILL at any moment leaves a whole
 * image. The test kills the process, builds the directories from the image (powercut.py) and
 * reopens the store there. A watched directory inside another watched one is there only if
 * the outer one's listing names it.
 *
 * Inode numbers are reused once a file is gone, so the bytes are keyed by inode and generation:
 * every file this process creates in a watched directory gets a new generation; the files there
 * at the start are generation 0, recorded whole (the previous run's result is durable).
 *
 * Records are made one at a time (image_mu), creations included: two threads syncing the same
 * directory must leave the listing of the later sync, not whichever finished writing last, and
 * a listing must never see a new file before its new generation.
 *
 * Environment: POWERCUT_WATCH (directories, ':'-separated, at most 4), POWERCUT_SHADOW, and
 * optionally POWERCUT_AT=n: the process kills itself at the n-th sync of a watched file or
 * directory (or syncfs, or sync), before it takes effect, so a test can cut the power at chosen
 * points; the shadow's "trace" lists the syncs made. POWERCUT_JITTER_US=n sleeps a random 0 to
 * n microseconds before each record is published, which widens any race in the recording. */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_WATCH 4
#define GEN_SLOTS (1u << 16)

static char watch[MAX_WATCH][PATH_MAX / 2];
static int nwatch;
static char shadow[PATH_MAX / 2];
static int active;
static long cut_at; /* POWERCUT_AT: the sync call (1, 2, ...) at which the power goes */
static long syncs;  /* sync calls on the watched directories so far */
static long jitter_us; /* POWERCUT_JITTER_US */
/* Held while the image or the generations change: recursive, as the library's own opens may
 * come back through open() below. */
static pthread_mutex_t image_mu = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;

static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_syncfs)(int);
static void (*real_sync)(void);
static int (*real_open)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);

/* ---- generations: inode -> generation of the file now holding that inode number ---- */

/* (image_mu held for all of these) */
static struct { uint64_t ino, gen; } gens[GEN_SLOTS];
static uint32_t ngens;
static uint64_t next_gen = 1;

static void die(const char *what, const char *path);
static void count_sync(char kind, const char *path);

static uint64_t *gen_slot(uint64_t ino)
{
    uint32_t i = (uint32_t)(ino * 0x9E3779B97F4A7C15ull >> 48) & (GEN_SLOTS - 1);
    while (gens[i].ino && gens[i].ino != ino)
        i = (i + 1) & (GEN_SLOTS - 1);
    if (!gens[i].ino) {
        if (++ngens > GEN_SLOTS / 2) {
            errno = EOVERFLOW;
            die("too many inodes seen for", shadow);
        }
        gens[i].ino = ino; /* generation 0 until a creation is seen */
    }
    return &gens[i].gen;
}

static uint64_t gen_of(uint64_t ino) { return *gen_slot(ino); }

static void gen_new(uint64_t ino) { *gen_slot(ino) = next_gen++; }

/* ---- the shadow image (image_mu held) ---- */

static void jitter(void)
{
    static unsigned seed = 1;
    if (jitter_us > 0)
        usleep((useconds_t)(rand_r(&seed) % jitter_us));
}

static int watched_dir(const char *path)
{
    for (int i = 0; i < nwatch; i++)
        if (strcmp(path, watch[i]) == 0)
            return i;
    return -1;
}

/* Whether path (absolute) names an entry of a watched directory. */
static int in_watched(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return 0;
    char dir[PATH_MAX];
    size_t n = (size_t)(slash - path);
    if (n >= sizeof dir)
        return 0;
    memcpy(dir, path, n);
    dir[n] = 0;
    return watched_dir(dir) >= 0;
}

static void tmp_name(char *out, size_t cap)
{
    static uint64_t seq;
    snprintf(out, cap, "%s/.tmp-%ld-%llu", shadow, (long)syscall(SYS_gettid),
             (unsigned long long)__atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED));
}

static void die(const char *what, const char *path)
{
    /* the image would be wrong from here on: better no image than a false one */
    fprintf(stderr, "powercut: %s %s: %s\n", what, path, strerror(errno));
    _exit(99);
}

/* Copies the file open for reading as fd (its inode) into the image. */
static void record_file(int fd, uint64_t ino)
{
    char tmp[PATH_MAX], dst[PATH_MAX];
    tmp_name(tmp, sizeof tmp);
    int out = real_open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0)
        die("cannot create", tmp);
    char buf[1 << 16];
    for (off_t at = 0;;) {
        ssize_t n = pread(fd, buf, sizeof buf, at);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            die("cannot read the file to record as", tmp);
        if (n == 0)
            break;
        if (write(out, buf, (size_t)n) != n)
            die("cannot write", tmp);
        at += n;
    }
    close(out);
    snprintf(dst, sizeof dst, "%s/f-%llu-%llu", shadow, (unsigned long long)ino,
             (unsigned long long)gen_of(ino));
    jitter();
    if (rename(tmp, dst) != 0)
        die("cannot rename", tmp);
}

/* Writes the listing of watched directory i: a line "f ino gen name" per file and "d ino 0
 * name" per subdirectory. */
static void record_dir(int i)
{
    char tmp[PATH_MAX], dst[PATH_MAX];
    tmp_name(tmp, sizeof tmp);
    FILE *f = fopen(tmp, "we");
    if (!f)
        die("cannot create", tmp);
    DIR *d = opendir(watch[i]);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            struct stat sb;
            if (e->d_name[0] == '.' && (!e->d_name[1] || (e->d_name[1] == '.' && !e->d_name[2])))
                continue;
            if (fstatat(dirfd(d), e->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0)
                continue; /* gone meanwhile */
            if (S_ISREG(sb.st_mode))
                fprintf(f, "f %llu %llu %s\n", (unsigned long long)sb.st_ino,
                        (unsigned long long)gen_of(sb.st_ino), e->d_name);
            else if (S_ISDIR(sb.st_mode))
                fprintf(f, "d %llu 0 %s\n", (unsigned long long)sb.st_ino, e->d_name);
        }
        closedir(d);
    }
    if (fclose(f) != 0)
        die("cannot write", tmp);
    snprintf(dst, sizeof dst, "%s/d-%d", shadow, i);
    jitter();
    if (rename(tmp, dst) != 0)
        die("cannot rename", tmp);
}

/* Everything as it is now: every watched directory and every file in it. */
static void record_all(void)
{
    for (int i = 0; i < nwatch; i++) {
        DIR *d = opendir(watch[i]);
        if (d) {
            struct dirent *e;
            while ((e = readdir(d))) {
                int fd = openat(dirfd(d), e->d_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
                struct stat sb;
                if (fd < 0)
                    continue;
                if (fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode))
                    record_file(fd, sb.st_ino);
                close(fd);
            }
            closedir(d);
        }
        record_dir(i);
    }
}

/* The fsync of fd as the image sees it: a watched directory's entries, or a file's bytes. */
static void record_fd(int fd)
{
    struct stat sb;
    char link[64], path[PATH_MAX];
    if (fstat(fd, &sb) != 0)
        return;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0)
        return;
    path[n] = 0;
    if (S_ISDIR(sb.st_mode)) {
        int i = watched_dir(path);
        if (i >= 0) {
            count_sync('d', path);
            record_dir(i);
        }
        return;
    }
    if (!S_ISREG(sb.st_mode))
        return;
    const char *gone = " (deleted)";
    size_t g = strlen(gone);
    if ((size_t)n > g && strcmp(path + n - g, gone) == 0)
        path[n - g] = 0; /* unlinked: still the durable entry's bytes if its unlink is not */
    if (!in_watched(path))
        return;
    count_sync('f', path);
    int rd = real_open(link, O_RDONLY | O_CLOEXEC); /* fd may be open for writing only */
    if (rd < 0)
        die("cannot reopen to record", path);
    record_file(rd, sb.st_ino);
    close(rd);
}

/* Counts a sync of the watched directories; at the POWERCUT_AT-th the power goes before it
 * takes effect (the process kills itself). Each sync that does take effect is appended to the
 * shadow's "trace": "<n> <kind> <path>", kind f (a file), d (a directory) or s (syncfs, sync). */
static void count_sync(char kind, const char *path)
{
    long n = __atomic_add_fetch(&syncs, 1, __ATOMIC_SEQ_CST);
    if (cut_at && n >= cut_at)
        kill(getpid(), SIGKILL);
    char line[PATH_MAX + 64], trace[PATH_MAX];
    int len = snprintf(line, sizeof line, "%ld %c %s\n", n, kind, path);
    snprintf(trace, sizeof trace, "%s/trace", shadow);
    int fd = real_open(trace, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, line, (size_t)len) != len)
        die("cannot append to", trace);
    close(fd);
}

/* ---- the intercepted calls ---- */

static void record_fd_locked(int fd)
{
    pthread_mutex_lock(&image_mu);
    record_fd(fd);
    pthread_mutex_unlock(&image_mu);
}

static void record_all_locked(const char *kind)
{
    pthread_mutex_lock(&image_mu);
    count_sync('s', kind);
    record_all();
    pthread_mutex_unlock(&image_mu);
}

int fsync(int fd)
{
    if (active)
        record_fd_locked(fd);
    return real_fsync(fd);
}

int fdatasync(int fd)
{
    if (active)
        record_fd_locked(fd);
    return real_fdatasync(fd);
}

int syncfs(int fd)
{
    if (active)
        record_all_locked("syncfs");
    return real_syncfs(fd);
}

void sync(void)
{
    if (active)
        record_all_locked("sync");
    real_sync();
}

/* A file created in a watched directory is a new generation of its inode number. */
static int open_common(int dirfd_, const char *path, int flags, mode_t mode)
{
    struct stat sb;
    int creating = active && (flags & O_CREAT);
    if (!creating)
        return real_openat(dirfd_, path, flags, mode);
    /* from the check to the new generation under image_mu: no listing in between */
    int saved = errno;
    pthread_mutex_lock(&image_mu);
    int was_new = fstatat(dirfd_, path, &sb, 0) != 0 && errno == ENOENT;
    errno = saved;
    int fd = real_openat(dirfd_, path, flags, mode);
    if (fd >= 0 && was_new) {
        char link[64], abs[PATH_MAX];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, abs, sizeof abs - 1);
        if (n > 0 && fstat(fd, &sb) == 0) {
            abs[n] = 0;
            if (in_watched(abs))
                gen_new(sb.st_ino);
        }
    }
    saved = errno;
    pthread_mutex_unlock(&image_mu);
    errno = saved;
    return fd;
}

int open(const char *path, int flags, ...)
{
    va_list ap; /* the mode is there only when the call creates */
    va_start(ap, flags);
    mode_t mode = (flags & (O_CREAT | O_TMPFILE)) ? (mode_t)va_arg(ap, int) : 0;
    va_end(ap);
    return open_common(AT_FDCWD, path, flags, mode);
}

int open64(const char *path, int flags, ...) __attribute__((alias("open")));

int openat(int dirfd_, const char *path, int flags, ...)
{
    va_list ap; /* the mode is there only when the call creates */
    va_start(ap, flags);
    mode_t mode = (flags & (O_CREAT | O_TMPFILE)) ? (mode_t)va_arg(ap, int) : 0;
    va_end(ap);
    return open_common(dirfd_, path, flags, mode);
}

int openat64(int dirfd_, const char *path, int flags, ...) __attribute__((alias("openat")));

int creat(const char *path, mode_t mode)
{
    return open_common(AT_FDCWD, path, O_WRONLY | O_CREAT | O_TRUNC, mode);
}

int creat64(const char *path, mode_t mode) __attribute__((alias("creat")));

__attribute__((constructor)) static void powercut_init(void)
{
    real_fsync = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    real_syncfs = (int (*)(int))dlsym(RTLD_NEXT, "syncfs");
    real_sync = (void (*)(void))dlsym(RTLD_NEXT, "sync");
    real_open = (int (*)(const char *, int, ...))dlsym(RTLD_NEXT, "open");
    real_openat = (int (*)(int, const char *, int, ...))dlsym(RTLD_NEXT, "openat");
    const char *w = getenv("POWERCUT_WATCH"), *s = getenv("POWERCUT_SHADOW");
    const char *at = getenv("POWERCUT_AT");
    cut_at = at ? atol(at) : 0;
    const char *j = getenv("POWERCUT_JITTER_US");
    jitter_us = j ? atol(j) : 0;
    if (!w || !s || !*w || !*s)
        return;
    snprintf(shadow, sizeof shadow, "%s", s);
    char list[MAX_WATCH * PATH_MAX];
    snprintf(list, sizeof list, "%s", w);
    for (char *save = NULL, *p = strtok_r(list, ":", &save); p && nwatch < MAX_WATCH;
         p = strtok_r(NULL, ":", &save)) {
        char *r = realpath(p, NULL); /* /proc/self/fd links are canonical paths */
        snprintf(watch[nwatch++], sizeof watch[0], "%s", r ? r : p);
        free(r);
    }
    record_all(); /* the starting state is durable */
    active = 1;
}
