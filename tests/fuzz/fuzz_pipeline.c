/* fuzz_pipeline.c — the capture-record decoder and everything behind it (what `replay` reads).
 * Input: records, each preceded by a 2-byte little-endian length; lengths are
 * taken as given (lying sizes are the point). Invariants after the run: every
 * transaction was counted once, bad records were counted, not fatal.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline.h"

#define CHECK(x) do { if (!(x)) abort(); } while (0)

static uint64_t seen;

static void on_txn(void *ctx, const struct txn *t)
{
	(void)ctx;
	CHECK(t->method[TXN_METHOD_MAX - 1] == '\0');
	CHECK(t->ts_end >= t->ts_start);
	CHECK(t->target_len == 0 || t->target);
	seen++;
}

static void on_alert(void *ctx, const struct alert *a)
{
	(void)ctx;
	CHECK(a->rule && a->message);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct identity_opts io;
	identity_opts_default(&io);
	io.cache_entries = 64; /* the default cache is preallocated: too slow per input */
	struct pipeline_opts o = { .on_txn = on_txn, .on_alert = on_alert, .identity = &io };
	pipeline_default_limits(&o.limits);
	o.limits.max_conns = 8;
	o.limits.pipeline_max = 4;
	struct pipeline *p = pipeline__new(&o);
	unsigned char buf[65536 + 64] __attribute__((aligned(8)));
	uint64_t bad_expected = 0;

	seen = 0;
	CHECK(p);
	while (size >= 2) {
		size_t n = data[0] | (size_t)data[1] << 8;
		data += 2;
		size -= 2;
		if (n > size)
			n = size;
		memcpy(buf, data, n);
		if (pipeline__feed(p, buf, n) != 0)
			bad_expected++;
		data += n;
		size -= n;
	}
	pipeline__finish(p);
	struct pipeline_stats st;
	pipeline__stats(p, &st);
	CHECK(st.transactions == seen);
	CHECK(st.bad_records == bad_expected);
	CHECK(st.conn.conns_live == 0);
	pipeline__free(p);
	return 0;
}
