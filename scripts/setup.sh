#!/usr/bin/env bash
# Installs what pgflow needs from Debian 12's packages (only what is missing), then builds it
# into build/: the targets given (`scripts/setup.sh pgflow` builds only the binary, as the
# quickstart does), or everything (tests and benchmarks too). Safe to run again: a second run
# installs nothing and rebuilds only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake ninja-build pkg-config git python3 python3-venv
  libpq-dev postgresql postgresql-client bzip2
  libabsl-dev libyaml-cpp-dev nlohmann-json3-dev libcli11-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  librdkafka-dev kcat libssl-dev liblua5.4-dev libcurl4-openssl-dev zlib1g-dev openssl unzip
  libboost-dev redis-tools redis-server memcached libmemcached-tools wrk curl nginx
)

# Java and Maven run the real Kafka broker and OpenSearch node of the tests (scripts/kafkatmp.sh,
# scripts/ostmp.sh, both from Maven Central); Debian's when the machine has none of its own.
command -v java >/dev/null || PACKAGES+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || PACKAGES+=(maven)
# Node.js runs the pooler's driver tests (node-postgres, postgres.js: tests/drivers/);
# Debian's when the machine has none of its own.
command -v node >/dev/null || PACKAGES+=(nodejs npm)
# Go builds the webhook tests' receiver; Debian's when the machine has none of its own.
if ! command -v go >/dev/null && [ ! -x /usr/local/go/bin/go ]; then PACKAGES+=(golang-go); fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
fi
# Debian starts a system PostgreSQL when the package is installed; pgflow never uses it.

BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo}
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE="$BUILD_TYPE" >/dev/null
ninja -C build "$@"
