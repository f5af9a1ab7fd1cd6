/* io.c: the core's environment: every file system call, durable file creation, positional
 * reads, with test-only fault injection. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <string.h>
#include <dirent.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io.h"
#include "ltr_int.h"

/* ---- fault injection: after `after` more successes, fail with `err` (once if negative) ---- */

#define FAULT_KINDS (LTR_FAULT_PREAD + 1)

static int64_t fault_after[FAULT_KINDS];
static int fault_err[FAULT_KINDS];

void ltr_fault_set(int op, int64_t after, int err)
{
    if (op < 1 || op >= FAULT_KINDS)
        return;
    __atomic_store_n(&fault_after[op], after, __ATOMIC_SEQ_CST);
    __atomic_store_n(&fault_err[op], err, __ATOMIC_SEQ_CST);
}

static int fault_hit(int op)
{
    if (!__atomic_load_n(&fault_err[op], __ATOMIC_SEQ_CST))
        return 0;
    if (__atomic_fetch_sub(&fault_after[op], 1, __ATOMIC_SEQ_CST) > 0)
        return 0;
    int err = __atomic_load_n(&fault_err[op], __ATOMIC_SEQ_CST);
    if (err >= 0)
        return err;
    /* once: the call that disarms it fails, any other goes through */
    return __atomic_compare_exchange_n(&fault_err[op], &err, 0, 0, __ATOMIC_SEQ_CST,
                                       __ATOMIC_SEQ_CST) ? -err : 0;
}

static int refuse_direct; /* ltr_test_refuse_direct: O_DIRECT opens fail */

void ltr_test_refuse_direct(int on) { __atomic_store_n(&refuse_direct, on != 0, __ATOMIC_RELAXED); }

/* open(2) through the hook: a descriptor, or -1 with errno set. */
static int open_hooked(const char *path, int flags, int mode)
{
    int err = fault_hit(LTR_FAULT_OPEN);
    if (!err && (flags & O_DIRECT) && __atomic_load_n(&refuse_direct, __ATOMIC_RELAXED))
        err = EINVAL; /* what open(2) says to O_DIRECT where the file system has no direct I/O */
    if (err) {
        errno = err;
        return -1;
    }
    int fd;
    do
        fd = open(path, flags | O_CLOEXEC, mode);
    while (fd < 0 && errno == EINTR);
    return fd;
}

/* unlink(2) through the hook: 0, or -1 with errno set. */
static int unlink_hooked(const char *path)
{
    int err = fault_hit(LTR_FAULT_UNLINK);
    if (err) {
        errno = err;
        return -1;
    }
    return unlink(path);
}

static int ftruncate_checked(int fd, uint64_t len, const char *path)
{
    int err = fault_hit(LTR_FAULT_FTRUNCATE);
    if (err || ftruncate(fd, (off_t)len) != 0)
        return ltr_fail_errno(err ? err : errno, "cannot set the length of %s to %llu bytes",
                              path, (unsigned long long)len);
    return LTR_OK;
}

/* pread(2) through the hook. */
static ssize_t pread_hooked(int fd, void *p, size_t n, uint64_t off)
{
    int err = fault_hit(LTR_FAULT_PREAD);
    if (err) {
        errno = err;
        return -1;
    }
    return pread(fd, p, n, (off_t)off);
}

/* ---- files, directories, locks ---- */

int io_open(int *fd, const char *path, int flags, int mode, const char *what)
{
    *fd = open_hooked(path, flags, mode);
    if (*fd < 0)
        return ltr_fail_errno(errno, "cannot open %s %s", what ? what : "file", path);
    return LTR_OK;
}

int io_open_dir(int *fd, const char *dir)
{
    *fd = open_hooked(dir, O_RDONLY | O_DIRECTORY, 0);
    if (*fd < 0)
        return ltr_fail_errno(errno, "cannot open directory %s", dir);
    return LTR_OK;
}

int io_dup(int fd, int *out, const char *path)
{
    *out = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (*out < 0)
        return ltr_fail_errno(errno, "cannot duplicate the descriptor of %s", path);
    return LTR_OK;
}

void io_close(int fd)
{
    if (fd >= 0)
        close(fd);
}

