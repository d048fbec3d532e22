/* pcap.c — synthesised TCP/IP capture of HTTP calls (see pcap.h). Every multi-byte field is written
 * explicitly: the file is little-endian (its magic says so), packet headers big-endian.
 */
#include "pcap.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "phiwatch/events.h"

#define ETH_LEN 14
#define IP4_LEN 20
#define IP6_LEN 40
#define TCP_LEN 20
#define FRAME_MAX (ETH_LEN + IP6_LEN + TCP_LEN + PCAP_MSS4)

#define TH_FIN 0x01
#define TH_SYN 0x02
#define TH_PSH 0x08
#define TH_ACK 0x10

struct addr {
	int v6;                  /* 0: IPv4 in a[0..4) */
	uint8_t a[16];
};

/* One connection: its 4-tuple and the next sequence number each way. */
struct pconn {
	bool used;
	bool server_seen;        /* pcap_writer__calls pre-pass: a role-server call exists */
	struct addr src, dst;
	uint16_t sport, dport;
	uint32_t c_next;         /* client -> server */
	uint32_t s_next;         /* server -> client */
	bool open;               /* handshake written */
};

struct pcap_writer {
	pcap_sink_fn sink;
	void *sink_ctx;
	int err;
	struct pconn *conns;
	size_t nconns, cap;      /* open addressing, cap a power of two */
	uint16_t ip_id;
	struct pcap_stats st;
	uint8_t frame[16 + FRAME_MAX];
};

/* ------------------------------------------------------------------ output */

static void out(struct pcap_writer *w, const void *p, size_t n)
{
	if (!w->err) {
		int rc = w->sink(w->sink_ctx, p, n);
		if (rc)
			w->err = rc < 0 ? rc : -EIO;
	}
	w->st.bytes += n;
}

static int jbuf_sink(void *ctx, const void *p, size_t n)
{
	struct jbuf *b = ctx;

	jbuf_put(b, p, n);
	return b->oom ? -ENOMEM : 0;
}

static int file_sink(void *ctx, const void *p, size_t n)
{
	return fwrite(p, 1, n, ctx) == n ? 0 : -EIO;
}

static void le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void be16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void be32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (24 - 8 * i));
}

static void file_header(struct pcap_writer *w)
{
	uint8_t h[24];

	le32(h, PCAP_MAGIC);
	le16(h + 4, 2);                  /* version 2.4 */
	le16(h + 6, 4);
	le32(h + 8, 0);                  /* thiszone */
	le32(h + 12, 0);                 /* sigfigs */
	le32(h + 16, PCAP_SNAPLEN);
	le32(h + 20, PCAP_LINKTYPE_ETHERNET);
	out(w, h, sizeof(h));
}

struct pcap_writer *pcap_writer__new_sink(pcap_sink_fn fn, void *ctx)
{
	struct pcap_writer *w = calloc(1, sizeof(*w));

	if (!w)
		return NULL;
	w->sink = fn;
	w->sink_ctx = ctx;
	file_header(w);
	return w;
}

struct pcap_writer *pcap_writer__new_jbuf(struct jbuf *jb)
{
	return pcap_writer__new_sink(jbuf_sink, jb);
}

struct pcap_writer *pcap_writer__new_file(FILE *f)
{
	return pcap_writer__new_sink(file_sink, f);
}

void pcap_writer__free(struct pcap_writer *w)
{
	if (!w)
		return;
	free(w->conns);
	free(w);
}

void pcap_writer__stats(const struct pcap_writer *w, struct pcap_stats *o)
{
	*o = w->st;
}

/* ------------------------------------------------------------------ addresses and connections */

static bool parse_addr(const char *s, struct addr *a)
{
	static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	memset(a, 0, sizeof(*a));
	if (s && inet_pton(AF_INET, s, a->a) == 1)
		return true;
	if (s && inet_pton(AF_INET6, s, a->a) == 1) {
		if (!memcmp(a->a, mapped, sizeof(mapped))) {
			memmove(a->a, a->a + 12, 4);
			memset(a->a + 4, 0, 12);
		} else {
			a->v6 = 1;
		}
		return true;
	}
	return false;
}

