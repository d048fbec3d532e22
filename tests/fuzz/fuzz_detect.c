/* fuzz_detect.c — libFuzzer target for the detection engine: transactions built from the
 * input (hostile principals, targets, statuses, times going back and forth, ids) with small
 * thresholds; every alert must serialise to one line of valid JSON and a syslog message
 * without control bytes, and memory accounting returns to its start when all is freed.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "detect.h"
#include "phiwatch/events.h"

static struct jbuf jb;

static void check(void *ctx, const struct alert *a)
{
	(void)ctx;
	jbuf_reset(&jb);
	alert_to_json(a, &jb);
	if (jb.oom)
		return;
	if (memchr(jb.p, '\n', jb.len))
		abort();
	cJSON *j = cJSON_Parse(jb.p);
	if (!j)
		abort();
	cJSON_Delete(j);
	jbuf_reset(&jb);
	alert_to_syslog_msg(a, &jb);
	for (size_t i = 0; i < jb.len; i++)
		if ((unsigned char)jb.p[i] < 0x20)
			abort();
}

/* Takes a string of up to max bytes from the input (first byte: length). */
static size_t take(const uint8_t **d, size_t *n, char *out, size_t max)
{
	size_t l = *n ? (*d)[0] % max : 0;
	if (*n)
		(*d)++, (*n)--;
	if (l > *n)
		l = *n;
	memcpy(out, *d, l);
	out[l] = '\0';
	*d += l;
	*n -= l;
	return l;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct detect_opts o;
	detect_opts_default(&o);
	o.hash_seed = 1;
	o.max_principals = 16;
	o.max_suppress = 8;
	o.suppress_s = 2;
	o.rate.limit = 3;
	o.rate.window_s = 2;
	o.rate.not_enforced_min = 1;
	o.enumeration.max_patients = 2;
	o.enumeration.window_s = 3;
	o.bulk_export.count = 2;
	o.auth_failures.count = 2;
	o.anomaly.learn_minutes = 1;
	o.anomaly.floor_per_min = 2;
	o.anomaly.factor = 1.5;
	o.roles = 7;
	struct detect *d = detect__new(&o, check, NULL);
	if (!d)
		return 0;
	uint64_t ts = 1764324000ull * 1000000000ull;
	char user[40], target[200], ids[4][24], rt[16];
	while (size >= 8) {
		struct txn t;
		memset(&t, 0, sizeof(t));
		uint8_t f = data[0], g = data[1];
		/* time moves mostly forward, sometimes back */
		int64_t step = ((int64_t)data[2] - 64) * 37 * 1000000ll;
		ts = (uint64_t)((int64_t)ts + step);
		data += 3;
		size -= 3;
		take(&data, &size, user, sizeof(user));
		t.target_len = take(&data, &size, target, sizeof(target));
		t.ts_start = ts;
		t.comm = "f";
		t.exe = "";
		t.pid = f;
		snprintf(t.src_ip, sizeof(t.src_ip), "%s", g & 1 ? "127.0.0.1" : "10.0.0.9");
		snprintf(t.dst_ip, sizeof(t.dst_ip), "10.0.0.1");
		snprintf(t.method, sizeof(t.method), "GET");
		t.target = target;
		static const int st[] = { 200, 202, 401, 403, 429, 500, 0, 204 };
		t.status = st[f & 7];
		t.role = (f >> 3) % 3;
		t.tls = g & 2;
		t.user = user[0] ? user : "-";
		t.auth = g & 4 ? "basic" : "bearer";
		t.jwt = g & 8;
		t.jwt_has_iat = g & 16;
		t.jwt_has_exp = g & 32;
		t.jwt_iat = (int64_t)f << 56;
		t.jwt_exp = -(int64_t)g << 40;
		t.resp_bytes = (uint64_t)f << 18;
		t.ssn_count = g & 64 ? 1 : 0;
		snprintf(t.ssn_masked, sizeof(t.ssn_masked), "***-**-1234");
		size_t nids = (f >> 5) & 3;
		for (size_t i = 0; i < nids; i++) {
			take(&data, &size, ids[i], sizeof(ids[i]));
			t.resource_ids[i] = ids[i];
		}
		t.n_resource_ids = nids;
		if (g & 128) {
			take(&data, &size, rt, sizeof(rt));
			t.resource_type = rt;
		}
		detect__txn(d, &t);
		if ((f & 15) == 3) {
			uint64_t drops[2] = { g, f };
			detect__drops(d, ts, drops, 2, NULL);
		}
		if ((f & 15) == 5)
			detect__tick(d, ts + (uint64_t)g * 100000000ull);
	}
	detect__flush(d);
	detect__free(d);
	return 0;
}
