# phiwatch — build, test, run. `make V=1` shows commands.
.DELETE_ON_ERROR:
.SUFFIXES:

BUILD      ?= build
prefix     ?= /usr/local
DESTDIR    ?=
CC         ?= cc
CLANG      ?= clang
BPFTOOL    ?= bpftool
PYTHON     ?= /usr/bin/python3
ARCH       := $(shell uname -m | sed 's/x86_64/x86/;s/aarch64/arm64/')
VERSION    := 0.1.0

ifeq ($(V),1)
Q :=
msg = @true
else
Q := @
msg = @printf '  %-8s %s\n' "$(1)" "$(2)";
endif

CFLAGS     ?= -O2 -g
WARN       := -Wall -Wextra -Werror -Wno-missing-field-initializers
CPPFLAGS   := -Iinclude -Iuser -I$(BUILD) -D_GNU_SOURCE -DPHIWATCH_VERSION='"$(VERSION)"'
ALL_CFLAGS := -std=gnu11 $(WARN) $(CFLAGS) $(CPPFLAGS) -MMD -MP
CORE_LIBS  := -lcjson -lcrypto -lz -ldeflate -lm
HOST_LIBS  := -lelf -lcapstone -lcap
LDLIBS     := -lbpf -ldl -lpthread $(HOST_LIBS) $(CORE_LIBS)
SAN        := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

