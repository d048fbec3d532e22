/* history.c — the forensic flight recorder (see history.h): one byte ring of entries, oldest evicted first,
 * and three FIFO indexes (principal, client address, pid) threaded through the entries.
 * Because eviction always takes the globally oldest entry, it is also the oldest of each of its keys: every
 * per-key list is a FIFO whose head is what eviction removes, so unlinking is O(1) without back pointers.
 */
#include "history.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "identity.h"
#include "siphash.h"
#include "slice.h"

enum { HK_USER = 0, HK_IP, HK_PID, HK__MAX };

#define ALIGN8(x) (((x) + 7u) & ~(size_t)7u)
#define MIN_BUCKETS 16u
#define APIKEY_NAME_MAX 64

struct hkey {
	struct hkey *chain;
	uint64_t hash;
	struct hent *head;       /* oldest entry of this key */
	struct hent *tail;       /* newest */
	uint32_t len;
	char name[];
};

struct htab {
	struct hkey **b;
	size_t nb;               /* power of two, 0 before first use */
	size_t n;
};

/* One entry in the ring: this header, then the bytes e's pointers point to. */
struct hent {
	size_t span;                     /* bytes to the next entry, wrap padding included */
	struct hent *next[HK__MAX];      /* next (newer) entry of the same key */
	struct hkey *key[HK__MAX];       /* NULL: not indexed there */
	struct history_entry e;
	char data[];
};

/* A call's bytes are redacted once into this scratch and copied into the ring; only when they do not fit (over
 * 16 KiB redacted) is the length measured in a first pass. Counted in the budget (it is part of the struct). */
#define REDACT_SCRATCH (16u << 10)

struct history {
	char *ring;
	size_t cap;
	size_t head;                     /* offset of the oldest entry */
	size_t tail;                     /* where the next entry goes */
	size_t used;                     /* bytes held by live entries */
	size_t touched;                  /* high-water mark of the ring: what free must wipe */
	struct hent *last;               /* newest entry, NULL when empty */
	uint64_t n;
	uint64_t next_id;
	struct htab tab[HK__MAX];
	size_t index_bytes;
	size_t index_max;
	struct siphash_key sk;
	struct identity_opts io;         /* only apikey_headers are used */
	char names[IDENTITY_MAX_APIKEY_HEADERS][APIKEY_NAME_MAX];
	struct history_stats st;
	char red[REDACT_SCRATCH];        /* a call's redacted bytes, written once and copied into the ring */
};

/* What a malloc'd block of n bytes really costs with glibc: a 16-byte-aligned chunk with an 8-byte header. */
static size_t chunk_cost(size_t n)
{
	size_t c = (n + 8 + 15) & ~(size_t)15;
	return c < 32 ? 32 : c;
}

static size_t key_cost(size_t len)
{
	return chunk_cost(sizeof(struct hkey) + len);
}

/* ------------------------------------------------------------------ redaction */

static bool is_secret(const char *name, size_t len, const struct identity_opts *o)
{
	while (len > 0 && (name[len - 1] == ' ' || name[len - 1] == '\t'))
		len--;
	return identity_header_is_secret((struct slice){ name, len }, o);
}

static void emit(char *out, size_t cap, size_t *w, const char *s, size_t n)
{
	if (out && n && n <= cap - *w && *w <= cap)
		memcpy(out + *w, s, n);
	*w += n;
}

/* history_redact into out[0..cap): SIZE_MAX when the result does not fit (out then holds a cut prefix). */
static size_t redact_into(const char *s, size_t n, char *out, size_t cap, const struct identity_opts *o,
			  unsigned *nred)
{
	static const char red[] = " " HISTORY_REDACTED;
	size_t pos = 0, w = 0;
	unsigned cnt = 0;

	if (!s)
		n = 0;
	while (pos < n) {
		/* One head: every line up to a blank one. The first (start) line is treated like a header line, so
		 * bytes that start mid-head (a resynchronised capture) are redacted too. */
		bool prev_secret = false, ended = false;

		while (pos < n) {
			const char *nl = memchr(s + pos, '\n', n - pos);
			size_t eol = nl ? (size_t)(nl - s) + 1 : n;     /* line incl. its LF */
			size_t clen = eol - pos;                        /* content length, ending stripped */
			if (nl)
				clen--;
			if (clen > 0 && s[pos + clen - 1] == '\r')
				clen--;
			const char *line = s + pos;

			if (clen == 0 && nl) {                          /* blank line: head ends */
				emit(out, cap, &w, line, eol - pos);
				pos = eol;
				ended = true;
				break;
			}
			if (line[0] == ' ' || line[0] == '\t') {        /* obs-fold continuation */
				if (!prev_secret)
					emit(out, cap, &w, line, eol - pos);
				pos = eol;
				continue;
			}
			const char *colon = memchr(line, ':', clen);
			prev_secret = colon && is_secret(line, (size_t)(colon - line), o);
			if (prev_secret) {
				emit(out, cap, &w, line, (size_t)(colon - line) + 1);
				emit(out, cap, &w, red, sizeof(red) - 1);
				emit(out, cap, &w, line + clen, eol - pos - clen); /* the line ending, if any */
				cnt++;
			} else {
				emit(out, cap, &w, line, eol - pos);
			}
			pos = eol;
		}
		/* Another head follows only when the next bytes are a status line (1xx interim responses). */
		if (!ended || n - pos < 5 || memcmp(s + pos, "HTTP/", 5) != 0)
			break;
	}
	emit(out, cap, &w, s + pos, n - pos);                        /* body */
	if (nred)
		*nred = cnt;
	return out && w > cap ? SIZE_MAX : w;
}

