#!/usr/bin/env bash
# Rewrites README.md's table of every key a pipeline file accepts from `pgflow options
# --markdown` (the option tables beside each component's code). A unit test keeps the two equal.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x build/pgflow ] || { echo "build pgflow first: scripts/setup.sh" >&2; exit 1; }
build/pgflow options --markdown > build/options.md
python3 - <<'PY'
begin = "<!-- pgflow options --markdown: begin -->\n"
end = "<!-- pgflow options --markdown: end -->"
readme = open("README.md").read()
table = open("build/options.md").read()
i, j = readme.index(begin) + len(begin), readme.index(end)
open("README.md", "w").write(readme[:i] + table + readme[j:])
PY
echo "README.md: key table updated"
