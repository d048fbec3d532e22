/* test_metrics.c — cmocka tests for user/metrics.c: the exposition checked by a strict parser written here from the
 * text format 0.0.4 (independently of metrics.c), promtool's linter when installed, listen-address parsing, and the
 * endpoint over real loopback sockets (200/404/405/400, HEAD, oversized and slow clients, the connection cap).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "pipeline.h"

/* ------------------------------------------------------------------ strict exposition parser */

#define MAX_SAMPLES 512
#define MAX_FAMILIES 128

struct sample {
	char series[512];  /* name{l1="v1",l2="v2"} with labels sorted, values as escaped in the text */
	char name[128];
	double value;
};

struct family {
	char name[128];
	char type[16];
	bool help, typed, closed;
};

struct parsed {
	struct sample s[MAX_SAMPLES];
	size_t ns;
	struct family f[MAX_FAMILIES];
	size_t nf;
	char err[256];
};

static bool name_ok(const char *p, size_t n, bool metric)
{
	if (!n)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = p[i];
		bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (metric && c == ':');
		if (!(alpha || (i > 0 && c >= '0' && c <= '9')))
			return false;
	}
	return true;
}

/* A float as Go's ParseFloat takes it in the exposition: [+-]digits[.digits][e[+-]digits], NaN, +Inf, -Inf. */
static bool value_ok(const char *p, size_t n, double *out)
{
	char buf[64];
	if (!n || n >= sizeof(buf))
		return false;
	memcpy(buf, p, n);
	buf[n] = '\0';
	if (!strcmp(buf, "NaN")) {
		*out = NAN;
		return true;
	}
	if (!strcmp(buf, "+Inf") || !strcmp(buf, "-Inf")) {
		*out = buf[0] == '+' ? INFINITY : -INFINITY;
		return true;
	}
	size_t i = 0, digits = 0;
	if (buf[i] == '+' || buf[i] == '-')
		i++;
	while (buf[i] >= '0' && buf[i] <= '9')
		i++, digits++;
	if (buf[i] == '.') {
		i++;
		while (buf[i] >= '0' && buf[i] <= '9')
			i++, digits++;
	}
	if (!digits)
		return false;
	if (buf[i] == 'e' || buf[i] == 'E') {
		i++;
		if (buf[i] == '+' || buf[i] == '-')
			i++;
		if (!(buf[i] >= '0' && buf[i] <= '9'))
			return false;
		while (buf[i] >= '0' && buf[i] <= '9')
			i++;
	}
	if (buf[i])
		return false;
	*out = strtod(buf, NULL);
	return true;
}

static struct family *fam_find(struct parsed *P, const char *name, size_t n)
{
	for (size_t i = 0; i < P->nf; i++)
		if (strlen(P->f[i].name) == n && !memcmp(P->f[i].name, name, n))
			return &P->f[i];
	return NULL;
}

/* The family a comment or sample is about; opening a new one closes the previous (families are contiguous). */
static struct family *fam_get(struct parsed *P, const char *name, size_t n)
{
	struct family *f = fam_find(P, name, n);
	if (f) {
		if (f->closed)
			return NULL;
		return f;
	}
	if (P->nf == MAX_FAMILIES || n >= sizeof(P->f[0].name))
		return NULL;
	for (size_t i = 0; i < P->nf; i++)
		P->f[i].closed = true;
	f = &P->f[P->nf++];
	memset(f, 0, sizeof(*f));
	memcpy(f->name, name, n);
	return f;
}

#define PFAIL(...)                                                    \
	do {                                                          \
		snprintf(P->err, sizeof(P->err), "line %zu: ", lineno); \
		size_t _l = strlen(P->err);                           \
		snprintf(P->err + _l, sizeof(P->err) - _l, __VA_ARGS__); \
		return -1;                                            \
	} while (0)

struct label {
	char name[64];
	char value[256];
};

static int cmp_label(const void *a, const void *b)
{
	return strcmp(((const struct label *)a)->name, ((const struct label *)b)->name);
}

