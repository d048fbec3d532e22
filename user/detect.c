/* detect.c — the detection engine (see detect.h): principal table (hash + LRU + idle expiry),
 * detector registry and dispatch, de-duplication, stats, and the helpers detectors share.
 * Not a detector: the rules live in detect_*.c, one per file.
 */
#include "detect.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "phiwatch/events.h"
#include "siphash.h"

#define DETECT_KEY_MAX 128           /* longer principals are cut (they still key uniquely up to here) */
#define DETECT_MAX_DETECTORS 8
#define DETECT_MIN_BUCKETS 1024

static const char *const rule_names[DETECT_RULE__MAX] = {
	[DETECT_RULE_RATE_LIMIT_EXCEEDED] = "rate_limit_exceeded",
	[DETECT_RULE_PATIENT_ENUMERATION] = "patient_enumeration",
	[DETECT_RULE_BULK_EXPORT] = "bulk_export",
	[DETECT_RULE_AUTH_FAILURES] = "auth_failures",
	[DETECT_RULE_RATE_ANOMALY] = "rate_anomaly",
	[DETECT_RULE_BASIC_AUTH] = "basic_auth",
	[DETECT_RULE_PLAINTEXT_PHI] = "plaintext_phi",
	[DETECT_RULE_LONG_LIVED_TOKEN] = "long_lived_token",
	[DETECT_RULE_SENSITIVE_DATA_EXPOSED] = "sensitive_data_exposed",
	[DETECT_RULE_RATE_LIMIT_NOT_ENFORCED] = "rate_limit_not_enforced",
	[DETECT_RULE_CAPTURE_LOSS] = "capture_loss",
	[DETECT_RULE_TLS_NOT_INSTRUMENTED] = "tls_not_instrumented",
};

const char *detect_rule_name(enum detect_rule r)
{
	return (unsigned)r < DETECT_RULE__MAX ? rule_names[r] : "unknown";
}

int detect_rule_from_name(const char *name)
{
	for (int i = 0; i < DETECT_RULE__MAX; i++)
		if (name && strcmp(name, rule_names[i]) == 0)
			return i;
	return -EINVAL;
}

void detect_opts_default(struct detect_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->max_principals = 100000;
	o->principal_idle_s = 86400;
	o->suppress_s = 300;
	o->max_suppress = 65536;
	o->roles = DETECT_ROLE_SERVER | DETECT_ROLE_UNKNOWN;
	o->rate.enabled = true;
	o->rate.limit = 100;
	o->rate.window_s = 60;
	o->rate.not_enforced = true;
	o->rate.not_enforced_min = 10;
	o->enumeration.enabled = true;
	o->enumeration.max_patients = 50;
	o->enumeration.window_s = 600;
	o->bulk_export.enabled = true;
	o->bulk_export.count = 3;
	o->bulk_export.window_s = 3600;
	o->bulk_export.page_size = 1000;
	o->bulk_export.large_response_bytes = 10ull << 20;
	o->auth_failures.enabled = true;
	o->auth_failures.count = 10;
	o->auth_failures.window_s = 60;
	o->anomaly.enabled = true;
	o->anomaly.factor = 5.0;
	o->anomaly.floor_per_min = 30;
	o->anomaly.learn_minutes = 30;
	o->anomaly.alpha = 0.1;
	o->hipaa.basic_auth = true;
	o->hipaa.plaintext_phi = true;
	o->hipaa.sensitive_data = true;
	o->hipaa.long_lived_token = true;
	o->hipaa.token_max_lifetime_s = 3600;
	o->hipaa.token_no_exp = true;
	o->capture_loss.enabled = true;
}

/* Windows are compared as signed 32-bit ms: every span must stay far below 24 days. */
#define WINDOW_MAX_S (7u * 86400u)

