/* test_control.c — cmocka tests for user/control.c and the `phiwatch dump` client (user/cmd_dump.c, included
 * here: it is agent-only in the Makefile): round trips in a temporary directory, modes, bad, long, partial and
 * slow requests, the client limit, socket path conflicts, a non-root peer (forked child with setuid 65534, when
 * run as root), the CLI's requests and exit codes, and a real dump through the socket.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "control.h"
#include "forensics.h"
#include "history.h"
#include "log.h"
#include "phiwatch/events.h"

#include "cmd_dump.c"

struct fx {
	char dir[64];
	char path[128];
	struct control *c;
	/* what the handler saw and answers */
	int calls;
	char last_req[512];
	const char *answer;
	struct forensics *f;
	struct history *h;
};

static int setup(void **state)
{
	struct fx *x = calloc(1, sizeof(*x));

	snprintf(x->dir, sizeof(x->dir), "/tmp/test_control_XXXXXX");
	assert_non_null(mkdtemp(x->dir));
	snprintf(x->path, sizeof(x->path), "%s/run/control.sock", x->dir);
	x->c = control__new(x->path);
	assert_non_null(x->c);
	x->answer = "{\"ok\":true}";
	*state = x;
	return 0;
}

static int teardown(void **state)
{
	struct fx *x = *state;
	char cmd[128];

	control__free(x->c);
	forensics__free(x->f);
	history__free(x->h);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", x->dir);
	assert_int_equal(system(cmd), 0);
	free(x);
	return 0;
}

static void handler(void *ctx, const cJSON *req, struct jbuf *resp)
{
	struct fx *x = ctx;
	char *s = cJSON_PrintUnformatted(req);

	x->calls++;
	snprintf(x->last_req, sizeof(x->last_req), "%s", s);
	free(s);
	if (x->f) {
		forensics__handle_request(x->f, x->h, req, resp);
		return;
	}
	if (x->answer)
		jbuf_puts(resp, x->answer);
}

/* ---- a client in a thread while the test polls */

struct job {
	void *(*fn)(void *);
	struct fx *x;
	volatile int done;
	int rc;
	char err[256];
	struct jbuf resp;
	const char *send;
	size_t send_len;
	int argc;
	char *argv[12];
	unsigned delay_ms;
};

static void *request_fn(void *p)
{
	struct job *j = p;

	j->rc = control_request(j->x->path, j->send, &j->resp, j->err, sizeof(j->err));
	j->done = 1;
	return NULL;
}

