/* alert.c — alert JSONL/syslog forms and per-(rule, principal) suppression (see alert.h).
 * Not a sink and no clock: time comes from the alerts and ticks it is given.
 */
#include "alert.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include "siphash.h"

void alert_to_json(const struct alert *a, struct jbuf *b)
{
	char ts[40];

	json_time_rfc3339(ts, sizeof(ts), a->ts_ns);
	json_obj_open(b, NULL);
	json_cstr(b, "@timestamp", ts);
	json_obj_open(b, "event");
	json_cstr(b, "kind", "alert");
	json_i64(b, "severity", a->severity);
	json_obj_close(b);
	json_obj_open(b, "rule");
	json_cstr(b, "name", a->rule);
	json_obj_close(b);
	json_obj_open(b, "user");
	json_cstr(b, "id", a->principal ? a->principal : "-");
	json_obj_close(b);
	json_obj_open(b, "process");
	json_u64(b, "pid", a->pid);
	json_obj_close(b);
	json_cstr(b, "message", a->message ? a->message : "");
	json_obj_open(b, "phiwatch");
	json_key(b, "evidence");
	jbuf_puts(b, a->evidence && a->evidence[0] ? a->evidence : "{}");
	b->need_comma = true;
	json_obj_close(b);
	json_obj_close(b);
}

void alert_to_syslog_msg(const struct alert *a, struct jbuf *b)
{
	char num[160];
	const char *p = a->principal ? a->principal : "-";
	int n;

	jbuf_puts(b, "alert rule=");
	json_escape(b, a->rule, strlen(a->rule));
	n = snprintf(num, sizeof(num), " severity=%d user=\"", a->severity);
	jbuf_put(b, num, (size_t)n);
	json_escape(b, p, strlen(p));
	n = snprintf(num, sizeof(num), "\" count=%llu threshold=%llu window_s=%llu",
		     (unsigned long long)a->count, (unsigned long long)a->threshold,
		     (unsigned long long)a->window_s);
	jbuf_put(b, num, (size_t)n);
	if (a->suppressed) {
		n = snprintf(num, sizeof(num), " suppressed=%llu", (unsigned long long)a->suppressed);
		jbuf_put(b, num, (size_t)n);
	}
	if (a->message && a->message[0]) {
		jbuf_put(b, ": ", 2);
		json_escape(b, a->message, strlen(a->message));
	}
}

int alert_syslog_severity(int severity)
{
	switch (severity) {
	case ALERT_SEV_CRITICAL: return LOG_CRIT;
	case ALERT_SEV_HIGH: return LOG_ERR;
	case ALERT_SEV_MEDIUM: return LOG_WARNING;
	default: return LOG_NOTICE;
	}
}

/* ---- de-duplication ---- */

struct dd_win {
	struct dd_win *hnext;             /* hash chain */
	struct dd_win *prev, *next;       /* FIFO by window start: the head ends first */
	uint64_t hash;
	uint64_t start_ns;                /* the admitted alert's time */
	uint64_t last_ns;                 /* latest suppressed alert */
	uint64_t suppressed;
	const char *rule;                 /* static */
	uint32_t pid;
	int severity;
	size_t size;                      /* bytes allocated, for stats */
	char principal[];
};

struct alert_dedup {
	uint64_t window_ns;
	size_t max_windows;
	struct siphash_key key;
	alert_fn fn;
	void *ctx;
	uint64_t now_ns;                  /* latest time seen */
	struct dd_win **buckets;
	size_t nbuckets;                  /* power of two */
	struct dd_win *head, *tail;
	struct alert_dedup_stats st;
};

struct alert_dedup *alert_dedup__new(uint64_t window_ns, size_t max_windows, uint64_t seed,
				     alert_fn summary_fn, void *ctx)
{
	struct alert_dedup *dd;

	if (!max_windows || !summary_fn) {
		errno = EINVAL;
		return NULL;
	}
	dd = calloc(1, sizeof(*dd));
	if (!dd)
		return NULL;
	dd->nbuckets = 64;
	dd->buckets = calloc(dd->nbuckets, sizeof(*dd->buckets));
	if (!dd->buckets) {
		free(dd);
		return NULL;
	}
	dd->window_ns = window_ns;
	dd->max_windows = max_windows;
	dd->key.k0 = seed ^ 0x5d1e2a4b9c3f7081ull;
	dd->key.k1 = seed * 0x9e3779b97f4a7c15ull + 1;
	dd->fn = summary_fn;
	dd->ctx = ctx;
	return dd;
}

static uint64_t dd_hash(const struct alert_dedup *dd, const char *rule, const char *principal)
{
	size_t rl = strlen(rule), pl = strlen(principal);
	char buf[256];

	/* rule NUL principal: unambiguous, and short keys skip the allocation */
	if (rl + 1 + pl <= sizeof(buf)) {
		memcpy(buf, rule, rl);
		buf[rl] = '\0';
		memcpy(buf + rl + 1, principal, pl);
		return siphash24(&dd->key, buf, rl + 1 + pl);
	}
	return siphash24(&dd->key, rule, rl) ^ (siphash24(&dd->key, principal, pl) * 31);
}

static void dd_unlink(struct alert_dedup *dd, struct dd_win *w)
{
	struct dd_win **pp = &dd->buckets[w->hash & (dd->nbuckets - 1)];

	while (*pp && *pp != w)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = w->hnext;
	if (w->prev)
		w->prev->next = w->next;
	else
		dd->head = w->next;
	if (w->next)
		w->next->prev = w->prev;
	else
		dd->tail = w->prev;
	dd->st.live--;
	dd->st.mem_bytes -= w->size;
}

