/* identity.c — who called: Bearer JWT claims (cached), Basic user, HMAC'd API key (see identity.h). */
/* Not an authenticator: no signature is verified and no raw credential is kept past the call. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>

#include <cjson/cJSON.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "identity.h"

#define NAME_MAX_LEN 64		/* claim and header names, bytes */
#define DECODE_CAP (IDENTITY_TOKEN_MAX / 4 * 3 + 4)
#define NIL UINT32_MAX

static const char *const default_claims[] = { "sub", "client_id", "azp" };
static const char *const always_secret[] = { "authorization", "proxy-authorization", "cookie", "set-cookie",
					     "x-api-key" };

/* ---- token cache: bounded LRU keyed by a keyed 128-bit hash (never the token) ---- */

enum { CV_JWT = 1, CV_BROKEN = 2, CV_IAT = 4, CV_EXP = 8 };

struct cache_val {
	int64_t iat, exp;
	uint16_t plen, slen;	/* strlen of principal / scope */
	uint8_t flags;		/* CV_* */
	char principal[IDENTITY_PRINCIPAL_MAX];
	char scope[IDENTITY_SCOPE_MAX];
};

/* Hot part kept apart from the values: a lookup touches 32 bytes per probe. */
struct cache_key {
	uint64_t h, chk;	/* two independently seeded hashes of the token */
	uint32_t len;		/* token length | kind << 31 */
	uint32_t hnext;		/* bucket chain */
	uint32_t prev, next;	/* LRU list, head = most recent */
};

struct cache {
	struct cache_key *keys;
	struct cache_val *vals;
	uint32_t *buckets;
	uint32_t mask, cap, used, head, tail;
};

enum { KIND_JWT = 0, KIND_APIKEY = 1 };

struct identity_ctx {
	char claims[IDENTITY_MAX_CLAIMS][NAME_MAX_LEN];
	size_t nclaims;
	char apikey[IDENTITY_MAX_APIKEY_HEADERS][NAME_MAX_LEN];
	size_t apikey_len[IDENTITY_MAX_APIKEY_HEADERS];
	size_t napikey;
	EVP_MAC *mac;
	EVP_MAC_CTX *hmac;	/* keyed with the host secret once; re-initialised per use */
	uint64_t seed[2][2];	/* [kind][h, chk], derived from the secret */
	struct cache cache;
	struct identity_stats st;
	unsigned char buf[DECODE_CAP + 1];	/* base64url output for the JWT decoder */
};

/*
 * 64-bit keyed hash after wyhash (Wang Yi, public domain): ~0.1 cycle/byte, so
 * a cache hit on a 1 KiB token costs far less than decoding it. Not a MAC: a
 * crafted collision could only make a token report another cached token's
 * claims, and whoever can craft tokens can already write any claims into an
 * unverified JWT. Two seeds derived from the host secret give 128 bits.
 */
static const uint64_t wyp[4] = { 0xa0761d6478bd642full, 0xe7037ed1a0b428dbull, 0x8ebc6af09c88c6e3ull,
				  0x589965cc75374cc3ull };

static inline uint64_t wy_mix(uint64_t a, uint64_t b)
{
	__uint128_t r = (__uint128_t)a * b;
	return (uint64_t)r ^ (uint64_t)(r >> 64);
}

