/* placement.h — where to put the OpenSSL probes so a hit costs an emulated instruction, not a single-step.
 * A uprobe on an instruction the kernel emulates (push, nop, call, jmp) costs
 * ~0.5 µs here; on one it must single-step out of line (Debian's SSL_read
 * starts with `sub $0x18,%rsp`; CET builds with endbr64) ~10 µs. SSL_read and
 * SSL_read_ex are thin wrappers around one internal function with the _ex
 * signature (ssl, buf, num, size_t *readbytes) that starts with `push`; the
 * write side has the same shape. We decode the wrappers (Capstone), follow
 * their direct call when both agree on the target, and fall back to the
 * exported entry points (after a leading endbr64) otherwise.
 * Not libbpf: this only reads the ELF file.
 */
#ifndef PHIWATCH_PLACEMENT_H
#define PHIWATCH_PLACEMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct place_target {
	uint64_t offset;        /* file offset of the probed instruction */
	bool ex;                /* (ssl, buf, num, size_t *nbytes), success when return > 0 */
	bool emulated;          /* the kernel emulates the instruction at offset */
	char insn[48];          /* the instruction, for the log */
	char how[64];           /* "internal function called by SSL_read/SSL_read_ex" ... */
};

struct ssl_placement {
	struct place_target read[2], write[2];
	size_t nread, nwrite;
	bool internal;          /* both sides use the shared internal functions */
};

/* Analyses an ELF file that defines SSL_read and SSL_write (libssl or an
 * executable with OpenSSL built in). Returns 0, or -errno with err set. */
int placement_find(const char *path, struct ssl_placement *out, char *err, size_t errlen);

/* Decoding core, exposed for tests: code[0..len) is a function at vaddr.
 * Skips endbr64; *first_emulated tells whether the instruction there is
 * emulated by the x86 uprobe code; returns its offset from vaddr. */
size_t placement_entry(const uint8_t *code, size_t len, uint64_t vaddr, bool *first_emulated, char *insn,
		       size_t insnlen);
/* The target of the first direct call in a short straight-line prologue
 * (forward conditional branches allowed, stops at ret/jmp/indirect calls),
 * 0 if none. *args_kept: rdi, rsi, rdx, rcx not written before the call. */
uint64_t placement_first_call(const uint8_t *code, size_t len, uint64_t vaddr, bool *args_kept);

#endif
