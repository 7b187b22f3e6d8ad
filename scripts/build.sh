#!/bin/bash
# Configures (once) and builds tlm in build/ (or $1), warnings as errors.
# Extra arguments go to meson. Under CI (CI=true) every optional feature is
# `enabled`, so a missing dependency is a configure error instead of a
# transport or suite that silently is not built; plain builds keep `auto`.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}
shift || true
feats=()
if [ "${CI:-}" = true ]; then
	feats=(-Drdma=enabled -Ddpdk=enabled -Dqemu_glue=enabled -Dguest=enabled -Dlibvirt=enabled)
fi
if [ ! -f "$dir/build.ninja" ]; then
	meson setup "$dir" -Dwerror=true "${feats[@]}" "$@"
elif [ ${#feats[@]} -gt 0 ]; then
	meson configure "$dir" "${feats[@]}" "$@"
fi
ninja -C "$dir"
