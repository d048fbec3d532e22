/* alert.h — one alert (rule, principal, numbers, evidence), its JSONL and syslog forms, and
 * de-duplication per (rule, principal) with an "N more suppressed" record when a window ends.
 * Not a sink: writers fill a jbuf or a caller's buffer; alert_fn callbacks deliver.
 */
#ifndef PHIWATCH_ALERT_H
#define PHIWATCH_ALERT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "json.h"

enum alert_severity {
	ALERT_SEV_LOW = 1,
	ALERT_SEV_MEDIUM = 2,
	ALERT_SEV_HIGH = 3,
	ALERT_SEV_CRITICAL = 4,
};

/* Every pointer is borrowed and valid only during the alert_fn call.
 * message: one human sentence with the numbers. It goes to syslog, so it must
 * carry no PHI (no patient id, no URL path or query, no SSN, not even masked):
 * detectors put those in evidence only. Attacker-controlled bytes (principal)
 * may appear raw: every writer escapes them. */
struct alert {
	uint64_t ts_ns;          /* realtime ns: the triggering txn's ts_start */
	int severity;            /* enum alert_severity */
	const char *rule;        /* rule.name from the DESIGN.md table */
	const char *principal;   /* user.id: a user, "ip:10.1.2.3", or "-" */
	uint32_t pid;            /* process.pid of the watched process; 0 agent-wide */
	const char *message;
	const char *evidence;    /* phiwatch.evidence: one JSON object text, NULL for {} */
	/* The numbers again, for syslog; 0 when not applicable. */
	uint64_t count;
	uint64_t threshold;
	uint64_t window_s;
	uint64_t suppressed;     /* > 0: this is the "N more suppressed" record */
};

typedef void (*alert_fn)(void *ctx, const struct alert *a);

/* One JSON object (DESIGN.md "Alert"), no newline. evidence is inserted
 * verbatim: it must be a JSON object written with the json_* writers. */
void alert_to_json(const struct alert *a, struct jbuf *b);

/* The syslog MSG part (no PRI/header, no newline): rule, severity, principal,
 * the numbers and the message, every string through json_escape. Never the
 * evidence: sample endpoints and patient ids stay out of syslog. */
void alert_to_syslog_msg(const struct alert *a, struct jbuf *b);

/* syslog(3) severity (LOG_CRIT..LOG_NOTICE) for an alert severity. */
int alert_syslog_severity(int severity);

/* ---- de-duplication ---- */

struct alert_dedup;

struct alert_dedup_stats {
	uint64_t admitted;       /* alerts let through (each opens a window) */
	uint64_t suppressed;     /* alerts swallowed inside a window */
	uint64_t summaries;      /* "N more suppressed" records emitted */
	uint64_t forced;         /* windows closed early because the table was full */
	uint64_t live;           /* windows open */
	uint64_t mem_bytes;
};

/* window_ns: suppression window; max_windows: bound on open windows (the
 * oldest is closed early, summary included, to make room). summary_fn gets
 * the "N more suppressed" records. seed keys the hash. NULL + errno on error. */
struct alert_dedup *alert_dedup__new(uint64_t window_ns, size_t max_windows, uint64_t seed,
				     alert_fn summary_fn, void *ctx);
/* Closes windows ended at or before now_ns (the latest time seen is kept:
 * time never goes back), then decides for (rule, principal) at ts_ns:
 * true = emit it (a window opens), false = suppressed (counted). rule must be
 * a string that outlives the dedup (the static rule names). On allocation
 * failure the alert is admitted (better a duplicate than a lost alert). */
bool alert_dedup_admit(struct alert_dedup *dd, const char *rule, const char *principal,
		       int severity, uint32_t pid, uint64_t ts_ns);
/* Closes windows ended at or before now_ns, emitting their summaries. */
void alert_dedup_tick(struct alert_dedup *dd, uint64_t now_ns);
/* Closes every window now (shutdown): summaries say the time really elapsed. */
void alert_dedup_flush(struct alert_dedup *dd);
void alert_dedup_stats(const struct alert_dedup *dd, struct alert_dedup_stats *out);
void alert_dedup__free(struct alert_dedup *dd);

#endif
