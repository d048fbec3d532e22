/* test_detect.c — cmocka tests for the detection engine and every detector (user/detect*.c)
 * on synthetic transaction streams: just under / just over each threshold, sliding-window
 * edges, many principals, LRU and idle eviction, suppression and its summary line.
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

#include <cjson/cJSON.h>

#include "detect.h"
#include "phiwatch/events.h"

#define MS 1000000ull
#define SEC 1000000000ull
/* 2025-11-28T10:00:00Z: a minute boundary */
#define T0 (1764324000ull * SEC)

/* ---- alert recorder ---- */

struct rec_alert {
	char rule[40];
	char principal[256];
	char msg[640];
	char ev[4096];
	uint64_t ts, count, threshold, window_s, suppressed;
	int sev;
	uint32_t pid;
};

struct rec {
	size_t n;
	struct rec_alert a[2048];
};

static struct rec *R;

static void copy(char *dst, size_t cap, const char *s)
{
	snprintf(dst, cap, "%s", s ? s : "");
}

static void rec_fn(void *ctx, const struct alert *a)
{
	struct rec *r = ctx;
	struct jbuf b;

	/* every alert must serialise to valid JSON */
	jbuf_init(&b);
	alert_to_json(a, &b);
	cJSON *j = cJSON_Parse(b.p);
	assert_non_null(j);
	cJSON_Delete(j);
	jbuf_free(&b);
	if (r->n >= sizeof(r->a) / sizeof(r->a[0]))
		return;
	struct rec_alert *x = &r->a[r->n++];
	copy(x->rule, sizeof(x->rule), a->rule);
	copy(x->principal, sizeof(x->principal), a->principal);
	copy(x->msg, sizeof(x->msg), a->message);
	copy(x->ev, sizeof(x->ev), a->evidence);
	x->ts = a->ts_ns;
	x->count = a->count;
	x->threshold = a->threshold;
	x->window_s = a->window_s;
	x->suppressed = a->suppressed;
	x->sev = a->severity;
	x->pid = a->pid;
}

/* Not inlined: GCC's -Wstringop-overread misjudges strstr on recorder fields. */
static __attribute__((noinline)) bool contains(const char *hay, const char *needle)
{
	return strstr(hay, needle) != NULL;
}

static size_t count_rule(const char *rule)
{
	size_t n = 0;
	for (size_t i = 0; i < R->n; i++)
		if (strcmp(R->a[i].rule, rule) == 0 && !R->a[i].suppressed)
			n++;
	return n;
}

static const struct rec_alert *find_rule(const char *rule)
{
	for (size_t i = 0; i < R->n; i++)
		if (strcmp(R->a[i].rule, rule) == 0 && !R->a[i].suppressed)
			return &R->a[i];
	return NULL;
}

static const struct rec_alert *find_summary(const char *rule)
{
	for (size_t i = 0; i < R->n; i++)
		if (strcmp(R->a[i].rule, rule) == 0 && R->a[i].suppressed)
			return &R->a[i];
	return NULL;
}

/* ---- transaction builder ---- */

struct tx {
	struct txn t;
	char target[512];
};

static struct txn *mk(struct tx *x, const char *user, const char *ip, uint64_t ts,
		      const char *target, int status)
{
	memset(x, 0, sizeof(*x));
	struct txn *t = &x->t;
	t->ts_start = ts;
	t->ts_end = ts + MS;
	t->pid = 4242;
	t->comm = "api";
	t->exe = "";
	copy(t->src_ip, sizeof(t->src_ip), ip);
	t->src_port = 40000;
	copy(t->dst_ip, sizeof(t->dst_ip), "10.0.0.1");
	t->dst_port = 443;
	t->tls = true;
	t->minor_version = 1;
	copy(t->method, sizeof(t->method), "GET");
	copy(x->target, sizeof(x->target), target);
	t->target = x->target;
	t->target_len = strlen(x->target);
	t->resp_bytes = 500;
	t->status = status;
	t->role = PW_ROLE_SERVER;
	t->user = user;
	t->auth = strcmp(user, "-") == 0 ? "none" : "bearer";
	t->jwt_scope = "";
	return t;
}

static void feed(struct detect *d, const char *user, const char *ip, uint64_t ts,
		 const char *target, int status)
{
	struct tx x;
	detect__txn(d, mk(&x, user, ip, ts, target, status));
}

static struct detect *new_detect(struct detect_opts *o)
{
	struct detect_opts def;
	if (!o) {
		detect_opts_default(&def);
		def.hash_seed = 7;
		o = &def;
	}
	struct detect *d = detect__new(o, rec_fn, R);
	assert_non_null(d);
	return d;
}

static int setup(void **state)
{
	(void)state;
	R = calloc(1, sizeof(*R));
	return R ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	free(R);
	R = NULL;
	return 0;
}

/* ---- rate_limit_exceeded ---- */

static void test_rate_100_in_60s_quiet(void **state)
{
	(void)state;
	struct detect *d = new_detect(NULL);
	/* 100 calls spread over 59.4 s: at the limit, not over */
	for (int i = 0; i < 100; i++)
		feed(d, "alice", "10.1.2.3", T0 + (uint64_t)i * 600 * MS, "/fhir/Observation", 200);
	assert_int_equal(count_rule("rate_limit_exceeded"), 0);
	detect__free(d);
}

static void test_rate_101_fires(void **state)
{
	(void)state;
	struct detect *d = new_detect(NULL);
	for (int i = 0; i < 101; i++)
		feed(d, "alice", "10.1.2.3", T0 + (uint64_t)i * 100 * MS, "/fhir/Observation", 200);
	assert_int_equal(count_rule("rate_limit_exceeded"), 1);
	const struct rec_alert *a = find_rule("rate_limit_exceeded");
	assert_non_null(a);
	assert_string_equal(a->principal, "alice");
	assert_int_equal(a->count, 101);
	assert_int_equal(a->threshold, 100);
	assert_int_equal(a->window_s, 60);
	assert_int_equal(a->ts, T0 + 100 * 100 * MS);
	assert_true(contains(a->msg, "101 requests"));
	assert_true(contains(a->ev, "\"sample_endpoints\":[\"GET /fhir/Observation\"]"));
	detect__free(d);
}

static void test_rate_across_minute_boundary(void **state)
{
	(void)state;
	struct detect *d = new_detect(NULL);
	/* 50 calls in the last 10 s of one minute, 51 in the first 10 s of the next:
	 * fixed minute buckets would see 50 and 51 */
	for (int i = 0; i < 50; i++)
		feed(d, "bob", "10.1.2.3", T0 + 50 * SEC + (uint64_t)i * 200 * MS, "/fhir/Patient", 200);
	assert_int_equal(count_rule("rate_limit_exceeded"), 0);
	for (int i = 0; i < 51; i++)
		feed(d, "bob", "10.1.2.3", T0 + 60 * SEC + (uint64_t)i * 190 * MS, "/fhir/Patient", 200);
	assert_int_equal(count_rule("rate_limit_exceeded"), 1);
	detect__free(d);
}

static void test_rate_window_edge_exact(void **state)
{
	(void)state;
	struct detect *d = new_detect(NULL);
	/* 101 calls, first to last exactly 60.000 s: inside one 60 s span */
	for (int i = 0; i < 100; i++)
		feed(d, "carol", "10.1.2.3", T0 + (uint64_t)i * 10 * MS, "/x", 200);
	feed(d, "carol", "10.1.2.3", T0 + 60000 * MS, "/x", 200);
	assert_int_equal(count_rule("rate_limit_exceeded"), 1);
	detect__free(d);
}

