/* placement.c — OpenSSL probe placement by decoding function prologues (see placement.h). */
#include "placement.h"

#include <capstone/capstone.h>
#include <errno.h>
#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define PROLOGUE_BYTES 96
#define PROLOGUE_INSNS 24

static bool is_endbr64(const uint8_t *c, size_t len)
{
	return len >= 4 && c[0] == 0xf3 && c[1] == 0x0f && c[2] == 0x1e && c[3] == 0xfa;
}

/* What arch/x86/kernel/uprobes.c emulates instead of single-stepping:
 * push of a general register, nops, call rel32, jmp rel8/rel32, jcc. */
static bool kernel_emulates(const cs_insn *in)
{
	const uint8_t *b = in->bytes;
	size_t n = in->size;

	if (n == 1 && b[0] >= 0x50 && b[0] <= 0x57)
		return true;                                  /* push %rax..%rdi */
	if (n == 2 && b[0] == 0x41 && b[1] >= 0x50 && b[1] <= 0x57)
		return true;                                  /* push %r8..%r15 */
	if (in->id == X86_INS_NOP)
		return true;
	if (n == 5 && (b[0] == 0xe8 || b[0] == 0xe9))
		return true;                                  /* call/jmp rel32 */
	if (n == 2 && b[0] == 0xeb)
		return true;                                  /* jmp rel8 */
	return false;
}

static csh open_cs(void)
{
	csh h;

	if (cs_open(CS_ARCH_X86, CS_MODE_64, &h) != CS_ERR_OK)
		return 0;
	cs_option(h, CS_OPT_DETAIL, CS_OPT_ON);
	return h;
}

size_t placement_entry(const uint8_t *code, size_t len, uint64_t vaddr, bool *first_emulated, char *insn,
		       size_t insnlen)
{
	size_t off = is_endbr64(code, len) ? 4 : 0;
	csh h = open_cs();
	cs_insn *in = NULL;

	*first_emulated = false;
	if (insnlen)
		insn[0] = '\0';
	if (!h)
		return off;
	if (cs_disasm(h, code + off, len - off, vaddr + off, 1, &in) == 1) {
		*first_emulated = kernel_emulates(in);
		if (insnlen)
			snprintf(insn, insnlen, "%s %s", in->mnemonic, in->op_str);
		cs_free(in, 1);
	}
	cs_close(&h);
	return off;
}

static bool writes_arg_reg(csh h, const cs_insn *in)
{
	cs_regs rr, wr;
	uint8_t nr = 0, nw = 0;

	if (cs_regs_access(h, in, rr, &nr, wr, &nw) != CS_ERR_OK)
		return true;
	for (uint8_t i = 0; i < nw; i++) {
		switch (wr[i]) {
		case X86_REG_RDI: case X86_REG_EDI:
		case X86_REG_RSI: case X86_REG_ESI:
		case X86_REG_RDX: case X86_REG_EDX:
		case X86_REG_RCX: case X86_REG_ECX:
			return true;
		}
	}
	return false;
}

uint64_t placement_first_call(const uint8_t *code, size_t len, uint64_t vaddr, bool *args_kept)
{
	csh h = open_cs();
	cs_insn *in = NULL;
	uint64_t target = 0;
	size_t n;

	*args_kept = true;
	if (!h)
		return 0;
	n = cs_disasm(h, code, len, vaddr, PROLOGUE_INSNS, &in);
	for (size_t i = 0; i < n; i++) {
		const cs_insn *x = &in[i];
		if (x->id == X86_INS_CALL) {
			const cs_x86 *d = &x->detail->x86;
			if (x->size == 5 && x->bytes[0] == 0xe8 && d->op_count == 1 && d->operands[0].type == X86_OP_IMM)
				target = (uint64_t)d->operands[0].imm;
			break;
		}
		if (x->id == X86_INS_RET || x->id == X86_INS_JMP || x->id == X86_INS_LJMP)
			break;
		/* jcc forward (error paths) keep the prologue straight enough */
		if (cs_insn_group(h, x, CS_GRP_JUMP)) {
			const cs_x86 *d = &x->detail->x86;
			if (d->op_count != 1 || d->operands[0].type != X86_OP_IMM || (uint64_t)d->operands[0].imm <= x->address)
				break;
			continue;
		}
		if (writes_arg_reg(h, x))
			*args_kept = false;
	}
	if (n)
		cs_free(in, n);
	cs_close(&h);
	return target;
}

/* ELF access: symbol vaddr and the bytes at a vaddr. */
struct elf_file {
	int fd;
	Elf *e;
};

static int elf_open(struct elf_file *f, const char *path)
{
	f->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (f->fd < 0)
		return -errno;
	if (elf_version(EV_CURRENT) == EV_NONE || !(f->e = elf_begin(f->fd, ELF_C_READ, NULL))) {
		close(f->fd);
		return -ENOEXEC;
	}
	return 0;
}

static void elf_close(struct elf_file *f)
{
	elf_end(f->e);
	close(f->fd);
}

