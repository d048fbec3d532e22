/* test_http1.c — cmocka tests for user/http1.c: every stream case fed whole, byte by byte and split at every offset. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http1.h"

/* ---- recorder ---- */

#define MAX_MSGS 16
#define MAX_BODY 16384

struct rec_msg {
	char method[40];
	char target[400];
	int status;
	size_t nhdr, dropped;
	bool head_trunc;
	bool completed;
	uint64_t head_bytes, body_bytes;
	bool truncated, unframed;
	uint64_t ts_first, ts_last;
	size_t body_len;
	char body[MAX_BODY];
};

struct rec {
	struct rec_msg m[MAX_MSGS];
	size_t n;
	bool active;
	uint32_t no_body_mask;	/* on_head returns HTTP1_HEAD_NO_BODY for these message indexes */
	int passthrough_status;	/* on_head calls passthrough for this status (CONNECT 2xx) */
	struct http1_stream *s;
	int errors;
};

static void copy_slice(char *dst, size_t cap, struct slice s)
{
	size_t n = s.len < cap - 1 ? s.len : cap - 1;
	if (n)
		memcpy(dst, s.p, n);
	dst[n] = '\0';
}

static int rec_head(void *ctx, const struct http1_head *h, uint64_t ts_first)
{
	struct rec *r = ctx;
	if (r->active || r->n >= MAX_MSGS) {
		r->errors++;
		return 0;
	}
	struct rec_msg *m = &r->m[r->n];
	memset(m, 0, sizeof(*m));
	copy_slice(m->method, sizeof(m->method), h->method);
	copy_slice(m->target, sizeof(m->target), h->target);
	m->status = h->status;
	m->nhdr = h->num_headers;
	m->dropped = h->headers_dropped;
	m->head_trunc = h->truncated;
	m->ts_first = ts_first;
	r->active = true;
	r->n++;
	if (r->passthrough_status && h->status == r->passthrough_status)
		http1_stream__passthrough(r->s);
	return (r->no_body_mask >> (r->n - 1)) & 1 ? HTTP1_HEAD_NO_BODY : 0;
}

static void rec_body(void *ctx, const char *p, size_t len)
{
	struct rec *r = ctx;
	if (!r->active || len == 0) {
		r->errors++;
		return;
	}
	struct rec_msg *m = &r->m[r->n - 1];
	if (m->body_len + len > MAX_BODY) {
		r->errors++;
		return;
	}
	memcpy(m->body + m->body_len, p, len);
	m->body_len += len;
}

static void rec_complete(void *ctx, const struct http1_msg_end *e)
{
	struct rec *r = ctx;
	if (!r->active) {
		r->errors++;
		return;
	}
	struct rec_msg *m = &r->m[r->n - 1];
	m->completed = true;
	m->head_bytes = e->head_bytes;
	m->body_bytes = e->body_bytes;
	m->truncated = e->truncated;
	m->unframed = e->unframed;
	m->ts_last = e->ts_last;
	if (e->head_bytes == 0 || (e->unframed && !e->truncated) || m->ts_last < m->ts_first)
		r->errors++;
	r->active = false;
}

static const struct http1_callbacks rec_cb = { rec_head, rec_body, rec_complete };

/* ---- cases ---- */

struct seg {
	const char *p;
	size_t len;	/* captured */
	uint64_t gap;	/* uncaptured after it */
};

#define S(lit) { (lit), sizeof(lit) - 1, 0 }
#define G(lit, gap) { (lit), sizeof(lit) - 1, (gap) }

struct exp_msg {
	const char *method, *target;
	int status;
	size_t nhdr, dropped;
	uint64_t head_bytes, body_bytes;
	const char *body;
	size_t body_len;	/* 0: strlen(body) */
	bool truncated, unframed, head_trunc;
};

struct tcase {
	const char *name;
	enum http1_kind kind;
	size_t head_cap;
	struct seg segs[8];
	bool close_at_end;
	uint32_t no_body_mask;
	int passthrough_status;
	struct exp_msg exp[MAX_MSGS];
	size_t nexp;
	struct http1_stream_stats stats;
};

#define L(lit) (sizeof(lit) - 1)

static void feed_copy(struct http1_stream *s, const char *p, size_t n, uint64_t gap, uint64_t ts)
{
	/* exact-size heap copy, so ASan sees any read past the chunk */
	char *b = n ? malloc(n) : NULL;
	if (n)
		memcpy(b, p, n);
	http1_stream__feed(s, b, n, n + gap, ts);
	free(b);
}

enum mode { M_WHOLE, M_BYTES, M_SPLIT };

/* Run tc; in M_SPLIT segment split_seg is fed as two chunks cut at split_off. */
static void run_once(const struct tcase *tc, enum mode mode, size_t split_seg, size_t split_off, struct rec *r,
		     struct http1_stream_stats *st)
{
	memset(r, 0, sizeof(*r));
	r->no_body_mask = tc->no_body_mask;
	r->passthrough_status = tc->passthrough_status;
	struct http1_stream *s = http1_stream__new(tc->kind, tc->head_cap ? tc->head_cap : 16384, &rec_cb, r);
	assert_non_null(s);
	r->s = s;
	uint64_t ts = 1;
	for (size_t j = 0; j < 8 && (tc->segs[j].p || tc->segs[j].gap); j++) {
		const struct seg *g = &tc->segs[j];
		if (mode == M_WHOLE || g->len == 0) {
			feed_copy(s, g->p, g->len, g->gap, ts++);
		} else if (mode == M_BYTES) {
			for (size_t i = 0; i < g->len; i++)
				feed_copy(s, g->p + i, 1, i + 1 == g->len ? g->gap : 0, ts++);
		} else if (j == split_seg) {
			feed_copy(s, g->p, split_off, 0, ts++);
			feed_copy(s, g->p + split_off, g->len - split_off, g->gap, ts++);
		} else {
			feed_copy(s, g->p, g->len, g->gap, ts++);
		}
		assert_true(http1_stream__buffered(s) <= (tc->head_cap ? tc->head_cap : 16384));
	}
	if (tc->close_at_end)
		http1_stream__close(s, ts);
	*st = *http1_stream__stats(s);
	http1_stream__free(s);
}

