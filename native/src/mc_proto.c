/* mc_proto.c: the memcached text protocol (docs/scale-out.md "The protocol"): a connection's
 * input parsed request by request, each answered from the store, the replies appended to its
 * output. Requests are answered in order; consecutive sets go to the store as one write. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ltr_int.h"
#include "mc_proto.h"

#define BATCH_ITEMS 1024           /* sets gathered into one store write, at most... */
#define BATCH_BYTES (4u << 20)     /* ...and about this many bytes of them */
#define FLAGS_BYTES LTR_MEMCACHED_FLAGS_BYTES /* a memcached item's flags, before its data */

const char MC_TOO_MANY[] = "SERVER_ERROR too many open connections\r\n";

#define COUNT(sh, field, n) __atomic_fetch_add(&(sh)->st.field, (n), __ATOMIC_RELAXED)

/* ---- replies ---- */

static int out_put(mc_conn *c, const void *p, size_t n)
{
    return n ? buf_append(&c->out, p, n) : LTR_OK; /* p may be NULL for an empty value */
}

static int out_str(mc_conn *c, const char *s) { return out_put(c, s, strlen(s)); }

/* An error line; the store's detail is cut to one line (it may name paths, never newlines). */
static int out_error(mc_shared *sh, mc_conn *c, const char *kind, const char *detail)
{
    char line[600];
    int n = snprintf(line, sizeof line - 2, "%s%s%s", kind, detail ? " " : "", detail ? detail : "");
    if (n < 0 || n > (int)sizeof line - 3)
        n = (int)sizeof line - 3;
    for (int i = 0; i < n; i++)
        if (line[i] == '\r' || line[i] == '\n')
            line[i] = ' ';
    memcpy(line + n, "\r\n", 2);
    COUNT(sh, errors, 1);
    return out_put(c, line, (size_t)n + 2);
}

static int store_error(mc_shared *sh, mc_conn *c, int rc)
{
    if (rc == LTR_ENOMEM)
        return rc;
    const char *d = ltr_last_error();
    return out_error(sh, c, "SERVER_ERROR", d && *d ? d : ltr_strerror(rc));
}

static int out_value(mc_conn *c, const uint8_t *key, uint32_t klen, uint32_t flags,
                     const uint8_t *data, size_t len, int with_cas, uint64_t cas)
{
    char head[96];
    int n = with_cas ? snprintf(head, sizeof head, " %" PRIu32 " %zu %" PRIu64 "\r\n", flags, len, cas)
                     : snprintf(head, sizeof head, " %" PRIu32 " %zu\r\n", flags, len);
    if (buf_reserve(&c->out, 6 + klen + (size_t)n + len + 2))
        return LTR_ENOMEM;
    out_put(c, "VALUE ", 6);
    out_put(c, key, klen);
    out_put(c, head, (size_t)n);
    out_put(c, data, len);
    return out_put(c, "\r\n", 2);
}

/* ---- tokens and numbers ---- */

static int tokenize(mc_conn *c, const uint8_t *p, size_t n, size_t *count)
{
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        while (i < n && p[i] == ' ')
            i++;
        if (i == n)
            break;
        size_t j = i;
        while (j < n && p[j] != ' ')
            j++;
        if (k == c->tokcap) {
            size_t cap = c->tokcap ? 2 * c->tokcap : 16;
            const uint8_t **t = realloc(c->tok, cap * sizeof *t);
            if (t)
                c->tok = t;
            uint32_t *l = t ? realloc(c->toklen, cap * sizeof *l) : NULL;
            if (!l)
                return LTR_ENOMEM;
            c->toklen = l;
            c->tokcap = cap;
        }
        c->tok[k] = p + i;
        c->toklen[k++] = (uint32_t)(j - i);
        i = j;
    }
    *count = k;
    return LTR_OK;
}

static int tok_is(const mc_conn *c, size_t i, const char *word)
{
    size_t n = strlen(word);
    return c->toklen[i] == n && memcmp(c->tok[i], word, n) == 0;
}