static void test_rate_window_edge_60001(void **state)
{
	(void)state;
	struct detect *d = new_detect(NULL);
	/* 101 calls over 60.001 s: no 60 s span holds 101 */
	feed(d, "dave", "10.1.2.3", T0, "/x", 200);
	for (int i = 1; i < 100; i++)
		feed(d, "dave", "10.1.2.3", T0 + 30 * SEC + (uint64_t)i * 10 * MS, "/x", 200);
	feed(d, "dave", "10.1.2.3", T0 + 60001 * MS, "/x", 200);
	assert_int_equal(count_rule("rate_limit_exceeded"), 0);
	detect__free(d);
}

static void test_rate_sliding_steady(void **state)
{
	(void)state;
	struct detect *d = new_detect(NULL);
	/* one call every 601 ms forever: never 101 in a 60 s span; one extra call is */
	for (int i = 0; i < 1000; i++)
		feed(d, "erin", "10.1.2.3", T0 + (uint64_t)i * 601 * MS, "/x", 200);
	assert_int_equal(count_rule("rate_limit_exceeded"), 0);
	feed(d, "erin", "10.1.2.3", T0 + 999 * 601 * MS + 300 * MS, "/x", 200);
	assert_int_equal(count_rule("rate_limit_exceeded"), 1);
	detect__free(d);
}

static void test_rate_anonymous_keys_on_ip(void **state)
{
	(void)state;
	struct detect *d = new_detect(NULL);
	for (int i = 0; i < 101; i++)
		feed(d, "-", "10.9.8.7", T0 + (uint64_t)i * MS, "/x", 200);
	const struct rec_alert *a = find_rule("rate_limit_exceeded");
	assert_non_null(a);
	assert_non_null(a);
	assert_string_equal(a->principal, "ip:10.9.8.7");
	/* another IP has its own window */
	feed(d, "-", "10.9.8.8", T0 + 200 * MS, "/x", 200);
	assert_int_equal(count_rule("rate_limit_exceeded"), 1);
	/* a user named like an address is kept apart from that address */
	for (int i = 0; i < 60; i++) {
		feed(d, "ip:10.9.8.8", "10.1.1.1", T0 + 300 * MS + (uint64_t)i * MS, "/x", 200);
		feed(d, "-", "10.9.8.8", T0 + 300 * MS + (uint64_t)i * MS, "/x", 200);
	}
	assert_int_equal(count_rule("rate_limit_exceeded"), 1);
	for (int i = 0; i < 41; i++)
		feed(d, "ip:10.9.8.8", "10.1.1.1", T0 + 400 * MS + (uint64_t)i * MS, "/x", 200);
	assert_int_equal(count_rule("rate_limit_exceeded"), 2);
	assert_string_equal(R->a[R->n - 1].principal, "user:ip:10.9.8.8");
	detect__free(d);
}

static void test_rate_out_of_order(void **state)
{
	(void)state;
	struct detect *d = new_detect(NULL);
	/* transactions are reported when they end: a slow one arrives late */
	for (int i = 0; i < 100; i++)
		feed(d, "gil", "10.1.2.3", T0 + 1 * SEC + (uint64_t)i * 100 * MS, "/x", 200);
	assert_int_equal(count_rule("rate_limit_exceeded"), 0);
	feed(d, "gil", "10.1.2.3", T0 + 500 * MS, "/slow", 200);  /* started first, inside the span */
	assert_int_equal(count_rule("rate_limit_exceeded"), 1);
	detect__free(d);
}

static void test_rate_client_role_ignored(void **state)
{
	(void)state;
	struct detect *d = new_detect(NULL);
	struct tx x;
	for (int i = 0; i < 150; i++) {
		struct txn *t = mk(&x, "svc", "10.1.2.3", T0 + (uint64_t)i * MS, "/x", 200);
		t->role = PW_ROLE_CLIENT;
		detect__txn(d, t);
	}
	assert_int_equal(count_rule("rate_limit_exceeded"), 0);
	detect__free(d);
}

/* ---- rate_limit_not_enforced ---- */

static void test_not_enforced_fires(void **state)
{
	(void)state;
	struct detect *d = new_detect(NULL);
	for (int i = 0; i < 109; i++)
		feed(d, "frank", "10.1.2.3", T0 + (uint64_t)i * 10 * MS, "/x", 200);
	/* 9 answered 2xx past the limit: one short */
	assert_int_equal(count_rule("rate_limit_not_enforced"), 0);
	feed(d, "frank", "10.1.2.3", T0 + 109 * 10 * MS, "/x", 200);
	assert_int_equal(count_rule("rate_limit_not_enforced"), 1);
	const struct rec_alert *a = find_rule("rate_limit_not_enforced");
	assert_non_null(a);
	assert_int_equal(a->count, 10);
	assert_int_equal(a->sev, ALERT_SEV_HIGH);
	detect__free(d);
}

static void test_not_enforced_quiet_when_429(void **state)
{
	(void)state;
	struct detect *d = new_detect(NULL);
	for (int i = 0; i < 100; i++)
		feed(d, "grace", "10.1.2.3", T0 + (uint64_t)i * 10 * MS, "/x", 200);
	for (int i = 100; i < 300; i++)
		feed(d, "grace", "10.1.2.3", T0 + (uint64_t)i * 10 * MS, "/x", 429);
	assert_int_equal(count_rule("rate_limit_exceeded"), 1);
	assert_int_equal(count_rule("rate_limit_not_enforced"), 0);
	detect__free(d);
}

/* ---- patient_enumeration ---- */

static void feed_patient(struct detect *d, const char *user, uint64_t ts, const char *id)
{
	struct tx x;
	char target[128];
	snprintf(target, sizeof(target), "/fhir/Patient/%s", id);
	struct txn *t = mk(&x, user, "10.1.2.3", ts, target, 200);
	t->resource_type = "Patient";
	t->resource_ids[0] = id;
	t->n_resource_ids = 1;
	detect__txn(d, t);
}

static void test_enum_50_quiet_51_fires(void **state)
{
	(void)state;
	struct detect *d = new_detect(NULL);
	char id[32];
	/* 50 distinct, each touched twice, over 9 minutes */
	for (int k = 0; k < 2; k++)
		for (int i = 0; i < 50; i++) {
			snprintf(id, sizeof(id), "p%d", i);
			feed_patient(d, "henry", T0 + (uint64_t)(k * 50 + i) * 5 * SEC, id);
		}
	assert_int_equal(count_rule("patient_enumeration"), 0);
	feed_patient(d, "henry", T0 + 595 * SEC, "p50");
	assert_int_equal(count_rule("patient_enumeration"), 1);
	const struct rec_alert *a = find_rule("patient_enumeration");
	assert_non_null(a);
	assert_int_equal(a->count, 51);
	assert_int_equal(a->threshold, 50);
	assert_int_equal(a->window_s, 600);
	/* the syslog-bound message names no patient */
	assert_false(contains(a->msg, "p50"));
	assert_true(contains(a->ev, "/fhir/Patient/p50"));
	detect__free(d);
}

