/* detect_loss.c — capture_loss: events dropped in the kernel or in userspace. Alerts on the
 * first report with new drops; repeats inside the suppression window are suppressed, and the
 * next alert counts every drop since the previous one. Not per principal: user.id is "-".
 */
#include "detect.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOSS_MAX_REASONS 32

struct loss_priv {
	uint64_t last[LOSS_MAX_REASONS];      /* cumulative counters last seen */
	uint64_t pending[LOSS_MAX_REASONS];   /* drops since the last emitted alert */
	uint64_t since_ns;                    /* first drop not yet reported */
	bool have_since;
};

static int loss_init(struct detector *det)
{
	det->priv = calloc(1, sizeof(struct loss_priv));
	if (!det->priv)
		return -ENOMEM;
	det->mem = sizeof(struct loss_priv);
	return 0;
}

static void loss_on_drops(struct detector *det, uint64_t ts_ns, const uint64_t *drops, size_t n,
			  const char *const *names)
{
	struct loss_priv *lp = det->priv;
	uint64_t fresh = 0, total = 0;
	char msg[512], name[32];
	size_t off;

	if (n > LOSS_MAX_REASONS)
		n = LOSS_MAX_REASONS;
	for (size_t i = 0; i < n; i++) {
		/* a counter that went down was reset: all of it is new */
		uint64_t d = drops[i] >= lp->last[i] ? drops[i] - lp->last[i] : drops[i];
		lp->last[i] = drops[i];
		lp->pending[i] += d;
		fresh += d;
	}
	if (!fresh)
		return;
	if (!lp->have_since || ts_ns < lp->since_ns) {
		lp->since_ns = ts_ns;
		lp->have_since = true;
	}
	if (!detect_admit(det, DETECT_RULE_CAPTURE_LOSS, "-", 0, ts_ns, ALERT_SEV_HIGH))
		return;
	struct jbuf *b = detect_scratch(det);
	json_obj_open(b, NULL);
	json_obj_open(b, "dropped_by_reason");
	for (size_t i = 0; i < n; i++) {
		if (!lp->pending[i])
			continue;
		snprintf(name, sizeof(name), "reason%zu", i);
		json_u64(b, names && names[i] ? names[i] : name, lp->pending[i]);
		total += lp->pending[i];
	}
	json_obj_close(b);
	json_u64(b, "count", total);
	json_u64(b, "since_ms", (ts_ns - lp->since_ns) / 1000000ull);
	json_obj_open(b, "cumulative_by_reason");
	for (size_t i = 0; i < n; i++) {
		if (!lp->last[i])
			continue;
		snprintf(name, sizeof(name), "reason%zu", i);
		json_u64(b, names && names[i] ? names[i] : name, lp->last[i]);
	}
	json_obj_close(b);
	json_obj_close(b);
	if (ts_ns - lp->since_ns >= 1000000000ull)
		off = (size_t)snprintf(msg, sizeof(msg), "capture lost %llu events over %llu s (",
				       (unsigned long long)total,
				       (unsigned long long)((ts_ns - lp->since_ns) / 1000000000ull));
	else
		off = (size_t)snprintf(msg, sizeof(msg), "capture lost %llu events (",
				       (unsigned long long)total);
	bool first = true;
	for (size_t i = 0; i < n && off < sizeof(msg); i++) {
		if (!lp->pending[i])
			continue;
		snprintf(name, sizeof(name), "reason%zu", i);
		off += (size_t)snprintf(msg + off, sizeof(msg) - off, "%s%.31s %llu", first ? "" : ", ",
					names && names[i] ? names[i] : name,
					(unsigned long long)lp->pending[i]);
		first = false;
	}
	if (off < sizeof(msg))
		snprintf(msg + off, sizeof(msg) - off, "): transactions and alerts may be missing");
	struct alert a = {
		.ts_ns = ts_ns,
		.severity = ALERT_SEV_HIGH,
		.principal = "-",
		.pid = 0,
		.message = msg,
		.evidence = b->oom ? NULL : b->p,
		.count = total,
	};
	detect_emit(det, DETECT_RULE_CAPTURE_LOSS, &a);
	memset(lp->pending, 0, sizeof(lp->pending));
	lp->have_since = false;
}

static void loss_free(struct detector *det)
{
	free(det->priv);
	det->priv = NULL;
	det->mem = 0;
}

const struct detector_ops detect_loss_ops = {
	.name = "capture_loss",
	.init = loss_init,
	.on_drops = loss_on_drops,
	.free = loss_free,
};
