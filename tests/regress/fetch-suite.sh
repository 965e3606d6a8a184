#!/usr/bin/env bash
# PostgreSQL's regression suite (src/test/regress) of the installed server's major version,
# from Debian's source package: `apt-get source` with a deb-src entry in a private apt
# configuration (never the machine's own), unpacked into BUILD_DIR/postgresql-<major>-regress
# once and reused. Prints that directory. Usage: tests/regress/fetch-suite.sh BUILD_DIR
set -euo pipefail
BUILD=$(cd "$1" && pwd)
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
MAJOR=$(basename "$(dirname "$PGBIN")")
SRC=$BUILD/postgresql-$MAJOR-regress
if [ ! -f "$SRC/parallel_schedule" ]; then
  apt_dir=$(mktemp -d /tmp/pgflow-apt.XXXXXX)
  trap 'rm -rf "$apt_dir"' EXIT
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/get"
  echo "deb-src http://deb.debian.org/debian bookworm main" >"$apt_dir/sources.list"
  apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
            -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
            -o APT::Sandbox::User=root)
  echo "fetching postgresql-$MAJOR's source package (apt-get source, private apt configuration)" >&2
  apt-get -qq "${apt_opts[@]}" update
  (cd "$apt_dir/get" && apt-get -qq "${apt_opts[@]}" source --download-only "postgresql-$MAJOR")
  tarball=$(ls "$apt_dir"/get/postgresql-"$MAJOR"_*.orig.tar.*)
  top=$(basename "$tarball" | sed -E 's/^postgresql-[0-9]+_([0-9.]+)\.orig\.tar\..*/postgresql-\1/')
  tar xf "$tarball" -C "$apt_dir/get" "$top/src/test/regress"
  rm -rf "$SRC"
  mv "$apt_dir/get/$top/src/test/regress" "$SRC"
fi
echo "$SRC"
