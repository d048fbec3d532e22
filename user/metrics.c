/* metrics.c — Prometheus text exposition of the agent's counters and the endpoint that serves it (see metrics.h).
 * Not a general HTTP server: one request per connection, GET /metrics, answered and closed, never waiting.
 */
#include "metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "log.h"
#include "pipeline.h"

/* ---- rendering ---- */

void metrics_pair_add(struct metrics_pair *arr, size_t *n, const char *name, uint64_t value)
{
	if (*n >= METRICS_MAX_PAIRS)
		return;
	arr[*n].name = name;
	arr[*n].value = value;
	(*n)++;
}

/* Length of the valid UTF-8 sequence at s[0..n) (RFC 3629: no overlongs, surrogates or values past U+10FFFF),
 * 0 when invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	unsigned c = s[0];
	size_t need;
	unsigned min;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		need = 2, min = 0x80;
	else if (c >= 0xe0 && c <= 0xef)
		need = 3, min = 0x800;
	else if (c >= 0xf0 && c <= 0xf4)
		need = 4, min = 0x10000;
	else
		return 0;
	if (n < need)
		return 0;
	unsigned v = c & (0xff >> (need + 1));
	for (size_t i = 1; i < need; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		v = v << 6 | (s[i] & 0x3f);
	}
	if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
		return 0;
	return need;
}

void metrics_escape_label(struct jbuf *out, const char *s, size_t n)
{
	static const char repl[] = "\xef\xbf\xbd"; /* U+FFFD */
	size_t run = 0; /* start of the bytes copied as they are */

	for (size_t i = 0; i < n;) {
		unsigned char c = (unsigned char)s[i];
		const char *sub = NULL;
		size_t len = 1;

		if (c == '\\')
			sub = "\\\\";
		else if (c == '"')
			sub = "\\\"";
		else if (c == '\n')
			sub = "\\n";
		else if (c < 0x20 || c == 0x7f)
			sub = repl;
		else if (c >= 0x80 && !(len = utf8_len((const unsigned char *)s + i, n - i))) {
			sub = repl;
			len = 1;
		}
		if (sub) {
			jbuf_put(out, s + run, i - run);
			jbuf_puts(out, sub);
			run = i + len;
		}
		i += len;
	}
	jbuf_put(out, s + run, n - run);
}

/* HELP text: only backslash and newline are escaped (the texts here are literals without either). */
static void family(struct jbuf *out, const char *name, const char *type, const char *help)
{
	jbuf_puts(out, "# HELP ");
	jbuf_puts(out, name);
	jbuf_puts(out, " ");
	jbuf_puts(out, help);
	jbuf_puts(out, "\n# TYPE ");
	jbuf_puts(out, name);
	jbuf_puts(out, " ");
	jbuf_puts(out, type);
	jbuf_puts(out, "\n");
}

static void sample_head(struct jbuf *out, const char *name, const char *label, const char *value)
{
	jbuf_puts(out, name);
	if (label) {
		jbuf_puts(out, "{");
		jbuf_puts(out, label);
		jbuf_puts(out, "=\"");
		metrics_escape_label(out, value, strlen(value));
		jbuf_puts(out, "\"}");
	}
}

static void sample_u64(struct jbuf *out, const char *name, const char *label, const char *value, uint64_t v)
{
	char num[32];

	sample_head(out, name, label, value);
	snprintf(num, sizeof(num), " %llu\n", (unsigned long long)v);
	jbuf_puts(out, num);
}

static void sample_double(struct jbuf *out, const char *name, double v, const char *fmt)
{
	char num[64];

	sample_head(out, name, NULL, NULL);
	if (isnan(v))
		snprintf(num, sizeof(num), " NaN\n");
	else if (isinf(v))
		snprintf(num, sizeof(num), " %sInf\n", v > 0 ? "+" : "-");
	else
		snprintf(num, sizeof(num), fmt, v);
	jbuf_puts(out, num);
}

static void counter(struct jbuf *out, const char *name, const char *help, uint64_t v)
{
	family(out, name, "counter", help);
	sample_u64(out, name, NULL, NULL, v);
}

