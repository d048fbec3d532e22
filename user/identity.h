/* identity.h — who called: principal, auth scheme and JWT claims from one request's headers. */
/* Not an authenticator: signatures are never checked (no keys) and no credential is ever stored raw. */
#ifndef PHIWATCH_IDENTITY_H
#define PHIWATCH_IDENTITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http1.h"
#include "slice.h"

enum auth_scheme { AUTH_NONE = 0, AUTH_BEARER, AUTH_BASIC, AUTH_APIKEY };

/* "none" "bearer" "basic" "apikey"; "none" for an out-of-range value. Static string. */
const char *auth_scheme_name(enum auth_scheme s);

#define IDENTITY_PRINCIPAL_MAX 128	/* bytes incl. the NUL */
#define IDENTITY_SCOPE_MAX 256		/* bytes incl. the NUL */
#define IDENTITY_TOKEN_MAX 16384	/* longer bearer tokens are broken, never decoded */
#define IDENTITY_MAX_CLAIMS 8
#define IDENTITY_MAX_APIKEY_HEADERS 8
#define IDENTITY_CACHE_MAX (1u << 20)	/* most cache_entries accepted */

struct identity_opts {
	const char *claims[IDENTITY_MAX_CLAIMS];	/* principal claims, first present wins */
	size_t nclaims;					/* 1..8 */
	const char *apikey_headers[IDENTITY_MAX_APIKEY_HEADERS];	/* header names, any case */
	size_t napikey;					/* 0..8 (0: no API-key headers) */
	unsigned char secret[32];			/* host secret for the API-key HMAC */
	size_t cache_entries;				/* decoded-token LRU; 0 disables the cache */
};

/* claims "sub" "client_id" "azp", API key header "X-API-Key", cache 16384 (preallocated, ~6 MiB), secret all zero. */
void identity_opts_default(struct identity_opts *o);

struct identity {
	enum auth_scheme scheme;
	char principal[IDENTITY_PRINCIPAL_MAX];	/* "-" when none or unusable; raw bytes (escape on output),
						 * cut at the max on a UTF-8 character boundary */
	bool jwt;			/* bearer token decoded as a JWT (principal found) */
	bool jwt_broken;		/* bearer token shaped like a JWT (has a '.') or over
					 * IDENTITY_TOKEN_MAX, but not decodable or without a claim */
	bool has_iat, has_exp;
	int64_t iat, exp;		/* seconds since the epoch (fractions truncated) */
	char scope[IDENTITY_SCOPE_MAX];	/* "scope" claim, else "scp"; a string or an array joined with
					 * single spaces; "" when none; cut like principal */
};

struct identity_ctx;	/* opaque: options, HMAC key, token cache. Not thread-safe: one per thread. */

/*
 * Copies everything it needs from o (claim and header names included; o may
 * be freed afterwards). Returns NULL and sets errno: EINVAL (nclaims 0 or > 8,
 * napikey > 8, a NULL/empty/over-long name, cache_entries > IDENTITY_CACHE_MAX),
 * ENOMEM, EIO (libcrypto HMAC unavailable).
 */
struct identity_ctx *identity__new(const struct identity_opts *o);
/* NULL ok. Wipes the HMAC key and the cache. */
void identity__free(struct identity_ctx *ic);

/*
 * Who made the request with headers hdrs[0..n) (names compared case-insensitively).
 * Never fails: out is always fully written; unusable credentials give
 * principal "-" and are counted in the stats.
 *  - The first Authorization header decides when its scheme (any case) is
 *    Bearer or Basic; then API-key headers are not looked at.
 *  - Bearer: a token without '.' is opaque (principal "-", not broken). Else it
 *    must be a compact JWS (header.payload.signature, strict base64url, padding
 *    optional, the signature may be empty) whose payload is a JSON object with
 *    one of the configured claims as a non-empty string or a number; else
 *    jwt_broken. Results (broken ones too) are cached by a keyed 128-bit hash
 *    of the token plus its length: the token itself is never stored.
 *  - Basic: the user name (before the first ':'); the password is never
 *    decoded past the colon's base64 group and that group is wiped.
 *  - API key (first configured header present with a non-empty value):
 *    "key:" + the first 16 hex digits of HMAC-SHA256(secret, key).
 * A principal that is empty or exactly "-" is treated as absent (so "-" always
 * means "nobody"); a Basic user containing NUL is broken; a JWT string claim
 * holding an escaped \u0000 ends there (cJSON strings are C strings).
 */
void identity__extract(struct identity_ctx *ic, const struct http1_header *hdrs, size_t n, struct identity *out);

struct identity_stats {
	uint64_t bearer;		/* calls with Authorization: Bearer */
	uint64_t jwt_decoded;		/* JWT-shaped tokens decoded (cache misses), whatever the outcome */
	uint64_t jwt_cache_hits;	/* JWT-shaped tokens answered from the cache */
	uint64_t jwt_broken;		/* calls whose bearer token was a broken JWT (see identity.jwt_broken) */
	uint64_t basic;			/* calls with Authorization: Basic */
	uint64_t basic_broken;		/* ... whose credentials were not base64, had no ':' or an empty user */
	uint64_t apikey;		/* calls identified by an API-key header */
	uint64_t none;			/* calls with no Bearer/Basic Authorization and no API key */
	uint64_t cache_entries;		/* entries in use now */
	uint64_t cache_bytes;		/* memory held by the cache */
	/* additions */
	uint64_t bearer_opaque;		/* calls with an opaque (no '.') bearer token */
	uint64_t apikey_broken;		/* keys over IDENTITY_TOKEN_MAX or an HMAC failure: principal "-" */
	uint64_t apikey_cache_hits;	/* API keys whose HMAC came from the cache */
};

void identity__stats(const struct identity_ctx *ic, struct identity_stats *out);

/*
 * Whether a header carries credentials and must be redacted wherever headers
 * are written: Authorization, Proxy-Authorization, Cookie, Set-Cookie,
 * X-API-Key (always, even when o configures other names) and the API-key
 * headers of o (o may be NULL). Names compared in any case.
 */
bool identity_header_is_secret(struct slice name, const struct identity_opts *o);

#endif
