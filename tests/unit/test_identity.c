/* test_identity.c — cmocka tests for user/identity.c: JWT claims and breakage, token cache, Basic, API-key HMAC. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "identity.h"

/* ---- helpers ---- */

static void b64url(const char *in, size_t n, char *out, bool pad)
{
	static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t o = 0;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)(unsigned char)in[i] << 16;
		size_t k = n - i < 3 ? n - i : 3;
		if (k > 1)
			v |= (uint32_t)(unsigned char)in[i + 1] << 8;
		if (k > 2)
			v |= (unsigned char)in[i + 2];
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
	out[o] = '\0';
}

static void b64std(const char *in, size_t n, char *out)
{
	b64url(in, n, out, true);
	for (char *p = out; *p; p++)
		*p = *p == '-' ? '+' : *p == '_' ? '/' : *p;
}

static char tokbuf[4][70000];

/* "b64url(header).b64url(payload).sig" in one of four static buffers. */
static const char *jwt3(const char *header, const char *payload, bool pad)
{
	static int k;
	char *t = tokbuf[k++ & 3];
	b64url(header, strlen(header), t, pad);
	strcat(t, ".");
	b64url(payload, strlen(payload), t + strlen(t), pad);
	strcat(t, ".c2lnbmF0dXJl");
	return t;
}

static const char *jwt(const char *payload)
{
	return jwt3("{\"alg\":\"RS256\",\"typ\":\"JWT\"}", payload, false);
}

static char valbuf[8][70000];

static const char *bearer(const char *tok)
{
	static int k;
	char *v = valbuf[k++ & 7];
	snprintf(v, sizeof(valbuf[0]), "Bearer %s", tok);
	return v;
}

struct hdrs {
	struct http1_header h[8];
	size_t n;
};

static void add(struct hdrs *h, const char *name, const char *value)
{
	h->h[h->n].name = (struct slice){ name, strlen(name) };
	h->h[h->n].value = (struct slice){ value, strlen(value) };
	h->n++;
}

struct fx {
	struct identity_opts o;
	struct identity_ctx *ic;
	struct identity id;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	identity_opts_default(&f->o);
	memcpy(f->o.secret, "0123456789abcdef0123456789abcdef", 32);
	f->ic = identity__new(&f->o);
	assert_non_null(f->ic);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	identity__free(f->ic);
	free(f);
	return 0;
}

static struct identity *one(struct fx *f, const char *name, const char *value)
{
	struct hdrs h = { .n = 0 };
	add(&h, "Host", "api.example");
	add(&h, name, value);
	add(&h, "Accept", "*/*");
	identity__extract(f->ic, h.h, h.n, &f->id);
	return &f->id;
}

static struct identity *tok(struct fx *f, const char *t)
{
	return one(f, "Authorization", bearer(t));
}

static struct identity_stats stats(struct fx *f)
{
	struct identity_stats s;
	identity__stats(f->ic, &s);
	return s;
}

static void assert_broken(struct fx *f, const char *t)
{
	struct identity *id = tok(f, t);
	assert_int_equal(id->scheme, AUTH_BEARER);
	assert_string_equal(id->principal, "-");
	assert_true(id->jwt_broken);
	assert_false(id->jwt);
	assert_false(id->has_iat);
	assert_string_equal(id->scope, "");
}

/* ---- basics ---- */

static void test_scheme_names(void **state)
{
	(void)state;
	assert_string_equal(auth_scheme_name(AUTH_NONE), "none");
	assert_string_equal(auth_scheme_name(AUTH_BEARER), "bearer");
	assert_string_equal(auth_scheme_name(AUTH_BASIC), "basic");
	assert_string_equal(auth_scheme_name(AUTH_APIKEY), "apikey");
	assert_string_equal(auth_scheme_name((enum auth_scheme)99), "none");
}