static void test_enum_sliding_expiry(void **state)
{
	(void)state;
	struct detect *d = new_detect(NULL);
	char id[32];
	/* one new patient every 12.02 s: 50 per 10 min, forever, never 51 */
	for (int i = 0; i < 500; i++) {
		snprintf(id, sizeof(id), "q%d", i);
		feed_patient(d, "ivan", T0 + (uint64_t)i * 12020 * MS, id);
	}
	assert_int_equal(count_rule("patient_enumeration"), 0);
	/* one more inside the same 10 minutes */
	feed_patient(d, "ivan", T0 + 499 * 12020 * MS + 6 * SEC, "extra");
	assert_int_equal(count_rule("patient_enumeration"), 1);
	detect__free(d);
}

static void test_enum_window_edge(void **state)
{
	(void)state;
	struct detect *d = new_detect(NULL);
	char id[32];
	/* 51 distinct, first to last 600.001 s: no 10 min span holds 51 */
	feed_patient(d, "judy", T0, "first");
	for (int i = 0; i < 49; i++) {
		snprintf(id, sizeof(id), "r%d", i);
		feed_patient(d, "judy", T0 + 300 * SEC + (uint64_t)i * SEC, id);
	}
	feed_patient(d, "judy", T0 + 600001 * MS, "last");
	assert_int_equal(count_rule("patient_enumeration"), 0);
	/* while at exactly 600.000 s it does */
	feed_patient(d, "kim", T0, "first");
	for (int i = 0; i < 49; i++) {
		snprintf(id, sizeof(id), "r%d", i);
		feed_patient(d, "kim", T0 + 300 * SEC + (uint64_t)i * SEC, id);
	}
	feed_patient(d, "kim", T0 + 600000 * MS, "last");
	assert_int_equal(count_rule("patient_enumeration"), 1);
	detect__free(d);
}

static void test_enum_many_ids_one_call(void **state)
{
	(void)state;
	struct detect *d = new_detect(NULL);
	struct tx x;
	char ids[64][16];
	/* a search returning 16 patients per call: 4 calls = 64 distinct */
	for (int c = 0; c < 4; c++) {
		struct txn *t = mk(&x, "leo", "10.1.2.3", T0 + (uint64_t)c * SEC, "/fhir/Patient?name=a", 200);
		t->resource_type = "Patient";
		for (int i = 0; i < 16; i++) {
			snprintf(ids[c * 16 + i], sizeof(ids[0]), "s%d", c * 16 + i);
			t->resource_ids[i] = ids[c * 16 + i];
		}
		t->n_resource_ids = 16;
		detect__txn(d, t);
		assert_int_equal(count_rule("patient_enumeration"), c < 3 ? 0 : 1);
	}
	detect__free(d);
}


/* ---- differential: the engine against brute force on random streams ---- */

struct flag_rec {
	const char *rule;
	bool fired;
};

static void flag_fn(void *ctx, const struct alert *a)
{
	struct flag_rec *f = ctx;
	if (strcmp(a->rule, f->rule) == 0 && !a->suppressed)
		f->fired = true;
}

static void test_rate_vs_brute_force(void **state)
{
	(void)state;
	struct detect_opts o;
	struct flag_rec f = { "rate_limit_exceeded", false };
	detect_opts_default(&o);
	o.hash_seed = 5;
	o.suppress_s = 0;      /* every candidate is an alert */
	o.rate.limit = 7;
	o.rate.window_s = 2;
	struct detect *d = detect__new(&o, flag_fn, &f);
	static uint64_t ts[20000];
	uint32_t x = 99;
	uint64_t t = T0;
	for (int i = 0; i < 20000; i++) {
		x = x * 1103515245u + 12345u;
		/* bursts and gaps, ms resolution */
		t += ((x >> 16) % 4 == 0) ? (x >> 8) % 900 * MS : (x >> 8) % 60 * MS;
		ts[i] = t;
		struct tx tx;
		f.fired = false;
		detect__txn(d, mk(&tx, "rnd", "10.1.2.3", t, "/x", 429));
		int n = 0;
		for (int j = i; j >= 0 && t - ts[j] <= 2000 * MS; j--)
			n++;
		if (f.fired != (n > 7))
			fail_msg("call %d: %d calls in the window, fired %d", i, n, f.fired);
	}
	detect__free(d);
}

static void test_enum_vs_brute_force(void **state)
{
	(void)state;
	struct detect_opts o;
	struct flag_rec f = { "patient_enumeration", false };
	detect_opts_default(&o);
	o.hash_seed = 5;
	o.suppress_s = 0;
	o.enumeration.max_patients = 5;
	o.enumeration.window_s = 3;
	struct detect *d = detect__new(&o, flag_fn, &f);
	enum { POOLN = 40 };
	uint64_t last[POOLN];
	char names[POOLN][8];
	for (int i = 0; i < POOLN; i++) {
		last[i] = 0;
		snprintf(names[i], sizeof(names[i]), "id%d", i);
	}
	uint32_t x = 7;
	uint64_t t = T0;
	for (int i = 0; i < 30000; i++) {
		x = x * 1103515245u + 12345u;
		t += ((x >> 16) % 8 == 0) ? (x >> 8) % 2500 * MS : (x >> 8) % 90 * MS;
		struct tx tx;
		struct txn *tt = mk(&tx, "rnd", "10.1.2.3", t, "/fhir/Patient", 200);
		int k = 1 + (int)((x >> 4) % 3);
		bool fresh = false;
		for (int j = 0; j < k; j++) {
			x = x * 1103515245u + 12345u;
			/* a small hot set and a wide cold set */
			int id = (x >> 9) % 4 ? (int)((x >> 12) % 6) : (int)((x >> 12) % POOLN);
			tt->resource_ids[j] = names[id];
			if (!last[id] || t - last[id] > 3000 * MS)
				fresh = true;
			last[id] = t;
		}
		tt->n_resource_ids = (size_t)k;
		f.fired = false;
		detect__txn(d, tt);
		int n = 0;
		for (int j = 0; j < POOLN; j++)
			n += last[j] && t - last[j] <= 3000 * MS;
		/* must fire on a new patient over the limit; never when not over */
		if (n <= 5 && f.fired)
			fail_msg("call %d: %d distinct, fired", i, n);
		if (n > 5 && fresh && !f.fired)
			fail_msg("call %d: %d distinct with a new one, did not fire", i, n);
	}
	detect__free(d);
}

static void test_enum_prune_heavy(void **state)
{
	(void)state;
	struct detect *d = new_detect(NULL);
	char id[32];
	struct detect_stats st0, st1;
	/* an enumerator walks 5,000 ids in 50 s: state stays bounded */
	for (int i = 0; i < 5000; i++) {
		snprintf(id, sizeof(id), "e%d", i);
		feed_patient(d, "walker", T0 + (uint64_t)i * 10 * MS, id);
	}
	assert_int_equal(count_rule("patient_enumeration"), 1);
	detect__stats(d, &st0);
	assert_int_equal(st0.suppressed[DETECT_RULE_PATIENT_ENUMERATION], 5000 - 51);
	assert_true(st0.mem_detectors < 8192);
	/* 11 minutes later: the old ones have left the window */
	for (int i = 0; i < 50; i++) {
		snprintf(id, sizeof(id), "late%d", i);
		feed_patient(d, "walker", T0 + 700 * SEC + (uint64_t)i * SEC, id);
	}
	detect__stats(d, &st1);
	assert_int_equal(count_rule("patient_enumeration"), 1);
	assert_int_equal(st1.suppressed[DETECT_RULE_PATIENT_ENUMERATION],
			 st0.suppressed[DETECT_RULE_PATIENT_ENUMERATION]);
	detect__free(d);
}

