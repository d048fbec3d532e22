/* test_inventory.c — cmocka tests for user/inventory.c: the folding rules, grouping of known transactions
 * (methods, auth, TLS, resource types, principals, status, ports, time range), the role filter, the endpoint cap,
 * escaping in the table, and reading a real audit trail written with audit.c.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audit.h"
#include "inventory.h"
#include "json.h"
#include "log.h"

#define T0 1700000000000000000ull /* 2023-11-14T22:13:20Z */
#define SEC 1000000000ull

/* ------------------------------------------------------------------ folding */

static void test_fold_rules(void **state)
{
	(void)state;
	static const struct {
		const char *in, *want;
	} cases[] = {
		{ "/", "/" },
		{ "", "" },
		{ "/healthz", "/healthz" },
		{ "/api/v1/users/123", "/api/v1/users/{id}" },
		{ "/api/v1/users/123/orders/456", "/api/v1/users/{id}/orders/{id}" },
		{ "/api/v2/items", "/api/v2/items" },                                  /* "v2" is not an id */
		{ "/o/550e8400-e29b-41d4-a716-446655440000", "/o/{id}" },               /* UUID */
		{ "/o/550E8400-E29B-41D4-A716-446655440000/x", "/o/{id}/x" },           /* upper-case UUID */
		{ "/o/550e8400e29b41d4a716446655440000", "/o/{id}" },                   /* 32 hex */
		{ "/blob/9f86d081884c7d65", "/blob/{id}" },                             /* 16 hex */
		{ "/blob/9f86d081884c7d6", "/blob/9f86d081884c7d6" },                   /* 15 hex: kept */
		{ "/blob/deadbeefcafebabe0", "/blob/{id}" },
		{ "/o/550e8400-e29b-41d4-a716-44665544000g", "/o/550e8400-e29b-41d4-a716-44665544000g" },
		{ "/fhir/Patient/123", "/fhir/Patient/{id}" },
		{ "/fhir/Patient/pat-abc.1", "/fhir/Patient/{id}" },                    /* FHIR id after a type */
		{ "/fhir/Patient", "/fhir/Patient" },
		{ "/fhir/Patient/", "/fhir/Patient/" },
		{ "/fhir/Patient/_search", "/fhir/Patient/_search" },
		{ "/fhir/Patient/$export", "/fhir/Patient/$export" },
		{ "/fhir/Patient/abc/Observation", "/fhir/Patient/{id}/Observation" },  /* compartment kept */
		{ "/fhir/Patient/abc/_history/3", "/fhir/Patient/{id}/_history/{id}" },
		{ "/fhir/Patient/abc/_history/v-2", "/fhir/Patient/{id}/_history/{id}" },
		{ "/fhir/Observation/obs-77", "/fhir/Observation/{id}" },
		{ "/R4/MedicationRequest/mr.1/$status", "/R4/MedicationRequest/{id}/$status" },
		{ "/api/patient/abc", "/api/patient/abc" },                             /* lower case: not a FHIR type */
		{ "/api/Patients/abc", "/api/Patients/abc" },                           /* not a FHIR type */
		{ "/api/Task/run", "/api/Task/{id}" },                                  /* Task is one: its rule applies */
		{ "//a//1", "//a//{id}" },
		{ "/a/1/", "/a/{id}/" },
		{ "*", "*" },
	};
	char out[INVENTORY_TEMPLATE_MAX + 1];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t n = inventory_fold_path(cases[i].in, strlen(cases[i].in), out, sizeof(out));
		if (strcmp(out, cases[i].want) != 0)
			fail_msg("fold(%s) = %s, want %s", cases[i].in, out, cases[i].want);
		assert_int_equal(n, strlen(out));
	}
}

