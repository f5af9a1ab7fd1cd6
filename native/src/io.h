/* io.h: the only code that writes files. Every write and fsync passes the fault-injection hook,
 * and every file is installed by write-to-temporary, fsync, rename, fsync of the directory. */
#ifndef LTR_IO_H
#define LTR_IO_H

#include <stddef.h>
#include <stdint.h>

typedef struct wfile {
    int fd;
    char *path;     /* final name */
    char *tmp;      /* temporary name the data is written to */
    uint64_t bytes; /* bytes written so far */
} wfile;

int io_create(wfile *w, const char *path);
int io_write(wfile *w, const void *p, size_t n);
/* fsync (when sync), close, rename to the final name, fsync the directory (when sync). */
int io_commit(wfile *w, int sync);
/* Closes and removes the temporary file; safe after a failed io_create or io_commit. */
void io_abort(wfile *w);
int io_pread(int fd, void *p, size_t n, uint64_t off, const char *path);

#endif
