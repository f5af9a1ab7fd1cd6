/* walset.h: the write-ahead logs a store has on disk, and their bytes. The writer adds each log
 * it starts and settles its size when it moves on; a checkpoint releases the logs below the
 * floor it made durable; the checkpoint thread unlinks them. The bytes of the logs still on
 * disk are what bounds the log space (store_write.c waits for them, docs/design.md "Logs on disk").
 * It depends on nothing of the store; its mutex is a leaf, taken alone. */
#ifndef LTR_WALSET_H
#define LTR_WALSET_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

typedef struct walset {
    pthread_mutex_t mu;
    struct walfile {
        uint64_t number;
        uint64_t bytes; /* its size when the writer moved on (the current log: 0) */
        int dead;       /* below the durable floor: to be unlinked */
    } *v;
    size_t n, cap;
    uint64_t bytes; /* of the logs in v */
} walset;

void walset_init(walset *w);
void walset_free(walset *w);
/* A log on disk (bytes: its size now; the current log's grows and is settled later). Without
 * memory the log is not counted and stays on disk until the next writer open removes it. */
void walset_add(walset *w, uint64_t number, uint64_t bytes);
/* The writer moved on from log `number`, which holds `bytes`. */
void walset_settle(walset *w, uint64_t number, uint64_t bytes);
/* Logs numbered below floor hold nothing a durable state needs: they may be unlinked. */
void walset_release_below(walset *w, uint64_t floor);
/* Whether some log awaits unlinking. */
int walset_has_dead(walset *w);
/* Unlinks the released logs of dir (no lock held across the unlinks: freeing a large log's
 * blocks can wait for the device); returns how many went. */
size_t walset_unlink_dead(walset *w, const char *dir);
/* Bytes of the logs on disk that are not the current one. */
uint64_t walset_bytes(walset *w);

#endif
