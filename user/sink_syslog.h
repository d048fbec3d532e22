/* sink_syslog.h — alerts to the local syslog daemon as RFC 3164 messages
 * ("<PRI>Mmm dd hh:mm:ss phiwatch[pid]: msg") over a unix socket whose path is
 * configurable (tests point it at their own rsyslog). Not syslog(3), and never
 * the audit log. Never blocks the pipeline for long: a message that cannot be
 * sent is dropped and counted.
 */
#ifndef PHIWATCH_SINK_SYSLOG_H
#define PHIWATCH_SINK_SYSLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "alert.h"
#include "json.h"

#define SINK_SYSLOG_PATH "/dev/log"

enum sink_syslog_framing {
	SINK_SYSLOG_FRAME_NEWLINE = 0, /* stream sockets: message + "\n" (rsyslog, syslog-ng) */
	SINK_SYSLOG_FRAME_OCTET,       /* stream sockets: "LEN " + message (RFC 6587) */
};

struct sink_syslog_opts {
	const char *path;        /* NULL: SINK_SYSLOG_PATH; copied */
	int facility;            /* a LOG_* facility value (LOG_AUTHPRIV...); -1: LOG_AUTHPRIV */
	const char *ident;       /* NULL: "phiwatch"; copied, cut at 32 bytes */
	uint32_t pid;            /* 0: getpid() */
	enum sink_syslog_framing framing;  /* used only when the socket is SOCK_STREAM */
	size_t max_msg;          /* bytes of one message incl. header; 0: 2048 */
	uint32_t retry_ms;       /* least time between reconnect attempts; 0: every send */
};

struct sink_syslog_stats {
	uint64_t sent;
	uint64_t dropped;        /* not delivered: daemon absent, buffer full, error */
	uint64_t truncated;      /* cut to max_msg */
	uint64_t connects;       /* successful (re)connections */
	bool connected;
	bool stream;             /* the daemon's socket is SOCK_STREAM */
};

/* Connection problems are not errors here: the first connect is tried now,
 * and again on later sends. NULL + errno only for bad options or no memory. */
struct sink_syslog *sink_syslog__new(const struct sink_syslog_opts *o);
/* Sends msg[0..len) with severity (LOG_CRIT...) and the header time ts_ns
 * (realtime ns, shown in local time). Returns 0 or -errno (message dropped). */
int sink_syslog_send(struct sink_syslog *s, int severity, uint64_t ts_ns, const char *msg,
		     size_t len);
/* alert_fn: alert_to_syslog_msg() at the mapped severity. ctx is the sink. */
void sink_syslog_alert(void *ctx, const struct alert *a);
void sink_syslog_stats(const struct sink_syslog *s, struct sink_syslog_stats *out);
void sink_syslog__free(struct sink_syslog *s);

/* "authpriv", "auth", "daemon", "user", "local0".."local7" -> LOG_* value,
 * or -EINVAL (for the config loader). */
int sink_syslog_facility(const char *name);

#endif