/* Ends w: the summary (if anything was suppressed) says "in <secs> s". */
static void dd_close(struct alert_dedup *dd, struct dd_win *w, uint64_t end_ns, uint64_t secs)
{
	char msg[400], t0[40], t1[40];
	struct jbuf ev;

	dd_unlink(dd, w);
	if (w->suppressed) {
		json_time_rfc3339(t0, sizeof(t0), w->start_ns);
		json_time_rfc3339(t1, sizeof(t1), w->last_ns);
		jbuf_init(&ev);
		json_obj_open(&ev, NULL);
		json_u64(&ev, "suppressed", w->suppressed);
		json_u64(&ev, "window_s", secs);
		json_cstr(&ev, "first_alert", t0);
		json_cstr(&ev, "last_suppressed", t1);
		json_obj_close(&ev);
		snprintf(msg, sizeof(msg), "%s for %.128s: %llu more suppressed in %llu s", w->rule,
			 w->principal, (unsigned long long)w->suppressed, (unsigned long long)secs);
		struct alert a = {
			.ts_ns = end_ns,
			.severity = w->severity,
			.rule = w->rule,
			.principal = w->principal,
			.pid = w->pid,
			.message = msg,
			.evidence = ev.oom ? NULL : ev.p,
			.count = w->suppressed,
			.window_s = secs,
			.suppressed = w->suppressed,
		};
		dd->st.summaries++;
		dd->fn(dd->ctx, &a);
		jbuf_free(&ev);
	}
	free(w);
}

static uint64_t window_secs(const struct alert_dedup *dd)
{
	return (dd->window_ns + 999999999ull) / 1000000000ull;
}

void alert_dedup_tick(struct alert_dedup *dd, uint64_t now_ns)
{
	if (now_ns > dd->now_ns)
		dd->now_ns = now_ns;
	while (dd->head && dd->now_ns >= dd->head->start_ns &&
	       dd->now_ns - dd->head->start_ns >= dd->window_ns)
		dd_close(dd, dd->head, dd->head->start_ns + dd->window_ns, window_secs(dd));
}

static void dd_grow(struct alert_dedup *dd)
{
	size_t nb = dd->nbuckets * 2;
	struct dd_win **b = calloc(nb, sizeof(*b));

	if (!b)
		return;  /* longer chains, still correct */
	for (size_t i = 0; i < dd->nbuckets; i++) {
		struct dd_win *w = dd->buckets[i], *n;
		for (; w; w = n) {
			n = w->hnext;
			w->hnext = b[w->hash & (nb - 1)];
			b[w->hash & (nb - 1)] = w;
		}
	}
	free(dd->buckets);
	dd->buckets = b;
	dd->nbuckets = nb;
}

bool alert_dedup_admit(struct alert_dedup *dd, const char *rule, const char *principal,
		       int severity, uint32_t pid, uint64_t ts_ns)
{
	uint64_t h;
	struct dd_win *w;
	size_t plen;

	if (!principal)
		principal = "-";
	alert_dedup_tick(dd, ts_ns);
	h = dd_hash(dd, rule, principal);
	for (w = dd->buckets[h & (dd->nbuckets - 1)]; w; w = w->hnext) {
		if (w->hash == h && strcmp(w->rule, rule) == 0 && strcmp(w->principal, principal) == 0)
			break;
	}
	if (w) {
		/* Out-of-order input can reach a window that the FIFO head hides. */
		if (ts_ns >= w->start_ns && ts_ns - w->start_ns >= dd->window_ns) {
			dd_close(dd, w, w->start_ns + dd->window_ns, window_secs(dd));
		} else {
			w->suppressed++;
			if (ts_ns > w->last_ns)
				w->last_ns = ts_ns;
			dd->st.suppressed++;
			return false;
		}
	}
	dd->st.admitted++;
	if (dd->st.live >= dd->max_windows) {
		uint64_t el = dd->now_ns > dd->head->start_ns ? dd->now_ns - dd->head->start_ns : 0;
		dd->st.forced++;
		dd_close(dd, dd->head, dd->now_ns, (el + 999999999ull) / 1000000000ull);
	}
	plen = strlen(principal);
	w = malloc(sizeof(*w) + plen + 1);
	if (!w)
		return true;
	memset(w, 0, sizeof(*w));
	memcpy(w->principal, principal, plen + 1);
	w->size = sizeof(*w) + plen + 1;
	w->hash = h;
	w->start_ns = w->last_ns = ts_ns;
	w->rule = rule;
	w->pid = pid;
	w->severity = severity;
	w->hnext = dd->buckets[h & (dd->nbuckets - 1)];
	dd->buckets[h & (dd->nbuckets - 1)] = w;
	w->prev = dd->tail;
	if (dd->tail)
		dd->tail->next = w;
	else
		dd->head = w;
	dd->tail = w;
	dd->st.live++;
	dd->st.mem_bytes += w->size;
	if (dd->st.live > dd->nbuckets)
		dd_grow(dd);
	return true;
}

void alert_dedup_flush(struct alert_dedup *dd)
{
	while (dd->head) {
		struct dd_win *w = dd->head;
		uint64_t end = dd->now_ns > w->last_ns ? dd->now_ns : w->last_ns;
		uint64_t el = end - w->start_ns;
		dd_close(dd, w, end, (el + 999999999ull) / 1000000000ull);
	}
}

void alert_dedup_stats(const struct alert_dedup *dd, struct alert_dedup_stats *out)
{
	*out = dd->st;
	out->mem_bytes += sizeof(*dd) + dd->nbuckets * sizeof(*dd->buckets);
}

void alert_dedup__free(struct alert_dedup *dd)
{
	if (!dd)
		return;
	while (dd->head) {
		struct dd_win *w = dd->head;
		dd_unlink(dd, w);
		free(w);
	}
	free(dd->buckets);
	free(dd);
}
