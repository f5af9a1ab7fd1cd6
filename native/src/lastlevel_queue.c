/* lastlevel_queue.c: the last-level nodes that received tables since their last check, which
 * a worker then looks at (lastlevel.c: a cluster to rebuild, garbage to collect). Flushes and
 * compactions note the nodes they append to, under state_mu. Depends on nothing else of the
 * store. */
#include <stdlib.h>

#include "store_int.h"

void lastlevel_note(ltr_store *s, uint64_t node)
{
    for (size_t i = 0; i < s->llq.n; i++)
        if (s->llq.nodes[i] == node)
            return;
    if (s->llq.n == s->llq.cap) {
        size_t cap = s->llq.cap ? 2 * s->llq.cap : 64;
        uint64_t *p = realloc(s->llq.nodes, cap * sizeof *p);
        if (!p)
            return; /* only a missed garbage check: the next append notes the node again */
        s->llq.nodes = p;
        s->llq.cap = cap;
    }
    s->llq.nodes[s->llq.n++] = node;
}

void lastlevel_note_all(ltr_store *s)
{
    viter it = {.level = s->current->depth - 1};
    for (const vnode *n; (n = viter_next(s->current, &it));)
        lastlevel_note(s, n->id);
}