/* Both ends in one family: an IPv4 end beside an IPv6 one becomes IPv4-mapped. */
static void same_family(struct addr *x, struct addr *y)
{
	struct addr *v4 = !x->v6 && y->v6 ? x : x->v6 && !y->v6 ? y : NULL;

	if (!v4)
		return;
	memmove(v4->a + 12, v4->a, 4);
	memset(v4->a, 0, 10);
	v4->a[10] = v4->a[11] = 0xff;
	v4->v6 = 1;
}

static uint64_t tuple_hash(const struct addr *s, const struct addr *d, uint16_t sp, uint16_t dp)
{
	uint64_t h = 1469598103934665603ull;     /* FNV-1a: keys come from our own history, not the network */
	const uint8_t *parts[2] = { s->a, d->a };

	for (int k = 0; k < 2; k++)
		for (int i = 0; i < 16; i++)
			h = (h ^ parts[k][i]) * 1099511628211ull;
	h = (h ^ sp) * 1099511628211ull;
	h = (h ^ dp) * 1099511628211ull;
	return h ^ (uint64_t)s->v6;
}

static bool conn_eq(const struct pconn *c, const struct addr *s, const struct addr *d, uint16_t sp, uint16_t dp)
{
	return c->sport == sp && c->dport == dp && c->src.v6 == s->v6 && !memcmp(c->src.a, s->a, 16) &&
	       !memcmp(c->dst.a, d->a, 16);
}

static bool conns_grow(struct pcap_writer *w)
{
	size_t ncap = w->cap ? 2 * w->cap : 64;
	struct pconn *nc = calloc(ncap, sizeof(*nc));

	if (!nc)
		return false;
	for (size_t i = 0; i < w->cap; i++) {
		struct pconn *c = &w->conns[i];
		if (!c->used)
			continue;
		size_t j = tuple_hash(&c->src, &c->dst, c->sport, c->dport) & (ncap - 1);
		while (nc[j].used)
			j = (j + 1) & (ncap - 1);
		nc[j] = *c;
	}
	free(w->conns);
	w->conns = nc;
	w->cap = ncap;
	return true;
}

/* The connection of this tuple, created (closed, sequence numbers chosen) when new. NULL: no memory. */
static struct pconn *conn_get(struct pcap_writer *w, const struct addr *s, const struct addr *d, uint16_t sp,
			      uint16_t dp)
{
	uint64_t h = tuple_hash(s, d, sp, dp);
	size_t j;

	if ((w->nconns + 1) * 2 > w->cap && !conns_grow(w))
		return NULL;
	for (j = h & (w->cap - 1); w->conns[j].used; j = (j + 1) & (w->cap - 1))
		if (conn_eq(&w->conns[j], s, d, sp, dp))
			return &w->conns[j];
	struct pconn *c = &w->conns[j];
	memset(c, 0, sizeof(*c));
	c->used = true;
	c->src = *s;
	c->dst = *d;
	c->sport = sp;
	c->dport = dp;
	/* initial sequence numbers from the tuple: deterministic, and unlike between connections */
	c->c_next = (uint32_t)(h >> 32) | 1u;
	c->s_next = (uint32_t)h | 1u;
	w->nconns++;
	return c;
}

/* ------------------------------------------------------------------ packets */

static uint32_t csum_add(uint32_t sum, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i + 1 < n; i += 2)
		sum += (uint32_t)p[i] << 8 | p[i + 1];
	if (n & 1)
		sum += (uint32_t)p[n - 1] << 8;
	return sum;
}

static uint16_t csum_fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