int io_close_checked(int fd, const char *path)
{
    if (fd >= 0 && close(fd) != 0)
        return ltr_fail_errno(errno, "close of %s failed", path);
    return LTR_OK;
}

int io_fsize(int fd, const char *path, uint64_t *size)
{
    struct stat sb;
    if (fstat(fd, &sb) != 0)
        return ltr_fail_errno(errno, "cannot stat %s", path);
    *size = (uint64_t)sb.st_size;
    return LTR_OK;
}

int io_fstat(int fd, const char *path, io_stat *st)
{
    struct stat sb;
    if (fstat(fd, &sb) != 0)
        return ltr_fail_errno(errno, "cannot stat %s", path);
    st->size = (uint64_t)sb.st_size;
    st->dev = (uint64_t)sb.st_dev;
    st->ino = (uint64_t)sb.st_ino;
    return LTR_OK;
}

int io_size_path(const char *path, uint64_t *size)
{
    struct stat sb;
    if (stat(path, &sb) != 0)
        return -1;
    *size = (uint64_t)sb.st_size;
    return 0;
}

int io_exists(const char *path) { return access(path, F_OK) == 0; }

int io_ftruncate(int fd, uint64_t len, const char *path)
{
    return ftruncate_checked(fd, len, path);
}

int io_seek(int fd, uint64_t off, const char *path)
{
    if (lseek(fd, (off_t)off, SEEK_SET) < 0)
        return ltr_fail_errno(errno, "cannot seek in %s", path);
    return LTR_OK;
}

int io_unlink(const char *path)
{
    if (unlink_hooked(path) != 0 && errno != ENOENT)
        return ltr_fail_errno(errno, "cannot remove %s", path);
    return LTR_OK;
}

int io_rename(const char *from, const char *to)
{
    int err = fault_hit(LTR_FAULT_RENAME);
    if (err || rename(from, to) != 0)
        return ltr_fail_errno(err ? err : errno, "cannot rename %s to %s", from, to);
    return LTR_OK;
}

int io_mkdir(const char *dir, int mode)
{
    int err = fault_hit(LTR_FAULT_MKDIR);
    if (err) {
        errno = err;
        return -1;
    }
    return mkdir(dir, (mode_t)mode);
}

int io_flock(int fd, int how)
{
    int r;
    do
        r = flock(fd, how);
    while (r != 0 && errno == EINTR);
    return r;
}

void io_sync_range(int fd, uint64_t off, uint64_t n)
{
    sync_file_range(fd, (off_t)off, (off_t)n, SYNC_FILE_RANGE_WRITE);
}

int io_list_dir(const char *dir, int (*fn)(void *arg, const char *name), void *arg)
{
    int fd;
    int rc = io_open_dir(&fd, dir);
    if (rc)
        return rc;
    DIR *d = fdopendir(fd);
    if (!d) {
        rc = ltr_fail_errno(errno, "cannot list directory %s", dir);
        close(fd);
        return rc;
    }
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(d);
        if (!e) {
            if (errno)
                rc = ltr_fail_errno(errno, "cannot list directory %s", dir);
            break;
        }
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if ((rc = fn(arg, e->d_name)))
            break;
    }
    closedir(d); /* closes fd */
    return rc;
}

int io_read_file(const char *path, uint64_t max, char **data, size_t *len)
{
    *data = NULL;
    *len = 0;
    int fd;
    int rc = io_open(&fd, path, O_RDONLY, 0, "file");
    if (rc)
        return rc;
    uint64_t size = 0;
    rc = io_fsize(fd, path, &size);
    if (!rc && size > max)
        rc = ltr_fail(LTR_ECORRUPT, "%s is %llu bytes: too large", path, (unsigned long long)size);
    char *buf = rc ? NULL : malloc((size_t)size + 1);
    if (!rc && !buf)
        rc = ltr_fail(LTR_ENOMEM, "out of memory");
    if (!rc && size)
        rc = io_pread(fd, buf, (size_t)size, 0, path);
    close(fd);
    if (rc) {
        free(buf);
        return rc;
    }
    buf[size] = 0;
    *data = buf;
    *len = (size_t)size;
    return LTR_OK;
}