int detect_opts_validate(const struct detect_opts *o, const char **key, const char **reason)
{
	const char *k = NULL, *r = NULL;

#define CHECK(cond, kk, rr)          \
	do {                         \
		if (!k && !(cond)) { \
			k = kk;      \
			r = rr;      \
		}                    \
	} while (0)
	CHECK(o->max_principals >= 16, "detect.max_principals", "must be an integer >= 16");
	CHECK(o->principal_idle_s >= 60 && o->principal_idle_s <= 20u * 86400u,
	      "detect.principal_idle_s", "must be between 60 and 1728000 (20 days)");
	CHECK(o->suppress_s <= WINDOW_MAX_S, "detect.suppress_s", "must be between 0 and 604800");
	CHECK(o->max_suppress >= 1, "detect.max_suppress", "must be a positive integer");
	CHECK(o->roles && !(o->roles & ~7u), "detect.roles", "must name server, client or unknown");
	CHECK(o->rate.limit >= 1 && o->rate.limit < DETECT_TSQ_MAX, "detect.rate.limit",
	      "must be an integer between 1 and 65534");
	CHECK(o->rate.window_s >= 1 && o->rate.window_s <= WINDOW_MAX_S, "detect.rate.window_s",
	      "must be between 1 and 604800");
	CHECK(o->rate.not_enforced_min >= 1 && o->rate.not_enforced_min <= 65535,
	      "detect.rate.not_enforced.min", "must be an integer between 1 and 65535");
	/* a principal keeps up to 2(N+1) patients, counted in 16 bits */
	CHECK(o->enumeration.max_patients >= 1 && o->enumeration.max_patients <= 32766,
	      "detect.enumeration.max_patients", "must be an integer between 1 and 32766");
	CHECK(o->enumeration.window_s >= 1 && o->enumeration.window_s <= WINDOW_MAX_S,
	      "detect.enumeration.window_s", "must be between 1 and 604800");
	CHECK(o->bulk_export.count >= 1 && o->bulk_export.count <= 1000, "detect.export.count",
	      "must be an integer between 1 and 1000");
	CHECK(o->bulk_export.window_s >= 1 && o->bulk_export.window_s <= WINDOW_MAX_S,
	      "detect.export.window_s", "must be between 1 and 604800");
	CHECK(o->bulk_export.page_size >= 1, "detect.export.page_size", "must be a positive integer");
	CHECK(o->bulk_export.large_response_bytes >= 1, "detect.export.large_response_bytes",
	      "must be a positive integer");
	CHECK(o->auth_failures.count >= 1 && o->auth_failures.count <= DETECT_TSQ_MAX,
	      "detect.auth_failures.count", "must be an integer between 1 and 65535");
	CHECK(o->auth_failures.window_s >= 1 && o->auth_failures.window_s <= WINDOW_MAX_S,
	      "detect.auth_failures.window_s", "must be between 1 and 604800");
	CHECK(o->anomaly.factor >= 1.0 && o->anomaly.factor <= 1e6, "detect.anomaly.factor",
	      "must be a number between 1 and 1000000");
	CHECK(o->anomaly.floor_per_min >= 1 && o->anomaly.floor_per_min <= 65535,
	      "detect.anomaly.floor_per_min", "must be an integer between 1 and 65535");
	CHECK(o->anomaly.learn_minutes >= 1 && o->anomaly.learn_minutes <= 65535,
	      "detect.anomaly.learn_minutes", "must be an integer between 1 and 65535");
	CHECK(o->anomaly.alpha > 0.0 && o->anomaly.alpha <= 1.0, "detect.anomaly.alpha",
	      "must be a number in (0, 1]");
	CHECK(o->hipaa.token_max_lifetime_s >= 1, "detect.token.max_lifetime_s",
	      "must be a positive integer");
#undef CHECK
	if (key)
		*key = k;
	if (reason)
		*reason = r;
	return k ? -EINVAL : 0;
}

/* ---- principals ---- */

struct detect_principal {
	struct detect_principal *hnext;          /* hash chain */
	struct detect_principal *prev, *next;    /* LRU: head is the most recent */
	uint64_t hash;
	uint64_t last_ns;                        /* latest transaction time */
	char *key;                               /* NUL-terminated, in this allocation */
	uint32_t size;                           /* bytes allocated */
	uint32_t key_len;
	uint64_t pstate[];                       /* detectors' bytes, then the key */
};

struct detect {
	struct detect_opts o;
	alert_fn fn;
	void *ctx;
	struct siphash_key key;
	struct detector dets[DETECT_MAX_DETECTORS];
	size_t ndets;
	size_t pstate_total;                     /* multiple of 8 */
	struct detect_principal **buckets;
	size_t nbuckets;                         /* power of two */
	size_t nprincipals;
	struct detect_principal *lru_head, *lru_tail;
	uint64_t now_ns;                         /* latest time seen: never goes back */
	uint64_t idle_ns;
	struct alert_dedup *dd;
	struct jbuf scratch;
	struct detect_stats st;
};

void *detect_pstate(const struct detector *det, struct detect_principal *p)
{
	return (char *)p->pstate + det->pstate_off;
}

