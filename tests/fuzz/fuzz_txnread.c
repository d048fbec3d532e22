/* fuzz_txnread.c — the transactions-JSONL reader: a line that parses writes back as one valid JSON line. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "txn_read.h"

#define CHECK(x) do { if (!(x)) abort(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct resource_ctx *rc;
	static struct txn_owned o;
	char err[256];

	if (!rc) {
		struct resource_opts ro;
		resource_opts_default(&ro);
		rc = resource__new(&ro, err, sizeof(err));
	}
	if (txn_read_json((const char *)data, size, rc, &o, err, sizeof(err)) != 0) {
		CHECK(err[0]);
		return 0;
	}
	CHECK(o.t.n_resource_ids <= TXN_MAX_IDS);
	CHECK(o.t.ts_end >= o.t.ts_start);
	struct jbuf b;
	jbuf_init(&b);
	txn_to_json(&o.t, &b);
	CHECK(!b.oom && b.len > 0);
	CHECK(memchr(b.p, '\n', b.len) == NULL);
	cJSON *j = cJSON_ParseWithLength(b.p, b.len);
	CHECK(j && cJSON_IsObject(j));
	cJSON_Delete(j);
	jbuf_free(&b);
	return 0;
}
