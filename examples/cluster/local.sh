#!/usr/bin/env bash
# A three-node cluster on this machine, to watch a failover: three etcd members (Debian's
# etcd-server) and three `pgflow node`s, each with its own PostgreSQL, on free loopback ports.
#
#   examples/cluster/local.sh start DIR   # the first node initializes, the others clone it
#   examples/cluster/local.sh stop DIR    # stops the nodes (and their servers) and etcd
#
# DIR holds the node files (n1.yaml ...), the data directories and the logs; remove it after
# `stop`. Run as root (the nodes then run as the postgres user: PostgreSQL refuses root) or as
# the user the nodes should run as. PGFLOW names the binary (default: build/pgflow).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
pgflow="${PGFLOW:-$here/../../build/pgflow}"
command -v etcd >/dev/null || { echo "etcd is not installed (apt-get install etcd-server)" >&2; exit 1; }
[ -x "$pgflow" ] || pgflow="$(command -v pgflow || true)"
[ -n "$pgflow" ] || { echo "no pgflow binary (scripts/setup.sh builds build/pgflow)" >&2; exit 1; }

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
action="$1"
dir="$2"

as_node_user() {
  if [ "$(id -u)" = 0 ]; then
    HOME=~postgres setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
  else
    "$@"
  fi
}

run_node() {  # in the background: exec all the way, so that $! is the node's own pid
  if [ "$(id -u)" = 0 ]; then
    HOME=~postgres exec setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
  else
    exec "$@"
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for() {  # seconds, what, command...
  local seconds="$1" what="$2"
  shift 2
  for _ in $(seq $((seconds * 5))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "$what did not happen within $seconds s; see the logs in $dir" >&2
  return 1
}

start() {
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  [ ! -e "$dir/n1.yaml" ] || { echo "$dir already holds a cluster: stop it, remove it" >&2; exit 1; }
  chmod 755 "$dir"
  [ "$(id -u)" != 0 ] || chown postgres: "$dir"

  local client=() peer=() initial="" endpoints=""
  for i in 1 2 3; do
    client[$i]=$(free_port)
    peer[$i]=$(free_port)
    initial+="${initial:+,}e$i=http://127.0.0.1:${peer[$i]}"
    endpoints+="${endpoints:+, }http://127.0.0.1:${client[$i]}"
  done
  for i in 1 2 3; do
    etcd --name "e$i" --data-dir "$dir/etcd$i" \
      --listen-client-urls "http://127.0.0.1:${client[$i]}" \
      --advertise-client-urls "http://127.0.0.1:${client[$i]}" \
      --listen-peer-urls "http://127.0.0.1:${peer[$i]}" \
      --initial-advertise-peer-urls "http://127.0.0.1:${peer[$i]}" \
      --initial-cluster "$initial" --initial-cluster-state new --pre-vote \
      >"$dir/etcd$i.log" 2>&1 &
    echo $! >"$dir/etcd$i.pid"
  done
  wait_for 30 "etcd's health" curl -sf "http://127.0.0.1:${client[1]}/health"

  for i in 1 2 3; do
    cat >"$dir/n$i.yaml" <<YAML
name: n$i
cluster: local
etcd: [$endpoints]
data_dir: $dir/n$i
postgres: {listen: 127.0.0.1:$(free_port)}
api: 127.0.0.1:$(free_port)
ttl: 10s
loop_wait: 2s
retry_timeout: 4s
synchronous: on
YAML
    [ "$(id -u)" != 0 ] || chown postgres: "$dir/n$i.yaml"
  done
  as_node_user test -r "$dir/n1.yaml" ||
    { echo "the postgres user cannot read $dir: every directory above it must let it" >&2; exit 1; }
  if ! as_node_user test -x "$pgflow"; then
    # (A checkout in a directory only root may enter: the nodes run a copy kept in DIR.)
    echo "the postgres user cannot run $pgflow: the nodes run a copy in $dir/bin" >&2
    mkdir -p "$dir/bin"
    cp "$pgflow" "$dir/bin/pgflow"
    chmod -R a+rX "$dir/bin"
    pgflow="$dir/bin/pgflow"
  fi
  for i in 1 2 3; do
    run_node "$pgflow" node --config "$dir/n$i.yaml" >"$dir/n$i.log" 2>&1 &
    echo $! >"$dir/n$i.pid"
    # The first node initializes the cluster; the others clone it once it leads.
    [ "$i" != 1 ] || wait_for 60 "n1 leading" "$pgflow" cluster status --config "$dir/n1.yaml"
  done
  wait_for 120 "every member streaming, one synchronously" members_streaming
  "$pgflow" cluster status --config "$dir/n1.yaml"
  cat <<TEXT

The cluster runs. Watch it:   $pgflow cluster status --config $dir/n1.yaml
Fail its primary over:        kill -9 the leader's node (its pid is in $dir/nN.pid)
Stop it:                      $0 stop $dir
TEXT
}

members_streaming() {  # (and one of them synchronous)
  "$pgflow" cluster status --json --config "$dir/n1.yaml" | python3 -c '
import json, sys
members = json.load(sys.stdin)["members"]
streaming = sum(m["streaming"] for m in members)
synchronous = sum(m["synchronous"] for m in members)
sys.exit(0 if streaming == 2 and synchronous == 1 else 1)'
}

stop() {
  [ -d "$dir" ] || usage
  for pidfile in "$dir"/n*.pid "$dir"/etcd*.pid; do
    [ -e "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    # (A node stops its server cleanly on SIGTERM.)
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
  done
  echo "stopped; remove $dir when done with it"
}

case "$action" in
  start) start ;;
  stop) stop ;;
  *) usage ;;
esac
