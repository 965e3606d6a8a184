#!/usr/bin/env bash
# Installs what pgflow needs from Debian 12's packages (only what is missing), then builds it
# into build/. Safe to run again: a second run installs nothing and rebuilds only what changed.
#
#   scripts/setup.sh                  what the tests need too; builds everything (tests and
#                                     benchmarks; scripts/test.sh)
#   scripts/setup.sh pgflow           what the binary and the quickstart need; builds the binary
#                                     only (scripts/quickstart.sh)
#   scripts/setup.sh --install [PREFIX]
#                                     as `pgflow`, then installs it into PREFIX/bin (default
#                                     /usr/local): stripped, its debug information beside it in
#                                     PREFIX/bin/.debug/pgflow.debug (cmake --install build)
set -euo pipefail

install_prefix=""
if [ "${1:-}" = "--install" ]; then
  [ $# -le 2 ] || { echo "usage: $0 --install [PREFIX]" >&2; exit 2; }
  install_prefix=$(realpath -m "${2:-/usr/local}")  # a relative PREFIX: from where it was typed
  set -- pgflow
fi
cd "$(dirname "$0")/.."

# What building the binary and running the quickstart take (the quickstart's PostgreSQL is
# Debian's server; pgtmp.sh uses python3 to find a free port).
PACKAGES=(
  build-essential cmake ninja-build pkg-config python3
  libpq-dev postgresql postgresql-client
  libabsl-dev libyaml-cpp-dev nlohmann-json3-dev libcli11-dev libboost-dev
  librdkafka-dev libssl-dev liblua5.4-dev libcurl4-openssl-dev zlib1g-dev
  libpg-query-dev
)
# The binary alone (the quickstart's `scripts/setup.sh pgflow`, or --install): the build
# packages only, and the tests left out of the build unless an earlier full set-up put them in.
binary_only=0
if [ $# -gt 0 ]; then
  binary_only=1
  for target in "$@"; do [ "$target" = pgflow ] || binary_only=0; done
fi

if [ $binary_only = 0 ]; then
  # What the tests and benchmarks run: GoogleTest, the servers and clients they compare with
  # or drive (redis, memcached, nginx, wrk, kcat, curl, etcd; ip for the network namespaces of
  # the cluster's fault tests; chromium for the web console's tests), certificates (openssl),
  # PostgreSQL's regression suite (bzip2), OpenSearch's zip (unzip), the webhook receiver's venv.
  PACKAGES+=(
    git python3-venv bzip2 openssl unzip curl
    libgtest-dev libgmock-dev
    kcat redis-tools redis-server memcached libmemcached-tools wrk nginx
    etcd-server iproute2
    chromium fonts-liberation
  )
  # Java and Maven run the real Kafka broker and OpenSearch node of the tests
  # (scripts/kafkatmp.sh, scripts/ostmp.sh, both from Maven Central); Debian's when the machine
  # has none of its own.
  command -v java >/dev/null || PACKAGES+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null || PACKAGES+=(maven)
  # Node.js runs the pooler's driver tests (node-postgres, postgres.js: tests/drivers/);
  # Debian's when the machine has none of its own.
  command -v node >/dev/null || PACKAGES+=(nodejs npm)
  # Go builds the webhook tests' receiver; Debian's when the machine has none of its own.
  if ! command -v go >/dev/null && [ ! -x /usr/local/go/bin/go ]; then PACKAGES+=(golang-go); fi
fi

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
fi
# Debian starts a system PostgreSQL when the package is installed; pgflow never uses it.

BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo}
# The tests are configured in by a full set-up, out by the first binary-only one; a binary-only
# set-up keeps what an earlier one chose (its packages are installed).
tests=(-DBUILD_TESTING=ON)
if [ $binary_only = 1 ]; then
  tests=()
  [ -f build/CMakeCache.txt ] || tests=(-DBUILD_TESTING=OFF)
fi
# DEBUG_INFO=lines: line tables only (-g1), as the test suite builds (scripts/test.sh); the
# binary users run and install keeps full debug information.
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE="$BUILD_TYPE" \
  -DPGFLOW_DEBUG_INFO="${DEBUG_INFO:-full}" "${tests[@]}" >/dev/null
ninja -C build "$@"

if [ -n "$install_prefix" ]; then
  # sudo only when the prefix is not the user's to write.
  parent=$install_prefix/bin
  while [ ! -e "$parent" ]; do parent=$(dirname "$parent"); done
  [ -w "$parent" ] && SUDO=""
  $SUDO cmake --install build --prefix "$install_prefix"
fi
