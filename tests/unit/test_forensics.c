/* test_forensics.c — cmocka tests for user/forensics.c: a dump is a valid .tar.gz (read back by tar and zlib)
 * with the three members, modes 0600/0700, a manifest describing live and exited processes and their
 * connections, the history's JSONL verbatim, a pcap tshark reads, no raw secret anywhere, and the SHA-256 of
 * the file; alert dumps honour min_severity and the per-(rule, principal) rate limit (an alert storm), the
 * total size cap refuses and counts, encryption round-trips and detects tampering, control requests validate.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <openssl/evp.h>
#include <zlib.h>

#include "forensics.h"
#include "history.h"
#include "phiwatch/events.h"

#define SEC 1000000000ull

static const char *SECRET = "zq9XYZsecretTOKEN";

struct fx {
	char dir[64];
	char dumps[160];
	struct history *h;
	uint32_t me;             /* this process: alive */
	uint32_t dead;           /* a reaped child: exited */
	uint64_t t0;
	int proc_calls;
	int dumped;
	struct forensics_dump_info last;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * SEC + (uint64_t)ts.tv_nsec;
}

static void add(struct fx *x, uint64_t i, const char *user, uint32_t pid, const char *src, uint16_t sport)
{
	struct txn t;
	char json[256], req[512];
	const char *resp = "HTTP/1.1 200 OK\r\nSet-Cookie: s=zq9XYZsecretTOKEN\r\nContent-Length: 2\r\n\r\n{}";

	memset(&t, 0, sizeof(t));
	t.ts_start = x->t0 + i * SEC;
	t.ts_end = t.ts_start + 2000000;
	t.sequence = i;
	t.pid = pid;
	t.comm = pid == x->dead ? "gone" : "test_forensics";
	t.exe = pid == x->dead ? "/usr/bin/gone" : "";
	snprintf(t.src_ip, sizeof(t.src_ip), "%s", src);
	t.src_port = sport;
	snprintf(t.dst_ip, sizeof(t.dst_ip), "127.0.0.1");
	t.dst_port = 8443;
	t.tls = true;
	t.role = PW_ROLE_SERVER;
	t.user = user;
	t.status = 200;
	int rl = snprintf(req, sizeof(req), "GET /fhir/Patient/%llu HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer %s\r\n\r\n",
			  (unsigned long long)i, SECRET);
	t.req_bytes = (uint64_t)rl;
	t.resp_bytes = strlen(resp);
	int jl = snprintf(json, sizeof(json), "{\"event\":{\"sequence\":%llu},\"user\":{\"id\":\"%s\"}}",
			  (unsigned long long)i, user);
	struct history_bytes b = { req, (size_t)rl, resp, strlen(resp) };
	assert_int_equal(history__add(x->h, &t, json, (size_t)jl, &b), 0);
}

static void proc_info(void *ctx, uint32_t pid, struct forensics_proc_tls *out)
{
	struct fx *x = ctx;

	x->proc_calls++;
	if (pid == x->me) {
		out->known = true;
		out->instrumented = true;
		snprintf(out->libssl, sizeof(out->libssl), "/usr/lib/x86_64-linux-gnu/libssl.so.3");
	}
}

static void on_dump(void *ctx, const struct forensics_trigger *t, const struct forensics_dump_info *d)
{
	struct fx *x = ctx;

	(void)t;
	x->dumped++;
	x->last = *d;
}

static int setup(void **state)
{
	struct fx *x = calloc(1, sizeof(*x));
	pid_t c;

	snprintf(x->dir, sizeof(x->dir), "/tmp/test_forensics_XXXXXX");
	assert_non_null(mkdtemp(x->dir));
	snprintf(x->dumps, sizeof(x->dumps), "%s/state/forensics", x->dir);
	x->h = history__new(1 << 20);
	x->me = (uint32_t)getpid();
	c = fork();
	if (!c)
		_exit(0);
	waitpid(c, NULL, 0);
	x->dead = (uint32_t)c;
	x->t0 = now_ns() - 100 * SEC;
	/* alice from two connections of this process; bob from the exited one; an anonymous client */
	add(x, 1, "alice", x->me, "127.0.0.1", 50001);
	add(x, 2, "alice", x->me, "127.0.0.1", 50001);
	add(x, 3, "bob", x->dead, "127.0.0.2", 50002);
	add(x, 4, "alice", x->me, "127.0.0.1", 50003);
	add(x, 5, "-", x->dead, "127.0.0.9", 50004);
	*state = x;
	return 0;
}

