/* capture.h — the live source of records: loads and attaches the BPF programs, reads the ring buffer.
 * With capture_tls.c, the only code that touches libbpf. Emits records in
 * the order the pipeline must see them, adding PW_EV_PROC (process identity
 * from /proc) and PW_EV_DROPS (kernel drop counters) of its own.
 */
#ifndef PHIWATCH_CAPTURE_H
#define PHIWATCH_CAPTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "phiwatch/events.h"

struct capture_opts {
	size_t ringbuf_bytes;     /* power of two, >= page size */
	unsigned poll_ms;         /* longest delay before buffered events are read */
	size_t wakeup_bytes;      /* wake the reader early when this much is waiting */
	bool floor;               /* benchmark floor: same hooks, programs return at once */
	const uint16_t *ports;    /* follow only these ports (NULL/0: all) */
	size_t nports;
	const char (*skip_comms)[16];  /* never trace processes with these names */
	size_t nskip_comms;
};

struct capture_stats {
	uint64_t ring_events;     /* records read from the ring buffer */
	uint64_t bad_events;      /* too short to carry a header: counted, dropped */
	uint64_t drops[PW_DROP__MAX];
	unsigned tracepoints;
	unsigned tls_libs;        /* distinct OpenSSL files hooked */
	unsigned tls_uninstrumented;  /* processes seen talking TLS we cannot hook */
};

typedef void (*capture_rec_fn)(void *ctx, const void *rec, size_t len);

struct capture;

/* Loads and attaches everything; NULL with errno and a logged reason on failure. */
struct capture *capture__open(const struct capture_opts *o, capture_rec_fn fn, void *ctx);
/* realtime - monotonic at start: converts event timestamps to wall time. */
int64_t capture__realtime_offset(const struct capture *c);
/* Waits at most poll_ms, delivers what arrived, runs periodic work.
 * Returns 0 or -errno (-EINTR is not an error). */
int capture__poll(struct capture *c);
/* Delivers everything still in the ring buffer and the final drop counters. */
void capture__drain(struct capture *c);
void capture__stats(const struct capture *c, struct capture_stats *out);
/* Forgets the kernel's state for (pid, fd): the socket is learned and
 * announced again on its next call. Matches conn_evict_fn. */
void capture__forget_socket(void *c, uint32_t pid, int32_t fd);
/* Replaces the followed ports (SIGHUP). -EOPNOTSUPP when filtering would be
 * switched on or off: that is fixed at load and needs a restart. */
int capture__set_ports(struct capture *c, const uint16_t *ports, size_t n);
/* What capture knows of pid's TLS: the OpenSSL it hooked for it ("" none),
 * whether it was seen speaking TLS phiwatch could not see. Returns whether
 * the process was ever looked at. */
bool capture__proc_tls(struct capture *c, uint32_t pid, char *libssl, size_t n, bool *instrumented,
		       bool *uninstrumented_seen);
void capture__close(struct capture *c);   /* detaches all links; NULL ok */

#endif
