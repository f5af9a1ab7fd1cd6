/* parse.c: streaming parsers of bulk-load input and their formatters (lsmtrie_load.h,
 * docs/format/load-input.md): the parser object, records framed across chunks, the tsv and
 * csv fields, the encodings and the binary formats; JSON itself is parse_json.c's. */
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "lsmtrie_load.h"
#include "coding.h"
#include "ltr_int.h"
#include "parse_int.h"

/* The most bytes a text record can take before its end is seen: room for the largest key and
 * value in the widest escaping (\\u00XX, six bytes a byte). Past it the framing is taken as lost:
 * a file in the wrong format must not grow the pending bytes to its whole size. */
#define TEXT_RECORD_MAX (6 * ((uint64_t)LTR_MAX_KEY + LTR_MAX_VALUE) + 64)

/* Where a csv scan stands: a quote opens a quoted field only at a field's start, and a quote
 * right after a closing one (a "" escape) enters it again. */
enum { CSV_FIELD_START = 0, CSV_IN_FIELD, CSV_QUOTED, CSV_CLOSED };

struct ltr_parser {
    ltr_parser_opts o;
    ltr_buf pend;           /* bytes of a record split across chunks */
    ltr_buf kf, vf;         /* unescaped fields */
    ltr_buf kd, vd;         /* decoded fields */
    ltr_buf scratch;        /* jsonl: member names and ignored strings */
    int csv_state;          /* csv: where the scan of the pending record stands (CSV_*) */
    uint64_t line;          /* lines consumed so far */
    uint64_t off;           /* binary formats: bytes consumed so far */
    uint64_t bad;
    char kept[LTR_BAD_KEPT][160];
};

static int is_binary(int format)
{
    return format == LTR_FMT_FIXED || format == LTR_FMT_LENPREFIX;
}

static int check_opts(const ltr_parser_opts *o)
{
    if (!o)
        return ltr_fail(LTR_EINVAL, "missing parser options");
    if (o->format < LTR_FMT_TSV || o->format > LTR_FMT_LENPREFIX)
        return ltr_fail(LTR_EINVAL, "unknown format %d", o->format);
    if (is_binary(o->format) && (o->key_encoding || o->value_encoding))
        return ltr_fail(LTR_EINVAL, "binary formats take only the utf8 (raw) encoding");
    if (o->format == LTR_FMT_FIXED && (o->key_size > LTR_MAX_KEY || o->value_size > LTR_MAX_VALUE))
        return ltr_fail(LTR_EINVAL, "fixed sizes over the key/value limits");
    if (o->format == LTR_FMT_FIXED && o->key_size + o->value_size == 0)
        return ltr_fail(LTR_EINVAL, "fixed records need key_size + value_size > 0");
    if (o->key_encoding < 0 || o->key_encoding > 2 || o->value_encoding < 0 ||
        o->value_encoding > 2)
        return ltr_fail(LTR_EINVAL, "unknown encoding");
    if (o->on_bad_line != LTR_BAD_FAIL && o->on_bad_line != LTR_BAD_SKIP)
        return ltr_fail(LTR_EINVAL, "on_bad_line must be fail or skip");
    return LTR_OK;
}

int ltr_parser_new(const ltr_parser_opts *o, ltr_parser **out)
{
    int rc = check_opts(o);
    if (rc)
        return rc;
    ltr_parser *p = calloc(1, sizeof *p);
    if (!p)
        return ltr_fail(LTR_ENOMEM, "cannot allocate a parser");
    p->o = *o;
    *out = p;
    return LTR_OK;
}

void ltr_parser_reset(ltr_parser *p)
{
    p->pend.len = 0;
    p->csv_state = CSV_FIELD_START;
    p->line = 0;
    p->off = 0;
    p->bad = 0;
}

void ltr_parser_position(const ltr_parser *p, uint64_t *pending, uint64_t *consumed)
{
    *pending = p->pend.len;
    *consumed = is_binary(p->o.format) ? p->off : p->line;
}

void ltr_parser_seek(ltr_parser *p, uint64_t consumed)
{
    p->pend.len = 0;
    p->csv_state = CSV_FIELD_START;
    if (is_binary(p->o.format))
        p->off = consumed;
    else
        p->line = consumed;
}

