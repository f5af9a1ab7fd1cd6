/* load_int.h: the bulk loader's state, shared by load.c (the work) and load_journal.c (its
 * record on disk, which --resume reads back). */
#ifndef LTR_LOAD_INT_H
#define LTR_LOAD_INT_H

#include "store_int.h"

typedef struct part {
    ltr_buf buf;        /* items not yet spilled: item records (bucket.h) */
    uint64_t spilled;   /* bytes in its file */
    uint64_t items;     /* in the file and the buffer */
    uint8_t built;      /* its tables are written and recorded: its file is gone */
} part;

/* A table the build wrote, waiting in the load's directory for the install. */
typedef struct built {
    uint64_t node;      /* target node id */
    uint32_t seq;       /* the node's tables in order: older first */
    uint32_t name;      /* load-local file name: T<name>.ht */
    uint64_t bytes;
    uint64_t number;    /* its number in the store, once the install chose it (else 0) */
} built;

struct ltr_load {
    ltr_store *s;
    uint64_t memory;
    char *dir;          /* STORE/load: the journal and the built tables (and the partitions,
                           unless tmp_dir) */
    char *spill_dir;
    char *identity;     /* the caller's name for the load's arguments (a resume must match) */
    int values_are_items; /* ltr_load_opts */
    ltr_buf position;   /* the caller's input position as of the last durable point */
    int journaled;      /* a journal is on disk: every step from now on is recorded */
    uint32_t depth;     /* partitions are the nodes at this depth */
    uint32_t nparts;
    part *parts;
    size_t part_cap;    /* each partition's buffer: its share of half the working memory */
    uint32_t target;    /* the level the tables go to (set by ltr_load_finish) */

    pthread_mutex_t mu; /* the build's shared state: next unit, built tables, error, journal */
    uint32_t nunits;
    uint32_t next_unit;
    built *tables;
    size_t ntables, tables_cap;
    uint32_t next_name;
    int failed;
    ltr_error err;      /* the first failure of a build thread */

    ltr_load_stats st;  /* counters read by ltr_load_stats_get while a load runs (atomics) */
    int finished;
};

/* The journal (docs/format/load.md): the load's durable state, replaced atomically. */
char *load_journal_path(const ltr_load *l);
int load_journal_write(ltr_load *l); /* mu held, or one thread */
/* Reads the journal of l->dir into l (its parts, tables, counters, identity, position, depth);
 * LTR_OK, or a status with a message (no journal: LTR_EINVAL, errno ENOENT). */
int load_journal_read(ltr_load *l);

#endif
