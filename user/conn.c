/* conn.c — connection table and request/response pairing (see conn.h). */
#include "conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <uthash.h>

#include "http1.h"
#include "identity.h"
#include "resource.h"
#include "ssn.h"

/* A bounded copy of captured bytes (forensics). */
struct rawbuf {
	char *p;
	uint32_t len;
	uint32_t cap;   /* grows to what was captured, at most the table's raw_cap */
};

struct pending {
	struct identity *id;          /* NULL when the request carried no credentials */
	struct rawbuf raw;
	uint64_t ts_first;
	uint64_t ts_last;
	uint64_t bytes;
	char method[TXN_METHOD_MAX];
	char *target;
	size_t target_len;
	int minor;
	bool complete;
	bool truncated;
};

struct conn {
	uint64_t key;                 /* pid << 32 | fd */
	uint32_t pid;
	int32_t fd;
	uint8_t role;
	bool tls;
	bool addrs_known;
	bool upgraded;                /* 101 / CONNECT: no more HTTP on this connection */
	char lip[TXN_IP_MAX], rip[TXN_IP_MAX];
	uint16_t lport, rport;
	int req_dir;                  /* PW_DIR_* carrying requests, -1 until known */
	uint64_t sk;                  /* the kernel's socket cookie, 0 until seen */
	uint64_t next_off[2];         /* expected pw_data.offset per direction: the kernel
				       * counts from 0 when it starts following a socket */
	uint32_t next_seq[2];
	struct http1_stream *req, *resp;
	struct pending *q;            /* ring of qcap (grows to pipeline_max) */
	unsigned qhead, qlen, qcap;
	/* response being parsed */
	bool resp_desync;             /* responses may have been lost: pair by time */
	uint32_t skip_responses;      /* requests were lost: their responses must not pair */
	struct {                      /* a response that came before its request was whole */
		bool valid;
		int status;
		uint64_t bytes, ts_last;
		bool truncated;
	} early;
	uint64_t resp_ts;             /* first byte of the response being parsed */
	struct ssn_scan ssn;          /* SSN-like values in the response body */
	struct rawbuf resp_raw;
	int resp_status;
	int resp_minor;
	bool resp_interim;
	uint64_t resp_interim_bytes;  /* 1xx bytes, added to the final response */
	uint64_t last_ts;
	struct conn_table *ct;
	struct conn *lru_prev, *lru_next;
	struct conn *pid_next;        /* the pid's list */
	UT_hash_handle hh;
};

struct pid_conns {
	uint32_t pid;
	struct conn *head;
	UT_hash_handle hh;
};

struct conn_table {
	struct conn_limits lim;
	conn_txn_fn fn;
	void *ctx;
	conn_evict_fn evict_fn;
	void *evict_ctx;
	struct identity_ctx *ident;   /* borrowed, may be NULL */
	size_t raw_cap;
	const struct resource_ctx *res;
	struct conn *by_key;
	struct pid_conns *by_pid;
	struct conn *lru_head, *lru_tail;  /* head: least recently active */
	struct conn_stats st;
	/* totals of streams already freed */
	uint64_t dead_garbage, dead_resyncs, dead_overflows, dead_gaps;
};

static void raw_add(const struct conn_table *ct, struct rawbuf *r, const char *p, size_t n);
static struct pending *q_at(struct conn *c, unsigned i);
static int req_on_head(void *ctx, const struct http1_head *h, uint64_t ts);
static void req_on_complete(void *ctx, const struct http1_msg_end *end);
static int resp_on_head(void *ctx, const struct http1_head *h, uint64_t ts);
static void resp_on_complete(void *ctx, const struct http1_msg_end *end);

static void req_on_body(void *ctx, const char *p, size_t len);

static const struct http1_callbacks req_cb = {
	.on_head = req_on_head,
	.on_body = req_on_body,
	.on_complete = req_on_complete,
};
static void resp_on_body(void *ctx, const char *p, size_t len)
{
	struct conn *c = ctx;

	ssn_scan_feed(&c->ssn, p, len);
	raw_add(c->ct, &c->resp_raw, p, len);
}