size_t history_redact(const char *s, size_t n, char *out, const struct identity_opts *o, unsigned *nred)
{
	return redact_into(s, n, out, SIZE_MAX, o, nred);
}

/* ------------------------------------------------------------------ index */

static uint64_t key_hash(const struct history *h, int k, const char *name, size_t len)
{
	return siphash24(&h->sk, name, len) ^ (uint64_t)k;
}

static struct hkey *htab_find(const struct history *h, int k, const char *name, size_t len)
{
	const struct htab *t = &h->tab[k];
	uint64_t hv;

	if (!t->nb)
		return NULL;
	hv = key_hash(h, k, name, len);
	for (struct hkey *x = t->b[hv & (t->nb - 1)]; x; x = x->chain)
		if (x->hash == hv && x->len == len && !memcmp(x->name, name, len))
			return x;
	return NULL;
}

static bool htab_resize(struct history *h, int k, size_t nb)
{
	struct htab *t = &h->tab[k];
	struct hkey **nbk = calloc(nb, sizeof(*nbk));

	if (!nbk)
		return false;
	for (size_t i = 0; i < t->nb; i++) {
		struct hkey *x = t->b[i], *nx;
		for (; x; x = nx) {
			nx = x->chain;
			x->chain = nbk[x->hash & (nb - 1)];
			nbk[x->hash & (nb - 1)] = x;
		}
	}
	if (t->nb)
		h->index_bytes -= chunk_cost(t->nb * sizeof(*t->b));
	h->index_bytes += chunk_cost(nb * sizeof(*nbk));
	free(t->b);
	t->b = nbk;
	t->nb = nb;
	return true;
}

/* Index bytes needed to add a key of len bytes to table k now. */
static size_t htab_add_cost(const struct history *h, int k, size_t len)
{
	const struct htab *t = &h->tab[k];
	size_t c = key_cost(len);

	if (!t->nb)
		c += chunk_cost(MIN_BUCKETS * sizeof(struct hkey *));
	else if (t->n + 1 > t->nb)
		c += chunk_cost(2 * t->nb * sizeof(struct hkey *)) - chunk_cost(t->nb * sizeof(struct hkey *));
	return c;
}

static struct hkey *htab_add(struct history *h, int k, const char *name, size_t len)
{
	struct htab *t = &h->tab[k];
	struct hkey *x;

	if (!t->nb && !htab_resize(h, k, MIN_BUCKETS))
		return NULL;
	if (t->n + 1 > t->nb && !htab_resize(h, k, 2 * t->nb))
		return NULL;
	x = malloc(sizeof(*x) + len);
	if (!x)
		return NULL;
	x->hash = key_hash(h, k, name, len);
	x->head = x->tail = NULL;
	x->len = (uint32_t)len;
	memcpy(x->name, name, len);
	x->chain = t->b[x->hash & (t->nb - 1)];
	t->b[x->hash & (t->nb - 1)] = x;
	t->n++;
	h->index_bytes += key_cost(len);
	h->st.keys++;
	return x;
}

static void htab_del(struct history *h, int k, struct hkey *x)
{
	struct htab *t = &h->tab[k];
	struct hkey **pp = &t->b[x->hash & (t->nb - 1)];

	while (*pp != x)
		pp = &(*pp)->chain;
	*pp = x->chain;
	t->n--;
	h->index_bytes -= key_cost(x->len);
	h->st.keys--;
	free(x);
	/* shrink so a past storm of distinct keys does not keep its bucket array (best effort) */
	if (t->nb > MIN_BUCKETS && t->n < t->nb / 4)
		htab_resize(h, k, t->nb / 2);
}

