/* audit_driver.c — appends transactions to an audit trail in a loop for the crash and disk-full tests.
 * Prints "synced SEQ run R n N" each time fdatasync acknowledges records up to SEQ (N: the last driver record
 * among them), "stats {...}" each second and at exit. `audit_driver audit ...` runs `phiwatch audit ...`.
 * Not a benchmark (tests/bench/bench_audit.c) and not the agent.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "json.h"

int cmd_audit(int argc, char **argv);

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void print_stats(struct audit *a, uint64_t appended, uint64_t refused, const char *when)
{
	struct audit_stats s;

	audit__stats(a, &s);
	printf("stats {\"when\":\"%s\",\"appended\":%llu,\"refused\":%llu,\"written\":%llu,\"synced\":%llu,"
	       "\"lost\":%llu,\"write_errors\":%llu,\"unsynced\":%llu,\"last_seq\":%llu,\"segment\":%llu,"
	       "\"closed\":%llu,\"compressed\":%llu,\"deleted\":%llu,\"write_error\":%d}\n",
	       when, (unsigned long long)appended, (unsigned long long)refused, (unsigned long long)s.records_written,
	       (unsigned long long)s.records_synced, (unsigned long long)s.records_lost,
	       (unsigned long long)s.write_errors, (unsigned long long)s.unsynced, (unsigned long long)s.last_seq,
	       (unsigned long long)s.segment, (unsigned long long)s.segments_closed,
	       (unsigned long long)s.segments_compressed, (unsigned long long)s.segments_deleted, s.write_error);
	fflush(stdout);
}

static void usage(FILE *f)
{
	fprintf(f, "usage: audit_driver run DIR --initial-key FILE [--enc-key FILE] [--fsync-ms N] [--segment-bytes N]\n"
		   "                    [--segment-age-s N] [--count N] [--rate N] [--body N] [--run N] [--stop-on-full]\n"
		   "                    [--compress N] [--compress-thread] [--retention-days N]\n"
		   "       audit_driver audit verify|query ...   (the `phiwatch audit` command)\n");
}

static int run(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "initial-key", required_argument, NULL, 'k' },
		{ "enc-key", required_argument, NULL, 'e' },
		{ "fsync-ms", required_argument, NULL, 'f' },
		{ "segment-bytes", required_argument, NULL, 'b' },
		{ "segment-age-s", required_argument, NULL, 'a' },
		{ "count", required_argument, NULL, 'c' },
		{ "rate", required_argument, NULL, 'r' },
		{ "body", required_argument, NULL, 'B' },
		{ "run", required_argument, NULL, 'R' },
		{ "stop-on-full", no_argument, NULL, 'S' },
		{ "compress", required_argument, NULL, 'z' },
		{ "retention-days", required_argument, NULL, 'd' },
		{ "compress-thread", no_argument, NULL, 'T' },
		{ 0 },
	};
	struct audit_opts o;
	uint64_t count = 0, rate = 0, body = 200, runid = 0;
	int ch;

	audit_opts_default(&o);
	o.initial_key_path = NULL;
	optind = 1;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 'k': o.initial_key_path = optarg; break;
		case 'e': o.enc_key_path = optarg; break;
		case 'f': o.fsync_interval_ms = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'b': o.segment_max_bytes = strtoull(optarg, NULL, 10); break;
		case 'a': o.segment_max_age_s = strtoull(optarg, NULL, 10); break;
		case 'c': count = strtoull(optarg, NULL, 10); break;
		case 'r': rate = strtoull(optarg, NULL, 10); break;
		case 'B': body = strtoull(optarg, NULL, 10); break;
		case 'R': runid = strtoull(optarg, NULL, 10); break;
		case 'S': o.on_full = AUDIT_FULL_STOP; break;
		case 'z': o.compress_level = atoi(optarg); break;
		case 'd': o.retention_days = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'T': o.compress_thread = true; break;
		default: usage(stderr); return 2;
		}
	}
	if (optind + 1 != argc || !o.initial_key_path || body > 60000) {
		usage(stderr);
		return 2;
	}
	o.dir = argv[optind];
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	signal(SIGPIPE, SIG_IGN);

	char err[512];
	struct audit *a = audit__open(&o, now_ns(), err, sizeof(err));
	if (!a) {
		fprintf(stderr, "audit_driver: %s\n", err);
		return 2;
	}
	struct audit_stats s;
	audit__stats(a, &s);
	printf("opened segment %llu last_seq %llu\n", (unsigned long long)s.segment, (unsigned long long)s.last_seq);
	fflush(stdout);

	char *pad = malloc(body + 1), *line = malloc(body + 512);
	uint64_t *seq_of = NULL, cap = 0, n = 0, appended = 0, refused = 0;
	uint64_t last_printed = UINT64_MAX, t_start = now_ns(), next_stats = t_start + 1000000000ull;
	if (!pad || !line)
		return 2;
	memset(pad, 'x', body);
	pad[body] = '\0';
	while (!stop && (!count || n < count)) {
		uint64_t now = now_ns();
		char ts[40];
		if (rate && n * 1000000000ull / rate > now - t_start) {
			struct timespec d = { 0, 200000 };
			nanosleep(&d, NULL);
			audit__tick(a, now);
			continue;
		}
		json_time_rfc3339(ts, sizeof(ts), now);
		int len = snprintf(line, body + 512,
				   "{\"@timestamp\":\"%s\",\"event\":{\"kind\":\"event\"},\"user\":{\"id\":\"u%llu\"},"
				   "\"phiwatch\":{\"resource\":{\"type\":\"Patient\",\"id\":\"%llu\"}},"
				   "\"driver\":{\"run\":%llu,\"n\":%llu},\"pad\":\"%s\"}",
				   ts, (unsigned long long)(n % 7), (unsigned long long)(n % 50), (unsigned long long)runid,
				   (unsigned long long)n, pad);
		uint64_t lost_before;
		audit__stats(a, &s);
		lost_before = s.records_lost;
		int e = audit__append_txn(a, now, line, (size_t)len);
		audit__stats(a, &s);
		if (n == cap) {
			cap = cap ? cap * 2 : 65536;
			seq_of = realloc(seq_of, cap * sizeof(*seq_of));
			if (!seq_of)
				return 2;
		}
		/* a record lost or refused has no seq */
		seq_of[n] = (e || s.records_lost != lost_before) ? UINT64_MAX : s.last_seq;
		if (e)
			refused++;
		else
			appended++;
		n++;
		audit__tick(a, now_ns());
		audit__stats(a, &s);
		if (s.records_lost != lost_before) {
			/* a write error dropped buffered records and rewound the chain: their seqs will be reused */
			for (uint64_t i = n; i-- > 0 && (seq_of[i] == UINT64_MAX || seq_of[i] > s.last_seq);)
				seq_of[i] = UINT64_MAX;
		}
		if (s.synced_seq != UINT64_MAX && s.synced_seq != last_printed) {
			/* the last driver record among the acknowledged ones */
			long long last_n = -1;
			for (uint64_t i = n; i-- > 0;)
				if (seq_of[i] != UINT64_MAX && seq_of[i] <= s.synced_seq) {
					last_n = (long long)i;
					break;
				}
			printf("synced %llu run %llu n %lld\n", (unsigned long long)s.synced_seq, (unsigned long long)runid,
			       last_n);
			fflush(stdout);
			last_printed = s.synced_seq;
		}
		if (now >= next_stats) {
			print_stats(a, appended, refused, "periodic");
			next_stats = now + 1000000000ull;
		}
	}
	print_stats(a, appended, refused, "close");
	audit__stats(a, &s);
	uint64_t unsynced = s.unsynced;
	audit__close(a, now_ns());
	printf("closed unsynced_before_close %llu\n", (unsigned long long)unsynced);
	printf("stats {\"when\":\"exit\",\"appended\":%llu,\"refused\":%llu}\n", (unsigned long long)appended,
	       (unsigned long long)refused);
	fflush(stdout);
	free(seq_of);
	free(pad);
	free(line);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "run"))
		return run(argc - 1, argv + 1);
	if (argc >= 2 && !strcmp(argv[1], "audit"))
		return cmd_audit(argc - 1, argv + 1);
	usage(stderr);
	return 2;
}
