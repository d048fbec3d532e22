/* control.h — the agent's root-only control socket (a unix stream socket; one JSON request line in, one JSON
 * response line out, then the agent closes) and the client side `phiwatch dump` (and later `status`) use.
 * Not a command dispatcher: the agent's handler decides what a request means. Not thread-safe.
 *
 * Who may talk: the socket is 0600 in a 0700 directory, and every peer's SO_PEERCRED uid must be 0 or the
 * agent's own effective uid (the same thing for the root agent; it lets unit tests run unprivileged); anyone
 * else gets {"ok":false,"error":"permission denied"} and is closed.
 * Bounded: a request line is at most CONTROL_LINE_MAX bytes and must arrive within CONTROL_READ_TIMEOUT_MS of
 * the connection; at most CONTROL_MAX_CLIENTS are served at once (more are answered "busy"); a response not
 * taken within CONTROL_WRITE_TIMEOUT_MS is dropped. Nothing blocks: a stuck client costs a slot, not the agent.
 */
#ifndef PHIWATCH_CONTROL_H
#define PHIWATCH_CONTROL_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "json.h"

#define CONTROL_DEFAULT_PATH "/run/phiwatch/control.sock"
#define CONTROL_LINE_MAX 4096
#define CONTROL_READ_TIMEOUT_MS 2000
#define CONTROL_WRITE_TIMEOUT_MS 5000
#define CONTROL_MAX_CLIENTS 8
#define CONTROL_CLIENT_TIMEOUT_MS 120000   /* control_request: how long to wait for the agent's answer */

/* Handles one request (a JSON object, borrowed for the call): writes one JSON object (no newline) to resp,
 * which is empty on entry. An empty resp is answered {"ok":false,"error":"no response"}. */
typedef void (*control_handler_fn)(void *ctx, const cJSON *req, struct jbuf *resp);

struct control_stats {
	uint64_t accepted;
	uint64_t handled;        /* requests given to the handler */
	uint64_t refused_peer;   /* peers whose uid was not allowed */
	uint64_t bad_requests;   /* not one JSON object line, or longer than CONTROL_LINE_MAX */
	uint64_t timeouts;       /* clients closed for being slow to send or to read */
	uint64_t busy;           /* clients turned away: CONTROL_MAX_CLIENTS already served */
};

struct control;

/* Listens on path (NULL: CONTROL_DEFAULT_PATH, at most 107 bytes). The parent directory is created 0700 when
 * missing; an existing one must be a directory owned by the effective uid (its mode is tightened to 0700). A
 * stale socket at path is replaced; a live one (another agent answering) is EADDRINUSE; any other file there is
 * EEXIST. NULL with errno. */
struct control *control__new(const char *path);
/* Closes every client, unlinks the socket. NULL ok. */
void control__free(struct control *c);

/* An epoll descriptor that becomes readable when a client connects or sends (add it to the agent's poll set). */
int control__fd(const struct control *c);

/* Never blocks. Accepts pending clients, reads what they sent, calls fn for each complete request line, writes
 * the responses, closes finished and timed-out clients. Call it when control__fd is readable and at least
 * every 100 ms (timeouts and pending responses). Returns the number of requests handled, or -errno when the
 * descriptor itself failed. */
int control__poll(struct control *c, control_handler_fn fn, void *ctx);

void control__stats(const struct control *c, struct control_stats *out);

/* Client: connects to path, sends json (one object, no newline) plus a newline, waits up to
 * CONTROL_CLIENT_TIMEOUT_MS for one response line, puts it (without the newline) in resp. 0, or -errno with
 * a reason in err (-ECONNREFUSED/-ENOENT: no agent listening; -EACCES: not root; -ETIMEDOUT). */
int control_request(const char *path, const char *json, struct jbuf *resp, char *err, size_t errlen);

#endif
