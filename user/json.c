/* json.c — JSON output buffer and escaper (see json.h). Not a parser: cJSON reads JSON. */
#include "json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void jbuf_init(struct jbuf *b)
{
	memset(b, 0, sizeof(*b));
}

void jbuf_free(struct jbuf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

void jbuf_reset(struct jbuf *b)
{
	b->len = 0;
	b->oom = false;
	b->need_comma = false;
}

static bool jbuf_reserve(struct jbuf *b, size_t extra)
{
	if (b->oom)
		return false;
	if (b->len + extra + 1 <= b->cap)
		return true;
	size_t ncap = b->cap ? b->cap : 256;
	while (ncap < b->len + extra + 1)
		ncap *= 2;
	char *np = realloc(b->p, ncap);
	if (!np) {
		b->oom = true;
		return false;
	}
	b->p = np;
	b->cap = ncap;
	return true;
}

void jbuf_put_grow(struct jbuf *b, const char *s, size_t n)
{
	if (!jbuf_reserve(b, n))
		return;
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

void jbuf_puts(struct jbuf *b, const char *s)
{
	jbuf_put(b, s, strlen(s));
}

/* Length of the valid UTF-8 sequence at s[0..n), 0 if invalid (RFC 3629:
 * no overlongs, no surrogates, nothing above U+10FFFF). */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];
	size_t len;
	unsigned int cp;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		len = 2;
		cp = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		cp = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		cp = c & 0x07;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

void json_escape(struct jbuf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0, run = 0;

	while (i < n) {
		unsigned char c = u[i];
		if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
			run++;
			i++;
			continue;
		}
		if (run) {
			jbuf_put(b, s + i - run, run);
			run = 0;
		}
		if (c >= 0x80) {
			size_t l = utf8_seq(u + i, n - i);
			if (l == 0) {
				jbuf_put(b, "\\ufffd", 6);
				i++;
			} else {
				jbuf_put(b, s + i, l);
				i += l;
			}
			continue;
		}
		switch (c) {
		case '"': jbuf_put(b, "\\\"", 2); break;
		case '\\': jbuf_put(b, "\\\\", 2); break;
		case '\n': jbuf_put(b, "\\n", 2); break;
		case '\r': jbuf_put(b, "\\r", 2); break;
		case '\t': jbuf_put(b, "\\t", 2); break;
		default: {
			char e[6] = { '\\', 'u', '0', '0', hex[c >> 4], hex[c & 15] };
			jbuf_put(b, e, 6);
		}
		}
		i++;
	}
	if (run)
		jbuf_put(b, s + n - run, run);
}

static void comma(struct jbuf *b)
{
	if (b->need_comma)
		jbuf_put(b, ",", 1);
	b->need_comma = true;
}

void json_key(struct jbuf *b, const char *key)
{
	size_t n = key ? strlen(key) : 0;

	/* one bounds check for the comma, the quotes and the key (written for every field of every line) */
	if (key && b->len + n + 5 <= b->cap) {
		char *p = b->p + b->len;
		if (b->need_comma)
			*p++ = ',';
		*p++ = '"';
		memcpy(p, key, n);
		p += n;
		*p++ = '"';
		*p++ = ':';
		*p = '\0';
		b->len = (size_t)(p - b->p);
		b->need_comma = true;
		return;
	}
	comma(b);
	if (key) {
		/* keys are the program's own literals: no escaping needed */
		jbuf_put(b, "\"", 1);
		jbuf_put(b, key, n);
		jbuf_put(b, "\":", 2);
	}
}

void json_obj_open(struct jbuf *b, const char *key)
{
	json_key(b, key);
	jbuf_put(b, "{", 1);
	b->need_comma = false;
}

void json_obj_close(struct jbuf *b)
{
	jbuf_put(b, "}", 1);
	b->need_comma = true;
}

void json_arr_open(struct jbuf *b, const char *key)
{
	json_key(b, key);
	jbuf_put(b, "[", 1);
	b->need_comma = false;
}

void json_arr_close(struct jbuf *b)
{
	jbuf_put(b, "]", 1);
	b->need_comma = true;
}

void json_str(struct jbuf *b, const char *key, const char *s, size_t n)
{
	json_key(b, key);
	jbuf_put(b, "\"", 1);
	json_escape(b, s, n);
	jbuf_put(b, "\"", 1);
}

void json_cstr(struct jbuf *b, const char *key, const char *s)
{
	json_str(b, key, s, strlen(s));
}

/* Decimal digits of v, right-aligned in t[24]; returns the first. */
static char *u64_digits(char t[24], uint64_t v)
{
	char *p = t + 24;
	do {
		*--p = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	return p;
}

void json_u64(struct jbuf *b, const char *key, uint64_t v)
{
	char t[24];
	char *p = u64_digits(t, v);
	json_key(b, key);
	jbuf_put(b, p, (size_t)(t + 24 - p));
}

void json_i64(struct jbuf *b, const char *key, int64_t v)
{
	char t[24];
	char *p = u64_digits(t, v < 0 ? 0 - (uint64_t)v : (uint64_t)v);
	if (v < 0)
		*--p = '-';
	json_key(b, key);
	jbuf_put(b, p, (size_t)(t + 24 - p));
}

void json_bool(struct jbuf *b, const char *key, bool v)
{
	json_key(b, key);
	jbuf_puts(b, v ? "true" : "false");
}

void json_time_rfc3339(char *out, size_t outlen, uint64_t ns)
{
	/* Calls arrive in bursts within one second: format the date once per second. */
	static __thread time_t last_sec = -1;
	static __thread char date[24];
	time_t sec = (time_t)(ns / 1000000000ull);
	unsigned us = (unsigned)(ns % 1000000000ull / 1000);

	if (sec != last_sec) {
		struct tm tm;
		gmtime_r(&sec, &tm);
		strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm);
		last_sec = sec;
	}
	if (outlen < 28) {
		snprintf(out, outlen, "%s", date);
		return;
	}
	memcpy(out, date, 19);
	out[19] = '.';
	for (int i = 25; i >= 20; i--) {
		out[i] = (char)('0' + us % 10);
		us /= 10;
	}
	out[26] = 'Z';
	out[27] = '\0';
}
