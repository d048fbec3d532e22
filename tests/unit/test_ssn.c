/* test_ssn.c — cmocka tests for user/ssn.c: every case fed whole, byte by byte and split at
 * every offset; boundaries; SSA validity; the masked form never holds the value.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "ssn.h"

struct result {
	uint32_t count;
	uint64_t first;
	char masked[SSN_MASKED_LEN];
};

static struct result scan_whole(const char *s, size_t n)
{
	struct ssn_scan sc;
	struct result r;
	ssn_scan_init(&sc);
	ssn_scan_feed(&sc, s, n);
	ssn_scan_finish(&sc);
	r.count = sc.count;
	r.first = sc.first_offset;
	memcpy(r.masked, sc.masked, sizeof(r.masked));
	return r;
}

/* Whole, byte by byte, and in two pieces split at every offset: all agree. */
static struct result scan_all_ways(const char *s)
{
	size_t n = strlen(s);
	struct result w = scan_whole(s, n);
	struct ssn_scan sc;

	ssn_scan_init(&sc);
	for (size_t i = 0; i < n; i++)
		ssn_scan_feed(&sc, s + i, 1);
	ssn_scan_finish(&sc);
	assert_int_equal(sc.count, w.count);
	assert_int_equal(sc.first_offset, w.first);
	assert_string_equal(sc.masked, w.masked);
	for (size_t cut = 0; cut <= n; cut++) {
		ssn_scan_init(&sc);
		ssn_scan_feed(&sc, s, cut);
		ssn_scan_feed(&sc, "", 0);
		ssn_scan_feed(&sc, s + cut, n - cut);
		ssn_scan_finish(&sc);
		assert_int_equal(sc.count, w.count);
		assert_int_equal(sc.first_offset, w.first);
		assert_string_equal(sc.masked, w.masked);
	}
	/* three pieces */
	for (size_t a = 0; a <= n; a += 3)
		for (size_t b = a; b <= n; b += 2) {
			ssn_scan_init(&sc);
			ssn_scan_feed(&sc, s, a);
			ssn_scan_feed(&sc, s + a, b - a);
			ssn_scan_feed(&sc, s + b, n - b);
			ssn_scan_finish(&sc);
			assert_int_equal(sc.count, w.count);
			assert_int_equal(sc.first_offset, w.first);
		}
	return w;
}

static void test_basic_match(void **state)
{
	(void)state;
	struct result r = scan_all_ways("{\"name\":\"A\",\"ssn\":\"123-45-6789\"}");
	assert_int_equal(r.count, 1);
	assert_int_equal(r.first, 19);
	assert_string_equal(r.masked, "***-**-6789");
}

static void test_several(void **state)
{
	(void)state;
	struct result r = scan_all_ways("a 078-05-1120, b 219-09-9999; c (321-54-9876)\n"
					 "d\t555-12-0001");
	assert_int_equal(r.count, 4);
	assert_int_equal(r.first, 2);
	assert_string_equal(r.masked, "***-**-1120");
}

static void test_at_edges(void **state)
{
	(void)state;
	struct result r = scan_all_ways("123-45-6789");
	assert_int_equal(r.count, 1);
	assert_int_equal(r.first, 0);
	r = scan_all_ways("123-45-6789 587-65-4321");
	assert_int_equal(r.count, 2);
	r = scan_all_ways("x:123-45-6789");
	assert_int_equal(r.count, 1);
	assert_int_equal(r.first, 2);
}

static void test_boundaries(void **state)
{
	(void)state;
	/* parts of longer words or numbers are not SSNs */
	const char *no[] = {
		"a123-45-6789", "123-45-67890", "1123-45-6789", "123-45-6789-1", "_123-45-6789",
		"123-45-6789x", "9-123-45-6789", "123-45-6789_", "12-345-6789", "123-456-789",
		"123456789", "123 45 6789", "123-4-56789", "1234-5-6789", "123--45-6789",
		"123-45-678", "", "-", "123-45-",
	};
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
		struct result r = scan_all_ways(no[i]);
		if (r.count)
			fail_msg("matched \"%s\"", no[i]);
		assert_string_equal(r.masked, "");
	}
	const char *yes[] = {
		"(123-45-6789)", "\"123-45-6789\"", "ssn=123-45-6789&x", "<td>123-45-6789</td>",
		"123-45-6789.", "#123-45-6789,", "\xc3\xa9 123-45-6789 \xc3\xa9",
	};
	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		struct result r = scan_all_ways(yes[i]);
		if (r.count != 1)
			fail_msg("did not match \"%s\"", yes[i]);
	}
}

static void test_ssa_rules(void **state)
{
	(void)state;
	const char *invalid[] = { "000-12-3456", "666-12-3456", "900-12-3456", "950-12-3456",
				  "999-12-3456", "123-00-4567", "123-45-0000" };
	for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
		struct result r = scan_all_ways(invalid[i]);
		if (r.count)
			fail_msg("accepted %s", invalid[i]);
	}
	const char *valid[] = { "001-01-0001", "665-99-9999", "667-12-3456", "899-12-3456" };
	for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
		struct result r = scan_all_ways(valid[i]);
		if (r.count != 1)
			fail_msg("rejected %s", valid[i]);
	}
	/* an invalid value first does not become "first" */
	struct result r = scan_all_ways("000-12-3456 and 234-56-7890");
	assert_int_equal(r.count, 1);
	assert_int_equal(r.first, 16);
	assert_string_equal(r.masked, "***-**-7890");
}

static void test_masked_never_holds_value(void **state)
{
	(void)state;
	const char *v = "587-21-4403";
	char body[64];
	struct ssn_scan sc;

	snprintf(body, sizeof(body), "ssn: %s", v);
	ssn_scan_init(&sc);
	ssn_scan_feed(&sc, body, strlen(body));
	ssn_scan_finish(&sc);
	assert_int_equal(sc.count, 1);
	assert_string_equal(sc.masked, "***-**-4403");
	assert_null(strstr(sc.masked, "587"));
	assert_null(strstr(sc.masked, "21-"));
	/* nothing of the area or group is left in the scanner once decided */
	assert_int_equal(sc.area, 0);
	assert_int_equal(sc.group, 0);
	assert_null(memmem(&sc, sizeof(sc), "587", 3));
	assert_null(memmem(&sc, sizeof(sc), v, strlen(v)));
}

static void test_large_stream(void **state)
{
	(void)state;
	/* a 1 MiB body in odd-sized chunks with an SSN every 1000 bytes */
	static char body[1 << 20];
	struct ssn_scan sc;
	size_t expect = 0;

	memset(body, 'x', sizeof(body));
	for (size_t off = 500; off + 20 < sizeof(body); off += 1000) {
		memcpy(body + off, " 234-56-7890 ", 13);
		expect++;
	}
	ssn_scan_init(&sc);
	for (size_t off = 0, step = 1; off < sizeof(body); off += step, step = step * 7 % 4093 + 1) {
		size_t n = sizeof(body) - off < step ? sizeof(body) - off : step;
		ssn_scan_feed(&sc, body + off, n);
	}
	ssn_scan_finish(&sc);
	assert_int_equal(sc.count, expect);
	assert_int_equal(sc.first_offset, 501);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_basic_match),
		cmocka_unit_test(test_several),
		cmocka_unit_test(test_at_edges),
		cmocka_unit_test(test_boundaries),
		cmocka_unit_test(test_ssa_rules),
		cmocka_unit_test(test_masked_never_holds_value),
		cmocka_unit_test(test_large_stream),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
