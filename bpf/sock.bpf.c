/* sock.bpf.c — syscall tracepoints: learn TCP sockets, copy plaintext payload prefixes.
 * Included by phiwatch.bpf.c (one object, one skeleton). Not TLS: see tls.bpf.c.
 */

enum call_kind {
	CK_BUF = 0,     /* read/write/recvfrom/sendto: one buffer */
	CK_IOV = 1,     /* readv/writev: iovec array */
	CK_MSG = 2,     /* recvmsg/sendmsg: user_msghdr */
	CK_NOCOPY = 3,  /* sendfile: bytes moved from a file, nothing to copy */
};

/* Defined in tls.bpf.c: the SSL call this thread is inside, if any. */
static __always_inline bool ssl_link_fd(__u32 tid, __u32 tgid, int fd, __u64 id);

static __always_inline bool skip_self(__u64 id)
{
	return tgid_skipped(id >> 32);
}

/* HTTP starts with a method token or "HTTP/": a letter. TLS records start
 * with content type 20..23 and major version 3. Anything else is a binary
 * protocol phiwatch does not follow. */
static __always_inline __u8 classify(const __u8 *b, __u32 n)
{
	if (b[0] >= 20 && b[0] <= 23 && (n < 2 || b[1] == 3))
		return SC_TLS;
	if ((b[0] >= 'A' && b[0] <= 'Z') || (b[0] >= 'a' && b[0] <= 'z'))
		return SC_HTTP;
	return SC_IGNORE;
}

static __always_inline void tls_report(struct sock_state *ss, int fd, __u64 id)
{
	struct pw_tls t = {};

	if (ss->tls_reported)
		return;
	ss->tls_reported = 1;
	sock_announce(ss, fd, id);
	fill_hdr(&t.h, PW_EV_TLS, sizeof(t), id);
	t.fd = fd;
	if (bpf_ringbuf_output(&events, &t, sizeof(t), rb_flags()))
		drop_count(PW_DROP_RINGBUF_META);
}

/* bpf_loop callback: one iovec per call. The walk state lives in the per-CPU
 * scratch (a map value), not on the stack: the verifier then treats it as
 * unknown and converges after one pass instead of exploring each iteration. */
struct iov_walk {
	struct scratch *s;
};

static long copy_one_iov(__u32 i, void *ctx)
{
	struct scratch *s = ((struct iov_walk *)ctx)->s;
	struct iovec iov;

	if (i >= s->walk_cnt || s->walk_left == 0)
		return 1;
	if (bpf_probe_read_user(&iov, sizeof(iov), (void *)(s->walk_vec + i * sizeof(iov)))) {
		drop_count(PW_DROP_READ_FAULT);
		return 1;
	}
	__u64 n = iov.iov_len < s->walk_left ? iov.iov_len : s->walk_left;
	if (data_append(s, iov.iov_base, n) < n)
		return 1; /* capture area full: the rest is uncaptured */
	s->walk_left -= n;
	return 0;
}

static __always_inline void copy_iovs(struct scratch *s, __u64 vec, __u64 cnt, __u64 moved)
{
	s->walk_vec = vec;
	s->walk_cnt = cnt;
	s->walk_left = moved;
	struct iov_walk w = { .s = s };  /* bpf_loop wants a stack pointer */
	bpf_loop(PW_IOV_MAX, copy_one_iov, &w, 0);
	if (s->walk_left && s->e.cap_len < PHIWATCH_CAPTURE_BYTES && cnt > PW_IOV_MAX)
		drop_count(PW_DROP_IOV_LIMIT);
}

/* The data syscalls are traced at their exit only: the arguments are still in the task's saved user registers
 * (x86-64: fd in di, buffer/iovec/msghdr in si, count in dx; these syscalls never change them), so one tracepoint
 * hit per call does what an enter + exit pair did, with no per-call storage. */
static __always_inline void data_exit(long ret, const __u8 kind, const __u8 dir)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32, tid = (__u32)id;

	if (skip_self(id))
		return;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	int fd = (int)BPF_CORE_READ(regs, di);
	if (fd < 0)
		return;
	/* A syscall made inside SSL_read/SSL_write links SSL* to this fd and
	 * carries ciphertext: never copied. */
	if (ssl_link_fd(tid, tgid, fd, id))
		return;
	if (ret <= 0)
		return;

	struct sock_state *ss = sock_get(tgid, fd, true);
	if (!ss || ss->cls == SC_IGNORE || ss->cls == SC_TLS)
		return;
	struct { __u64 ptr, cnt; __s32 fd; __u8 dir; } a = { .fd = fd, .dir = dir };
	if (kind != CK_NOCOPY) {
		a.ptr = BPF_CORE_READ(regs, si);
		a.cnt = BPF_CORE_READ(regs, dx);
	}

	struct scratch *s = data_begin(a.fd, a.dir, 0, 0, ret > 0xffffffff ? 0xffffffff : ret, id);
	if (!s)
		return;
	/* kind is a constant per tracepoint: only one branch is compiled in. */
	if (kind == CK_BUF) {
		data_append(s, (void *)a.ptr, ret);
	} else if (kind == CK_IOV) {
		copy_iovs(s, a.ptr, a.cnt, ret);
	} else if (kind == CK_MSG) {
		struct user_msghdr m;
		if (bpf_probe_read_user(&m, sizeof(m), (void *)a.ptr) == 0)
			copy_iovs(s, (__u64)m.msg_iov, m.msg_iovlen, ret);
		else
			drop_count(PW_DROP_READ_FAULT);
	}
	/* The socket's first bytes decide what it is: classified from what was
	 * copied, so a first call of one byte or a first iovec of one byte
	 * counts like any other. */
	if (ss->cls == SC_NEW) {
		if (s->e.cap_len == 0)
			return; /* nothing copied (sendfile): judge the next call */
		ss->cls = classify(s->e.data, s->e.cap_len);
		if (ss->cls == SC_TLS)
			tls_report(ss, a.fd, id);
		if (ss->cls != SC_HTTP)
			return;
	}
	sock_announce(ss, a.fd, id);
	data_send(s, ss);
}

