/* blobset.c: a store's value logs, their descriptors, reads and appends (see blobset.h). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blobset.h"
#include "io.h"

typedef struct bfile {
    uint64_t number;
    int fd;
    int bad;        /* its header is missing or damaged: no pointer can lead here */
    int holds;      /* table files listing it (under the set's lock, exclusive or atomic) */
    uint64_t size;  /* bytes (the active file's grow as records are appended) */
    char *path;
} bfile;

struct blobset {
    int refs; /* atomic */
    char *dir;
    /* Readers hold it shared across their pread: a file is closed only under the exclusive
     * hold, once no read is under way (writer-preferring, so a removal is not starved). */
    pthread_rwlock_t lock;
    bfile **v;      /* ascending numbers */
    size_t n, cap;
    /* the writer; sync_mu guards active's sync state against group commits on other threads */
    pthread_mutex_t sync_mu;
    bfile *active;
    uint64_t synced; /* the active file's bytes known durable */
    int pins;        /* scans running (atomic): nothing is removed meanwhile */
    int failed;      /* an fsync failed: Linux may have dropped the dirty pages, so nothing
                        written since can be trusted durable (writes fail until a reopen) */
};

blobset *blobset_new(const char *dir)
{
    blobset *b = calloc(1, sizeof *b);
    if (!b || !(b->dir = strdup(dir))) {
        free(b);
        return NULL;
    }
    pthread_rwlockattr_t a;
    pthread_rwlockattr_init(&a);
    pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&b->lock, &a);
    pthread_rwlockattr_destroy(&a);
    pthread_mutex_init(&b->sync_mu, NULL);
    b->refs = 1;
    return b;
}

void blobset_ref(blobset *b) { __atomic_fetch_add(&b->refs, 1, __ATOMIC_RELAXED); }

static void bfile_free(bfile *f)
{
    if (!f)
        return;
    if (f->fd >= 0)
        io_close(f->fd);
    free(f->path);
    free(f);
}

void blobset_unref(blobset *b)
{
    if (!b || __atomic_sub_fetch(&b->refs, 1, __ATOMIC_ACQ_REL))
        return;
    for (size_t i = 0; i < b->n; i++)
        bfile_free(b->v[i]);
    free(b->v);
    pthread_rwlock_destroy(&b->lock);
    pthread_mutex_destroy(&b->sync_mu);
    free(b->dir);
    free(b);
}