static int teardown(void **state)
{
	struct fx *x = *state;
	char cmd[128];

	history__free(x->h);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", x->dir);
	assert_int_equal(system(cmd), 0);
	free(x);
	return 0;
}

static struct forensics *mk(struct fx *x, uint64_t cap, const uint8_t *key)
{
	struct forensics_opts o;
	char err[256];
	struct forensics *f;

	forensics_opts_default(&o);
	o.dir = x->dumps;
	o.agent_version = "9.9.9-test";
	o.proc_info = proc_info;
	o.proc_ctx = x;
	o.on_dump = on_dump;
	o.dump_ctx = x;
	o.enc_key = key;
	if (cap)
		o.max_total_bytes = cap;
	f = forensics__new(&o, err, sizeof(err));
	if (!f)
		fail_msg("forensics__new: %s", err);
	return f;
}

/* The whole decompressed archive. */
static char *gunzip(const char *path, size_t *n)
{
	gzFile g = gzopen(path, "rb");
	size_t cap = 1 << 16, len = 0;
	char *p = malloc(cap);
	int r;

	assert_non_null(g);
	while ((r = gzread(g, p + len, (unsigned)(cap - len))) > 0) {
		len += (size_t)r;
		if (len == cap)
			p = realloc(p, cap *= 2);
	}
	assert_int_equal(r, 0);
	gzclose(g);
	*n = len;
	return p;
}

static char *slurp(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	char *p;
	long l;

	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	l = ftell(f);
	fseek(f, 0, SEEK_SET);
	p = malloc((size_t)l + 1);
	assert_int_equal(fread(p, 1, (size_t)l, f), (size_t)l);
	p[l] = '\0';
	fclose(f);
	*n = (size_t)l;
	return p;
}

static void file_sha(const char *path, uint8_t out[32])
{
	size_t n;
	char *p = slurp(path, &n);
	unsigned l;

	EVP_Digest(p, n, out, &l, EVP_sha256(), NULL);
	free(p);
}

static int count_dumps(const char *dir, int *tmp)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;

	*tmp = 0;
	assert_non_null(d);
	while ((de = readdir(d))) {
		if (!strncmp(de->d_name, "phiwatch-", 9))
			n++;
		if (!strncmp(de->d_name, ".tmp-", 5))
			(*tmp)++;
	}
	closedir(d);
	return n;
}

static void run(const char *cmd)
{
	if (system(cmd) != 0)
		fail_msg("command failed: %s", cmd);
}

static cJSON *find_process(cJSON *m, uint32_t pid)
{
	cJSON *p;

	cJSON_ArrayForEach(p, cJSON_GetObjectItem(m, "processes"))
		if (cJSON_GetObjectItem(p, "pid")->valuedouble == pid)
			return p;
	return NULL;
}

