/* serve.c: the server's event loops (docs/scale-out.md "The server"): threads, each with an
 * epoll set of its own connections, sharing the caller's listening socket; bytes in and out of
 * each connection's buffers, parsed and answered by mc_proto.c. */
#define _GNU_SOURCE /* accept4 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ltr_int.h"
#include "mc_proto.h"

#define DEFAULT_THREADS 2
#define DEFAULT_MAX_CONNECTIONS 1024
#define READ_CHUNK (16u << 10)   /* the least room a read gets (a connection starts with it) */
#define READ_ROUND (1u << 20)    /* bytes read from one connection before others get a turn */
#define KEEP_BUFFER (1u << 20)   /* an idle connection's buffers shrink back under this */
#define EVENTS 64
#define ACCEPT_PAUSE_MS 100      /* out of descriptors: retry accepting after this */

typedef struct conn {
    mc_conn mc;
    int fd;
    uint32_t events;  /* what the epoll set waits for now */
    int eof;          /* the peer sent everything it will */
    struct conn *prev, *next;
} conn;

typedef struct loop {
    struct ltr_server *sv;
    pthread_t tid;
    int ep;
    int started;
    int accept_paused;
    conn *conns;
} loop;

struct ltr_server {
    mc_shared sh;
    uint32_t max_connections;
    int listen_fd, stop_fd;
    uint32_t nloops;
    loop *loops;
    int ended;             /* a loop ended (atomic) */
    ltr_error error;       /* the first failure that ended one; rc 0 if none */
    pthread_mutex_t error_mu;
    int waited;
};

/* Tags of the two descriptors every epoll set shares; a connection's tag is its conn. */
static char LISTEN_TAG, STOP_TAG;

/* ---- connections ---- */

static void conn_close(loop *l, conn *c)
{
    epoll_ctl(l->ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        l->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    mc_conn_free(&c->mc);
    free(c);
    __atomic_fetch_sub(&l->sv->sh.st.curr_connections, 1, __ATOMIC_RELAXED);
}

static int conn_watch(loop *l, conn *c, uint32_t events)
{
    if (events == c->events)
        return 0;
    struct epoll_event ev = {.events = events, .data.ptr = c};
    c->events = events;
    return epoll_ctl(l->ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Sends what is answered; 1 when all of it went, 0 when the socket is full, -1 closed. */
static int conn_send(loop *l, conn *c)
{
    ltr_buf *o = &c->mc.out;
    while (c->mc.out_sent < o->len) {
        ssize_t n = send(c->fd, o->data + c->mc.out_sent, o->len - c->mc.out_sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
        c->mc.out_sent += (size_t)n;
        __atomic_fetch_add(&l->sv->sh.st.bytes_written, (uint64_t)n, __ATOMIC_RELAXED);
    }
    o->len = c->mc.out_sent = 0;
    if (o->cap > KEEP_BUFFER) /* a large reply went; an idle connection keeps little */
        ltr_buf_free(o);
    return 1;
}

/* Reads what has arrived: 0, or -1 when the connection failed. Sets eof on an orderly close. */
static int conn_read(loop *l, conn *c)
{
    ltr_buf *in = &c->mc.in;
    size_t round = 0;
    while (!c->eof && round < READ_ROUND) {
        size_t want = c->mc.need > in->len ? c->mc.need - in->len : 0;
        if (buf_reserve(in, want > READ_CHUNK ? want : READ_CHUNK))
            return -1;
        size_t room = in->cap - in->len;
        ssize_t n = recv(c->fd, in->data + in->len, room, 0);
        if (n == 0)
            c->eof = 1;
        if (n <= 0)
            return n == 0 || errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
        in->len += (size_t)n;
        round += (size_t)n;
        __atomic_fetch_add(&l->sv->sh.st.bytes_read, (uint64_t)n, __ATOMIC_RELAXED);
        if ((size_t)n < room) /* drained: no need to ask again to hear EAGAIN */
            break;
    }
    return 0;
}

/* Parses and answers what is in, sends it, and chooses what to wait for next. */
static void conn_work(loop *l, conn *c)
{
    for (;;) {
        int more = 0;
        if (c->mc.in.len && c->mc.in.len >= c->mc.need && !c->mc.quit) {
            more = mc_process(&l->sv->sh, &c->mc);
            if (more < 0) { /* out of memory: this client goes, the server stays */
                conn_close(l, c);
                return;
            }
        }
        int sent = conn_send(l, c);
        if (sent < 0) {
            conn_close(l, c);
            return;
        }
        if (!sent) { /* the client reads slowly: stop reading until it catches up */
            if (conn_watch(l, c, EPOLLOUT))
                conn_close(l, c);
            return;
        }
        if (!more)
            break;
    }
    if (c->mc.quit || c->eof) { /* answered all it sent; a half-sent request is dropped */
        conn_close(l, c);
        return;
    }
    if (c->mc.in.len == 0 && c->mc.in.cap > KEEP_BUFFER)
        ltr_buf_free(&c->mc.in);
    if (conn_watch(l, c, EPOLLIN | EPOLLRDHUP))
        conn_close(l, c);
}

static void conn_event(loop *l, conn *c, uint32_t events)
{
    if (events & EPOLLERR) {
        conn_close(l, c);
        return;
    }
    if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)) && conn_read(l, c) < 0) {
        conn_close(l, c);
        return;
    }
    conn_work(l, c);
}

/* ---- accepting ---- */

static void refuse(loop *l, int fd)
{
    ssize_t n = send(fd, MC_TOO_MANY, strlen(MC_TOO_MANY), MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)n; /* best effort: the client learns why, or sees the close */
    close(fd);
    __atomic_fetch_add(&l->sv->sh.st.rejected_connections, 1, __ATOMIC_RELAXED);
}

static int conn_add(loop *l, int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* replies go at once */
    conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return -1;
    }
    c->fd = fd;
    c->events = EPOLLIN | EPOLLRDHUP;
    struct epoll_event ev = {.events = c->events, .data.ptr = c};
    if (epoll_ctl(l->ep, EPOLL_CTL_ADD, fd, &ev)) {
        close(fd);
        free(c);
        return -1;
    }
    c->next = l->conns;
    if (l->conns)
        l->conns->prev = c;
    l->conns = c;
    __atomic_fetch_add(&l->sv->sh.st.total_connections, 1, __ATOMIC_RELAXED);
    return 0;
}

