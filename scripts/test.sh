#!/usr/bin/env bash
# The whole test suite: set-up and build (scripts/setup.sh), then every unit and integration
# test through ctest. Integration tests start their own throwaway PostgreSQL servers
# (scripts/pgtmp.sh) on free loopback ports and remove them afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
# (Line tables only, -g1: the same code, a fifth less compile time; setup.sh says more.)
DEBUG_INFO=${DEBUG_INFO:-lines} scripts/setup.sh
cd build
ctest --output-on-failure --timeout 900 "$@"
