/* store_bg.c: the background threads: the flusher (memtables to tables), one or two workers
 * (compactions, and the last level's clusters and garbage collection), and the checkpointer
 * (checkpoints, delayed deletes, released logs). Their failures are latched in s->bg.error,
 * which stops writes until flush() lets the work run again. Depends on store_flush.c,
 * compaction.c, blob_gc.c, lastlevel.c, checkpoint.c, store_log.c and store_files.c. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <time.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "store_int.h"

/* The node worker `id` should compact next among levels [from, limit), if any. Both workers
 * compact every level above the last and run the last level's work, whose garbage collection
 * of a node must not overlap appends to it: a worker leaves alone the parent of the last-level
 * node the other works on (s->bg.ll_node), and takes no last-level node whose parent the other
 * compacts (lastlevel.c). Two compactions never take the same node; a node and its child may
 * compact at once (one appends to the child's pile, the other removes its oldest tables).
 * state_mu is held. */
static int pick(const ltr_store *s, const version *v, int id, uint64_t *node, uint32_t from,
                uint32_t limit)
{
    uint64_t other = s->bg.ll_node[!id];
    uint64_t busy_parent = other != NO_NODE && node_level(other) > 0
                         ? node_parent(other, node_level(other)) : NO_NODE;
    return compaction_pick(s, v, node, from, limit, s->bg.compacting[!id], busy_parent);
}

/* Whether the trie should deepen now (state_mu held): only while no last-level work is claimed,
 * since the nodes it works on stop being last-level ones and may then be compacted. */
static int deepen_now(ltr_store *s)
{
    return s->bg.ll_node[0] == NO_NODE && s->bg.ll_node[1] == NO_NODE &&
           compaction_deepen_due(s, s->current);
}

/* One unit of background work for worker `id`: 1 done, 0 nothing to do, <0 failed. state_mu
 * is not held. The version is pinned and the node claimed under state_mu, which installs hold,
 * so the pinned version shows what the other worker finished. */
static int background_step(ltr_store *s, int id)
{
    pthread_mutex_lock(&s->state_mu);
    if (deepen_now(s)) {
        int rc = compaction_deepen(s);
        pthread_mutex_unlock(&s->state_mu);
        return rc ? rc : 1;
    }
    int have_imm = memtable_pending(s);
    version *v = store_pin(s);
    uint64_t node = 0;
    /* Flushes come first unless some node is half again over its table budget: then it is
     * compacted first, so no node's pile (and no lookup's cost) grows without bound. */
    /* Under a working_memory cap that leaves room for one compaction, one runs at a time. */
    int compact = (s->mem.budget.compactions > 1 || s->bg.compacting[!id] == NO_NODE) &&
                  pick(s, v, id, &node, 0, v->depth - 1);
    const vnode *n = compact ? version_node(v, node) : NULL;
    int urgent = n && 2 * n->n >= 3 * s->o.node_tables;
    int flush = id == 0 && have_imm && !urgent && !s->bg.flusher_started;
    /* The first worker turns to the last level's own work before the compactions of the upper
     * levels, but after those into the last level (which feed it). */
    uint32_t feed = v->depth >= 2 ? v->depth - 2 : 0;
    int last = 0;
    if (id == 0 && s->bg.nworkers > 1 && compact && !urgent && !flush &&
        !pick(s, v, id, &node, feed, feed + 1))
        compact = !(last = lastlevel_ready(s, id));
    /* Writers of large values wait while the value-log GC is behind (which blob_gc_due notes):
     * it goes before the compactions that are not urgent, and before the last level's work. */
    int gc_first = id == 0 && !urgent && !flush && blob_gc_due(s) &&
                   __atomic_load_n(&s->blobs.behind, __ATOMIC_RELAXED);
    if (gc_first)
        compact = last = 0;
    else if (id == 0) /* the GC does not run meanwhile: writers do not wait for it */
        __atomic_store_n(&s->blobs.behind, 0, __ATOMIC_RELAXED);
    if (compact && !flush)
        s->bg.compacting[id] = node;
    pthread_mutex_unlock(&s->state_mu);
    int rc = 0;
    if (flush) {
        rc = store_flush_oldest(s);
        rc = rc ? rc : 1;
    } else if (last) {
        rc = lastlevel_step(s, id);
    } else if (compact) {
        rc = compaction_run(s, v, node);
        rc = rc ? rc : 1;
        pthread_mutex_lock(&s->state_mu);
        s->bg.compacting[id] = NO_NODE;
        pthread_mutex_unlock(&s->state_mu);
    } else if (gc_first) {
        rc = blob_gc_step(s);
    } else {
        rc = lastlevel_step(s, id);
        if (rc == 0 && id == 0) /* the first worker's alone: one value log at a time */
            rc = blob_gc_step(s);
    }
    version_unref(v);
    return rc;
}

/* Whether the worker has anything to do; state_mu is held, so a rotation or an install that
 * happens after this check wakes the worker (they broadcast state_cv under state_mu). */
