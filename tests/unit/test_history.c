/* test_history.c — cmocka tests for user/history.c: redaction (every cut of a head, raw secrets never kept),
 * oldest-first eviction within the memory budget, the principal/address/process indexes (also after eviction
 * and wrap-around), time filters, and entries too large for the ring.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "history.h"
#include "identity.h"
#include "phiwatch/events.h"

#define SEC 1000000000ull
#define T0 (1764324000ull * SEC)

static const char *secret_value = "zq9XYZsecretTOKEN";

static struct txn mk(uint64_t i, const char *user, uint32_t pid, const char *src, uint16_t sport)
{
	struct txn t;

	memset(&t, 0, sizeof(t));
	t.ts_start = T0 + i * SEC;
	t.ts_end = t.ts_start + 1000;
	t.sequence = i;
	t.pid = pid;
	t.comm = "nginx";
	t.exe = "/usr/sbin/nginx";
	snprintf(t.src_ip, sizeof(t.src_ip), "%s", src);
	t.src_port = sport;
	snprintf(t.dst_ip, sizeof(t.dst_ip), "%s", "10.0.0.1");
	t.dst_port = 443;
	t.tls = true;
	t.minor_version = 1;
	memcpy(t.method, "GET", 4);
	t.target = "/fhir/Patient/1";
	t.target_len = strlen(t.target);
	t.req_bytes = 100;
	t.resp_bytes = 200;
	t.status = 200;
	t.role = PW_ROLE_SERVER;
	t.user = user;
	t.auth = "bearer";
	return t;
}

static int add(struct history *h, uint64_t i, const char *user, uint32_t pid, const char *src, size_t pad)
{
	struct txn t = mk(i, user, pid, src, (uint16_t)(40000 + i % 1000));
	char json[64], *req = malloc(pad + 64);
	struct history_bytes b;
	int n = snprintf(json, sizeof(json), "{\"seq\":%llu}", (unsigned long long)i);
	int m = snprintf(req, pad + 64, "GET /x HTTP/1.1\r\nHost: h\r\n\r\n");

	memset(req + m, 'b', pad);
	b = (struct history_bytes){ req, (size_t)m + pad, "HTTP/1.1 200 OK\r\n\r\n", 19 };
	int rc = history__add(h, &t, json, (size_t)n, &b);
	free(req);
	return rc;
}

struct collect {
	uint64_t ids[4096];
	uint64_t seqs[4096];
	size_t n;
};

static int collect_cb(void *ctx, const struct history_entry *e)
{
	struct collect *c = ctx;

	if (c->n < 4096) {
		c->ids[c->n] = e->id;
		c->seqs[c->n] = e->sequence;
	}
	c->n++;
	return 0;
}

static void select_into(struct history *h, const char *principal, uint32_t pid, struct collect *c)
{
	struct history_filter f = { .principal = principal, .pid = pid };

	memset(c, 0, sizeof(*c));
	assert_int_equal(history__select(h, &f, collect_cb, c), 0);
}

static int first_cb(void *ctx, const struct history_entry *e)
{
	*(const struct history_entry **)ctx = e;
	return 7;
}

static void test_basic_fields(void **state)
{
	(void)state;
	struct history *h = history__new(0);
	struct txn t = mk(1, "alice", 77, "192.0.2.10", 51000);
	const char req[] = "GET /fhir/Patient/1 HTTP/1.1\r\nHost: api\r\n\r\n";
	const char resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
	struct history_bytes b = { req, sizeof(req) - 1, resp, sizeof(resp) - 1 };
	struct history_stats st;
	struct collect c;

	assert_non_null(h);
	t.req_bytes = 5000;      /* the capture kept only the head */
	assert_int_equal(history__add(h, &t, "{\"a\":1}", 7, &b), 0);

	const struct history_entry *e = NULL;
	assert_int_equal(history__select(h, NULL, first_cb, &e), 7);
	assert_non_null(e);
	assert_int_equal(e->id, 1);
	assert_int_equal(e->pid, 77);
	assert_string_equal(e->user, "alice");
	assert_string_equal(e->comm, "nginx");
	assert_string_equal(e->exe, "/usr/sbin/nginx");
	assert_string_equal(e->src_ip, "192.0.2.10");
	assert_int_equal(e->src_port, 51000);
	assert_string_equal(e->dst_ip, "10.0.0.1");
	assert_int_equal(e->dst_port, 443);
	assert_true(e->tls);
	assert_int_equal(e->role, PW_ROLE_SERVER);
	assert_int_equal(e->status, 200);
	assert_int_equal(e->ts_end, t.ts_end);
	assert_int_equal(e->req_bytes, 5000);
	assert_int_equal(e->req_captured, sizeof(req) - 1);
	assert_int_equal(e->resp_captured, sizeof(resp) - 1);
	assert_int_equal(e->json_len, 7);
	assert_memory_equal(e->json, "{\"a\":1}", 8);
	assert_int_equal(e->req_len, sizeof(req) - 1);
	assert_memory_equal(e->req, req, sizeof(req) - 1);
	assert_memory_equal(e->resp, resp, sizeof(resp) - 1);

	/* anonymous users are kept as "-" and found by client address */
	t = mk(2, NULL, 78, "192.0.2.11", 51001);
	assert_int_equal(history__add(h, &t, "{}", 2, NULL), 0);
	select_into(h, "ip:192.0.2.11", 0, &c);
	assert_int_equal(c.n, 1);
	assert_int_equal(c.seqs[0], 2);

	history__stats(h, &st);
	assert_int_equal(st.entries, 2);
	assert_int_equal(st.added, 2);
	assert_int_equal(st.budget, HISTORY_DEFAULT_BUDGET);
	assert_true(st.mem_bytes <= st.budget);
	assert_int_equal(st.keys, 1 + 2 + 2);  /* alice; two addresses; two pids */
	history__free(h);
	history__free(NULL);
}

