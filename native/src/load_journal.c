/* load_journal.c: the bulk loader's journal, STORE/load/JOURNAL (docs/format/load.md): what of
 * an unfinished load is durable, so that --resume goes on from there. Written whole and
 * atomically (temporary file, fsync, rename, directory fsync) at each durable point: while
 * adding, when the caller asks (ltr_load_checkpoint); while building, after each unit's tables;
 * before the install, with the numbers the tables get. Depends on load_int.h's state only. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coding.h"
#include "io.h"
#include "load_int.h"

#define JOURNAL_MAGIC "LTRLOAD1"
#define JOURNAL_MAX (1ull << 30) /* no journal of a sound load comes near this */

char *load_journal_path(const ltr_load *l)
{
    size_t len = strlen(l->dir) + 16;
    char *p = malloc(len);
    if (p) /* (the handle may outlive its store: abort uses only its own paths) */
        snprintf(p, len, "%s/JOURNAL", l->dir);
    return p;
}

static int put_var(ltr_buf *b, uint64_t v)
{
    uint8_t tmp[10];
    return buf_append(b, tmp, put_varint(tmp, v));
}

static int put_bytes(ltr_buf *b, const void *p, size_t n)
{
    int rc = put_var(b, n);
    return rc ? rc : buf_append(b, p, n);
}

/* The counters a resume carries on. */
#define NCOUNTERS 7
static uint64_t *counter(ltr_load *l, int i)
{
    uint64_t *c[NCOUNTERS] = {&l->st.items_added, &l->st.items_loaded, &l->st.duplicates,
                              &l->st.user_bytes, &l->st.spill_bytes, &l->st.table_bytes,
                              &l->st.tables};
    return c[i];
}

static int encode(ltr_load *l, ltr_buf *b)
{
    int rc = buf_append(b, JOURNAL_MAGIC, 8);
    rc = rc ? rc : put_var(b, l->st.phase);
    rc = rc ? rc : put_bytes(b, l->identity, strlen(l->identity));
    rc = rc ? rc : put_bytes(b, l->position.data, l->position.len);
    rc = rc ? rc : put_var(b, l->depth);
    rc = rc ? rc : put_var(b, l->target);
    for (int i = 0; !rc && i < NCOUNTERS; i++)
        rc = put_var(b, *counter(l, i));
    rc = rc ? rc : put_var(b, l->nparts);
    for (uint32_t i = 0; !rc && i < l->nparts; i++) {
        rc = put_var(b, l->parts[i].spilled);
        rc = rc ? rc : put_var(b, l->parts[i].items);
        rc = rc ? rc : put_var(b, l->parts[i].built);
    }
    rc = rc ? rc : put_var(b, l->next_name);
    rc = rc ? rc : put_var(b, l->ntables);
    for (size_t i = 0; !rc && i < l->ntables; i++) {
        const built *t = &l->tables[i];
        rc = put_var(b, t->node);
        rc = rc ? rc : put_var(b, t->seq);
        rc = rc ? rc : put_var(b, t->name);
        rc = rc ? rc : put_var(b, t->bytes);
        rc = rc ? rc : put_var(b, t->number);
    }
    uint8_t crc[4];
    put_u32(crc, ltr_crc32c(0, b->data, b->len));
    return rc ? rc : buf_append(b, crc, 4);
}

int load_journal_write(ltr_load *l)
{
    ltr_buf b = {0};
    char *path = load_journal_path(l);
    int rc = path ? encode(l, &b) : ltr_fail(LTR_ENOMEM, "out of memory");
    if (!rc)
        rc = io_write_file_atomic(path, b.data, b.len);
    if (!rc)
        l->journaled = 1;
    ltr_buf_free(&b);
    free(path);
    return rc;
}

/* ---- reading ---- */

typedef struct reader {
    const uint8_t *p, *end;
    int bad;
} reader;

static uint64_t get_var(reader *r)
{
    uint64_t v = 0;
    size_t k = r->bad ? 0 : get_varint(r->p, r->end, &v);
    if (!k)
        r->bad = 1;
    r->p += k;
    return v;
}