static void test_fold_limits(void **state)
{
	(void)state;
	static char path[20000], out[INVENTORY_TEMPLATE_MAX + 1];
	size_t o = 0;

	/* many segments: cut after INVENTORY_MAX_SEGMENTS with "/..." */
	for (int i = 0; i < 200; i++)
		o += (size_t)snprintf(path + o, sizeof(path) - o, "/s%d", i);
	size_t n = inventory_fold_path(path, o, out, sizeof(out));
	assert_true(n <= INVENTORY_TEMPLATE_MAX);
	assert_string_equal(out + n - 4, "/...");
	/* one huge segment: cut to the buffer */
	memset(path, 'z', 10000);
	path[0] = '/';
	n = inventory_fold_path(path, 10000, out, sizeof(out));
	assert_true(n <= INVENTORY_TEMPLATE_MAX);
	assert_int_equal(strlen(out), n);
	assert_string_equal(out + n - 3, "...");
	/* tiny buffers never overflow */
	char small[6];
	n = inventory_fold_path("/abcdefgh", 9, small, sizeof(small));
	assert_true(n < sizeof(small));
	assert_int_equal(strlen(small), n);
	assert_int_equal(inventory_fold_path("/x", 2, small, 0), 0);
	/* every prefix of a path with ids folds without reading past it (ASan) */
	const char *p = "/fhir/Patient/123/_history/550e8400-e29b-41d4-a716-446655440000";
	for (size_t k = 0; k <= strlen(p); k++) {
		char *copy = malloc(k ? k : 1);
		memcpy(copy, p, k);
		inventory_fold_path(copy, k, out, sizeof(out));
		free(copy);
	}
}

/* ------------------------------------------------------------------ grouping */

struct tx {
	uint64_t ts;
	const char *role, *comm, *exe, *method, *target, *user, *auth;
	bool tls;
	int status;
	const char *rtype;
	int dport;
};

static char *line_of(const struct tx *t)
{
	struct jbuf b;
	char ts[40];
	const char *q = strchr(t->target, '?');

	jbuf_init(&b);
	json_time_rfc3339(ts, sizeof(ts), t->ts);
	json_obj_open(&b, NULL);
	json_cstr(&b, "@timestamp", ts);
	json_obj_open(&b, "event");
	json_cstr(&b, "kind", "event");
	json_u64(&b, "duration", 1000);
	json_u64(&b, "sequence", 1);
	json_obj_close(&b);
	json_obj_open(&b, "process");
	json_u64(&b, "pid", 42);
	json_cstr(&b, "name", t->comm);
	json_cstr(&b, "executable", t->exe);
	json_obj_close(&b);
	json_obj_open(&b, "user");
	json_cstr(&b, "id", t->user);
	json_obj_close(&b);
	json_obj_open(&b, "source");
	json_cstr(&b, "ip", "127.0.0.1");
	json_u64(&b, "port", 50000);
	json_obj_close(&b);
	json_obj_open(&b, "destination");
	json_cstr(&b, "ip", "127.0.0.1");
	json_u64(&b, "port", (uint64_t)t->dport);
	json_obj_close(&b);
	json_obj_open(&b, "tls");
	json_bool(&b, "established", t->tls);
	json_obj_close(&b);
	json_obj_open(&b, "http");
	json_cstr(&b, "version", "1.1");
	json_obj_open(&b, "request");
	json_cstr(&b, "method", t->method);
	json_u64(&b, "bytes", 100);
	json_obj_close(&b);
	json_obj_open(&b, "response");
	json_u64(&b, "status_code", (uint64_t)t->status);
	json_u64(&b, "bytes", 200);
	json_obj_close(&b);
	json_obj_close(&b);
	json_obj_open(&b, "url");
	json_str(&b, "path", t->target, q ? (size_t)(q - t->target) : strlen(t->target));
	if (q)
		json_cstr(&b, "query", q + 1);
	json_obj_close(&b);
	json_obj_open(&b, "phiwatch");
	json_cstr(&b, "role", t->role);
	json_cstr(&b, "auth", t->auth);
	if (t->rtype) {
		json_obj_open(&b, "resource");
		json_cstr(&b, "type", t->rtype);
		json_cstr(&b, "id", "1");
		json_obj_close(&b);
	}
	json_bool(&b, "truncated", false);
	json_obj_close(&b);
	json_obj_close(&b);
	assert_false(b.oom);
	return b.p;
}

#define NGINX "nginx", "/usr/sbin/nginx"
#define PY "python3", "/usr/bin/python3.11"

