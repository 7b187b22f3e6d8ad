#!/bin/sh
# SPDX-License-Identifier: MIT
#
# Inside the VM (tests/vm/run-in-vm.sh): what each --protect mode does to
# pages on rdma lanes, with `tlm bench transport` (4 lanes, rxe0):
#   integrity  every page placed by RDMA WRITE (zero copy), each checked
#              against its MAC, all verified in place
#   tamper     the same, but the receiver flips one byte of the 50th page
#              placed on each lane before checking it (transport_args
#              tamper=50): the lanes fail with the seal error, the run fails
#   encrypt    pages through the cipher: nothing placed
#   none       zero copy, and the report says "protect":"none"
#
#   protect.sh TLM
set -eu
TLM=$1
out=/tmp/protect.$$
fail() { echo "FAIL: protect.sh: $*"; cat "$out" "$out.err" 2>/dev/null; rm -f "$out" "$out.err"; exit 1; }
bench() {
	mode=$1
	shift
	"$TLM" bench transport --transport rdma --local-addr 198.18.0.1 --lanes 4 --bytes 32M \
		--json --protect "$mode" "$@" >"$out" 2>"$out.err"
}
has() { grep -q "$1" "$out" || fail "$mode: no $1 in the report"; }

bench integrity || fail "integrity: the run failed"
has '"protect":"integrity"'
has '"verified":true'
has '"zero_copy":true'
has '"pages_placed":8192'
has '"pages_verified_in_place":8192'
echo "protect.sh: integrity: 8192 pages placed, every MAC checked, verified"

if bench integrity --transport-args tamper=50; then
	fail "tamper: a run with a flipped byte in a placed page succeeded"
fi
grep -q 'does not match its MAC' "$out.err" || fail "tamper: no lane reported the MAC mismatch"
grep -q 'failed authentication' "$out.err" || fail "tamper: the receiver did not report the seal error"
echo "protect.sh: tamper: the lanes failed with the seal error"

bench encrypt || fail "encrypt: the run failed"
has '"protect":"encrypt"'
has '"verified":true'
has '"zero_copy":false'
echo "protect.sh: encrypt: copied through the cipher, verified"

bench none || fail "none: the run failed"
has '"protect":"none"'
has '"verified":true'
has '"zero_copy":true'
echo "protect.sh: none: zero copy, named in the report"
rm -f "$out" "$out.err"
