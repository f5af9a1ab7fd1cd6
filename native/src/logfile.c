/* logfile.c: writing and reading record logs (docs/format/log.md). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "coding.h"
#include "io.h"
#include "logfile.h"
#include "ltr_int.h"

int logw_open(logw *w, const char *path, uint64_t size)
{
    memset(w, 0, sizeof *w);
    int rc = io_open(&w->fd, path, O_WRONLY | O_CREAT, 0644, "log");
    if (rc)
        return rc;
    w->path = strdup(path);
    if (!w->path) {
        logw_close(w);
        return ltr_fail(LTR_ENOMEM, "out of memory");
    }
    /* Drop anything past the good records (a torn tail), so it can never be read as data. */
    uint64_t have;
    if (io_fsize(w->fd, path, &have) == LTR_OK && have != size) {
        rc = io_ftruncate(w->fd, size, path);
        if (!rc)
            rc = io_fsync_fd(w->fd, path);
        if (rc) {
            logw_close(w);
            return rc;
        }
    }
    if ((rc = io_seek(w->fd, size, path))) {
        logw_close(w);
        return rc;
    }
    w->size = size;
    return LTR_OK;
}

/* Cuts the file back to its last whole record, so the next append starts on a boundary. */
static int take_back(logw *w, int rc)
{
    w->part_at = w->part_len = 0;
    int err = io_ftruncate(w->fd, w->size, w->path);
    if (!err)
        err = io_seek(w->fd, w->size, w->path);
    if (err) {
        char why[256];
        snprintf(why, sizeof why, "%s", ltr_last_error());
        return ltr_fail_as(err, ltr_last_errno(), "log %s is in an unknown state after a failed "
                           "append (%s)", w->path, why);
    }
    return rc;
}

int logw_begin(logw *w, uint8_t type, size_t len)
{
    if (len > LOG_MAX_PAYLOAD)
        return ltr_fail(LTR_EINVAL, "log record of %zu bytes is over the 1 GiB limit", len);
    uint8_t h[LOG_HEADER];
    put_u32(h, 0); /* the checksum, written by logw_end: until then the record reads as torn */
    put_u32(h + 4, (uint32_t)len);
    h[8] = type;
    int rc = io_write_fd(w->fd, h, sizeof h, w->path, w->size);
    if (rc)
        return take_back(w, rc);
    w->part_at = sizeof h;
    w->part_len = len;
    w->part_crc = ltr_crc32c(0, h + 4, 5);
    return LTR_OK;
}

int logw_part(logw *w, const uint8_t *p, size_t n)
{
    if (!w->part_at || w->part_at - LOG_HEADER + n > w->part_len)
        return take_back(w, ltr_fail(LTR_EINVAL, "log %s: a part past its record's length",
                                     w->path));
    int rc = io_write_fd(w->fd, p, n, w->path, w->size + w->part_at);
    if (rc)
        return take_back(w, rc);
    w->part_crc = ltr_crc32c(w->part_crc, p, n);
    w->part_at += n;
    return LTR_OK;
}

int logw_end(logw *w)
{
    if (!w->part_at || w->part_at - LOG_HEADER != w->part_len)
        return take_back(w, ltr_fail(LTR_EINVAL, "log %s: a record ended short of its length",
                                     w->path));
    uint8_t c[4];
    put_u32(c, w->part_crc);
    int rc = io_pwrite_fd(w->fd, c, sizeof c, w->path, w->size);
    if (rc)
        return take_back(w, rc);
    w->size += w->part_at;
    w->part_at = w->part_len = 0;
    return LTR_OK;
}

int logw_append(logw *w, uint8_t type, const uint8_t *payload, size_t len)
{
    int rc = logw_begin(w, type, len);
    if (!rc)
        rc = logw_part(w, payload, len);
    return rc ? rc : logw_end(w);
}

int logw_sync(logw *w)
{
    return io_fsync_fd(w->fd, w->path);
}

void logw_close(logw *w)
{
    io_close(w->fd);
    w->fd = -1;
    free(w->path);
    w->path = NULL;
}

