/* pool.h: table files kept for reuse. Creating a file costs far more than renaming one on ext4
 * with many recent deletions (inode allocation skips recently freed inodes), and a store creates
 * and drops thousands of short-lived tables. A dead table's file may be reused once nothing can
 * read it: no reference in this process (the table's last reference is freed) and none in
 * another (no checkpoint named it, or the checkpoint that dropped it is durable and no reader
 * process holds the store). The next new table takes it by rename
 * and overwrites it. */
#ifndef LTR_POOL_H
#define LTR_POOL_H

#include <stdint.h>

typedef struct tpool tpool;

tpool *tpool_new(const char *dir, uint32_t cap);
void tpool_ref(tpool *p);
void tpool_unref(tpool *p);
/* A dead table file nothing refers to, for reuse; unlinked when the pool is full or closed. */
void tpool_put(tpool *p, uint64_t file);
/* Events of a durable table's file, which may be reused only once both FREED and CLEARED came
 * (in either order): FREED, its last reference in this process is gone; CLEARED, no other
 * process can read it; GONE, it was unlinked instead (readers were there). */
enum { TP_FREED = 1, TP_CLEARED = 2, TP_GONE = 4 };
void tpool_event(tpool *p, uint64_t file, int event);
/* Renames a pooled file to `path`: 1 done, 0 the pool is empty (or the rename failed). */
int tpool_take(tpool *p, const char *path);
/* Files taken for reuse so far, and how many of them had been durable. */
void tpool_counts(tpool *p, uint64_t *taken, uint64_t *durable);
/* Unlinks every pooled file; later puts unlink at once. */
void tpool_close(tpool *p);

#endif