static const struct tx known[] = {
	/* nginx serves a FHIR API over TLS; alice and bob read patients, one anonymous probe */
	{ T0 + 1 * SEC, "server", NGINX, "GET", "/fhir/Patient/1001", "alice", "bearer", true, 200, "Patient", 8443 },
	{ T0 + 2 * SEC, "server", NGINX, "GET", "/fhir/Patient/1002", "alice", "bearer", true, 200, "Patient", 8443 },
	{ T0 + 3 * SEC, "server", NGINX, "GET", "/fhir/Patient/p-3?_format=json", "bob", "bearer", true, 200,
	  "Patient", 8443 },
	{ T0 + 4 * SEC, "server", NGINX, "HEAD", "/fhir/Patient/1001", "-", "none", true, 401, "Patient", 8443 },
	{ T0 + 5 * SEC, "server", NGINX, "GET", "/fhir/Patient/1001/Observation", "bob", "bearer", true, 200,
	  "Observation", 8443 },
	{ T0 + 6 * SEC, "server", NGINX, "GET", "/fhir/Observation?patient=1001", "bob", "bearer", true, 200,
	  "Observation", 8443 },
	/* the same endpoint also reached in plaintext, with Basic: TLS mixed, two auth schemes, two ports */
	{ T0 + 7 * SEC, "server", NGINX, "GET", "/fhir/Patient/1003", "carol", "basic", false, 200, "Patient", 8080 },
	/* an internal health endpoint */
	{ T0 + 8 * SEC, "server", NGINX, "GET", "/healthz", "-", "none", false, 200, NULL, 8080 },
	{ T0 + 9 * SEC, "server", NGINX, "GET", "/healthz", "-", "none", false, 0, NULL, 8080 },
	/* a python service with API keys and UUID orders */
	{ T0 + 10 * SEC, "server", PY, "POST", "/api/orders", "key:00112233aabbccdd", "apikey", true, 201, NULL, 9000 },
	{ T0 + 11 * SEC, "server", PY, "PUT", "/api/orders/550e8400-e29b-41d4-a716-446655440000",
	  "key:00112233aabbccdd", "apikey", true, 204, NULL, 9000 },
	{ T0 + 12 * SEC, "server", PY, "DELETE", "/api/orders/6ba7b810-9dad-11d1-80b4-00c04fd430c8",
	  "key:99112233aabbccdd", "apikey", true, 500, NULL, 9000 },
	/* client-side calls (curl): not the API surface, left out by default */
	{ T0 + 13 * SEC, "client", "curl", "/usr/bin/curl", "GET", "/fhir/Patient/1001", "alice", "bearer", true, 200,
	  "Patient", 8443 },
	{ T0 + 14 * SEC, "client", "curl", "/usr/bin/curl", "GET", "/fhir/Patient/1002", "alice", "bearer", true, 200,
	  "Patient", 8443 },
	{ T0 + 15 * SEC, "unknown", NGINX, "GET", "/fhir/Patient/1009", "dave", "bearer", true, 200, "Patient", 8443 },
};
#define N_KNOWN (sizeof(known) / sizeof(known[0]))

static void feed_known(struct inventory *inv)
{
	for (size_t i = 0; i < N_KNOWN; i++) {
		char *l = line_of(&known[i]);
		assert_int_equal(inventory__add_json(inv, l, strlen(l)), 0);
		free(l);
	}
}

/* Parses JSONL into an array of objects (caller deletes). */
static cJSON *parse_lines(const char *text, size_t len)
{
	cJSON *arr = cJSON_CreateArray();
	const char *p = text, *end = text + len;

	assert_true(len == 0 || text[len - 1] == '\n');
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		cJSON *o = cJSON_ParseWithLength(p, (size_t)(nl - p));
		assert_non_null(o);
		cJSON_AddItemToArray(arr, o);
		p = nl + 1;
	}
	return arr;
}

static const cJSON *find(const cJSON *arr, const char *role, const char *name, const char *endpoint)
{
	const cJSON *o;
	cJSON_ArrayForEach(o, arr) {
		if (!strcmp(cJSON_GetObjectItem(o, "role")->valuestring, role) &&
		    !strcmp(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "service"), "name")->valuestring, name) &&
		    !strcmp(cJSON_GetObjectItem(o, "endpoint")->valuestring, endpoint))
			return o;
	}
	fail_msg("no group %s %s %s", role, name, endpoint);
	return NULL;
}

/* The JSON text of a member, for exact comparisons of arrays and objects. */
static const char *js(const cJSON *o, const char *k)
{
	static char buf[8][512];
	static int i;
	char *s = cJSON_PrintUnformatted(cJSON_GetObjectItem(o, k));
	assert_non_null(s);
	i = (i + 1) % 8;
	snprintf(buf[i], sizeof(buf[i]), "%s", s);
	free(s);
	return buf[i];
}

