/* mc_proto.h: the memcached text protocol over one connection's buffers (mc_proto.c). The
 * event loops (serve.c) move bytes; this file turns requests into store calls and replies. */
#ifndef LTR_MC_PROTO_H
#define LTR_MC_PROTO_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include "lsmtrie_serve.h"

/* Replies a connection may hold unsent before it stops parsing (the client reads slower than
 * it asks): what bounds a pipelined client's memory on the server. */
#define MC_OUT_HIGH (1u << 20)
/* The most one get's reply may hold: a line of 64 KiB names thousands of keys, whose values
 * of up to 16 MiB each would otherwise all be copied to memory before the first is sent. */
#define MC_REPLY_MAX (256u << 20)

/* What every connection of a server shares. */
typedef struct mc_shared {
    ltr_store *store;
    int memcached_values;    /* the store's values are memcached items (flags, then data) */
    uint32_t max_key;
    int allow_control_keys;
    int read_only;
    const char *version;
    uint32_t threads;
    time_t started;
    /* Sets take it shared, add, replace and delete exclusively: their look-up and write are
     * then one step to every other write, while plain sets still share the store's group
     * commit. Gets never take it. */
    pthread_rwlock_t write_lock;
    ltr_server_stats st;     /* updated with relaxed atomics */
} mc_shared;

/* Consecutive sets of one connection gathered into one atomic store write (one log record,
 * one fsync with --sync): the batched path that makes pipelined sets cheap. */
typedef struct mc_batch {
    ltr_buf keys, values;
    int64_t *koffs, *voffs;  /* n + 1 ends each, from 0 */
    uint8_t *noreply;        /* per set: its reply is suppressed */
    size_t n, cap;
} mc_batch;

typedef struct mc_conn {
    ltr_buf in;         /* bytes received and not yet parsed */
    ltr_buf out;        /* replies not yet sent, from out_sent on */
    size_t out_sent;
    size_t need;        /* bytes `in` must hold before the next request can be parsed */
    uint64_t swallow;   /* bytes of a refused data block still to drop */
    int skip_line;      /* dropping the rest of a command line that was too long */
    int quit;           /* quit: close once the replies are sent */
    ltr_buf val;        /* a get's value */
    const uint8_t **tok;/* the tokens of the line being parsed */
    uint32_t *toklen;
    size_t tokcap;
    mc_batch batch;
} mc_conn;

/* Parses and answers the complete requests in c->in, appending the replies to c->out, and
 * drops what it parsed. Returns 1 when it stopped because out holds MC_OUT_HIGH bytes (call
 * again once they are sent), 0 when it needs more input (c->need bytes), LTR_ENOMEM. */
int mc_process(mc_shared *sh, mc_conn *c);
/* The server's counters, each read atomically. */
void mc_stats_snapshot(mc_shared *sh, ltr_server_stats *out);
/* A one-line error reply for a connection the server turns away. */
extern const char MC_TOO_MANY[];
/* Frees the buffers of an idle connection (between requests) that grew past keep bytes: a
 * 16 MiB value once read must not stay with every connection that read one. */
void mc_conn_trim(mc_conn *c, size_t keep);
void mc_conn_free(mc_conn *c);

#endif
