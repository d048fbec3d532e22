/* detect_hipaa.c — per-call compliance checks (45 CFR 164.312): basic_auth, plaintext_phi,
 * long_lived_token, sensitive_data_exposed. Stateless: one call is enough, de-duplication
 * per (rule, principal) keeps the volume down. Looks at every role (a host that sends PHI
 * in clear to an upstream breaches as much as one that serves it).
 */
#include "detect.h"

#include <stdio.h>
#include <string.h>

#include "phiwatch/events.h"

static bool is_loopback(const char *ip)
{
	return strncmp(ip, "127.", 4) == 0 || strcmp(ip, "::1") == 0 ||
	       strncmp(ip, "::ffff:127.", 11) == 0 || strncmp(ip, "::FFFF:127.", 11) == 0;
}

/* A resource type fit for syslog: a FHIR-shaped name ("Patient"), never
 * arbitrary path text. */
static const char *safe_type(const char *rt)
{
	size_t i = 0;

	if (!rt || rt[0] < 'A' || rt[0] > 'Z')
		return "patient";
	for (; rt[i]; i++) {
		char c = rt[i];
		if (i >= 64 || !((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')))
			return "patient";
	}
	return rt;
}

static const char *role_name(int role)
{
	switch (role) {
	case PW_ROLE_SERVER: return "server";
	case PW_ROLE_CLIENT: return "client";
	default: return "unknown";
	}
}

/* Evidence common to every HIPAA alert. Leaves the object open. */
static struct jbuf *hipaa_evidence(struct detector *det, const struct detect_txn *x)
{
	struct jbuf *b = detect_scratch(det);

	json_obj_open(b, NULL);
	json_bool(b, "tls", x->t->tls);
	json_cstr(b, "role", role_name(x->t->role));
	json_cstr(b, "source_ip", x->t->src_ip);
	json_cstr(b, "destination_ip", x->t->dst_ip);
	json_u64(b, "destination_port", x->t->dst_port);
	return b;
}

static void hipaa_emit(struct detector *det, const struct detect_txn *x, enum detect_rule r,
		       int sev, struct jbuf *b, const char *msg, uint64_t count, uint64_t thr)
{
	detect_json_endpoint(b, x);
	json_obj_close(b);
	detect_raise(det, r, x, x->principal, sev, msg, b, count, thr, 0);
}

static void check_basic(struct detector *det, const struct detect_txn *x)
{
	const struct txn *t = x->t;
	int sev = t->tls ? ALERT_SEV_MEDIUM : ALERT_SEV_HIGH;
	char msg[320];

	if (!t->auth || strcmp(t->auth, "basic") != 0)
		return;
	if (!detect_admit(det, DETECT_RULE_BASIC_AUTH, x->principal, t->pid, x->ts_ns, sev))
		return;
	struct jbuf *b = hipaa_evidence(det, x);
	snprintf(msg, sizeof(msg), "%.128s used HTTP Basic authentication %s",
		 x->principal, t->tls ? "over TLS" : "over plain HTTP (password in clear)");
	hipaa_emit(det, x, DETECT_RULE_BASIC_AUTH, sev, b, msg, 1, 0);
}

static void check_plaintext_phi(struct detector *det, const struct detect_txn *x)
{
	const struct txn *t = x->t;
	const char *peer = t->role == PW_ROLE_CLIENT ? t->dst_ip : t->src_ip;
	char msg[320];

	if (t->tls || (!t->resource_type && t->n_resource_ids == 0) || t->status < 200 ||
	    t->status > 299)
		return;
	if (peer[0] && is_loopback(peer))
		return;
	if (!detect_admit(det, DETECT_RULE_PLAINTEXT_PHI, x->principal, t->pid, x->ts_ns,
			  ALERT_SEV_CRITICAL))
		return;
	struct jbuf *b = hipaa_evidence(det, x);
	json_cstr(b, "peer_ip", peer[0] ? peer : "unknown");
	if (t->resource_type)
		json_cstr(b, "resource_type", t->resource_type);
	json_u64(b, "patient_ids", t->n_resource_ids);
	json_u64(b, "response_bytes", t->resp_bytes);
	snprintf(msg, sizeof(msg),
		 "%s data for %.128s went over plain HTTP to non-loopback peer %s (%s side)",
		 safe_type(t->resource_type), x->principal,
		 peer[0] ? peer : "unknown", role_name(t->role));
	hipaa_emit(det, x, DETECT_RULE_PLAINTEXT_PHI, ALERT_SEV_CRITICAL, b, msg, 1, 0);
}

static void check_token(struct detector *det, const struct detect_txn *x)
{
	const struct txn *t = x->t;
	const struct detect_opts *o = det->o;
	const char *basis;
	int64_t life = 0;
	char msg[320];

	if (!t->jwt || t->jwt_broken)
		return;
	if (t->jwt_has_exp && t->jwt_has_iat) {
		basis = "exp-iat";
		if (__builtin_sub_overflow(t->jwt_exp, t->jwt_iat, &life))
			life = INT64_MAX;
	} else if (t->jwt_has_exp) {
		/* no iat: what is left of it already says it lives too long */
		basis = "exp-now";
		if (__builtin_sub_overflow(t->jwt_exp, (int64_t)(x->ts_ns / 1000000000ull), &life))
			life = INT64_MAX;
	} else if (o->hipaa.token_no_exp) {
		basis = "no-exp";
		life = INT64_MAX;
	} else {
		return;
	}
	if (life <= (int64_t)o->hipaa.token_max_lifetime_s)
		return;
	if (!detect_admit(det, DETECT_RULE_LONG_LIVED_TOKEN, x->principal, t->pid, x->ts_ns,
			  ALERT_SEV_MEDIUM))
		return;
	struct jbuf *b = hipaa_evidence(det, x);
	json_cstr(b, "basis", basis);
	if (life != INT64_MAX)
		json_i64(b, "lifetime_s", life);
	json_u64(b, "max_lifetime_s", o->hipaa.token_max_lifetime_s);
	if (t->jwt_has_iat)
		json_i64(b, "iat", t->jwt_iat);
	if (t->jwt_has_exp)
		json_i64(b, "exp", t->jwt_exp);
	if (life == INT64_MAX)
		snprintf(msg, sizeof(msg), "%.128s presented a JWT that never expires (max %u s)",
			 x->principal, o->hipaa.token_max_lifetime_s);
	else
		snprintf(msg, sizeof(msg), "%.128s presented a JWT valid for %lld s (%s), max %u s",
			 x->principal, (long long)life, basis, o->hipaa.token_max_lifetime_s);
	hipaa_emit(det, x, DETECT_RULE_LONG_LIVED_TOKEN, ALERT_SEV_MEDIUM, b, msg,
		   life == INT64_MAX ? 0 : (uint64_t)life, o->hipaa.token_max_lifetime_s);
}

static void check_ssn(struct detector *det, const struct detect_txn *x)
{
	const struct txn *t = x->t;
	int sev = t->tls ? ALERT_SEV_HIGH : ALERT_SEV_CRITICAL;
	char msg[320], masked[sizeof(t->ssn_masked)];

	if (t->ssn_count == 0)
		return;
	if (!detect_admit(det, DETECT_RULE_SENSITIVE_DATA_EXPOSED, x->principal, t->pid, x->ts_ns,
			  sev))
		return;
	/* only ever the masked form: "***-**-" and four digits */
	memcpy(masked, t->ssn_masked, sizeof(masked));
	masked[sizeof(masked) - 1] = '\0';
	if (strncmp(masked, "***-**-", 7) != 0)
		masked[0] = '\0';
	struct jbuf *b = hipaa_evidence(det, x);
	json_u64(b, "ssn_count", t->ssn_count);
	json_u64(b, "first_offset", t->ssn_first_offset);
	json_cstr(b, "first_masked", masked);
	json_bool(b, "truncated", t->truncated);
	snprintf(msg, sizeof(msg),
		 "a response to %.128s carried %u unencrypted SSN-like value%s (first at body "
		 "offset %llu) %s",
		 x->principal, t->ssn_count, t->ssn_count == 1 ? "" : "s",
		 (unsigned long long)t->ssn_first_offset, t->tls ? "over TLS" : "over plain HTTP");
	hipaa_emit(det, x, DETECT_RULE_SENSITIVE_DATA_EXPOSED, sev, b, msg, t->ssn_count, 0);
}

static void hipaa_on_txn(struct detector *det, const struct detect_txn *x)
{
	const struct detect_opts *o = det->o;

	if (o->hipaa.basic_auth)
		check_basic(det, x);
	if (o->hipaa.plaintext_phi)
		check_plaintext_phi(det, x);
	if (o->hipaa.long_lived_token)
		check_token(det, x);
	if (o->hipaa.sensitive_data)
		check_ssn(det, x);
}

const struct detector_ops detect_hipaa_ops = {
	.name = "hipaa",
	.on_txn = hipaa_on_txn,
};
