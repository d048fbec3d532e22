/* cmd_status.c — `phiwatch status`: a one-screen summary of the running agent, over the control socket. */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cmd.h"
#include "control.h"
#include "json.h"

static unsigned long long num(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
	return cJSON_IsNumber(v) ? (unsigned long long)v->valuedouble : 0;
}

int cmd_status(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *path = CONTROL_DEFAULT_PATH;
	bool as_json = false;
	int ch;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "s:jh", opts, NULL)) != -1) {
		switch (ch) {
		case 's': path = optarg; break;
		case 'j': as_json = true; break;
		case 'h':
			printf("usage: phiwatch status [--socket PATH] [--json]\n\n"
			       "A summary of the running agent: uptime, probes, rates, drops, alerts,\n"
			       "audit position. Asks the agent over its root-only control socket\n"
			       "(default " CONTROL_DEFAULT_PATH ").\n");
			return 0;
		default:
			return 2;
		}
	}
	struct jbuf resp;
	char err[256];
	jbuf_init(&resp);
	if (control_request(path, "{\"cmd\":\"status\"}", &resp, err, sizeof(err)) != 0) {
		fprintf(stderr, "phiwatch: status: %s\n", err);
		jbuf_free(&resp);
		return 1;
	}
	cJSON *j = cJSON_ParseWithLength(resp.p ? resp.p : "", resp.len);
	if (!j || !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "ok"))) {
		fprintf(stderr, "phiwatch: status: unexpected answer: %s\n", resp.p ? resp.p : "");
		cJSON_Delete(j);
		jbuf_free(&resp);
		return 1;
	}
	if (as_json) {
		printf("%s\n", resp.p);
	} else {
		unsigned long long up = num(j, "uptime_s");
		const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, "audit");
		const cJSON *f = cJSON_GetObjectItemCaseSensitive(j, "forensics");
		printf("phiwatch %s, pid %llu, up %lluh%02llum%02llus\n",
		       cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "version")), num(j, "pid"), up / 3600,
		       up / 60 % 60, up % 60);
		printf("  probes        %llu tracepoints, %llu OpenSSL libraries hooked, %llu processes with TLS not visible\n",
		       num(j, "tracepoints"), num(j, "tls_libraries_hooked"), num(j, "tls_uninstrumented_processes"));
		printf("  traffic       %llu events, %llu transactions (%.1f/s), %llu connections open\n", num(j, "events"),
		       num(j, "transactions"), up ? (double)num(j, "transactions") / (double)up : 0.0,
		       num(j, "connections_live"));
		printf("  drops         %llu\n", num(j, "drops_total"));
		printf("  alerts        %llu, %llu principals tracked\n", num(j, "alerts_total"), num(j, "principals_live"));
		if (a) {
			printf("  audit         seq %llu, segment %llu, %llu records lost, %llu not yet synced\n",
			       num(a, "last_seq"), num(a, "segment"), num(a, "records_lost"), num(a, "unsynced"));
			printf("                %llu segments sealed, %llu compressed (%llu while written), %llu waiting for "
			       "compression\n", num(a, "segments_closed"), num(a, "segments_compressed"),
			       num(a, "segments_streamed"), num(a, "compress_pending"));
		}
		if (f)
			printf("  forensics     %llu calls in memory (%llu bytes)\n", num(f, "history_entries"),
			       num(f, "history_bytes"));
	}
	cJSON_Delete(j);
	jbuf_free(&resp);
	return 0;
}