static void gauge(struct jbuf *out, const char *name, const char *help, uint64_t v)
{
	family(out, name, "gauge", help);
	sample_u64(out, name, NULL, NULL, v);
}

/* One family with a sample per distinct pair name; repeated names are summed into the first. */
static void labelled(struct jbuf *out, const char *name, const char *type, const char *help, const char *label,
		     const struct metrics_pair *p, size_t n)
{
	if (n > METRICS_MAX_PAIRS)
		n = METRICS_MAX_PAIRS;
	family(out, name, type, help);
	for (size_t i = 0; i < n; i++) {
		bool seen = false;
		uint64_t sum = 0;

		if (!p[i].name)
			continue;
		for (size_t j = 0; j < i && !seen; j++)
			seen = p[j].name && strcmp(p[j].name, p[i].name) == 0;
		if (seen)
			continue;
		for (size_t j = i; j < n; j++)
			if (p[j].name && strcmp(p[j].name, p[i].name) == 0)
				sum += p[j].value;
		sample_u64(out, name, label, p[i].name, sum);
	}
}

void metrics_render(const struct metrics_snapshot *m, struct jbuf *out)
{
	gauge(out, "phiwatch_up", "1 while the agent runs (this endpoint answers only then).", 1);
	if (m->version) {
		family(out, "phiwatch_build_info", "gauge", "Always 1; the version is the label.");
		sample_u64(out, "phiwatch_build_info", "version", m->version, 1);
	}
	family(out, "phiwatch_start_time_seconds", "gauge", "When the agent started, seconds since the Unix epoch.");
	sample_double(out, "phiwatch_start_time_seconds", (double)m->start_time_ns / 1e9, " %.3f\n");

	counter(out, "phiwatch_events_total", "Capture records read from the kernel ring buffer.", m->events);
	counter(out, "phiwatch_bad_events_total", "Capture records rejected as malformed (also in drops_total).",
		m->bad_events);
	counter(out, "phiwatch_captured_bytes_total", "Payload bytes copied by the kernel.", m->captured_bytes);
	counter(out, "phiwatch_observed_bytes_total",
		"Bytes moved by the watched calls, captured or not.", m->observed_bytes);
	counter(out, "phiwatch_transactions_total", "HTTP transactions (request and response) produced.",
		m->transactions);
	counter(out, "phiwatch_http_requests_total", "HTTP requests parsed.", m->http_requests);
	counter(out, "phiwatch_http_responses_total", "HTTP responses parsed.", m->http_responses);
	counter(out, "phiwatch_http_resyncs_total", "Times the HTTP parser resynchronised after unparsable bytes.",
		m->http_resyncs);
	counter(out, "phiwatch_requests_lost_total", "Requests lost whole to capture loss.", m->requests_lost);
	counter(out, "phiwatch_responses_lost_total", "Responses lost whole to capture loss.", m->responses_lost);
	labelled(out, "phiwatch_drops_total", "counter", "Events lost, by reason.", "reason", m->drops, m->ndrops);

	labelled(out, "phiwatch_alerts_total", "counter", "Alerts emitted, by rule (suppression summaries excluded).",
		 "rule", m->alerts, m->nalerts);
	labelled(out, "phiwatch_alerts_suppressed_total", "counter", "Alerts swallowed by de-duplication, by rule.",
		 "rule", m->suppressed, m->nsuppressed);
	counter(out, "phiwatch_alert_summaries_total", "Suppression summaries emitted.", m->alert_summaries);

	gauge(out, "phiwatch_processes_attached", "Processes whose HTTP calls phiwatch follows now.",
	      m->processes_attached);
	gauge(out, "phiwatch_tls_uninstrumented_processes",
	      "Processes seen speaking TLS through a library phiwatch cannot hook.", m->tls_uninstrumented);
	gauge(out, "phiwatch_tls_libraries_hooked", "Distinct OpenSSL files with uprobes attached.", m->tls_libraries);
	gauge(out, "phiwatch_connections", "Connections followed now.", m->connections);
	gauge(out, "phiwatch_principals", "Principals the detectors track now.", m->principals);

	if (m->have_audit) {
		counter(out, "phiwatch_audit_records_written_total", "Records chained into the audit trail.",
			m->audit_written);
		counter(out, "phiwatch_audit_records_synced_total", "Audit records acknowledged by fdatasync.",
			m->audit_synced);
		counter(out, "phiwatch_audit_records_lost_total", "Audit records lost to write errors or a full disk.",
			m->audit_lost);
		counter(out, "phiwatch_audit_write_errors_total", "Failed audit write, fsync or rename calls.",
			m->audit_write_errors);
		gauge(out, "phiwatch_audit_unsynced_records", "Audit records chained but not yet fdatasync'ed.",
		      m->audit_unsynced);
	}

	labelled(out, "phiwatch_table_memory_bytes", "gauge", "Memory held by each table, in bytes.", "table",
		 m->tables, m->ntables);
	gauge(out, "phiwatch_ringbuf_size_bytes", "Size of the kernel ring buffer.", m->ringbuf_size_bytes);
	family(out, "phiwatch_ringbuf_used_ratio", "gauge",
	       "Fraction of the ring buffer waiting to be read (0 to 1; NaN when unknown).");
	sample_double(out, "phiwatch_ringbuf_used_ratio", m->ringbuf_used_ratio, " %.6g\n");

	counter(out, "phiwatch_metrics_scrapes_total", "Scrapes of this endpoint answered 200.", m->scrapes);
	counter(out, "phiwatch_metrics_rejected_total",
		"Connections to this endpoint refused (too many at once) or answered with an error.", m->rejected);
}

