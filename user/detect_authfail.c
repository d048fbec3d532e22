/* detect_authfail.c — auth_failures: >= N responses 401/403 within a sliding window, counted for
 * the principal and, when the call named a user, for its source IP as well (one IP trying
 * many users is credential stuffing; that alert's user.id is "ip:<addr>").
 */
#include "detect.h"

#include <stdio.h>
#include <string.h>

struct authfail_ps {
	struct detect_tsq q;
};

static void authfail_alert(struct detector *det, const struct detect_txn *x, const char *key,
			   bool source, uint32_t n)
{
	const struct detect_opts *o = det->o;
	char msg[320];

	if (!detect_admit(det, DETECT_RULE_AUTH_FAILURES, key, x->t->pid, x->ts_ns,
			  ALERT_SEV_MEDIUM))
		return;
	struct jbuf *b = detect_scratch(det);
	json_obj_open(b, NULL);
	json_u64(b, "count", n);
	json_u64(b, "threshold", o->auth_failures.count);
	json_u64(b, "window_s", o->auth_failures.window_s);
	json_cstr(b, "keyed_on", source ? "source_ip" : "principal");
	json_i64(b, "last_status", x->t->status);
	json_cstr(b, "last_user", x->t->user ? x->t->user : "-");
	json_cstr(b, "source_ip", x->t->src_ip);
	detect_json_endpoint(b, x);
	json_obj_close(b);
	snprintf(msg, sizeof(msg), "%s%.128s got %u responses 401/403 within %u s (threshold %u)",
		 source ? "source " : "", key, n, o->auth_failures.window_s,
		 o->auth_failures.count);
	detect_raise(det, DETECT_RULE_AUTH_FAILURES, x, key, ALERT_SEV_MEDIUM, msg, b, n, o->auth_failures.count, o->auth_failures.window_s);
}

/* Counts one failure for p; alerts when over and alert is set. Returns the count. */
static uint32_t authfail_count(struct detector *det, const struct detect_txn *x,
			       struct detect_principal *p, const char *key, bool source, bool alert)
{
	const struct detect_opts *o = det->o;
	struct authfail_ps *ps = detect_pstate(det, p);
	bool oom = false;
	uint32_t n = detect_tsq_add(&ps->q, x->ms, o->auth_failures.window_s * 1000u,
				    o->auth_failures.count, &det->mem, &oom);

	if (oom)
		detect_oom(det);
	if (alert && n >= o->auth_failures.count)
		authfail_alert(det, x, key, source, n);
	return n;
}

static void authfail_on_txn(struct detector *det, const struct detect_txn *x)
{
	char ipkey[3 + TXN_IP_MAX + 1];
	struct detect_principal *ip;

	if (!x->p || (x->t->status != 401 && x->t->status != 403))
		return;
	uint32_t n = authfail_count(det, x, x->p, x->principal, false, true);
	if (x->by_ip || !x->t->src_ip[0])
		return;
	size_t l = strnlen(x->t->src_ip, sizeof(x->t->src_ip) - 1);
	memcpy(ipkey, "ip:", 3);
	memcpy(ipkey + 3, x->t->src_ip, l);
	ipkey[3 + l] = '\0';
	/* may create the IP's entry; x->p is not used after this */
	ip = detect_principal_get(det, ipkey, x->ts_ns);
	if (!ip) {
		detect_oom(det);
		return;
	}
	/* The source alerts only when this user alone is not over: one user
	 * failing is that user's alert, failures spread over users are the IP's. */
	authfail_count(det, x, ip, ipkey, true, n < det->o->auth_failures.count);
}

static void authfail_pstate_free(struct detector *det, void *pstate)
{
	struct authfail_ps *ps = pstate;

	detect_tsq_free(&ps->q, &det->mem);
}

static size_t authfail_mem_bytes(const struct detector *det)
{
	return det->mem;
}

const struct detector_ops detect_authfail_ops = {
	.name = "auth_failures",
	.pstate_size = sizeof(struct authfail_ps),
	.on_txn = authfail_on_txn,
	.mem_bytes = authfail_mem_bytes,
	.pstate_free = authfail_pstate_free,
};
