/* cmd_dump.c — `phiwatch dump`: asks the running agent, over its root-only control socket, for a forensic dump
 * of one user's or one process's recent history (or all of it); and decrypts an encrypted dump.
 * A client only: the agent selects, writes and chains the dump (see forensics.h, control.h).
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <openssl/crypto.h>

#include "audit.h"
#include "control.h"
#include "forensics.h"
#include "json.h"

int cmd_dump(int argc, char **argv);

#define DUMP_LAST_MAX_S (10ull * 366 * 86400)

static void usage(FILE *f)
{
	fprintf(f, "usage: phiwatch dump (--user ID | --pid PID | --all) [--last DURATION] [--socket PATH] [--json]\n"
		   "       phiwatch dump --decrypt FILE.tar.gz.aes --enc-key KEYFILE [--output FILE]\n"
		   "\n"
		   "Asks the running agent (root only) to write a forensic dump of its recent in-memory history:\n"
		   "a .tar.gz under the forensics directory with manifest.json, transactions.jsonl and\n"
		   "capture.pcap. Prints the dump's path, then its sha256 (also chained into the audit trail).\n"
		   "  --user ID       the calls of principal ID (a user, or ip:ADDR for a client address)\n"
		   "  --pid PID       the calls process PID made or answered (with --user: either)\n"
		   "  --all           every call in the history\n"
		   "  --last DURATION only calls started within DURATION: 90s, 10m, 2h, 1d, 1w (a bare number: seconds)\n"
		   "  --socket PATH   the agent's control socket (default " CONTROL_DEFAULT_PATH ")\n"
		   "  --json          print the agent's answer as one JSON line instead\n"
		   "  --decrypt FILE  turn an encrypted dump back into its .tar.gz (--enc-key: the audit encryption\n"
		   "                  key file, 32 raw bytes or 64 hex; --output: default FILE without .aes)\n"
		   "\n"
		   "Exit status: 0 dump written, 1 the agent refused or could not be reached, 2 usage error.\n");
}

/* "600", "90s", "10m", "2h", "1d", "1w" -> seconds; 0 on error. */
static uint64_t parse_duration(const char *s)
{
	char *end;
	unsigned long long v;
	uint64_t mul = 1;

	if (!s || *s < '0' || *s > '9')
		return 0;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return 0;
	if (*end) {
		switch (*end) {
		case 's': mul = 1; break;
		case 'm': mul = 60; break;
		case 'h': mul = 3600; break;
		case 'd': mul = 86400; break;
		case 'w': mul = 7 * 86400; break;
		default: return 0;
		}
		if (end[1])
			return 0;
	}
	if (!v || v > DUMP_LAST_MAX_S / mul)
		return 0;
	return v * mul;
}

static int decrypt(const char *in, const char *key_path, const char *out)
{
	uint8_t key[FORENSICS_KEY_LEN];
	char err[512], def[4096];
	size_t n = strlen(in);
	int rc;

	if (!key_path) {
		fprintf(stderr, "phiwatch: dump: --decrypt needs --enc-key\n");
		return 2;
	}
	if (!out) {
		if (n <= 4 || strcmp(in + n - 4, ".aes") || n - 4 >= sizeof(def)) {
			fprintf(stderr, "phiwatch: dump: %s does not end in .aes: say --output\n", in);
			return 2;
		}
		memcpy(def, in, n - 4);
		def[n - 4] = '\0';
		out = def;
	}
	if (audit_key_load(key_path, key, err, sizeof(err))) {
		fprintf(stderr, "phiwatch: dump: %s\n", err);
		return 2;
	}
	rc = forensics_decrypt(in, out, key, err, sizeof(err));
	OPENSSL_cleanse(key, sizeof(key));
	if (rc) {
		fprintf(stderr, "phiwatch: dump: %s\n", err);
		return 1;
	}
	printf("%s\n", out);
	return 0;
}