static void lru_unlink(struct detect *d, struct detect_principal *p)
{
	if (p->prev)
		p->prev->next = p->next;
	else
		d->lru_head = p->next;
	if (p->next)
		p->next->prev = p->prev;
	else
		d->lru_tail = p->prev;
	p->prev = p->next = NULL;
}

static void lru_push_head(struct detect *d, struct detect_principal *p)
{
	p->prev = NULL;
	p->next = d->lru_head;
	if (d->lru_head)
		d->lru_head->prev = p;
	d->lru_head = p;
	if (!d->lru_tail)
		d->lru_tail = p;
}

static void pstate_release(struct detect *d, struct detect_principal *p)
{
	for (size_t i = 0; i < d->ndets; i++) {
		struct detector *det = &d->dets[i];
		if (det->ops->pstate_free)
			det->ops->pstate_free(det, detect_pstate(det, p));
	}
	memset(p->pstate, 0, d->pstate_total);
}

static void principal_drop(struct detect *d, struct detect_principal *p)
{
	struct detect_principal **pp = &d->buckets[p->hash & (d->nbuckets - 1)];

	while (*pp && *pp != p)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = p->hnext;
	lru_unlink(d, p);
	pstate_release(d, p);
	d->st.mem_principals -= p->size;
	d->nprincipals--;
	free(p);
}

static void expire_idle(struct detect *d)
{
	while (d->lru_tail && d->now_ns > d->lru_tail->last_ns &&
	       d->now_ns - d->lru_tail->last_ns > d->idle_ns) {
		principal_drop(d, d->lru_tail);
		d->st.principals_expired++;
	}
}

static void buckets_grow(struct detect *d)
{
	size_t nb = d->nbuckets * 2;
	struct detect_principal **b = calloc(nb, sizeof(*b));

	if (!b)
		return;  /* longer chains, still correct */
	for (size_t i = 0; i < d->nbuckets; i++) {
		struct detect_principal *p = d->buckets[i], *n;
		for (; p; p = n) {
			n = p->hnext;
			p->hnext = b[p->hash & (nb - 1)];
			b[p->hash & (nb - 1)] = p;
		}
	}
	free(d->buckets);
	d->buckets = b;
	d->nbuckets = nb;
}

static struct detect_principal *principal_get(struct detect *d, const char *key, size_t len,
					      uint64_t ts)
{
	uint64_t h;
	struct detect_principal *p;

	if (len > DETECT_KEY_MAX)
		len = DETECT_KEY_MAX;
	h = siphash24(&d->key, key, len);
	for (p = d->buckets[h & (d->nbuckets - 1)]; p; p = p->hnext) {
		if (p->hash == h && p->key_len == len && memcmp(p->key, key, len) == 0)
			break;
	}
	if (p) {
		/* State older than the idle limit is not trusted (ms clocks wrap). */
		if (ts > p->last_ns && ts - p->last_ns > d->idle_ns)
			pstate_release(d, p);
		if (ts > p->last_ns)
			p->last_ns = ts;
		if (d->lru_head != p) {
			lru_unlink(d, p);
			lru_push_head(d, p);
		}
		return p;
	}
	if (d->nprincipals >= d->o.max_principals) {
		principal_drop(d, d->lru_tail);
		d->st.principals_evicted++;
	}
	size_t size = sizeof(*p) + d->pstate_total + len + 1;
	p = calloc(1, size);
	if (!p) {
		d->st.alloc_failures++;
		return NULL;
	}
	p->size = (uint32_t)size;
	p->hash = h;
	p->last_ns = ts;
	p->key = (char *)p->pstate + d->pstate_total;
	memcpy(p->key, key, len);
	p->key[len] = '\0';
	p->key_len = (uint32_t)len;
	p->hnext = d->buckets[h & (d->nbuckets - 1)];
	d->buckets[h & (d->nbuckets - 1)] = p;
	lru_push_head(d, p);
	d->nprincipals++;
	d->st.mem_principals += size;
	if (d->nprincipals > d->nbuckets)
		buckets_grow(d);
	return p;
}

struct detect_principal *detect_principal_get(struct detector *det, const char *key,
					      uint64_t ts_ns)
{
	return principal_get(det->d, key, strlen(key), ts_ns);
}

/* ---- alerts ---- */

static void on_summary(void *ctx, const struct alert *a)
{
	struct detect *d = ctx;

	d->st.summaries++;
	d->fn(d->ctx, a);
}

