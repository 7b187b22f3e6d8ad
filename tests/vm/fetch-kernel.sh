#!/bin/sh
# SPDX-License-Identifier: MIT
#
# Fetch Debian's stock kernel (the one linux-image-amd64 depends on) into a
# cache outside the tree, unpack it and build its module index. Idempotent:
# a complete cache is reused. Prints the cache's kernel dir on stdout:
#   $TLM_VM_CACHE/<kver>   with boot/vmlinuz-<kver> and lib/modules/<kver>
# Exit 77 (skip) when the package cannot be had.
set -eu

cache=${TLM_VM_CACHE:-/var/cache/tlm-vm}
mkdir -p "$cache"

# A previous complete fetch is enough; the stamp is written last.
for d in "$cache"/*/; do
	[ -f "$d/.complete" ] || continue
	cat "$d/.complete"
	exit 0
done

log() { echo "fetch-kernel: $*" >&2; }

pkg_of_meta() {
	apt-cache depends linux-image-amd64 2>/dev/null |
		sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n1
}

pkg=$(pkg_of_meta)
if [ -z "$pkg" ]; then
	log "package lists empty, running apt-get update"
	apt-get update -qq >&2 || true
	pkg=$(pkg_of_meta)
fi
if [ -z "$pkg" ]; then
	log "cannot resolve linux-image-amd64's kernel package"
	exit 77
fi
kver=${pkg#linux-image-}

tmp=$(mktemp -d "$cache/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# apt drops to the _apt user for downloads; let it write here.
chmod 777 "$tmp"
log "downloading $pkg"
if ! (cd "$tmp" && apt-get download -qq "$pkg" >&2); then
	log "apt-get download $pkg failed"
	exit 77
fi
mkdir "$tmp/root"
dpkg-deb -x "$tmp"/*.deb "$tmp/root"
# kmod's depmod when installed, else busybox-static's (which the initramfs
# needs anyway); the guest's busybox modprobe reads either's modules.dep.
if command -v depmod >/dev/null 2>&1; then
	depmod -b "$tmp/root" "$kver"
elif [ -x /bin/busybox ]; then
	/bin/busybox depmod -b "$tmp/root" "$kver"
else
	log "no depmod (install kmod or busybox-static)"
	exit 77
fi
[ -f "$tmp/root/boot/vmlinuz-$kver" ] || { log "no vmlinuz in $pkg"; exit 77; }

rm -rf "${cache:?}/$kver"
mv "$tmp/root" "$cache/$kver"
echo "$cache/$kver" > "$cache/$kver/.complete"
cat "$cache/$kver/.complete"