/* A length-prefixed field, copied NUL-terminated into a new buffer. */
static char *get_bytes(reader *r, size_t *len)
{
    uint64_t n = get_var(r);
    if (r->bad || n > (uint64_t)(r->end - r->p)) {
        r->bad = 1;
        return NULL;
    }
    char *s = malloc((size_t)n + 1);
    if (s) {
        memcpy(s, r->p, (size_t)n);
        s[n] = 0;
    }
    r->p += n;
    *len = (size_t)n;
    return s;
}

static int decode(ltr_load *l, const uint8_t *data, size_t len, const char *path)
{
    if (len < 12 || memcmp(data, JOURNAL_MAGIC, 8) != 0 ||
        get_u32(data + len - 4) != ltr_crc32c(0, data, len - 4))
        return ltr_fail(LTR_ECORRUPT, "the load journal %s is damaged", path);
    reader r = {data + 8, data + len - 4, 0};
    l->st.phase = get_var(&r);
    size_t n;
    free(l->identity);
    l->identity = get_bytes(&r, &n);
    char *pos = get_bytes(&r, &n);
    l->position.len = 0;
    if (pos && buf_append(&l->position, pos, n))
        r.bad = 1;
    free(pos);
    uint64_t depth = get_var(&r), target = get_var(&r);
    for (int i = 0; i < NCOUNTERS; i++)
        *counter(l, i) = get_var(&r);
    uint64_t nparts = get_var(&r);
    if (r.bad || depth > 4 || target >= LTR_MAX_LEVELS || nparts != 1ull << 3 * depth ||
        !l->identity)
        return ltr_fail(LTR_ECORRUPT, "the load journal %s is damaged", path);
    l->depth = (uint32_t)depth;
    l->target = (uint32_t)target;
    l->nparts = (uint32_t)nparts;
    free(l->parts);
    l->parts = calloc(l->nparts, sizeof *l->parts);
    if (!l->parts)
        return ltr_fail(LTR_ENOMEM, "out of memory");
    for (uint32_t i = 0; i < l->nparts; i++) {
        l->parts[i].spilled = get_var(&r);
        l->parts[i].items = get_var(&r);
        l->parts[i].built = (uint8_t)(get_var(&r) != 0);
    }
    l->next_name = (uint32_t)get_var(&r);
    uint64_t nt = get_var(&r);
    if (r.bad || nt > (uint64_t)(r.end - r.p))
        return ltr_fail(LTR_ECORRUPT, "the load journal %s is damaged", path);
    free(l->tables);
    l->tables = calloc(nt ? nt : 1, sizeof *l->tables);
    if (!l->tables)
        return ltr_fail(LTR_ENOMEM, "out of memory");
    l->ntables = l->tables_cap = (size_t)nt;
    for (size_t i = 0; i < nt; i++) {
        built *t = &l->tables[i];
        t->node = get_var(&r);
        t->seq = (uint32_t)get_var(&r);
        t->name = (uint32_t)get_var(&r);
        t->bytes = get_var(&r);
        t->number = get_var(&r);
    }
    if (r.bad || r.p != r.end || l->st.phase > LTR_LOAD_INSTALLING)
        return ltr_fail(LTR_ECORRUPT, "the load journal %s is damaged", path);
    return LTR_OK;
}

int load_journal_read(ltr_load *l)
{
    char *path = load_journal_path(l);
    if (!path)
        return ltr_fail(LTR_ENOMEM, "out of memory");
    char *text = NULL;
    size_t len = 0;
    int rc = io_read_file(path, JOURNAL_MAX, &text, &len);
    const uint8_t *data = (const uint8_t *)text;
    if (rc && ltr_last_errno() == ENOENT)
        rc = ltr_fail(LTR_EINVAL, "there is no unfinished load in %s to resume", l->dir);
    if (!rc)
        rc = decode(l, data, len, path);
    if (!rc)
        l->journaled = 1;
    free(text);
    free(path);
    return rc;
}