/* A decimal number of at most `max`; 0 when the token is not one. */
static int parse_u64(const uint8_t *p, uint32_t n, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0 || n > 20)
        return 0;
    for (uint32_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9' || v > (max - (uint64_t)(p[i] - '0')) / 10)
            return 0;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    *out = v;
    return 1;
}

/* exptime is a signed number in memcached; only 0 (never expires) is kept here. */
static int parse_exptime(const uint8_t *p, uint32_t n, int *zero)
{
    uint64_t v;
    int neg = n > 0 && p[0] == '-';
    if (!parse_u64(p + neg, n - (uint32_t)neg, INT64_MAX, &v))
        return 0;
    *zero = v == 0;
    return 1;
}

static const char *key_problem(const mc_shared *sh, const uint8_t *k, uint32_t n)
{
    if (n > sh->max_key)
        return "key too long";
    if (!sh->allow_control_keys)
        for (uint32_t i = 0; i < n; i++)
            if (k[i] < 0x20 || k[i] == 0x7f)
                return "key holds a control character";
    return NULL;
}

/* ---- the batch of sets ---- */

static int batch_reserve(mc_batch *b)
{
    if (b->n + 1 < b->cap)
        return LTR_OK;
    size_t cap = b->cap ? 2 * b->cap : 64;
    int64_t *ko = realloc(b->koffs, cap * sizeof *ko);
    if (ko)
        b->koffs = ko;
    int64_t *vo = ko ? realloc(b->voffs, cap * sizeof *vo) : NULL;
    if (vo)
        b->voffs = vo;
    uint8_t *nr = vo ? realloc(b->noreply, cap) : NULL;
    if (!nr)
        return LTR_ENOMEM;
    b->noreply = nr;
    b->cap = cap;
    return LTR_OK;
}

static int batch_add(mc_shared *sh, mc_batch *b, const uint8_t *key, uint32_t klen,
                     uint32_t flags, const uint8_t *data, size_t len, int noreply)
{
    uint8_t f[FLAGS_BYTES] = {(uint8_t)flags, (uint8_t)(flags >> 8), (uint8_t)(flags >> 16),
                              (uint8_t)(flags >> 24)};
    if (batch_reserve(b) || buf_append(&b->keys, key, klen) ||
        (sh->memcached_values && buf_append(&b->values, f, FLAGS_BYTES)) ||
        buf_append(&b->values, data, len))
        return LTR_ENOMEM;
    b->koffs[0] = b->voffs[0] = 0;
    b->noreply[b->n++] = (uint8_t)noreply;
    b->koffs[b->n] = (int64_t)b->keys.len;
    b->voffs[b->n] = (int64_t)b->values.len;
    return LTR_OK;
}

static int batch_full(const mc_batch *b)
{
    return b->n >= BATCH_ITEMS || b->keys.len + b->values.len >= BATCH_BYTES;
}

static void batch_clear(mc_batch *b)
{
    b->n = 0;
    b->keys.len = b->values.len = 0;
}

/* The gathered sets written as one atomic batch, then their replies, in order. */
static int batch_flush(mc_shared *sh, mc_conn *c)
{
    mc_batch *b = &c->batch;
    if (b->n == 0)
        return LTR_OK;
    pthread_rwlock_rdlock(&sh->write_lock);
    int rc = ltr_store_write(sh->store, b->keys.data, b->koffs, b->keys.len, b->values.data,
                             b->voffs, b->values.len, NULL, b->n, -1);
    pthread_rwlock_unlock(&sh->write_lock);
    for (size_t i = 0; i < b->n; i++) {
        int r = rc ? store_error(sh, c, rc) : b->noreply[i] ? LTR_OK : out_str(c, "STORED\r\n");
        if (r == LTR_ENOMEM)
            return r;
    }
    batch_clear(b);
    return LTR_OK;
}

/* An error reply to a request that follows gathered sets: theirs go first, in order. */
static int flush_error(mc_shared *sh, mc_conn *c, const char *kind, const char *detail)
{
    int rc = batch_flush(sh, c);
    return rc ? rc : out_error(sh, c, kind, detail);
}

