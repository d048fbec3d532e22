/* txn_read.c — transactions JSONL reader (see txn_read.h). cJSON parses; fields are checked one by one. */
#include "txn_read.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "phiwatch/events.h"

long long txn_parse_rfc3339(const char *s)
{
	int Y, M, D, h, m, sec;
	long long frac = 0;
	int digits = 0;
	const char *p = s;

	/* fixed layout: YYYY-MM-DDTHH:MM:SS[.ffffff...]Z */
	static const char layout[] = "dddd-dd-ddTdd:dd:dd";
	for (int i = 0; i < 19; i++) {
		char c = p[i];
		if (!c || (layout[i] == 'd' ? (c < '0' || c > '9') : c != layout[i]))
			return -1;
	}
	Y = (p[0] - '0') * 1000 + (p[1] - '0') * 100 + (p[2] - '0') * 10 + (p[3] - '0');
	M = (p[5] - '0') * 10 + (p[6] - '0');
	D = (p[8] - '0') * 10 + (p[9] - '0');
	h = (p[11] - '0') * 10 + (p[12] - '0');
	m = (p[14] - '0') * 10 + (p[15] - '0');
	sec = (p[17] - '0') * 10 + (p[18] - '0');
	p += 19;
	if (*p == '.') {
		p++;
		while (*p >= '0' && *p <= '9') {
			if (digits < 9) {
				frac = frac * 10 + (*p - '0');
				digits++;
			}
			p++;
		}
		if (digits == 0)
			return -1;
		while (digits++ < 9)
			frac *= 10;
	}
	if (p[0] != 'Z' || p[1] != '\0' || M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60)
		return -1;
	struct tm tm = { .tm_year = Y - 1900, .tm_mon = M - 1, .tm_mday = D, .tm_hour = h, .tm_min = m, .tm_sec = sec };
	time_t t = timegm(&tm);
	if (t < 0)
		return -1;
	return (long long)t * 1000000000ll + frac;
}

static const cJSON *at(const cJSON *o, const char *dotted)
{
	char part[64];
	const char *p = dotted;

	while (o && *p) {
		const char *dot = strchr(p, '.');
		size_t n = dot ? (size_t)(dot - p) : strlen(p);
		if (n >= sizeof(part))
			return NULL;
		memcpy(part, p, n);
		part[n] = '\0';
		o = cJSON_GetObjectItemCaseSensitive(o, part);
		p += n + (dot ? 1 : 0);
	}
	return o;
}

#define BAD(...)                                 \
	do {                                     \
		snprintf(err, errlen, __VA_ARGS__); \
		cJSON_Delete(j);                 \
		return -EINVAL;                  \
	} while (0)

static bool get_str(const cJSON *j, const char *k, char *dst, size_t n, bool required)
{
	const cJSON *v = at(j, k);
	if (!v)
		return !required && (dst[0] = '\0', true);
	if (!cJSON_IsString(v))
		return false;
	snprintf(dst, n, "%s", v->valuestring);
	return true;
}

static bool get_num(const cJSON *j, const char *k, double min, double max, double *out, bool required)
{
	const cJSON *v = at(j, k);
	if (!v)
		return !required;
	if (!cJSON_IsNumber(v) || v->valuedouble < min || v->valuedouble > max)
		return false;
	*out = v->valuedouble;
	return true;
}