static void req_on_body(void *ctx, const char *p, size_t len)
{
	struct conn *c = ctx;
	struct conn_table *ct = c->ct;

	if (!ct->raw_cap || !c->qlen)
		return;
	raw_add(ct, &q_at(c, c->qlen - 1)->raw, p, len);
}

static const struct http1_callbacks resp_cb = {
	.on_head = resp_on_head,
	.on_body = resp_on_body,
	.on_complete = resp_on_complete,
};

struct conn_table *conn_table__new(const struct conn_limits *lim, conn_txn_fn fn, void *ctx)
{
	struct conn_table *ct = calloc(1, sizeof(*ct));

	if (!ct)
		return NULL;
	ct->lim = *lim;
	if (ct->lim.pipeline_max == 0)
		ct->lim.pipeline_max = 1;
	ct->fn = fn;
	ct->ctx = ctx;
	return ct;
}

void conn_table__enrich(struct conn_table *ct, struct identity_ctx *ic, const struct resource_ctx *rc)
{
	ct->ident = ic;
	ct->res = rc;
}

void conn_table__keep_raw(struct conn_table *ct, size_t cap)
{
	ct->raw_cap = cap;
}

static void raw_add(const struct conn_table *ct, struct rawbuf *r, const char *p, size_t n)
{
	if (!ct->raw_cap || !p || r->len >= ct->raw_cap)
		return;
	size_t k = n < ct->raw_cap - r->len ? n : ct->raw_cap - r->len;
	if (r->len + k > r->cap) {
		/* most heads are a few hundred bytes: grow to fit, not to the cap */
		size_t ncap = r->cap ? r->cap : 512;
		while (ncap < r->len + k)
			ncap *= 2;
		if (ncap > ct->raw_cap)
			ncap = ct->raw_cap;
		char *np = realloc(r->p, ncap);
		if (!np)
			return;
		r->p = np;
		r->cap = (uint32_t)ncap;
	}
	memcpy(r->p + r->len, p, k);
	r->len += (uint32_t)k;
}

void conn_table__on_evict(struct conn_table *ct, conn_evict_fn fn, void *ctx)
{
	ct->evict_fn = fn;
	ct->evict_ctx = ctx;
}

static void lru_unlink(struct conn_table *ct, struct conn *c)
{
	if (c->lru_prev)
		c->lru_prev->lru_next = c->lru_next;
	else
		ct->lru_head = c->lru_next;
	if (c->lru_next)
		c->lru_next->lru_prev = c->lru_prev;
	else
		ct->lru_tail = c->lru_prev;
	c->lru_prev = c->lru_next = NULL;
}

static void lru_push(struct conn_table *ct, struct conn *c)
{
	c->lru_prev = ct->lru_tail;
	c->lru_next = NULL;
	if (ct->lru_tail)
		ct->lru_tail->lru_next = c;
	else
		ct->lru_head = c;
	ct->lru_tail = c;
}

static void touch(struct conn_table *ct, struct conn *c, uint64_t ts)
{
	if (ts > c->last_ts)
		c->last_ts = ts;
	if (ct->lru_tail != c) {
		lru_unlink(ct, c);
		lru_push(ct, c);
	}
}

static void format_addr(char *out, uint8_t family, const uint8_t a[16])
{
	static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	if (family == AF_INET6 && memcmp(a, mapped, 12) == 0)
		inet_ntop(AF_INET, a + 12, out, TXN_IP_MAX);
	else if (family == AF_INET6)
		inet_ntop(AF_INET6, a, out, TXN_IP_MAX);
	else
		inet_ntop(AF_INET, a, out, TXN_IP_MAX);
}

