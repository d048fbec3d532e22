/* detect.h — the detection engine: transactions in, alerts out (rate, enumeration, export,
 * auth failures, anomaly, HIPAA checks, capture loss), and the one interface every
 * detect_*.c detector implements.
 * Time is the transactions' own (txn->ts_start, realtime ns) and the ticks it is
 * given: no clock is read, so a replayed day gives the alerts the live day gave.
 * No I/O: alerts go to the alert_fn given to detect__new.
 */
#ifndef PHIWATCH_DETECT_H
#define PHIWATCH_DETECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "alert.h"
#include "json.h"
#include "txn.h"

/* Rule names are a contract (DESIGN.md); detect_rule_name() spells them. */
enum detect_rule {
	DETECT_RULE_RATE_LIMIT_EXCEEDED = 0,
	DETECT_RULE_PATIENT_ENUMERATION,
	DETECT_RULE_BULK_EXPORT,
	DETECT_RULE_AUTH_FAILURES,
	DETECT_RULE_RATE_ANOMALY,
	DETECT_RULE_BASIC_AUTH,
	DETECT_RULE_PLAINTEXT_PHI,
	DETECT_RULE_LONG_LIVED_TOKEN,
	DETECT_RULE_SENSITIVE_DATA_EXPOSED,
	DETECT_RULE_RATE_LIMIT_NOT_ENFORCED,
	DETECT_RULE_CAPTURE_LOSS,
	DETECT_RULE_TLS_NOT_INSTRUMENTED,  /* emitted by capture through detect__alert() */
	DETECT_RULE__MAX,
};

const char *detect_rule_name(enum detect_rule r);
/* -EINVAL for an unknown name. */
int detect_rule_from_name(const char *name);

/* Roles whose transactions feed the per-principal (behavioural) detectors;
 * bits of (1 << enum pw_role). */
#define DETECT_ROLE_UNKNOWN 0x1u
#define DETECT_ROLE_SERVER 0x2u
#define DETECT_ROLE_CLIENT 0x4u

/* Every knob; the config key each one maps to is in the comment. Windows are
 * sliding, with millisecond resolution. detect_opts_default() fills DESIGN.md
 * defaults. */
struct detect_opts {
	/* engine */
	uint32_t max_principals;     /* detect.max_principals: LRU bound (100000) */
	uint32_t principal_idle_s;   /* detect.principal_idle_s: state of a principal idle this long is dropped (86400) */
	uint32_t suppress_s;         /* detect.suppress_s: de-dup window per (rule, principal) (300) */
	uint32_t max_suppress;       /* detect.max_suppress: open suppression windows bound (65536) */
	uint32_t roles;              /* detect.roles: DETECT_ROLE_* fed to the behavioural detectors (server|unknown) */
	uint64_t hash_seed;          /* not configured: 0 = random per run */
	struct {
		bool enabled;        /* detect.rate.enabled (true) */
		uint32_t limit;      /* detect.rate.limit: requests allowed per window (100) */
		uint32_t window_s;   /* detect.rate.window_s (60) */
		bool not_enforced;   /* detect.rate.not_enforced.enabled (true) */
		uint32_t not_enforced_min; /* detect.rate.not_enforced.min: 2xx answers past the limit (10) */
	} rate;
	struct {
		bool enabled;        /* detect.enumeration.enabled (true) */
		uint32_t max_patients; /* detect.enumeration.max_patients: alert above this many distinct (50) */
		uint32_t window_s;   /* detect.enumeration.window_s (600) */
	} enumeration;
	struct {
		bool enabled;        /* detect.export.enabled (true) */
		uint32_t count;      /* detect.export.count: alert at this many exports (3) */
		uint32_t window_s;   /* detect.export.window_s (3600) */
		uint32_t page_size;  /* detect.export.page_size: _count (or limit...) >= this is an export (1000) */
		uint64_t large_response_bytes; /* detect.export.large_response_bytes (10 MiB) */
	} bulk_export;
	struct {
		bool enabled;        /* detect.auth_failures.enabled (true) */
		uint32_t count;      /* detect.auth_failures.count: alert at this many 401/403 (10) */
		uint32_t window_s;   /* detect.auth_failures.window_s (60) */
	} auth_failures;
	struct {
		bool enabled;        /* detect.anomaly.enabled (true) */
		double factor;       /* detect.anomaly.factor: rate > factor x baseline (5.0) */
		uint32_t floor_per_min; /* detect.anomaly.floor_per_min: and rate >= this (30) */
		uint32_t learn_minutes; /* detect.anomaly.learn_minutes: active minutes before alerting (30) */
		double alpha;        /* detect.anomaly.alpha: EWMA weight of a new minute (0.1) */
	} anomaly;
	struct {
		bool basic_auth;     /* detect.basic_auth.enabled (true) */
		bool plaintext_phi;  /* detect.plaintext_phi.enabled (true) */
		bool sensitive_data; /* detect.sensitive_data.enabled (true) */
		bool long_lived_token; /* detect.token.enabled (true) */
		uint32_t token_max_lifetime_s; /* detect.token.max_lifetime_s: exp - iat above this (3600) */
		bool token_no_exp;   /* detect.token.no_exp: a JWT without exp is long-lived (true) */
	} hipaa;
	struct {
		bool enabled;        /* detect.capture_loss.enabled (true) */
	} capture_loss;
};