/* 0, or -1 with P->err naming the line and the rule broken. */
static int parse_exposition(const char *text, size_t len, struct parsed *P)
{
	size_t lineno = 0;
	const char *p = text, *end = text + len;

	memset(P, 0, sizeof(*P));
	if (!len || text[len - 1] != '\n')
		PFAIL("the text must end with a newline");
	if (memchr(text, '\0', len))
		PFAIL("NUL byte");
	while (p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		size_t n = (size_t)(eol - p);
		lineno++;
		if (n == 0)
			PFAIL("empty line");
		if (p[0] == '#') {
			/* "# HELP name text" | "# TYPE name type" | any other comment */
			bool help = n > 7 && !memcmp(p, "# HELP ", 7), type = n > 7 && !memcmp(p, "# TYPE ", 7);
			if (help || type) {
				const char *nm = p + 7, *sp = memchr(nm, ' ', (size_t)(eol - nm));
				if (!sp)
					PFAIL("%s without text", help ? "HELP" : "TYPE");
				if (!name_ok(nm, (size_t)(sp - nm), true))
					PFAIL("bad metric name in comment");
				struct family *f = fam_get(P, nm, (size_t)(sp - nm));
				if (!f)
					PFAIL("family %.*s is not contiguous", (int)(sp - nm), nm);
				const char *rest = sp + 1;
				size_t rl = (size_t)(eol - rest);
				if (help) {
					if (f->help)
						PFAIL("second HELP for %s", f->name);
					for (size_t i = 0; i < rl; i++) {
						if (rest[i] != '\\')
							continue;
						if (i + 1 == rl || (rest[i + 1] != '\\' && rest[i + 1] != 'n'))
							PFAIL("bad escape in HELP");
						i++;
					}
					f->help = true;
				} else {
					if (f->typed)
						PFAIL("second TYPE for %s", f->name);
					for (size_t i = 0; i < P->ns; i++)
						if (!strcmp(P->s[i].name, f->name))
							PFAIL("TYPE for %s after its samples", f->name);
					static const char *types[] = { "counter", "gauge", "histogram", "summary", "untyped" };
					bool ok = false;
					for (size_t i = 0; i < 5; i++)
						ok |= strlen(types[i]) == rl && !memcmp(rest, types[i], rl);
					if (!ok)
						PFAIL("unknown type %.*s", (int)rl, rest);
					memcpy(f->type, rest, rl);
					f->typed = true;
				}
			}
			p = eol + 1;
			continue;
		}
		/* sample: name [{labels}] value [timestamp] */
		const char *q = p;
		while (q < eol && *q != '{' && *q != ' ')
			q++;
		if (!name_ok(p, (size_t)(q - p), true))
			PFAIL("bad metric name %.*s", (int)(q - p), p);
		struct family *f = fam_find(P, p, (size_t)(q - p));
		if (!f || !f->typed)
			PFAIL("sample %.*s without a preceding TYPE", (int)(q - p), p);
		if (f->closed)
			PFAIL("sample %s outside its family's block", f->name);
		if (!strcmp(f->type, "counter") && !(strlen(f->name) > 6 && !strcmp(f->name + strlen(f->name) - 6, "_total")))
			PFAIL("counter %s does not end in _total", f->name);
		struct label labels[8];
		size_t nl = 0;
		if (q < eol && *q == '{') {
			q++;
			while (q < eol && *q != '}') {
				const char *ln = q;
				while (q < eol && *q != '=')
					q++;
				if (q == eol || !name_ok(ln, (size_t)(q - ln), false) || (q - ln >= 2 && ln[0] == '_' && ln[1] == '_'))
					PFAIL("bad label name");
				if (nl == 8 || (size_t)(q - ln) >= sizeof(labels[0].name))
					PFAIL("too many or too long labels");
				memset(&labels[nl], 0, sizeof(labels[nl]));
				memcpy(labels[nl].name, ln, (size_t)(q - ln));
				q++;
				if (q == eol || *q != '"')
					PFAIL("label value not quoted");
				q++;
				size_t vl = 0;
				while (q < eol && *q != '"') {
					if (*q == '\\') {
						if (q + 1 == eol || (q[1] != '\\' && q[1] != '"' && q[1] != 'n'))
							PFAIL("bad escape in a label value");
						if (vl + 2 >= sizeof(labels[0].value))
							PFAIL("label value too long");
						labels[nl].value[vl++] = q[0];
						labels[nl].value[vl++] = q[1];
						q += 2;
						continue;
					}
					if ((unsigned char)*q < 0x20)
						PFAIL("raw control byte in a label value");
					if (vl + 1 >= sizeof(labels[0].value))
						PFAIL("label value too long");
					labels[nl].value[vl++] = *q++;
				}
				if (q == eol)
					PFAIL("unterminated label value");
				q++;
				for (size_t i = 0; i < nl; i++)
					if (!strcmp(labels[i].name, labels[nl].name))
						PFAIL("label %s twice", labels[nl].name);
				nl++;
				if (q < eol && *q == ',')
					q++;
				else if (q < eol && *q != '}')
					PFAIL("expected , or } after a label");
			}
			if (q == eol)
				PFAIL("unterminated label set");
			q++;
		}
		if (q == eol || *q != ' ')
			PFAIL("no space before the value");
		q++;
		const char *v = q;
		while (q < eol && *q != ' ')
			q++;
		double val;
		if (!value_ok(v, (size_t)(q - v), &val))
			PFAIL("bad value %.*s", (int)(q - v), v);
		if (q < eol) {
			/* optional timestamp: an integer */
			q++;
			const char *t = q;
			if (*q == '-')
				q++;
			while (q < eol && *q >= '0' && *q <= '9')
				q++;
			if (q != eol || q == t)
				PFAIL("bad timestamp");
		}
		if (!strcmp(f->type, "counter") && !(val >= 0))
			PFAIL("counter %s is negative or NaN", f->name);
		if (P->ns == MAX_SAMPLES)
			PFAIL("too many samples");
		qsort(labels, nl, sizeof(labels[0]), cmp_label);
		struct sample *s = &P->s[P->ns];
		int w = snprintf(s->series, sizeof(s->series), "%s", f->name);
		for (size_t i = 0; i < nl; i++)
			w += snprintf(s->series + w, sizeof(s->series) - (size_t)w, "%s%s=\"%s\"", i ? "," : "{",
				      labels[i].name, labels[i].value);
		if (nl)
			snprintf(s->series + w, sizeof(s->series) - (size_t)w, "}");
		for (size_t i = 0; i < P->ns; i++)
			if (!strcmp(P->s[i].series, s->series))
				PFAIL("duplicate series %s", s->series);
		snprintf(s->name, sizeof(s->name), "%s", f->name);
		s->value = val;
		P->ns++;
		p = eol + 1;
	}
	return 0;
}

