#!/usr/bin/env bash
# Runs examples/cluster/local.sh as docs/guides/high-availability.md tells a user to: start the
# three-node cluster, write to its primary, kill -9 the leader's node, and expect another
# member to lead within the ttl and a little more, holding every acknowledged row (the example
# runs with synchronous: on); then stop it and remove it.
#
# Across that failover, real drivers commit through `pgflow pooler` following the cluster (the
# guide's `cluster:` entry): node-postgres (tests/drivers/failover.js, 4 clients) and the
# PostgreSQL JDBC driver (tests/drivers/Failover.java, 3 connections), each transaction a
# prepared INSERT. Each client may see the error of the transaction under way when the primary
# died, no more, and no answer may be withheld from it (the drivers' read time limits turn a
# stall into a failure); each client commits again on the new primary; every commit a driver
# was told of is there.
# Usage: tests/guide/cluster_example.sh BUILD_DIR
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$(cd "${1:-$ROOT/build}" && pwd)
export PGFLOW="$BUILD/pgflow"
WORK=$(mktemp -d /tmp/pgflow-cluster.XXXXXX)
chmod 755 "$WORK"  # (the nodes run as postgres)
EXAMPLE="$ROOT/examples/cluster/local.sh"
POOLER_PID=""
cleanup() {
  touch "$WORK/stop"
  [ -z "$POOLER_PID" ] || kill "$POOLER_PID" 2>/dev/null || true
  "$EXAMPLE" stop "$WORK/cluster" >/dev/null 2>&1 || true
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
say() { echo "[cluster] $*"; }
fail() {
  echo "[cluster] FAILED: $*" >&2
  for log in "$WORK"/cluster/n*.log "$WORK"/pooler.log "$WORK"/*.out; do
    [ -f "$log" ] && { echo "---- $log"; grep -v '^[a-z]*[0-9]*-[0-9]*$' "$log" | tail -n 40; }
  done >&2
  exit 1
}
HERE="$ROOT/tests/drivers"
CACHE="$BUILD/drivers"
source "$HERE/install.sh"
install_drivers node java

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
  -c "INSERT INTO acked SELECT generate_series(1, 1000)" \
  -c "CREATE TABLE failover_ids (id text PRIMARY KEY)"

# The pooler, following the cluster as the guide shows (the url's host is nobody's).
etcd=$(sed -n 's/^etcd: \[\(.*\)\]$/\1/p' "$WORK/cluster/n1.yaml")
pooler_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
pooler_admin=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf '"postgres" ""\n"ops" "ops-secret"\n' >"$WORK/users.txt"
cat >"$WORK/pooler.yaml" <<YAML
listen: 127.0.0.1:$pooler_port
admin: {listen: 127.0.0.1:$pooler_admin, users: [ops]}
auth: {method: trust, users: $WORK/users.txt}
databases:
  app:
    url: postgres://postgres@127.0.0.1:1/postgres
    pool_mode: transaction
    cluster: {name: local, etcd: [$etcd]}
YAML
"$PGFLOW" pooler --config "$WORK/pooler.yaml" >"$WORK/pooler.log" 2>&1 &
POOLER_PID=$!
for _ in $(seq 100); do
  grep -q "follows cluster local's leader" "$WORK/pooler.log" && break
  sleep 0.2
done
grep -q "follows cluster local's leader" "$WORK/pooler.log" || fail "the pooler follows no leader"
# The leader the pooler's web console names (docs/guides/console.md), as its page reads it.
console_leader() {
  curl -sf -c "$WORK/cookies" -H 'Content-Type: application/json' \
    -d '{"user": "ops", "password": "ops-secret"}' "http://127.0.0.1:$pooler_admin/api/login" \
    >/dev/null &&
    curl -sf -b "$WORK/cookies" "http://127.0.0.1:$pooler_admin/api/state" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["clusters"][0]["leader"] or "")'
}
leader_at() { local u; u=$(url "$1"); u=${u#postgres://postgres@}; echo "${u%/postgres}"; }
[ "$(console_leader)" = "$(leader_at "$leader")" ] ||
  fail "the console names $(console_leader) as the leader, not $leader's $(leader_at "$leader")"
say "the pooler's console names $leader's server as the leader"
NODE_PATH="$CACHE/node/node_modules" node "$HERE/failover.js" \
  "postgres://postgres@127.0.0.1:$pooler_port/app" "$WORK/stop" node >"$WORK/node.out" &
node_pid=$!
java -cp "$JAR" "$HERE/Failover.java" "jdbc:postgresql://127.0.0.1:$pooler_port/app?user=postgres" \
  "$WORK/stop" java >"$WORK/java.out" &
java_pid=$!
clients=(node0 node1 node2 node3 java0 java1 java2)
client_list=$(printf "'%s'," "${clients[@]}")
committed() {  # the commits of each client on node $1's server, in the order of $clients
  psql -X -At "$(url "$1")" -c "SELECT (SELECT count(*) FROM failover_ids WHERE id LIKE c || '-%')
    FROM unnest(ARRAY[${client_list%,}]) WITH ORDINALITY AS u(c, n) ORDER BY n" 2>/dev/null |
    tr '\n' ' '
}
every_client_past() {  # whether every client has more than $2 commits over $3 on node $1
  local -a now before
  read -r -a now <<<"$(committed "$1")"
  read -r -a before <<<"${3:-}"
  [ "${#now[@]}" = "${#clients[@]}" ] || return 1
  for i in "${!clients[@]}"; do
    [ "${now[$i]}" -gt $(( ${before[$i]:-0} + $2 )) ] || return 1
  done
}
for _ in $(seq 150); do
  every_client_past "$leader" 10 && break
  sleep 0.2
done
every_client_past "$leader" 10 || fail "the drivers did not commit through the pooler: $(committed "$leader")"
say "node-postgres and JDBC commit through the pooler"

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
for _ in $(seq 50); do
  [ "$(console_leader)" = "$(leader_at "$new")" ] && break
  sleep 0.2
done
[ "$(console_leader)" = "$(leader_at "$new")" ] ||
  fail "after the failover the console names $(console_leader), not $new's $(leader_at "$new")"

# Each client commits on the new primary, then they stop; every commit they were told of is
# there.
before=$(committed "$new")
for _ in $(seq 150); do
  every_client_past "$new" 10 "$before" && break
  sleep 0.2
done
every_client_past "$new" 10 "$before" ||
  fail "not every client committed on $new within 30 s: $before -> $(committed "$new") (${clients[*]})"
touch "$WORK/stop"
wait "$node_pid" || fail "node-postgres ended with an error"
wait "$java_pid" || fail "the JDBC client ended with an error"
python3 - "$WORK/node.out" "$WORK/java.out" >"$WORK/acked.txt" <<'PY' || fail "the drivers' results"
import json, re, sys
node = json.load(open(sys.argv[1]))
java = open(sys.argv[2]).read().split("\n")
ids = [l for l in java if re.fullmatch(r"java\d+-\d+", l)]
threads = [l.split() for l in java if l.startswith("thread ")]
java_errors = [int(t[3]) for t in threads]
java_stalls = sum(int(t[5]) for t in threads)
failed = {}  # failed transactions by client
for e in node["errors"]:
    if "(between queries)" not in e:
        failed[e.split("-")[0]] = failed.get(e.split("-")[0], 0) + 1
for id in node["acked"] + ids:
    print(id)
print(f"node-postgres: {len(node['acked'])} commits, errors {node['errors'][:6]}, "
      f"stalls {node['stalls'][:4]}; JDBC: {len(ids)} commits, errors by thread {java_errors}, "
      f"{java_stalls} stalls {[l for l in java if l.startswith('error ')][:4]}", file=sys.stderr)
# No answer withheld, and at most the transaction each client had under way when the primary
# died failed.
ok = not node["stalls"] and java_stalls == 0
ok = ok and all(n <= 1 for n in failed.values()) and all(n <= 1 for n in java_errors)
sys.exit(0 if ok else 1)
PY
acked=$(wc -l <"$WORK/acked.txt")
missing=$(psql -X -At -v ON_ERROR_STOP=1 "$(url "$new")" \
  -c "CREATE TEMP TABLE told (id text)" -c "\\copy told FROM '$WORK/acked.txt'" \
  -c "SELECT count(*) FROM told WHERE id NOT IN (SELECT id FROM failover_ids)" | tail -n 1)
[ "$missing" = 0 ] || fail "$missing of the $acked commits the drivers were told of are missing on $new"
say "node-postgres and JDBC through the pooler: $acked commits, every one on $new"
"$EXAMPLE" stop "$WORK/cluster"
