/* fuzz_http1.c — libFuzzer target for user/http1.c: random chunking and capture gaps, invariants in callbacks. */
/*
 * Input: [0] flags (bit0 response, bit1 close at end, bit2 passthrough from
 * on_head on status 200, bit3 HEAD_NO_BODY for odd responses), [1] head_cap
 * selector, [2..9] split pattern (per byte: low nibble chunk length, high
 * nibble gap after it), then the stream bytes. The same input is fed a second
 * time with every chunk cut smaller (same gaps): both runs must report the
 * same messages and stats, and http1_parse_head is run on the raw bytes.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http1.h"

#define CHECK(c)                                                                    \
	do {                                                                        \
		if (!(c)) {                                                         \
			fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #c); \
			abort();                                                    \
		}                                                                   \
	} while (0)

static const size_t chunk_lens[16] = { 1, 2, 3, 5, 7, 8, 13, 16, 21, 34, 64, 100, 200, 500, 1000, 4096 };
static const uint64_t gap_lens[16] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 17, 300, 4096, 100000 };
static const size_t head_caps[8] = { 1, 8, 16, 64, 256, 1024, 4096, 16384 };

struct fz {
	uint8_t flags;
	size_t head_cap;
	struct http1_stream *s;
	const char *chunk;	/* the chunk being fed */
	size_t chunk_len;
	bool active;
	uint64_t heads, completes, body_seen, ts_first;
	uint64_t hash;
	volatile unsigned sink;
};

static void mix(struct fz *z, const void *p, size_t n)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++) {
		z->hash ^= b[i];
		z->hash *= 1099511628211ULL;
	}
}

static void mix_u64(struct fz *z, uint64_t v)
{
	mix(z, &v, sizeof(v));
}

/* Touch every byte (ASan checks the memory) and hash it. */
static void mix_slice(struct fz *z, struct slice s)
{
	CHECK(s.len == 0 || s.p != NULL);
	CHECK(s.len <= z->head_cap);
	unsigned acc = 0;
	for (size_t i = 0; i < s.len; i++)
		acc += (unsigned char)s.p[i];
	z->sink += acc;
	mix_u64(z, s.len);
	mix(z, s.p, s.len);
}

static int fz_head(void *ctx, const struct http1_head *h, uint64_t ts_first)
{
	struct fz *z = ctx;
	CHECK(!z->active);
	z->active = true;
	z->heads++;
	z->body_seen = 0;
	z->ts_first = ts_first;
	CHECK(h->num_headers <= HTTP1_MAX_HEADERS);
	if (h->headers_dropped)
		CHECK(h->num_headers == HTTP1_MAX_HEADERS);
	if (z->flags & 1) {
		CHECK(h->status >= 100 && h->status <= 999);
		CHECK(h->method.len == 0 && h->target.len == 0);
	} else {
		CHECK(h->method.len >= 1 && h->method.len <= HTTP1_METHOD_MAX);
		CHECK(h->target.len >= 1);
		CHECK(h->status == 0);
	}
	CHECK(h->minor_version >= 0 && h->minor_version <= 9);
	mix(z, "H", 1);
	mix_slice(z, h->method);
	mix_slice(z, h->target);
	mix_slice(z, h->reason);
	mix_u64(z, (uint64_t)h->status);
	mix_u64(z, (uint64_t)h->minor_version);
	mix_u64(z, h->num_headers);
	mix_u64(z, h->headers_dropped);
	mix_u64(z, h->truncated);
	for (size_t i = 0; i < h->num_headers; i++) {
		CHECK(h->headers[i].name.len >= 1);
		mix_slice(z, h->headers[i].name);
		mix_slice(z, h->headers[i].value);
	}
	const struct slice *cl = http1_header_get(h, "content-length");
	CHECK(!cl || (cl >= &h->headers[0].value && cl <= &h->headers[h->num_headers - 1].value));
	if ((z->flags & 4) && h->status == 200)
		http1_stream__passthrough(z->s);
	if ((z->flags & 8) && (h->status & 1))
		return HTTP1_HEAD_NO_BODY;
	return 0;
}

static void fz_body(void *ctx, const char *p, size_t len)
{
	struct fz *z = ctx;
	CHECK(z->active);
	CHECK(len > 0);
	/* body bytes are never copied: they lie inside the chunk being fed */
	CHECK(p >= z->chunk && len <= z->chunk_len && p - z->chunk <= (ptrdiff_t)(z->chunk_len - len));
	z->body_seen += len;
	mix(z, p, len);	/* streaming hash: independent of how the body was cut */
}

static void fz_complete(void *ctx, const struct http1_msg_end *e)
{
	struct fz *z = ctx;
	CHECK(z->active);
	z->active = false;
	z->completes++;
	CHECK(e->head_bytes > 0);
	/* a head cut by a gap counts the gap: only a complete head is bounded */
	CHECK(e->head_bytes <= z->head_cap || e->truncated);
	CHECK(z->body_seen <= e->body_bytes);
	CHECK(!e->unframed || e->truncated);
	CHECK(e->ts_last >= z->ts_first);
	mix(z, "C", 1);
	mix_u64(z, e->head_bytes);
	mix_u64(z, e->body_bytes);
	mix_u64(z, e->truncated);
	mix_u64(z, e->unframed);
}

