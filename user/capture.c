/* capture.c — BPF lifecycle (open, configure, load, attach) and the ring-buffer reader (see capture.h). */
#include "capture_int.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <time.h>
#include <unistd.h>
#include <uthash.h>

#include "log.h"
#include "pipeline.h"
#include "phiwatch.skel.h"

struct announced {
	uint32_t pid;
	UT_hash_handle hh;
};

uint64_t capture_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int64_t realtime_offset(void)
{
	struct timespec rt, mono;
	clock_gettime(CLOCK_REALTIME, &rt);
	clock_gettime(CLOCK_MONOTONIC, &mono);
	return ((int64_t)rt.tv_sec - mono.tv_sec) * 1000000000ll + (rt.tv_nsec - mono.tv_nsec);
}

static int libbpf_log(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	if (level == LIBBPF_DEBUG && log_level < LOG_LVL_DEBUG)
		return 0;
	if (level == LIBBPF_INFO && log_level < LOG_LVL_INFO)
		return 0;
	return vfprintf(stderr, fmt, ap);
}

/* libbpf finds tracepoint ids in tracefs; hardened hosts often leave it unmounted. */
static int ensure_tracefs(void)
{
	if (access("/sys/kernel/tracing/events/syscalls", F_OK) == 0 ||
	    access("/sys/kernel/debug/tracing/events/syscalls", F_OK) == 0)
		return 0;
	if (mount("tracefs", "/sys/kernel/tracing", "tracefs", 0, NULL) != 0) {
		int err = -errno;
		log_error("tracefs is not mounted and mounting it at /sys/kernel/tracing failed: %s", strerror(errno));
		return err;
	}
	log_info("mounted tracefs at /sys/kernel/tracing (syscall tracepoints need it)");
	return 0;
}

/* Reads /proc identity of pid and sends a PW_EV_PROC record before its first event. */
static void announce_proc(struct capture *c, const struct pw_hdr *h, const char *comm, const char *exe_hint)
{
	struct announced *a;
	struct pw_proc_info pi;
	char path[64];

	HASH_FIND(hh, c->announced, &h->pid, sizeof(h->pid), a);
	if (a)
		return;
	a = calloc(1, sizeof(*a));
	if (a) {
		a->pid = h->pid;
		HASH_ADD(hh, c->announced, pid, sizeof(a->pid), a);
	}
	memset(&pi, 0, sizeof(pi));
	pi.h.type = PW_EV_PROC;
	pi.h.size = sizeof(pi);
	pi.h.pid = h->pid;
	pi.h.tid = h->pid;
	pi.h.ts_ns = h->ts_ns;
	snprintf(path, sizeof(path), "/proc/%u/exe", h->pid);
	ssize_t n = readlink(path, pi.exe, sizeof(pi.exe) - 1);
	if (n < 0) {
		/* Gone already: what execve was given, or what a scan saw. */
		if (!exe_hint)
			exe_hint = tls_proc_exe(c, h->pid);
		n = exe_hint ? (ssize_t)strnlen(exe_hint, PW_PATH_MAX_K - 1) : 0;
		if (n)
			memcpy(pi.exe, exe_hint, (size_t)n);
	}
	pi.exe[n] = '\0';
	if (!proc_comm(h->pid, pi.comm, sizeof(pi.comm)))
		memcpy(pi.comm, comm, sizeof(pi.comm));
	c->fn(c->ctx, &pi, sizeof(pi));
}

static void forget_proc(struct capture *c, uint32_t pid)
{
	struct announced *a;

	HASH_FIND(hh, c->announced, &pid, sizeof(pid), a);
	if (a) {
		HASH_DEL(c->announced, a);
		free(a);
	}
}

bool proc_comm(uint32_t pid, char *out, size_t n)
{
	char path[32];
	ssize_t m = -1;

	snprintf(path, sizeof(path), "/proc/%u/comm", pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		m = read(fd, out, n - 1);
		close(fd);
	}
	if (m <= 0)
		return false;
	out[m] = '\0';
	out[strcspn(out, "\n")] = '\0';
	return true;
}

bool comm_skipped(const struct capture *c, const char *comm)
{
	for (size_t i = 0; i < c->o.nskip_comms; i++)
		if (strncmp(comm, c->o.skip_comms[i], 16) == 0)
			return true;
	return false;
}