static void test_dump_contents(void **state)
{
	struct fx *x = *state;
	struct forensics *f = mk(x, 0, NULL);
	struct forensics_trigger t = { .kind = FORENSICS_TRIGGER_REQUEST, .request_json = "{\"cmd\":\"dump\",\"all\":true}" };
	char path[4096], cmd[8192], ex[128];
	uint8_t sha[32], want[32];
	struct stat st;
	size_t n;

	assert_int_equal(forensics__dump(f, &t, x->h, NULL, path, sizeof(path), sha), 0);
	assert_int_equal(x->dumped, 1);
	assert_string_equal(x->last.path, path);
	assert_int_equal(x->last.transactions, 5);
	/* name, modes, digest */
	assert_non_null(strstr(path, "/phiwatch-"));
	assert_non_null(strstr(path, "-request.tar.gz"));
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(x->last.bytes, (uint64_t)st.st_size);
	assert_int_equal(stat(x->dumps, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0700);
	file_sha(path, want);
	assert_memory_equal(sha, want, 32);
	assert_memory_equal(x->last.sha256, want, 32);

	/* tar reads it: exactly the three members, in order */
	snprintf(cmd, sizeof(cmd), "tar tzf %s > %s/list && printf 'manifest.json\\ntransactions.jsonl\\ncapture.pcap\\n' "
		 "| cmp -s - %s/list", path, x->dir, x->dir);
	run(cmd);
	snprintf(ex, sizeof(ex), "%s/ex", x->dir);
	snprintf(cmd, sizeof(cmd), "mkdir -p %s && tar xzf %s -C %s", ex, path, ex);
	run(cmd);

	/* no raw secret anywhere in the archive; redactions are there */
	char *all = gunzip(path, &n);
	assert_null(memmem(all, n, SECRET, strlen(SECRET)));
	assert_non_null(memmem(all, n, "Authorization: [redacted]", 25));
	assert_non_null(memmem(all, n, "Set-Cookie: [redacted]", 22));
	free(all);

	/* transactions.jsonl: the history's lines, oldest first */
	snprintf(cmd, sizeof(cmd), "%s/transactions.jsonl", ex);
	char *jl = slurp(cmd, &n);
	const char *first = "{\"event\":{\"sequence\":1},\"user\":{\"id\":\"alice\"}}\n";
	assert_int_equal(strncmp(jl, first, strlen(first)), 0);
	int lines = 0;
	for (size_t i = 0; i < n; i++)
		lines += jl[i] == '\n';
	assert_int_equal(lines, 5);
	free(jl);

	/* manifest */
	snprintf(cmd, sizeof(cmd), "%s/manifest.json", ex);
	char *mt = slurp(cmd, &n);
	cJSON *m = cJSON_Parse(mt);
	assert_non_null(m);
	assert_int_equal(cJSON_GetObjectItem(m, "format")->valuedouble, 1);
	assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(m, "agent"), "version")->valuestring, "9.9.9-test");
	assert_true(cJSON_IsString(cJSON_GetObjectItem(cJSON_GetObjectItem(m, "host"), "name")));
	cJSON *trig = cJSON_GetObjectItem(m, "trigger");
	assert_string_equal(cJSON_GetObjectItem(trig, "kind")->valuestring, "request");
	assert_true(cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetObjectItem(trig, "request"), "all")));
	assert_int_equal(cJSON_GetObjectItem(m, "transactions")->valuedouble, 5);
	assert_true(cJSON_IsString(cJSON_GetObjectItem(cJSON_GetObjectItem(m, "time_range"), "first")));
	cJSON *files = cJSON_GetObjectItem(m, "files");
	assert_int_equal(cJSON_GetArraySize(files), 2);
	cJSON *me = find_process(m, x->me), *dead = find_process(m, x->dead);
	assert_non_null(me);
	assert_non_null(dead);
	assert_true(cJSON_IsTrue(cJSON_GetObjectItem(me, "alive")));
	assert_non_null(strstr(cJSON_GetObjectItem(me, "exe")->valuestring, "test_forensics"));
	assert_true(cJSON_GetArraySize(cJSON_GetObjectItem(me, "cmdline")) >= 1);
	assert_int_equal(cJSON_GetObjectItem(me, "uid")->valuedouble, getuid());
	assert_true(cJSON_IsString(cJSON_GetObjectItem(me, "cgroup")));
	cJSON *tls = cJSON_GetObjectItem(me, "tls");
	assert_true(cJSON_IsTrue(cJSON_GetObjectItem(tls, "instrumented")));
	assert_string_equal(cJSON_GetObjectItem(tls, "libssl")->valuestring, "/usr/lib/x86_64-linux-gnu/libssl.so.3");
	assert_int_equal(cJSON_GetObjectItem(me, "transactions")->valuedouble, 3);
	/* two distinct connections of alice's: 50001 (two calls) and 50003 */
	cJSON *conns = cJSON_GetObjectItem(me, "connections");
	assert_int_equal(cJSON_GetArraySize(conns), 2);
	cJSON *c0 = cJSON_GetArrayItem(conns, 0);
	assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(c0, "source"), "port")->valuedouble, 50001);
	assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(c0, "destination"), "ip")->valuestring, "127.0.0.1");
	assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(c0, "destination"), "port")->valuedouble, 8443);
	assert_int_equal(cJSON_GetObjectItem(c0, "transactions")->valuedouble, 2);
	assert_string_equal(cJSON_GetObjectItem(c0, "role")->valuestring, "server");
	assert_true(cJSON_IsTrue(cJSON_GetObjectItem(c0, "tls")));
	/* the exited process: said so, names from its transactions */
	assert_true(cJSON_IsFalse(cJSON_GetObjectItem(dead, "alive")));
	assert_string_equal(cJSON_GetObjectItem(dead, "exe")->valuestring, "/usr/bin/gone");
	assert_string_equal(cJSON_GetObjectItem(dead, "comm")->valuestring, "gone");
	assert_non_null(strstr(cJSON_GetObjectItem(dead, "note")->valuestring, "exited"));
	assert_true(cJSON_IsFalse(cJSON_GetObjectItem(cJSON_GetObjectItem(dead, "tls"), "known")));
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(dead, "connections")), 2);
	assert_int_equal(x->proc_calls, 2);
	cJSON_Delete(m);
	free(mt);

	/* the pcap: every request line, in order; digest as in the manifest */
	if (system("command -v tshark >/dev/null 2>&1") != 0)
		fail_msg("tshark is not installed");
	snprintf(cmd, sizeof(cmd), "tshark -r %s/capture.pcap -Y http.request -T fields -e http.request.uri 2>/dev/null"
		 " | tr '\\n' ' ' > %s/uris && printf '/fhir/Patient/1 /fhir/Patient/2 /fhir/Patient/3 /fhir/Patient/4 "
		 "/fhir/Patient/5 ' | cmp -s - %s/uris", ex, x->dir, x->dir);
	run(cmd);
	forensics__free(f);
}

