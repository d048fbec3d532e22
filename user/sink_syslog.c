/* sink_syslog.c — RFC 3164 datagrams (or framed stream) to a unix socket (see sink_syslog.h). */
#include "sink_syslog.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

struct sink_syslog {
	struct sockaddr_un addr;
	socklen_t addr_len;
	int fd;                  /* -1: not connected */
	bool stream;
	int facility;
	char ident[33];
	uint32_t pid;
	enum sink_syslog_framing framing;
	size_t max_msg;
	uint64_t retry_ns;
	uint64_t last_try_ns;    /* CLOCK_MONOTONIC of the last failed connect */
	bool tried;
	struct jbuf out;         /* frame being sent */
	struct jbuf msg;         /* alert_fn scratch */
	struct sink_syslog_stats st;
};

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sk_close(struct sink_syslog *s)
{
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
	s->st.connected = false;
}

static int sk_try(struct sink_syslog *s, int type)
{
	int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&s->addr, s->addr_len) < 0) {
		int err = -errno;
		close(fd);
		return err;
	}
	if (type == SOCK_STREAM) {
		/* A stalled daemon costs at most this per message, then we drop. */
		struct timeval tv = { .tv_sec = 0, .tv_usec = 200000 };
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	}
	s->fd = fd;
	s->stream = type == SOCK_STREAM;
	s->st.stream = s->stream;
	s->st.connected = true;
	s->st.connects++;
	return 0;
}

/* 0 when connected. Attempts are spaced by retry_ns after a failure. */
static int sk_connect(struct sink_syslog *s, bool force)
{
	int err;

	if (s->fd >= 0)
		return 0;
	if (!force && s->tried && s->retry_ns && mono_ns() - s->last_try_ns < s->retry_ns)
		return -EAGAIN;
	err = sk_try(s, SOCK_DGRAM);
	if (err == -EPROTOTYPE)
		err = sk_try(s, SOCK_STREAM);
	if (err) {
		s->tried = true;
		s->last_try_ns = mono_ns();
	}
	return err;
}

struct sink_syslog *sink_syslog__new(const struct sink_syslog_opts *o)
{
	const char *path = o && o->path ? o->path : SINK_SYSLOG_PATH;
	const char *ident = o && o->ident ? o->ident : "phiwatch";
	struct sink_syslog *s;
	size_t plen = strlen(path);

	if (plen == 0 || plen >= sizeof(s->addr.sun_path) || (o && o->facility > LOG_LOCAL7) ||
	    (o && o->max_msg && o->max_msg < 64)) {
		errno = EINVAL;
		return NULL;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->fd = -1;
	s->addr.sun_family = AF_UNIX;
	memcpy(s->addr.sun_path, path, plen + 1);
	s->addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen + 1);
	s->facility = o && o->facility >= 0 ? o->facility : LOG_AUTHPRIV;
	snprintf(s->ident, sizeof(s->ident), "%s", ident);
	s->pid = o && o->pid ? o->pid : (uint32_t)getpid();
	s->framing = o ? o->framing : SINK_SYSLOG_FRAME_NEWLINE;
	s->max_msg = o && o->max_msg ? o->max_msg : 2048;
	s->retry_ns = (o ? (uint64_t)o->retry_ms : 1000ull) * 1000000ull;
	jbuf_init(&s->out);
	jbuf_init(&s->msg);
	sk_connect(s, true);
	return s;
}

