/* cmd_run.c — `phiwatch run`: the agent in the foreground. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "capture.h"
#include "control.h"
#include "forensics.h"
#include "history.h"
#include "config.h"
#include "cmd.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "privs.h"
#include "state.h"
#include "record.h"
#include "sink_jsonl.h"
#include "sink_syslog.h"

static volatile sig_atomic_t stop, reload, dump_all;

static void on_signal(int sig)
{
	if (sig == SIGHUP)
		reload = 1;
	else if (sig == SIGUSR1)
		dump_all = 1;
	else
		stop = 1;
}

/* SIGHUP: a new configuration is loaded and checked in full; a bad one is
 * rejected with its reason and the running one kept. What is fixed at start
 * (ring size, capture filter on/off, state and audit paths) needs a restart. */
static void do_reload(const char *path, struct config *cur, struct pipeline *pl, struct capture *cap)
{
	static struct config next;
	char err[512];

	config_init(&next);
	if (privs_check_path(path, true, err, sizeof(err)) != 0 ||
	    config_load(&next, path, true, err, sizeof(err)) != 0) {
		log_error("reload rejected, keeping the running configuration: %s", err);
		return;
	}
	config_finish(&next);
	memcpy(next.identity.secret, cur->identity.secret, sizeof(next.identity.secret));
	if (pipeline__reconfigure(pl, &next.identity, &next.resource, &next.detect, err, sizeof(err)) != 0) {
		log_error("reload rejected, keeping the running configuration: %s", err);
		return;
	}
	int perr = capture__set_ports(cap, next.capture.ports, next.capture.nports);
	if (perr == -EOPNOTSUPP)
		log_warn("reload: turning capture.ports filtering on or off needs a restart; ports unchanged");
	if (strcmp(next.state_dir, cur->state_dir) || next.capture.ringbuf_mb != cur->capture.ringbuf_mb ||
	    strcmp(next.audit.dir, cur->audit.dir) || next.audit.enabled != cur->audit.enabled)
		log_warn("reload: state_dir, capture.ringbuf_mb and audit.* take effect at the next start");
	/* The contexts copied what they need; only the ports are read again. */
	if (perr == 0) {
		memcpy(cur->capture.ports, next.capture.ports, sizeof(cur->capture.ports));
		cur->capture.nports = next.capture.nports;
	}
	log_info("configuration reloaded from %s", path);
}

struct run_ctx {
	struct pipeline *pl;
	FILE *rec;
	uint64_t rec_errors;
	struct sink_jsonl *alerts;    /* NULL: no alerts file */
	struct sink_syslog *syslog;   /* NULL: syslog off */
	uint64_t alerts_n;
	struct sink_jsonl *events;
	struct audit *audit;          /* NULL: audit trail off */
	struct jbuf jb;               /* one transaction's JSON, shared by every output */
	uint64_t audit_errors;
	struct history *hist;         /* NULL: forensics off */
	struct forensics *fx;
	struct capture *cap;
	uint64_t start_ns;
};

static uint64_t realtime_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* A scrape of the metrics endpoint: the same counters as the stats line and `status`. */
static void metrics_fill(void *ctx, struct metrics_snapshot *m)
{
	struct run_ctx *r = ctx;
	struct pipeline_stats ps;
	struct capture_stats cs;

	pipeline__stats(r->pl, &ps);
	capture__stats(r->cap, &cs);
	metrics_fill_pipeline(m, &ps);
	m->version = PHIWATCH_VERSION;
	m->start_time_ns = r->start_ns;
	if (cs.ring_events)
		m->events = cs.ring_events;
	m->bad_events += cs.bad_events;
	metrics_pair_add(m->drops, &m->ndrops, "bad_records", cs.bad_events);
	m->tls_libraries = cs.tls_libs;
	m->tls_uninstrumented = cs.tls_uninstrumented;
	if (r->audit) {
		struct audit_stats as;
		audit__stats(r->audit, &as);
		metrics_fill_audit(m, &as);
	}
	if (r->hist) {
		struct history_stats hs;
		history__stats(r->hist, &hs);
		metrics_pair_add(m->tables, &m->ntables, "forensics_history", hs.bytes);
	}
}

