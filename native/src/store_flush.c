/* store_flush.c: a flush, which writes the oldest immutable memtable as the newest table of
 * the root and moves the log floor past its records; the value-log records its items shadow are
 * counted dead. Depends on blob.c, memtable.c, store_read.c, store_files.c,
 * store_stats.c, lastlevel_queue.c and checkpoint.c. */
#include <stdlib.h>
#include <unistd.h>

#include "io.h"
#include "store_int.h"

/* Installs table r (file) of memtable m as the newest table of the root, with the log floor
 * that no longer needs m's records. */
static int install_flushed(ltr_store *s, const memtable *m, uint64_t file, tref *r)
{
    vedit_op op = {.add = 1, .node = 0, .level = 0, .table = r};
    medit e = {0};
    medit_table(&e, 1, 0, file);
    pthread_mutex_lock(&s->state_mu);
    uint64_t floor, off;
    memtable_floor_without(s, m, &floor, &off);
    medit_value(&e, OP_LOG_FLOOR, floor);
    medit_value(&e, OP_LOG_OFFSET, off);
    int rc = store_install(s, &op, 1, &e);
    if (!rc) {
        store_wrote(s, 0, file);
        s->log_floor = floor;
        s->log_floor_off = off;
        s->blobs.floor = memtable_blob_floor(s); /* (m's too: one flush late, harmlessly) */
    }
    if (!rc && s->current->depth == 1)
        lastlevel_note(s, 0);
    pthread_mutex_unlock(&s->state_mu);
    medit_free(&e);
    return rc;
}

int store_flush_oldest(ltr_store *s)
{
    memtable *m = memtable_oldest(s);
    if (!m)
        return LTR_OK;
    uint64_t file;
    char *path;
    ltr_build_stats st;
    int rc = store_new_table(s, &file, &path);
    if (rc)
        return rc;
    ltr_buf dead = {0}; /* what m's items shadow in the tables, counted once m is installed */
    store_tables_shadowed(s, m, &dead);
    rc = htable_write(m->b, path, &st); /* not ltr_hbuild_finish: a failed flush is retried */
    ltr_htable *t = NULL;
    if (!rc)
        rc = store_open_table(s, path, 0, &t);
    tref *r = t ? tref_new(file, 0, t, s->blobs.set) : NULL;
    if (t && !r) {
        ltr_htable_close(t);
        rc = ltr_fail(LTR_ENOMEM, "out of memory");
    }
    if (!rc) {
        store_count(s, C_WRITTEN_FLUSH, st.file_bytes);
        store_count(s, C_FLUSHES, 1);
        rc = install_flushed(s, m, file, r);
        tref_unref(r);
    }
    if (!rc)
        blob_note_dead_list(s, &dead);
    ltr_buf_free(&dead);
    if (rc)
        io_unlink(path); /* not installed */
    free(path);
    if (!rc) { /* in the version: the memtable can go (readers search the version after it) */
        memtable_drop(s, m);
        store_wake_writers(s);
    }
    return rc;
}