uint64_t ltr_parser_bad_lines(const ltr_parser *p) { return p->bad; }

const char *ltr_parser_bad_line(const ltr_parser *p, size_t i)
{
    return (i < p->bad && i < LTR_BAD_KEPT) ? p->kept[i] : NULL;
}

void ltr_parser_free(ltr_parser *p)
{
    if (!p)
        return;
    ltr_buf_free(&p->pend);
    ltr_buf_free(&p->kf);
    ltr_buf_free(&p->vf);
    ltr_buf_free(&p->kd);
    ltr_buf_free(&p->vd);
    ltr_buf_free(&p->scratch);
    free(p);
}

/* A bad record: an error in fail mode, else counted (and kept among the first ten). */
static int bad_line(ltr_parser *p, uint64_t line, const char *reason)
{
    if (p->o.on_bad_line == LTR_BAD_FAIL)
        return ltr_fail(LTR_EINVAL, "line %llu: %s", (unsigned long long)line, reason);
    if (p->bad < LTR_BAD_KEPT)
        snprintf(p->kept[p->bad], sizeof p->kept[0], "line %llu: %s", (unsigned long long)line,
                 reason);
    p->bad++;
    return LTR_OK;
}

/* Digit values by byte, -1 for a byte that is no digit: filled once, before any parser runs
 * (pthread_once: parsers of several threads may start together). */
static int8_t hex_table[256], b64_table[256];
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

static void fill_tables(void)
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    memset(hex_table, -1, sizeof hex_table);
    memset(b64_table, -1, sizeof b64_table);
    for (int i = 0; i < 10; i++)
        hex_table['0' + i] = (int8_t)i;
    for (int i = 0; i < 6; i++)
        hex_table['a' + i] = hex_table['A' + i] = (int8_t)(10 + i);
    for (int i = 0; i < 64; i++)
        b64_table[(uint8_t)b64[i]] = (int8_t)i;
}

static const int8_t *hexval(void)
{
    pthread_once(&tables_once, fill_tables);
    return hex_table;
}

static const int8_t *b64val(void)
{
    pthread_once(&tables_once, fill_tables);
    return b64_table;
}

/* Decodes s[0,n) per enc into *d; returns NULL or the reason it is bad. -ENOMEM as rc. */
static const char *decode(int enc, const uint8_t *s, size_t n, ltr_buf *d, const uint8_t **o,
                          size_t *on, int *rc)
{
    *rc = LTR_OK;
    if (enc == LTR_ENC_UTF8) {
        *o = s;
        *on = n;
        return NULL;
    }
    d->len = 0;
    if (enc == LTR_ENC_HEX) {
        if (n % 2)
            return "odd number of hex digits";
        if ((*rc = buf_reserve(d, n / 2 + 1)))
            return NULL;
        const int8_t *h = hexval();
        for (size_t i = 0; i < n; i += 2) {
            int a = h[s[i]], b = h[s[i + 1]];
            if ((a | b) < 0)
                return "bad hex digit";
            d->data[d->len++] = (uint8_t)(a << 4 | b);
        }
    } else {
        /* Strict RFC 4648: length a multiple of 4, padding only at the end, no whitespace. */
        if (n % 4)
            return "base64 length not a multiple of 4";
        if ((*rc = buf_reserve(d, n / 4 * 3 + 1)))
            return NULL;
        const int8_t *t = b64val();
        for (size_t i = 0; i < n; i += 4) {
            int pad = 0;
            if (i + 4 == n) {
                if (s[i + 3] == '=')
                    pad = s[i + 2] == '=' ? 2 : 1;
            }
            int a = t[s[i]], b = t[s[i + 1]];
            int c = pad >= 2 ? 0 : t[s[i + 2]], e = pad >= 1 ? 0 : t[s[i + 3]];
            if ((a | b | c | e) < 0)
                return "bad base64 character";
            uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | (uint32_t)e;
            if ((pad == 2 && (v & 0xffff)) || (pad == 1 && (v & 0xff)))
                return "base64 padding with nonzero bits";
            d->data[d->len++] = (uint8_t)(v >> 16);
            if (pad < 2)
                d->data[d->len++] = (uint8_t)(v >> 8);
            if (pad < 1)
                d->data[d->len++] = (uint8_t)v;
        }
    }
    *o = d->data;
    *on = d->len;
    return NULL;
}

