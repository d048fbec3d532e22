/* bench_detect.c — detection engine throughput (txn/s on one core over a generated stream:
 * 10k principals, realistic mix) measured side by side with txn_to_json over the same
 * stream, and memory with 100,000 principals and 1,000,000 patient ids live (RSS from
 * /proc/self/status next to detect_stats). Prints numbers; never a pass/fail test.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "detect.h"
#include "phiwatch/events.h"

#define SEC 1000000000ull
#define MS 1000000ull
#define T0 (1764324000ull * SEC)

#define POOL 100000             /* distinct transactions, replayed with later times */
#define PRINCIPALS 10000
#define IPS 5000
#define PATIENTS 200000

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * SEC + (uint64_t)ts.tv_nsec;
}

static long rss_kib(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long v = -1;
	while (f && fgets(line, sizeof(line), f))
		if (strncmp(line, "VmRSS:", 6) == 0)
			v = strtol(line + 6, NULL, 10);
	if (f)
		fclose(f);
	return v;
}

static uint64_t rng = 88172645463325252ull;
static uint32_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng >> 11);
}
static double rndf(void)
{
	return (rnd() & 0xffffff) / (double)0x1000000;
}

struct alert_count {
	uint64_t n;
	uint64_t bytes;
	struct jbuf jb;
};

static void on_alert(void *ctx, const struct alert *a)
{
	struct alert_count *c = ctx;
	jbuf_reset(&c->jb);
	alert_to_json(a, &c->jb);   /* what the JSONL sink will do */
	c->n++;
	c->bytes += c->jb.len;
}

static char **strpool(const char *fmt, size_t n)
{
	char **p = malloc(n * sizeof(*p));
	char buf[64];
	for (size_t i = 0; i < n; i++) {
		snprintf(buf, sizeof(buf), fmt, (unsigned)i, (unsigned)(i / 256 % 256), (unsigned)(i % 256));
		p[i] = strdup(buf);
	}
	return p;
}

/* A transaction with its strings next to it, as the pipeline hands them over
 * (parsed from one hot buffer), not scattered over the heap. */
struct btxn {
	struct txn t;
	char user[16];
	char ids[5][16];
	char target[112];
};

/* skew 3: heavy-tailed (the busiest principals trip rate/enumeration limits all
 * the time, so about half the calls are suppressed alert candidates); skew 1:
 * activity spread evenly, under every threshold (the quiet common case). */
static struct btxn *gen_stream(uint64_t *span_ns, int skew)
{
	struct btxn *v = calloc(POOL, sizeof(*v));
	char **users = strpool("user%05u", PRINCIPALS);
	char **ips = strpool("10.%u.%u.%u", IPS);
	char **pats = strpool("pat-%07u", PATIENTS);
	char target[112];
	/* 2,000 calls a second on the host */
	uint64_t step = SEC / 2000;