static void test_group_known_transactions(void **state)
{
	(void)state;
	struct inventory *inv = inventory__new(NULL);
	struct jbuf b;
	struct inventory_stats st;

	assert_non_null(inv);
	feed_known(inv);
	inventory__stats(inv, &st);
	assert_int_equal(st.lines, N_KNOWN);
	assert_int_equal(st.counted, 12);
	assert_int_equal(st.skipped_role[1], 2);
	assert_int_equal(st.skipped_role[2], 1);
	assert_int_equal(st.groups, 6);
	assert_int_equal(st.services, 2);
	assert_true(st.first_ns == T0 + 1 * SEC && st.last_ns == T0 + 12 * SEC);

	jbuf_init(&b);
	inventory__render_jsonl(inv, &b);
	cJSON *arr = parse_lines(b.p, b.len);
	assert_int_equal(cJSON_GetArraySize(arr), 6);

	/* order: service name, then endpoint */
	const char *order[] = { "/fhir/Observation", "/fhir/Patient/{id}", "/fhir/Patient/{id}/Observation",
				"/healthz", "/api/orders", "/api/orders/{id}" };
	for (int i = 0; i < 6; i++)
		assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(arr, i), "endpoint")->valuestring, order[i]);

	const cJSON *g = find(arr, "server", "nginx", "/fhir/Patient/{id}");
	assert_string_equal(js(g, "service"), "{\"name\":\"nginx\",\"executable\":\"/usr/sbin/nginx\"}");
	assert_string_equal(js(g, "methods"), "[\"GET\",\"HEAD\"]");
	assert_string_equal(js(g, "calls"), "5");
	assert_string_equal(js(g, "auth"), "[\"bearer\",\"basic\",\"none\"]");
	assert_string_equal(js(g, "tls"), "\"mixed\"");
	assert_string_equal(js(g, "phi_resource_types"), "[\"Patient\"]");
	assert_string_equal(js(g, "principals"), "3"); /* alice, bob, carol */
	assert_string_equal(js(g, "anonymous_calls"), "1");
	assert_string_equal(js(g, "status"), "{\"2xx\":4,\"4xx\":1}");
	assert_string_equal(js(g, "ports"), "[8080,8443]");
	assert_string_equal(js(g, "first_seen"), "\"2023-11-14T22:13:21.000000Z\"");
	assert_string_equal(js(g, "last_seen"), "\"2023-11-14T22:13:27.000000Z\"");
	assert_null(cJSON_GetObjectItem(g, "principals_capped"));

	g = find(arr, "server", "nginx", "/fhir/Observation");
	assert_string_equal(js(g, "calls"), "1");
	assert_string_equal(js(g, "tls"), "\"yes\"");
	assert_string_equal(js(g, "phi_resource_types"), "[\"Observation\"]");

	g = find(arr, "server", "nginx", "/healthz");
	assert_string_equal(js(g, "calls"), "2");
	assert_string_equal(js(g, "tls"), "\"no\"");
	assert_string_equal(js(g, "auth"), "[\"none\"]");
	assert_string_equal(js(g, "phi_resource_types"), "[]");
	assert_string_equal(js(g, "principals"), "0");
	assert_string_equal(js(g, "status"), "{\"none\":1,\"2xx\":1}");

	g = find(arr, "server", "python3", "/api/orders/{id}");
	assert_string_equal(js(g, "methods"), "[\"PUT\",\"DELETE\"]");
	assert_string_equal(js(g, "principals"), "2");
	assert_string_equal(js(g, "auth"), "[\"apikey\"]");
	assert_string_equal(js(g, "status"), "{\"2xx\":1,\"5xx\":1}");
	assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(g, "service"), "executable")->valuestring,
			    "/usr/bin/python3.11");
	cJSON_Delete(arr);

	/* --role all: the client and unknown groups appear too, server first */
	struct inventory_opts o = { .roles = INVENTORY_ROLE_ALL };
	struct inventory *all = inventory__new(&o);
	feed_known(all);
	jbuf_reset(&b);
	inventory__render_jsonl(all, &b);
	arr = parse_lines(b.p, b.len);
	assert_int_equal(cJSON_GetArraySize(arr), 8);
	g = find(arr, "client", "curl", "/fhir/Patient/{id}");
	assert_string_equal(js(g, "calls"), "2");
	assert_string_equal(js(g, "principals"), "1");
	g = find(arr, "unknown", "nginx", "/fhir/Patient/{id}");
	assert_string_equal(js(g, "calls"), "1");
	assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(arr, 0), "role")->valuestring, "server");
	assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(arr, 7), "role")->valuestring, "unknown");
	cJSON_Delete(arr);
	inventory__free(all);
	jbuf_free(&b);
	inventory__free(inv);
	inventory__free(NULL);
}

