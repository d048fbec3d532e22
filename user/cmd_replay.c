/* cmd_replay.c — `phiwatch replay FILE`: the userspace pipeline over a recorded capture; no root, no BPF. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "config.h"
#include "state.h"
#include "log.h"
#include "record.h"
#include "sink_jsonl.h"
#include "txn_read.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: phiwatch replay [--config FILE] [--events FILE|-] [--alerts FILE] [--stats] INPUT\n"
		   "\n"
		   "INPUT is a capture saved by `phiwatch run --record`: it goes through the same\n"
		   "pipeline and prints the same transactions (JSON lines). Or INPUT is a\n"
		   "transactions JSONL (what `run --events` writes): the detectors run on the\n"
		   "lines' own timestamps and the alerts are printed. No root or BPF needed.\n"
		   "  --config FILE   configuration (default " PHIWATCH_DEFAULT_CONFIG ", optional)\n"
		   "  --events FILE   write transactions to FILE instead of stdout\n"
		   "  --alerts FILE   write alerts (JSON lines) to FILE; for a JSONL INPUT, default stdout\n"
		   "  --stats         print the counters line on stderr at the end\n");
}

/* A transactions JSONL: detection only, on the lines' own timestamps.
 * Alerts go to --alerts FILE, or stdout. */
static int replay_jsonl(FILE *f, const char *path, const struct config *cfg, const char *alerts, bool stats)
{
	static struct sink_jsonl out;
	static struct txn_owned to;
	char err[256], *line = NULL;
	size_t cap = 0;
	ssize_t n;
	uint64_t lineno = 0, bad = 0;
	int rc = 0;

	int e = sink_jsonl_open(&out, alerts, false);
	if (e) {
		fprintf(stderr, "phiwatch: %s: %s\n", alerts, strerror(-e));
		fclose(f);
		return 2;
	}
	struct pipeline_opts po = { .on_alert = sink_jsonl_alert, .alert_ctx = &out, .identity = &cfg->identity,
				    .resource = &cfg->resource, .detect = &cfg->detect };
	po.limits = cfg->limits;
	struct pipeline *pl = pipeline__new(&po);
	struct resource_ctx *rc_res = resource__new(&cfg->resource, err, sizeof(err));
	if (!pl || !rc_res) {
		fprintf(stderr, "phiwatch: cannot start the pipeline\n");
		pipeline__free(pl);
		resource__free(rc_res);
		fclose(f);
		sink_jsonl_close(&out);
		return 1;
	}
	while ((n = getline(&line, &cap, f)) > 0) {
		lineno++;
		while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			n--;
		if (n == 0)
			continue;
		if (txn_read_json(line, (size_t)n, rc_res, &to, err, sizeof(err)) != 0) {
			if (!bad++)
				log_warn("%s:%llu: %s (skipped; further bad lines are counted)", path,
					 (unsigned long long)lineno, err);
			continue;
		}
		pipeline__detect_txn(pl, &to.t);
	}
	free(line);
	fclose(f);
	pipeline__finish(pl);
	if (bad) {
		log_warn("%s: %llu of %llu lines skipped as malformed", path, (unsigned long long)bad,
			 (unsigned long long)lineno);
		rc = 1;
	}
	struct pipeline_stats ps;
	pipeline__stats(pl, &ps);
	if (stats)
		cmd_print_stats(&ps, 0, 0, out.lines, out.write_errors, NULL);
	pipeline__free(pl);
	resource__free(rc_res);
	if (sink_jsonl_close(&out) != 0)
		rc = 1;
	return rc;
}

int cmd_replay(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "events", required_argument, NULL, 'e' },
		{ "stats", no_argument, NULL, 's' },
		{ "config", required_argument, NULL, 'c' },
		{ "alerts", required_argument, NULL, 'a' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *events = NULL, *config_path = NULL, *alerts = NULL;
	bool stats = false;
	int ch;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "e:sh", opts, NULL)) != -1) {
		switch (ch) {
		case 'e': events = optarg; break;
		case 's': stats = true; break;
		case 'c': config_path = optarg; break;
		case 'a': alerts = optarg; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind + 1 != argc) {
		usage(stderr);
		return 2;
	}
	static struct config cfg;
	char cerr[512];
	config_init(&cfg);
	if (config_load(&cfg, config_path ? config_path : PHIWATCH_DEFAULT_CONFIG, config_path != NULL, cerr,
			sizeof(cerr)) != 0) {
		fprintf(stderr, "phiwatch: %s\n", cerr);
		return 2;
	}
	/* The live agent's secret, when readable, so API-key principals match. */
	if (state_secret_load(cfg.state_dir, cfg.identity.secret, false, cerr, sizeof(cerr)) != 0)
		log_debug("no host secret (%s): API-key principals will differ from the live run's", cerr);
	const char *path = argv[optind];
	FILE *f = fopen(path, "re");
	if (!f) {
		fprintf(stderr, "phiwatch: %s: %s\n", path, strerror(errno));
		return 2;
	}
	int first = fgetc(f);
	ungetc(first, f);
	if (first == '{')
		return replay_jsonl(f, path, &cfg, alerts, stats);
	static struct record_reader rr;
	char err[160];
	if (record_reader_open(&rr, f, err, sizeof(err)) != 0) {
		fprintf(stderr, "phiwatch: %s: %s\n", path, err);
		fclose(f);
		return 2;
	}
	static struct sink_jsonl alert_sink;
	if (alerts) {
		int e = sink_jsonl_open(&alert_sink, alerts, false);
		if (e) {
			fprintf(stderr, "phiwatch: %s: %s\n", alerts, strerror(-e));
			fclose(f);
			return 2;
		}
	}
	struct sink_jsonl sink;
	int e = sink_jsonl_open(&sink, events, false);
	if (e) {
		fprintf(stderr, "phiwatch: %s: %s\n", events, strerror(-e));
		fclose(f);
		return 2;
	}
	struct pipeline_opts po = { .realtime_offset_ns = rr.hdr.realtime_offset_ns, .on_txn = sink_jsonl_txn,
				    .ctx = &sink };
	po.limits = cfg.limits;
	po.identity = &cfg.identity;
	po.resource = &cfg.resource;
	po.detect = &cfg.detect;
	if (alerts) {
		po.on_alert = sink_jsonl_alert;
		po.alert_ctx = &alert_sink;
	}
	struct pipeline *pl = pipeline__new(&po);
	if (!pl) {
		fprintf(stderr, "phiwatch: out of memory\n");
		fclose(f);
		sink_jsonl_close(&sink);
		return 1;
	}
	const void *rec;
	size_t len;
	int rc = 0, r;
	while ((r = record_reader_next(&rr, &rec, &len, err, sizeof(err))) == 1)
		pipeline__feed(pl, rec, len);
	if (r < 0) {
		/* A capture cut by a crash: what came before still counts. */
		log_warn("%s: %s; replayed what preceded it", path, err);
		rc = 1;
	}
	pipeline__finish(pl);
	fclose(f);
	struct pipeline_stats ps;
	pipeline__stats(pl, &ps);
	if (ps.bad_records)
		log_warn("%s: %llu malformed records skipped", path, (unsigned long long)ps.bad_records);
	if (sink_jsonl_close(&sink) != 0) {
		log_error("writing transactions failed");
		rc = 1;
	}
	if (stats)
		cmd_print_stats(&ps, 0, 0, sink.lines, sink.write_errors, NULL);
	pipeline__free(pl);
	if (alerts && sink_jsonl_close(&alert_sink) != 0)
		rc = 1;
	return rc;
}