/* ---- lookups ---- */

/* The stored bytes of key into c->val: their length, LTR_NONE, or an error. A concurrent
 * write may change the length between asking and copying; a few rounds settle it. */
static int64_t lookup(mc_shared *sh, mc_conn *c, const uint8_t *key, uint32_t klen)
{
    if (c->val.cap < 4096 && buf_reserve(&c->val, 4096)) /* most values fit the first ask */
        return LTR_ENOMEM;
    for (int round = 0; round < 8; round++) {
        int64_t n = ltr_store_get(sh->store, key, klen, c->val.data, c->val.cap);
        if (n < 0 || (uint64_t)n <= c->val.cap)
            return n;
        c->val.len = 0;
        if (buf_reserve(&c->val, (size_t)n))
            return LTR_ENOMEM;
    }
    return ltr_fail(LTR_EAGAIN, "the value kept changing size while it was read");
}

/* Splits stored bytes into flags and data (a raw store's values carry flags 0). */
static int item_split(const mc_shared *sh, const uint8_t *v, size_t n, uint32_t *flags,
                      const uint8_t **data, size_t *len)
{
    if (!sh->memcached_values) {
        *flags = 0, *data = v, *len = n;
        return LTR_OK;
    }
    if (n < FLAGS_BYTES)
        return ltr_fail(LTR_ECORRUPT, "a value of %zu bytes is no memcached item (written "
                        "without its 4 bytes of flags)", n);
    *flags = (uint32_t)v[0] | (uint32_t)v[1] << 8 | (uint32_t)v[2] << 16 | (uint32_t)v[3] << 24;
    *data = v + FLAGS_BYTES, *len = n - FLAGS_BYTES;
    return LTR_OK;
}

static int cmd_get(mc_shared *sh, mc_conn *c, size_t ntok, int with_cas)
{
    if (ntok < 2)
        return out_error(sh, c, "ERROR", NULL);
    for (size_t i = 1; i < ntok; i++) {
        const char *bad = key_problem(sh, c->tok[i], c->toklen[i]);
        if (bad)
            return out_error(sh, c, "CLIENT_ERROR", bad);
    }
    COUNT(sh, cmd_get, ntok - 1);
    for (size_t i = 1; i < ntok; i++) {
        int64_t n = lookup(sh, c, c->tok[i], c->toklen[i]);
        if (n == LTR_NONE) {
            COUNT(sh, get_misses, 1);
            continue;
        }
        uint32_t flags = 0;
        const uint8_t *data = NULL;
        size_t len = 0;
        int rc = n < 0 ? (int)n : item_split(sh, c->val.data, (size_t)n, &flags, &data, &len);
        if (rc) /* the keys answered so far stand; no END: the error ends the reply */
            return store_error(sh, c, rc);
        if (c->out.len - c->out_sent + len > MC_REPLY_MAX) /* memory, not a client, bounds it */
            return out_error(sh, c, "SERVER_ERROR", "reply too large: ask for fewer keys at once");
        COUNT(sh, get_hits, 1);
        uint64_t cas = (uint64_t)ltr_crc32c(0, c->val.data, (size_t)n) + 1; /* a version: never 0 */
        if (out_value(c, c->tok[i], c->toklen[i], flags, data, len, with_cas, cas))
            return LTR_ENOMEM;
    }
    return out_str(c, "END\r\n");
}

/* ---- writes ---- */

/* add (only when absent), replace (only when present) or delete (value NULL), with the
 * look-up and the write one step to every other write. *done: whether the condition held. */
