#!/bin/bash
# SPDX-License-Identifier: MIT
#
# run-in-vm.sh [--mem 2G] [--smp 2] [--timeout S] [--rw DIR]... -- CMD ARGS...
#
# Boots Debian's stock kernel under QEMU TCG (no KVM needed) with the host's
# root shared read-only over 9p, Soft-RoCE devices rxe0/rxe1 on a veth pair
# (198.18.0.1 / 198.18.0.2), and runs CMD there chrooted into the host root
# in the current directory. CMD's output (stdout and stderr, merged) streams
# to our stdout; we exit with CMD's exit status. 77 = cannot run (no kernel,
# no QEMU), 124 = timed out, 125 = the VM failed before CMD ran.
#
# Inside, /tmp, /run, /var/tmp are fresh tmpfs (the host's are hidden) and
# the rest of the host is read-only, except dirs given with --rw.
# TLM_VM_VERBOSE=1 shows the boot log on stderr.
#
# Internal for run-two-vms.sh: --net ADDR/24 --netdev SPEC gives the VM a
# virtio-net NIC (eth0, rxe0 on it) on a QEMU socket netdev instead of the
# veth pair. SPEC must name the netdev n0.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
mem=2G
smp=2
tmo=600
rw=()
net=
netdev=
while [ $# -gt 0 ]; do
	case $1 in
	--mem) mem=$2; shift 2 ;;
	--smp) smp=$2; shift 2 ;;
	--timeout) tmo=$2; shift 2 ;;
	--rw) rw+=("$(cd "$2" && pwd)"); shift 2 ;;
	--net) net=$2; shift 2 ;;
	--netdev) netdev=$2; shift 2 ;;
	--) shift; break ;;
	*) echo "usage: $0 [--mem 2G] [--smp 2] [--timeout S] [--rw DIR]... -- CMD ARGS..." >&2; exit 2 ;;
	esac
done
[ $# -gt 0 ] || { echo "run-in-vm: no command" >&2; exit 2; }

# A work tree under /tmp or /var/tmp (a CI clone, say) would be hidden by
# the VM's fresh tmpfs there: export its top directory read-write as well.
for p in "$PWD" "$(cd "$(dirname "$1")" 2>/dev/null && pwd)"; do
	case $p in
	/tmp/?*) top=/tmp/$(echo "${p#/tmp/}" | cut -d/ -f1) ;;
	/var/tmp/?*) top=/var/tmp/$(echo "${p#/var/tmp/}" | cut -d/ -f1) ;;
	*) continue ;;
	esac
	case " ${rw[*]-} " in *" $top "*) ;; *) rw+=("$top") ;; esac
done

skip() { echo "SKIP: run-in-vm: $*"; exit 77; }
command -v qemu-system-x86_64 >/dev/null || skip "qemu-system-x86_64 not installed"

kdir=$("$here/fetch-kernel.sh") || skip "cannot fetch Debian's kernel package"
kver=$(basename "$kdir")
kernel=$kdir/boot/vmlinuz-$kver

# The initramfs is rebuilt whenever the scripts that make it change.
cache=$(dirname "$kdir")
sum=$(cat "$here/mkinitrd.sh" "$here/init" | cksum | cut -d' ' -f1)
initrd=$cache/initrd-$kver-$sum.img
if [ ! -f "$initrd" ]; then
	"$here/mkinitrd.sh" "$kdir" "$initrd.tmp.$$" || { rm -f "$initrd.tmp.$$"; exit 125; }
	mv "$initrd.tmp.$$" "$initrd"
	# Images of older scripts are of no use any more.
	for old in "$cache"/initrd-*.img; do
		[ "$old" = "$initrd" ] || rm -f "$old"
	done
fi