/* The value of one series (labels as in the text), or fails the test. */
static double series(const struct parsed *P, const char *s)
{
	for (size_t i = 0; i < P->ns; i++)
		if (!strcmp(P->s[i].series, s))
			return P->s[i].value;
	fail_msg("series %s not found", s);
	return -1;
}

static bool has_family(const struct parsed *P, const char *name)
{
	for (size_t i = 0; i < P->nf; i++)
		if (!strcmp(P->f[i].name, name))
			return true;
	return false;
}

static int parse_ok(const char *text, size_t len, struct parsed *P)
{
	int rc = parse_exposition(text, len, P);
	if (rc)
		print_error("exposition rejected: %s\n%s\n", P->err, text);
	return rc;
}

/* ------------------------------------------------------------------ the parser rejects what it must */

static void test_parser_is_strict(void **state)
{
	(void)state;
	static struct parsed P;
	static const char *bad[] = {
		"x_total 1\n",                                              /* no TYPE */
		"# TYPE x counter\nx 1\n",                                   /* counter without _total */
		"# TYPE x_total counter\nx_total 1",                         /* no final newline */
		"# TYPE x gauge\nx{a=\"b\\t\"} 1\n",                         /* bad escape */
		"# TYPE x gauge\nx{a=\"1\"} 1\nx{a=\"1\"} 2\n",              /* duplicate series */
		"# TYPE 1x gauge\n1x 1\n",                                   /* bad name */
		"# TYPE x gauge\nx one\n",                                   /* bad value */
		"# TYPE x gauge\nx 1\n# TYPE y gauge\ny 1\nx{a=\"2\"} 1\n",  /* family not contiguous */
		"# TYPE x gauge\n# TYPE x gauge\nx 1\n",                     /* TYPE twice */
		"# TYPE x gauge\n\nx 1\n",                                   /* empty line */
		"# TYPE x_total counter\nx_total -1\n",                      /* negative counter */
		"# TYPE x gauge\nx{__a=\"1\"} 1\n",                          /* reserved label name */
		"# HELP x a\\q\n# TYPE x gauge\nx 1\n",                      /* bad escape in HELP */
		"# TYPE x gauge\nx{a=\"1\"\tb=\"2\"} 1\n",                   /* no comma between labels */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(parse_exposition(bad[i], strlen(bad[i]), &P), -1);
	const char *good = "# HELP x_total a \\\\ b\n# TYPE x_total counter\nx_total{a=\"q\\\"\\n\\\\\",b=\"\"} 1.5e3 123\n";
	assert_int_equal(parse_ok(good, strlen(good), &P), 0);
	assert_true(series(&P, "x_total{a=\"q\\\"\\n\\\\\",b=\"\"}") == 1500);
}

/* ------------------------------------------------------------------ rendering */

static void fill_example(struct metrics_snapshot *m)
{
	memset(m, 0, sizeof(*m));
	m->version = "0.1.0";
	m->start_time_ns = 1700000000123000000ull;
	m->events = 1000;
	m->captured_bytes = 123456;
	m->observed_bytes = 200000;
	m->transactions = 42;
	metrics_pair_add(m->drops, &m->ndrops, "ringbuf_data", 3);
	metrics_pair_add(m->drops, &m->ndrops, "payload_shed", 0);
	metrics_pair_add(m->alerts, &m->nalerts, "patient_enumeration", 1);
	metrics_pair_add(m->alerts, &m->nalerts, "rate_limit_exceeded", 2);
	m->processes_attached = 5;
	m->tls_uninstrumented = 1;
	m->have_audit = true;
	m->audit_written = 50;
	m->audit_synced = 48;
	m->audit_lost = 0;
	metrics_pair_add(m->tables, &m->ntables, "identity_cache", 4096);
	m->ringbuf_size_bytes = 16u << 20;
	m->ringbuf_used_ratio = 0.25;
}

static void test_render_strict_and_values(void **state)
{
	(void)state;
	static struct metrics_snapshot m;
	static struct parsed P;
	struct jbuf b;

	fill_example(&m);
	jbuf_init(&b);
	metrics_render(&m, &b);
	assert_false(b.oom);
	assert_int_equal(parse_ok(b.p, b.len, &P), 0);
	assert_true(series(&P, "phiwatch_up") == 1);
	assert_true(series(&P, "phiwatch_build_info{version=\"0.1.0\"}") == 1);
	assert_true(fabs(series(&P, "phiwatch_start_time_seconds") - 1700000000.123) < 1e-3);
	assert_true(series(&P, "phiwatch_events_total") == 1000);
	assert_true(series(&P, "phiwatch_captured_bytes_total") == 123456);
	assert_true(series(&P, "phiwatch_transactions_total") == 42);
	assert_true(series(&P, "phiwatch_drops_total{reason=\"ringbuf_data\"}") == 3);
	assert_true(series(&P, "phiwatch_drops_total{reason=\"payload_shed\"}") == 0);
	assert_true(series(&P, "phiwatch_alerts_total{rule=\"patient_enumeration\"}") == 1);
	assert_true(series(&P, "phiwatch_alerts_total{rule=\"rate_limit_exceeded\"}") == 2);
	assert_true(series(&P, "phiwatch_processes_attached") == 5);
	assert_true(series(&P, "phiwatch_tls_uninstrumented_processes") == 1);
	assert_true(series(&P, "phiwatch_audit_records_written_total") == 50);
	assert_true(series(&P, "phiwatch_audit_records_synced_total") == 48);
	assert_true(series(&P, "phiwatch_audit_records_lost_total") == 0);
	assert_true(series(&P, "phiwatch_table_memory_bytes{table=\"identity_cache\"}") == 4096);
	assert_true(series(&P, "phiwatch_ringbuf_used_ratio") == 0.25);
	/* every family has HELP and TYPE; gauges never end in _total */
	for (size_t i = 0; i < P.nf; i++) {
		assert_true(P.f[i].help);
		assert_true(P.f[i].typed);
		size_t l = strlen(P.f[i].name);
		if (!strcmp(P.f[i].type, "gauge"))
			assert_false(l > 6 && !strcmp(P.f[i].name + l - 6, "_total"));
		assert_memory_equal(P.f[i].name, "phiwatch_", 9);
	}
	jbuf_free(&b);
}

static void test_render_escapes_and_merges(void **state)
{
	(void)state;
	static struct metrics_snapshot m;
	static struct parsed P;
	struct jbuf b;

	memset(&m, 0, sizeof(m));
	m.ringbuf_used_ratio = NAN;
	metrics_pair_add(m.tables, &m.ntables, "a\"b\\c\nd", 1);
	metrics_pair_add(m.tables, &m.ntables, "bad\xff\x01utf8\xc3\xa9", 2);
	metrics_pair_add(m.tables, &m.ntables, "same", 3);
	metrics_pair_add(m.tables, &m.ntables, NULL, 99);
	metrics_pair_add(m.tables, &m.ntables, "same", 4);
	jbuf_init(&b);
	metrics_render(&m, &b);
	assert_int_equal(parse_ok(b.p, b.len, &P), 0);
	assert_true(series(&P, "phiwatch_table_memory_bytes{table=\"a\\\"b\\\\c\\nd\"}") == 1);
	assert_true(series(&P, "phiwatch_table_memory_bytes{table=\"bad\xef\xbf\xbd\xef\xbf\xbdutf8\xc3\xa9\"}") == 2);
	assert_true(series(&P, "phiwatch_table_memory_bytes{table=\"same\"}") == 7);
	assert_true(isnan(series(&P, "phiwatch_ringbuf_used_ratio")));
	/* no audit trail: no audit series at all; no version: no build_info */
	assert_false(has_family(&P, "phiwatch_audit_records_written_total"));
	assert_false(has_family(&P, "phiwatch_build_info"));
	/* the pair arrays are capped */
	memset(&m, 0, sizeof(m));
	for (int i = 0; i < METRICS_MAX_PAIRS + 5; i++)
		metrics_pair_add(m.drops, &m.ndrops, "x", 1);
	assert_int_equal(m.ndrops, METRICS_MAX_PAIRS);
	jbuf_reset(&b);
	metrics_render(&m, &b);
	assert_int_equal(parse_ok(b.p, b.len, &P), 0);
	assert_true(series(&P, "phiwatch_drops_total{reason=\"x\"}") == METRICS_MAX_PAIRS);
	jbuf_free(&b);
}

static void test_fill_from_stats(void **state)
{
	(void)state;
	static struct metrics_snapshot m;
	static struct parsed P;
	static struct pipeline_stats ps;
	struct audit_stats as = { .records_written = 9, .records_synced = 8, .records_lost = 1, .write_errors = 2,
				  .unsynced = 1 };
	struct jbuf b;

	memset(&ps, 0, sizeof(ps));
	memset(&m, 0, sizeof(m));
	ps.records = 77;
	ps.transactions = 12;
	ps.captured_bytes = 5000;
	ps.data_bytes = 6000;
	ps.bad_records = 2;
	ps.kernel_drops[PW_DROP_RINGBUF_DATA] = 4;
	ps.detect.alerts[DETECT_RULE_PATIENT_ENUMERATION] = 1;
	ps.detect.suppressed[DETECT_RULE_PATIENT_ENUMERATION] = 6;
	ps.procs_live = 3;
	ps.tls_uninstrumented = 1;
	ps.identity.cache_bytes = 1024;
	metrics_fill_pipeline(&m, &ps);
	metrics_fill_audit(&m, &as);
	/* the capture side adds its own bad events to the same reason */
	metrics_pair_add(m.drops, &m.ndrops, "bad_records", 1);
	jbuf_init(&b);
	metrics_render(&m, &b);
	assert_int_equal(parse_ok(b.p, b.len, &P), 0);
	assert_true(series(&P, "phiwatch_events_total") == 77);
	assert_true(series(&P, "phiwatch_transactions_total") == 12);
	assert_true(series(&P, "phiwatch_captured_bytes_total") == 5000);
	assert_true(series(&P, "phiwatch_observed_bytes_total") == 6000);
	assert_true(series(&P, "phiwatch_drops_total{reason=\"ringbuf_data\"}") == 4);
	assert_true(series(&P, "phiwatch_drops_total{reason=\"bad_records\"}") == 3);
	/* every reason and every rule is a series, even at 0 (rate() needs the zero) */
	for (unsigned i = 0; i < PW_DROP__MAX; i++) {
		char s[128];
		snprintf(s, sizeof(s), "phiwatch_drops_total{reason=\"%s\"}", pipeline_drop_name(i));
		(void)series(&P, s);
	}
	for (unsigned i = 0; i < DETECT_RULE__MAX; i++) {
		char s[128];
		snprintf(s, sizeof(s), "phiwatch_alerts_total{rule=\"%s\"}", detect_rule_name((enum detect_rule)i));
		assert_true(series(&P, s) == (i == DETECT_RULE_PATIENT_ENUMERATION ? 1 : 0));
	}
	assert_true(series(&P, "phiwatch_alerts_suppressed_total{rule=\"patient_enumeration\"}") == 6);
	assert_true(series(&P, "phiwatch_processes_attached") == 3);
	assert_true(series(&P, "phiwatch_tls_uninstrumented_processes") == 1);
	assert_true(series(&P, "phiwatch_table_memory_bytes{table=\"identity_cache\"}") == 1024);
	assert_true(series(&P, "phiwatch_audit_records_written_total") == 9);
	assert_true(series(&P, "phiwatch_audit_records_lost_total") == 1);
	assert_true(series(&P, "phiwatch_audit_unsynced_records") == 1);
	jbuf_free(&b);
}

/* promtool (Debian's prometheus package) lints the same text when it is installed. */
static void test_promtool_lint(void **state)
{
	(void)state;
	static const char *promtool = "/usr/bin/promtool";
	static struct metrics_snapshot m;
	struct jbuf b;
	char path[] = "/tmp/pw-metrics-XXXXXX", cmd[256], out[4096];

	if (access(promtool, X_OK) != 0) {
		print_message("promtool not installed: lint skipped (the strict parser above still ran)\n");
		skip();
	}
	fill_example(&m);
	jbuf_init(&b);
	metrics_render(&m, &b);
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, b.p, b.len), (ssize_t)b.len);
	close(fd);
	snprintf(cmd, sizeof(cmd), "%s check metrics < %s 2>&1", promtool, path);
	FILE *f = popen(cmd, "r");
	assert_non_null(f);
	size_t n = fread(out, 1, sizeof(out) - 1, f);
	out[n] = '\0';
	int st = pclose(f);
	unlink(path);
	if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0))
		fail_msg("promtool check metrics: %s", out);
	jbuf_free(&b);
}

