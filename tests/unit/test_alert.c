/* test_alert.c — cmocka tests for user/alert.c: JSON shape, the syslog message (no PHI, one
 * line, escaped), hostile principals, and de-duplication with its "N more suppressed" record.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include <cjson/cJSON.h>

#include "alert.h"

#define SEC 1000000000ull
#define T0 (1764324000ull * SEC)   /* 2025-11-28T10:00:00Z */

static __attribute__((noinline)) bool contains(const char *hay, const char *needle)
{
	return strstr(hay, needle) != NULL;
}

static const char *evidence_with_patient =
	"{\"distinct_patients\":51,\"threshold\":50,\"window_s\":600,"
	"\"sample_endpoints\":[\"GET /fhir/Patient/pat-98765?_elements=name\"]}";

static struct alert sample(void)
{
	struct alert a = {
		.ts_ns = T0 + 123456789,
		.severity = ALERT_SEV_HIGH,
		.rule = "patient_enumeration",
		.principal = "alice",
		.pid = 4242,
		.message = "alice touched 51 distinct patients within 600 s, over the limit of 50",
		.evidence = evidence_with_patient,
		.count = 51,
		.threshold = 50,
		.window_s = 600,
	};
	return a;
}

static void test_json_shape(void **state)
{
	(void)state;
	struct alert a = sample();
	struct jbuf b;

	jbuf_init(&b);
	alert_to_json(&a, &b);
	assert_false(b.oom);
	assert_null(memchr(b.p, '\n', b.len));
	cJSON *j = cJSON_Parse(b.p);
	assert_non_null(j);
	assert_string_equal(cJSON_GetObjectItem(j, "@timestamp")->valuestring,
			    "2025-11-28T10:00:00.123456Z");
	cJSON *ev = cJSON_GetObjectItem(j, "event");
	assert_string_equal(cJSON_GetObjectItem(ev, "kind")->valuestring, "alert");
	assert_int_equal(cJSON_GetObjectItem(ev, "severity")->valueint, 3);
	assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "rule"), "name")->valuestring,
			    "patient_enumeration");
	assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "user"), "id")->valuestring,
			    "alice");
	assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "process"), "pid")->valueint,
			 4242);
	assert_true(contains(cJSON_GetObjectItem(j, "message")->valuestring, "51 distinct"));
	cJSON *evd = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "phiwatch"), "evidence");
	assert_true(cJSON_IsObject(evd));
	assert_int_equal(cJSON_GetObjectItem(evd, "distinct_patients")->valueint, 51);
	assert_true(cJSON_IsArray(cJSON_GetObjectItem(evd, "sample_endpoints")));
	cJSON_Delete(j);

	/* no evidence: an empty object, still valid */
	a.evidence = NULL;
	a.principal = NULL;
	jbuf_reset(&b);
	alert_to_json(&a, &b);
	j = cJSON_Parse(b.p);
	assert_non_null(j);
	assert_true(cJSON_IsObject(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "phiwatch"), "evidence")));
	assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "user"), "id")->valuestring, "-");
	cJSON_Delete(j);
	jbuf_free(&b);
}

static void test_syslog_no_phi(void **state)
{
	(void)state;
	struct alert a = sample();
	struct jbuf b;

	jbuf_init(&b);
	alert_to_syslog_msg(&a, &b);
	assert_false(contains(b.p, "pat-98765"));
	assert_false(contains(b.p, "/fhir"));
	assert_false(contains(b.p, "sample_endpoints"));
	assert_true(contains(b.p, "rule=patient_enumeration"));
	assert_true(contains(b.p, "user=\"alice\""));
	assert_true(contains(b.p, "count=51 threshold=50 window_s=600"));
	assert_true(contains(b.p, "severity=3"));
	assert_true(contains(b.p, ": alice touched 51 distinct patients"));
	jbuf_free(&b);
	assert_int_equal(alert_syslog_severity(ALERT_SEV_CRITICAL), LOG_CRIT);
	assert_int_equal(alert_syslog_severity(ALERT_SEV_HIGH), LOG_ERR);
	assert_int_equal(alert_syslog_severity(ALERT_SEV_MEDIUM), LOG_WARNING);
	assert_int_equal(alert_syslog_severity(ALERT_SEV_LOW), LOG_NOTICE);
}

