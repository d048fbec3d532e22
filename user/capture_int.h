/* capture_int.h — state shared by capture.c and capture_tls.c; not for other modules. */
#ifndef PHIWATCH_CAPTURE_INT_H
#define PHIWATCH_CAPTURE_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "capture.h"

struct phiwatch_bpf;
struct bpf_link;
struct tls_lib;
struct tls_proc;
struct exe_seen;
struct announced;

struct capture {
	struct capture_opts o;
	struct phiwatch_bpf *skel;
	struct ring_buffer *rb;
	struct bpf_link **links;
	unsigned nlinks;
	capture_rec_fn fn;
	void *ctx;
	int64_t realtime_offset;
	struct announced *announced;   /* pids with a PW_EV_PROC sent */
	struct tls_lib *libs;          /* by (dev, ino) */
	struct tls_proc *tprocs;       /* by pid */
	struct exe_seen *exes;         /* executables already checked for built-in OpenSSL */
	uint64_t drops_last[PW_DROP__MAX];
	uint64_t last_tick_ms;
	uint64_t last_tls_tick_ms;
	struct capture_stats st;
};

uint64_t capture_now_ms(void);
/* Detaches links concurrently (each detach waits out an RCU grace period). */
void capture_destroy_links(struct bpf_link **links, unsigned n);

/* capture_tls.c */
/* Hooks the system's libssl (found by the dynamic loader) and every
 * OpenSSL mapped by a running process. Returns the number of files hooked. */
/* pid's name from /proc (at most n - 1 bytes, NUL-terminated); false when it cannot be read. */
bool proc_comm(uint32_t pid, char *out, size_t n);
/* True for a process name the config excludes (capture.exclude_comms). */
bool comm_skipped(const struct capture *c, const char *comm);
int tls_attach_initial(struct capture *c);
/* A program started: scan now and a few times later (libraries load after exec). */
void tls_on_exec(struct capture *c, uint32_t pid, const char *comm);
void tls_on_exit(struct capture *c, uint32_t pid);
/* The executable path seen when pid was last scanned, NULL if never. */
const char *tls_proc_exe(struct capture *c, uint32_t pid);
/* The kernel saw TLS records on a socket of pid outside any hooked SSL call. */
void tls_on_tls_seen(struct capture *c, uint32_t pid, int fd);
/* Plaintext of pid came through the OpenSSL hooks. */
void tls_on_tls_data(struct capture *c, uint32_t pid);
/* Periodic: pending rescans. */
void tls_tick(struct capture *c, uint64_t now_ms);
void tls_free(struct capture *c);

#endif
