/* pipeline.c — record validation, process identity, connection table and transaction completion (see pipeline.h). */
#include "pipeline.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

#include "json.h"

struct proc {
	uint32_t pid;
	char comm[PHIWATCH_COMM_LEN + 1];
	char exe[PW_PATH_MAX];
	UT_hash_handle hh;
};


struct pipeline {
	struct pipeline_opts o;
	struct conn_table *ct;
	struct identity_ctx *ident;
	struct resource_ctx *res;
	struct detect *det;
	struct proc *procs;
	uint64_t seq;
	uint64_t last_expire;
	uint64_t last_ts;
	struct pipeline_stats st;
};

static const char *drop_names[PW_DROP__MAX] = {
	[PW_DROP_RINGBUF_DATA] = "ringbuf_data",
	[PW_DROP_RINGBUF_META] = "ringbuf_meta",
	[PW_DROP_ARGS_FULL] = "args_map_full",
	[PW_DROP_SOCKS_FULL] = "socks_map_full",
	[PW_DROP_READ_FAULT] = "read_fault",
	[PW_DROP_IOV_LIMIT] = "iov_limit",
	[PW_DROP_TLS_NO_FD] = "tls_no_fd",
	[PW_DROP_PAYLOAD_SHED] = "payload_shed",
};

void pipeline_default_limits(struct conn_limits *l)
{
	l->max_conns = 65536;
	l->idle_timeout_ns = 300ull * 1000000000ull;
	l->head_cap = 32768;
	l->target_cap = 8192;
	l->pipeline_max = 64;
}

const char *pipeline_drop_name(unsigned reason)
{
	return reason < PW_DROP__MAX && drop_names[reason] ? drop_names[reason] : "unknown";
}

static struct proc *proc_get(struct pipeline *p, uint32_t pid, bool create)
{
	struct proc *pr;

	HASH_FIND(hh, p->procs, &pid, sizeof(pid), pr);
	if (pr || !create)
		return pr;
	pr = calloc(1, sizeof(*pr));
	if (!pr)
		return NULL;
	pr->pid = pid;
	HASH_ADD(hh, p->procs, pid, sizeof(pr->pid), pr);
	p->st.procs_live++;
	return pr;
}

static void proc_forget(struct pipeline *p, uint32_t pid)
{
	struct proc *pr = proc_get(p, pid, false);

	if (pr) {
		HASH_DEL(p->procs, pr);
		free(pr);
		p->st.procs_live--;
	}
}

/* Copies a kernel comm (maybe not NUL-terminated) into a C string. */
static void comm_copy(char *dst, const char *src)
{
	size_t n = strnlen(src, PHIWATCH_COMM_LEN);
	memcpy(dst, src, n);
	dst[n] = '\0';
}

static void on_conn_txn(void *ctx, struct txn *t)
{
	struct pipeline *p = ctx;
	struct proc *pr = proc_get(p, t->pid, false);

	t->ts_start += (uint64_t)p->o.realtime_offset_ns;
	t->ts_end += (uint64_t)p->o.realtime_offset_ns;
	t->sequence = ++p->seq;
	t->comm = pr ? pr->comm : "";
	t->exe = pr ? pr->exe : "";
	p->st.transactions++;
	if (p->o.on_txn)
		p->o.on_txn(p->o.ctx, t);
	if (p->det)
		detect__txn(p->det, t);
}

void pipeline__detect_txn(struct pipeline *p, const struct txn *t)
{
	p->st.transactions++;
	if (p->det) {
		detect__txn(p->det, t);
		detect__tick(p->det, t->ts_start);
	}
}