/* Unescapes a tsv field into f (or points at it when it has no backslash). */
static const char *tsv_unescape(const uint8_t *s, size_t n, ltr_buf *f, const uint8_t **o,
                                size_t *on, int *rc)
{
    *rc = LTR_OK;
    const uint8_t *bs = n ? memchr(s, '\\', n) : NULL;
    if (!bs) {
        *o = s;
        *on = n;
        return NULL;
    }
    f->len = 0;
    if ((*rc = buf_reserve(f, n + 1)))
        return NULL;
    const uint8_t *end = s + n;
    while (bs) {
        memcpy(f->data + f->len, s, (size_t)(bs - s));
        f->len += (size_t)(bs - s);
        if (bs + 1 == end)
            return "backslash at the end of a field";
        uint8_t c;
        switch (bs[1]) {
        case 't': c = '\t'; break;
        case 'n': c = '\n'; break;
        case 'r': c = '\r'; break;
        case '\\': c = '\\'; break;
        default: return "unknown backslash escape";
        }
        f->data[f->len++] = c;
        s = bs + 2;
        bs = s < end ? memchr(s, '\\', (size_t)(end - s)) : NULL;
    }
    memcpy(f->data + f->len, s, (size_t)(end - s));
    f->len += (size_t)(end - s);
    *o = f->data;
    *on = f->len;
    return NULL;
}

static int items_start(ltr_items *out)
{
    if (out->koffs.len)
        return LTR_OK;
    int64_t zero = 0;
    out->n = 0;
    int rc = buf_append(&out->koffs, &zero, 8);
    return rc ? rc : buf_append(&out->voffs, &zero, 8);
}

static int push(ltr_items *out, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl)
{
    int rc = buf_append(&out->keys, k, kl);
    if (!rc)
        rc = buf_append(&out->values, v, vl);
    int64_t ko = (int64_t)out->keys.len, vo = (int64_t)out->values.len;
    uint8_t del = 0;
    if (!rc)
        rc = buf_append(&out->koffs, &ko, 8);
    if (!rc)
        rc = buf_append(&out->voffs, &vo, 8);
    if (!rc)
        rc = buf_append(&out->deleted, &del, 1);
    if (!rc)
        out->n++;
    return rc;
}

/* The two fields of a tsv line, unescaped. */
static const char *tsv_fields(ltr_parser *p, const uint8_t *s, size_t n, const uint8_t **k,
                              size_t *kl, const uint8_t **v, size_t *vl, int *rc)
{
    *rc = LTR_OK;
    const uint8_t *tab = n ? memchr(s, '\t', n) : NULL;
    if (!tab)
        return "no tab";
    if (memchr(tab + 1, '\t', (size_t)(s + n - tab - 1)))
        return "more than one tab";
    const char *why = tsv_unescape(s, (size_t)(tab - s), &p->kf, k, kl, rc);
    if (why || *rc)
        return why;
    return tsv_unescape(tab + 1, (size_t)(s + n - tab - 1), &p->vf, v, vl, rc);
}

/* One csv field at *ps (up to end), unquoted into f when quoted; *ps moves past it. */
static const char *csv_field(const uint8_t **ps, const uint8_t *end, ltr_buf *f,
                             const uint8_t **o, size_t *on, int *rc)
{
    const uint8_t *s = *ps;
    *rc = LTR_OK;
    if (s == end || *s != '"') {
        const uint8_t *e = s;
        while (e < end && *e != ',' && *e != '"')
            e++;
        if (e < end && *e == '"')
            return "quote in an unquoted field";
        *o = s;
        *on = (size_t)(e - s);
        *ps = e;
        return NULL;
    }
    f->len = 0;
    s++;
    for (;;) {
        const uint8_t *q = s < end ? memchr(s, '"', (size_t)(end - s)) : NULL;
        if (!q)
            return "unterminated quoted field";
        if ((*rc = buf_append(f, s, (size_t)(q - s))))
            return NULL;
        s = q + 1;
        if (s == end || *s != '"')
            break;
        if ((*rc = buf_append(f, "\"", 1))) /* "" is one quote */
            return NULL;
        s++;
    }
    if (s < end && *s != ',')
        return "text after a closing quote";
    *o = f->data;
    *on = f->len;
    *ps = s;
    return NULL;
}