void metrics_fill_pipeline(struct metrics_snapshot *m, const struct pipeline_stats *ps)
{
	m->events = ps->records;
	m->bad_events = ps->bad_records;
	m->captured_bytes = ps->captured_bytes;
	m->observed_bytes = ps->data_bytes;
	m->transactions = ps->transactions;
	m->http_requests = ps->conn.requests;
	m->http_responses = ps->conn.responses;
	m->http_resyncs = ps->conn.resyncs;
	m->requests_lost = ps->conn.requests_lost;
	m->responses_lost = ps->conn.responses_lost;
	for (unsigned i = 0; i < PW_DROP__MAX; i++)
		metrics_pair_add(m->drops, &m->ndrops, pipeline_drop_name(i), ps->kernel_drops[i]);
	metrics_pair_add(m->drops, &m->ndrops, "bad_records", ps->bad_records);
	for (unsigned i = 0; i < DETECT_RULE__MAX; i++) {
		metrics_pair_add(m->alerts, &m->nalerts, detect_rule_name((enum detect_rule)i), ps->detect.alerts[i]);
		metrics_pair_add(m->suppressed, &m->nsuppressed, detect_rule_name((enum detect_rule)i),
				 ps->detect.suppressed[i]);
	}
	m->alert_summaries = ps->detect.summaries;
	m->principals = ps->detect.principals_live;
	m->processes_attached = ps->procs_live;
	m->tls_uninstrumented = ps->tls_uninstrumented;
	m->connections = ps->conn.conns_live;
	metrics_pair_add(m->tables, &m->ntables, "identity_cache", ps->identity.cache_bytes);
	metrics_pair_add(m->tables, &m->ntables, "detect_principals", ps->detect.mem_principals);
	metrics_pair_add(m->tables, &m->ntables, "detect_state", ps->detect.mem_detectors);
	metrics_pair_add(m->tables, &m->ntables, "alert_dedup", ps->detect.mem_dedup);
	metrics_pair_add(m->tables, &m->ntables, "http_head_buffers", ps->conn.buffered_bytes);
}

void metrics_fill_audit(struct metrics_snapshot *m, const struct audit_stats *as)
{
	m->have_audit = true;
	m->audit_written = as->records_written;
	m->audit_synced = as->records_synced;
	m->audit_lost = as->records_lost;
	m->audit_write_errors = as->write_errors;
	m->audit_unsynced = as->unsynced;
}

/* ---- the endpoint ---- */

