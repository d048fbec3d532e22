/* test_json.c — the one escaper (every sink depends on it) and request-target splitting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>
#include <cjson/cJSON.h>

#include "json.h"
#include "txn.h"

static const char *esc(struct jbuf *b, const char *s, size_t n)
{
	jbuf_reset(b);
	json_escape(b, s, n);
	return b->len ? b->p : "";
}

static void test_escape_basic(void **state)
{
	(void)state;
	struct jbuf b;
	jbuf_init(&b);
	assert_string_equal(esc(&b, "plain /path?q=1", 15), "plain /path?q=1");
	assert_string_equal(esc(&b, "a\"b\\c", 5), "a\\\"b\\\\c");
	assert_string_equal(esc(&b, "\r\n\t", 3), "\\r\\n\\t");
	assert_string_equal(esc(&b, "\x01\x1f\x7f", 3), "\\u0001\\u001f\\u007f");
	assert_string_equal(esc(&b, "a\0b", 3), "a\\u0000b");
	jbuf_free(&b);
}

static void test_escape_utf8(void **state)
{
	(void)state;
	struct jbuf b;
	jbuf_init(&b);
	assert_string_equal(esc(&b, "caf\xc3\xa9", 5), "caf\xc3\xa9");          /* valid 2-byte */
	assert_string_equal(esc(&b, "\xe2\x82\xac", 3), "\xe2\x82\xac");        /* euro sign */
	assert_string_equal(esc(&b, "\xf0\x9f\x98\x80", 4), "\xf0\x9f\x98\x80"); /* 4-byte */
	assert_string_equal(esc(&b, "\xff", 1), "\\ufffd");
	assert_string_equal(esc(&b, "\xc0\xaf", 2), "\\ufffd\\ufffd");          /* overlong '/' */
	assert_string_equal(esc(&b, "\xed\xa0\x80", 3), "\\ufffd\\ufffd\\ufffd"); /* surrogate */
	assert_string_equal(esc(&b, "\xe2\x82", 2), "\\ufffd\\ufffd");          /* cut sequence */
	assert_string_equal(esc(&b, "\xf4\x90\x80\x80", 4), "\\ufffd\\ufffd\\ufffd\\ufffd"); /* > U+10FFFF */
	jbuf_free(&b);
}

/* Whatever the bytes, the output is one line that a JSON parser accepts
 * and decodes back to a string. */
static void test_escape_every_byte_parses(void **state)
{
	(void)state;
	struct jbuf b;
	char in[512];
	jbuf_init(&b);
	for (int i = 0; i < 256; i++) {
		in[2 * i] = (char)i;
		in[2 * i + 1] = (char)(255 - i);
	}
	jbuf_reset(&b);
	json_obj_open(&b, NULL);
	json_str(&b, "k", in, sizeof(in));
	json_obj_close(&b);
	assert_null(memchr(b.p, '\n', b.len));
	cJSON *j = cJSON_Parse(b.p);
	assert_non_null(j);
	assert_true(cJSON_IsString(cJSON_GetObjectItem(j, "k")));
	cJSON_Delete(j);
	jbuf_free(&b);
}

static void test_writer_shapes(void **state)
{
	(void)state;
	struct jbuf b;
	jbuf_init(&b);
	json_obj_open(&b, NULL);
	json_u64(&b, "a", 18446744073709551615ull);
	json_i64(&b, "b", -5);
	json_arr_open(&b, "c");
	json_cstr(&b, NULL, "x");
	json_cstr(&b, NULL, "y");
	json_arr_close(&b);
	json_obj_open(&b, "d");
	json_bool(&b, "e", true);
	json_obj_close(&b);
	json_obj_close(&b);
	assert_string_equal(b.p, "{\"a\":18446744073709551615,\"b\":-5,\"c\":[\"x\",\"y\"],\"d\":{\"e\":true}}");
	jbuf_free(&b);
}

static void test_time(void **state)
{
	(void)state;
	char t[40];
	json_time_rfc3339(t, sizeof(t), 1795861301123456789ull);
	assert_string_equal(t, "2026-11-28T10:21:41.123456Z");
}

static void split(const char *target, const char *want_path, const char *want_query)
{
	const char *p, *q;
	size_t pl, ql;
	bool hq;
	txn_split_target(target, strlen(target), &p, &pl, &q, &ql, &hq);
	assert_int_equal(pl, strlen(want_path));
	assert_memory_equal(p, want_path, pl);
	if (!want_query) {
		assert_false(hq);
	} else {
		assert_true(hq);
		assert_int_equal(ql, strlen(want_query));
		assert_memory_equal(q, want_query, ql);
	}
}

static void test_split_target(void **state)
{
	(void)state;
	split("/fhir/Patient/1", "/fhir/Patient/1", NULL);
	split("/fhir/Patient?_id=1,2", "/fhir/Patient", "_id=1,2");
	split("/x?", "/x", "");
	split("http://example.org/a/b?c=d", "/a/b", "c=d");
	split("http://example.org", "/", NULL);
	split("*", "*", NULL);
	split("", "", NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_escape_basic),
		cmocka_unit_test(test_escape_utf8),
		cmocka_unit_test(test_escape_every_byte_parses),
		cmocka_unit_test(test_writer_shapes),
		cmocka_unit_test(test_time),
		cmocka_unit_test(test_split_target),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