job=$(mktemp -d /tmp/tlm-vm.XXXXXX)
qpid=
cleanup() {
	[ -n "$qpid" ] && kill "$qpid" 2>/dev/null
	rm -rf "$job"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# OpenSSL's AVX code for AES-GCM (the stitched AES-NI + PCLMULQDQ loop)
# runs pathologically slowly under this QEMU's TCG when called a page at a
# time among other work, as rdma lanes under --protect encrypt do (seal a
# page into a staging slot, post its WRITE, next page): 32 MiB over 4
# lanes took 16 s staged against 2.9 s copied through 256 KiB frames.
# With AVX masked from libcrypto (AES-NI and PCLMULQDQ stay) the same
# staged run took 2.4 s: the emulator's cost, not the lanes'. So libcrypto
# in the VM runs its SSE code unless the caller sets OPENSSL_ia32cap.
ossl_cap=${OPENSSL_ia32cap-"~0x1000000000000000"}

# The command as a bash script: quoted argv, cwd, and the environment that
# tests care about (sanitizer options, our own TLM_* knobs, libcrypto's
# CPU capabilities).
{
	echo "cd $(printf '%q' "$PWD") || exit 125"
	echo "export OPENSSL_ia32cap=$(printf '%q' "$ossl_cap")"
	while IFS= read -r v; do
		case $v in
		TLM_*|ASAN_OPTIONS|UBSAN_OPTIONS|LSAN_OPTIONS|MALLOC_PERTURB_|MESON_TEST_ITERATION)
			echo "export $v=$(printf '%q' "${!v}")" ;;
		esac
	done < <(compgen -e)
	printf 'exec'
	printf ' %q' "$@"
	echo
} > "$job/cmd"
[ -n "$net" ] && echo "$net" > "$job/net"

args=(-accel tcg -cpu max -m "$mem" -smp "$smp" -nographic -no-reboot
      -kernel "$kernel" -initrd "$initrd"
      -append "console=ttyS0 quiet loglevel=1 panic=-1 mitigations=off rdinit=/init"
      -virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap"
      -virtfs "local,path=$job,mount_tag=tlmjob,security_model=none,multidevs=remap")
i=0
for d in "${rw[@]}"; do
	echo "$d" > "$job/rw$i"
	args+=(-virtfs "local,path=$d,mount_tag=rw$i,security_model=none,multidevs=remap")
	i=$((i + 1))
done
if [ -n "$netdev" ]; then
	# A MAC of its own per VM (from the address's last octet): two QEMUs
	# would otherwise both use QEMU's default one on the same wire.
	last=${net%/*}
	last=${last##*.}
	args+=(-netdev "$netdev" -device "virtio-net-pci,netdev=n0,mac=$(printf '52:54:00:12:34:%02x' "$last")")
else
	args+=(-nic none)
fi

# The console carries boot noise, then our markers around CMD's output.
# Only what lies between them is CMD's; the boot log goes to stderr on
# request, or when the VM dies before CMD starts.
mkfifo "$job/console"
qemu-system-x86_64 "${args[@]}" < /dev/null > "$job/console" 2>&1 &
qpid=$!
tr -d '\r' < "$job/console" |
	awk -v verbose="${TLM_VM_VERBOSE:-0}" -v bootlog="$job/boot.log" '
	/TLM-VM-BEGIN$/ && !began { began = 1; next }
	began && /TLM-VM-EXIT: [0-9]+$/ {
		# Output that did not end in a newline shares the marker line.
		sub(/TLM-VM-EXIT: [0-9]+$/, ""); printf "%s", $0; exit
	}
	began { print; fflush(); next }
	{ print > bootlog; if (verbose) { print > "/dev/stderr"; fflush("/dev/stderr") } }
	' &
wpid=$!

# The status comes from the job dir, not from QEMU or the pipeline.
deadline=$((SECONDS + tmo))
while kill -0 "$qpid" 2>/dev/null; do
	if [ $SECONDS -ge $deadline ]; then
		echo "run-in-vm: timed out after ${tmo}s" >&2
		kill "$qpid" 2>/dev/null || true
		wait "$qpid" 2>/dev/null || true
		qpid=
		wait "$wpid" 2>/dev/null || true
		exit 124
	fi
	sleep 0.2
done
wait "$qpid" 2>/dev/null || true
qpid=
wait "$wpid" 2>/dev/null || true

if [ -f "$job/status" ]; then
	exit "$(cat "$job/status")"
fi
echo "run-in-vm: the VM stopped before the command finished; boot log tail:" >&2
tail -n 30 "$job/boot.log" >&2 2>/dev/null || true
exit 125
