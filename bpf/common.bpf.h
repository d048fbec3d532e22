/* common.bpf.h — maps, configuration and helpers shared by sock/tls/proc programs.
 * Not parsing: the kernel side only finds sockets, copies a bounded prefix of
 * each payload and counts what it could not deliver.
 */
#ifndef PHIWATCH_COMMON_BPF_H
#define PHIWATCH_COMMON_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "phiwatch/events.h"

char LICENSE[] SEC("license") = "GPL";

#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define EINPROGRESS 115

/* Loop bound for readv/writev/recvmsg/sendmsg iovecs: IOV_MAX, so every
 * iovec is walked until the capture area is full (bpf_loop: the verifier
 * checks the body once). */
#define PW_IOV_MAX 1024

/* Set by userspace before load. */
const volatile __u32 self_tgid = 0;
/* Benchmark floor (`run --floor`): every program returns at once. The
 * verifier prunes the rest (read-only data), so this is the cost of the hooks
 * alone, at the same places. */
const volatile bool floor_mode = false;
#define FLOOR_RETURN() do { if (floor_mode) return 0; } while (0)
/* Configured filters; when off, their maps are never looked up. */
const volatile bool filter_ports = false;
const volatile bool filter_tgids = false;

/* Ports followed when filter_ports: local port of accepted sockets, remote
 * port of connected ones. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u16);
	__type(value, __u8);
} ports SEC(".maps");

/* Processes never traced (configured by name; userspace keeps it current
 * across exec). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u8);
} skip_tgids SEC(".maps");

/* Names of processes never traced: checked at exec, in the kernel, so a
 * short-lived program is excluded from its first call. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, char[PHIWATCH_COMM_LEN]);
	__type(value, __u8);
} skip_comms SEC(".maps");

static __always_inline bool port_wanted(__u16 port)
{
	return !filter_ports || bpf_map_lookup_elem(&ports, &port);
}

/* The agent itself and configured processes are skipped before any copy. */
static __always_inline bool tgid_skipped(__u32 tgid)
{
	return tgid == self_tgid || (filter_tgids && bpf_map_lookup_elem(&skip_tgids, &tgid));
}
/* Wake the reader only when this many bytes wait in the ring; below it the
 * reader drains on its own short timer (bounded delay, far fewer wake-ups). */
const volatile __u64 wakeup_bytes = 256 * 1024;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 * 1024 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PW_DROP__MAX);
	__type(key, __u32);
	__type(value, __u64);
} drops SEC(".maps");

/* A data event under construction. The payload area is three times the
 * capture size so that the masked bounds of data_append (offset < CAP,
 * length < 2 * CAP) provably stay inside it when iovecs are packed. */
struct scratch {
	struct pw_data e;
	__u8 buf[3 * PHIWATCH_CAPTURE_BYTES];
	/* iovec walk state (see copy_one_iov) */
	__u64 walk_vec;
	__u64 walk_cnt;
	__u64 walk_left;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch_map SEC(".maps");

enum sock_class {
	SC_NEW = 0,     /* inet stream socket, protocol not yet seen */
	SC_HTTP = 1,    /* plaintext that may be HTTP: payload copied */
	SC_TLS = 2,     /* TLS records: ciphertext never copied */
	SC_IGNORE = 3,  /* not a TCP socket, or a binary protocol */
};

struct sock_state {
	__u64 sk;        /* struct sock *, valid while the fd is open */
	__u64 ssl;       /* last SSL* linked to this fd, to evict on close */
	__u64 off[2];    /* bytes moved per direction (see pw_data.offset) */
	__u32 seq[2];    /* data events per direction */
	__u8 cls;        /* enum sock_class */
	__u8 role;       /* enum pw_role */
	__u8 announced;  /* PW_EV_CONN sent */
	__u8 tls_reported;
	__u8 announce_failed; /* a PW_EV_CONN was lost once: retries are not counted again */
	__u8 _pad[3];
};

/* (tgid << 32 | fd) -> state. LRU: fds of exited processes age out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct sock_state);
} socks SEC(".maps");

static __always_inline __u64 sock_key(__u32 tgid, int fd)
{
	return ((__u64)tgid << 32) | (__u32)fd;
}

/* Lost data events by (role, direction): see PW_LOST_SLOTS. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PW_LOST_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} lost_by_role SEC(".maps");

static __always_inline void drop_count(__u32 reason)
{
	__u64 *c = bpf_map_lookup_elem(&drops, &reason);
	if (c)
		*c += 1;
}

static __always_inline __u64 rb_flags(void)
{
	if (bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wakeup_bytes)
		return BPF_RB_FORCE_WAKEUP;
	return BPF_RB_NO_WAKEUP;
}

static __always_inline void fill_hdr(struct pw_hdr *h, __u16 type, __u16 size, __u64 id)
{
	h->type = type;
	h->size = size;
	h->pid = id >> 32;
	h->tid = (__u32)id;
	h->_pad = 0;
	h->ts_ns = bpf_ktime_get_ns();
}

/* Finds the socket behind fd in the current task's file table (CO-RE).
 * Returns NULL when fd is not a TCP socket over IPv4/IPv6. */
static __always_inline struct sock *fd_to_tcp_sock(int fd)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds;
	struct file *f = NULL;

