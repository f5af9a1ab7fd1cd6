/* ltr_int.h: internal declarations shared by the core's modules. */
#ifndef LTR_INT_H
#define LTR_INT_H

#include <stddef.h>
#include <stdint.h>

#include "lsmtrie_testing.h" /* the whole API: lsmtrie.h, lsmtrie_htable.h and the hooks */

#define LTR_VERSION_STRING "0.1.0"

/* Longest migration chain a builder creates (hops); see docs/format/htable.md. */
#define LTR_MAX_CHAIN 4

/* Records the detail of a failure for ltr_last_error() and returns rc, so that error paths read
 * `return ltr_fail(LTR_ECORRUPT, "bucket %u of %s: bad checksum", b, path);`. */
int ltr_fail(int rc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Records a failure with a given errno (re-reporting an earlier failure). */
int ltr_fail_as(int rc, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Same, for a failed system call: maps errno to LTR_ENOSPC or LTR_EIO and appends strerror. */
int ltr_fail_errno(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A failure carried from a helper thread (the detail is thread-local) to be raised again on
 * the thread that reports it. */
typedef struct ltr_error {
    int rc, err;
    char msg[512];
} ltr_error;
void ltr_error_keep(ltr_error *e, int rc); /* records this thread's last failure in e */
int ltr_error_raise(const ltr_error *e);  /* makes e this thread's last failure; returns e->rc */

/* The single-get contract: *vlen gets n; the value is copied to vbuf when it fits in vcap,
 * else LTR_EAGAIN tells the caller to ask again with a larger buffer. */
int copy_value(const uint8_t *v, size_t n, uint8_t *vbuf, size_t vcap, size_t *vlen);

/* Growable byte buffer helpers (ltr_buf is public). */
int buf_reserve(ltr_buf *b, size_t extra);
int buf_append(ltr_buf *b, const void *p, size_t n);

/* Key equality; memcmp's pointers must not be NULL even for zero bytes (empty keys). */
static inline int bytes_eq(const uint8_t *a, const uint8_t *b, size_t n)
{
    if (n >= 8) { /* most candidates differ in their first bytes: no call for those */
        uint64_t x, y;
        __builtin_memcpy(&x, a, 8);
        __builtin_memcpy(&y, b, 8);
        if (x != y)
            return 0;
    }
    return n == 0 || __builtin_memcmp(a, b, n) == 0;
}

/* Checks a packed batch: n+1 non-decreasing offsets starting at >= 0 and ending <= len. */
int batch_check(const int64_t *offs, size_t n, size_t len, const char *what);

#endif