static void emit(struct conn *c, struct pending *p, uint64_t ts_end, uint64_t resp_bytes, int status,
		 bool truncated, const struct ssn_scan *ssn)
{
	struct conn_table *ct = c->ct;
	struct txn t = { 0 };
	bool server = c->role == PW_ROLE_SERVER;

	t.ts_start = p->ts_first;
	t.ts_end = ts_end > p->ts_first ? ts_end : p->ts_first;
	t.pid = c->pid;
	t.comm = "";
	t.exe = "";
	memcpy(t.src_ip, server ? c->rip : c->lip, TXN_IP_MAX);
	t.src_port = server ? c->rport : c->lport;
	memcpy(t.dst_ip, server ? c->lip : c->rip, TXN_IP_MAX);
	t.dst_port = server ? c->lport : c->rport;
	t.tls = c->tls;
	t.minor_version = p->minor;
	memcpy(t.method, p->method, sizeof(t.method));
	t.target = p->target ? p->target : "";
	t.target_len = p->target_len;
	t.req_bytes = p->bytes;
	t.resp_bytes = resp_bytes;
	t.status = status;
	t.role = c->role;
	t.truncated = truncated || p->truncated;
	t.user = "-";
	t.auth = "none";
	t.jwt_scope = "";
	t.req_raw = p->raw.p;
	t.req_raw_len = p->raw.len;
	if (ssn) { /* a real response: its bytes */
		t.resp_raw = c->resp_raw.p;
		t.resp_raw_len = c->resp_raw.len;
	}
	if (ssn && ssn->count) {
		t.ssn_count = ssn->count;
		t.ssn_first_offset = ssn->first_offset;
		snprintf(t.ssn_masked, sizeof(t.ssn_masked), "%s", ssn->masked);
	}
	if (p->id) {
		t.user = p->id->principal;
		t.auth = auth_scheme_name(p->id->scheme);
		t.jwt = p->id->jwt;
		t.jwt_broken = p->id->jwt_broken;
		t.jwt_has_iat = p->id->has_iat;
		t.jwt_has_exp = p->id->has_exp;
		t.jwt_iat = p->id->iat;
		t.jwt_exp = p->id->exp;
		t.jwt_scope = p->id->scope;
	}
	struct resource r;
	if (ct->res && t.target_len) {
		const char *path, *query;
		size_t plen, qlen;
		bool hq;
		txn_split_target(t.target, t.target_len, &path, &plen, &query, &qlen, &hq);
		if (resource__extract(ct->res, path, plen, query, qlen, &r) >= 0) {
			if (r.type[0])
				t.resource_type = r.type;
			for (size_t i = 0; i < r.n_ids && i < TXN_MAX_IDS; i++)
				t.resource_ids[t.n_resource_ids++] = r.ids[i];
			t.is_export = r.is_export;
		}
	}
	ct->fn(ct->ctx, &t);
}

static struct pending *q_front(struct conn *c)
{
	return c->qlen ? &c->q[c->qhead] : NULL;
}

static struct pending *q_at(struct conn *c, unsigned i)
{
	return &c->q[(c->qhead + i) % c->qcap];
}

/* Room for one more request: the ring starts at 2 (one request in flight is
 * the common case) and doubles up to pipeline_max. */
static bool q_grow(struct conn *c)
{
	unsigned max = c->ct->lim.pipeline_max;

	if (c->qlen < c->qcap)
		return true;
	if (c->qcap >= max)
		return false;
	unsigned ncap = c->qcap ? c->qcap * 2 : 2;
	if (ncap > max)
		ncap = max;
	struct pending *nq = calloc(ncap, sizeof(*nq));
	if (!nq)
		return false;
	for (unsigned i = 0; i < c->qlen; i++)
		nq[i] = *q_at(c, i);
	free(c->q);
	c->q = nq;
	c->qhead = 0;
	c->qcap = ncap;
	return true;
}

static void pending_free(struct pending *p)
{
	free(p->target);
	free(p->id);
	free(p->raw.p);
	memset(p, 0, sizeof(*p));
}