static const struct http1_callbacks fz_cb = { fz_head, fz_body, fz_complete };

static void feed(struct fz *z, const uint8_t *p, size_t n, uint64_t gap, uint64_t ts)
{
	/* exact-size copy: ASan flags any read past the captured bytes */
	char *b = malloc(n ? n : 1);
	CHECK(b);
	if (n)
		memcpy(b, p, n);
	z->chunk = b;
	z->chunk_len = n;
	http1_stream__feed(z->s, b, n, n + gap, ts);
	z->chunk = NULL;
	free(b);
	CHECK(http1_stream__buffered(z->s) <= z->head_cap);
	CHECK(http1_stream__stats(z->s)->messages == z->completes);
}

/* fine: 0 feeds each pattern chunk whole, else cut into smaller pieces, the gap after the last one */
static uint64_t run(const uint8_t *hdr, const uint8_t *d, size_t n, int fine)
{
	struct fz z;
	memset(&z, 0, sizeof(z));
	z.flags = hdr[0];
	z.head_cap = head_caps[hdr[1] & 7];
	z.hash = 14695981039346656037ULL;
	z.s = http1_stream__new(z.flags & 1 ? HTTP1_RESPONSE : HTTP1_REQUEST, z.head_cap, &fz_cb, &z);
	CHECK(z.s);

	uint64_t ts = 1;
	size_t off = 0, k = 0;
	while (off < n) {
		uint8_t pat = hdr[2 + (k++ & 7)];
		size_t len = chunk_lens[pat & 15];
		uint64_t gap = gap_lens[pat >> 4];
		if (len > n - off)
			len = n - off;
		if (!fine) {
			feed(&z, d + off, len, gap, ts++);
		} else {
			size_t done = 0, j = 0;
			while (done < len) {
				size_t piece = fine == 1 ? 1 : (j * 7 + 3) % 11 + 1;
				if (piece > len - done)
					piece = len - done;
				j++;
				feed(&z, d + off + done, piece, done + piece == len ? gap : 0, ts++);
				done += piece;
			}
		}
		off += len;
	}
	if (z.flags & 2) {
		http1_stream__close(z.s, ts);
		CHECK(!z.active);
	}
	const struct http1_stream_stats *st = http1_stream__stats(z.s);
	CHECK(st->messages == z.completes);
	CHECK(z.heads == z.completes + (z.active ? 1 : 0));
	CHECK(st->garbage_bytes <= n);
	mix_u64(&z, st->messages);
	mix_u64(&z, st->garbage_bytes);
	mix_u64(&z, st->resyncs);
	mix_u64(&z, st->head_overflows);
	mix_u64(&z, st->gap_bytes);
	mix_u64(&z, z.active);
	http1_stream__free(z.s);
	return z.hash;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 10)
		return 0;
	const uint8_t *d = data + 10;
	size_t n = size - 10;

	uint64_t a = run(data, d, n, 0);
	uint64_t b = run(data, d, n, n <= 512 ? 1 : 2);
	if (a != b) {
		fprintf(stderr, "split changed the result: %016llx vs %016llx\n", (unsigned long long)a,
			(unsigned long long)b);
		abort();
	}

	/* the head parser alone, on exact-size memory */
	char *b2 = malloc(n ? n : 1);
	CHECK(b2);
	if (n)
		memcpy(b2, d, n);
	struct http1_head h;
	size_t hl = 0;
	int rc = http1_parse_head(data[0] & 1 ? HTTP1_RESPONSE : HTTP1_REQUEST, b2, n, &h, &hl);
	CHECK(rc == HTTP1_OK || rc == HTTP1_PARTIAL || rc == HTTP1_INVALID);
	if (rc == HTTP1_OK) {
		CHECK(hl > 0 && hl <= n);
		CHECK(b2[hl - 1] == '\n');
		/* the head alone parses the same; any shorter prefix is PARTIAL */
		size_t hl2 = 0;
		CHECK(http1_parse_head(data[0] & 1 ? HTTP1_RESPONSE : HTTP1_REQUEST, b2, hl, &h, &hl2) == HTTP1_OK);
		CHECK(hl2 == hl);
		CHECK(http1_parse_head(data[0] & 1 ? HTTP1_RESPONSE : HTTP1_REQUEST, b2, hl - 1, &h, &hl2) ==
		      HTTP1_PARTIAL);
		for (size_t i = 0; i < h.num_headers; i++) {
			CHECK(h.headers[i].name.p >= b2 && h.headers[i].name.p + h.headers[i].name.len <= b2 + hl);
			CHECK(h.headers[i].value.len == 0 ||
			      (h.headers[i].value.p >= b2 && h.headers[i].value.p + h.headers[i].value.len <= b2 + hl));
		}
	}
	free(b2);
	return 0;
}