static void check(const struct tcase *tc, const struct rec *r, const struct http1_stream_stats *st, const char *how)
{
	char ctx[160];
	snprintf(ctx, sizeof(ctx), "%s [%s]", tc->name, how);
	if (r->errors)
		fail_msg("%s: callback order errors %d", ctx, r->errors);
	if (r->n != tc->nexp)
		fail_msg("%s: %zu messages, want %zu", ctx, r->n, tc->nexp);
	for (size_t i = 0; i < r->n; i++) {
		const struct rec_msg *m = &r->m[i];
		const struct exp_msg *e = &tc->exp[i];
		size_t blen = e->body_len ? e->body_len : (e->body ? strlen(e->body) : 0);
		if (!m->completed)
			fail_msg("%s: msg %zu never completed", ctx, i);
		if (strcmp(m->method, e->method ? e->method : "") || strcmp(m->target, e->target ? e->target : "") ||
		    m->status != e->status)
			fail_msg("%s: msg %zu is '%s' '%s' %d, want '%s' '%s' %d", ctx, i, m->method, m->target, m->status,
				 e->method ? e->method : "", e->target ? e->target : "", e->status);
		if (m->nhdr != e->nhdr || m->dropped != e->dropped)
			fail_msg("%s: msg %zu headers %zu+%zu dropped, want %zu+%zu", ctx, i, m->nhdr, m->dropped, e->nhdr,
				 e->dropped);
		if (m->head_bytes != e->head_bytes || m->body_bytes != e->body_bytes)
			fail_msg("%s: msg %zu head/body bytes %llu/%llu, want %llu/%llu", ctx, i,
				 (unsigned long long)m->head_bytes, (unsigned long long)m->body_bytes,
				 (unsigned long long)e->head_bytes, (unsigned long long)e->body_bytes);
		if (m->truncated != e->truncated || m->unframed != e->unframed || m->head_trunc != e->head_trunc)
			fail_msg("%s: msg %zu truncated/unframed/head_trunc %d%d%d, want %d%d%d", ctx, i, m->truncated,
				 m->unframed, m->head_trunc, e->truncated, e->unframed, e->head_trunc);
		if (m->body_len != blen || (blen && memcmp(m->body, e->body, blen)))
			fail_msg("%s: msg %zu body %zu bytes '%.*s', want %zu", ctx, i, m->body_len, (int)m->body_len,
				 m->body, blen);
	}
	const struct http1_stream_stats *w = &tc->stats;
	if (st->messages != r->n || st->garbage_bytes != w->garbage_bytes || st->resyncs != w->resyncs ||
	    st->head_overflows != w->head_overflows || st->gap_bytes != w->gap_bytes)
		fail_msg("%s: stats msgs %llu garbage %llu resyncs %llu overflows %llu gaps %llu; "
			 "want garbage %llu resyncs %llu overflows %llu gaps %llu",
			 ctx, (unsigned long long)st->messages, (unsigned long long)st->garbage_bytes,
			 (unsigned long long)st->resyncs, (unsigned long long)st->head_overflows,
			 (unsigned long long)st->gap_bytes, (unsigned long long)w->garbage_bytes,
			 (unsigned long long)w->resyncs, (unsigned long long)w->head_overflows,
			 (unsigned long long)w->gap_bytes);
}

/* Whole, one byte at a time, and every two-chunk split of every segment: same messages, same stats. */
static void run_case(const struct tcase *tc)
{
	static struct rec r;
	struct http1_stream_stats st;
	char how[64];

	run_once(tc, M_WHOLE, 0, 0, &r, &st);
	check(tc, &r, &st, "whole");
	run_once(tc, M_BYTES, 0, 0, &r, &st);
	check(tc, &r, &st, "bytes");
	for (size_t j = 0; j < 8 && (tc->segs[j].p || tc->segs[j].gap); j++) {
		for (size_t k = 1; k < tc->segs[j].len; k++) {
			run_once(tc, M_SPLIT, j, k, &r, &st);
			snprintf(how, sizeof(how), "split seg %zu at %zu", j, k);
			check(tc, &r, &st, how);
		}
	}
}

/* ---- stream cases ---- */

#define GET1 "GET /index.html?x=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t/1\r\n\r\n"

static void test_simple_get(void **state)
{
	(void)state;
	static const struct tcase tc = {
		.name = "simple GET", .kind = HTTP1_REQUEST,
		.segs = { S(GET1) },
		.exp = { { "GET", "/index.html?x=1", 0, 2, 0, L(GET1), 0, "", 0, 0, 0, 0 } },
		.nexp = 1,
	};
	run_case(&tc);
}

#define KA1 "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
#define KA2 "GET /b HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n"
#define KA3H "POST /c HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n"

static void test_keepalive(void **state)
{
	(void)state;
	static const struct tcase tc = {
		.name = "keep-alive", .kind = HTTP1_REQUEST,
		.segs = { S(KA1 KA2 KA3H "hello") },
		.exp = {
			{ "GET", "/a", 0, 1, 0, L(KA1), 0, "", 0, 0, 0, 0 },
			{ "GET", "/b", 0, 2, 0, L(KA2), 0, "", 0, 0, 0, 0 },
			{ "POST", "/c", 0, 2, 0, L(KA3H), 5, "hello", 0, 0, 0, 0 },
		},
		.nexp = 3,
	};
	run_case(&tc);
}

static void test_pipelined_requests(void **state)
{
	(void)state;
	/* several segments: a pipeline arrives over several writes, boundaries anywhere */
	static const struct tcase tc = {
		.name = "pipelined requests", .kind = HTTP1_REQUEST,
		.segs = { S(KA1 "GET /b HTTP/1.1\r\nHost: h\r\nAcc"), S("ept: */*\r\n\r\n" KA3H "hel"), S("lo\r\n" KA1) },
		.exp = {
			{ "GET", "/a", 0, 1, 0, L(KA1), 0, "", 0, 0, 0, 0 },
			{ "GET", "/b", 0, 2, 0, L(KA2), 0, "", 0, 0, 0, 0 },
			{ "POST", "/c", 0, 2, 0, L(KA3H), 5, "hello", 0, 0, 0, 0 },
			{ "GET", "/a", 0, 1, 0, L(KA1), 0, "", 0, 0, 0, 0 },
		},
		.nexp = 4,
	};
	run_case(&tc);
}

#define PR1 "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n"
#define PR2 "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
#define PR3 "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
#define PR3B "2\r\nhi\r\n0\r\n\r\n"

static void test_pipelined_responses(void **state)
{
	(void)state;
	static const struct tcase tc = {
		.name = "pipelined responses", .kind = HTTP1_RESPONSE,
		.segs = { S(PR1 "abc" PR2 PR3 PR3B) },
		.exp = {
			{ "", "", 200, 1, 0, L(PR1), 3, "abc", 0, 0, 0, 0 },
			{ "", "", 404, 1, 0, L(PR2), 0, "", 0, 0, 0, 0 },
			{ "", "", 200, 1, 0, L(PR3), L(PR3B), "hi", 0, 0, 0, 0 },
		},
		.nexp = 3,
	};
	run_case(&tc);
}

#define CL1 "POST /api/patients HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n"

static void test_content_length(void **state)
{
	(void)state;
	static const struct tcase tc = {
		.name = "content-length", .kind = HTTP1_REQUEST,
		.segs = { S(CL1 "{\"id\":\"12345\"}\n" KA1) },
		.exp = {
			{ "POST", "/api/patients", 0, 3, 0, L(CL1), 15, "{\"id\":\"12345\"}\n", 0, 0, 0, 0 },
			{ "GET", "/a", 0, 1, 0, L(KA1), 0, "", 0, 0, 0, 0 },
		},
		.nexp = 2,
	};
	run_case(&tc);
}

