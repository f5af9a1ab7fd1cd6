/* window_read.h: the items of a table whose home buckets lie in a window of its buckets, read a
 * window at a time: a compaction streams its inputs so (compaction.c), holding a window of each
 * instead of whole tables. */
#ifndef LTR_WINDOW_READ_H
#define LTR_WINDOW_READ_H

#include "bucket.h"
#include "hashbits.h"
#include "ltr_int.h"

typedef struct wread wread;

int wread_new(ltr_htable *t, wread **out);
/* Calls fn(ctx, h, it) for each item of the table whose home bucket lies in [first, first + n),
 * with its hash; stops at the first non-zero return of fn and returns it. The items' bytes stay
 * valid until the next wread_items or wread_free. */
typedef int (*wread_fn)(void *ctx, key_hash h, const item_view *it);
int wread_items(wread *r, uint32_t first, uint32_t n, wread_fn fn, void *ctx);
/* Items returned so far: once every window has been read, the table's item count (else the
 * table is corrupt: an item no lookup would find either). */
uint64_t wread_returned(const wread *r);
void wread_free(wread *r);

#endif