	for (size_t i = 0; i < POOL; i++) {
		struct btxn *bt = &v[i];
		struct txn *t = &bt->t;
		double u = rndf();
		/* heavy-tailed activity: a few principals make most calls */
		size_t who = (size_t)(PRINCIPALS * (skew == 3 ? u * u * u : u));
		bool anon = (rnd() % 100) < 20;
		t->ts_start = T0 + i * step;
		t->ts_end = t->ts_start + 2 * MS;
		t->pid = 1000 + (uint32_t)(who % 8);
		t->comm = "api";
		t->exe = "/usr/bin/api";
		snprintf(t->src_ip, sizeof(t->src_ip), "%s", ips[who % IPS]);
		snprintf(t->dst_ip, sizeof(t->dst_ip), "10.0.0.1");
		t->src_port = (uint16_t)(30000 + rnd() % 30000);
		t->dst_port = 443;
		t->tls = (rnd() % 100) >= 2;
		t->minor_version = 1;
		snprintf(t->method, sizeof(t->method), "GET");
		t->role = PW_ROLE_SERVER;
		t->status = 200;
		t->resp_bytes = 800 + rnd() % 4000;
		t->req_bytes = 300;
		snprintf(bt->user, sizeof(bt->user), "%s", users[who]);
		t->user = anon ? "-" : bt->user;
		t->auth = anon ? "none" : "bearer";
		t->jwt_scope = "";
		if (!anon && rnd() % 100 < 30) {
			t->jwt = true;
			t->jwt_has_iat = t->jwt_has_exp = true;
			t->jwt_iat = (int64_t)(T0 / SEC);
			t->jwt_exp = t->jwt_iat + (rnd() % 100 < 5 ? 86400 : 900);
		}
		if (!anon && rnd() % 100 < 1)
			t->auth = "basic";
		uint32_t k = rnd() % 1000;
		snprintf(bt->ids[0], sizeof(bt->ids[0]), "%s", pats[rnd() % PATIENTS]);
		const char *pat = bt->ids[0];
		if (k < 500) {
			snprintf(target, sizeof(target), "/fhir/Patient/%s", pat);
			t->resource_type = "Patient";
			t->resource_ids[0] = pat;
			t->n_resource_ids = 1;
		} else if (k < 700) {
			snprintf(target, sizeof(target), "/fhir/Observation?patient=%s&_count=50", pat);
			t->resource_type = "Observation";
			t->resource_ids[0] = pat;
			t->n_resource_ids = 1;
		} else if (k < 750) {
			snprintf(target, sizeof(target), "/fhir/Patient?name=smith");
			t->resource_type = "Patient";
			for (int j = 0; j < 5; j++) {
				snprintf(bt->ids[j], sizeof(bt->ids[j]), "%s", pats[rnd() % PATIENTS]);
				t->resource_ids[j] = bt->ids[j];
			}
			t->n_resource_ids = 5;
		} else if (k < 900) {
			snprintf(target, sizeof(target), "/fhir/metadata");
		} else if (k < 940) {
			snprintf(target, sizeof(target), "/api/v2/appointments?date=2025-11-28&page=%u", k);
		} else if (k < 945) {
			snprintf(target, sizeof(target), "/fhir/Group/%u/$export?_type=Patient", k);
			t->status = 202;
		} else if (k < 950) {
			snprintf(target, sizeof(target), "/fhir/Observation?_count=1000");
		} else if (k < 990) {
			snprintf(target, sizeof(target), "/fhir/Patient/%s", pat);
			t->status = k < 980 ? 401 : 403;
		} else {
			snprintf(target, sizeof(target), "/api/people/%u", k);
			t->ssn_count = k % 3 == 0 ? 1 : 0;
			snprintf(t->ssn_masked, sizeof(t->ssn_masked), "***-**-1234");
		}
		memcpy(bt->target, target, sizeof(bt->target));
		t->target = bt->target;
		t->target_len = strlen(bt->target);
	}
	*span_ns = POOL * step;
	return v;
}

static void throughput(int skew)
{
	uint64_t span;
	rng = 88172645463325252ull;
	struct btxn *v = gen_stream(&span, skew);
	struct detect_opts o;
	struct alert_count ac = { 0 };
	const int passes = 10;
	struct detect_stats st;
	struct jbuf jb;

	detect_opts_default(&o);
	jbuf_init(&ac.jb);
	jbuf_init(&jb);
	struct detect *d = detect__new(&o, on_alert, &ac);
	if (!d) {
		perror("detect__new");
		exit(1);
	}
	/* warm-up pass: principals created, windows filled */
	for (size_t i = 0; i < POOL; i++)
		detect__txn(d, &v[i].t);
	uint64_t t0 = now_ns();
	for (int p = 1; p <= passes; p++) {
		for (size_t i = 0; i < POOL; i++) {
			v[i].t.ts_start += span;
			detect__txn(d, &v[i].t);
		}
		detect__tick(d, T0 + (uint64_t)(p + 1) * span);
	}
	uint64_t t1 = now_ns();
	/* the same transactions through txn_to_json: the pipeline pays it for every txn */
	uint64_t bytes = 0;
	uint64_t t2 = now_ns();
	for (int p = 1; p <= passes; p++)
		for (size_t i = 0; i < POOL; i++) {
			jbuf_reset(&jb);
			txn_to_json(&v[i].t, &jb);
			bytes += jb.len;
		}
	uint64_t t3 = now_ns();
	detect__stats(d, &st);
	double n = (double)passes * POOL;
	double det_ns = (t1 - t0) / n, json_ns = (t3 - t2) / n;
	printf("== throughput, %s mix: %d x %d txns, %d principals (+%d IPs), simulated %.0f txn/s\n",
	       skew == 3 ? "heavy-tailed" : "even", passes, POOL, PRINCIPALS, IPS, POOL / (span / 1e9));
	printf("detect__txn       %8.1f ns/txn  %10.0f txn/s\n", det_ns, 1e9 / det_ns);
	printf("txn_to_json       %8.1f ns/txn  %10.0f txn/s  (side by side; %llu bytes)\n", json_ns,
	       1e9 / json_ns, (unsigned long long)bytes);
	printf("ratio detect/json %8.2f\n", det_ns / json_ns);
	printf("alerts %llu emitted, %llu summaries, suppressed:", (unsigned long long)ac.n,
	       (unsigned long long)st.summaries);
	uint64_t sup = 0, em = 0;
	for (int r = 0; r < DETECT_RULE__MAX; r++) {
		sup += st.suppressed[r];
		em += st.alerts[r];
	}
	printf(" %llu (emitted by rule:", (unsigned long long)sup);
	for (int r = 0; r < DETECT_RULE__MAX; r++)
		if (st.alerts[r])
			printf(" %s=%llu", detect_rule_name(r), (unsigned long long)st.alerts[r]);
	printf(")\n");
	printf("principals live %llu, memory %.1f MiB (principals %.1f, detectors %.1f, dedup %.1f)\n",
	       (unsigned long long)st.principals_live, st.mem_bytes / 1048576.0,
	       st.mem_principals / 1048576.0, st.mem_detectors / 1048576.0, st.mem_dedup / 1048576.0);
	(void)em;
	detect__free(d);
	jbuf_free(&ac.jb);
	jbuf_free(&jb);
	free(v);
}