/* The two fields of a csv record (RFC 4180). */
static const char *csv_fields(ltr_parser *p, const uint8_t *s, size_t n, const uint8_t **k,
                              size_t *kl, const uint8_t **v, size_t *vl, int *rc)
{
    const uint8_t *end = s + n;
    const char *why = csv_field(&s, end, &p->kf, k, kl, rc);
    if (why || *rc)
        return why;
    if (s == end)
        return "one field, two wanted";
    s++; /* the comma */
    if ((why = csv_field(&s, end, &p->vf, v, vl, rc)) || *rc)
        return why;
    return s == end ? NULL : "more than two fields";
}

static const char *jsonl_fields(ltr_parser *p, const uint8_t *s, size_t n, const uint8_t **k,
                                size_t *kl, const uint8_t **v, size_t *vl, int *rc)
{
    json_fields f = {.kbuf = &p->kf, .vbuf = &p->vf, .scratch = &p->scratch};
    const char *why = json_record(s, n, &f, rc);
    *k = f.k;
    *kl = f.kl;
    *v = f.v;
    *vl = f.vl;
    return why;
}

static uint64_t count_lf(const uint8_t *s, size_t n)
{
    uint64_t c = 0;
    for (const uint8_t *e = s + n; (s = s < e ? memchr(s, '\n', (size_t)(e - s)) : NULL); s++)
        c++;
    return c;
}

/* One text record without its LF (a CR before the LF is stripped here): its fields by format,
 * then decoded, checked against the limits and appended to out. */
static int text_record(ltr_parser *p, const uint8_t *s, size_t n, int had_lf, ltr_items *out)
{
    uint64_t line = p->line + 1;
    p->line += 1 + (p->o.format == LTR_FMT_CSV ? count_lf(s, n) : 0); /* csv: quoted LFs */
    if (had_lf && n && s[n - 1] == '\r')
        n--;
    int rc;
    const uint8_t *k = NULL, *v = NULL, *kd = NULL, *vd = NULL;
    size_t kl = 0, vl = 0, kdl = 0, vdl = 0;
    const char *why = p->o.format == LTR_FMT_TSV ? tsv_fields(p, s, n, &k, &kl, &v, &vl, &rc)
                    : p->o.format == LTR_FMT_CSV ? csv_fields(p, s, n, &k, &kl, &v, &vl, &rc)
                    : jsonl_fields(p, s, n, &k, &kl, &v, &vl, &rc);
    if (rc)
        return rc;
    if (!why && (why = decode(p->o.key_encoding, k, kl, &p->kd, &kd, &kdl, &rc)) == NULL && !rc)
        why = decode(p->o.value_encoding, v, vl, &p->vd, &vd, &vdl, &rc);
    if (rc)
        return rc;
    if (why)
        return bad_line(p, line, why);
    if (kdl > LTR_MAX_KEY)
        return bad_line(p, line, "key longer than 65535 bytes");
    if (vdl > LTR_MAX_VALUE)
        return bad_line(p, line, "value longer than 16777216 bytes");
    return push(out, kd, kdl, vd, vdl);
}

/* Binary formats: the length of the record starting at s (avail bytes there), 0 when its
 * header is incomplete, or a negative status for a bad length (framing is lost: an error even
 * in skip mode). */
static int64_t bin_len(ltr_parser *p, const uint8_t *s, size_t avail)
{
    if (p->o.format == LTR_FMT_FIXED)
        return (int64_t)p->o.key_size + p->o.value_size;
    if (avail < 8)
        return 0;
    uint32_t kl = get_u32(s), vl = get_u32(s + 4);
    if (kl > LTR_MAX_KEY || vl > LTR_MAX_VALUE) {
        p->bad++;
        return ltr_fail(LTR_EINVAL, "offset %llu: %s length %u over the limit (framing lost)",
                        (unsigned long long)p->off, kl > LTR_MAX_KEY ? "key" : "value",
                        kl > LTR_MAX_KEY ? kl : vl);
    }
    return 8 + (int64_t)kl + vl;
}

