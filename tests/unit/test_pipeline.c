/* test_pipeline.c — records in, transactions out: pairing, roles, gaps, closes, bad records. */
#include <errno.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "pipeline.h"

#define MAXT 64

struct got {
	size_t n;
	struct {
		char method[16];
		char target[256];
		int status;
		int role;
		uint64_t req_bytes, resp_bytes;
		uint64_t dur;
		bool tls, truncated;
		uint32_t pid;
		char src[46], dst[46];
		uint16_t sport, dport;
		char comm[32], exe[64];
		uint64_t seq;
	} t[MAXT];
};

static void on_txn(void *ctx, const struct txn *t)
{
	struct got *g = ctx;
	assert_true(g->n < MAXT);
	typeof(g->t[0]) *x = &g->t[g->n++];
	snprintf(x->method, sizeof(x->method), "%s", t->method);
	snprintf(x->target, sizeof(x->target), "%.*s", (int)t->target_len, t->target);
	x->status = t->status;
	x->role = t->role;
	x->req_bytes = t->req_bytes;
	x->resp_bytes = t->resp_bytes;
	x->dur = t->ts_end - t->ts_start;
	x->tls = t->tls;
	x->truncated = t->truncated;
	x->pid = t->pid;
	snprintf(x->src, sizeof(x->src), "%s", t->src_ip);
	snprintf(x->dst, sizeof(x->dst), "%s", t->dst_ip);
	x->sport = t->src_port;
	x->dport = t->dst_port;
	snprintf(x->comm, sizeof(x->comm), "%s", t->comm);
	snprintf(x->exe, sizeof(x->exe), "%s", t->exe);
	x->seq = t->sequence;
}

/* Per (fd, dir) byte and event counters, as the kernel keeps them. */
static uint64_t k_off[64][2];
static uint64_t sk_override;
static uint32_t k_seq[64][2];

static struct pipeline *mk(struct got *g)
{
	memset(k_off, 0, sizeof(k_off));
	memset(k_seq, 0, sizeof(k_seq));
	struct pipeline_opts o = { .realtime_offset_ns = 1000, .on_txn = on_txn, .ctx = g };
	pipeline_default_limits(&o.limits);
	memset(g, 0, sizeof(*g));
	struct pipeline *p = pipeline__new(&o);
	assert_non_null(p);
	return p;
}

static uint64_t now_ts = 1000000;

static void conn_ev(struct pipeline *p, uint32_t pid, int fd, uint8_t role)
{
	struct pw_conn c = { 0 };
	c.h.type = PW_EV_CONN;
	c.h.size = sizeof(c);
	c.h.pid = pid;
	c.h.ts_ns = now_ts++;
	c.fd = fd;
	c.role = role;
	c.family = 2;
	c.sk = 0x1000 + (uint64_t)fd;
	c.lport = role == PW_ROLE_CLIENT ? 40000 : 8080;
	c.rport = role == PW_ROLE_CLIENT ? 8080 : 40000;
	uint8_t lo[4] = { 127, 0, 0, 1 }, other[4] = { 10, 1, 2, 3 };
	memcpy(c.laddr, lo, 4);
	memcpy(c.raddr, other, 4);
	memcpy(c.comm, "srv", 3);
	assert_int_equal(pipeline__feed(p, &c, sizeof(c)), 0);
}


/* The kernel numbered this call but could not deliver it. */
static void lost_ev(int fd, uint8_t dir, uint32_t total)
{
	k_off[fd][dir] += total;
	k_seq[fd][dir]++;
}

static void data_ev(struct pipeline *p, uint32_t pid, int fd, uint8_t dir, const char *s, size_t cap, uint32_t total,
		    uint8_t flags)
{
	size_t len = sizeof(struct pw_data) + cap;
	struct pw_data *d = calloc(1, len);
	d->h.type = PW_EV_DATA;
	d->h.size = (uint16_t)len;
	d->h.pid = pid;
	d->h.ts_ns = now_ts += 1000;
	d->fd = fd;
	d->dir = dir;
	d->flags = flags;
	d->total_len = total;
	d->cap_len = (uint32_t)cap;
	d->sk = sk_override ? sk_override : 0x1000 + (uint64_t)fd;
	d->offset = k_off[fd][dir];
	d->seq = k_seq[fd][dir];
	d->seq_other = k_seq[fd][dir ^ 1];
	k_off[fd][dir] += total;
	k_seq[fd][dir]++;
	memcpy(d->comm, "srv", 3);
	memcpy(d->data, s, cap);
	assert_int_equal(pipeline__feed(p, d, len), 0);
	free(d);
}

