/* parse_json.c: the JSON of jsonl load input (docs/format/load-input.md): one object a line
 * read into its "key" and "value" strings, and strings written back. RFC 8259, strict: the
 * loader must never take a malformed line for an item, and a line it writes must be JSON any
 * reader accepts. */
#include <stdint.h>
#include <string.h>

#include "parse_int.h"
#include "ltr_int.h"

#define JSON_MAX_DEPTH 64 /* nesting of ignored members; deeper is a bad line, not a deep stack */

typedef struct jcur {
    const uint8_t *s, *end;
} jcur;

int utf8_valid(const uint8_t *s, size_t n)
{
    const uint8_t *end = s + n;
    while (s < end) {
        if (end - s >= 8) { /* most text is ASCII: eight bytes a step */
            uint64_t w;
            memcpy(&w, s, 8);
            if (!(w & 0x8080808080808080ull)) {
                s += 8;
                continue;
            }
        }
        uint8_t c = *s;
        if (c < 0x80) {
            s++;
            continue;
        }
        size_t len;
        uint8_t lo = 0x80, hi = 0xbf; /* the range of the second byte */
        if (c >= 0xc2 && c <= 0xdf) {
            len = 2;
        } else if (c >= 0xe0 && c <= 0xef) {
            len = 3;
            if (c == 0xe0)
                lo = 0xa0; /* overlong */
            if (c == 0xed)
                hi = 0x9f; /* surrogates */
        } else if (c >= 0xf0 && c <= 0xf4) {
            len = 4;
            if (c == 0xf0)
                lo = 0x90; /* overlong */
            if (c == 0xf4)
                hi = 0x8f; /* over U+10FFFF */
        } else {
            return 0;
        }
        if ((size_t)(end - s) < len || s[1] < lo || s[1] > hi)
            return 0;
        for (size_t i = 2; i < len; i++)
            if ((s[i] & 0xc0) != 0x80)
                return 0;
        s += len;
    }
    return 1;
}

static void skip_ws(jcur *c)
{
    while (c->s < c->end && (*c->s == ' ' || *c->s == '\t' || *c->s == '\r' || *c->s == '\n'))
        c->s++;
}

static int hex4(const uint8_t *s, const uint8_t *end, uint32_t *out)
{
    if (end - s < 4)
        return 0;
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        uint8_t c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0)
            return 0;
        v = v << 4 | (uint32_t)d;
    }
    *out = v;
    return 1;
}

static int put_utf8(ltr_buf *b, uint32_t cp)
{
    uint8_t u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (uint8_t)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (uint8_t)(0xc0 | cp >> 6);
        u[1] = (uint8_t)(0x80 | (cp & 63));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (uint8_t)(0xe0 | cp >> 12);
        u[1] = (uint8_t)(0x80 | ((cp >> 6) & 63));
        u[2] = (uint8_t)(0x80 | (cp & 63));
        n = 3;
    } else {
        u[0] = (uint8_t)(0xf0 | cp >> 18);
        u[1] = (uint8_t)(0x80 | ((cp >> 12) & 63));
        u[2] = (uint8_t)(0x80 | ((cp >> 6) & 63));
        u[3] = (uint8_t)(0x80 | (cp & 63));
        n = 4;
    }
    return buf_append(b, u, n);
}

/* The code point of the \u escape at s (just past the "\u"), a surrogate pair joined; how many
 * bytes it took past s in *used. 0 when bad. */
static int unicode_escape(const uint8_t *s, const uint8_t *end, uint32_t *cp, size_t *used)
{
    uint32_t hi, lo;
    if (!hex4(s, end, &hi) || (hi >= 0xdc00 && hi < 0xe000))
        return 0;
    *used = 4;
    *cp = hi;
    if (hi < 0xd800 || hi >= 0xdc00)
        return 1;
    if (end - s < 10 || s[4] != '\\' || s[5] != 'u' || !hex4(s + 6, end, &lo) || lo < 0xdc00 ||
        lo >= 0xe000)
        return 0;
    *cp = 0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00);
    *used = 10;
    return 1;
}

/* The string at the cursor, decoded: *o points into the line when it has no escape, else into
 * b. Returns NULL or why the line is bad; *rc is set when memory runs out. */