/* Processes running before the agent (the kernel handles later execs). */
static void skip_update(struct capture *c, uint32_t pid, const char *comm)
{
	uint8_t one = 1;

	if (!c->o.nskip_comms)
		return;
	if (comm_skipped(c, comm))
		bpf_map__update_elem(c->skel->maps.skip_tgids, &pid, sizeof(pid), &one, 1, BPF_ANY);
	else
		bpf_map__delete_elem(c->skel->maps.skip_tgids, &pid, sizeof(pid), 0);
}

/* Processes already running with an excluded name. */
static void skip_scan(struct capture *c)
{
	DIR *d = opendir("/proc");
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d))) {
		char comm[32] = "";
		if (de->d_name[0] < '1' || de->d_name[0] > '9')
			continue;
		uint32_t pid = (uint32_t)strtoul(de->d_name, NULL, 10);
		if (proc_comm(pid, comm, sizeof(comm)))
			skip_update(c, pid, comm);
	}
	closedir(d);
}

static int handle_event(void *ctx, void *data, size_t size)
{
	struct capture *c = ctx;
	struct pw_hdr h;

	c->st.ring_events++;
	if (size < sizeof(h)) {
		c->st.bad_events++;
		return 0;
	}
	memcpy(&h, data, sizeof(h));
	switch (h.type) {
	case PW_EV_EXEC: {
		const struct pw_exec *e = data;
		if (size < sizeof(*e))
			break;
		forget_proc(c, h.pid);
		c->fn(c->ctx, data, size);
		char exe[PW_PATH_MAX_K];
		memcpy(exe, e->filename, sizeof(exe));
		exe[sizeof(exe) - 1] = '\0';
		announce_proc(c, &h, e->comm, exe);
		tls_on_exec(c, h.pid, e->comm);
		return 0;
	}
	case PW_EV_EXIT:
		if (c->o.nskip_comms)
			bpf_map__delete_elem(c->skel->maps.skip_tgids, &h.pid, sizeof(h.pid), 0);
		c->fn(c->ctx, data, size);
		forget_proc(c, h.pid);
		tls_on_exit(c, h.pid);
		return 0;
	case PW_EV_DATA:
		if (size >= sizeof(struct pw_data)) {
			announce_proc(c, &h, ((const struct pw_data *)data)->comm, NULL);
			if (((const struct pw_data *)data)->flags & PW_F_TLS)
				tls_on_tls_data(c, h.pid);
		}
		break;
	case PW_EV_CONN:
		if (size >= sizeof(struct pw_conn))
			announce_proc(c, &h, ((const struct pw_conn *)data)->comm, NULL);
		break;
	case PW_EV_TLS:
		if (size >= sizeof(struct pw_tls)) {
			c->fn(c->ctx, data, size);
			tls_on_tls_seen(c, h.pid, ((const struct pw_tls *)data)->fd);
			return 0;
		}
		break;
	}
	c->fn(c->ctx, data, size);
	return 0;
}

/* Sum of a per-CPU u64 array map's slot k over all CPUs. */
static uint64_t percpu_sum(const struct bpf_map *m, uint32_t k, uint64_t *vals, int ncpu)
{
	uint64_t sum = 0;

	if (bpf_map__lookup_elem(m, &k, sizeof(k), vals, sizeof(uint64_t) * (size_t)ncpu, 0) == 0)
		for (int i = 0; i < ncpu; i++)
			sum += vals[i];
	return sum;
}

