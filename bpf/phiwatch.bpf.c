/* phiwatch.bpf.c — the one BPF object: sockets (sock.bpf.c), OpenSSL (tls.bpf.c), processes (proc.bpf.c).
 * One compilation unit so that maps and read-only configuration are shared by
 * every program without extern-map linking; each part stays in its own file.
 */
#include "common.bpf.h"
#include "sock.bpf.c"
#include "tls.bpf.c"
#include "proc.bpf.c"