static inline uint64_t rd8(const unsigned char *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

static inline uint64_t rd4(const unsigned char *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}

static uint64_t hash64(const void *key, size_t len, uint64_t seed)
{
	const unsigned char *p = key;
	uint64_t a, b;

	seed ^= wy_mix(seed ^ wyp[0], wyp[1]);
	if (len <= 16) {
		if (len >= 4) {
			a = (rd4(p) << 32) | rd4(p + ((len >> 3) << 2));
			b = (rd4(p + len - 4) << 32) | rd4(p + len - 4 - ((len >> 3) << 2));
		} else if (len > 0) {
			a = ((uint64_t)p[0] << 16) | ((uint64_t)p[len >> 1] << 8) | p[len - 1];
			b = 0;
		} else {
			a = b = 0;
		}
	} else {
		size_t i = len;
		if (i > 48) {
			uint64_t s1 = seed, s2 = seed;
			do {
				seed = wy_mix(rd8(p) ^ wyp[1], rd8(p + 8) ^ seed);
				s1 = wy_mix(rd8(p + 16) ^ wyp[2], rd8(p + 24) ^ s1);
				s2 = wy_mix(rd8(p + 32) ^ wyp[3], rd8(p + 40) ^ s2);
				p += 48;
				i -= 48;
			} while (i > 48);
			seed ^= s1 ^ s2;
		}
		while (i > 16) {
			seed = wy_mix(rd8(p) ^ wyp[1], rd8(p + 8) ^ seed);
			i -= 16;
			p += 16;
		}
		/* the last 16 bytes, overlapping what was consumed: len > 16 */
		a = rd8(p + i - 16);
		b = rd8(p + i - 8);
	}
	a ^= wyp[1];
	b ^= seed;
	__uint128_t r = (__uint128_t)a * b;
	a = (uint64_t)r;
	b = (uint64_t)(r >> 64);
	return wy_mix(a ^ wyp[0] ^ len, b ^ wyp[1]);
}

static int cache_init(struct cache *c, size_t entries)
{
	memset(c, 0, sizeof(*c));
	if (!entries)
		return 0;
	uint32_t nb = 1;
	while (nb < entries)
		nb <<= 1;
	c->keys = calloc(entries, sizeof(*c->keys));
	c->vals = calloc(entries, sizeof(*c->vals));
	c->buckets = malloc(nb * sizeof(*c->buckets));
	if (!c->keys || !c->vals || !c->buckets) {
		free(c->keys);
		free(c->vals);
		free(c->buckets);
		memset(c, 0, sizeof(*c));
		return -ENOMEM;
	}
	memset(c->buckets, 0xff, nb * sizeof(*c->buckets));
	c->mask = nb - 1;
	c->cap = (uint32_t)entries;
	c->head = c->tail = NIL;
	return 0;
}

static void cache_fini(struct cache *c)
{
	if (c->vals)
		OPENSSL_cleanse(c->vals, (size_t)c->cap * sizeof(*c->vals));
	free(c->keys);
	free(c->vals);
	free(c->buckets);
	memset(c, 0, sizeof(*c));
}

static size_t cache_bytes(const struct cache *c)
{
	if (!c->cap)
		return 0;
	return (size_t)c->cap * (sizeof(struct cache_key) + sizeof(struct cache_val)) +
	       ((size_t)c->mask + 1) * sizeof(uint32_t);
}

static void lru_unlink(struct cache *c, uint32_t i)
{
	struct cache_key *k = &c->keys[i];
	if (k->prev != NIL)
		c->keys[k->prev].next = k->next;
	else
		c->head = k->next;
	if (k->next != NIL)
		c->keys[k->next].prev = k->prev;
	else
		c->tail = k->prev;
}

static void lru_push_front(struct cache *c, uint32_t i)
{
	struct cache_key *k = &c->keys[i];
	k->prev = NIL;
	k->next = c->head;
	if (c->head != NIL)
		c->keys[c->head].prev = i;
	c->head = i;
	if (c->tail == NIL)
		c->tail = i;
}

/* The entry for (h, chk, len) made most recent, or NIL. */
static uint32_t cache_get(struct cache *c, uint64_t h, uint64_t chk, uint32_t len)
{
	for (uint32_t i = c->buckets[h & c->mask]; i != NIL; i = c->keys[i].hnext) {
		const struct cache_key *k = &c->keys[i];
		if (k->h == h && k->chk == chk && k->len == len) {
			if (c->head != i) {
				lru_unlink(c, i);
				lru_push_front(c, i);
			}
			return i;
		}
	}
	return NIL;
}

/* A slot for a new key (the least recent one evicted when full), linked and most recent. */
static uint32_t cache_put(struct cache *c, uint64_t h, uint64_t chk, uint32_t len)
{
	uint32_t i;
	if (c->used < c->cap) {
		i = c->used++;
	} else {
		i = c->tail;
		lru_unlink(c, i);
		uint32_t *pp = &c->buckets[c->keys[i].h & c->mask];
		while (*pp != i)
			pp = &c->keys[*pp].hnext;
		*pp = c->keys[i].hnext;
	}
	struct cache_key *k = &c->keys[i];
	k->h = h;
	k->chk = chk;
	k->len = len;
	k->hnext = c->buckets[h & c->mask];
	c->buckets[h & c->mask] = i;
	lru_push_front(c, i);
	return i;
}

/* ---- base64 ---- */

/*
 * Strict decoders written here on purpose: OpenSSL's EVP_DecodeBlock knows
 * only the standard alphabet ('+' '/'), skips whitespace and needs padding,
 * while JWT parts are base64url (RFC 4648 §5, '-' '_') without padding.
 */
enum b64_alpha { B64_URL, B64_STD };

static inline int b64_val(unsigned char c, enum b64_alpha a)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (a == B64_URL)
		return c == '-' ? 62 : c == '_' ? 63 : -1;
	return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/*
 * Validates src[0..n): alphabet a, '=' padding optional but, when present,
 * exactly to a multiple of 4; no lone last character; unused bits of the last
 * character zero (one canonical encoding per value). Returns the decoded
 * length and sets *nchars (characters without padding), or -1.
 */
static ssize_t b64_check(const char *src, size_t n, enum b64_alpha a, size_t *nchars)
{
	size_t pad = 0;
	while (pad < n && pad < 3 && src[n - 1 - pad] == '=')
		pad++;
	size_t m = n - pad, rem = m % 4;
	if (rem == 1)
		return -1;
	if (pad && (n % 4 || pad != 4 - rem))
		return -1;
	for (size_t i = 0; i < m; i++)
		if (b64_val((unsigned char)src[i], a) < 0)
			return -1;
	if (rem == 2 && (b64_val((unsigned char)src[m - 1], a) & 0x0f))
		return -1;
	if (rem == 3 && (b64_val((unsigned char)src[m - 1], a) & 0x03))
		return -1;
	*nchars = m;
	return (ssize_t)(m / 4 * 3 + (rem ? rem - 1 : 0));
}

/* Decodes the group of k (2..4) checked characters at s into out; returns the bytes (k - 1). */
static inline size_t b64_group(const char *s, size_t k, enum b64_alpha a, unsigned char out[3])
{
	uint32_t v = 0;
	for (size_t j = 0; j < 4; j++)
		v = v << 6 | (j < k ? (uint32_t)b64_val((unsigned char)s[j], a) : 0);
	out[0] = (unsigned char)(v >> 16);
	out[1] = (unsigned char)(v >> 8);
	out[2] = (unsigned char)v;
	return k - 1;
}

/* Strict decode of src[0..n) into dst (room for n / 4 * 3 + 3). Returns the length or -1. */
static ssize_t b64_decode(const char *src, size_t n, enum b64_alpha a, unsigned char *dst)
{
	size_t m;
	ssize_t total = b64_check(src, n, a, &m);
	if (total < 0)
		return -1;
	size_t o = 0;
	for (size_t i = 0; i < m; i += 4) {
		size_t k = m - i < 4 ? m - i : 4;
		o += b64_group(src + i, k, a, dst + o);
	}
	return total;
}

/* ---- helpers ---- */

/*
 * Copies src[0..len) to dst (cap bytes incl. the NUL). When cut, the cut moves
 * back over at most 3 UTF-8 continuation bytes so no character is split.
 * Returns the bytes copied.
 */
static size_t copy_cut(char *dst, size_t cap, const char *src, size_t len)
{
	size_t n = len < cap ? len : cap - 1;
	if (n < len)
		for (int k = 0; k < 3 && n > 0 && ((unsigned char)src[n] & 0xc0) == 0x80; k++)
			n--;
	if (n)
		memcpy(dst, src, n);
	dst[n] = '\0';
	return n;
}

static inline bool is_ows(char c)
{
	return c == ' ' || c == '\t';
}

static struct slice trim(struct slice s)
{
	while (s.len && is_ows(s.p[0])) {
		s.p++;
		s.len--;
	}
	while (s.len && is_ows(s.p[s.len - 1]))
		s.len--;
	return s;
}

static inline bool usable_principal(const char *p, size_t n)
{
	return n > 0 && !(n == 1 && p[0] == '-');
}

static void set_none(struct identity *out)
{
	out->principal[0] = '-';
	out->principal[1] = '\0';
}

/* ---- JWT ---- */

/* Decimal text of a JSON number claim; integers up to 2^53 exactly, others as %.17g. */
static size_t number_text(double v, char *dst, size_t cap)
{
	int n;
	if (v == trunc(v) && fabs(v) <= 9007199254740992.0)
		n = snprintf(dst, cap, "%" PRId64, (int64_t)v);
	else
		n = snprintf(dst, cap, "%.17g", v);
	if (n < 0)
		n = 0;
	return (size_t)n < cap ? (size_t)n : cap - 1;
}

static bool number_i64(const cJSON *it, int64_t *out)
{
	if (!cJSON_IsNumber(it))
		return false;
	double v = it->valuedouble;
	if (!(v >= -9.2e18 && v <= 9.2e18))
		return false;
	*out = (int64_t)v;
	return true;
}

/* "scope" else "scp": a string, or an array whose strings are joined by one space. */
static void take_scope(const cJSON *root, struct cache_val *v)
{
	const cJSON *s = cJSON_GetObjectItemCaseSensitive(root, "scope");
	if (!s || !(cJSON_IsString(s) || cJSON_IsArray(s)))
		s = cJSON_GetObjectItemCaseSensitive(root, "scp");
	if (!s)
		return;
	if (cJSON_IsString(s) && s->valuestring) {
		v->slen = (uint16_t)copy_cut(v->scope, sizeof(v->scope), s->valuestring, strlen(s->valuestring));
		return;
	}
	if (!cJSON_IsArray(s))
		return;
	char tmp[IDENTITY_SCOPE_MAX + 1];	/* one byte past what fits, for copy_cut */
	size_t len = 0;
	const cJSON *e;
	cJSON_ArrayForEach(e, s)
	{
		if (!cJSON_IsString(e) || !e->valuestring || !e->valuestring[0])
			continue;
		if (len && len < IDENTITY_SCOPE_MAX)
			tmp[len++] = ' ';
		size_t n = strlen(e->valuestring);
		if (n > IDENTITY_SCOPE_MAX - len)
			n = IDENTITY_SCOPE_MAX - len;
		memcpy(tmp + len, e->valuestring, n);
		len += n;
		if (len >= IDENTITY_SCOPE_MAX)
			break;
	}
	v->slen = (uint16_t)copy_cut(v->scope, sizeof(v->scope), tmp, len);
}

/*
 * Decodes a compact JWS tok[0..len) (len <= IDENTITY_TOKEN_MAX, contains '.')
 * into v: CV_JWT with the principal, or CV_BROKEN. Header and signature are
 * only checked for shape (header: base64url of something starting with '{').
 */
static void jwt_decode(struct identity_ctx *ic, const char *tok, size_t len, struct cache_val *v)
{
	memset(v, 0, offsetof(struct cache_val, principal));
	v->principal[0] = '\0';
	v->scope[0] = '\0';
	v->flags = CV_BROKEN;

	const char *end = tok + len;
	const char *d1 = memchr(tok, '.', len);
	if (!d1)
		return;
	const char *d2 = memchr(d1 + 1, '.', (size_t)(end - d1 - 1));
	if (!d2 || memchr(d2 + 1, '.', (size_t)(end - d2 - 1)))
		return;	/* not exactly 3 parts (a JWE has 5) */
	size_t hlen = (size_t)(d1 - tok), plen = (size_t)(d2 - d1 - 1), slen = (size_t)(end - d2 - 1), m;
	if (!hlen || !plen)
		return;
	if (slen && b64_check(d2 + 1, slen, B64_URL, &m) < 0)
		return;

	ssize_t n = b64_decode(tok, hlen, B64_URL, ic->buf);
	size_t j = 0;
	while (n > 0 && j < (size_t)n && (ic->buf[j] == ' ' || ic->buf[j] == '\t' || ic->buf[j] == '\r' ||
					   ic->buf[j] == '\n'))
		j++;
	if (n <= 0 || j >= (size_t)n || ic->buf[j] != '{')
		return;

	n = b64_decode(d1 + 1, plen, B64_URL, ic->buf);
	if (n <= 0 || memchr(ic->buf, '\0', (size_t)n))
		return;	/* JSON text has no raw NUL; cJSON would stop there */
	ic->buf[n] = '\0';
	cJSON *root = cJSON_ParseWithLengthOpts((const char *)ic->buf, (size_t)n + 1, NULL, 1);
	if (!root)
		return;
	if (!cJSON_IsObject(root))
		goto out;

	for (size_t c = 0; c < ic->nclaims; c++) {
		const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, ic->claims[c]);
		size_t pl;
		if (cJSON_IsString(it) && it->valuestring) {
			pl = copy_cut(v->principal, sizeof(v->principal), it->valuestring, strlen(it->valuestring));
		} else if (cJSON_IsNumber(it)) {
			pl = number_text(it->valuedouble, v->principal, sizeof(v->principal));
		} else {
			continue;
		}
		if (usable_principal(v->principal, pl)) {
			v->plen = (uint16_t)pl;
			v->flags = CV_JWT;
			break;
		}
		v->principal[0] = '\0';
	}
	if (!(v->flags & CV_JWT))
		goto out;
	if (number_i64(cJSON_GetObjectItemCaseSensitive(root, "iat"), &v->iat))
		v->flags |= CV_IAT;
	if (number_i64(cJSON_GetObjectItemCaseSensitive(root, "exp"), &v->exp))
		v->flags |= CV_EXP;
	take_scope(root, v);
out:
	cJSON_Delete(root);
}