static int work_available(ltr_store *s, int id)
{
    uint64_t node;
    if (s->bg.paused)
        return 0;
    return (id == 0 && !s->bg.flusher_started && memtable_pending(s)) || deepen_now(s) ||
           pick(s, s->current, id, &node, 0, s->current->depth - 1) ||
           lastlevel_ready(s, id) || (id == 0 && blob_gc_due(s));
}

/* The flusher's turn: a memtable waits and the root is not at twice its budget (the worker,
 * which compacts the fullest node first, brings it down). */
static int flush_available(ltr_store *s)
{
    if (s->bg.paused)
        return 0;
    const vnode *root = version_node(s->current, 0);
    return memtable_pending(s) && !(root && root->n >= 2 * s->o.node_tables);
}

/* Latches the error of failed background work (state_mu held, let go for a moment). */
static void record_bg_error(ltr_store *s, int rc)
{
    s->bg.error = rc;
    s->bg.error_errno = ltr_last_errno();
    snprintf(s->bg.message, sizeof s->bg.message, "background work failed: %s", ltr_last_error());
    pthread_mutex_unlock(&s->state_mu);
    store_wake_writers(s); /* stalled writers must see the error, not wait for a flush */
    pthread_mutex_lock(&s->state_mu);
}

/* Gives the memory a finished job freed back to the system. glibc keeps freed blocks in its
 * arenas, the workers' own among them (and after the first large block it frees, it stops
 * mapping blocks of up to 32 MB apart), so without this a process that loaded a store kept the
 * peak of its memtables, flush plans and compaction windows while it only read, several times
 * what the store still used (docs/design.md "Memory"). A trim walks the arenas' free blocks
 * once; the next job faults its pages again. */