struct mconn {
	int fd;                  /* -1: free slot */
	uint64_t deadline_ms;
	size_t reqlen;
	bool responding;
	size_t off;              /* bytes of out already sent */
	struct jbuf out;
	char req[METRICS_REQUEST_MAX];
};

struct metrics_server {
	int fd;
	char addr[INET6_ADDRSTRLEN + 16];
	uint64_t scrapes, rejected;
	struct metrics_snapshot snap;
	struct jbuf body;
	struct mconn c[METRICS_MAX_CLIENTS];
};

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int metrics_listen_parse(const char *addr, struct sockaddr_storage *ss, socklen_t *sslen, bool *loopback,
			 char *err, size_t errlen)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *colon, *h;
	size_t hlen;
	unsigned long port = 0;

	memset(ss, 0, sizeof(*ss));
	if (!addr || !*addr) {
		snprintf(err, errlen, "empty addr address (want e.g. %s)", METRICS_DEFAULT_LISTEN);
		return -EINVAL;
	}
	if (addr[0] == '[') {
		const char *rb = strchr(addr, ']');
		if (!rb || rb[1] != ':') {
			snprintf(err, errlen, "\"%.80s\": an IPv6 address is written [addr]:port", addr);
			return -EINVAL;
		}
		h = addr + 1;
		hlen = (size_t)(rb - h);
		colon = rb + 1;
	} else {
		colon = strrchr(addr, ':');
		if (!colon || memchr(addr, ':', (size_t)(colon - addr))) {
			snprintf(err, errlen, "\"%.80s\": want IPv4:port, [IPv6]:port or localhost:port", addr);
			return -EINVAL;
		}
		h = addr;
		hlen = (size_t)(colon - addr);
	}
	const char *p = colon + 1;
	if (!*p || strlen(p) > 5) {
		snprintf(err, errlen, "\"%.80s\": the port must be a number in [1, 65535]", addr);
		return -EINVAL;
	}
	for (; *p; p++) {
		if (*p < '0' || *p > '9') {
			snprintf(err, errlen, "\"%.80s\": the port must be a number in [1, 65535]", addr);
			return -EINVAL;
		}
		port = port * 10 + (unsigned long)(*p - '0');
	}
	if (port > 65535) {
		snprintf(err, errlen, "\"%.80s\": the port must be a number in [1, 65535]", addr);
		return -EINVAL;
	}
	if (hlen == 0 || hlen >= sizeof(host)) {
		snprintf(err, errlen, "\"%.80s\": missing or overlong address", addr);
		return -EINVAL;
	}
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	if (strcmp(host, "localhost") == 0 && addr[0] != '[')
		snprintf(host, sizeof(host), "127.0.0.1");

	struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
	if (addr[0] != '[' && inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
		a4->sin_family = AF_INET;
		a4->sin_port = htons((uint16_t)port);
		*sslen = sizeof(*a4);
		*loopback = (ntohl(a4->sin_addr.s_addr) >> 24) == 127;
		return 0;
	}
	if (addr[0] == '[' && inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons((uint16_t)port);
		*sslen = sizeof(*a6);
		*loopback = IN6_IS_ADDR_LOOPBACK(&a6->sin6_addr) ||
			    (IN6_IS_ADDR_V4MAPPED(&a6->sin6_addr) && a6->sin6_addr.s6_addr[12] == 127);
		return 0;
	}
	snprintf(err, errlen, "\"%.80s\": not a numeric IP address (host names other than localhost are not resolved)",
		 addr);
	return -EINVAL;
}