#define CH1 "POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n"
#define CH1B "5;name=val\r\nhello\r\n6 ; a=\"b\"\r\n world\r\n0000\r\nX-Trailer: 1\r\nY: 2\r\n\r\n"
#define CH2 "HTTP/1.1 200 OK\r\ntransfer-encoding: CHUNKED\r\n\r\n"
#define CH2B "A\r\n0123456789\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n"

static void test_chunked(void **state)
{
	(void)state;
	/* TE wins over Content-Length (RFC 9112 §6.3) */
	static const struct tcase tc = {
		.name = "chunked ext+trailers", .kind = HTTP1_REQUEST,
		.segs = { S(CH1 CH1B KA1) },
		.exp = {
			{ "POST", "/up", 0, 3, 0, L(CH1), L(CH1B), "hello world", 0, 0, 0, 0 },
			{ "GET", "/a", 0, 1, 0, L(KA1), 0, "", 0, 0, 0, 0 },
		},
		.nexp = 2,
	};
	run_case(&tc);
	static const struct tcase tc2 = {
		.name = "chunked response", .kind = HTTP1_RESPONSE,
		.segs = { S(CH2 CH2B PR2) },
		.exp = {
			{ "", "", 200, 1, 0, L(CH2), L(CH2B), "0123456789abcdefghijklmnopqrstuvwxyz", 0, 0, 0, 0 },
			{ "", "", 404, 1, 0, L(PR2), 0, "", 0, 0, 0, 0 },
		},
		.nexp = 2,
	};
	run_case(&tc2);
}

#define HD1 "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"
#define HD2 "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"

static void test_head_response(void **state)
{
	(void)state;
	static const struct tcase tc = {
		.name = "HEAD response", .kind = HTTP1_RESPONSE, .no_body_mask = 1,
		.segs = { S(HD1 HD2 "ok") },
		.exp = {
			{ "", "", 200, 1, 0, L(HD1), 0, "", 0, 0, 0, 0 },
			{ "", "", 200, 1, 0, L(HD2), 2, "ok", 0, 0, 0, 0 },
		},
		.nexp = 2,
	};
	run_case(&tc);
}

#define C100 "HTTP/1.1 100 Continue\r\n\r\n"
#define C103 "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"

static void test_100_continue(void **state)
{
	(void)state;
	static const struct tcase tc = {
		.name = "100-continue", .kind = HTTP1_RESPONSE,
		.segs = { S(C100), S(C103 HD2 "ok") },
		.exp = {
			{ "", "", 100, 0, 0, L(C100), 0, "", 0, 0, 0, 0 },
			{ "", "", 103, 1, 0, L(C103), 0, "", 0, 0, 0, 0 },
			{ "", "", 200, 1, 0, L(HD2), 2, "ok", 0, 0, 0, 0 },
		},
		.nexp = 3,
	};
	run_case(&tc);
}

#define R204 "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"
#define R304 "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nTransfer-Encoding: chunked\r\n\r\n"

static void test_204_304(void **state)
{
	(void)state;
	static const struct tcase tc = {
		.name = "204", .kind = HTTP1_RESPONSE,
		.segs = { S(R204 HD2 "ok") },
		.exp = {
			{ "", "", 204, 1, 0, L(R204), 0, "", 0, 0, 0, 0 },
			{ "", "", 200, 1, 0, L(HD2), 2, "ok", 0, 0, 0, 0 },
		},
		.nexp = 2,
	};
	run_case(&tc);
	static const struct tcase tc2 = {
		.name = "304", .kind = HTTP1_RESPONSE,
		.segs = { S(R304 HD2 "ok") },
		.exp = {
			{ "", "", 304, 2, 0, L(R304), 0, "", 0, 0, 0, 0 },
			{ "", "", 200, 1, 0, L(HD2), 2, "ok", 0, 0, 0, 0 },
		},
		.nexp = 2,
	};
	run_case(&tc2);
}

#define R101 "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"

static void test_101_passthrough(void **state)
{
	(void)state;
	static const struct tcase tc = {
		.name = "101", .kind = HTTP1_RESPONSE,
		.segs = { S(R101 "\x81\x05hello"), S("HTTP/1.1 200 OK\r\n\r\n"), G("\x00\x01", 100) },
		.exp = { { "", "", 101, 2, 0, L(R101), 0, "", 0, 0, 0, 0 } },
		.nexp = 1,
		.stats = { .gap_bytes = 100 },
	};
	run_case(&tc);
}

#define CONN_REQ "CONNECT db.example:5432 HTTP/1.1\r\nHost: db.example:5432\r\n\r\n"
#define CONN_RSP "HTTP/1.1 200 Connection established\r\n\r\n"

static void test_connect_passthrough(void **state)
{
	(void)state;
	/* the caller switches a stream from on_head; the message ends with its head */
	static const struct tcase tc = {
		.name = "CONNECT 200", .kind = HTTP1_RESPONSE, .passthrough_status = 200,
		.segs = { S(CONN_RSP "\x16\x03\x01 tls HTTP/1.1 200 OK\r\n\r\n") },
		.exp = { { "", "", 200, 0, 0, L(CONN_RSP), 0, "", 0, 0, 0, 0 } },
		.nexp = 1,
	};
	run_case(&tc);
	static const struct tcase tc2 = {
		.name = "CONNECT request", .kind = HTTP1_REQUEST,
		.segs = { S(CONN_REQ) },
		.exp = { { "CONNECT", "db.example:5432", 0, 1, 0, L(CONN_REQ), 0, "", 0, 0, 0, 0 } },
		.nexp = 1,
	};
	run_case(&tc2);
}

#define RC1 "HTTP/1.0 200 OK\r\nServer: x\r\n\r\n"

static void test_close_delimited(void **state)
{
	(void)state;
	static const struct tcase tc = {
		.name = "close-delimited", .kind = HTTP1_RESPONSE, .close_at_end = true,
		.segs = { S(RC1 "some body "), G("bytes", 10), S("HTTP/1.1 200 OK\r\n") },
		.exp = { { "", "", 200, 1, 0, L(RC1), 10 + 5 + 10 + 17, "some body bytesHTTP/1.1 200 OK\r\n", 0, 1, 0, 0 } },
		.nexp = 1,
		.stats = { .gap_bytes = 10 },
	};
	run_case(&tc);
	/* close inside a head: garbage; inside a known-length body: truncated */
	static const struct tcase tc2 = {
		.name = "close in head", .kind = HTTP1_REQUEST, .close_at_end = true,
		.segs = { S(KA1 "GET /b HTTP/1.1\r\nHo") },
		.exp = { { "GET", "/a", 0, 1, 0, L(KA1), 0, "", 0, 0, 0, 0 } },
		.nexp = 1,
		.stats = { .garbage_bytes = L("GET /b HTTP/1.1\r\nHo") },
	};
	run_case(&tc2);
	static const struct tcase tc3 = {
		.name = "close in body", .kind = HTTP1_RESPONSE, .close_at_end = true,
		.segs = { S(HD2 "o") },
		.exp = { { "", "", 200, 1, 0, L(HD2), 1, "o", 0, 1, 0, 0 } },
		.nexp = 1,
	};
	run_case(&tc3);
}

