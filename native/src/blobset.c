/* blobset.c: a store's value logs, their descriptors, reads and appends (see blobset.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blobset.h"
#include "lsmtrie_testing.h"
#include "io.h"

typedef struct bfile {
    uint64_t number;
    int fd;
    int dfd;        /* the same file opened with O_DIRECT (direct_io), for reads; else -1 */
    int bad;        /* its header is missing or damaged: no pointer can lead here */
    int holds;      /* table files listing it (atomic) */
    int relocated;  /* its live records were moved to newer files (value-log GC) */
    int damaged;           /* the GC met a damaged record in it: never picked again */
    uint64_t sampled_at;   /* the set's bytes written when the GC last sampled it (0: never) */
    double live;           /* the share of its sampled bytes that were live then */
    uint64_t dead;         /* bytes of its records found shadowed since the open (atomic) */
    int counted;           /* started since the open: dead counts all its dead records */
    uint64_t size;  /* bytes (the active file's grow as records are appended) */
    char *path;
} bfile;

struct blobset {
    int refs; /* atomic */
    char *dir;
    int direct;     /* values are read with O_DIRECT (the store's direct_io) */
    uint32_t max_open, nopen, hand; /* files with descriptors: at most max_open (but the active
                                       one and those a reader needs now); the clock's hand */
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
    /* the relocated files forgotten (blobset_forget): a pointer into one was shadowed when it
     * went, and reading it tells the reader to look its key up again (LTR_EMOVED) */
    ltr_buf moved; /* uint64 numbers */
    int failed;      /* an fsync failed: Linux may have dropped the dirty pages, so nothing
                        written since can be trusted durable (writes fail until a reopen) */
};

blobset *blobset_new(const char *dir, int direct, uint32_t max_open)
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
    b->direct = direct;
    b->max_open = max_open ? max_open : 1;
    return b;
}

void blobset_ref(blobset *b) { __atomic_fetch_add(&b->refs, 1, __ATOMIC_RELAXED); }

static void bfile_free(bfile *f)
{
    if (!f)
        return;
    if (f->fd >= 0)
        io_close(f->fd);
    if (f->dfd >= 0)
        io_close(f->dfd);
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
    ltr_buf_free(&b->moved);
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
    f->fd = f->dfd = -1;
    return f;
}

/* ---- descriptors: a bounded number open, the others reopened by path when read ---- */

static int open_direct(const blobset *b, bfile *f);

static void close_fds(blobset *b, bfile *f)
{
    if (f->fd < 0)
        return;
    io_close(f->fd);
    if (f->dfd >= 0)
        io_close(f->dfd);
    f->fd = f->dfd = -1;
    b->nopen--;
}

/* Closes the descriptors of a file not read lately, other than keep and the active one, while
 * more than max_open are open (exclusive hold: no read is under way). */
static void evict(blobset *b, const bfile *keep)
{
    for (size_t tries = 0; b->nopen >= b->max_open && tries < 2 * b->n; tries++) {
        bfile *f = b->v[b->hand++ % b->n];
        if (f != keep && f != b->active && f->fd >= 0)
            close_fds(b, f);
    }
}

/* Opens file f's descriptors for reading (exclusive hold). */
static int open_fds(blobset *b, bfile *f)
{
    if (f->fd >= 0)
        return LTR_OK;
    evict(b, f);
    int rc = io_open(&f->fd, f->path, O_RDONLY | O_CLOEXEC, 0, "value log");
    if (!rc && (rc = open_direct(b, f))) {
        io_close(f->fd);
        f->fd = -1;
    }
    if (!rc)
        b->nopen++;
    return rc;
}

/* The set's lock held on file `number` with its descriptors open: *f, or NULL when the set
 * does not have it (the lock is held either way; the caller lets it go). Shared when the file
 * was open; exclusive when it had to be reopened, so that no other reader's reopening closes
 * it again before this read (which always makes progress that way). */