static uint64_t elf_sym_vaddr(struct elf_file *f, const char *name)
{
	Elf_Scn *scn = NULL;
	uint64_t found = 0;

	while ((scn = elf_nextscn(f->e, scn))) {
		GElf_Shdr sh;
		if (!gelf_getshdr(scn, &sh) || (sh.sh_type != SHT_DYNSYM && sh.sh_type != SHT_SYMTAB) || !sh.sh_entsize)
			continue;
		Elf_Data *data = elf_getdata(scn, NULL);
		size_t n = sh.sh_size / sh.sh_entsize;
		for (size_t i = 0; data && i < n; i++) {
			GElf_Sym s;
			if (!gelf_getsym(data, (int)i, &s) || s.st_shndx == SHN_UNDEF || GELF_ST_TYPE(s.st_info) != STT_FUNC)
				continue;
			const char *nm = elf_strptr(f->e, sh.sh_link, s.st_name);
			if (!nm)
				continue;
			/* versioned names in .symtab: "SSL_read@@OPENSSL_3.0.0" */
			size_t l = strlen(name);
			if (strncmp(nm, name, l) == 0 && (nm[l] == '\0' || nm[l] == '@'))
				return s.st_value;
		}
	}
	return found;
}

/* vaddr -> file offset through the PT_LOAD segments. */
static int elf_vaddr_offset(struct elf_file *f, uint64_t vaddr, uint64_t *off)
{
	size_t n;

	if (elf_getphdrnum(f->e, &n))
		return -ENOEXEC;
	for (size_t i = 0; i < n; i++) {
		GElf_Phdr ph;
		if (!gelf_getphdr(f->e, (int)i, &ph) || ph.p_type != PT_LOAD)
			continue;
		if (vaddr >= ph.p_vaddr && vaddr < ph.p_vaddr + ph.p_filesz) {
			*off = vaddr - ph.p_vaddr + ph.p_offset;
			return 0;
		}
	}
	return -ENOENT;
}

static int elf_read_at(struct elf_file *f, uint64_t vaddr, uint8_t *buf, size_t len, uint64_t *off)
{
	int err = elf_vaddr_offset(f, vaddr, off);
	if (err)
		return err;
	ssize_t n = pread(f->fd, buf, len, (off_t)*off);
	if (n <= 0)
		return -EIO;
	if ((size_t)n < len)
		memset(buf + n, 0, len - (size_t)n);
	return 0;
}

/* Fills t for a probe at the function at vaddr (entry after endbr64). */
static int target_at(struct elf_file *f, uint64_t vaddr, bool ex, const char *how, struct place_target *t)
{
	uint8_t code[PROLOGUE_BYTES];
	uint64_t off;
	int err = elf_read_at(f, vaddr, code, sizeof(code), &off);

	if (err)
		return err;
	memset(t, 0, sizeof(*t));
	size_t skip = placement_entry(code, sizeof(code), vaddr, &t->emulated, t->insn, sizeof(t->insn));
	t->offset = off + skip;
	t->ex = ex;
	snprintf(t->how, sizeof(t->how), "%s", how);
	return 0;
}

/* SSL_x and SSL_x_ex both call the same function first thing, with
 * SSL_x_ex passing its arguments through: that function has the _ex
 * signature and serves both. Returns its vaddr or 0. */
static uint64_t shared_internal(struct elf_file *f, const char *plain, const char *ex)
{
	uint64_t a = elf_sym_vaddr(f, plain), b = elf_sym_vaddr(f, ex), off;
	uint8_t ca[PROLOGUE_BYTES], cb[PROLOGUE_BYTES];
	bool kept_a, kept_b;

	if (!a || !b || elf_read_at(f, a, ca, sizeof(ca), &off) || elf_read_at(f, b, cb, sizeof(cb), &off))
		return 0;
	uint64_t ta = placement_first_call(ca, sizeof(ca), a, &kept_a);
	uint64_t tb = placement_first_call(cb, sizeof(cb), b, &kept_b);
	(void)kept_a; /* SSL_x converts num and points nbytes at a local: fine */
	if (!ta || ta != tb || !kept_b)
		return 0;
	return ta;
}

static int place_side(struct elf_file *f, const char *plain, const char *ex, struct place_target *out, size_t *n,
		      bool *internal)
{
	char how[64];
	uint64_t t = shared_internal(f, plain, ex);
	int err;

	*n = 0;
	if (t) {
		snprintf(how, sizeof(how), "internal function called by %s and %s", plain, ex);
		err = target_at(f, t, true, how, &out[0]);
		if (!err && out[0].emulated) {
			*n = 1;
			*internal = true;
			return 0;
		}
	}
	/* Fallback: the exported entry points. */
	uint64_t a = elf_sym_vaddr(f, plain), b = elf_sym_vaddr(f, ex);
	if (!a)
		return -ENOENT;
	err = target_at(f, a, false, plain, &out[(*n)++]);
	if (err)
		return err;
	if (b && target_at(f, b, true, ex, &out[*n]) == 0)
		(*n)++;
	*internal = false;
	return 0;
}

int placement_find(const char *path, struct ssl_placement *out, char *err, size_t errlen)
{
	struct elf_file f;
	bool ri = false, wi = false;
	int rc = elf_open(&f, path);

	memset(out, 0, sizeof(*out));
	if (rc) {
		snprintf(err, errlen, "%s: %s", path, strerror(-rc));
		return rc;
	}
	rc = place_side(&f, "SSL_read", "SSL_read_ex", out->read, &out->nread, &ri);
	if (!rc)
		rc = place_side(&f, "SSL_write", "SSL_write_ex", out->write, &out->nwrite, &wi);
	if (rc)
		snprintf(err, errlen, "%s: SSL_read/SSL_write not found or unreadable: %s", path, strerror(-rc));
	out->internal = ri && wi;
	elf_close(&f);
	return rc;
}