static int conditional_write(mc_shared *sh, const uint8_t *key, uint32_t klen,
                             const uint8_t *value, size_t vlen, int want_present, int *done)
{
    uint8_t probe[1], deleted = value == NULL;
    int64_t koffs[2] = {0, klen}, voffs[2] = {0, (int64_t)vlen};
    pthread_rwlock_wrlock(&sh->write_lock);
    int64_t n = ltr_store_get(sh->store, key, klen, probe, 0);
    int rc = n < 0 && n != LTR_NONE ? (int)n : LTR_OK;
    *done = !rc && (n != LTR_NONE) == want_present;
    if (*done)
        rc = ltr_store_write(sh->store, key, koffs, klen, value, voffs, vlen, &deleted, 1, -1);
    pthread_rwlock_unlock(&sh->write_lock);
    return rc;
}

enum { CMD_SET, CMD_ADD, CMD_REPLACE, CMD_REFUSED };

static int storage_command(const mc_conn *c)
{
    static const char *const refused[] = {"cas", "append", "prepend"};
    if (tok_is(c, 0, "set"))
        return CMD_SET;
    if (tok_is(c, 0, "add"))
        return CMD_ADD;
    if (tok_is(c, 0, "replace"))
        return CMD_REPLACE;
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++)
        if (tok_is(c, 0, refused[i]))
            return CMD_REFUSED;
    return -1;
}

typedef struct storage_req {
    int cmd, noreply;
    uint32_t flags;
    int exptime_zero;
    uint64_t bytes;
} storage_req;

/* The command line of a storage command. 0: well formed; 1: malformed but its data block's
 * length is known (to be dropped); 2: malformed, length unknown. */
static int parse_storage(const mc_conn *c, size_t ntok, storage_req *r)
{
    size_t base = r->cmd == CMD_REFUSED && tok_is(c, 0, "cas") ? 7 : 6; /* cas has a unique */
    if (ntok < 5 || !parse_u64(c->tok[4], c->toklen[4], INT32_MAX, &r->bytes))
        return 2;
    r->noreply = ntok == base && tok_is(c, base - 1, "noreply");
    uint64_t flags;
    if ((ntok != base - 1 && !r->noreply) ||
        !parse_u64(c->tok[2], c->toklen[2], UINT32_MAX, &flags) ||
        !parse_exptime(c->tok[3], c->toklen[3], &r->exptime_zero))
        return 1;
    r->flags = (uint32_t)flags;
    return 0;
}

/* Why a well-formed storage request is refused, or NULL; *server: a SERVER_ERROR. */
static const char *storage_refusal(const mc_shared *sh, const mc_conn *c, const storage_req *r,
                                   int *server)
{
    *server = 1;
    if (sh->read_only)
        return "read-only: this server refuses writes";
    if (r->bytes + (sh->memcached_values ? FLAGS_BYTES : 0) > LTR_MAX_VALUE)
        return "object too large for cache";
    if (r->flags && !sh->memcached_values)
        return "this store keeps raw values: flags must be 0 (a store made by `lsmtrie serve` "
               "or with value_format=\"memcached\" keeps them)";
    *server = 0;
    if (r->cmd == CMD_REFUSED)
        return tok_is(c, 0, "cas") ? "cas is not supported" : "append and prepend are not supported";
    if (!r->exptime_zero)
        return "exptime is not supported: items never expire (use 0)";
    return key_problem(sh, c->tok[1], c->toklen[1]);
}

/* A storage request whose data block is in place and well framed. */
static int storage_apply(mc_shared *sh, mc_conn *c, const storage_req *r, const uint8_t *data)
{
    int server;
    const char *why = storage_refusal(sh, c, r, &server);
    if (why)
        return flush_error(sh, c, server ? "SERVER_ERROR" : "CLIENT_ERROR", why);
    COUNT(sh, cmd_set, 1);
    if (r->cmd == CMD_SET) {
        int rc = batch_add(sh, &c->batch, c->tok[1], c->toklen[1], r->flags, data,
                           (size_t)r->bytes, r->noreply);
        return rc ? rc : batch_full(&c->batch) ? batch_flush(sh, c) : LTR_OK;
    }
    int rc = batch_flush(sh, c), done;
    if (rc) /* the item is staged in the batch's buffers, now empty, for its flags */
        return rc;
    if (batch_add(sh, &c->batch, c->tok[1], c->toklen[1], r->flags, data, (size_t)r->bytes, 0))
        return LTR_ENOMEM;
    rc = conditional_write(sh, c->tok[1], c->toklen[1], c->batch.values.data,
                           c->batch.values.len, r->cmd == CMD_REPLACE, &done);
    batch_clear(&c->batch);
    if (rc)
        return store_error(sh, c, rc);
    return r->noreply ? LTR_OK : out_str(c, done ? "STORED\r\n" : "NOT_STORED\r\n");
}