BPF_SRC    := bpf/phiwatch.bpf.c
BPF_DEPS   := $(wildcard bpf/*.c bpf/*.h) include/phiwatch/events.h
BPF_OBJ    := $(BUILD)/phiwatch.bpf.o
SKEL       := $(BUILD)/phiwatch.skel.h
VMLINUX    := $(BUILD)/vmlinux.h

# Pure userspace (no libbpf, no I/O beyond stdio): unit-tested and fuzzed.
# Agent-only: the command table, subcommands and the libbpf side.
AGENT_SRC  := user/main.c $(wildcard user/cmd_*.c) $(wildcard user/capture*.c)
# Host access (libelf, Capstone, libcap), no libbpf: unit-tested, not fuzzed.
HOST_SRC   := user/elfsym.c user/placement.c user/privs.c
# Everything else is the pure userspace pipeline: unit-tested and fuzzed.
CORE_SRC   := $(filter-out $(AGENT_SRC) $(HOST_SRC),$(wildcard user/*.c))
CORE_OBJ   := $(CORE_SRC:user/%.c=$(BUILD)/obj/%.o)
HOST_OBJ   := $(HOST_SRC:user/%.c=$(BUILD)/obj/%.o)
AGENT_OBJ  := $(AGENT_SRC:user/%.c=$(BUILD)/obj/%.o)
ASAN_CORE  := $(CORE_SRC:user/%.c=$(BUILD)/asan/%.o) $(HOST_SRC:user/%.c=$(BUILD)/asan/%.o)

UNIT_SRC   := $(wildcard tests/unit/test_*.c)
UNIT_BIN   := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
UNIT_ASAN  := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests-asan/%)
FUZZ_SRC   := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN   := $(FUZZ_SRC:tests/fuzz/%.c=$(BUILD)/fuzz/%)
FUZZ_TIME  ?= 60

DEPS_APT   := clang llvm make gcc pkg-config libbpf-dev bpftool libelf-dev zlib1g-dev libdeflate-dev libcjson-dev \
              libssl-dev libcmocka-dev uthash-dev libcapstone-dev libcap-dev libclang-rt-14-dev nginx curl wrk rsyslog tshark \
              python3 openssl procps iproute2 hyperfine bpftrace systemd man-db groff-base

.PHONY: all deps run test unit integration fuzz fuzz-smoke bench install clean

all: $(BUILD)/phiwatch

deps:
	@missing=""; for p in $(DEPS_APT); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	else echo "all dependencies present"; fi

$(BUILD) $(BUILD)/obj $(BUILD)/asan $(BUILD)/tests $(BUILD)/tests-asan $(BUILD)/fuzz:
	$(Q)mkdir -p $@

$(VMLINUX): | $(BUILD)
	$(call msg,GEN,$@)
	$(Q)$(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > $@

$(BPF_OBJ): $(BPF_DEPS) $(VMLINUX) | $(BUILD)
	$(call msg,BPF,$@)
	$(Q)$(CLANG) -g -O2 -target bpf -mcpu=v3 -D__TARGET_ARCH_$(ARCH) -Wall -Werror \
		-Wno-gnu-variable-sized-type-not-at-end -Wno-missing-field-initializers \
		-I$(BUILD) -Iinclude -Ibpf -c $(BPF_SRC) -o $@

$(SKEL): $(BPF_OBJ)
	$(call msg,SKEL,$@)
	$(Q)$(BPFTOOL) gen skeleton $< name phiwatch_bpf > $@

$(BUILD)/obj/%.o: user/%.c | $(BUILD)/obj
	$(call msg,CC,$@)
	$(Q)$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/asan/%.o: user/%.c | $(BUILD)/asan
	$(call msg,CC-ASAN,$@)
	$(Q)$(CC) $(ALL_CFLAGS) $(SAN) -c $< -o $@

# Only the capture files include the skeleton.
$(BUILD)/obj/capture.o $(BUILD)/obj/capture_tls.o: $(SKEL)

$(BUILD)/phiwatch: $(CORE_OBJ) $(HOST_OBJ) $(AGENT_OBJ)
	$(call msg,LINK,$@)
	$(Q)$(CC) $(CFLAGS) -o $@ $(filter %.c %.o,$^) $(LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c $(CORE_OBJ) $(HOST_OBJ) | $(BUILD)/tests
	$(call msg,TEST,$@)
	$(Q)$(CC) $(ALL_CFLAGS) -o $@ $< $(filter %.o,$^) -lcmocka $(HOST_LIBS) $(CORE_LIBS) -ldl

$(BUILD)/tests-asan/%: tests/unit/%.c $(ASAN_CORE) | $(BUILD)/tests-asan
	$(call msg,TEST-ASAN,$@)
	$(Q)$(CC) $(ALL_CFLAGS) $(SAN) -o $@ $< $(filter %.o,$^) -lcmocka $(HOST_LIBS) $(CORE_LIBS) -ldl

# Test helper programs (tests/*.c): the audit crash test's writer.
$(BUILD)/tests/audit_driver: tests/audit_driver.c $(BUILD)/obj/cmd_audit.o $(CORE_OBJ) | $(BUILD)/tests
	$(call msg,TEST,$@)
	$(Q)$(CC) $(ALL_CFLAGS) -o $@ $< $(filter %.o,$^) $(CORE_LIBS)

$(BUILD)/fuzz/%: tests/fuzz/%.c $(CORE_SRC) | $(BUILD)/fuzz
	$(call msg,FUZZ,$@)
	$(Q)$(CLANG) -std=gnu11 -g -O1 $(CPPFLAGS) -fsanitize=fuzzer,address,undefined -o $@ $< $(CORE_SRC) $(CORE_LIBS)

BENCH_C    := $(wildcard tests/bench/bench_*.c)
BENCH_BIN  := $(BENCH_C:tests/bench/%.c=$(BUILD)/bench/%)

$(BUILD)/bench:
	$(Q)mkdir -p $@

$(BUILD)/bench/%: tests/bench/%.c $(CORE_OBJ) $(HOST_OBJ) | $(BUILD)/bench
	$(call msg,BENCH,$@)
	$(Q)$(CC) $(ALL_CFLAGS) -o $@ $< $(filter %.o,$^) $(HOST_LIBS) $(CORE_LIBS)

# Benchmarks print ratios measured side by side; they are not tests.
bench: deps
	$(Q)$(MAKE) --no-print-directory all $(BENCH_BIN)
	$(Q)for b in $(BENCH_BIN); do echo "== $$(basename $$b)"; $$b || exit 1; done
	$(Q)BUILD=$(BUILD) $(PYTHON) tests/bench/bench_http.py

run: all
	./$(BUILD)/phiwatch run

unit: $(UNIT_BIN) $(UNIT_ASAN)

integration: all

# Unit tests (plain and ASan+UBSan), a fuzz smoke run, then the integration
# suite (root + BPF; under CI=true a skip is a failure). One summary line.
test: deps
	$(Q)$(MAKE) --no-print-directory all unit $(FUZZ_BIN) $(BUILD)/tests/audit_driver
	$(Q)BUILD=$(BUILD) PYTHON=$(PYTHON) FUZZ_SMOKE=$${FUZZ_SMOKE:-5} tests/run_all.sh

fuzz: $(FUZZ_BIN)
	$(Q)for f in $(FUZZ_BIN); do \
	  n=$$(basename $$f); corpus=$(BUILD)/corpus/$$n; mkdir -p $$corpus; \
	  seeds=tests/data/$${n#fuzz_}; dict=""; [ -f tests/fuzz/$${n#fuzz_}.dict ] && dict=-dict=tests/fuzz/$${n#fuzz_}.dict; \
	  echo "== $$n for $(FUZZ_TIME)s"; \
	  $$f $$dict -max_total_time=$(FUZZ_TIME) -print_final_stats=1 $$corpus $$( [ -d $$seeds ] && echo $$seeds ) || exit 1; \
	done

# Everything under $(DESTDIR): the binary in $(prefix)/sbin, the default configuration (0600; an existing one is
# kept), the systemd unit (ExecStart pointed at the installed binary; /lib/systemd/system whatever the prefix, where
# Debian keeps packaged units) and phiwatch(8). State and runtime directories are made by the unit at start.
UNITDIR    ?= /lib/systemd/system
install: all
	$(call msg,INSTALL,$(DESTDIR)$(prefix)/sbin/phiwatch)
	$(Q)install -d -m 0755 $(DESTDIR)$(prefix)/sbin $(DESTDIR)/etc/phiwatch $(DESTDIR)$(UNITDIR) \
		$(DESTDIR)$(prefix)/share/man/man8
	$(Q)install -m 0755 $(BUILD)/phiwatch $(DESTDIR)$(prefix)/sbin/phiwatch
	$(Q)if [ -e $(DESTDIR)/etc/phiwatch/phiwatch.json ]; then \
	  echo "  keeping $(DESTDIR)/etc/phiwatch/phiwatch.json (defaults: dist/phiwatch.json)"; \
	else install -m 0600 dist/phiwatch.json $(DESTDIR)/etc/phiwatch/phiwatch.json; fi
	$(Q)sed 's|@SBINDIR@|$(prefix)/sbin|g' dist/phiwatch.service > $(DESTDIR)$(UNITDIR)/phiwatch.service
	$(Q)chmod 0644 $(DESTDIR)$(UNITDIR)/phiwatch.service
	$(Q)sed '/^\.TH /s/"phiwatch [0-9.]*"/"phiwatch $(VERSION)"/' dist/phiwatch.8 \
		> $(DESTDIR)$(prefix)/share/man/man8/phiwatch.8
	$(Q)gzip -9nf $(DESTDIR)$(prefix)/share/man/man8/phiwatch.8
	$(Q)chmod 0644 $(DESTDIR)$(prefix)/share/man/man8/phiwatch.8.gz

# A local HTTPS FHIR-like API (nginx), three users and a scraper, the agent and its alerts, in under a minute (root).
.PHONY: demo
demo: all
	$(Q)BUILD=$(BUILD) demo/run.sh

clean:
	rm -rf $(BUILD)

-include $(wildcard $(BUILD)/obj/*.d $(BUILD)/asan/*.d $(BUILD)/tests/*.d $(BUILD)/tests-asan/*.d)