	if (!fdt || fd < 0 || (unsigned int)fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]) || !f)
		return NULL;
	if ((BPF_CORE_READ(f, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return NULL;
	struct socket *so = BPF_CORE_READ(f, private_data);
	struct sock *sk = BPF_CORE_READ(so, sk);
	if (!sk)
		return NULL;
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return NULL;
	if (BPF_CORE_READ(sk, sk_type) != SOCK_STREAM || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return NULL;
	return sk;
}

/* Looks up fd's state, learning sockets that predate the agent (or whose
 * accept/connect was missed) from the file table. Returns NULL when the fd
 * is not followed. */
static __always_inline struct sock_state *sock_get(__u32 tgid, int fd, bool learn)
{
	__u64 key = sock_key(tgid, fd);
	struct sock_state *ss = bpf_map_lookup_elem(&socks, &key);

	if (ss || !learn)
		return ss;
	struct sock_state n = {};
	struct sock *sk = fd_to_tcp_sock(fd);
	if (sk && filter_ports && !port_wanted(BPF_CORE_READ(sk, __sk_common.skc_num)) &&
	    !port_wanted(bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport))))
		sk = NULL;
	if (sk) {
		n.sk = (__u64)sk;
		n.role = PW_ROLE_UNKNOWN;
		n.cls = SC_NEW;
	} else {
		n.cls = SC_IGNORE;
	}
	if (bpf_map_update_elem(&socks, &key, &n, BPF_NOEXIST) && bpf_map_update_elem(&socks, &key, &n, BPF_ANY))
		drop_count(PW_DROP_SOCKS_FULL);
	return bpf_map_lookup_elem(&socks, &key);
}

/* Sends PW_EV_CONN for a socket the first time it carries HTTP or TLS. */
static __always_inline void sock_announce(struct sock_state *ss, int fd, __u64 id)
{
	struct pw_conn c = {};
	struct sock *sk = (struct sock *)ss->sk;

	if (ss->announced)
		return;
	fill_hdr(&c.h, PW_EV_CONN, sizeof(c), id);
	c.sk = ss->sk;
	c.fd = fd;
	c.role = ss->role;
	c.family = BPF_CORE_READ(sk, __sk_common.skc_family);
	c.lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	c.rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (c.family == AF_INET) {
		BPF_CORE_READ_INTO(&c.laddr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO(&c.raddr, sk, __sk_common.skc_daddr);
	} else {
		BPF_CORE_READ_INTO(&c.laddr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&c.raddr, sk, __sk_common.skc_v6_daddr);
	}
	bpf_get_current_comm(c.comm, sizeof(c.comm));
	/* Not announced until it got through: the next call tries again. */
	if (bpf_ringbuf_output(&events, &c, sizeof(c), rb_flags())) {
		if (!ss->announce_failed)
			drop_count(PW_DROP_RINGBUF_META);
		ss->announce_failed = 1;
	} else {
		ss->announced = 1;
	}
}

static __always_inline struct scratch *scratch_get(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&scratch_map, &zero);
}

/* Starts a data event in the per-CPU scratch (never the stack). */
static __always_inline struct scratch *data_begin(int fd, __u8 dir, __u8 flags, __u64 ssl, __u32 total, __u64 id)
{
	struct scratch *s = scratch_get();
	if (!s)
		return NULL;
	fill_hdr(&s->e.h, PW_EV_DATA, 0, id);
	s->e.fd = fd;
	s->e.dir = dir;
	s->e.flags = flags;
	s->e._pad = 0;
	s->e.total_len = total;
	s->e.cap_len = 0;
	s->e.ssl = ssl;
	bpf_get_current_comm(s->e.comm, sizeof(s->e.comm));
	return s;
}

/* Keeps x within [0, mask] for the verifier. The mask is a no-op for the
 * values that reach it, so clang would drop a plain `&=`; asm keeps it. */
#define VERIFIER_BOUND(x, mask) asm volatile("%[v] &= %[m]" : [v] "+r"(x) : [m] "i"(mask))

/* Appends up to len bytes from user memory at the current capture offset.
 * Returns how many were copied (0 once the capture area is full). */
static __always_inline __u64 data_append(struct scratch *s, const void *ubuf, __u64 len)
{
	__u64 off = s->e.cap_len;
	__u64 n;

	if (off >= PHIWATCH_CAPTURE_BYTES || len == 0)
		return 0;
	n = PHIWATCH_CAPTURE_BYTES - off;
	if (len < n)
		n = len;
	/* off < CAP and n <= CAP: with both masks the verifier sees
	 * off + n < 3 * CAP, the size of the payload area. */
	VERIFIER_BOUND(off, PHIWATCH_CAPTURE_BYTES - 1);
	VERIFIER_BOUND(n, 2 * PHIWATCH_CAPTURE_BYTES - 1);
	if (bpf_probe_read_user(&s->e.data[off], n, ubuf)) {
		drop_count(PW_DROP_READ_FAULT);
		return 0;
	}
	s->e.cap_len = off + n;
	return n;
}

/* Overload protection: past this fill of the ring, data events go out
 * without their payload (the byte counts keep the streams in sync), so the
 * metadata that says who, which connection and how many bytes still fits. */
const volatile __u64 shed_payload_bytes = 12 * 1024 * 1024;

/* Sends the event, numbered in its socket's byte and event sequence. The
 * sequence advances whether or not the event gets through, so userspace
 * sees every loss as an exact gap. */
static __always_inline void data_send(struct scratch *s, struct sock_state *ss)
{
	__u64 n = s->e.cap_len;
	__u32 d = s->e.dir & 1;

	s->e.sk = ss->sk;
	s->e.flags |= (ss->role << PW_F_ROLE_SHIFT) & PW_F_ROLE_MASK;
	s->e.offset = __sync_fetch_and_add(&ss->off[d], (__u64)s->e.total_len);
	s->e.seq = __sync_fetch_and_add(&ss->seq[d], 1);
	s->e.seq_other = ss->seq[d ^ 1];

	if (n && bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= shed_payload_bytes) {
		drop_count(PW_DROP_PAYLOAD_SHED);
		n = 0;
		s->e.cap_len = 0;
	}
	VERIFIER_BOUND(n, 2 * PHIWATCH_CAPTURE_BYTES - 1); /* cap_len <= CAP */
	s->e.h.size = sizeof(struct pw_data) + n;
	if (bpf_ringbuf_output(&events, &s->e, sizeof(struct pw_data) + n, rb_flags())) {
		__u32 slot = (ss->role < 3 ? ss->role : 0) * 2 + d;
		__u64 *c = bpf_map_lookup_elem(&lost_by_role, &slot);
		drop_count(PW_DROP_RINGBUF_DATA);
		if (c)
			*c += 1;
	}
}

#endif
