/* metrics.h — the agent's counters as Prometheus text exposition 0.0.4, and a tiny loopback HTTP/1.0 endpoint.
 * Not a metrics library: one snapshot struct filled by the agent, rendered on each scrape; no registry, no state.
 *
 * Metric names (all prefixed phiwatch_; counters end in _total, units in the name, label values escaped):
 *   phiwatch_up, phiwatch_build_info{version}, phiwatch_start_time_seconds
 *   phiwatch_events_total, phiwatch_bad_events_total, phiwatch_captured_bytes_total, phiwatch_observed_bytes_total
 *   phiwatch_transactions_total, phiwatch_http_requests_total, phiwatch_http_responses_total,
 *   phiwatch_http_resyncs_total, phiwatch_requests_lost_total, phiwatch_responses_lost_total
 *   phiwatch_drops_total{reason}, phiwatch_alerts_total{rule}, phiwatch_alerts_suppressed_total{rule},
 *   phiwatch_alert_summaries_total
 *   phiwatch_processes_attached, phiwatch_tls_uninstrumented_processes, phiwatch_tls_libraries_hooked,
 *   phiwatch_connections, phiwatch_principals
 *   phiwatch_audit_records_written_total, _synced_total, _lost_total, phiwatch_audit_write_errors_total,
 *   phiwatch_audit_unsynced_records (only when the audit trail is on: have_audit)
 *   phiwatch_table_memory_bytes{table}, phiwatch_ringbuf_size_bytes, phiwatch_ringbuf_used_ratio
 *   phiwatch_metrics_scrapes_total, phiwatch_metrics_rejected_total (the endpoint's own counters)
 */
#ifndef PHIWATCH_METRICS_H
#define PHIWATCH_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sys/socket.h>

#include "json.h"

#define METRICS_MAX_PAIRS 32            /* entries of each {name, value} array */
#define METRICS_DEFAULT_LISTEN "127.0.0.1:9464"
#define METRICS_MAX_CLIENTS 8           /* scrapes served at once; more are closed at accept */
#define METRICS_REQUEST_MAX 4096        /* request head bytes read before giving up (400) */
#define METRICS_TIMEOUT_MS 2000         /* a connection is closed this long after accept, done or not */

/* One labelled value. name is the label value (a drop reason, a rule, a table); borrowed: it must stay valid
 * during metrics_render. NULL names are skipped; a repeated name adds to the first (one series per name). */
struct metrics_pair {
	const char *name;
	uint64_t value;
};

/* What the agent knows at scrape time. Zero-initialise, then fill; every field is optional (0 is rendered). */
struct metrics_snapshot {
	const char *version;            /* PHIWATCH_VERSION; NULL: no build_info */
	uint64_t start_time_ns;         /* CLOCK_REALTIME ns when the agent started */

	/* capture (capture_stats / pipeline_stats) */
	uint64_t events;                /* records read from the ring buffer */
	uint64_t bad_events;            /* records too short or malformed: counted, dropped */
	uint64_t captured_bytes;        /* payload bytes the kernel copied */
	uint64_t observed_bytes;        /* bytes the watched calls moved (captured or not) */
	uint64_t transactions;
	uint64_t http_requests, http_responses, http_resyncs;
	uint64_t requests_lost, responses_lost;
	struct metrics_pair drops[METRICS_MAX_PAIRS];   /* reason -> events lost; list every reason, even at 0 */
	size_t ndrops;

	/* detection */
	struct metrics_pair alerts[METRICS_MAX_PAIRS];  /* rule -> alerts emitted; list every rule, even at 0 */
	size_t nalerts;
	struct metrics_pair suppressed[METRICS_MAX_PAIRS]; /* rule -> alerts swallowed by de-duplication */
	size_t nsuppressed;
	uint64_t alert_summaries;       /* "N more suppressed" records */
	uint64_t principals;            /* principals tracked now */

	/* processes and connections (gauges) */
	uint64_t processes_attached;    /* processes whose calls phiwatch follows now */
	uint64_t tls_uninstrumented;    /* processes seen speaking TLS through a library phiwatch cannot hook */
	uint64_t tls_libraries;         /* distinct OpenSSL files hooked */
	uint64_t connections;           /* connections followed now */

