/* detect_export.c — bulk_export: one principal makes >= N exports within a sliding window.
 * An export is classified from the call itself (path, query, response size): FHIR $export,
 * export routes, big pages (_count >= 1000), attachments (Binary, DocumentReference
 * attachments) and very large responses. Only answered (2xx) calls count.
 */
#include "detect.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define EXPORT_EP_MAX 96       /* bytes of "METHOD target" kept per export, for evidence */

struct export_ent {
	uint32_t ts;           /* ms */
	uint8_t kind;          /* enum detect_export_kind */
	char ep[EXPORT_EP_MAX - 5];
};

/* Allocated at a principal's first export: most principals never export. */
struct export_state {
	uint16_t n, cap;
	struct export_ent e[]; /* oldest first */
};

struct export_ps {
	struct export_state *s;
};

const char *detect_export_kind_name(enum detect_export_kind k)
{
	switch (k) {
	case DETECT_EXPORT_FHIR: return "fhir_export";
	case DETECT_EXPORT_ROUTE: return "export_route";
	case DETECT_EXPORT_ATTACHMENT: return "attachment";
	case DETECT_EXPORT_LARGE_PAGE: return "large_page";
	case DETECT_EXPORT_LARGE_RESPONSE: return "large_response";
	case DETECT_EXPORT_FLAGGED: return "resource_export";
	default: return "none";
	}
}

static inline char lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c | 0x20) : c;
}

/* seg equals lit, ASCII case-insensitively; a leading "%24" in seg reads as '$'. */
static bool seg_is(const char *seg, size_t n, const char *lit)
{
	size_t l = strlen(lit);

	if (lit[0] == '$' && n >= 3 && seg[0] == '%' && seg[1] == '2' && seg[2] == '4') {
		seg += 3;
		n -= 3;
		lit++;
		l--;
	}
	return n == l && strncasecmp(seg, lit, l) == 0;
}

static bool seg_has_prefix(const char *seg, size_t n, const char *lit)
{
	size_t l = strlen(lit);
	return n > l && strncasecmp(seg, lit, l) == 0;
}

/* Parses a decimal value (digits only, saturating); false when not a number. */
static bool parse_u64(const char *s, size_t n, uint64_t *out)
{
	uint64_t v = 0;

	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		unsigned d = (unsigned)(s[i] - '0');
		v = v > (UINT64_MAX - d) / 10 ? UINT64_MAX : v * 10 + d;
	}
	*out = v;
	return true;
}

static bool query_large_page(const struct detect_opts *o, const char *q, size_t n)
{
	static const char *const keys[] = { "_count", "count", "limit", "_limit",
					    "page_size", "pagesize", "per_page" };
	size_t i = 0;

	while (i < n) {
		size_t start = i, eq = 0;
		while (i < n && q[i] != '&' && q[i] != ';') {
			if (q[i] == '=' && !eq)
				eq = i;
			i++;
		}
		char k0 = eq ? lower(q[start]) : 0;
		if (eq && (k0 == '_' || k0 == 'c' || k0 == 'l' || k0 == 'p')) {
			uint64_t v;
			for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
				if (seg_is(q + start, eq - start, keys[k]) &&
				    parse_u64(q + eq + 1, i - eq - 1, &v) && v >= o->bulk_export.page_size)
					return true;
			}
		}
		i++;
	}
	return false;
}