static const char *json_string(jcur *c, ltr_buf *b, const uint8_t **o, size_t *on, int *rc)
{
    *rc = LTR_OK;
    if (c->s >= c->end || *c->s != '"')
        return "expected a string";
    const uint8_t *s = ++c->s, *end = c->end;
    int copied = 0;
    b->len = 0;
    for (;;) {
        const uint8_t *r = s;
        while (r < end && *r != '"' && *r != '\\' && *r >= 0x20)
            r++;
        if (!utf8_valid(s, (size_t)(r - s)))
            return "invalid UTF-8 in a string";
        if (r == end)
            return "unterminated string";
        if (*r < 0x20)
            return "control character in a string";
        if (*r == '"' && !copied) {
            *o = s;
            *on = (size_t)(r - s);
            c->s = r + 1;
            return NULL;
        }
        if ((*rc = buf_append(b, s, (size_t)(r - s))))
            return NULL;
        copied = 1;
        if (*r == '"') {
            *o = b->data;
            *on = b->len;
            c->s = r + 1;
            return NULL;
        }
        if (r + 1 == end)
            return "unterminated string";
        s = r + 2;
        uint8_t ch;
        switch (r[1]) {
        case '"': ch = '"'; break;
        case '\\': ch = '\\'; break;
        case '/': ch = '/'; break;
        case 'b': ch = '\b'; break;
        case 'f': ch = '\f'; break;
        case 'n': ch = '\n'; break;
        case 'r': ch = '\r'; break;
        case 't': ch = '\t'; break;
        case 'u': {
            uint32_t cp;
            size_t used;
            if (!unicode_escape(s, end, &cp, &used))
                return "bad \\u escape (or an unpaired surrogate)";
            s += used;
            if ((*rc = put_utf8(b, cp)))
                return NULL;
            continue;
        }
        default: return "unknown escape in a string";
        }
        if ((*rc = buf_append(b, &ch, 1)))
            return NULL;
    }
}

static const char *skip_literal(jcur *c, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(c->end - c->s) < n || memcmp(c->s, word, n))
        return "not JSON";
    c->s += n;
    return NULL;
}

static const char *skip_number(jcur *c)
{
    const uint8_t *s = c->s, *end = c->end;
    if (s < end && *s == '-')
        s++;
    if (s < end && *s == '0') {
        s++;
    } else if (s < end && *s >= '1' && *s <= '9') {
        while (s < end && *s >= '0' && *s <= '9')
            s++;
    } else {
        return "not JSON";
    }
    if (s < end && *s == '.') {
        if (++s == end || *s < '0' || *s > '9')
            return "bad number";
        while (s < end && *s >= '0' && *s <= '9')
            s++;
    }
    if (s < end && (*s == 'e' || *s == 'E')) {
        s++;
        if (s < end && (*s == '+' || *s == '-'))
            s++;
        if (s == end || *s < '0' || *s > '9')
            return "bad number";
        while (s < end && *s >= '0' && *s <= '9')
            s++;
    }
    c->s = s;
    return NULL;
}

static const char *skip_value(jcur *c, int depth, ltr_buf *scratch, int *rc);

/* An object or array at the cursor, whose members are checked and dropped. */
static const char *skip_container(jcur *c, int depth, ltr_buf *scratch, int *rc)
{
    uint8_t close = *c->s == '{' ? '}' : ']';
    if (depth > JSON_MAX_DEPTH)
        return "nesting deeper than 64";
    c->s++;
    skip_ws(c);
    if (c->s < c->end && *c->s == close) {
        c->s++;
        return NULL;
    }
    for (;;) {
        const char *why;
        if (close == '}') {
            const uint8_t *o;
            size_t on;
            if ((why = json_string(c, scratch, &o, &on, rc)) || *rc)
                return why;
            skip_ws(c);
            if (c->s == c->end || *c->s++ != ':')
                return "expected ':'";
        }
        if ((why = skip_value(c, depth + 1, scratch, rc)) || *rc)
            return why;
        skip_ws(c);
        if (c->s < c->end && *c->s == ',') {
            c->s++;
            skip_ws(c);
            continue;
        }
        if (c->s < c->end && *c->s == close) {
            c->s++;
            return NULL;
        }
        return close == '}' ? "expected ',' or '}'" : "expected ',' or ']'";
    }
}