/* ---- bulk_export ---- */

static enum detect_export_kind classify(const char *target, uint64_t bytes)
{
	struct detect_opts o;
	const char *p, *q;
	size_t pl, ql;
	bool hq;
	detect_opts_default(&o);
	txn_split_target(target, strlen(target), &p, &pl, &q, &ql, &hq);
	return detect_export_classify(&o, p, pl, hq ? q : NULL, ql, bytes);
}

static void test_export_classify(void **state)
{
	(void)state;
	assert_int_equal(classify("/fhir/Patient/$export", 0), DETECT_EXPORT_FHIR);
	assert_int_equal(classify("/fhir/Group/7/$export?_type=Patient", 0), DETECT_EXPORT_FHIR);
	assert_int_equal(classify("/fhir/%24export", 0), DETECT_EXPORT_FHIR);
	assert_int_equal(classify("/fhir/$export-poll-status?_jobId=1", 0), DETECT_EXPORT_NONE);
	assert_int_equal(classify("/api/v1/export/patients", 0), DETECT_EXPORT_ROUTE);
	assert_int_equal(classify("/api/Reports/Export.csv", 0), DETECT_EXPORT_ROUTE);
	assert_int_equal(classify("/api/exporter", 0), DETECT_EXPORT_NONE);
	assert_int_equal(classify("/api/_export", 0), DETECT_EXPORT_ROUTE);
	assert_int_equal(classify("/API/BULK-EXPORT/x", 0), DETECT_EXPORT_ROUTE);
	assert_int_equal(classify("/fhir/Observation?_COUNT=2000", 0), DETECT_EXPORT_LARGE_PAGE);
	assert_int_equal(classify("/a?page_size=1000;x=1", 0), DETECT_EXPORT_LARGE_PAGE);
	assert_int_equal(classify("/a?per_page=10000000", 0), DETECT_EXPORT_LARGE_PAGE);
	assert_int_equal(classify("/a?=5000&_count", 0), DETECT_EXPORT_NONE);
	assert_int_equal(classify("/fhir/Binary/abc", 0), DETECT_EXPORT_ATTACHMENT);
	assert_int_equal(classify("/fhir/Binary", 0), DETECT_EXPORT_NONE);
	assert_int_equal(classify("/fhir/DocumentReference/9/attachment", 0), DETECT_EXPORT_ATTACHMENT);
	assert_int_equal(classify("/fhir/DocumentReference/9/content", 0), DETECT_EXPORT_ATTACHMENT);
	assert_int_equal(classify("/fhir/DocumentReference/9", 0), DETECT_EXPORT_NONE);
	assert_int_equal(classify("/fhir/Observation?_count=1000", 0), DETECT_EXPORT_LARGE_PAGE);
	assert_int_equal(classify("/fhir/Observation?code=x&_count=999", 0), DETECT_EXPORT_NONE);
	assert_int_equal(classify("/api/items?limit=5000&x=1", 0), DETECT_EXPORT_LARGE_PAGE);
	assert_int_equal(classify("/api/items?limit=abc", 0), DETECT_EXPORT_NONE);
	assert_int_equal(classify("/fhir/Observation?_count=99999999999999999999999", 0),
			 DETECT_EXPORT_LARGE_PAGE);
	assert_int_equal(classify("/fhir/Observation", 10u << 20), DETECT_EXPORT_LARGE_RESPONSE);
	assert_int_equal(classify("/fhir/Observation", (10u << 20) - 1), DETECT_EXPORT_NONE);
	assert_int_equal(classify("http://h/fhir/$export", 0), DETECT_EXPORT_FHIR);
	assert_int_equal(classify("", 0), DETECT_EXPORT_NONE);
	assert_int_equal(classify("/", 0), DETECT_EXPORT_NONE);
}

static void test_export_2_quiet_3_fires(void **state)
{
	(void)state;
	struct detect *d = new_detect(NULL);
	feed(d, "mia", "10.1.2.3", T0, "/fhir/Patient/$export", 202);
	feed(d, "mia", "10.1.2.3", T0 + 600 * SEC, "/fhir/Observation?_count=5000", 200);
	feed(d, "mia", "10.1.2.3", T0 + 700 * SEC, "/fhir/Patient/$export", 401);  /* refused */
	feed(d, "mia", "10.1.2.3", T0 + 800 * SEC, "/fhir/Observation", 200);     /* not an export */
	assert_int_equal(count_rule("bulk_export"), 0);
	feed(d, "mia", "10.1.2.3", T0 + 3600 * SEC, "/fhir/Binary/77", 200);
	assert_int_equal(count_rule("bulk_export"), 1);
	const struct rec_alert *a = find_rule("bulk_export");
	assert_non_null(a);
	assert_int_equal(a->count, 3);
	assert_true(contains(a->ev, "\"kind\":\"fhir_export\""));
	assert_true(contains(a->ev, "\"kind\":\"large_page\""));
	assert_true(contains(a->ev, "GET /fhir/Binary/77"));
	assert_false(contains(a->msg, "/fhir"));
	detect__free(d);
}

static void test_export_window_edge(void **state)
{
	(void)state;
	struct detect *d = new_detect(NULL);
	feed(d, "ned", "10.1.2.3", T0, "/api/export", 200);
	feed(d, "ned", "10.1.2.3", T0 + 1800 * SEC, "/api/export", 200);
	feed(d, "ned", "10.1.2.3", T0 + 3600001 * MS, "/api/export", 200);
	assert_int_equal(count_rule("bulk_export"), 0);
	feed(d, "ned", "10.1.2.3", T0 + 3601 * SEC, "/api/export", 200);
	assert_int_equal(count_rule("bulk_export"), 1);
	detect__free(d);
}

static void test_export_flagged_by_resource(void **state)
{
	(void)state;
	struct detect *d = new_detect(NULL);
	struct tx x;
	for (int i = 0; i < 3; i++) {
		struct txn *t = mk(&x, "pia", "10.1.2.3", T0 + (uint64_t)i * SEC, "/api/dump", 200);
		t->is_export = true;
		detect__txn(d, t);
	}
	assert_int_equal(count_rule("bulk_export"), 1);
	assert_true(contains(find_rule("bulk_export")->ev, "\"kind\":\"resource_export\""));
	detect__free(d);
}

static void test_export_large_response(void **state)
{
	(void)state;
	struct detect *d = new_detect(NULL);
	struct tx x;
	for (int i = 0; i < 3; i++) {
		struct txn *t = mk(&x, "olga", "10.1.2.3", T0 + (uint64_t)i * SEC, "/api/report", 200);
		t->resp_bytes = 11u << 20;
		detect__txn(d, t);
	}
	assert_int_equal(count_rule("bulk_export"), 1);
	detect__free(d);
}

/* ---- auth_failures ---- */

static void test_authfail_9_quiet_10_fires(void **state)
{
	(void)state;
	struct detect *d = new_detect(NULL);
	for (int i = 0; i < 9; i++)
		feed(d, "pat", "10.1.2.3", T0 + (uint64_t)i * 6 * SEC, "/x", i % 2 ? 401 : 403);
	feed(d, "pat", "10.1.2.3", T0 + 30 * SEC, "/x", 200);
	assert_int_equal(count_rule("auth_failures"), 0);
	feed(d, "pat", "10.1.2.3", T0 + 59 * SEC, "/x", 401);
	assert_int_equal(count_rule("auth_failures"), 1);
	const struct rec_alert *a = find_rule("auth_failures");
	assert_non_null(a);
	assert_string_equal(a->principal, "pat");
	assert_int_equal(a->count, 10);
	detect__free(d);
}

