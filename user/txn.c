/* txn.c — transaction output forms (see txn.h). The field names are the contract of shared/DESIGN.md. */
#include "txn.h"

#include <stdio.h>
#include <string.h>

#include "phiwatch/events.h"

static const char *role_name(int role)
{
	switch (role) {
	case PW_ROLE_SERVER: return "server";
	case PW_ROLE_CLIENT: return "client";
	default: return "unknown";
	}
}

void txn_split_target(const char *t, size_t len, const char **path, size_t *path_len,
		      const char **query, size_t *query_len, bool *has_query)
{
	size_t start = 0;

	/* absolute-form: scheme "://" authority path */
	if (len > 0 && t[0] != '/') {
		const char *sep = memmem(t, len, "://", 3);
		if (sep) {
			size_t a = (size_t)(sep - t) + 3;
			while (a < len && t[a] != '/' && t[a] != '?')
				a++;
			start = a;
		}
	}
	const char *q = memchr(t + start, '?', len - start);
	size_t end = q ? (size_t)(q - t) : len;
	*path = t + start;
	*path_len = end - start;
	if (*path_len == 0 && start > 0) {
		*path = "/";
		*path_len = 1;
	}
	*has_query = q != NULL;
	*query = q ? q + 1 : t + len;
	*query_len = q ? len - end - 1 : 0;
}

void txn_to_json(const struct txn *t, struct jbuf *b)
{
	char ts[40];
	const char *path, *query;
	size_t path_len, query_len;
	bool has_query;

	json_time_rfc3339(ts, sizeof(ts), t->ts_start);
	txn_split_target(t->target, t->target_len, &path, &path_len, &query, &query_len, &has_query);

	json_obj_open(b, NULL);
	json_cstr(b, "@timestamp", ts);
	json_obj_open(b, "event");
	json_cstr(b, "kind", "event");
	json_arr_open(b, "category");
	json_cstr(b, NULL, "web");
	json_arr_close(b);
	json_u64(b, "duration", t->ts_end > t->ts_start ? t->ts_end - t->ts_start : 0);
	json_u64(b, "sequence", t->sequence);
	json_obj_close(b);
	json_obj_open(b, "process");
	json_u64(b, "pid", t->pid);
	json_cstr(b, "name", t->comm);
	json_cstr(b, "executable", t->exe);
	json_obj_close(b);
	json_obj_open(b, "user");
	json_cstr(b, "id", t->user ? t->user : "-");
	json_obj_close(b);
	json_obj_open(b, "source");
	json_cstr(b, "ip", t->src_ip);
	json_u64(b, "port", t->src_port);
	json_obj_close(b);
	json_obj_open(b, "destination");
	json_cstr(b, "ip", t->dst_ip);
	json_u64(b, "port", t->dst_port);
	json_obj_close(b);
	json_obj_open(b, "tls");
	json_bool(b, "established", t->tls);
	json_obj_close(b);
	json_obj_open(b, "http");
	json_cstr(b, "version", t->minor_version == 0 ? "1.0" : "1.1");
	json_obj_open(b, "request");
	json_cstr(b, "method", t->method);
	json_u64(b, "bytes", t->req_bytes);
	json_obj_close(b);
	json_obj_open(b, "response");
	json_u64(b, "status_code", (uint64_t)t->status);
	json_u64(b, "bytes", t->resp_bytes);
	json_obj_close(b);
	json_obj_close(b);
	json_obj_open(b, "url");
	json_str(b, "path", path, path_len);
	if (has_query)
		json_str(b, "query", query, query_len);
	json_obj_close(b);
	json_obj_open(b, "phiwatch");
	json_cstr(b, "role", role_name(t->role));
	json_cstr(b, "auth", t->auth ? t->auth : "none");
	if (t->resource_type || t->n_resource_ids) {
		json_obj_open(b, "resource");
		if (t->resource_type)
			json_cstr(b, "type", t->resource_type);
		if (t->n_resource_ids)
			json_cstr(b, "id", t->resource_ids[0]);
		if (t->n_resource_ids > 1) {
			json_arr_open(b, "ids");
			for (size_t i = 0; i < t->n_resource_ids; i++)
				json_cstr(b, NULL, t->resource_ids[i]);
			json_arr_close(b);
		}
		json_obj_close(b);
	}
	json_bool(b, "truncated", t->truncated);
	json_obj_close(b);
	json_obj_close(b);
}

void txn_to_line(const struct txn *t, struct jbuf *b)
{
	char ts[40], num[160];
	uint64_t dur = t->ts_end > t->ts_start ? t->ts_end - t->ts_start : 0;

	json_time_rfc3339(ts, sizeof(ts), t->ts_start);
	/* "2026-11-28T10:21:41.123456Z" -> "10:21:41.123456" */
	jbuf_put(b, ts + 11, 15);
	/* comm is attacker-influenced (prctl): escaped like every other field */
	jbuf_put(b, " ", 1);
	json_escape(b, t->comm, strlen(t->comm));
	snprintf(num, sizeof(num), "[%u] %s %s:%u -> %s:%u%s ", t->pid, role_name(t->role),
		 t->src_ip, t->src_port, t->dst_ip, t->dst_port, t->tls ? " tls" : "");
	jbuf_puts(b, num);
	json_escape(b, t->method, strlen(t->method));
	jbuf_put(b, " ", 1);
	json_escape(b, t->target, t->target_len > 200 ? 200 : t->target_len);
	snprintf(num, sizeof(num), " %d %.3fms req=%llu resp=%llu user=", t->status, dur / 1e6,
		 (unsigned long long)t->req_bytes, (unsigned long long)t->resp_bytes);
	jbuf_puts(b, num);
	json_escape(b, t->user ? t->user : "-", strlen(t->user ? t->user : "-"));
	if (t->truncated)
		jbuf_puts(b, " truncated");
}
