#!/bin/bash
# Mutation check: plants each deliberate bug of tests/mutants.txt in a
# scratch copy of the tree (/tmp/tlm-mutants.*), builds it, runs the
# mutant's named killer tests and, if they all pass, the fast suites
# (unit, conformance, engine, memsrc, mr); every mutant must be killed in
# every run. Prints a line per mutant, then the report as one JSON line.
#   scripts/mutants.sh [--runs 3] [--only NAME]... [--json FILE] [--keep]
# The relay mutant's killer needs Debian's QEMU and the test guest.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 scripts/mutants.py "$@"
