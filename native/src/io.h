/* io.h: the only code that writes files. Every write and fsync passes the fault-injection hook,
 * and every file is installed by write-to-temporary, fsync, rename, fsync of the directory. */
#ifndef LTR_IO_H
#define LTR_IO_H

#include <stddef.h>
#include <stdint.h>

typedef struct wfile {
    int fd;
    char *path;     /* final name (an extent: the name of its file, for errors) */
    char *tmp;      /* temporary name the data is written to (NULL: written in place) */
    uint64_t bytes; /* bytes written so far */
    uint64_t base;  /* an extent: where in fd its byte 0 lies */
    int extent;     /* writes go to [base, ...) of a descriptor the caller owns */
} wfile;

/* Creates path.tmp to write path through; with IO_IN_PLACE (for store files that nothing
 * refers to before a checkpoint fsyncs them) path itself, which io_commit only closes. */
#define IO_IN_PLACE 4
/* The same, and io_commit starts the file's writeback: for files that will likely outlive the
 * next checkpoint, whose fsync then finds them written (or under way) instead of writing them
 * all at once while flush() waits. Short-lived files are left alone: most are unlinked before
 * the kernel writes them back, and never reach the device. */
#define IO_IN_PLACE_WRITEBACK 5
int io_create(wfile *w, const char *path, int sync);
/* Writes an extent: byte i goes to offset base + i of fd, which the caller keeps open (io_commit
 * and io_abort leave it so, and io_abort leaves the bytes written: the caller's extent is
 * garbage until it commits something there); name names the file in errors. */
int io_create_extent(wfile *w, int fd, const char *name, uint64_t base);
int io_write(wfile *w, const void *p, size_t n);
/* fsync (sync 1 or 2), close, rename to the final name, fsync the directory (sync 1 only: with
 * 2 the caller fsyncs the directory once for several files; with 3 nothing is synced, writeback
 * only starts, and the caller fsyncs the file and the directory itself; with 0 nothing is
 * synced; with IO_IN_PLACE the file is cut to its length and closed). An extent is fdatasynced
 * with sync 1 or 2, its writeback started with 3 or IO_IN_PLACE_WRITEBACK. */
int io_commit(wfile *w, int sync);
/* Closes and removes the temporary file; safe after a failed io_create or io_commit. */
void io_abort(wfile *w);
int io_pread(int fd, void *p, size_t n, uint64_t off, const char *path);
/* open(O_RDONLY), without access-time updates when the file allows it (reads stay cheaper). */
int io_open_read(const char *path);
/* write() all of p to fd, through the fault-injection hook. */
int io_write_fd(int fd, const void *p, size_t n, const char *path, uint64_t at);
/* pwrite of all n bytes at offset `at` (fault injection as for writes). */
int io_pwrite_fd(int fd, const void *p, size_t n, const char *path, uint64_t at);
int io_fsync_fd(int fd, const char *path);
/* Reads the whole file and writes it back in place (marking its pages dirty again). */
int io_rewrite_path(const char *path);
/* fsync of a file by name (after io_commit with sync 3). */
int io_fsync_path(const char *path);
/* syncfs of the filesystem holding directory dir: every dirty file on it written and the
 * device flushed once (fault injection as for fsync). */
int io_syncfs_dir(const char *dir);
/* fsync of the directory holding path. */
int io_fsync_dir(const char *path);
/* Writes data to path atomically: path.tmp, fsync, rename, directory fsync. */
int io_write_file_atomic(const char *path, const void *data, size_t n);

/* Reads a whole file of at most max bytes (LTR_ECORRUPT when larger) into a new buffer. */
int io_read_file(const char *path, uint64_t max, uint8_t **out, size_t *len);

#endif
