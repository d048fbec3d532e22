/* capture_tls.c — finding OpenSSL in running and new processes and hooking SSL_read/SSL_write(_ex).
 * Uprobes are per file (inode), so each libssl is hooked once for every
 * process that maps it; files are deduplicated by device and inode and
 * opened through /proc/PID/root so containers' own copies are found too.
 */
#include "capture_int.h"

#include <bpf/libbpf.h>
#include <ctype.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uthash.h>

#include "elfsym.h"
#include "placement.h"
#include "log.h"
#include "phiwatch.skel.h"

#define TLS_MAX_LINKS 8   /* entry + return for up to 2 targets per side */

struct file_key {
	uint64_t dev;
	uint64_t ino;
};

struct tls_lib {
	struct file_key key;
	char path[PATH_MAX];
	struct bpf_link *links[TLS_MAX_LINKS];
	unsigned nlinks;
	bool hooked;                /* SSL_read and SSL_write both hooked */
	UT_hash_handle hh;
};

struct tls_proc {
	uint32_t pid;
	struct tls_lib *lib;        /* the hooked OpenSSL it maps, if any */
	bool reported;              /* "TLS not instrumented" said once */
	unsigned scans_left;
	uint64_t next_scan_ms;
	char exe[PW_PATH_MAX];      /* read while it ran: short-lived processes leave /proc early */
	bool tls_data;              /* plaintext came through the OpenSSL hooks */
	int tls_fd;                 /* a socket seen carrying TLS records, -1 none */
	uint64_t judge_ms;          /* when to decide whether its TLS is visible */
	UT_hash_handle hh;
};

struct exe_seen {
	struct file_key key;
	UT_hash_handle hh;
};

/* Rescans after exec: the dynamic loader (and dlopen, e.g. Python's `import
 * ssl`) maps libraries after the exec event. */
static const unsigned rescan_delays_ms[] = { 50, 250, 1000, 4000 };
#define RESCANS (sizeof(rescan_delays_ms) / sizeof(rescan_delays_ms[0]))

static void attach_target(struct capture *c, struct tls_lib *lib, const char *path, const struct place_target *t,
			  bool write)
{
	struct phiwatch_bpf *s = c->skel;
	struct bpf_program *entry = write ? (t->ex ? s->progs.ssl_write_ex_enter : s->progs.ssl_write_enter)
					  : (t->ex ? s->progs.ssl_read_ex_enter : s->progs.ssl_read_enter);
	struct bpf_program *ret = t->ex ? s->progs.ssl_rw_ex_exit : s->progs.ssl_rw_exit;
	struct bpf_program *progs[2] = { entry, ret };

	for (int i = 0; i < 2 && lib->nlinks < TLS_MAX_LINKS; i++) {
		LIBBPF_OPTS(bpf_uprobe_opts, uo, .retprobe = i == 1);
		struct bpf_link *l = bpf_program__attach_uprobe_opts(progs[i], -1, path, t->offset, &uo);
		if (!l) {
			log_warn("TLS: cannot hook %s%s in %s at offset 0x%llx: %s", t->how, i ? " (return)" : "", path,
				 (unsigned long long)t->offset, strerror(errno));
			lib->hooked = false;
			continue;
		}
		lib->links[lib->nlinks++] = l;
	}
}

/* Hooks one file. Returns the library (hooked or not: a failure is not
 * retried on every scan), NULL on allocation failure. */
