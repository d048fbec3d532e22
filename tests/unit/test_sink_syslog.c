/* test_sink_syslog.c — cmocka tests for user/sink_syslog.c against our own unix sockets:
 * RFC 3164 header, facility/severity, datagram and stream (newline / octet framing),
 * daemon absent then present, daemon restart, truncation.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "sink_syslog.h"

#define SEC 1000000000ull
#define T0 (1764324000ull * SEC)   /* 2025-11-28T10:00:00Z */

static char dir[64], path[96];

static int setup(void **state)
{
	(void)state;
	setenv("TZ", "UTC", 1);
	tzset();
	snprintf(dir, sizeof(dir), "/tmp/pw-syslog-XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	snprintf(path, sizeof(path), "%s/log", dir);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	unlink(path);
	rmdir(dir);
	return 0;
}

static int server(int type)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, type, 0);
	assert_true(fd >= 0);
	unlink(path);
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	if (type == SOCK_STREAM)
		assert_int_equal(listen(fd, 4), 0);
	struct timeval tv = { .tv_sec = 2 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

static ssize_t recv_one(int fd, char *buf, size_t cap)
{
	ssize_t n = recv(fd, buf, cap - 1, 0);
	assert_true(n > 0);
	buf[n] = '\0';
	return n;
}

static struct alert sample(void)
{
	struct alert a = {
		.ts_ns = T0 + 5 * SEC,
		.severity = ALERT_SEV_HIGH,
		.rule = "bulk_export",
		.principal = "alice",
		.pid = 99,
		.message = "alice made 3 exports within 3600 s (threshold 3), the last a fhir_export",
		.evidence = "{\"sample_endpoints\":[\"GET /fhir/Patient/123/$export\"]}",
		.count = 3,
		.threshold = 3,
		.window_s = 3600,
	};
	return a;
}

static void test_dgram_format(void **state)
{
	(void)state;
	int srv = server(SOCK_DGRAM);
	struct sink_syslog_opts o = { .path = path, .facility = -1, .pid = 1234 };
	struct sink_syslog *s = sink_syslog__new(&o);
	char buf[4096];
	assert_non_null(s);
	struct alert a = sample();
	sink_syslog_alert(s, &a);
	recv_one(srv, buf, sizeof(buf));
	/* authpriv (10) * 8 + LOG_ERR (3) = 83 */
	assert_string_equal(buf,
			    "<83>Nov 28 10:00:05 phiwatch[1234]: alert rule=bulk_export severity=3 "
			    "user=\"alice\" count=3 threshold=3 window_s=3600: alice made 3 exports "
			    "within 3600 s (threshold 3), the last a fhir_export");
	assert_null(strstr(buf, "/fhir"));
	struct sink_syslog_stats st;
	sink_syslog_stats(s, &st);
	assert_int_equal(st.sent, 1);
	assert_false(st.stream);
	sink_syslog__free(s);
	close(srv);
}

static void test_facility_and_day_padding(void **state)
{
	(void)state;
	int srv = server(SOCK_DGRAM);
	struct sink_syslog_opts o = { .path = path, .facility = sink_syslog_facility("local3"),
				      .pid = 7, .ident = "pw" };
	struct sink_syslog *s = sink_syslog__new(&o);
	char buf[512];
	assert_int_equal(sink_syslog_send(s, LOG_CRIT, 1767225600ull * SEC + 3 * 86400 * SEC, "hi", 2), 0);
	recv_one(srv, buf, sizeof(buf));
	assert_string_equal(buf, "<154>Jan  4 00:00:00 pw[7]: hi");
	assert_int_equal(sink_syslog_facility("authpriv"), LOG_AUTHPRIV);
	assert_int_equal(sink_syslog_facility("kern"), -EINVAL);
	assert_int_equal(sink_syslog_facility(NULL), -EINVAL);
	sink_syslog__free(s);
	close(srv);
}

static void test_absent_then_present(void **state)
{
	(void)state;
	struct sink_syslog_opts o = { .path = path, .facility = -1, .pid = 1, .retry_ms = 0 };
	struct sink_syslog *s = sink_syslog__new(&o);
	struct sink_syslog_stats st;
	char buf[512];

	assert_non_null(s);   /* no daemon is not an error at start */
	assert_true(sink_syslog_send(s, LOG_ERR, T0, "lost", 4) < 0);
	sink_syslog_stats(s, &st);
	assert_int_equal(st.dropped, 1);
	assert_false(st.connected);
	int srv = server(SOCK_DGRAM);
	assert_int_equal(sink_syslog_send(s, LOG_ERR, T0, "found", 5), 0);
	recv_one(srv, buf, sizeof(buf));
	assert_non_null(strstr(buf, ": found"));
	/* the daemon restarts: a new socket at the same path */
	close(srv);
	srv = server(SOCK_DGRAM);
	assert_int_equal(sink_syslog_send(s, LOG_ERR, T0, "again", 5), 0);
	recv_one(srv, buf, sizeof(buf));
	assert_non_null(strstr(buf, ": again"));
	sink_syslog_stats(s, &st);
	assert_int_equal(st.sent, 2);
	assert_int_equal(st.connects, 2);
	sink_syslog__free(s);
	close(srv);
}

static void test_retry_backoff(void **state)
{
	(void)state;
	struct sink_syslog_opts o = { .path = path, .facility = -1, .pid = 1, .retry_ms = 60000 };
	struct sink_syslog *s = sink_syslog__new(&o);
	int srv = server(SOCK_DGRAM);
	/* the failed connect at start holds off the next attempt: dropped, counted */
	assert_true(sink_syslog_send(s, LOG_ERR, T0, "x", 1) < 0);
	struct sink_syslog_stats st;
	sink_syslog_stats(s, &st);
	assert_int_equal(st.dropped, 1);
	sink_syslog__free(s);
	close(srv);
}

static void test_stream_newline(void **state)
{
	(void)state;
	int srv = server(SOCK_STREAM);
	struct sink_syslog_opts o = { .path = path, .facility = -1, .pid = 5 };
	struct sink_syslog *s = sink_syslog__new(&o);
	char buf[512];
	assert_int_equal(sink_syslog_send(s, LOG_WARNING, T0, "one", 3), 0);
	assert_int_equal(sink_syslog_send(s, LOG_WARNING, T0, "two", 3), 0);
	int c = accept(srv, NULL, NULL);
	assert_true(c >= 0);
	struct timeval tv = { .tv_sec = 2 };
	setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	size_t got = 0;
	while (got < 2 * strlen("<84>Nov 28 10:00:00 phiwatch[5]: one\n")) {
		ssize_t n = recv(c, buf + got, sizeof(buf) - 1 - got, 0);
		assert_true(n > 0);
		got += (size_t)n;
	}
	buf[got] = '\0';
	assert_string_equal(buf, "<84>Nov 28 10:00:00 phiwatch[5]: one\n"
				 "<84>Nov 28 10:00:00 phiwatch[5]: two\n");
	struct sink_syslog_stats st;
	sink_syslog_stats(s, &st);
	assert_true(st.stream);
	sink_syslog__free(s);
	close(c);
	close(srv);
}

static void test_stream_octet(void **state)
{
	(void)state;
	int srv = server(SOCK_STREAM);
	struct sink_syslog_opts o = { .path = path, .facility = -1, .pid = 5,
				      .framing = SINK_SYSLOG_FRAME_OCTET };
	struct sink_syslog *s = sink_syslog__new(&o);
	char buf[512];
	assert_int_equal(sink_syslog_send(s, LOG_WARNING, T0, "one", 3), 0);
	int c = accept(srv, NULL, NULL);
	const char *want = "36 <84>Nov 28 10:00:00 phiwatch[5]: one";
	size_t got = 0;
	while (got < strlen(want)) {
		ssize_t n = recv(c, buf + got, sizeof(buf) - 1 - got, 0);
		assert_true(n > 0);
		got += (size_t)n;
	}
	buf[got] = '\0';
	assert_string_equal(buf, want);
	sink_syslog__free(s);
	close(c);
	close(srv);
}

static void test_truncation(void **state)
{
	(void)state;
	int srv = server(SOCK_DGRAM);
	struct sink_syslog_opts o = { .path = path, .facility = -1, .pid = 5, .max_msg = 100 };
	struct sink_syslog *s = sink_syslog__new(&o);
	char msg[400], buf[512];
	/* 2-byte UTF-8 characters: the cut must not split one */
	for (size_t i = 0; i + 1 < sizeof(msg); i += 2) {
		msg[i] = (char)0xc3;
		msg[i + 1] = (char)0xa9;
	}
	assert_int_equal(sink_syslog_send(s, LOG_ERR, T0, msg, sizeof(msg) - 1 - 1), 0);
	ssize_t n = recv_one(srv, buf, sizeof(buf));
	assert_true(n <= 100);
	const char *body = strstr(buf, "]: ") + 3;
	assert_int_equal((buf + n - body) % 2, 0);
	struct sink_syslog_stats st;
	sink_syslog_stats(s, &st);
	assert_int_equal(st.truncated, 1);
	sink_syslog__free(s);
	close(srv);
}

static void test_bad_opts(void **state)
{
	(void)state;
	char longp[200];
	memset(longp, 'a', sizeof(longp) - 1);
	longp[sizeof(longp) - 1] = '\0';
	struct sink_syslog_opts o = { .path = longp, .facility = -1 };
	errno = 0;
	assert_null(sink_syslog__new(&o));
	assert_int_equal(errno, EINVAL);
	o.path = "";
	assert_null(sink_syslog__new(&o));
	sink_syslog__free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_dgram_format, setup, teardown),
		cmocka_unit_test_setup_teardown(test_facility_and_day_padding, setup, teardown),
		cmocka_unit_test_setup_teardown(test_absent_then_present, setup, teardown),
		cmocka_unit_test_setup_teardown(test_retry_backoff, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stream_newline, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stream_octet, setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_opts, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
