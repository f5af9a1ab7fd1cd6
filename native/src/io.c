/* io.c: durable file creation and positional reads, with test-only fault injection. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <string.h>
#include <unistd.h>

#include "io.h"
#include "ltr_int.h"

/* ---- fault injection: after `after` more successes, fail with `err` ---- */

static int64_t fault_after[3];
static int fault_err[3];

void ltr_fault_set(int op, int64_t after, int err)
{
    if (op < 1 || op > 2)
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
    return __atomic_load_n(&fault_err[op], __ATOMIC_SEQ_CST);
}

/* ---- writing ---- */

static int create_in_place(wfile *w, const char *path)
{
    w->path = strdup(path);
    if (!w->path)
        return ltr_fail(LTR_ENOMEM, "out of memory opening %s", path);
    /* no O_TRUNC: a reused file is overwritten, then cut to length at commit (truncating
     * first would free its blocks only for the writes to allocate them again) */
    w->fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
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
    w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
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
        sync_file_range(w->fd, (off_t)w->base, (off_t)w->bytes, SYNC_FILE_RANGE_WRITE);
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
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = LTR_OK;
    if (fd < 0)
        rc = ltr_fail_errno(errno, "cannot open directory %s", dir);
    else {
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
        int rc = ftruncate(w->fd, (off_t)w->bytes) != 0
                     ? ltr_fail_errno(errno, "cannot set the length of %s", w->path)
                     : LTR_OK;
        if (!rc && sync == IO_IN_PLACE_WRITEBACK)
            sync_file_range(w->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
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
        sync_file_range(w->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
    if (rc)
        return rc;
    if (close(w->fd) != 0) {
        w->fd = -1;
        return ltr_fail_errno(errno, "close of %s failed", w->tmp);
    }
    w->fd = -1;
    if (rename(w->tmp, w->path) != 0)
        return ltr_fail_errno(errno, "cannot rename %s to %s", w->tmp, w->path);
    free(w->tmp);
    w->tmp = NULL;
    rc = sync == 1 ? fsync_dir_of(w->path) : LTR_OK;
    if (rc)
        unlink(w->path); /* not known durable: take it back rather than half-install it */
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
        unlink(w->tmp);
    else if (w->path) /* written in place and not committed */
        unlink(w->path);
    free(w->tmp);
    free(w->path);
    w->tmp = w->path = NULL;
}

int io_pread(int fd, void *p, size_t n, uint64_t off, const char *path)
{
    uint8_t *q = p;
    while (n) {
        ssize_t r = pread(fd, q, n, (off_t)off);
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

int io_open_read(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOATIME);
    if (fd < 0 && errno == EPERM) /* O_NOATIME needs the file's owner */
        fd = open(path, O_RDONLY | O_CLOEXEC);
    return fd;
}

int io_rewrite_path(const char *path)
{
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return ltr_fail_errno(errno, "cannot open %s to write it again", path);
    enum { STEP = 1 << 20 };
    uint8_t *buf = malloc(STEP);
    int rc = buf ? LTR_OK : ltr_fail(LTR_ENOMEM, "out of memory");
    for (uint64_t at = 0; !rc;) {
        ssize_t n = pread(fd, buf, STEP, (off_t)at);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            rc = ltr_fail_errno(errno, "read of %s at offset %llu failed", path,
                                (unsigned long long)at);
        if (n <= 0)
            break;
        if (lseek(fd, (off_t)at, SEEK_SET) < 0)
            rc = ltr_fail_errno(errno, "cannot seek in %s", path);
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
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return ltr_fail_errno(errno, "cannot open directory %s", dir);
    int err = fault_hit(LTR_FAULT_FSYNC);
    int rc = err || syncfs(fd) != 0
                 ? ltr_fail_errno(err ? err : errno, "syncfs of the filesystem of %s failed", dir)
                 : LTR_OK;
    close(fd);
    return rc;
}

int io_fsync_path(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ltr_fail_errno(errno, "cannot open %s to sync it", path);
    int rc = fsync_checked(fd, path);
    close(fd);
    return rc;
}

int io_read_file(const char *path, uint64_t max, uint8_t **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    int fd = io_open_read(path);
    if (fd < 0)
        return ltr_fail_errno(errno, "cannot open %s", path);
    struct stat sb;
    int rc = fstat(fd, &sb) != 0 ? ltr_fail_errno(errno, "cannot read the size of %s", path)
             : (uint64_t)sb.st_size > max ? ltr_fail(LTR_ECORRUPT, "%s is larger than it can be (%lld bytes)", path, (long long)sb.st_size)
                                          : LTR_OK;
    uint8_t *p = rc ? NULL : malloc(sb.st_size ? (size_t)sb.st_size : 1);
    if (!rc && !p)
        rc = ltr_fail(LTR_ENOMEM, "out of memory reading %s", path);
    if (!rc)
        rc = io_pread(fd, p, (size_t)sb.st_size, 0, path);
    close(fd);
    if (rc) {
        free(p);
        return rc;
    }
    *out = p;
    *len = (size_t)sb.st_size;
    return LTR_OK;
}
