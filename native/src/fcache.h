/* fcache.h: a bound on the table files a store keeps open, like LevelDB's max_open_files.
 * A table reads with pread on its own descriptor. When a store has more tables than the bound,
 * the descriptors of tables not read lately are closed (CLOCK: a table read since the hand last
 * passed it gets a second chance) and reopened by path at their next read, which checks that
 * the file is the same one (device, inode and size). A writer unlinks a dropped table's file
 * only after its last table object is freed (version.h, tfile), so the path is there to reopen.
 *
 * Readers take no lock while a descriptor is open (htable_read.c, table_pread): they announce
 * themselves in the table's `users`, then load `fd`. An eviction stores -1 in `fd`, then looks
 * at `users`, and puts the descriptor back when a reader is there. Both sides use sequentially
 * consistent atomics, so at least one sees the other: a reader either has a descriptor that
 * stays open until it is done, or sees -1 and reopens under the cache's lock. */
#ifndef LTR_FCACHE_H
#define LTR_FCACHE_H

#include <stdint.h>

#include "ltr_int.h"

typedef struct fcache fcache;

#define FC_NO_SLOT UINT32_MAX /* ltr_htable.slot of a table not in the cache */

/* limit: descriptors the cache's tables may hold (at least 1). NULL when out of memory. */
fcache *fcache_new(uint32_t limit);
/* Drops the maker's reference; each table in the cache holds one too (a store's scan may
 * close tables after the store is gone). */
void fcache_unref(fcache *c);
/* A table whose descriptor was just opened joins the cache, which closes others to stay within
 * the bound (a table being read is never closed: the bound is exceeded instead). */
int fcache_admit(fcache *c, ltr_htable *t);
/* The descriptor of t, reopened when the cache closed it; the caller holds t->users. */
int fcache_reopen(fcache *c, ltr_htable *t, int *fd);
/* Opens t's file again by its path (with O_DIRECT when direct) into *fd, checking that it is
 * the file t was opened from (device, inode, size); why says in errors what for. Also for a
 * table outside any cache. */
int fcache_open_again(const ltr_htable *t, int direct, const char *why, int *fd);
/* Before t is closed: it leaves the cache (no reader may be using it). */
void fcache_forget(fcache *c, ltr_htable *t);
/* Descriptors open now, and reopens since the cache was made. */
void fcache_counts(fcache *c, uint64_t *open, uint64_t *reopens);

#endif