struct metrics_server *metrics_server__new(const char *addr, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t sslen = 0;
	bool loopback = false;
	int one = 1, e;

	if (!addr || !*addr)
		addr = METRICS_DEFAULT_LISTEN;
	if (metrics_listen_parse(addr, &ss, &sslen, &loopback, err, errlen) != 0) {
		errno = EINVAL;
		return NULL;
	}
	struct metrics_server *s = calloc(1, sizeof(*s));
	if (!s) {
		snprintf(err, errlen, "out of memory");
		errno = ENOMEM;
		return NULL;
	}
	for (size_t i = 0; i < METRICS_MAX_CLIENTS; i++)
		s->c[i].fd = -1;
	s->fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s->fd < 0)
		goto fail;
	setsockopt(s->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ss.ss_family == AF_INET6)
		setsockopt(s->fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(s->fd, (struct sockaddr *)&ss, sslen) != 0 || listen(s->fd, 16) != 0)
		goto fail;
	sslen = sizeof(ss);
	if (getsockname(s->fd, (struct sockaddr *)&ss, &sslen) != 0)
		goto fail;
	char ip[INET6_ADDRSTRLEN];
	if (ss.ss_family == AF_INET) {
		struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
		inet_ntop(AF_INET, &a4->sin_addr, ip, sizeof(ip));
		snprintf(s->addr, sizeof(s->addr), "%s:%u", ip, ntohs(a4->sin_port));
	} else {
		struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
		inet_ntop(AF_INET6, &a6->sin6_addr, ip, sizeof(ip));
		snprintf(s->addr, sizeof(s->addr), "[%s]:%u", ip, ntohs(a6->sin6_port));
	}
	if (!loopback)
		log_warn("metrics endpoint on %s, which is not loopback: anyone who can reach it reads the counters "
			 "(no authentication)", s->addr);
	return s;
fail:
	e = errno;
	snprintf(err, errlen, "metrics endpoint %s: %s", addr, strerror(e));
	if (s->fd >= 0)
		close(s->fd);
	free(s);
	errno = e;
	return NULL;
}

int metrics_server__fd(const struct metrics_server *s)
{
	return s->fd;
}

const char *metrics_server__address(const struct metrics_server *s)
{
	return s->addr;
}

static void conn_close(struct mconn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	jbuf_free(&c->out);
}

static void respond(struct metrics_server *s, struct mconn *c, int status, const char *reason, const char *body,
		    size_t len, bool head_only, const char *extra)
{
	char hdr[256];

	snprintf(hdr, sizeof(hdr),
		 "HTTP/1.0 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%sConnection: close\r\n\r\n", status,
		 reason, status == 200 ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain; charset=utf-8", len,
		 extra ? extra : "");
	jbuf_reset(&c->out);
	jbuf_puts(&c->out, hdr);
	if (!head_only)
		jbuf_put(&c->out, body, len);
	c->responding = true;
	c->off = 0;
	if (status != 200)
		s->rejected++;
}

static void error_reply(struct metrics_server *s, struct mconn *c, int status, const char *reason, const char *msg)
{
	respond(s, c, status, reason, msg, strlen(msg), false,
		status == 405 ? "Allow: GET, HEAD\r\n" : NULL);
}

/* The request head is whole in c->req[0..reqlen): answer it. Only the request line matters. */
static void handle(struct metrics_server *s, struct mconn *c, metrics_render_fn fill, void *ctx)
{
	const char *p = c->req;
	const char *eol = memchr(p, '\n', c->reqlen);
	const char *sp1 = eol ? memchr(p, ' ', (size_t)(eol - p)) : NULL;
	const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;

	if (!sp1 || !sp2 || sp1 == p || sp2 == sp1 + 1) {
		error_reply(s, c, 400, "Bad Request", "bad request\n");
		return;
	}
	const char *ver = sp2 + 1;
	size_t vlen = (size_t)(eol - ver);
	if (vlen && ver[vlen - 1] == '\r')
		vlen--;
	if (vlen != 8 || memcmp(ver, "HTTP/1.", 7) != 0 || (ver[7] != '0' && ver[7] != '1')) {
		error_reply(s, c, 400, "Bad Request", "bad request\n");
		return;
	}
	size_t mlen = (size_t)(sp1 - p), tlen = (size_t)(sp2 - sp1 - 1);
	const char *target = sp1 + 1;
	bool is_metrics = tlen >= 8 && memcmp(target, "/metrics", 8) == 0 && (tlen == 8 || target[8] == '?');
	bool get = mlen == 3 && memcmp(p, "GET", 3) == 0;
	bool head = mlen == 4 && memcmp(p, "HEAD", 4) == 0;

	if (!is_metrics) {
		error_reply(s, c, 404, "Not Found", "not found: the metrics are at /metrics\n");
		return;
	}
	if (!get && !head) {
		error_reply(s, c, 405, "Method Not Allowed", "method not allowed\n");
		return;
	}
	s->scrapes++;
	memset(&s->snap, 0, sizeof(s->snap));
	s->snap.ringbuf_used_ratio = NAN;
	if (fill)
		fill(ctx, &s->snap);
	s->snap.scrapes = s->scrapes;
	s->snap.rejected = s->rejected;
	jbuf_reset(&s->body);
	metrics_render(&s->snap, &s->body);
	if (s->body.oom) {
		s->scrapes--;
		error_reply(s, c, 500, "Internal Server Error", "out of memory\n");
		return;
	}
	respond(s, c, 200, "OK", s->body.p, s->body.len, head, NULL);
	if (c->out.oom) {
		conn_close(c);
		s->rejected++;
	}
}

