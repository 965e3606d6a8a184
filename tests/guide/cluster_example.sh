#!/usr/bin/env bash
# Runs examples/cluster/local.sh as docs/guides/high-availability.md tells a user to: start the
# three-node cluster, write to its primary, kill -9 the leader's node, and expect another
# member to lead within the ttl and a little more, holding every acknowledged row (the example
# runs with synchronous: on); then stop it and remove it.
# Usage: tests/guide/cluster_example.sh BUILD_DIR
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$(cd "${1:-$ROOT/build}" && pwd)
export PGFLOW="$BUILD/pgflow"
WORK=$(mktemp -d /tmp/pgflow-cluster.XXXXXX)
chmod 755 "$WORK"  # (the nodes run as postgres)
EXAMPLE="$ROOT/examples/cluster/local.sh"
cleanup() {
  "$EXAMPLE" stop "$WORK/cluster" >/dev/null 2>&1 || true
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
say() { echo "[cluster] $*"; }
fail() {
  echo "[cluster] FAILED: $*" >&2
  for log in "$WORK"/cluster/n*.log; do echo "---- $log"; tail -n 30 "$log"; done >&2
  exit 1
}

"$EXAMPLE" start "$WORK/cluster" || fail "the example did not start"
status() { "$PGFLOW" cluster status --json --config "$WORK/cluster/n1.yaml"; }
leader=$(status | python3 -c 'import json,sys; print(json.load(sys.stdin)["leader"])')
url() {  # the server of node $1
  local listen
  listen=$(sed -n 's/^postgres: {listen: \(.*\)}$/\1/p' "$WORK/cluster/$1.yaml")
  echo "postgres://postgres@${listen%:*}:${listen##*:}/postgres"
}
say "leader $leader"
psql -X -q -v ON_ERROR_STOP=1 "$(url "$leader")" \
  -c "CREATE TABLE acked (id int PRIMARY KEY)" \
  -c "INSERT INTO acked SELECT generate_series(1, 1000)"

say "kill -9 of $leader's node"
kill -9 "$(cat "$WORK/cluster/$leader.pid")"
start=$(date +%s)
new=""
for _ in $(seq 150); do
  new=$(status 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["leader"] or "")' || true)
  [ -n "$new" ] && [ "$new" != "$leader" ] && break
  sleep 0.2
done
[ -n "$new" ] && [ "$new" != "$leader" ] || fail "no new leader within 30 s"
say "$new leads after $(( $(date +%s) - start )) s"
for _ in $(seq 100); do
  rows=$(psql -X -At "$(url "$new")" -c "SELECT count(*) FROM acked" 2>/dev/null || true)
  [ "$rows" = 1000 ] && psql -X -q "$(url "$new")" -c "INSERT INTO acked VALUES (1001)" \
    2>/dev/null && break
  sleep 0.2
done
[ "$rows" = 1000 ] || fail "the new primary holds $rows of the 1000 acknowledged rows"
say "every acknowledged row is on $new, which takes writes"
"$EXAMPLE" stop "$WORK/cluster"
