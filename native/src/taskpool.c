/* taskpool.c: a pool of threads that run posted tasks (taskpool.h). Runs are taken in the order
 * posted, one at a time, under the pool's mutex; a poster waits for its own runs only. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>

#include "taskpool.h"

struct taskpool {
    pthread_mutex_t mu;
    pthread_cond_t work;      /* idle threads wait here for runs */
    pthread_cond_t done;      /* posters wait here for their runs to finish */
    taskgroup *head, *tail;   /* groups with runs not yet started, in post order */
    pthread_t *threads;
    unsigned max, n;          /* threads allowed, started */
    unsigned idle, busy;      /* threads waiting for work, running a task */
    int stop;
};

taskpool *taskpool_new(unsigned max_threads)
{
    taskpool *p = calloc(1, sizeof *p);
    if (p && !(p->threads = calloc(max_threads ? max_threads : 1, sizeof(pthread_t)))) {
        free(p);
        p = NULL;
    }
    if (!p)
        return NULL;
    p->max = max_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work, NULL);
    pthread_cond_init(&p->done, NULL);
    return p;
}

/* The next run to start (its group), or NULL; mu held. */
static taskgroup *take_run(taskpool *p)
{
    taskgroup *g = p->head;
    if (g && --g->left == 0 && !(p->head = g->next))
        p->tail = NULL;
    return g;
}

static void *worker(void *arg)
{
    taskpool *p = arg;
    pthread_setname_np(pthread_self(), "ltr-batch");
    pthread_mutex_lock(&p->mu);
    for (;;) {
        taskgroup *g = take_run(p);
        if (!g && p->stop)
            break;
        if (!g) {
            p->idle++;
            pthread_cond_wait(&p->work, &p->mu);
            p->idle--;
            continue;
        }
        p->busy++;
        pthread_mutex_unlock(&p->mu);
        g->fn(g->arg);
        pthread_mutex_lock(&p->mu);
        p->busy--;
        if (--g->pending == 0) /* the poster may free g once it sees this: g is not touched again */
            pthread_cond_broadcast(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* Starts threads until every run queued can have one (within the bound); mu held. */
static void start_threads(taskpool *p, unsigned runs)
{
    for (taskgroup *q = p->head; q; q = q->next)
        runs += q->left;
    while (p->n < p->max && p->n - p->busy < runs &&
           pthread_create(&p->threads[p->n], NULL, worker, p) == 0)
        p->n++;
}

unsigned taskpool_post(taskpool *p, taskgroup *g, void (*fn)(void *), void *arg, unsigned copies)
{
    if (!copies)
        return 0;
    pthread_mutex_lock(&p->mu);
    start_threads(p, copies);
    if (!p->n) {
        pthread_mutex_unlock(&p->mu);
        return 0;
    }
    *g = (taskgroup){.fn = fn, .arg = arg, .left = copies, .pending = copies};
    if (p->tail)
        p->tail->next = g;
    else
        p->head = g;
    p->tail = g;
    for (unsigned i = 0; i < copies && i < p->idle; i++)
        pthread_cond_signal(&p->work);
    pthread_mutex_unlock(&p->mu);
    return copies;
}

void taskpool_cancel(taskpool *p, taskgroup *g)
{
    pthread_mutex_lock(&p->mu);
    if (g->left) {
        taskgroup **at = &p->head, *prev = NULL;
        while (*at != g) {
            prev = *at;
            at = &(*at)->next;
        }
        *at = g->next;
        if (p->tail == g)
            p->tail = prev;
        g->pending -= g->left;
        g->left = 0;
    }
    pthread_mutex_unlock(&p->mu);
}

void taskpool_wait(taskpool *p, taskgroup *g)
{
    pthread_mutex_lock(&p->mu);
    while (g->pending)
        pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

void taskpool_free(taskpool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    for (unsigned i = 0; i < p->n; i++)
        pthread_join(p->threads[i], NULL);
    pthread_cond_destroy(&p->done);
    pthread_cond_destroy(&p->work);
    pthread_mutex_destroy(&p->mu);
    free(p->threads);
    free(p);
}
