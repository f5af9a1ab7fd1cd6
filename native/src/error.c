/* error.c: status strings and the per-thread detail of the last failure. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ltr_int.h"

static __thread char last_error[512];
static __thread int last_errno;

const char *ltr_version(void) { return LTR_VERSION_STRING; }

const char *ltr_last_error(void) { return last_error; }

int ltr_last_errno(void) { return last_errno; }

const char *ltr_strerror(int rc)
{
    switch (rc) {
    case LTR_OK: return "ok";
    case LTR_EINVAL: return "invalid argument";
    case LTR_ENOMEM: return "out of memory";
    case LTR_EIO: return "I/O error";
    case LTR_ECORRUPT: return "corruption";
    case LTR_ENOSPC: return "no space left on device";
    case LTR_ETOOBIG: return "item too large";
    case LTR_EVERSION: return "unsupported format version";
    case LTR_EAGAIN: return "buffer too small";
    case LTR_ELOCKED: return "store locked by another process";
    case LTR_EREADONLY: return "store is read-only";
    default: return "unknown status";
    }
}

static void vrecord(const char *fmt, va_list ap)
{
    vsnprintf(last_error, sizeof last_error, fmt, ap);
}

int ltr_fail(int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vrecord(fmt, ap);
    va_end(ap);
    last_errno = 0;
    return rc;
}

int ltr_fail_as(int rc, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vrecord(fmt, ap);
    va_end(ap);
    last_errno = err;
    return rc;
}

int ltr_fail_errno(int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vrecord(fmt, ap);
    va_end(ap);
    size_t used = strlen(last_error);
    snprintf(last_error + used, sizeof last_error - used, ": %s [errno %d]%s", strerror(err), err,
             err == EMFILE ? " (the process is out of open files: raise the limit, ulimit -n, "
                             "or give the store a smaller max_open_files)" : "");
    last_errno = err;
    return (err == ENOSPC || err == EDQUOT) ? LTR_ENOSPC : LTR_EIO;
}

void ltr_error_keep(ltr_error *e, int rc)
{
    e->rc = rc;
    e->err = last_errno;
    snprintf(e->msg, sizeof e->msg, "%s", last_error);
}

int ltr_error_raise(const ltr_error *e)
{
    return ltr_fail_as(e->rc, e->err, "%s", e->msg);
}

int copy_value(const uint8_t *v, size_t n, uint8_t *vbuf, size_t vcap, size_t *vlen)
{
    *vlen = n;
    if (n > vcap)
        return LTR_EAGAIN;
    if (n)
        memcpy(vbuf, v, n);
    return LTR_OK;
}

int buf_reserve(ltr_buf *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return LTR_OK;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < extra)
        cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p)
        return ltr_fail(LTR_ENOMEM, "cannot grow a buffer to %zu bytes", cap);
    b->data = p;
    b->cap = cap;
    return LTR_OK;
}

int buf_append(ltr_buf *b, const void *p, size_t n)
{
    int rc = buf_reserve(b, n);
    if (rc)
        return rc;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    return LTR_OK;
}

void ltr_buf_free(ltr_buf *b)
{
    if (!b)
        return;
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

int batch_check(const int64_t *offs, size_t n, size_t len, const char *what)
{
    if (!offs)
        return ltr_fail(LTR_EINVAL, "%s: missing offsets", what);
    if (offs[0] < 0)
        return ltr_fail(LTR_EINVAL, "%s: offsets[0] is negative", what);
    for (size_t i = 0; i < n; i++)
        if (offs[i + 1] < offs[i])
            return ltr_fail(LTR_EINVAL, "%s: offsets decrease at index %zu", what, i);
    if ((uint64_t)offs[n] > len)
        return ltr_fail(LTR_EINVAL, "%s: offsets end at %lld beyond the %zu data bytes", what,
                        (long long)offs[n], len);
    return LTR_OK;
}
