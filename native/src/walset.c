/* walset.c: the write-ahead logs on disk and their bytes (walset.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io.h"
#include "walset.h"

void walset_init(walset *w)
{
    memset(w, 0, sizeof *w);
    pthread_mutex_init(&w->mu, NULL);
}

void walset_free(walset *w)
{
    free(w->v);
    pthread_mutex_destroy(&w->mu);
    memset(w, 0, sizeof *w);
}

void walset_add(walset *w, uint64_t number, uint64_t bytes)
{
    pthread_mutex_lock(&w->mu);
    if (w->n == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 16;
        struct walfile *p = realloc(w->v, cap * sizeof *p);
        if (p) {
            w->v = p;
            w->cap = cap;
        }
    }
    if (w->n < w->cap) {
        w->v[w->n++] = (struct walfile){number, bytes, 0};
        w->bytes += bytes;
    }
    pthread_mutex_unlock(&w->mu);
}

void walset_settle(walset *w, uint64_t number, uint64_t bytes)
{
    pthread_mutex_lock(&w->mu);
    for (size_t i = 0; i < w->n; i++)
        if (w->v[i].number == number) {
            w->bytes += bytes - w->v[i].bytes;
            w->v[i].bytes = bytes;
        }
    pthread_mutex_unlock(&w->mu);
}

void walset_release_below(walset *w, uint64_t floor)
{
    pthread_mutex_lock(&w->mu);
    for (size_t i = 0; i < w->n; i++)
        if (w->v[i].number < floor)
            w->v[i].dead = 1;
    pthread_mutex_unlock(&w->mu);
}

int walset_has_dead(walset *w)
{
    pthread_mutex_lock(&w->mu);
    int any = 0;
    for (size_t i = 0; i < w->n && !any; i++)
        any = w->v[i].dead;
    pthread_mutex_unlock(&w->mu);
    return any;
}

/* Takes the first dead log out of the set; 0 when there is none. */
static int take_dead(walset *w, struct walfile *out)
{
    pthread_mutex_lock(&w->mu);
    size_t i = 0;
    while (i < w->n && !w->v[i].dead)
        i++;
    int found = i < w->n;
    if (found) {
        *out = w->v[i];
        w->v[i] = w->v[--w->n];
    }
    pthread_mutex_unlock(&w->mu);
    return found;
}

size_t walset_unlink_dead(walset *w, const char *dir)
{
    size_t gone = 0;
    struct walfile f;
    char path[4096];
    while (take_dead(w, &f)) {
        snprintf(path, sizeof path, "%s/%08llu.wal", dir, (unsigned long long)f.number);
        io_unlink(path); /* (a failure leaves it for the next writer open, which removes it) */
        pthread_mutex_lock(&w->mu);
        w->bytes -= f.bytes; /* counted until it has left the disk */
        pthread_mutex_unlock(&w->mu);
        gone++;
    }
    return gone;
}

uint64_t walset_bytes(walset *w)
{
    pthread_mutex_lock(&w->mu);
    uint64_t b = w->bytes;
    pthread_mutex_unlock(&w->mu);
    return b;
}