/* Sums the per-CPU drop counters; sends a PW_EV_DROPS record when they moved. */
static void check_drops(struct capture *c)
{
	int ncpu = libbpf_num_possible_cpus();
	struct pw_drops_rec r;
	bool changed = false;

	if (ncpu <= 0)
		return;
	uint64_t *vals = calloc((size_t)ncpu, sizeof(uint64_t));
	if (!vals)
		return;
	memset(&r, 0, sizeof(r));
	for (uint32_t k = 0; k < PW_DROP__MAX; k++) {
		uint64_t sum = percpu_sum(c->skel->maps.drops, k, vals, ncpu);
		r.drops[k] = sum;
		if (sum != c->drops_last[k]) {
			log_warn("capture loss: %llu more %s (total %llu)",
				 (unsigned long long)(sum - c->drops_last[k]), pipeline_drop_name(k),
				 (unsigned long long)sum);
			changed = true;
		}
		c->drops_last[k] = sum;
		c->st.drops[k] = sum;
	}
	for (uint32_t k = 0; k < PW_LOST_SLOTS; k++)
		r.lost[k] = percpu_sum(c->skel->maps.lost_by_role, k, vals, ncpu);
	free(vals);
	if (!changed)
		return;
	r.h.type = PW_EV_DROPS;
	r.h.size = sizeof(r);
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	r.h.ts_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	c->fn(c->ctx, &r, sizeof(r));
}

static int attach_tracepoints(struct capture *c)
{
	struct bpf_program *prog;
	unsigned n = 0;

	bpf_object__for_each_program(prog, c->skel->obj)
		n++;
	c->links = calloc(n, sizeof(*c->links));
	if (!c->links)
		return -ENOMEM;
	bpf_object__for_each_program(prog, c->skel->obj) {
		const char *sec = bpf_program__section_name(prog);
		if (strncmp(sec, "tracepoint/", 11) != 0)
			continue;
		struct bpf_link *l = bpf_program__attach(prog);
		if (!l) {
			int err = -errno;
			log_error("attaching %s (%s) failed: %s", bpf_program__name(prog), sec, strerror(-err));
			return err;
		}
		c->links[c->nlinks++] = l;
	}
	c->st.tracepoints = c->nlinks;
	return 0;
}

struct capture *capture__open(const struct capture_opts *o, capture_rec_fn fn, void *ctx)
{
	struct capture *c = calloc(1, sizeof(*c));
	int err;

	if (!c)
		return NULL;
	c->o = *o;
	c->fn = fn;
	c->ctx = ctx;
	libbpf_set_print(libbpf_log);
	err = ensure_tracefs();
	if (err)
		goto fail;
	c->skel = phiwatch_bpf__open();
	if (!c->skel) {
		err = -errno;
		log_error("opening the BPF object failed: %s", strerror(-err));
		goto fail;
	}
	c->skel->rodata->self_tgid = (uint32_t)getpid();
	c->skel->rodata->wakeup_bytes = o->wakeup_bytes;
	c->skel->rodata->floor_mode = o->floor;
	c->skel->rodata->shed_payload_bytes = o->ringbuf_bytes / 4 * 3;
	c->skel->rodata->filter_ports = o->nports > 0;
	c->skel->rodata->filter_tgids = o->nskip_comms > 0;
	err = bpf_map__set_max_entries(c->skel->maps.events, (uint32_t)o->ringbuf_bytes);
	if (err) {
		log_error("ring buffer size %zu rejected: %s", o->ringbuf_bytes, strerror(-err));
		goto fail;
	}
	err = phiwatch_bpf__load(c->skel);
	if (err) {
		log_error("loading the BPF programs failed: %s (root and a kernel with BTF are required)",
			  strerror(-err));
		goto fail;
	}
	for (size_t i = 0; i < o->nports; i++) {
		uint8_t one = 1;
		bpf_map__update_elem(c->skel->maps.ports, &o->ports[i], sizeof(uint16_t), &one, 1, BPF_ANY);
	}
	for (size_t i = 0; i < o->nskip_comms; i++) {
		char key[PHIWATCH_COMM_LEN] = { 0 };
		uint8_t one = 1;
		memcpy(key, o->skip_comms[i], strnlen(o->skip_comms[i], sizeof(key) - 1));
		bpf_map__update_elem(c->skel->maps.skip_comms, key, sizeof(key), &one, 1, BPF_ANY);
	}
	if (o->nskip_comms)
		skip_scan(c);
	c->rb = ring_buffer__new(bpf_map__fd(c->skel->maps.events), handle_event, c, NULL);
	if (!c->rb) {
		err = -errno;
		log_error("ring buffer setup failed: %s", strerror(-err));
		goto fail;
	}
	c->realtime_offset = realtime_offset();
	err = attach_tracepoints(c);
	if (err)
		goto fail;
	c->st.tls_libs = (unsigned)tls_attach_initial(c);
	c->last_tick_ms = capture_now_ms();
	return c;
fail:
	capture__close(c);
	errno = -err;
	return NULL;
}