/* `phiwatch status`: one JSON object the client turns into a screen. */
static void status_json(struct run_ctx *r, struct jbuf *b)
{
	struct pipeline_stats ps;
	struct capture_stats cs;

	pipeline__stats(r->pl, &ps);
	capture__stats(r->cap, &cs);
	json_obj_open(b, NULL);
	json_bool(b, "ok", true);
	json_cstr(b, "version", PHIWATCH_VERSION);
	json_u64(b, "pid", (uint64_t)getpid());
	json_u64(b, "uptime_s", (realtime_ns() - r->start_ns) / 1000000000ull);
	json_u64(b, "tracepoints", cs.tracepoints);
	json_u64(b, "tls_libraries_hooked", cs.tls_libs);
	json_u64(b, "tls_uninstrumented_processes", cs.tls_uninstrumented);
	json_u64(b, "events", cs.ring_events);
	json_u64(b, "transactions", ps.transactions);
	json_u64(b, "connections_live", ps.conn.conns_live);
	uint64_t drops = 0;
	for (unsigned i = 0; i < PW_DROP__MAX; i++)
		drops += cs.drops[i];
	json_u64(b, "drops_total", drops);
	uint64_t alerts = 0;
	for (unsigned i = 0; i < DETECT_RULE__MAX; i++)
		alerts += ps.detect.alerts[i];
	json_u64(b, "alerts_total", alerts);
	json_u64(b, "principals_live", ps.detect.principals_live);
	if (r->audit) {
		struct audit_stats as;
		audit__stats(r->audit, &as);
		json_obj_open(b, "audit");
		json_u64(b, "last_seq", as.last_seq);
		json_u64(b, "records_written", as.records_written);
		json_u64(b, "records_lost", as.records_lost);
		json_u64(b, "unsynced", as.unsynced);
		json_u64(b, "segment", as.segment);
		json_u64(b, "segments_closed", as.segments_closed);
		json_u64(b, "segments_compressed", as.segments_compressed);
		json_u64(b, "segments_streamed", as.segments_streamed);
		json_u64(b, "compress_pending", as.compress_pending);
		json_obj_close(b);
	}
	if (r->hist) {
		struct history_stats hs;
		history__stats(r->hist, &hs);
		json_obj_open(b, "forensics");
		json_u64(b, "history_entries", hs.entries);
		json_u64(b, "history_bytes", hs.bytes);
		json_obj_close(b);
	}
	json_obj_close(b);
}

/* Manifest facts from the capture side. */
static void proc_tls(void *ctx, uint32_t pid, struct forensics_proc_tls *out)
{
	struct run_ctx *r = ctx;
	bool inst, unseen;

	out->known = capture__proc_tls(r->cap, pid, out->libssl, sizeof(out->libssl), &inst, &unseen);
	out->instrumented = inst;
	if (unseen)
		snprintf(out->note, sizeof(out->note), "seen speaking TLS through a library phiwatch cannot hook");
}

/* Every dump's SHA-256 goes into the audit chain. */
static void on_dump(void *ctx, const struct forensics_trigger *t, const struct forensics_dump_info *d)
{
	struct run_ctx *r = ctx;
	struct jbuf b;

	log_info("forensic dump %s (%llu transactions, %llu bytes)", d->path, (unsigned long long)d->transactions,
		 (unsigned long long)d->bytes);
	if (!r->audit)
		return;
	jbuf_init(&b);
	forensics_note_json(t, d, &b);
	audit__note(r->audit, d->ts_ns, "forensic_dump", b.p);
	jbuf_free(&b);
}

/* The control socket: dump and status. */
static void on_control(void *ctx, const cJSON *req, struct jbuf *resp)
{
	struct run_ctx *r = ctx;
	const cJSON *cmd = cJSON_GetObjectItemCaseSensitive(req, "cmd");

	if (cJSON_IsString(cmd) && !strcmp(cmd->valuestring, "dump")) {
		if (!r->fx) {
			json_obj_open(resp, NULL);
			json_bool(resp, "ok", false);
			json_cstr(resp, "error", "forensics is disabled (forensics.enabled)");
			json_obj_close(resp);
			return;
		}
		forensics__handle_request(r->fx, r->hist, req, resp);
		return;
	}
	if (cJSON_IsString(cmd) && !strcmp(cmd->valuestring, "status")) {
		status_json(r, resp);
		return;
	}
	json_obj_open(resp, NULL);
	json_bool(resp, "ok", false);
	json_cstr(resp, "error", "unknown command (dump, status)");
	json_obj_close(resp);
}