static void memory(void)
{
	const size_t np = 100000, ids_per = 10;
	struct detect_opts o;
	struct alert_count ac = { 0 };
	struct detect_stats st;
	char **users = strpool("member-%06u", np);
	char **pats = strpool("pat-%07u", np * ids_per);
	char target[96];
	struct txn t;

	detect_opts_default(&o);
	jbuf_init(&ac.jb);
	long rss0 = rss_kib();
	struct detect *d = detect__new(&o, on_alert, &ac);
	/* every principal touches its 10 patients within 10 minutes: 1,000,000 ids live;
	 * round-robin so all of them are live at the end */
	memset(&t, 0, sizeof(t));
	t.comm = "api";
	t.exe = "";
	snprintf(t.src_ip, sizeof(t.src_ip), "10.1.2.3");
	snprintf(t.dst_ip, sizeof(t.dst_ip), "10.0.0.1");
	t.tls = true;
	snprintf(t.method, sizeof(t.method), "GET");
	t.role = PW_ROLE_SERVER;
	t.status = 200;
	t.auth = "bearer";
	t.jwt_scope = "";
	t.resource_type = "Patient";
	t.n_resource_ids = 1;
	t.target = target;
	uint64_t step = 500 * SEC / (np * ids_per);   /* all within 500 s */
	uint64_t c0 = now_ns();
	for (size_t k = 0; k < ids_per; k++)
		for (size_t i = 0; i < np; i++) {
			const char *pat = pats[i * ids_per + k];
			t.ts_start = T0 + (k * np + i) * step;
			t.user = users[i];
			t.resource_ids[0] = pat;
			t.target_len = (size_t)snprintf(target, sizeof(target), "/fhir/Patient/%s", pat);
			detect__txn(d, &t);
		}
	uint64_t c1 = now_ns();
	long rss1 = rss_kib();
	detect__stats(d, &st);
	printf("== memory: %zu principals x %zu patient ids (%zu ids live), %zu txns in %.2f s (%.0f txn/s)\n",
	       np, ids_per, np * ids_per, np * ids_per, (c1 - c0) / 1e9,
	       np * ids_per / ((c1 - c0) / 1e9));
	printf("detect_stats: principals %llu, evicted %llu, memory %.1f MiB (principals %.1f, "
	       "detectors %.1f, dedup %.1f), %.0f bytes/principal\n",
	       (unsigned long long)st.principals_live, (unsigned long long)st.principals_evicted,
	       st.mem_bytes / 1048576.0, st.mem_principals / 1048576.0,
	       st.mem_detectors / 1048576.0, st.mem_dedup / 1048576.0,
	       (double)st.mem_bytes / (double)st.principals_live);
	printf("RSS: %.1f MiB before the engine, %.1f MiB after (+%.1f MiB, %.0f bytes/principal "
	       "incl. malloc overhead); alerts %llu\n",
	       rss0 / 1024.0, rss1 / 1024.0, (rss1 - rss0) / 1024.0,
	       (rss1 - rss0) * 1024.0 / (double)np, (unsigned long long)ac.n);
	detect__free(d);
	jbuf_free(&ac.jb);
}

int main(int argc, char **argv)
{
	bool mem_only = argc > 1 && strcmp(argv[1], "memory") == 0;
	bool tput_only = argc > 1 && strcmp(argv[1], "throughput") == 0;

	/* memory first: a fresh heap makes the RSS delta honest */
	if (!tput_only)
		memory();
	if (!mem_only) {
		throughput(3);
		throughput(1);
	}
	return 0;
}