bool detect_admit(struct detector *det, enum detect_rule r, const char *principal, uint32_t pid,
		  uint64_t ts_ns, int severity)
{
	struct detect *d = det->d;

	if (alert_dedup_admit(d->dd, detect_rule_name(r), principal, severity, pid, ts_ns))
		return true;
	d->st.suppressed[r]++;
	return false;
}

void detect_emit(struct detector *det, enum detect_rule r, struct alert *a)
{
	struct detect *d = det->d;

	a->rule = detect_rule_name(r);
	d->st.alerts[r]++;
	d->fn(d->ctx, a);
}

void detect_raise(struct detector *det, enum detect_rule r, const struct detect_txn *x, const char *principal,
		  int severity, const char *message, const struct jbuf *b, uint64_t count, uint64_t threshold,
		  uint64_t window_s)
{
	struct alert a = {
		.ts_ns = x->ts_ns,
		.severity = severity,
		.principal = principal,
		.pid = x->t->pid,
		.message = message,
		.evidence = b->oom ? NULL : b->p,
		.count = count,
		.threshold = threshold,
		.window_s = window_s,
	};
	detect_emit(det, r, &a);
}

struct jbuf *detect_scratch(struct detector *det)
{
	jbuf_reset(&det->d->scratch);
	return &det->d->scratch;
}

void detect_oom(struct detector *det)
{
	det->d->st.alloc_failures++;
}

uint64_t detect_hash(const struct detector *det, const void *data, size_t len)
{
	uint64_t h = siphash24(&det->d->key, data, len);
	return h ? h : 1;
}

void detect_json_endpoint(struct jbuf *b, const struct detect_txn *x)
{
	const struct txn *t = x->t;
	size_t n = t->target ? t->target_len : 0;

	json_arr_open(b, "sample_endpoints");
	json_key(b, NULL);
	jbuf_put(b, "\"", 1);
	json_escape(b, t->method, strnlen(t->method, sizeof(t->method)));
	jbuf_put(b, " ", 1);
	if (n)
		json_escape(b, t->target, n > 256 ? 256 : n);
	jbuf_put(b, "\"", 1);
	json_arr_close(b);
}

void detect__alert(struct detect *d, enum detect_rule rule, const char *principal, uint32_t pid,
		   uint64_t ts_ns, int severity, const char *message, const char *evidence)
{
	struct detector det = { .d = d, .o = &d->o };

	if ((unsigned)rule >= DETECT_RULE__MAX)
		return;
	if (ts_ns > d->now_ns)
		d->now_ns = ts_ns;
	if (!detect_admit(&det, rule, principal, pid, ts_ns, severity))
		return;
	struct alert a = {
		.ts_ns = ts_ns,
		.severity = severity,
		.principal = principal ? principal : "-",
		.pid = pid,
		.message = message,
		.evidence = evidence,
	};
	detect_emit(&det, rule, &a);
}

/* ---- time-ordered deques ---- */

static inline uint32_t tsq_at(const struct detect_tsq *q, uint32_t i)
{
	uint32_t j = q->head + i;
	return q->ts[j >= q->cap ? j - q->cap : j];
}

uint32_t detect_tsq_oldest(const struct detect_tsq *q)
{
	return q->n ? tsq_at(q, 0) : 0;
}

uint32_t detect_tsq_newest(const struct detect_tsq *q)
{
	return q->n ? tsq_at(q, q->n - 1u) : 0;
}

static void tsq_pop(struct detect_tsq *q)
{
	q->head = (uint16_t)(q->head + 1u == q->cap ? 0 : q->head + 1u);
	q->n--;
}

static bool tsq_grow(struct detect_tsq *q, uint32_t cap_max, size_t *mem)
{
	uint32_t ncap = q->cap ? q->cap * 2u : 4u;
	uint32_t *nt;

	if (ncap > cap_max)
		ncap = cap_max;
	nt = malloc(ncap * sizeof(*nt));
	if (!nt)
		return false;
	for (uint32_t i = 0; i < q->n; i++)
		nt[i] = tsq_at(q, i);
	free(q->ts);
	*mem += (ncap - q->cap) * sizeof(*nt);
	q->ts = nt;
	q->head = 0;
	q->cap = (uint16_t)ncap;
	return true;
}