static void test_bad_lines_and_cap(void **state)
{
	(void)state;
	struct inventory_opts o = { .max_groups = 3 };
	struct inventory *inv = inventory__new(&o);
	struct inventory_stats st;
	struct jbuf b;

	assert_int_equal(inventory__add_json(inv, "{", 1), -EINVAL);
	assert_int_equal(inventory__add_json(inv, "[]", 2), -EINVAL);
	const char *nomethod = "{\"@timestamp\":\"2023-11-14T22:13:20.000000Z\",\"url\":{\"path\":\"/\"}}";
	assert_int_equal(inventory__add_json(inv, nomethod, strlen(nomethod)), -EINVAL);
	/* 10 distinct endpoints of one service with a cap of 3 groups: the rest fold into {other} */
	for (int i = 0; i < 10; i++) {
		char path[32];
		snprintf(path, sizeof(path), "/route%d", i);
		struct tx t = { T0 + (uint64_t)i * SEC, "server", NGINX, "GET", path, "u", "bearer", true, 200, NULL,
				443 };
		char *l = line_of(&t);
		assert_int_equal(inventory__add_json(inv, l, strlen(l)), 0);
		free(l);
	}
	inventory__stats(inv, &st);
	assert_int_equal(st.bad_lines, 3);
	assert_true(st.first_bad[0] != '\0');
	assert_int_equal(st.counted, 10);
	assert_int_equal(st.overflowed, 7);
	assert_int_equal(st.groups, 4);
	jbuf_init(&b);
	inventory__render_jsonl(inv, &b);
	cJSON *arr = parse_lines(b.p, b.len);
	const cJSON *g = find(arr, "server", "nginx", "{other}");
	assert_string_equal(js(g, "calls"), "7");
	cJSON_Delete(arr);
	jbuf_free(&b);
	inventory__free(inv);
}

static void test_table(void **state)
{
	(void)state;
	struct inventory *inv = inventory__new(NULL);
	struct jbuf b;

	feed_known(inv);
	/* a hostile process name and path: escaped, never raw control bytes on the terminal */
	struct tx evil = { T0 + 20 * SEC, "server", "ev\x1b[31mil", "/tmp/x", "GET", "/a\x07/1", "-", "none", false,
			   200, NULL, 80 };
	char *l = line_of(&evil);
	assert_int_equal(inventory__add_json(inv, l, strlen(l)), 0);
	free(l);
	jbuf_init(&b);
	inventory__render_table(inv, "/var/lib/phiwatch/audit", &b);
	assert_false(b.oom);
	assert_non_null(strstr(b.p, "phiwatch inventory: the API surface seen in /var/lib/phiwatch/audit\n"));
	assert_non_null(strstr(b.p, "Server-side transactions only"));
	assert_non_null(strstr(b.p, "13 transactions, 7 endpoints in 3 services (3 of other roles not counted)"));
	assert_non_null(strstr(b.p, "SERVICE"));
	assert_null(strstr(b.p, "ROLE"));
	assert_non_null(strstr(b.p, "ev\\u001b[31mil"));
	assert_non_null(strstr(b.p, "/a\\u0007/{id}"));
	for (size_t i = 0; i < b.len; i++)
		assert_true(b.p[i] == '\n' || (unsigned char)b.p[i] >= 0x20);
	/* one row per endpoint, columns aligned: every row as long as the header (ASCII content here) */
	const char *hdr = strstr(b.p, "SERVICE");
	const char *row = strchr(hdr, '\n') + 1;
	assert_non_null(strstr(row, "/fhir/Patient/{id}"));
	assert_non_null(strstr(row, "GET,HEAD"));
	assert_non_null(strstr(row, "bearer,basic,none"));
	assert_non_null(strstr(row, "mixed"));
	jbuf_free(&b);
	inventory__free(inv);

	/* empty */
	inv = inventory__new(NULL);
	jbuf_init(&b);
	inventory__render_table(inv, "DIR", &b);
	assert_non_null(strstr(b.p, "no transactions"));
	jbuf_reset(&b);
	inventory__render_jsonl(inv, &b);
	assert_int_equal(b.len, 0);
	jbuf_free(&b);
	inventory__free(inv);
}