static int hold_open(blobset *b, uint64_t number, bfile **f)
{
    pthread_rwlock_rdlock(&b->lock);
    *f = lookup(b, number);
    if (!*f || (*f)->fd >= 0 || (*f)->bad)
        return LTR_OK;
    pthread_rwlock_unlock(&b->lock);
    pthread_rwlock_wrlock(&b->lock);
    *f = lookup(b, number);
    return *f && !(*f)->bad ? open_fds(b, *f) : LTR_OK;
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

/* With direct_io, a second descriptor for reads that bypass the page cache. */
static int open_direct(const blobset *b, bfile *f)
{
    if (!b->direct)
        return LTR_OK;
    f->dfd = io_open_read_as(f->path, 1);
    return f->dfd >= 0 ? LTR_OK : errno == EINVAL ? io_direct_refused(f->path)
                                 : ltr_fail_errno(errno, "cannot open value log %s", f->path);
}

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
        rc = open_direct(l->b, f);
    if (!rc)
        rc = insert(l->b, f);
    if (rc) {
        bfile_free(f);
        return rc;
    }
    l->b->nopen++;
    evict(l->b, NULL); /* (read back when a pointer leads there) */
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

/* Checks a record's bytes (size of them, from the pointer) against the pointer and key; the
 * value's offset in *voff. */
static int record_check(const uint8_t *rec, uint64_t size, const blob_ptr *ptr,
                        const uint8_t *key, uint32_t klen, const char *path, size_t *voff)
{
    vlog_record r;
    if (vlog_record_parse(rec, (size_t)size, &r) != 1 || r.size != size || r.klen != klen ||
        r.vlen != ptr->vlen || (klen && memcmp(r.key, key, klen)))
        return ltr_fail(LTR_ECORRUPT, "%s: the value-log record at offset %llu does not match "
                        "its pointer (checksum, key or length)", path,
                        (unsigned long long)ptr->offset);
    *voff = (size_t)(r.value - rec);
    return LTR_OK;
}

/* Reads [off, off + size) with O_DIRECT: the aligned blocks around it into *span (malloc'd,
 * aligned), *rec pointing at the record in it. */
static int read_direct(const bfile *f, uint64_t off, uint64_t size, uint8_t **rec,
                       uint8_t **span)
{
    uint64_t first = off & ~(uint64_t)(IO_DIRECT_ALIGN - 1);
    uint64_t last = (off + size + IO_DIRECT_ALIGN - 1) & ~(uint64_t)(IO_DIRECT_ALIGN - 1);
    *span = aligned_alloc(IO_DIRECT_ALIGN, last - first);
    if (!*span)
        return ltr_fail(LTR_ENOMEM, "out of memory reading a value");
    *rec = *span + (off - first);
    /* (the file's end may fall inside the last block: what the record needs is what counts) */
    return io_pread_direct(f->dfd, *span, last - first, first, off + size - first, f->path);
}

static int moved_reads; /* ltr_test_blob_moved_reads */

void ltr_test_blob_moved_reads(int n) { __atomic_store_n(&moved_reads, n, __ATOMIC_RELAXED); }

/* Whether a test asks this read to find its file collected. */
static int test_moved(void)
{
    int n = __atomic_load_n(&moved_reads, __ATOMIC_RELAXED);
    while (n > 0 && !__atomic_compare_exchange_n(&moved_reads, &n, n - 1, 0, __ATOMIC_RELAXED,
                                                 __ATOMIC_RELAXED))
        ;
    return n > 0;
}

/* Whether file `number` was relocated and forgotten (lock held). */
static int was_moved(const blobset *b, uint64_t number)
{
    const uint64_t *m = (const uint64_t *)b->moved.data;
    for (size_t i = 0; i < b->moved.len / sizeof *m; i++)
        if (m[i] == number)
            return 1;
    return 0;
}

int blobset_read(blobset *b, const blob_ptr *ptr, const uint8_t *key, uint32_t klen,
                 uint8_t *dst, int from_table)
{
    if (ptr->vlen > LTR_MAX_VALUE)
        return ltr_fail(LTR_ECORRUPT, "%s: a pointer into value log %08llu claims a value of "
                        "%u bytes, over the limit", b->dir, (unsigned long long)ptr->file,
                        ptr->vlen);
    uint64_t size = blob_record_size(klen, ptr->vlen);
    uint8_t small[4096], *rec = NULL, *owned = NULL; /* owned: rec's block, if allocated */
    bfile *f;
    int rc = hold_open(b, ptr->file, &f);
    if (rc)
        ;
    else if (from_table && ((!f && was_moved(b, ptr->file)) || test_moved()))
        rc = ltr_fail(LTR_EMOVED, "%s: value log %08llu was collected (its records moved) while "
                      "a lookup held a pointer into it", b->dir, (unsigned long long)ptr->file);
    else if (!f)
        rc = ltr_fail(LTR_ECORRUPT, "%s: value log %08llu, which a pointer names, is missing",
                      b->dir, (unsigned long long)ptr->file);
    else if (f->bad || ptr->offset < VLOG_HEADER_SIZE)
        rc = ltr_fail(LTR_ECORRUPT, "%s: no record at offset %llu", f->path,
                      (unsigned long long)ptr->offset);
    else if (f->dfd >= 0)
        rc = read_direct(f, ptr->offset, size, &rec, &owned);
    else if (!(rec = size <= sizeof small ? small : (owned = malloc(size))))
        rc = ltr_fail(LTR_ENOMEM, "out of memory reading a value");
    else
        rc = io_pread(f->fd, rec, (size_t)size, ptr->offset, f->path);
    size_t voff = 0;
    if (!rc)
        rc = record_check(rec, size, ptr, key, klen, f->path, &voff);
    pthread_rwlock_unlock(&b->lock);
    if (!rc && dst && ptr->vlen)
        memcpy(dst, rec + voff, ptr->vlen);
    free(owned);
    return rc;
}

/* ---- holds ---- */

static void add_holds(blobset *b, const blob_ref *refs, uint32_t n, int d)
{
    pthread_rwlock_rdlock(&b->lock);
    for (uint32_t i = 0; i < n; i++) {
        bfile *f = lookup(b, refs[i].file);
        if (!f) /* (a file the set lacks: reads through the pointer will say so) */
            continue;
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

int blobset_sync_all(blobset *b)
{
    int rc = LTR_OK;
    for (size_t i = 0; !rc; i++) {
        pthread_rwlock_wrlock(&b->lock); /* (reopened descriptors: exclusive) */
        bfile *f = i < b->n ? b->v[i] : NULL;
        if (f && !f->bad && !(rc = open_fds(b, f)))
            rc = io_fsync_fd(f->fd, f->path);
        pthread_rwlock_unlock(&b->lock);
        if (!f)
            break;
    }
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
    if (!rc)
        rc = open_direct(b, f);
    f->size = sizeof h;
    f->counted = 1;
    if (!rc) { /* active from the moment it is in the set: never evicted */
        pthread_rwlock_wrlock(&b->lock);
        if (!(rc = insert(b, f))) {
            pthread_mutex_lock(&b->sync_mu);
            b->active = f;
            b->synced = f->size;
            pthread_mutex_unlock(&b->sync_mu);
            b->nopen++;
            evict(b, f);
        }
        pthread_rwlock_unlock(&b->lock);
    }
    if (rc) {
        if (f->fd >= 0)
            io_unlink(f->path);
        bfile_free(f);
        return rc;
    }
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

int blobset_pinned(blobset *b) { return __atomic_load_n(&b->pins, __ATOMIC_ACQUIRE) != 0; }

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
        /* A relocated file's pointers left in tables are all shadowed, and its moved records
         * were synced before it was marked: any pass that sees the mark takes it. A lookup
         * that found one of those pointers just before the move and reads after the file went
         * is told so (LTR_EMOVED) and looks its key up again, finding the moved record. */
        int moved = f->relocated;
        if (f->number < below && f != b->active &&
            (moved || !__atomic_load_n(&f->holds, __ATOMIC_RELAXED)))
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
    int rc = f && f->relocated ? buf_append(&b->moved, &number, sizeof number) : LTR_OK;
    if (f && !rc) {
        memmove(b->v + i, b->v + i + 1, (b->n - i - 1) * sizeof *b->v);
        b->n--;
        close_fds(b, f);
        *path = f->path;
        f->path = NULL;
    } else {
        f = NULL; /* not here, or no memory to remember it: it stays, for a later pass */
    }
    pthread_rwlock_unlock(&b->lock);
    bfile_free(f); /* no reader can be in it: they hold the lock shared */
    return LTR_OK;
}

/* ---- garbage collection (blob_gc.c) ---- */

/* f's live bytes as far as the set knows: its size less the dead bytes counted, or less what
 * its last sample found dead, whichever is more (both undercount; a file not counted from its
 * start that was never sampled is taken as live). */
static uint64_t live_bytes(const bfile *f, uint64_t size)
{
    uint64_t dead = __atomic_load_n(&f->dead, __ATOMIC_RELAXED);
    if (f->sampled_at && !f->counted) {
        uint64_t sampled = (uint64_t)((double)size * (1.0 - f->live));
        dead = sampled > dead ? sampled : dead;
    }
    return dead < size ? size - dead : 0;
}

int blobset_gc_pick(blobset *b, const gc_policy *p, gc_pick *out)
{
    *out = (gc_pick){0};
    pthread_rwlock_rdlock(&b->lock);
    uint64_t stale = p->resample_min;
    const bfile *least = NULL, *oldest = NULL;
    double least_share = 2;
    for (size_t i = 0; i < b->n; i++) {
        const bfile *f = b->v[i];
        uint64_t size = __atomic_load_n(&f->size, __ATOMIC_ACQUIRE);
        if (f->bad || f->relocated)
            continue;
        out->bytes += size;
        out->live += f->damaged ? size : live_bytes(f, size); /* (damaged: never collected) */
        if (f->damaged || size <= VLOG_HEADER_SIZE)
            continue;
        double share = (double)live_bytes(f, size) / (double)size;
        if (f->number < p->below && f != b->active && share < least_share) /* may be moved */
            least = f, least_share = share;
        /* a file not counted from its start is sampled, again once as much was written */
        if (!oldest && !f->counted && (!f->sampled_at || f->sampled_at + stale <= p->written))
            oldest = f;
    }
    out->pressed = (double)out->bytes > p->ratio * (double)out->live + (double)p->slack;
    out->behind = (double)out->bytes > p->ratio * (double)out->live + (double)p->wait_slack;
    if (least && least_share < (out->pressed ? p->pressed_max : p->share)) {
        out->number = least->number;
        out->take = 1;
    } else if (oldest) {
        out->number = oldest->number;
    }
    out->behind = out->behind && out->take;
    pthread_rwlock_unlock(&b->lock);
    return out->number != 0;
}

void blobset_add_dead(blobset *b, uint64_t number, uint64_t bytes)
{
    pthread_rwlock_rdlock(&b->lock);
    bfile *f = lookup(b, number);
    if (f)
        __atomic_fetch_add(&f->dead, bytes, __ATOMIC_RELAXED);
    pthread_rwlock_unlock(&b->lock);
}

void blobset_set_sampled(blobset *b, uint64_t number, uint64_t written, double live)
{
    pthread_rwlock_wrlock(&b->lock);
    bfile *f = lookup(b, number);
    if (f) {
        f->sampled_at = written ? written : 1;
        f->live = live;
    }
    pthread_rwlock_unlock(&b->lock);
}

int blobset_read_at(blobset *b, uint64_t number, uint64_t off, uint8_t *buf, size_t n,
                    size_t *got)
{
    *got = 0;
    bfile *f;
    int rc = hold_open(b, number, &f);
    if (rc)
        ;
    else if (!f || f->bad)
        rc = ltr_fail(LTR_EINVAL, "%s: no value log %08llu", b->dir, (unsigned long long)number);
    else if (off < f->size)
        *got = (size_t)(f->size - off < n ? f->size - off : n);
    if (!rc && *got)
        rc = io_pread(f->fd, buf, *got, off, f->path);
    pthread_rwlock_unlock(&b->lock);
    return rc;
}

int blobset_moved_left(blobset *b, uint64_t below)
{
    int left = 0;
    pthread_rwlock_rdlock(&b->lock);
    for (size_t i = 0; i < b->n && !left; i++)
        left = b->v[i]->relocated && b->v[i]->number < below;
    pthread_rwlock_unlock(&b->lock);
    return left;
}

void blobset_set_damaged(blobset *b, uint64_t number)
{
    pthread_rwlock_wrlock(&b->lock);
    bfile *f = lookup(b, number);
    if (f)
        f->damaged = 1;
    pthread_rwlock_unlock(&b->lock);
}

void blobset_set_relocated(blobset *b, uint64_t number)
{
    pthread_rwlock_wrlock(&b->lock);
    bfile *f = lookup(b, number);
    if (f) {
        f->relocated = 1;
    }
    pthread_rwlock_unlock(&b->lock);
}

void blobset_counts(blobset *b, uint64_t *files, uint64_t *bytes, uint64_t *open,
                    uint64_t *live)
{
    pthread_rwlock_rdlock(&b->lock);
    *files = b->n;
    *open = b->nopen;
    *bytes = *live = 0;
    for (size_t i = 0; i < b->n; i++) {
        const bfile *f = b->v[i];
        uint64_t size = __atomic_load_n(&f->size, __ATOMIC_ACQUIRE);
        *bytes += size;
        *live += f->bad || f->relocated ? 0 : f->damaged ? size : live_bytes(f, size);
    }
    pthread_rwlock_unlock(&b->lock);
}