/* The index of file `number`, or of where it would go. */
static size_t find(const blobset *b, uint64_t number)
{
    size_t lo = 0, hi = b->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (b->v[mid]->number < number)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static bfile *lookup(const blobset *b, uint64_t number)
{
    size_t i = find(b, number);
    return i < b->n && b->v[i]->number == number ? b->v[i] : NULL;
}

/* Adds f in number order (exclusive hold). */
static int insert(blobset *b, bfile *f)
{
    if (b->n == b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 16;
        bfile **v = realloc(b->v, cap * sizeof *v);
        if (!v)
            return ltr_fail(LTR_ENOMEM, "out of memory listing value logs");
        b->v = v;
        b->cap = cap;
    }
    size_t i = find(b, f->number);
    memmove(b->v + i + 1, b->v + i, (b->n - i) * sizeof *b->v);
    b->v[i] = f;
    b->n++;
    return LTR_OK;
}

static bfile *bfile_new(const blobset *b, uint64_t number)
{
    bfile *f = calloc(1, sizeof *f);
    size_t n = strlen(b->dir) + 32;
    if (f && (f->path = malloc(n)))
        snprintf(f->path, n, "%s/%08llu.vlog", b->dir, (unsigned long long)number);
    if (!f || !f->path) {
        free(f);
        return NULL;
    }
    f->number = number;
    f->fd = -1;
    return f;
}

/* ---- the header (vlog.md) ---- */

static void header_encode(uint8_t *h)
{
    memset(h, 0, VLOG_HEADER_SIZE);
    memcpy(h, VLOG_MAGIC, 8);
    put_u16(h + 8, VLOG_VERSION);
    put_u32(h + 12, ltr_crc32c(0, h, 12));
}

static int header_ok(const uint8_t *h)
{
    return !memcmp(h, VLOG_MAGIC, 8) && get_u32(h + 12) == ltr_crc32c(0, h, 12) &&
           get_u16(h + 8) == VLOG_VERSION;
}

/* ---- opening ---- */

typedef struct listing {
    blobset *b;
    uint64_t max;
    int rc;
} listing;

/* A file NNNNNNNN.vlog of the directory joins the set (unless it has it: a second listing);
 * one with a damaged header is kept as bad (a crash while it was being started: nothing points
 * into it). */
static int open_one(void *arg, const char *name)
{
    listing *l = arg;
    char *end;
    unsigned long long number = strtoull(name, &end, 10);
    if (end == name || strcmp(end, ".vlog") || !number)
        return LTR_OK;
    if (lookup(l->b, number)) {
        if (number > l->max)
            l->max = number;
        return LTR_OK;
    }
    bfile *f = bfile_new(l->b, number);
    if (!f)
        return ltr_fail(LTR_ENOMEM, "out of memory opening value logs");
    uint8_t h[VLOG_HEADER_SIZE];
    int rc = io_open(&f->fd, f->path, O_RDONLY | O_CLOEXEC, 0, "value log");
    if (!rc)
        rc = io_fsize(f->fd, f->path, &f->size);
    if (!rc)
        f->bad = f->size < VLOG_HEADER_SIZE ||
                 io_pread(f->fd, h, sizeof h, 0, f->path) != LTR_OK || !header_ok(h);
    if (!rc)
        rc = insert(l->b, f);
    if (rc) {
        bfile_free(f);
        return rc;
    }
    if (number > l->max)
        l->max = number;
    return LTR_OK;
}

int blobset_open_all(blobset *b, uint64_t *max_number)
{
    listing l = {.b = b};
    *max_number = 0;
    if (!io_exists(b->dir)) /* (a store about to be created, or none: recovery says which) */
        return LTR_OK;
    pthread_rwlock_wrlock(&b->lock);
    int rc = io_list_dir(b->dir, open_one, &l);
    pthread_rwlock_unlock(&b->lock);
    *max_number = l.max;
    return rc;
}

/* ---- reading ---- */

/* Checks a record's bytes against the pointer and key; the value's offset in *voff. */
static int record_check(const uint8_t *rec, uint64_t size, const blob_ptr *ptr,
                        const uint8_t *key, uint32_t klen, const char *path, size_t *voff)
{
    uint64_t kl, vl;
    const uint8_t *end = rec + size;
    size_t a = 0, c = 0;
    int ok = get_u32(rec) == ltr_crc32c(0, rec + 4, size - 4);
    if (ok && (a = get_varint(rec + 4, end, &kl)) && (c = get_varint(rec + 4 + a, end, &vl)))
        ok = kl == klen && vl == ptr->vlen && 4 + a + c + kl + vl == size &&
             (!klen || !memcmp(rec + 4 + a + c, key, klen));
    else
        ok = 0;
    if (!ok)
        return ltr_fail(LTR_ECORRUPT, "%s: the value-log record at offset %llu does not match "
                        "its pointer (checksum, key or length)", path,
                        (unsigned long long)ptr->offset);
    *voff = 4 + a + c + klen;
    return LTR_OK;
}

int blobset_read(blobset *b, const blob_ptr *ptr, const uint8_t *key, uint32_t klen,
                 uint8_t *dst)
{
    uint64_t size = blob_record_size(klen, ptr->vlen);
    uint8_t small[4096], *rec = size <= sizeof small ? small : malloc(size);
    if (!rec)
        return ltr_fail(LTR_ENOMEM, "out of memory reading a value");
    pthread_rwlock_rdlock(&b->lock);
    const bfile *f = lookup(b, ptr->file);
    int rc;
    if (!f || f->fd < 0)
        rc = ltr_fail(LTR_ECORRUPT, "%s: value log %08llu, which a pointer names, is missing",
                      b->dir, (unsigned long long)ptr->file);
    else if (f->bad || ptr->offset < VLOG_HEADER_SIZE)
        rc = ltr_fail(LTR_ECORRUPT, "%s: no record at offset %llu", f->path,
                      (unsigned long long)ptr->offset);
    else
        rc = io_pread(f->fd, rec, (size_t)size, ptr->offset, f->path);
    size_t voff = 0;
    if (!rc)
        rc = record_check(rec, size, ptr, key, klen, f->path, &voff);
    pthread_rwlock_unlock(&b->lock);
    if (!rc && dst && ptr->vlen)
        memcpy(dst, rec + voff, ptr->vlen);
    if (rec != small)
        free(rec);
    return rc;
}

/* ---- holds ---- */

static void add_holds(blobset *b, const blob_ref *refs, uint32_t n, int d)
{
    pthread_rwlock_rdlock(&b->lock);
    for (uint32_t i = 0; i < n; i++) {
        bfile *f = lookup(b, refs[i].file);
        if (f) /* (a file the set lacks: reads through the pointer will say so) */
            __atomic_add_fetch(&f->holds, d, __ATOMIC_RELAXED);
    }
    pthread_rwlock_unlock(&b->lock);
}

void blobset_hold(blobset *b, const blob_ref *refs, uint32_t n) { add_holds(b, refs, n, 1); }

void blobset_release(blobset *b, const blob_ref *refs, uint32_t n) { add_holds(b, refs, n, -1); }

/* ---- the writer ---- */

static int sync_active(blobset *b)
{
    bfile *f = b->active;
    if (b->failed)
        return ltr_fail(LTR_EIO, "%s: an fsync of the value log failed; reopen the store",
                        f ? f->path : b->dir);
    uint64_t upto = f ? __atomic_load_n(&f->size, __ATOMIC_ACQUIRE) : 0;
    if (!f || upto <= b->synced)
        return LTR_OK;
    int rc = io_fsync_fd(f->fd, f->path);
    if (!rc)
        b->synced = upto;
    b->failed = rc != 0;
    return rc;
}

int blobset_sync(blobset *b)
{
    pthread_mutex_lock(&b->sync_mu);
    int rc = sync_active(b);
    pthread_mutex_unlock(&b->sync_mu);
    return rc;
}

int blobset_start(blobset *b, uint64_t number)
{
    int rc = blobset_sync(b);
    bfile *f = rc ? NULL : bfile_new(b, number);
    if (rc || !f)
        return rc ? rc : ltr_fail(LTR_ENOMEM, "out of memory starting a value log");
    uint8_t h[VLOG_HEADER_SIZE];
    header_encode(h);
    rc = io_open(&f->fd, f->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644, "value log");
    if (!rc)
        rc = io_pwrite_fd(f->fd, h, sizeof h, f->path, 0);
    if (!rc) /* the header and the name durable before any pointer can lead here */
        rc = io_fsync_fd(f->fd, f->path);
    if (!rc)
        rc = io_fsync_dir(f->path);
    f->size = sizeof h;
    if (!rc) {
        pthread_rwlock_wrlock(&b->lock);
        rc = insert(b, f);
        pthread_rwlock_unlock(&b->lock);
    }
    if (rc) {
        if (f->fd >= 0)
            io_unlink(f->path);
        bfile_free(f);
        return rc;
    }
    pthread_mutex_lock(&b->sync_mu);
    b->active = f;
    b->synced = f->size;
    pthread_mutex_unlock(&b->sync_mu);
    return LTR_OK;
}

uint64_t blobset_active(const blobset *b, uint64_t *size)
{
    const bfile *f = b->active;
    *size = f ? __atomic_load_n(&f->size, __ATOMIC_ACQUIRE) : 0;
    return f ? f->number : 0;
}

int blobset_append(blobset *b, const uint8_t *p, size_t n, uint64_t at)
{
    bfile *f = b->active;
    if (__atomic_load_n(&b->failed, __ATOMIC_RELAXED))
        return ltr_fail(LTR_EIO, "%s: an fsync of the value log failed; reopen the store",
                        f ? f->path : b->dir);
    if (!f || at != f->size)
        return ltr_fail(LTR_EINVAL, "value log append out of place");
    int rc = io_pwrite_fd(f->fd, p, n, f->path, at);
    if (rc) {
        int cut = io_ftruncate(f->fd, at, f->path); /* no torn record to mistake for one */
        (void)cut;
        return rc;
    }
    __atomic_store_n(&f->size, at + n, __ATOMIC_RELEASE);
    return LTR_OK;
}

/* ---- removal ---- */

void blobset_pin(blobset *b, int d) { __atomic_add_fetch(&b->pins, d, __ATOMIC_ACQ_REL); }

int blobset_unheld(blobset *b, uint64_t below, uint64_t **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (__atomic_load_n(&b->pins, __ATOMIC_ACQUIRE))
        below = 0;
    pthread_rwlock_rdlock(&b->lock);
    uint64_t *v = malloc(sizeof *v * (b->n ? b->n : 1));
    for (size_t i = 0; v && i < b->n; i++) {
        const bfile *f = b->v[i];
        if (f->number < below && f != b->active && !__atomic_load_n(&f->holds, __ATOMIC_RELAXED))
            v[(*n)++] = f->number;
    }
    pthread_rwlock_unlock(&b->lock);
    *out = v;
    return v ? LTR_OK : ltr_fail(LTR_ENOMEM, "out of memory");
}

int blobset_forget(blobset *b, uint64_t number, char **path)
{
    *path = NULL;
    pthread_rwlock_wrlock(&b->lock);
    size_t i = find(b, number);
    bfile *f = i < b->n && b->v[i]->number == number ? b->v[i] : NULL;
    if (f) {
        memmove(b->v + i, b->v + i + 1, (b->n - i - 1) * sizeof *b->v);
        b->n--;
        *path = f->path;
        f->path = NULL;
    }
    pthread_rwlock_unlock(&b->lock);
    bfile_free(f); /* no reader can be in it: they hold the lock shared */
    return LTR_OK;
}

void blobset_counts(blobset *b, uint64_t *files, uint64_t *bytes)
{
    pthread_rwlock_rdlock(&b->lock);
    *files = b->n;
    *bytes = 0;
    for (size_t i = 0; i < b->n; i++)
        *bytes += __atomic_load_n(&b->v[i]->size, __ATOMIC_ACQUIRE);
    pthread_rwlock_unlock(&b->lock);
}
