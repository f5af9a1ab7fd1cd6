/* pool.h: table files kept for reuse. Creating a file costs far more than renaming one on ext4
 * with many recent deletions (inode allocation skips recently freed inodes), and a store creates
 * and drops thousands of short-lived tables. A table file that dies before any checkpoint named
 * it (no other process can have it open) is handed to the pool once its last in-process reader
 * is gone; the next new table takes it by rename and overwrites it. */
#ifndef LTR_POOL_H
#define LTR_POOL_H

#include <stdint.h>

typedef struct tpool tpool;

tpool *tpool_new(const char *dir, uint32_t cap);
void tpool_ref(tpool *p);
void tpool_unref(tpool *p);
/* A dead table file nothing refers to, for reuse; unlinked when the pool is full or closed. */
void tpool_put(tpool *p, uint64_t file);
/* Renames a pooled file to `path`: 1 done, 0 the pool is empty (or the rename failed). */
int tpool_take(tpool *p, const char *path);
/* Unlinks every pooled file; later puts unlink at once. */
void tpool_close(tpool *p);

#endif