#define GP1 "HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\n"
#define A100 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define B100 "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define GC1 "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"

static void test_body_gaps(void **state)
{
	(void)state;
	static const struct tcase tc = {
		.name = "gaps in body", .kind = HTTP1_RESPONSE,
		.segs = { G(GP1 A100, 3000), G(B100 B100, 6700), S(R204) },
		.exp = {
			{ "", "", 200, 1, 0, L(GP1), 10000, A100 B100 B100, 0, 1, 0, 0 },
			{ "", "", 204, 1, 0, L(R204), 0, "", 0, 0, 0, 0 },
		},
		.nexp = 2,
		.stats = { .gap_bytes = 9700 },
	};
	run_case(&tc);
	/* gap inside chunk data of known size: counted down, framing kept */
	static const struct tcase tc2 = {
		.name = "gap in chunk data", .kind = HTTP1_RESPONSE,
		.segs = { G(GC1 "1000\r\n" "0123456789", 4086), S("\r\n0\r\n\r\n" HD2 "ok") },
		.exp = {
			{ "", "", 200, 1, 0, L(GC1), 6 + 4096 + 7, "0123456789", 0, 1, 0, 0 },
			{ "", "", 200, 1, 0, L(HD2), 2, "ok", 0, 0, 0, 0 },
		},
		.nexp = 2,
		.stats = { .gap_bytes = 4086 },
	};
	run_case(&tc2);
	/* gap over the end of a chunk: its CRLF is lost, sync with it */
	static const struct tcase tc3 = {
		.name = "gap past chunk data", .kind = HTTP1_RESPONSE,
		.segs = { G(GC1 "5\r\nab", 10), S("junk\r\n" HD2 "ok") },
		.exp = {
			{ "", "", 200, 1, 0, L(GC1), 3 + 2 + 3, "ab", 0, 1, 1, 0 },
			{ "", "", 200, 1, 0, L(HD2), 2, "ok", 0, 0, 0, 0 },
		},
		.nexp = 2,
		.stats = { .gap_bytes = 10, .resyncs = 1, .garbage_bytes = 6 },
	};
	run_case(&tc3);
	/* a gap that covers a body end and the next head's start */
	static const struct tcase tc4 = {
		.name = "gap past body end", .kind = HTTP1_REQUEST,
		.segs = { G(KA3H "he", 20), S("ost: h\r\n\r\n" KA1) },
		.exp = {
			{ "POST", "/c", 0, 2, 0, L(KA3H), 5, "he", 0, 1, 0, 0 },
			{ "GET", "/a", 0, 1, 0, L(KA1), 0, "", 0, 0, 0, 0 },
		},
		.nexp = 2,
		.stats = { .gap_bytes = 20, .resyncs = 1, .garbage_bytes = L("ost: h\r\n\r\n") },
	};
	run_case(&tc4);
}

static void test_head_gap(void **state)
{
	(void)state;
	static const struct tcase tc = {
		.name = "gap in head", .kind = HTTP1_REQUEST,
		.segs = { G("GET /a HTTP/1.1\r\nHost: x\r\nUser-Ag", 500), S("junk rest of head\r\n\r\n" KA1) },
		.exp = {
			/* the uncaptured rest of the call is counted into the cut head */
			{ "GET", "/a", 0, 1, 0, L("GET /a HTTP/1.1\r\nHost: x\r\nUser-Ag") + 500, 0, "", 0, 1, 1, 1 },
			{ "GET", "/a", 0, 1, 0, L(KA1), 0, "", 0, 0, 0, 0 },
		},
		.nexp = 2,
		.stats = { .gap_bytes = 500, .resyncs = 1, .garbage_bytes = L("junk rest of head\r\n\r\n") },
	};
	run_case(&tc);
	static const struct tcase tc2 = {
		.name = "gap in start line", .kind = HTTP1_REQUEST,
		.segs = { S(KA1), G("GET /lo", 10), S("ng HTTP/1.1\r\n\r\n" KA1) },
		.exp = {
			{ "GET", "/a", 0, 1, 0, L(KA1), 0, "", 0, 0, 0, 0 },
			/* cut inside the target (a URL longer than the capture): still reported */
			{ "GET", "/lo", 0, 0, 0, 7 + 10, 0, "", 0, 1, 1, 1 },
			{ "GET", "/a", 0, 1, 0, L(KA1), 0, "", 0, 0, 0, 0 },
		},
		.nexp = 3,
		.stats = { .gap_bytes = 10, .resyncs = 1, .garbage_bytes = L("ng HTTP/1.1\r\n\r\n") },
	};
	run_case(&tc2);
	/* a gap right at a message start: the next chunk may begin a message */
	static const struct tcase tc3 = {
		.name = "gap at message start", .kind = HTTP1_RESPONSE,
		.segs = { G(HD2 "ok", 70), S(HD2 "ok") },
		.exp = {
			{ "", "", 200, 1, 0, L(HD2), 2, "ok", 0, 0, 0, 0 },
			{ "", "", 200, 1, 0, L(HD2), 2, "ok", 0, 0, 0, 0 },
		},
		.nexp = 2,
		.stats = { .gap_bytes = 70, .resyncs = 1 },
	};
	run_case(&tc3);
	/* a gap in the chunk-size line */
	static const struct tcase tc4 = {
		.name = "gap in chunk size", .kind = HTTP1_RESPONSE,
		.segs = { G(GC1 "1", 3), S("\r\n" HD2 "ok") },
		.exp = {
			{ "", "", 200, 1, 0, L(GC1), 1, "", 0, 1, 1, 0 },
			{ "", "", 200, 1, 0, L(HD2), 2, "ok", 0, 0, 0, 0 },
		},
		.nexp = 2,
		.stats = { .gap_bytes = 3, .resyncs = 1, .garbage_bytes = 2 },
	};
	run_case(&tc4);
}

#define JUNK "\x00\x01\x02\xff\xfe binary junk \x7f\x00"