static void jwt_to_out(const struct cache_val *v, struct identity *out)
{
	if (!(v->flags & CV_JWT)) {
		out->jwt_broken = true;
		return;
	}
	out->jwt = true;
	memcpy(out->principal, v->principal, (size_t)v->plen + 1);
	memcpy(out->scope, v->scope, (size_t)v->slen + 1);
	out->has_iat = v->flags & CV_IAT;
	out->has_exp = v->flags & CV_EXP;
	out->iat = out->has_iat ? v->iat : 0;
	out->exp = out->has_exp ? v->exp : 0;
}

static void do_bearer(struct identity_ctx *ic, struct slice tok, struct identity *out)
{
	ic->st.bearer++;
	out->scheme = AUTH_BEARER;
	if (tok.len > IDENTITY_TOKEN_MAX) {
		ic->st.jwt_broken++;
		out->jwt_broken = true;
		return;
	}
	if (!tok.len || !memchr(tok.p, '.', tok.len)) {
		ic->st.bearer_opaque++;
		return;
	}

	struct cache *c = &ic->cache;
	struct cache_val tmp, *v = &tmp;
	if (c->cap) {
		uint64_t h = hash64(tok.p, tok.len, ic->seed[KIND_JWT][0]);
		uint64_t chk = hash64(tok.p, tok.len, ic->seed[KIND_JWT][1]);
		uint32_t len = (uint32_t)tok.len | (uint32_t)KIND_JWT << 31;
		uint32_t i = cache_get(c, h, chk, len);
		if (i != NIL) {
			ic->st.jwt_cache_hits++;
			v = &c->vals[i];
		} else {
			v = &c->vals[cache_put(c, h, chk, len)];
			ic->st.jwt_decoded++;
			jwt_decode(ic, tok.p, tok.len, v);
		}
	} else {
		ic->st.jwt_decoded++;
		jwt_decode(ic, tok.p, tok.len, v);
	}
	if (!(v->flags & CV_JWT))
		ic->st.jwt_broken++;
	jwt_to_out(v, out);
}