uint32_t detect_tsq_add(struct detect_tsq *q, uint32_t now, uint32_t window_ms, uint32_t cap_max,
			size_t *mem, bool *oom)
{
	uint32_t newest = now;

	if (q->n && detect_ms_diff(detect_tsq_newest(q), now) > 0)
		newest = detect_tsq_newest(q);
	while (q->n && detect_ms_diff(newest, tsq_at(q, 0)) > (int32_t)window_ms)
		tsq_pop(q);
	/* a call too late to share a window with the newest changes no count */
	if (detect_ms_diff(newest, now) > (int32_t)window_ms)
		return q->n;
	if (q->n >= cap_max) {
		if (detect_ms_diff(tsq_at(q, 0), now) > 0)
			return q->n;   /* older than all kept: it would be dropped first */
		tsq_pop(q);
	}
	if (q->n == q->cap && !tsq_grow(q, cap_max, mem)) {
		*oom = true;
		return q->n;
	}
	/* insert in time order, usually at the end */
	uint32_t i = q->n;
	while (i > 0 && detect_ms_diff(tsq_at(q, i - 1u), now) > 0) {
		uint32_t j = q->head + i;
		uint32_t k = q->head + i - 1u;
		q->ts[j >= q->cap ? j - q->cap : j] = q->ts[k >= q->cap ? k - q->cap : k];
		i--;
	}
	uint32_t j = q->head + i;
	q->ts[j >= q->cap ? j - q->cap : j] = now;
	q->n++;
	return q->n;
}

void detect_tsq_free(struct detect_tsq *q, size_t *mem)
{
	*mem -= q->cap * sizeof(*q->ts);
	free(q->ts);
	memset(q, 0, sizeof(*q));
}

/* ---- engine ---- */

static int add_detector(struct detect *d, const struct detector_ops *ops)
{
	struct detector *det = &d->dets[d->ndets];

	det->ops = ops;
	det->d = d;
	det->o = &d->o;
	det->pstate_off = d->pstate_total;
	d->pstate_total += (ops->pstate_size + 7) & ~(size_t)7;
	d->ndets++;
	return ops->init ? ops->init(det) : 0;
}

struct detect *detect__new(const struct detect_opts *o, alert_fn fn, void *ctx)
{
	struct detect *d;
	int err = 0;

	if (!o || !fn || detect_opts_validate(o, NULL, NULL)) {
		errno = EINVAL;
		return NULL;
	}
	d = calloc(1, sizeof(*d));
	if (!d)
		return NULL;
	d->o = *o;
	d->fn = fn;
	d->ctx = ctx;
	if (o->hash_seed) {
		d->key.k0 = o->hash_seed;
		d->key.k1 = o->hash_seed * 0x9e3779b97f4a7c15ull;
	} else if (getrandom(&d->key, sizeof(d->key), GRND_NONBLOCK) != sizeof(d->key)) {
		d->key.k0 = (uint64_t)(uintptr_t)d ^ 0x243f6a8885a308d3ull;
		d->key.k1 = (uint64_t)(uintptr_t)&err ^ 0x13198a2e03707344ull;
	}
	d->idle_ns = (uint64_t)o->principal_idle_s * 1000000000ull;
	jbuf_init(&d->scratch);
	d->nbuckets = DETECT_MIN_BUCKETS;
	d->buckets = calloc(d->nbuckets, sizeof(*d->buckets));
	d->dd = alert_dedup__new((uint64_t)o->suppress_s * 1000000000ull, o->max_suppress,
				 d->key.k0 ^ d->key.k1, on_summary, d);
	if (!d->buckets || !d->dd) {
		err = -ENOMEM;
		goto fail;
	}
	if (o->rate.enabled || o->rate.not_enforced)
		err = err ? err : add_detector(d, &detect_rate_ops);
	if (o->enumeration.enabled)
		err = err ? err : add_detector(d, &detect_enum_ops);
	if (o->bulk_export.enabled)
		err = err ? err : add_detector(d, &detect_export_ops);
	if (o->auth_failures.enabled)
		err = err ? err : add_detector(d, &detect_authfail_ops);
	if (o->anomaly.enabled)
		err = err ? err : add_detector(d, &detect_anomaly_ops);
	if (o->hipaa.basic_auth || o->hipaa.plaintext_phi || o->hipaa.sensitive_data ||
	    o->hipaa.long_lived_token)
		err = err ? err : add_detector(d, &detect_hipaa_ops);
	if (o->capture_loss.enabled)
		err = err ? err : add_detector(d, &detect_loss_ops);
	if (err)
		goto fail;
	return d;
fail:
	detect__free(d);
	errno = -err;
	return NULL;
}

static bool is_anonymous(const char *u)
{
	return !u || !u[0] || (u[0] == '-' && !u[1]);
}

