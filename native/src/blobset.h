/* blobset.h: a store's value logs (NNNNNNNN.vlog, docs/format/vlog.md): the files holding
 * values of at least min_blob_size bytes, apart from the hash tables. The set keeps one
 * descriptor per file and reads records by pointer (checking their checksum and key); its
 * writer appends records to the newest file. It is its own object, referenced by the store, by
 * every table file whose pointers lead into it (version.h, tfile) and by scans, since those may
 * outlive the store's handle.
 *
 * Lifetime of a file: it is kept while a table file on disk lists it (holds: the table files'
 * holders in this process, version.h) or the logs that recovery would replay may point into it
 * (the store's floor, blob.c); blob.c removes the others after a checkpoint.
 *
 * Readers hold the set's lock shared across a read; a removal, and the closing of a file's
 * descriptors to stay within max_open, take it exclusively, so a descriptor is never closed
 * under a read. */
#ifndef LTR_BLOBSET_H
#define LTR_BLOBSET_H

#include <stdint.h>

#include "blob_format.h"
#include "ltr_int.h"

typedef struct blobset blobset;

/* A read's answer (never the API's): the pointer's value log was collected (below). */
#define LTR_EMOVED (-1001)

/* An empty set for the store in dir, reading values with O_DIRECT when direct (the store's
 * direct_io: then a file system that refuses it fails the open), with descriptors for at most
 * max_open files at once (the others are reopened by path when read: a store may have more
 * value logs than descriptors); NULL without memory. */
blobset *blobset_new(const char *dir, int direct, uint32_t max_open);
void blobset_ref(blobset *b);
void blobset_unref(blobset *b);

/* Opens every value log in the directory that the set lacks (a store being opened; a reader
 * lists them again once it has read the manifest). *max_number: the largest file number seen
 * (0: none), so that the store's file counter passes it. */
int blobset_open_all(blobset *b, uint64_t *max_number);

/* Reads the value a pointer leads to into dst (ptr->vlen bytes), checking the record's checksum
 * and that it is the record of key: LTR_ECORRUPT otherwise. dst NULL: only checks. from_table:
 * the pointer was found in a table file, where the GC may have shadowed it since; then
 * LTR_EMOVED says the file was relocated and has gone, and a new lookup of the key finds the
 * moved record. (Memtables, scans and recovery never hold a pointer into such a file.) */
int blobset_read(blobset *b, const blob_ptr *ptr, const uint8_t *key, uint32_t klen,
                 uint8_t *dst, int from_table);

/* Holds on the files of a table's value-log references: taken when a table file gets its first
 * holder in this process, let go with its last (version.h). */
void blobset_hold(blobset *b, const blob_ref *refs, uint32_t n);
void blobset_release(blobset *b, const blob_ref *refs, uint32_t n);

/* ---- the writer (one thread at a time: the store's write_mu) ---- */
/* Starts a new value log numbered `number` (its header written and the directory synced), the
 * previous one synced first. */
int blobset_start(blobset *b, uint64_t number);
/* The active file's number (0: none) and size. */
uint64_t blobset_active(const blobset *b, uint64_t *size);
/* Appends n bytes of whole records at the end of the active file, which is `at`; on failure
 * the file is cut back to `at`. */
int blobset_append(blobset *b, const uint8_t *p, size_t n, uint64_t at);
/* Makes the active file durable to its end (any thread: group commits and checkpoints). */
int blobset_sync(blobset *b);
/* Makes every file durable: a writer's open, whose recovery read records (and put their
 * pointers in tables) that a crashed process may have left in the page cache only. */
int blobset_sync_all(blobset *b);

/* ---- removal (blob.c, after a checkpoint) ---- */
/* A scan pins the set (d 1, then -1 when done): its copy of the memtables holds pointers that
 * no table file may list any more, so nothing is removed while one runs. */
void blobset_pin(blobset *b, int d);
int blobset_pinned(blobset *b);
/* The numbers of the files that may go now (malloc'd array in *out, count in *n): below
 * `below`, other than the active one, and either held by no table file or relocated; none while
 * a scan pins the set. */
int blobset_unheld(blobset *b, uint64_t below, uint64_t **out, size_t *n);
/* Closes file `number` once its readers are done and forgets it (a relocated one's number is
 * kept: blobset_read); its path (malloc'd) in *path for the caller to unlink, or NULL when the
 * set does not have it (or had no memory to remember a relocated one: it stays). */
int blobset_forget(blobset *b, uint64_t number, char **path);

/* ---- garbage collection (blob_gc.c) ---- */
/* What the GC asks of blobset_gc_pick (its policy: blob_gc.c). */
typedef struct gc_policy {
    uint64_t below;          /* files from this number on may be pointed into by memtables */
    uint64_t written;        /* the set's bytes written so far */
    uint64_t resample_min;   /* a file not counted since its start is sampled again once this
                                many bytes were written since it last was */
    double share;            /* a file is taken once its live share is below this... */
    double ratio;            /* ... or, pressed (the set's bytes over ratio x its live bytes
                                + slack), below pressed_max */
    uint64_t slack;
    double pressed_max;
    uint64_t wait_slack;     /* behind: over ratio x live + wait_slack, with a file to take */
} gc_policy;

/* blobset_gc_pick's answer. */
typedef struct gc_pick {
    uint64_t number;         /* the file to look at; 0: none */
    int take;                /* move its live records now (known to be under the share) */
    int pressed, behind;
    uint64_t bytes, live;    /* the set's bytes (relocated files aside), and their live part as
                                known: sizes less the dead bytes counted or sampled */
} gc_pick;

/* The GC's next file: among those below p->below (not the active one, not relocated, not
 * damaged) the least live, when under the policy's share; else the oldest file not counted
 * from its start (opened, not started, by this process) never sampled or not lately. 1 when
 * one is picked. */
int blobset_gc_pick(blobset *b, const gc_policy *p, gc_pick *out);
/* The GC sampled it when `written` bytes had been written and found a share `live` live. */
void blobset_set_sampled(blobset *b, uint64_t number, uint64_t written, double live);
/* `bytes` of its records were found shadowed (an overwrite or delete of their keys). */
void blobset_add_dead(blobset *b, uint64_t number, uint64_t bytes);
/* Reads up to n bytes of file `number` from `off` (*got: fewer at its end, 0 past it). */
int blobset_read_at(blobset *b, uint64_t number, uint64_t off, uint8_t *buf, size_t n,
                    size_t *got);
/* Whether a relocated file below `below` is still here (a pass found the set pinned). */
int blobset_moved_left(blobset *b, uint64_t below);
/* The GC met a damaged record in it: it is not picked again (the records past the damage may
 * live, and nothing moved them). */
void blobset_set_damaged(blobset *b, uint64_t number);
/* Its live records were moved, and synced: it is not picked again, and goes in the next
 * removal pass once below the floor (blobset_unheld). */
void blobset_set_relocated(blobset *b, uint64_t number);
/* Files, their bytes on disk, those with descriptors open now, and the bytes not known dead
 * (as blobset_gc_pick counts them, relocated files aside) (stats). */
void blobset_counts(blobset *b, uint64_t *files, uint64_t *bytes, uint64_t *open,
                    uint64_t *live);

#endif
