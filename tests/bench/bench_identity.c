/* bench_identity.c — ns per identity__extract / resource__extract on typical requests, beside a floor. */
/*
 * Not a pass/fail test. Floor: identity__extract on the same headers without
 * credentials (the header scan alone). Each case: best of 5 runs.
 * Build: `make BUILD=build build/bench/bench_identity` (part of `make bench`), or alone:
 *   cc -std=gnu11 -O2 -D_GNU_SOURCE -Iuser -o /tmp/bench_identity tests/bench/bench_identity.c \
 *      user/identity.c user/resource.c -lcjson -lcrypto -lm
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "identity.h"
#include "resource.h"

static volatile uint64_t sink;

static double now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static size_t b64url(const char *in, size_t n, char *out)
{
	static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t o = 0;
	for (size_t i = 0; i < n; i += 3) {
		size_t k = n - i < 3 ? n - i : 3;
		uint32_t v = (uint32_t)(unsigned char)in[i] << 16;
		if (k > 1)
			v |= (uint32_t)(unsigned char)in[i + 1] << 8;
		if (k > 2)
			v |= (unsigned char)in[i + 2];
		out[o++] = al[v >> 18 & 63];
		out[o++] = al[v >> 12 & 63];
		if (k > 1)
			out[o++] = al[v >> 6 & 63];
		if (k > 2)
			out[o++] = al[v & 63];
	}
	out[o] = '\0';
	return o;
}

/* A realistic RS256 access token: ~1 KiB. */
static void make_jwt(char *out, unsigned variant)
{
	static const char hdr[] = "{\"alg\":\"RS256\",\"typ\":\"JWT\",\"kid\":\"3f9c2b7e1a\"}";
	char payload[1024];
	snprintf(payload, sizeof(payload),
		 "{\"iss\":\"https://auth.hospital.example/realms/ehr\","
		 "\"sub\":\"f81d4fae-7dec-11d0-a765-00a0c91e6bf6\","
		 "\"aud\":[\"fhir-api\",\"account\"],\"exp\":1767225600,\"iat\":1767222000,\"jti\":\"%08x\","
		 "\"azp\":\"clinician-portal\",\"client_id\":\"clinician-portal\","
		 "\"scope\":\"openid profile launch/patient patient/*.read user/Observation.write\","
		 "\"realm_access\":{\"roles\":[\"clinician\",\"offline_access\"]},\"fhirUser\":\"Practitioner/77\"}",
		 variant);
	char sig[256];
	for (size_t i = 0; i < sizeof(sig); i++)
		sig[i] = (char)(i * 131 + variant * 7);
	size_t o = b64url(hdr, sizeof(hdr) - 1, out);
	out[o++] = '.';
	o += b64url(payload, strlen(payload), out + o);
	out[o++] = '.';
	b64url(sig, sizeof(sig), out + o);
}

struct req {
	struct http1_header h[8];
	size_t n;
	char auth[2048];
};

static void make_req(struct req *r, const char *auth_name, const char *auth_value)
{
	static const char *names[] = { "Host", "User-Agent", "Accept", "Accept-Encoding", "X-Request-Id",
				       "Content-Type", "Connection" };
	static const char *values[] = { "ehr.hospital.example", "python-requests/2.31.0", "application/fhir+json",
					"gzip, deflate", "4bf92f3577b34da6a3ce929d0e0e4736", "application/fhir+json",
					"keep-alive" };
	r->n = 0;
	for (size_t i = 0; i < 7; i++) {
		if (i == 4 && auth_name) {
			snprintf(r->auth, sizeof(r->auth), "%s", auth_value);
			r->h[r->n++] = (struct http1_header){ { auth_name, strlen(auth_name) },
							      { r->auth, strlen(r->auth) } };
		}
		r->h[r->n++] = (struct http1_header){ { names[i], strlen(names[i]) },
						      { values[i], strlen(values[i]) } };
	}
}

typedef void (*bench_fn)(void *arg, unsigned i);

static double measure(bench_fn fn, void *arg, unsigned iters)
{
	double best = 1e30;
	for (int rep = 0; rep < 5; rep++) {
		double t0 = now_ns();
		for (unsigned i = 0; i < iters; i++)
			fn(arg, i);
		double per = (now_ns() - t0) / iters;
		if (per < best)
			best = per;
	}
	return best;
}

struct idarg {
	struct identity_ctx *ic;
	struct req *reqs;	/* one or many */
	unsigned nreqs;
};

static void run_identity(void *a, unsigned i)
{
	struct idarg *x = a;
	struct identity id;
	struct req *r = &x->reqs[i % x->nreqs];
	identity__extract(x->ic, r->h, r->n, &id);
	sink += (unsigned char)id.principal[0];
}

struct resarg {
	struct resource_ctx *rc;
	const char *target;
	size_t plen, qlen;
	const char *q;
};