static void test_authfail_window_edge(void **state)
{
	(void)state;
	struct detect *d = new_detect(NULL);
	feed(d, "quin", "10.1.2.3", T0, "/x", 401);
	for (int i = 0; i < 8; i++)
		feed(d, "quin", "10.1.2.3", T0 + 30 * SEC + (uint64_t)i * SEC, "/x", 401);
	feed(d, "quin", "10.1.2.3", T0 + 60001 * MS, "/x", 401);
	assert_int_equal(count_rule("auth_failures"), 0);
	detect__free(d);
}

static void test_authfail_by_source_ip(void **state)
{
	(void)state;
	struct detect *d = new_detect(NULL);
	char user[32];
	/* credential stuffing: one IP, ten users, one failure each */
	for (int i = 0; i < 10; i++) {
		snprintf(user, sizeof(user), "user%d", i);
		feed(d, user, "203.0.113.9", T0 + (uint64_t)i * SEC, "/login", 401);
	}
	assert_int_equal(count_rule("auth_failures"), 1);
	assert_string_equal(find_rule("auth_failures")->principal, "ip:203.0.113.9");
	assert_true(contains(find_rule("auth_failures")->ev, "\"keyed_on\":\"source_ip\""));
	detect__free(d);
}

/* ---- rate_anomaly ---- */

static void test_anomaly_learns_then_fires(void **state)
{
	(void)state;
	struct detect *d = new_detect(NULL);
	uint64_t t = T0;
	/* 30 minutes of 10 calls per minute */
	for (int m = 0; m < 30; m++)
		for (int i = 0; i < 10; i++)
			feed(d, "ruth", "10.1.2.3", t + (uint64_t)m * 60 * SEC + (uint64_t)i * 5 * SEC, "/x", 200);
	assert_int_equal(count_rule("rate_anomaly"), 0);
	/* minute 30: 49 calls in 49 s (under 5 x 10 = 50 together with the decayed previous minute?) */
	uint64_t m30 = t + 30 * 60 * SEC;
	for (int i = 0; i < 45; i++)
		feed(d, "ruth", "10.1.2.3", m30 + 10 * SEC + (uint64_t)i * SEC, "/x", 200);
	/* 45 + 10 * (1 - 54/60) = 46 < 50 */
	assert_int_equal(count_rule("rate_anomaly"), 0);
	for (int i = 0; i < 5; i++)
		feed(d, "ruth", "10.1.2.3", m30 + 55 * SEC + (uint64_t)i * 100 * MS, "/x", 200);
	assert_int_equal(count_rule("rate_anomaly"), 1);
	const struct rec_alert *a = find_rule("rate_anomaly");
	assert_non_null(a);
	assert_true(contains(a->ev, "\"baseline_per_min\":10.00"));
	assert_int_equal(a->threshold, 50);
	assert_int_equal(count_rule("rate_limit_exceeded"), 0);
	detect__free(d);
}

static void test_anomaly_not_while_learning(void **state)
{
	(void)state;
	struct detect *d = new_detect(NULL);
	/* 5 quiet minutes, then a burst of 90: the baseline is not learned yet */
	for (int m = 0; m < 5; m++)
		feed(d, "sam", "10.1.2.3", T0 + (uint64_t)m * 60 * SEC, "/x", 200);
	for (int i = 0; i < 90; i++)
		feed(d, "sam", "10.1.2.3", T0 + 5 * 60 * SEC + (uint64_t)i * 500 * MS, "/x", 200);
	assert_int_equal(count_rule("rate_anomaly"), 0);
	detect__free(d);
}

static void test_anomaly_floor(void **state)
{
	(void)state;
	struct detect *d = new_detect(NULL);
	/* a quiet user: 1 call a minute for an hour, then 29 in 29 s: 29x its baseline but
	 * under the floor of 30 (29 + the decayed previous minute = 29.5) */
	for (int m = 0; m < 60; m++)
		feed(d, "tess", "10.1.2.3", T0 + (uint64_t)m * 60 * SEC, "/x", 200);
	for (int i = 0; i < 29; i++)
		feed(d, "tess", "10.1.2.3", T0 + 60 * 60 * SEC + (uint64_t)(i + 1) * SEC, "/x", 200);
	assert_int_equal(count_rule("rate_anomaly"), 0);
	/* the 30th reaches the floor */
	feed(d, "tess", "10.1.2.3", T0 + 60 * 60 * SEC + 40 * SEC, "/x", 200);
	assert_int_equal(count_rule("rate_anomaly"), 1);
	detect__free(d);
}

/* ---- HIPAA checks ---- */

static void test_basic_auth(void **state)
{
	(void)state;
	struct detect *d = new_detect(NULL);
	struct tx x;
	struct txn *t = mk(&x, "uma", "10.1.2.3", T0, "/fhir/metadata", 200);
	detect__txn(d, t);
	assert_int_equal(count_rule("basic_auth"), 0);
	t->auth = "basic";
	t->tls = false;
	detect__txn(d, t);
	assert_int_equal(count_rule("basic_auth"), 1);
	assert_int_equal(find_rule("basic_auth")->sev, ALERT_SEV_HIGH);
	detect__free(d);
}

static void test_plaintext_phi(void **state)
{
	(void)state;
	struct detect *d = new_detect(NULL);
	struct tx x;
	struct txn *t = mk(&x, "vic", "127.0.0.1", T0, "/fhir/Patient/1", 200);
	t->resource_type = "Patient";
	t->resource_ids[0] = "1";
	t->n_resource_ids = 1;
	t->tls = false;
	detect__txn(d, t);                        /* loopback peer */
	assert_int_equal(count_rule("plaintext_phi"), 0);
	copy(t->src_ip, sizeof(t->src_ip), "::1");
	detect__txn(d, t);
	assert_int_equal(count_rule("plaintext_phi"), 0);
	copy(t->src_ip, sizeof(t->src_ip), "10.2.3.4");
	t->tls = true;
	detect__txn(d, t);                        /* TLS */
	assert_int_equal(count_rule("plaintext_phi"), 0);
	t->tls = false;
	t->status = 404;
	detect__txn(d, t);                        /* nothing served */
	assert_int_equal(count_rule("plaintext_phi"), 0);
	t->status = 200;
	detect__txn(d, t);
	assert_int_equal(count_rule("plaintext_phi"), 1);
	const struct rec_alert *a = find_rule("plaintext_phi");
	assert_non_null(a);
	assert_int_equal(a->sev, ALERT_SEV_CRITICAL);
	assert_true(contains(a->msg, "10.2.3.4"));
	assert_false(contains(a->msg, "/fhir/Patient/1"));
	/* a client-role call: the peer is the server side */
	struct detect *d2 = new_detect(NULL);
	R->n = 0;
	t->role = PW_ROLE_CLIENT;
	copy(t->src_ip, sizeof(t->src_ip), "10.0.0.5");
	copy(t->dst_ip, sizeof(t->dst_ip), "127.0.0.1");
	detect__txn(d2, t);
	assert_int_equal(count_rule("plaintext_phi"), 0);
	copy(t->dst_ip, sizeof(t->dst_ip), "198.51.100.1");
	detect__txn(d2, t);
	assert_int_equal(count_rule("plaintext_phi"), 1);
	detect__free(d2);
	detect__free(d);
}

