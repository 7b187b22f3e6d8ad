#!/bin/bash
# SPDX-License-Identifier: MIT
#
# capture.sh TLM VMDIR — what a capture of an rdma lane shows of the pages,
# across the two VMs of tests/vm/run-two-vms.sh (real RoCE v2 frames on
# eth0 between two kernels): A receives (tlm bench transport --listen)
# while tcpdump records UDP 4791 on eth0, B sends (--connect), once with
# --protect none and once with --protect encrypt (pages placed through
# staging buffers). A known 32-byte run of the bench's page content (lane
# 1, template 0, bytes 64..95: core of bench/lib/pattern.c) must be in the
# none capture (so the search can find it) and nowhere in the encrypt
# capture, while both captures hold at least the page data sent (so the
# capture saw the lane).
#
#   capture.sh TLM VMDIR           (on the host: runs both VMs)
#   capture.sh TLM - side A|B      (inside a VM)
set -u
TLM=$1
VMDIR=$2
BYTES=8M
fail() { echo "FAIL: capture.sh: $*"; exit 1; }

if [ "$VMDIR" = - ]; then
	psk=$4
	case $3 in
	A)
		for mode in none encrypt; do
			port=$([ $mode = none ] && echo 18611 || echo 18612)
			pcap=/tmp/$mode.pcap
			tcpdump -i eth0 -n -s 0 -B 16384 -U -w "$pcap" udp port 4791 2>/tmp/tcpdump.err &
			td=$!
			sleep 2
			timeout 200 "$TLM" bench transport --transport rdma --listen 198.18.0.1:$port \
				--psk "$psk" --protect $mode > /tmp/rx.out 2>&1 ||
				{ cat /tmp/rx.out; kill $td; fail "$mode: the receiver failed"; }
			sleep 1
			kill -INT $td
			wait $td
			cat /tmp/tcpdump.err
			python3 - "$pcap" $mode <<'PY' || fail "$mode: cannot search the capture"
import struct, sys
def mix64(x):
    m = (1 << 64) - 1
    x = (x + 0x9e3779b97f4a7c15) & m
    x = ((x ^ (x >> 30)) * 0xbf58476d1ce4e5b9) & m
    x = ((x ^ (x >> 27)) * 0x94d049bb133111eb) & m
    return x ^ (x >> 31)
seed = mix64(1 << 32 | 0)
pat = b"".join(struct.pack("<Q", mix64((seed + i) & ((1 << 64) - 1))) for i in range(64, 96, 8))
data = open(sys.argv[1], "rb").read()
print("capture: %s bytes=%d found=%d" % (sys.argv[2], len(data), data.count(pat)))
PY
		done
		;;
	B)
		for mode in none encrypt; do
			port=$([ $mode = none ] && echo 18611 || echo 18612)
			ok=0
			for _ in $(seq 90); do
				if "$TLM" bench transport --transport rdma --connect 198.18.0.1:$port \
					--psk "$psk" --protect $mode --lanes 2 --bytes $BYTES --json \
					> /tmp/tx.out 2>&1; then
					ok=1
					break
				fi
				sleep 1
			done
			[ $ok = 1 ] || { cat /tmp/tx.out; fail "$mode: the sender never got through"; }
			grep -q '"verified":true' /tmp/tx.out || { cat /tmp/tx.out; fail "$mode: not verified"; }
			grep -q '"zero_copy":true' /tmp/tx.out || { cat /tmp/tx.out; fail "$mode: not zero copy"; }
			echo "sender: $mode: done"
		done
		;;
	esac
	exit 0
fi

command -v tcpdump >/dev/null || { echo "SKIP: capture.sh: no tcpdump (scripts/deps.sh)"; exit 77; }
dir=$(mktemp -d "$PWD/rdma-capture.XXXXXX") || fail "mktemp"
trap 'rm -rf "$dir"' EXIT
"$TLM" keygen "$dir/psk" >/dev/null || fail "keygen"
me=$(cd "$(dirname "$0")" && pwd)/capture.sh
"$VMDIR/run-two-vms.sh" --timeout 500 \
	"bash $me $TLM - A $dir/psk" "bash $me $TLM - B $dir/psk" > "$dir/out" 2>&1
rc=$?
cat "$dir/out"
[ $rc = 77 ] && exit 77
[ $rc = 0 ] || fail "the VMs failed ($rc)"
min=$((8 * 1024 * 1024))
got() { sed -n "s/^\[A\] capture: $1 bytes=\([0-9]*\) found=\([0-9]*\).*/\1 \2/p" "$dir/out"; }
read -r nb nf <<<"$(got none)"
read -r eb ef <<<"$(got encrypt)"
[ -n "${nb:-}" ] && [ -n "${eb:-}" ] || fail "no capture figures"
[ "$nb" -ge $min ] || fail "none: the capture holds $nb bytes, less than the $min sent"
[ "$eb" -ge $min ] || fail "encrypt: the capture holds $eb bytes, less than the $min sent"
[ "$nf" -gt 0 ] || fail "none: the page pattern is not in the capture: the search is blind"
[ "$ef" = 0 ] || fail "encrypt: the page pattern is in the capture $ef times"
echo "PASS: capture.sh: none shows the page pattern $nf times in $nb bytes, encrypt none in $eb"
