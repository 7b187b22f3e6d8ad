#!/bin/bash
# Builds Debian 12's QEMU 7.2 with tlm's patch series (qemu-glue/qemu-7.2/)
# and puts it at build/qemu-tlm/bin/qemu-system-x86_64.
#
#   scripts/build-qemu.sh [--force] [--print-key]
#
# The source comes from Debian (a deb-src entry mirroring the deb one,
# apt-get source --download-only qemu, dpkg-source -x). The build lives in
# a cache (TLM_QEMU_CACHE, default /var/cache/tlm-qemu) keyed by the Debian
# version, the patch series and libtlm's public headers, so it is redone
# only when one of them changes. QEMU links libtlm.so from build/ at run
# time: build/qemu-tlm/bin/qemu-system-x86_64 is a wrapper that says where.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
cache=${TLM_QEMU_CACHE:-/var/cache/tlm-qemu}
force=0 print_key=0
for a in "$@"; do
	case "$a" in
	--force) force=1 ;;
	--print-key) print_key=1 ;;
	-h|--help) sed -n '2,12p' "$0"; exit 0 ;;
	*) echo "scripts/build-qemu.sh: unknown option $a" >&2; exit 2 ;;
	esac
done
log() { echo "build-qemu: $*" >&2; }

src_dir=$cache/src
mkdir -p "$src_dir"
dsc=$(ls "$src_dir"/qemu_*.dsc 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$dsc" ]; then
	if [ "$(id -u)" != 0 ]; then
		log "needs root to fetch QEMU's source with apt"
		exit 1
	fi
	if ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/ &&
	   ! grep -qs '^deb-src' /etc/apt/sources.list; then
		# Mirror every deb entry of the Debian sources as deb-src.
		for f in /etc/apt/sources.list.d/*.sources; do
			[ -f "$f" ] || continue
			grep -q 'debian' "$f" || continue
			sed -n 's/^Types: deb$/Types: deb-src/; /^Types: deb-src/,/^$/p' "$f"
		done > /etc/apt/sources.list.d/tlm-deb-src.sources
		if [ ! -s /etc/apt/sources.list.d/tlm-deb-src.sources ] && [ -f /etc/apt/sources.list ]; then
			rm -f /etc/apt/sources.list.d/tlm-deb-src.sources
			sed -n 's/^deb \(.*debian.*\)/deb-src \1/p' /etc/apt/sources.list \
				> /etc/apt/sources.list.d/tlm-deb-src.list
		fi
		apt-get update -q >&2
	fi
	log "fetching Debian's QEMU source"
	(cd "$src_dir" && apt-get source --download-only qemu >&2)
	dsc=$(ls "$src_dir"/qemu_*.dsc | sort -V | tail -1)
fi
version=$(basename "$dsc" .dsc)
version=${version#qemu_}

key=$( { echo "$version"; cat qemu-glue/qemu-7.2/*.patch include/tlm/*.h; } | sha256sum | cut -c1-16)
if [ "$print_key" = 1 ]; then
	echo "$version-$key"
	exit 0
fi
prefix=$cache/$version-$key
bin=$prefix/bin/qemu-system-x86_64

if [ "$force" = 1 ] || [ ! -x "$bin" ]; then
	# libtlm's headers and library, as pkg-config finds them.
	[ -f build/libtlm.so ] || bash scripts/build.sh build >&2
	work=$(mktemp -d "$cache/work.XXXXXX")
	trap 'rm -rf "$work"' EXIT
	log "unpacking $version"
	dpkg-source -x "$dsc" "$work/qemu" >/dev/null
	for p in qemu-glue/qemu-7.2/*.patch; do
		log "applying $(basename "$p")"
		patch -d "$work/qemu" -p1 --batch --forward --quiet < "$p"
	done
	mkdir -p "$work/pc"
	cat > "$work/pc/tlm.pc" <<PC
Name: tlm
Description: Thread-based Live Migration over RDMA, DPDK and parallel TCP lanes
Version: 0.1.0
Cflags: -I$repo/include
Libs: -L$repo/build -ltlm
PC
	mkdir -p "$work/build"
	log "configuring (x86_64-softmmu, TCG and KVM, tlm)"
	(cd "$work/build" && PKG_CONFIG_PATH="$work/pc" ../qemu/configure \
		--prefix="$prefix" --firmwarepath=/usr/share/qemu:/usr/share/seabios:/usr/lib/ipxe/qemu \
		--target-list=x86_64-softmmu --without-default-features \
		--enable-tcg --enable-kvm --enable-tlm --disable-docs --disable-install-blobs \
		>"$work/configure.log" 2>&1) || { tail -30 "$work/configure.log" >&2; exit 1; }
	log "building (about 6 minutes on 2 cores)"
	ninja -C "$work/build" qemu-system-x86_64 >"$work/build.log" 2>&1 ||
		{ grep -E 'error|Error' "$work/build.log" | head -30 >&2; tail -20 "$work/build.log" >&2; exit 1; }
	rm -rf "$prefix"
	mkdir -p "$prefix/bin"
	cp "$work/build/qemu-system-x86_64" "$bin.new"
	mv "$bin.new" "$bin"
	log "cached in $prefix"
fi

# The wrapper: this checkout's libtlm.so, the cached binary.
mkdir -p build/qemu-tlm/bin
cat > build/qemu-tlm/bin/qemu-system-x86_64.new <<SH
#!/bin/sh
# QEMU $version with tlm's patch series (scripts/build-qemu.sh).
LD_LIBRARY_PATH="$repo/build\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$bin" "\$@"
SH
chmod +x build/qemu-tlm/bin/qemu-system-x86_64.new
mv build/qemu-tlm/bin/qemu-system-x86_64.new build/qemu-tlm/bin/qemu-system-x86_64
echo "$repo/build/qemu-tlm/bin/qemu-system-x86_64"