static int bin_push(ltr_parser *p, const uint8_t *s, size_t n, ltr_items *out)
{
    size_t h = p->o.format == LTR_FMT_FIXED ? 0 : 8;
    size_t kl = h ? get_u32(s) : p->o.key_size;
    p->off += n;
    return push(out, s + h, kl, s + h + kl, n - h - kl);
}

static int bin_feed(ltr_parser *p, const uint8_t *s, size_t len, int final, ltr_items *out)
{
    const uint8_t *end = s + len;
    int rc;
    while (p->pend.len) { /* complete the split record first */
        int64_t need = bin_len(p, p->pend.data, p->pend.len);
        if (need < 0)
            return (int)need;
        size_t want = need ? (size_t)need - p->pend.len : 8 - p->pend.len;
        size_t take = want < (size_t)(end - s) ? want : (size_t)(end - s);
        if ((rc = buf_append(&p->pend, s, take)))
            return rc;
        s += take;
        if (take < want)
            break;
        if (need) {
            rc = bin_push(p, p->pend.data, p->pend.len, out);
            p->pend.len = 0;
            if (rc)
                return rc;
        }
    }
    while (!p->pend.len && s < end) {
        int64_t need = bin_len(p, s, (size_t)(end - s));
        if (need < 0)
            return (int)need;
        if (!need || need > end - s) {
            if ((rc = buf_append(&p->pend, s, (size_t)(end - s))))
                return rc;
            break;
        }
        if ((rc = bin_push(p, s, (size_t)need, out)))
            return rc;
        s += need;
    }
    if (final && p->pend.len) {
        uint64_t at = p->off;
        size_t n = p->pend.len;
        p->pend.len = 0;
        p->off += n;
        if (p->o.on_bad_line == LTR_BAD_FAIL)
            return ltr_fail(LTR_EINVAL, "offset %llu: truncated record (%zu bytes at the end)",
                            (unsigned long long)at, n);
        if (p->bad < LTR_BAD_KEPT)
            snprintf(p->kept[p->bad], sizeof p->kept[0],
                     "offset %llu: truncated record (%zu bytes at the end)",
                     (unsigned long long)at, n);
        p->bad++;
    }
    return LTR_OK;
}

/* The LF that ends the record at s, or NULL when the chunk ends first. A csv LF inside quotes
 * ends nothing; the scan's state carries to the next chunk. */
static const uint8_t *record_end(ltr_parser *p, const uint8_t *s, const uint8_t *end)
{
    if (p->o.format != LTR_FMT_CSV)
        return s < end ? memchr(s, '\n', (size_t)(end - s)) : NULL;
    int st = p->csv_state;
    for (; s < end; s++) {
        if (st == CSV_QUOTED) {
            const uint8_t *q = memchr(s, '"', (size_t)(end - s));
            if (!q)
                break;
            s = q;
            st = CSV_CLOSED;
        } else if (*s == '\n') {
            p->csv_state = CSV_FIELD_START;
            return s;
        } else if (*s == ',') {
            st = CSV_FIELD_START;
        } else if (*s == '"' && st != CSV_IN_FIELD) {
            st = CSV_QUOTED;
        } else {
            st = CSV_IN_FIELD;
        }
    }
    p->csv_state = st;
    return NULL;
}

static int keep_pending(ltr_parser *p, const uint8_t *s, size_t n)
{
    if (p->pend.len + n > TEXT_RECORD_MAX)
        return ltr_fail(LTR_EINVAL, "line %llu: no record end within %llu bytes (framing lost: "
                        "is the format right?)", (unsigned long long)p->line + 1,
                        (unsigned long long)TEXT_RECORD_MAX);
    return buf_append(&p->pend, s, n);
}

