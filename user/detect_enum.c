/* detect_enum.c — patient_enumeration: one principal touches more than N distinct patients
 * within a sliding window. Patients are kept as 64-bit keyed hashes with 32-bit ms times.
 * The N+1 most recently seen are enough to decide "> N", so a principal keeps at most
 * 2(N+1): when full, one pass keeps the newest N+1 (amortised O(1) per new patient).
 */
#include "detect.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct pid_ent {
	uint32_t lo, hi;       /* the hash; lo == hi == 0 marks an empty slot */
	uint32_t ts;           /* ms of the latest touch */
};

struct enum_ps {
	struct pid_ent *tab;   /* open addressing, linear probing, power-of-two size */
	uint32_t min_ts;       /* <= every entry's ts (exact right after a sweep) */
	uint16_t n;
	uint8_t cap_log2;      /* 0: no table */
};

static inline uint32_t ent_cap(const struct enum_ps *ps)
{
	return ps->tab ? 1u << ps->cap_log2 : 0;
}

static inline bool ent_empty(const struct pid_ent *e)
{
	return (e->lo | e->hi) == 0;
}

/* Rebuilds the table with 2^log2 slots, keeping entries not older than
 * window before now (all when window is 0). false on allocation failure. */
static bool enum_rebuild(struct detector *det, struct enum_ps *ps, uint8_t log2, uint32_t now,
			 uint32_t window_ms)
{
	uint32_t ncap = 1u << log2, mask = ncap - 1, ocap = ent_cap(ps);
	struct pid_ent *nt = calloc(ncap, sizeof(*nt));
	bool have_min = false;

	if (!nt)
		return false;
	ps->n = 0;
	for (uint32_t i = 0; i < ocap; i++) {
		struct pid_ent *e = &ps->tab[i];
		if (ent_empty(e) || (window_ms && detect_ms_diff(now, e->ts) > (int32_t)window_ms))
			continue;
		uint32_t j = e->lo & mask;
		while (!ent_empty(&nt[j]))
			j = (j + 1) & mask;
		nt[j] = *e;
		ps->n++;
		if (!have_min || detect_ms_diff(ps->min_ts, e->ts) > 0)
			ps->min_ts = e->ts;
		have_min = true;
	}
	if (!have_min)
		ps->min_ts = now;
	free(ps->tab);
	det->mem += (size_t)ncap * sizeof(*nt);
	det->mem -= (size_t)ocap * sizeof(*nt);
	ps->tab = nt;
	ps->cap_log2 = log2;
	return true;
}

/* k-th smallest (0-based) of v[0..n), n > k: quickselect with a three-way
 * partition (ties cannot make it quadratic); v is reordered. */
static uint32_t select_kth(uint32_t *v, uint32_t n, uint32_t k)
{
	uint32_t lo = 0, hi = n;

	while (hi - lo > 1) {
		uint32_t pivot = v[lo + (hi - lo) / 2], lt = lo, i = lo, gt = hi, t;
		while (i < gt) {
			if (v[i] < pivot) {
				t = v[lt];
				v[lt++] = v[i];
				v[i++] = t;
			} else if (v[i] > pivot) {
				t = v[--gt];
				v[gt] = v[i];
				v[i] = t;
			} else {
				i++;
			}
		}
		if (k < lt)
			hi = lt;
		else if (k >= gt)
			lo = gt;
		else
			return pivot;
	}
	return v[lo];
}

/* Drops expired entries, then all but the keep newest; same table size.
 * false on allocation failure (nothing changed). */
static bool enum_prune(struct enum_ps *ps, uint32_t now, uint32_t window_ms,
		       uint32_t keep)
{
	uint32_t cap = ent_cap(ps), mask = cap - 1, n = 0, small[256];
	uint32_t *age = cap <= 256 ? small : malloc(cap * sizeof(*age));
	struct pid_ent *nt;

	if (!age)
		return false;
	for (uint32_t i = 0; i < cap; i++) {
		const struct pid_ent *e = &ps->tab[i];
		if (ent_empty(e))
			continue;
		int32_t a = detect_ms_diff(now, e->ts);
		/* age 0 for a touch later than now (a late transaction is now) */
		if (a <= (int32_t)window_ms)
			age[n++] = a < 0 ? 0 : (uint32_t)a;
	}
	uint32_t cut = n > keep ? select_kth(age, n, keep - 1) : UINT32_MAX;
	nt = calloc(cap, sizeof(*nt));
	if (!nt) {
		if (age != small)
			free(age);
		return false;
	}
	uint32_t kept = 0, ties = 0, newer = 0;
	/* entries strictly newer than the cut all stay; ties fill up to keep */
	for (uint32_t i = 0; cut != UINT32_MAX && i < n; i++)
		newer += age[i] < cut;
	ties = keep - newer;
	bool have_min = false;
	for (uint32_t i = 0; i < cap; i++) {
		const struct pid_ent *e = &ps->tab[i];
		if (ent_empty(e))
			continue;
		int32_t a = detect_ms_diff(now, e->ts);
		uint32_t ua = a < 0 ? 0 : (uint32_t)a;
		if (a > (int32_t)window_ms || ua > cut)
			continue;
		if (cut != UINT32_MAX && ua == cut) {
			if (!ties)
				continue;
			ties--;
		}
		uint32_t j = e->lo & mask;
		while (!ent_empty(&nt[j]))
			j = (j + 1) & mask;
		nt[j] = *e;
		kept++;
		if (!have_min || detect_ms_diff(ps->min_ts, e->ts) > 0)
			ps->min_ts = e->ts;
		have_min = true;
	}
	if (!have_min)
		ps->min_ts = now;
	if (age != small)
		free(age);
	free(ps->tab);
	ps->tab = nt;
	ps->n = (uint16_t)kept;
	return true;
}