static void data_s(struct pipeline *p, uint32_t pid, int fd, uint8_t dir, const char *s)
{
	data_ev(p, pid, fd, dir, s, strlen(s), (uint32_t)strlen(s), 0);
}

static void close_ev(struct pipeline *p, uint32_t pid, int fd)
{
	struct pw_close c = { 0 };
	c.h.type = PW_EV_CLOSE;
	c.h.size = sizeof(c);
	c.h.pid = pid;
	c.h.ts_ns = now_ts++;
	c.fd = fd;
	c.seq[0] = k_seq[fd][0];
	c.seq[1] = k_seq[fd][1];
	assert_int_equal(pipeline__feed(p, &c, sizeof(c)), 0);
}

#define REQ1 "GET /fhir/Patient/1?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"
#define RESP1 "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
#define REQ2 "POST /api/v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
#define RESP2 "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"

static void test_server_keepalive(void **state)
{
	(void)state;
	struct got g;
	struct pipeline *p = mk(&g);
	conn_ev(p, 10, 5, PW_ROLE_SERVER);
	data_s(p, 10, 5, PW_DIR_INGRESS, REQ1);
	data_s(p, 10, 5, PW_DIR_EGRESS, RESP1);
	data_s(p, 10, 5, PW_DIR_INGRESS, REQ2);
	data_s(p, 10, 5, PW_DIR_EGRESS, RESP2);
	assert_int_equal(g.n, 2);
	assert_string_equal(g.t[0].method, "GET");
	assert_string_equal(g.t[0].target, "/fhir/Patient/1?x=1");
	assert_int_equal(g.t[0].status, 200);
	assert_int_equal(g.t[0].req_bytes, strlen(REQ1));
	assert_int_equal(g.t[0].resp_bytes, strlen(RESP1));
	assert_int_equal(g.t[0].role, PW_ROLE_SERVER);
	assert_string_equal(g.t[0].src, "10.1.2.3");
	assert_int_equal(g.t[0].sport, 40000);
	assert_string_equal(g.t[0].dst, "127.0.0.1");
	assert_int_equal(g.t[0].dport, 8080);
	assert_true(g.t[0].dur > 0);
	assert_int_equal(g.t[0].seq, 1);
	assert_string_equal(g.t[1].method, "POST");
	assert_int_equal(g.t[1].status, 201);
	assert_int_equal(g.t[1].req_bytes, strlen(REQ2));
	assert_int_equal(g.t[1].resp_bytes, strlen(RESP2));
	assert_int_equal(g.t[1].seq, 2);
	pipeline__finish(p);
	assert_int_equal(g.n, 2);
	pipeline__free(p);
}

static void test_pipelined_in_one_write(void **state)
{
	(void)state;
	struct got g;
	struct pipeline *p = mk(&g);
	conn_ev(p, 10, 5, PW_ROLE_SERVER);
	data_s(p, 10, 5, PW_DIR_INGRESS, REQ1 REQ2 "HEAD /h HTTP/1.1\r\n\r\n");
	data_s(p, 10, 5, PW_DIR_EGRESS, RESP1 RESP2 "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n");
	assert_int_equal(g.n, 3);
	assert_string_equal(g.t[2].method, "HEAD");
	assert_int_equal(g.t[2].status, 200);
	assert_int_equal(g.t[2].resp_bytes, strlen("HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"));
	pipeline__free(p);
}

static void test_client_role_and_tls(void **state)
{
	(void)state;
	struct got g;
	struct pipeline *p = mk(&g);
	conn_ev(p, 20, 3, PW_ROLE_CLIENT);
	data_ev(p, 20, 3, PW_DIR_EGRESS, REQ1, strlen(REQ1), strlen(REQ1), PW_F_TLS);
	data_ev(p, 20, 3, PW_DIR_INGRESS, RESP1, strlen(RESP1), strlen(RESP1), PW_F_TLS);
	assert_int_equal(g.n, 1);
	assert_int_equal(g.t[0].role, PW_ROLE_CLIENT);
	assert_true(g.t[0].tls);
	assert_string_equal(g.t[0].src, "127.0.0.1");
	assert_int_equal(g.t[0].sport, 40000);
	assert_string_equal(g.t[0].dst, "10.1.2.3");
	assert_int_equal(g.t[0].dport, 8080);
	pipeline__free(p);
}