static void test_long_lived_token(void **state)
{
	(void)state;
	struct detect *d = new_detect(NULL);
	struct tx x;
	struct txn *t = mk(&x, "walt", "10.1.2.3", T0, "/x", 200);
	t->jwt = true;
	t->jwt_has_iat = t->jwt_has_exp = true;
	t->jwt_iat = 1764320000;
	t->jwt_exp = t->jwt_iat + 3600;
	detect__txn(d, t);
	assert_int_equal(count_rule("long_lived_token"), 0);
	t->user = "xena";
	t->jwt_exp = t->jwt_iat + 3601;
	detect__txn(d, t);
	assert_int_equal(count_rule("long_lived_token"), 1);
	assert_int_equal(find_rule("long_lived_token")->count, 3601);
	/* no exp at all */
	t->user = "yves";
	t->jwt_has_exp = false;
	detect__txn(d, t);
	assert_int_equal(count_rule("long_lived_token"), 2);
	/* exp only, far ahead of the call */
	t->user = "zack";
	t->jwt_has_exp = true;
	t->jwt_has_iat = false;
	t->jwt_exp = (int64_t)(T0 / SEC) + 1800;
	detect__txn(d, t);
	assert_int_equal(count_rule("long_lived_token"), 2);
	t->jwt_exp = (int64_t)(T0 / SEC) + 86400;
	detect__txn(d, t);
	assert_int_equal(count_rule("long_lived_token"), 3);
	/* hostile iat/exp do not overflow */
	t->user = "abe";
	t->jwt_has_iat = true;
	t->jwt_iat = INT64_MIN;
	t->jwt_exp = INT64_MAX;
	detect__txn(d, t);
	assert_int_equal(count_rule("long_lived_token"), 4);
	detect__free(d);
}

static void test_sensitive_data(void **state)
{
	(void)state;
	struct detect *d = new_detect(NULL);
	struct tx x;
	struct txn *t = mk(&x, "bea", "10.1.2.3", T0, "/api/people/5", 200);
	t->ssn_count = 2;
	t->ssn_first_offset = 120;
	copy(t->ssn_masked, sizeof(t->ssn_masked), "***-**-6789");
	detect__txn(d, t);
	assert_int_equal(count_rule("sensitive_data_exposed"), 1);
	const struct rec_alert *a = find_rule("sensitive_data_exposed");
	assert_non_null(a);
	assert_int_equal(a->sev, ALERT_SEV_HIGH);
	assert_true(contains(a->ev, "\"first_masked\":\"***-**-6789\""));
	assert_true(contains(a->ev, "\"first_offset\":120"));
	assert_false(contains(a->msg, "6789"));
	/* a masked field that is not masked is not copied out */
	R->n = 0;
	t->user = "cy";
	copy(t->ssn_masked, sizeof(t->ssn_masked), "123-45-6789");
	detect__txn(d, t);
	assert_false(contains(find_rule("sensitive_data_exposed")->ev, "123-45"));
	detect__free(d);
}

/* ---- capture_loss ---- */

static void test_capture_loss(void **state)
{
	(void)state;
	struct detect *d = new_detect(NULL);
	static const char *const names[] = { "ringbuf_data", "ringbuf_meta", "args_full" };
	uint64_t drops[3] = { 0, 0, 0 };

	detect__drops(d, T0, drops, 3, names);
	assert_int_equal(count_rule("capture_loss"), 0);
	drops[0] = 5;
	detect__drops(d, T0 + 1 * SEC, drops, 3, names);
	assert_int_equal(count_rule("capture_loss"), 1);
	const struct rec_alert *a = find_rule("capture_loss");
	assert_non_null(a);
	assert_int_equal(a->ts, T0 + 1 * SEC);     /* on the first report that saw it */
	assert_int_equal(a->count, 5);
	assert_string_equal(a->principal, "-");
	assert_true(contains(a->ev, "\"ringbuf_data\":5"));
	/* more drops inside the window: suppressed, remembered */
	drops[0] = 8;
	drops[2] = 1;
	detect__drops(d, T0 + 2 * SEC, drops, 3, names);
	drops[0] = 10;
	detect__drops(d, T0 + 3 * SEC, drops, 3, names);
	detect__drops(d, T0 + 4 * SEC, drops, 3, names);   /* nothing new: not even suppressed */
	assert_int_equal(count_rule("capture_loss"), 1);
	struct detect_stats st;
	detect__stats(d, &st);
	assert_int_equal(st.suppressed[DETECT_RULE_CAPTURE_LOSS], 2);
	/* the window ends: the summary, then the next alert counts all since */
	detect__tick(d, T0 + 302 * SEC);
	assert_non_null(find_summary("capture_loss"));
	drops[1] = 1;
	detect__drops(d, T0 + 303 * SEC, drops, 3, names);
	assert_int_equal(count_rule("capture_loss"), 2);
	assert_int_equal(R->a[R->n - 1].count, 7);   /* 3 + 1 + 2 suppressed, + the new 1 */
	detect__free(d);
}

/* ---- suppression ---- */

static void test_suppression_summary_on_tick(void **state)
{
	(void)state;
	struct detect *d = new_detect(NULL);
	/* 118 calls in 11.8 s: call 101 alerts, 17 more are suppressed */
	for (int i = 0; i < 118; i++)
		feed(d, "dora", "10.1.2.3", T0 + (uint64_t)i * 100 * MS, "/x", 429);
	assert_int_equal(count_rule("rate_limit_exceeded"), 1);
	assert_null(find_summary("rate_limit_exceeded"));
	detect__tick(d, T0 + 10 * SEC + 299 * SEC);   /* window opened at 10.0 s: not over */
	assert_null(find_summary("rate_limit_exceeded"));
	detect__tick(d, T0 + 10 * SEC + 300 * SEC);
	const struct rec_alert *s = find_summary("rate_limit_exceeded");
	assert_non_null(s);
	assert_non_null(s);
	assert_int_equal(s->suppressed, 17);
	assert_string_equal(s->principal, "dora");
	assert_true(contains(s->msg, "17 more suppressed in 300 s"));
	assert_int_equal(s->ts, T0 + 310 * SEC);
	struct detect_stats st;
	detect__stats(d, &st);
	assert_int_equal(st.summaries, 1);
	assert_int_equal(st.alerts[DETECT_RULE_RATE_LIMIT_EXCEEDED], 1);
	assert_int_equal(st.suppressed[DETECT_RULE_RATE_LIMIT_EXCEEDED], 17);
	detect__free(d);
}

static void test_suppression_summary_on_later_txn(void **state)
{
	(void)state;
	struct detect *d = new_detect(NULL);
	for (int i = 0; i < 103; i++)
		feed(d, "eve", "10.1.2.3", T0 + (uint64_t)i * 10 * MS, "/x", 429);
	/* any later transaction past the window end closes it, then a new alert may open */
	for (int i = 0; i < 101; i++)
		feed(d, "eve", "10.1.2.3", T0 + 400 * SEC + (uint64_t)i * 10 * MS, "/x", 429);
	assert_int_equal(count_rule("rate_limit_exceeded"), 2);
	const struct rec_alert *s = find_summary("rate_limit_exceeded");
	assert_non_null(s);
	assert_non_null(s);
	assert_int_equal(s->suppressed, 2);
	/* order: first alert, summary, second alert */
	size_t is = (size_t)(s - R->a);
	assert_true(is > 0 && is < R->n - 1);
	/* no summary for a window with nothing suppressed */
	detect__tick(d, T0 + 2000 * SEC);
	detect__flush(d);
	size_t sums = 0;
	for (size_t i = 0; i < R->n; i++)
		sums += R->a[i].suppressed != 0;
	assert_int_equal(sums, 1);
	detect__free(d);
}

