/* pool.c: table files kept for reuse (pool.h). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io.h"
#include "ltr_int.h"
#include "pool.h"

#define PEND_MAX 8192 /* durable files waiting for their second event; more are unlinked */

typedef struct pend {
    uint64_t file;
    int events;
} pend;

struct tpool {
    int refs; /* atomic: the store and the table references that will put their file here */
    pthread_mutex_t mu;
    char *dir;
    uint64_t *files;  /* ready for reuse */
    uint8_t *was_durable; /* parallel to files */
    uint32_t n, cap;
    uint64_t taken, taken_durable;
    pend *pending;    /* durable files that had one of FREED and CLEARED (or GONE) */
    uint32_t npend, pend_cap;
    int closed;
};

tpool *tpool_new(const char *dir, uint32_t cap)
{
    tpool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->dir = strdup(dir);
    p->files = malloc(sizeof(uint64_t) * (cap ? cap : 1));
    p->was_durable = malloc(cap ? cap : 1);
    if (!p->dir || !p->files || !p->was_durable) {
        free(p->dir);
        free(p->files);
        free(p->was_durable);
        free(p);
        return NULL;
    }
    p->refs = 1;
    p->cap = cap;
    pthread_mutex_init(&p->mu, NULL);
    return p;
}

void tpool_ref(tpool *p) { __atomic_fetch_add(&p->refs, 1, __ATOMIC_RELAXED); }

void tpool_unref(tpool *p)
{
    if (!p || __atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    pthread_mutex_destroy(&p->mu);
    free(p->dir);
    free(p->files);
    free(p->was_durable);
    free(p->pending);
    free(p);
}

static void unlink_file(const tpool *p, uint64_t file)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%08llu.ht", p->dir, (unsigned long long)file);
    io_unlink(path); /* (a failure leaves it for the next open's sweep) */
}

/* Keeps file for reuse (mu held); 0 when it must be unlinked instead. */
static int keep(tpool *p, uint64_t file, int durable)
{
    if (p->closed || p->n == p->cap)
        return 0;
    p->was_durable[p->n] = (uint8_t)durable;
    p->files[p->n++] = file;
    return 1;
}

void tpool_counts(tpool *p, uint64_t *taken, uint64_t *durable)
{
    pthread_mutex_lock(&p->mu);
    *taken = p->taken;
    *durable = p->taken_durable;
    pthread_mutex_unlock(&p->mu);
}

void tpool_put(tpool *p, uint64_t file)
{
    pthread_mutex_lock(&p->mu);
    int kept = keep(p, file, 0);
    pthread_mutex_unlock(&p->mu);
    if (!kept)
        unlink_file(p, file);
}

void tpool_event(tpool *p, uint64_t file, int event)
{
    int drop = 0; /* unlink the file: its events are complete but it cannot be kept */
    pthread_mutex_lock(&p->mu);
    uint32_t i = 0;
    while (i < p->npend && p->pending[i].file != file)
        i++;
    if (i < p->npend) { /* the second event: the entry is settled */
        int both = (p->pending[i].events | event) == (TP_FREED | TP_CLEARED);
        p->pending[i] = p->pending[--p->npend];
        drop = both && !keep(p, file, 1);
    } else if (p->closed) {
        drop = event == TP_CLEARED; /* out of every state: nothing else will remove it */
    } else {
        if (p->npend == p->pend_cap && p->pend_cap < PEND_MAX) {
            uint32_t cap = p->pend_cap ? 2 * p->pend_cap : 64;
            pend *v = realloc(p->pending, cap * sizeof *v);
            if (v) {
                p->pending = v;
                p->pend_cap = cap;
            }
        }
        if (p->npend < p->pend_cap)
            p->pending[p->npend++] = (pend){file, event};
        else
            drop = event == TP_CLEARED; /* no room to wait: unlinked (a FREED is forgotten) */
    }
    pthread_mutex_unlock(&p->mu);
    if (drop)
        unlink_file(p, file);
}

int tpool_take(tpool *p, const char *path)
{
    pthread_mutex_lock(&p->mu);
    int have = !p->closed && p->n > 0;
    uint64_t file = have ? p->files[--p->n] : 0;
    int durable = have && p->was_durable[p->n];
    pthread_mutex_unlock(&p->mu);
    if (!have)
        return 0;
    char from[4096];
    snprintf(from, sizeof from, "%s/%08llu.ht", p->dir, (unsigned long long)file);
    int ok = io_rename(from, path) == LTR_OK; /* (else the caller writes a new file) */
    pthread_mutex_lock(&p->mu);
    p->taken += ok;
    p->taken_durable += ok && durable;
    pthread_mutex_unlock(&p->mu);
    return ok;
}

void tpool_close(tpool *p)
{
    pthread_mutex_lock(&p->mu);
    p->closed = 1;
    /* the reusable files, and cleared files still read by a reference that outlives the store
     * (a scan): out of every state, so unlinked now (an open reference keeps its file) */
    uint32_t n = 0, k = 0;
    uint64_t *gone = malloc(sizeof *gone * ((size_t)p->n + p->npend + 1));
    for (uint32_t i = 0; gone && i < p->n; i++)
        gone[n++] = p->files[i];
    for (uint32_t i = 0; i < p->npend; i++)
        if (gone && (p->pending[i].events & TP_CLEARED))
            gone[n++] = p->pending[i].file;
        else
            p->pending[k++] = p->pending[i];
    p->npend = k;
    p->n = 0;
    pthread_mutex_unlock(&p->mu);
    for (uint32_t i = 0; i < n; i++) /* (no memory: the next open removes them, unreferenced) */
        unlink_file(p, gone[i]);
    free(gone);
}