/* Capture loss is a gap in the trail: one GAP record per change of the counters. */
static void note_drops(struct run_ctx *r, struct capture *cap, uint64_t *seen)
{
	struct capture_stats cs;
	uint64_t total = 0;

	capture__stats(cap, &cs);
	for (unsigned i = 0; i < PW_DROP__MAX; i++)
		total += cs.drops[i];
	if (total == *seen)
		return;
	struct jbuf b;
	jbuf_init(&b);
	json_obj_open(&b, NULL);
	json_u64(&b, "new_drops", total - *seen);
	json_u64(&b, "total_drops", total);
	json_obj_open(&b, "by_reason");
	for (unsigned i = 0; i < PW_DROP__MAX; i++)
		if (cs.drops[i])
			json_u64(&b, pipeline_drop_name(i), cs.drops[i]);
	json_obj_close(&b);
	json_obj_close(&b);
	audit__gap(r->audit, realtime_ns(), "capture_drop", b.p);
	jbuf_free(&b);
	*seen = total;
}

/* Every transaction: formatted once, to --events and into the audit chain. */
static void on_txn(void *ctx, const struct txn *t)
{
	struct run_ctx *r = ctx;

	jbuf_reset(&r->jb);
	txn_to_json(t, &r->jb);
	if (r->jb.oom) {
		log_error("out of memory formatting a transaction");
		return;
	}
	if (r->audit && audit__append_txn(r->audit, t->ts_start, r->jb.p, r->jb.len) != 0 && !r->audit_errors++)
		log_error("the audit trail refuses records (audit.on_disk_full is \"stop\"): they are counted lost");
	sink_jsonl_txn_line(r->events, t, r->jb.p, r->jb.len);
	if (r->hist) {
		struct history_bytes hb = { .req = t->req_raw, .req_len = t->req_raw_len, .resp = t->resp_raw,
					    .resp_len = t->resp_raw_len };
		history__add(r->hist, t, r->jb.p, r->jb.len, &hb);
	}
}



/* Every alert: the alerts file, syslog, a line on stderr, and a forensic
 * dump when it is severe enough (rate-limited per rule and principal). */
static void on_alert(void *ctx, const struct alert *a)
{
	struct run_ctx *r = ctx;

	r->alerts_n++;
	if (r->fx && r->hist)
		forensics__on_alert(r->fx, a, r->hist, NULL, 0, NULL);
	if (r->alerts)
		sink_jsonl_alert(r->alerts, a);
	if (r->syslog)
		sink_syslog_alert(r->syslog, a);
	if (log_level >= LOG_LVL_INFO) {
		struct jbuf b;
		jbuf_init(&b);
		alert_to_syslog_msg(a, &b);
		log_info("alert: %s", b.p ? b.p : a->rule);
		jbuf_free(&b);
	}
}

static void on_record(void *ctx, const void *rec, size_t len)
{
	struct run_ctx *r = ctx;

	if (r->rec && record_write(r->rec, rec, len) != 0 && !r->rec_errors++)
		log_error("writing the capture file failed: %s (further failures are counted)", strerror(errno));
	pipeline__feed(r->pl, rec, len);
}