struct pipeline *pipeline__new(const struct pipeline_opts *o)
{
	struct pipeline *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	p->o = *o;
	p->ct = conn_table__new(&o->limits, on_conn_txn, p);
	if (!p->ct) {
		free(p);
		return NULL;
	}
	if (o->on_evict)
		conn_table__on_evict(p->ct, o->on_evict, o->evict_ctx);
	struct identity_opts io;
	struct resource_opts ro;
	char err[256];
	if (!o->identity)
		identity_opts_default(&io);
	if (!o->resource)
		resource_opts_default(&ro);
	p->ident = identity__new(o->identity ? o->identity : &io);
	p->res = resource__new(o->resource ? o->resource : &ro, err, sizeof(err));
	if (!p->ident || !p->res) {
		pipeline__free(p);
		errno = EINVAL;
		return NULL;
	}
	conn_table__enrich(p->ct, p->ident, p->res);
	conn_table__keep_raw(p->ct, o->keep_raw);
	if (o->on_alert) {
		struct detect_opts dopt;
		if (!o->detect)
			detect_opts_default(&dopt);
		p->det = detect__new(o->detect ? o->detect : &dopt, o->on_alert, o->alert_ctx);
		if (!p->det) {
			pipeline__free(p);
			errno = EINVAL;
			return NULL;
		}
	}
	return p;
}

int pipeline__reconfigure(struct pipeline *p, const struct identity_opts *io, const struct resource_opts *ro,
			  const struct detect_opts *dopt, char *err, size_t errlen)
{
	struct identity_ctx *ni = identity__new(io);
	struct resource_ctx *nr = resource__new(ro, err, errlen);
	struct detect *nd = NULL;

	if (p->o.on_alert && ni && nr)
		nd = detect__new(dopt, p->o.on_alert, p->o.alert_ctx);
	if (!ni || !nr || (p->o.on_alert && !nd)) {
		if (ni && nr)
			snprintf(err, errlen, "detection settings rejected");
		else if (!ni)
			snprintf(err, errlen, "identity settings rejected");
		identity__free(ni);
		resource__free(nr);
		detect__free(nd);
		return -EINVAL;
	}
	conn_table__enrich(p->ct, ni, nr);
	identity__free(p->ident);
	resource__free(p->res);
	p->ident = ni;
	p->res = nr;
	if (p->det) {
		detect__flush(p->det);
		detect__free(p->det);
	}
	p->det = nd;
	return 0;
}

void pipeline__free(struct pipeline *p)
{
	struct proc *pr, *tmp;

	if (!p)
		return;
	conn_table__free(p->ct);
	identity__free(p->ident);
	resource__free(p->res);
	detect__free(p->det);
	HASH_ITER(hh, p->procs, pr, tmp) {
		HASH_DEL(p->procs, pr);
		free(pr);
	}
	free(p);
}

/* Minimum size of each record type; records are input, not truth. */
static size_t min_size(uint16_t type)
{
	switch (type) {
	case PW_EV_DATA: return sizeof(struct pw_data);
	case PW_EV_CONN: return sizeof(struct pw_conn);
	case PW_EV_CLOSE: return sizeof(struct pw_close);
	case PW_EV_EXEC: return sizeof(struct pw_exec);
	case PW_EV_EXIT: return sizeof(struct pw_proc_ev);
	case PW_EV_TLS: return sizeof(struct pw_tls);
	case PW_EV_PROC: return sizeof(struct pw_proc_info);
	case PW_EV_DROPS: return sizeof(struct pw_drops_rec);
	case PW_EV_TICK: return sizeof(struct pw_hdr);
	case PW_EV_NOTLS: return sizeof(struct pw_tls);
	default: return 0;
	}
}

static void note_comm(struct pipeline *p, uint32_t pid, const char *comm)
{
	struct proc *pr = proc_get(p, pid, true);

	if (pr && !pr->comm[0])
		comm_copy(pr->comm, comm);
}

