/* control.c — the control socket (see control.h): a listening unix socket and a few non-blocking clients, all
 * under one level-triggered epoll descriptor; and the blocking client helper.
 */
#include "control.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

struct client {
	int fd;                          /* -1: free slot */
	bool writing;
	uint64_t deadline_ms;            /* monotonic */
	size_t len;                      /* request bytes read */
	char buf[CONTROL_LINE_MAX + 1];
	struct jbuf out;                 /* response being written */
	size_t off;
};

struct control {
	int lfd;
	int epfd;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	struct client cl[CONTROL_MAX_CLIENTS];
	struct control_stats st;
};

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* The socket's directory: created 0700 when missing, else a real directory of ours tightened to 0700. */
static int prepare_dir(const char *path)
{
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
	const char *slash = strrchr(path, '/');
	struct stat st;
	size_t n;

	if (!slash)
		return 0;                /* relative name in the cwd: the caller chose it */
	n = (size_t)(slash - path);
	if (n == 0)
		return 0;                /* "/name" */
	memcpy(dir, path, n);
	dir[n] = '\0';
	if (mkdir(dir, 0700) && errno != EEXIST)
		return -errno;
	if (lstat(dir, &st))
		return -errno;
	if (!S_ISDIR(st.st_mode))
		return -ENOTDIR;
	if (st.st_uid != geteuid())
		return -EPERM;
	if ((st.st_mode & 07777) != 0700 && chmod(dir, 0700))
		return -errno;
	return 0;
}

/* Removes a stale socket at path; -EADDRINUSE when something answers there, -EEXIST for a non-socket. */
static int clear_path(const struct sockaddr_un *sa)
{
	struct stat st;
	int fd, rc;

	if (lstat(sa->sun_path, &st))
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode))
		return -EEXIST;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	rc = connect(fd, (const struct sockaddr *)sa, sizeof(*sa));
	close(fd);
	if (!rc)
		return -EADDRINUSE;
	if (unlink(sa->sun_path) && errno != ENOENT)
		return -errno;
	return 0;
}

struct control *control__new(const char *path)
{
	struct control *c;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct epoll_event ev = { .events = EPOLLIN };
	mode_t old;
	int rc;

	if (!path)
		path = CONTROL_DEFAULT_PATH;
	if (!path[0] || strlen(path) >= sizeof(sa.sun_path)) {
		errno = ENAMETOOLONG;
		return NULL;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->lfd = c->epfd = -1;
	for (int i = 0; i < CONTROL_MAX_CLIENTS; i++)
		c->cl[i].fd = -1;
	rc = prepare_dir(path);
	if (!rc)
		rc = clear_path(&sa);
	if (rc)
		goto fail;
	c->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->lfd < 0) {
		rc = -errno;
		goto fail;
	}
	old = umask(0177);               /* the socket is born 0600: no window where others may connect */
	rc = bind(c->lfd, (struct sockaddr *)&sa, sizeof(sa)) ? -errno : 0;
	umask(old);
	if (rc)
		goto fail;
	memcpy(c->path, sa.sun_path, sizeof(c->path));
	if (chmod(path, 0600) || listen(c->lfd, 16)) {
		rc = -errno;
		goto fail;
	}
	c->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (c->epfd < 0) {
		rc = -errno;
		goto fail;
	}
	ev.data.u32 = UINT32_MAX;
	if (epoll_ctl(c->epfd, EPOLL_CTL_ADD, c->lfd, &ev)) {
		rc = -errno;
		goto fail;
	}
	return c;
fail:
	control__free(c);
	errno = -rc;
	return NULL;
}

static void client_close(struct control *c, struct client *k)
{
	if (k->fd < 0)
		return;
	epoll_ctl(c->epfd, EPOLL_CTL_DEL, k->fd, NULL);
	close(k->fd);
	k->fd = -1;
	jbuf_free(&k->out);
}

void control__free(struct control *c)
{
	if (!c)
		return;
	for (int i = 0; i < CONTROL_MAX_CLIENTS; i++)
		client_close(c, &c->cl[i]);
	if (c->lfd >= 0) {
		close(c->lfd);
		if (c->path[0])
			unlink(c->path);
	}
	if (c->epfd >= 0)
		close(c->epfd);
	free(c);
}

int control__fd(const struct control *c)
{
	return c->epfd;
}

void control__stats(const struct control *c, struct control_stats *out)
{
	*out = c->st;
}