/* ------------------------------------------------------------------ listen addresses */

static void test_listen_parse(void **state)
{
	(void)state;
	struct sockaddr_storage ss;
	socklen_t len;
	bool lo;
	char err[256];

	assert_int_equal(metrics_listen_parse("127.0.0.1:9464", &ss, &len, &lo, err, sizeof(err)), 0);
	assert_true(lo);
	assert_int_equal(ss.ss_family, AF_INET);
	assert_int_equal(ntohs(((struct sockaddr_in *)&ss)->sin_port), 9464);
	assert_int_equal(metrics_listen_parse("127.9.9.9:1", &ss, &len, &lo, err, sizeof(err)), 0);
	assert_true(lo);
	assert_int_equal(metrics_listen_parse("localhost:9464", &ss, &len, &lo, err, sizeof(err)), 0);
	assert_true(lo);
	assert_int_equal(metrics_listen_parse("0.0.0.0:9464", &ss, &len, &lo, err, sizeof(err)), 0);
	assert_false(lo);
	assert_int_equal(metrics_listen_parse("10.1.2.3:65535", &ss, &len, &lo, err, sizeof(err)), 0);
	assert_false(lo);
	assert_int_equal(metrics_listen_parse("[::1]:9464", &ss, &len, &lo, err, sizeof(err)), 0);
	assert_true(lo);
	assert_int_equal(ss.ss_family, AF_INET6);
	assert_int_equal(metrics_listen_parse("[::]:9464", &ss, &len, &lo, err, sizeof(err)), 0);
	assert_false(lo);
	assert_int_equal(metrics_listen_parse("[::ffff:127.0.0.1]:80", &ss, &len, &lo, err, sizeof(err)), 0);
	assert_true(lo);
	static const char *bad[] = { "", "9464", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:-1",
				     "127.0.0.1:94a", "::1:9464", "[::1]9464", "[::1:9464", "example.com:9464",
				     "127.1:9464", "127.0.0.1:999999", ":9464", "[127.0.0.1]:80", "1.2.3.4 :80" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		assert_int_equal(metrics_listen_parse(bad[i], &ss, &len, &lo, err, sizeof(err)), -EINVAL);
		assert_true(err[0] != '\0');
	}
	assert_null(metrics_server__new("nonsense", err, sizeof(err)));
	assert_int_equal(errno, EINVAL);
}

