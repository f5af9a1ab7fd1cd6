/* plan.h: where each item of a table goes: its bucket after migration, or the overflow area.
 * Built by htable_build.c, balanced by migrate.c. */
#ifndef LTR_PLAN_H
#define LTR_PLAN_H

#include <stdint.h>

#include "hashbits.h"

#define PLAN_END UINT32_MAX

typedef struct mig_record {
    uint16_t source;
    uint16_t target;
    uint32_t hashmark; /* items of `source` with rank >= hashmark moved to `target` */
    uint32_t flow;     /* how many moved: lookups of those items pass this record */
} mig_record;

typedef struct plan {
    uint32_t buckets;     /* of the window planned: buckets [base, base + buckets) */
    uint32_t base;
    uint32_t table_buckets;
    uint32_t nitems;
    const key_hash *hash; /* per item */
    const uint32_t *size; /* encoded size per item */
    uint32_t *next;       /* per item: next item of the same bucket, PLAN_END ends the list */
    /* Per-bucket arrays count from the window's first bucket; records name table buckets. */
    uint32_t *head;       /* per bucket: first item */
    uint32_t *load;       /* per bucket: bytes of the items in it */
    uint32_t *nitems_in;  /* per bucket: number of items in it */
    uint8_t *depth;       /* per bucket: hops of the longest chain that ends there */
    uint8_t *is_source;   /* per bucket: 1 once it gave items away (it then never receives) */
    mig_record *records;  /* one per source bucket */
    uint32_t nrecords;
    uint32_t *overflow;   /* items sent to the overflow area */
    uint32_t noverflow;
    uint64_t migrated;    /* item moves */
    uint32_t max_chain;
    uint32_t overloaded;  /* buckets over the payload before balancing */
} plan;

/* Allocates the per-bucket and per-item arrays and files every item under its home bucket
 * (or in the overflow area when it is larger than a bucket). The plan covers the window
 * [base, base + buckets) of a table of table_buckets buckets: every item's home lies in it, and
 * balancing moves items only inside it (a table written window by window, htable_write.c). */
int plan_init(plan *p, uint32_t table_buckets, uint32_t base, uint32_t buckets, uint32_t nitems,
              const key_hash *hash, const uint32_t *size);
/* Greedy paired migration (docs/format/htable.md "Migration and the HashMark"). */
int plan_balance(plan *p);
void plan_free(plan *p);

#endif