static void pause_accepting(loop *l, int pause)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.ptr = &LISTEN_TAG};
    epoll_ctl(l->ep, pause ? EPOLL_CTL_DEL : EPOLL_CTL_ADD, l->sv->listen_fd, &ev);
    l->accept_paused = pause;
}

static void accept_some(loop *l)
{
    ltr_server *sv = l->sv;
    for (int i = 0; i < EVENTS; i++) {
        int fd = accept4(sv->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            /* Out of descriptors: the listener stays readable, so stop watching it a while
             * rather than spin; the client waits in the backlog meanwhile. */
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                pause_accepting(l, 1);
            return;
        }
        uint64_t now = __atomic_add_fetch(&sv->sh.st.curr_connections, 1, __ATOMIC_RELAXED);
        if (now > sv->max_connections) {
            __atomic_fetch_sub(&sv->sh.st.curr_connections, 1, __ATOMIC_RELAXED);
            refuse(l, fd);
        } else if (conn_add(l, fd)) {
            __atomic_fetch_sub(&sv->sh.st.curr_connections, 1, __ATOMIC_RELAXED);
        }
    }
}

/* ---- loops ---- */

static void loop_fail(loop *l, const char *what)
{
    ltr_server *sv = l->sv;
    int rc = ltr_fail_errno(errno, "the server's %s failed", what);
    pthread_mutex_lock(&sv->error_mu);
    if (!sv->error.rc)
        ltr_error_keep(&sv->error, rc);
    pthread_mutex_unlock(&sv->error_mu);
    ltr_server_stop(sv); /* one loop gone: the others go too, and the caller hears why */
}

static void *loop_run(void *arg)
{
    loop *l = arg;
    struct epoll_event evs[EVENTS];
    for (;;) {
        int n = epoll_wait(l->ep, evs, EVENTS, l->accept_paused ? ACCEPT_PAUSE_MS : -1);
        if (n < 0 && errno != EINTR) {
            loop_fail(l, "epoll_wait");
            break;
        }
        if (l->accept_paused)
            pause_accepting(l, 0);
        int stop = 0;
        for (int i = 0; i < n; i++) {
            void *tag = evs[i].data.ptr;
            if (tag == &STOP_TAG)
                stop = 1;
            else if (tag == &LISTEN_TAG)
                accept_some(l);
            else
                conn_event(l, tag, evs[i].events);
        }
        if (stop)
            break;
    }
    while (l->conns) { /* what is answered goes out if the socket takes it now */
        conn_send(l, l->conns);
        conn_close(l, l->conns);
    }
    __atomic_store_n(&l->sv->ended, 1, __ATOMIC_RELEASE);
    return NULL;
}

static int loop_open(ltr_server *sv, loop *l)
{
    l->sv = sv;
    l->ep = epoll_create1(EPOLL_CLOEXEC);
    if (l->ep < 0)
        return ltr_fail_errno(errno, "epoll_create1");
    struct epoll_event stop = {.events = EPOLLIN, .data.ptr = &STOP_TAG};
    /* EPOLLEXCLUSIVE: a connection wakes one loop, not all of them */
    struct epoll_event lis = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.ptr = &LISTEN_TAG};
    if (epoll_ctl(l->ep, EPOLL_CTL_ADD, sv->stop_fd, &stop) ||
        epoll_ctl(l->ep, EPOLL_CTL_ADD, sv->listen_fd, &lis))
        return ltr_fail_errno(errno, "epoll_ctl on the listening socket");
    return LTR_OK;
}