static const char *skip_value(jcur *c, int depth, ltr_buf *scratch, int *rc)
{
    *rc = LTR_OK;
    skip_ws(c);
    if (c->s == c->end)
        return "missing value";
    const uint8_t *o;
    size_t on;
    switch (*c->s) {
    case '"': return json_string(c, scratch, &o, &on, rc);
    case '{':
    case '[': return skip_container(c, depth, scratch, rc);
    case 't': return skip_literal(c, "true");
    case 'f': return skip_literal(c, "false");
    case 'n': return skip_literal(c, "null");
    default: return skip_number(c);
    }
}

static int name_is(const uint8_t *s, size_t n, const char *word)
{
    return n == strlen(word) && memcmp(s, word, n) == 0;
}

/* One member's value: a string for "key" and "value", anything (checked, dropped) else. */
static const char *json_member(jcur *c, json_fields *f, int *rc)
{
    const uint8_t *name;
    size_t nl;
    const char *why = json_string(c, f->scratch, &name, &nl, rc);
    if (why || *rc)
        return why;
    skip_ws(c);
    if (c->s == c->end || *c->s++ != ':')
        return "expected ':'";
    skip_ws(c);
    int is_key = name_is(name, nl, "key");
    if (!is_key && !name_is(name, nl, "value"))
        return skip_value(c, 2, f->scratch, rc);
    int *have = is_key ? &f->have_key : &f->have_value;
    if (*have)
        return is_key ? "\"key\" twice" : "\"value\" twice";
    if (c->s == c->end || *c->s != '"')
        return is_key ? "\"key\" is not a string" : "\"value\" is not a string";
    *have = 1;
    return is_key ? json_string(c, f->kbuf, &f->k, &f->kl, rc)
                  : json_string(c, f->vbuf, &f->v, &f->vl, rc);
}

const char *json_record(const uint8_t *s, size_t n, json_fields *f, int *rc)
{
    jcur c = {s, s + n};
    *rc = LTR_OK;
    f->have_key = f->have_value = 0;
    skip_ws(&c);
    if (c.s == c.end || *c.s++ != '{')
        return "not a JSON object";
    skip_ws(&c);
    if (c.s < c.end && *c.s == '}') {
        c.s++;
    } else {
        for (;;) {
            const char *why = json_member(&c, f, rc);
            if (why || *rc)
                return why;
            skip_ws(&c);
            if (c.s < c.end && *c.s == ',') {
                c.s++;
                skip_ws(&c);
                continue;
            }
            if (c.s < c.end && *c.s == '}') {
                c.s++;
                break;
            }
            return "expected ',' or '}'";
        }
    }
    skip_ws(&c);
    if (c.s != c.end)
        return "text after the object";
    if (!f->have_key)
        return "no \"key\" member";
    if (!f->have_value)
        return "no \"value\" member";
    return NULL;
}

int json_put_string(ltr_buf *b, const uint8_t *s, size_t n)
{
    static const char hexd[] = "0123456789abcdef";
    int rc = buf_reserve(b, 6 * n + 2); /* \u00XX: the longest a byte becomes */
    if (rc)
        return rc;
    uint8_t *o = b->data + b->len;
    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        uint8_t ch = s[i];
        if (ch == '"' || ch == '\\') {
            *o++ = '\\';
            *o++ = ch;
        } else if (ch >= 0x20) {
            *o++ = ch;
        } else if (ch == '\n' || ch == '\r' || ch == '\t' || ch == '\b' || ch == '\f') {
            *o++ = '\\';
            *o++ = ch == '\n' ? 'n' : ch == '\r' ? 'r' : ch == '\t' ? 't' : ch == '\b' ? 'b' : 'f';
        } else {
            memcpy(o, "\\u00", 4);
            o[4] = (uint8_t)hexd[ch >> 4];
            o[5] = (uint8_t)hexd[ch & 15];
            o += 6;
        }
    }
    *o++ = '"';
    b->len = (size_t)(o - b->data);
    return LTR_OK;
}
