/* events.h — the only ABI between the BPF programs (bpf/) and userspace (user/).
 * Also the on-disk record format of `run --record` / `replay`: change a layout,
 * bump PHIWATCH_ABI_VERSION. Fixed-width types, explicit padding, sizes asserted.
 */
#ifndef PHIWATCH_EVENTS_H
#define PHIWATCH_EVENTS_H

#ifdef __bpf__
/* vmlinux.h provides __u8 ... __u64 */
#else
#include <linux/types.h>
#endif

#define PHIWATCH_ABI_VERSION 2

/* Most payload bytes copied per call; a power of two (masking keeps the
 * verifier's bounds simple). The event still says how many bytes moved. */
#ifndef PHIWATCH_CAPTURE_BYTES
#define PHIWATCH_CAPTURE_BYTES 4096
#endif
#if (PHIWATCH_CAPTURE_BYTES & (PHIWATCH_CAPTURE_BYTES - 1)) != 0
#error "PHIWATCH_CAPTURE_BYTES must be a power of two"
#endif

#define PHIWATCH_COMM_LEN 16
#define PW_PATH_MAX_K 256

enum pw_event_type {
	PW_EV_DATA = 1,      /* payload of one syscall or one SSL call */
	PW_EV_CONN = 2,      /* a followed socket: role and addresses */
	PW_EV_CLOSE = 3,     /* close(fd) of a followed socket */
	PW_EV_EXEC = 4,      /* sched_process_exec (struct pw_exec) */
	PW_EV_EXIT = 5,      /* sched_process_exit of a thread-group leader */
	PW_EV_TLS = 6,       /* a socket carries TLS records outside any hooked SSL call */
	/* Written by userspace into --record files only, never by the kernel. */
	PW_EV_PROC = 100,    /* process identity learned from /proc */
	PW_EV_DROPS = 101,   /* kernel drop counters changed */
	PW_EV_TICK = 102,    /* one second passed (drives time-based work in replays too) */
	PW_EV_NOTLS = 103,   /* a process speaks TLS phiwatch cannot hook (struct pw_tls) */
};

enum pw_dir {
	PW_DIR_INGRESS = 0,  /* bytes the process read */
	PW_DIR_EGRESS = 1,   /* bytes the process wrote */
};

enum pw_role {
	PW_ROLE_UNKNOWN = 0, /* socket predates the agent */
	PW_ROLE_SERVER = 1,  /* accepted */
	PW_ROLE_CLIENT = 2,  /* connected */
};

/* pw_data.flags */
#define PW_F_TLS 0x1        /* plaintext seen through the SSL uprobes */
/* bits 1-2: the socket's enum pw_role, so a connection whose PW_EV_CONN was lost still knows which direction
 * carries requests from its first event, even one whose payload was shed (0 in captures made before it) */
#define PW_F_ROLE_SHIFT 1
#define PW_F_ROLE_MASK (0x3 << PW_F_ROLE_SHIFT)

/* Reasons for lost events, indices into the per-CPU `drops` map. */
enum pw_drop {
	PW_DROP_RINGBUF_DATA = 0,  /* ring buffer full: a data event lost */
	PW_DROP_RINGBUF_META,      /* ring buffer full: conn/close/exec/exit/tls lost */
	PW_DROP_ARGS_FULL,         /* per-thread argument map full */
	PW_DROP_SOCKS_FULL,        /* socket map full: a connection not followed */
	PW_DROP_READ_FAULT,        /* payload could not be read from user memory */
	PW_DROP_IOV_LIMIT,         /* iovecs past the loop bound: bytes reported as uncaptured */
	PW_DROP_TLS_NO_FD,         /* SSL call whose socket could not be found */
	PW_DROP_PAYLOAD_SHED,      /* ring nearly full: payload dropped, event kept (a counted gap) */
	PW_DROP__MAX,
};