static void test_opts(void **state)
{
	(void)state;
	struct identity_opts o;
	identity_opts_default(&o);
	assert_int_equal(o.nclaims, 3);
	assert_string_equal(o.claims[0], "sub");
	assert_string_equal(o.claims[1], "client_id");
	assert_string_equal(o.claims[2], "azp");
	assert_int_equal(o.napikey, 1);
	assert_string_equal(o.apikey_headers[0], "X-API-Key");
	assert_int_equal(o.cache_entries, 16384);

	struct identity_opts b = o;
	b.nclaims = 0;
	errno = 0;
	assert_null(identity__new(&b));
	assert_int_equal(errno, EINVAL);
	b = o;
	b.nclaims = 9;
	assert_null(identity__new(&b));
	b = o;
	b.napikey = 9;
	assert_null(identity__new(&b));
	b = o;
	b.claims[1] = "";
	assert_null(identity__new(&b));
	b = o;
	b.apikey_headers[0] = NULL;
	assert_null(identity__new(&b));
	b = o;
	b.cache_entries = IDENTITY_CACHE_MAX + 1;
	assert_null(identity__new(&b));
	assert_null(identity__new(NULL));
	identity__free(NULL);
}

static void test_no_credentials(void **state)
{
	struct fx *f = *state;
	identity__extract(f->ic, NULL, 0, &f->id);
	assert_int_equal(f->id.scheme, AUTH_NONE);
	assert_string_equal(f->id.principal, "-");
	struct identity *id = one(f, "User-Agent", "curl");
	assert_int_equal(id->scheme, AUTH_NONE);
	assert_string_equal(id->principal, "-");
	assert_false(id->jwt || id->jwt_broken);
	id = one(f, "Authorization", "Digest username=\"bob\"");
	assert_int_equal(id->scheme, AUTH_NONE);
	assert_string_equal(id->principal, "-");
	id = one(f, "Authorization", "");
	assert_int_equal(id->scheme, AUTH_NONE);
	id = one(f, "Authorization", "Bearerx.y.z");
	assert_int_equal(id->scheme, AUTH_NONE);
	assert_int_equal(stats(f).none, 5);
}

/* ---- JWT ---- */

static void test_jwt_each_claim(void **state)
{
	struct fx *f = *state;
	struct identity *id = tok(f, jwt("{\"sub\":\"alice\",\"iss\":\"x\"}"));
	assert_int_equal(id->scheme, AUTH_BEARER);
	assert_true(id->jwt);
	assert_false(id->jwt_broken);
	assert_string_equal(id->principal, "alice");

	id = tok(f, jwt("{\"client_id\":\"svc-billing\"}"));
	assert_string_equal(id->principal, "svc-billing");
	id = tok(f, jwt("{\"azp\":\"portal\"}"));
	assert_string_equal(id->principal, "portal");
}

static void test_jwt_claim_order(void **state)
{
	struct fx *f = *state;
	/* configured order, not document order */
	struct identity *id = tok(f, jwt("{\"azp\":\"a\",\"client_id\":\"c\",\"sub\":\"s\"}"));
	assert_string_equal(id->principal, "s");
	id = tok(f, jwt("{\"azp\":\"a\",\"client_id\":\"c\"}"));
	assert_string_equal(id->principal, "c");
	/* unusable values fall through to the next claim */
	id = tok(f, jwt("{\"sub\":\"\",\"client_id\":\"c2\"}"));
	assert_string_equal(id->principal, "c2");
	id = tok(f, jwt("{\"sub\":\"-\",\"azp\":\"a2\"}"));
	assert_string_equal(id->principal, "a2");
	id = tok(f, jwt("{\"sub\":{\"x\":1},\"client_id\":true,\"azp\":\"a3\"}"));
	assert_string_equal(id->principal, "a3");
	id = tok(f, jwt("{\"sub\":null,\"client_id\":[\"x\"]}"));
	assert_true(id->jwt_broken);
	assert_string_equal(id->principal, "-");
	/* claim names are case-sensitive */
	id = tok(f, jwt("{\"SUB\":\"x\"}"));
	assert_true(id->jwt_broken);

	/* custom claims */
	struct identity_opts o;
	identity_opts_default(&o);
	o.claims[0] = "email";
	o.claims[1] = "sub";
	o.nclaims = 2;
	struct identity_ctx *ic = identity__new(&o);
	assert_non_null(ic);
	struct hdrs h = { .n = 0 };
	add(&h, "authorization", bearer(jwt("{\"sub\":\"s\",\"email\":\"e@x.org\"}")));
	identity__extract(ic, h.h, h.n, &f->id);
	assert_string_equal(f->id.principal, "e@x.org");
	h.n = 0;
	add(&h, "authorization", bearer(jwt("{\"sub\":\"s\",\"azp\":\"a\"}")));
	identity__extract(ic, h.h, h.n, &f->id);
	assert_string_equal(f->id.principal, "s");
	h.n = 0;
	add(&h, "authorization", bearer(jwt("{\"azp\":\"a\"}")));
	identity__extract(ic, h.h, h.n, &f->id);
	assert_string_equal(f->id.principal, "-");
	assert_true(f->id.jwt_broken);
	identity__free(ic);
}

