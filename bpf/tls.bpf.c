/* tls.bpf.c — uprobes on OpenSSL SSL_read/SSL_write(_ex): plaintext before encryption / after decryption.
 * Included by phiwatch.bpf.c. SSL* is linked to its socket by the read/write
 * syscall OpenSSL makes on the same thread (see ssl_link_fd), and cached for
 * calls served from OpenSSL's own buffer.
 */

struct ssl_call {
	__u64 ssl;
	__u64 buf;
	__u64 nbytes_ptr;  /* size_t *written / *readbytes of the _ex variants */
	__s32 fd;          /* set by the nested syscall, -1 until then */
	__u8 dir;
	__u8 depth;        /* nested SSL calls on this thread (e.g. SSL_read -> SSL_read_ex) */
	__u16 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct ssl_call);
} ssl_args SEC(".maps");

struct ssl_key {
	__u32 tgid;
	__u32 _pad;
	__u64 ssl;
};

/* (tgid, SSL*) -> fd. Evicted on close of the fd; LRU bounds the rest. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ssl_key);
	__type(value, __s32);
} ssl_fds SEC(".maps");

static __always_inline void ssl_forget(__u32 tgid, __u64 ssl)
{
	struct ssl_key k = { .tgid = tgid, .ssl = ssl };
	bpf_map_delete_elem(&ssl_fds, &k);
}

static __always_inline bool ssl_link_fd(__u32 tid, __u32 tgid, int fd, __u64 id)
{
	struct ssl_call *c = bpf_map_lookup_elem(&ssl_args, &tid);

	if (!c)
		return false;
	c->fd = fd;
	struct ssl_key k = { .tgid = tgid, .ssl = c->ssl };
	/* usually already known (every call of a connection makes one): a lookup is cheaper than an LRU update */
	__s32 *known = bpf_map_lookup_elem(&ssl_fds, &k);
	if (!known || *known != fd)
		bpf_map_update_elem(&ssl_fds, &k, &fd, BPF_ANY);
	struct sock_state *ss = sock_get(tgid, fd, true);
	if (ss && ss->cls != SC_IGNORE) {
		ss->cls = SC_TLS;
		ss->ssl = c->ssl;
	}
	return true;
}

static __always_inline void ssl_enter(__u64 ssl, __u64 buf, __u64 nbytes_ptr, __u8 dir)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;

	if (skip_self(id))
		return;
	struct ssl_call *c = bpf_map_lookup_elem(&ssl_args, &tid);
	if (c) {
		c->depth++;
		return;
	}
	struct ssl_call n = { .ssl = ssl, .buf = buf, .nbytes_ptr = nbytes_ptr, .fd = -1, .dir = dir };
	if (bpf_map_update_elem(&ssl_args, &tid, &n, BPF_ANY))
		drop_count(PW_DROP_ARGS_FULL);
}

/* moved: bytes the call wrote or read, <= 0 for none. */
static __always_inline void ssl_exit(long moved, bool ex, long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32, tid = (__u32)id;
	struct ssl_call *cp = bpf_map_lookup_elem(&ssl_args, &tid);

	if (!cp)
		return;
	if (cp->depth) {
		cp->depth--;
		return;
	}
	struct ssl_call c = *cp;
	bpf_map_delete_elem(&ssl_args, &tid);

	if (ex) {
		size_t n = 0;
		/* 1 from SSL_*_ex; > 0 from the internal functions they share */
		if (ret <= 0 || bpf_probe_read_user(&n, sizeof(n), (void *)c.nbytes_ptr))
			return;
		moved = n;
	}
	if (moved <= 0)
		return;
	if (c.fd < 0) {
		struct ssl_key k = { .tgid = tgid, .ssl = c.ssl };
		__s32 *fdp = bpf_map_lookup_elem(&ssl_fds, &k);
		if (!fdp) {
			drop_count(PW_DROP_TLS_NO_FD);
			return;
		}
		c.fd = *fdp;
	}
	struct sock_state *ss = sock_get(tgid, c.fd, true);
	if (ss && ss->cls == SC_IGNORE)
		return; /* a port the configuration excludes */
	if (!ss || !ss->sk) {
		drop_count(PW_DROP_TLS_NO_FD);
		return;
	}
	ss->cls = SC_TLS;
	ss->ssl = c.ssl;
	sock_announce(ss, c.fd, id);

	struct scratch *s = data_begin(c.fd, c.dir, PW_F_TLS, c.ssl, moved > 0xffffffff ? 0xffffffff : moved, id);
	if (!s)
		return;
	data_append(s, (void *)c.buf, moved);
	data_send(s, ss);
}

SEC("uprobe")
int BPF_KPROBE(ssl_write_enter, void *ssl, const void *buf, int num)
{
	FLOOR_RETURN();
	ssl_enter((__u64)ssl, (__u64)buf, 0, PW_DIR_EGRESS);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(ssl_read_enter, void *ssl, void *buf, int num)
{
	FLOOR_RETURN();
	ssl_enter((__u64)ssl, (__u64)buf, 0, PW_DIR_INGRESS);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(ssl_write_ex_enter, void *ssl, const void *buf, size_t num, size_t *written)
{
	FLOOR_RETURN();
	ssl_enter((__u64)ssl, (__u64)buf, (__u64)written, PW_DIR_EGRESS);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(ssl_read_ex_enter, void *ssl, void *buf, size_t num, size_t *readbytes)
{
	FLOOR_RETURN();
	ssl_enter((__u64)ssl, (__u64)buf, (__u64)readbytes, PW_DIR_INGRESS);
	return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(ssl_rw_exit, int ret)
{
	FLOOR_RETURN();
	ssl_exit(ret, false, ret);
	return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(ssl_rw_ex_exit, int ret)
{
	FLOOR_RETURN();
	ssl_exit(0, true, ret);
	return 0;
}
