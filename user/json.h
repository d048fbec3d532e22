/* json.h — a growable output buffer and the one escaper every sink uses.
 * Attacker-controlled bytes reach JSON, syslog, audit and dumps: anything
 * written through json_str()/json_escape() is valid UTF-8 with control bytes,
 * quotes and backslashes escaped, so one record stays one line.
 */
#ifndef PHIWATCH_JSON_H
#define PHIWATCH_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct jbuf {
	char *p;
	size_t len;
	size_t cap;
	bool oom;       /* an allocation failed: contents are incomplete */
	bool need_comma;
};

void jbuf_init(struct jbuf *b);
void jbuf_free(struct jbuf *b);
void jbuf_reset(struct jbuf *b);
/* Slow path of jbuf_put: grows the buffer. */
void jbuf_put_grow(struct jbuf *b, const char *s, size_t n);

static inline void jbuf_put(struct jbuf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		jbuf_put_grow(b, s, n);
		return;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}
void jbuf_puts(struct jbuf *b, const char *s);
/* Appends s[0..n) escaped for a JSON string body (no quotes added).
 * Invalid UTF-8 becomes U+FFFD; control bytes become \uXXXX or \n-style. */
void json_escape(struct jbuf *b, const char *s, size_t n);

/* Object/array writers; they manage commas. Keys are trusted literals
 * (written as they are); values are escaped. */
void json_obj_open(struct jbuf *b, const char *key);   /* key NULL: top level or array element */
void json_obj_close(struct jbuf *b);
void json_arr_open(struct jbuf *b, const char *key);
void json_arr_close(struct jbuf *b);
void json_key(struct jbuf *b, const char *key);
void json_str(struct jbuf *b, const char *key, const char *s, size_t n);
void json_cstr(struct jbuf *b, const char *key, const char *s);
void json_u64(struct jbuf *b, const char *key, uint64_t v);
void json_i64(struct jbuf *b, const char *key, int64_t v);
void json_bool(struct jbuf *b, const char *key, bool v);

/* RFC 3339 UTC with microseconds: "2026-11-28T10:21:41.123456Z". out >= 32. */
void json_time_rfc3339(char *out, size_t outlen, uint64_t realtime_ns);

#endif