int pipeline__feed(struct pipeline *p, const void *rec, size_t len)
{
	struct pw_hdr h;
	size_t need;

	p->st.records++;
	if (len < sizeof(h))
		goto bad;
	memcpy(&h, rec, sizeof(h));
	need = min_size(h.type);
	if (need == 0 || len < need || h.size != len)
		goto bad;

	if (h.ts_ns > p->last_ts)
		p->last_ts = h.ts_ns;
	if (h.ts_ns >= p->last_expire + 1000000000ull) {
		p->last_expire = h.ts_ns;
		conn_table__expire(p->ct, h.ts_ns);
		if (p->det)
			detect__tick(p->det, h.ts_ns + (uint64_t)p->o.realtime_offset_ns);
	}

	switch (h.type) {
	case PW_EV_DATA: {
		const struct pw_data *d = rec;
		if (d->cap_len > d->total_len || len != sizeof(*d) + d->cap_len)
			goto bad;
		p->st.data_events++;
		p->st.data_bytes += d->total_len;
		p->st.captured_bytes += d->cap_len;
		note_comm(p, h.pid, d->comm);
		conn_table__data(p->ct, d);
		break;
	}
	case PW_EV_CONN: {
		const struct pw_conn *c = rec;
		note_comm(p, h.pid, c->comm);
		conn_table__open(p->ct, c);
		break;
	}
	case PW_EV_CLOSE:
		conn_table__close(p->ct, (const struct pw_close *)rec);
		break;
	case PW_EV_TLS:
		p->st.tls_events++;
		break;
	case PW_EV_EXEC:
		/* A new program image: what we knew of the old one is stale. */
		proc_forget(p, h.pid);
		break;
	case PW_EV_EXIT:
		conn_table__close_pid(p->ct, h.pid, h.ts_ns);
		proc_forget(p, h.pid);
		break;
	case PW_EV_PROC: {
		const struct pw_proc_info *pi = rec;
		struct proc *pr = proc_get(p, h.pid, true);
		if (pr) {
			comm_copy(pr->comm, pi->comm);
			size_t n = strnlen(pi->exe, sizeof(pi->exe) - 1);
			memcpy(pr->exe, pi->exe, n);
			pr->exe[n] = '\0';
		}
		break;
	}
	case PW_EV_DROPS: {
		const struct pw_drops_rec *dr = rec;
		p->st.kernel_drops_total = 0;
		for (unsigned i = 0; i < PW_DROP__MAX; i++) {
			p->st.kernel_drops[i] = dr->drops[i];
			p->st.kernel_drops_total += dr->drops[i];
		}
		memcpy(p->st.kernel_lost, dr->lost, sizeof(p->st.kernel_lost));
		if (p->det)
			detect__drops(p->det, h.ts_ns + (uint64_t)p->o.realtime_offset_ns, p->st.kernel_drops,
				      PW_DROP__MAX, drop_names);
		break;
	}
	case PW_EV_TICK:
		break; /* time advanced: handled above */
	case PW_EV_NOTLS:
		p->st.tls_uninstrumented++;
		if (p->det) {
			struct proc *pr = proc_get(p, h.pid, false);
			char msg[256], ev[PW_PATH_MAX + 128];
			const char *name = pr && pr->comm[0] ? pr->comm : "?";
			struct jbuf jb;
			/* the sinks escape message and evidence (comm is attacker-chosen) */
			snprintf(msg, sizeof(msg),
				 "process %u (%s) speaks TLS through a library phiwatch cannot hook: its API calls are not visible",
				 h.pid, name);
			jbuf_init(&jb);
			json_obj_open(&jb, NULL);
			json_cstr(&jb, "process_name", name);
			json_cstr(&jb, "executable", pr ? pr->exe : "");
			json_i64(&jb, "fd", ((const struct pw_tls *)rec)->fd);
			json_obj_close(&jb);
			snprintf(ev, sizeof(ev), "%s", jb.p ? jb.p : "{}");
			jbuf_free(&jb);
			detect__alert(p->det, DETECT_RULE_TLS_NOT_INSTRUMENTED, "-", h.pid,
				      h.ts_ns + (uint64_t)p->o.realtime_offset_ns, ALERT_SEV_HIGH, msg, ev);
		}
		break;
	}
	return 0;
bad:
	p->st.bad_records++;
	return -EINVAL;
}

void pipeline__finish(struct pipeline *p)
{
	conn_table__close_all(p->ct, p->last_ts);
	if (p->det)
		detect__flush(p->det);
}

void pipeline__stats(const struct pipeline *p, struct pipeline_stats *out)
{
	*out = p->st;
	conn_table__stats(p->ct, &out->conn);
	identity__stats(p->ident, &out->identity);
	if (p->det)
		detect__stats(p->det, &out->detect);
}
