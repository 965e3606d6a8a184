#!/usr/bin/env bash
# Rewrites docs/reference/cli.md's generated part, the --help of pgflow and of every subcommand,
# from `pgflow cli-reference` (the subcommands' declarations in cli/*_command.cc). A unit test
# (tests/unit/cli/cli_reference_test.cc) keeps the two equal.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x build/pgflow ] || { echo "build pgflow first: scripts/setup.sh" >&2; exit 1; }
build/pgflow cli-reference > build/cli.md
python3 scripts/splice-generated.py docs/reference/cli.md "pgflow cli-reference" build/cli.md
echo "docs/reference/cli.md: the commands' --help updated"
