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
#   encrypt    zero copy too: every page sealed into a registered staging
#              slot, RDMA WRITE into the receiver's, opened into place
#              (pages_placed_encrypted), all verified in place
#   enc-tamper the same, but the receiver flips one byte of the 50th staged
#              ciphertext on each lane before opening it: the lanes fail
#              with the seal error, the run fails
#   enc-copy   encrypt with --copy: pages through the cipher, nothing placed
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
has '"zero_copy":true'
has '"pages_placed":8192'
has '"pages_placed_encrypted":8192'
has '"pages_verified_in_place":8192'
echo "protect.sh: encrypt: 8192 pages sealed through staging, opened into place, verified"

mode=encrypt
if bench encrypt --transport-args tamper=50; then
	fail "enc-tamper: a run with a flipped byte in a staged ciphertext succeeded"
fi
grep -q 'staged page .* failed authentication' "$out.err" ||
	fail "enc-tamper: no lane reported the staged page's failed tag"
grep -q 'failed authentication (modified' "$out.err" ||
	fail "enc-tamper: the receiver did not report the seal error"
echo "protect.sh: enc-tamper: the lanes failed with the seal error"

bench encrypt --copy || fail "enc-copy: the run failed"
has '"protect":"encrypt"'
has '"verified":true'
has '"zero_copy":false'
has '"pages_placed_encrypted":0'
echo "protect.sh: enc-copy: copied through the cipher, verified"

bench none || fail "none: the run failed"
has '"protect":"none"'
has '"verified":true'
has '"zero_copy":true'
echo "protect.sh: none: zero copy, named in the report"
rm -f "$out" "$out.err"