static void q_pop(struct conn *c)
{
	pending_free(&c->q[c->qhead]);
	c->qhead = (c->qhead + 1) % c->qcap;
	c->qlen--;
}

static int req_on_head(void *ctx, const struct http1_head *h, uint64_t ts)
{
	struct conn *c = ctx;
	struct conn_table *ct = c->ct;

	ct->st.requests++;
	if (!q_grow(c)) {
		/* Too many requests awaiting answers: report the oldest now. */
		struct pending *old = q_front(c);
		if (!old)
			return 0; /* no memory for even one */
		ct->st.pipeline_overflows++;
		ct->st.unanswered_requests++;
		emit(c, old, old->ts_last, 0, 0, true, NULL);
		q_pop(c);
	}
	struct pending *p = q_at(c, c->qlen);
	memset(p, 0, sizeof(*p));
	c->qlen++;
	raw_add(ct, &p->raw, h->raw.p, h->raw.len);
	if (ct->ident) {
		struct identity id;
		identity__extract(ct->ident, h->headers, h->num_headers, &id);
		if (id.scheme != AUTH_NONE && (p->id = malloc(sizeof(*p->id))))
			*p->id = id;
	}
	p->ts_first = ts;
	p->ts_last = ts;
	size_t mlen = h->method.len < TXN_METHOD_MAX - 1 ? h->method.len : TXN_METHOD_MAX - 1;
	/* Methods are compared and reported upper-case: "get" is GET. */
	for (size_t i = 0; i < mlen; i++) {
		char ch = h->method.p[i];
		p->method[i] = (ch >= 'a' && ch <= 'z') ? (char)(ch - 32) : ch;
	}
	p->target_len = h->target.len < ct->lim.target_cap ? h->target.len : ct->lim.target_cap;
	p->target = malloc(p->target_len + 1);
	if (p->target) {
		memcpy(p->target, h->target.p, p->target_len);
		p->target[p->target_len] = '\0';
	} else {
		p->target_len = 0;
	}
	p->minor = h->minor_version;
	p->truncated = h->truncated || h->target.len > p->target_len;
	return 0;
}

static void req_on_complete(void *ctx, const struct http1_msg_end *end)
{
	struct conn *c = ctx;
	struct pending *p = NULL;

	/* The newest request not yet complete (its response may already be out). */
	for (unsigned i = c->qlen; i-- > 0;) {
		struct pending *x = q_at(c, i);
		if (!x->complete)
			p = x;
		else
			break;
	}
	if (!p)
		return; /* already answered and emitted */
	p->complete = true;
	p->bytes = end->head_bytes + end->body_bytes;
	p->ts_last = end->ts_last;
	p->truncated |= end->truncated;
	if (c->early.valid && p == q_front(c)) {
		c->early.valid = false;
		emit(c, p, c->early.ts_last, c->early.bytes, c->early.status, c->early.truncated, NULL);
		q_pop(c);
	}
}

static int resp_on_head(void *ctx, const struct http1_head *h, uint64_t ts)
{
	struct conn *c = ctx;
	struct pending *p = q_front(c);

	c->resp_ts = ts;
	ssn_scan_init(&c->ssn);
	c->resp_raw.len = 0;
	raw_add(c->ct, &c->resp_raw, h->raw.p, h->raw.len);
	c->resp_status = h->status;
	c->resp_minor = h->minor_version;
	c->resp_interim = h->status >= 100 && h->status < 200 && h->status != 101;
	if (c->resp_interim)
		return 0;
	if (p && (strcmp(p->method, "HEAD") == 0 ||
		  (strcmp(p->method, "CONNECT") == 0 && h->status >= 200 && h->status < 300)))
		return HTTP1_HEAD_NO_BODY;
	return 0;
}