static void test_garbage(void **state)
{
	(void)state;
	static const struct tcase tc = {
		.name = "garbage then request", .kind = HTTP1_REQUEST,
		.segs = { { JUNK GET1, L(JUNK GET1), 0 } },
		.exp = { { "GET", "/index.html?x=1", 0, 2, 0, L(GET1), 0, "", 0, 0, 0, 0 } },
		.nexp = 1,
		.stats = { .garbage_bytes = L(JUNK), .resyncs = 1 },
	};
	run_case(&tc);
	/* junk that starts like a method, and a false start inside it */
	static const struct tcase tc2 = {
		.name = "token garbage", .kind = HTTP1_REQUEST,
		.segs = { S("xyz\x01GE\x02POST /no\x03\r\nHEAD\n" KA1) },
		.exp = { { "GET", "/a", 0, 1, 0, L(KA1), 0, "", 0, 0, 0, 0 } },
		.nexp = 1,
		.stats = { .garbage_bytes = L("xyz\x01GE\x02POST /no\x03\r\nHEAD\n"), .resyncs = 1 },
	};
	run_case(&tc2);
	static const struct tcase tc3 = {
		.name = "garbage then response", .kind = HTTP1_RESPONSE,
		.segs = { S("HTTP/2 200\r\n\r\nHTTP/1.1 20x\r\n\x05" PR2) },
		.exp = { { "", "", 404, 1, 0, L(PR2), 0, "", 0, 0, 0, 0 } },
		.nexp = 1,
		.stats = { .garbage_bytes = L("HTTP/2 200\r\n\r\nHTTP/1.1 20x\r\n\x05"), .resyncs = 1 },
	};
	run_case(&tc3);
	/* empty lines between messages are allowed (RFC 9112 §2.2), not garbage */
	static const struct tcase tc4 = {
		.name = "empty lines", .kind = HTTP1_REQUEST,
		.segs = { S("\r\n\n" KA1 "\r\n" KA1) },
		.exp = {
			{ "GET", "/a", 0, 1, 0, L(KA1), 0, "", 0, 0, 0, 0 },
			{ "GET", "/a", 0, 1, 0, L(KA1), 0, "", 0, 0, 0, 0 },
		},
		.nexp = 2,
	};
	run_case(&tc4);
}

#define OC1 "get /x HTTP/1.1\r\n\r\n"
#define OC2 "GeT /y HTTP/1.1\r\n\r\n"
#define OC3 "pOsT /z HTTP/1.1\r\ncontent-LENGTH: 1\r\n\r\n"
#define OC4 "PROPFIND /dav HTTP/1.1\r\n\r\n"

static void test_odd_case_method(void **state)
{
	(void)state;
	static const struct tcase tc = {
		.name = "odd-case methods", .kind = HTTP1_REQUEST,
		.segs = { S(OC1 OC2 "\x01" OC3 "A" OC4) },
		.exp = {
			{ "get", "/x", 0, 0, 0, L(OC1), 0, "", 0, 0, 0, 0 },
			{ "GeT", "/y", 0, 0, 0, L(OC2), 0, "", 0, 0, 0, 0 },
			{ "pOsT", "/z", 0, 1, 0, L(OC3), 1, "A", 0, 0, 0, 0 },
			{ "PROPFIND", "/dav", 0, 0, 0, L(OC4), 0, "", 0, 0, 0, 0 },
		},
		.nexp = 4,
		.stats = { .garbage_bytes = 1, .resyncs = 1 },
	};
	run_case(&tc);
}

#define OF1 "GET / HTTP/1.1\r\nX-Long: part1\r\n part2\r\n\tpart3\r\nHost: h\r\nContent-Length:\r\n 2\r\n\r\n"

static void test_obs_fold(void **state)
{
	(void)state;
	static const struct tcase tc = {
		.name = "obs-fold", .kind = HTTP1_REQUEST,
		.segs = { S(OF1 "xy" KA1) },
		.exp = {
			{ "GET", "/", 0, 3, 0, L(OF1), 2, "xy", 0, 0, 0, 0 },
			{ "GET", "/a", 0, 1, 0, L(KA1), 0, "", 0, 0, 0, 0 },
		},
		.nexp = 2,
	};
	run_case(&tc);
}

#define H10 "GET / HTTP/1.0\r\n\r\n"
#define H10R "HTTP/1.0 200\r\n\r\n"

static void test_http10(void **state)
{
	(void)state;
	static const struct tcase tc = {
		.name = "HTTP/1.0", .kind = HTTP1_REQUEST,
		.segs = { S(H10 H10) },
		.exp = {
			{ "GET", "/", 0, 0, 0, L(H10), 0, "", 0, 0, 0, 0 },
			{ "GET", "/", 0, 0, 0, L(H10), 0, "", 0, 0, 0, 0 },
		},
		.nexp = 2,
	};
	run_case(&tc);
	static const struct tcase tc2 = {
		.name = "HTTP/1.0 response", .kind = HTTP1_RESPONSE, .close_at_end = true,
		.segs = { S(H10R "<html>") },
		.exp = { { "", "", 200, 0, 0, L(H10R), 6, "<html>", 0, 0, 0, 0 } },
		.nexp = 1,
	};
	run_case(&tc2);
}

#define LF1 "GET /lf HTTP/1.1\nHost: a\n\n"
#define LF2 "POST /p HTTP/1.1\nContent-Length: 2\n\n"
#define LF3 "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n"
#define LF3B "3\nabc\n0\nT: 1\n\n"

static void test_lf_only(void **state)
{
	(void)state;
	static const struct tcase tc = {
		.name = "LF only", .kind = HTTP1_REQUEST,
		.segs = { S(LF1 LF2 "ok" LF1) },
		.exp = {
			{ "GET", "/lf", 0, 1, 0, L(LF1), 0, "", 0, 0, 0, 0 },
			{ "POST", "/p", 0, 1, 0, L(LF2), 2, "ok", 0, 0, 0, 0 },
			{ "GET", "/lf", 0, 1, 0, L(LF1), 0, "", 0, 0, 0, 0 },
		},
		.nexp = 3,
	};
	run_case(&tc);
	static const struct tcase tc2 = {
		.name = "LF only chunked", .kind = HTTP1_RESPONSE,
		.segs = { S(LF3 LF3B HD2 "ok") },
		.exp = {
			{ "", "", 200, 1, 0, L(LF3), L(LF3B), "abc", 0, 0, 0, 0 },
			{ "", "", 200, 1, 0, L(HD2), 2, "ok", 0, 0, 0, 0 },
		},
		.nexp = 2,
	};
	run_case(&tc2);
}

#define A300 A100 A100 A100
#define BIG1 "GET /big HTTP/1.1\r\nHost: h\r\nX-Big: " A300 "\r\n\r\n"
#define BIG2 "GET /" A300 " HTTP/1.1\r\n\r\n"