/* Whether the head in req[0..len) is complete (a blank line: CRLF CRLF, or bare LF LF). */
static bool head_done(const char *req, size_t len)
{
	return memmem(req, len, "\r\n\r\n", 4) || memmem(req, len, "\n\n", 2);
}

static void conn_step(struct metrics_server *s, struct mconn *c, uint64_t now, metrics_render_fn fill, void *ctx)
{
	if (now >= c->deadline_ms) {
		s->rejected += !c->responding;
		conn_close(c);
		return;
	}
	if (!c->responding) {
		ssize_t n = recv(c->fd, c->req + c->reqlen, sizeof(c->req) - c->reqlen, MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
			conn_close(c);
			return;
		}
		if (n < 0)
			return;
		size_t from = c->reqlen > 3 ? c->reqlen - 3 : 0;
		c->reqlen += (size_t)n;
		if (head_done(c->req + from, c->reqlen - from))
			handle(s, c, fill, ctx);
		else if (c->reqlen == sizeof(c->req))
			error_reply(s, c, 400, "Bad Request", "request head too large\n");
		if (c->fd < 0 || !c->responding)
			return;
	}
	ssize_t n = send(c->fd, c->out.p + c->off, c->out.len - c->off, MSG_DONTWAIT | MSG_NOSIGNAL);
	if (n < 0) {
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			conn_close(c);
		return;
	}
	c->off += (size_t)n;
	if (c->off < c->out.len)
		return;
	/* All sent: half-close and discard what the client may still send, so close() does not reset the
	 * connection before the response is read. */
	shutdown(c->fd, SHUT_WR);
	char junk[512];
	for (int i = 0; i < 8 && recv(c->fd, junk, sizeof(junk), MSG_DONTWAIT) > 0; i++)
		;
	conn_close(c);
}

void metrics_server__poll(struct metrics_server *s, metrics_render_fn fill, void *ctx)
{
	uint64_t now = mono_ms();

	if (!s)
		return;
	/* A bounded number of accepts per call: a connection flood cannot hold the agent's loop. */
	for (int i = 0; i < 2 * METRICS_MAX_CLIENTS; i++) {
		int fd = accept4(s->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			break;
		struct mconn *c = NULL;
		for (size_t k = 0; k < METRICS_MAX_CLIENTS && !c; k++)
			if (s->c[k].fd < 0)
				c = &s->c[k];
		if (!c) {
			close(fd);
			s->rejected++;
			continue;
		}
		c->fd = fd;
		c->deadline_ms = now + METRICS_TIMEOUT_MS;
		c->reqlen = 0;
		c->responding = false;
		c->off = 0;
		jbuf_init(&c->out);
	}
	for (size_t k = 0; k < METRICS_MAX_CLIENTS; k++)
		if (s->c[k].fd >= 0)
			conn_step(s, &s->c[k], now, fill, ctx);
}

void metrics_server__free(struct metrics_server *s)
{
	if (!s)
		return;
	for (size_t k = 0; k < METRICS_MAX_CLIENTS; k++)
		conn_close(&s->c[k]);
	if (s->fd >= 0)
		close(s->fd);
	jbuf_free(&s->body);
	free(s);
}
