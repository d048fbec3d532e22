/* txn.h — one HTTP call (request + response) and its output forms: JSONL (ECS) and a terminal line.
 * No I/O: writers fill a jbuf.
 */
#ifndef PHIWATCH_TXN_H
#define PHIWATCH_TXN_H

#include <stdbool.h>
#include <stdint.h>

#include "json.h"

#define TXN_METHOD_MAX 16
#define TXN_IP_MAX 46     /* INET6_ADDRSTRLEN */
#define TXN_MAX_IDS 16    /* patient ids kept per call */

struct txn {
	uint64_t ts_start;        /* realtime ns of the first request byte */
	uint64_t ts_end;          /* realtime ns of the last response byte */
	uint64_t sequence;
	uint32_t pid;
	const char *comm;         /* borrowed, NUL-terminated */
	const char *exe;          /* borrowed, "" when unknown */
	char src_ip[TXN_IP_MAX];  /* client side of the socket */
	uint16_t src_port;
	char dst_ip[TXN_IP_MAX];  /* server side */
	uint16_t dst_port;
	bool tls;
	int minor_version;
	char method[TXN_METHOD_MAX];
	const char *target;       /* request-target as sent, borrowed */
	size_t target_len;
	uint64_t req_bytes;
	uint64_t resp_bytes;
	int status;               /* 0: no response was seen */
	int role;                 /* enum pw_role */
	bool truncated;
	/* identity (identity.c): set by conn.c from the request headers */
	const char *user;         /* principal, "-" when none */
	const char *auth;         /* "bearer" | "basic" | "apikey" | "none" */
	bool jwt;                 /* bearer token was a JWT */
	bool jwt_broken;          /* bearer token present but undecodable */
	bool jwt_has_iat, jwt_has_exp;
	int64_t jwt_iat, jwt_exp; /* seconds since the epoch */
	const char *jwt_scope;    /* "" when none */
	/* resource (resource.c): which patient */
	const char *resource_type;                 /* NULL when none, e.g. "Patient" */
	const char *resource_ids[TXN_MAX_IDS];     /* patient ids touched */
	size_t n_resource_ids;
	bool is_export;                            /* FHIR $export, an export route, _count >= 1000 */
	/* captured plaintext for forensics (conn_table__keep_raw), NULL otherwise:
	 * the head as sent and the body's first bytes (de-chunked) */
	const char *req_raw, *resp_raw;
	size_t req_raw_len, resp_raw_len;
	/* response body findings (ssn.c) */
	uint32_t ssn_count;       /* SSN-like values in the captured response body */
	uint64_t ssn_first_offset;/* body offset of the first one */
	char ssn_masked[16];      /* e.g. "***-**-6789": never the value */
};

/* Splits a request-target into path and query (no '?'); absolute-form
 * ("http://host/p?q") yields "/p". Slices borrow target. */
void txn_split_target(const char *target, size_t len, const char **path, size_t *path_len,
		      const char **query, size_t *query_len, bool *has_query);

/* One JSON object, no newline. */
void txn_to_json(const struct txn *t, struct jbuf *b);
/* A readable one-line view for terminals, no newline. */
void txn_to_line(const struct txn *t, struct jbuf *b);

#endif