static void test_head_overflow(void **state)
{
	(void)state;
	/* the start line fits: reported as a truncated head (a big header must not hide a request) */
	static const struct tcase tc = {
		.name = "giant header", .kind = HTTP1_REQUEST, .head_cap = 128,
		.segs = { S(BIG1 KA1) },
		.exp = {
			{ "GET", "/big", 0, 1, 0, 128, 0, "", 0, 1, 1, 1 },
			{ "GET", "/a", 0, 1, 0, L(KA1), 0, "", 0, 0, 0, 0 },
		},
		.nexp = 2,
		.stats = { .head_overflows = 1, .resyncs = 1, .garbage_bytes = L(BIG1) - 128 },
	};
	run_case(&tc);
	/* the start line itself is too long: reported with the target's first
	 * head_cap - 4 bytes, the rest skipped */
	static char t124[125];
	t124[0] = '/';
	memset(t124 + 1, 'a', 123);
	static const struct tcase tc2 = {
		.name = "giant start line", .kind = HTTP1_REQUEST, .head_cap = 128,
		.segs = { S(BIG2 KA1) },
		.exp = {
			{ "GET", t124, 0, 0, 0, 128, 0, "", 0, 1, 1, 1 },
			{ "GET", "/a", 0, 1, 0, L(KA1), 0, "", 0, 0, 0, 0 },
		},
		.nexp = 2,
		.stats = { .head_overflows = 1, .resyncs = 1, .garbage_bytes = L(BIG2) - 128 },
	};
	run_case(&tc2);
	/* exactly head_cap bytes is fine */
	static const struct tcase tc3 = {
		.name = "head at cap", .kind = HTTP1_REQUEST, .head_cap = L(KA1),
		.segs = { S(KA1 KA1) },
		.exp = {
			{ "GET", "/a", 0, 1, 0, L(KA1), 0, "", 0, 0, 0, 0 },
			{ "GET", "/a", 0, 1, 0, L(KA1), 0, "", 0, 0, 0, 0 },
		},
		.nexp = 2,
	};
	run_case(&tc3);
	/* a head_cap below a resync start's length, the start spread over chunks */
	static const struct tcase tc4 = {
		.name = "tiny cap resync", .kind = HTTP1_REQUEST, .head_cap = 5,
		.segs = { S("\x01OPT"), S("IONS / HTTP/1.1\r\n\r\n") },
		.exp = { { 0 } },
		.nexp = 0,
		.stats = { .head_overflows = 1, .resyncs = 1, .garbage_bytes = L("\x01OPTIONS / HTTP/1.1\r\n\r\n") },
	};
	run_case(&tc4);
}

#define H8 "X-a: 1\r\nX-b: 2\r\nX-c: 3\r\nX-d: 4\r\nX-e: 5\r\nX-f: 6\r\nX-g: 7\r\nX-h: 8\r\n"
#define H64 H8 H8 H8 H8 H8 H8 H8 H8
#define MANY "POST /many HTTP/1.1\r\n" H64 "X-1: a\r\nX-2: b\r\n\tfold\r\nContent-Length: 4\r\n\r\n"

static void test_many_headers(void **state)
{
	(void)state;
	/* the Content-Length beyond the stored 64 still frames the body */
	static const struct tcase tc = {
		.name = "more than 64 headers", .kind = HTTP1_REQUEST,
		.segs = { S(MANY "body" KA1) },
		.exp = {
			{ "POST", "/many", 0, 64, 3, L(MANY), 4, "body", 0, 0, 0, 0 },
			{ "GET", "/a", 0, 1, 0, L(KA1), 0, "", 0, 0, 0, 0 },
		},
		.nexp = 2,
	};
	run_case(&tc);
}

#define IC1 "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"

static void test_invalid_chunk(void **state)
{
	(void)state;
	static const struct tcase tc = {
		.name = "invalid chunk size", .kind = HTTP1_RESPONSE,
		.segs = { S(IC1 "zz\r\n" HD2 "ok") },
		.exp = {
			{ "", "", 200, 1, 0, L(IC1), 0, "", 0, 1, 1, 0 },
			{ "", "", 200, 1, 0, L(HD2), 2, "ok", 0, 0, 0, 0 },
		},
		.nexp = 2,
		.stats = { .garbage_bytes = 4, .resyncs = 1 },
	};
	run_case(&tc);
	/* 17 hex digits overflow 64 bits; missing CRLF after data */
	static const struct tcase tc2 = {
		.name = "chunk size overflow", .kind = HTTP1_RESPONSE,
		.segs = { S(IC1 "10000000000000000\r\n" HD2 "ok") },
		.exp = {
			{ "", "", 200, 1, 0, L(IC1), 16, "", 0, 1, 1, 0 },
			{ "", "", 200, 1, 0, L(HD2), 2, "ok", 0, 0, 0, 0 },
		},
		.nexp = 2,
		.stats = { .garbage_bytes = 3, .resyncs = 1 },
	};
	run_case(&tc2);
	static const struct tcase tc3 = {
		.name = "no CRLF after chunk", .kind = HTTP1_RESPONSE,
		.segs = { S(IC1 "2\r\nabc\r\n" HD2 "ok") },
		.exp = {
			{ "", "", 200, 1, 0, L(IC1), 5, "ab", 0, 1, 1, 0 },
			{ "", "", 200, 1, 0, L(HD2), 2, "ok", 0, 0, 0, 0 },
		},
		.nexp = 2,
		.stats = { .garbage_bytes = 3, .resyncs = 1 },
	};
	run_case(&tc3);
}

#define CCL "POST /a HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"
#define CCL2 "POST /b HTTP/1.1\r\nContent-Length: 7, 7\r\n\r\n"
#define CCL3 "POST /c HTTP/1.1\r\nContent-Length: +7\r\n\r\n"
#define TEB "POST /d HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"

static void test_bad_content_length(void **state)
{
	(void)state;
	static const struct tcase tc = {
		.name = "conflicting content-length", .kind = HTTP1_REQUEST,
		.segs = { S(CCL "{\"a\":1}" CCL2 "{\"b\":2}" CCL3 "{\"c\":3}" TEB "x\n" KA1) },
		.exp = {
			{ "POST", "/a", 0, 2, 0, L(CCL), 0, "", 0, 1, 1, 0 },
			{ "POST", "/b", 0, 1, 0, L(CCL2), 7, "{\"b\":2}", 0, 0, 0, 0 },
			{ "POST", "/c", 0, 1, 0, L(CCL3), 0, "", 0, 1, 1, 0 },
			{ "POST", "/d", 0, 1, 0, L(TEB), 0, "", 0, 1, 1, 0 },
			{ "GET", "/a", 0, 1, 0, L(KA1), 0, "", 0, 0, 0, 0 },
		},
		.nexp = 5,
		.stats = { .garbage_bytes = 7 + 7 + 2, .resyncs = 3 },
	};
	run_case(&tc);
	/* a response with a bad length is unframed too, not read to close */
	static const struct tcase tc2 = {
		.name = "bad response length", .kind = HTTP1_RESPONSE,
		.segs = { S("HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\nab\n" HD2 "ok") },
		.exp = {
			{ "", "", 200, 1, 0, L("HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n"), 0, "", 0, 1, 1, 0 },
			{ "", "", 200, 1, 0, L(HD2), 2, "ok", 0, 0, 0, 0 },
		},
		.nexp = 2,
		.stats = { .garbage_bytes = 3, .resyncs = 1 },
	};
	run_case(&tc2);
}

#define BADH "GET / HTTP/1.1\r\nHost : evil\r\n\r\n"

static void test_invalid_field_block(void **state)
{
	(void)state;
	/* a valid start line over a broken field block: the head is garbage */
	static const struct tcase tc = {
		.name = "invalid header line", .kind = HTTP1_REQUEST,
		.segs = { S(BADH KA1) },
		.exp = { { "GET", "/a", 0, 1, 0, L(KA1), 0, "", 0, 0, 0, 0 } },
		.nexp = 1,
		.stats = { .garbage_bytes = L(BADH), .resyncs = 1 },
	};
	run_case(&tc);
}

/* ---- other stream behaviour ---- */