void detect_opts_default(struct detect_opts *o);
/* 0, or -EINVAL with *key = the config key and *reason = why (for
 * "phiwatch: config.json: key \"detect.rate.limit\": must be ..."). */
int detect_opts_validate(const struct detect_opts *o, const char **key, const char **reason);

struct detect_stats {
	uint64_t txns;
	uint64_t alerts[DETECT_RULE__MAX];     /* emitted, summaries excluded */
	uint64_t suppressed[DETECT_RULE__MAX]; /* swallowed by de-duplication */
	uint64_t summaries;                    /* "N more suppressed" records emitted */
	uint64_t principals_live;
	uint64_t principals_evicted;           /* LRU bound reached */
	uint64_t principals_expired;           /* idle */
	uint64_t alloc_failures;               /* state not kept: detection weakened, counted */
	uint64_t mem_bytes;                    /* all heap the engine holds (approximate) */
	uint64_t mem_principals;               /* principal entries and their table */
	uint64_t mem_detectors;                /* per-principal detector state */
	uint64_t mem_dedup;
};

struct detect;

/* fn receives every alert and every summary; it may not call back into d.
 * NULL + errno (EINVAL for options detect_opts_validate() rejects). */
struct detect *detect__new(const struct detect_opts *o, alert_fn fn, void *ctx);
/* One finished transaction; t is borrowed for the call. */
void detect__txn(struct detect *d, const struct txn *t);
/* Kernel/userspace drop counters, cumulative per reason (a counter going
 * down is taken as a reset). Alerts capture_loss on the first call that sees
 * new drops (call it at least once a second); repeats are suppressed for the
 * suppression window, and the next alert counts every drop in between. */
void detect__drops(struct detect *d, uint64_t ts_ns, const uint64_t *drops_by_reason, size_t n,
		   const char *const *reason_names);
/* Time passes without transactions: closes suppression windows (emitting the
 * "N more suppressed" records) and drops idle principals. now_ns realtime. */
void detect__tick(struct detect *d, uint64_t now_ns);
/* Any other module's alert (tls_not_instrumented...), through the same
 * de-duplication and callback. evidence: JSON object text or NULL. */
void detect__alert(struct detect *d, enum detect_rule rule, const char *principal, uint32_t pid,
		   uint64_t ts_ns, int severity, const char *message, const char *evidence);
/* End of input: closes every suppression window now. */
void detect__flush(struct detect *d);
void detect__stats(const struct detect *d, struct detect_stats *out);
void detect__free(struct detect *d);

/* ====================================================================
 * The detector interface (for detect_*.c only).
 * ==================================================================== */

struct detect_principal;
struct detector;

/* What the engine worked out once for every detector. */
struct detect_txn {
	const struct txn *t;
	uint64_t ts_ns;              /* t->ts_start */
	uint32_t ms;                 /* ts in ms, modulo 2^32: compare with detect_ms_after() */
	const char *principal;       /* NUL-terminated key: the user, or "ip:<src_ip>" */
	bool by_ip;                  /* the user was "-": principal is the client IP */
	struct detect_principal *p;  /* NULL: role not watched, or no memory */
	const char *path, *query;    /* slices of t->target */
	size_t path_len, query_len;
	bool has_query;
};

struct detector_ops {
	const char *name;
	/* Bytes reserved in every principal entry for this detector, zeroed at
	 * creation (0: none). Keep it small: it is paid by every principal. */
	size_t pstate_size;
	/* Returns 0 or -errno; may set det->priv. */
	int (*init)(struct detector *det);
	void (*on_txn)(struct detector *det, const struct detect_txn *x);
	void (*on_tick)(struct detector *det, uint64_t now_ns);                 /* may be NULL */
	void (*on_drops)(struct detector *det, uint64_t ts_ns, const uint64_t *drops, size_t n,
			 const char *const *names);                             /* may be NULL */
	/* Heap held beyond pstate (lazy per-principal buffers, priv). */
	size_t (*mem_bytes)(const struct detector *det);
	/* Releases what a principal's pstate points to (eviction, expiry). May be NULL. */
	void (*pstate_free)(struct detector *det, void *pstate);
	void (*free)(struct detector *det);                                    /* may be NULL */
};