/* ---- the server ---- */

static int server_init(ltr_server *sv, ltr_store *s, int listen_fd, const ltr_server_opts *o)
{
    ltr_store_opts so;
    ltr_store_options(s, &so);
    if (so.read_only && !o->read_only)
        return ltr_fail(LTR_EINVAL, "the store is open read-only: serve it read-only");
    if (o->max_key_length > LTR_MAX_KEY)
        return ltr_fail(LTR_EINVAL, "max_key_length must be 1..%d, got %u", LTR_MAX_KEY,
                        o->max_key_length);
    mc_shared *sh = &sv->sh;
    sh->store = s;
    sh->memcached_values = so.value_format == LTR_VALUE_MEMCACHED;
    sh->max_key = o->max_key_length ? o->max_key_length : LTR_MC_KEY_MAX;
    sh->allow_control_keys = o->allow_control_keys;
    sh->read_only = o->read_only;
    sh->version = o->version ? o->version : "lsmtrie";
    sh->threads = sv->nloops = o->threads ? o->threads : DEFAULT_THREADS;
    sh->started = time(NULL);
    sv->max_connections = o->max_connections ? o->max_connections : DEFAULT_MAX_CONNECTIONS;
    sv->listen_fd = listen_fd;
    sv->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (sv->stop_fd < 0)
        return ltr_fail_errno(errno, "eventfd");
    int fl = fcntl(listen_fd, F_GETFL);
    if (fl < 0 || fcntl(listen_fd, F_SETFL, fl | O_NONBLOCK))
        return ltr_fail_errno(errno, "the listening socket (descriptor %d)", listen_fd);
    return LTR_OK;
}

int ltr_server_start(ltr_store *s, int listen_fd, const ltr_server_opts *o, ltr_server **out)
{
    *out = NULL;
    if (o->threads > 256)
        return ltr_fail(LTR_EINVAL, "threads must be 1..256, got %u", o->threads);
    ltr_server *sv = calloc(1, sizeof *sv);
    if (!sv)
        return LTR_ENOMEM;
    sv->stop_fd = -1;
    pthread_rwlock_init(&sv->sh.write_lock, NULL);
    pthread_mutex_init(&sv->error_mu, NULL);
    int rc = server_init(sv, s, listen_fd, o);
    if (!rc && !(sv->loops = calloc(sv->nloops, sizeof *sv->loops)))
        rc = LTR_ENOMEM;
    for (uint32_t i = 0; !rc && i < sv->nloops; i++)
        sv->loops[i].ep = -1;
    for (uint32_t i = 0; !rc && i < sv->nloops; i++)
        rc = loop_open(sv, &sv->loops[i]);
    for (uint32_t i = 0; !rc && i < sv->nloops; i++) {
        if ((errno = pthread_create(&sv->loops[i].tid, NULL, loop_run, &sv->loops[i])))
            rc = ltr_fail_errno(errno, "starting the server's threads");
        else
            sv->loops[i].started = 1;
    }
    if (rc) {
        ltr_server_free(sv);
        return rc;
    }
    *out = sv;
    return LTR_OK;
}

void ltr_server_stop(ltr_server *sv)
{
    uint64_t one = 1;
    ssize_t n = write(sv->stop_fd, &one, sizeof one); /* stays readable: every loop sees it */
    (void)n;
}

int ltr_server_running(ltr_server *sv) { return !__atomic_load_n(&sv->ended, __ATOMIC_ACQUIRE); }

int ltr_server_wait(ltr_server *sv)
{
    if (!sv->waited) {
        for (uint32_t i = 0; i < sv->nloops; i++)
            if (sv->loops[i].started)
                pthread_join(sv->loops[i].tid, NULL);
        sv->waited = 1;
    }
    return sv->error.rc ? ltr_error_raise(&sv->error) : LTR_OK;
}

void ltr_server_stats_get(ltr_server *sv, ltr_server_stats *out)
{
    mc_stats_snapshot(&sv->sh, out);
}

void ltr_server_free(ltr_server *sv)
{
    if (!sv)
        return;
    if (sv->stop_fd >= 0) {
        ltr_server_stop(sv);
        ltr_server_wait(sv);
        close(sv->stop_fd);
    }
    for (uint32_t i = 0; sv->loops && i < sv->nloops; i++)
        if (sv->loops[i].ep >= 0)
            close(sv->loops[i].ep);
    free(sv->loops);
    pthread_rwlock_destroy(&sv->sh.write_lock);
    pthread_mutex_destroy(&sv->error_mu);
    free(sv);
}