enum detect_export_kind detect_export_classify(const struct detect_opts *o, const char *path,
					       size_t path_len, const char *query,
					       size_t query_len, uint64_t resp_bytes)
{
	enum detect_export_kind kind = DETECT_EXPORT_NONE;
	bool binary_prev = false, docref = false;
	size_t i = 0;

	while (i < path_len && kind == DETECT_EXPORT_NONE) {
		while (i < path_len && path[i] == '/')
			i++;
		size_t s = i;
		while (i < path_len && path[i] != '/')
			i++;
		const char *seg = path + s;
		size_t n = i - s;
		if (n == 0)
			break;
		/* most segments (fhir, Patient, ids) are rejected on their first byte */
		char c0 = lower(seg[0]);
		bool maybe = c0 == '$' || c0 == '%' || c0 == 'e' || c0 == 'b' || c0 == '_' ||
			     c0 == 'a' || c0 == 'c' || c0 == 'd';
		if (binary_prev) {
			kind = DETECT_EXPORT_ATTACHMENT;
		} else if (!maybe) {
			/* nothing */
		} else if (seg_is(seg, n, "$export")) {
			kind = DETECT_EXPORT_FHIR;
		} else if (seg_is(seg, n, "export") || seg_is(seg, n, "exports") ||
			   seg_is(seg, n, "bulk-export") || seg_is(seg, n, "bulk_export") ||
			   seg_is(seg, n, "bulkexport") || seg_is(seg, n, "_export") ||
			   seg_has_prefix(seg, n, "export.")) {
			kind = DETECT_EXPORT_ROUTE;
		} else if (seg_is(seg, n, "$binary-access-read") || seg_is(seg, n, "attachment") ||
			   seg_is(seg, n, "attachments") ||
			   (docref && (seg_is(seg, n, "content") || seg_is(seg, n, "download")))) {
			kind = DETECT_EXPORT_ATTACHMENT;
		}
		binary_prev = (c0 == 'b') && seg_is(seg, n, "Binary");
		docref |= (c0 == 'd') && seg_is(seg, n, "DocumentReference");
	}
	if (kind == DETECT_EXPORT_NONE && query && query_large_page(o, query, query_len))
		kind = DETECT_EXPORT_LARGE_PAGE;
	if (kind == DETECT_EXPORT_NONE && resp_bytes >= o->bulk_export.large_response_bytes)
		kind = DETECT_EXPORT_LARGE_RESPONSE;
	return kind;
}

static void export_alert(struct detector *det, const struct detect_txn *x,
			 const struct export_state *s, enum detect_export_kind kind)
{
	const struct detect_opts *o = det->o;
	char msg[320], ts[40];

	if (!detect_admit(det, DETECT_RULE_BULK_EXPORT, x->principal, x->t->pid, x->ts_ns,
			  ALERT_SEV_HIGH))
		return;
	struct jbuf *b = detect_scratch(det);
	json_obj_open(b, NULL);
	json_u64(b, "count", s->n);
	json_u64(b, "threshold", o->bulk_export.count);
	json_u64(b, "window_s", o->bulk_export.window_s);
	json_u64(b, "response_bytes", x->t->resp_bytes);
	json_cstr(b, "source_ip", x->t->src_ip);
	json_arr_open(b, "exports");
	/* times are rebuilt from the ms clock relative to this call */
	for (uint16_t i = 0; i < s->n; i++) {
		uint64_t back = (uint64_t)(uint32_t)detect_ms_diff(x->ms, s->e[i].ts) * 1000000ull;
		json_obj_open(b, NULL);
		json_time_rfc3339(ts, sizeof(ts), x->ts_ns > back ? x->ts_ns - back : 0);
		json_cstr(b, "at", ts);
		json_cstr(b, "kind", detect_export_kind_name(s->e[i].kind));
		json_cstr(b, "endpoint", s->e[i].ep);
		json_obj_close(b);
	}
	json_arr_close(b);
	json_arr_open(b, "sample_endpoints");
	for (uint16_t i = 0; i < s->n && i < 5; i++)
		json_cstr(b, NULL, s->e[s->n - 1 - i].ep);
	json_arr_close(b);
	json_obj_close(b);
	snprintf(msg, sizeof(msg), "%.128s made %u exports within %u s (threshold %u), the last a %s",
		 x->principal, s->n, o->bulk_export.window_s, o->bulk_export.count,
		 detect_export_kind_name(kind));
	detect_raise(det, DETECT_RULE_BULK_EXPORT, x, x->principal, ALERT_SEV_HIGH, msg, b, s->n, o->bulk_export.count, o->bulk_export.window_s);
}