static void test_ts(void **state)
{
	(void)state;
	struct rec r;
	memset(&r, 0, sizeof(r));
	struct http1_stream *s = http1_stream__new(HTTP1_RESPONSE, 64, &rec_cb, &r);
	assert_non_null(s);
	http1_stream__feed(s, "HTTP/1.1 200 OK\r\n", 17, 17, 10);
	http1_stream__feed(s, "Content-Length: 4\r\n\r\nab", 23, 23, 20);
	http1_stream__feed(s, "cd", 2, 2, 30);
	assert_int_equal(r.n, 1);
	assert_true(r.m[0].completed);
	assert_int_equal(r.m[0].ts_first, 10);
	assert_int_equal(r.m[0].ts_last, 30);
	assert_int_equal(http1_stream__buffered(s), 0);
	http1_stream__free(s);
}

static void test_lifecycle(void **state)
{
	(void)state;
	errno = 0;
	assert_null(http1_stream__new(HTTP1_REQUEST, 0, &rec_cb, NULL));
	assert_int_equal(errno, EINVAL);
	assert_null(http1_stream__new((enum http1_kind)7, 10, &rec_cb, NULL));
	http1_stream__free(NULL);
	/* no callbacks at all */
	struct http1_stream *s = http1_stream__new(HTTP1_REQUEST, 100, NULL, NULL);
	assert_non_null(s);
	http1_stream__feed(s, KA3H "hello" KA1 "GET /", L(KA3H "hello" KA1 "GET /"), 1000, 1);
	http1_stream__feed(s, NULL, 0, 0, 2);
	assert_int_equal(http1_stream__stats(s)->messages, 3); /* "GET /" cut by the gap counts */
	assert_int_equal(http1_stream__stats(s)->gap_bytes, 1000 - L(KA3H "hello" KA1 "GET /"));
	http1_stream__close(s, 3);
	http1_stream__passthrough(s);
	http1_stream__feed(s, KA1, L(KA1), L(KA1), 4);
	assert_int_equal(http1_stream__stats(s)->messages, 3);
	http1_stream__free(s);
}

static void test_passthrough_mid_body(void **state)
{
	(void)state;
	struct rec r;
	memset(&r, 0, sizeof(r));
	struct http1_stream *s = http1_stream__new(HTTP1_REQUEST, 64, &rec_cb, &r);
	http1_stream__feed(s, KA3H "he", L(KA3H "he"), L(KA3H "he"), 1);
	assert_int_equal(r.n, 1);
	assert_false(r.m[0].completed);
	http1_stream__passthrough(s);
	assert_true(r.m[0].completed);
	assert_true(r.m[0].unframed);
	http1_stream__feed(s, KA1, L(KA1), L(KA1), 2);
	assert_int_equal(r.n, 1);
	assert_int_equal(r.errors, 0);
	http1_stream__free(s);
}

static void test_buffer_released(void **state)
{
	(void)state;
	struct rec r;
	memset(&r, 0, sizeof(r));
	struct http1_stream *s = http1_stream__new(HTTP1_REQUEST, 16384, &rec_cb, &r);
	http1_stream__feed(s, "GET / HTTP/1.1\r\nHo", 18, 18, 1);
	assert_true(http1_stream__buffered(s) >= 18);
	http1_stream__feed(s, "st: a\r\n\r\n", 9, 9, 2);
	assert_int_equal(http1_stream__buffered(s), 0);
	assert_int_equal(r.n, 1);
	http1_stream__free(s);
}

/* ---- http1_parse_head ---- */

static void test_parse_request(void **state)
{
	(void)state;
	static const char req[] = "pUt /a%20b?q=1 HTTP/1.0\r\nHost: h\r\nX-Long: part1\r\n part2\r\n\tpart3\r\n"
				  "Empty:\r\nE2:  \r\n  v\r\n\r\nBODY";
	struct http1_head h;
	size_t hl = 0;
	assert_int_equal(http1_parse_head(HTTP1_REQUEST, req, sizeof(req) - 1, &h, &hl), HTTP1_OK);
	assert_int_equal(hl, sizeof(req) - 1 - 4);
	assert_true(slice_eq(h.method, "pUt"));
	assert_true(slice_eq(h.target, "/a%20b?q=1"));
	assert_int_equal(h.minor_version, 0);
	assert_int_equal(h.num_headers, 4);
	assert_int_equal(h.headers_dropped, 0);
	assert_false(h.truncated);
	assert_true(slice_eq(h.headers[0].name, "Host"));
	assert_true(slice_eq(h.headers[0].value, "h"));
	assert_true(slice_eq(h.headers[1].value, "part1\r\n part2\r\n\tpart3"));
	assert_true(slice_eq(h.headers[2].name, "Empty"));
	assert_int_equal(h.headers[2].value.len, 0);
	assert_true(slice_eq(h.headers[3].value, "v"));
	const struct slice *v = http1_header_get(&h, "x-LONG");
	assert_non_null(v);
	assert_ptr_equal(v, &h.headers[1].value);
	assert_null(http1_header_get(&h, "Host2"));
}

static void test_parse_response(void **state)
{
	(void)state;
	struct http1_head h;
	size_t hl;
	static const char r1[] = "HTTP/1.1 404 Not Found\r\nServer: x\r\n\r\n";
	assert_int_equal(http1_parse_head(HTTP1_RESPONSE, r1, sizeof(r1) - 1, &h, &hl), HTTP1_OK);
	assert_int_equal(hl, sizeof(r1) - 1);
	assert_int_equal(h.status, 404);
	assert_int_equal(h.minor_version, 1);
	assert_true(slice_eq(h.reason, "Not Found"));
	assert_int_equal(h.method.len, 0);
	static const char r2[] = "HTTP/1.1 999\n\n";
	assert_int_equal(http1_parse_head(HTTP1_RESPONSE, r2, sizeof(r2) - 1, &h, &hl), HTTP1_OK);
	assert_int_equal(h.status, 999);
	assert_int_equal(h.reason.len, 0);
	static const char r3[] = "HTTP/1.1 100 \r\n\r\n";
	assert_int_equal(http1_parse_head(HTTP1_RESPONSE, r3, sizeof(r3) - 1, &h, &hl), HTTP1_OK);
	assert_int_equal(h.status, 100);
	assert_int_equal(h.reason.len, 0);
}

static void test_parse_partial(void **state)
{
	(void)state;
	static const struct {
		enum http1_kind kind;
		const char *s;
	} ok[] = {
		{ HTTP1_REQUEST, GET1 },
		{ HTTP1_REQUEST, OF1 },
		{ HTTP1_REQUEST, LF1 },
		{ HTTP1_REQUEST, MANY },
		{ HTTP1_REQUEST, "OPTIONS * HTTP/1.1\r\nA:\r\n\r\n" },
		{ HTTP1_REQUEST, "GET http://h/p HTTP/1.1\r\nA:b\r\n\r\n" },
		{ HTTP1_RESPONSE, R101 },
		{ HTTP1_RESPONSE, "HTTP/1.1 200\r\n\r\n" },
		{ HTTP1_RESPONSE, "HTTP/1.0 302 Found\nLocation: /x\n\n" },
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		size_t n = strlen(ok[i].s), hl = 0;
		struct http1_head h;
		for (size_t k = 0; k < n; k++) {
			/* heap copy of exactly k bytes: ASan catches any look past the end */
			char *b = malloc(k ? k : 1);
			memcpy(b, ok[i].s, k);
			int rc = http1_parse_head(ok[i].kind, b, k, &h, &hl);
			free(b);
			if (rc != HTTP1_PARTIAL)
				fail_msg("case %zu prefix %zu: %d, want PARTIAL", i, k, rc);
		}
		assert_int_equal(http1_parse_head(ok[i].kind, ok[i].s, n, &h, &hl), HTTP1_OK);
		assert_int_equal(hl, n);
	}
}