/* ------------------------------------------------------------------ from a real audit trail */

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
	(void)sb;
	(void)flag;
	(void)f;
	return remove(p);
}

static void test_from_audit_trail(void **state)
{
	(void)state;
	char root[64], dir[96], key[96], err[256];
	struct audit_opts ao;
	struct audit_query_result r;

	snprintf(root, sizeof(root), "/tmp/pw-inventory-test-XXXXXX");
	assert_non_null(mkdtemp(root));
	snprintf(dir, sizeof(dir), "%s/audit", root);
	snprintf(key, sizeof(key), "%s/initial.key", root);
	audit_opts_default(&ao);
	ao.dir = dir;
	ao.initial_key_path = key;
	ao.segment_max_bytes = 8192; /* several segments, closed ones compressed */
	struct audit *a = audit__open(&ao, T0, err, sizeof(err));
	if (!a)
		fail_msg("audit__open: %s", err);
	for (int round = 0; round < 20; round++) {
		for (size_t i = 0; i < N_KNOWN; i++) {
			char *l = line_of(&known[i]);
			assert_int_equal(audit__append_txn(a, known[i].ts + (uint64_t)round, l, strlen(l)), 0);
			free(l);
		}
		audit__tick(a, T0 + (uint64_t)round * SEC);
	}
	/* a line far longer than stdio's buffer: reassembled across writes */
	struct jbuf big;
	jbuf_init(&big);
	char *l = line_of(&known[0]);
	jbuf_put(&big, l, strlen(l) - 1);
	free(l);
	jbuf_puts(&big, ",\"pad\":\"");
	for (int i = 0; i < 3000; i++)
		jbuf_puts(&big, "0123456789");
	jbuf_puts(&big, "\"}");
	assert_int_equal(audit__append_txn(a, T0, big.p, big.len), 0);
	jbuf_free(&big);
	audit__gap(a, T0, "capture_drop", "{\"new_drops\":1}");
	for (int i = 0; i < 50; i++)
		audit__tick(a, T0 + 100 * SEC);
	audit__close(a, T0 + 100 * SEC);

	struct inventory *inv = inventory__new(NULL);
	int rc = inventory_from_audit(inv, dir, NULL, &r);
	if (rc != 0)
		fail_msg("inventory_from_audit: %d %s", rc, r.reason);
	assert_true(r.segments > 1);
	struct inventory_stats st;
	inventory__stats(inv, &st);
	assert_int_equal(st.lines, 20 * N_KNOWN + 1);
	assert_int_equal(st.bad_lines, 0);
	assert_int_equal(st.counted, 20 * 12 + 1);
	assert_int_equal(st.groups, 6);
	struct jbuf b;
	jbuf_init(&b);
	inventory__render_jsonl(inv, &b);
	cJSON *arr = parse_lines(b.p, b.len);
	const cJSON *g = find(arr, "server", "nginx", "/fhir/Patient/{id}");
	assert_string_equal(js(g, "calls"), "101");
	assert_string_equal(js(g, "principals"), "3");
	cJSON_Delete(arr);
	jbuf_free(&b);
	inventory__free(inv);

	/* a directory that is not a trail: an error, not a crash */
	inv = inventory__new(NULL);
	assert_true(inventory_from_audit(inv, "/nonexistent/phiwatch", NULL, &r) < 0);
	assert_true(r.reason[0] != '\0');
	inventory__free(inv);
	nftw(root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

int main(void)
{
	log_level = LOG_LVL_ERROR;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fold_rules),
		cmocka_unit_test(test_fold_limits),
		cmocka_unit_test(test_group_known_transactions),
		cmocka_unit_test(test_bad_lines_and_cap),
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_from_audit_trail),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