static int cmd_delete(mc_shared *sh, mc_conn *c, size_t ntok)
{
    int noreply = ntok >= 3 && tok_is(c, ntok - 1, "noreply");
    size_t args = ntok - (size_t)noreply; /* delete <key> [0] */
    if (args < 2 || args > 3 || (args == 3 && !tok_is(c, 2, "0")))
        return out_error(sh, c, "CLIENT_ERROR", "bad command line format.  Usage: delete <key> [noreply]");
    const char *bad = key_problem(sh, c->tok[1], c->toklen[1]);
    if (bad || sh->read_only)
        return out_error(sh, c, bad ? "CLIENT_ERROR" : "SERVER_ERROR",
                         bad ? bad : "read-only: this server refuses writes");
    int done, rc = conditional_write(sh, c->tok[1], c->toklen[1], NULL, 0, 1, &done);
    if (rc)
        return store_error(sh, c, rc);
    COUNT(sh, delete_hits, done);
    COUNT(sh, delete_misses, !done);
    return noreply ? LTR_OK : out_str(c, done ? "DELETED\r\n" : "NOT_FOUND\r\n");
}

/* ---- stats, version ---- */

static int stat_line(mc_conn *c, const char *name, uint64_t v)
{
    char line[128];
    int n = snprintf(line, sizeof line, "STAT %s %" PRIu64 "\r\n", name, v);
    return out_put(c, line, (size_t)n);
}

static uint64_t level_sum(const uint64_t *v, uint32_t levels)
{
    uint64_t s = 0;
    for (uint32_t i = 0; i < levels && i < LTR_MAX_LEVELS; i++)
        s += v[i];
    return s;
}

void mc_stats_snapshot(mc_shared *sh, ltr_server_stats *out)
{
    const uint64_t *src = (const uint64_t *)&sh->st; /* every field a uint64_t */
    uint64_t *dst = (uint64_t *)out;
    for (size_t i = 0; i < sizeof *out / sizeof(uint64_t); i++)
        dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
}

static int cmd_stats(mc_shared *sh, mc_conn *c, size_t ntok)
{
    if (ntok > 1) /* stats items, slabs, ...: nothing of the kind here */
        return out_str(c, "END\r\n");
    ltr_server_stats v;
    ltr_store_stats s;
    mc_stats_snapshot(sh, &v);
    ltr_store_stats_get(sh->store, &s);
    time_t now = time(NULL);
    char line[160];
    int n = snprintf(line, sizeof line, "STAT version %s\r\n", sh->version);
    int rc = stat_line(c, "pid", (uint64_t)getpid()) | stat_line(c, "uptime", (uint64_t)(now - sh->started)) |
             stat_line(c, "time", (uint64_t)now) | out_put(c, line, (size_t)n) |
             stat_line(c, "threads", sh->threads);
#define S(name, value) rc |= stat_line(c, name, value)
    S("curr_connections", v.curr_connections);
    S("total_connections", v.total_connections);
    S("rejected_connections", v.rejected_connections);
    S("cmd_get", v.cmd_get);
    S("cmd_set", v.cmd_set);
    S("get_hits", v.get_hits);
    S("get_misses", v.get_misses);
    S("delete_hits", v.delete_hits);
    S("delete_misses", v.delete_misses);
    S("bytes_read", v.bytes_read);
    S("bytes_written", v.bytes_written);
    S("errors", v.errors);
    S("lsmtrie_levels", s.levels);
    S("lsmtrie_tables", level_sum(s.tables_per_level, s.levels));
    S("lsmtrie_table_items", level_sum(s.items_per_level, s.levels)); /* versions included */
    S("lsmtrie_table_bytes", level_sum(s.table_bytes_per_level, s.levels));
    S("lsmtrie_memtable_items", s.memtable_items);
    S("lsmtrie_user_bytes_written", s.user_bytes_written);
    S("lsmtrie_bytes_written", s.bytes_written);
    S("lsmtrie_blob_files", s.blob_files);
    S("lsmtrie_blob_bytes", s.blob_bytes);
    S("lsmtrie_blob_live_bytes", s.blob_live_bytes);
    S("lsmtrie_metadata_memory_bytes", s.metadata_memory_bytes);
    S("lsmtrie_gets", s.gets);
    S("lsmtrie_bucket_reads", s.bucket_reads);
    S("lsmtrie_cluster_reads", s.cluster_reads);
    S("lsmtrie_flushes", s.flushes);
    S("lsmtrie_compactions", s.compactions);
    S("lsmtrie_gcs", s.gcs);
    S("lsmtrie_write_stalls", s.write_stalls);
    S("lsmtrie_table_files_open", s.table_files_open);
#undef S
    return rc ? LTR_ENOMEM : out_str(c, "END\r\n");
}