const void *io_map_read(int fd, uint64_t off, size_t len, int random)
{
    void *m = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, (off_t)off);
    if (m == MAP_FAILED)
        return NULL;
    if (random)
        madvise(m, len, MADV_RANDOM);
    return m;
}

void io_map_forget(const void *map, uint64_t off, size_t len)
{
    uint64_t page = 4096, start = off / page * page, end = (off + len + page - 1) / page * page;
    if (map && end > start)
        madvise((uint8_t *)map + start, end - start, MADV_DONTNEED);
}

void io_unmap(const void *map, size_t len)
{
    if (map)
        munmap((void *)map, len);
}

/* ---- writing ---- */

static int create_in_place(wfile *w, const char *path)
{
    w->path = strdup(path);
    if (!w->path)
        return ltr_fail(LTR_ENOMEM, "out of memory opening %s", path);
    /* no O_TRUNC: a reused file is overwritten, then cut to length at commit (truncating
     * first would free its blocks only for the writes to allocate them again) */
    w->fd = open_hooked(path, O_WRONLY | O_CREAT, 0644);
    if (w->fd < 0) {
        int rc = ltr_fail_errno(errno, "cannot create %s", path);
        free(w->path);
        w->path = NULL;
        return rc;
    }
    return LTR_OK;
}

int io_create_extent(wfile *w, int fd, const char *name, uint64_t base)
{
    memset(w, 0, sizeof *w);
    w->fd = fd;
    w->base = base;
    w->extent = 1;
    w->path = strdup(name);
    return w->path ? LTR_OK : ltr_fail(LTR_ENOMEM, "out of memory opening %s", name);
}