struct detector {
	const struct detector_ops *ops;
	struct detect *d;
	const struct detect_opts *o;  /* the engine's copy */
	void *priv;
	size_t pstate_off;            /* offset of this detector's bytes in a principal */
	size_t mem;                   /* heap bytes this detector holds: keep it current */
};

extern const struct detector_ops detect_rate_ops;
extern const struct detector_ops detect_enum_ops;
extern const struct detector_ops detect_export_ops;
extern const struct detector_ops detect_authfail_ops;
extern const struct detector_ops detect_anomaly_ops;
extern const struct detector_ops detect_hipaa_ops;
extern const struct detector_ops detect_loss_ops;

/* detect_export.c: what makes a call an export (exposed for tests and the
 * lead's resource code). path/query as split by txn_split_target(). */
enum detect_export_kind {
	DETECT_EXPORT_NONE = 0,
	DETECT_EXPORT_FHIR,            /* a path segment "$export" (or "%24export") */
	DETECT_EXPORT_ROUTE,           /* a segment export, exports, bulk-export, export.csv... */
	DETECT_EXPORT_ATTACHMENT,      /* Binary/<id>, $binary-access-read, .../attachment(s) */
	DETECT_EXPORT_LARGE_PAGE,      /* _count (count, limit, _limit, page_size, per_page) >= page_size */
	DETECT_EXPORT_LARGE_RESPONSE,  /* response bytes >= large_response_bytes */
	DETECT_EXPORT_FLAGGED,         /* none of the above, but txn->is_export (resource.c) */
};
enum detect_export_kind detect_export_classify(const struct detect_opts *o, const char *path,
					       size_t path_len, const char *query,
					       size_t query_len, uint64_t resp_bytes);
const char *detect_export_kind_name(enum detect_export_kind k);

/* This detector's pstate bytes in principal p. */
void *detect_pstate(const struct detector *det, struct detect_principal *p);
/* Another principal (auth failures keyed by source IP too); touches the LRU.
 * NULL when out of memory. Valid until the next lookup of a *new* key. */
struct detect_principal *detect_principal_get(struct detector *det, const char *key,
					      uint64_t ts_ns);
/* Lets one alert candidate through de-duplication: true = build and emit it
 * (detect_emit), false = suppressed and counted. Checking first keeps a flood
 * of repeats cheap. */
bool detect_admit(struct detector *det, enum detect_rule r, const char *principal, uint32_t pid,
		  uint64_t ts_ns, int severity);
/* Emits an admitted alert (a->rule is set from r). */
void detect_emit(struct detector *det, enum detect_rule r, struct alert *a);
/* The alert a behavioural detector raises for the call x: evidence is the
 * JSON object built in b (none if building it ran out of memory). */
void detect_raise(struct detector *det, enum detect_rule r, const struct detect_txn *x, const char *principal,
		  int severity, const char *message, const struct jbuf *b, uint64_t count, uint64_t threshold,
		  uint64_t window_s);
/* Scratch buffer for evidence, reset. Valid until the next call. */
struct jbuf *detect_scratch(struct detector *det);
/* Writes "sample_endpoints":["METHOD target"] for the txn (target cut at 256). */
void detect_json_endpoint(struct jbuf *b, const struct detect_txn *x);
void detect_oom(struct detector *det);   /* count an allocation failure */
/* Keyed 64-bit hash (per-run key): never 0, so 0 can mean "empty". */
uint64_t detect_hash(const struct detector *det, const void *data, size_t len);

/* ms clock helpers: t1 - t0 in ms as signed 32 bits (correct for spans < 24 days). */
static inline int32_t detect_ms_diff(uint32_t t1, uint32_t t0)
{
	return (int32_t)(t1 - t0);
}

/* A deque of recent timestamps (ms), oldest first, capped at cap_max entries,
 * grown lazily (a quiet principal holds a few). Lives in a principal's pstate. */
struct detect_tsq {
	uint32_t *ts;
	uint16_t head, n, cap;   /* so cap_max <= DETECT_TSQ_MAX */
};
#define DETECT_TSQ_MAX 65535u

/* Adds now (kept sorted: a late transaction is placed by its time), drops
 * entries older than window_ms before the newest, keeps at most cap_max,
 * and returns how many remain: the count in the window (capped at cap_max).
 * *mem tracks the heap held. On allocation failure returns the count without
 * adding, and sets *oom. */
uint32_t detect_tsq_add(struct detect_tsq *q, uint32_t now, uint32_t window_ms, uint32_t cap_max,
			size_t *mem, bool *oom);
uint32_t detect_tsq_oldest(const struct detect_tsq *q);
uint32_t detect_tsq_newest(const struct detect_tsq *q);
void detect_tsq_free(struct detect_tsq *q, size_t *mem);

#endif