static bool is_anonymous(const char *u)
{
	return !u || !u[0] || (u[0] == '-' && !u[1]);
}

/* The index keys of t: name and length per table, len SIZE_MAX when not indexed there. */
static void txn_keys(const struct txn *t, const uint32_t *pid_le, const char *name[HK__MAX], size_t len[HK__MAX])
{
	name[HK_USER] = t->user;
	len[HK_USER] = is_anonymous(t->user) ? SIZE_MAX : strnlen(t->user, IDENTITY_PRINCIPAL_MAX);
	name[HK_IP] = t->src_ip;
	len[HK_IP] = t->src_ip[0] ? strnlen(t->src_ip, TXN_IP_MAX - 1) : SIZE_MAX;
	name[HK_PID] = (const char *)pid_le;
	len[HK_PID] = sizeof(*pid_le);
}

/* ------------------------------------------------------------------ ring */

static struct hent *ent_at(const struct history *h, size_t off)
{
	return (struct hent *)(void *)(h->ring + off);
}

static bool ring_wrapped(const struct history *h)
{
	return h->n > 0 && h->tail <= h->head;
}

/* Whether need bytes can be placed without evicting. */
static bool ring_fits(const struct history *h, size_t need)
{
	if (!h->n)
		return need <= h->cap;
	if (ring_wrapped(h))
		return h->head - h->tail >= need;
	return h->cap - h->tail >= need || h->head >= need;
}

static void evict_oldest(struct history *h)
{
	struct hent *e = ent_at(h, h->head);

	for (int k = 0; k < HK__MAX; k++) {
		struct hkey *x = e->key[k];
		if (!x)
			continue;
		x->head = e->next[k];
		if (!x->head) {
			x->tail = NULL;
			htab_del(h, k, x);
		}
	}
	h->head += e->span;
	h->used -= e->span;
	if (h->head >= h->cap)
		h->head = 0;
	h->n--;
	h->st.evicted++;
	if (!h->n) {
		h->head = h->tail = h->used = 0;
		h->last = NULL;
	}
}

/* Places need bytes (ring_fits must hold) and returns the offset. */
static size_t ring_place(struct history *h, size_t need)
{
	size_t off;

	if (!h->n) {
		h->head = h->tail = h->used = 0;
	} else if (!ring_wrapped(h) && h->cap - h->tail < need) {
		/* the newest entry absorbs the unusable end of the ring */
		h->last->span += h->cap - h->tail;
		h->used += h->cap - h->tail;
		h->tail = 0;
	}
	off = h->tail;
	h->tail += need;
	h->used += need;
	if (h->tail > h->touched)
		h->touched = h->tail;
	return off;
}

/* ------------------------------------------------------------------ lifecycle */

struct history *history__new(size_t budget)
{
	struct history *h;
	size_t reserve;

	if (!budget)
		budget = HISTORY_DEFAULT_BUDGET;
	if (budget < HISTORY_MIN_BUDGET || (uint64_t)budget > HISTORY_MAX_BUDGET) {
		errno = EINVAL;
		return NULL;
	}
	h = calloc(1, sizeof(*h));
	if (!h)
		return NULL;
	reserve = budget / 8;
	h->index_max = reserve;
	h->cap = (budget - reserve - chunk_cost(sizeof(*h)) - 16) & ~(size_t)7;
	h->ring = malloc(h->cap);
	if (!h->ring) {
		free(h);
		errno = ENOMEM;
		return NULL;
	}
	if (getrandom(&h->sk, sizeof(h->sk), GRND_NONBLOCK) != sizeof(h->sk)) {
		/* no entropy yet (early boot): a fixed key only weakens flooding resistance */
		h->sk.k0 = (uint64_t)(uintptr_t)h ^ 0x9e3779b97f4a7c15ull;
		h->sk.k1 = (uint64_t)(uintptr_t)h->ring;
	}
	h->next_id = 1;
	h->st.budget = budget;
	return h;
}

void history__free(struct history *h)
{
	if (!h)
		return;
	for (int k = 0; k < HK__MAX; k++) {
		struct htab *t = &h->tab[k];
		for (size_t i = 0; i < t->nb; i++) {
			struct hkey *x = t->b[i], *nx;
			for (; x; x = nx) {
				nx = x->chain;
				explicit_bzero(x->name, x->len);
				free(x);
			}
		}
		free(t->b);
	}
	/* evicted entries' bytes stay until overwritten; only the touched part was ever faulted in */
	explicit_bzero(h->ring, h->touched);
	explicit_bzero(h->red, sizeof(h->red));
	free(h->ring);
	free(h);
}