void cmd_print_stats(const struct pipeline_stats *ps, uint64_t ring_events, uint64_t bad_events, uint64_t lines,
		     uint64_t write_errors, const struct audit_stats *as)
{
	struct jbuf b;
	uint64_t total = ps->bad_records + bad_events;

	jbuf_init(&b);
	json_obj_open(&b, NULL);
	json_u64(&b, "events", ring_events ? ring_events : ps->records);
	json_u64(&b, "transactions", ps->transactions);
	json_u64(&b, "lines_written", lines);
	json_u64(&b, "write_errors", write_errors);
	json_obj_open(&b, "drops");
	for (unsigned i = 0; i < PW_DROP__MAX; i++) {
		json_u64(&b, pipeline_drop_name(i), ps->kernel_drops[i]);
		total += ps->kernel_drops[i];
	}
	json_u64(&b, "bad_records", ps->bad_records + bad_events);
	json_obj_close(&b);
	json_u64(&b, "drops_total", total);
	/* kernel data-event losses by the socket's role and direction: with
	 * requests_shed, every call is accounted for */
	json_obj_open(&b, "lost_data_events");
	static const char *slot[PW_LOST_SLOTS] = { "unknown_read", "unknown_write", "server_requests",
						   "server_responses", "client_responses", "client_requests" };
	for (unsigned i = 0; i < PW_LOST_SLOTS; i++)
		json_u64(&b, slot[i], ps->kernel_lost[i]);
	json_obj_close(&b);
	json_obj_open(&b, "capture");
	json_u64(&b, "data_events", ps->data_events);
	json_u64(&b, "data_bytes", ps->data_bytes);
	json_u64(&b, "captured_bytes", ps->captured_bytes);
	json_u64(&b, "tls_sockets_seen", ps->tls_events);
	json_obj_close(&b);
	json_obj_open(&b, "http");
	json_u64(&b, "requests", ps->conn.requests);
	json_u64(&b, "responses", ps->conn.responses);
	json_u64(&b, "orphan_responses", ps->conn.orphan_responses);
	json_u64(&b, "unanswered_requests", ps->conn.unanswered_requests);
	json_u64(&b, "pipeline_overflows", ps->conn.pipeline_overflows);
	json_u64(&b, "garbage_bytes", ps->conn.garbage_bytes);
	json_u64(&b, "resyncs", ps->conn.resyncs);
	json_u64(&b, "head_overflows", ps->conn.head_overflows);
	json_u64(&b, "uncaptured_bytes", ps->conn.gap_bytes);
	json_u64(&b, "requests_lost", ps->conn.requests_lost);
	json_u64(&b, "responses_lost", ps->conn.responses_lost);
	json_u64(&b, "lost_events", ps->conn.lost_events);
	json_obj_open(&b, "requests_shed");
	json_u64(&b, "server", ps->conn.requests_shed[PW_ROLE_SERVER]);
	json_u64(&b, "client", ps->conn.requests_shed[PW_ROLE_CLIENT]);
	json_u64(&b, "unknown", ps->conn.requests_shed[PW_ROLE_UNKNOWN]);
	json_obj_close(&b);
	json_u64(&b, "lost_bytes", ps->conn.lost_bytes);
	json_obj_close(&b);
	json_obj_open(&b, "alerts");
	json_u64(&b, "summaries", ps->detect.summaries);
	uint64_t alerts_total = 0;
	for (unsigned i = 0; i < DETECT_RULE__MAX; i++) {
		if (ps->detect.alerts[i])
			json_u64(&b, detect_rule_name((enum detect_rule)i), ps->detect.alerts[i]);
		alerts_total += ps->detect.alerts[i];
	}
	json_u64(&b, "total", alerts_total);
	json_obj_close(&b);
	json_obj_open(&b, "detect");
	json_u64(&b, "principals_live", ps->detect.principals_live);
	json_u64(&b, "principals_evicted", ps->detect.principals_evicted);
	json_u64(&b, "mem_bytes", ps->detect.mem_bytes);
	json_obj_close(&b);
	json_obj_open(&b, "identity");
	json_u64(&b, "jwt_decoded", ps->identity.jwt_decoded);
	json_u64(&b, "jwt_cache_hits", ps->identity.jwt_cache_hits);
	json_u64(&b, "jwt_broken", ps->identity.jwt_broken);
	json_u64(&b, "basic", ps->identity.basic);
	json_u64(&b, "apikey", ps->identity.apikey);
	json_obj_close(&b);
	if (as) {
		json_obj_open(&b, "audit");
		json_u64(&b, "records_written", as->records_written);
		json_u64(&b, "records_synced", as->records_synced);
		json_u64(&b, "records_lost", as->records_lost);
		json_u64(&b, "unsynced_at_stop", as->unsynced);
		json_u64(&b, "write_errors", as->write_errors);
		json_u64(&b, "last_seq", as->last_seq);
		json_obj_close(&b);
	}
	json_obj_open(&b, "conns");
	json_u64(&b, "opened", ps->conn.conns_opened);
	json_u64(&b, "live", ps->conn.conns_live);
	json_u64(&b, "evicted_lru", ps->conn.conns_evicted_lru);
	json_u64(&b, "evicted_idle", ps->conn.conns_evicted_idle);
	json_u64(&b, "replaced", ps->conn.conns_replaced);
	json_obj_close(&b);
	json_obj_close(&b);
	fprintf(stderr, "phiwatch: stats %s\n", b.p ? b.p : "{}");
	jbuf_free(&b);
}

