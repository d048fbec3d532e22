#!/usr/bin/env bash
# run_all.sh — every test phiwatch has, one summary line at the end.
# Unit tests (plain and ASan+UBSan), fuzz smoke runs, integration tests.
set -u
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
FUZZ_SMOKE=${FUZZ_SMOKE:-10}
pass=0 fail=0 skip=0
failed=()

note_fail() { fail=$((fail + ${2:-1})); failed+=("$1"); }

echo "== unit tests (cmocka; plain and ASan+UBSan)"
for t in "$BUILD"/tests/test_* "$BUILD"/tests-asan/test_*; do
	[ -x "$t" ] || continue
	out=$("$t" 2>&1); rc=$?
	p=$(grep -oE '\[  PASSED  \] [0-9]+' <<<"$out" | grep -oE '[0-9]+$' | tail -1)
	f=$(grep -oE '\[  FAILED  \] [0-9]+' <<<"$out" | grep -oE '[0-9]+$' | tail -1)
	pass=$((pass + ${p:-0}))
	if [ "$rc" -ne 0 ] || [ -n "$f" ]; then
		echo "$out" | grep -vE '^\[ +(RUN|OK) +\]' | tail -30
		note_fail "$t" "${f:-1}"
		echo "FAIL $t"
	else
		echo "ok   $t (${p:-0} tests)"
	fi
done

echo "== fuzz smoke (${FUZZ_SMOKE}s each)"
for f in "$BUILD"/fuzz/fuzz_*; do
	[ -x "$f" ] || continue
	name=$(basename "$f")
	seeds=$PWD/tests/data/${name#fuzz_}
	dict=$PWD/tests/fuzz/${name#fuzz_}.dict
	work=$(mktemp -d)
	args=(-max_total_time="$FUZZ_SMOKE" -print_final_stats=0 "$work")
	[ -f "$dict" ] && args=(-dict="$dict" "${args[@]}")
	[ -d "$seeds" ] && args+=("$seeds")
	if (cd "$work" && "$OLDPWD/$f" "${args[@]}") >"$work.log" 2>&1; then
		pass=$((pass + 1)); echo "ok   $name"
	else
		tail -40 "$work.log"; note_fail "$name"; echo "FAIL $name (log above; crash input in $work)"
	fi
	rm -rf "$work" "$work.log"
done

echo "== integration tests (root + BPF)"
out=$("$PYTHON" tests/integration/run.py 2>&1); rc=$?
echo "$out"
line=$(grep -E '^[0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$' <<<"$out" | tail -1)
if [ -n "$line" ]; then
	read -r ip _ if _ is _ <<<"$line"
	pass=$((pass + ip)); skip=$((skip + is))
	[ "$if" -gt 0 ] && note_fail "integration" "$if"
fi
if [ "$rc" -ne 0 ] && [ -z "$line" ]; then note_fail "integration (runner exited $rc)"; fi

echo
[ ${#failed[@]} -gt 0 ] && printf 'failed: %s\n' "${failed[@]}"
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