/* A socket older than the agent: role from who speaks the status line. */
static void test_unknown_role_inferred(void **state)
{
	(void)state;
	struct got g;
	struct pipeline *p = mk(&g);
	conn_ev(p, 30, 7, PW_ROLE_UNKNOWN);
	data_s(p, 30, 7, PW_DIR_INGRESS, RESP1);  /* a response read: we are a client */
	data_s(p, 30, 7, PW_DIR_EGRESS, REQ1);
	data_s(p, 30, 7, PW_DIR_INGRESS, RESP1);
	assert_int_equal(g.n, 1);
	assert_int_equal(g.t[0].role, PW_ROLE_CLIENT);
	assert_int_equal(g.t[0].status, 200);
	struct pipeline_stats st;
	pipeline__stats(p, &st);
	assert_int_equal(st.conn.orphan_responses, 1);
	pipeline__free(p);
}

/* The connection's announcement was lost and its first event to arrive is a request whose payload was shed: the
 * role bits of the data event still say it is a server's, so the shed request is counted (the flood test's exact
 * server-side accounting) and the next request pairs normally. Without role bits (older captures) it cannot be. */
static void test_conn_lost_first_event_shed(void **state)
{
	(void)state;
	for (int bits = 0; bits < 2; bits++) {
		struct got g;
		struct pipeline *p = mk(&g);
		uint8_t fl = bits ? (uint8_t)(PW_ROLE_SERVER << PW_F_ROLE_SHIFT) : 0;
		data_ev(p, 31, 9, PW_DIR_INGRESS, "", 0, (uint32_t)strlen(REQ1), fl); /* shed, no PW_EV_CONN before */
		data_ev(p, 31, 9, PW_DIR_EGRESS, RESP1, strlen(RESP1), (uint32_t)strlen(RESP1), fl);
		data_ev(p, 31, 9, PW_DIR_INGRESS, REQ2, strlen(REQ2), (uint32_t)strlen(REQ2), fl);
		data_ev(p, 31, 9, PW_DIR_EGRESS, RESP2, strlen(RESP2), (uint32_t)strlen(RESP2), fl);
		struct pipeline_stats st;
		pipeline__stats(p, &st);
		assert_int_equal(st.conn.requests_shed[PW_ROLE_SERVER], bits ? 1 : 0);
		if (bits) {
			assert_int_equal(g.n, 1);
			assert_int_equal(g.t[0].role, PW_ROLE_SERVER);
			assert_int_equal(g.t[0].status, 201);
		}
		pipeline__free(p);
	}
}

/* Body bytes beyond the capture prefix: the stream stays in sync. */
static void test_capture_gap_body(void **state)
{
	(void)state;
	struct got g;
	struct pipeline *p = mk(&g);
	const char *head = "HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\n";
	char buf[4096];
	memset(buf, 'x', sizeof(buf));
	memcpy(buf, head, strlen(head));
	conn_ev(p, 10, 5, PW_ROLE_SERVER);
	data_s(p, 10, 5, PW_DIR_INGRESS, REQ1);
	data_ev(p, 10, 5, PW_DIR_EGRESS, buf, sizeof(buf), (uint32_t)(strlen(head) + 10000), 0);
	data_s(p, 10, 5, PW_DIR_INGRESS, REQ2);
	data_s(p, 10, 5, PW_DIR_EGRESS, RESP2);
	assert_int_equal(g.n, 2);
	assert_int_equal(g.t[0].resp_bytes, strlen(head) + 10000);
	assert_true(g.t[0].truncated);
	assert_string_equal(g.t[1].method, "POST");
	assert_false(g.t[1].truncated);
	pipeline__free(p);
}

static void test_close_unanswered_and_exit(void **state)
{
	(void)state;
	struct got g;
	struct pipeline *p = mk(&g);
	conn_ev(p, 10, 5, PW_ROLE_SERVER);
	data_s(p, 10, 5, PW_DIR_INGRESS, REQ1);
	close_ev(p, 10, 5);
	assert_int_equal(g.n, 1);
	assert_int_equal(g.t[0].status, 0);
	/* process exit closes its sockets without close() */
	conn_ev(p, 11, 6, PW_ROLE_SERVER);
	data_s(p, 11, 6, PW_DIR_INGRESS, REQ1);
	data_s(p, 11, 6, PW_DIR_EGRESS, "HTTP/1.1 200 OK\r\n\r\nuntil-close");
	struct pw_proc_ev e = { 0 };
	e.h.type = PW_EV_EXIT;
	e.h.size = sizeof(e);
	e.h.pid = 11;
	e.h.ts_ns = now_ts++;
	assert_int_equal(pipeline__feed(p, &e, sizeof(e)), 0);
	assert_int_equal(g.n, 2);
	assert_int_equal(g.t[1].status, 200);
	assert_int_equal(g.t[1].resp_bytes, strlen("HTTP/1.1 200 OK\r\n\r\nuntil-close"));
	struct pipeline_stats st;
	pipeline__stats(p, &st);
	assert_int_equal(st.conn.unanswered_requests, 1);
	assert_int_equal(st.conn.conns_live, 0);
	pipeline__free(p);
}

