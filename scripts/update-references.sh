#!/usr/bin/env bash
# Rewrites the generated parts of docs/reference/ from the code: the pipeline options
# (scripts/options-reference.sh), the command line (scripts/cli-reference.sh), and the pooler
# options, the Lua API and the sample events
# (tests/unit/docs/reference_pages_test.cc, run with PGFLOW_UPDATE_REFERENCES=1). The unit tests
# fail while a page differs from what the code makes; run this after changing that code.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x build/pgflow_unit_tests ] || { echo "build the tests first: scripts/test.sh" >&2; exit 1; }
bash scripts/options-reference.sh
bash scripts/cli-reference.sh
PGFLOW_UPDATE_REFERENCES=1 build/pgflow_unit_tests --gtest_filter='ReferencePagesTest.*' \
  --gtest_brief=1 >/dev/null
echo "docs/reference/: pooler-options.md, lua.md, events.md updated"