static void test_jwt_numeric(void **state)
{
	struct fx *f = *state;
	assert_string_equal(tok(f, jwt("{\"sub\":12345}"))->principal, "12345");
	assert_true(f->id.jwt);
	assert_string_equal(tok(f, jwt("{\"sub\":-7}"))->principal, "-7");
	assert_string_equal(tok(f, jwt("{\"sub\":0}"))->principal, "0");
	assert_string_equal(tok(f, jwt("{\"sub\":1.5}"))->principal, "1.5");
	assert_string_equal(tok(f, jwt("{\"sub\":9007199254740992}"))->principal, "9007199254740992");
	assert_string_equal(tok(f, jwt("{\"sub\":1e20}"))->principal, "1e+20");
	assert_string_equal(tok(f, jwt("{\"sub\":4.0}"))->principal, "4");
}

static void test_jwt_times_scope(void **state)
{
	struct fx *f = *state;
	struct identity *id =
		tok(f, jwt("{\"sub\":\"u\",\"iat\":1700000000,\"exp\":1700003600,"
			   "\"scope\":\"patient/*.read openid\"}"));
	assert_true(id->jwt);
	assert_true(id->has_iat);
	assert_true(id->has_exp);
	assert_int_equal(id->iat, 1700000000);
	assert_int_equal(id->exp, 1700003600);
	assert_string_equal(id->scope, "patient/*.read openid");

	id = tok(f, jwt("{\"sub\":\"u\",\"iat\":1700000000.9,\"scp\":[\"a.read\",7,\"b.write\",\"\",\"c\"]}"));
	assert_true(id->has_iat);
	assert_false(id->has_exp);
	assert_int_equal(id->iat, 1700000000);
	assert_int_equal(id->exp, 0);
	assert_string_equal(id->scope, "a.read b.write c");

	id = tok(f, jwt("{\"sub\":\"u\",\"scp\":\"User.Read Mail.Read\"}"));
	assert_string_equal(id->scope, "User.Read Mail.Read");
	id = tok(f, jwt("{\"sub\":\"u\",\"scope\":\"s1\",\"scp\":\"s2\"}"));
	assert_string_equal(id->scope, "s1");
	id = tok(f, jwt("{\"sub\":\"u\",\"scope\":5,\"scp\":[\"s2\"]}"));
	assert_string_equal(id->scope, "s2");

	/* non-number and out-of-range times are absent */
	id = tok(f, jwt("{\"sub\":\"u\",\"iat\":\"1700000000\",\"exp\":1e300}"));
	assert_false(id->has_iat);
	assert_false(id->has_exp);
	assert_string_equal(id->scope, "");

	/* long scope lists are cut below the max */
	char p[2048];
	int n = snprintf(p, sizeof(p), "{\"sub\":\"u\",\"scp\":[");
	for (int i = 0; i < 60; i++)
		n += snprintf(p + n, sizeof(p) - n, "%s\"scope.%02d\"", i ? "," : "", i);
	snprintf(p + n, sizeof(p) - n, "]}");
	id = tok(f, jwt(p));
	assert_int_equal(strlen(id->scope), IDENTITY_SCOPE_MAX - 1);
	assert_memory_equal(id->scope, "scope.00 scope.01", 17);
}

static void test_jwt_padding_and_shape(void **state)
{
	struct fx *f = *state;
	/* padded base64url is accepted too */
	struct identity *id = tok(f, jwt3("{\"alg\":\"none\"}", "{\"sub\":\"padded\"}", true));
	assert_true(id->jwt);
	assert_string_equal(id->principal, "padded");
	/* empty signature (alg none) */
	char t[512];
	snprintf(t, sizeof(t), "%s", jwt("{\"sub\":\"nosig\"}"));
	*strrchr(t, '.') = '\0';
	strcat(t, ".");
	assert_string_equal(tok(f, t)->principal, "nosig");
	/* surrounding whitespace, several spaces after the scheme, any case */
	snprintf(t, sizeof(t), "  bEaReR \t  %s  ", jwt("{\"sub\":\"ws\"}"));
	id = one(f, "AUTHORIZATION", t);
	assert_int_equal(id->scheme, AUTH_BEARER);
	assert_string_equal(id->principal, "ws");
}