static void test_proc_identity(void **state)
{
	(void)state;
	struct got g;
	struct pipeline *p = mk(&g);
	struct pw_proc_info pi = { 0 };
	pi.h.type = PW_EV_PROC;
	pi.h.size = sizeof(pi);
	pi.h.pid = 10;
	memcpy(pi.comm, "nginx", 5);
	strcpy(pi.exe, "/usr/sbin/nginx");
	assert_int_equal(pipeline__feed(p, &pi, sizeof(pi)), 0);
	conn_ev(p, 10, 5, PW_ROLE_SERVER);
	data_s(p, 10, 5, PW_DIR_INGRESS, REQ1);
	data_s(p, 10, 5, PW_DIR_EGRESS, RESP1);
	assert_int_equal(g.n, 1);
	assert_string_equal(g.t[0].comm, "nginx");
	assert_string_equal(g.t[0].exe, "/usr/sbin/nginx");
	pipeline__free(p);
}

/* Records are input, not truth. */
static void test_bad_records_counted(void **state)
{
	(void)state;
	struct got g;
	struct pipeline *p = mk(&g);
	unsigned char junk[200];
	memset(junk, 0xab, sizeof(junk));
	assert_int_equal(pipeline__feed(p, junk, 3), -EINVAL);
	assert_int_equal(pipeline__feed(p, junk, sizeof(junk)), -EINVAL);
	struct pw_data d = { 0 };
	d.h.type = PW_EV_DATA;
	d.h.size = sizeof(d);
	d.cap_len = 100; /* claims bytes it does not carry */
	d.total_len = 100;
	assert_int_equal(pipeline__feed(p, &d, sizeof(d)), -EINVAL);
	d.cap_len = 0;
	d.total_len = 0;
	d.h.size = sizeof(d) + 1; /* size disagrees with length */
	assert_int_equal(pipeline__feed(p, &d, sizeof(d)), -EINVAL);
	struct pipeline_stats st;
	pipeline__stats(p, &st);
	assert_int_equal(st.bad_records, 4);
	assert_int_equal(g.n, 0);
	pipeline__free(p);
}

/* fd reuse: a new 4-tuple on the same fd finishes the old connection. */
static void test_fd_reuse(void **state)
{
	(void)state;
	struct got g;
	struct pipeline *p = mk(&g);
	conn_ev(p, 10, 5, PW_ROLE_SERVER);
	data_s(p, 10, 5, PW_DIR_INGRESS, REQ1);
	struct pw_conn c = { 0 };
	c.h.type = PW_EV_CONN;
	c.h.size = sizeof(c);
	c.h.pid = 10;
	c.h.ts_ns = now_ts++;
	c.fd = 5;
	c.sk = 0x9999; /* another socket on the same fd */
	c.role = PW_ROLE_SERVER;
	c.family = 2;
	c.lport = 8080;
	c.rport = 40001;
	assert_int_equal(pipeline__feed(p, &c, sizeof(c)), 0);
	assert_int_equal(g.n, 1); /* the unanswered request of the old socket */
	assert_int_equal(g.t[0].status, 0);
	memset(k_off, 0, sizeof(k_off));
	memset(k_seq, 0, sizeof(k_seq));
	sk_override = 0x9999;
	data_s(p, 10, 5, PW_DIR_INGRESS, REQ1);
	data_s(p, 10, 5, PW_DIR_EGRESS, RESP1);
	assert_int_equal(g.n, 2);
	assert_int_equal(g.t[1].sport, 40001);
	sk_override = 0;
	pipeline__free(p);
}

/* Lost events are exact gaps: a lost response never pairs the next
 * response with the wrong request. */
