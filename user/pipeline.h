/* pipeline.h — capture records in, transactions out: the userspace path shared by `run` and `replay`.
 * No libbpf and no I/O: the same bytes give the same transactions live,
 * from a recording, in tests and under fuzzers.
 */
#ifndef PHIWATCH_PIPELINE_H
#define PHIWATCH_PIPELINE_H

#include <stddef.h>
#include <stdint.h>

#include "alert.h"
#include "conn.h"
#include "detect.h"
#include "identity.h"
#include "resource.h"
#include "txn.h"

/* t is complete (realtime timestamps, sequence, process) and valid only
 * during the call. */
typedef void (*pipeline_txn_fn)(void *ctx, const struct txn *t);

struct pipeline_opts {
	struct conn_limits limits;
	int64_t realtime_offset_ns;   /* realtime = monotonic event ts + this */
	pipeline_txn_fn on_txn;
	void *ctx;
	conn_evict_fn on_evict;       /* optional: a connection was dropped while maybe open */
	void *evict_ctx;
	const struct identity_opts *identity;  /* NULL: defaults */
	const struct resource_opts *resource;  /* NULL: defaults */
	const struct detect_opts *detect;      /* NULL: defaults */
	alert_fn on_alert;                     /* NULL: detection off */
	void *alert_ctx;
	size_t keep_raw;                       /* captured bytes kept per request/response (forensics) */
};

struct pipeline_stats {
	uint64_t records;
	uint64_t bad_records;         /* failed validation: counted and skipped */
	uint64_t data_events;
	uint64_t data_bytes;          /* bytes the watched calls moved */
	uint64_t captured_bytes;      /* bytes copied by the kernel */
	uint64_t tls_events;
	uint64_t transactions;
	uint64_t kernel_drops[PW_DROP__MAX];
	uint64_t kernel_drops_total;
	uint64_t kernel_lost[PW_LOST_SLOTS];   /* lost data events by role and direction */
	uint64_t procs_live;
	struct conn_stats conn;
	struct identity_stats identity;
	struct detect_stats detect;
	uint64_t tls_uninstrumented;
};

struct pipeline;

/* Defaults shared by run and replay (so a replay reproduces a run). */
void pipeline_default_limits(struct conn_limits *l);

/* NULL with errno (and a message in err for a bad resource template). */
struct pipeline *pipeline__new(const struct pipeline_opts *o);
/* Feeds one record (a kernel event or a userspace PW_EV_PROC/DROPS record).
 * Returns 0, or -EINVAL when the record is malformed (counted, skipped). */
int pipeline__feed(struct pipeline *p, const void *rec, size_t len);
/* End of input: closes every connection (unanswered requests reported) and
 * ends the alert suppression windows. */
void pipeline__finish(struct pipeline *p);
/* A transaction from elsewhere (a transactions JSONL replay): realtime
 * timestamps already; only detection runs. */
void pipeline__detect_txn(struct pipeline *p, const struct txn *t);
void pipeline__stats(const struct pipeline *p, struct pipeline_stats *out);
void pipeline__free(struct pipeline *p);
/* New identity, resource and detection settings (SIGHUP). The detection
 * windows start over: open suppression windows are closed first (their
 * summaries emitted). Options are copied as needed; on failure (-errno,
 * err set) the old settings stay in force. */
int pipeline__reconfigure(struct pipeline *p, const struct identity_opts *io, const struct resource_opts *ro,
			  const struct detect_opts *dopt, char *err, size_t errlen);

/* Name of a kernel drop reason, for stats and logs. */
const char *pipeline_drop_name(unsigned reason);

#endif
