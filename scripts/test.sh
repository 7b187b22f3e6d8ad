#!/bin/bash
# Builds tlm and runs every test suite; ends with "N passed, N failed, N skipped".
#   scripts/test.sh                 the normal build (build/)
#   scripts/test.sh --sanitize      also an ASan+UBSan build (build-asan/)
#   scripts/test.sh --fuzz SECONDS  also a bounded libFuzzer run (build-fuzz/):
#                                   SECONDS in all, split evenly among the targets
#   scripts/test.sh --suite NAME    only that meson suite
#   scripts/test.sh --mutants       also the mutation check (scripts/mutants.sh,
#                                   ~20 min on 2 cores: not in CI), one result
set -uo pipefail
cd "$(dirname "$0")/.."
sanitize=0 fuzz=0 mutants=0 suites=()
while [ $# -gt 0 ]; do
	case "$1" in
	--sanitize) sanitize=1 ;;
	--fuzz) fuzz=$2; shift ;;
	--suite) suites+=(--suite "$2"); shift ;;
	--mutants) mutants=1 ;;
	-h|--help) sed -n '2,8p' "$0"; exit 0 ;;
	*) echo "scripts/test.sh: unknown option $1" >&2; exit 2 ;;
	esac
	shift
done
pass=0 fail=0 skip=0

# One meson run, counted by scripts/count-results.py: every result must
# parse, the results must be exactly the tests `meson test --list` names for
# the same suites, a skip must be in tests/expected-skips.txt, and meson's
# own exit status must agree.
run_suites() { # builddir label [meson test args]
	local dir=$1 label=$2 rc=0 p f s
	shift 2
	rm -f "$dir/meson-logs/testlog.json"
	if ! meson test -C "$dir" --list "${suites[@]}" "$@" >"$dir/tests.list" 2>"$dir/tests.list.err"; then
		cat "$dir/tests.list.err" >&2
		echo "$label: meson test --list failed" >&2
		fail=$((fail + 1))
		return
	fi
	meson test -C "$dir" --print-errorlogs --num-processes 2 "${suites[@]}" "$@" || rc=$?
	if read -r p f s < <(python3 scripts/count-results.py "$dir/meson-logs/testlog.json" \
		"$dir/tests.list" tests/expected-skips.txt "$rc" | tail -n 1) &&
		[[ "$p $f $s" =~ ^[0-9]+\ [0-9]+\ [0-9]+$ ]]; then
		echo "$label: $p passed, $f failed, $s skipped" >&2
		pass=$((pass + p)) fail=$((fail + f)) skip=$((skip + s))
	else
		echo "$label: the results could not be counted" >&2
		fail=$((fail + 1))
	fi
}

if ! bash scripts/build.sh build; then
	echo "build failed" >&2
	echo "0 passed, 1 failed, 0 skipped"
	exit 1
fi
# The QEMU with tlm's patch series, for the qemu suite's inside-QEMU cases
# (cached: rebuilt only when the series or libtlm's headers change).
if [ "${TLM_SKIP_QEMU_BUILD:-0}" != 1 ]; then
	if ! bash scripts/build-qemu.sh >/dev/null; then
		echo "building QEMU with the tlm patch series failed" >&2
		fail=$((fail + 1))
	fi
fi
run_suites build normal

if [ "$sanitize" = 1 ]; then
	if bash scripts/build.sh build-asan -Db_sanitize=address,undefined -Db_lundef=false \
		-Dbuildtype=debug -Dguest=disabled; then
		ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:handle_segv=0 \
		UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		run_suites build-asan asan --no-suite qemu --no-suite vm --no-suite guest --no-suite libvirt
	else
		echo "sanitizer build failed" >&2
		fail=$((fail + 1))
	fi
fi

if [ "$fuzz" != 0 ]; then
	# SECONDS in all, an equal share each (at least 1 s): the wire decoders
	# (fuzz_wire), the frame stream with sealed frames (fuzz_seal), the
	# handshake of both ends (fuzz_handshake) and the destination's apply
	# path (fuzz_apply), each from its corpus.
	targets=(wire:corpus seal:corpus-seal handshake:corpus-handshake apply:corpus-apply)
	share=$(( fuzz / ${#targets[@]} ))
	[ "$share" -ge 1 ] || share=1
	if { [ -f build-fuzz/build.ninja ] || CC=clang meson setup build-fuzz -Dfuzz=true -Db_lundef=false \
		-Dguest=disabled -Ddpdk=disabled -Drdma=disabled -Dqemu_glue=disabled >/dev/null; } &&
		ninja -C build-fuzz $(for t in "${targets[@]}"; do echo tests/fuzz/fuzz_${t%%:*}; done) >/dev/null; then
		for t in "${targets[@]}"; do
			name=fuzz_${t%%:*} work=$(mktemp -d)
			cp tests/fuzz/${t#*:}/* "$work/"
			if build-fuzz/tests/fuzz/$name -max_total_time="$share" -max_len=70000 \
				-timeout=10 "$work" 2>build-fuzz/$name.log; then
				echo "fuzz: $name: $(ls "$work" | wc -l) corpus entries after ${share}s of" \
					"libFuzzer ($(grep -o 'cov: [0-9]*' build-fuzz/$name.log | tail -1)), no crash"
				pass=$((pass + 1))
			else
				tail -40 build-fuzz/$name.log >&2
				echo "fuzz: $name: crash found" >&2
				fail=$((fail + 1))
			fi
			rm -rf "$work"
		done
	else
		echo "fuzz build failed" >&2
		fail=$((fail + 1))
	fi
fi

if [ "$mutants" = 1 ]; then
	if bash scripts/mutants.sh --json build/mutants.json >build/mutants.log 2>&1; then
		pass=$((pass + 1))
	else
		grep -v '^{' build/mutants.log | tail -40 >&2
		echo "mutants: not every mutant was killed (build/mutants.log)" >&2
		fail=$((fail + 1))
	fi
	grep -E 'mutants killed' build/mutants.log >&2
fi

echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" = 0 ]