static int connect_raw(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

static void read_all(int fd, struct jbuf *b)
{
	char buf[512];
	ssize_t r;

	while ((r = recv(fd, buf, sizeof(buf), 0)) > 0)
		jbuf_put(b, buf, (size_t)r);
}

/* Sends send[0..send_len) (in two halves delay_ms apart when set), half-closes, reads to EOF. */
static void *raw_fn(void *p)
{
	struct job *j = p;
	int fd = connect_raw(j->x->path);

	if (fd < 0) {
		j->rc = -errno;
		j->done = 1;
		return NULL;
	}
	if (j->delay_ms) {
		size_t h = j->send_len / 2;
		assert_int_equal(send(fd, j->send, h, MSG_NOSIGNAL), (ssize_t)h);
		usleep(j->delay_ms * 1000);
		assert_int_equal(send(fd, j->send + h, j->send_len - h, MSG_NOSIGNAL), (ssize_t)(j->send_len - h));
	} else {
		send(fd, j->send, j->send_len, MSG_NOSIGNAL);
	}
	shutdown(fd, SHUT_WR);
	read_all(fd, &j->resp);
	close(fd);
	j->done = 1;
	return NULL;
}

static void *cli_fn(void *p)
{
	struct job *j = p;

	j->rc = cmd_dump(j->argc, j->argv);
	j->done = 1;
	return NULL;
}

/* Runs j in a thread, polling the control socket until it is done (10 s at most). */
static void run_job(struct fx *x, struct job *j)
{
	pthread_t th;
	struct timespec t0, t;

	j->x = x;
	jbuf_init(&j->resp);
	assert_int_equal(pthread_create(&th, NULL, j->fn, j), 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (!j->done) {
		assert_true(control__poll(x->c, handler, x) >= 0);
		usleep(500);
		clock_gettime(CLOCK_MONOTONIC, &t);
		if (t.tv_sec - t0.tv_sec > 10)
			fail_msg("client did not finish");
	}
	pthread_join(th, NULL);
}

static void test_round_trip(void **state)
{
	struct fx *x = *state;
	struct job j = { .fn = request_fn, .send = "{\"cmd\":\"ping\",\"n\":1}" };
	struct control_stats st;
	struct stat s;
	char dir[128];

	/* modes: directory 0700, socket 0600 */
	snprintf(dir, sizeof(dir), "%s/run", x->dir);
	assert_int_equal(stat(dir, &s), 0);
	assert_int_equal(s.st_mode & 07777, 0700);
	assert_int_equal(lstat(x->path, &s), 0);
	assert_true(S_ISSOCK(s.st_mode));
	assert_int_equal(s.st_mode & 07777, 0600);
	assert_true(control__fd(x->c) >= 0);

	x->answer = "{\"ok\":true,\"echo\":\"pong\"}";
	run_job(x, &j);
	assert_int_equal(j.rc, 0);
	assert_string_equal(j.resp.p, "{\"ok\":true,\"echo\":\"pong\"}");
	assert_string_equal(x->last_req, "{\"cmd\":\"ping\",\"n\":1}");
	assert_int_equal(x->calls, 1);
	/* a handler that writes nothing */
	x->answer = NULL;
	jbuf_free(&j.resp);
	j.done = 0;
	run_job(x, &j);
	assert_int_equal(j.rc, 0);
	assert_string_equal(j.resp.p, "{\"ok\":false,\"error\":\"no response\"}");
	control__stats(x->c, &st);
	assert_int_equal(st.accepted, 2);
	assert_int_equal(st.handled, 2);
	jbuf_free(&j.resp);

	/* the client refuses multi-line requests itself; a missing agent is named */
	char err[256];
	struct jbuf r;
	jbuf_init(&r);
	assert_int_equal(control_request(x->path, "{}\n{}", &r, err, sizeof(err)), -EINVAL);
	assert_int_equal(control_request("/nonexistent/control.sock", "{}", &r, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "no agent is listening"));
	jbuf_free(&r);
}

static void test_bad_long_partial(void **state)
{
	struct fx *x = *state;
	static char longline[CONTROL_LINE_MAX + 100];
	struct control_stats st;
	struct job j = { .fn = raw_fn, .send = "not json\n", .send_len = 9 };

	run_job(x, &j);
	assert_string_equal(j.resp.p, "{\"ok\":false,\"error\":\"bad request: expected one JSON object on one line\"}\n");
	jbuf_free(&j.resp);

	memset(longline, 'a', sizeof(longline));
	j = (struct job){ .fn = raw_fn, .send = longline, .send_len = sizeof(longline) };
	run_job(x, &j);
	assert_string_equal(j.resp.p, "{\"ok\":false,\"error\":\"request too long\"}\n");
	jbuf_free(&j.resp);

	/* a line in two pieces 200 ms apart, and one without a newline before EOF */
	j = (struct job){ .fn = raw_fn, .send = "{\"cmd\":\"split\"}\n", .send_len = 16, .delay_ms = 200 };
	run_job(x, &j);
	assert_string_equal(j.resp.p, "{\"ok\":true}\n");
	assert_string_equal(x->last_req, "{\"cmd\":\"split\"}");
	jbuf_free(&j.resp);
	j = (struct job){ .fn = raw_fn, .send = "{\"cmd\":\"eof\"}", .send_len = 13 };
	run_job(x, &j);
	assert_string_equal(j.resp.p, "{\"ok\":true}\n");
	assert_string_equal(x->last_req, "{\"cmd\":\"eof\"}");
	jbuf_free(&j.resp);
	/* an array is not a request */
	j = (struct job){ .fn = raw_fn, .send = "[1]\n", .send_len = 4 };
	run_job(x, &j);
	assert_non_null(strstr(j.resp.p, "bad request"));
	jbuf_free(&j.resp);

	control__stats(x->c, &st);
	assert_int_equal(st.bad_requests, 3);
	assert_int_equal(st.handled, 2);
}

/* A client that connects and says nothing costs a slot for 2 s, never the agent; the ninth concurrent one is
 * turned away at once. */
static void test_slow_and_busy(void **state)
{
	struct fx *x = *state;
	int fds[CONTROL_MAX_CLIENTS + 1];
	struct control_stats st;
	struct jbuf b;
	struct timespec t0, t;

	for (int i = 0; i < CONTROL_MAX_CLIENTS + 1; i++) {
		fds[i] = connect_raw(x->path);
		assert_true(fds[i] >= 0);
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(control__poll(x->c, handler, x), 0);
	clock_gettime(CLOCK_MONOTONIC, &t);
	assert_true(t.tv_sec - t0.tv_sec < 1);       /* poll never waits */
	jbuf_init(&b);
	read_all(fds[CONTROL_MAX_CLIENTS], &b);
	assert_string_equal(b.p, "{\"ok\":false,\"error\":\"busy: too many control clients\"}\n");
	jbuf_free(&b);
	do {
		usleep(50000);
		control__poll(x->c, handler, x);
		clock_gettime(CLOCK_MONOTONIC, &t);
	} while ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 < CONTROL_READ_TIMEOUT_MS + 300);
	control__stats(x->c, &st);
	assert_int_equal(st.timeouts, CONTROL_MAX_CLIENTS);
	assert_int_equal(st.busy, 1);
	for (int i = 0; i < CONTROL_MAX_CLIENTS + 1; i++) {
		char c;
		assert_int_equal(recv(fds[i], &c, 1, 0), 0);   /* closed by the agent */
		close(fds[i]);
	}
	/* and the socket still serves */
	struct job j = { .fn = request_fn, .send = "{\"cmd\":\"after\"}" };
	run_job(x, &j);
	assert_int_equal(j.rc, 0);
	jbuf_free(&j.resp);
}

static void test_path_conflicts(void **state)
{
	struct fx *x = *state;
	char p[200];
	int fd;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	/* a live agent on the path */
	errno = 0;
	assert_null(control__new(x->path));
	assert_int_equal(errno, EADDRINUSE);
	/* a stale socket (its agent died) is replaced */
	snprintf(p, sizeof(p), "%s/run/stale.sock", x->dir);
	assert_true(strlen(p) < sizeof(sa.sun_path));
	memcpy(sa.sun_path, p, strlen(p) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(fd);
	struct control *c = control__new(p);
	assert_non_null(c);
	control__free(c);
	assert_int_equal(access(p, F_OK), -1);       /* unlinked on free */
	/* a regular file is never removed */
	FILE *f = fopen(p, "w");
	fclose(f);
	errno = 0;
	assert_null(control__new(p));
	assert_int_equal(errno, EEXIST);
	assert_int_equal(access(p, F_OK), 0);
	/* too long for sun_path */
	memset(p, 'a', sizeof(p) - 1);
	p[0] = '/';
	p[sizeof(p) - 1] = '\0';
	errno = 0;
	assert_null(control__new(p));
	assert_int_equal(errno, ENAMETOOLONG);
	control__free(NULL);
}

/* Forks a child that becomes uid 65534 and asks; returns its exit status: 0 answered "permission denied",
 * 10 + errno when connect failed. */
static int nobody_asks(struct fx *x)
{
	pid_t pid = fork();
	int st = 0;

	if (!pid) {
		if (setgid(65534) || setuid(65534))
			_exit(99);
		int fd = connect_raw(x->path);
		if (fd < 0)
			_exit(10 + errno);
		struct jbuf b;
		jbuf_init(&b);
		send(fd, "{\"cmd\":\"dump\",\"all\":true}\n", 26, MSG_NOSIGNAL);
		read_all(fd, &b);
		_exit(b.p && strstr(b.p, "permission denied") ? 0 : 1);
	}
	for (int i = 0; i < 5000; i++) {
		control__poll(x->c, handler, x);
		if (waitpid(pid, &st, WNOHANG) == pid)
			return WIFEXITED(st) ? WEXITSTATUS(st) : 98;
		usleep(1000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	return 97;
}

static void test_non_root_peer(void **state)
{
	struct fx *x = *state;
	struct control_stats st;
	char dir[128];

	if (geteuid() != 0) {
		skip();   /* setuid needs root; the peer check itself is exercised by the root run under `make test` */
		return;
	}
	/* as installed: the 0700 directory keeps others from even connecting */
	assert_int_equal(nobody_asks(x), 10 + EACCES);
	/* with the file modes opened up, SO_PEERCRED still refuses */
	snprintf(dir, sizeof(dir), "%s/run", x->dir);
	assert_int_equal(chmod(x->dir, 0755), 0);
	assert_int_equal(chmod(dir, 0755), 0);
	assert_int_equal(chmod(x->path, 0666), 0);
	assert_int_equal(nobody_asks(x), 0);
	control__stats(x->c, &st);
	assert_int_equal(st.refused_peer, 1);
	assert_int_equal(st.handled, 0);
	assert_int_equal(x->calls, 0);
}

static int cli(struct fx *x, const char *answer, const char *const *args)
{
	struct job j = { .fn = cli_fn };

	x->answer = answer;
	j.argv[j.argc++] = "dump";
	for (; *args; args++)
		j.argv[j.argc++] = (char *)*args;
	j.argv[j.argc++] = "--socket";
	j.argv[j.argc++] = x->path;
	j.argv[j.argc] = NULL;
	run_job(x, &j);
	jbuf_free(&j.resp);
	return j.rc;
}

static void test_cli(void **state)
{
	struct fx *x = *state;
	const char *ok = "{\"ok\":true,\"path\":\"/var/lib/phiwatch/forensics/phiwatch-x.tar.gz\",\"sha256\":\"ab\","
			 "\"transactions\":3}";

	const char *a1[] = { "--user", "alice", "--last", "10m", NULL };
	assert_int_equal(cli(x, ok, a1), 0);
	assert_string_equal(x->last_req, "{\"cmd\":\"dump\",\"user\":\"alice\",\"last_s\":600}");
	const char *a2[] = { "--pid", "4242", NULL };
	assert_int_equal(cli(x, ok, a2), 0);
	assert_string_equal(x->last_req, "{\"cmd\":\"dump\",\"pid\":4242}");
	const char *a3[] = { "--all", "--last", "90", "--json", NULL };
	assert_int_equal(cli(x, ok, a3), 0);
	assert_string_equal(x->last_req, "{\"cmd\":\"dump\",\"all\":true,\"last_s\":90}");
	const char *a4[] = { "--user", "u\"q", "--pid", "7", "--last", "2h", NULL };
	assert_int_equal(cli(x, ok, a4), 0);
	assert_string_equal(x->last_req, "{\"cmd\":\"dump\",\"user\":\"u\\\"q\",\"pid\":7,\"last_s\":7200}");
	/* the agent refuses: 1 */
	assert_int_equal(cli(x, "{\"ok\":false,\"error\":\"refused\"}", a2), 1);
	assert_int_equal(cli(x, "garbage", a2), 1);
	int calls = x->calls;
	/* usage errors: 2, nothing sent */
	const char *u1[] = { NULL };
	const char *u2[] = { "--all", "--user", "a", NULL };
	const char *u3[] = { "--pid", "0", NULL };
	const char *u4[] = { "--pid", "12x", NULL };
	const char *u5[] = { "--user", "a", "--last", "10y", NULL };
	const char *u6[] = { "--user", "a", "--last", "0", NULL };
	const char *u7[] = { "--user", "a", "extra", NULL };
	const char *u8[] = { "--decrypt", "x.aes", NULL };
	const char *const *usage_errors[] = { u1, u2, u3, u4, u5, u6, u7, u8 };
	for (size_t i = 0; i < sizeof(usage_errors) / sizeof(usage_errors[0]); i++)
		assert_int_equal(cli(x, ok, usage_errors[i]), 2);
	assert_int_equal(x->calls, calls);
	/* no agent: 1 */
	char *argv[] = { "dump", "--all", "--socket", "/nonexistent/sock", NULL };
	assert_int_equal(cmd_dump(4, argv), 1);
	assert_int_equal(parse_duration("1w"), 7 * 86400);
	assert_int_equal(parse_duration("99999999999999999999"), 0);
	assert_int_equal(parse_duration("-5"), 0);
}

/* The real thing: `phiwatch dump --pid P` through the socket into forensics. */
static void test_dump_through_socket(void **state)
{
	struct fx *x = *state;
	struct forensics_opts o;
	char err[256], dumps[128];
	struct txn t;
	const char *req = "GET /fhir/Patient/9 HTTP/1.1\r\nAuthorization: Bearer zq9XYZsecretTOKEN\r\n\r\n";
	struct history_bytes b = { req, strlen(req), NULL, 0 };

	snprintf(dumps, sizeof(dumps), "%s/forensics", x->dir);
	forensics_opts_default(&o);
	o.dir = dumps;
	x->f = forensics__new(&o, err, sizeof(err));
	assert_non_null(x->f);
	x->h = history__new(0);
	memset(&t, 0, sizeof(t));
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	t.ts_start = (uint64_t)ts.tv_sec * 1000000000ull;
	t.ts_end = t.ts_start + 1000;
	t.pid = 4242;
	snprintf(t.src_ip, sizeof(t.src_ip), "127.0.0.1");
	snprintf(t.dst_ip, sizeof(t.dst_ip), "127.0.0.1");
	t.src_port = 1234;
	t.dst_port = 8443;
	t.user = "alice";
	t.role = PW_ROLE_SERVER;
	assert_int_equal(history__add(x->h, &t, "{\"a\":1}", 7, &b), 0);

	const char *a[] = { "--pid", "4242", "--last", "1h", NULL };
	assert_int_equal(cli(x, NULL, a), 0);
	struct forensics_stats st;
	forensics__stats(x->f, &st);
	assert_int_equal(st.dumps, 1);
	const char *bad[] = { "--pid", "4242", "--user", "x", NULL };
	assert_int_equal(cli(x, NULL, bad), 0);       /* either: the pid's call */
	forensics__stats(x->f, &st);
	assert_int_equal(st.dumps, 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_long_partial, setup, teardown),
		cmocka_unit_test_setup_teardown(test_slow_and_busy, setup, teardown),
		cmocka_unit_test_setup_teardown(test_path_conflicts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_non_root_peer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cli, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dump_through_socket, setup, teardown),
	};
	log_level = LOG_LVL_ERROR;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
