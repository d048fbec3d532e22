/* bench_pipeline.c — userspace throughput: a generated capture of N transactions through the whole pipeline on one core.
 * Records are built in memory first (the same bytes `replay` would read),
 * then timed: pipeline__feed for every record, each transaction formatted as
 * its JSON line (what --events writes). Prints transactions per second in the agent's thread and CPU per
 * transaction over all threads (with the audit chain, closed segments are compressed by the worker, as live).
 * Usage: bench_pipeline [N] (default 1,000,000). Not a test: asserts only
 * that every generated call came out.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sys/resource.h>
#include <unistd.h>

#include "audit.h"
#include "json.h"
#include "pipeline.h"

struct out {
	struct jbuf jb;
	uint64_t n, bytes, alerts;
	struct audit *audit;     /* NULL: without the audit chain */
};

static void on_alert(void *ctx, const struct alert *a)
{
	struct out *o = ctx;
	(void)a;
	o->alerts++;
}

/* An unsigned JWT for user u (base64url of fixed JSON). */
static void make_jwt(char *out, size_t n, size_t u)
{
	static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	char payload[160], enc[256];
	int len = snprintf(payload, sizeof(payload), "{\"sub\":\"user-%zu\",\"iat\":1795860000,\"exp\":1795861800,\"scope\":\"patient/*.read\"}", u);
	size_t o = 0;
	for (int i = 0; i < len; i += 3) {
		unsigned v = (unsigned char)payload[i] << 16;
		if (i + 1 < len) v |= (unsigned char)payload[i + 1] << 8;
		if (i + 2 < len) v |= (unsigned char)payload[i + 2];
		enc[o++] = tbl[(v >> 18) & 63];
		enc[o++] = tbl[(v >> 12) & 63];
		if (i + 1 < len) enc[o++] = tbl[(v >> 6) & 63];
		if (i + 2 < len) enc[o++] = tbl[v & 63];
	}
	enc[o] = '\0';
	snprintf(out, n, "eyJhbGciOiJSUzI1NiJ9.%s.c2ln", enc);
}

static void on_txn(void *ctx, const struct txn *t)
{
	struct out *o = ctx;
	jbuf_reset(&o->jb);
	txn_to_json(t, &o->jb);
	if (o->audit)
		audit__append_txn(o->audit, t->ts_start, o->jb.p, o->jb.len);
	o->bytes += o->jb.len + 1;
	o->n++;
}

