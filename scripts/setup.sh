#!/bin/bash
# Installs what tlm needs (Debian 12, root), builds it, and runs the main job.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash scripts/build.sh build
# QEMU with tlm's patch series, so the demo runs the engine inside QEMU
# (cached: minutes the first time, seconds after). Without it the demo
# falls back to the relay for stock QEMU.
if ! bash scripts/build-qemu.sh; then
	echo "setup: building QEMU with tlm's patch series failed; the demo runs mode relay" >&2
fi
if [ -x build/cli/tlm ] && build/cli/tlm demo --help >/dev/null 2>&1; then
	exec build/cli/tlm demo
fi
exec build/cli/tlm bench transport --transport tcp --lanes 4 --bytes 2G