static void usage(FILE *f)
{
	fprintf(f, "usage: phiwatch run [--config FILE] [--events FILE|-] [--record FILE] [-v]\n"
		   "\n"
		   "Watch every HTTP/1.x API call made or answered on this host, in plaintext\n"
		   "or through OpenSSL, and print one transaction per call. Needs root.\n"
		   "\n"
		   "  --config FILE   configuration (default " PHIWATCH_DEFAULT_CONFIG ", optional)\n"
		   "  --events FILE   transactions as JSON lines to FILE ('-': stdout). Without it,\n"
		   "                  stdout gets JSON lines, or a readable line per call on a terminal.\n"
		   "  --record FILE   also save the raw capture for `phiwatch replay`\n"
		   "  --alerts FILE   alerts as JSON lines to FILE (they also go to syslog)\n"
		   "  -v, --verbose   debug logging (libbpf included)\n"
		   "  --floor         benchmark floor: attach the same hooks with programs that\n"
		   "                  return at once (captures nothing)\n"
		   "\n"
		   "SIGINT/SIGTERM: drain, print counters (\"phiwatch: stats {...}\"), exit 0.\n");
}

int cmd_run(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "events", required_argument, NULL, 'e' },
		{ "record", required_argument, NULL, 'r' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "floor", no_argument, NULL, 'F' },
		{ "config", required_argument, NULL, 'c' },
		{ "alerts", required_argument, NULL, 'a' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *events = NULL, *record = NULL, *config_path = NULL, *alerts = NULL;
	bool floor = false;
	int ch, rc = 1;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "e:r:vh", opts, NULL)) != -1) {
		switch (ch) {
		case 'e': events = optarg; break;
		case 'r': record = optarg; break;
		case 'v': log_level = LOG_LVL_DEBUG; break;
		case 'F': floor = true; break;
		case 'c': config_path = optarg; break;
		case 'a': alerts = optarg; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "phiwatch: run: unexpected argument \"%s\"\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	/* The configuration is checked before anything is attached, and only
	 * trusted if no one but root can change it. */
	static struct config cfg;
	char cerr[512];
	const char *cpath = config_path ? config_path : PHIWATCH_DEFAULT_CONFIG;
	config_init(&cfg);
	if (privs_check_path(cpath, config_path != NULL, cerr, sizeof(cerr)) != 0) {
		fprintf(stderr, "phiwatch: %s\n", cerr);
		return 2;
	}
	if (config_load(&cfg, config_path ? config_path : PHIWATCH_DEFAULT_CONFIG, config_path != NULL, cerr,
			sizeof(cerr)) != 0) {
		fprintf(stderr, "phiwatch: %s\n", cerr);
		return 2;
	}
	config_finish(&cfg);
	if (geteuid() != 0) {
		fprintf(stderr, "phiwatch: run needs root (BPF programs and uprobes); try: sudo phiwatch run\n");
		return 2;
	}
	if (privs_check_path(cfg.state_dir, false, cerr, sizeof(cerr)) != 0 ||
	    state_dir_ensure(cfg.state_dir, cerr, sizeof(cerr)) != 0 ||
	    privs_check_path(cfg.state_dir, true, cerr, sizeof(cerr)) != 0 ||
	    state_secret_load(cfg.state_dir, cfg.identity.secret, true, cerr, sizeof(cerr)) != 0) {
		fprintf(stderr, "phiwatch: state directory: %s\n", cerr);
		return 2;
	}

	struct sink_jsonl sink;
	int err = sink_jsonl_open(&sink, events, true);
	if (err) {
		fprintf(stderr, "phiwatch: %s: %s\n", events, strerror(-err));
		return 2;
	}
	struct run_ctx rctx = { 0 };
	rctx.events = &sink;
	jbuf_init(&rctx.jb);
	if (cfg.audit.enabled) {
		/* Before capture: an agent that cannot keep its audit trail says so and stops. */
		rctx.audit = audit__open(&cfg.audit.o, realtime_ns(), cerr, sizeof(cerr));
		if (!rctx.audit) {
			fprintf(stderr, "phiwatch: audit trail: %s\n", cerr);
			sink_jsonl_close(&sink);
			return 1;
		}
	}
	static struct sink_jsonl alert_sink;
	if (!alerts && cfg.alerts.file[0])
		alerts = cfg.alerts.file;
	if (alerts) {
		err = sink_jsonl_open(&alert_sink, alerts, false);
		if (err) {
			fprintf(stderr, "phiwatch: %s: %s\n", alerts, strerror(-err));
			sink_jsonl_close(&sink);
			return 2;
		}
		rctx.alerts = &alert_sink;
	}
	if (cfg.alerts.syslog) {
		struct sink_syslog_opts so = { .path = cfg.alerts.syslog_socket, .facility = cfg.alerts.facility_value,
					       .retry_ms = 1000 };
		rctx.syslog = sink_syslog__new(&so);
		if (!rctx.syslog)
			log_warn("syslog output disabled: %s", strerror(errno));
	}
	if (record) {
		rctx.rec = fopen(record, "we");
		if (!rctx.rec) {
			fprintf(stderr, "phiwatch: %s: %s\n", record, strerror(errno));
			sink_jsonl_close(&sink);
			return 2;
		}
	}

	struct sigaction sa = { .sa_handler = on_signal };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	size_t rb = 4096;
	while (rb < (size_t)cfg.capture.ringbuf_mb << 20)
		rb <<= 1;
	struct capture_opts co = { .ringbuf_bytes = rb, .poll_ms = cfg.capture.poll_ms,
				   .wakeup_bytes = rb / 64, .floor = floor,
				   .ports = cfg.capture.ports, .nports = cfg.capture.nports,
				   .skip_comms = (const char (*)[16])cfg.capture.exclude_comms,
				   .nskip_comms = cfg.capture.ncomms };
	struct capture *cap = capture__open(&co, on_record, &rctx);
	if (!cap)
		goto out_files;

	struct pipeline_opts po = { .realtime_offset_ns = capture__realtime_offset(cap), .on_txn = on_txn,
				    .ctx = &rctx, .on_evict = capture__forget_socket, .evict_ctx = cap,
				    .identity = &cfg.identity, .resource = &cfg.resource, .detect = &cfg.detect,
				    .on_alert = on_alert, .alert_ctx = &rctx,
				    .keep_raw = cfg.forensics.enabled ? 4096 : 0 };
	po.limits = cfg.limits;
	rctx.pl = pipeline__new(&po);
	if (!rctx.pl) {
		log_error("out of memory");
		goto out_cap;
	}
	rctx.cap = cap;
	rctx.start_ns = realtime_ns();
	struct control *ctl = NULL;
	if (cfg.forensics.enabled) {
		rctx.hist = history__new((size_t)cfg.forensics.memory_mb << 20);
		struct forensics_opts fo;
		forensics_opts_default(&fo);
		fo.dir = cfg.forensics.dir;
		fo.max_total_bytes = (uint64_t)cfg.forensics.max_total_mb << 20;
		fo.per_key_interval_s = cfg.forensics.per_key_interval_s;
		fo.min_severity = (int)cfg.forensics.min_severity;
		fo.proc_info = proc_tls;
		fo.proc_ctx = &rctx;
		fo.on_dump = on_dump;
		fo.dump_ctx = &rctx;
		static uint8_t enc[FORENSICS_KEY_LEN];
		if (cfg.audit.o.enc_key_path) {
			/* dumps hold PHI: encrypted like the audit trail when it is */
			if (audit_key_load(cfg.audit.o.enc_key_path, enc, cerr, sizeof(cerr)) != 0) {
				log_error("forensics: %s", cerr);
				goto out_pl;
			}
			fo.enc_key = enc;
		}
		rctx.fx = forensics__new(&fo, cerr, sizeof(cerr));
		if (!rctx.hist || !rctx.fx) {
			log_error("forensics: %s", rctx.fx ? "out of memory" : cerr);
			goto out_pl;
		}
		history__set_secret_headers(rctx.hist, cfg.identity.apikey_headers, cfg.identity.napikey);
	}
	ctl = control__new(cfg.control_socket);
	if (!ctl)
		log_warn("control socket %s: %s (dump and status unavailable)", cfg.control_socket, strerror(errno));
	struct metrics_server *msrv = NULL;
	if (cfg.metrics.enabled) {
		msrv = metrics_server__new(cfg.metrics.listen, cerr, sizeof(cerr));
		if (!msrv) {
			log_error("%s", cerr);
			goto out_pl;
		}
		log_info("metrics at http://%s/metrics", metrics_server__address(msrv));
	}
	if (rctx.rec && record_write_header(rctx.rec, po.realtime_offset_ns) != 0) {
		log_error("%s: writing the header failed", record);
		goto out_pl;
	}

	if (cfg.drop_capabilities) {
		err = privs_drop();
		if (err) {
			log_error("dropping capabilities failed: %s", strerror(-err));
			goto out_pl;
		}
		log_debug("capabilities dropped to bpf, perfmon, sys_admin, sys_ptrace, dac_read_search");
	}
	struct capture_stats cs;
	capture__stats(cap, &cs);
	log_info("ready: %u tracepoints, %u OpenSSL libraries hooked; %s", cs.tracepoints, cs.tls_libs,
		 events ? "writing transactions" : "transactions follow");
	uint64_t drops_seen = 0;
	while (!stop) {
		if (reload) {
			reload = 0;
			do_reload(cpath, &cfg, rctx.pl, cap);
		}
		if (dump_all) {
			dump_all = 0;
			if (rctx.fx) {
				struct forensics_trigger t = { .kind = FORENSICS_TRIGGER_SIGNAL, .signal_name = "SIGUSR1" };
				forensics__dump(rctx.fx, &t, rctx.hist, NULL, NULL, 0, NULL);
			}
		}
		if (ctl)
			control__poll(ctl, on_control, &rctx);
		metrics_server__poll(msrv, metrics_fill, &rctx);
		err = capture__poll(cap);
		if (err) {
			log_error("reading events failed: %s", strerror(-err));
			break;
		}
		sink_jsonl_flush(&sink);
		if (rctx.audit) {
			note_drops(&rctx, cap, &drops_seen);
			audit__tick(rctx.audit, realtime_ns());
		}
	}
	capture__drain(cap);
	pipeline__finish(rctx.pl);
	struct audit_stats as = { 0 };
	bool have_audit = rctx.audit != NULL;
	if (rctx.audit) {
		note_drops(&rctx, cap, &drops_seen);
		audit__sync(rctx.audit, realtime_ns());
		audit__stats(rctx.audit, &as);
		audit__close(rctx.audit, realtime_ns());
		rctx.audit = NULL;
	}
	rc = err ? 1 : 0;

	struct pipeline_stats ps;
	pipeline__stats(rctx.pl, &ps);
	capture__stats(cap, &cs);
	if (sink_jsonl_close(&sink) != 0) {
		log_error("%llu transactions could not be written", (unsigned long long)sink.write_errors);
		rc = 1;
	}
	if (rctx.rec && (fclose(rctx.rec) != 0 || rctx.rec_errors)) {
		log_error("the capture file is incomplete");
		rc = 1;
	}
	rctx.rec = NULL;
	control__free(ctl);
	metrics_server__free(msrv);
	capture__close(cap);
	cmd_print_stats(&ps, cs.ring_events, cs.bad_events, sink.lines, sink.write_errors, have_audit ? &as : NULL);
	pipeline__free(rctx.pl);
	forensics__free(rctx.fx);
	history__free(rctx.hist);
	if (rctx.alerts && sink_jsonl_close(rctx.alerts) != 0)
		rc = 1;
	sink_syslog__free(rctx.syslog);
	jbuf_free(&rctx.jb);
	return rc;

out_pl:
	forensics__free(rctx.fx);
	history__free(rctx.hist);
	pipeline__free(rctx.pl);
out_cap:
	capture__close(cap);
out_files:
	audit__close(rctx.audit, realtime_ns());
	jbuf_free(&rctx.jb);
	if (rctx.rec)
		fclose(rctx.rec);
	sink_jsonl_close(&sink);
	if (rctx.alerts)
		sink_jsonl_close(rctx.alerts);
	sink_syslog__free(rctx.syslog);
	return 1;
}
