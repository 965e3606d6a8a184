#!/usr/bin/env bash
# Benchmark: a primary's failure under `pgflow node` and under Patroni (Debian's patroni, with
# HAProxy routing on its /primary endpoint, both installed when missing), on the same three
# etcd members, in one run.
#
# For each system and mode (MODES, default "sync async": synchronous replication managed by
# the nodes, or not), a cluster of three PostgreSQL servers with the same timings (TTL,
# LOOP_WAIT, RETRY, default 10 s, 2 s, 4 s) and a client committing one row at a time
# (bench/failover_writer.py, reconnecting 20 ms after an error) through the system's way in:
#   pgflow:   `pgflow pooler` following the cluster (databases.<name>.cluster)
#   Patroni:  HAProxy, checking each node's /primary every 500 ms (fall 2, rise 1)
# TRIALS times (default 5): after KILL_AT seconds of load (default 5), right after the leader
# renewed its lease (so that it ends a whole ttl later under both systems), the leader's agent
# and every process of its server are killed with -9 at once (a machine lost); the client goes on
# until it has committed on the new primary; then the killed node is started again and must
# rejoin before the next trial. Printed for each trial and as medians and totals: the time
# from the kill to the first commit on the new primary, the client's errors, and the commits
# it was told of that the new primary lacks. Goals (issue 46): the median failover within
# TTL + 2 s and at most Patroni's, no acknowledged commit lost in synchronous mode, fewer
# client-visible errors than through Patroni and HAProxy.
# The machine may be shared: the figures are of one run, side by side. KEEP=dir keeps every
# log (nodes, pooler, Patroni, HAProxy, clients) there.
set -euo pipefail
cd "$(dirname "$0")/.."
TRIALS=${TRIALS:-5}
MODES=${MODES:-"sync async"}
TTL=${TTL:-10}
LOOP_WAIT=${LOOP_WAIT:-2}
RETRY=${RETRY:-4}
KILL_AT=${KILL_AT:-5}
source bench/common.sh   # (its throwaway server stays idle), $work
for package in patroni haproxy python3-psycopg2; do
  dpkg -s "$package" >/dev/null 2>&1 && continue
  echo "installing $package (Debian)"
  DEBIAN_FRONTEND=noninteractive apt-get -qq install -y "$package" >/dev/null 2>&1 ||
    { apt-get -qq update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get -qq install -y "$package" >/dev/null; }
done
systemctl stop patroni haproxy 2>/dev/null || true  # (the packages' own services, if started)
PGFLOW=$(realpath "$PGFLOW_BINARY")
chown postgres: "$work"
if ! runuser -u postgres -- test -x "$PGFLOW"; then  # (a checkout only root may enter)
  cp "$PGFLOW" "$work/pgflow" && chmod 755 "$work/pgflow" && PGFLOW=$work/pgflow