static double cpu_s(int who)
{
	struct rusage ru;
	getrusage(who, &ru);
	return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Appends one record to the arena. */
static void put(unsigned char **arena, size_t *len, size_t *cap, const void *rec, size_t n)
{
	if (*len + n > *cap) {
		*cap = (*cap ? *cap * 2 : 1 << 20);
		while (*cap < *len + n)
			*cap *= 2;
		*arena = realloc(*arena, *cap);
		if (!*arena) {
			perror("realloc");
			exit(1);
		}
	}
	memcpy(*arena + *len, rec, n);
	*len += n;
}

int main(int argc, char **argv)
{
	size_t N = argc > 1 ? strtoull(argv[1], NULL, 10) : 1000000;
	const size_t conns = 1000, users = 10000;
	unsigned char *arena = NULL;
	size_t alen = 0, acap = 0, nrec = 0;
	uint64_t ts = 1000000000ull;
	char buf[sizeof(struct pw_data) + 1024];

	for (size_t c = 0; c < conns; c++) {
		struct pw_conn e = { 0 };
		e.h.type = PW_EV_CONN;
		e.h.size = sizeof(e);
		e.h.pid = 100;
		e.h.ts_ns = ts++;
		e.fd = (int)c + 10;
		e.role = PW_ROLE_SERVER;
		e.family = 2;
		e.lport = 8443;
		e.rport = (uint16_t)(30000 + c);
		e.laddr[0] = 127, e.laddr[3] = 1, e.raddr[0] = 10, e.raddr[3] = (uint8_t)c;
		memcpy(e.comm, "nginx", 5);
		put(&arena, &alen, &acap, &e, sizeof(e));
		nrec++;
	}
	char jwt[300];
	for (size_t i = 0; i < N; i++) {
		struct pw_data *d = (struct pw_data *)buf;
		make_jwt(jwt, sizeof(jwt), i % users);
		int fd = (int)(i % conns) + 10;
		for (int dir = 0; dir < 2; dir++) {
			int n;
			if (dir == 0)
				n = snprintf((char *)d->data, 1024,
					     "GET /fhir/R4/Patient/%zu/Observation?category=vital-signs&_count=50 HTTP/1.1\r\n"
					     "Host: api.example.org\r\nUser-Agent: bench\r\nAccept: application/fhir+json\r\n"
					     "Authorization: Bearer %s\r\n\r\n",
					     i % 100000, jwt);
			else
				n = snprintf((char *)d->data, 1024,
					     "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: application/fhir+json\r\n"
					     "Content-Length: 48\r\nConnection: keep-alive\r\n\r\n"
					     "{\"resourceType\":\"Bundle\",\"type\":\"searchset\",\"x\":1}");
			memset(&d->h, 0, sizeof(d->h));
			d->h.type = PW_EV_DATA;
			d->h.size = (uint16_t)(sizeof(*d) + (size_t)n);
			d->h.pid = 100;
			d->h.ts_ns = ts += 5000;
			d->fd = fd;
			d->dir = dir == 0 ? PW_DIR_INGRESS : PW_DIR_EGRESS;
			d->flags = PW_F_TLS;
			d->total_len = d->cap_len = (uint32_t)n;
			memcpy(d->comm, "nginx", 6);
			put(&arena, &alen, &acap, d, d->h.size);
			nrec++;
		}
	}

	for (int with_audit = 0; with_audit < (getenv("BENCH_NO_AUDIT") ? 1 : 2); with_audit++) {
		struct out o = { 0 };
		char dir[] = "/tmp/phiwatch-bench-audit-XXXXXX", keyp[128], err[256];
		jbuf_init(&o.jb);
		if (with_audit) {
			struct audit_opts ao;
			if (!mkdtemp(dir))
				return 1;
			snprintf(keyp, sizeof(keyp), "%s/initial.key", dir);
			audit_opts_default(&ao);
			char adir[160];
			snprintf(adir, sizeof(adir), "%s/audit", dir);
			ao.dir = adir;
			ao.initial_key_path = keyp;
			ao.compress_thread = true; /* as the agent runs it */
			o.audit = audit__open(&ao, 1795860000000000000ull, err, sizeof(err));
			if (!o.audit) {
				fprintf(stderr, "audit: %s\n", err);
				return 1;
			}
		}
		struct pipeline_opts po = { .on_txn = on_txn, .ctx = &o, .on_alert = on_alert, .alert_ctx = &o,
					    .realtime_offset_ns = 1795860000000000000ll };
		pipeline_default_limits(&po.limits);
		struct pipeline *p = pipeline__new(&po);
		double t0 = now_s(), main0 = cpu_s(RUSAGE_THREAD), all0 = cpu_s(RUSAGE_SELF);
		for (size_t off = 0; off < alen;) {
			uint16_t sz;
			memcpy(&sz, arena + off + offsetof(struct pw_hdr, size), sizeof(sz));
			pipeline__feed(p, arena + off, sz);
			off += sz;
			if (o.audit && (off & 0xffff) < sz)
				audit__tick(o.audit, 1795860000000000000ull + (uint64_t)((now_s() - t0) * 1e9));
		}
		pipeline__finish(p);
		double dt = now_s() - t0, main_cpu = cpu_s(RUSAGE_THREAD) - main0;
		if (o.audit) {
			/* every sealed segment compressed, so the worker's whole share is counted below */
			while (audit__compress_busy(o.audit)) {
				audit__tick(o.audit, 1795860000000000000ull + (uint64_t)((now_s() - t0) * 1e9));
				struct timespec ts = { 0, 1000000 };
				nanosleep(&ts, NULL);
			}
			audit__close(o.audit, 1795860000000000000ull + (uint64_t)((now_s() - t0) * 1e9));
		}
		double all_cpu = cpu_s(RUSAGE_SELF) - all0;
		struct pipeline_stats st;
		pipeline__stats(p, &st);
		printf("pipeline %s audit chain (parse, identity, resources, detectors, JSON): %llu transactions in %.3f s: "
		       "%.0f transactions/s in the agent's thread (%.2f µs each); %llu JWT decodes, %llu cache hits\n",
		       with_audit ? "with" : "without", (unsigned long long)o.n, dt, o.n / dt, dt * 1e6 / (double)o.n,
		       (unsigned long long)st.identity.jwt_decoded, (unsigned long long)st.identity.jwt_cache_hits);
		printf("  CPU: agent thread %.2f µs/transaction, all threads (compression worker included) %.2f µs: "
		       "%.0f transactions/s per core of CPU\n", main_cpu * 1e6 / (double)o.n, all_cpu * 1e6 / (double)o.n,
		       (double)o.n / all_cpu);
		pipeline__free(p);
		jbuf_free(&o.jb);
		if (with_audit) {
			char cmd[256];
			snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
			if (system(cmd) != 0)
				fprintf(stderr, "could not remove %s\n", dir);
		}
		if (o.n != N)
			return 1;
	}
	free(arena);
	return 0;
}
