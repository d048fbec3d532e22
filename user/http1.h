/* http1.h — HTTP/1.x head parser and incremental message framer for one direction of a stream. */
/* Not an HTTP client or server: no I/O, no global state, never answers or rewrites anything. */
#ifndef PHIWATCH_HTTP1_H
#define PHIWATCH_HTTP1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "slice.h"

enum http1_kind { HTTP1_REQUEST = 0, HTTP1_RESPONSE = 1 };
enum { HTTP1_OK = 0, HTTP1_PARTIAL = -1, HTTP1_INVALID = -2 };	/* head parser results */
#define HTTP1_MAX_HEADERS 64
#define HTTP1_HEAD_NO_BODY 1	/* on_head return for a response that has no body (answer to HEAD) */
#define HTTP1_METHOD_MAX 32	/* longer method tokens are INVALID */

struct http1_header { struct slice name, value; };

struct http1_head {
	struct slice method;	/* request: as sent, case preserved */
	struct slice target;	/* request-target as sent (origin-form "/p?q" or absolute-form) */
	int minor_version;	/* the x of HTTP/1.x */
	int status;		/* response: 100..999 */
	struct slice reason;
	struct http1_header headers[HTTP1_MAX_HEADERS];
	size_t num_headers;
	size_t headers_dropped;	/* headers beyond HTTP1_MAX_HEADERS: counted, not stored */
	bool truncated;		/* head cut by a capture gap or head_cap: fields parsed so far only */
	struct slice raw;	/* the head's bytes as captured (valid like the other slices) */
};

/*
 * Parse one complete head at buf[0..len).
 * HTTP1_OK: *head_len = bytes of the head including the blank line (CRLF and
 * bare LF line ends are both accepted). HTTP1_PARTIAL: every byte so far is a
 * valid prefix, more are needed. HTTP1_INVALID: buf does not start a valid head.
 * Accepted: any token as method (case preserved; at most HTTP1_METHOD_MAX),
 * "HTTP/1.<digit>", status 100..999 with or without a reason, header names
 * that are tokens (kept as sent), values without NUL or bare CR, obs-fold
 * continuation lines (the value slice then spans them, CRLFs included).
 * Slices borrow buf; h is fully written on HTTP1_OK only.
 */
int http1_parse_head(enum http1_kind kind, const char *buf, size_t len, struct http1_head *h,
		     size_t *head_len);

/* Case-insensitive header lookup among the stored headers; the first match or NULL. */
const struct slice *http1_header_get(const struct http1_head *h, const char *name);

struct http1_msg_end {
	uint64_t head_bytes;	/* wire bytes of the head */
	uint64_t body_bytes;	/* wire bytes of the body incl. chunk framing and trailers, gaps included */
	uint64_t ts_last;	/* ts of the chunk that held the message's last byte */
	bool truncated;		/* some bytes of this message were not captured (or never came: closed early) */
	bool unframed;		/* sync lost (gap in a head or in chunk framing, bad framing headers,
				 * head over head_cap): the end is a guess; the stream resynchronises */
};

struct http1_callbacks {
	/* Head complete (or cut: h->truncated). Slices valid only during the call.
	 * ts_first: ts of the chunk holding the message's first byte. For
	 * responses return HTTP1_HEAD_NO_BODY when the request was HEAD; else 0.
	 * May be NULL. */
	int (*on_head)(void *ctx, const struct http1_head *h, uint64_t ts_first);
	/* Captured body bytes, de-chunked (content only), in order; may be NULL.
	 * p points into the chunk being fed. */
	void (*on_body)(void *ctx, const char *p, size_t len);
	/* Message complete; called exactly once after each on_head. May be NULL. */
	void (*on_complete)(void *ctx, const struct http1_msg_end *end);
};

struct http1_stream_stats {
	uint64_t messages;	/* on_complete calls */
	uint64_t garbage_bytes;	/* captured bytes skipped while resynchronising */
	uint64_t resyncs;	/* times sync was lost and searched for */
	uint64_t head_overflows;	/* heads larger than head_cap (or buffer allocation failures) */
	uint64_t gap_bytes;	/* bytes moved but not captured */
};

struct http1_stream;	/* opaque */

/*
 * head_cap: most bytes buffered for one incomplete head (e.g. 16384); also the
 * cap on one chunk-size line and on a trailer section. Must be > 0.
 * cb is copied. Returns NULL and sets errno (EINVAL, ENOMEM) on failure.
 */
struct http1_stream *http1_stream__new(enum http1_kind kind, size_t head_cap,
				       const struct http1_callbacks *cb, void *ctx);
/* NULL ok. Must not be called from inside a callback of the same stream. */
void http1_stream__free(struct http1_stream *s);
/*
 * One chunk: data[0..cap_len) captured, then total_len - cap_len uncaptured
 * bytes (a total_len below cap_len is taken as cap_len). ts: the chunk's
 * timestamp (ns). Callbacks run synchronously from here.
 */
void http1_stream__feed(struct http1_stream *s, const char *data, size_t cap_len,
			uint64_t total_len, uint64_t ts);
/*
 * Peer closed: completes a response body delimited by connection close; a
 * message cut short by the close completes with truncated=true; a partial head
 * is counted as garbage. ts is not used for ts_last (the last byte's chunk is).
 */
void http1_stream__close(struct http1_stream *s, uint64_t ts);
/*
 * From now on consume everything without parsing (after 101 Switching Protocols,
 * which the stream does by itself, or CONNECT 2xx). May be called from a
 * callback. A message in progress is completed with truncated=unframed=true, except
 * when called from on_head: that message then ends cleanly with its head.
 * A partially buffered head is discarded (not counted as garbage).
 */
void http1_stream__passthrough(struct http1_stream *s);
/* The peer answered before the head being gathered was complete (a server
 * rejecting a bad request early): report it now as truncated, if its start
 * line is there, and look for the next message. */
void http1_stream__abandon(struct http1_stream *s);
/* Between messages: the next byte would start a new head (or is searched
 * for one after lost sync). */
bool http1_stream__at_boundary(const struct http1_stream *s);
const struct http1_stream_stats *http1_stream__stats(const struct http1_stream *s);
/* Bytes currently held in the head buffer (allocated capacity, for memory accounting). */
size_t http1_stream__buffered(const struct http1_stream *s);

#endif