static struct alert mkalert(const char *rule, const char *who, uint32_t pid, int sev, uint64_t ts)
{
	struct alert a = { .ts_ns = ts, .severity = sev, .rule = rule, .principal = who, .pid = pid,
			   .message = "m", .count = 1, .threshold = 1, .window_s = 60 };
	return a;
}

static void test_alert_path_and_rate_limit(void **state)
{
	struct fx *x = *state;
	struct forensics *f = mk(x, 0, NULL);
	struct forensics_stats st;
	char path[4096], ex[128], cmd[8192];
	uint64_t t = x->t0 + 50 * SEC;
	struct alert a = mkalert("patient_enumeration", "bob", 0, ALERT_SEV_HIGH, t);

	/* below min severity: nothing */
	struct alert low = mkalert("basic_auth", "bob", 0, ALERT_SEV_MEDIUM, t);
	assert_int_equal(forensics__on_alert(f, &low, x->h, NULL, 0, NULL), 0);
	/* no subject: nothing */
	struct alert none = mkalert("capture_loss", "-", 0, ALERT_SEV_CRITICAL, t);
	assert_int_equal(forensics__on_alert(f, &none, x->h, NULL, 0, NULL), 0);
	/* bob: the principal's history and (pid given) the process's */
	a.pid = x->me;
	assert_int_equal(forensics__on_alert(f, &a, x->h, path, sizeof(path), NULL), 1);
	assert_non_null(strstr(path, "-alert-patient_enumeration.tar.gz"));
	snprintf(ex, sizeof(ex), "%s/ex2", x->dir);
	snprintf(cmd, sizeof(cmd), "rm -rf %s && mkdir -p %s && tar xzf %s -C %s", ex, ex, path, ex);
	run(cmd);
	snprintf(cmd, sizeof(cmd), "%s/manifest.json", ex);
	size_t n;
	char *mt = slurp(cmd, &n);
	cJSON *m = cJSON_Parse(mt);
	/* bob's call (3) and the process's (1, 2, 4) */
	assert_int_equal(cJSON_GetObjectItem(m, "transactions")->valuedouble, 4);
	cJSON *al = cJSON_GetObjectItem(cJSON_GetObjectItem(m, "trigger"), "alert");
	assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(al, "rule"), "name")->valuestring,
			    "patient_enumeration");
	assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(m, "filter"), "principal")->valuestring, "bob");
	cJSON_Delete(m);
	free(mt);

	/* the same (rule, principal) within 300 s: refused and counted; another principal or rule: dumps */
	a.ts_ns = t + 299 * SEC;
	assert_int_equal(forensics__on_alert(f, &a, x->h, NULL, 0, NULL), 0);
	struct alert other = mkalert("patient_enumeration", "alice", 0, ALERT_SEV_HIGH, t + SEC);
	assert_int_equal(forensics__on_alert(f, &other, x->h, NULL, 0, NULL), 1);
	other = mkalert("bulk_export", "bob", 0, ALERT_SEV_CRITICAL, t + SEC);
	assert_int_equal(forensics__on_alert(f, &other, x->h, NULL, 0, NULL), 1);
	/* an address principal dumps that client's calls */
	other = mkalert("auth_failures", "ip:127.0.0.9", 0, ALERT_SEV_HIGH, t + SEC);
	assert_int_equal(forensics__on_alert(f, &other, x->h, path, sizeof(path), NULL), 1);
	assert_int_equal(x->last.transactions, 1);
	/* after the interval: again */
	a.ts_ns = t + 300 * SEC;
	assert_int_equal(forensics__on_alert(f, &a, x->h, NULL, 0, NULL), 1);
	forensics__stats(f, &st);
	assert_int_equal(st.dumps, 5);
	assert_int_equal(st.refused_rate_limit, 1);
	assert_int_equal(st.below_severity, 1);
	assert_int_equal(st.no_subject, 1);
	forensics__free(f);
}

