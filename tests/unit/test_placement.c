/* test_placement.c — probe placement: the decoder on known byte sequences, and the real system libssl. */
#include <dlfcn.h>
#include <link.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "placement.h"

static void test_entry_skips_endbr64(void **state)
{
	(void)state;
	/* endbr64; push %r13 */
	const uint8_t code[] = { 0xf3, 0x0f, 0x1e, 0xfa, 0x41, 0x55, 0x90, 0x90 };
	bool emu;
	char insn[48];
	assert_int_equal(placement_entry(code, sizeof(code), 0x1000, &emu, insn, sizeof(insn)), 4);
	assert_true(emu);
	assert_string_equal(insn, "push r13");
}

static void test_entry_single_step(void **state)
{
	(void)state;
	/* sub $0x18,%rsp: the kernel single-steps it */
	const uint8_t code[] = { 0x48, 0x83, 0xec, 0x18, 0x90 };
	bool emu;
	char insn[48];
	assert_int_equal(placement_entry(code, sizeof(code), 0x1000, &emu, insn, sizeof(insn)), 0);
	assert_false(emu);
	/* push %rbx, nop, call rel32, jmp rel8 are emulated */
	const uint8_t push[] = { 0x53 }, nop[] = { 0x90 }, call[] = { 0xe8, 0, 0, 0, 0 }, jmp[] = { 0xeb, 0x10 };
	placement_entry(push, sizeof(push), 0, &emu, insn, sizeof(insn));
	assert_true(emu);
	placement_entry(nop, sizeof(nop), 0, &emu, insn, sizeof(insn));
	assert_true(emu);
	placement_entry(call, sizeof(call), 0, &emu, insn, sizeof(insn));
	assert_true(emu);
	placement_entry(jmp, sizeof(jmp), 0, &emu, insn, sizeof(insn));
	assert_true(emu);
}

static void test_first_call(void **state)
{
	(void)state;
	/* Debian's SSL_read shape: sub; test; js fwd; mov %rsp,%rcx; movslq; call rel32 */
	const uint8_t wrapper[] = {
		0x48, 0x83, 0xec, 0x18,       /* sub $0x18,%rsp */
		0x85, 0xd2,                   /* test %edx,%edx */
		0x78, 0x10,                   /* js +0x10 (forward) */
		0x48, 0x89, 0xe1,             /* mov %rsp,%rcx */
		0x48, 0x63, 0xd2,             /* movslq %edx,%rdx */
		0xe8, 0x00, 0x01, 0x00, 0x00, /* call +0x100 */
		0xc3,
	};
	bool kept;
	uint64_t t = placement_first_call(wrapper, sizeof(wrapper), 0x1000, &kept);
	assert_int_equal(t, 0x1000 + 19 + 0x100);
	assert_false(kept); /* rcx and rdx were written: not a pass-through */

	/* SSL_read_ex shape: sub $8; call: arguments passed through */
	const uint8_t ex[] = { 0x48, 0x83, 0xec, 0x08, 0xe8, 0x10, 0x00, 0x00, 0x00, 0xc3 };
	t = placement_first_call(ex, sizeof(ex), 0x2000, &kept);
	assert_int_equal(t, 0x2000 + 9 + 0x10);
	assert_true(kept);

	/* a jmp before any call: not a straight-line wrapper */
	const uint8_t jumpy[] = { 0xeb, 0x05, 0xe8, 0, 0, 0, 0 };
	assert_int_equal(placement_first_call(jumpy, sizeof(jumpy), 0x3000, &kept), 0);
	/* an indirect call does not count */
	const uint8_t ind[] = { 0xff, 0xd0, 0xc3 };
	assert_int_equal(placement_first_call(ind, sizeof(ind), 0x3000, &kept), 0);
}

/* The real thing: every probe this host's libssl gets sits on an
 * instruction the kernel emulates, or the fallback says it does not. */
static void test_system_libssl(void **state)
{
	(void)state;
	void *h = dlopen("libssl.so.3", RTLD_LAZY | RTLD_LOCAL);
	struct link_map *lm = NULL;
	if (!h) {
		fail_msg("libssl.so.3 not loadable: %s", dlerror());
	}
	assert_int_equal(dlinfo(h, RTLD_DI_LINKMAP, &lm), 0);
	struct ssl_placement pl;
	char err[256];
	assert_int_equal(placement_find(lm->l_name, &pl, err, sizeof(err)), 0);
	assert_true(pl.nread >= 1 && pl.nwrite >= 1);
	if (pl.internal) {
		/* one probe per side, on the shared _ex-shaped function */
		assert_int_equal(pl.nread, 1);
		assert_int_equal(pl.nwrite, 1);
		assert_true(pl.read[0].ex && pl.write[0].ex);
		assert_true(pl.read[0].emulated && pl.write[0].emulated);
		assert_true(pl.read[0].offset != pl.write[0].offset);
	}
	printf("libssl %s: read %s @0x%llx `%s`, write %s @0x%llx `%s`\n", lm->l_name, pl.read[0].how,
	       (unsigned long long)pl.read[0].offset, pl.read[0].insn, pl.write[0].how,
	       (unsigned long long)pl.write[0].offset, pl.write[0].insn);
	dlclose(h);
}

static void test_not_elf(void **state)
{
	(void)state;
	struct ssl_placement pl;
	char err[256];
	assert_true(placement_find("/proc/self/status", &pl, err, sizeof(err)) < 0);
	assert_true(placement_find("/nonexistent", &pl, err, sizeof(err)) < 0);
	assert_non_null(strstr(err, "/nonexistent"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_entry_skips_endbr64),
		cmocka_unit_test(test_entry_single_step),
		cmocka_unit_test(test_first_call),
		cmocka_unit_test(test_system_libssl),
		cmocka_unit_test(test_not_elf),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
