/* taskpool.h: a pool of threads that run posted tasks. The threads start when tasks first need
 * them and live until the pool is freed: a store's batched gets post their lookups here
 * (store_batch.c) instead of starting threads per batch, which cost 1 to 3 ms for 32 threads on
 * the project machine, more than a batch of a hundred direct reads takes. */
#ifndef LTR_TASKPOOL_H
#define LTR_TASKPOOL_H

typedef struct taskpool taskpool;

/* A post: `copies` runs of fn(arg). The poster owns it (in its own struct) until taskpool_wait
 * returns; its fields are the pool's. */
typedef struct taskgroup {
    void (*fn)(void *arg);
    void *arg;
    unsigned left;    /* runs not yet started */
    unsigned pending; /* runs not yet finished */
    struct taskgroup *next;
} taskgroup;

/* A pool of at most max_threads threads (none started yet); NULL when out of memory. */
taskpool *taskpool_new(unsigned max_threads);
/* Queues `copies` runs of fn(arg), starting threads (up to the pool's bound) so that as many
 * can run at once. Returns the runs queued: 0 when the pool has no thread and none could start
 * (the caller then does the work itself; g is then not the pool's). Runs start in the order
 * posted; one poster's runs never wait for another's to finish, only for a free thread. */
unsigned taskpool_post(taskpool *p, taskgroup *g, void (*fn)(void *), void *arg, unsigned copies);
/* Runs of g not started yet are dropped (fn must tolerate fewer runs than posted). */
void taskpool_cancel(taskpool *p, taskgroup *g);
/* Waits until every run of g queued and not cancelled has finished. */
void taskpool_wait(taskpool *p, taskgroup *g);
/* Joins the threads and frees the pool; nothing may be posted still (NULL: nothing). */
void taskpool_free(taskpool *p);

#endif
