#!/usr/bin/env bash
# Rewrites docs/reference/pipeline-options.md's table of every key a pipeline file accepts from
# `pgflow options --markdown` (the option tables beside each component's code). A unit test
# (tests/unit/cli/options_reference_test.cc) keeps the two equal.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x build/pgflow ] || { echo "build pgflow first: scripts/setup.sh" >&2; exit 1; }
build/pgflow options --markdown > build/options.md
python3 scripts/splice-generated.py docs/reference/pipeline-options.md \
  "pgflow options --markdown" build/options.md
echo "docs/reference/pipeline-options.md: key table updated"