static struct tls_lib *lib_attach(struct capture *c, const struct file_key *k, const char *path, const char *shown,
				  uint32_t pid, const char *why)
{
	struct tls_lib *lib;
	char done[640] = "";
	size_t dl = 0;

	HASH_FIND(hh, c->libs, k, sizeof(*k), lib);
	if (lib)
		return lib;
	lib = calloc(1, sizeof(*lib));
	if (!lib)
		return NULL;
	lib->key = *k;
	snprintf(lib->path, sizeof(lib->path), "%s", shown);
	HASH_ADD(hh, c->libs, key, sizeof(lib->key), lib);

	struct ssl_placement pl;
	char err[256];
	if (placement_find(path, &pl, err, sizeof(err)) != 0) {
		log_warn("TLS: cannot place probes: %s", err);
		return lib;
	}
	lib->hooked = true;
	for (size_t i = 0; i < pl.nread; i++)
		attach_target(c, lib, path, &pl.read[i], false);
	for (size_t i = 0; i < pl.nwrite; i++)
		attach_target(c, lib, path, &pl.write[i], true);
	for (size_t i = 0; i < pl.nread + pl.nwrite; i++) {
		const struct place_target *t = i < pl.nread ? &pl.read[i] : &pl.write[i - pl.nread];
		dl += (size_t)snprintf(done + dl, sizeof(done) - dl, "%s%s @0x%llx `%s` (%s)", dl ? "; " : "", t->how,
				       (unsigned long long)t->offset, t->insn, t->emulated ? "emulated" : "single-stepped");
		if (dl >= sizeof(done))
			break;
	}
	if (lib->hooked) {
		c->st.tls_libs++;
		log_info("TLS: hooked %s (%s pid %u): %s", shown, why, pid, done);
	}
	return lib;
}

static int file_key_of(const char *path, struct file_key *k)
{
	struct stat st;

	if (stat(path, &st) != 0)
		return -errno;
	k->dev = st.st_dev;
	k->ino = st.st_ino;
	return 0;
}

static bool is_libssl(const char *path)
{
	const char *base = strrchr(path, '/');
	base = base ? base + 1 : path;
	return strncmp(base, "libssl.so", 9) == 0;
}

static struct tls_proc *tproc_get(struct capture *c, uint32_t pid, bool create)
{
	struct tls_proc *tp;

	HASH_FIND(hh, c->tprocs, &pid, sizeof(pid), tp);
	if (tp || !create)
		return tp;
	tp = calloc(1, sizeof(*tp));
	if (!tp)
		return NULL;
	tp->pid = pid;
	tp->tls_fd = -1;
	HASH_ADD(hh, c->tprocs, pid, sizeof(tp->pid), tp);
	return tp;
}

/* An executable with OpenSSL linked in exports SSL_write itself. */
static void check_exe(struct capture *c, struct tls_proc *tp)
{
	char path[64];
	struct file_key k;
	struct exe_seen *e;

	snprintf(path, sizeof(path), "/proc/%u/exe", tp->pid);
	if (file_key_of(path, &k))
		return;
	HASH_FIND(hh, c->exes, &k, sizeof(k), e);
	if (e) {
		struct tls_lib *lib;
		HASH_FIND(hh, c->libs, &k, sizeof(k), lib);
		if (lib && lib->hooked)
			tp->lib = lib;
		return;
	}
	e = calloc(1, sizeof(*e));
	if (!e)
		return;
	e->key = k;
	HASH_ADD(hh, c->exes, key, sizeof(e->key), e);
	if (!elf_defines_symbol(path, "SSL_write"))
		return;
	struct tls_lib *lib = lib_attach(c, &k, path, tp->exe[0] ? tp->exe : path, tp->pid,
					 "built into the executable of");
	if (lib && lib->hooked)
		tp->lib = lib;
}

/* Hooks every libssl pid maps (and its executable if OpenSSL is built in). An excluded process hooks nothing: a
 * library only it maps (its own copy, a vendored build) is never probed, so its SSL calls cost it nothing. */