/* ---- Basic ---- */

/*
 * The user name of base64(user ":" password). Only the characters up to the
 * group holding the first ':' are decoded; that group is wiped, so the
 * password never exists decoded beyond at most two bytes on the stack, cleared.
 */
static void do_basic(struct identity_ctx *ic, struct slice cred, struct identity *out)
{
	ic->st.basic++;
	out->scheme = AUTH_BASIC;

	size_t m;
	if (b64_check(cred.p, cred.len, B64_STD, &m) < 0)
		goto broken;
	char user[IDENTITY_PRINCIPAL_MAX + 1];	/* one byte past what fits, for copy_cut */
	size_t ulen = 0;
	bool colon = false, nul = false;
	unsigned char g[3];
	for (size_t i = 0; i < m && !colon; i += 4) {
		size_t nb = b64_group(cred.p + i, m - i < 4 ? m - i : 4, B64_STD, g);
		for (size_t j = 0; j < nb; j++) {
			if (g[j] == ':') {
				colon = true;
				break;
			}
			if (g[j] == '\0')
				nul = true;
			if (ulen < sizeof(user))
				user[ulen++] = (char)g[j];
		}
	}
	OPENSSL_cleanse(g, sizeof(g));
	if (!colon || nul)
		goto broken;
	size_t n = copy_cut(out->principal, sizeof(out->principal), user, ulen);
	if (usable_principal(out->principal, n))
		return;
broken:
	ic->st.basic_broken++;
	set_none(out);
}