int cmd_dump(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "user", required_argument, NULL, 'u' },
		{ "pid", required_argument, NULL, 'p' },
		{ "all", no_argument, NULL, 'a' },
		{ "last", required_argument, NULL, 'l' },
		{ "socket", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "decrypt", required_argument, NULL, 'd' },
		{ "enc-key", required_argument, NULL, 'e' },
		{ "output", required_argument, NULL, 'o' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *user = NULL, *sock = CONTROL_DEFAULT_PATH, *dec = NULL, *key = NULL, *out = NULL;
	unsigned long pid = 0;
	uint64_t last = 0;
	bool all = false, as_json = false;
	struct jbuf req, resp;
	char err[512], *end;
	cJSON *r;
	int ch, rc;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "u:p:al:s:jd:e:o:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'u':
			user = optarg;
			if (!user[0] || strlen(user) >= 1024) {
				fprintf(stderr, "phiwatch: dump: --user: must be a non-empty principal\n");
				return 2;
			}
			break;
		case 'p':
			errno = 0;
			pid = strtoul(optarg, &end, 10);
			if (errno || end == optarg || *end || !pid || pid > UINT32_MAX) {
				fprintf(stderr, "phiwatch: dump: --pid: \"%s\" is not a process id\n", optarg);
				return 2;
			}
			break;
		case 'a': all = true; break;
		case 'l':
			last = parse_duration(optarg);
			if (!last) {
				fprintf(stderr, "phiwatch: dump: --last: \"%s\" is not a duration (90s, 10m, 2h, 1d)\n",
					optarg);
				return 2;
			}
			break;
		case 's': sock = optarg; break;
		case 'j': as_json = true; break;
		case 'd': dec = optarg; break;
		case 'e': key = optarg; break;
		case 'o': out = optarg; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "phiwatch: dump: unexpected argument \"%s\"\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	if (dec)
		return decrypt(dec, key, out);
	if (all == (user || pid)) {
		fprintf(stderr, "phiwatch: dump: say --user ID, --pid PID (or both), or --all\n");
		usage(stderr);
		return 2;
	}

	jbuf_init(&req);
	jbuf_init(&resp);
	json_obj_open(&req, NULL);
	json_cstr(&req, "cmd", "dump");
	if (user)
		json_cstr(&req, "user", user);
	if (pid)
		json_u64(&req, "pid", pid);
	if (all)
		json_bool(&req, "all", true);
	if (last)
		json_u64(&req, "last_s", last);
	json_obj_close(&req);
	if (req.oom) {
		fprintf(stderr, "phiwatch: dump: out of memory\n");
		return 1;
	}
	rc = control_request(sock, req.p, &resp, err, sizeof(err));
	jbuf_free(&req);
	if (rc) {
		fprintf(stderr, "phiwatch: dump: %s\n", err);
		jbuf_free(&resp);
		return 1;
	}
	r = cJSON_ParseWithLength(resp.p, resp.len);
	const cJSON *ok = cJSON_GetObjectItemCaseSensitive(r, "ok");
	const cJSON *path = cJSON_GetObjectItemCaseSensitive(r, "path");
	const cJSON *sha = cJSON_GetObjectItemCaseSensitive(r, "sha256");
	const cJSON *why = cJSON_GetObjectItemCaseSensitive(r, "error");
	const cJSON *ntx = cJSON_GetObjectItemCaseSensitive(r, "transactions");
	if (as_json)
		printf("%s\n", resp.p);
	if (!cJSON_IsTrue(ok) || !cJSON_IsString(path)) {
		if (!as_json)
			fprintf(stderr, "phiwatch: dump: the agent refused: %s\n",
				cJSON_IsString(why) ? why->valuestring : "(no reason given)");
		rc = 1;
	} else if (!as_json) {
		printf("%s\nsha256 %s\n", path->valuestring, cJSON_IsString(sha) ? sha->valuestring : "?");
		if (cJSON_IsNumber(ntx))
			printf("transactions %.0f\n", ntx->valuedouble);
	}
	cJSON_Delete(r);
	jbuf_free(&resp);
	return rc;
}