/* Best effort, never blocks: for answers to clients that will be closed right after (busy, refused). */
static void say_and_close(int fd, const char *line)
{
	ssize_t r = send(fd, line, strlen(line), MSG_DONTWAIT | MSG_NOSIGNAL);

	(void)r;
	close(fd);
}

static void error_response(struct jbuf *b, const char *why)
{
	jbuf_reset(b);
	json_obj_open(b, NULL);
	json_bool(b, "ok", false);
	json_cstr(b, "error", why);
	json_obj_close(b);
}

static void accept_all(struct control *c)
{
	for (;;) {
		struct ucred cr = { .pid = 0, .uid = (uid_t)-1, .gid = (gid_t)-1 };
		socklen_t cl = sizeof(cr);
		struct client *k = NULL;
		struct epoll_event ev = { .events = EPOLLIN };
		int fd = accept4(c->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
				log_warn("control: accept: %s", strerror(errno));
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			return;
		}
		c->st.accepted++;
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) || (cr.uid != 0 && cr.uid != geteuid())) {
			c->st.refused_peer++;
			log_warn("control: refused a client with uid %d (root only)", (int)cr.uid);
			say_and_close(fd, "{\"ok\":false,\"error\":\"permission denied: root only\"}\n");
			continue;
		}
		for (int i = 0; i < CONTROL_MAX_CLIENTS && !k; i++)
			if (c->cl[i].fd < 0)
				k = &c->cl[i];
		if (!k) {
			c->st.busy++;
			say_and_close(fd, "{\"ok\":false,\"error\":\"busy: too many control clients\"}\n");
			continue;
		}
		ev.data.u32 = (uint32_t)(k - c->cl);
		if (epoll_ctl(c->epfd, EPOLL_CTL_ADD, fd, &ev)) {
			close(fd);
			continue;
		}
		k->fd = fd;
		k->writing = false;
		k->len = 0;
		k->off = 0;
		jbuf_init(&k->out);
		k->deadline_ms = mono_ms() + CONTROL_READ_TIMEOUT_MS;
	}
}