static int cmd_version(mc_shared *sh, mc_conn *c)
{
    char line[160];
    int n = snprintf(line, sizeof line, "VERSION %s\r\n", sh->version);
    return out_put(c, line, (size_t)n);
}

/* ---- one request ---- */

static int is_refused_command(const mc_conn *c)
{
    static const char *const refused[] = {"incr", "decr", "touch", "gat", "gats", "flush_all"};
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++)
        if (tok_is(c, 0, refused[i]))
            return 1;
    return 0;
}

static int command(mc_shared *sh, mc_conn *c, size_t ntok)
{
    if (ntok == 0)
        return out_error(sh, c, "ERROR", NULL);
    if (tok_is(c, 0, "get") || tok_is(c, 0, "gets"))
        return cmd_get(sh, c, ntok, c->toklen[0] == 4);
    if (tok_is(c, 0, "delete"))
        return cmd_delete(sh, c, ntok);
    if (tok_is(c, 0, "version"))
        return cmd_version(sh, c);
    if (tok_is(c, 0, "stats"))
        return cmd_stats(sh, c, ntok);
    if (tok_is(c, 0, "verbosity")) /* clients send it; there is no log level to set */
        return ntok == 3 && tok_is(c, 2, "noreply") ? LTR_OK : out_str(c, "OK\r\n");
    if (tok_is(c, 0, "quit")) {
        c->quit = 1;
        return LTR_OK;
    }
    if (is_refused_command(c)) {
        char why[64];
        snprintf(why, sizeof why, "%.*s is not supported", (int)c->toklen[0], (const char *)c->tok[0]);
        return out_error(sh, c, "CLIENT_ERROR", why);
    }
    return out_error(sh, c, "ERROR", NULL);
}

/* A storage request at p (its line is `line` bytes with the newline): how many bytes it took,
 * or 0 when its data block has not all arrived (c->need says how much). */
static size_t storage(mc_shared *sh, mc_conn *c, size_t ntok, const uint8_t *p, size_t avail,
                      size_t line, int *rc)
{
    storage_req r = {.cmd = storage_command(c)};
    int form = parse_storage(c, ntok, &r);
    if (form) {
        *rc = flush_error(sh, c, "CLIENT_ERROR", "bad command line format");
        c->swallow = form == 1 ? r.bytes + 2 : 0; /* its data block would read as commands */
        return line;
    }
    if (r.bytes > LTR_MAX_VALUE) { /* refused before it arrives: dropped as it streams in */
        *rc = flush_error(sh, c, "SERVER_ERROR", "object too large for cache");
        c->swallow = r.bytes + 2;
        return line;
    }
    size_t total = line + (size_t)r.bytes + 2;
    if (avail < total) {
        c->need = total;
        return 0;
    }
    const uint8_t *data = p + line;
    if (data[r.bytes] != '\r' || data[r.bytes + 1] != '\n') {
        *rc = flush_error(sh, c, "CLIENT_ERROR", "bad data chunk");
        return total; /* exactly the announced block and two bytes, as memcached reads it */
    }
    *rc = storage_apply(sh, c, &r, data);
    return total;
}

