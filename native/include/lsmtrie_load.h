/* lsmtrie_load.h: streaming parsers of bulk-load input (chunks of bytes to packed batches of
 * items) and their inverse formatters (docs/format/load-input.md). Conventions of lsmtrie.h. */
#ifndef LSMTRIE_LOAD_H
#define LSMTRIE_LOAD_H

#include "lsmtrie.h"

#ifdef __cplusplus
extern "C" {
#endif

#pragma GCC visibility push(default)
/* cdef-begin */

#define LTR_FMT_TSV 1
#define LTR_FMT_CSV 2
#define LTR_FMT_JSONL 3
#define LTR_FMT_FIXED 4
#define LTR_FMT_LENPREFIX 5

#define LTR_ENC_UTF8 0
#define LTR_ENC_HEX 1
#define LTR_ENC_BASE64 2

#define LTR_BAD_FAIL 0
#define LTR_BAD_SKIP 1
#define LTR_BAD_KEPT 10 /* bad-line descriptions a parser keeps */

typedef struct ltr_parser_opts {
    int format;          /* LTR_FMT_* */
    int key_encoding;    /* LTR_ENC_* */
    int value_encoding;  /* LTR_ENC_* */
    uint32_t key_size;   /* fixed only */
    uint32_t value_size; /* fixed only */
    int on_bad_line;     /* LTR_BAD_FAIL or LTR_BAD_SKIP */
} ltr_parser_opts;

typedef struct ltr_parser ltr_parser;

int ltr_parser_new(const ltr_parser_opts *o, ltr_parser **out);
/* Parses one chunk, appending whole items to out (which the caller resets when it wants).
 * final: the input ends with this chunk (an incomplete last record is then handled). */
int ltr_parser_feed(ltr_parser *p, const uint8_t *data, size_t len, int final, ltr_items *out);
/* Forgets the pending bytes and restarts the numbering, for the next input file. */
void ltr_parser_reset(ltr_parser *p);
/* Where the parser stands: *pending bytes held of a record split across chunks, and *consumed
 * the lines (text formats) or bytes (binary formats) of the records before them. A resumed
 * input read again from the byte where those pending bytes start continues with
 * ltr_parser_seek(consumed). */
void ltr_parser_position(const ltr_parser *p, uint64_t *pending, uint64_t *consumed);
void ltr_parser_seek(ltr_parser *p, uint64_t consumed);
uint64_t ltr_parser_bad_lines(const ltr_parser *p);
/* Description of kept bad line i (< min(bad lines, LTR_BAD_KEPT)), else NULL. */
const char *ltr_parser_bad_line(const ltr_parser *p, size_t i);
void ltr_parser_free(ltr_parser *p);

/* Appends n packed items to out in the format and encodings of o. */
int ltr_format_items(const ltr_parser_opts *o, const uint8_t *kdata, const int64_t *koffs,
                     const uint8_t *vdata, const int64_t *voffs, size_t n, ltr_buf *out);

/* cdef-end */
#pragma GCC visibility pop

#ifdef __cplusplus
}
#endif
#endif /* LSMTRIE_LOAD_H */