static int sk_write(struct sink_syslog *s)
{
	if (!s->stream) {
		if (send(s->fd, s->out.p, s->out.len, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
			return -errno;
		return 0;
	}
	size_t off = 0;
	while (off < s->out.len) {
		ssize_t n = send(s->fd, s->out.p + off, s->out.len - off, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			int err = -errno;
			/* a half-sent frame corrupts the stream: start over */
			if (off)
				sk_close(s);
			return err;
		}
		off += (size_t)n;
	}
	return 0;
}

/* Frames hdr + msg for the socket type now connected, and sends it. */
static int sk_frame_write(struct sink_syslog *s, const char *hdr, size_t hlen, const char *msg,
			  size_t len)
{
	char pre[24];

	jbuf_reset(&s->out);
	if (s->stream && s->framing == SINK_SYSLOG_FRAME_OCTET) {
		int n = snprintf(pre, sizeof(pre), "%zu ", hlen + len);
		jbuf_put(&s->out, pre, (size_t)n);
	}
	jbuf_put(&s->out, hdr, hlen);
	jbuf_put(&s->out, msg, len);
	if (s->stream && s->framing == SINK_SYSLOG_FRAME_NEWLINE)
		jbuf_put(&s->out, "\n", 1);
	if (s->out.oom)
		return -ENOMEM;
	return sk_write(s);
}

int sink_syslog_send(struct sink_syslog *s, int severity, uint64_t ts_ns, const char *msg,
		     size_t len)
{
	static const char *mon[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
				     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	char hdr[96];
	time_t sec = (time_t)(ts_ns / 1000000000ull);
	struct tm tm;
	int n, err;
	size_t hlen, room;

	if (sk_connect(s, false) < 0) {
		s->st.dropped++;
		return -ENOTCONN;
	}
	localtime_r(&sec, &tm);
	n = snprintf(hdr, sizeof(hdr), "<%d>%s %2d %02d:%02d:%02d %s[%u]: ",
		     (s->facility & LOG_FACMASK) | (severity & LOG_PRIMASK), mon[tm.tm_mon % 12],
		     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, s->ident, s->pid);
	hlen = (size_t)n < sizeof(hdr) ? (size_t)n : sizeof(hdr) - 1;
	room = s->max_msg - hlen;
	if (len > room) {
		/* cut on a UTF-8 boundary: the daemon may validate */
		len = room;
		while (len > 0 && ((unsigned char)msg[len] & 0xc0) == 0x80)
			len--;
		s->st.truncated++;
	}
	err = sk_frame_write(s, hdr, hlen, msg, len);
	if (err && err != -EAGAIN && err != -EWOULDBLOCK && err != -ENOBUFS && err != -ENOMEM) {
		/* daemon restarted (ECONNREFUSED/ENOTCONN/EPIPE): reconnect once, resend once */
		sk_close(s);
		err = sk_connect(s, true);
		if (err == 0)
			err = sk_frame_write(s, hdr, hlen, msg, len);
	}
	if (err) {
		s->st.dropped++;
		return err;
	}
	s->st.sent++;
	return 0;
}

void sink_syslog_alert(void *ctx, const struct alert *a)
{
	struct sink_syslog *s = ctx;

	jbuf_reset(&s->msg);
	alert_to_syslog_msg(a, &s->msg);
	if (s->msg.oom) {
		s->st.dropped++;
		return;
	}
	sink_syslog_send(s, alert_syslog_severity(a->severity), a->ts_ns, s->msg.p, s->msg.len);
}

void sink_syslog_stats(const struct sink_syslog *s, struct sink_syslog_stats *out)
{
	*out = s->st;
}

void sink_syslog__free(struct sink_syslog *s)
{
	if (!s)
		return;
	sk_close(s);
	jbuf_free(&s->out);
	jbuf_free(&s->msg);
	free(s);
}

int sink_syslog_facility(const char *name)
{
	static const struct {
		const char *name;
		int fac;
	} tab[] = {
		{ "authpriv", LOG_AUTHPRIV }, { "auth", LOG_AUTH },     { "daemon", LOG_DAEMON },
		{ "user", LOG_USER },         { "local0", LOG_LOCAL0 }, { "local1", LOG_LOCAL1 },
		{ "local2", LOG_LOCAL2 },     { "local3", LOG_LOCAL3 }, { "local4", LOG_LOCAL4 },
		{ "local5", LOG_LOCAL5 },     { "local6", LOG_LOCAL6 }, { "local7", LOG_LOCAL7 },
	};

	for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++)
		if (name && strcmp(name, tab[i].name) == 0)
			return tab[i].fac;
	return -EINVAL;
}
