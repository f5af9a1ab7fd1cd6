/* fcache.c: the cache of open table files (see fcache.h). */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fcache.h"
#include "htable_read.h"
#include "io.h"

struct fcache {
    int refs; /* atomic */
    pthread_mutex_t mu;
    uint32_t limit;
    ltr_htable **ring; /* the tables holding a descriptor; the hand sweeps it */
    uint32_t n, cap, hand;
    uint64_t reopens;
};

fcache *fcache_new(uint32_t limit)
{
    fcache *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    pthread_mutex_init(&c->mu, NULL);
    c->refs = 1;
    c->limit = limit ? limit : 1;
    return c;
}

void fcache_unref(fcache *c)
{
    if (!c || __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL))
        return;
    pthread_mutex_destroy(&c->mu);
    free(c->ring);
    free(c);
}

static int ring_add(fcache *c, ltr_htable *t)
{
    if (c->n == c->cap) {
        uint32_t cap = c->cap ? 2 * c->cap : 64;
        ltr_htable **r = realloc(c->ring, cap * sizeof *r);
        if (!r)
            return ltr_fail(LTR_ENOMEM, "out of memory keeping %s open", t->path);
        c->ring = r;
        c->cap = cap;
    }
    t->slot = c->n;
    c->ring[c->n++] = t;
    return LTR_OK;
}

static void ring_remove(fcache *c, ltr_htable *t)
{
    uint32_t i = t->slot;
    c->ring[i] = c->ring[--c->n];
    c->ring[i]->slot = i;
    t->slot = FC_NO_SLOT;
}

/* Closes the descriptor of one table not read since the hand last passed it and not being
 * read now: 1 done, 0 every table is busy (then the bound is exceeded for a while). */
static int evict_one(fcache *c)
{
    for (uint64_t step = 0; c->n && step < 2ull * c->n + 1; step++) {
        if (c->hand >= c->n)
            c->hand = 0;
        ltr_htable *t = c->ring[c->hand];
        if (__atomic_exchange_n(&t->used, 0, __ATOMIC_RELAXED)) {
            c->hand++;
            continue;
        }
        int fd = __atomic_exchange_n(&t->fd, -1, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&t->users, __ATOMIC_SEQ_CST)) {
            __atomic_store_n(&t->fd, fd, __ATOMIC_SEQ_CST); /* a reader has it: keep it */
            c->hand++;
            continue;
        }
        ring_remove(c, t); /* the last table moves into the hand's slot: the hand stays */
        io_close(fd);
        return 1;
    }
    return 0;
}

static void make_room(fcache *c)
{
    while (c->n >= c->limit && evict_one(c))
        ;
}

int fcache_admit(fcache *c, ltr_htable *t)
{
    pthread_mutex_lock(&c->mu);
    make_room(c);
    int rc = ring_add(c, t);
    pthread_mutex_unlock(&c->mu);
    if (!rc) {
        __atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED);
        t->fc = c;
    }
    return rc;
}

int fcache_open_again(const ltr_htable *t, int direct, const char *why, int *out)
{
    *out = -1;
    int fd = io_open_read_as(t->path, direct);
    if (fd < 0 && direct && errno == EINVAL)
        return io_direct_refused(t->path);
    if (fd < 0)
        return ltr_fail_errno(errno, "cannot open %s again (%s)%s", t->path, why,
                              errno == ENOENT ? "; a read-only store whose writer dropped the "
                              "table since it was opened must be opened again" : "");
    io_stat sb;
    int rc = io_fstat(fd, t->path, &sb);
    if (!rc && (sb.dev != t->dev || sb.ino != t->ino || sb.size != t->file_bytes))
        rc = ltr_fail(LTR_ECORRUPT, "%s was replaced since it was opened (opened again %s)",
                      t->path, why);
    if (rc)
        io_close(fd);
    else
        *out = fd;
    return rc;
}

int fcache_reopen(fcache *c, ltr_htable *t, int *fd)
{
    pthread_mutex_lock(&c->mu);
    int rc = LTR_OK;
    int f = __atomic_load_n(&t->fd, __ATOMIC_SEQ_CST);
    if (f < 0) { /* still closed (another reader may have reopened it meanwhile) */
        make_room(c);
        rc = fcache_open_again(t, (t->flags & LTR_OPEN_DIRECT) != 0,
                               "after max_open_files closed it", &f);
        if (!rc && (rc = ring_add(c, t)))
            io_close(f);
        if (!rc) {
            __atomic_store_n(&t->fd, f, __ATOMIC_SEQ_CST);
            c->reopens++;
        }
    }
    pthread_mutex_unlock(&c->mu);
    *fd = f;
    return rc;
}

void fcache_forget(fcache *c, ltr_htable *t)
{
    pthread_mutex_lock(&c->mu);
    if (t->slot != FC_NO_SLOT)
        ring_remove(c, t);
    pthread_mutex_unlock(&c->mu);
    t->fc = NULL;
    fcache_unref(c);
}

void fcache_counts(fcache *c, uint64_t *open, uint64_t *reopens)
{
    pthread_mutex_lock(&c->mu);
    *open = c->n;
    *reopens = c->reopens;
    pthread_mutex_unlock(&c->mu);
}