/* ---- API key ---- */

static int apikey_hmac(struct identity_ctx *ic, const char *key, size_t len, char *dst /* >= 21 */)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char mac[EVP_MAX_MD_SIZE];
	size_t ml = 0;
	if (!EVP_MAC_init(ic->hmac, NULL, 0, NULL) || !EVP_MAC_update(ic->hmac, (const unsigned char *)key, len) ||
	    !EVP_MAC_final(ic->hmac, mac, &ml, sizeof(mac)) || ml < 8)
		return -EIO;
	memcpy(dst, "key:", 4);
	for (size_t i = 0; i < 8; i++) {
		dst[4 + 2 * i] = hex[mac[i] >> 4];
		dst[5 + 2 * i] = hex[mac[i] & 15];
	}
	dst[20] = '\0';
	OPENSSL_cleanse(mac, sizeof(mac));
	return 0;
}

static void do_apikey(struct identity_ctx *ic, struct slice key, struct identity *out)
{
	out->scheme = AUTH_APIKEY;
	ic->st.apikey++;
	if (key.len > IDENTITY_TOKEN_MAX)
		goto broken;

	struct cache *c = &ic->cache;
	if (!c->cap) {
		if (apikey_hmac(ic, key.p, key.len, out->principal))
			goto broken;
		return;
	}
	uint64_t h = hash64(key.p, key.len, ic->seed[KIND_APIKEY][0]);
	uint64_t chk = hash64(key.p, key.len, ic->seed[KIND_APIKEY][1]);
	uint32_t len = (uint32_t)key.len | (uint32_t)KIND_APIKEY << 31;
	uint32_t i = cache_get(c, h, chk, len);
	if (i != NIL) {
		ic->st.apikey_cache_hits++;
		memcpy(out->principal, c->vals[i].principal, (size_t)c->vals[i].plen + 1);
		return;
	}
	char p[24];
	if (apikey_hmac(ic, key.p, key.len, p))
		goto broken;	/* not cached: a transient failure must not stick */
	struct cache_val *v = &c->vals[cache_put(c, h, chk, len)];
	v->flags = 0;
	v->slen = 0;
	v->scope[0] = '\0';
	v->plen = 20;
	memcpy(v->principal, p, 21);
	memcpy(out->principal, p, 21);
	return;
broken:
	ic->st.apikey_broken++;
	set_none(out);
}

