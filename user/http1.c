/* http1.c — HTTP/1.x head parser and incremental message framer (RFC 9112 §2-§7). */
/* Not a conformance checker: lenient where servers are, so no message can hide from us by being odd. */
#include "http1.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---- character classes ---- */

/* RFC 9110 §5.6.2 tchar */
/* RFC 9110 tchar: DIGIT / ALPHA / "!#$%&'*+-.^_`|~" (a table: it is asked for every byte of every header name) */
static const bool tchar_tab[256] = {
	['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1,
	['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1, ['I'] = 1, ['J'] = 1,
	['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1,
	['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1, ['Y'] = 1, ['Z'] = 1,
	['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1,
	['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1,
	['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
	['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1, ['-'] = 1, ['.'] = 1,
	['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1, ['~'] = 1,
};

static inline bool is_tchar(unsigned char c)
{
	return tchar_tab[c];
}

static bool is_ows(unsigned char c)
{
	return c == ' ' || c == '\t';
}

static int hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c |= 0x20;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* ---- start line: one byte-at-a-time DFA shared by the parser and the stream ---- */

/*
 * The stream runs it as bytes arrive, so garbage is rejected at its first bad
 * byte instead of after head_cap bytes; http1_parse_head runs the same steps,
 * so both always agree on what a valid start line is.
 */
enum sl_state {
	SL_METHOD,	/* request: method token */
	SL_TARGET0,	/* first byte of request-target */
	SL_TARGET,
	SL_VER,		/* "HTTP/1." (n = bytes matched) */
	SL_MINOR,
	SL_EOL,		/* CR or LF */
	SL_LF,		/* LF after CR */
	SL_RSP,		/* response: SP after version */
	SL_STATUS,	/* n = digits so far */
	SL_AFTER,	/* SP, CR or LF after status */
	SL_REASON,
	SL_DONE,
};

enum { SL_MORE = 0, SL_END = 1, SL_BAD = -1 };

struct sl {
	uint8_t st;
	uint8_t n;
	uint8_t kind;
};

static const char sl_version[] = "HTTP/1.";

static void sl_init(struct sl *sl, enum http1_kind kind)
{
	sl->st = kind == HTTP1_RESPONSE ? SL_VER : SL_METHOD;
	sl->n = 0;
	sl->kind = (uint8_t)kind;
}

static int sl_step(struct sl *sl, unsigned char c)
{
	switch (sl->st) {
	case SL_METHOD:
		if (c == ' ' && sl->n > 0) {
			sl->st = SL_TARGET0;
			return SL_MORE;
		}
		if (!is_tchar(c) || sl->n >= HTTP1_METHOD_MAX)
			return SL_BAD;
		sl->n++;
		return SL_MORE;
	case SL_TARGET0:
	case SL_TARGET:
		if (c == ' ' && sl->st == SL_TARGET) {
			sl->st = SL_VER;
			sl->n = 0;
			return SL_MORE;
		}
		/* obs-text (>= 0x80) accepted: servers pass raw UTF-8 through */
		if (c <= ' ' || c == 0x7f)
			return SL_BAD;
		sl->st = SL_TARGET;
		return SL_MORE;
	case SL_VER:
		if (c != (unsigned char)sl_version[sl->n])
			return SL_BAD;
		if (++sl->n == sizeof(sl_version) - 1)
			sl->st = SL_MINOR;
		return SL_MORE;
	case SL_MINOR:
		if (c < '0' || c > '9')
			return SL_BAD;
		sl->st = sl->kind == HTTP1_RESPONSE ? SL_RSP : SL_EOL;
		return SL_MORE;
	case SL_EOL:
		if (c == '\r') {
			sl->st = SL_LF;
			return SL_MORE;
		}
		if (c == '\n') {
			sl->st = SL_DONE;
			return SL_END;
		}
		return SL_BAD;
	case SL_LF:
		if (c != '\n')
			return SL_BAD;
		sl->st = SL_DONE;
		return SL_END;
	case SL_RSP:
		if (c != ' ')
			return SL_BAD;
		sl->st = SL_STATUS;
		sl->n = 0;
		return SL_MORE;
	case SL_STATUS:
		if (c < (sl->n == 0 ? '1' : '0') || c > '9')
			return SL_BAD;
		if (++sl->n == 3)
			sl->st = SL_AFTER;
		return SL_MORE;
	case SL_AFTER:
		if (c == ' ') {
			sl->st = SL_REASON;
			return SL_MORE;
		}
		sl->st = SL_EOL;
		return sl_step(sl, c);
	case SL_REASON:
		if (c == '\r' || c == '\n') {
			sl->st = SL_EOL;
			return sl_step(sl, c);
		}
		if ((c < ' ' && c != '\t') || c == 0x7f)
			return SL_BAD;
		return SL_MORE;
	}
	return SL_BAD;
}

/* ---- framing headers ---- */

struct framing {
	bool te;		/* a Transfer-Encoding header was seen */
	bool te_chunked;	/* its final coding is chunked */
	bool cl;		/* a Content-Length header was seen */
	bool cl_bad;		/* unparsable or conflicting */
	uint64_t cl_val;
};

/* OWS, plus CR/LF: an obs-fold inside a value reads as SP (RFC 9112 §5.2) */
static bool is_lws(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static struct slice trim_lws(const char *p, size_t n)
{
	while (n && is_lws((unsigned char)p[0])) {
		p++;
		n--;
	}
	while (n && is_lws((unsigned char)p[n - 1]))
		n--;
	return (struct slice){ p, n };
}

/* Visit the non-empty elements of a comma list; stops early when fn returns false. */
static void list_each(struct slice v, bool (*fn)(struct slice, void *), void *arg)
{
	size_t i = 0;

	while (i <= v.len) {
		size_t j = i;
		while (j < v.len && v.p[j] != ',')
			j++;
		struct slice e = trim_lws(v.p + i, j - i);
		if (e.len && !fn(e, arg))
			return;
		i = j + 1;
	}
}

struct cl_ctx {
	struct framing *fr;
	size_t n;
};

static bool cl_elem(struct slice e, void *arg)
{
	struct cl_ctx *c = arg;
	struct framing *fr = c->fr;
	uint64_t v = 0;

	c->n++;
	for (size_t i = 0; i < e.len; i++) {
		unsigned char ch = (unsigned char)e.p[i];
		if (ch < '0' || ch > '9' || v > (UINT64_MAX - 9) / 10) {
			fr->cl_bad = true;
			return false;
		}
		v = v * 10 + (ch - '0');
	}
	/* "5, 5" is one length sent twice (RFC 9110 §8.6); "5, 6" is an attack or a bug */
	if (fr->cl && fr->cl_val != v) {
		fr->cl_bad = true;
		return false;
	}
	fr->cl = true;
	fr->cl_val = v;
	return true;
}

struct te_last {
	struct slice last;
};

static bool te_elem(struct slice e, void *arg)
{
	((struct te_last *)arg)->last = e;
	return true;
}

/* Every header counts for framing, stored or dropped: a Content-Length placed
 * after 64 junk headers still frames the body for the server. */
static void framing_add(struct framing *fr, struct slice name, struct slice value)
{
	if (name.len == 14 && slice_ieq(name, "content-length")) {
		struct cl_ctx c = { fr, 0 };
		list_each(value, cl_elem, &c);
		if (c.n == 0)
			fr->cl_bad = true;	/* empty value */
		fr->cl = true;
	} else if (name.len == 17 && slice_ieq(name, "transfer-encoding")) {
		struct te_last t = { { NULL, 0 } };
		fr->te = true;
		list_each(value, te_elem, &t);
		if (t.last.len)
			fr->te_chunked = slice_ieq(t.last, "chunked");
	}
}

/* ---- head parser ---- */

/*
 * Scan a field value (or continuation line) starting at p. On OK: *end is the
 * value's end with trailing OWS trimmed, *next the first byte after the LF.
 */
static int scan_value(const char *buf, size_t len, size_t p, size_t start, size_t *end, size_t *next)
{
	/* the first of LF, CR, NUL ends the value; memchr is vectorised, header values reach kilobytes (JWTs) */
	const char *nl = p < len ? memchr(buf + p, '\n', len - p) : NULL;
	size_t lim = nl ? (size_t)(nl - buf) : len;
	const char *cr = p < lim ? memchr(buf + p, '\r', lim - p) : NULL;
	size_t stop = cr ? (size_t)(cr - buf) : lim;

	if (p < stop && memchr(buf + p, 0, stop - p))
		return HTTP1_INVALID;
	if (!cr && !nl)
		return HTTP1_PARTIAL;
	size_t e = stop;
	if (cr) {
		if (stop + 1 >= len)
			return HTTP1_PARTIAL;
		if (buf[stop + 1] != '\n')
			return HTTP1_INVALID;	/* bare CR */
		stop++;
	}
	while (e > start && is_ows((unsigned char)buf[e - 1]))
		e--;
	*end = e;
	*next = stop + 1;
	return HTTP1_OK;
}

struct hdr_acc {
	struct http1_head *h;
	struct framing *fr;
	struct http1_header cur;
	bool have;
};

static void hdr_flush(struct hdr_acc *a)
{
	if (!a->have)
		return;
	if (a->h->num_headers < HTTP1_MAX_HEADERS)
		a->h->headers[a->h->num_headers++] = a->cur;
	else
		a->h->headers_dropped++;
	framing_add(a->fr, a->cur.name, a->cur.value);
	a->have = false;
}

/*
 * cut: the head is known to end early (capture gap, head_cap): parse the
 * complete lines only, stop quietly at the first incomplete or bad header
 * line and return HTTP1_OK with *head_len = bytes of complete lines used.
 */
static int parse_head(enum http1_kind kind, const char *buf, size_t len, struct http1_head *h,
		      size_t *head_len, struct framing *fr, bool cut)
{
	struct sl sl;
	size_t p = 0, mark = 0;
	int r;

	h->method = h->target = h->reason = (struct slice){ NULL, 0 };
	h->minor_version = 0;
	h->status = 0;
	h->num_headers = 0;
	h->headers_dropped = 0;
	h->truncated = cut;
	h->raw = (struct slice){ buf, len };
	memset(fr, 0, sizeof(*fr));

	/* Fast path for a well-formed request line "METHOD SP target SP HTTP/1.x CRLF";
	 * anything else (responses, odd forms, partial input) takes the state
	 * machine below, which has the final say. */
	if (kind == HTTP1_REQUEST) {
		const char *eol = memchr(buf, '\n', len);
		size_t ll = eol ? (size_t)(eol - buf) : 0;
		if (ll >= 16 && buf[ll - 1] == '\r') {
			const char *sp1 = memchr(buf, ' ', ll);
			size_t m = sp1 ? (size_t)(sp1 - buf) : 0;
			size_t vend = ll - 1;            /* the CR */
			if (m > 0 && m <= HTTP1_METHOD_MAX && vend >= 9 && buf[vend - 9] == ' ' &&
			    memcmp(buf + vend - 8, "HTTP/1.", 7) == 0 && buf[vend - 1] >= '0' && buf[vend - 1] <= '9' &&
			    vend - 9 > m + 1) {
				bool ok = true;
				for (size_t k = 0; k < m && ok; k++)
					ok = is_tchar((unsigned char)buf[k]);
				for (size_t k = m + 1; k < vend - 9 && ok; k++) {
					unsigned char c = (unsigned char)buf[k];
					ok = c > ' ' && c != 0x7f;
				}
				if (ok) {
					h->method = (struct slice){ buf, m };
					h->target = (struct slice){ buf + m + 1, vend - 9 - m - 1 };
					h->minor_version = buf[vend - 1] - '0';
					p = ll;
					goto headers;
				}
			}
		}
	}
	sl_init(&sl, kind);
	for (;; p++) {
		if (p >= len)
			return HTTP1_PARTIAL;
		unsigned char c = (unsigned char)buf[p];
		uint8_t before = sl.st;
		r = sl_step(&sl, c);
		if (r == SL_BAD)
			return HTTP1_INVALID;
		if (before == SL_METHOD && sl.st == SL_TARGET0) {
			h->method = (struct slice){ buf, p };
		} else if (before == SL_TARGET0) {
			mark = p;
		} else if (before == SL_TARGET && sl.st == SL_VER) {
			h->target = (struct slice){ buf + mark, p - mark };
		} else if (before == SL_MINOR) {
			h->minor_version = c - '0';
		} else if (before == SL_STATUS) {
			h->status = h->status * 10 + (c - '0');
		} else if (before == SL_AFTER) {
			mark = p + (c == ' ');
			h->reason = (struct slice){ buf + mark, 0 };
		} else if (before == SL_REASON && sl.st != SL_REASON) {
			h->reason = (struct slice){ buf + mark, p - mark };
		}
		if (r == SL_END)
			break;
	}
headers:
	p++;

	struct hdr_acc a = { .h = h, .fr = fr };
	for (;;) {
		size_t line = p, e, next;
		if (p >= len) {
			r = HTTP1_PARTIAL;
			goto stop;
		}
		unsigned char c = (unsigned char)buf[p];
		if (c == '\r' || c == '\n') {
			if (c == '\r') {
				if (p + 1 >= len) {
					r = HTTP1_PARTIAL;
					goto stop;
				}
				if (buf[p + 1] != '\n') {
					r = HTTP1_INVALID;
					goto stop;
				}
				p++;
			}
			hdr_flush(&a);
			*head_len = p + 1;
			h->raw.len = p + 1;
			return HTTP1_OK;
		}
		if (is_ows(c)) {
			/* obs-fold; whitespace before the first field is a smuggling vector (RFC 9112 §2.2) */
			if (!a.have) {
				r = HTTP1_INVALID;
				goto stop;
			}
			size_t s = p;
			while (s < len && is_ows((unsigned char)buf[s]))
				s++;
			r = scan_value(buf, len, s, s, &e, &next);
			if (r != HTTP1_OK)
				goto stop;
			if (a.cur.value.len == 0)
				a.cur.value.p = buf + s;
			if (e > s)
				a.cur.value.len = (size_t)(buf + e - a.cur.value.p);
			p = next;
			continue;
		}
		hdr_flush(&a);
		while (p < len && is_tchar((unsigned char)buf[p]))
			p++;
		if (p >= len) {
			r = HTTP1_PARTIAL;
			goto stop;
		}
		if (buf[p] != ':' || p == line) {
			r = HTTP1_INVALID;
			goto stop;
		}
		a.cur.name = (struct slice){ buf + line, p - line };
		p++;
		while (p < len && is_ows((unsigned char)buf[p]))
			p++;
		r = scan_value(buf, len, p, p, &e, &next);
		if (r != HTTP1_OK)
			goto stop;
		a.cur.value = (struct slice){ buf + p, e - p };
		a.have = true;
		p = next;
		continue;
stop:
		if (!cut)
			return r;
		hdr_flush(&a);
		*head_len = line;
		return HTTP1_OK;
	}
}


int http1_parse_head(enum http1_kind kind, const char *buf, size_t len, struct http1_head *h,
		     size_t *head_len)
{
	struct framing fr;

	if (!buf && len)
		return HTTP1_INVALID;
	return parse_head(kind, buf, len, h, head_len, &fr, false);
}

const struct slice *http1_header_get(const struct http1_head *h, const char *name)
{
	for (size_t i = 0; i < h->num_headers; i++)
		if (slice_ieq(h->headers[i].name, name))
			return &h->headers[i].value;
	return NULL;
}

/* ---- stream ---- */

enum st {
	ST_HEAD,	/* between messages or inside a head */
	ST_LEN,		/* body of known length: remain */
	ST_CLOSE,	/* response body until close */
	ST_CSIZE,	/* chunk-size hex digits (digits so far in ndig, value in remain) */
	ST_CEXT,	/* rest of the chunk-size line (extensions, BWS) */
	ST_CSIZE_LF,	/* LF after CR of the chunk-size line */
	ST_CDATA,	/* chunk data: remain */
	ST_CCR,		/* CR (or bare LF) after chunk data */
	ST_CLF,		/* LF after that CR */
	ST_TRAILER,	/* trailer section until blank line */
	ST_RESYNC,	/* looking for a plausible message start */
	ST_PASS,	/* passthrough: not HTTP/1 any more */
};

struct http1_stream {
	enum http1_kind kind;
	enum st state;
	size_t head_cap;
	struct http1_callbacks cb;
	void *ctx;
	struct http1_stream_stats stats;

	uint64_t ts;		/* ts of the chunk being fed */
	uint64_t gap;		/* uncaptured bytes after the chunk being fed */
	bool busy;		/* inside feed/close: callbacks may run */
	bool passthrough;	/* requested; applied at the next safe point */
	bool resyncing;		/* sync lost and not yet regained (resyncs counted once) */
	bool bnd;		/* the byte before the next one is not a tchar, or is a gap: a message may start */

	/* head being gathered */
	char *hbuf;		/* bytes of the head from earlier chunks; NULL when none */
	size_t hlen, hcap;
	const char *hplace;	/* head started in the chunk being fed at hplace (hlen == 0) */
	size_t h_n;		/* head bytes so far (buffered + this chunk) */
	size_t line_len;	/* bytes of the current head or trailer line so far */
	bool line_cr;		/* last byte of the current line is CR */
	bool sl_done;
	struct sl sl;
	uint64_t h_ts;

	/* message in progress (between on_head and on_complete) */
	bool active;
	struct http1_msg_end end;
	uint64_t remain;
	size_t ndig;		/* chunk-size digits / chunk line or trailer bytes */

	/* resync candidate: a possible message start being matched */
	char cand[8];
	uint8_t cand_len;
	bool cand_here;		/* it began in the chunk being fed, at cand_pos */
	size_t cand_pos;
	uint64_t cand_ts;
};

static void head_lost(struct http1_stream *s, const char *hb, size_t hn, bool bnd, uint64_t gap);

struct http1_stream *http1_stream__new(enum http1_kind kind, size_t head_cap,
				       const struct http1_callbacks *cb, void *ctx)
{
	struct http1_stream *s;

	if ((kind != HTTP1_REQUEST && kind != HTTP1_RESPONSE) || head_cap == 0) {
		errno = EINVAL;
		return NULL;
	}
	s = calloc(1, sizeof(*s));
	if (!s) {
		errno = ENOMEM;
		return NULL;
	}
	s->kind = kind;
	s->state = ST_HEAD;
	s->head_cap = head_cap;
	if (cb)
		s->cb = *cb;
	s->ctx = ctx;
	s->bnd = true;
	sl_init(&s->sl, kind);
	return s;
}

void http1_stream__free(struct http1_stream *s)
{
	if (!s)
		return;
	free(s->hbuf);
	free(s);
}

bool http1_stream__at_boundary(const struct http1_stream *s)
{
	/* resynchronising with no candidate is between messages too */
	return (s->state == ST_HEAD && s->h_n == 0) || (s->state == ST_RESYNC && s->cand_len == 0);
}

void http1_stream__abandon(struct http1_stream *s)
{
	if (s->busy || s->state != ST_HEAD || s->h_n == 0)
		return;
	s->busy = true;
	head_lost(s, s->hlen ? s->hbuf : NULL, s->h_n, true, 0);
	s->busy = false;
}

const struct http1_stream_stats *http1_stream__stats(const struct http1_stream *s)
{
	return &s->stats;
}

size_t http1_stream__buffered(const struct http1_stream *s)
{
	return s->hcap;
}

/* Forget the head being gathered; its buffer is released so idle streams cost nothing. */
static void head_reset(struct http1_stream *s)
{
	free(s->hbuf);
	s->hbuf = NULL;
	s->hlen = s->hcap = 0;
	s->hplace = NULL;
	s->h_n = 0;
	s->line_len = 0;
	s->line_cr = false;
	s->sl_done = false;
	sl_init(&s->sl, s->kind);
}

/* Append to the head buffer; the caller guarantees hlen + n <= head_cap. */
static bool head_append(struct http1_stream *s, const char *p, size_t n)
{
	if (!n)
		return true;
	if (s->hlen + n > s->hcap) {
		size_t cap = s->hcap ? s->hcap : 256;
		while (cap < s->hlen + n)
			cap = cap > s->head_cap / 2 ? s->head_cap : cap * 2;
		if (cap > s->head_cap)
			cap = s->head_cap;
		char *nb = realloc(s->hbuf, cap);
		if (!nb)
			return false;
		s->hbuf = nb;
		s->hcap = cap;
	}
	memcpy(s->hbuf + s->hlen, p, n);
	s->hlen += n;
	return true;
}

static void enter_resync(struct http1_stream *s, bool bnd)
{
	s->state = ST_RESYNC;
	s->cand_len = 0;
	s->bnd = bnd;
	if (!s->resyncing) {
		s->resyncing = true;
		s->stats.resyncs++;
	}
}

/* Boundary flag for a resync starting at d[i]. */
static bool bnd_at(const struct http1_stream *s, const char *d, size_t i)
{
	return i ? !is_tchar((unsigned char)d[i - 1]) : s->bnd;
}

static void complete(struct http1_stream *s)
{
	struct http1_msg_end e = s->end;

	s->active = false;
	s->stats.messages++;
	s->state = ST_HEAD;
	if (s->cb.on_complete)
		s->cb.on_complete(s->ctx, &e);
	if (s->passthrough)
		s->state = ST_PASS;
}

/* The message's framing is lost: end it here as a guess, then look for the next one. */
static void lose_sync(struct http1_stream *s, bool bnd)
{
	s->end.truncated = true;
	s->end.unframed = true;
	complete(s);
	if (s->state != ST_PASS)
		enter_resync(s, bnd);
}

static void enter_passthrough(struct http1_stream *s)
{
	head_reset(s);
	s->cand_len = 0;
	if (s->active) {
		s->end.truncated = s->end.unframed = true;
		complete(s);
	}
	s->state = ST_PASS;
}

void http1_stream__passthrough(struct http1_stream *s)
{
	if (!s)
		return;
	s->passthrough = true;
	if (!s->busy)
		enter_passthrough(s);
}

static void begin_message(struct http1_stream *s, uint64_t head_bytes)
{
	s->active = true;
	memset(&s->end, 0, sizeof(s->end));
	s->end.head_bytes = head_bytes;
	s->end.ts_last = s->ts;
}

/*
 * The head cannot be completed (gap, head_cap, allocation failure): hb[0..hn)
 * is what was captured. With a start line it is still reported, as truncated,
 * so a giant header cannot hide a request; without one it is garbage.
 */
static void head_lost(struct http1_stream *s, const char *hb, size_t hn, bool bnd, uint64_t gap)
{
	struct http1_head h;
	bool have = false;

	if (s->sl_done && hb) {
		struct framing fr;
		size_t used;
		parse_head(s->kind, hb, hn, &h, &used, &fr, true);
		have = true;
	} else if (hb && s->kind == HTTP1_REQUEST && s->sl.st == SL_TARGET) {
		/* Cut inside the request-target (a URL longer than the capture
		 * prefix): method and the target's beginning are still who did
		 * what. */
		const char *sp = memchr(hb, ' ', hn);
		if (sp) {
			memset(&h, 0, sizeof(h));
			h.method = (struct slice){ hb, (size_t)(sp - hb) };
			h.target = (struct slice){ sp + 1, hn - (size_t)(sp + 1 - hb) };
			h.minor_version = 1;
			h.truncated = true;
			h.raw = (struct slice){ hb, hn };
			have = h.method.len > 0 && h.target.len > 0;
		}
	}
	if (have) {
		/* Heads are written whole: the uncaptured rest of this call
		 * most likely is the rest of this head. */
		begin_message(s, hn + gap);
		s->end.truncated = s->end.unframed = true;
		if (s->cb.on_head)
			s->cb.on_head(s->ctx, &h, s->h_ts);
		head_reset(s);
		complete(s);
	} else {
		s->stats.garbage_bytes += hn;
		head_reset(s);
	}
	if (s->state != ST_PASS)
		enter_resync(s, bnd);
}

/* The head so far as one contiguous run; NULL if it could not be buffered. */
static const char *head_view(struct http1_stream *s, const char *d, size_t seg, size_t i, size_t *n)
{
	*n = s->h_n;
	if (s->hlen == 0 && s->hplace)
		return s->hplace;
	if (!head_append(s, d + seg, i - seg))
		return NULL;
	*n = s->hlen;
	return s->hbuf;
}

enum body { B_NONE, B_LEN, B_CHUNKED, B_CLOSE, B_BAD };

/* A whole head hb[0..hn) ended at d[i]: parse, report, choose the body framing. */
/* A whole head hb[0..hn), already parsed into h/fr: report it, choose the body framing. */
static void head_commit(struct http1_stream *s, struct http1_head *hp, struct framing *frp, size_t hn)
{
#define h (*hp)
#define fr (*frp)
	enum body body;
	int ret = 0;
	s->resyncing = false;
	begin_message(s, hn);
	if (s->cb.on_head)
		ret = s->cb.on_head(s->ctx, &h, s->h_ts);
	head_reset(s);

	if (s->kind == HTTP1_RESPONSE) {
		if (h.status < 200 || h.status == 204 || h.status == 304 || ret == HTTP1_HEAD_NO_BODY)
			body = B_NONE;
		else if (fr.te)
			body = fr.te_chunked ? B_CHUNKED : B_CLOSE;
		else if (fr.cl)
			body = fr.cl_bad ? B_BAD : B_LEN;
		else
			body = B_CLOSE;
		if (h.status == 101)
			s->passthrough = true;
	} else {
		/* RFC 9112 §6.3: a request TE not ending in chunked cannot be framed */
		if (fr.te)
			body = fr.te_chunked ? B_CHUNKED : B_BAD;
		else if (fr.cl)
			body = fr.cl_bad ? B_BAD : B_LEN;
		else
			body = B_NONE;
	}
	/* passthrough asked from on_head (CONNECT 2xx): the message is its head */
	if (s->passthrough)
		body = B_NONE;

	switch (body) {
	case B_NONE:
		complete(s);
		break;
	case B_LEN:
		if (fr.cl_val == 0) {
			complete(s);
		} else {
			s->state = ST_LEN;
			s->remain = fr.cl_val;
		}
		break;
	case B_CHUNKED:
		s->state = ST_CSIZE;
		s->remain = 0;
		s->ndig = 0;
		break;
	case B_CLOSE:
		s->state = ST_CLOSE;
		break;
	case B_BAD:
		lose_sync(s, true);
		break;
	}
#undef h
#undef fr
}

static void head_done(struct http1_stream *s, const char *hb, size_t hn)
{
	struct http1_head h;
	struct framing fr;
	size_t used = 0;

	if (parse_head(s->kind, hb, hn, &h, &used, &fr, false) != HTTP1_OK || used != hn) {
		/* a broken field block: the whole head is garbage; it ended with LF */
		s->stats.garbage_bytes += hn;
		head_reset(s);
		enter_resync(s, true);
		return;
	}
	head_commit(s, &h, &fr, hn);
}

/* ST_HEAD from d[i]; returns where the next state continues. */
static size_t feed_head(struct http1_stream *s, const char *d, size_t i, size_t n)
{
	size_t seg = i, hn;
	const char *hb;

	if (s->h_n == 0) {
		/* RFC 9112 §2.2: empty lines before a message are ignored */
		while (i < n && (d[i] == '\r' || d[i] == '\n'))
			i++;
		if (i == n)
			return n;
		seg = i;
		s->hplace = d + i;
		s->h_ts = s->ts;
		/* Fast path: the whole head is in this chunk (the common case).
		 * Find its end with memmem and parse once; anything unusual
		 * (bare LF, garbage, a head over head_cap) takes the byte-wise
		 * path below, which knows how to resynchronise. */
		size_t lim = n - i < s->head_cap ? n - i : s->head_cap;
		const char *e = memmem(d + i, lim, "\r\n\r\n", 4);
		if (e) {
			struct http1_head h;
			struct framing fr;
			size_t used = 0, hlen = (size_t)(e + 4 - (d + i));
			if (parse_head(s->kind, d + i, hlen, &h, &used, &fr, false) == HTTP1_OK && used == hlen) {
				s->h_n = hlen;
				head_commit(s, &h, &fr, hlen);
				return i + hlen;
			}
		}
	}
	while (i < n) {
		if (s->h_n == s->head_cap) {
			s->stats.head_overflows++;
			hb = head_view(s, d, seg, i, &hn);
			head_lost(s, hb, hn, bnd_at(s, d, i), 0);
			return i;
		}
		if (!s->sl_done) {
			int r = sl_step(&s->sl, (unsigned char)d[i]);
			if (r == SL_BAD) {
				/* not a start line after all: bytes so far are garbage, d[i] is rescanned */
				s->stats.garbage_bytes += s->h_n;
				head_reset(s);
				enter_resync(s, bnd_at(s, d, i));
				return i;
			}
			i++;
			s->h_n++;
			if (r == SL_END) {
				s->sl_done = true;
				s->line_len = 0;
				s->line_cr = false;
			}
			continue;
		}
		size_t lim = n - i, room = s->head_cap - s->h_n;
		if (lim > room)
			lim = room;
		const char *nl = memchr(d + i, '\n', lim);
		size_t k = nl ? (size_t)(nl - (d + i)) : lim;
		if (k) {
			s->line_len += k;
			s->line_cr = d[i + k - 1] == '\r';
		}
		i += k;
		s->h_n += k;
		if (!nl)
			continue;
		bool blank = s->line_len == 0 || (s->line_len == 1 && s->line_cr);
		i++;
		s->h_n++;
		s->line_len = 0;
		s->line_cr = false;
		if (blank) {
			hb = head_view(s, d, seg, i, &hn);
			if (!hb) {
				s->stats.head_overflows++;
				head_lost(s, NULL, hn, true, 0);
			} else {
				head_done(s, hb, hn);
			}
			return i;
		}
	}
	/* chunk ended inside the head: keep it in place if a gap follows (it is lost anyway) */
	if (s->gap && s->hlen == 0)
		return n;
	if (!head_append(s, d + seg, n - seg)) {
		s->stats.head_overflows++;
		s->hplace = NULL;
		head_lost(s, NULL, s->h_n, bnd_at(s, d, n), 0);
		return n;
	}
	s->hplace = NULL;
	return n;
}

/* ---- resync ---- */

#define START(s) { s, sizeof(s) - 1 }
static const struct {
	const char *s;
	size_t len;
} req_starts[] = {
	START("GET "), START("HEAD "), START("POST "), START("PUT "), START("DELETE "),
	START("PATCH "), START("OPTIONS "), START("TRACE "), START("CONNECT "),
};

/* 1: cand + c is a whole start, 0: a proper prefix of one, -1: neither */
static int cand_try(const struct http1_stream *s, unsigned char c)
{
	size_t k = s->cand_len;

	if (s->kind == HTTP1_RESPONSE) {
		if (c != (unsigned char)sl_version[k])
			return -1;
		return k + 1 == sizeof(sl_version) - 1 ? 1 : 0;
	}
	for (size_t m = 0; m < sizeof(req_starts) / sizeof(req_starts[0]); m++) {
		const char *w = req_starts[m].s;
		size_t wl = req_starts[m].len, j;
		if (wl <= k)
			continue;
		for (j = 0; j < k; j++)
			if ((s->cand[j] | 0x20) != (w[j] | 0x20))
				break;
		/* ' ' | 0x20 == ' ', so SP only matches SP */
		if (j == k && ((c | 0x20) == (w[k] | 0x20)) && (c != ' ') == (w[k] != ' '))
			return k + 1 == wl ? 1 : 0;
	}
	return -1;
}

static void run(struct http1_stream *s, const char *d, size_t n);

/* A start was matched and ends before d[j]: gather it as a head. */
static size_t cand_start(struct http1_stream *s, size_t j)
{
	char cand[sizeof(s->cand)];
	size_t len = s->cand_len;
	uint64_t ts = s->ts, gap = s->gap;

	s->cand_len = 0;
	s->state = ST_HEAD;
	head_reset(s);
	if (s->cand_here)
		return s->cand_pos;	/* rescan it in place */
	/*
	 * It began in an earlier chunk: run the saved bytes through as a chunk of
	 * their own (ts of their first byte, no gap), so that a head_cap below 8
	 * or any other outcome is the same as if they had arrived together.
	 * No callback can run: the bytes hold no LF.
	 */
	memcpy(cand, s->cand, len);
	s->ts = s->cand_ts;
	s->gap = 0;
	run(s, cand, len);
	s->ts = ts;
	s->gap = gap;
	s->hplace = NULL;
	s->cand_here = false;
	return j;
}

static size_t feed_resync(struct http1_stream *s, const char *d, size_t i, size_t n)
{
	for (; i < n; i++) {
		unsigned char c = (unsigned char)d[i];
		if (s->cand_len) {
			int r = cand_try(s, c);
			if (r >= 0)
				s->cand[s->cand_len++] = (char)c;
			if (r == 1)
				return cand_start(s, i + 1);
			if (r == 0)
				continue;
			s->stats.garbage_bytes += s->cand_len;
			s->bnd = !is_tchar((unsigned char)s->cand[s->cand_len - 1]);
			s->cand_len = 0;
		}
		if (s->bnd && cand_try(s, c) == 0) {
			s->cand[0] = (char)c;
			s->cand_len = 1;
			s->cand_here = true;
			s->cand_pos = i;
			s->cand_ts = s->ts;
			continue;
		}
		s->stats.garbage_bytes++;
		s->bnd = !is_tchar(c);
	}
	return n;
}

/* ---- bodies ---- */

static void body_out(struct http1_stream *s, const char *p, size_t n)
{
	if (n && s->cb.on_body)
		s->cb.on_body(s->ctx, p, n);
}

/* Chunk framing bytes from d[i]: one step per byte, except trailers. */
static size_t feed_chunked(struct http1_stream *s, const char *d, size_t i, size_t n)
{
	unsigned char c = (unsigned char)d[i];
	int v;

	switch (s->state) {
	case ST_CSIZE:
		if (s->ndig >= s->head_cap)
			goto bad;
		v = hexval(c);
		if (v >= 0) {
			if (s->remain > (UINT64_MAX >> 4))
				goto bad;
			s->remain = s->remain * 16 + (uint64_t)v;
			s->ndig++;
			break;
		}
		if (s->ndig == 0)
			goto bad;
		if (c == ';' || c == ' ' || c == '\t') {
			s->state = ST_CEXT;
			s->ndig++;
			break;
		}
		if (c == '\r') {
			s->state = ST_CSIZE_LF;
			break;
		}
		if (c == '\n')
			goto size_done;
		goto bad;
	case ST_CEXT: {
		/* extensions are not interpreted; only their length is bounded */
		size_t lim = n - i, room = s->head_cap - s->ndig;
		if (lim > room)
			lim = room;
		const char *nl = memchr(d + i, '\n', lim);
		size_t k = nl ? (size_t)(nl - (d + i)) : lim;
		if (!nl && k == 0)
			goto bad;
		s->ndig += k;
		s->end.body_bytes += k;
		i += k;
		if (!nl)
			return i;
		goto size_done;
	}
	case ST_CSIZE_LF:
		if (c != '\n')
			goto bad;
		goto size_done;
	case ST_CCR:
		if (c == '\r') {
			s->state = ST_CLF;
			break;
		}
		if (c != '\n')
			goto bad;
		goto next_chunk;
	case ST_CLF:
		if (c != '\n')
			goto bad;
		goto next_chunk;
	case ST_TRAILER: {
		size_t lim = n - i, room = s->head_cap - s->ndig;
		if (lim > room)
			lim = room;
		if (lim == 0)
			goto bad;
		const char *nl = memchr(d + i, '\n', lim);
		size_t k = nl ? (size_t)(nl - (d + i)) : lim;
		if (k) {
			s->line_len += k;
			s->line_cr = d[i + k - 1] == '\r';
		}
		s->ndig += k;
		s->end.body_bytes += k;
		i += k;
		if (!nl)
			return i;
		bool blank = s->line_len == 0 || (s->line_len == 1 && s->line_cr);
		s->line_len = 0;
		s->line_cr = false;
		s->ndig++;
		s->end.body_bytes++;
		if (blank)
			complete(s);
		return i + 1;
	}
	default:
		break;
	}
	s->end.body_bytes++;
	return i + 1;

size_done:
	s->end.body_bytes++;
	if (s->remain == 0) {
		s->state = ST_TRAILER;
		s->ndig = 0;
		s->line_len = 0;
		s->line_cr = false;
	} else {
		s->state = ST_CDATA;
	}
	return i + 1;
next_chunk:
	s->end.body_bytes++;
	s->state = ST_CSIZE;
	s->remain = 0;
	s->ndig = 0;
	return i + 1;
bad:
	lose_sync(s, bnd_at(s, d, i));
	return i;
}

/* ---- gaps ---- */

/* The chunk being fed ended and s->gap bytes were not captured. */
static void feed_gap(struct http1_stream *s)
{
	uint64_t g = s->gap, k;

	switch (s->state) {
	case ST_PASS:
		return;
	case ST_RESYNC:
		s->stats.garbage_bytes += s->cand_len;
		s->cand_len = 0;
		s->bnd = true;
		return;
	case ST_CLOSE:
		s->end.body_bytes += g;
		s->end.truncated = true;
		s->end.ts_last = s->ts;
		return;
	case ST_LEN:
	case ST_CDATA:
		k = g < s->remain ? g : s->remain;
		s->remain -= k;
		g -= k;
		s->end.body_bytes += k;
		s->end.truncated = true;
		s->end.ts_last = s->ts;
		if (s->remain)
			return;
		if (s->state == ST_CDATA) {
			s->state = ST_CCR;
			if (g)
				lose_sync(s, true);
			return;
		}
		complete(s);
		if (!g || s->state == ST_PASS)
			return;
		break;	/* the next head begins inside the gap */
	case ST_HEAD:
		break;
	default:
		/* chunk-size line, CRLF or trailers: framing unknown */
		s->end.ts_last = s->ts;
		lose_sync(s, true);
		return;
	}
	/* ST_HEAD */
	if (s->h_n) {
		size_t hn;
		const char *hb = s->hlen ? s->hbuf : s->hplace;
		hn = s->h_n;
		head_lost(s, hb, hn, true, g);
	} else {
		enter_resync(s, true);
	}
}

/* ---- driver ---- */

/* Captured bytes d[0..n) of the chunk being fed, through every state. */
static void run(struct http1_stream *s, const char *d, size_t n)
{
	size_t i = 0;

	while (i < n) {
		if (s->passthrough && s->state != ST_PASS)
			enter_passthrough(s);
		switch (s->state) {
		case ST_PASS:
			i = n;
			break;
		case ST_HEAD:
			i = feed_head(s, d, i, n);
			break;
		case ST_RESYNC:
			i = feed_resync(s, d, i, n);
			break;
		case ST_CLOSE:
			s->end.body_bytes += n - i;
			s->end.ts_last = s->ts;
			body_out(s, d + i, n - i);
			i = n;
			break;
		case ST_LEN:
		case ST_CDATA: {
			size_t k = n - i;
			if (k > s->remain)
				k = (size_t)s->remain;
			s->remain -= k;
			s->end.body_bytes += k;
			s->end.ts_last = s->ts;
			body_out(s, d + i, k);
			i += k;
			if (s->remain == 0 && s->state == ST_LEN)
				complete(s);
			else if (s->remain == 0 && s->state == ST_CDATA)
				s->state = ST_CCR;
			break;
		}
		default:
			s->end.ts_last = s->ts;
			i = feed_chunked(s, d, i, n);
			break;
		}
	}
}

void http1_stream__feed(struct http1_stream *s, const char *data, size_t cap_len,
			uint64_t total_len, uint64_t ts)
{
	if (!s)
		return;
	if (!data)
		cap_len = 0;
	if (total_len < cap_len)
		total_len = cap_len;
	s->busy = true;
	s->ts = ts;
	s->gap = total_len - cap_len;
	s->cand_here = false;
	run(s, data, cap_len);
	if (s->passthrough && s->state != ST_PASS)
		enter_passthrough(s);
	if (cap_len && s->state != ST_RESYNC)
		s->bnd = !is_tchar((unsigned char)data[cap_len - 1]);
	if (s->gap) {
		s->stats.gap_bytes += s->gap;
		feed_gap(s);
		s->bnd = true;
	}
	s->hplace = NULL;
	s->cand_here = false;
	s->gap = 0;
	s->busy = false;
}

void http1_stream__close(struct http1_stream *s, uint64_t ts)
{
	(void)ts;
	if (!s)
		return;
	s->busy = true;
	switch (s->state) {
	case ST_PASS:
		break;
	case ST_HEAD:
		s->stats.garbage_bytes += s->h_n;
		head_reset(s);
		break;
	case ST_RESYNC:
		s->stats.garbage_bytes += s->cand_len;
		s->cand_len = 0;
		break;
	case ST_CLOSE:
		complete(s);
		break;
	default:
		s->end.truncated = true;
		complete(s);
		break;
	}
	if (s->passthrough && s->state != ST_PASS)
		enter_passthrough(s);
	if (s->state != ST_PASS) {
		s->state = ST_HEAD;
		s->resyncing = false;
		s->bnd = true;
	}
	s->busy = false;
}