/* ------------------------------------------------------------------ the endpoint */

struct fillctx {
	int calls;
};

static void fill_cb(void *ctx, struct metrics_snapshot *m)
{
	struct fillctx *fc = ctx;
	fc->calls++;
	m->transactions = 7;
	m->version = "9.9";
	metrics_pair_add(m->alerts, &m->nalerts, "bulk_export", 2);
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int connect_to(const struct metrics_server *s)
{
	struct sockaddr_storage ss;
	socklen_t len;
	bool lo;
	char err[128];

	assert_int_equal(metrics_listen_parse(metrics_server__address(s), &ss, &len, &lo, err, sizeof(err)), 0);
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&ss, len), 0);
	return fd;
}

/* Sends req (may be NULL: nothing), polls the server until the client sees EOF; returns the response bytes. */
static size_t exchange(struct metrics_server *s, int fd, const char *req, size_t reqlen, char *out, size_t cap,
		       struct fillctx *fc, double *max_poll_ms)
{
	size_t got = 0;
	if (req)
		assert_int_equal(send(fd, req, reqlen, MSG_NOSIGNAL), (ssize_t)reqlen);
	double deadline = now_ms() + 5000;
	for (;;) {
		double t0 = now_ms();
		metrics_server__poll(s, fill_cb, fc);
		double dt = now_ms() - t0;
		if (max_poll_ms && dt > *max_poll_ms)
			*max_poll_ms = dt;
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		if (poll(&pfd, 1, 5) > 0) {
			ssize_t n = recv(fd, out + got, cap - 1 - got, 0);
			if (n <= 0)
				break;
			got += (size_t)n;
		}
		assert_true(now_ms() < deadline);
	}
	out[got] = '\0';
	return got;
}

