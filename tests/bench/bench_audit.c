/* bench_audit.c — audit trail throughput, measured side by side in one run: append rec/s with the hash chain
 * (group commit, encryption, fdatasync per record) against a floor (write() of the same bytes, no chain), and
 * verify MB/s over plain and over gzip+AES-GCM segments. Prints ratios; not a pass/fail test.
 *   bench_audit [--records N] [--fsync-records N] [DIR]   (DIR: a scratch directory on the disk to measure)
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "json.h"
#include "log.h"

static uint64_t wall_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
	(void)sb;
	(void)flag;
	(void)f;
	return remove(p);
}

static uint64_t du_bytes;

static int du_cb(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
	(void)p;
	(void)f;
	if (flag == FTW_F && !strncmp(p + f->base, "seg-", 4))
		du_bytes += (uint64_t)sb->st_size;
	return 0;
}

/* A transaction line shaped like txn_to_json's, varying in its counters and ids. */
static size_t make_txn(char *out, size_t cap, uint64_t i, uint64_t ts)
{
	char t[40];

	json_time_rfc3339(t, sizeof(t), ts);
	int n = snprintf(out, cap,
			 "{\"@timestamp\":\"%s\",\"event\":{\"kind\":\"event\",\"category\":[\"web\"],\"duration\":%llu,"
			 "\"sequence\":%llu},\"process\":{\"pid\":4242,\"name\":\"nginx\",\"executable\":\"/usr/sbin/nginx\"},"
			 "\"user\":{\"id\":\"clinician-%llu\"},\"source\":{\"ip\":\"10.1.2.%llu\",\"port\":%llu},"
			 "\"destination\":{\"ip\":\"10.1.0.5\",\"port\":443},\"tls\":{\"established\":true},\"http\":{"
			 "\"version\":\"1.1\",\"request\":{\"method\":\"GET\",\"bytes\":412},\"response\":{\"status_code\":200,"
			 "\"bytes\":%llu}},\"url\":{\"path\":\"/fhir/Patient/%llu\",\"query\":\"_format=json\"},\"phiwatch\":{"
			 "\"role\":\"server\",\"auth\":\"bearer\",\"resource\":{\"type\":\"Patient\",\"id\":\"%llu\"},"
			 "\"truncated\":false}}",
			 t, (unsigned long long)(1000000 + i % 7919), (unsigned long long)i, (unsigned long long)(i % 97),
			 (unsigned long long)(i % 250), (unsigned long long)(30000 + i % 30000),
			 (unsigned long long)(1500 + i % 4000), (unsigned long long)(i * 7919 % 100000),
			 (unsigned long long)(i * 7919 % 100000));
	return (size_t)n;
}

struct result {
	double rate, secs;
};

/* Appends n transactions, ticking as the agent does; the time includes the final fdatasync. */
static struct result bench_append(const char *dir, const char *key, const char *ek, unsigned fsync_ms, uint64_t n,
				  int compress)
{
	struct audit_opts o;
	char err[256], line[2048];
	struct result r = { 0, 0 };

	audit_opts_default(&o);
	o.dir = dir;
	o.initial_key_path = key;
	o.enc_key_path = ek;
	o.fsync_interval_ms = fsync_ms;
	o.compress_level = compress;
	o.segment_max_bytes = 16ull << 20;
	sync(); /* earlier phases' dirty pages would throttle this one */
	struct audit *a = audit__open(&o, wall_ns(), err, sizeof(err));
	if (!a) {
		fprintf(stderr, "bench_audit: %s\n", err);
		exit(2);
	}
	double t0 = mono();
	for (uint64_t i = 0; i < n; i++) {
		uint64_t now = wall_ns();
		size_t len = make_txn(line, sizeof(line), i, now);
		if (audit__append_txn(a, now, line, len)) {
			fprintf(stderr, "bench_audit: append failed\n");
			exit(2);
		}
		if ((i & 63) == 0)
			audit__tick(a, now);
	}
	audit__sync(a, wall_ns());
	r.secs = mono() - t0;
	r.rate = (double)n / r.secs;
	audit__close(a, wall_ns());
	return r;
}

/* The floor: the same lines written with write() in 256 KiB batches and one fdatasync, nothing else. */
static struct result bench_floor(const char *dir, uint64_t n)
{
	char path[640], line[2048];
	static char buf[256 << 10];
	size_t bl = 0;
	struct result r;

	snprintf(path, sizeof(path), "%s/floor", dir);
	sync();
	int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
	if (fd < 0)
		exit(2);
	double t0 = mono();
	for (uint64_t i = 0; i < n; i++) {
		uint64_t now = wall_ns();
		size_t len = make_txn(line, sizeof(line), i, now);
		if (bl + len + 1 > sizeof(buf)) {
			if (write(fd, buf, bl) != (ssize_t)bl)
				exit(2);
			bl = 0;
		}
		memcpy(buf + bl, line, len);
		buf[bl + len] = '\n';
		bl += len + 1;
	}
	if (write(fd, buf, bl) != (ssize_t)bl || fdatasync(fd) != 0)
		exit(2);
	r.secs = mono() - t0;
	r.rate = (double)n / r.secs;
	close(fd);
	unlink(path);
	return r;
}

/* Reopens and ticks until every sealed segment is compressed (and encrypted). */
static void compress_all(const char *dir, const char *key, const char *ek)
{
	struct audit_opts o;
	struct audit_stats st;
	char err[256];
	uint64_t before = UINT64_MAX;

	audit_opts_default(&o);
	o.dir = dir;
	o.initial_key_path = key;
	o.enc_key_path = ek;
	struct audit *a = audit__open(&o, wall_ns(), err, sizeof(err));
	if (!a)
		exit(2);
	for (int i = 0; i < 100000; i++) {
		audit__tick(a, wall_ns());
		audit__stats(a, &st);
		if (st.segments_compressed == before && i > 50)
			break;
		before = st.segments_compressed;
	}
	audit__close(a, wall_ns());
}

