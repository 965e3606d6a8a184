# Sourced by the shell tests (tests/drivers/*.sh, tests/console/console.sh, tests/fleet/fleet.sh)
# after `set -euo pipefail`, with the test's name and the script's own arguments:
#
#   source "$(dirname "$0")/../drivers/script_env.sh" NAME "$@"
#
# It sets ROOT (the checkout), BUILD (the build directory: the script's first argument, by
# default ROOT/build), PGFLOW (the binary), HERE (tests/drivers: install.sh and the clients'
# package files), CACHE (where install.sh keeps the drivers) and WORK (a scratch directory
# /tmp/pgflow-NAME.XXXXXX, mode 755 so that PostgreSQL's user can read it); and defines `say`
# (a line prefixed [NAME]), `free_port` (a free loopback port) and `remove_work` (for the
# script's own cleanup: removes WORK, or keeps it and says where when KEEP=1).
TEST_NAME=$1
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=$(cd "${2:-$ROOT/build}" && pwd)
PGFLOW=$BUILD/pgflow
HERE=$ROOT/tests/drivers
CACHE=$BUILD/drivers
WORK=$(mktemp -d "/tmp/pgflow-$TEST_NAME.XXXXXX")
chmod 755 "$WORK"
say() { echo "[$TEST_NAME] $*"; }
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
remove_work() {
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