/* ---- public ---- */

const char *auth_scheme_name(enum auth_scheme s)
{
	switch (s) {
	case AUTH_BEARER:
		return "bearer";
	case AUTH_BASIC:
		return "basic";
	case AUTH_APIKEY:
		return "apikey";
	default:
		return "none";
	}
}

void identity_opts_default(struct identity_opts *o)
{
	memset(o, 0, sizeof(*o));
	for (size_t i = 0; i < sizeof(default_claims) / sizeof(default_claims[0]); i++)
		o->claims[i] = default_claims[i];
	o->nclaims = sizeof(default_claims) / sizeof(default_claims[0]);
	o->apikey_headers[0] = "X-API-Key";
	o->napikey = 1;
	o->cache_entries = 16384;
}

static bool name_ok(const char *s)
{
	return s && s[0] && strlen(s) < NAME_MAX_LEN;
}

struct identity_ctx *identity__new(const struct identity_opts *o)
{
	if (!o || !o->nclaims || o->nclaims > IDENTITY_MAX_CLAIMS || o->napikey > IDENTITY_MAX_APIKEY_HEADERS ||
	    o->cache_entries > IDENTITY_CACHE_MAX) {
		errno = EINVAL;
		return NULL;
	}
	for (size_t i = 0; i < o->nclaims; i++)
		if (!name_ok(o->claims[i])) {
			errno = EINVAL;
			return NULL;
		}
	for (size_t i = 0; i < o->napikey; i++)
		if (!name_ok(o->apikey_headers[i])) {
			errno = EINVAL;
			return NULL;
		}

	int err = ENOMEM;
	struct identity_ctx *ic = calloc(1, sizeof(*ic));
	if (!ic)
		goto fail;
	for (size_t i = 0; i < o->nclaims; i++)
		memcpy(ic->claims[i], o->claims[i], strlen(o->claims[i]) + 1);
	ic->nclaims = o->nclaims;
	for (size_t i = 0; i < o->napikey; i++) {
		ic->apikey_len[i] = strlen(o->apikey_headers[i]);
		memcpy(ic->apikey[i], o->apikey_headers[i], ic->apikey_len[i] + 1);
	}
	ic->napikey = o->napikey;

