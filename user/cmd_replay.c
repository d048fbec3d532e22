/* cmd_replay.c — `phiwatch replay FILE`: the userspace pipeline over a recorded capture; no root, no BPF. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cmd.h"
#include "config.h"
#include "state.h"
#include "log.h"
#include "record.h"
#include "sink_jsonl.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: phiwatch replay [--config FILE] [--events FILE|-] [--stats] CAPTURE\n"
		   "\n"
		   "Feed a capture saved by `phiwatch run --record` through the same pipeline\n"
		   "and print the same transactions (JSON lines). No root or BPF needed.\n"
		   "  --config FILE   configuration (default " PHIWATCH_DEFAULT_CONFIG ", optional)\n"
		   "  --events FILE   write to FILE instead of stdout\n"
		   "  --stats         print the counters line on stderr at the end\n");
}

int cmd_replay(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "events", required_argument, NULL, 'e' },
		{ "stats", no_argument, NULL, 's' },
		{ "config", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *events = NULL, *config_path = NULL;
	bool stats = false;
	int ch;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "e:sh", opts, NULL)) != -1) {
		switch (ch) {
		case 'e': events = optarg; break;
		case 's': stats = true; break;
		case 'c': config_path = optarg; break;
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
	static struct record_reader rr;
	char err[160];
	if (record_reader_open(&rr, f, err, sizeof(err)) != 0) {
		fprintf(stderr, "phiwatch: %s: %s\n", path, err);
		fclose(f);
		return 2;
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
		cmd_print_stats(&ps, 0, 0, sink.lines, sink.write_errors);
	pipeline__free(pl);
	return rc;
}