int64_t capture__realtime_offset(const struct capture *c)
{
	return c->realtime_offset;
}

int capture__poll(struct capture *c)
{
	/* Events are written without waking us (BPF_RB_NO_WAKEUP) until the
	 * ring fills past wakeup_bytes: the poll timeout bounds the delay. */
	int n = ring_buffer__poll(c->rb, (int)c->o.poll_ms);
	if (n < 0 && n != -EINTR)
		return n;
	n = ring_buffer__consume(c->rb);
	if (n < 0 && n != -EINTR)
		return n;
	uint64_t now = capture_now_ms();
	/* rescans are scheduled at 50 ms and more: no need to walk every
	 * process's entry on each 10 ms poll */
	if (now - c->last_tls_tick_ms >= 50) {
		c->last_tls_tick_ms = now;
		tls_tick(c, now);
	}
	if (now - c->last_tick_ms >= 1000) {
		struct pw_hdr tick = { .type = PW_EV_TICK, .size = sizeof(tick) };
		struct timespec ts;
		c->last_tick_ms = now;
		check_drops(c);
		/* Time passes for the pipeline even with no traffic (alert
		 * windows end), and the same way in a replay. */
		clock_gettime(CLOCK_MONOTONIC, &ts);
		tick.ts_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
		c->fn(c->ctx, &tick, sizeof(tick));
	}
	return 0;
}

void capture__drain(struct capture *c)
{
	while (ring_buffer__consume(c->rb) > 0)
		;
	check_drops(c);
}

void capture__forget_socket(void *ctx, uint32_t pid, int32_t fd)
{
	struct capture *c = ctx;
	uint64_t key = ((uint64_t)pid << 32) | (uint32_t)fd;

	bpf_map__delete_elem(c->skel->maps.socks, &key, sizeof(key), 0);
}

int capture__set_ports(struct capture *c, const uint16_t *ports, size_t n)
{
	uint16_t key, next;
	uint8_t one = 1;

	if ((n > 0) != (c->o.nports > 0))
		return -EOPNOTSUPP;
	/* clear, then fill: a port removed stops being followed for new sockets */
	while (bpf_map__get_next_key(c->skel->maps.ports, NULL, &next, sizeof(next)) == 0) {
		key = next;
		bpf_map__delete_elem(c->skel->maps.ports, &key, sizeof(key), 0);
	}
	for (size_t i = 0; i < n; i++)
		bpf_map__update_elem(c->skel->maps.ports, &ports[i], sizeof(uint16_t), &one, 1, BPF_ANY);
	c->o.nports = n;
	return 0;
}

void capture__stats(const struct capture *c, struct capture_stats *out)
{
	*out = c->st;
}

static void *destroy_link(void *l)
{
	bpf_link__destroy(l);
	return NULL;
}

/* Detaching a tracepoint waits for an RCU grace period (~0.1 s here): one
 * thread per link lets the waits overlap, so a stop takes one grace period
 * instead of one per tracepoint. Falls back to one by one. */
void capture_destroy_links(struct bpf_link **links, unsigned n)
{
	pthread_t *th = calloc(n, sizeof(*th));
	bool *started = calloc(n, sizeof(*started));

	for (unsigned i = 0; i < n; i++) {
		if (th && started && pthread_create(&th[i], NULL, destroy_link, links[i]) == 0)
			started[i] = true;
		else
			bpf_link__destroy(links[i]);
	}
	for (unsigned i = 0; th && started && i < n; i++)
		if (started[i])
			pthread_join(th[i], NULL);
	free(th);
	free(started);
}

void capture__close(struct capture *c)
{
	struct announced *a, *tmp;

	if (!c)
		return;
	capture_destroy_links(c->links, c->nlinks);
	free(c->links);
	tls_free(c);
	ring_buffer__free(c->rb);
	phiwatch_bpf__destroy(c->skel);
	HASH_ITER(hh, c->announced, a, tmp) {
		HASH_DEL(c->announced, a);
		free(a);
	}
	free(c);
}