int history__set_secret_headers(struct history *h, const char *const *names, size_t n)
{
	if (n > IDENTITY_MAX_APIKEY_HEADERS || (n && !names))
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!names[i] || !names[i][0] || strlen(names[i]) >= APIKEY_NAME_MAX)
			return -EINVAL;
	memset(&h->io, 0, sizeof(h->io));
	for (size_t i = 0; i < n; i++) {
		memcpy(h->names[i], names[i], strlen(names[i]) + 1);
		h->io.apikey_headers[i] = h->names[i];
	}
	h->io.napikey = n;
	return 0;
}

/* ------------------------------------------------------------------ add */

static const char *nz(const char *s)
{
	return s ? s : "";
}

/* Copies s (n bytes) and a NUL at *w; returns where it went. */
static const char *put_str(char *base, size_t *w, const char *s, size_t n)
{
	char *d = base + *w;

	if (n)
		memcpy(d, s, n);
	d[n] = '\0';
	*w += n + 1;
	return d;
}

int history__add(struct history *h, const struct txn *t, const char *json, size_t json_len,
		 const struct history_bytes *b)
{
	static const struct history_bytes none;
	const char *kname[HK__MAX];
	size_t klen[HK__MAX];
	struct hkey *keys[HK__MAX] = { 0 };
	bool created[HK__MAX] = { 0 };
	uint32_t pid_le = t->pid;
	unsigned rq_red = 0, rs_red = 0;
	size_t user_len, comm_len, exe_len, src_len, dst_len, rq_len, rs_len, need, off, w;
	const char *user = is_anonymous(t->user) ? "-" : t->user;

	if (!b)
		b = &none;
	if (!json)
		json_len = 0;
	user_len = strnlen(user, IDENTITY_PRINCIPAL_MAX);
	comm_len = strnlen(nz(t->comm), 64);
	exe_len = strnlen(nz(t->exe), 4096);
	src_len = strnlen(t->src_ip, TXN_IP_MAX - 1);
	dst_len = strnlen(t->dst_ip, TXN_IP_MAX - 1);
	rq_len = redact_into(b->req, b->req_len, h->red, sizeof(h->red), &h->io, &rq_red);
	rs_len = rq_len == SIZE_MAX ? SIZE_MAX
				    : redact_into(b->resp, b->resp_len, h->red + rq_len, sizeof(h->red) - rq_len, &h->io,
						  &rs_red);
	bool once = rs_len != SIZE_MAX;
	if (!once) {
		rq_len = history_redact(b->req, b->req_len, NULL, &h->io, NULL);
		rs_len = history_redact(b->resp, b->resp_len, NULL, &h->io, NULL);
	}
	need = sizeof(struct hent) + json_len + 1 + rq_len + 1 + rs_len + 1 + user_len + 1 + comm_len + 1 +
	       exe_len + 1 + src_len + 1 + dst_len + 1;
	if (need > h->cap || need < json_len) {
		h->st.rejected++;
		return -EFBIG;
	}
	need = ALIGN8(need);

	txn_keys(t, &pid_le, kname, klen);
	/* Evict until the entry fits in the ring and its new keys in the index reserve. Keys are looked up again
	 * each round: an eviction may remove a key this entry would have shared. */
	for (;;) {
		size_t icost = 0;
		for (int k = 0; k < HK__MAX; k++)
			if (klen[k] != SIZE_MAX && !htab_find(h, k, kname[k], klen[k]))
				icost += htab_add_cost(h, k, klen[k]);
		if (ring_fits(h, need) && h->index_bytes + icost <= h->index_max)
			break;
		if (!h->n) {
			h->st.rejected++;
			return -EFBIG;
		}
		evict_oldest(h);
	}
	for (int k = 0; k < HK__MAX; k++) {
		if (klen[k] == SIZE_MAX)
			continue;
		keys[k] = htab_find(h, k, kname[k], klen[k]);
		if (!keys[k]) {
			keys[k] = htab_add(h, k, kname[k], klen[k]);
			created[k] = true;
		}
		if (!keys[k]) {
			for (int j = 0; j < k; j++)
				if (created[j])
					htab_del(h, j, keys[j]);
			h->st.rejected++;
			return -ENOMEM;
		}
	}

	off = ring_place(h, need);
	struct hent *he = ent_at(h, off);
	struct history_entry *e = &he->e;
	memset(he, 0, sizeof(*he));
	he->span = need;
	w = 0;
	e->id = h->next_id++;
	e->ts_start = t->ts_start;
	e->ts_end = t->ts_end;
	e->sequence = t->sequence;
	e->req_bytes = t->req_bytes;
	e->resp_bytes = t->resp_bytes;
	e->req_captured = b->req ? b->req_len : 0;
	e->resp_captured = b->resp ? b->resp_len : 0;
	e->pid = t->pid;
	e->src_port = t->src_port;
	e->dst_port = t->dst_port;
	e->role = t->role;
	e->status = t->status;
	e->tls = t->tls;
	e->truncated = t->truncated;
	e->json = put_str(he->data, &w, json, json_len);
	e->json_len = json_len;
	e->req = he->data + w;
	if (once) {
		memcpy(he->data + w, h->red, rq_len);
		e->req_len = rq_len;
	} else {
		e->req_len = history_redact(b->req, b->req_len, he->data + w, &h->io, &rq_red);
	}
	he->data[w + e->req_len] = '\0';
	w += e->req_len + 1;
	e->resp = he->data + w;
	if (once) {
		memcpy(he->data + w, h->red + rq_len, rs_len);
		e->resp_len = rs_len;
	} else {
		e->resp_len = history_redact(b->resp, b->resp_len, he->data + w, &h->io, &rs_red);
	}
	he->data[w + e->resp_len] = '\0';
	w += e->resp_len + 1;
	e->user = put_str(he->data, &w, user, user_len);
	e->comm = put_str(he->data, &w, nz(t->comm), comm_len);
	e->exe = put_str(he->data, &w, nz(t->exe), exe_len);
	e->src_ip = put_str(he->data, &w, t->src_ip, src_len);
	e->dst_ip = put_str(he->data, &w, t->dst_ip, dst_len);

	for (int k = 0; k < HK__MAX; k++) {
		struct hkey *x = keys[k];
		he->key[k] = x;
		if (!x)
			continue;
		if (x->tail)
			x->tail->next[k] = he;
		else
			x->head = he;
		x->tail = he;
	}
	h->last = he;
	h->n++;
	h->st.added++;
	h->st.redacted += rq_red + rs_red;
	return 0;
}