static int text_feed(ltr_parser *p, const uint8_t *data, size_t len, int final, ltr_items *out)
{
    const uint8_t *s = data, *end = data + len;
    int rc;
    if (p->pend.len) { /* complete the record split across chunks first */
        const uint8_t *nl = record_end(p, s, end);
        if ((rc = keep_pending(p, s, (size_t)((nl ? nl : end) - s))))
            return rc;
        if (!nl && !final)
            return LTR_OK;
        rc = text_record(p, p->pend.data, p->pend.len, nl != NULL, out);
        p->pend.len = 0;
        p->csv_state = CSV_FIELD_START;
        if (rc || !nl)
            return rc;
        s = nl + 1;
    }
    while (s < end) {
        const uint8_t *nl = record_end(p, s, end);
        if (!nl)
            break;
        if ((rc = text_record(p, s, (size_t)(nl - s), 1, out)))
            return rc;
        s = nl + 1;
    }
    if (s == end)
        return LTR_OK;
    if (final) {
        p->csv_state = CSV_FIELD_START;
        return text_record(p, s, (size_t)(end - s), 0, out);
    }
    return keep_pending(p, s, (size_t)(end - s));
}

int ltr_parser_feed(ltr_parser *p, const uint8_t *data, size_t len, int final, ltr_items *out)
{
    int rc = items_start(out);
    if (rc)
        return rc;
    return is_binary(p->o.format) ? bin_feed(p, data, len, final, out)
                                  : text_feed(p, data, len, final, out);
}

/* ---- formatters ---- */

static const char hexd[] = "0123456789abcdef";
static const char b64a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Appends s in hex or base64 (ASCII that no text format needs to escape or quote). */
static int put_encoded(ltr_buf *b, int enc, const uint8_t *s, size_t n)
{
    int rc;
    if (enc == LTR_ENC_HEX) {
        if ((rc = buf_reserve(b, 2 * n)))
            return rc;
        uint8_t *o = b->data + b->len;
        for (size_t i = 0; i < n; i++) {
            o[2 * i] = (uint8_t)hexd[s[i] >> 4];
            o[2 * i + 1] = (uint8_t)hexd[s[i] & 15];
        }
        b->len += 2 * n;
        return LTR_OK;
    }
    if (enc == LTR_ENC_BASE64) {
        if ((rc = buf_reserve(b, (n + 2) / 3 * 4)))
            return rc;
        uint8_t *o = b->data + b->len;
        size_t i = 0;
        for (; i + 3 <= n; i += 3, o += 4) {
            uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
            o[0] = (uint8_t)b64a[v >> 18];
            o[1] = (uint8_t)b64a[(v >> 12) & 63];
            o[2] = (uint8_t)b64a[(v >> 6) & 63];
            o[3] = (uint8_t)b64a[v & 63];
        }
        if (i < n) {
            uint32_t v = (uint32_t)s[i] << 16 | (i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0);
            o[0] = (uint8_t)b64a[v >> 18];
            o[1] = (uint8_t)b64a[(v >> 12) & 63];
            o[2] = i + 1 < n ? (uint8_t)b64a[(v >> 6) & 63] : '=';
            o[3] = '=';
            o += 4;
        }
        b->len = (size_t)(o - b->data);
    }
    return LTR_OK;
}

static int put_tsv(ltr_buf *b, const uint8_t *s, size_t n)
{
    int rc = buf_reserve(b, 2 * n);
    if (rc)
        return rc;
    uint8_t *o = b->data + b->len;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (c == '\t' || c == '\n' || c == '\r' || c == '\\') {
            *o++ = '\\';
            *o++ = c == '\t' ? 't' : c == '\n' ? 'n' : c == '\r' ? 'r' : '\\';
        } else {
            *o++ = c;
        }
    }
    b->len = (size_t)(o - b->data);
    return LTR_OK;
}

/* A utf8 field in csv: quoted, its quotes doubled, when it holds a comma, quote, CR or LF. */
static int put_csv(ltr_buf *b, const uint8_t *s, size_t n)
{
    int quote = 0;
    for (size_t i = 0; i < n && !quote; i++)
        quote = s[i] == ',' || s[i] == '"' || s[i] == '\r' || s[i] == '\n';
    if (!quote)
        return buf_append(b, s, n);
    int rc = buf_reserve(b, 2 * n + 2);
    if (rc)
        return rc;
    uint8_t *o = b->data + b->len;
    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"')
            *o++ = '"';
        *o++ = s[i];
    }
    *o++ = '"';
    b->len = (size_t)(o - b->data);
    return LTR_OK;
}