void detect__txn(struct detect *d, const struct txn *t)
{
	struct detect_txn x;
	char ipkey[3 + TXN_IP_MAX + 1], ukey[5 + DETECT_KEY_MAX + 1];
	size_t klen;

	d->st.txns++;
	if (t->ts_start > d->now_ns)
		d->now_ns = t->ts_start;
	alert_dedup_tick(d->dd, d->now_ns);
	expire_idle(d);

	memset(&x, 0, sizeof(x));
	x.t = t;
	x.ts_ns = t->ts_start;
	x.ms = (uint32_t)(t->ts_start / 1000000ull);
	if (is_anonymous(t->user)) {
		size_t n = strnlen(t->src_ip, sizeof(t->src_ip) - 1);
		memcpy(ipkey, "ip:", 3);
		memcpy(ipkey + 3, n ? t->src_ip : "-", n ? n : 1);
		klen = 3 + (n ? n : 1);
		ipkey[klen] = '\0';
		x.principal = ipkey;
		x.by_ip = true;
	} else if (strncmp(t->user, "ip:", 3) == 0) {
		/* a user may not pose as an address principal (JWT subjects are
		 * attacker-chosen): "user:ip:..." keeps the two apart */
		klen = strnlen(t->user, DETECT_KEY_MAX);
		memcpy(ukey, "user:", 5);
		memcpy(ukey + 5, t->user, klen);
		klen += 5;
		ukey[klen] = '\0';
		x.principal = ukey;
	} else {
		x.principal = t->user;
		klen = strlen(t->user);
	}
	if (t->target)
		txn_split_target(t->target, t->target_len, &x.path, &x.path_len, &x.query,
				 &x.query_len, &x.has_query);
	else
		x.path = x.query = "";
	if (t->role >= 0 && t->role < 32 && (d->o.roles & (1u << t->role))) {
		x.p = principal_get(d, x.principal, klen, t->ts_start);
		/* the key as stored (cut at DETECT_KEY_MAX) is the principal everywhere */
		if (x.p)
			x.principal = x.p->key;
	}
	for (size_t i = 0; i < d->ndets; i++)
		if (d->dets[i].ops->on_txn)
			d->dets[i].ops->on_txn(&d->dets[i], &x);
}

void detect__drops(struct detect *d, uint64_t ts_ns, const uint64_t *drops_by_reason, size_t n,
		   const char *const *reason_names)
{
	if (ts_ns > d->now_ns)
		d->now_ns = ts_ns;
	alert_dedup_tick(d->dd, d->now_ns);
	for (size_t i = 0; i < d->ndets; i++)
		if (d->dets[i].ops->on_drops)
			d->dets[i].ops->on_drops(&d->dets[i], ts_ns, drops_by_reason, n,
						 reason_names);
}

void detect__tick(struct detect *d, uint64_t now_ns)
{
	if (now_ns > d->now_ns)
		d->now_ns = now_ns;
	alert_dedup_tick(d->dd, d->now_ns);
	expire_idle(d);
	for (size_t i = 0; i < d->ndets; i++)
		if (d->dets[i].ops->on_tick)
			d->dets[i].ops->on_tick(&d->dets[i], d->now_ns);
}

void detect__flush(struct detect *d)
{
	alert_dedup_flush(d->dd);
}

void detect__stats(const struct detect *d, struct detect_stats *out)
{
	struct alert_dedup_stats ds;

	*out = d->st;
	alert_dedup_stats(d->dd, &ds);
	out->principals_live = d->nprincipals;
	out->mem_principals += d->nbuckets * sizeof(*d->buckets);
	out->mem_detectors = 0;
	for (size_t i = 0; i < d->ndets; i++) {
		const struct detector *det = &d->dets[i];
		out->mem_detectors += det->ops->mem_bytes ? det->ops->mem_bytes(det) : det->mem;
	}
	out->mem_dedup = ds.mem_bytes;
	out->mem_bytes = sizeof(*d) + d->scratch.cap + out->mem_principals + out->mem_detectors +
			 out->mem_dedup;
}

void detect__free(struct detect *d)
{
	if (!d)
		return;
	while (d->lru_head)
		principal_drop(d, d->lru_head);
	for (size_t i = 0; i < d->ndets; i++)
		if (d->dets[i].ops->free)
			d->dets[i].ops->free(&d->dets[i]);
	alert_dedup__free(d->dd);
	free(d->buckets);
	jbuf_free(&d->scratch);
	free(d);
}