int txn_read_json(const char *line, size_t len, const struct resource_ctx *rc, struct txn_owned *o, char *err,
		  size_t errlen)
{
	cJSON *j = cJSON_ParseWithLength(line, len);
	char ts[64], role[16], method[TXN_METHOD_MAX], path[4096], query[4096];
	double v;

	memset(o, 0, sizeof(*o));
	struct txn *t = &o->t;
	if (!j || !cJSON_IsObject(j))
		BAD("not a JSON object");
	if (!get_str(j, "@timestamp", ts, sizeof(ts), true))
		BAD("@timestamp missing or not a string");
	long long start = txn_parse_rfc3339(ts);
	if (start < 0)
		BAD("@timestamp \"%.40s\" is not RFC 3339 UTC", ts);
	t->ts_start = (uint64_t)start;
	v = 0;
	if (!get_num(j, "event.duration", 0, 1e18, &v, false))
		BAD("event.duration is not a duration in ns");
	t->ts_end = t->ts_start + (uint64_t)v;
	v = 0;
	if (!get_num(j, "event.sequence", 0, 1e18, &v, false))
		BAD("event.sequence is not a counter");
	t->sequence = (uint64_t)v;
	v = 0;
	if (!get_num(j, "process.pid", 0, 4294967295.0, &v, false))
		BAD("process.pid is not a pid");
	t->pid = (uint32_t)v;
	if (!get_str(j, "process.name", o->comm, sizeof(o->comm), false) ||
	    !get_str(j, "process.executable", o->exe, sizeof(o->exe), false) ||
	    !get_str(j, "user.id", o->user, sizeof(o->user), false) ||
	    !get_str(j, "phiwatch.auth", o->auth, sizeof(o->auth), false) ||
	    !get_str(j, "source.ip", t->src_ip, sizeof(t->src_ip), false) ||
	    !get_str(j, "destination.ip", t->dst_ip, sizeof(t->dst_ip), false) ||
	    !get_str(j, "phiwatch.role", role, sizeof(role), false) ||
	    !get_str(j, "http.request.method", method, sizeof(method), true) ||
	    !get_str(j, "url.path", path, sizeof(path), true) ||
	    !get_str(j, "url.query", query, sizeof(query), false))
		BAD("a string field (process, user, source, destination, http.request.method, url) has the wrong type");
	snprintf(t->method, sizeof(t->method), "%s", method);
	if (!get_num(j, "source.port", 0, 65535, &v, false))
		BAD("source.port is not a port");
	t->src_port = (uint16_t)(at(j, "source.port") ? v : 0);
	if (!get_num(j, "destination.port", 0, 65535, &v, false))
		BAD("destination.port is not a port");
	t->dst_port = (uint16_t)(at(j, "destination.port") ? v : 0);
	v = 0;
	if (!get_num(j, "http.response.status_code", 0, 999, &v, false))
		BAD("http.response.status_code is not a status");
	t->status = (int)v;
	v = 0;
	if (!get_num(j, "http.request.bytes", 0, 1e18, &v, false))
		BAD("http.request.bytes is not a count");
	t->req_bytes = (uint64_t)v;
	v = 0;
	if (!get_num(j, "http.response.bytes", 0, 1e18, &v, false))
		BAD("http.response.bytes is not a count");
	t->resp_bytes = (uint64_t)v;
	const cJSON *tl = at(j, "tls.established");
	if (tl && !cJSON_IsBool(tl))
		BAD("tls.established is not a boolean");
	t->tls = tl && cJSON_IsTrue(tl);
	const cJSON *tr = at(j, "phiwatch.truncated");
	t->truncated = tr && cJSON_IsTrue(tr);
	char ver[8] = "1.1";
	get_str(j, "http.version", ver, sizeof(ver), false);
	t->minor_version = strcmp(ver, "1.0") == 0 ? 0 : 1;
	t->role = !strcmp(role, "server") ? PW_ROLE_SERVER : !strcmp(role, "client") ? PW_ROLE_CLIENT : PW_ROLE_UNKNOWN;
	/* the target as sent: path?query */
	bool hq = at(j, "url.query") != NULL;
	int n = snprintf(o->target, sizeof(o->target), "%s%s%s", path, hq ? "?" : "", hq ? query : "");
	t->target = o->target;
	t->target_len = n < 0 ? 0 : (size_t)n >= sizeof(o->target) ? sizeof(o->target) - 1 : (size_t)n;
	t->comm = o->comm;
	t->exe = o->exe;
	t->user = o->user[0] ? o->user : "-";
	t->auth = o->auth[0] ? o->auth : "none";
	t->jwt_scope = "";

	const cJSON *res = at(j, "phiwatch.resource");
	if (res) {
		const cJSON *ty = at(res, "type"), *id = at(res, "id"), *ids = at(res, "ids"), *e;
		if ((ty && !cJSON_IsString(ty)) || (id && !cJSON_IsString(id)) || (ids && !cJSON_IsArray(ids)))
			BAD("phiwatch.resource has the wrong shape");
		if (ty) {
			snprintf(o->rtype, sizeof(o->rtype), "%s", ty->valuestring);
			t->resource_type = o->rtype;
		}
		if (ids) {
			cJSON_ArrayForEach(e, ids) {
				if (!cJSON_IsString(e))
					BAD("phiwatch.resource.ids holds a non-string");
				if (t->n_resource_ids < TXN_MAX_IDS) {
					snprintf(o->ids[t->n_resource_ids], sizeof(o->ids[0]), "%s", e->valuestring);
					t->resource_ids[t->n_resource_ids] = o->ids[t->n_resource_ids];
					t->n_resource_ids++;
				}
			}
		} else if (id) {
			snprintf(o->ids[0], sizeof(o->ids[0]), "%s", id->valuestring);
			t->resource_ids[0] = o->ids[0];
			t->n_resource_ids = 1;
		}
	} else if (rc) {
		struct resource r;
		if (resource__extract(rc, path, strlen(path), hq ? query : "", hq ? strlen(query) : 0, &r) >= 0) {
			if (r.type[0]) {
				snprintf(o->rtype, sizeof(o->rtype), "%s", r.type);
				t->resource_type = o->rtype;
			}
			for (size_t i = 0; i < r.n_ids && i < TXN_MAX_IDS; i++) {
				snprintf(o->ids[i], sizeof(o->ids[0]), "%s", r.ids[i]);
				t->resource_ids[t->n_resource_ids++] = o->ids[i];
			}
			t->is_export = r.is_export;
		}
	}
	cJSON_Delete(j);
	return 0;
}