static void test_jwt_malformed(void **state)
{
	struct fx *f = *state;
	char t[4096], h[512], p[512];
	b64url("{\"alg\":\"none\"}", 14, h, false);
	b64url("{\"sub\":\"x\"}", 11, p, false);

	snprintf(t, sizeof(t), "%s.%s", h, p);
	assert_broken(f, t);	/* 2 parts */
	snprintf(t, sizeof(t), "%s.%s.sig.more", h, p);
	assert_broken(f, t);	/* 4 parts */
	snprintf(t, sizeof(t), "%s.%s.a.b.c", h, p);
	assert_broken(f, t);	/* JWE-like 5 parts */
	snprintf(t, sizeof(t), ".%s.sig", p);
	assert_broken(f, t);	/* empty header */
	snprintf(t, sizeof(t), "%s..sig", h);
	assert_broken(f, t);	/* empty payload */
	snprintf(t, sizeof(t), "%s.%s+.sig", h, p);
	assert_broken(f, t);	/* '+' is not base64url */
	snprintf(t, sizeof(t), "%s.%s!.sig", h, p);
	assert_broken(f, t);
	snprintf(t, sizeof(t), "%s.%s.si/g", h, p);
	assert_broken(f, t);	/* bad signature chars */
	snprintf(t, sizeof(t), "%s.e%s.sig", h, p);
	assert_broken(f, t);	/* shifted: garbage JSON */

	/* wrong padding: "eyJzdWIiOiJ4In0" is 15 chars (needs one '=') */
	snprintf(t, sizeof(t), "%s.%s==.sig", h, p);
	assert_broken(f, t);
	snprintf(t, sizeof(t), "%s.%s=.sig", h, p);
	assert_false(tok(f, t)->jwt_broken);	/* the right padding */
	snprintf(t, sizeof(t), "%s.%s=x.sig", h, p);
	assert_broken(f, t);	/* '=' inside */
	snprintf(t, sizeof(t), "%s.%sA.sig", h, p);
	assert_broken(f, t);	/* 16 chars: decodes to 12 bytes, trailing garbage */
	snprintf(t, sizeof(t), "%s.%sAB.sig", h, p);
	assert_broken(f, t);	/* 17 chars: a lone last character */
	/* non-canonical: unused low bits set ("fQ" -> '}', "fR" has a stray bit) */
	b64url("{\"sub\":\"xy\"}", 12, p, false);
	assert_int_equal(strlen(p), 16);
	b64url("{\"sub\":\"x\"}", 11, p, false);
	assert_int_equal(p[14], '0');
	p[14] = '1';
	snprintf(t, sizeof(t), "%s.%s.sig", h, p);
	assert_broken(f, t);

	/* non-JSON, JSON array, JSON string, empty object, trailing garbage */
	assert_broken(f, jwt("not json"));
	assert_broken(f, jwt("[\"sub\",\"x\"]"));
	assert_broken(f, jwt("\"sub\""));
	assert_broken(f, jwt("{}"));
	assert_broken(f, jwt("{\"sub\":\"x\"} {"));
	assert_broken(f, jwt("{\"sub\":\"x\""));
	/* header must be base64url of a JSON object */
	assert_broken(f, jwt3("[1]", "{\"sub\":\"x\"}", false));
	/* raw NUL inside the payload */
	char nul[] = "{\"sub\":\"x\"}\0zz";
	b64url(nul, sizeof(nul) - 1, p, false);
	snprintf(t, sizeof(t), "%s.%s.sig", h, p);
	assert_broken(f, t);

	struct identity_stats s = stats(f);
	assert_int_equal(s.jwt_broken, 22);
}

