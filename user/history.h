/* history.h — a bounded in-memory flight recorder of recent transactions with their captured request and
 * response bytes (secrets redacted), indexed by principal, client address and process, for forensic dumps.
 * Not a store: oldest entries are evicted first to keep the memory accounted within a fixed budget. No I/O.
 *
 * Memory: one ring of (budget - budget/8) bytes holds every entry (header, JSON line, redacted bytes, strings)
 * contiguously; the principal/address/process index (keys and buckets) may use at most budget/8. Adding evicts
 * the oldest entries until both fit, so history__stats().mem_bytes <= budget always (the ring is counted whole,
 * touched or not). Not thread-safe: one thread owns a struct history.
 */
#ifndef PHIWATCH_HISTORY_H
#define PHIWATCH_HISTORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "txn.h"

struct identity_opts;

#define HISTORY_DEFAULT_BUDGET (64u << 20)
#define HISTORY_MIN_BUDGET (64u << 10)
#define HISTORY_MAX_BUDGET (1ull << 40)
#define HISTORY_REDACTED "[redacted]"

/* Captured plaintext bytes of one call (heads and bodies as the capture copied them, already cut to a few KiB).
 * Borrowed for the duration of history__add; NULL/0 when none was seen. */
struct history_bytes {
	const char *req;
	size_t req_len;
	const char *resp;
	size_t resp_len;
};

/* One remembered call. Every pointer points into the history's ring: valid until the next history__add or
 * history__free. Strings are NUL-terminated raw bytes (escape on output). */
struct history_entry {
	uint64_t id;             /* insertion order, from 1: oldest first = smallest id */
	uint64_t ts_start;       /* realtime ns of the first request byte */
	uint64_t ts_end;         /* realtime ns of the last response byte */
	uint64_t sequence;       /* event.sequence */
	uint64_t req_bytes;      /* bytes on the wire (txn->req_bytes) */
	uint64_t resp_bytes;
	uint64_t req_captured;   /* bytes the capture copied (history_bytes.req_len, before redaction): the calls'
				  * bytes beyond these were never seen */
	uint64_t resp_captured;
	uint32_t pid;
	uint16_t src_port;       /* client side */
	uint16_t dst_port;       /* server side */
	int role;                /* enum pw_role */
	int status;              /* 0: no response seen */
	bool tls;
	bool truncated;
	const char *user;        /* txn->user as given ("-" when none) */
	const char *comm;        /* "" when unknown */
	const char *exe;         /* "" when unknown */
	const char *src_ip;      /* "" when unknown */
	const char *dst_ip;
	const char *json;        /* the transaction's JSONL line (no newline), as passed to history__add */
	size_t json_len;
	const char *req;         /* redacted request bytes */
	size_t req_len;
	const char *resp;        /* redacted response bytes */
	size_t resp_len;
};

/* Which entries history__select delivers. principal and pid are alternatives: with both set an entry matching
 * either is delivered (a principal's and a process's history together); with neither, every entry. principal is
 * an alert's user.id: "ip:ADDR" selects calls from client address ADDR (any user), "user:ip:..." the user named
 * "ip:...", anything else the user of that name. Time: since_ns <= ts_start < until_ns (0: unbounded). */
struct history_filter {
	const char *principal;   /* NULL: any */
	uint32_t pid;            /* 0: any */
	uint64_t since_ns;
	uint64_t until_ns;
};

struct history_stats {
	uint64_t entries;        /* live entries */
	uint64_t bytes;          /* ring bytes held by live entries (incl. alignment and wrap padding) */
	uint64_t index_bytes;    /* principal/address/process keys and bucket arrays */
	uint64_t mem_bytes;      /* everything accounted: ring capacity + index + the struct; <= budget */
	uint64_t budget;
	uint64_t added;
	uint64_t evicted;        /* entries evicted, oldest first, to make room */
	uint64_t rejected;       /* entries too large for the ring, or index allocation failures */
	uint64_t redacted;       /* header values replaced by "[redacted]" */
	uint64_t keys;           /* live principal + address + process keys */
};

/* budget_bytes: HISTORY_MIN_BUDGET..HISTORY_MAX_BUDGET (0: HISTORY_DEFAULT_BUDGET). The ring is allocated
 * here (pages are touched as it fills). NULL with errno EINVAL or ENOMEM. */
struct history *history__new(size_t budget_bytes);
/* NULL ok. Wipes the ring (captured bytes may hold PHI) before freeing it. */
void history__free(struct history *h);

/* API-key header names (any case) redacted besides Authorization, Proxy-Authorization, Cookie, Set-Cookie and
 * X-API-Key, which always are (identity_header_is_secret). names are copied. 0, -EINVAL (n > 8, NULL/empty/
 * over-long name) or -ENOMEM. Applies to entries added afterwards. */
int history__set_secret_headers(struct history *h, const char *const *names, size_t n);

/* Remembers t (its JSON line json[0..json_len), its strings and b's bytes are copied; in the copies every value
 * of a secret header becomes "[redacted]", in every head found in the bytes: the first, and each one that
 * follows a blank line and starts with "HTTP/" (interim 1xx responses); a secret header's obs-fold continuation
 * lines are dropped; a line cut by the capture after a secret header's colon is redacted to its end. b may be NULL.
 * Evicts oldest entries as needed. 0, -EFBIG (the entry alone exceeds the ring: counted in rejected), -ENOMEM
 * (index allocation: counted in rejected, nothing kept). */
int history__add(struct history *h, const struct txn *t, const char *json_line, size_t json_len,
		 const struct history_bytes *b);

/* Called oldest first; return non-zero to stop (history__select then returns that value). e is borrowed for the
 * call. The callback must not add to or free h. */
typedef int (*history_fn)(void *ctx, const struct history_entry *e);

/* Delivers the entries matching f (NULL: all) oldest first. Returns 0, or the callback's non-zero value. */
int history__select(const struct history *h, const struct history_filter *f, history_fn cb, void *ctx);

void history__stats(const struct history *h, struct history_stats *out);

/* Redacts one copy of captured bytes the way history__add does (exposed for tests and other writers): writes
 * the redacted form of s[0..n) to out (NULL: only measures) and returns its length; *nred (may be NULL) gets the
 * number of values replaced. o: extra API-key header names (NULL: the fixed set only). out must have room for
 * the measured length. */
size_t history_redact(const char *s, size_t n, char *out, const struct identity_opts *o, unsigned *nred);

#endif