/* 10,000 alerts from 20 principals on 3 rules within one interval: one dump per pair. */
static void test_alert_storm(void **state)
{
	struct fx *x = *state;
	struct forensics *f = mk(x, 0, NULL);
	struct forensics_stats st;
	const char *rules[] = { "rate_limit_exceeded", "patient_enumeration", "auth_failures" };
	char who[32];
	int tmp;
	int before = count_dumps(x->dumps, &tmp);

	for (int i = 0; i < 10000; i++) {
		snprintf(who, sizeof(who), "user%d", i % 20);
		struct alert a = mkalert(rules[i % 3], who, 0, ALERT_SEV_HIGH, x->t0 + (uint64_t)i * 1000000);
		assert_true(forensics__on_alert(f, &a, x->h, NULL, 0, NULL) >= 0);
	}
	forensics__stats(f, &st);
	assert_int_equal(st.dumps, 60);
	assert_int_equal(st.refused_rate_limit, 10000 - 60);
	assert_int_equal(count_dumps(x->dumps, &tmp) - before, 60);
	assert_int_equal(tmp, 0);
	forensics__free(f);
}

static void test_size_cap(void **state)
{
	struct fx *x = *state;
	struct forensics *f;
	struct forensics_stats st;
	struct forensics_trigger t = { .kind = FORENSICS_TRIGGER_SIGNAL, .signal_name = "SIGUSR1" };
	char path[4096], sub[128];
	struct stat s;
	int tmp;

	/* a directory of its own, with room for one dump */
	snprintf(sub, sizeof(sub), "%s/capped", x->dir);
	char *keep = strdup(x->dumps);
	snprintf(x->dumps, sizeof(x->dumps), "%s", sub);
	f = mk(x, 1 << 30, NULL);
	assert_int_equal(forensics__dump(f, &t, x->h, NULL, path, sizeof(path), NULL), 0);
	assert_non_null(strstr(path, "-signal.tar.gz"));
	assert_int_equal(stat(path, &s), 0);
	forensics__free(f);

	f = mk(x, (uint64_t)s.st_size + 100, NULL);
	assert_int_equal(forensics__dump(f, &t, x->h, NULL, path, sizeof(path), NULL), -EDQUOT);
	/* a storm against a full directory: all refused, counted, nothing written, nothing deleted */
	for (int i = 0; i < 50; i++) {
		char who[16];
		snprintf(who, sizeof(who), "u%d", i);
		struct alert a = mkalert("rate_limit_exceeded", who, 0, ALERT_SEV_HIGH, x->t0);
		assert_int_equal(forensics__on_alert(f, &a, x->h, NULL, 0, NULL), -EDQUOT);
	}
	forensics__stats(f, &st);
	assert_int_equal(st.refused_size_cap, 51);
	assert_int_equal(st.dumps, 0);
	assert_int_equal(st.dir_bytes, (uint64_t)s.st_size);
	assert_int_equal(count_dumps(sub, &tmp), 1);
	assert_int_equal(tmp, 0);
	forensics__free(f);
	snprintf(x->dumps, sizeof(x->dumps), "%s", keep);
	free(keep);
}