static void test_jwt_huge(void **state)
{
	struct fx *f = *state;
	static char payload[20000];
	/* just under the limit decodes */
	int n = snprintf(payload, sizeof(payload), "{\"sub\":\"big\",\"pad\":\"");
	memset(payload + n, 'a', 12000);
	strcpy(payload + n + 12000, "\"}");
	const char *t = jwt(payload);
	assert_true(strlen(t) <= IDENTITY_TOKEN_MAX);
	assert_string_equal(tok(f, t)->principal, "big");

	memset(payload + n, 'a', 13000);
	strcpy(payload + n + 13000, "\"}");
	t = jwt(payload);
	assert_true(strlen(t) > IDENTITY_TOKEN_MAX);
	uint64_t dec = stats(f).jwt_decoded;
	assert_broken(f, t);
	assert_int_equal(stats(f).jwt_decoded, dec);	/* not decoded */

	/* an opaque huge token is broken too */
	static char big[IDENTITY_TOKEN_MAX + 2];
	memset(big, 'q', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_broken(f, big);
}

static void test_jwt_long_principal(void **state)
{
	struct fx *f = *state;
	char p[400], want[200];
	memset(want, 'a', 126);
	want[126] = '\0';
	/* 126 ASCII + a 2-byte UTF-8 character: the character does not fit and is not split */
	snprintf(p, sizeof(p), "{\"sub\":\"%s\xc3\xa9zz\"}", want);
	struct identity *id = tok(f, jwt(p));
	assert_string_equal(id->principal, want);
	/* 200 ASCII: cut at 127 */
	char longsub[201];
	memset(longsub, 'b', 200);
	longsub[200] = '\0';
	snprintf(p, sizeof(p), "{\"sub\":\"%s\"}", longsub);
	id = tok(f, jwt(p));
	assert_int_equal(strlen(id->principal), IDENTITY_PRINCIPAL_MAX - 1);
	/* raw bytes are kept (the JSON writer escapes them later) */
	id = tok(f, jwt("{\"sub\":\"a\\\"b\\n\\u00e9\"}"));
	assert_string_equal(id->principal, "a\"b\n\xc3\xa9");
}

static void test_opaque_bearer(void **state)
{
	struct fx *f = *state;
	struct identity *id = tok(f, "2YotnFZFEjr1zCsicMWpAA");
	assert_int_equal(id->scheme, AUTH_BEARER);
	assert_string_equal(id->principal, "-");
	assert_false(id->jwt);
	assert_false(id->jwt_broken);
	id = one(f, "Authorization", "Bearer");
	assert_int_equal(id->scheme, AUTH_BEARER);
	assert_string_equal(id->principal, "-");
	assert_false(id->jwt_broken);
	struct identity_stats s = stats(f);
	assert_int_equal(s.bearer, 2);
	assert_int_equal(s.bearer_opaque, 2);
	assert_int_equal(s.jwt_broken, 0);
	assert_int_equal(s.jwt_decoded, 0);
}

static void test_cache(void **state)
{
	struct fx *f = *state;
	const char *a = jwt("{\"sub\":\"busy\",\"exp\":2000000000,\"scope\":\"x\"}");
	char a_copy[1024];
	snprintf(a_copy, sizeof(a_copy), "%s", a);
	for (int i = 0; i < 5; i++) {
		struct identity *id = tok(f, a_copy);
		assert_string_equal(id->principal, "busy");
		assert_true(id->jwt);
		assert_true(id->has_exp);
		assert_int_equal(id->exp, 2000000000);
		assert_string_equal(id->scope, "x");
	}
	struct identity_stats s = stats(f);
	assert_int_equal(s.bearer, 5);
	assert_int_equal(s.jwt_decoded, 1);
	assert_int_equal(s.jwt_cache_hits, 4);
	assert_int_equal(s.cache_entries, 1);
	assert_true(s.cache_bytes > 4096 * (IDENTITY_PRINCIPAL_MAX + IDENTITY_SCOPE_MAX));

	/* a token differing in one byte is another entry */
	char b[1024];
	snprintf(b, sizeof(b), "%s", a_copy);
	b[strlen(b) - 1] = b[strlen(b) - 1] == 'A' ? 'B' : 'A';
	assert_string_equal(tok(f, b)->principal, "busy");
	assert_int_equal(stats(f).jwt_decoded, 2);

	/* broken tokens are cached and still counted per call */
	const char *bad = jwt("{}");
	tok(f, bad);
	tok(f, bad);
	s = stats(f);
	assert_int_equal(s.jwt_decoded, 3);
	assert_int_equal(s.jwt_cache_hits, 5);
	assert_int_equal(s.jwt_broken, 2);
	assert_int_equal(s.cache_entries, 3);
}

static void test_cache_lru(void **state)
{
	(void)state;
	struct identity_opts o;
	identity_opts_default(&o);
	o.cache_entries = 2;
	struct identity_ctx *ic = identity__new(&o);
	assert_non_null(ic);
	char t[3][256];
	snprintf(t[0], 256, "%s", bearer(jwt("{\"sub\":\"A\"}")));
	snprintf(t[1], 256, "%s", bearer(jwt("{\"sub\":\"B\"}")));
	snprintf(t[2], 256, "%s", bearer(jwt("{\"sub\":\"C\"}")));
	static const int seq[] = { 0, 1, 0, 2, 0, 1 };	/* B is evicted by C, A stays (recent) */
	static const char *want[] = { "A", "B", "A", "C", "A", "B" };
	struct identity id;
	for (size_t i = 0; i < 6; i++) {
		struct hdrs h = { .n = 0 };
		add(&h, "Authorization", t[seq[i]]);
		identity__extract(ic, h.h, h.n, &id);
		assert_string_equal(id.principal, want[i]);
	}
	struct identity_stats s;
	identity__stats(ic, &s);
	assert_int_equal(s.jwt_decoded, 4);	/* A B C B */
	assert_int_equal(s.jwt_cache_hits, 2);
	assert_int_equal(s.cache_entries, 2);
	identity__free(ic);

	/* cache off: every call decodes */
	o.cache_entries = 0;
	ic = identity__new(&o);
	assert_non_null(ic);
	for (int i = 0; i < 3; i++) {
		struct hdrs h = { .n = 0 };
		add(&h, "Authorization", t[0]);
		identity__extract(ic, h.h, h.n, &id);
		assert_string_equal(id.principal, "A");
	}
	identity__stats(ic, &s);
	assert_int_equal(s.jwt_decoded, 3);
	assert_int_equal(s.cache_bytes, 0);
	identity__free(ic);
}

/* ---- Basic ---- */

static struct identity *basic(struct fx *f, const char *userpass)
{
	static char v[1024];
	char enc[900];
	b64std(userpass, strlen(userpass), enc);
	snprintf(v, sizeof(v), "Basic %s", enc);
	return one(f, "Authorization", v);
}

static void assert_basic_broken(struct fx *f, struct identity *id)
{
	(void)f;
	assert_int_equal(id->scheme, AUTH_BASIC);
	assert_string_equal(id->principal, "-");
}

static void test_basic(void **state)
{
	struct fx *f = *state;
	struct identity *id = basic(f, "alice:s3cr3t-pass");
	assert_int_equal(id->scheme, AUTH_BASIC);
	assert_string_equal(id->principal, "alice");
	assert_null(memmem(id, sizeof(*id), "s3cr3t", 6));
	assert_string_equal(basic(f, "bob:pa:ss:word")->principal, "bob");
	assert_string_equal(basic(f, "carol:")->principal, "carol");
	assert_string_equal(basic(f, "d\xc3\xa9nis:x")->principal, "d\xc3\xa9nis");
	/* scheme any case, unpadded accepted */
	id = one(f, "authorization", "bAsIc YWxpY2U6cHc");
	assert_string_equal(id->principal, "alice");
	id = one(f, "Authorization", "Basic YWxpY2U6cHc=");
	assert_string_equal(id->principal, "alice");
	assert_int_equal(stats(f).basic_broken, 0);

	assert_basic_broken(f, basic(f, "nocolon"));
	assert_basic_broken(f, basic(f, ":password"));
	assert_basic_broken(f, basic(f, "-:password"));
	assert_basic_broken(f, basic(f, ""));
	assert_basic_broken(f, one(f, "Authorization", "Basic"));
	assert_basic_broken(f, one(f, "Authorization", "Basic !!!!"));
	assert_basic_broken(f, one(f, "Authorization", "Basic YWxpY2U6cHc=="));	/* wrong padding */
	assert_basic_broken(f, one(f, "Authorization", "Basic YWxpY2U6cH"));	/* stray bits */
	assert_basic_broken(f, one(f, "Authorization", "Basic YWxp Y2U6cHc="));	/* space inside */
	assert_basic_broken(f, one(f, "Authorization", "Basic YWxpY2U6cHc-"));	/* base64url char */
	char nul[] = "a\0b:pw";
	char enc[64], v[80];
	b64std(nul, sizeof(nul) - 1, enc);
	snprintf(v, sizeof(v), "Basic %s", enc);
	assert_basic_broken(f, one(f, "Authorization", v));

	struct identity_stats s = stats(f);
	assert_int_equal(s.basic, 17);
	assert_int_equal(s.basic_broken, 11);

	/* a long user is cut; the password is still found after it */
	char up[600];
	memset(up, 'u', 300);
	snprintf(up + 300, sizeof(up) - 300, ":pw");
	id = basic(f, up);
	assert_int_equal(strlen(id->principal), IDENTITY_PRINCIPAL_MAX - 1);
	memset(up + 300, 'u', 200);
	up[500] = '\0';
	assert_basic_broken(f, basic(f, up));	/* no colon at all */
}

/* ---- API key ---- */

static void expect_hmac(const unsigned char secret[32], const char *key, char want[21])
{
	unsigned char mac[32];
	unsigned int ml = 0;
	assert_non_null(HMAC(EVP_sha256(), secret, 32, (const unsigned char *)key, strlen(key), mac, &ml));
	assert_int_equal(ml, 32);
	memcpy(want, "key:", 4);
	for (int i = 0; i < 8; i++)
		snprintf(want + 4 + 2 * i, 3, "%02x", mac[i]);
}

static void test_apikey(void **state)
{
	struct fx *f = *state;
	const char *key = "pk_live_5f3b2c9e8a7d6f1e0c4b3a29";
	char want[21];
	expect_hmac(f->o.secret, key, want);

	struct identity *id = one(f, "X-API-Key", key);
	assert_int_equal(id->scheme, AUTH_APIKEY);
	assert_string_equal(id->principal, want);
	assert_int_equal(strlen(id->principal), 20);
	assert_null(memmem(id, sizeof(*id), key, strlen(key)));
	assert_null(memmem(id, sizeof(*id), "pk_live", 7));

	/* deterministic: same ctx (cached), header name any case, value trimmed, a new ctx */
	assert_string_equal(one(f, "x-api-key", key)->principal, want);
	char padded[128];
	snprintf(padded, sizeof(padded), "  %s\t", key);
	assert_string_equal(one(f, "X-API-KEY", padded)->principal, want);
	struct identity_ctx *ic2 = identity__new(&f->o);
	assert_non_null(ic2);
	struct hdrs h = { .n = 0 };
	add(&h, "X-Api-Key", key);
	struct identity id2;
	identity__extract(ic2, h.h, h.n, &id2);
	assert_string_equal(id2.principal, want);
	identity__free(ic2);

	/* another key or another secret gives another principal */
	assert_string_not_equal(one(f, "X-API-Key", "pk_live_other")->principal, want);
	struct identity_opts o = f->o;
	o.secret[0] ^= 1;
	ic2 = identity__new(&o);
	identity__extract(ic2, h.h, h.n, &id2);
	assert_string_not_equal(id2.principal, want);
	assert_int_equal(strncmp(id2.principal, "key:", 4), 0);
	identity__free(ic2);

	/* an empty value is no key */
	id = one(f, "X-API-Key", "   ");
	assert_int_equal(id->scheme, AUTH_NONE);

	struct identity_stats s = stats(f);
	assert_int_equal(s.apikey, 4);
	assert_int_equal(s.apikey_cache_hits, 2);
	assert_int_equal(s.apikey_broken, 0);
}

static void test_apikey_headers_and_precedence(void **state)
{
	struct fx *f = *state;
	struct identity_opts o;
	identity_opts_default(&o);
	memcpy(o.secret, f->o.secret, 32);
	o.apikey_headers[0] = "X-API-Key";
	o.apikey_headers[1] = "apikey";
	o.napikey = 2;
	o.cache_entries = 0;	/* the HMAC path without cache */
	struct identity_ctx *ic = identity__new(&o);
	assert_non_null(ic);
	char want[21];
	expect_hmac(o.secret, "k-123", want);
	struct identity id;

	struct hdrs h = { .n = 0 };
	add(&h, "APIKEY", "k-123");
	identity__extract(ic, h.h, h.n, &id);
	assert_int_equal(id.scheme, AUTH_APIKEY);
	assert_string_equal(id.principal, want);

	/* Authorization Bearer/Basic wins over a key, before or after it */
	h.n = 0;
	add(&h, "apikey", "k-123");
	add(&h, "Authorization", bearer(jwt("{\"sub\":\"jwtuser\"}")));
	identity__extract(ic, h.h, h.n, &id);
	assert_int_equal(id.scheme, AUTH_BEARER);
	assert_string_equal(id.principal, "jwtuser");
	h.n = 0;
	add(&h, "Authorization", "Basic YWxpY2U6cHc=");
	add(&h, "X-API-Key", "k-123");
	identity__extract(ic, h.h, h.n, &id);
	assert_int_equal(id.scheme, AUTH_BASIC);
	/* a broken bearer still wins */
	h.n = 0;
	add(&h, "Authorization", "Bearer a.b");
	add(&h, "X-API-Key", "k-123");
	identity__extract(ic, h.h, h.n, &id);
	assert_int_equal(id.scheme, AUTH_BEARER);
	assert_string_equal(id.principal, "-");
	/* an unknown scheme does not: the key decides */
	h.n = 0;
	add(&h, "Authorization", "Negotiate YIIabc");
	add(&h, "X-API-Key", "k-123");
	identity__extract(ic, h.h, h.n, &id);
	assert_int_equal(id.scheme, AUTH_APIKEY);
	assert_string_equal(id.principal, want);
	/* the first Authorization header decides */
	h.n = 0;
	add(&h, "Authorization", bearer(jwt("{\"sub\":\"first\"}")));
	add(&h, "authorization", bearer(jwt("{\"sub\":\"second\"}")));
	identity__extract(ic, h.h, h.n, &id);
	assert_string_equal(id.principal, "first");
	/* the first key header (request order) decides */
	h.n = 0;
	add(&h, "apikey", "k-123");
	add(&h, "X-API-Key", "other");
	identity__extract(ic, h.h, h.n, &id);
	assert_string_equal(id.principal, want);
	/* no key headers configured: X-API-Key is not looked at */
	o.napikey = 0;
	identity__free(ic);
	ic = identity__new(&o);
	assert_non_null(ic);
	h.n = 0;
	add(&h, "X-API-Key", "k-123");
	identity__extract(ic, h.h, h.n, &id);
	assert_int_equal(id.scheme, AUTH_NONE);
	identity__free(ic);
}

static void test_header_is_secret(void **state)
{
	(void)state;
	static const char *secret[] = { "Authorization", "authorization", "PROXY-AUTHORIZATION", "Cookie",
					"set-cookie", "X-Api-Key" };
	static const char *plain[] = { "Host", "Accept", "X-API-Keys", "Cookies", "Author", "", "X-Request-Id" };
	for (size_t i = 0; i < sizeof(secret) / sizeof(secret[0]); i++)
		assert_true(identity_header_is_secret((struct slice){ secret[i], strlen(secret[i]) }, NULL));
	for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++)
		assert_false(identity_header_is_secret((struct slice){ plain[i], strlen(plain[i]) }, NULL));
	struct identity_opts o;
	identity_opts_default(&o);
	o.apikey_headers[0] = "Api-Token";
	assert_true(identity_header_is_secret(SLICE_LIT("api-token"), &o));
	assert_true(identity_header_is_secret(SLICE_LIT("x-api-key"), &o));	/* always */
	assert_false(identity_header_is_secret(SLICE_LIT("api-token"), NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_scheme_names),
		cmocka_unit_test(test_opts),
		cmocka_unit_test_setup_teardown(test_no_credentials, setup, teardown),
		cmocka_unit_test_setup_teardown(test_jwt_each_claim, setup, teardown),
		cmocka_unit_test_setup_teardown(test_jwt_claim_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_jwt_numeric, setup, teardown),
		cmocka_unit_test_setup_teardown(test_jwt_times_scope, setup, teardown),
		cmocka_unit_test_setup_teardown(test_jwt_padding_and_shape, setup, teardown),
		cmocka_unit_test_setup_teardown(test_jwt_malformed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_jwt_huge, setup, teardown),
		cmocka_unit_test_setup_teardown(test_jwt_long_principal, setup, teardown),
		cmocka_unit_test_setup_teardown(test_opaque_bearer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cache, setup, teardown),
		cmocka_unit_test(test_cache_lru),
		cmocka_unit_test_setup_teardown(test_basic, setup, teardown),
		cmocka_unit_test_setup_teardown(test_apikey, setup, teardown),
		cmocka_unit_test_setup_teardown(test_apikey_headers_and_precedence, setup, teardown),
		cmocka_unit_test(test_header_is_secret),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
