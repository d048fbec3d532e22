/* bench_history.c — the forensic history under load: 1,000,000 transactions with ~1 KiB of captured bytes
 * each (an Authorization header to redact) into the default 64 MiB budget. Prints the add rate beside a floor
 * (copying the same bytes into a ring by memcpy alone), the process RSS before and after (VmRSS, VmHWM from
 * /proc/self/status) against the budget, and how long a dump of the whole history takes. Not a pass/fail test.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "forensics.h"
#include "history.h"
#include "log.h"
#include "phiwatch/events.h"
#include "txn.h"

#define N 1000000
#define BUDGET (64u << 20)

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static long status_kb(const char *key)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long v = -1;
	size_t kl = strlen(key);

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, key, kl) && line[kl] == ':')
			v = strtol(line + kl + 1, NULL, 10);
	fclose(f);
	return v;
}

/* Resets VmHWM to the current RSS (Linux >= 4.0). */
static void reset_hwm(void)
{
	FILE *f = fopen("/proc/self/clear_refs", "w");

	if (f) {
		fputs("5", f);
		fclose(f);
	}
}

int main(int argc, char **argv)
{
	static char req[1024], resp[512];
	static char users[1000][32];
	struct history *h;
	struct history_stats st;
	struct jbuf json;
	struct txn t;
	long rss0, rss1, hwm1;
	double t0, t_add, t_floor;
	uint64_t bytes = 0;
	int n = argc > 1 ? atoi(argv[1]) : N;

	log_level = LOG_LVL_WARN;
	for (int i = 0; i < 1000; i++)
		snprintf(users[i], sizeof(users[i]), "user-%04d@clinic.example", i);
	memset(&t, 0, sizeof(t));
	t.comm = "nginx";
	t.exe = "/usr/sbin/nginx";
	snprintf(t.dst_ip, sizeof(t.dst_ip), "10.0.0.1");
	t.dst_port = 443;
	t.tls = true;
	t.minor_version = 1;
	memcpy(t.method, "GET", 4);
	t.target = "/fhir/Patient/123456/$everything?_count=50";
	t.target_len = strlen(t.target);
	t.status = 200;
	t.role = PW_ROLE_SERVER;
	t.auth = "bearer";
	jbuf_init(&json);

	rss0 = status_kb("VmRSS");
	h = history__new(BUDGET);
	if (!h) {
		perror("history__new");
		return 1;
	}
	t0 = now_s();
	for (int i = 0; i < n; i++) {
		int rl = snprintf(req, sizeof(req),
				  "GET /fhir/Patient/%d/$everything?_count=50 HTTP/1.1\r\nHost: api.clinic.example\r\n"
				  "User-Agent: bench/1.0\r\nAccept: application/fhir+json\r\n"
				  "Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyLTAwMDEiLCJpYXQiOjE3MDAwMDAwMDAs"
				  "ImV4cCI6MTcwMDAwMzYwMH0.c2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJl%08d\r\n"
				  "Cookie: session=abcdef%08d\r\nX-Request-Id: %d\r\n\r\n",
				  i, i, i, i);
		int sl = snprintf(resp, sizeof(resp),
				  "HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nContent-Length: 180\r\n\r\n"
				  "{\"resourceType\":\"Bundle\",\"type\":\"searchset\",\"total\":1,\"entry\":[{\"resource\":"
				  "{\"resourceType\":\"Patient\",\"id\":\"%d\",\"name\":[{\"family\":\"Doe\",\"given\":[\"J\"]}]}}]}",
				  i);
		t.ts_start = 1764324000000000000ull + (uint64_t)i * 1000000;
		t.ts_end = t.ts_start + 500000;
		t.sequence = (uint64_t)i;
		t.pid = 1000 + (uint32_t)(i % 8);
		t.user = users[i % 1000];
		snprintf(t.src_ip, sizeof(t.src_ip), "10.1.%d.%d", (i >> 8) & 255, i & 255);
		t.src_port = (uint16_t)(30000 + i % 20000);
		t.req_bytes = (uint64_t)rl;
		t.resp_bytes = (uint64_t)sl;
		jbuf_reset(&json);
		txn_to_json(&t, &json);
		struct history_bytes b = { req, (size_t)rl, resp, (size_t)sl };
		if (history__add(h, &t, json.p, json.len, &b)) {
			fprintf(stderr, "history__add failed at %d\n", i);
			return 1;
		}
		bytes += json.len + (size_t)rl + (size_t)sl;
	}
	t_add = now_s() - t0;
	history__stats(h, &st);
	rss1 = status_kb("VmRSS");
	hwm1 = status_kb("VmHWM");

	/* floor: the same bytes memcpy'd into a ring, nothing else (no JSON, no redaction, no index) */
	char *ring = malloc(BUDGET);
	size_t off = 0;
	t0 = now_s();
	for (int i = 0; i < n; i++) {
		size_t l = (size_t)snprintf(req, sizeof(req), "GET /fhir/Patient/%d HTTP/1.1\r\n", i) + 900;
		if (off + l > BUDGET)
			off = 0;
		memcpy(ring + off, req, sizeof(req) < l ? sizeof(req) : l);
		off += l;
	}
	t_floor = now_s() - t0;
	free(ring);

	printf("history: %d transactions, %.0f bytes each (JSON line + request + response), budget %u MiB\n", n,
	       (double)bytes / n, BUDGET >> 20);
	printf("  add rate      %.0f tx/s (%.2f us/tx, incl. txn_to_json); floor (snprintf+memcpy only) %.0f tx/s, "
	       "ratio %.1fx\n",
	       n / t_add, t_add * 1e6 / n, n / t_floor, t_add / t_floor);
	printf("  kept          %llu entries (%llu evicted, %llu redacted values), %llu keys\n",
	       (unsigned long long)st.entries, (unsigned long long)st.evicted, (unsigned long long)st.redacted,
	       (unsigned long long)st.keys);
	printf("  accounted     %.1f MiB (ring %.1f MiB used, index %.2f MiB) of %.1f MiB\n", st.mem_bytes / 1048576.0,
	       st.bytes / 1048576.0, st.index_bytes / 1048576.0, st.budget / 1048576.0);
	printf("  RSS           %.1f MiB before, %.1f MiB after, peak %.1f MiB: +%.1f MiB for a %u MiB budget\n",
	       rss0 / 1024.0, rss1 / 1024.0, hwm1 / 1024.0, (rss1 - rss0) / 1024.0, BUDGET >> 20);

	/* a dump of everything (the worst case: SIGUSR1) */
	char dir[] = "/tmp/bench_history_XXXXXX", path[4096], err[256];
	if (mkdtemp(dir)) {
		struct forensics_opts o;
		forensics_opts_default(&o);
		o.dir = dir;
		struct forensics *f = forensics__new(&o, err, sizeof(err));
		struct forensics_trigger trig = { .kind = FORENSICS_TRIGGER_SIGNAL, .signal_name = "SIGUSR1" };
		struct history_filter one = { .principal = users[7] };
		if (f) {
			reset_hwm();
			long before = status_kb("VmRSS");
			t0 = now_s();
			int rc = forensics__dump(f, &trig, h, &one, path, sizeof(path), NULL);
			double t1 = now_s() - t0;
			struct forensics_stats fs;
			forensics__stats(f, &fs);
			printf("  dump one user %.3f s (%s, %.1f KiB)\n", t1, rc ? strerror(-rc) : "ok", fs.bytes / 1024.0);
			t0 = now_s();
			rc = forensics__dump(f, &trig, h, NULL, path, sizeof(path), NULL);
			t1 = now_s() - t0;
			forensics__stats(f, &fs);
			printf("  dump all      %.2f s for %llu transactions (%s, %.1f MiB archive), RSS peak +%.1f MiB "
			       "during the dumps\n", t1, (unsigned long long)st.entries, rc ? strerror(-rc) : "ok",
			       fs.bytes / 1048576.0, (status_kb("VmHWM") - before) / 1024.0);
			forensics__free(f);
		}
		char cmd[128];
		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		if (system(cmd))
			fprintf(stderr, "could not remove %s\n", dir);
	}
	history__free(h);
	jbuf_free(&json);
	return 0;
}
