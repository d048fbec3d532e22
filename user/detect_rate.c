/* detect_rate.c — rate_limit_exceeded (one principal > limit calls in any sliding window) and
 * rate_limit_not_enforced (calls past that limit still answered 2xx).
 * State per principal: a deque of at most limit+1 call times, so a quiet principal costs little.
 */
#include "detect.h"

#include <stdio.h>

struct rate_ps {
	struct detect_tsq q;
	/* the current over-limit episode: calls past the limit, by answer */
	uint16_t beyond_2xx;
	uint16_t beyond_other;
	uint32_t over_since;   /* ms */
	bool over;
};

static inline uint16_t sat_inc16(uint16_t v)
{
	return v == UINT16_MAX ? v : (uint16_t)(v + 1);
}

static void rate_exceeded(struct detector *det, const struct detect_txn *x, struct rate_ps *ps,
			  uint32_t n)
{
	const struct detect_opts *o = det->o;
	uint32_t span = (uint32_t)detect_ms_diff(detect_tsq_newest(&ps->q), detect_tsq_oldest(&ps->q));
	char msg[320];

	if (!detect_admit(det, DETECT_RULE_RATE_LIMIT_EXCEEDED, x->principal, x->t->pid, x->ts_ns,
			  ALERT_SEV_MEDIUM))
		return;
	struct jbuf *b = detect_scratch(det);
	json_obj_open(b, NULL);
	json_u64(b, "count", n);
	json_u64(b, "threshold", o->rate.limit);
	json_u64(b, "window_s", o->rate.window_s);
	json_u64(b, "span_ms", span);
	json_cstr(b, "source_ip", x->t->src_ip);
	detect_json_endpoint(b, x);
	json_obj_close(b);
	snprintf(msg, sizeof(msg), "%.128s made %u requests in %.3f s, over the limit of %u per %u s",
		 x->principal, n, span / 1000.0, o->rate.limit, o->rate.window_s);
	detect_raise(det, DETECT_RULE_RATE_LIMIT_EXCEEDED, x, x->principal, ALERT_SEV_MEDIUM, msg, b, n, o->rate.limit, o->rate.window_s);
}

static void rate_not_enforced(struct detector *det, const struct detect_txn *x,
			      struct rate_ps *ps)
{
	const struct detect_opts *o = det->o;
	char msg[320];

	if (!detect_admit(det, DETECT_RULE_RATE_LIMIT_NOT_ENFORCED, x->principal, x->t->pid,
			  x->ts_ns, ALERT_SEV_HIGH))
		return;
	struct jbuf *b = detect_scratch(det);
	json_obj_open(b, NULL);
	json_u64(b, "answered_2xx", ps->beyond_2xx);
	json_u64(b, "answered_other", ps->beyond_other);
	json_u64(b, "threshold", o->rate.not_enforced_min);
	json_u64(b, "rate_limit", o->rate.limit);
	json_u64(b, "window_s", o->rate.window_s);
	json_u64(b, "over_limit_ms", (uint32_t)detect_ms_diff(x->ms, ps->over_since));
	json_cstr(b, "source_ip", x->t->src_ip);
	detect_json_endpoint(b, x);
	json_obj_close(b);
	snprintf(msg, sizeof(msg),
		 "%u requests by %.128s past the limit of %u per %u s were answered 2xx (%u were "
		 "refused): the API does not enforce its rate limit",
		 ps->beyond_2xx, x->principal, o->rate.limit, o->rate.window_s, ps->beyond_other);
	detect_raise(det, DETECT_RULE_RATE_LIMIT_NOT_ENFORCED, x, x->principal, ALERT_SEV_HIGH, msg, b, ps->beyond_2xx, o->rate.not_enforced_min, o->rate.window_s);
}

static void rate_on_txn(struct detector *det, const struct detect_txn *x)
{
	const struct detect_opts *o = det->o;
	struct rate_ps *ps;
	bool oom = false;
	uint32_t n;

	if (!x->p)
		return;
	ps = detect_pstate(det, x->p);
	n = detect_tsq_add(&ps->q, x->ms, o->rate.window_s * 1000u, o->rate.limit + 1u, &det->mem,
			   &oom);
	if (oom)
		detect_oom(det);
	if (n <= o->rate.limit) {
		ps->over = false;
		return;
	}
	if (!ps->over) {
		ps->over = true;
		ps->over_since = x->ms;
		ps->beyond_2xx = ps->beyond_other = 0;
	}
	if (o->rate.enabled)
		rate_exceeded(det, x, ps, n);
	if (!o->rate.not_enforced || x->t->status == 0)
		return;
	if (x->t->status >= 200 && x->t->status <= 299)
		ps->beyond_2xx = sat_inc16(ps->beyond_2xx);
	else
		ps->beyond_other = sat_inc16(ps->beyond_other);
	/* mostly refused (429/503) means the API enforces a limit near ours */
	if (ps->beyond_2xx >= o->rate.not_enforced_min && ps->beyond_2xx > ps->beyond_other)
		rate_not_enforced(det, x, ps);
}

static void rate_pstate_free(struct detector *det, void *pstate)
{
	struct rate_ps *ps = pstate;

	detect_tsq_free(&ps->q, &det->mem);
}

static size_t rate_mem_bytes(const struct detector *det)
{
	return det->mem;
}

const struct detector_ops detect_rate_ops = {
	.name = "rate",
	.pstate_size = sizeof(struct rate_ps),
	.on_txn = rate_on_txn,
	.mem_bytes = rate_mem_bytes,
	.pstate_free = rate_pstate_free,
};
