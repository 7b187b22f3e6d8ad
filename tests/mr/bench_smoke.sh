#!/bin/sh
# SPDX-License-Identifier: MIT
# `tlm bench transport` end to end on loopback: every page verified by the
# receiver, byte counts as asked, per-lane figures present; bad arguments
# refused with exit status 2.
#   bench_smoke.sh PATH-TO-tlm
set -u
TLM=$1
fail=0
bad() { echo "FAIL: $*" >&2; fail=1; }

out=$("$TLM" bench transport --transport tcp --lanes 3 --bytes 48M --json) || bad "bench exited $?"
echo "$out"
echo "$out" | grep -q '"verified":true' || bad "not verified"
echo "$out" | grep -q '"bytes":50331648,' || bad "wrong byte count"
echo "$out" | grep -q '"lanes":3,' || bad "wrong lane count"
[ "$(echo "$out" | grep -o '"lane":[0-9]*' | wc -l)" -eq 3 ] || bad "per-lane figures missing"
echo "$out" | grep -q '"receiver":[1-9]' || bad "receiver peak RSS missing"

# Odd sizes: not a multiple of the page size, more lanes than a page each.
out=$("$TLM" bench transport --lanes 7 --bytes 5000 --page-size 1024 --json) || bad "odd size exited $?"
echo "$out" | grep -q '"verified":true' || bad "odd size not verified"

out=$("$TLM" bench transport --lanes 2 --bytes 8M --verify crc --json) || bad "verify crc exited $?"
echo "$out" | grep -q '"verified":true,"verify":"crc"' || bad "verify crc not verified"

"$TLM" bench transport --help | grep -q -- '--lanes' || bad "--help"
for args in "--lanes 0" "--lanes 64" "--bytes 12Q" "--page-size 3000" "--transport nope" \
	    "--listen 127.0.0.1:1 --connect 127.0.0.1:1" "--frobnicate" "--lanes" \
	    "--connect 127.0.0.1:9" "--verify bytes" "--fault drop=0.01" "--dpdk-args -m" \
	    "--compare tcp" "--no-raw"; do
	# shellcheck disable=SC2086
	"$TLM" bench transport $args >/dev/null 2>&1
	rc=$?
	[ $rc -eq 2 ] || bad "'$args' gave exit $rc, want 2"
done
[ $fail -eq 0 ] && echo "bench_smoke: passed"
exit $fail