/* ------------------------------------------------------------------ select */

static bool in_time(const struct history_filter *f, const struct history_entry *e)
{
	return e->ts_start >= f->since_ns && (!f->until_ns || e->ts_start < f->until_ns);
}

int history__select(const struct history *h, const struct history_filter *f, history_fn cb, void *ctx)
{
	static const struct history_filter all;
	struct hent *a = NULL, *b = NULL;
	int ka = -1, kb = HK_PID, rc;

	if (!f)
		f = &all;
	if (!f->principal && !f->pid) {
		size_t off = h->head;
		for (uint64_t i = 0; i < h->n; i++) {
			struct hent *e = ent_at(h, off);
			if (in_time(f, &e->e) && (rc = cb(ctx, &e->e)))
				return rc;
			off += e->span;
			if (off >= h->cap)
				off = 0;
		}
		return 0;
	}
	if (f->principal) {
		const char *p = f->principal;
		struct hkey *x;
		if (!strncmp(p, "ip:", 3)) {
			ka = HK_IP;
			p += 3;
		} else {
			ka = HK_USER;
			if (!strncmp(p, "user:ip:", 8))
				p += 5;
		}
		x = htab_find(h, ka, p, strnlen(p, IDENTITY_PRINCIPAL_MAX));
		a = x ? x->head : NULL;
	}
	if (f->pid) {
		uint32_t pid_le = f->pid;
		struct hkey *x = htab_find(h, HK_PID, (const char *)&pid_le, sizeof(pid_le));
		b = x ? x->head : NULL;
	}
	/* merge the two FIFOs by insertion id, each entry once */
	while (a || b) {
		struct hent *e;
		if (a && (!b || a->e.id <= b->e.id)) {
			e = a;
			if (b == a)
				b = b->next[kb];
			a = a->next[ka];
		} else {
			e = b;
			b = b->next[kb];
		}
		if (in_time(f, &e->e) && (rc = cb(ctx, &e->e)))
			return rc;
	}
	return 0;
}

void history__stats(const struct history *h, struct history_stats *out)
{
	*out = h->st;
	out->entries = h->n;
	out->bytes = h->used;
	out->index_bytes = h->index_bytes;
	out->mem_bytes = h->cap + h->index_bytes + chunk_cost(sizeof(*h)) + 16;
}