static void scan_pid(struct capture *c, uint32_t pid)
{
	char path[64], line[PATH_MAX + 256];
	struct tls_proc *tp = tproc_get(c, pid, true);
	FILE *f;

	if (!tp)
		return;
	if (c->o.nskip_comms) {
		char comm[32] = "";
		proc_comm(pid, comm, sizeof(comm));
		if (comm_skipped(c, comm))
			return;
	}
	snprintf(path, sizeof(path), "/proc/%u/exe", pid);
	ssize_t n = readlink(path, line, sizeof(tp->exe) - 1);
	if (n > 0) {
		memcpy(tp->exe, line, (size_t)n);
		tp->exe[n] = '\0';
	}
	snprintf(path, sizeof(path), "/proc/%u/maps", pid);
	f = fopen(path, "re");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		/* "start-end perms offset dev inode   /path" */
		char *p = strchr(line, '/');
		if (!p)
			continue;
		p[strcspn(p, "\n")] = '\0';
		if (!is_libssl(p))
			continue;
		char full[PATH_MAX + 64];
		struct file_key k;
		snprintf(full, sizeof(full), "/proc/%u/root%s", pid, p);
		if (file_key_of(full, &k))
			continue;
		struct tls_lib *lib = lib_attach(c, &k, full, p, pid, "mapped by");
		if (lib && lib->hooked)
			tp->lib = lib;
	}
	fclose(f);
	if (!tp->lib)
		check_exe(c, tp);
}

/* The system's libssl, located by the dynamic loader: hooked before any
 * process maps it, so programs started later are covered from their first call. */
static void attach_system_libssl(struct capture *c)
{
	static const char *sonames[] = { "libssl.so.3", "libssl.so.1.1" };

	for (unsigned i = 0; i < sizeof(sonames) / sizeof(sonames[0]); i++) {
		void *h = dlopen(sonames[i], RTLD_LAZY | RTLD_LOCAL);
		struct link_map *lm = NULL;
		struct file_key k;
		if (!h)
			continue;
		if (dlinfo(h, RTLD_DI_LINKMAP, &lm) == 0 && lm && lm->l_name && lm->l_name[0] &&
		    file_key_of(lm->l_name, &k) == 0) {
			char path[PATH_MAX];
			snprintf(path, sizeof(path), "%s", lm->l_name);
			lib_attach(c, &k, path, path, (uint32_t)getpid(), "system library found by the loader for");
		}
		dlclose(h);
	}
}

int tls_attach_initial(struct capture *c)
{
	DIR *d = opendir("/proc");
	struct dirent *de;
	uint32_t self = (uint32_t)getpid();

	attach_system_libssl(c);
	if (!d) {
		log_warn("cannot list /proc: %s; only the system libssl is hooked", strerror(errno));
		return (int)c->st.tls_libs;
	}
	while ((de = readdir(d))) {
		if (!isdigit((unsigned char)de->d_name[0]))
			continue;
		uint32_t pid = (uint32_t)strtoul(de->d_name, NULL, 10);
		if (pid != self)
			scan_pid(c, pid);
	}
	closedir(d);
	return (int)c->st.tls_libs;
}

void tls_on_exec(struct capture *c, uint32_t pid, const char *comm)
{
	struct tls_proc *tp = tproc_get(c, pid, true);

	(void)comm;
	if (!tp)
		return;
	tp->lib = NULL;
	tp->reported = false;
	scan_pid(c, pid);
	tp->scans_left = RESCANS;
	tp->next_scan_ms = capture_now_ms() + rescan_delays_ms[0];
}

static void tls_judge(struct capture *c, struct tls_proc *tp);

bool capture__proc_tls(struct capture *c, uint32_t pid, char *libssl, size_t n, bool *instrumented,
		       bool *uninstrumented_seen)
{
	struct tls_proc *tp = tproc_get(c, pid, false);

	libssl[0] = '\0';
	*instrumented = false;
	*uninstrumented_seen = false;
	if (!tp)
		return false;
	if (tp->lib) {
		snprintf(libssl, n, "%s", tp->lib->path);
		*instrumented = true;
	}
	*instrumented |= tp->tls_data;
	*uninstrumented_seen = tp->reported;
	return true;
}

const char *tls_proc_exe(struct capture *c, uint32_t pid)
{
	struct tls_proc *tp = tproc_get(c, pid, false);

	return tp && tp->exe[0] ? tp->exe : NULL;
}