static void resp_on_complete(void *ctx, const struct http1_msg_end *end)
{
	struct conn *c = ctx;
	struct conn_table *ct = c->ct;
	struct pending *p = q_front(c);
	uint64_t bytes = end->head_bytes + end->body_bytes;

	if (c->resp_interim) {
		c->resp_interim_bytes += bytes;
		return;
	}
	ct->st.responses++;
	bytes += c->resp_interim_bytes;
	c->resp_interim_bytes = 0;
	if (c->skip_responses) {
		/* the answer to a request that was lost */
		c->skip_responses--;
		ct->st.orphan_responses++;
		return;
	}
	if (p && c->resp_desync) {
		/* Responses were lost: this one answers the latest request that
		 * had begun before it; older ones are reported unanswered. */
		unsigned keep = 0;
		for (unsigned i = 0; i < c->qlen; i++)
			if (q_at(c, i)->ts_first <= c->resp_ts)
				keep = i;
		while (keep--) {
			struct pending *old = q_front(c);
			ct->st.unanswered_requests++;
			emit(c, old, old->ts_last, 0, 0, true, NULL);
			q_pop(c);
		}
		p = q_front(c);
		c->resp_desync = false;
	}
	if (!p && !c->early.valid && !http1_stream__at_boundary(c->req)) {
		/* Answered before the request head was whole (a 400 for a bad
		 * header): kept until the request ends or the connection does,
		 * so the request is reported with all its bytes. */
		c->early.valid = true;
		c->early.status = c->resp_status;
		c->early.bytes = bytes;
		c->early.ts_last = end->ts_last;
		c->early.truncated = end->truncated;
		return;
	}
	if (!p) {
		ct->st.orphan_responses++;
		return;
	}
	/* A response that overtook its request's body (early error): count
	 * the request as far as it got. */
	if (!p->complete)
		p->truncated = true;
	ssn_scan_finish(&c->ssn);
	emit(c, p, end->ts_last, bytes, c->resp_status, end->truncated, &c->ssn);
	bool switching = c->resp_status == 101 ||
			 (strcmp(p->method, "CONNECT") == 0 && c->resp_status >= 200 && c->resp_status < 300);
	q_pop(c);
	if (switching) {
		c->upgraded = true;
		http1_stream__passthrough(c->req);
		http1_stream__passthrough(c->resp);
	}
}

static struct conn *conn_find(struct conn_table *ct, uint32_t pid, int32_t fd)
{
	uint64_t key = ((uint64_t)pid << 32) | (uint32_t)fd;
	struct conn *c;

	HASH_FIND(hh, ct->by_key, &key, sizeof(key), c);
	return c;
}

/* Keeps a freed stream's counters in the table's totals. */
static void stream_totals(struct conn_table *ct, const struct http1_stream *s)
{
	const struct http1_stream_stats *st = http1_stream__stats(s);

	ct->dead_garbage += st->garbage_bytes;
	ct->dead_resyncs += st->resyncs;
	ct->dead_overflows += st->head_overflows;
	ct->dead_gaps += st->gap_bytes;
}

static void conn_destroy(struct conn_table *ct, struct conn *c, uint64_t ts)
{
	/* An early answer still waiting: its request as far as it got. */
	if (c->early.valid && !c->qlen)
		http1_stream__abandon(c->req);
	if (c->early.valid && c->qlen) {
		struct pending *p = q_front(c);
		c->early.valid = false;
		emit(c, p, c->early.ts_last, c->early.bytes, c->early.status, true, NULL);
		q_pop(c);
	}
	c->early.valid = false;
	/* A body delimited by close ends here; then requests never answered. */
	http1_stream__close(c->req, ts);
	http1_stream__close(c->resp, ts);
	while (c->qlen) {
		struct pending *p = q_front(c);
		ct->st.unanswered_requests++;
		emit(c, p, p->ts_last, 0, 0, p->truncated, NULL);
		q_pop(c);
	}
	stream_totals(ct, c->req);
	stream_totals(ct, c->resp);
	http1_stream__free(c->req);
	http1_stream__free(c->resp);
	free(c->q);
	free(c->resp_raw.p);

	struct pid_conns *pc;
	HASH_FIND(hh, ct->by_pid, &c->pid, sizeof(c->pid), pc);
	if (pc) {
		for (struct conn **pp = &pc->head; *pp; pp = &(*pp)->pid_next) {
			if (*pp == c) {
				*pp = c->pid_next;
				break;
			}
		}
		if (!pc->head) {
			HASH_DEL(ct->by_pid, pc);
			free(pc);
		}
	}
	lru_unlink(ct, c);
	HASH_DEL(ct->by_key, c);
	ct->st.conns_closed++;
	ct->st.conns_live--;
	free(c);
}

