/* pool.c: table files kept for reuse (pool.h). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pool.h"

struct tpool {
    int refs; /* atomic: the store and the table references that will put their file here */
    pthread_mutex_t mu;
    char *dir;
    uint64_t *files;
    uint32_t n, cap;
    int closed;
};

tpool *tpool_new(const char *dir, uint32_t cap)
{
    tpool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->dir = strdup(dir);
    p->files = malloc(sizeof(uint64_t) * (cap ? cap : 1));
    if (!p->dir || !p->files) {
        free(p->dir);
        free(p->files);
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
    free(p);
}

static void unlink_file(const tpool *p, uint64_t file)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%08llu.ht", p->dir, (unsigned long long)file);
    unlink(path);
}

void tpool_put(tpool *p, uint64_t file)
{
    pthread_mutex_lock(&p->mu);
    int kept = !p->closed && p->n < p->cap;
    if (kept)
        p->files[p->n++] = file;
    pthread_mutex_unlock(&p->mu);
    if (!kept)
        unlink_file(p, file);
}

int tpool_take(tpool *p, const char *path)
{
    pthread_mutex_lock(&p->mu);
    int have = !p->closed && p->n > 0;
    uint64_t file = have ? p->files[--p->n] : 0;
    pthread_mutex_unlock(&p->mu);
    if (!have)
        return 0;
    char from[4096];
    snprintf(from, sizeof from, "%s/%08llu.ht", p->dir, (unsigned long long)file);
    return rename(from, path) == 0;
}

void tpool_close(tpool *p)
{
    pthread_mutex_lock(&p->mu);
    p->closed = 1;
    uint32_t n = p->n;
    p->n = 0;
    pthread_mutex_unlock(&p->mu);
    for (uint32_t i = 0; i < n; i++)
        unlink_file(p, p->files[i]);
}