static void test_parse_invalid(void **state)
{
	(void)state;
	static const struct {
		enum http1_kind kind;
		const char *s;
	} bad[] = {
		{ HTTP1_REQUEST, " GET / HTTP/1.1\r\n\r\n" },
		{ HTTP1_REQUEST, "\r\nGET / HTTP/1.1\r\n\r\n" },
		{ HTTP1_REQUEST, "GET  / HTTP/1.1\r\n\r\n" },
		{ HTTP1_REQUEST, "GET / HTTP/2.0\r\n\r\n" },
		{ HTTP1_REQUEST, "GET / http/1.1\r\n\r\n" },
		{ HTTP1_REQUEST, "GET / HTTP/1.1 \r\n\r\n" },
		{ HTTP1_REQUEST, "GET / HTTP/1.11\r\n\r\n" },
		{ HTTP1_REQUEST, "GET /\r\n\r\n" },
		{ HTTP1_REQUEST, "GET /a\tb HTTP/1.1\r\n\r\n" },
		{ HTTP1_REQUEST, "G(T / HTTP/1.1\r\n\r\n" },
		{ HTTP1_REQUEST, "GET / HTTP/1.1\rX\n\r\n" },
		{ HTTP1_REQUEST, "GET / HTTP/1.1\r\nHost : x\r\n\r\n" },
		{ HTTP1_REQUEST, "GET / HTTP/1.1\r\n: x\r\n\r\n" },
		{ HTTP1_REQUEST, "GET / HTTP/1.1\r\nNoColon\r\n\r\n" },
		{ HTTP1_REQUEST, "GET / HTTP/1.1\r\n Fold: first\r\n\r\n" },
		{ HTTP1_REQUEST, "GET / HTTP/1.1\r\nA: b\rc\r\n\r\n" },
		{ HTTP1_REQUEST, "GET / HTTP/1.1\r\nA: b\0c\r\n\r\n" },
		{ HTTP1_REQUEST, "GET / HTTP/1.1\r\nA: b\r\n\r\r\n" },
		{ HTTP1_REQUEST, "ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFG / HTTP/1.1\r\n\r\n" },
		{ HTTP1_REQUEST, "HTTP/1.1 200 OK\r\n\r\n" },
		{ HTTP1_RESPONSE, "GET / HTTP/1.1\r\n\r\n" },
		{ HTTP1_RESPONSE, "HTTP/1.1 20 OK\r\n\r\n" },
		{ HTTP1_RESPONSE, "HTTP/1.1 099 OK\r\n\r\n" },
		{ HTTP1_RESPONSE, "HTTP/1.1 2000 OK\r\n\r\n" },
		{ HTTP1_RESPONSE, "HTTP/1.1 200OK\r\n\r\n" },
		{ HTTP1_RESPONSE, "HTTP/1.1  200 OK\r\n\r\n" },
		{ HTTP1_RESPONSE, "HTTP/1.1 200 O\x01K\r\n\r\n" },
		{ HTTP1_RESPONSE, "HTTP/1.x 200 OK\r\n\r\n" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct http1_head h;
		size_t hl = 0, n = strlen(bad[i].s);
		if (i == 16)
			n = L("GET / HTTP/1.1\r\nA: b\0c\r\n\r\n");
		int rc = http1_parse_head(bad[i].kind, bad[i].s, n, &h, &hl);
		if (rc != HTTP1_INVALID)
			fail_msg("invalid case %zu: %d", i, rc);
	}
	struct http1_head h;
	size_t hl;
	assert_int_equal(http1_parse_head(HTTP1_REQUEST, "", 0, &h, &hl), HTTP1_PARTIAL);
	/* INVALID as soon as the bad byte is seen, before the head ends */
	assert_int_equal(http1_parse_head(HTTP1_REQUEST, "\x16\x03", 2, &h, &hl), HTTP1_INVALID);
	assert_int_equal(http1_parse_head(HTTP1_RESPONSE, "HTTP/2", 6, &h, &hl), HTTP1_INVALID);
	assert_int_equal(http1_parse_head(HTTP1_REQUEST, "GET / HTTP/1.1\r\nA b", 19, &h, &hl), HTTP1_INVALID);
}

static void test_parse_many_headers(void **state)
{
	(void)state;
	struct http1_head h;
	size_t hl;
	assert_int_equal(http1_parse_head(HTTP1_REQUEST, MANY, L(MANY), &h, &hl), HTTP1_OK);
	assert_int_equal(h.num_headers, HTTP1_MAX_HEADERS);
	assert_int_equal(h.headers_dropped, 3);
	assert_true(slice_eq(h.headers[63].name, "X-h"));
	assert_null(http1_header_get(&h, "content-length"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_simple_get),
		cmocka_unit_test(test_keepalive),
		cmocka_unit_test(test_pipelined_requests),
		cmocka_unit_test(test_pipelined_responses),
		cmocka_unit_test(test_content_length),
		cmocka_unit_test(test_chunked),
		cmocka_unit_test(test_head_response),
		cmocka_unit_test(test_100_continue),
		cmocka_unit_test(test_204_304),
		cmocka_unit_test(test_101_passthrough),
		cmocka_unit_test(test_connect_passthrough),
		cmocka_unit_test(test_close_delimited),
		cmocka_unit_test(test_body_gaps),
		cmocka_unit_test(test_head_gap),
		cmocka_unit_test(test_garbage),
		cmocka_unit_test(test_odd_case_method),
		cmocka_unit_test(test_obs_fold),
		cmocka_unit_test(test_http10),
		cmocka_unit_test(test_lf_only),
		cmocka_unit_test(test_head_overflow),
		cmocka_unit_test(test_many_headers),
		cmocka_unit_test(test_invalid_chunk),
		cmocka_unit_test(test_bad_content_length),
		cmocka_unit_test(test_invalid_field_block),
		cmocka_unit_test(test_ts),
		cmocka_unit_test(test_lifecycle),
		cmocka_unit_test(test_passthrough_mid_body),
		cmocka_unit_test(test_buffer_released),
		cmocka_unit_test(test_parse_request),
		cmocka_unit_test(test_parse_response),
		cmocka_unit_test(test_parse_partial),
		cmocka_unit_test(test_parse_invalid),
		cmocka_unit_test(test_parse_many_headers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
