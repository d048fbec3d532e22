/* cmd_audit.c — `phiwatch audit verify|query`: reads the audit trail (see audit.h); never writes to it. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "audit.h"

int cmd_audit(int argc, char **argv);

static void usage(FILE *f)
{
	fprintf(f, "usage: phiwatch audit verify [--key FILE] [--enc-key FILE] DIR\n"
		   "       phiwatch audit query DIR [--enc-key FILE] (--patient ID | --user ID | --since T [--until T]\n"
		   "                                                  | --all) [--gaps] [--records]\n"
		   "\n"
		   "verify  checks every record, hash link, seal, segment order and continuity of the audit trail\n"
		   "        in DIR; prints OK with counts, or the first failure (segment, record index, reason).\n"
		   "  --key FILE      the initial seal key written at first start (checks the seals)\n"
		   "  --enc-key FILE  the AES-256 key (32 raw bytes or 64 hex) when the trail is encrypted\n"
		   "query   prints the transactions that match, one JSON line each (the HIPAA access report).\n"
		   "  --patient ID    phiwatch.resource.id == ID, or ID in phiwatch.resource.ids\n"
		   "  --user ID       user.id == ID\n"
		   "  --since T, --until T   @timestamp in [since, until); T is RFC 3339 (2026-01-02T03:04:05Z,\n"
		   "                  2026-01-02) or an age (90s, 15m, 12h, 7d, 2w, now)\n"
		   "  --all           every transaction\n"
		   "  --gaps          print the gap records (start, stop, restart, gap, delete) instead\n"
		   "  --records       print every chain record as {\"seq\",\"ts\",\"type\",\"segment\",\"data\"}\n"
		   "\n"
		   "Exit status: 0 OK, 1 verification failure, 2 usage error or unreadable input.\n");
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int load_key(const char *path, uint8_t key[AUDIT_KEY_LEN])
{
	char err[512];

	if (audit_key_load(path, key, err, sizeof(err)) == 0)
		return 0;
	fprintf(stderr, "phiwatch: audit: %s\n", err);
	return -1;
}

static int cmd_verify(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "key", required_argument, NULL, 'k' },
		{ "enc-key", required_argument, NULL, 'e' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *key_path = NULL, *enc_path = NULL;
	uint8_t k0[AUDIT_KEY_LEN], ek[AUDIT_KEY_LEN];
	struct audit_verify_result r;
	int ch, rc;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "k:e:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'k': key_path = optarg; break;
		case 'e': enc_path = optarg; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind + 1 != argc) {
		usage(stderr);
		return 2;
	}
	const char *dir = argv[optind];
	if ((key_path && load_key(key_path, k0)) || (enc_path && load_key(enc_path, ek)))
		return 2;
	double t0 = mono_s();
	rc = audit_verify(dir, key_path ? k0 : NULL, enc_path ? ek : NULL, &r);
	double dt = mono_s() - t0;
	OPENSSL_cleanse(k0, sizeof(k0));
	OPENSSL_cleanse(ek, sizeof(ek));
	if (rc < 0) {
		fprintf(stderr, "phiwatch: audit: %s\n", r.reason);
		return 2;
	}
	if (rc > 0) {
		char where[160];
		if (r.record >= 0)
			snprintf(where, sizeof(where), "record %lld (seq %llu, offset %llu, %llu bytes to the end)",
				 (long long)r.record, (unsigned long long)r.seq, (unsigned long long)r.offset,
				 (unsigned long long)r.torn_bytes);
		else
			snprintf(where, sizeof(where), "whole file");
		printf("FAIL: segment %llu%s%s%s, %s: %s\n", (unsigned long long)r.segment, r.file[0] ? " (" : "", r.file,
		       r.file[0] ? ")" : "", where, r.reason);
		if (r.fail == AUDIT_F_IO || r.fail == AUDIT_F_NEED_ENC_KEY) {
			fprintf(stderr, "phiwatch: audit: %s: %s\n", r.file[0] ? r.file : dir, r.reason);
			return 2;
		}
		return 1;
	}
	double mb = (double)r.bytes / 1e6;
	printf("OK: %llu segments (%llu compressed, %llu deleted by retention), %llu records seq %llu..%llu: "
	       "%llu transactions, %llu gaps, %llu restarts after a crash; %llu seals verified; %.1f MB in %.2f s "
	       "(%.0f MB/s)\n",
	       (unsigned long long)r.segments, (unsigned long long)r.segments_compressed,
	       (unsigned long long)r.segments_deleted, (unsigned long long)r.records, (unsigned long long)r.first_seq,
	       (unsigned long long)r.last_seq, (unsigned long long)r.txns, (unsigned long long)r.gaps,
	       (unsigned long long)r.restarts, (unsigned long long)r.seals_checked, mb, dt, dt > 0 ? mb / dt : 0.0);
	if (r.seals_unchecked)
		printf("note: seals not checked: pass --key with the initial key\n");
	if (r.open_tail)
		printf("note: the last segment is open (agent running, or stopped by a crash; its next start cuts any "
		       "torn tail and chains a restart record)\n");
	return 0;
}

static int cmd_query(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "enc-key", required_argument, NULL, 'e' },
		{ "patient", required_argument, NULL, 'p' },
		{ "user", required_argument, NULL, 'u' },
		{ "since", required_argument, NULL, 's' },
		{ "until", required_argument, NULL, 't' },
		{ "all", no_argument, NULL, 'a' },
		{ "gaps", no_argument, NULL, 'g' },
		{ "records", no_argument, NULL, 'r' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct audit_query q = { 0 };
	struct audit_query_result res;
	const char *enc_path = NULL, *since = NULL, *until = NULL;
	uint8_t ek[AUDIT_KEY_LEN];
	bool all = false;
	uint64_t now = now_ns();
	int ch, rc;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "e:p:u:s:t:agrh", opts, NULL)) != -1) {
		switch (ch) {
		case 'e': enc_path = optarg; break;
		case 'p': q.patient = optarg; break;
		case 'u': q.user = optarg; break;
		case 's': since = optarg; break;
		case 't': until = optarg; break;
		case 'a': all = true; break;
		case 'g': q.gaps = true; break;
		case 'r': q.records = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind + 1 != argc) {
		usage(stderr);
		return 2;
	}
	if (!q.patient && !q.user && !since && !until && !all && !q.gaps && !q.records) {
		fprintf(stderr, "phiwatch: audit: query needs --patient, --user, --since/--until, --all, --gaps or "
				"--records\n");
		return 2;
	}
	if ((q.patient && !*q.patient) || (q.user && !*q.user)) {
		fprintf(stderr, "phiwatch: audit: --patient and --user need a non-empty ID\n");
		return 2;
	}
	if (since && audit_parse_time(since, now, &q.since_ns)) {
		fprintf(stderr, "phiwatch: audit: --since \"%s\": not RFC 3339 or an age like 7d\n", since);
		return 2;
	}
	if (until && (audit_parse_time(until, now, &q.until_ns) || !q.until_ns)) {
		fprintf(stderr, "phiwatch: audit: --until \"%s\": not RFC 3339 or an age like 7d\n", until);
		return 2;
	}
	if (since && until && q.until_ns <= q.since_ns) {
		fprintf(stderr, "phiwatch: audit: --until must be after --since\n");
		return 2;
	}
	if (enc_path && load_key(enc_path, ek))
		return 2;
	rc = audit_query(argv[optind], enc_path ? ek : NULL, &q, stdout, &res);
	OPENSSL_cleanse(ek, sizeof(ek));
	if (rc < 0) {
		fprintf(stderr, "phiwatch: audit: %s\n", res.reason);
		return 2;
	}
	fprintf(stderr, "phiwatch: audit: %llu matching of %llu records in %llu segments\n",
		(unsigned long long)res.matched, (unsigned long long)res.scanned, (unsigned long long)res.segments);
	if (res.gaps_in_range && !q.gaps && !q.records)
		fprintf(stderr,
			"phiwatch: audit: note: %llu gap records (capture drops, crash restarts, lost records, deletions) "
			"fall in this time range: the report may be incomplete (see --gaps)\n",
			(unsigned long long)res.gaps_in_range);
	if (rc > 0) {
		fprintf(stderr,
			"phiwatch: audit: warning: %llu segment(s) failed their checks (first: %s); records after a "
			"failure were not reported: run `phiwatch audit verify`\n",
			(unsigned long long)res.problems, res.reason);
		return 1;
	}
	return 0;
}

int cmd_audit(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "verify"))
		return cmd_verify(argc - 1, argv + 1);
	if (!strcmp(argv[1], "query"))
		return cmd_query(argc - 1, argv + 1);
	fprintf(stderr, "phiwatch: audit: unknown subcommand \"%s\"\n", argv[1]);
	usage(stderr);
	return 2;
}