/* One segment from the client (to_server) or the server, written as a pcap record at ts_ns. */
static void segment(struct pcap_writer *w, struct pconn *c, bool to_server, uint64_t ts_ns, uint8_t flags,
		    const uint8_t *data, size_t len)
{
	uint8_t *rec = w->frame, *eth = rec + 16, *ip = eth + ETH_LEN, *tcp;
	const struct addr *sa = to_server ? &c->src : &c->dst, *da = to_server ? &c->dst : &c->src;
	uint16_t sp = to_server ? c->sport : c->dport, dp = to_server ? c->dport : c->sport;
	uint32_t *seq = to_server ? &c->c_next : &c->s_next, ack = to_server ? c->s_next : c->c_next;
	size_t iplen = c->src.v6 ? IP6_LEN : IP4_LEN, flen = ETH_LEN + iplen + TCP_LEN + len;
	uint32_t sum;

	/* Ethernet: locally administered MACs, 02:00:00:00:00:01 client and :02 server */
	memset(eth, 0, 12);
	eth[0] = eth[6] = 0x02;
	eth[5] = to_server ? 2 : 1;
	eth[11] = to_server ? 1 : 2;
	be16(eth + 12, c->src.v6 ? 0x86dd : 0x0800);

	tcp = ip + iplen;
	be16(tcp, sp);
	be16(tcp + 2, dp);
	be32(tcp + 4, *seq);
	be32(tcp + 8, (flags & TH_ACK) ? ack : 0);
	tcp[12] = (TCP_LEN / 4) << 4;
	tcp[13] = flags;
	be16(tcp + 14, 65535);           /* window */
	be16(tcp + 16, 0);               /* checksum, below */
	be16(tcp + 18, 0);               /* urgent */
	if (len)
		memcpy(tcp + TCP_LEN, data, len);

	if (!c->src.v6) {
		ip[0] = 0x45;
		ip[1] = 0;
		be16(ip + 2, (uint16_t)(IP4_LEN + TCP_LEN + len));
		be16(ip + 4, w->ip_id++);
		be16(ip + 6, 0x4000);    /* DF */
		ip[8] = 64;
		ip[9] = 6;
		be16(ip + 10, 0);
		memcpy(ip + 12, sa->a, 4);
		memcpy(ip + 16, da->a, 4);
		be16(ip + 10, csum_fold(csum_add(0, ip, IP4_LEN)));
		sum = csum_add(0, ip + 12, 8);
		sum += 6 + (uint32_t)(TCP_LEN + len);
	} else {
		be32(ip, 0x60000000u);
		be16(ip + 4, (uint16_t)(TCP_LEN + len));
		ip[6] = 6;
		ip[7] = 64;
		memcpy(ip + 8, sa->a, 16);
		memcpy(ip + 24, da->a, 16);
		sum = csum_add(0, ip + 8, 32);
		sum += 6 + (uint32_t)(TCP_LEN + len);
	}
	be16(tcp + 16, csum_fold(csum_add(sum, tcp, TCP_LEN + len)));

	le32(rec, (uint32_t)(ts_ns / 1000000000ull));
	le32(rec + 4, (uint32_t)(ts_ns % 1000000000ull / 1000u));
	le32(rec + 8, (uint32_t)flen);
	le32(rec + 12, (uint32_t)flen);
	out(w, rec, 16 + flen);
	w->st.packets++;

	*seq += (uint32_t)len + ((flags & (TH_SYN | TH_FIN)) ? 1u : 0u);
}

static void handshake(struct pcap_writer *w, struct pconn *c, uint64_t ts_ns)
{
	uint64_t t = ts_ns >= 3000 ? ts_ns - 3000 : 0;

	segment(w, c, true, t, TH_SYN, NULL, 0);
	segment(w, c, false, t + 1000, TH_SYN | TH_ACK, NULL, 0);
	segment(w, c, true, t + 2000, TH_ACK, NULL, 0);
	c->open = true;
	w->st.connections++;
}