fi
pids=()
cleanup_all() {
  if [ -n "${KEEP:-}" ]; then
    mkdir -p "$KEEP"
    (cd "$work" && find . -maxdepth 2 -name '*.log' -exec cp --parents {} "$KEEP" \;) || true
  fi
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  pkill -9 -f "postgres -D $work/" 2>/dev/null || true
  scripts/pgtmp.sh stop "$work/pg" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup_all EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# Runs "$@" as postgres in the background, logging into $1; its pid (the program's own:
# setpriv execs) in $spawned and appended to pids. (Not in a subshell: they would be lost.)
spawned=""
spawn_postgres() {
  local log="$1"
  shift
  HOME=~postgres setpriv --reuid=postgres --regid=postgres --init-groups -- "$@" >>"$log" 2>&1 &
  spawned=$!
  disown  # (killed with -9 on purpose: no "Killed" from bash)
  pids+=("$spawned")
}
wait_until() {  # seconds, what, command...
  local seconds="$1" what="$2"
  shift 2
  for _ in $(seq $((seconds * 5))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "$what did not happen within $seconds s" >&2
  return 1
}

# Three etcd members, shared by both systems.
etcd_hosts=""
etcd_urls=""
initial=""
declare -a client peer
for i in 1 2 3; do
  client[$i]=$(free_port)
  peer[$i]=$(free_port)
  initial+="${initial:+,}e$i=http://127.0.0.1:${peer[$i]}"
  etcd_hosts+="${etcd_hosts:+,}127.0.0.1:${client[$i]}"
  etcd_urls+="${etcd_urls:+, }http://127.0.0.1:${client[$i]}"
done
for i in 1 2 3; do
  etcd --name "e$i" --data-dir "$work/etcd$i" \
    --listen-client-urls "http://127.0.0.1:${client[$i]}" \
    --advertise-client-urls "http://127.0.0.1:${client[$i]}" \
    --listen-peer-urls "http://127.0.0.1:${peer[$i]}" \
    --initial-advertise-peer-urls "http://127.0.0.1:${peer[$i]}" \
    --initial-cluster "$initial" --initial-cluster-state new --pre-vote >"$work/etcd$i.log" 2>&1 &
  pids+=($!)
  disown
done
wait_until 30 "etcd's health" curl -sf "http://127.0.0.1:${client[1]}/health"

# ---- the systems: each defines start_node N, agent_pid N, data_dir N, leader, converged,
# ---- server_url N (direct) and entry_dsn (the client's way in).

declare -A agent pg_port api_port
cluster_dir=""

pgflow_setup() {  # mode
  cluster_dir="$work/pgflow-$1"
  mkdir -p "$cluster_dir" && chown postgres: "$cluster_dir"
  for n in 1 2 3; do
    pg_port[$n]=$(free_port)
    api_port[$n]=$(free_port)
    cat >"$cluster_dir/n$n.yaml" <<YAML
name: n$n
cluster: failover-$1
etcd: [$etcd_urls]
data_dir: $cluster_dir/n$n
postgres: {listen: 127.0.0.1:${pg_port[$n]}}
api: 127.0.0.1:${api_port[$n]}
ttl: ${TTL}s
loop_wait: ${LOOP_WAIT}s
retry_timeout: ${RETRY}s
synchronous: $([ "$1" = sync ] && echo on || echo off)
YAML
  done
  chown postgres: "$cluster_dir"/*.yaml
  pgflow_start_node 1
  wait_until 60 "n1 leading" "$PGFLOW" cluster status --config "$cluster_dir/n1.yaml"
  pgflow_start_node 2
  pgflow_start_node 3
  printf '"postgres" ""\n' >"$cluster_dir/users.txt"
  entry_port=$(free_port)
  cat >"$cluster_dir/pooler.yaml" <<YAML
listen: 127.0.0.1:$entry_port
auth: {method: trust, users: users.txt}
databases:
  bench: {url: 'postgres://postgres@127.0.0.1:1/postgres', cluster: {name: failover-$1, etcd: [$etcd_urls]}}
YAML
  "$PGFLOW" pooler --config "$cluster_dir/pooler.yaml" >"$cluster_dir/pooler.log" 2>&1 &
  pids+=($!)
  disown
  entry_dsn="host=127.0.0.1 port=$entry_port dbname=bench user=postgres"
}
pgflow_start_node() {
  spawn_postgres "$cluster_dir/n$1.log" "$PGFLOW" node --config "$cluster_dir/n$1.yaml"
  agent[$1]=$spawned
}
pgflow_leader_key() { echo "/pgflow/failover-$1/leader"; }
pgflow_leader() {
  "$PGFLOW" cluster status --json --config "$cluster_dir/n1.yaml" 2>/dev/null |
    python3 -c 'import json,sys; l=json.load(sys.stdin)["leader"]; print(l[1:] if l else "")'
}
pgflow_converged() {  # mode
  "$PGFLOW" cluster status --json --config "$cluster_dir/n1.yaml" 2>/dev/null | python3 -c '
import json, sys
s = json.load(sys.stdin)
r = [m for m in s["members"] if m["role"] == "replica"]
ok = s["leader"] and len(r) == 2 and all(m["streaming"] for m in r)
ok = ok and (sys.argv[1] != "sync" or sum(m["synchronous"] for m in r) == 1)
sys.exit(0 if ok else 1)' "$1"
}

patroni_setup() {  # mode
  cluster_dir="$work/patroni-$1"
  mkdir -p "$cluster_dir" && chown postgres: "$cluster_dir"
  for n in 1 2 3; do
    pg_port[$n]=$(free_port)
    api_port[$n]=$(free_port)
    cat >"$cluster_dir/p$n.yaml" <<YAML
scope: failover-$1
name: n$n
restapi: {listen: 127.0.0.1:${api_port[$n]}, connect_address: 127.0.0.1:${api_port[$n]}}
etcd3: {hosts: "$etcd_hosts"}
bootstrap:
  dcs:
    ttl: $TTL
    loop_wait: $LOOP_WAIT
    retry_timeout: $RETRY
    maximum_lag_on_failover: 1048576
    synchronous_mode: $([ "$1" = sync ] && echo true || echo false)
    postgresql:
      use_pg_rewind: true
      parameters: {wal_level: replica, hot_standby: "on", wal_log_hints: "on", max_wal_senders: 10, max_replication_slots: 10, wal_keep_size: 256MB}
  initdb: [{encoding: UTF8}, data-checksums]
  pg_hba: ["local all all trust", "host replication all 127.0.0.1/32 trust", "host all all 127.0.0.1/32 trust"]
postgresql:
  listen: 127.0.0.1:${pg_port[$n]}
  connect_address: 127.0.0.1:${pg_port[$n]}
  data_dir: $cluster_dir/n$n
  bin_dir: $PGBIN
  pgpass: $cluster_dir/pgpass$n
  authentication:
    superuser: {username: postgres, password: bench}
    replication: {username: postgres, password: bench}
  parameters: {unix_socket_directories: /tmp}
YAML
  done
  chown postgres: "$cluster_dir"/*.yaml
  patroni_start_node 1
  wait_until 60 "n1 leading" patroni_has_leader
  patroni_start_node 2
  patroni_start_node 3
  entry_port=$(free_port)
  {
    printf 'global\n  maxconn 1000\ndefaults\n  mode tcp\n  timeout connect 2s\n'
    printf '  timeout client 30m\n  timeout server 30m\n  timeout check 1s\n'
    printf 'frontend primary\n  bind 127.0.0.1:%s\n  default_backend primary\n' "$entry_port"
    printf 'backend primary\n  option httpchk GET /primary\n  http-check expect status 200\n'
    printf '  default-server inter 500ms fall 2 rise 1 on-marked-down shutdown-sessions\n'
    for n in 1 2 3; do
      printf '  server n%s 127.0.0.1:%s check port %s\n' "$n" "${pg_port[$n]}" "${api_port[$n]}"
    done
  } >"$cluster_dir/haproxy.cfg"
  haproxy -f "$cluster_dir/haproxy.cfg" -db >"$cluster_dir/haproxy.log" 2>&1 &
  pids+=($!)
  disown
  entry_dsn="host=127.0.0.1 port=$entry_port dbname=postgres user=postgres"
}
patroni_start_node() {
  spawn_postgres "$cluster_dir/p$1.log" patroni "$cluster_dir/p$1.yaml"
  agent[$1]=$spawned
}
patroni_cluster_json() {
  for n in 1 2 3; do curl -sf "http://127.0.0.1:${api_port[$n]}/cluster" && return; done
  return 1
}
patroni_leader_key() { echo "/service/failover-$1/leader"; }
patroni_has_leader() { patroni_cluster_json | grep -q '"role": *"leader"'; }
patroni_leader() {
  patroni_cluster_json 2>/dev/null | python3 -c '
import json, sys
for m in json.load(sys.stdin)["members"]:
    if m["role"] == "leader": print(m["name"][1:])'
}
patroni_converged() {  # mode
  patroni_cluster_json 2>/dev/null | python3 -c '
import json, sys
ms = json.load(sys.stdin)["members"]
lead = [m for m in ms if m["role"] == "leader" and m["state"] == "running"]
rest = [m for m in ms if m["role"] != "leader" and m["state"] in ("running", "streaming")]
ok = len(lead) == 1 and len(rest) == 2 and all(m.get("lag", 0) != "unknown" for m in rest)
ok = ok and (sys.argv[1] != "sync" or sum(m["role"] == "sync_standby" for m in rest) == 1)
sys.exit(0 if ok else 1)' "$1"
}

# Every process of node $1's server (its postmaster and the postmaster's children).
server_pids() {
  local pidfile="$cluster_dir/n$1/postmaster.pid" pm
  [ -f "$pidfile" ] || return 0
  pm=$(head -n 1 "$pidfile")
  echo "$pm"
  cat /proc/"$pm"/task/*/children 2>/dev/null || true
}

# Returns once the lease of etcd key $1 (the leader key) has just been renewed, so that a
# kill then ends it a whole ttl later for both systems alike: the failover's time is the ttl
# plus how fast each system reacts, not also where in its loop_wait the kill fell (up to
# loop_wait of noise in a median of a few trials).
wait_for_renewal() {
  python3 - "$1" "http://127.0.0.1:${client[1]}" <<'PY'
import base64, json, sys, time, urllib.request
key, etcd = sys.argv[1], sys.argv[2]
def call(path, body):
    request = urllib.request.Request(etcd + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(request, timeout=2))
kvs = call("/v3/kv/range", {"key": base64.b64encode(key.encode()).decode()}).get("kvs", [])
if not kvs:
    sys.exit(1)
lease, last = kvs[0]["lease"], None
deadline = time.time() + 30
while time.time() < deadline:
    ttl = int(call("/v3/lease/timetolive", {"ID": lease}).get("TTL", -1))
    if last is not None and ttl > last:  # (whole seconds: a renewal makes it jump up)
        sys.exit(0)
    last = ttl
    time.sleep(0.02)
sys.exit(1)
PY
}

# One trial of system $1 in mode $2, number $3: its line of results in $cluster_dir/result$3
# (failover seconds, client errors, acknowledged commits lost, acknowledged commits).
trial() {
  local system="$1" mode="$2" k="$3" leader log stop t_kill old_port
  leader=$("${system}_leader")
  psql -q -h 127.0.0.1 -p "${pg_port[$leader]}" -U postgres -d postgres \
    -c "CREATE TABLE IF NOT EXISTS failover_ids (id bigint PRIMARY KEY)"
  log="$cluster_dir/writer$k.log"
  stop="$cluster_dir/stop$k"
  # (Debian's Python, where python3-psycopg2 is: not another python3 first in the PATH.)
  /usr/bin/python3 bench/failover_writer.py "$entry_dsn" "$log" "$stop" $((k * 10000000)) &
  local writer=$!
  sleep "$KILL_AT"
  wait_for_renewal "$("${system}_leader_key" "$mode")" ||
    echo "  (the leader's lease was not seen renewed: killed anyway)" >&2
  old_port=${pg_port[$leader]}
  t_kill=$(now)
  kill -9 "${agent[$leader]}" $(server_pids "$leader") 2>/dev/null || true
  # Until the client has committed on another server, then 2 s more.
  for _ in $(seq 600); do
    awk -v t="$t_kill" -v p="$old_port" '$1 == "ok" && $2 > t && $4 != p {f=1} END {exit !f}' \
      "$log" 2>/dev/null && break
    kill -0 "$writer" 2>/dev/null || { echo "the client ended:" >&2; cat "$log" >&2; exit 1; }
    sleep 0.1
  done
  sleep 2
  touch "$stop"
  wait "$writer" || true
  local new
  new=$("${system}_leader")
  psql -Atq -h 127.0.0.1 -p "${pg_port[$new]}" -U postgres -d postgres \
    -c "SELECT id FROM failover_ids WHERE id >= $((k * 10000000)) AND id < $(((k + 1) * 10000000))" \
    >"$cluster_dir/present$k"
  python3 - "$log" "$cluster_dir/present$k" "$t_kill" "$old_port" >"$cluster_dir/result$k" <<'PY'
import sys
log, present, t_kill, old_port = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
have = set(open(present).read().split())
acked, first, errors = [], None, 0
for line in open(log):
    f = line.split()
    if f[0] == "ok":
        acked.append(f[2])
        if first is None and float(f[1]) > t_kill and f[3] != old_port:
            first = float(f[1])
    elif float(f[1]) > t_kill:
        errors += 1
lost = sum(1 for a in acked if a not in have)
failover = "none" if first is None else f"{first - t_kill:.2f}"
print(f"{failover} {errors} {lost} {len(acked)}")
PY
  # The killed node again, rejoining, before the next trial.
  "${system}_start_node" "$leader"
  wait_until 180 "node n$leader rejoining" "${system}_converged" "$mode" || true
}

declare -A results
for mode in $MODES; do
  for system in pgflow patroni; do
    echo "== $system, $mode: forming the cluster"
    "${system}_setup" "$mode"
    wait_until 180 "the $system cluster converging" "${system}_converged" "$mode"
    sleep 2
    for k in $(seq 1 "$TRIALS"); do
      trial "$system" "$mode" "$k"
      line=$(cat "$cluster_dir/result$k")
      read -r failover errors lost acked <<<"$line"
      printf '  trial %d: failover %s s, %s client errors, %s of %s acknowledged commits lost\n' \
        "$k" "$failover" "$errors" "$lost" "$acked"
      results[$system-$mode]+="$line;"
    done
    for pid in "${pids[@]:3}"; do kill -9 "$pid" 2>/dev/null || true; done
    pids=("${pids[@]:0:3}")
    pkill -9 -f "postgres -D $cluster_dir/" 2>/dev/null || true
    pkill -9 -f "$cluster_dir/" 2>/dev/null || true
  done
done

echo
echo "== failover of a 3-node cluster, ttl ${TTL} s, loop_wait ${LOOP_WAIT} s, $TRIALS kills each (median failover; errors and lost commits summed)"
for mode in $MODES; do
  python3 - "$mode" "${results[pgflow-$mode]}" "${results[patroni-$mode]}" "$TTL" <<'PY'
import statistics, sys
mode, pgflow, patroni, ttl = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
def summary(text):
    rows = [r.split() for r in text.split(";") if r.strip()]
    times = [float(r[0]) for r in rows if r[0] != "none"]
    return (statistics.median(times) if times else float("nan"), sum(int(r[1]) for r in rows),
            sum(int(r[2]) for r in rows), sum(int(r[3]) for r in rows), len(rows) - len(times))
a, b = summary(pgflow), summary(patroni)
for name, s in (("pgflow node + pooler", a), ("Patroni + HAProxy", b)):
    print(f"  {mode:5} {name:22} failover {s[0]:5.2f} s   errors {s[1]:4}   lost {s[2]:3} of {s[3]}"
          f"{'   no failover in ' + str(s[4]) if s[4] else ''}")
print(f"  {mode:5} pgflow / Patroni: failover {a[0] / b[0]:.2f}x (goal <= 1, and <= ttl + 2 s: "
      f"{'yes' if a[0] <= ttl + 2 else 'no'}), errors {a[1]} vs {b[1]}")
PY
done
