/* io.h: the core's environment (in the manner of LevelDB's Env). Every file system call of the
 * core passes here: opening, closing, reading, writing, syncing, renaming, removing, sizing,
 * locking, listing and mapping files. Every open, write, fsync, rename, unlink, ftruncate, mkdir
 * and pread passes the fault-injection hook (ltr_fault_set, LTR_FAULT_* in lsmtrie.h), and every
 * file is installed by write-to-temporary, fsync, rename, fsync of the directory.
 *
 * Unless said otherwise a call returns LTR_OK or a status whose detail (naming the file and the
 * errno) ltr_fail_errno recorded. Calls documented as "errno semantics" return 0 or -1 with errno
 * set, record nothing, and leave the judging to the caller (a missing file may be fine). */
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
/* Writes n bytes at offset `at` of the file (of the extent), wherever the writes before went:
 * for files written out of order (a table written window by window). w->bytes becomes the end
 * of the furthest write. Not to be mixed with io_write on one file. */
int io_write_at(wfile *w, const void *p, size_t n, uint64_t at);
/* fsync (sync 1 or 2), close, rename to the final name, fsync the directory (sync 1 only: with
 * 2 the caller fsyncs the directory once for several files; with 3 nothing is synced, writeback
 * only starts, and the caller fsyncs the file and the directory itself; with 0 nothing is
 * synced; with IO_IN_PLACE the file is cut to its length and closed). An extent is fdatasynced
 * with sync 1 or 2, its writeback started with 3 or IO_IN_PLACE_WRITEBACK. */
int io_commit(wfile *w, int sync);
/* Closes and removes the temporary file; safe after a failed io_create or io_commit. */
void io_abort(wfile *w);
int io_pread(int fd, void *p, size_t n, uint64_t off, const char *path);
/* open(O_RDONLY), without access-time updates when the file allows it (reads stay cheaper).
 * Errno semantics: a descriptor, or -1 with errno set (callers tell EMFILE apart). */
int io_open_read(const char *path);
/* Direct reads (the store's direct_io): a descriptor opened with O_DIRECT reads whole blocks
 * into memory aligned to them, bypassing the page cache. Buffers, offsets and lengths are
 * multiples of IO_DIRECT_ALIGN (the largest logical block size of common devices: 4096 bytes
 * suits those of 512 too). */
#define IO_DIRECT_ALIGN 4096
/* io_open_read, with O_DIRECT when direct. Errno semantics (EINVAL with direct: the file system
 * refuses O_DIRECT, which io_direct_refused reports). */
int io_open_read_as(const char *path, int direct);
/* LTR_EINVAL: the file system holding path (its directory is named) refused O_DIRECT. */
int io_direct_refused(const char *path);
/* Whether the file system holding `file`, an existing file, opens files with O_DIRECT: LTR_OK
 * (also when there is no such file: nothing to try), io_direct_refused's LTR_EINVAL, or the
 * open's failure. Never falls back to buffered reads: a store asked for direct_io fails. */
int io_check_direct(const char *file);
/* pread of n bytes at off through a descriptor opened with O_DIRECT (p, n and off multiples of
 * IO_DIRECT_ALIGN): the end of the file may cut the read short, but at least `need` bytes must
 * come (else LTR_ECORRUPT: the file is truncated). Fault injection as for io_pread. */
int io_pread_direct(int fd, void *p, size_t n, uint64_t off, size_t need, const char *path);
/* open(path, flags | O_CLOEXEC, mode) into *fd (-1 on failure); what names the file in errors
 * ("log", "lock file", ...; NULL: "file"). */
int io_open(int *fd, const char *path, int flags, int mode, const char *what);
/* open of a directory (O_RDONLY | O_DIRECTORY) into *fd. */
int io_open_dir(int *fd, const char *dir);
/* dup of fd into *out (a descriptor that outlives the caller's closing fd). */
int io_dup(int fd, int *out, const char *path);
/* close, its failure ignored (read-only descriptors, error paths); a negative fd is skipped. */
void io_close(int fd);
/* close, its failure reported (a written file: close may report a lost write). */
int io_close_checked(int fd, const char *path);
/* The size of an open file. */
int io_fsize(int fd, const char *path, uint64_t *size);
/* Size and identity (device, inode) of an open file. */
typedef struct io_stat {
    uint64_t size, dev, ino;
} io_stat;
int io_fstat(int fd, const char *path, io_stat *st);
/* The size of a file by name. Errno semantics (ENOENT: no such file). */
int io_size_path(const char *path, uint64_t *size);
/* Whether path exists (access F_OK): 1 or 0. */
int io_exists(const char *path);
/* ftruncate to len. */
int io_ftruncate(int fd, uint64_t len, const char *path);
/* lseek(SEEK_SET) to off, for the io_write_fd calls that follow. */
int io_seek(int fd, uint64_t off, const char *path);
/* unlink; a file already gone (ENOENT) is LTR_OK. Callers removing dead files may ignore the
 * status: the file is then left for the next open's sweep of the directory. */
int io_unlink(const char *path);
/* rename(from, to); the caller fsyncs the directory when it must be durable. */
int io_rename(const char *from, const char *to);
/* mkdir(dir, mode). Errno semantics (the caller decides whether EEXIST is fine); the fault
 * hook sets errno. */
int io_mkdir(const char *dir, int mode);
/* flock(fd, how). Errno semantics (EWOULDBLOCK: someone else holds it). */
int io_flock(int fd, int how);
/* sync_file_range(SYNC_FILE_RANGE_WRITE): starts writeback of [off, off + n) (n 0: to the end).
 * A hint: failures are ignored. */
void io_sync_range(int fd, uint64_t off, uint64_t n);
/* Calls fn(arg, name) for each entry of dir but "." and ".."; stops at the first nonzero status
 * fn returns, and returns it. Failing to open or read dir is a status. */
int io_list_dir(const char *dir, int (*fn)(void *arg, const char *name), void *arg);
/* Reads all of a file of at most max bytes (LTR_ECORRUPT when larger) into a NUL-terminated
 * malloc'd buffer (*len without the NUL). */
int io_read_file(const char *path, uint64_t max, char **data, size_t *len);
/* link(from, to): a second name (fault injection as for rename). */
int io_link(const char *from, const char *to);
/* rmdir; a directory already gone is LTR_OK. */
int io_rmdir(const char *dir);
/* A read-only shared mapping of [off, off + len) of fd (with MADV_RANDOM when random), or NULL
 * with errno set when the kernel refuses (the caller reads with io_pread instead). */
const void *io_map_read(int fd, uint64_t off, size_t len, int random);
void io_unmap(const void *map, size_t len);
/* Takes the pages around [off, off + len) of a shared read-only mapping out of the process: they
 * stay in the page cache, and a later access maps them again. For ranges read once through a
 * long-lived mapping (a cluster's units copied for a rebuild), which would otherwise count in
 * the process's resident memory for as long as the mapping lives. */
void io_map_forget(const void *map, uint64_t off, size_t len);
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


#endif