static void test_suppression_per_principal(void **state)
{
	(void)state;
	struct detect *d = new_detect(NULL);
	for (int i = 0; i < 101; i++) {
		feed(d, "fay", "10.1.2.3", T0 + (uint64_t)i * 10 * MS, "/x", 429);
		feed(d, "gus", "10.1.2.3", T0 + (uint64_t)i * 10 * MS, "/x", 429);
	}
	assert_int_equal(count_rule("rate_limit_exceeded"), 2);
	detect__free(d);
}

/* ---- principals: many, LRU, idle ---- */

static void test_many_principals(void **state)
{
	(void)state;
	struct detect *d = new_detect(NULL);
	char user[32];
	for (int r = 0; r < 50; r++)
		for (int i = 0; i < 10000; i++) {
			snprintf(user, sizeof(user), "u%d", i);
			feed(d, user, "10.1.2.3", T0 + (uint64_t)r * SEC + (uint64_t)i * 10000, "/x", 200);
		}
	assert_int_equal(R->n, 0);
	struct detect_stats st;
	detect__stats(d, &st);
	assert_int_equal(st.principals_live, 10000);
	assert_int_equal(st.principals_evicted, 0);
	assert_int_equal(st.txns, 500000);
	assert_true(st.mem_bytes > 10000 * 100);
	/* one of them goes over: only it alerts */
	for (int i = 0; i < 51; i++)
		feed(d, "u777", "10.1.2.3", T0 + 50 * SEC + (uint64_t)i * MS, "/x", 200);
	assert_int_equal(R->n, 1);
	assert_string_equal(R->a[0].principal, "u777");
	detect__free(d);
}

static void test_lru_eviction(void **state)
{
	(void)state;
	struct detect_opts o;
	detect_opts_default(&o);
	o.hash_seed = 3;
	o.max_principals = 16;
	struct detect *d = new_detect(&o);
	char user[32];
	/* "old" makes 100 calls, then 16 others push it out */
	for (int i = 0; i < 100; i++)
		feed(d, "old", "10.1.2.3", T0 + (uint64_t)i * MS, "/x", 200);
	for (int i = 0; i < 16; i++) {
		snprintf(user, sizeof(user), "n%d", i);
		feed(d, user, "10.1.2.3", T0 + 200 * MS + (uint64_t)i * MS, "/x", 200);
	}
	struct detect_stats st;
	detect__stats(d, &st);
	assert_int_equal(st.principals_live, 16);
	assert_int_equal(st.principals_evicted, 1);
	/* its state went with it: the 101st call starts a fresh window */
	feed(d, "old", "10.1.2.3", T0 + 300 * MS, "/x", 200);
	assert_int_equal(count_rule("rate_limit_exceeded"), 0);
	detect__stats(d, &st);
	assert_int_equal(st.principals_evicted, 2);  /* n0, least recently used, made room */
	detect__free(d);
}

static void test_lru_keeps_recent(void **state)
{
	(void)state;
	struct detect_opts o;
	detect_opts_default(&o);
	o.hash_seed = 3;
	o.max_principals = 16;
	struct detect *d = new_detect(&o);
	char user[32];
	for (int i = 0; i < 50; i++)
		feed(d, "hot", "10.1.2.3", T0 + (uint64_t)i * MS, "/x", 200);
	/* 100 one-off principals, "hot" calling between each: it is never the LRU */
	for (int i = 0; i < 100; i++) {
		snprintf(user, sizeof(user), "cold%d", i);
		feed(d, user, "10.1.2.3", T0 + 100 * MS + (uint64_t)i * MS, "/x", 200);
		if (i < 51)
			feed(d, "hot", "10.1.2.3", T0 + 100 * MS + (uint64_t)i * MS, "/x", 200);
	}
	assert_int_equal(count_rule("rate_limit_exceeded"), 1);
	assert_string_equal(find_rule("rate_limit_exceeded")->principal, "hot");
	detect__free(d);
}

static void test_idle_expiry(void **state)
{
	(void)state;
	struct detect_opts o;
	detect_opts_default(&o);
	o.hash_seed = 3;
	o.principal_idle_s = 3600;
	struct detect *d = new_detect(&o);
	struct detect_stats st, st0;
	detect__stats(d, &st0);
	feed(d, "ida", "10.1.2.3", T0, "/x", 200);
	feed(d, "jon", "10.1.2.3", T0 + 1800 * SEC, "/x", 200);
	detect__tick(d, T0 + 3601 * SEC);
	detect__stats(d, &st);
	assert_int_equal(st.principals_live, 1);
	assert_int_equal(st.principals_expired, 1);
	detect__tick(d, T0 + 5401 * SEC);
	detect__stats(d, &st);
	assert_int_equal(st.principals_live, 0);
	assert_int_equal(st.mem_detectors, st0.mem_detectors);
	detect__free(d);
}

static void test_memory_accounting(void **state)
{
	(void)state;
	struct detect *d = new_detect(NULL);
	struct detect_stats st0, st1;
	char id[32];
	detect__stats(d, &st0);
	for (int i = 0; i < 40; i++) {
		snprintf(id, sizeof(id), "m%d", i);
		feed_patient(d, "kai", T0 + (uint64_t)i * SEC, id);
	}
	detect__stats(d, &st1);
	assert_true(st1.mem_detectors > st0.mem_detectors);
	assert_true(st1.mem_principals > st0.mem_principals);
	detect__tick(d, T0 + 3 * 86400 * SEC);
	detect__stats(d, &st1);
	assert_int_equal(st1.mem_detectors, st0.mem_detectors);
	assert_int_equal(st1.mem_principals, st0.mem_principals);
	detect__free(d);
}

/* ---- determinism, options, external alerts ---- */

static void run_stream(uint64_t seed, struct rec *out)
{
	struct detect_opts o;
	detect_opts_default(&o);
	o.hash_seed = seed;
	struct detect *d = detect__new(&o, rec_fn, out);
	char user[16], id[16];
	uint32_t x = 12345;
	for (int i = 0; i < 20000; i++) {
		x = x * 1103515245u + 12345u;
		snprintf(user, sizeof(user), "p%u", (x >> 16) % 40);
		snprintf(id, sizeof(id), "%u", (x >> 8) % 500);
		struct tx tx;
		struct txn *t = mk(&tx, user, "10.1.2.3", T0 + (uint64_t)i * 50 * MS, "/fhir/Patient/1",
				   (x >> 4) % 13 == 0 ? 401 : 200);
		t->resource_ids[0] = id;
		t->n_resource_ids = 1;
		detect__txn(d, t);
	}
	detect__flush(d);
	detect__free(d);
}