static void conn_evict(struct conn_table *ct, struct conn *c, uint64_t ts)
{
	uint32_t pid = c->pid;
	int32_t fd = c->fd;

	conn_destroy(ct, c, ts);
	if (ct->evict_fn)
		ct->evict_fn(ct->evict_ctx, pid, fd);
}

static struct conn *conn_create(struct conn_table *ct, uint32_t pid, int32_t fd, uint64_t ts)
{
	struct conn *c;
	struct pid_conns *pc;

	if (ct->lim.max_conns && ct->st.conns_live >= ct->lim.max_conns && ct->lru_head) {
		ct->st.conns_evicted_lru++;
		conn_evict(ct, ct->lru_head, ts);
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->req = http1_stream__new(HTTP1_REQUEST, ct->lim.head_cap, &req_cb, c);
	c->resp = http1_stream__new(HTTP1_RESPONSE, ct->lim.head_cap, &resp_cb, c);
	HASH_FIND(hh, ct->by_pid, &pid, sizeof(pid), pc);
	if (!pc) {
		pc = calloc(1, sizeof(*pc));
		if (pc) {
			pc->pid = pid;
			HASH_ADD(hh, ct->by_pid, pid, sizeof(pc->pid), pc);
		}
	}
	if (!c->req || !c->resp || !pc) {
		http1_stream__free(c->req);
		http1_stream__free(c->resp);
		free(c);
		return NULL;
	}
	c->key = ((uint64_t)pid << 32) | (uint32_t)fd;
	c->pid = pid;
	c->fd = fd;
	c->req_dir = -1;
	c->ct = ct;
	c->last_ts = ts;
	strcpy(c->lip, "");
	strcpy(c->rip, "");
	c->pid_next = pc->head;
	pc->head = c;
	HASH_ADD(hh, ct->by_key, key, sizeof(c->key), c);
	lru_push(ct, c);
	ct->st.conns_opened++;
	ct->st.conns_live++;
	return c;
}

static void set_role(struct conn *c, uint8_t role)
{
	c->role = role;
	if (role == PW_ROLE_SERVER)
		c->req_dir = PW_DIR_INGRESS;
	else if (role == PW_ROLE_CLIENT)
		c->req_dir = PW_DIR_EGRESS;
}

void conn_table__open(struct conn_table *ct, const struct pw_conn *e)
{
	struct conn *c = conn_find(ct, e->h.pid, e->fd);
	char lip[TXN_IP_MAX], rip[TXN_IP_MAX];

	format_addr(lip, e->family, e->laddr);
	format_addr(rip, e->family, e->raddr);
	/* The kernel re-announces a live socket whose state it had to evict:
	 * the same socket is the same connection. Another socket on this fd
	 * means the old one's close was missed. */
	if (c && c->sk && e->sk && c->sk != e->sk) {
		ct->st.conns_replaced++;
		conn_destroy(ct, c, e->h.ts_ns);
		c = NULL;
	}
	if (!c)
		c = conn_create(ct, e->h.pid, e->fd, e->h.ts_ns);
	if (!c)
		return;
	c->sk = e->sk;
	memcpy(c->lip, lip, sizeof(lip));
	memcpy(c->rip, rip, sizeof(rip));
	c->lport = e->lport;
	c->rport = e->rport;
	c->addrs_known = true;
	if (e->role != PW_ROLE_UNKNOWN && c->role == PW_ROLE_UNKNOWN)
		set_role(c, e->role);
	touch(ct, c, e->h.ts_ns);
}

static bool starts_like_response(const uint8_t *p, size_t n)
{
	return n >= 5 && strncasecmp((const char *)p, "HTTP/", 5) == 0;
}

/* n requests are known to exist but not what they were: every waiting
 * request is reported now (its answer can no longer be told apart) and as
 * many responses as lost requests will not pair. */
static void requests_lost(struct conn *c, uint32_t n)
{
	struct conn_table *ct = c->ct;

	ct->st.requests_lost += n;
	while (c->qlen) {
		struct pending *p = q_front(c);
		ct->st.unanswered_requests++;
		emit(c, p, p->ts_last, 0, 0, true, NULL);
		q_pop(c);
	}
	c->skip_responses += n;
}

void conn_table__data(struct conn_table *ct, const struct pw_data *d)
{
	struct conn *c = conn_find(ct, d->h.pid, d->fd);

	if (c && c->sk && d->sk && c->sk != d->sk) {
		/* The fd now names another socket and both the old one's close
		 * and the new one's announcement were lost. */
		ct->st.conns_replaced++;
		conn_destroy(ct, c, d->h.ts_ns);
		c = NULL;
	}
	if (!c) {
		/* Its PW_EV_CONN was lost (counted by the kernel): follow it anyway. */
		c = conn_create(ct, d->h.pid, d->fd, d->h.ts_ns);
		if (!c)
			return;
		c->sk = d->sk;
	}
	touch(ct, c, d->h.ts_ns);
	if (d->flags & PW_F_TLS)
		c->tls = true;
	unsigned frole = (d->flags & PW_F_ROLE_MASK) >> PW_F_ROLE_SHIFT;
	if (c->req_dir < 0 && (frole == PW_ROLE_SERVER || frole == PW_ROLE_CLIENT))
		set_role(c, (uint8_t)frole);
	if (c->req_dir < 0) {
		/* Socket older than the agent (or a capture without role bits): the
		 * side that speaks first with a status line is the server. */
		if (d->cap_len == 0)
			return;
		bool resp = starts_like_response(d->data, d->cap_len);
		c->req_dir = resp ? !d->dir : d->dir;
		c->role = c->req_dir == PW_DIR_INGRESS ? PW_ROLE_SERVER : PW_ROLE_CLIENT;
	}
	struct http1_stream *s = d->dir == c->req_dir ? c->req : c->resp;
	unsigned dir = d->dir & 1;
	/* Events lost in the other direction show first in this event's count
	 * of them. Lost requests: every waiting request is reported now (its
	 * answer can no longer be told apart) and as many responses as were
	 * lost requests will not pair. */
	unsigned odir = dir ^ 1;
	if (d->seq_other > c->next_seq[odir]) {
		uint32_t n = d->seq_other - c->next_seq[odir];
		ct->st.lost_events += n;
		c->next_seq[odir] = d->seq_other;
		if ((int)odir == c->req_dir) {
			requests_lost(c, n);
		} else {
			ct->st.responses_lost += n;
			c->resp_desync = true;
		}
	}
	/* Events the kernel could not deliver: their bytes are an exact gap. */
	if (d->offset > c->next_off[dir]) {
		uint64_t lost = d->offset - c->next_off[dir];
		uint32_t nlost = d->seq - c->next_seq[dir];
		ct->st.lost_bytes += lost;
		ct->st.lost_events += nlost;
		if (s == c->req) {
			if (nlost)
				requests_lost(c, nlost);
		} else {
			ct->st.responses_lost += nlost;
			c->resp_desync = true;
		}
		http1_stream__feed(s, NULL, 0, lost, d->h.ts_ns);
	}
	c->next_off[dir] = d->offset + d->total_len;
	c->next_seq[dir] = d->seq + 1;
	/* A call whose payload the kernel had to drop (ring full) where a new
	 * message would start: most likely one whole request or response,
	 * counted so that lost calls are accounted for. */
	if (d->cap_len == 0 && d->total_len > 0 && http1_stream__at_boundary(s)) {
		if (s == c->req) {
			ct->st.requests_shed[c->role < 3 ? c->role : 0]++;
			requests_lost(c, 1);
		} else {
			ct->st.responses_lost++;
			c->resp_desync = true;
		}
	}
	http1_stream__feed(s, (const char *)d->data, d->cap_len, d->total_len, d->h.ts_ns);
}

void conn_table__close(struct conn_table *ct, const struct pw_close *e)
{
	struct conn *c = conn_find(ct, e->h.pid, e->fd);

	if (!c)
		return;
	/* Events lost at the very end show only in the close's counts. */
	for (unsigned d = 0; d < 2; d++) {
		if (e->seq[d] <= c->next_seq[d])
			continue;
		uint32_t n = e->seq[d] - c->next_seq[d];
		ct->st.lost_events += n;
		if ((int)d == c->req_dir)
			ct->st.requests_lost += n;
		else
			ct->st.responses_lost += n;
	}
	conn_destroy(ct, c, e->h.ts_ns);
}

void conn_table__close_pid(struct conn_table *ct, uint32_t pid, uint64_t ts)
{
	struct pid_conns *pc;

	HASH_FIND(hh, ct->by_pid, &pid, sizeof(pid), pc);
	/* conn_destroy frees pc with its last connection */
	while (pc) {
		conn_destroy(ct, pc->head, ts);
		HASH_FIND(hh, ct->by_pid, &pid, sizeof(pid), pc);
	}
}

void conn_table__expire(struct conn_table *ct, uint64_t now)
{
	while (ct->lru_head && ct->lim.idle_timeout_ns && ct->lru_head->last_ts + ct->lim.idle_timeout_ns < now) {
		ct->st.conns_evicted_idle++;
		conn_evict(ct, ct->lru_head, now);
	}
}

void conn_table__close_all(struct conn_table *ct, uint64_t ts)
{
	while (ct->lru_head)
		conn_destroy(ct, ct->lru_head, ts);
}

void conn_table__stats(const struct conn_table *ct, struct conn_stats *out)
{
	*out = ct->st;
	out->garbage_bytes = ct->dead_garbage;
	out->resyncs = ct->dead_resyncs;
	out->head_overflows = ct->dead_overflows;
	out->gap_bytes = ct->dead_gaps;
	out->buffered_bytes = 0;
	for (struct conn *c = ct->lru_head; c; c = c->lru_next) {
		const struct http1_stream *ss[2] = { c->req, c->resp };
		for (int i = 0; i < 2; i++) {
			const struct http1_stream_stats *st = http1_stream__stats(ss[i]);
			out->garbage_bytes += st->garbage_bytes;
			out->resyncs += st->resyncs;
			out->head_overflows += st->head_overflows;
			out->gap_bytes += st->gap_bytes;
			out->buffered_bytes += http1_stream__buffered(ss[i]);
		}
	}
}

void conn_table__free(struct conn_table *ct)
{
	if (!ct)
		return;
	/* No callbacks here: conn_table__close_all reports what is pending. */
	struct conn *c, *tmp;
	HASH_ITER(hh, ct->by_key, c, tmp) {
		HASH_DEL(ct->by_key, c);
		for (unsigned i = 0; i < c->qlen; i++)
			pending_free(q_at(c, i));
		http1_stream__free(c->req);
		http1_stream__free(c->resp);
		free(c->q);
		free(c->resp_raw.p);
		free(c);
	}
	struct pid_conns *pc, *ptmp;
	HASH_ITER(hh, ct->by_pid, pc, ptmp) {
		HASH_DEL(ct->by_pid, pc);
		free(pc);
	}
	free(ct);
}