/* One field of a text format, in its encoding. */
static int put_field(ltr_buf *b, int format, int enc, const uint8_t *s, size_t n)
{
    if (format == LTR_FMT_JSONL) {
        if (enc == LTR_ENC_UTF8)
            return json_put_string(b, s, n);
        int rc = buf_append(b, "\"", 1);
        if (!rc)
            rc = put_encoded(b, enc, s, n);
        return rc ? rc : buf_append(b, "\"", 1);
    }
    if (enc != LTR_ENC_UTF8)
        return put_encoded(b, enc, s, n);
    return format == LTR_FMT_CSV ? put_csv(b, s, n) : put_tsv(b, s, n);
}

static int put_binary(const ltr_parser_opts *o, size_t i, const uint8_t *k, size_t kl,
                      const uint8_t *v, size_t vl, ltr_buf *out)
{
    int rc;
    if (o->format == LTR_FMT_FIXED) {
        if (kl != o->key_size || vl != o->value_size)
            return ltr_fail(LTR_EINVAL, "item %zu: sizes %zu/%zu, fixed format wants %u/%u", i,
                            kl, vl, o->key_size, o->value_size);
        return (rc = buf_append(out, k, kl)) ? rc : buf_append(out, v, vl);
    }
    if (kl > LTR_MAX_KEY || vl > LTR_MAX_VALUE)
        return ltr_fail(LTR_EINVAL, "item %zu: over the key/value limits", i);
    uint8_t h[8];
    put_u32(h, (uint32_t)kl);
    put_u32(h + 4, (uint32_t)vl);
    if ((rc = buf_append(out, h, 8)) || (rc = buf_append(out, k, kl)))
        return rc;
    return buf_append(out, v, vl);
}

static int put_text(const ltr_parser_opts *o, size_t i, const uint8_t *k, size_t kl,
                    const uint8_t *v, size_t vl, ltr_buf *out)
{
    int f = o->format, rc;
    if (f == LTR_FMT_JSONL) { /* JSON strings are Unicode: other bytes need hex or base64 */
        if (o->key_encoding == LTR_ENC_UTF8 && !utf8_valid(k, kl))
            return ltr_fail(LTR_EINVAL, "item %zu: the key is not UTF-8, which jsonl cannot "
                            "hold as it is: use the hex or base64 key encoding", i);
        if (o->value_encoding == LTR_ENC_UTF8 && !utf8_valid(v, vl))
            return ltr_fail(LTR_EINVAL, "item %zu: the value is not UTF-8, which jsonl cannot "
                            "hold as it is: use the hex or base64 value encoding", i);
    }
    const char *open = f == LTR_FMT_JSONL ? "{\"key\":" : "";
    const char *mid = f == LTR_FMT_JSONL ? ",\"value\":" : f == LTR_FMT_CSV ? "," : "\t";
    const char *close = f == LTR_FMT_JSONL ? "}\n" : "\n";
    if ((rc = buf_append(out, open, strlen(open))) ||
        (rc = put_field(out, f, o->key_encoding, k, kl)) ||
        (rc = buf_append(out, mid, strlen(mid))) ||
        (rc = put_field(out, f, o->value_encoding, v, vl)))
        return rc;
    return buf_append(out, close, strlen(close));
}

int ltr_format_items(const ltr_parser_opts *o, const uint8_t *kdata, const int64_t *koffs,
                     const uint8_t *vdata, const int64_t *voffs, size_t n, ltr_buf *out)
{
    int rc = check_opts(o);
    if (rc)
        return rc;
    for (size_t i = 0; i < n && !rc; i++) {
        const uint8_t *k = kdata + koffs[i], *v = vdata + voffs[i];
        size_t kl = (size_t)(koffs[i + 1] - koffs[i]), vl = (size_t)(voffs[i + 1] - voffs[i]);
        rc = is_binary(o->format) ? put_binary(o, i, k, kl, v, vl, out)
                                  : put_text(o, i, k, kl, v, vl, out);
    }
    return rc;
}