int logr_open(logr *r, const char *path)
{
    memset(r, 0, sizeof *r);
    r->path = path;
    int rc = io_open(&r->fd, path, O_RDONLY, 0, "log");
    if (rc)
        return rc;
    if ((rc = io_fsize(r->fd, path, &r->len))) {
        logr_close(r);
        return rc;
    }
    return LTR_OK;
}

void logr_seek(logr *r, uint64_t pos)
{
    r->pos = pos < r->len ? pos : r->len;
}

/* Makes bytes [off, off + n) of the file (all within r->len) available at *p: kept from the
 * window when they are there, else read with what follows, up to LOG_READ_WINDOW. The window
 * grows to hold one record when it must, and shrinks back after. */
static int window(logr *r, uint64_t off, size_t n, const uint8_t **p)
{
    if (off >= r->buf_off && off + n <= r->buf_off + r->buf_len) {
        *p = r->buf + (off - r->buf_off);
        return LTR_OK;
    }
    uint64_t left = r->len - off;
    size_t want = n > LOG_READ_WINDOW ? n : (left < LOG_READ_WINDOW ? (size_t)left : LOG_READ_WINDOW);
    size_t keep = 0; /* bytes from off that the window holds already */
    if (off >= r->buf_off && off < r->buf_off + r->buf_len)
        keep = (size_t)(r->buf_off + r->buf_len - off);
    if (want > r->buf_cap || (r->buf_cap > 4 * (size_t)LOG_READ_WINDOW && want <= LOG_READ_WINDOW)) {
        uint8_t *b = malloc(want ? want : 1);
        if (!b)
            return ltr_fail(LTR_ENOMEM, "out of memory reading a record of %zu bytes in %s", n,
                            r->path);
        if (keep)
            memcpy(b, r->buf + (off - r->buf_off), keep);
        free(r->buf);
        r->buf = b;
        r->buf_cap = want ? want : 1;
    } else if (keep) {
        memmove(r->buf, r->buf + (off - r->buf_off), keep);
    }
    r->buf_off = off;
    r->buf_len = keep;
    int rc = io_pread(r->fd, r->buf + keep, want - keep, off + keep, r->path);
    if (rc)
        return rc;
    r->buf_len = want;
    *p = r->buf;
    return LTR_OK;
}

/* Classifies the bad record at r->pos (docs/format/log.md "Reading"): torn when it claims to
 * end past the file, or when its claimed bytes are all zero (pages never written). */
static int bad_record(logr *r, uint64_t claimed_end)
{
    if (claimed_end >= r->len)
        return LOGR_TORN;
    const uint8_t *p;
    size_t n = (size_t)(claimed_end - r->pos);
    int rc = window(r, r->pos, n, &p);
    if (rc)
        return rc;
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return LOGR_CORRUPT;
    return LOGR_TORN;
}

int logr_next(logr *r, uint8_t *type, const uint8_t **payload, uint32_t *len)
{
    if (r->pos == r->len)
        return LOGR_END;
    if (r->len - r->pos < LOG_HEADER)
        return bad_record(r, r->len);
    const uint8_t *h;
    int rc = window(r, r->pos, LOG_HEADER, &h);
    if (rc)
        return rc;
    uint32_t n = get_u32(h + 4);
    uint64_t end = r->pos + LOG_HEADER + n;
    if (n > LOG_MAX_PAYLOAD || end > r->len || h[8] == 0)
        return bad_record(r, n > LOG_MAX_PAYLOAD ? r->len : end);
    if ((rc = window(r, r->pos, LOG_HEADER + (size_t)n, &h)))
        return rc;
    if (ltr_crc32c(0, h + 4, 5 + (size_t)n) != get_u32(h))
        return bad_record(r, end);
    *type = h[8];
    *payload = h + LOG_HEADER;
    *len = n;
    r->pos = end;
    return LOGR_RECORD;
}

void logr_close(logr *r)
{
    io_close(r->fd);
    free(r->buf);
    memset(r, 0, sizeof *r);
    r->fd = -1;
}
