# SPDX-License-Identifier: MIT
# Shared by the `tlm bench transport --transport dpdk` test scripts
# (sourced, with TLM set to the tlm binary): failure bookkeeping, numbers
# out of one-line JSON, and a skip (77) when tlm has no dpdk transport.
fail=0
bad() { echo "FAIL: $*" >&2; fail=1; }
# The number after "KEY": in a one-line JSON object.
num() { echo "$1" | grep -o "\"$2\":[0-9.e+-]*" | head -n 1 | cut -d: -f2; }
positive() { awk -v v="${1:-0}" 'BEGIN { exit !(v + 0 > 0) }'; }

"$TLM" --help | grep -q '^transports built in:.* dpdk' ||
	{ echo "tlm is built without the dpdk transport"; exit 77; }