static void test_hostile_principal(void **state)
{
	(void)state;
	const char *evil[] = {
		"bob\"},\"rule\":{\"name\":\"none\"},\"x\":{\"",
		"line1\nMar  1 00:00:00 host sshd[1]: Accepted password for root",
		"ctl\x01\x02\x1b[31m\x7f",
		"bad\xff\xfe utf8 \xc3\x28 \xed\xa0\x80",
		"back\\slash\\\"",
		"<13>Jan  1 00:00:00 forged[1]: x",
	};
	struct jbuf b;

	jbuf_init(&b);
	for (size_t i = 0; i < sizeof(evil) / sizeof(evil[0]); i++) {
		struct alert a = sample();
		char msg[256];
		snprintf(msg, sizeof(msg), "%s made 101 requests", evil[i]);
		a.principal = evil[i];
		a.message = msg;
		jbuf_reset(&b);
		alert_to_json(&a, &b);
		cJSON *j = cJSON_Parse(b.p);
		assert_non_null(j);
		/* still one record with the right rule */
		assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "rule"), "name")->valuestring,
				    "patient_enumeration");
		if (i == 0 || i == 4)
			assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "user"), "id")->valuestring,
					    evil[i]);
		cJSON_Delete(j);
		assert_null(memchr(b.p, '\n', b.len));

		jbuf_reset(&b);
		alert_to_syslog_msg(&a, &b);
		for (size_t k = 0; k < b.len; k++) {
			unsigned char c = (unsigned char)b.p[k];
			if (c < 0x20 || c == 0x7f)
				fail_msg("control byte 0x%02x in syslog message %zu", c, i);
		}
		/* the user= field cannot be closed early by the principal */
		const char *u = strstr(b.p, "user=\"");
		assert_non_null(u);
		const char *end = u + 6;
		while (*end && !(*end == '"' && end[-1] != '\\'))
			end++;
		assert_true(contains(end, "\" count=51"));
	}
	jbuf_free(&b);
}

/* ---- de-duplication ---- */

struct sums {
	size_t n;
	struct alert last;
	char msg[256];
	char principal[64];
	char ev[512];
};

static void sum_fn(void *ctx, const struct alert *a)
{
	struct sums *s = ctx;
	s->n++;
	s->last = *a;
	snprintf(s->msg, sizeof(s->msg), "%s", a->message);
	snprintf(s->principal, sizeof(s->principal), "%s", a->principal);
	snprintf(s->ev, sizeof(s->ev), "%s", a->evidence ? a->evidence : "");
	s->last.message = s->msg;
	s->last.principal = s->principal;
	s->last.evidence = s->ev;
}

static void test_dedup_window(void **state)
{
	(void)state;
	struct sums s = { 0 };
	struct alert_dedup *dd = alert_dedup__new(300 * SEC, 1000, 1, sum_fn, &s);
	assert_non_null(dd);

	assert_true(alert_dedup_admit(dd, "bulk_export", "alice", 3, 1, T0));
	for (int i = 1; i <= 17; i++)
		assert_false(alert_dedup_admit(dd, "bulk_export", "alice", 3, 1, T0 + (uint64_t)i * SEC));
	/* other rule, other principal: their own windows */
	assert_true(alert_dedup_admit(dd, "rate_limit_exceeded", "alice", 2, 1, T0));
	assert_true(alert_dedup_admit(dd, "bulk_export", "bob", 3, 1, T0));
	alert_dedup_tick(dd, T0 + 299 * SEC);
	assert_int_equal(s.n, 0);
	alert_dedup_tick(dd, T0 + 300 * SEC);
	assert_int_equal(s.n, 1);   /* windows with nothing suppressed end silently */
	assert_string_equal(s.last.rule, "bulk_export");
	assert_string_equal(s.last.principal, "alice");
	assert_int_equal(s.last.suppressed, 17);
	assert_int_equal(s.last.severity, 3);
	assert_int_equal(s.last.ts_ns, T0 + 300 * SEC);
	assert_true(contains(s.msg, "17 more suppressed in 300 s"));
	cJSON *j = cJSON_Parse(s.ev);
	assert_non_null(j);
	assert_int_equal(cJSON_GetObjectItem(j, "suppressed")->valueint, 17);
	assert_string_equal(cJSON_GetObjectItem(j, "last_suppressed")->valuestring,
			    "2025-11-28T10:00:17.000000Z");
	cJSON_Delete(j);
	/* after the window, the next one is admitted again */
	assert_true(alert_dedup_admit(dd, "bulk_export", "alice", 3, 1, T0 + 301 * SEC));
	struct alert_dedup_stats st;
	alert_dedup_stats(dd, &st);
	assert_int_equal(st.admitted, 4);
	assert_int_equal(st.suppressed, 17);
	assert_int_equal(st.summaries, 1);
	assert_int_equal(st.live, 1);
	alert_dedup__free(dd);
}

