/* forensics.c — forensic dumps (see forensics.h): select from the history, describe the processes from /proc,
 * build manifest + JSONL + pcap into a gzip'd ustar archive in memory, check the size cap, then write it
 * (encrypted when configured) under a temporary name, fsync, rename without replacing, fsync the directory.
 * The tar and gzip framing is written here with zlib: the archive is three regular files, no need for libarchive.
 */
#include "forensics.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <zlib.h>

#include "identity.h"
#include "log.h"
#include "pcap.h"
#include "phiwatch/events.h"
#include "siphash.h"

#ifndef PHIWATCH_VERSION
#define PHIWATCH_VERSION "unknown"
#endif

#define NS_PER_S 1000000000ull
#define AES_MAGIC "PWFGCM01"
#define AES_HDR 28              /* magic 8 | key id 8 | nonce 12 */
#define AES_TAG 16
#define TAR_BLOCK 512
#define CMDLINE_MAX (64u << 10)
#define CMDLINE_ARGS_MAX 256
#define CGROUP_MAX 4096
#define STATUS_MAX 8192
#define GZ_CHUNK (64u << 10)
#define NAME_TRIES 100
#define REFUSAL_LOG_NS (60 * NS_PER_S)

struct rate_slot {
	uint64_t hash;                   /* 0: free */
	uint64_t last_ns;
};

struct forensics {
	char *dir;
	char *version;
	uint64_t max_total;
	uint64_t interval_ns;
	int min_severity;
	int level;
	char *proc_root;
	bool enc;
	uint8_t key[FORENSICS_KEY_LEN];
	uint8_t key_id[8];
	forensics_proc_info_fn proc_info;
	void *proc_ctx;
	forensics_dump_fn on_dump;
	void *dump_ctx;
	struct siphash_key sk;
	struct rate_slot rate[FORENSICS_RATE_KEYS];
	uint64_t tmp_counter;
	char last_base[128];             /* name stem of the last dump, and the suffix it got: dumps within one */
	int last_suffix;                 /* second are numbered on without probing every earlier name */
	uint64_t last_refusal_log_ns;
	struct forensics_stats st;
};

void forensics_opts_default(struct forensics_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->dir = FORENSICS_DEFAULT_DIR;
	o->max_total_bytes = 1ull << 30;
	o->per_key_interval_s = 300;
	o->min_severity = ALERT_SEV_HIGH;
	o->agent_version = PHIWATCH_VERSION;
	o->compress_level = 6;
	o->proc_root = "/proc";
}

static uint64_t realtime_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

static void hex(char *out, const uint8_t *p, size_t n)
{
	static const char d[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = d[p[i] >> 4];
		out[2 * i + 1] = d[p[i] & 15];
	}
	out[2 * n] = '\0';
}

/* ------------------------------------------------------------------ directory */

/* mkdir -p with 0700 for what it creates; the last component must end up a real directory we own, mode 0700. */
static int ensure_dir(const char *dir, char *err, size_t errlen)
{
	char tmp[PATH_MAX];
	size_t n = strlen(dir);
	struct stat st;

	if (!n || n >= sizeof(tmp)) {
		snprintf(err, errlen, "forensics directory \"%s\": bad path", dir);
		return -EINVAL;
	}
	memcpy(tmp, dir, n + 1);
	for (size_t i = 1; i <= n; i++) {
		if (tmp[i] != '/' && tmp[i] != '\0')
			continue;
		char c = tmp[i];
		tmp[i] = '\0';
		if (mkdir(tmp, 0700) && errno != EEXIST) {
			int e = errno;
			snprintf(err, errlen, "forensics directory: mkdir %s: %s", tmp, strerror(e));
			return -e;
		}
		tmp[i] = c;
	}
	if (lstat(dir, &st)) {
		int e = errno;
		snprintf(err, errlen, "forensics directory %s: %s", dir, strerror(e));
		return -e;
	}
	if (!S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "forensics directory %s: not a directory", dir);
		return -ENOTDIR;
	}
	if (st.st_uid != geteuid()) {
		snprintf(err, errlen, "forensics directory %s: owned by uid %u, not %u", dir, (unsigned)st.st_uid,
			 (unsigned)geteuid());
		return -EPERM;
	}
	if ((st.st_mode & 07777) != 0700 && chmod(dir, 0700)) {
		int e = errno;
		snprintf(err, errlen, "forensics directory %s: chmod 0700: %s", dir, strerror(e));
		return -e;
	}
	return 0;
}

static bool is_dump_name(const char *n)
{
	size_t l = strlen(n);

	if (strncmp(n, "phiwatch-", 9))
		return false;
	return (l > 7 && !strcmp(n + l - 7, ".tar.gz")) || (l > 11 && !strcmp(n + l - 11, ".tar.gz.aes"));
}

/* Bytes held by dumps in the directory now (files a person added or removed count as they are). */
static int dir_usage(const struct forensics *f, uint64_t *total)
{
	DIR *d = opendir(f->dir);
	struct dirent *de;

	*total = 0;
	if (!d)
		return -errno;
	while ((de = readdir(d))) {
		struct stat st;
		if (!is_dump_name(de->d_name))
			continue;
		if (!fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) && S_ISREG(st.st_mode))
			*total += (uint64_t)st.st_size;
	}
	closedir(d);
	return 0;
}

/* Temporary files left by a crash mid-dump: never complete, never renamed into evidence. */
static void remove_stale_tmp(const struct forensics *f)
{
	DIR *d = opendir(f->dir);
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d))) {
		if (strncmp(de->d_name, ".tmp-phiwatch-", 14))
			continue;
		if (!unlinkat(dirfd(d), de->d_name, 0))
			log_warn("forensics: removed incomplete dump %s/%s (left by an earlier crash)", f->dir,
				 de->d_name);
	}
	closedir(d);
}

/* ------------------------------------------------------------------ lifecycle */

static char *dupstr(const char *s)
{
	size_t n = strlen(s) + 1;
	char *p = malloc(n);

	if (p)
		memcpy(p, s, n);
	return p;
}

struct forensics *forensics__new(const struct forensics_opts *o, char *err, size_t errlen)
{
	struct forensics *f;
	int rc;