static double verify_mbs(const char *dir, const char *key, const char *ek, double *disk_mb,
			 struct audit_verify_result *r)
{
	uint8_t k0[32], e[32];
	char err[256];

	if (audit_key_load(key, k0, err, sizeof(err)) || (ek && audit_key_load(ek, e, err, sizeof(err))))
		exit(2);
	/* bytes of the segment files on disk */
	du_bytes = 0;
	nftw(dir, du_cb, 16, FTW_PHYS);
	*disk_mb = (double)du_bytes / 1e6;
	double best = 0;
	for (int i = 0; i < 3; i++) { /* best of three: the first may read from disk, the rest from cache */
		double t0 = mono();
		int rc = audit_verify(dir, k0, ek ? e : NULL, r);
		double dt = mono() - t0;
		if (rc != 0) {
			fprintf(stderr, "bench_audit: verify failed: %s\n", r->reason);
			exit(2);
		}
		double mbs = (double)r->bytes / 1e6 / dt;
		if (mbs > best)
			best = mbs;
	}
	return best;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "records", required_argument, NULL, 'n' },
		{ "fsync-records", required_argument, NULL, 'f' },
		{ 0 },
	};
	uint64_t n = 300000, nf = 2000;
	char base[512], d[600], key[600], ek[600];
	int ch;

	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 'n': n = strtoull(optarg, NULL, 10); break;
		case 'f': nf = strtoull(optarg, NULL, 10); break;
		default: fprintf(stderr, "usage: bench_audit [--records N] [--fsync-records N] [DIR]\n"); return 2;
		}
	}
	snprintf(base, sizeof(base), "%s/phiwatch-bench-audit-XXXXXX", optind < argc ? argv[optind] : "/var/tmp");
	if (!mkdtemp(base)) {
		perror("bench_audit: mkdtemp");
		return 2;
	}
	log_level = LOG_LVL_WARN;
	snprintf(key, sizeof(key), "%s/initial.key", base);
	snprintf(ek, sizeof(ek), "%s/enc.key", base);
	FILE *f = fopen(ek, "w");
	if (!f)
		return 2;
	for (int i = 0; i < 32; i++)
		fprintf(f, "%02x", (unsigned)((i * 37 + 11) & 0xff));
	fputc('\n', f);
	fclose(f);
	char line[2048];
	size_t sample = make_txn(line, sizeof(line), 12345, wall_ns());

	printf("phiwatch audit benchmark: %llu transactions of ~%zu bytes, in %s\n", (unsigned long long)n, sample,
	       base);
	struct result floor = bench_floor(base, n);
	printf("  %-58s %10.0f rec/s  %5.2f\n", "floor: write() in 256 KiB batches + one fdatasync, no chain",
	       floor.rate, 1.0);

	snprintf(d, sizeof(d), "%s/plain", base);
	struct result batched = bench_append(d, key, NULL, 1000, n, -1);
	printf("  %-58s %10.0f rec/s  %5.2f of floor\n", "append: chain, group commit every 1000 ms", batched.rate,
	       batched.rate / floor.rate);

	snprintf(d, sizeof(d), "%s/g10", base);
	struct result g10 = bench_append(d, key, NULL, 10, n, -1);
	printf("  %-58s %10.0f rec/s  %5.2f of floor\n", "append: chain, group commit every 10 ms", g10.rate,
	       g10.rate / floor.rate);

	snprintf(d, sizeof(d), "%s/encplain", base);
	struct result encp = bench_append(d, key, ek, 1000, n, -1);
	printf("  %-58s %10.0f rec/s  %5.2f of floor\n", "append: chain + AES-256-GCM records, group commit 1000 ms",
	       encp.rate, encp.rate / floor.rate);

	snprintf(d, sizeof(d), "%s/enc", base);
	struct result enc = bench_append(d, key, ek, 1000, n, 6);
	printf("  %-58s %10.0f rec/s  %5.2f of floor\n", "  + closed segments gzip'ed and encrypted in the ticks",
	       enc.rate, enc.rate / floor.rate);

	snprintf(d, sizeof(d), "%s/every", base);
	struct result every = bench_append(d, key, NULL, 0, nf, -1);
	printf("  %-58s %10.0f rec/s  %5.4f of floor\n", "append: chain, fdatasync every record", every.rate,
	       every.rate / floor.rate);
	printf("  group commit (1000 ms) vs fdatasync per record: x%.0f\n", batched.rate / every.rate);

	struct audit_verify_result r;
	double disk;
	snprintf(d, sizeof(d), "%s/plain", base);
	double v1 = verify_mbs(d, key, NULL, &disk, &r);
	printf("  %-58s %10.0f MB/s  (%.0f MB, %llu records, %llu segments)\n", "verify: plain segments (.log)", v1,
	       (double)r.bytes / 1e6, (unsigned long long)r.records, (unsigned long long)r.segments);
	snprintf(d, sizeof(d), "%s/enc", base);
	compress_all(d, key, ek);
	double v2 = verify_mbs(d, key, ek, &disk, &r);
	printf("  %-58s %10.0f MB/s  of plaintext (%.0f MB -> %.1f MB on disk, x%.1f; %llu of %llu segments "
	       "compressed)\n",
	       "verify: gzip + AES-256-GCM segments", v2, (double)r.bytes / 1e6, disk, (double)r.bytes / 1e6 / disk,
	       (unsigned long long)r.segments_compressed, (unsigned long long)r.segments);
	printf("  verify gzip+GCM vs plain: %.2f\n", v2 / v1);
	nftw(base, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	return 0;
}
