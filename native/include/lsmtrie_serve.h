/* lsmtrie_serve.h: a store served over the memcached text protocol (`lsmtrie serve`,
 * docs/scale-out.md): event-loop threads that accept connections on a listening socket the
 * caller made, parse requests and answer them from the store, all in C. Conventions of
 * lsmtrie.h. */
#ifndef LSMTRIE_SERVE_H
#define LSMTRIE_SERVE_H

#include "lsmtrie.h"

#ifdef __cplusplus
extern "C" {
#endif

#pragma GCC visibility push(default)
/* cdef-begin */

#define LTR_MC_KEY_MAX 250       /* memcached's key limit, the default max_key_length */
#define LTR_MC_LINE_MAX 65536    /* a longer command line is refused (CLIENT_ERROR line too long) */

typedef struct ltr_server_opts {
    uint32_t threads;         /* event loops, each owning its connections; 0: 2 */
    uint32_t max_connections; /* open at once; more are told SERVER_ERROR and closed. 0: 1024 */
    uint32_t max_key_length;  /* 1..LTR_MAX_KEY; 0: LTR_MC_KEY_MAX */
    int allow_control_keys;   /* accept keys holding control characters (never space or
                                 newline, which the protocol cannot carry) */
    int read_only;            /* refuse every write (SERVER_ERROR read-only) */
    const char *version;      /* the text of the VERSION reply; NULL: "lsmtrie" */
} ltr_server_opts;

typedef struct ltr_server_stats { /* every field a uint64_t, read with atomics */
    uint64_t curr_connections;
    uint64_t total_connections;
    uint64_t rejected_connections; /* over max_connections */
    uint64_t cmd_get;              /* keys asked for by get and gets */
    uint64_t cmd_set;              /* set, add and replace commands */
    uint64_t get_hits;
    uint64_t get_misses;
    uint64_t delete_hits;
    uint64_t delete_misses;
    uint64_t bytes_read;           /* from the network */
    uint64_t bytes_written;        /* to the network */
    uint64_t errors;               /* ERROR, CLIENT_ERROR and SERVER_ERROR replies */
} ltr_server_stats;

typedef struct ltr_server ltr_server;

/* Starts serving store s on listen_fd (a bound, listening TCP socket; the server makes it
 * non-blocking and never closes it). The store must stay open until ltr_server_free; a
 * read-only store needs read_only. */
int ltr_server_start(ltr_store *s, int listen_fd, const ltr_server_opts *o, ltr_server **out);
/* Asks the threads to stop: they close their connections (sending what is already answered)
 * and end. Async-signal-safe; any thread; more than once is fine. */
void ltr_server_stop(ltr_server *sv);
/* 1 while every thread runs; 0 once one has ended (stopped, or failed: see ltr_server_wait). */
int ltr_server_running(ltr_server *sv);
/* Waits for the threads to end; returns LTR_OK, or the error that ended one of them (which
 * stopped the others). */
int ltr_server_wait(ltr_server *sv);
void ltr_server_stats_get(ltr_server *sv, ltr_server_stats *out);
/* Stops, waits and frees. */
void ltr_server_free(ltr_server *sv);

/* cdef-end */
#pragma GCC visibility pop

#ifdef __cplusplus
}
#endif
#endif /* LSMTRIE_SERVE_H */