	if (!o || !o->dir || !o->max_total_bytes || o->compress_level < 0 || o->compress_level > 9) {
		snprintf(err, errlen, "forensics: bad options");
		errno = EINVAL;
		return NULL;
	}
	f = calloc(1, sizeof(*f));
	if (!f) {
		snprintf(err, errlen, "forensics: out of memory");
		errno = ENOMEM;
		return NULL;
	}
	f->dir = dupstr(o->dir);
	f->version = dupstr(o->agent_version ? o->agent_version : "unknown");
	f->proc_root = dupstr(o->proc_root ? o->proc_root : "/proc");
	if (!f->dir || !f->version || !f->proc_root) {
		snprintf(err, errlen, "forensics: out of memory");
		rc = -ENOMEM;
		goto fail;
	}
	f->max_total = o->max_total_bytes;
	f->interval_ns = (uint64_t)o->per_key_interval_s * NS_PER_S;
	f->min_severity = o->min_severity;
	f->level = o->compress_level ? o->compress_level : 6;
	f->proc_info = o->proc_info;
	f->proc_ctx = o->proc_ctx;
	f->on_dump = o->on_dump;
	f->dump_ctx = o->dump_ctx;
	if (o->enc_key) {
		uint8_t d[32];
		static const char label[] = "phiwatch-audit-enc-key-id";
		EVP_MD_CTX *md = EVP_MD_CTX_new();
		f->enc = true;
		memcpy(f->key, o->enc_key, FORENSICS_KEY_LEN);
		if (!md || !EVP_DigestInit_ex(md, EVP_sha256(), NULL) ||
		    !EVP_DigestUpdate(md, label, sizeof(label) - 1) ||
		    !EVP_DigestUpdate(md, f->key, FORENSICS_KEY_LEN) || !EVP_DigestFinal_ex(md, d, NULL)) {
			EVP_MD_CTX_free(md);
			snprintf(err, errlen, "forensics: libcrypto SHA-256 unavailable");
			rc = -EIO;
			goto fail;
		}
		EVP_MD_CTX_free(md);
		memcpy(f->key_id, d, sizeof(f->key_id));
	}
	if (getrandom(&f->sk, sizeof(f->sk), GRND_NONBLOCK) != sizeof(f->sk))
		f->sk.k0 = (uint64_t)(uintptr_t)f ^ realtime_ns();
	rc = ensure_dir(f->dir, err, errlen);
	if (rc)
		goto fail;
	remove_stale_tmp(f);
	dir_usage(f, &f->st.dir_bytes);
	return f;
fail:
	forensics__free(f);
	errno = -rc;
	return NULL;
}

void forensics__free(struct forensics *f)
{
	if (!f)
		return;
	OPENSSL_cleanse(f->key, sizeof(f->key));
	free(f->dir);
	free(f->version);
	free(f->proc_root);
	free(f);
}

void forensics__stats(const struct forensics *f, struct forensics_stats *out)
{
	*out = f->st;
}

/* ------------------------------------------------------------------ selection */

struct sel {
	const struct history_entry **v;
	size_t n, cap;
	bool oom;
};

static int sel_cb(void *ctx, const struct history_entry *e)
{
	struct sel *s = ctx;

	if (s->n == s->cap) {
		size_t nc = s->cap ? 2 * s->cap : 256;
		const struct history_entry **nv = realloc(s->v, nc * sizeof(*nv));
		if (!nv) {
			s->oom = true;
			return 1;
		}
		s->v = nv;
		s->cap = nc;
	}
	s->v[s->n++] = e;
	return 0;
}

/* ------------------------------------------------------------------ gzip'd tar into a jbuf */

struct targz {
	z_stream z;
	struct jbuf *out;
	int err;
	uint64_t mtime;
	uint8_t chunk[GZ_CHUNK];
};