int io_create(wfile *w, const char *path, int sync)
{
    memset(w, 0, sizeof *w);
    w->fd = -1;
    if (sync == IO_IN_PLACE || sync == IO_IN_PLACE_WRITEBACK)
        return create_in_place(w, path);
    size_t n = strlen(path);
    w->path = strdup(path);
    w->tmp = malloc(n + 5);
    if (!w->path || !w->tmp) {
        io_abort(w);
        return ltr_fail(LTR_ENOMEM, "out of memory opening %s", path);
    }
    memcpy(w->tmp, path, n);
    memcpy(w->tmp + n, ".tmp", 5);
    w->fd = open_hooked(w->tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (w->fd < 0) {
        int err = errno;
        int rc = ltr_fail_errno(err, "cannot create %s", w->tmp);
        free(w->tmp);
        w->tmp = NULL; /* nothing to remove */
        io_abort(w);
        return rc;
    }
    return LTR_OK;
}

/* Writes all n bytes, at the file offset or (positional) at `at`; `at` names the place in errors. */
static int write_all(int fd, const void *p, size_t n, const char *path, uint64_t at,
                     int positional)
{
    const uint8_t *q = p;
    while (n) {
        int err = fault_hit(LTR_FAULT_WRITE);
        ssize_t r = err ? -1 : positional ? pwrite(fd, q, n, (off_t)at) : write(fd, q, n);
        if (r < 0) {
            err = err ? err : errno;
            if (err == EINTR)
                continue;
            return ltr_fail_errno(err, "write to %s at offset %llu failed", path,
                                  (unsigned long long)at);
        }
        q += r;
        n -= (size_t)r;
        at += (uint64_t)r;
    }
    return LTR_OK;
}

int io_write_fd(int fd, const void *p, size_t n, const char *path, uint64_t at)
{
    return write_all(fd, p, n, path, at, 0);
}

int io_pwrite_fd(int fd, const void *p, size_t n, const char *path, uint64_t at)
{
    return write_all(fd, p, n, path, at, 1);
}

int io_write(wfile *w, const void *p, size_t n)
{
    int rc = w->extent ? io_pwrite_fd(w->fd, p, n, w->path, w->base + w->bytes)
                       : io_write_fd(w->fd, p, n, w->tmp ? w->tmp : w->path, w->bytes);
    if (!rc)
        w->bytes += n;
    return rc;
}

int io_write_at(wfile *w, const void *p, size_t n, uint64_t at)
{
    int rc = io_pwrite_fd(w->fd, p, n, w->tmp ? w->tmp : w->path, w->base + at);
    if (!rc && at + n > w->bytes)
        w->bytes = at + n;
    return rc;
}

static int fsync_dir_of(const char *path);

/* fsync, or fdatasync (data_only), through the fault-injection hook. */
static int sync_checked(int fd, const char *what, int data_only)
{
    int err = fault_hit(LTR_FAULT_FSYNC);
    if (err || (data_only ? fdatasync(fd) : fsync(fd)) != 0)
        return ltr_fail_errno(err ? err : errno, "fsync of %s failed", what);
    return LTR_OK;
}

static int fsync_checked(int fd, const char *what) { return sync_checked(fd, what, 0); }

static int commit_extent(wfile *w, int sync)
{
    int rc = LTR_OK;
    if (sync == 1 || sync == 2)
        rc = sync_checked(w->fd, w->path, 1);
    else if (sync == 3 || sync == IO_IN_PLACE_WRITEBACK)
        io_sync_range(w->fd, w->base, w->bytes);
    free(w->path);
    w->path = NULL;
    w->fd = -1; /* the caller's */
    return rc;
}

int io_fsync_fd(int fd, const char *path) { return fsync_checked(fd, path); }

int io_fsync_dir(const char *path) { return fsync_dir_of(path); }

static int fsync_dir_of(const char *path)
{
    char *copy = strdup(path);
    if (!copy)
        return ltr_fail(LTR_ENOMEM, "out of memory");
    const char *dir = dirname(copy);
    int fd;
    int rc = io_open_dir(&fd, dir);
    if (!rc) {
        rc = fsync_checked(fd, dir);
        close(fd);
    }
    free(copy);
    return rc;
}

int io_commit(wfile *w, int sync)
{
    if (w->extent)
        return commit_extent(w, sync);
    if (!w->tmp) { /* in place: cut to length; nothing to sync or rename */
        int rc = ftruncate_checked(w->fd, w->bytes, w->path);
        if (!rc && sync == IO_IN_PLACE_WRITEBACK)
            io_sync_range(w->fd, 0, 0);
        if (close(w->fd) != 0 && !rc)
            rc = ltr_fail_errno(errno, "close of %s failed", w->path);
        w->fd = -1;
        if (!rc) {
            free(w->path);
            w->path = NULL;
        }
        return rc;
    }
    int rc = (sync == 1 || sync == 2) ? fsync_checked(w->fd, w->tmp) : LTR_OK;
    if (sync == 3) /* let the device start on it; the caller's fsync then waits less */
        io_sync_range(w->fd, 0, 0);
    if (rc)
        return rc;
    if (close(w->fd) != 0) {
        w->fd = -1;
        return ltr_fail_errno(errno, "close of %s failed", w->tmp);
    }
    w->fd = -1;
    if ((rc = io_rename(w->tmp, w->path)))
        return rc;
    free(w->tmp);
    w->tmp = NULL;
    rc = sync == 1 ? fsync_dir_of(w->path) : LTR_OK;
    if (rc)
        unlink_hooked(w->path); /* not known durable: take it back rather than half-install it */
    free(w->path);
    w->path = NULL;
    return rc;
}

void io_abort(wfile *w)
{
    if (w->extent) { /* the descriptor and the extent are the caller's */
        free(w->path);
        w->path = NULL;
        w->fd = -1;
        return;
    }
    if (w->fd >= 0)
        close(w->fd);
    w->fd = -1;
    if (w->tmp)
        unlink_hooked(w->tmp);
    else if (w->path) /* written in place and not committed */
        unlink_hooked(w->path);
    free(w->tmp);
    free(w->path);
    w->tmp = w->path = NULL;
}

int io_pread(int fd, void *p, size_t n, uint64_t off, const char *path)
{
    uint8_t *q = p;
    while (n) {
        ssize_t r = pread_hooked(fd, q, n, off);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return ltr_fail_errno(errno, "read of %s at offset %llu failed", path,
                                  (unsigned long long)off);
        }
        if (r == 0)
            return ltr_fail(LTR_ECORRUPT, "%s is truncated at offset %llu", path,
                            (unsigned long long)off);
        q += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return LTR_OK;
}

int io_write_file_atomic(const char *path, const void *data, size_t n)
{
    wfile w;
    int rc = io_create(&w, path, 1);
    if (rc)
        return rc;
    rc = io_write(&w, data, n);
    if (!rc)
        rc = io_commit(&w, 1);
    io_abort(&w);
    return rc;
}

int io_open_read(const char *path) { return io_open_read_as(path, 0); }

int io_open_read_as(const char *path, int direct)
{
    int flags = O_RDONLY | (direct ? O_DIRECT : 0);
    int fd = open_hooked(path, flags | O_NOATIME, 0);
    if (fd < 0 && errno == EPERM) /* O_NOATIME needs the file's owner */
        fd = open_hooked(path, flags, 0);
    return fd;
}

int io_direct_refused(const char *path)
{
    char *copy = strdup(path);
    int rc = ltr_fail(LTR_EINVAL, "direct_io: the file system holding %s refuses O_DIRECT reads "
                      "(open the store without direct_io there)", copy ? dirname(copy) : path);
    free(copy);
    return rc;
}

int io_check_direct(const char *file)
{
    int fd = io_open_read_as(file, 1);
    if (fd >= 0) {
        close(fd);
        return LTR_OK;
    }
    if (errno == ENOENT)
        return LTR_OK; /* nothing to try it on: a table's open says it if it comes to that */
    return errno == EINVAL ? io_direct_refused(file)
                           : ltr_fail_errno(errno, "cannot open %s with O_DIRECT", file);
}

int io_pread_direct(int fd, void *p, size_t n, uint64_t off, size_t need, const char *path)
{
    uint8_t *q = p;
    size_t got = 0;
    while (got < need) {
        ssize_t r = pread_hooked(fd, q + got, n - got, off + got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return ltr_fail_errno(errno, "read of %s at offset %llu failed (O_DIRECT)", path,
                                  (unsigned long long)(off + got));
        got += (size_t)r;
        if (r == 0 || r % IO_DIRECT_ALIGN)
            break; /* the end of the file (a read after a part of a block would be unaligned) */
    }
    if (got < need)
        return ltr_fail(LTR_ECORRUPT, "%s is truncated at offset %llu", path,
                        (unsigned long long)(off + got));
    return LTR_OK;
}

int io_rewrite_path(const char *path)
{
    int fd = open_hooked(path, O_RDWR, 0);
    if (fd < 0)
        return ltr_fail_errno(errno, "cannot open %s to write it again", path);
    enum { STEP = 1 << 20 };
    uint8_t *buf = malloc(STEP);
    int rc = buf ? LTR_OK : ltr_fail(LTR_ENOMEM, "out of memory");
    for (uint64_t at = 0; !rc;) {
        ssize_t n = pread_hooked(fd, buf, STEP, at);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            rc = ltr_fail_errno(errno, "read of %s at offset %llu failed", path,
                                (unsigned long long)at);
        if (n <= 0)
            break;
        rc = io_seek(fd, at, path);
        if (!rc)
            rc = io_write_fd(fd, buf, (size_t)n, path, at);
        at += (uint64_t)n;
    }
    free(buf);
    close(fd);
    return rc;
}

int io_syncfs_dir(const char *dir)
{
    int fd;
    int rc = io_open_dir(&fd, dir);
    if (rc)
        return rc;
    int err = fault_hit(LTR_FAULT_FSYNC);
    rc = err || syncfs(fd) != 0
                 ? ltr_fail_errno(err ? err : errno, "syncfs of the filesystem of %s failed", dir)
                 : LTR_OK;
    close(fd);
    return rc;
}

int io_fsync_path(const char *path)
{
    int fd = open_hooked(path, O_RDONLY, 0);
    if (fd < 0)
        return ltr_fail_errno(errno, "cannot open %s to sync it", path);
    int rc = fsync_checked(fd, path);
    close(fd);
    return rc;
}


int io_link(const char *from, const char *to)
{
    int err = fault_hit(LTR_FAULT_RENAME);
    if (err || link(from, to) != 0)
        return ltr_fail_errno(err ? err : errno, "cannot link %s as %s", from, to);
    return LTR_OK;
}

int io_rmdir(const char *dir)
{
    if (rmdir(dir) != 0 && errno != ENOENT)
        return ltr_fail_errno(errno, "cannot remove the directory %s", dir);
    return LTR_OK;
}