/* Sends what it can; closes the client when done or when the peer is gone. */
static void client_write(struct control *c, struct client *k)
{
	while (k->off < k->out.len) {
		ssize_t w = send(k->fd, k->out.p + k->off, k->out.len - k->off, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (w <= 0) {
			client_close(c, k);
			return;
		}
		k->off += (size_t)w;
	}
	client_close(c, k);
}

static void start_response(struct control *c, struct client *k)
{
	struct epoll_event ev = { .events = EPOLLOUT, .data.u32 = (uint32_t)(k - c->cl) };

	if (k->out.oom)
		error_response(&k->out, "out of memory");
	jbuf_put(&k->out, "\n", 1);
	k->writing = true;
	k->off = 0;
	k->deadline_ms = mono_ms() + CONTROL_WRITE_TIMEOUT_MS;
	epoll_ctl(c->epfd, EPOLL_CTL_MOD, k->fd, &ev);
	client_write(c, k);
}

/* Reads what is there; returns 1 when a request was handled. */
static int client_read(struct control *c, struct client *k, control_handler_fn fn, void *ctx)
{
	bool eof = false;
	char *nl = NULL;

	while (k->len < CONTROL_LINE_MAX) {
		ssize_t r = recv(k->fd, k->buf + k->len, CONTROL_LINE_MAX - k->len, MSG_DONTWAIT);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (r <= 0) {
			eof = true;
			break;
		}
		nl = memchr(k->buf + k->len, '\n', (size_t)r);
		k->len += (size_t)r;
		if (nl)
			break;
	}
	if (!nl)
		nl = memchr(k->buf, '\n', k->len);
	if (!nl && k->len >= CONTROL_LINE_MAX) {
		c->st.bad_requests++;
		error_response(&k->out, "request too long");
		start_response(c, k);
		return 0;
	}
	if (!nl && !eof)
		return 0;                /* wait for the rest */
	if (!nl && !k->len) {
		client_close(c, k);      /* connected and left */
		return 0;
	}
	size_t len = nl ? (size_t)(nl - k->buf) : k->len;
	cJSON *req = cJSON_ParseWithLength(k->buf, len);
	bool ok = cJSON_IsObject(req);
	if (!ok) {
		c->st.bad_requests++;
		error_response(&k->out, "bad request: expected one JSON object on one line");
	} else {
		c->st.handled++;
		jbuf_reset(&k->out);
		fn(ctx, req, &k->out);
		if (!k->out.len)
			error_response(&k->out, "no response");
	}
	cJSON_Delete(req);
	start_response(c, k);
	return ok ? 1 : 0;
}

int control__poll(struct control *c, control_handler_fn fn, void *ctx)
{
	struct epoll_event evs[CONTROL_MAX_CLIENTS + 1];
	int n, handled = 0;
	uint64_t now;

	n = epoll_wait(c->epfd, evs, CONTROL_MAX_CLIENTS + 1, 0);
	if (n < 0 && errno != EINTR)
		return -errno;
	for (int i = 0; i < n; i++) {
		uint32_t id = evs[i].data.u32;
		if (id == UINT32_MAX) {
			accept_all(c);
			continue;
		}
		struct client *k = &c->cl[id];
		if (k->fd < 0)
			continue;
		if (k->writing)
			client_write(c, k);
		else
			handled += client_read(c, k, fn, ctx);
	}
	now = mono_ms();
	for (int i = 0; i < CONTROL_MAX_CLIENTS; i++) {
		struct client *k = &c->cl[i];
		if (k->fd >= 0 && now >= k->deadline_ms) {
			c->st.timeouts++;
			client_close(c, k);
		}
	}
	return handled;
}

/* ------------------------------------------------------------------ client */

int control_request(const char *path, const char *json, struct jbuf *resp, char *err, size_t errlen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	uint64_t deadline = mono_ms() + CONTROL_CLIENT_TIMEOUT_MS;
	size_t jl = strlen(json), off = 0;
	char buf[4096];
	int fd, rc = 0;

	if (!path)
		path = CONTROL_DEFAULT_PATH;
	if (strlen(path) >= sizeof(sa.sun_path)) {
		snprintf(err, errlen, "%s: path too long", path);
		return -ENAMETOOLONG;
	}
	if (memchr(json, '\n', jl) || jl >= CONTROL_LINE_MAX) {
		snprintf(err, errlen, "request must be one line under %d bytes", CONTROL_LINE_MAX);
		return -EINVAL;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "socket: %s", strerror(-rc));
		return rc;
	}
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		rc = -errno;
		if (rc == -ENOENT || rc == -ECONNREFUSED)
			snprintf(err, errlen, "%s: no agent is listening (is `phiwatch run` running?)", path);
		else if (rc == -EACCES || rc == -EPERM)
			snprintf(err, errlen, "%s: permission denied (root only)", path);
		else
			snprintf(err, errlen, "%s: %s", path, strerror(-rc));
		goto out;
	}
	/* request line, then the answer line; both bounded by the deadline */
	while (off < jl + 1) {
		const char *p = off < jl ? json + off : "\n";
		size_t n = off < jl ? jl - off : 1;
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			rc = -errno;
			snprintf(err, errlen, "%s: send: %s", path, strerror(-rc));
			goto out;
		}
		off += (size_t)w;
	}
	jbuf_reset(resp);
	for (;;) {
		uint64_t now = mono_ms();
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		if (now >= deadline) {
			rc = -ETIMEDOUT;
			snprintf(err, errlen, "%s: no answer within %d s", path, CONTROL_CLIENT_TIMEOUT_MS / 1000);
			goto out;
		}
		int pr = poll(&pfd, 1, (int)(deadline - now));
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr < 0) {
			rc = -errno;
			snprintf(err, errlen, "poll: %s", strerror(-rc));
			goto out;
		}
		if (!pr)
			continue;
		ssize_t r = recv(fd, buf, sizeof(buf), 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			rc = -errno;
			snprintf(err, errlen, "%s: recv: %s", path, strerror(-rc));
			goto out;
		}
		if (!r)
			break;
		jbuf_put(resp, buf, (size_t)r);
		if (resp->oom || resp->len > (16u << 20)) {
			rc = -ENOMEM;
			snprintf(err, errlen, "%s: answer too large", path);
			goto out;
		}
		if (memchr(buf, '\n', (size_t)r))
			break;
	}
	{
		char *nl = resp->len ? memchr(resp->p, '\n', resp->len) : NULL;
		if (nl) {
			resp->len = (size_t)(nl - resp->p);
			resp->p[resp->len] = '\0';
		}
		if (!resp->len) {
			rc = -EPROTO;
			snprintf(err, errlen, "%s: the agent closed without answering", path);
		}
	}
out:
	close(fd);
	return rc;
}
