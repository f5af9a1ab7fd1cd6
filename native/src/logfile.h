/* logfile.h: append-only files of checksummed records (docs/format/log.md), used by the
 * write-ahead log and the manifest. */
#ifndef LTR_LOGFILE_H
#define LTR_LOGFILE_H

#include <stddef.h>
#include <stdint.h>

#define LOG_HEADER 9
#define LOG_MAX_PAYLOAD (1u << 30)

typedef struct logw {
    int fd;
    char *path;
    uint64_t size; /* bytes in the file: the end of the last whole record */
    uint64_t part_at;   /* a record being written in parts: bytes written past `size` */
    uint64_t part_len;  /* its payload length */
    uint32_t part_crc;  /* CRC32C so far (length, type, payload written) */
} logw;

/* Opens path for appending at byte `size` (creating it when size is 0 and it does not exist). */
int logw_open(logw *w, const char *path, uint64_t size);
int logw_append(logw *w, uint8_t type, const uint8_t *payload, size_t len);
/* One record written in parts: logw_begin with the payload's whole length, logw_part for
 * consecutive pieces of it, then logw_end, which writes the checksum into the header. The
 * write-ahead log encodes a batch piece by piece into a 256 KiB buffer instead of a buffer of
 * the batch's size (up to 64 MiB, kept for the store's life). A failed step takes the partial
 * record back itself. */
int logw_begin(logw *w, uint8_t type, size_t len);
int logw_part(logw *w, const uint8_t *p, size_t n);
int logw_end(logw *w);
int logw_sync(logw *w);
void logw_close(logw *w);

/* A reader takes a log a record at a time through a window of the file, never the whole file:
 * a log may be many GiB (a store's recovery, a read-only open), and memory must be bounded by
 * the largest record (LOG_READ_WINDOW, or one record when it is larger), not by the log. */
#define LOG_READ_WINDOW (1u << 20)

typedef struct logr {
    int fd;           /* -1: closed */
    const char *path;
    uint64_t len;     /* the file's size at open: bytes appended later are not read */
    uint64_t pos;     /* start of the next record */
    uint8_t *buf;     /* bytes [buf_off, buf_off + buf_len) of the file */
    size_t buf_len, buf_cap;
    uint64_t buf_off;
} logr;

enum { LOGR_END = 0, LOGR_RECORD = 1, LOGR_TORN = 2, LOGR_CORRUPT = 3 };

/* Opens path for reading (nothing is read yet). A descriptor keeps an unlinked log readable:
 * a read-only open opens its logs before it reads the manifest (recovery.c). */
int logr_open(logr *r, const char *path);
/* The next record is read from byte pos (a record boundary the caller knows, such as the
 * manifest's LOG_OFFSET); past the end, the reader is at the end. */
void logr_seek(logr *r, uint64_t pos);
/* LOGR_RECORD with the record (valid until the next call), LOGR_END at a clean end, LOGR_TORN
 * at a torn tail (a bad record that reaches the end of the file, or an all-zero region: pages
 * never written), LOGR_CORRUPT at a bad record with more data after it; r->pos is then the
 * length of the good prefix. A negative status when the file cannot be read or the record
 * cannot be held in memory. */
int logr_next(logr *r, uint8_t *type, const uint8_t **payload, uint32_t *len);
void logr_close(logr *r);

#endif