/* Drops what a refused block or a too-long line leaves: 1 while there is more to drop. */
static int drop(mc_conn *c, size_t *pos)
{
    size_t avail = c->in.len - *pos;
    if (c->swallow) {
        size_t n = c->swallow < avail ? (size_t)c->swallow : avail;
        *pos += n;
        c->swallow -= n;
        return c->swallow != 0;
    }
    const uint8_t *nl = memchr(c->in.data + *pos, '\n', avail);
    *pos = nl ? (size_t)(nl - c->in.data) + 1 : c->in.len;
    c->skip_line = nl == NULL;
    return c->skip_line;
}

/* The request at *pos: 1 handled (pos moved), 0 incomplete. */
static int one_request(mc_shared *sh, mc_conn *c, size_t *pos, int *rc)
{
    const uint8_t *p = c->in.data + *pos;
    size_t avail = c->in.len - *pos;
    const uint8_t *nl = memchr(p, '\n', avail < LTR_MC_LINE_MAX + 1 ? avail : LTR_MC_LINE_MAX + 1);
    if (!nl) {
        if (avail <= LTR_MC_LINE_MAX) {
            c->need = avail + 1;
            return 0;
        }
        *rc = flush_error(sh, c, "CLIENT_ERROR", "line too long");
        c->skip_line = 1; /* drop() goes on to the newline, wherever it is */
        *pos += LTR_MC_LINE_MAX + 1;
        return 1;
    }
    size_t line = (size_t)(nl - p) + 1, len = line - 1;
    if (len && p[len - 1] == '\r')
        len--;
    size_t ntok;
    if ((*rc = tokenize(c, p, len, &ntok)))
        return 1;
    if (ntok && storage_command(c) >= 0) {
        size_t took = storage(sh, c, ntok, p, avail, line, rc);
        *pos += took;
        return took != 0;
    }
    *rc = batch_flush(sh, c); /* what follows a set sees it, and replies stay in order */
    if (!*rc)
        *rc = command(sh, c, ntok);
    *pos += line;
    return 1;
}

int mc_process(mc_shared *sh, mc_conn *c)
{
    size_t pos = 0;
    int rc = LTR_OK, more = 0;
    c->need = 0;
    while (!rc && !c->quit && pos < c->in.len) {
        if (c->out.len - c->out_sent >= MC_OUT_HIGH) {
            more = 1;
            break;
        }
        if (c->swallow || c->skip_line) {
            if (drop(c, &pos))
                break;
            continue;
        }
        if (!one_request(sh, c, &pos, &rc))
            break;
    }
    if (!rc)
        rc = batch_flush(sh, c);
    if (pos) { /* c->need counts from the request it waits for, now at the start */
        memmove(c->in.data, c->in.data + pos, c->in.len - pos);
        c->in.len -= pos;
    }
    return rc ? rc : more;
}

void mc_conn_trim(mc_conn *c, size_t keep)
{
    ltr_buf *bufs[] = {&c->val, &c->batch.keys, &c->batch.values};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        if (bufs[i]->cap > keep && bufs[i]->len == 0)
            ltr_buf_free(bufs[i]);
}

void mc_conn_free(mc_conn *c)
{
    ltr_buf_free(&c->in);
    ltr_buf_free(&c->out);
    ltr_buf_free(&c->val);
    ltr_buf_free(&c->batch.keys);
    ltr_buf_free(&c->batch.values);
    free(c->batch.koffs);
    free(c->batch.voffs);
    free(c->batch.noreply);
    free(c->tok);
    free(c->toklen);
    memset(c, 0, sizeof *c);
}
