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
    uint64_t size; /* bytes in the file */
} logw;

/* Opens path for appending at byte `size` (creating it when size is 0 and it does not exist). */
int logw_open(logw *w, const char *path, uint64_t size);
int logw_append(logw *w, uint8_t type, const uint8_t *payload, size_t len);
int logw_sync(logw *w);
void logw_close(logw *w);

typedef struct logr {
    uint8_t *data; /* the whole file, read at open */
    size_t len;
    size_t pos;    /* start of the next record */
    const char *path;
} logr;

enum { LOGR_END = 0, LOGR_RECORD = 1, LOGR_TORN = 2, LOGR_CORRUPT = 3 };

int logr_open(logr *r, const char *path);
/* LOGR_RECORD with the record, LOGR_END at a clean end, LOGR_TORN at a torn tail (a bad record
 * that reaches the end of the file, or an all-zero region: pages never written), LOGR_CORRUPT at
 * a bad record with more data after it. r->pos is then the length of the good prefix. */
int logr_next(logr *r, uint8_t *type, const uint8_t **payload, uint32_t *len);
void logr_close(logr *r);

#endif
