/* detect_anomaly.c — rate_anomaly: a principal's request rate far above its own learned
 * per-minute baseline. The rate is a sliding 60 s estimate (this minute plus the unexpired
 * share of the previous one); the baseline is an EWMA over the principal's active minutes,
 * trusted only after a learning period; a floor keeps quiet principals from alerting.
 */
#include "detect.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define MINUTE_NS 60000000000ull

struct anomaly_ps {
	uint32_t cur_min;      /* minute number (ts / 60 s), modulo 2^32 */
	uint16_t cur, prev;    /* calls in this minute and in the one before */
	float baseline;        /* EWMA of calls per active minute */
	uint16_t samples;      /* active minutes learned (saturating) */
	uint8_t used;
};

static inline uint16_t sat_inc16(uint16_t v)
{
	return v == UINT16_MAX ? v : (uint16_t)(v + 1);
}

static double anomaly_threshold(const struct detect_opts *o, double baseline)
{
	double t = o->anomaly.factor * baseline;
	return t > o->anomaly.floor_per_min ? t : o->anomaly.floor_per_min;
}

/* A minute with c calls ended: learn it. Once learned, an outlying minute
 * counts only up to the threshold, so a burst cannot teach itself normal. */
static void anomaly_learn(const struct detect_opts *o, struct anomaly_ps *ps, double c)
{
	if (ps->samples >= o->anomaly.learn_minutes) {
		double cap = anomaly_threshold(o, ps->baseline);
		if (c > cap)
			c = cap;
	}
	if (ps->samples == 0)
		ps->baseline = (float)c;
	else
		ps->baseline = (float)(ps->baseline + o->anomaly.alpha * (c - ps->baseline));
	ps->samples = sat_inc16(ps->samples);
}

/* A number with two decimals, written without printf's locale-dependent point. */
static void json_fixed2(struct jbuf *b, const char *key, double v)
{
	char num[48];
	long long c = llround(v * 100.0);
	int n = snprintf(num, sizeof(num), "%s%lld.%02lld", c < 0 ? "-" : "", llabs(c) / 100,
			 llabs(c) % 100);

	json_key(b, key);
	jbuf_put(b, num, (size_t)n);
	b->need_comma = true;
}

static void anomaly_alert(struct detector *det, const struct detect_txn *x,
			  const struct anomaly_ps *ps, double rate, double thr)
{
	const struct detect_opts *o = det->o;
	char msg[320];

	if (!detect_admit(det, DETECT_RULE_RATE_ANOMALY, x->principal, x->t->pid, x->ts_ns,
			  ALERT_SEV_MEDIUM))
		return;
	struct jbuf *b = detect_scratch(det);
	json_obj_open(b, NULL);
	json_u64(b, "rate_per_min", (uint64_t)llround(rate));
	json_fixed2(b, "baseline_per_min", ps->baseline);
	json_fixed2(b, "factor", o->anomaly.factor);
	json_u64(b, "threshold", (uint64_t)ceil(thr));
	json_u64(b, "floor_per_min", o->anomaly.floor_per_min);
	json_u64(b, "learned_minutes", ps->samples);
	json_u64(b, "window_s", 60);
	json_cstr(b, "source_ip", x->t->src_ip);
	detect_json_endpoint(b, x);
	json_obj_close(b);
	snprintf(msg, sizeof(msg),
		 "%.128s made %.0f requests in the last 60 s, %.1f times its baseline of %.1f per "
		 "minute (alert above %.1fx, floor %u)",
		 x->principal, rate, ps->baseline > 0 ? rate / ps->baseline : rate, ps->baseline,
		 o->anomaly.factor, o->anomaly.floor_per_min);
	detect_raise(det, DETECT_RULE_RATE_ANOMALY, x, x->principal, ALERT_SEV_MEDIUM, msg, b, (uint64_t)llround(rate), (uint64_t)ceil(thr), 60);
}

static void anomaly_on_txn(struct detector *det, const struct detect_txn *x)
{
	const struct detect_opts *o = det->o;
	struct anomaly_ps *ps;
	uint32_t min = (uint32_t)(x->ts_ns / MINUTE_NS);
	int32_t d;

	if (!x->p)
		return;
	ps = detect_pstate(det, x->p);
	if (!ps->used) {
		ps->used = 1;
		ps->cur_min = min;
		ps->cur = 1;
		return;
	}
	d = (int32_t)(min - ps->cur_min);
	if (d == 0) {
		ps->cur = sat_inc16(ps->cur);
	} else if (d > 0) {
		anomaly_learn(o, ps, ps->cur);
		ps->prev = d == 1 ? ps->cur : 0;
		ps->cur = 1;
		ps->cur_min = min;
	} else {
		if (d == -1)
			ps->prev = sat_inc16(ps->prev);
		return;   /* a late call: counted, no alert on stale time */
	}
	if (ps->samples < o->anomaly.learn_minutes)
		return;
	double into = (double)(x->ts_ns % MINUTE_NS) / (double)MINUTE_NS;
	double rate = ps->cur + ps->prev * (1.0 - into);
	double thr = anomaly_threshold(o, ps->baseline);
	if (rate >= o->anomaly.floor_per_min && rate > thr)
		anomaly_alert(det, x, ps, rate, thr);
}

const struct detector_ops detect_anomaly_ops = {
	.name = "anomaly",
	.pstate_size = sizeof(struct anomaly_ps),
	.on_txn = anomaly_on_txn,
};