static bool has(const char *hay, size_t n, const char *needle)
{
	return memmem(hay, n, needle, strlen(needle)) != NULL;
}

static const char *redact(const char *s, size_t n, const struct identity_opts *o, unsigned *nred, size_t *outlen)
{
	static char out[8192];
	size_t m = history_redact(s, n, NULL, o, NULL);

	assert_true(m < sizeof(out));
	size_t w = history_redact(s, n, out, o, nred);
	assert_int_equal(w, m);
	out[w] = '\0';
	*outlen = w;
	return out;
}

static void test_redaction(void **state)
{
	(void)state;
	const char req[] = "POST /fhir/Patient HTTP/1.1\r\n"
			   "Host: api\r\n"
			   "Authorization: Bearer zq9XYZsecretTOKEN\r\n"
			   "proxy-authorization : Basic zq9XYZsecretTOKEN\r\n"
			   "Cookie: sid=zq9XYZsecretTOKEN\r\n"
			   "X-API-Key: zq9XYZsecretTOKEN\r\n"
			   "X-Custom-Token: zq9XYZsecretTOKEN\r\n"
			   "X-Folded: zq9XYZsecretTOKEN\r\n"
			   "Content-Length: 4\r\n"
			   "\r\n"
			   "body";
	struct identity_opts o;
	unsigned nred;
	size_t n;
	const char *out;

	memset(&o, 0, sizeof(o));
	o.apikey_headers[0] = "x-custom-token";
	o.napikey = 1;
	out = redact(req, sizeof(req) - 1, &o, &nred, &n);
	assert_int_equal(nred, 5);
	assert_true(has(out, n, "Authorization: [redacted]\r\n"));
	assert_true(has(out, n, "proxy-authorization : [redacted]\r\n"));
	assert_true(has(out, n, "Cookie: [redacted]\r\n"));
	assert_true(has(out, n, "X-API-Key: [redacted]\r\n"));
	assert_true(has(out, n, "X-Custom-Token: [redacted]\r\n"));
	assert_true(has(out, n, "Host: api\r\n"));
	assert_true(has(out, n, "X-Folded: zq9XYZsecretTOKEN\r\n"));   /* not a secret name: kept */
	assert_true(has(out, n, "\r\n\r\nbody"));

	/* without the option the custom header is kept, the fixed set still goes */
	out = redact(req, sizeof(req) - 1, NULL, &nred, &n);
	assert_int_equal(nred, 4);

	/* responses: Set-Cookie in the final head after a 100 Continue; obs-fold continuation of a secret */
	const char resp[] = "HTTP/1.1 100 Continue\r\n\r\n"
			    "HTTP/1.1 200 OK\n"
			    "Set-Cookie: a=zq9XYZsecretTOKEN\n"
			    "SET-COOKIE: b=1;\n"
			    "\tzq9XYZsecretTOKEN\n"
			    "Content-Type: text/plain\n"
			    "\n"
			    "Authorization: in a body stays (bytes of the body are evidence)";
	out = redact(resp, sizeof(resp) - 1, NULL, &nred, &n);
	assert_int_equal(nred, 2);
	assert_false(has(out, n, secret_value));
	assert_true(has(out, n, "Set-Cookie: [redacted]\nSET-COOKIE: [redacted]\nContent-Type: text/plain\n\n"));
	assert_true(has(out, n, "\n\nAuthorization: in a body stays"));
	assert_true(has(out, n, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\n"));

	/* a capture that starts mid-head: the first line is a header too */
	const char mid[] = "Cookie: zq9XYZsecretTOKEN\r\nHost: x\r\n\r\n";
	out = redact(mid, sizeof(mid) - 1, NULL, &nred, &n);
	assert_int_equal(nred, 1);
	assert_false(has(out, n, secret_value));

	/* empty and NULL */
	assert_int_equal(history_redact(NULL, 5, NULL, NULL, NULL), 0);
	assert_int_equal(history_redact("", 0, NULL, NULL, NULL), 0);
}

/* Whatever the capture cut, no 3-byte piece of a secret value survives. */
static void test_redaction_every_cut(void **state)
{
	(void)state;
	const char req[] = "GET / HTTP/1.1\r\nAuthorization: Bearer zq9XYZsecretTOKEN\r\nCookie: c=zq9XYZsecretTOKEN"
			   "\r\nHost: a\r\n\r\n";
	size_t len = sizeof(req) - 1, sl = strlen(secret_value);

	for (size_t cut = 0; cut <= len; cut++) {
		unsigned nred;
		size_t n;
		const char *out = redact(req, cut, NULL, &nred, &n);
		for (size_t i = 0; i + 3 <= sl; i++) {
			char piece[4] = { secret_value[i], secret_value[i + 1], secret_value[i + 2], 0 };
			if (has(out, n, piece))
				fail_msg("cut %zu: \"%s\" survived in \"%s\"", cut, piece, out);
		}
	}
}

static int no_secret_cb(void *ctx, const struct history_entry *e)
{
	(void)ctx;
	assert_false(has(e->req, e->req_len, secret_value));
	assert_false(has(e->resp, e->resp_len, secret_value));
	assert_true(has(e->req, e->req_len, "X-Tenant-Key: [redacted]"));
	return 0;
}

static void test_raw_secret_never_stored(void **state)
{
	(void)state;
	struct history *h = history__new(HISTORY_MIN_BUDGET);
	const char *names[] = { "X-Tenant-Key" };
	struct txn t = mk(1, "alice", 1, "10.0.0.2", 1);
	const char req[] = "GET / HTTP/1.1\r\nAuthorization: Bearer zq9XYZsecretTOKEN\r\nX-Tenant-Key: zq9XYZsecretTOKEN"
			   "\r\n\r\n";
	const char resp[] = "HTTP/1.1 200 OK\r\nSet-Cookie: s=zq9XYZsecretTOKEN\r\n\r\n";
	struct history_bytes b = { req, sizeof(req) - 1, resp, sizeof(resp) - 1 };
	struct history_stats st;

	assert_int_equal(history__set_secret_headers(h, names, 1), 0);
	for (int i = 0; i < 200; i++) {
		t.sequence = (uint64_t)i;
		assert_int_equal(history__add(h, &t, "{}", 2, &b), 0);
	}
	history__select(h, NULL, no_secret_cb, NULL);
	history__stats(h, &st);
	assert_int_equal(st.redacted, 3 * st.added);
	history__free(h);

	const char *bad[] = { "" };
	h = history__new(HISTORY_MIN_BUDGET);
	assert_int_equal(history__set_secret_headers(h, bad, 1), -EINVAL);
	assert_int_equal(history__set_secret_headers(h, names, 9), -EINVAL);
	assert_int_equal(history__set_secret_headers(h, NULL, 0), 0);
	history__free(h);
}

/* The scratch path (a call's redacted bytes fit in 16 KiB) and the measuring path (they do not) store the same
 * bytes: what history_redact makes of them, secrets gone. */
struct same {
	const char *want_req, *want_resp;
	size_t want_req_len, want_resp_len;
	int seen;
};

static int same_cb(void *ctx, const struct history_entry *e)
{
	struct same *s = ctx;
	assert_int_equal(e->req_len, s->want_req_len);
	assert_memory_equal(e->req, s->want_req, e->req_len);
	assert_int_equal(e->resp_len, s->want_resp_len);
	assert_memory_equal(e->resp, s->want_resp, e->resp_len);
	assert_false(has(e->req, e->req_len, secret_value));
	assert_false(has(e->resp, e->resp_len, secret_value));
	s->seen++;
	return 0;
}

static void test_redact_scratch_and_long(void **state)
{
	(void)state;
	const size_t pads[] = { 0, 100, 380, 420, 2000 }; /* 40-byte header lines: ~0.4 KiB .. 80 KiB per side */
	for (size_t k = 0; k < sizeof(pads) / sizeof(pads[0]); k++) {
		struct history *h = history__new(4u << 20);
		struct txn t = mk(1, "alice", 1, "10.0.0.2", 1);
		size_t cap = 64 + pads[k] * 40 + 128, n = 0, m = 0;
		char *req = malloc(cap), *resp = malloc(cap);
		n += (size_t)sprintf(req + n, "GET / HTTP/1.1\r\nAuthorization: Bearer %s\r\n", secret_value);
		m += (size_t)sprintf(resp + m, "HTTP/1.1 200 OK\r\nSet-Cookie: s=%s\r\n", secret_value);
		for (size_t i = 0; i < pads[k]; i++) {
			n += (size_t)sprintf(req + n, "X-Pad-%06zu: aaaaaaaaaaaaaaaaaaaaaa\r\n", i);
			m += (size_t)sprintf(resp + m, "X-Pad-%06zu: bbbbbbbbbbbbbbbbbbbbbb\r\n", i);
		}
		n += (size_t)sprintf(req + n, "\r\n");
		m += (size_t)sprintf(resp + m, "\r\n{}");
		struct history_bytes b = { req, n, resp, m };
		struct identity_opts io = { 0 };
		struct same s = { 0 };
		char *wq = malloc(2 * cap + 64), *ws = malloc(2 * cap + 64);
		s.want_req_len = history_redact(req, n, wq, &io, NULL);
		s.want_resp_len = history_redact(resp, m, ws, &io, NULL);
		s.want_req = wq;
		s.want_resp = ws;
		assert_int_equal(history__add(h, &t, "{}", 2, &b), 0);
		assert_int_equal(history__select(h, NULL, same_cb, &s), 0);
		assert_int_equal(s.seen, 1);
		free(wq);
		free(ws);
		free(req);
		free(resp);
		history__free(h);
	}
}

static void test_budget_and_eviction(void **state)
{
	(void)state;
	struct history *h;
	struct history_stats st;
	struct collect c;
	uint64_t i;

	errno = 0;
	assert_null(history__new(HISTORY_MIN_BUDGET - 1));
	assert_int_equal(errno, EINVAL);
	h = history__new(HISTORY_MIN_BUDGET);
	assert_non_null(h);
	for (i = 1; i <= 2000; i++) {
		assert_int_equal(add(h, i, i % 2 ? "alice" : "bob", (uint32_t)(100 + i % 3), "10.0.0.2", 1000), 0);
		history__stats(h, &st);
		assert_true(st.mem_bytes <= HISTORY_MIN_BUDGET);
		assert_true(st.bytes + st.index_bytes <= st.mem_bytes);
	}
	assert_true(st.evicted > 1900);
	assert_int_equal(st.entries + st.evicted, 2000);
	/* what is left is the newest, oldest first, with no hole */
	select_into(h, NULL, 0, &c);
	assert_int_equal(c.n, st.entries);
	for (size_t k = 0; k < c.n; k++)
		assert_int_equal(c.ids[k], 2000 - c.n + 1 + k);
	history__free(h);
}

static int stop_cb(void *ctx, const struct history_entry *e)
{
	(void)ctx;
	return e->sequence == 2 ? 42 : 0;
}

static void test_indexes(void **state)
{
	(void)state;
	struct history *h = history__new(1 << 20);
	struct collect c;

	/* 1 alice pid 10, 2 bob pid 20, 3 alice pid 20, 4 anonymous pid 10 from 10.9.9.9, 5 "ip:1.2.3.4" as a user */
	assert_int_equal(add(h, 1, "alice", 10, "10.0.0.2", 10), 0);
	assert_int_equal(add(h, 2, "bob", 20, "10.0.0.3", 10), 0);
	assert_int_equal(add(h, 3, "alice", 20, "10.0.0.2", 10), 0);
	assert_int_equal(add(h, 4, "-", 10, "10.9.9.9", 10), 0);
	assert_int_equal(add(h, 5, "ip:1.2.3.4", 30, "10.0.0.4", 10), 0);

	select_into(h, "alice", 0, &c);
	assert_int_equal(c.n, 2);
	assert_int_equal(c.seqs[0], 1);
	assert_int_equal(c.seqs[1], 3);
	select_into(h, NULL, 20, &c);
	assert_int_equal(c.n, 2);
	assert_int_equal(c.seqs[0], 2);
	assert_int_equal(c.seqs[1], 3);
	/* principal or process: union, oldest first, each once */
	select_into(h, "alice", 20, &c);
	assert_int_equal(c.n, 3);
	assert_int_equal(c.seqs[0], 1);
	assert_int_equal(c.seqs[1], 2);
	assert_int_equal(c.seqs[2], 3);
	select_into(h, "bob", 10, &c);
	assert_int_equal(c.n, 3);
	assert_int_equal(c.seqs[0], 1);
	assert_int_equal(c.seqs[1], 2);
	assert_int_equal(c.seqs[2], 4);
	/* an address principal: every call from that client */
	select_into(h, "ip:10.9.9.9", 0, &c);
	assert_int_equal(c.n, 1);
	assert_int_equal(c.seqs[0], 4);
	select_into(h, "ip:10.0.0.2", 0, &c);
	assert_int_equal(c.n, 2);
	/* a user who calls itself "ip:..." is "user:ip:..." (as detect keys it) */
	select_into(h, "user:ip:1.2.3.4", 0, &c);
	assert_int_equal(c.n, 1);
	assert_int_equal(c.seqs[0], 5);
	select_into(h, "ip:1.2.3.4", 0, &c);
	assert_int_equal(c.n, 0);
	select_into(h, "nobody", 0, &c);
	assert_int_equal(c.n, 0);
	select_into(h, "-", 0, &c);
	assert_int_equal(c.n, 0);
	select_into(h, NULL, 99, &c);
	assert_int_equal(c.n, 0);

	/* time: since <= ts_start < until */
	struct history_filter f = { .since_ns = T0 + 2 * SEC, .until_ns = T0 + 4 * SEC };
	memset(&c, 0, sizeof(c));
	history__select(h, &f, collect_cb, &c);
	assert_int_equal(c.n, 2);
	assert_int_equal(c.seqs[0], 2);
	assert_int_equal(c.seqs[1], 3);
	f = (struct history_filter){ .principal = "alice", .since_ns = T0 + 2 * SEC };
	memset(&c, 0, sizeof(c));
	history__select(h, &f, collect_cb, &c);
	assert_int_equal(c.n, 1);
	assert_int_equal(c.seqs[0], 3);

	/* a callback's non-zero stops and is returned */
	assert_int_equal(history__select(h, NULL, stop_cb, NULL), 42);
	history__free(h);
}

/* Random sizes, users, pids and addresses through many wrap-arounds: after every add the indexes agree with
 * a full scan, and memory stays within the budget. */
static void test_churn_consistency(void **state)
{
	(void)state;
	struct history *h = history__new(HISTORY_MIN_BUDGET * 2);
	uint64_t rnd = 88172645463325252ull;
	struct history_stats st;
	char users[8][8];

	for (int u = 0; u < 8; u++)
		snprintf(users[u], sizeof(users[u]), "u%d", u);
	for (uint64_t i = 1; i <= 5000; i++) {
		rnd ^= rnd << 13;
		rnd ^= rnd >> 7;
		rnd ^= rnd << 17;
		char ip[32];
		snprintf(ip, sizeof(ip), "10.1.%u.%u", (unsigned)(rnd >> 8 & 3), (unsigned)(rnd >> 16 & 255));
		int rc = add(h, i, rnd % 9 == 8 ? "-" : users[rnd % 8], (uint32_t)(1 + (rnd >> 24) % 5), ip,
			     (size_t)(rnd >> 32) % 3000);
		assert_int_equal(rc, 0);
		history__stats(h, &st);
		assert_true(st.mem_bytes <= HISTORY_MIN_BUDGET * 2);
		if (i % 97)
			continue;
		/* per pid counts from the index == from a scan; ids increase in every list */
		struct collect all, one;
		select_into(h, NULL, 0, &all);
		assert_int_equal(all.n, st.entries);
		size_t sum = 0;
		for (uint32_t pid = 1; pid <= 5; pid++) {
			select_into(h, NULL, pid, &one);
			for (size_t k = 1; k < one.n; k++)
				assert_true(one.ids[k] > one.ids[k - 1]);
			sum += one.n;
		}
		assert_int_equal(sum, all.n);
		sum = 0;
		for (int u = 0; u < 8; u++) {
			select_into(h, users[u], 0, &one);
			sum += one.n;
		}
		assert_true(sum <= all.n);
		for (size_t k = 1; k < all.n; k++)
			assert_int_equal(all.ids[k], all.ids[k - 1] + 1);
	}
	assert_true(st.evicted > 0);
	history__free(h);
}

/* Many distinct principals and addresses: the index reserve (budget/8) bounds them, by eviction. */
static void test_key_storm(void **state)
{
	(void)state;
	struct history *h = history__new(HISTORY_MIN_BUDGET);
	struct history_stats st;
	char user[64], ip[32];

	for (uint64_t i = 1; i <= 20000; i++) {
		snprintf(user, sizeof(user), "attacker-chosen-subject-%llu-xxxxxxxxxxxxxxxxxxxxxxxx", (unsigned long long)i);
		snprintf(ip, sizeof(ip), "10.%u.%u.%u", (unsigned)(i >> 16 & 255), (unsigned)(i >> 8 & 255),
			 (unsigned)(i & 255));
		assert_int_equal(add(h, i, user, (uint32_t)i, ip, 0), 0);
		history__stats(h, &st);
		assert_true(st.mem_bytes <= HISTORY_MIN_BUDGET);
		assert_true(st.index_bytes <= HISTORY_MIN_BUDGET / 8);
	}
	assert_int_equal(st.keys, 3 * st.entries);
	history__free(h);
}

static void test_too_big(void **state)
{
	(void)state;
	struct history *h = history__new(HISTORY_MIN_BUDGET);
	struct history_stats st;

	assert_int_equal(add(h, 1, "a", 1, "10.0.0.1", 10), 0);
	assert_int_equal(add(h, 2, "a", 1, "10.0.0.1", HISTORY_MIN_BUDGET), -EFBIG);
	history__stats(h, &st);
	assert_int_equal(st.rejected, 1);
	assert_int_equal(st.entries, 1);      /* nothing was evicted for an entry that cannot fit */
	assert_int_equal(add(h, 3, "a", 1, "10.0.0.1", 10), 0);
	history__free(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_basic_fields),
		cmocka_unit_test(test_redaction),
		cmocka_unit_test(test_redaction_every_cut),
		cmocka_unit_test(test_raw_secret_never_stored),
		cmocka_unit_test(test_redact_scratch_and_long),
		cmocka_unit_test(test_budget_and_eviction),
		cmocka_unit_test(test_indexes),
		cmocka_unit_test(test_churn_consistency),
		cmocka_unit_test(test_key_storm),
		cmocka_unit_test(test_too_big),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