static void run_resource(void *a, unsigned i)
{
	(void)i;
	struct resarg *x = a;
	struct resource r;
	sink += (uint64_t)resource__extract(x->rc, x->target, x->plen, x->q, x->qlen, &r);
}

int main(void)
{
	struct identity_opts o;
	identity_opts_default(&o);
	memcpy(o.secret, "bench-secret-bench-secret-bench!", 32);
	struct identity_ctx *ic = identity__new(&o);
	o.cache_entries = 0;
	struct identity_ctx *ic_nocache = identity__new(&o);
	if (!ic || !ic_nocache) {
		perror("identity__new");
		return 1;
	}

	static struct req none, jwt1, basic, key;
	char tok[2048], v[2100];
	make_req(&none, NULL, NULL);
	make_jwt(tok, 1);
	snprintf(v, sizeof(v), "Bearer %s", tok);
	make_req(&jwt1, "Authorization", v);
	make_req(&basic, "Authorization", "Basic ZHIuc21pdGg6Y29ycmVjdCBob3JzZSBiYXR0ZXJ5IHN0YXBsZQ==");
	make_req(&key, "X-API-Key", "pk_live_51H8x2eLkdIwHu7ixEr4Q9T0k2jFq8ZQ");
	printf("JWT bearer token: %zu bytes\n\n", strlen(tok));

	/* 256 distinct tokens for the uncached case */
	enum { NTOK = 256 };
	struct req *many = calloc(NTOK, sizeof(*many));
	for (unsigned i = 0; i < NTOK; i++) {
		make_jwt(tok, 1000 + i);
		snprintf(v, sizeof(v), "Bearer %s", tok);
		make_req(&many[i], "Authorization", v);
	}

	const unsigned N = 400000, NSLOW = 40000;
	struct idarg a = { ic, &none, 1 };
	double floor_ns = measure(run_identity, &a, N);
	printf("%-44s %9s %9s\n", "case", "ns/call", "x floor");
	printf("%-44s %9.1f %9.2f\n", "identity: no credentials (floor)", floor_ns, 1.0);

	a = (struct idarg){ ic, &jwt1, 1 };
	double t = measure(run_identity, &a, N);
	printf("%-44s %9.1f %9.2f\n", "identity: JWT, cache hit", t, t / floor_ns);
	a = (struct idarg){ ic_nocache, many, NTOK };
	t = measure(run_identity, &a, NSLOW);
	printf("%-44s %9.1f %9.2f\n", "identity: JWT, uncached (decode + cJSON)", t, t / floor_ns);
	a = (struct idarg){ ic, &basic, 1 };
	t = measure(run_identity, &a, N);
	printf("%-44s %9.1f %9.2f\n", "identity: Basic", t, t / floor_ns);
	a = (struct idarg){ ic, &key, 1 };
	t = measure(run_identity, &a, N);
	printf("%-44s %9.1f %9.2f\n", "identity: API key, cache hit", t, t / floor_ns);
	a = (struct idarg){ ic_nocache, &key, 1 };
	t = measure(run_identity, &a, NSLOW);
	printf("%-44s %9.1f %9.2f\n", "identity: API key, uncached (HMAC-SHA256)", t, t / floor_ns);

	struct resource_opts ro;
	resource_opts_default(&ro);
	ro.templates[0] = "/api/v1/patients/{patient}/records";
	ro.templates[1] = "/api/v1/patients/{patient}";
	ro.ntemplates = 2;
	struct resource_ctx *rc = resource__new(&ro, NULL, 0);
	static const char *targets[] = {
		"/fhir/R4/Patient/123",
		"/fhir/R4/Patient/123/$everything",
		"/fhir/R4/Observation?patient=Patient/123&category=vital-signs&_count=50",
		"/fhir/R4/Patient?_id=1,2,3,4,5",
		"/fhir/R4/metadata",
		"/api/v1/patients/42/records",
	};
	printf("\n");
	double rsum = 0;
	for (size_t i = 0; i < sizeof(targets) / sizeof(targets[0]); i++) {
		const char *q = strchr(targets[i], '?');
		struct resarg ra = { rc, targets[i], q ? (size_t)(q - targets[i]) : strlen(targets[i]),
				     q ? strlen(q + 1) : 0, q ? q + 1 : NULL };
		t = measure(run_resource, &ra, N);
		rsum += t;
		char label[64];
		snprintf(label, sizeof(label), "resource: %.34s", targets[i]);
		printf("%-44s %9.1f %9.2f\n", label, t, t / floor_ns);
	}
	printf("\nidentity (JWT hit) + resource (mean of the above): %.1f ns/request\n",
	       measure(run_identity, &(struct idarg){ ic, &jwt1, 1 }, N) + rsum / 6);

	free(many);
	resource__free(rc);
	identity__free(ic);
	identity__free(ic_nocache);
	return (int)(sink & 0);
}