/* One message in MSS-sized segments (PSH on the last), then the gap of bytes the capture did not copy. */
static void message(struct pcap_writer *w, struct pconn *c, bool to_server, uint64_t ts_ns, const uint8_t *p,
		    size_t len, uint64_t wire)
{
	size_t mss = c->src.v6 ? PCAP_MSS6 : PCAP_MSS4;

	for (size_t off = 0; off < len; off += mss) {
		size_t n = len - off < mss ? len - off : mss;
		segment(w, c, to_server, ts_ns, TH_ACK | (off + n == len ? TH_PSH : 0), p + off, n);
	}
	if (wire > len) {
		if (to_server)
			c->c_next += (uint32_t)(wire - len);
		else
			c->s_next += (uint32_t)(wire - len);
	}
}

static struct pconn *call_conn(struct pcap_writer *w, const struct pcap_call *k, bool count)
{
	struct addr s, d;

	if (!parse_addr(k->src_ip, &s) && count)
		w->st.bad_addresses++;
	if (!parse_addr(k->dst_ip, &d) && count)
		w->st.bad_addresses++;
	same_family(&s, &d);
	return conn_get(w, &s, &d, k->src_port, k->dst_port);
}

static void write_req(struct pcap_writer *w, struct pconn *c, const struct pcap_call *k)
{
	if (!c->open)
		handshake(w, c, k->ts_req_ns);
	message(w, c, true, k->ts_req_ns, k->req, k->req ? k->req_len : 0, k->req_wire);
	w->st.calls++;
}

static void write_resp(struct pcap_writer *w, struct pconn *c, const struct pcap_call *k)
{
	if (!c->open)
		handshake(w, c, k->ts_req_ns);
	message(w, c, false, k->ts_resp_ns, k->resp, k->resp ? k->resp_len : 0, k->resp_wire);
}

int pcap_writer__call(struct pcap_writer *w, const struct pcap_call *k)
{
	struct pconn *c = call_conn(w, k, true);

	if (!c)
		return -ENOMEM;
	write_req(w, c, k);
	write_resp(w, c, k);
	return w->err;
}

/* ------------------------------------------------------------------ time-ordered writing */

struct half {
	uint64_t ts;
	size_t idx;              /* call index */
	bool resp;
	struct pconn *c;
};

static int half_cmp(const void *a, const void *b)
{
	const struct half *x = a, *y = b;

	if (x->ts != y->ts)
		return x->ts < y->ts ? -1 : 1;
	if (x->idx != y->idx)
		return x->idx < y->idx ? -1 : 1;
	return (int)x->resp - (int)y->resp;
}

int pcap_writer__calls(struct pcap_writer *w, const struct pcap_call *calls, size_t n)
{
	struct half *hv;
	size_t nh = 0;

	if (!n)
		return w->err;
	if (n > SIZE_MAX / (2 * sizeof(*hv)) || !(hv = malloc(2 * n * sizeof(*hv))))
		return -ENOMEM;
	/* pre-pass: connections whose server end was watched */
	for (size_t i = 0; i < n; i++) {
		struct pconn *c = call_conn(w, &calls[i], true);
		if (!c) {
			free(hv);
			return -ENOMEM;
		}
		if (calls[i].role == PW_ROLE_SERVER)
			c->server_seen = true;
	}
	/* the table no longer grows: connection pointers stay valid */
	for (size_t i = 0; i < n; i++) {
		struct pconn *c = call_conn(w, &calls[i], false);
		if (c->server_seen && calls[i].role != PW_ROLE_SERVER) {
			w->st.duplicate_views++;
			continue;
		}
		hv[nh++] = (struct half){ calls[i].ts_req_ns, i, false, c };
		if ((calls[i].resp && calls[i].resp_len) || calls[i].resp_wire) {
			uint64_t t = calls[i].ts_resp_ns;
			hv[nh++] = (struct half){ t > calls[i].ts_req_ns ? t : calls[i].ts_req_ns, i, true, c };
		}
	}
	qsort(hv, nh, sizeof(*hv), half_cmp);
	for (size_t i = 0; i < nh; i++) {
		const struct pcap_call *k = &calls[hv[i].idx];
		if (hv[i].resp)
			write_resp(w, hv[i].c, k);
		else
			write_req(w, hv[i].c, k);
	}
	free(hv);
	return w->err;
}