static void release_freed_memory(void)
{
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

static void *worker_main(void *arg)
{
    ltr_store *s = ((struct worker_arg *)arg)->s;
    int id = ((struct worker_arg *)arg)->id;
    pthread_setname_np(pthread_self(), id ? "ltr-compact1" : "ltr-compact0");
    pthread_mutex_lock(&s->state_mu);
    while (!s->bg.stopping) {
        if (s->bg.error || !work_available(s, id)) {
            pthread_cond_wait(&s->state_cv, &s->state_mu);
            continue;
        }
        s->bg.busy++;
        pthread_mutex_unlock(&s->state_mu);
        int rc = background_step(s, id);
        if (rc) /* (a step that found nothing to do freed nothing) */
            release_freed_memory();
        pthread_mutex_lock(&s->state_mu);
        s->bg.busy--;
        if (rc < 0)
            record_bg_error(s, rc);
        pthread_cond_broadcast(&s->state_cv);
    }
    pthread_mutex_unlock(&s->state_mu);
    store_wake_writers(s);
    return NULL;
}

static void *flusher_main(void *arg)
{
    ltr_store *s = arg;
    pthread_setname_np(pthread_self(), "ltr-flush");
    pthread_mutex_lock(&s->state_mu);
    while (!s->bg.stopping) {
        if (s->bg.error || !flush_available(s)) {
            pthread_cond_wait(&s->state_cv, &s->state_mu);
            continue;
        }
        s->bg.flushing = 1;
        pthread_mutex_unlock(&s->state_mu);
        int rc = store_flush_oldest(s);
        release_freed_memory();
        pthread_mutex_lock(&s->state_mu);
        s->bg.flushing = 0;
        if (rc < 0)
            record_bg_error(s, rc);
        pthread_cond_broadcast(&s->state_cv); /* the worker: the root may need compacting */
    }
    pthread_mutex_unlock(&s->state_mu);
    store_wake_writers(s);
    return NULL;
}

/* The checkpointer: makes the state durable when a checkpoint is due (store_checkpoint_due),
 * runs the removal passes of value logs the GC asks for (store_collect_values), and deletes
 * the files whose grace period is over (unlinking a
 * file that has blocks can wait for the device, which compactions should not). */
static void *syncer_main(void *arg)
{
    ltr_store *s = arg;
    pthread_setname_np(pthread_self(), "ltr-checkpoint");
    pthread_mutex_lock(&s->state_mu);
    while (!s->bg.stopping) {
        if (s->blobs.collect_asked) { /* a value log the GC emptied goes now, not a checkpoint
                                         or two later (blob_gc.c) */
            s->blobs.collect_asked = 0;
            pthread_mutex_unlock(&s->state_mu);
            int again = store_collect_values(s);
            pthread_mutex_lock(&s->state_mu);
            s->blobs.collect_asked |= again;
        }
        if (s->files.ngrave) {
            pthread_mutex_unlock(&s->state_mu);
            store_reap(s, 0);
            pthread_mutex_lock(&s->state_mu);
        }
        if (store_log_has_released(s)) { /* the log space writers may wait for */
            pthread_mutex_unlock(&s->state_mu);
            store_log_remove_released(s);
            store_wake_writers(s);
            pthread_mutex_lock(&s->state_mu);
        }
        if (!s->bg.error && store_checkpoint_due(s)) {
            pthread_mutex_unlock(&s->state_mu);
            int rc = store_checkpoint(s, CKPT_BACKGROUND);
            pthread_mutex_lock(&s->state_mu);
            if (rc < 0)
                record_bg_error(s, rc);
            continue;
        }
        double wait = s->o.checkpoint_interval < 0.1 ? s->o.checkpoint_interval : 0.1;
        struct timespec until = store_deadline((uint64_t)(wait * 1e9) + 100000);
        pthread_cond_timedwait(&s->state_cv, &s->state_mu, &until);
    }
    pthread_mutex_unlock(&s->state_mu);
    return NULL;
}

/* The flusher, the syncer and one or two workers. With one level the root is the last level,
 * whose garbage collection must not overlap appends to it: the worker then flushes too. The
 * flusher starts first, so the worker knows from its start whether it flushes. */
int store_bg_start(ltr_store *s)
{
    if (s->current->depth > 1 && pthread_create(&s->bg.flusher, NULL, flusher_main, s) == 0)
        s->bg.flusher_started = 1;
    if (pthread_create(&s->bg.syncer, NULL, syncer_main, s) == 0)
        s->bg.syncer_started = 1;
    int want = s->current->depth >= 2 ? 2 : 1; /* a second worker when levels compact */
    for (int i = 0; s->bg.syncer_started && i < want && s->bg.nworkers == i; i++) {
        s->bg.wargs[i] = (struct worker_arg){s, i}; /* workers 0 .. nworkers-1 run */
        if (pthread_create(&s->bg.workers[i], NULL, worker_main, &s->bg.wargs[i]) == 0)
            s->bg.nworkers++;
    }
    if (s->bg.nworkers)
        return LTR_OK;
    pthread_mutex_lock(&s->state_mu);
    s->bg.stopping = 1;
    pthread_cond_broadcast(&s->state_cv);
    pthread_mutex_unlock(&s->state_mu);
    if (s->bg.flusher_started)
        pthread_join(s->bg.flusher, NULL);
    if (s->bg.syncer_started)
        pthread_join(s->bg.syncer, NULL);
    s->bg.flusher_started = s->bg.syncer_started = 0;
    return ltr_fail(LTR_ENOMEM, "cannot start the background threads");
}

int store_bg_wait_idle(ltr_store *s)
{
    pthread_mutex_lock(&s->state_mu);
    for (;;) {
        if (s->bg.error)
            break;
        uint64_t node;
        if (!memtable_pending(s) && !s->bg.busy && !s->bg.flushing &&
            !compaction_pick(s, s->current, &node, 0, LTR_MAX_LEVELS, NO_NODE, NO_NODE) &&
            !compaction_deepen_due(s, s->current) && !lastlevel_pending(s))
            break;
        pthread_cond_broadcast(&s->state_cv);
        pthread_cond_wait(&s->state_cv, &s->state_mu);
    }
    int rc = s->bg.error ? store_bg_error(s) : LTR_OK;
    pthread_mutex_unlock(&s->state_mu);
    return rc;
}

/* Stops the threads (after the work under way). */
void store_bg_stop(ltr_store *s)
{
    pthread_mutex_lock(&s->state_mu);
    s->bg.stopping = 1;
    pthread_cond_broadcast(&s->state_cv);
    pthread_mutex_unlock(&s->state_mu);
    for (int i = 0; i < s->bg.nworkers; i++)
        pthread_join(s->bg.workers[i], NULL);
    if (s->bg.flusher_started)
        pthread_join(s->bg.flusher, NULL);
    if (s->bg.syncer_started)
        pthread_join(s->bg.syncer, NULL);
    s->bg.nworkers = s->bg.flusher_started = s->bg.syncer_started = 0;
}

void store_bg_retry(ltr_store *s)
{
    pthread_mutex_lock(&s->state_mu);
    while (s->bg.busy || s->bg.flushing) /* a job under way may still fail: let it finish first */
        pthread_cond_wait(&s->state_cv, &s->state_mu);
    s->bg.error = 0;
    pthread_cond_broadcast(&s->state_cv);
    pthread_mutex_unlock(&s->state_mu);
}

void store_bg_pause(ltr_store *s)
{
    pthread_mutex_lock(&s->state_mu);
    s->bg.paused++;
    while (s->bg.busy || s->bg.flushing) /* the jobs under way finish first */
        pthread_cond_wait(&s->state_cv, &s->state_mu);
    pthread_mutex_unlock(&s->state_mu);
}

void store_bg_resume(ltr_store *s)
{
    pthread_mutex_lock(&s->state_mu);
    s->bg.paused--;
    pthread_cond_broadcast(&s->state_cv);
    pthread_mutex_unlock(&s->state_mu);
}