	err = EIO;
	OSSL_PARAM params[] = { OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
				OSSL_PARAM_construct_end() };
	ic->mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	if (!ic->mac || !(ic->hmac = EVP_MAC_CTX_new(ic->mac)) ||
	    !EVP_MAC_init(ic->hmac, o->secret, sizeof(o->secret), params))
		goto fail_free;

	/* cache seeds: HMAC(secret, label), so hashes are unpredictable without the secret */
	static const char label[] = "phiwatch identity cache seeds v1";
	unsigned char seed[EVP_MAX_MD_SIZE];
	size_t sl = 0;
	if (!EVP_MAC_update(ic->hmac, (const unsigned char *)label, sizeof(label) - 1) ||
	    !EVP_MAC_final(ic->hmac, seed, &sl, sizeof(seed)) || sl < sizeof(ic->seed))
		goto fail_free;
	memcpy(ic->seed, seed, sizeof(ic->seed));
	OPENSSL_cleanse(seed, sizeof(seed));

	err = ENOMEM;
	if (cache_init(&ic->cache, o->cache_entries))
		goto fail_free;
	return ic;

fail_free:
	identity__free(ic);
fail:
	errno = err;
	return NULL;
}

void identity__free(struct identity_ctx *ic)
{
	if (!ic)
		return;
	cache_fini(&ic->cache);
	EVP_MAC_CTX_free(ic->hmac);	/* cleanses the key */
	EVP_MAC_free(ic->mac);
	OPENSSL_cleanse(ic, sizeof(*ic));
	free(ic);
}

static inline bool is_authorization(struct slice n)
{
	return n.len == 13 && strncasecmp(n.p, "authorization", 13) == 0;
}

void identity__extract(struct identity_ctx *ic, const struct http1_header *hdrs, size_t n, struct identity *out)
{
	out->scheme = AUTH_NONE;
	set_none(out);
	out->jwt = out->jwt_broken = false;
	out->has_iat = out->has_exp = false;
	out->iat = out->exp = 0;
	out->scope[0] = '\0';

	const struct slice *auth = NULL;
	struct slice key = { NULL, 0 };
	for (size_t i = 0; i < n && !(auth && key.p); i++) {
		struct slice nm = hdrs[i].name;
		if (!auth && is_authorization(nm)) {
			auth = &hdrs[i].value;
			continue;
		}
		if (key.p)
			continue;
		for (size_t j = 0; j < ic->napikey; j++) {
			if (nm.len == ic->apikey_len[j] && strncasecmp(nm.p, ic->apikey[j], nm.len) == 0) {
				struct slice v = trim(hdrs[i].value);
				if (v.len)
					key = v;
				break;
			}
		}
	}

	if (auth) {
		struct slice v = trim(*auth);
		size_t s = 0;
		while (s < v.len && !is_ows(v.p[s]))
			s++;
		struct slice scheme = { v.p, s };
		struct slice cred = trim((struct slice){ v.p + s, v.len - s });
		if (slice_ieq(scheme, "bearer")) {
			do_bearer(ic, cred, out);
			return;
		}
		if (slice_ieq(scheme, "basic")) {
			do_basic(ic, cred, out);
			return;
		}
	}
	if (key.p) {
		do_apikey(ic, key, out);
		return;
	}
	ic->st.none++;
}

void identity__stats(const struct identity_ctx *ic, struct identity_stats *out)
{
	*out = ic->st;
	out->cache_entries = ic->cache.used;
	out->cache_bytes = cache_bytes(&ic->cache);
}

bool identity_header_is_secret(struct slice name, const struct identity_opts *o)
{
	for (size_t i = 0; i < sizeof(always_secret) / sizeof(always_secret[0]); i++)
		if (slice_ieq(name, always_secret[i]))
			return true;
	if (o)
		for (size_t i = 0; i < o->napikey && i < IDENTITY_MAX_APIKEY_HEADERS; i++)
			if (o->apikey_headers[i] && slice_ieq(name, o->apikey_headers[i]))
				return true;
	return false;
}