static void test_encrypted(void **state)
{
	struct fx *x = *state;
	uint8_t key[32], other[32], sha[32], want[32];
	struct forensics *f;
	struct forensics_trigger t = { .kind = FORENSICS_TRIGGER_SIGNAL, .signal_name = "SIGUSR1" };
	char path[4096], out[4200], err[256], cmd[8500];
	size_t n;

	for (int i = 0; i < 32; i++) {
		key[i] = (uint8_t)i;
		other[i] = (uint8_t)(i + 1);
	}
	f = mk(x, 0, key);
	assert_int_equal(forensics__dump(f, &t, x->h, NULL, path, sizeof(path), sha), 0);
	forensics__free(f);
	assert_non_null(strstr(path, ".tar.gz.aes"));
	file_sha(path, want);
	assert_memory_equal(sha, want, 32);
	char *raw = slurp(path, &n);
	assert_memory_equal(raw, "PWFGCM01", 8);
	assert_null(memmem(raw, n, "manifest.json", 13));
	free(raw);

	snprintf(out, sizeof(out), "%s.dec", path);
	assert_int_equal(forensics_decrypt(path, out, other, err, sizeof(err)), -EBADMSG);
	assert_non_null(strstr(err, "another key"));
	assert_int_equal(forensics_decrypt(path, out, key, err, sizeof(err)), 0);
	snprintf(cmd, sizeof(cmd), "tar tzf %s | grep -qx capture.pcap", out);
	run(cmd);
	assert_int_equal(forensics_decrypt(path, out, key, err, sizeof(err)), -EEXIST);
	unlink(out);

	/* one flipped bit anywhere is detected */
	FILE *fp = fopen(path, "r+b");
	fseek(fp, 100, SEEK_SET);
	int c = fgetc(fp);
	fseek(fp, 100, SEEK_SET);
	fputc(c ^ 1, fp);
	fclose(fp);
	assert_int_equal(forensics_decrypt(path, out, key, err, sizeof(err)), -EBADMSG);
	assert_int_equal(access(out, F_OK), -1);
	assert_int_equal(forensics_decrypt("/nonexistent", out, key, err, sizeof(err)), -ENOENT);
	unlink(path);
}