struct pw_hdr {
	__u16 type;          /* enum pw_event_type */
	__u16 size;          /* bytes of this event including the header and payload */
	__u32 pid;           /* tgid */
	__u32 tid;
	__u32 _pad;
	__u64 ts_ns;         /* CLOCK_MONOTONIC (bpf_ktime_get_ns) */
};

struct pw_data {
	struct pw_hdr h;
	__s32 fd;
	__u8 dir;            /* enum pw_dir */
	__u8 flags;          /* PW_F_* */
	__u16 _pad;
	__u32 total_len;     /* bytes the call really moved */
	__u32 cap_len;       /* bytes copied into data[] (<= total_len, <= CAPTURE_BYTES) */
	__u64 ssl;           /* SSL* for TLS events, 0 otherwise */
	__u64 sk;            /* socket cookie: tells a reused fd's new socket from the old one */
	__u64 offset;        /* bytes this socket moved in this direction before this call,
	                      * counted even for events that were lost: a jump is an exact gap */
	__u32 seq;           /* data events this socket had in this direction before this one */
	__u32 seq_other;     /* data events in the other direction so far: losses there show up here first */
	char comm[PHIWATCH_COMM_LEN];
	__u8 data[];         /* cap_len bytes */
};

struct pw_conn {
	struct pw_hdr h;
	__s32 fd;
	__u8 role;           /* enum pw_role */
	__u8 family;         /* AF_INET / AF_INET6 */
	__u16 lport;         /* local port, host order */
	__u16 rport;         /* remote port, host order */
	__u16 _pad;
	__u32 _pad2;
	__u64 sk;            /* socket cookie, as in pw_data */
	__u8 laddr[16];      /* IPv4 in the first 4 bytes */
	__u8 raddr[16];
	char comm[PHIWATCH_COMM_LEN];
};

struct pw_close {
	struct pw_hdr h;
	__s32 fd;
	__u32 _pad;
	__u32 seq[2];        /* data events per direction over the socket's life: losses at the end */
};

struct pw_proc_ev {          /* PW_EV_EXIT */
	struct pw_hdr h;
	char comm[PHIWATCH_COMM_LEN];
};

struct pw_exec {
	struct pw_hdr h;
	char comm[PHIWATCH_COMM_LEN];
	char filename[PW_PATH_MAX_K];  /* as passed to execve, NUL-terminated, may be cut */
};

struct pw_tls {
	struct pw_hdr h;
	__s32 fd;
	__u32 _pad;
};

/* Userspace-only records (replay input). */
#define PW_PATH_MAX 256
struct pw_proc_info {
	struct pw_hdr h;
	char comm[PHIWATCH_COMM_LEN];
	char exe[PW_PATH_MAX];   /* NUL-terminated, may be cut */
};

/* Data events the ring could not take, by the socket's role and the event's
 * direction: index role * 2 + dir (enum pw_role, enum pw_dir). With the
 * payloads shed at message starts (counted by userspace) this accounts for
 * every call: a server's lost requests are [PW_ROLE_SERVER * 2 + PW_DIR_INGRESS]. */
#define PW_LOST_SLOTS 6

struct pw_drops_rec {
	struct pw_hdr h;
	__u64 drops[PW_DROP__MAX + 1]; /* cumulative per reason; last slot unused */
	__u64 lost[PW_LOST_SLOTS];     /* cumulative lost data events by role and direction */
};

_Static_assert(sizeof(struct pw_hdr) == 24, "pw_hdr layout");
_Static_assert(sizeof(struct pw_data) == 88, "pw_data layout");
_Static_assert(sizeof(struct pw_conn) == 96, "pw_conn layout");
_Static_assert(sizeof(struct pw_close) == 40, "pw_close layout");
_Static_assert(sizeof(struct pw_proc_ev) == 40, "pw_proc_ev layout");
_Static_assert(sizeof(struct pw_exec) == 296, "pw_exec layout");
_Static_assert(sizeof(struct pw_tls) == 32, "pw_tls layout");
_Static_assert(sizeof(struct pw_proc_info) == 296, "pw_proc_info layout");

#endif