#define DATA_TP(name, kind, dir)                                            \
	SEC("tracepoint/syscalls/sys_exit_" #name)                          \
	int exit_##name(struct trace_event_raw_sys_exit *ctx)               \
	{                                                                   \
		FLOOR_RETURN();                                             \
		data_exit(ctx->ret, kind, dir);                             \
		return 0;                                                   \
	}

DATA_TP(read, CK_BUF, PW_DIR_INGRESS)
DATA_TP(recvfrom, CK_BUF, PW_DIR_INGRESS)
DATA_TP(readv, CK_IOV, PW_DIR_INGRESS)
DATA_TP(recvmsg, CK_MSG, PW_DIR_INGRESS)
DATA_TP(write, CK_BUF, PW_DIR_EGRESS)
DATA_TP(sendto, CK_BUF, PW_DIR_EGRESS)
DATA_TP(writev, CK_IOV, PW_DIR_EGRESS)
DATA_TP(sendmsg, CK_MSG, PW_DIR_EGRESS)

/* sendfile(out_fd, in_fd, offset, count): file bytes reach the socket
 * without passing through user memory; reported as uncaptured bytes. */
DATA_TP(sendfile64, CK_NOCOPY, PW_DIR_EGRESS)

/* accept/accept4 return the new fd: a server-side socket. */
static __always_inline void accept_exit(long ret)
{
	__u64 id = bpf_get_current_pid_tgid();

	if (skip_self(id) || ret < 0)
		return;
	struct sock *sk = fd_to_tcp_sock((int)ret);
	if (!sk)
		return;
	struct sock_state n = { .sk = (__u64)sk, .cls = SC_NEW, .role = PW_ROLE_SERVER };
	if (!port_wanted(BPF_CORE_READ(sk, __sk_common.skc_num)))
		n.cls = SC_IGNORE;
	__u64 key = sock_key(id >> 32, (int)ret);
	if (bpf_map_update_elem(&socks, &key, &n, BPF_ANY))
		drop_count(PW_DROP_SOCKS_FULL);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int exit_accept(struct trace_event_raw_sys_exit *ctx)
{
	FLOOR_RETURN();
	accept_exit(ctx->ret);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int exit_accept4(struct trace_event_raw_sys_exit *ctx)
{
	FLOOR_RETURN();
	accept_exit(ctx->ret);
	return 0;
}

/* connect(fd, ...): the fd is read back from the saved registers at exit, like the data calls. */
SEC("tracepoint/syscalls/sys_exit_connect")
int exit_connect(struct trace_event_raw_sys_exit *ctx)
{
	FLOOR_RETURN();
	__u64 id = bpf_get_current_pid_tgid();

	if (skip_self(id))
		return 0;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	__s32 fd = (__s32)BPF_CORE_READ(regs, di);
	if (ctx->ret != 0 && ctx->ret != -EINPROGRESS)
		return 0;
	struct sock *sk = fd_to_tcp_sock(fd);
	if (!sk)
		return 0;
	struct sock_state n = { .sk = (__u64)sk, .cls = SC_NEW, .role = PW_ROLE_CLIENT };
	if (!port_wanted(bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport))))
		n.cls = SC_IGNORE;
	__u64 key = sock_key(id >> 32, fd);
	if (bpf_map_update_elem(&socks, &key, &n, BPF_ANY))
		drop_count(PW_DROP_SOCKS_FULL);
	return 0;
}

/* Forward declared in tls.bpf.c users: forget SSL* -> fd on close. */
static __always_inline void ssl_forget(__u32 tgid, __u64 ssl);

SEC("tracepoint/syscalls/sys_enter_close")
int enter_close(struct trace_event_raw_sys_enter *ctx)
{
	FLOOR_RETURN();
	__u64 id = bpf_get_current_pid_tgid();
	int fd = (int)ctx->args[0];
	__u64 key = sock_key(id >> 32, fd);
	struct sock_state *ss = bpf_map_lookup_elem(&socks, &key);

	if (!ss)
		return 0;
	if (ss->announced) {
		struct pw_close c = {};
		fill_hdr(&c.h, PW_EV_CLOSE, sizeof(c), id);
		c.fd = fd;
		c.seq[0] = ss->seq[0];
		c.seq[1] = ss->seq[1];
		if (bpf_ringbuf_output(&events, &c, sizeof(c), rb_flags()))
			drop_count(PW_DROP_RINGBUF_META);
	}
	if (ss->ssl)
		ssl_forget(id >> 32, ss->ssl);
	bpf_map_delete_elem(&socks, &key);
	return 0;
}
