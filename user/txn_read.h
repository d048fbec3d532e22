/* txn_read.h — one transaction JSON line (the schema `run --events` writes) back into a struct txn.
 * For `replay` of transactions JSONL: detectors run on the lines' own timestamps.
 */
#ifndef PHIWATCH_TXN_READ_H
#define PHIWATCH_TXN_READ_H

#include <stddef.h>

#include "resource.h"
#include "txn.h"

/* Storage behind the borrowed pointers of a struct txn. */
struct txn_owned {
	struct txn t;
	char comm[64];
	char exe[256];
	char user[128];
	char auth[16];
	char target[8192];
	char rtype[RESOURCE_TYPE_MAX + 1];
	char ids[TXN_MAX_IDS][RESOURCE_ID_MAX + 1];
};

/* Parses line[0..len). Resources come from phiwatch.resource when present,
 * else from url.path/url.query through rc (may be NULL). Returns 0, or
 * -EINVAL with err saying which field is wrong. */
int txn_read_json(const char *line, size_t len, const struct resource_ctx *rc, struct txn_owned *out, char *err,
		  size_t errlen);

/* "2026-11-28T10:21:41.123456Z" -> ns since the epoch; -1 if malformed. */
long long txn_parse_rfc3339(const char *s);

#endif
