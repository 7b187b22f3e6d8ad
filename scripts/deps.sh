#!/bin/bash
# Installs what tlm needs to build, test and run on Debian 12 (as root).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
if [ "$(id -u)" != 0 ]; then
	echo "scripts/deps.sh: run as root (it uses apt-get)" >&2
	exit 1
fi
apt-get update -q
apt-get install -y -q --no-install-recommends \
	build-essential meson ninja-build pkg-config python3 \
	clang llvm libclang-rt-14-dev \
	libssl-dev libjson-c-dev \
	libdpdk-dev dpdk \
	rdma-core libibverbs-dev librdmacm-dev ibverbs-utils perftest \
	qemu-system-x86 busybox-static cpio kmod iproute2 gdb tcpdump \
	iperf3 gnuplot-nox procps ca-certificates linux-perf \
	dpkg-dev patch xz-utils libglib2.0-dev libpixman-1-dev zlib1g-dev \
	libvirt-dev libvirt-daemon-system libvirt-clients libvirt-daemon-driver-qemu util-linux