/* Touch of patient hash h at now: true when it was not in the window yet. */
static bool enum_touch(struct detector *det, struct enum_ps *ps, uint64_t h, uint32_t now)
{
	const uint32_t window_ms = det->o->enumeration.window_s * 1000u;
	const uint32_t keep = det->o->enumeration.max_patients + 1u;
	uint32_t lo = (uint32_t)h, hi = (uint32_t)(h >> 32), mask, j;

	if (ps->tab) {
		mask = ent_cap(ps) - 1;
		for (j = lo & mask; !ent_empty(&ps->tab[j]); j = (j + 1) & mask) {
			struct pid_ent *e = &ps->tab[j];
			if (e->lo == lo && e->hi == hi) {
				bool expired = detect_ms_diff(now, e->ts) > (int32_t)window_ms;
				if (detect_ms_diff(now, e->ts) > 0)
					e->ts = now;
				return expired;   /* expired but not yet swept: new again */
			}
		}
	}
	if (ps->tab && ps->n + 1u > 2u * keep && !enum_prune(ps, now, window_ms, keep)) {
		detect_oom(det);
		return false;
	}
	if (!ps->tab || (ps->n + 1u) * 4u > ent_cap(ps) * 3u) {
		/* before growing, see whether expiry makes room */
		if (ps->tab && detect_ms_diff(now, ps->min_ts) > (int32_t)window_ms &&
		    !enum_rebuild(det, ps, ps->cap_log2, now, window_ms)) {
			detect_oom(det);
			return false;
		}
		if ((!ps->tab || (ps->n + 1u) * 4u > ent_cap(ps) * 3u) &&
		    !enum_rebuild(det, ps, ps->tab ? ps->cap_log2 + 1 : 3, now, 0)) {
			detect_oom(det);
			return false;
		}
	}
	mask = ent_cap(ps) - 1;
	for (j = lo & mask; !ent_empty(&ps->tab[j]); j = (j + 1) & mask)
		;
	ps->tab[j].lo = lo;
	ps->tab[j].hi = hi;
	ps->tab[j].ts = now;
	if (ps->n == 0 || detect_ms_diff(ps->min_ts, now) > 0)
		ps->min_ts = now;
	ps->n++;
	return true;
}

static void enum_alert(struct detector *det, const struct detect_txn *x, uint32_t n)
{
	const struct detect_opts *o = det->o;
	char msg[320];

	if (!detect_admit(det, DETECT_RULE_PATIENT_ENUMERATION, x->principal, x->t->pid, x->ts_ns,
			  ALERT_SEV_HIGH))
		return;
	struct jbuf *b = detect_scratch(det);
	json_obj_open(b, NULL);
	json_u64(b, "distinct_patients", n);
	json_u64(b, "threshold", o->enumeration.max_patients);
	json_u64(b, "window_s", o->enumeration.window_s);
	if (x->t->resource_type)
		json_cstr(b, "resource_type", x->t->resource_type);
	json_i64(b, "last_status", x->t->status);
	json_cstr(b, "source_ip", x->t->src_ip);
	detect_json_endpoint(b, x);
	json_obj_close(b);
	snprintf(msg, sizeof(msg), "%.128s touched %u distinct patients within %u s, over the limit of %u",
		 x->principal, n, o->enumeration.window_s, o->enumeration.max_patients);
	detect_raise(det, DETECT_RULE_PATIENT_ENUMERATION, x, x->principal, ALERT_SEV_HIGH, msg, b, n, o->enumeration.max_patients, o->enumeration.window_s);
}

static void enum_on_txn(struct detector *det, const struct detect_txn *x)
{
	const struct txn *t = x->t;
	const uint32_t window_ms = det->o->enumeration.window_s * 1000u;
	struct enum_ps *ps;
	bool added = false;
	size_t nids = t->n_resource_ids < TXN_MAX_IDS ? t->n_resource_ids : TXN_MAX_IDS;

	if (!x->p || nids == 0)
		return;
	ps = detect_pstate(det, x->p);
	for (size_t i = 0; i < nids; i++) {
		const char *id = t->resource_ids[i];
		if (!id || !id[0])
			continue;
		added |= enum_touch(det, ps, detect_hash(det, id, strlen(id)), x->ms);
	}
	if (!added || ps->n <= det->o->enumeration.max_patients)
		return;
	/* the count must hold only patients inside the window */
	if (detect_ms_diff(x->ms, ps->min_ts) > (int32_t)window_ms &&
	    !enum_rebuild(det, ps, ps->cap_log2, x->ms, window_ms)) {
		detect_oom(det);
		return;
	}
	if (ps->n > det->o->enumeration.max_patients)
		enum_alert(det, x, ps->n);   /* up to 2(N+1): the distinct patients still kept */
}

static void enum_pstate_free(struct detector *det, void *pstate)
{
	struct enum_ps *ps = pstate;

	det->mem -= (size_t)ent_cap(ps) * sizeof(struct pid_ent);
	free(ps->tab);
	memset(ps, 0, sizeof(*ps));
}

static size_t enum_mem_bytes(const struct detector *det)
{
	return det->mem;
}

const struct detector_ops detect_enum_ops = {
	.name = "enumeration",
	.pstate_size = sizeof(struct enum_ps),
	.on_txn = enum_on_txn,
	.mem_bytes = enum_mem_bytes,
	.pstate_free = enum_pstate_free,
};
