/* inventory.h — the API surface actually seen: transactions grouped by service (process) and endpoint template.
 * Not a router or an OpenAPI generator: paths are folded by fixed rules, nothing is guessed from bodies.
 *
 * A group is (role, process.name, process.executable, endpoint template). The template is url.path with each
 * segment that names one object folded into "{id}":
 *   - all digits ("123"),
 *   - a UUID (8-4-4-4-12 hex digits, any case),
 *   - 16 or more hex digits ("9f86d081884c7d65..."),
 *   - the segment right after a FHIR resource type (".../Patient/abc-1", ".../Observation/x.9"), when it is a FHIR
 *     id ([A-Za-z0-9.-]{1,64}), and the version after "_history".
 * The query is dropped. Templates longer than INVENTORY_TEMPLATE_MAX bytes or INVENTORY_MAX_SEGMENTS segments end
 * in "/...". Per group: methods, calls, auth schemes, TLS (yes / no / mixed), FHIR resource types addressed,
 * distinct principals (user.id other than "-"), anonymous calls, status classes, server ports, first and last seen.
 * By default only server-side transactions count (the APIs this host serves); the caller says so in its header.
 */
#ifndef PHIWATCH_INVENTORY_H
#define PHIWATCH_INVENTORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "json.h"
#include "txn.h"

#define INVENTORY_TEMPLATE_MAX 512
#define INVENTORY_MAX_SEGMENTS 64
#define INVENTORY_MAX_GROUPS 100000     /* default cap; calls past it fold into the service's "{other}" endpoint */
#define INVENTORY_MAX_PRINCIPALS (1u << 22) /* distinct principals remembered over all groups; then counts are ">=" */

enum inventory_role_mask {
	INVENTORY_ROLE_SERVER = 1,
	INVENTORY_ROLE_CLIENT = 2,
	INVENTORY_ROLE_UNKNOWN = 4,     /* sockets that predate the agent */
	INVENTORY_ROLE_ALL = 7,
};

struct inventory_opts {
	unsigned roles;                 /* enum inventory_role_mask; 0: INVENTORY_ROLE_SERVER */
	size_t max_groups;              /* 0: INVENTORY_MAX_GROUPS */
};

struct inventory_stats {
	uint64_t lines;                 /* transaction lines offered */
	uint64_t bad_lines;             /* not a transaction line (counted, skipped) */
	uint64_t counted;               /* transactions in the inventory */
	uint64_t skipped_role[3];       /* not counted because of their role: [server, client, unknown] */
	uint64_t groups;
	uint64_t services;              /* distinct (role, name, executable) */
	uint64_t overflowed;            /* calls folded into "{other}" because of max_groups */
	uint64_t dropped;               /* calls not counted at all: out of memory or past twice max_groups */
	uint64_t first_ns, last_ns;     /* over the counted transactions (0 when none) */
	char first_bad[160];            /* why the first bad line was refused */
};

struct inventory;

/* NULL with errno set (ENOMEM). */
struct inventory *inventory__new(const struct inventory_opts *o);
void inventory__free(struct inventory *inv);   /* NULL ok */

/* Counts one transaction (role filter applied). 0, or -ENOMEM (the call is counted in stats.dropped). */
int inventory__add_txn(struct inventory *inv, const struct txn *t);
/* Counts one transaction JSON line (the schema `run --events` and the audit trail hold). 0, -EINVAL for a line
 * that is not one (counted in stats.bad_lines), -ENOMEM. */
int inventory__add_json(struct inventory *inv, const char *line, size_t len);

void inventory__stats(const struct inventory *inv, struct inventory_stats *out);

/* One JSON object per group, one per line, sorted by role, service, executable and endpoint:
 * {"role","service":{"name","executable"},"endpoint","methods":[],"calls","auth":[],"tls":"yes|no|mixed",
 *  "phi_resource_types":[],"principals","principals_capped"(only when true),"anonymous_calls",
 *  "status":{"2xx":n,...},"ports":[],"first_seen","last_seen"} */
void inventory__render_jsonl(const struct inventory *inv, struct jbuf *out);
/* A readable table (the same groups, same order) under a header naming source, the roles counted and the time
 * range. Untrusted strings are escaped (control bytes as \uXXXX); long cells are cut with "...". */
void inventory__render_table(const struct inventory *inv, const char *source, struct jbuf *out);

/* The endpoint template of path[0..len) (see above) into out[0..cap), NUL-terminated. Returns its length. */
size_t inventory_fold_path(const char *path, size_t len, char *out, size_t cap);

/* Reads every transaction of the audit trail in dir (audit_query, enc_key may be NULL) into inv.
 * Returns what audit_query returns (0, 1 when some segment failed its checks, -ENOKEY, -errno); r is filled. */
struct audit_query_result;
int inventory_from_audit(struct inventory *inv, const char *dir, const uint8_t *enc_key,
			 struct audit_query_result *r);

#endif
