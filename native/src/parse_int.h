/* parse_int.h: what parse.c takes from parse_json.c (the JSON of jsonl input and output). */
#ifndef LSMTRIE_PARSE_INT_H
#define LSMTRIE_PARSE_INT_H

#include <stddef.h>
#include <stdint.h>

#include "lsmtrie.h"

/* 1 when s[0,n) is well-formed UTF-8 (no overlong forms, surrogates or code points past
 * U+10FFFF). */
int utf8_valid(const uint8_t *s, size_t n);

/* The strings of one jsonl line: k/v point into the line when a string has no escape, else
 * into kbuf/vbuf; scratch holds member names and ignored strings. */
typedef struct json_fields {
    ltr_buf *kbuf, *vbuf, *scratch;
    const uint8_t *k, *v;
    size_t kl, vl;
    int have_key, have_value;
} json_fields;

/* Reads the object of one line (no LF): NULL when it holds string members "key" and "value"
 * (other members are checked as JSON and ignored), else why the line is bad. *rc is set when
 * memory runs out. */
const char *json_record(const uint8_t *s, size_t n, json_fields *f, int *rc);

/* Appends s[0,n) (UTF-8, checked by the caller) as a JSON string with its quotes. */
int json_put_string(ltr_buf *b, const uint8_t *s, size_t n);

#endif /* LSMTRIE_PARSE_INT_H */