static void test_dedup_late_alert_closes_window(void **state)
{
	(void)state;
	struct sums s = { 0 };
	struct alert_dedup *dd = alert_dedup__new(300 * SEC, 1000, 1, sum_fn, &s);

	assert_true(alert_dedup_admit(dd, "auth_failures", "ip:1.2.3.4", 2, 0, T0));
	assert_false(alert_dedup_admit(dd, "auth_failures", "ip:1.2.3.4", 2, 0, T0 + SEC));
	/* no tick: the next alert past the end emits the summary first */
	assert_true(alert_dedup_admit(dd, "auth_failures", "ip:1.2.3.4", 2, 0, T0 + 500 * SEC));
	assert_int_equal(s.n, 1);
	assert_int_equal(s.last.suppressed, 1);
	alert_dedup__free(dd);
}

static void test_dedup_bounded(void **state)
{
	(void)state;
	struct sums s = { 0 };
	struct alert_dedup *dd = alert_dedup__new(300 * SEC, 4, 1, sum_fn, &s);
	char p[16];

	assert_true(alert_dedup_admit(dd, "r", "first", 2, 0, T0));
	assert_false(alert_dedup_admit(dd, "r", "first", 2, 0, T0 + SEC));
	for (int i = 0; i < 10; i++) {
		snprintf(p, sizeof(p), "p%d", i);
		assert_true(alert_dedup_admit(dd, "r", p, 2, 0, T0 + 2 * SEC));
	}
	struct alert_dedup_stats st;
	alert_dedup_stats(dd, &st);
	assert_int_equal(st.live, 4);
	assert_int_equal(st.forced, 7);
	/* "first" was closed early, its suppressed count reported */
	assert_int_equal(s.n, 1);
	assert_string_equal(s.last.principal, "first");
	assert_true(contains(s.msg, "1 more suppressed in 2 s"));
	alert_dedup__free(dd);
}

static void test_dedup_flush_and_many(void **state)
{
	(void)state;
	struct sums s = { 0 };
	struct alert_dedup *dd = alert_dedup__new(300 * SEC, 100000, 1, sum_fn, &s);
	char p[16];

	for (int i = 0; i < 5000; i++) {
		snprintf(p, sizeof(p), "u%d", i);
		assert_true(alert_dedup_admit(dd, "rate_limit_exceeded", p, 2, 0, T0));
		assert_false(alert_dedup_admit(dd, "rate_limit_exceeded", p, 2, 0, T0 + 10 * SEC));
	}
	alert_dedup_flush(dd);
	assert_int_equal(s.n, 5000);
	assert_true(contains(s.msg, "1 more suppressed in 10 s"));
	struct alert_dedup_stats st;
	alert_dedup_stats(dd, &st);
	assert_int_equal(st.live, 0);
	alert_dedup__free(dd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_json_shape),
		cmocka_unit_test(test_syslog_no_phi),
		cmocka_unit_test(test_hostile_principal),
		cmocka_unit_test(test_dedup_window),
		cmocka_unit_test(test_dedup_late_alert_closes_window),
		cmocka_unit_test(test_dedup_bounded),
		cmocka_unit_test(test_dedup_flush_and_many),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