static void export_on_txn(struct detector *det, const struct detect_txn *x)
{
	const struct detect_opts *o = det->o;
	const struct txn *t = x->t;
	const uint32_t window_ms = o->bulk_export.window_s * 1000u;
	struct export_ps *ps;
	struct export_state *s;
	enum detect_export_kind kind;

	if (!x->p || t->status < 200 || t->status > 299)
		return;
	kind = detect_export_classify(o, x->path, x->path_len, x->has_query ? x->query : NULL,
				      x->query_len, t->resp_bytes);
	/* resource.c's own verdict counts too (its _count bound is fixed at 1000) */
	if (kind == DETECT_EXPORT_NONE && t->is_export)
		kind = DETECT_EXPORT_FLAGGED;
	if (kind == DETECT_EXPORT_NONE)
		return;
	ps = detect_pstate(det, x->p);
	if (!ps->s) {
		size_t sz = sizeof(*s) + o->bulk_export.count * sizeof(s->e[0]);
		ps->s = calloc(1, sz);
		if (!ps->s) {
			detect_oom(det);
			return;
		}
		ps->s->cap = (uint16_t)o->bulk_export.count;
		det->mem += sz;
	}
	s = ps->s;
	/* newest time kept, then expiry relative to it (sliding, late calls placed by time) */
	uint32_t newest = x->ms;
	if (s->n && detect_ms_diff(s->e[s->n - 1].ts, newest) > 0)
		newest = s->e[s->n - 1].ts;
	if (detect_ms_diff(newest, x->ms) > (int32_t)window_ms)
		return;
	uint16_t drop = 0;
	while (drop < s->n && detect_ms_diff(newest, s->e[drop].ts) > (int32_t)window_ms)
		drop++;
	if (drop) {
		memmove(s->e, s->e + drop, (s->n - drop) * sizeof(s->e[0]));
		s->n = (uint16_t)(s->n - drop);
	}
	if (s->n == s->cap) {
		if (detect_ms_diff(s->e[0].ts, x->ms) > 0)
			return;
		memmove(s->e, s->e + 1, (s->n - 1u) * sizeof(s->e[0]));
		s->n--;
	}
	uint16_t i = s->n;
	while (i > 0 && detect_ms_diff(s->e[i - 1].ts, x->ms) > 0) {
		s->e[i] = s->e[i - 1];
		i--;
	}
	struct export_ent *e = &s->e[i];
	size_t ml = strnlen(t->method, sizeof(t->method));
	size_t room = sizeof(e->ep) - 1, tl = t->target ? t->target_len : 0;
	e->ts = x->ms;
	e->kind = (uint8_t)kind;
	if (ml > room)
		ml = room;
	memcpy(e->ep, t->method, ml);
	size_t off = ml;
	if (off < room)
		e->ep[off++] = ' ';
	if (tl > room - off)
		tl = room - off;
	if (tl)
		memcpy(e->ep + off, t->target, tl);
	/* the cut may split a UTF-8 sequence: json_escape turns it into U+FFFD */
	e->ep[off + tl] = '\0';
	s->n++;
	if (s->n >= o->bulk_export.count)
		export_alert(det, x, s, kind);
}

static void export_pstate_free(struct detector *det, void *pstate)
{
	struct export_ps *ps = pstate;

	if (ps->s) {
		det->mem -= sizeof(*ps->s) + ps->s->cap * sizeof(ps->s->e[0]);
		free(ps->s);
		ps->s = NULL;
	}
}

static size_t export_mem_bytes(const struct detector *det)
{
	return det->mem;
}

const struct detector_ops detect_export_ops = {
	.name = "export",
	.pstate_size = sizeof(struct export_ps),
	.on_txn = export_on_txn,
	.mem_bytes = export_mem_bytes,
	.pstate_free = export_pstate_free,
};