static int gz_init(struct targz *t, struct jbuf *out, int level, uint64_t mtime)
{
	memset(&t->z, 0, sizeof(t->z));
	t->out = out;
	t->err = 0;
	t->mtime = mtime;
	if (deflateInit2(&t->z, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		return -ENOMEM;
	return 0;
}

static void gz_feed(struct targz *t, const void *p, size_t n, int flush)
{
	for (;;) {
		/* zlib's avail_in is 32-bit: large inputs go in slices */
		size_t take = n > (1u << 30) ? (1u << 30) : n;
		int fl = take == n ? flush : Z_NO_FLUSH;

		if (t->err)
			return;
		t->z.next_in = (Bytef *)(uintptr_t)p;
		t->z.avail_in = (uInt)take;
		do {
			t->z.next_out = t->chunk;
			t->z.avail_out = sizeof(t->chunk);
			if (deflate(&t->z, fl) == Z_STREAM_ERROR) {
				t->err = -EIO;
				return;
			}
			jbuf_put(t->out, (const char *)t->chunk, sizeof(t->chunk) - t->z.avail_out);
			if (t->out->oom) {
				t->err = -ENOMEM;
				return;
			}
		} while (t->z.avail_out == 0);
		if (take == n)
			return;
		p = (const char *)p + take;
		n -= take;
	}
}

/* Octal field of w bytes (w-1 digits + NUL), or GNU base-256 when the value does not fit. */
static void tar_num(char *field, size_t w, uint64_t v)
{
	if (w - 1 < 22 && v >= (1ull << (3 * (w - 1)))) {
		memset(field, 0, w);
		for (size_t i = w - 1; i > 0; i--, v >>= 8)
			field[i] = (char)(v & 0xff);
		field[0] = (char)0x80;
		return;
	}
	for (size_t i = w - 1; i > 0; i--, v >>= 3)
		field[i - 1] = (char)('0' + (v & 7));
	field[w - 1] = '\0';
}

static void tar_file(struct targz *t, const char *name, uint64_t size)
{
	char h[TAR_BLOCK];
	unsigned sum = 0;

	memset(h, 0, sizeof(h));
	memcpy(h, name, strlen(name));               /* names are our own literals, < 100 bytes */
	tar_num(h + 100, 8, 0600);
	tar_num(h + 108, 8, 0);
	tar_num(h + 116, 8, 0);
	tar_num(h + 124, 12, size);
	tar_num(h + 136, 12, t->mtime);
	memset(h + 148, ' ', 8);
	h[156] = '0';
	memcpy(h + 257, "ustar", 6);
	memcpy(h + 263, "00", 2);
	memcpy(h + 265, "root", 4);
	memcpy(h + 297, "root", 4);
	for (size_t i = 0; i < sizeof(h); i++)
		sum += (unsigned char)h[i];
	tar_num(h + 148, 7, sum);
	h[155] = ' ';
	gz_feed(t, h, sizeof(h), Z_NO_FLUSH);
}

static void tar_pad(struct targz *t, uint64_t size)
{
	static const char zero[TAR_BLOCK];

	if (size % TAR_BLOCK)
		gz_feed(t, zero, TAR_BLOCK - size % TAR_BLOCK, Z_NO_FLUSH);
}

static void tar_finish(struct targz *t)
{
	static const char zero[2 * TAR_BLOCK];

	gz_feed(t, zero, sizeof(zero), Z_FINISH);
	deflateEnd(&t->z);
}

/* ------------------------------------------------------------------ /proc */

/* Reads at most cap-1 bytes of a small file and NUL-terminates; returns the length or -errno. */
static ssize_t read_small(const char *path, char *buf, size_t cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	size_t len = 0;

	if (fd < 0)
		return -errno;
	while (len + 1 < cap) {
		ssize_t r = read(fd, buf + len, cap - 1 - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	buf[len] = '\0';
	return (ssize_t)len;
}

/* "Uid:\treal\teffective\t..." from /proc/PID/status; false when absent. */
static bool status_uids(const char *s, unsigned long *ruid, unsigned long *euid)
{
	const char *p = strstr(s, "\nUid:");
	char *end;

	if (!p)
		return false;
	p += 5;
	*ruid = strtoul(p, &end, 10);
	if (end == p)
		return false;
	p = end;
	*euid = strtoul(p, &end, 10);
	return end != p;
}

static void proc_describe(struct forensics *f, struct jbuf *b, uint32_t pid, const struct history_entry *any)
{
	char path[PATH_MAX], exe[PATH_MAX];
	char *buf = malloc(CMDLINE_MAX);
	ssize_t n;
	bool alive;
	struct stat st;
	struct forensics_proc_tls tls;

	snprintf(path, sizeof(path), "%s/%u", f->proc_root, pid);
	alive = !stat(path, &st) && S_ISDIR(st.st_mode);
	json_u64(b, "pid", pid);
	json_bool(b, "alive", alive);
	exe[0] = '\0';
	if (alive) {
		snprintf(path, sizeof(path), "%s/%u/exe", f->proc_root, pid);
		n = readlink(path, exe, sizeof(exe) - 1);
		exe[n > 0 ? n : 0] = '\0';
	}
	json_cstr(b, "exe", exe[0] ? exe : any ? any->exe : "");
	json_cstr(b, "comm", any ? any->comm : "");
	if (!alive) {
		json_cstr(b, "note", "process exited before the dump: exe and comm are from its transactions");
	} else if (any && any->exe[0] && exe[0] && strcmp(any->exe, exe) &&
		   !(strncmp(exe, any->exe, strlen(any->exe)) == 0 && !strcmp(exe + strlen(any->exe), " (deleted)"))) {
		json_cstr(b, "note", "pid now runs another executable than its transactions name (pid reused or "
				     "exec): /proc facts describe the current one");
	}
	json_arr_open(b, "cmdline");
	if (alive && buf) {
		snprintf(path, sizeof(path), "%s/%u/cmdline", f->proc_root, pid);
		n = read_small(path, buf, CMDLINE_MAX);
		size_t off = 0, args = 0;
		while (n > 0 && off < (size_t)n && args < CMDLINE_ARGS_MAX) {
			size_t l = strnlen(buf + off, (size_t)n - off);
			json_str(b, NULL, buf + off, l);
			off += l + 1;
			args++;
		}
	}
	json_arr_close(b);
	if (alive && buf) {
		unsigned long ruid, euid;
		snprintf(path, sizeof(path), "%s/%u/status", f->proc_root, pid);
		if (read_small(path, buf, STATUS_MAX) > 0 && status_uids(buf, &ruid, &euid)) {
			json_u64(b, "uid", ruid);
			json_u64(b, "euid", euid);
		}
		snprintf(path, sizeof(path), "%s/%u/cgroup", f->proc_root, pid);
		n = read_small(path, buf, CGROUP_MAX);
		while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
			n--;
		if (n > 0)
			json_str(b, "cgroup", buf, (size_t)n);
	}
	free(buf);
	memset(&tls, 0, sizeof(tls));
	if (f->proc_info)
		f->proc_info(f->proc_ctx, pid, &tls);
	json_obj_open(b, "tls");
	json_bool(b, "known", tls.known);
	json_bool(b, "instrumented", tls.instrumented);
	tls.libssl[sizeof(tls.libssl) - 1] = '\0';
	tls.note[sizeof(tls.note) - 1] = '\0';
	json_cstr(b, "libssl", tls.libssl);
	if (tls.note[0])
		json_cstr(b, "note", tls.note);
	json_obj_close(b);
}

static const char *role_name(int role)
{
	return role == PW_ROLE_SERVER ? "server" : role == PW_ROLE_CLIENT ? "client" : "unknown";
}

/* ------------------------------------------------------------------ manifest */

static int by_pid_tuple(const void *a, const void *b)
{
	const struct history_entry *x = *(const struct history_entry *const *)a;
	const struct history_entry *y = *(const struct history_entry *const *)b;
	int c;

	if (x->pid != y->pid)
		return x->pid < y->pid ? -1 : 1;
	if ((c = strcmp(x->src_ip, y->src_ip)))
		return c;
	if (x->src_port != y->src_port)
		return x->src_port < y->src_port ? -1 : 1;
	if ((c = strcmp(x->dst_ip, y->dst_ip)))
		return c;
	if (x->dst_port != y->dst_port)
		return x->dst_port < y->dst_port ? -1 : 1;
	return x->id < y->id ? -1 : x->id > y->id;
}

static bool same_tuple(const struct history_entry *x, const struct history_entry *y)
{
	return x->src_port == y->src_port && x->dst_port == y->dst_port && !strcmp(x->src_ip, y->src_ip) &&
	       !strcmp(x->dst_ip, y->dst_ip);
}

static void put_time(struct jbuf *b, const char *key, uint64_t ns)
{
	char ts[40];

	if (!ns) {
		json_key(b, key);
		jbuf_puts(b, "null");
		return;
	}
	json_time_rfc3339(ts, sizeof(ts), ns);
	json_cstr(b, key, ts);
}

static void process_connections(struct jbuf *b, const struct history_entry **v, size_t i, size_t j)
{
	json_arr_open(b, "connections");
	for (size_t k = i; k < j;) {
		size_t m = k;
		uint64_t first = UINT64_MAX, last = 0;
		bool tls = false;
		while (m < j && same_tuple(v[m], v[k])) {
			if (v[m]->ts_start < first)
				first = v[m]->ts_start;
			if (v[m]->ts_end > last)
				last = v[m]->ts_end;
			tls |= v[m]->tls;
			m++;
		}
		json_obj_open(b, NULL);
		json_obj_open(b, "source");
		json_cstr(b, "ip", v[k]->src_ip);
		json_u64(b, "port", v[k]->src_port);
		json_obj_close(b);
		json_obj_open(b, "destination");
		json_cstr(b, "ip", v[k]->dst_ip);
		json_u64(b, "port", v[k]->dst_port);
		json_obj_close(b);
		json_cstr(b, "role", role_name(v[k]->role));
		json_bool(b, "tls", tls);
		json_u64(b, "transactions", m - k);
		put_time(b, "first", first);
		put_time(b, "last", last > first ? last : first);
		json_obj_close(b);
		k = m;
	}
	json_arr_close(b);
}

/* One process per distinct pid of v (sorted by pid, tuple); v[i..j) are its calls. */
static void one_process(struct forensics *f, struct jbuf *b, uint32_t pid, const struct history_entry **v, size_t i,
			size_t j)
{
	const struct history_entry *latest = NULL;

	for (size_t k = i; k < j; k++)
		if (!latest || v[k]->id > latest->id)
			latest = v[k];
	json_obj_open(b, NULL);
	proc_describe(f, b, pid, latest);
	json_u64(b, "transactions", j - i);
	process_connections(b, v, i, j);
	json_obj_close(b);
}

/* Every pid of v (sorted by pid, tuple), and extra_pid (0: none) even without calls, in pid order. */
static void manifest_processes(struct forensics *f, struct jbuf *b, const struct history_entry **v, size_t n,
			       uint32_t extra_pid, uint64_t *nproc)
{
	uint64_t omitted = 0, described = 0;

	json_arr_open(b, "processes");
	for (size_t i = 0; i < n || extra_pid;) {
		uint32_t pid;
		size_t j = i;
		if (i < n && (!extra_pid || v[i]->pid <= extra_pid)) {
			pid = v[i]->pid;
			while (j < n && v[j]->pid == pid)
				j++;
			if (pid == extra_pid)
				extra_pid = 0;
		} else {
			pid = extra_pid;   /* the trigger's process, without calls in the selection */
			extra_pid = 0;
		}
		if (described < FORENSICS_MAX_PROCESSES) {
			one_process(f, b, pid, v, i, j);
			described++;
		} else {
			omitted++;
		}
		i = j;
	}
	json_arr_close(b);
	json_u64(b, "processes_omitted", omitted);
	*nproc = described + omitted;
}

static void manifest_trigger(struct jbuf *b, const struct forensics_trigger *t)
{
	json_obj_open(b, "trigger");
	switch (t->kind) {
	case FORENSICS_TRIGGER_ALERT:
		json_cstr(b, "kind", "alert");
		json_key(b, "alert");
		b->need_comma = false;   /* the value follows the key: no comma */
		alert_to_json(t->alert, b);
		break;
	case FORENSICS_TRIGGER_REQUEST:
		json_cstr(b, "kind", "request");
		json_key(b, "request");
		jbuf_puts(b, t->request_json && t->request_json[0] ? t->request_json : "{}");
		b->need_comma = true;
		break;
	default:
		json_cstr(b, "kind", "signal");
		json_cstr(b, "signal", t->signal_name ? t->signal_name : "");
		break;
	}
	json_obj_close(b);
}

/* ------------------------------------------------------------------ writing the file */

/* Writes all of p, feeding the digest. */
static int write_all(int fd, EVP_MD_CTX *md, const void *p, size_t n)
{
	const char *c = p;

	if (n && !EVP_DigestUpdate(md, p, n))
		return -EIO;
	while (n) {
		ssize_t w = write(fd, c, n > (1u << 30) ? (1u << 30) : n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Encrypts gz in place and writes header | ciphertext | tag; plain: writes gz. */
static int write_payload(struct forensics *f, int fd, EVP_MD_CTX *md, struct jbuf *gz)
{
	uint8_t hdr[AES_HDR], tag[AES_TAG];
	EVP_CIPHER_CTX *cx;
	int rc = -EIO, outl;
	size_t off = 0;

	if (!f->enc)
		return write_all(fd, md, gz->p, gz->len);
	memcpy(hdr, AES_MAGIC, 8);
	memcpy(hdr + 8, f->key_id, 8);
	if (getrandom(hdr + 16, 12, 0) != 12)
		return -EIO;
	cx = EVP_CIPHER_CTX_new();
	if (!cx || EVP_EncryptInit_ex(cx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
	    EVP_CIPHER_CTX_ctrl(cx, EVP_CTRL_GCM_SET_IVLEN, 12, NULL) != 1 ||
	    EVP_EncryptInit_ex(cx, NULL, NULL, f->key, hdr + 16) != 1 ||
	    EVP_EncryptUpdate(cx, NULL, &outl, hdr, AES_HDR) != 1)
		goto out;
	while (off < gz->len) {
		int n = gz->len - off > (1u << 30) ? (1 << 30) : (int)(gz->len - off);
		unsigned char *p = (unsigned char *)gz->p + off;
		if (EVP_EncryptUpdate(cx, p, &outl, p, n) != 1 || outl != n)
			goto out;
		off += (size_t)n;
	}
	if (EVP_EncryptFinal_ex(cx, tag, &outl) != 1 || EVP_CIPHER_CTX_ctrl(cx, EVP_CTRL_GCM_GET_TAG, AES_TAG, tag) != 1)
		goto out;
	rc = write_all(fd, md, hdr, sizeof(hdr));
	if (!rc)
		rc = write_all(fd, md, gz->p, gz->len);
	if (!rc)
		rc = write_all(fd, md, tag, sizeof(tag));
out:
	EVP_CIPHER_CTX_free(cx);
	return rc;
}

static void sanitize(char *out, size_t cap, const char *s)
{
	size_t w = 0;

	for (; s && *s && w + 1 < cap && w < 48; s++)
		out[w++] = ((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_') ? *s : '_';
	out[w] = '\0';
}

/* temp file, fsync, rename (never replacing), fsync of the directory */
static int store(struct forensics *f, struct jbuf *gz, const struct forensics_trigger *t, uint64_t now,
		 struct forensics_dump_info *d)
{
	char base[128], tmp[96], name[160], what[64], stamp[32];
	struct tm tm;
	time_t secs = (time_t)(now / NS_PER_S);
	int dfd, fd = -1, rc;
	EVP_MD_CTX *md = NULL;
	unsigned int hl = 0;

	gmtime_r(&secs, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
	if (t->kind == FORENSICS_TRIGGER_ALERT) {
		char r[56];
		sanitize(r, sizeof(r), t->alert->rule);
		snprintf(what, sizeof(what), "alert-%s", r);
	} else {
		snprintf(what, sizeof(what), "%s", t->kind == FORENSICS_TRIGGER_REQUEST ? "request" : "signal");
	}
	snprintf(base, sizeof(base), "phiwatch-%s-%s", stamp, what);
	snprintf(tmp, sizeof(tmp), ".tmp-phiwatch-%d-%llu", (int)getpid(), (unsigned long long)++f->tmp_counter);

	dfd = open(f->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (dfd < 0)
		return -errno;
	fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = -errno;
		goto out;
	}
	md = EVP_MD_CTX_new();
	if (!md || !EVP_DigestInit_ex(md, EVP_sha256(), NULL)) {
		rc = -EIO;
		goto out;
	}
	rc = write_payload(f, fd, md, gz);
	if (!rc && fchmod(fd, 0600))
		rc = -errno;
	if (!rc && fsync(fd))
		rc = -errno;
	if (!rc && !EVP_DigestFinal_ex(md, d->sha256, &hl))
		rc = -EIO;
	if (close(fd) && !rc)
		rc = -errno;
	fd = -1;
	if (rc)
		goto out;
	int i0 = strcmp(base, f->last_base) ? 1 : f->last_suffix + 1;
	for (int i = i0; i < i0 + NAME_TRIES; i++) {
		if (i == 1)
			snprintf(name, sizeof(name), "%s.tar.gz%s", base, f->enc ? ".aes" : "");
		else
			snprintf(name, sizeof(name), "%s-%d.tar.gz%s", base, i, f->enc ? ".aes" : "");
		rc = renameat2(dfd, tmp, dfd, name, RENAME_NOREPLACE) ? -errno : 0;
		if (!rc) {
			memcpy(f->last_base, base, sizeof(base));
			f->last_suffix = i;
		}
		if (rc != -EEXIST)
			break;
	}
	if (rc)
		goto out;
	if (fsync(dfd))
		log_warn("forensics: fsync %s: %s", f->dir, strerror(errno));
	snprintf(d->path, sizeof(d->path), "%s/%s", f->dir, name);
out:
	if (fd >= 0)
		close(fd);
	if (rc)
		unlinkat(dfd, tmp, 0);
	close(dfd);
	EVP_MD_CTX_free(md);
	return rc;
}

/* ------------------------------------------------------------------ dump */

struct hash_sink {
	EVP_MD_CTX *md;
	uint64_t n;
};

static int hash_sink_fn(void *ctx, const void *p, size_t n)
{
	struct hash_sink *h = ctx;

	h->n += n;
	return EVP_DigestUpdate(h->md, p, n) ? 0 : -EIO;
}

static int gz_sink_fn(void *ctx, const void *p, size_t n)
{
	struct targz *t = ctx;

	gz_feed(t, p, n, Z_NO_FLUSH);
	return t->err;
}

/* Refusals are logged at most once a minute (a storm would flood the log); every one is counted. */
static bool refusal_log_due(struct forensics *f)
{
	uint64_t now = realtime_ns();

	if (f->last_refusal_log_ns && now - f->last_refusal_log_ns < REFUSAL_LOG_NS)
		return false;
	f->last_refusal_log_ns = now;
	return true;
}

static int dump(struct forensics *f, const struct forensics_trigger *t, struct history *h,
		const struct history_filter *flt, struct forensics_dump_info *info)
{
	struct sel sel = { 0 };
	const struct history_entry **bypid = NULL;
	struct jbuf man, gz;
	struct pcap_call *calls = NULL;
	struct pcap_writer *pw = NULL;
	struct pcap_stats ps = { 0 };
	struct history_stats hs;
	struct targz *tz = NULL;
	uint64_t now = realtime_ns(), jsonl_len = 0, pcap_len = 0, first = 0, last = 0, used = 0, nproc = 0;
	uint32_t extra_pid = 0;
	char jsonl_sha[65], pcap_sha[65], host[256];
	struct utsname un;
	EVP_MD_CTX *md = NULL;
	int rc;

	if (!t || !h || (t->kind == FORENSICS_TRIGGER_ALERT && (!t->alert || !t->alert->rule)))
		return -EINVAL;
	jbuf_init(&man);
	jbuf_init(&gz);
	memset(info, 0, sizeof(*info));

	history__select(h, flt, sel_cb, &sel);
	if (sel.oom) {
		rc = -ENOMEM;
		goto fail;
	}

	/* transactions.jsonl: size and digest now, bytes streamed into the archive later */
	md = EVP_MD_CTX_new();
	if (!md || !EVP_DigestInit_ex(md, EVP_sha256(), NULL)) {
		rc = -EIO;
		goto fail;
	}
	for (size_t i = 0; i < sel.n; i++) {
		const struct history_entry *e = sel.v[i];
		jsonl_len += e->json_len + 1;
		EVP_DigestUpdate(md, e->json, e->json_len);
		EVP_DigestUpdate(md, "\n", 1);
		if (!first || e->ts_start < first)
			first = e->ts_start;
		if (e->ts_end > last)
			last = e->ts_end;
	}
	{
		uint8_t d[32];
		unsigned int l = 0;
		EVP_DigestFinal_ex(md, d, &l);
		hex(jsonl_sha, d, 32);
	}

	/* capture.pcap */
	calls = calloc(sel.n ? sel.n : 1, sizeof(*calls));
	if (!calls) {
		rc = -ENOMEM;
		goto fail;
	}
	for (size_t i = 0; i < sel.n; i++) {
		const struct history_entry *e = sel.v[i];
		struct pcap_call *c = &calls[i];
		c->ts_req_ns = e->ts_start;
		c->ts_resp_ns = e->ts_end;
		c->src_ip = e->src_ip;
		c->dst_ip = e->dst_ip;
		c->src_port = e->src_port;
		c->dst_port = e->dst_port;
		c->role = e->role;
		c->req = e->req;
		c->req_len = e->req_len;
		c->req_wire = e->req_len + (e->req_bytes > e->req_captured ? e->req_bytes - e->req_captured : 0);
		c->resp = e->resp;
		c->resp_len = e->resp_len;
		c->resp_wire = e->resp_len + (e->resp_bytes > e->resp_captured ? e->resp_bytes - e->resp_captured : 0);
		if (!e->status && !e->resp_len)
			c->resp_wire = 0;
	}
	/* first pass: size and digest only (the bytes are made again straight into the archive: a dump of the
	 * whole history does not hold a second copy of it) */
	{
		struct hash_sink hs = { .md = md, .n = 0 };
		uint8_t d[32];
		unsigned int l = 0;
		if (!EVP_DigestInit_ex(md, EVP_sha256(), NULL)) {
			rc = -EIO;
			goto fail;
		}
		pw = pcap_writer__new_sink(hash_sink_fn, &hs);
		rc = pw ? pcap_writer__calls(pw, calls, sel.n) : -ENOMEM;
		if (pw)
			pcap_writer__stats(pw, &ps);
		pcap_writer__free(pw);
		pw = NULL;
		if (rc)
			goto fail;
		EVP_DigestFinal_ex(md, d, &l);
		hex(pcap_sha, d, 32);
		pcap_len = hs.n;
	}

	/* manifest.json */
	if (gethostname(host, sizeof(host)))
		host[0] = '\0';
	host[sizeof(host) - 1] = '\0';
	if (uname(&un))
		un.release[0] = '\0';
	history__stats(h, &hs);
	json_obj_open(&man, NULL);
	json_u64(&man, "format", 1);
	json_obj_open(&man, "agent");
	json_cstr(&man, "name", "phiwatch");
	json_cstr(&man, "version", f->version);
	json_obj_close(&man);
	json_obj_open(&man, "host");
	json_cstr(&man, "name", host);
	json_cstr(&man, "kernel", un.release);
	json_obj_close(&man);
	put_time(&man, "created", now);
	manifest_trigger(&man, t);
	json_obj_open(&man, "filter");
	if (flt && flt->principal)
		json_cstr(&man, "principal", flt->principal);
	else {
		json_key(&man, "principal");
		jbuf_puts(&man, "null");
	}
	json_u64(&man, "pid", flt ? flt->pid : 0);
	put_time(&man, "since", flt ? flt->since_ns : 0);
	put_time(&man, "until", flt ? flt->until_ns : 0);
	json_obj_close(&man);
	json_obj_open(&man, "time_range");
	put_time(&man, "first", first);
	put_time(&man, "last", last > first ? last : first);
	json_obj_close(&man);
	json_u64(&man, "transactions", sel.n);
	json_obj_open(&man, "history");
	json_u64(&man, "entries", hs.entries);
	json_u64(&man, "evicted", hs.evicted);
	json_u64(&man, "budget", hs.budget);
	json_obj_close(&man);
	json_arr_open(&man, "files");
	json_obj_open(&man, NULL);
	json_cstr(&man, "name", "transactions.jsonl");
	json_u64(&man, "bytes", jsonl_len);
	json_cstr(&man, "sha256", jsonl_sha);
	json_obj_close(&man);
	json_obj_open(&man, NULL);
	json_cstr(&man, "name", "capture.pcap");
	json_u64(&man, "bytes", pcap_len);
	json_cstr(&man, "sha256", pcap_sha);
	json_obj_close(&man);
	json_arr_close(&man);
	json_obj_open(&man, "capture");
	json_u64(&man, "packets", ps.packets);
	json_u64(&man, "connections", ps.connections);
	json_u64(&man, "duplicate_views", ps.duplicate_views);
	json_obj_close(&man);
	if (t->kind == FORENSICS_TRIGGER_ALERT)
		extra_pid = t->alert->pid;
	else if (flt)
		extra_pid = flt->pid;
	/* the manifest groups by process and connection; the JSONL keeps history order */
	bypid = malloc((sel.n ? sel.n : 1) * sizeof(*bypid));
	if (!bypid) {
		rc = -ENOMEM;
		goto fail;
	}
	if (sel.n)
		memcpy(bypid, sel.v, sel.n * sizeof(*bypid));
	qsort(bypid, sel.n, sizeof(*bypid), by_pid_tuple);
	manifest_processes(f, &man, bypid, sel.n, extra_pid, &nproc);
	json_obj_close(&man);
	jbuf_put(&man, "\n", 1);
	if (man.oom) {
		rc = -ENOMEM;
		goto fail;
	}

	/* the archive, in memory: the size cap is checked before anything touches the disk */
	tz = malloc(sizeof(*tz));
	if (!tz || gz_init(tz, &gz, f->level, now / NS_PER_S)) {
		free(tz);
		tz = NULL;
		rc = -ENOMEM;
		goto fail;
	}
	tar_file(tz, "manifest.json", man.len);
	gz_feed(tz, man.p, man.len, Z_NO_FLUSH);
	tar_pad(tz, man.len);
	tar_file(tz, "transactions.jsonl", jsonl_len);
	for (size_t i = 0; i < sel.n; i++) {
		gz_feed(tz, sel.v[i]->json, sel.v[i]->json_len, Z_NO_FLUSH);
		gz_feed(tz, "\n", 1, Z_NO_FLUSH);
	}
	tar_pad(tz, jsonl_len);
	tar_file(tz, "capture.pcap", pcap_len);
	pw = pcap_writer__new_sink(gz_sink_fn, tz);
	rc = pw ? pcap_writer__calls(pw, calls, sel.n) : -ENOMEM;
	if (pw) {
		struct pcap_stats again;
		pcap_writer__stats(pw, &again);
		if (!rc && again.bytes != pcap_len)
			rc = -EIO;   /* cannot happen: the writer is deterministic; a tar member must match its size */
	}
	if (rc) {
		deflateEnd(&tz->z);
		goto fail;
	}
	tar_pad(tz, pcap_len);
	tar_finish(tz);
	rc = tz->err;
	if (rc)
		goto fail;

	{
		uint64_t size = gz.len + (f->enc ? AES_HDR + AES_TAG : 0);
		rc = dir_usage(f, &used);
		if (rc)
			goto fail;
		f->st.dir_bytes = used;
		if (used + size > f->max_total) {
			f->st.refused_size_cap++;
			if (refusal_log_due(f))
				log_warn("forensics: dump refused: %llu more bytes would bring the %llu bytes of dumps in "
					 "%s over the cap of %llu (%llu refused so far; archive or remove old dumps)",
					 (unsigned long long)size, (unsigned long long)used, f->dir,
					 (unsigned long long)f->max_total, (unsigned long long)f->st.refused_size_cap);
			rc = -EDQUOT;
			goto out;
		}
	}
	rc = store(f, &gz, t, now, info);
	if (rc)
		goto fail;
	info->bytes = gz.len + (f->enc ? AES_HDR + AES_TAG : 0);
	info->transactions = sel.n;
	info->processes = nproc;
	info->ts_ns = now;
	f->st.dumps++;
	f->st.bytes += info->bytes;
	f->st.dir_bytes = used + info->bytes;
	log_info("forensics: wrote %s (%llu transactions, %llu bytes)", info->path, (unsigned long long)sel.n,
		 (unsigned long long)info->bytes);
	if (f->on_dump)
		f->on_dump(f->dump_ctx, t, info);
	goto out;
fail:
	f->st.errors++;
	log_error("forensics: dump failed: %s", strerror(-rc));
out:
	free(tz);
	free(bypid);
	EVP_MD_CTX_free(md);
	pcap_writer__free(pw);
	free(calls);
	free(sel.v);
	if (gz.p)
		OPENSSL_cleanse(gz.p, gz.cap);
	jbuf_free(&gz);
	jbuf_free(&man);
	return rc;
}

int forensics__dump(struct forensics *f, const struct forensics_trigger *t, struct history *h,
		    const struct history_filter *flt, char *path_out, size_t pn, uint8_t sha256_out[32])
{
	struct forensics_dump_info info;
	int rc = dump(f, t, h, flt, &info);

	if (rc)
		return rc;
	if (path_out && pn)
		snprintf(path_out, pn, "%s", info.path);
	if (sha256_out)
		memcpy(sha256_out, info.sha256, 32);
	return 0;
}

/* ------------------------------------------------------------------ alerts */

static bool anonymous(const char *p)
{
	return !p || !p[0] || (p[0] == '-' && !p[1]);
}

/* true: (rule, principal) may dump at ts; the slot is claimed (even if the dump then fails: a storm on a full
 * disk must not rebuild archives on every alert). */
static bool rate_admit(struct forensics *f, const struct alert *a)
{
	struct jbuf k;
	uint64_t hv;
	struct rate_slot *free_slot = NULL, *oldest = NULL;

	jbuf_init(&k);
	jbuf_puts(&k, a->rule);
	jbuf_put(&k, "", 1);   /* NUL separator: (rule, principal) pairs cannot collide by concatenation */
	jbuf_puts(&k, a->principal ? a->principal : "-");
	hv = siphash24(&f->sk, k.p ? k.p : "", k.len) | 1;   /* 0 marks a free slot */
	jbuf_free(&k);
	for (size_t i = 0; i < FORENSICS_RATE_KEYS; i++) {
		struct rate_slot *s = &f->rate[i];
		if (s->hash == hv) {
			uint64_t d = a->ts_ns > s->last_ns ? a->ts_ns - s->last_ns : s->last_ns - a->ts_ns;
			if (d < f->interval_ns)
				return false;
			s->last_ns = a->ts_ns;
			return true;
		}
		if (!s->hash) {
			if (!free_slot)
				free_slot = s;
		} else if (!oldest || s->last_ns < oldest->last_ns) {
			oldest = s;
		}
	}
	/* a new pair: a free slot, else the least recent one once its interval is over (a storm of distinct
	 * principals is still bounded: FORENSICS_RATE_KEYS dumps per interval at most, and the size cap) */
	if (!free_slot) {
		if (a->ts_ns < oldest->last_ns || a->ts_ns - oldest->last_ns < f->interval_ns)
			return false;
		free_slot = oldest;
	}
	free_slot->hash = hv;
	free_slot->last_ns = a->ts_ns;
	return true;
}

int forensics__on_alert(struct forensics *f, const struct alert *a, struct history *h, char *path_out, size_t n,
			uint8_t sha256_out[32])
{
	struct history_filter flt = { 0 };
	struct forensics_trigger t = { .kind = FORENSICS_TRIGGER_ALERT, .alert = a };
	int rc;

	if (!a || !a->rule)
		return -EINVAL;
	if (a->severity < f->min_severity) {
		f->st.below_severity++;
		return 0;
	}
	if (anonymous(a->principal) && !a->pid) {
		f->st.no_subject++;
		return 0;
	}
	if (!rate_admit(f, a)) {
		f->st.refused_rate_limit++;
		log_debug("forensics: no dump for %s: one was written for this rule and principal within %llu s",
			  a->rule, (unsigned long long)(f->interval_ns / NS_PER_S));
		return 0;
	}
	flt.principal = anonymous(a->principal) ? NULL : a->principal;
	flt.pid = a->pid;
	rc = forensics__dump(f, &t, h, &flt, path_out, n, sha256_out);
	return rc ? rc : 1;
}

/* ------------------------------------------------------------------ control requests */

static int bad_request(struct jbuf *resp, const char *why)
{
	jbuf_reset(resp);
	json_obj_open(resp, NULL);
	json_bool(resp, "ok", false);
	json_cstr(resp, "error", why);
	json_obj_close(resp);
	return -EINVAL;
}

int forensics__handle_request(struct forensics *f, struct history *h, const cJSON *req, struct jbuf *resp)
{
	const cJSON *it, *cmd = cJSON_GetObjectItemCaseSensitive(req, "cmd");
	const cJSON *user = NULL, *pid = NULL, *all = NULL, *last = NULL;
	struct history_filter flt = { 0 };
	struct forensics_trigger t = { .kind = FORENSICS_TRIGGER_REQUEST };
	struct forensics_dump_info d;
	struct jbuf rq;
	char sha[65];
	int rc;

	if (!cJSON_IsObject(req) || !cJSON_IsString(cmd) || strcmp(cmd->valuestring, "dump"))
		return bad_request(resp, "not a dump request");
	cJSON_ArrayForEach(it, req) {
		if (!it->string)
			return bad_request(resp, "bad request");
		if (!strcmp(it->string, "cmd"))
			continue;
		else if (!strcmp(it->string, "user"))
			user = it;
		else if (!strcmp(it->string, "pid"))
			pid = it;
		else if (!strcmp(it->string, "all"))
			all = it;
		else if (!strcmp(it->string, "last_s"))
			last = it;
		else
			return bad_request(resp, "unknown key in request (known: cmd, user, pid, all, last_s)");
	}
	if (user && (!cJSON_IsString(user) || !user->valuestring[0] ||
		     strlen(user->valuestring) >= IDENTITY_PRINCIPAL_MAX))
		return bad_request(resp, "\"user\" must be a non-empty string");
	if (pid && (!cJSON_IsNumber(pid) || pid->valuedouble < 1 || pid->valuedouble > 4294967295.0 ||
		    pid->valuedouble != (double)(uint32_t)pid->valuedouble))
		return bad_request(resp, "\"pid\" must be a positive integer");
	if (all && !cJSON_IsTrue(all))
		return bad_request(resp, "\"all\" must be true when present");
	if (last && (!cJSON_IsNumber(last) || last->valuedouble < 1 || last->valuedouble > 3.2e9 ||
		     last->valuedouble != (double)(uint64_t)last->valuedouble))
		return bad_request(resp, "\"last_s\" must be a positive number of seconds");
	if (all && (user || pid))
		return bad_request(resp, "\"all\" excludes \"user\" and \"pid\"");
	if (!all && !user && !pid)
		return bad_request(resp, "say which history: \"user\", \"pid\" or \"all\"");

	flt.principal = user ? user->valuestring : NULL;
	flt.pid = pid ? (uint32_t)pid->valuedouble : 0;
	if (last) {
		uint64_t now = realtime_ns(), span = (uint64_t)last->valuedouble * NS_PER_S;
		flt.since_ns = now > span ? now - span : 0;
	}
	/* the request as the manifest records it, through the one escaper */
	jbuf_init(&rq);
	json_obj_open(&rq, NULL);
	json_cstr(&rq, "cmd", "dump");
	if (user)
		json_cstr(&rq, "user", user->valuestring);
	if (pid)
		json_u64(&rq, "pid", flt.pid);
	if (all)
		json_bool(&rq, "all", true);
	if (last)
		json_u64(&rq, "last_s", (uint64_t)last->valuedouble);
	json_obj_close(&rq);
	t.request_json = rq.oom ? "{}" : rq.p;

	rc = dump(f, &t, h, &flt, &d);
	jbuf_free(&rq);
	jbuf_reset(resp);
	json_obj_open(resp, NULL);
	json_bool(resp, "ok", rc == 0);
	if (rc) {
		json_cstr(resp, "error", rc == -EDQUOT ? "refused: the forensics directory is at its size cap"
						       : strerror(-rc));
	} else {
		hex(sha, d.sha256, 32);
		json_cstr(resp, "path", d.path);
		json_cstr(resp, "sha256", sha);
		json_u64(resp, "bytes", d.bytes);
		json_u64(resp, "transactions", d.transactions);
	}
	json_obj_close(resp);
	return rc;
}

/* ------------------------------------------------------------------ audit note */

void forensics_note_json(const struct forensics_trigger *t, const struct forensics_dump_info *d, struct jbuf *b)
{
	char sha[65];
	const char *slash = strrchr(d->path, '/');

	hex(sha, d->sha256, 32);
	json_obj_open(b, NULL);
	json_cstr(b, "file", slash ? slash + 1 : d->path);
	json_cstr(b, "path", d->path);
	json_u64(b, "bytes", d->bytes);
	json_cstr(b, "sha256", sha);
	json_u64(b, "transactions", d->transactions);
	switch (t->kind) {
	case FORENSICS_TRIGGER_ALERT:
		json_cstr(b, "trigger", "alert");
		json_cstr(b, "rule", t->alert->rule);
		json_cstr(b, "principal", t->alert->principal ? t->alert->principal : "-");
		json_u64(b, "pid", t->alert->pid);
		break;
	case FORENSICS_TRIGGER_REQUEST:
		json_cstr(b, "trigger", "request");
		break;
	default:
		json_cstr(b, "trigger", "signal");
		json_cstr(b, "signal", t->signal_name ? t->signal_name : "");
		break;
	}
	json_obj_close(b);
}

/* ------------------------------------------------------------------ decrypt */

int forensics_decrypt(const char *in_path, const char *out_path, const uint8_t key[FORENSICS_KEY_LEN], char *err,
		      size_t errlen)
{
	static const char label[] = "phiwatch-audit-enc-key-id";
	uint8_t *buf = NULL, id[32];
	size_t len = 0, cap = 0;
	int fd, ofd = -1, rc = 0, outl;
	EVP_CIPHER_CTX *cx = NULL;
	EVP_MD_CTX *md = NULL;

	fd = open(in_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", in_path, strerror(-rc));
		return rc;
	}
	for (;;) {
		if (len == cap) {
			size_t nc = cap ? 2 * cap : (1u << 20);
			uint8_t *nb = realloc(buf, nc);
			if (!nb) {
				rc = -ENOMEM;
				snprintf(err, errlen, "%s: out of memory", in_path);
				goto out;
			}
			buf = nb;
			cap = nc;
		}
		ssize_t r = read(fd, buf + len, cap - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			rc = -errno;
			snprintf(err, errlen, "%s: %s", in_path, strerror(-rc));
			goto out;
		}
		if (!r)
			break;
		len += (size_t)r;
	}
	if (len < AES_HDR + AES_TAG || memcmp(buf, AES_MAGIC, 8)) {
		rc = -EBADMSG;
		snprintf(err, errlen, "%s: not an encrypted phiwatch dump", in_path);
		goto out;
	}
	md = EVP_MD_CTX_new();
	if (!md || !EVP_DigestInit_ex(md, EVP_sha256(), NULL) || !EVP_DigestUpdate(md, label, sizeof(label) - 1) ||
	    !EVP_DigestUpdate(md, key, FORENSICS_KEY_LEN) || !EVP_DigestFinal_ex(md, id, NULL)) {
		rc = -EIO;
		snprintf(err, errlen, "libcrypto SHA-256 unavailable");
		goto out;
	}
	if (CRYPTO_memcmp(id, buf + 8, 8)) {
		rc = -EBADMSG;
		snprintf(err, errlen, "%s: encrypted with another key", in_path);
		goto out;
	}
	size_t clen = len - AES_HDR - AES_TAG;
	cx = EVP_CIPHER_CTX_new();
	if (!cx || EVP_DecryptInit_ex(cx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
	    EVP_CIPHER_CTX_ctrl(cx, EVP_CTRL_GCM_SET_IVLEN, 12, NULL) != 1 ||
	    EVP_DecryptInit_ex(cx, NULL, NULL, key, buf + 16) != 1 ||
	    EVP_DecryptUpdate(cx, NULL, &outl, buf, AES_HDR) != 1) {
		rc = -EIO;
		snprintf(err, errlen, "AES-256-GCM unavailable");
		goto out;
	}
	for (size_t off = 0; off < clen;) {
		int n = clen - off > (1u << 30) ? (1 << 30) : (int)(clen - off);
		uint8_t *p = buf + AES_HDR + off;
		if (EVP_DecryptUpdate(cx, p, &outl, p, n) != 1) {
			rc = -EBADMSG;
			break;
		}
		off += (size_t)n;
	}
	if (!rc && (EVP_CIPHER_CTX_ctrl(cx, EVP_CTRL_GCM_SET_TAG, AES_TAG, buf + AES_HDR + clen) != 1 ||
		    EVP_DecryptFinal_ex(cx, id, &outl) != 1))
		rc = -EBADMSG;
	if (rc) {
		snprintf(err, errlen, "%s: authentication failed (altered or truncated)", in_path);
		goto out;
	}
	ofd = open(out_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (ofd < 0) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", out_path, strerror(-rc));
		goto out;
	}
	for (size_t off = 0; off < clen;) {
		ssize_t w = write(ofd, buf + AES_HDR + off, clen - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			rc = -errno;
			snprintf(err, errlen, "%s: %s", out_path, strerror(-rc));
			break;
		}
		off += (size_t)w;
	}
	if (!rc && fsync(ofd)) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", out_path, strerror(-rc));
	}
out:
	if (ofd >= 0) {
		close(ofd);
		if (rc)
			unlink(out_path);
	}
	close(fd);
	EVP_CIPHER_CTX_free(cx);
	EVP_MD_CTX_free(md);
	if (buf) {
		OPENSSL_cleanse(buf, cap);
		free(buf);
	}
	return rc;
}
