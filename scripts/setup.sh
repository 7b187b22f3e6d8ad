#!/bin/bash
# Installs what tlm needs (Debian 12, root), builds it, and runs the main job.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash scripts/build.sh build
if [ -x build/cli/tlm ] && build/cli/tlm demo --help >/dev/null 2>&1; then
	exec build/cli/tlm demo
fi
exec build/cli/tlm bench transport --transport tcp --lanes 4 --bytes 2G