static void test_requests(void **state)
{
	struct fx *x = *state;
	struct forensics *f = mk(x, 0, NULL);
	struct jbuf r;
	const char *bad[] = {
		"{\"cmd\":\"status\"}",
		"{\"cmd\":\"dump\"}",
		"{\"cmd\":\"dump\",\"all\":true,\"user\":\"a\"}",
		"{\"cmd\":\"dump\",\"all\":false}",
		"{\"cmd\":\"dump\",\"pid\":-1}",
		"{\"cmd\":\"dump\",\"pid\":1.5}",
		"{\"cmd\":\"dump\",\"pid\":\"1\"}",
		"{\"cmd\":\"dump\",\"user\":\"\"}",
		"{\"cmd\":\"dump\",\"user\":\"a\",\"last_s\":0}",
		"{\"cmd\":\"dump\",\"user\":\"a\",\"rm\":\"-rf\"}",
	};

	jbuf_init(&r);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cJSON *q = cJSON_Parse(bad[i]);
		assert_int_equal(forensics__handle_request(f, x->h, q, &r), -EINVAL);
		cJSON *a = cJSON_Parse(r.p);
		assert_true(cJSON_IsFalse(cJSON_GetObjectItem(a, "ok")));
		assert_true(cJSON_IsString(cJSON_GetObjectItem(a, "error")));
		cJSON_Delete(a);
		cJSON_Delete(q);
	}
	/* alice within the last 99 s: her calls are at now-99, now-98 and now-96 s */
	cJSON *q = cJSON_Parse("{\"cmd\":\"dump\",\"user\":\"alice\",\"last_s\":99}");
	assert_int_equal(forensics__handle_request(f, x->h, q, &r), 0);
	cJSON *a = cJSON_Parse(r.p);
	assert_true(cJSON_IsTrue(cJSON_GetObjectItem(a, "ok")));
	assert_int_equal(cJSON_GetObjectItem(a, "transactions")->valuedouble, 2);   /* calls 2 and 4 */
	assert_int_equal(strlen(cJSON_GetObjectItem(a, "sha256")->valuestring), 64);
	assert_true(cJSON_GetObjectItem(a, "bytes")->valuedouble > 0);
	assert_int_equal(access(cJSON_GetObjectItem(a, "path")->valuestring, R_OK), 0);
	cJSON_Delete(a);
	cJSON_Delete(q);
	/* a pid with no calls still gets its process described */
	q = cJSON_Parse("{\"cmd\":\"dump\",\"pid\":1}");
	assert_int_equal(forensics__handle_request(f, x->h, q, &r), 0);
	assert_int_equal(x->last.transactions, 0);
	assert_int_equal(x->last.processes, 1);
	cJSON_Delete(q);
	jbuf_free(&r);
	forensics__free(f);
}

static void test_note_and_housekeeping(void **state)
{
	struct fx *x = *state;
	struct forensics_dump_info d = { .bytes = 10, .transactions = 2 };
	struct alert a = mkalert("bulk_export", "al\"ice", 42, ALERT_SEV_HIGH, 1);
	struct forensics_trigger t = { .kind = FORENSICS_TRIGGER_ALERT, .alert = &a };
	struct jbuf b;
	char stale[256], err[256];
	int tmp;

	snprintf(d.path, sizeof(d.path), "/var/lib/phiwatch/forensics/phiwatch-x.tar.gz");
	d.sha256[0] = 0xab;
	jbuf_init(&b);
	forensics_note_json(&t, &d, &b);
	cJSON *j = cJSON_Parse(b.p);
	assert_non_null(j);
	assert_string_equal(cJSON_GetObjectItem(j, "file")->valuestring, "phiwatch-x.tar.gz");
	assert_string_equal(cJSON_GetObjectItem(j, "trigger")->valuestring, "alert");
	assert_string_equal(cJSON_GetObjectItem(j, "principal")->valuestring, "al\"ice");
	assert_int_equal(strncmp(cJSON_GetObjectItem(j, "sha256")->valuestring, "ab00", 4), 0);
	cJSON_Delete(j);
	jbuf_free(&b);

	/* a temporary file from a crash is removed at start; wide modes are tightened */
	forensics__free(mk(x, 0, NULL));
	snprintf(stale, sizeof(stale), "%s/.tmp-phiwatch-1-1", x->dumps);
	FILE *fp = fopen(stale, "w");
	assert_non_null(fp);
	fclose(fp);
	chmod(x->dumps, 0755);
	struct forensics *f = mk(x, 0, NULL);
	struct stat st;

	assert_int_equal(stat(x->dumps, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0700);
	count_dumps(x->dumps, &tmp);
	assert_int_equal(tmp, 0);
	forensics__free(f);
	forensics__free(NULL);

	/* a file where the directory should be */
	struct forensics_opts o;
	forensics_opts_default(&o);
	o.dir = stale;
	fp = fopen(stale, "w");
	fclose(fp);
	errno = 0;
	assert_null(forensics__new(&o, err, sizeof(err)));
	assert_int_equal(errno, ENOTDIR);
	unlink(stale);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_dump_contents, setup, teardown),
		cmocka_unit_test_setup_teardown(test_alert_path_and_rate_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_alert_storm, setup, teardown),
		cmocka_unit_test_setup_teardown(test_size_cap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_encrypted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_requests, setup, teardown),
		cmocka_unit_test_setup_teardown(test_note_and_housekeeping, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
