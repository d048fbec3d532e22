/* cmd_inventory.c — `phiwatch inventory`: the API surface seen, from the audit trail (see inventory.h).
 * Reads the trail through audit_query; never writes to it.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>

#include "audit.h"
#include "inventory.h"
#include "json.h"

int cmd_inventory(int argc, char **argv);

static void usage(FILE *f)
{
	fprintf(f, "usage: phiwatch inventory [--enc-key FILE] [--json] [--role server|client|all] DIR\n"
		   "\n"
		   "The API surface actually seen in the audit trail DIR (e.g. /var/lib/phiwatch/audit): per service\n"
		   "(process name and executable) and endpoint template (ids folded into {id}: numbers, UUIDs, long\n"
		   "hex strings, FHIR ids after a resource type), the methods, calls, auth schemes, TLS (yes, no,\n"
		   "mixed), FHIR resource types, distinct principals and when it was last seen.\n"
		   "\n"
		   "  --json          one JSON object per endpoint (JSONL) instead of the table\n"
		   "  --role R        server (default: the APIs this host serves), client (the APIs its\n"
		   "                  processes call) or all\n"
		   "  --enc-key FILE  the AES-256 key (32 raw bytes or 64 hex) when the trail is encrypted\n"
		   "\n"
		   "Exit status: 0 OK, 1 some segment failed its integrity checks (what could be read is shown;\n"
		   "run `phiwatch audit verify`), 2 usage error or unreadable trail.\n");
}

int cmd_inventory(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "enc-key", required_argument, NULL, 'e' },
		{ "json", no_argument, NULL, 'j' },
		{ "role", required_argument, NULL, 'r' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *enc_path = NULL;
	struct inventory_opts io = { .roles = INVENTORY_ROLE_SERVER };
	uint8_t ek[AUDIT_KEY_LEN];
	bool json = false;
	int ch, rc;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "e:jr:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'e': enc_path = optarg; break;
		case 'j': json = true; break;
		case 'r':
			if (!strcmp(optarg, "server"))
				io.roles = INVENTORY_ROLE_SERVER;
			else if (!strcmp(optarg, "client"))
				io.roles = INVENTORY_ROLE_CLIENT;
			else if (!strcmp(optarg, "all"))
				io.roles = INVENTORY_ROLE_ALL;
			else {
				fprintf(stderr, "phiwatch: inventory: --role must be server, client or all\n");
				return 2;
			}
			break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind + 1 != argc) {
		usage(stderr);
		return 2;
	}
	const char *dir = argv[optind];
	if (enc_path) {
		char err[512];
		if (audit_key_load(enc_path, ek, err, sizeof(err)) != 0) {
			fprintf(stderr, "phiwatch: inventory: %s\n", err);
			return 2;
		}
	}
	struct inventory *inv = inventory__new(&io);
	if (!inv) {
		fprintf(stderr, "phiwatch: inventory: out of memory\n");
		return 2;
	}
	struct audit_query_result res;
	rc = inventory_from_audit(inv, dir, enc_path ? ek : NULL, &res);
	OPENSSL_cleanse(ek, sizeof(ek));
	if (rc < 0) {
		fprintf(stderr, "phiwatch: inventory: %s\n", res.reason);
		inventory__free(inv);
		return 2;
	}
	struct jbuf out;
	jbuf_init(&out);
	if (json)
		inventory__render_jsonl(inv, &out);
	else
		inventory__render_table(inv, dir, &out);
	if (out.oom) {
		fprintf(stderr, "phiwatch: inventory: out of memory\n");
		jbuf_free(&out);
		inventory__free(inv);
		return 2;
	}
	if (out.len && fwrite(out.p, 1, out.len, stdout) != out.len) {
		fprintf(stderr, "phiwatch: inventory: writing the output failed: %s\n", strerror(errno));
		rc = 2;
	}
	jbuf_free(&out);

	struct inventory_stats st;
	inventory__stats(inv, &st);
	const char *what = io.roles == INVENTORY_ROLE_SERVER   ? "server-side "
			   : io.roles == INVENTORY_ROLE_CLIENT ? "client-side "
							       : "";
	fprintf(stderr, "phiwatch: inventory: %llu %stransactions of %llu in %llu segments: %llu endpoints in %llu "
			"services",
		(unsigned long long)st.counted, what, (unsigned long long)st.lines, (unsigned long long)res.segments,
		(unsigned long long)st.groups, (unsigned long long)st.services);
	uint64_t skipped = st.skipped_role[0] + st.skipped_role[1] + st.skipped_role[2];
	if (skipped)
		fprintf(stderr, " (%llu of other roles left out: --role all)", (unsigned long long)skipped);
	fprintf(stderr, "\n");
	if (st.bad_lines)
		fprintf(stderr, "phiwatch: inventory: %llu unreadable transaction lines skipped (first: %s)\n",
			(unsigned long long)st.bad_lines, st.first_bad);
	if (st.overflowed || st.dropped)
		fprintf(stderr, "phiwatch: inventory: %llu calls folded into {other} (over %d endpoints), %llu not "
				"counted (memory)\n",
			(unsigned long long)st.overflowed, INVENTORY_MAX_GROUPS, (unsigned long long)st.dropped);
	if (res.gaps_in_range)
		fprintf(stderr, "phiwatch: inventory: note: the trail holds %llu gap records (capture drops, crash "
				"restarts, lost records, deletions): calls may be missing (phiwatch audit query DIR --gaps)\n",
			(unsigned long long)res.gaps_in_range);
	if (rc == 1) {
		fprintf(stderr, "phiwatch: inventory: warning: %llu segment(s) failed their checks (first: %s); records "
				"after a failure were not read: run `phiwatch audit verify`\n",
			(unsigned long long)res.problems, res.reason);
	}
	inventory__free(inv);
	return rc == 1 ? 1 : rc;
}