static void test_replay_deterministic(void **state)
{
	(void)state;
	struct rec *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));
	run_stream(1, a);
	run_stream(99, b);
	assert_true(a->n > 0);
	assert_int_equal(a->n, b->n);
	for (size_t i = 0; i < a->n; i++) {
		assert_string_equal(a->a[i].rule, b->a[i].rule);
		assert_string_equal(a->a[i].principal, b->a[i].principal);
		assert_string_equal(a->a[i].msg, b->a[i].msg);
		assert_int_equal(a->a[i].ts, b->a[i].ts);
	}
	free(a);
	free(b);
}

static void test_opts_validate(void **state)
{
	(void)state;
	struct detect_opts o;
	const char *key, *why;
	detect_opts_default(&o);
	assert_int_equal(detect_opts_validate(&o, &key, &why), 0);
	assert_null(key);
	o.rate.limit = 0;
	assert_int_equal(detect_opts_validate(&o, &key, &why), -EINVAL);
	assert_string_equal(key, "detect.rate.limit");
	assert_non_null(why);
	errno = 0;
	assert_null(detect__new(&o, rec_fn, R));
	assert_int_equal(errno, EINVAL);
	detect_opts_default(&o);
	o.anomaly.alpha = 0;
	assert_int_equal(detect_opts_validate(&o, &key, &why), -EINVAL);
	assert_string_equal(key, "detect.anomaly.alpha");
	detect_opts_default(&o);
	o.enumeration.window_s = 30 * 86400;
	assert_int_equal(detect_opts_validate(&o, &key, &why), -EINVAL);
	assert_string_equal(key, "detect.enumeration.window_s");
	assert_int_equal(detect_rule_from_name("bulk_export"), DETECT_RULE_BULK_EXPORT);
	assert_int_equal(detect_rule_from_name("nope"), -EINVAL);
	assert_string_equal(detect_rule_name(DETECT_RULE_RATE_LIMIT_NOT_ENFORCED),
			    "rate_limit_not_enforced");
}

static void test_disabled_detectors(void **state)
{
	(void)state;
	struct detect_opts o;
	detect_opts_default(&o);
	o.hash_seed = 1;
	o.rate.enabled = false;
	o.rate.not_enforced = false;
	o.hipaa.basic_auth = false;
	struct detect *d = new_detect(&o);
	struct tx x;
	for (int i = 0; i < 200; i++) {
		struct txn *t = mk(&x, "lou", "10.1.2.3", T0 + (uint64_t)i * MS, "/x", 200);
		t->auth = "basic";
		detect__txn(d, t);
	}
	assert_int_equal(R->n, 0);
	detect__free(d);
}

static void test_external_alert_and_hostile_principal(void **state)
{
	(void)state;
	struct detect *d = new_detect(NULL);
	detect__alert(d, DETECT_RULE_TLS_NOT_INSTRUMENTED, "-", 77, T0, ALERT_SEV_HIGH,
		      "process 77 (java) speaks TLS through a library phiwatch cannot hook", NULL);
	detect__alert(d, DETECT_RULE_TLS_NOT_INSTRUMENTED, "-", 77, T0 + SEC, ALERT_SEV_HIGH, "again",
		      NULL);
	assert_int_equal(count_rule("tls_not_instrumented"), 1);
	/* a principal with quotes, newlines and bad UTF-8 reaches rec_fn's JSON check */
	const char *evil = "x\"}\n\x01\xff{\"rule\":";
	for (int i = 0; i < 101; i++)
		feed(d, evil, "10.1.2.3", T0 + (uint64_t)i * MS, "/x\"\n", 200);
	assert_int_equal(count_rule("rate_limit_exceeded"), 1);
	/* a very long principal is cut to one key */
	char longu[400];
	memset(longu, 'a', sizeof(longu) - 1);
	longu[sizeof(longu) - 1] = '\0';
	for (int i = 0; i < 101; i++)
		feed(d, longu, "10.1.2.3", T0 + (uint64_t)i * MS, "/x", 200);
	assert_int_equal(count_rule("rate_limit_exceeded"), 2);
	assert_int_equal(strlen(R->a[R->n - 1].principal), 128);
	detect__free(d);
}

static void test_free_null(void **state)
{
	(void)state;
	detect__free(NULL);
	alert_dedup__free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_rate_100_in_60s_quiet, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rate_101_fires, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rate_across_minute_boundary, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rate_window_edge_exact, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rate_window_edge_60001, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rate_sliding_steady, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rate_anonymous_keys_on_ip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rate_out_of_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rate_client_role_ignored, setup, teardown),
		cmocka_unit_test_setup_teardown(test_not_enforced_fires, setup, teardown),
		cmocka_unit_test_setup_teardown(test_not_enforced_quiet_when_429, setup, teardown),
		cmocka_unit_test_setup_teardown(test_enum_50_quiet_51_fires, setup, teardown),
		cmocka_unit_test_setup_teardown(test_enum_sliding_expiry, setup, teardown),
		cmocka_unit_test_setup_teardown(test_enum_window_edge, setup, teardown),
		cmocka_unit_test_setup_teardown(test_enum_many_ids_one_call, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rate_vs_brute_force, setup, teardown),
		cmocka_unit_test_setup_teardown(test_enum_vs_brute_force, setup, teardown),
		cmocka_unit_test_setup_teardown(test_enum_prune_heavy, setup, teardown),
		cmocka_unit_test_setup_teardown(test_export_classify, setup, teardown),
		cmocka_unit_test_setup_teardown(test_export_2_quiet_3_fires, setup, teardown),
		cmocka_unit_test_setup_teardown(test_export_window_edge, setup, teardown),
		cmocka_unit_test_setup_teardown(test_export_large_response, setup, teardown),
		cmocka_unit_test_setup_teardown(test_export_flagged_by_resource, setup, teardown),
		cmocka_unit_test_setup_teardown(test_authfail_9_quiet_10_fires, setup, teardown),
		cmocka_unit_test_setup_teardown(test_authfail_window_edge, setup, teardown),
		cmocka_unit_test_setup_teardown(test_authfail_by_source_ip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_anomaly_learns_then_fires, setup, teardown),
		cmocka_unit_test_setup_teardown(test_anomaly_not_while_learning, setup, teardown),
		cmocka_unit_test_setup_teardown(test_anomaly_floor, setup, teardown),
		cmocka_unit_test_setup_teardown(test_basic_auth, setup, teardown),
		cmocka_unit_test_setup_teardown(test_plaintext_phi, setup, teardown),
		cmocka_unit_test_setup_teardown(test_long_lived_token, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sensitive_data, setup, teardown),
		cmocka_unit_test_setup_teardown(test_capture_loss, setup, teardown),
		cmocka_unit_test_setup_teardown(test_suppression_summary_on_tick, setup, teardown),
		cmocka_unit_test_setup_teardown(test_suppression_summary_on_later_txn, setup, teardown),
		cmocka_unit_test_setup_teardown(test_suppression_per_principal, setup, teardown),
		cmocka_unit_test_setup_teardown(test_many_principals, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lru_eviction, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lru_keeps_recent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_idle_expiry, setup, teardown),
		cmocka_unit_test_setup_teardown(test_memory_accounting, setup, teardown),
		cmocka_unit_test_setup_teardown(test_replay_deterministic, setup, teardown),
		cmocka_unit_test_setup_teardown(test_opts_validate, setup, teardown),
		cmocka_unit_test_setup_teardown(test_disabled_detectors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_external_alert_and_hostile_principal, setup, teardown),
		cmocka_unit_test(test_free_null),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