static void check_status(const char *resp, int status)
{
	char want[32];
	snprintf(want, sizeof(want), "HTTP/1.0 %d ", status);
	if (strncmp(resp, want, strlen(want)) != 0)
		fail_msg("want %s, got: %.200s", want, resp);
}

static void test_server_roundtrip(void **state)
{
	(void)state;
	static char resp[1 << 16];
	static struct parsed P;
	struct fillctx fc = { 0 };
	char err[256];
	double worst = 0;

	struct metrics_server *s = metrics_server__new("127.0.0.1:0", err, sizeof(err));
	assert_non_null(s);
	assert_true(metrics_server__fd(s) >= 0);
	assert_memory_equal(metrics_server__address(s), "127.0.0.1:", 10);

	/* GET /metrics: 200, the right content type, Content-Length matching the body, a strict exposition */
	int fd = connect_to(s);
	const char *get = "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: text/plain\r\nAccept-Encoding: gzip\r\n\r\n";
	size_t n = exchange(s, fd, get, strlen(get), resp, sizeof(resp), &fc, &worst);
	close(fd);
	check_status(resp, 200);
	assert_non_null(strstr(resp, "\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
	const char *body = strstr(resp, "\r\n\r\n");
	assert_non_null(body);
	body += 4;
	const char *cl = strstr(resp, "Content-Length: ");
	assert_non_null(cl);
	assert_int_equal(strtoul(cl + 16, NULL, 10), n - (size_t)(body - resp));
	assert_int_equal(parse_ok(body, n - (size_t)(body - resp), &P), 0);
	assert_true(series(&P, "phiwatch_transactions_total") == 7);
	assert_true(series(&P, "phiwatch_alerts_total{rule=\"bulk_export\"}") == 2);
	assert_true(series(&P, "phiwatch_metrics_scrapes_total") == 1);
	assert_int_equal(fc.calls, 1);

	/* HEAD: headers only; a query string is ignored; bare LF line ends are taken */
	fd = connect_to(s);
	const char *head = "HEAD /metrics?x=1 HTTP/1.0\n\n";
	n = exchange(s, fd, head, strlen(head), resp, sizeof(resp), &fc, &worst);
	close(fd);
	check_status(resp, 200);
	assert_true(strstr(resp, "\r\n\r\n") + 4 == resp + n);
	assert_int_equal(fc.calls, 2);

	/* other paths 404, other methods 405 with Allow, garbage 400: none of them asks for a snapshot */
	struct {
		const char *req;
		int status;
	} cases[] = {
		{ "GET / HTTP/1.0\r\n\r\n", 404 },
		{ "GET /metricsx HTTP/1.0\r\n\r\n", 404 },
		{ "GET /metrics/ HTTP/1.0\r\n\r\n", 404 },
		{ "POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n", 405 },
		{ "DELETE /metrics HTTP/1.1\r\n\r\n", 405 },
		{ "GET /metrics\r\n\r\n", 400 },
		{ "GET /metrics HTTP/2.0\r\n\r\n", 400 },
		{ "\x16\x03\x01\x02\x01\x01\x01\x01\xfc\x03\x03\r\n\r\n", 400 },
		{ " GET /metrics HTTP/1.0\r\n\r\n", 400 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		fd = connect_to(s);
		exchange(s, fd, cases[i].req, strlen(cases[i].req), resp, sizeof(resp), &fc, &worst);
		close(fd);
		check_status(resp, cases[i].status);
		if (cases[i].status == 405)
			assert_non_null(strstr(resp, "\r\nAllow: GET, HEAD\r\n"));
	}
	assert_int_equal(fc.calls, 2);

	/* a request head larger than the cap: 400, not a hang */
	static char big[METRICS_REQUEST_MAX + 100];
	memset(big, 'a', sizeof(big));
	memcpy(big, "GET /metrics HTTP/1.0\r\nX: ", 26);
	fd = connect_to(s);
	exchange(s, fd, big, sizeof(big), resp, sizeof(resp), &fc, &worst);
	close(fd);
	check_status(resp, 400);

	/* a request split into single bytes across many polls still gets its answer */
	fd = connect_to(s);
	const char *slow = "GET /metrics HTTP/1.0\r\n\r\n";
	for (size_t i = 0; i + 1 < strlen(slow); i++) {
		assert_int_equal(send(fd, slow + i, 1, MSG_NOSIGNAL), 1);
		metrics_server__poll(s, fill_cb, &fc);
	}
	exchange(s, fd, slow + strlen(slow) - 1, 1, resp, sizeof(resp), &fc, &worst);
	close(fd);
	check_status(resp, 200);

	print_message("longest metrics_server__poll: %.3f ms\n", worst);
	assert_true(worst < 20.0);
	metrics_server__free(s);
}

/* Silent clients never hold the loop: polls return at once, the cap closes extra connections at accept, and
 * every connection is closed at the deadline. A scrape after that is served. */
static void test_server_slow_clients(void **state)
{
	(void)state;
	static char resp[1 << 16];
	struct fillctx fc = { 0 };
	char err[256];
	int fds[METRICS_MAX_CLIENTS + 3];

	struct metrics_server *s = metrics_server__new("127.0.0.1:0", err, sizeof(err));
	assert_non_null(s);
	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
		fds[i] = connect_to(s);
	double worst = 0, start = now_ms();
	int closed = 0;
	while (now_ms() - start < METRICS_TIMEOUT_MS + 1000 && closed < (int)(sizeof(fds) / sizeof(fds[0]))) {
		double t0 = now_ms();
		metrics_server__poll(s, fill_cb, &fc);
		double dt = now_ms() - t0;
		worst = dt > worst ? dt : worst;
		closed = 0;
		for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++) {
			struct pollfd pfd = { .fd = fds[i], .events = POLLIN };
			char c;
			if (poll(&pfd, 1, 0) > 0 && recv(fds[i], &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0)
				closed++;
		}
		usleep(10000);
	}
	double took = now_ms() - start;
	print_message("%d silent clients closed after %.0f ms; longest poll %.3f ms\n", closed, took, worst);
	assert_int_equal(closed, (int)(sizeof(fds) / sizeof(fds[0])));
	assert_true(took >= METRICS_TIMEOUT_MS - 50);
	assert_true(worst < 20.0);
	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
		close(fds[i]);
	assert_int_equal(fc.calls, 0);

	int fd = connect_to(s);
	const char *get = "GET /metrics HTTP/1.0\r\n\r\n";
	exchange(s, fd, get, strlen(get), resp, sizeof(resp), &fc, NULL);
	close(fd);
	check_status(resp, 200);
	/* 3 refused at accept + 8 timed out before a request */
	assert_non_null(strstr(resp, "\nphiwatch_metrics_rejected_total 11\n"));
	metrics_server__free(s);
	metrics_server__free(NULL);
}

static void test_server_ipv6_and_busy_port(void **state)
{
	(void)state;
	static char resp[1 << 16];
	struct fillctx fc = { 0 };
	char err[256];

	struct metrics_server *s = metrics_server__new("[::1]:0", err, sizeof(err));
	if (!s) {
		print_message("no IPv6 loopback here (%s): skipped\n", err);
		skip();
	}
	assert_memory_equal(metrics_server__address(s), "[::1]:", 6);
	int fd = connect_to(s);
	exchange(s, fd, "GET /metrics HTTP/1.0\r\n\r\n", 25, resp, sizeof(resp), &fc, NULL);
	close(fd);
	check_status(resp, 200);
	/* the same address again: the error names it */
	struct metrics_server *s2 = metrics_server__new(metrics_server__address(s), err, sizeof(err));
	assert_null(s2);
	assert_int_equal(errno, EADDRINUSE);
	assert_non_null(strstr(err, metrics_server__address(s)));
	metrics_server__free(s);
}

int main(void)
{
	log_level = LOG_LVL_ERROR;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parser_is_strict),
		cmocka_unit_test(test_render_strict_and_values),
		cmocka_unit_test(test_render_escapes_and_merges),
		cmocka_unit_test(test_fill_from_stats),
		cmocka_unit_test(test_promtool_lint),
		cmocka_unit_test(test_listen_parse),
		cmocka_unit_test(test_server_roundtrip),
		cmocka_unit_test(test_server_slow_clients),
		cmocka_unit_test(test_server_ipv6_and_busy_port),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
