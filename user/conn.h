/* conn.h — connections keyed by (pid, fd): per-direction HTTP/1 streams, request/response pairing.
 * Bytes in, transactions out; no I/O. Time is the events' own monotonic ns,
 * so replaying a capture gives the same result as the live run.
 */
#ifndef PHIWATCH_CONN_H
#define PHIWATCH_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "phiwatch/events.h"
#include "txn.h"

struct conn_table;

struct conn_limits {
	size_t max_conns;          /* LRU bound: the least recently active is closed */
	uint64_t idle_timeout_ns;  /* a connection silent this long is closed */
	size_t head_cap;           /* bytes buffered for one incomplete HTTP head */
	size_t target_cap;         /* request-target bytes kept */
	unsigned pipeline_max;     /* requests waiting for responses on one connection */
};

struct conn_stats {
	uint64_t conns_opened;
	uint64_t conns_closed;
	uint64_t conns_evicted_lru;
	uint64_t conns_evicted_idle;
	uint64_t conns_live;
	uint64_t requests;
	uint64_t responses;
	uint64_t orphan_responses;     /* response with no request seen (connection joined mid-way) */
	uint64_t unanswered_requests;  /* request whose response never came (reported, status 0) */
	uint64_t pipeline_overflows;   /* requests dropped: too many awaiting responses */
	uint64_t garbage_bytes;        /* bytes skipped by HTTP resynchronisation */
	uint64_t resyncs;
	uint64_t head_overflows;
	uint64_t gap_bytes;            /* bytes moved but not captured (capture limit) */
	uint64_t requests_lost;        /* request-side calls lost whole or whose payload was shed between messages */
	uint64_t requests_shed[3];     /* of those, payloads shed at a message start, by role (enum pw_role) */
	uint64_t responses_lost;       /* the same on the response side */
	uint64_t lost_events;          /* data events the kernel could not deliver, from the sequence gaps */
	uint64_t lost_bytes;           /* their bytes: fed to the parsers as gaps */
	uint64_t conns_replaced;       /* an fd found naming a new socket without its close seen */
	uint64_t buffered_bytes;       /* held in head buffers now */
};

/* Called for each finished transaction. t->ts_* are monotonic ns; comm,
 * exe, sequence and user are left for the caller. t and its strings are
 * valid only during the call. */
typedef void (*conn_txn_fn)(void *ctx, struct txn *t);

struct conn_table *conn_table__new(const struct conn_limits *lim, conn_txn_fn fn, void *ctx);
/* Called when a connection is dropped for idleness or the LRU bound while
 * its socket may still be open: the capture side forgets the socket too, so
 * that it is announced again (with its addresses) if it ever speaks. */
typedef void (*conn_evict_fn)(void *ctx, uint32_t pid, int32_t fd);
void conn_table__on_evict(struct conn_table *ct, conn_evict_fn fn, void *ctx);
struct identity_ctx;
struct resource_ctx;
/* Who called (from each request's headers) and which patient (from its
 * target) go on every transaction. Both borrowed; NULL disables. */
void conn_table__enrich(struct conn_table *ct, struct identity_ctx *ic, const struct resource_ctx *rc);
/* Keep up to cap captured bytes of each request and response (head, then
 * body) and hand them out on the transaction (txn.req_raw...). 0: off. */
void conn_table__keep_raw(struct conn_table *ct, size_t cap);
void conn_table__free(struct conn_table *ct);  /* closes nothing: call close_all first */

void conn_table__open(struct conn_table *ct, const struct pw_conn *c);
void conn_table__data(struct conn_table *ct, const struct pw_data *d);
void conn_table__close(struct conn_table *ct, const struct pw_close *e);
/* Process ended: its sockets are closed by the kernel without close(). */
void conn_table__close_pid(struct conn_table *ct, uint32_t pid, uint64_t ts);
/* Closes connections idle since before now - idle_timeout. */
void conn_table__expire(struct conn_table *ct, uint64_t now);
void conn_table__close_all(struct conn_table *ct, uint64_t ts);
void conn_table__stats(const struct conn_table *ct, struct conn_stats *out);

#endif