static void test_lost_events_are_gaps(void **state)
{
	(void)state;
	struct got g;
	struct pipeline *p = mk(&g);
	conn_ev(p, 10, 5, PW_ROLE_SERVER);
	data_s(p, 10, 5, PW_DIR_INGRESS, REQ1);
	lost_ev(5, PW_DIR_EGRESS, (uint32_t)strlen(RESP1));     /* its response lost */
	data_s(p, 10, 5, PW_DIR_INGRESS, REQ2);
	data_s(p, 10, 5, PW_DIR_EGRESS, RESP2);
	lost_ev(5, PW_DIR_INGRESS, (uint32_t)strlen(REQ1));     /* a request lost */
	lost_ev(5, PW_DIR_EGRESS, (uint32_t)strlen(RESP1));     /* and its response */
	data_s(p, 10, 5, PW_DIR_INGRESS, REQ2);
	data_s(p, 10, 5, PW_DIR_EGRESS, RESP2);
	pipeline__finish(p);
	/* GET answered by a lost response: reported without a status, never as 201 */
	bool saw_post = false;
	for (size_t i = 0; i < g.n; i++) {
		if (!strcmp(g.t[i].method, "GET"))
			assert_int_not_equal(g.t[i].status, 201);
		if (!strcmp(g.t[i].method, "POST") && g.t[i].status == 201)
			saw_post = true;
	}
	assert_true(saw_post);
	struct pipeline_stats st;
	pipeline__stats(p, &st);
	assert_int_equal(st.conn.lost_events, 3);
	assert_int_equal(st.conn.lost_bytes, strlen(RESP1) * 2 + strlen(REQ1));
	assert_int_equal(st.conn.requests_lost, 1);
	assert_int_equal(st.conn.responses_lost, 2);
	pipeline__free(p);
}

/* A response lost, then the next request lost: the response that follows
 * answers the lost request and must not be paired with the waiting one. */
static void test_lost_request_never_pairs(void **state)
{
	(void)state;
	struct got g;
	struct pipeline *p = mk(&g);
	conn_ev(p, 20, 3, PW_ROLE_CLIENT);
	data_s(p, 20, 3, PW_DIR_EGRESS, REQ1);                   /* GET sent */
	lost_ev(3, PW_DIR_INGRESS, (uint32_t)strlen(RESP1));     /* its 200 lost */
	lost_ev(3, PW_DIR_EGRESS, (uint32_t)strlen(REQ2));       /* the POST lost */
	data_s(p, 20, 3, PW_DIR_INGRESS, RESP2);                 /* the POST's 201 */
	data_s(p, 20, 3, PW_DIR_EGRESS, REQ1);
	data_s(p, 20, 3, PW_DIR_INGRESS, RESP1);
	close_ev(p, 20, 3);
	assert_int_equal(g.n, 2);
	assert_string_equal(g.t[0].method, "GET");
	assert_int_equal(g.t[0].status, 0);        /* unanswered, never 201 */
	assert_true(g.t[0].truncated);
	assert_string_equal(g.t[1].method, "GET");
	assert_int_equal(g.t[1].status, 200);
	struct pipeline_stats st;
	pipeline__stats(p, &st);
	assert_int_equal(st.conn.requests_lost, 1);
	assert_int_equal(st.conn.responses_lost, 1);
	assert_int_equal(st.conn.orphan_responses, 1);
	pipeline__free(p);
}

/* Events lost at the end of a connection show in its close. */
static void test_lost_at_close(void **state)
{
	(void)state;
	struct got g;
	struct pipeline *p = mk(&g);
	conn_ev(p, 10, 5, PW_ROLE_SERVER);
	lost_ev(5, PW_DIR_INGRESS, (uint32_t)strlen(REQ1));
	lost_ev(5, PW_DIR_EGRESS, (uint32_t)strlen(RESP1));
	close_ev(p, 10, 5);
	struct pipeline_stats st;
	pipeline__stats(p, &st);
	assert_int_equal(st.conn.requests_lost, 1);
	assert_int_equal(st.conn.responses_lost, 1);
	assert_int_equal(g.n, 0);
	pipeline__free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_server_keepalive),
		cmocka_unit_test(test_pipelined_in_one_write),
		cmocka_unit_test(test_client_role_and_tls),
		cmocka_unit_test(test_unknown_role_inferred),
		cmocka_unit_test(test_conn_lost_first_event_shed),
		cmocka_unit_test(test_capture_gap_body),
		cmocka_unit_test(test_close_unanswered_and_exit),
		cmocka_unit_test(test_proc_identity),
		cmocka_unit_test(test_bad_records_counted),
		cmocka_unit_test(test_fd_reuse),
		cmocka_unit_test(test_lost_events_are_gaps),
		cmocka_unit_test(test_lost_request_never_pairs),
		cmocka_unit_test(test_lost_at_close),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
