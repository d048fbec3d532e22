/* fuzz_identity.c — libFuzzer target for user/identity.c: headers from the input, invariants after every extract. */
/*
 * Input: lines ("\n"); each "name:value" is a header. Helpers so the fuzzer
 * reaches the decoders: a line "J:<json>" becomes "Authorization: Bearer
 * <b64url header>.<b64url json>.sig", "P:<json>" the same with '=' padding,
 * "B:<text>" becomes "Authorization: Basic <base64 text>". Every input runs
 * through a context without cache and one with an 8-entry cache that lives
 * across inputs (evictions, hits on old entries): both must agree exactly.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "identity.h"

#define CHECK(c)                                                                    \
	do {                                                                        \
		if (!(c)) {                                                         \
			fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #c); \
			abort();                                                    \
		}                                                                   \
	} while (0)

#define MAX_HDRS 16

static struct identity_ctx *ic_cache, *ic_plain;

static size_t b64(const uint8_t *in, size_t n, char *out, bool url, bool pad)
{
	const char *al = url ? "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
			     : "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t o = 0;
	for (size_t i = 0; i < n; i += 3) {
		size_t k = n - i < 3 ? n - i : 3;
		uint32_t v = (uint32_t)in[i] << 16 | (k > 1 ? (uint32_t)in[i + 1] << 8 : 0) | (k > 2 ? in[i + 2] : 0);
		out[o++] = al[v >> 18 & 63];
		out[o++] = al[v >> 12 & 63];
		if (k > 1)
			out[o++] = al[v >> 6 & 63];
		else if (pad)
			out[o++] = '=';
		if (k > 2)
			out[o++] = al[v & 63];
		else if (pad)
			out[o++] = '=';
	}
	return o;
}

static void init(void)
{
	struct identity_opts o;
	identity_opts_default(&o);
	memcpy(o.secret, "fuzz-secret-fuzz-secret-fuzz-sec", 32);
	o.claims[3] = "email";
	o.nclaims = 4;
	o.apikey_headers[1] = "Api-Key";
	o.napikey = 2;
	o.cache_entries = 8;
	ic_cache = identity__new(&o);
	o.cache_entries = 0;
	ic_plain = identity__new(&o);
	CHECK(ic_cache && ic_plain);
}

static bool is_hex_lower(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static void check_one(const struct identity *id, const struct identity_stats *a, const struct identity_stats *b)
{
	CHECK(memchr(id->principal, '\0', sizeof(id->principal)) != NULL);
	CHECK(memchr(id->scope, '\0', sizeof(id->scope)) != NULL);
	size_t pl = strlen(id->principal);
	CHECK(pl >= 1 && pl < IDENTITY_PRINCIPAL_MAX);
	bool none = strcmp(id->principal, "-") == 0;

	/* exactly one counter class moved, and it says whether there is a principal */
	uint64_t no_principal = (b->none - a->none) + (b->jwt_broken - a->jwt_broken) +
				(b->bearer_opaque - a->bearer_opaque) + (b->basic_broken - a->basic_broken) +
				(b->apikey_broken - a->apikey_broken);
	uint64_t calls = (b->none - a->none) + (b->bearer - a->bearer) + (b->basic - a->basic) +
			 (b->apikey - a->apikey);
	CHECK(calls == 1);
	CHECK(no_principal <= 1);
	CHECK(none == (no_principal == 1));

	switch (id->scheme) {
	case AUTH_NONE:
		CHECK(none);
		CHECK(b->none == a->none + 1);
		break;
	case AUTH_BEARER:
		CHECK(b->bearer == a->bearer + 1);
		break;
	case AUTH_BASIC:
		CHECK(b->basic == a->basic + 1);
		break;
	case AUTH_APIKEY:
		CHECK(b->apikey == a->apikey + 1);
		if (!none) {
			CHECK(pl == 20 && memcmp(id->principal, "key:", 4) == 0);
			for (size_t i = 4; i < 20; i++)
				CHECK(is_hex_lower(id->principal[i]));
		}
		break;
	default:
		CHECK(0);
	}
	CHECK(!(id->jwt && id->jwt_broken));
	if (id->jwt || id->jwt_broken)
		CHECK(id->scheme == AUTH_BEARER);
	if (id->jwt)
		CHECK(!none);
	if (id->jwt_broken)
		CHECK(none);
	if (!id->jwt)
		CHECK(!id->has_iat && !id->has_exp && id->scope[0] == '\0');
	if (!id->has_iat)
		CHECK(id->iat == 0);
	if (!id->has_exp)
		CHECK(id->exp == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!ic_cache)
		init();
	if (size > 65536)
		return 0;

	/* header bytes live in one exact-size heap block so ASan sees overreads */
	size_t cap = size * 2 + 64 * MAX_HDRS + 1;
	char *arena = malloc(cap);
	CHECK(arena);
	size_t used = 0;
	struct http1_header h[MAX_HDRS];
	size_t n = 0;
	size_t off[MAX_HDRS][4];	/* name off/len, value off/len: pointers set after the arena is final */

	size_t i = 0;
	while (i < size && n < MAX_HDRS) {
		const uint8_t *e = memchr(data + i, '\n', size - i);
		size_t ll = e ? (size_t)(e - (data + i)) : size - i;
		const uint8_t *l = data + i;
		i += ll + 1;
		if (ll >= 2 && l[1] == ':' && (l[0] == 'J' || l[0] == 'P' || l[0] == 'B')) {
			static const char hdr[] = "{\"alg\":\"RS256\"}";
			off[n][0] = used;
			memcpy(arena + used, "Authorization", 13);
			off[n][1] = 13;
			used += 13;
			off[n][2] = used;
			if (l[0] == 'B') {
				memcpy(arena + used, "Basic ", 6);
				used += 6;
				used += b64(l + 2, ll - 2, arena + used, false, true);
			} else {
				memcpy(arena + used, "Bearer ", 7);
				used += 7;
				used += b64((const uint8_t *)hdr, sizeof(hdr) - 1, arena + used, true, false);
				arena[used++] = '.';
				used += b64(l + 2, ll - 2, arena + used, true, l[0] == 'P');
				memcpy(arena + used, ".c2ln", 5);
				used += 5;
			}
			off[n][3] = used - off[n][2];
			n++;
			continue;
		}
		const uint8_t *colon = memchr(l, ':', ll);
		if (!colon)
			continue;
		size_t nl = (size_t)(colon - l);
		off[n][0] = used;
		off[n][1] = nl;
		memcpy(arena + used, l, nl);
		used += nl;
		off[n][2] = used;
		off[n][3] = ll - nl - 1;
		memcpy(arena + used, colon + 1, ll - nl - 1);
		used += ll - nl - 1;
		n++;
	}
	CHECK(used <= cap);
	char *hb = malloc(used ? used : 1);
	CHECK(hb);
	memcpy(hb, arena, used);
	free(arena);
	for (size_t k = 0; k < n; k++) {
		h[k].name = (struct slice){ off[k][1] ? hb + off[k][0] : NULL, off[k][1] };
		h[k].value = (struct slice){ off[k][3] ? hb + off[k][2] : NULL, off[k][3] };
	}

	struct identity_stats a, b;
	struct identity x, y;
	memset(&x, 0x5a, sizeof(x));
	memset(&y, 0xa5, sizeof(y));

	identity__stats(ic_plain, &a);
	identity__extract(ic_plain, h, n, &x);
	identity__stats(ic_plain, &b);
	check_one(&x, &a, &b);

	identity__stats(ic_cache, &a);
	identity__extract(ic_cache, h, n, &y);
	identity__stats(ic_cache, &b);
	check_one(&y, &a, &b);
	CHECK(b.cache_entries <= 8);

	/* cached and uncached agree */
	CHECK(x.scheme == y.scheme && x.jwt == y.jwt && x.jwt_broken == y.jwt_broken);
	CHECK(strcmp(x.principal, y.principal) == 0 && strcmp(x.scope, y.scope) == 0);
	CHECK(x.has_iat == y.has_iat && x.has_exp == y.has_exp && x.iat == y.iat && x.exp == y.exp);

	/* and a second call (a hit now) agrees too */
	identity__extract(ic_cache, h, n, &y);
	CHECK(strcmp(x.principal, y.principal) == 0 && strcmp(x.scope, y.scope) == 0 && x.jwt == y.jwt);

	for (size_t k = 0; k < n; k++)
		(void)identity_header_is_secret(h[k].name, NULL);
	free(hb);
	return 0;
}