void tls_on_exit(struct capture *c, uint32_t pid)
{
	struct tls_proc *tp = tproc_get(c, pid, false);

	if (tp && tp->judge_ms)
		tls_judge(c, tp); /* its last chance, maps already gone */
	if (tp) {
		HASH_DEL(c->tprocs, tp);
		free(tp);
	}
}

/* Decides, some time after a socket of tp showed TLS records: visible if
 * plaintext came through the hooks or it maps a hooked OpenSSL. */
static void tls_judge(struct capture *c, struct tls_proc *tp)
{
	uint32_t pid = tp->pid;
	int fd = tp->tls_fd;
	char comm[32] = "?";

	tp->judge_ms = 0;
	if (tp->reported || tp->tls_data)
		return;
	if (!tp->lib)
		scan_pid(c, pid);
	if (tp->lib)
		return;
	tp->reported = true;
	c->st.tls_uninstrumented++;
	if (!proc_comm(pid, comm, sizeof(comm)))
		snprintf(comm, sizeof(comm), "?");
	log_warn("TLS not instrumented: pid %u (%s) speaks TLS on fd %d but maps no OpenSSL phiwatch can hook "
		 "(e.g. Go crypto/tls, rustls, GnuTLS, BoringSSL); its calls are not visible",
		 pid, comm, fd);
	/* Into the record stream, so the alert is raised (and replayed). */
	struct pw_tls r = { 0 };
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	r.h.type = PW_EV_NOTLS;
	r.h.size = sizeof(r);
	r.h.pid = pid;
	r.h.tid = pid;
	r.h.ts_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	r.fd = fd;
	c->fn(c->ctx, &r, sizeof(r));
}

void tls_on_tls_seen(struct capture *c, uint32_t pid, int fd)
{
	struct tls_proc *tp = tproc_get(c, pid, true);

	if (!tp || tp->reported || tp->tls_data || tp->judge_ms)
		return;
	/* Handshakes happen outside SSL_read/SSL_write: give the first
	 * application data two seconds to come through the hooks. */
	tp->tls_fd = fd;
	tp->judge_ms = capture_now_ms() + 2000;
}

void tls_on_tls_data(struct capture *c, uint32_t pid)
{
	struct tls_proc *tp = tproc_get(c, pid, false);

	if (tp)
		tp->tls_data = true;
}

void tls_tick(struct capture *c, uint64_t now_ms)
{
	struct tls_proc *tp, *tmp;

	HASH_ITER(hh, c->tprocs, tp, tmp) {
		if (tp->judge_ms && now_ms >= tp->judge_ms)
			tls_judge(c, tp);
		if (!tp->scans_left || now_ms < tp->next_scan_ms)
			continue;
		tp->scans_left--;
		if (!tp->lib)
			scan_pid(c, tp->pid);
		if (tp->lib)
			tp->scans_left = 0;
		else if (tp->scans_left)
			tp->next_scan_ms = now_ms + rescan_delays_ms[RESCANS - tp->scans_left];
	}
}

void tls_free(struct capture *c)
{
	struct tls_lib *lib, *lt;
	struct tls_proc *tp, *tt;
	struct exe_seen *e, *et;

	unsigned n = 0, k = 0;
	HASH_ITER(hh, c->libs, lib, lt)
		n += lib->nlinks;
	struct bpf_link **all = n ? calloc(n, sizeof(*all)) : NULL;
	HASH_ITER(hh, c->libs, lib, lt) {
		for (unsigned i = 0; i < lib->nlinks; i++) {
			if (all)
				all[k++] = lib->links[i];
			else
				bpf_link__destroy(lib->links[i]);
		}
		HASH_DEL(c->libs, lib);
		free(lib);
	}
	capture_destroy_links(all, k);
	free(all);
	HASH_ITER(hh, c->tprocs, tp, tt) {
		HASH_DEL(c->tprocs, tp);
		free(tp);
	}
	HASH_ITER(hh, c->exes, e, et) {
		HASH_DEL(c->exes, e);
		free(e);
	}
}