	/* audit trail */
	bool have_audit;                /* false: no audit_* series at all (audit.enabled is false) */
	uint64_t audit_written, audit_synced, audit_lost, audit_write_errors, audit_unsynced;

	/* memory and the ring buffer (gauges) */
	struct metrics_pair tables[METRICS_MAX_PAIRS];  /* table -> bytes held now */
	size_t ntables;
	uint64_t ringbuf_size_bytes;
	double ringbuf_used_ratio;      /* bytes waiting / size, in [0, 1]; NaN when unknown */

	/* the endpoint's own counters: filled by metrics_server__poll, leave them 0 */
	uint64_t scrapes, rejected;
};

/* Appends one pair to an array of n entries (at most METRICS_MAX_PAIRS; extra pairs are ignored). */
void metrics_pair_add(struct metrics_pair *arr, size_t *n, const char *name, uint64_t value);

/* Fills what pipeline__stats knows: events (ps->records: the caller may replace it with the ring buffer's
 * count), bytes, transactions, HTTP counters, every drop reason (plus "bad_records"), every rule's alerts and
 * suppressions, principals, processes_attached (ps->procs_live), tls_uninstrumented, connections, and the tables
 * identity_cache, detect_principals, detect_state, alert_dedup, http_head_buffers. Pairs are appended. */
struct pipeline_stats;
void metrics_fill_pipeline(struct metrics_snapshot *m, const struct pipeline_stats *ps);
/* Sets have_audit and the audit_* fields. */
struct audit_stats;
void metrics_fill_audit(struct metrics_snapshot *m, const struct audit_stats *as);

/* Appends the exposition of m to out (text/plain; version=0.0.4): # HELP and # TYPE before each family,
 * one sample per series, a final newline. Never fails short of memory (out->oom). */
void metrics_render(const struct metrics_snapshot *m, struct jbuf *out);

/* Appends s[0..n) escaped as a label value (backslash, double quote, newline; invalid UTF-8 and other control
 * bytes become U+FFFD). No quotes added. */
void metrics_escape_label(struct jbuf *out, const char *s, size_t n);

/* ---- the endpoint ---- */

/* Fills the snapshot served to one scrape (called only when a GET /metrics arrives). */
typedef void (*metrics_render_fn)(void *ctx, struct metrics_snapshot *m);

struct metrics_server;

/*
 * Parses a listen address: "IPv4:port", "[IPv6]:port" or "localhost:port" (127.0.0.1); no other names are
 * resolved. *loopback says whether the address is in 127.0.0.0/8 or ::1. 0, or -EINVAL with the reason in err.
 * For config validation: a bad metrics.listen stops the start before anything is attached.
 */
int metrics_listen_parse(const char *addr, struct sockaddr_storage *ss, socklen_t *sslen, bool *loopback,
			 char *err, size_t errlen);

/*
 * Binds and listens (non-blocking, close-on-exec). addr NULL or "": METRICS_DEFAULT_LISTEN. A non-loopback
 * address is used only because the operator wrote it (metrics.listen); it is logged as a warning once, since the
 * endpoint has no authentication. NULL with errno set and the reason in err.
 */
struct metrics_server *metrics_server__new(const char *addr, char *err, size_t errlen);
/* The listening socket, for the caller's poll set (readable: a scrape is waiting). */
int metrics_server__fd(const struct metrics_server *s);
/* The bound address as "ip:port" (the real port when 0 was asked). */
const char *metrics_server__address(const struct metrics_server *s);
/*
 * Serves what is ready, never waiting: accepts pending connections (closing those beyond METRICS_MAX_CLIENTS),
 * reads each request (at most METRICS_REQUEST_MAX bytes), answers GET or HEAD /metrics with 200 and fill's
 * snapshot rendered, anything else with 404 (400 for a malformed or oversized request, 405 for other methods on
 * /metrics), writes what the socket takes and closes when done or METRICS_TIMEOUT_MS after accept. Each call does
 * at most one read and one write per connection. Call it from the agent's loop (every poll_ms is enough).
 */
void metrics_server__poll(struct metrics_server *s, metrics_render_fn fill, void *ctx);
/* Closes the socket and every open connection; NULL is a no-op. */
void metrics_server__free(struct metrics_server *s);

#endif
