#!/usr/bin/env bash
# Benchmark: idle clients held by `pgflow pooler` and by PgBouncer (Debian's package, 1.18,
# installed when missing), one pooler after the other in the same run, against one throwaway
# PostgreSQL (`pgbench -i -s 10`, max_connections 200, more for a fleet). Both configured alike:
# transaction mode, a pool of 20 server connections, SCRAM-SHA-256 logins of user `bench` from a
# users file that holds its SCRAM secret (copied from pg_authid), TLS for clients that ask (a
# self-signed certificate), max_client_conn IDLE_CLIENTS + 1,000. For each pooler:
#
# 1. Active clients, none idle (after 2 s of warm-up): `pgbench -S -c 50 -j 2 -T BENCH_SECONDS`
#    (sslmode=disable) with every transaction's latency logged (-l): TPS and p99 latency.
#    The same over TLS (sslmode=require): TLS 1.3, whose records pgflow seals itself after the
#    handshake, and TLS 1.2 (PGSSLMAXPROTOCOLVERSION), which stays with OpenSSL's session, with
#    the pooler's CPU per thousand transactions.
# 2. Connect rate: `pgbench -C -S -c 8 -j 2 -T CONNECT_SECONDS` (a SCRAM login and one query a
#    connection), in the clear and with sslmode=require: connections a second, and logins per
#    CPU-second of the pooler (utime + stime of its processes, all threads, from /proc), the
#    figure per core: the client side (libpq derives the SCRAM key, 4,096 rounds of PBKDF2, at
#    each login) shares the machine's cores and may well bound the rate (the machine's idle
#    share is shown).
# 3. Idle clients: IDLE_CLIENTS a pooler process (half in the clear, half TLS), opened by
#    bench/idle_clients.py (Python asyncio, standard library only: SCRAM, TLS, one SELECT 1 each,
#    then idle) in several processes, each from its own source address of 127.0.0.0/8 (ports do
#    not run out) and under the machine's descriptors a process. The pooler's VmRSS before, 3 s
#    after the plain half and 3 s after the TLS half: bytes per idle plain client and per idle
#    TLS client; the time each half took (logins a second under load, and per pooler
#    CPU-second); the pooler's descriptors per idle client. A pooler that runs out of
#    descriptors refuses (or leaves waiting) the clients past them: told, and counted as held.
# 4. With the idle clients held: step 1 again, TPS and p99, and its ratio to step 1's TPS; then a
#    check that every idle client is still open, and they are released.
#
# Goals (pgflow's): <= 600 bytes per idle plain client, <= 4,096 per idle TLS client, >= 5,000
# SCRAM logins per pooler CPU-second, TPS with the idle clients >= 0.95 x without, and on every
# figure at least PgBouncer's. The summary states each (met / not met); the exit status is not a
# verdict on them: it is 1 only when something failed (a pooler that died, a login refused, an
# idle client lost), after the summary of what was measured.
#
# IDLE_CLIENTS (default 18,000) idle clients a pooler process: the machine caps a process at its
# hard `ulimit -n` (20,000 here), which the script raises the soft limit to; a pooler needs a
# descriptor per client at least. FLEET=K (default 1) runs K processes of each pooler on one port
# (pgflow binds it with SO_REUSEPORT, PgBouncer with so_reuseport = 1), each with its own pool of
# 20, and holds IDLE_CLIENTS x K idle clients through the port; memory is summed over the K.
# BENCH_SECONDS (default 15), CONNECT_SECONDS (default 10), CLIENTS (default 50: pgbench's).
# POOLERS (default "pgflow pgbouncer"). POOLER_THREADS sets pgflow's `threads` (default: its own,
# one per two cores). IDLE_PER_PROCESS (default 6,000) idle clients a client process at most.
# TLS_KEY: the certificate's key, `rsa:2048` (default) or any `openssl req -newkey` argument, or
# `ec` for P-256. PGFLOW_BINARY runs another build of pgflow (default build/pgflow).
# The machine may be shared: the figures are of one run, side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_SECONDS=${BENCH_SECONDS:-15}
CONNECT_SECONDS=${CONNECT_SECONDS:-10}
IDLE_CLIENTS=${IDLE_CLIENTS:-18000}
FLEET=${FLEET:-1}
CLIENTS=${CLIENTS:-50}
IDLE_PER_PROCESS=${IDLE_PER_PROCESS:-6000}
TLS_KEY=${TLS_KEY:-rsa:2048}
PGFLOW_BINARY=${PGFLOW_BINARY:-build/pgflow}
POOL_SIZE=20
POOLERS=" ${POOLERS:-pgflow pgbouncer} "
POOLERS=${POOLERS//,/ }
for p in $POOLERS; do
  case "$p" in
    pgflow|pgbouncer) ;;
    *) echo "POOLERS: unknown pooler $p (pgflow, pgbouncer)" >&2; exit 2 ;;
  esac
done
for v in BENCH_SECONDS CONNECT_SECONDS IDLE_CLIENTS FLEET CLIENTS IDLE_PER_PROCESS; do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { echo "$v must be a positive integer" >&2; exit 2; }
done
want() { [[ "$POOLERS" == *" $1 "* ]]; }
TOTAL_IDLE=$((IDLE_CLIENTS * FLEET))
IDLE_PLAIN=$((TOTAL_IDLE / 2))
IDLE_TLS=$((TOTAL_IDLE - IDLE_PLAIN))
CLIENT_PROCESSES=$(( (TOTAL_IDLE + IDLE_PER_PROCESS - 1) / IDLE_PER_PROCESS ))
# (Each client process binds its own source address, 127.0.0.2 on.)
(( CLIENT_PROCESSES <= 250 )) ||
  { echo "more than 250 client processes: raise IDLE_PER_PROCESS" >&2; exit 2; }
# SO_REUSEPORT spreads a fleet's clients by a hash, not evenly: room above the mean.
MAX_CLIENT_CONN=$((IDLE_CLIENTS + 1000))
MAX_CONNECTIONS=$(( FLEET * POOL_SIZE + 40 > 200 ? FLEET * POOL_SIZE + 40 : 200 ))

# File descriptors: a pooler process holds a socket per client at least (and each client process
# IDLE_PER_PROCESS); the soft limit raised to the hard one, which the poolers inherit.
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt $((IDLE_CLIENTS + 200)) ]; then
  echo "IDLE_CLIENTS=$IDLE_CLIENTS needs ulimit -n >= $((IDLE_CLIENTS + 200)) a process;" \
    "the hard limit is $hard" >&2
  exit 2
fi
if [ "$hard" = unlimited ]; then ulimit -n $((MAX_CLIENT_CONN * 3 + 1000))
else ulimit -n "$hard"; fi
if [ "$hard" != unlimited ] && [ "$hard" -lt $((IDLE_PER_PROCESS + 200)) ]; then
  echo "IDLE_PER_PROCESS=$IDLE_PER_PROCESS needs ulimit -n >= $((IDLE_PER_PROCESS + 200));" \
    "the hard limit is $hard" >&2
  exit 2
fi

if want pgbouncer && ! command -v pgbouncer >/dev/null && [ ! -x /usr/sbin/pgbouncer ]; then
  echo "installing pgbouncer (Debian)"
  DEBIAN_FRONTEND=noninteractive apt-get -qq install -y pgbouncer >/dev/null 2>&1 ||
    { apt-get -qq update >/dev/null &&
      DEBIAN_FRONTEND=noninteractive apt-get -qq install -y pgbouncer >/dev/null; }
fi
PGBOUNCER=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)

source bench/common.sh
# Every process started (poolers, the idle clients' coordinators): "pid word" a line, stopped on
# exit if still running and still ours (its command line holds the word: a pid gone may be reused).
: >"$work/pids"
started() { echo "$1 $2" >>"$work/pids"; }
ours() { tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" | grep -q -- "$2"; }
cleanup() {
  local pid word
  while read -r pid word; do
    if ours "$pid" "$word"; then kill -KILL "$pid" 2>/dev/null || true; fi  # (clients first)
  done < <(grep idle_clients "$work/pids" 2>/dev/null)
  while read -r pid word; do
    if ours "$pid" "$word"; then kill "$pid" 2>/dev/null || true; fi
  done <"$work/pids"
  for _ in $(seq 50); do
    local running=0
    while read -r pid word; do if ours "$pid" "$word"; then running=1; fi; done <"$work/pids"
    [ $running = 0 ] && break
    sleep 0.1
  done
  while read -r pid word; do
    if ours "$pid" "$word"; then kill -KILL "$pid" 2>/dev/null || true; fi
  done <"$work/pids"
  scripts/pgtmp.sh stop "$work/pg"
  rm -rf "$work"
}
trap cleanup EXIT

read -r PGFLOW_PORT BOUNCER_PORT < <(scripts/free_ports 2)
sum_over() {  # command pid...: the sum of what `command pid` prints for each
  local f=$1 total=0 pid
  shift
  for pid in "$@"; do
    total=$(awk -v a="$total" -v b="$("$f" "$pid")" 'BEGIN {printf "%.3f", a + b}')
  done
  echo "$total"
}
proc_cpu() {  # CPU seconds (user + system, all threads) process $1 has used so far
  awk -v t="$(getconf CLK_TCK)" '{sub(/.*\) /, ""); split($0, f, " ")
    printf "%.3f", (f[12] + f[13]) / t}' "/proc/$1/stat"
}
rss_kb() { awk '/^VmRSS:/{print $2}' "/proc/$1/status"; }
fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 | wc -l; }
machine_ticks() {  # "idle total": the machine's idle and all CPU time so far, in ticks
  awk '/^cpu /{t = 0; for (i = 2; i <= NF; i++) t += $i; print $5 + $6, t}' /proc/stat
}
record() { echo "$*" >>"$work/results"; }  # name figure value
fail() {  # name message: a real failure, recorded (the exit status) and told
  echo "  FAILED: $1: $2" >&2
  record "$1" failed "$(echo "$2" | tr '\n' ' ')"
}

# --- PostgreSQL, the user, its SCRAM secret, the certificate --------------------------------------
psql -q -d postgres -c "ALTER SYSTEM SET max_connections = $MAX_CONNECTIONS"
scripts/pgtmp.sh pause "$work/pg"
scripts/pgtmp.sh resume "$work/pg"
echo "pgbench -i -s 10"
pgbench -i -s 10 -q bench >"$work/pgbench-init.log" 2>&1 ||
  { cat "$work/pgbench-init.log" >&2; exit 1; }
PASSWORD=bench-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')
psql -q -d bench <<SQL
SET password_encryption = 'scram-sha-256';
CREATE ROLE bench LOGIN PASSWORD '$PASSWORD';
GRANT SELECT ON ALL TABLES IN SCHEMA public TO bench;
SQL
SECRET=$(psql -Atq -d postgres -c "SELECT rolpassword FROM pg_authid WHERE rolname = 'bench'")
[[ "$SECRET" == SCRAM-SHA-256\$* ]] || { echo "no SCRAM secret for bench: $SECRET" >&2; exit 1; }
printf '"bench" "%s"\n' "$SECRET" >"$work/users.txt"
case "$TLS_KEY" in
  ec) key_args=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1) ;;
  *) key_args=(-newkey "$TLS_KEY") ;;
esac
openssl req -x509 "${key_args[@]}" -nodes -days 2 -subj /CN=127.0.0.1 \
  -keyout "$work/server.key" -out "$work/server.crt" >"$work/openssl.log" 2>&1 ||
  { cat "$work/openssl.log" >&2; exit 1; }
chmod 600 "$work/server.key"
# For pgbench, psql and the idle clients; a login that hangs (a pooler out of descriptors does
# not accept) fails after 30 s.
export PGPASSWORD=$PASSWORD PGCONNECT_TIMEOUT=30

# --- the poolers ---------------------------------------------------------------------------------
wait_listening() {  # name port pid log: until pid listens on port, at most 30 s
  for _ in $(seq 300); do
    ss -Hltnp "sport = :$2" 2>/dev/null | grep -q "pid=$3," && return
    kill -0 "$3" 2>/dev/null || { echo "$1 exited:" >&2; cat "$4" >&2; return 1; }
    sleep 0.1
  done
  echo "$1 (pid $3) does not listen on port $2 after 30 s:" >&2; cat "$4" >&2; return 1
}
check_login() {  # name port: one SCRAM login and a query, in the clear and with TLS
  local mode
  for mode in disable require; do
    psql "host=127.0.0.1 port=$2 dbname=bench user=bench sslmode=$mode" -Atqc 'select 1' \
      >/dev/null 2>"$work/check.log" ||
      { echo "$1: a login with sslmode=$mode fails:" >&2; cat "$work/check.log" >&2; return 1; }
  done
}

# Each pooler logs in to PostgreSQL as bench with its password (pgtmp.sh's pg_hba trusts
# 127.0.0.1, so no exchange there): only the clients' logins to the pooler are SCRAM.
start_pgflow() {  # sets PIDS and PORT
  cat >"$work/pgflow.yaml" <<YAML
listen: 127.0.0.1:$PGFLOW_PORT
${POOLER_THREADS:+threads: $POOLER_THREADS}
auth: {method: scram-sha-256, users: $work/users.txt}
tls: {mode: prefer, cert: $work/server.crt, key: $work/server.key}
max_client_conn: $MAX_CLIENT_CONN
databases:
  bench:
    url: "postgres://bench:$PASSWORD@127.0.0.1:$PGPORT/bench"
    pool_mode: transaction
    pool_size: $POOL_SIZE
YAML
  PIDS=() PORT=$PGFLOW_PORT
  local i pid
  for i in $(seq "$FLEET"); do
    "$PGFLOW_BINARY" pooler --config "$work/pgflow.yaml" >"$work/pgflow-$i.log" 2>&1 &
    pid=$!
    started "$pid" pgflow.yaml
    PIDS+=("$pid")
    wait_listening "pgflow pooler $i" "$PORT" "$pid" "$work/pgflow-$i.log"
  done
  echo "pgflow pooler: 127.0.0.1:$PORT, $FLEET process(es): ${PIDS[*]}"
  # What the pooler says of the kernel's limits against its file, measured at start.
  grep -h ' WARN ' "$work"/pgflow-*.log | sort -u | sed 's/^/  (pgflow says) /' | cut -c1-400 ||
    true
}

start_pgbouncer() {  # sets PIDS and PORT
  local bdir="$work/pgbouncer" i pid
  PIDS=() PORT=$BOUNCER_PORT
  mkdir -p "$bdir"
  cp "$work/users.txt" "$work/server.crt" "$work/server.key" "$bdir/"
  for i in $(seq "$FLEET"); do
    # client_tls_sslmode allow: a client that asks gets TLS (as pgflow's tls.mode prefer).
    cat >"$bdir/pgbouncer-$i.ini" <<INI
[databases]
bench = host=127.0.0.1 port=$PGPORT dbname=bench user=bench password=$PASSWORD

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PORT
so_reuseport = 1
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $bdir/users.txt
client_tls_sslmode = allow
client_tls_cert_file = $bdir/server.crt
client_tls_key_file = $bdir/server.key
pool_mode = transaction
default_pool_size = $POOL_SIZE
max_client_conn = $MAX_CLIENT_CONN
ignore_startup_parameters = extra_float_digits
log_connections = 0
log_disconnections = 0
logfile = $bdir/pgbouncer-$i.log
pidfile = $bdir/pgbouncer-$i.pid
INI
    pid=$(launch_pgbouncer "$bdir" "$bdir/pgbouncer-$i.ini" "$bdir/pgbouncer-$i.pid" \
                          "$bdir/pgbouncer-$i.log") || return 1
    started "$pid" pgbouncer
    PIDS+=("$pid")
    wait_listening "pgbouncer $i" "$PORT" "$pid" "$bdir/pgbouncer-$i.log"
  done
  echo "$("$PGBOUNCER" --version | head -n 1): 127.0.0.1:$PORT, $FLEET process(es): ${PIDS[*]}"
  grep -h -E ' (WARNING|ERROR) ' "$bdir"/pgbouncer-*.log | sed -E 's/^[^ ]+ [^ ]+ [^ ]+ [^ ]+ //' |
    sort -u | sed 's/^/  (pgbouncer says) /' | cut -c1-400 || true
}

stop_pooler() {  # the processes of PIDS, and the idle clients' coordinator if still running
  local pid
  # (SIGKILL: the coordinator holds SIGTERM for its check; its workers die with it.)
  [ -z "${IDLE_PID:-}" ] || kill -KILL "$IDLE_PID" 2>/dev/null || true
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do kill "$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do
    local alive=0
    for pid in ${PIDS[@]+"${PIDS[@]}"}; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
}

alive() {  # name: fails, telling, when a process of PIDS is gone
  local pid
  for pid in "${PIDS[@]}"; do
    kill -0 "$pid" 2>/dev/null && continue
    echo "$1: pooler process $pid died; its log:" >&2
    if [ "$1" = pgflow ]; then tail -n 30 "$work"/pgflow-*.log >&2 || true
    else tail -n 30 "$work"/pgbouncer/*.log >&2 || true; fi
    return 1
  done
}

# --- the measurements ----------------------------------------------------------------------------
processed() {  # pgbench's log: its transactions (with -C, its connections)
  awk -F': ' '/^number of transactions actually processed/{split($2, a, "/"); print a[1]}' "$1"
}
# pgbench -S through the pooler, every transaction's latency logged: records TAG_tps and
# TAG_p99 (ms); fails (recorded) when pgbench does.
active() {  # name tag [sslmode [the highest TLS version]]
  local name=$1 tag=$2 mode=${3:-disable} version=${4:-} log="$work/pgbench-$1-$2.log"
  local c0 c1 tps tx p99 cpu
  rm -f "$work/lat-$name-$tag".*
  c0=$(sum_over proc_cpu "${PIDS[@]}")
  if ! env PGSSLMODE="$mode" ${version:+PGSSLMAXPROTOCOLVERSION=$version} \
      timeout -k 5 $((BENCH_SECONDS + 120)) pgbench -h 127.0.0.1 -p "$PORT" -U bench -n -S \
      -c "$CLIENTS" -j 2 -T "$BENCH_SECONDS" -l --log-prefix="$work/lat-$name-$tag" bench >"$log" 2>&1; then
    fail "$name" "pgbench -S ($tag) failed: $(grep -v '^pgbench (' "$log" | tail -n 2)"
    return 0
  fi
  c1=$(sum_over proc_cpu "${PIDS[@]}")
  tps=$(awk '/^tps = /{print $3}' "$log" | tail -n 1)
  tx=$(processed "$log")
  # p99 of the logged latencies (the third field, microseconds), in ms.
  p99=$(cat "$work/lat-$name-$tag".* | awk '{print $3}' | sort -n |
        awk '{v[NR] = $1} END {i = int(NR * 0.99); if (i < 1) i = 1; printf "%.3f", v[i] / 1000}')
  cpu=$(awk -v a="$c0" -v b="$c1" -v tx="$tx" 'BEGIN {printf "%.3f", (b - a) * 1000 / tx}')
  rm -f "$work/lat-$name-$tag".*
  record "$name" "${tag}_tps" "$tps"
  record "$name" "${tag}_p99" "$p99"
  record "$name" "${tag}_cpu" "$cpu"
  printf '  %-9s %-28s %9.0f tps, p99 %6.2f ms, pooler %.3f cpu s/1000 tx\n' "$name" \
    "pgbench -S -c $CLIENTS ($tag)" "$tps" "$p99" "$cpu"
}

# pgbench -C -S: a login (SCRAM, with TLS or not) and one query a connection. Records
# conn_MODE_rate (connections/s), conn_MODE_percpu (logins per pooler CPU-second).
connect_rate() {  # name sslmode
  local name=$1 mode=$2 log="$work/connect-$1-$2.log" c0 c1 i0 t0 i1 t1 rate n cpu
  read -r i0 t0 < <(machine_ticks)
  c0=$(sum_over proc_cpu "${PIDS[@]}")
  if ! PGSSLMODE=$mode timeout -k 5 $((CONNECT_SECONDS + 120)) pgbench -h 127.0.0.1 -p "$PORT" \
      -U bench -n -C -S -c 8 -j 2 -T "$CONNECT_SECONDS" bench >"$log" 2>&1; then
    fail "$name" "pgbench -C (sslmode=$mode) failed: $(grep -v '^pgbench (' "$log" | tail -n 2)"
    return 0
  fi
  c1=$(sum_over proc_cpu "${PIDS[@]}")
  read -r i1 t1 < <(machine_ticks)
  rate=$(awk '/^tps = /{print $3}' "$log" | tail -n 1)
  n=$(processed "$log")
  cpu=$(awk -v a="$c0" -v b="$c1" 'BEGIN {printf "%.3f", b - a}')
  local tag=plain; [ "$mode" = disable ] || tag=tls
  record "$name" "conn_${tag}_rate" "$rate"
  local percpu  # (none when the pooler's CPU time stayed under a clock tick)
  percpu=$(awk -v n="$n" -v c="$cpu" 'BEGIN {if (c > 0) print n / c}')
  [ -z "$percpu" ] || record "$name" "conn_${tag}_percpu" "$percpu"
  awk -v nm="$name" -v m="$mode" -v r="$rate" -v n="$n" -v c="$cpu" \
      -v idle="$(( (i1 - i0) * 100 / (t1 - t0 > 0 ? t1 - t0 : 1) ))" 'BEGIN {
    printf "  %-9s %-28s %9.0f logins/s; pooler %.2f cpu s: %.0f logins per cpu s;" \
      " machine %d%% idle\n", nm, "pgbench -C, sslmode=" m, r, c, (c > 0 ? n / c : 0), idle }'
}

# Idle clients: IDLE_PLAIN plain then IDLE_TLS TLS through bench/idle_clients.py, the pooler's
# memory and descriptors between; then `active NAME held`; then the check that all are open.
IDLE_PID=
wait_status() {  # name lines seconds: until the status file has that many lines
  local status="$work/idle-$1.status"
  for _ in $(seq $(($3 * 10))); do
    [ -s "$status" ] && [ "$(wc -l <"$status")" -ge "$2" ] && return
    kill -0 "$IDLE_PID" 2>/dev/null || {
      echo "$1: the idle clients' process exited:" >&2; cat "$work/idle-$1.log" >&2; return 1; }
    sleep 0.1
  done
  echo "$1: the idle clients are not in after $3 s" >&2; cat "$work/idle-$1.log" >&2; return 1
}
idle() {  # name
  local name=$1 status="$work/idle-$1.status" rss0 rss1 rss2 fd0 fd1 fd2 limit
  limit=$(( TOTAL_IDLE / 20 + 300 ))  # seconds for each half: 20 logins/s at the least
  rm -f "$status"
  rss0=$(sum_over rss_kb "${PIDS[@]}") fd0=$(sum_over fds "${PIDS[@]}")
  python3 bench/idle_clients.py --port "$PORT" --plain "$IDLE_PLAIN" --tls "$IDLE_TLS" \
    --processes "$CLIENT_PROCESSES" --status "$status" --pids "${PIDS[*]}" \
    >"$work/idle-$name.log" 2>&1 &
  IDLE_PID=$!
  started "$IDLE_PID" idle_clients
  wait_status "$name" 1 "$limit"
  sleep 3  # idle (pgflow parks a client idle for a second after its last transaction)
  alive "$name"
  rss1=$(sum_over rss_kb "${PIDS[@]}") fd1=$(sum_over fds "${PIDS[@]}")
  kill -USR1 "$IDLE_PID"
  wait_status "$name" 2 "$limit"
  sleep 3
  alive "$name"
  rss2=$(sum_over rss_kb "${PIDS[@]}") fd2=$(sum_over fds "${PIDS[@]}")
  local tag line ok failed secs cpu idlepct rssa rssb fda fdb percpu
  for tag in plain tls; do
    line=$(grep "^$tag " "$status")
    read -r _ ok failed secs cpu idlepct <<<"$line"
    if [ $tag = plain ]; then rssa=$rss0 rssb=$rss1 fda=$fd0 fdb=$fd1
    else rssa=$rss1 rssb=$rss2 fda=$fd1 fdb=$fd2; fi
    [ "$failed" = 0 ] ||
      fail "$name" "idle clients, $(grep "^$tag: .* failed" "$work/idle-$name.log" | head -n 1)"
    record "$name" "idle_${tag}_held" "$ok"
    record "$name" "idle_${tag}_wanted" "$((ok + failed))"
    if [ "$ok" -gt 0 ]; then
      record "$name" "idle_${tag}_bytes" \
        "$(awk -v a="$rssa" -v b="$rssb" -v n="$ok" 'BEGIN {print (b - a) * 1024 / n}')"
      record "$name" "idle_${tag}_fds" \
        "$(awk -v a="$fda" -v b="$fdb" -v n="$ok" 'BEGIN {print (b - a) / n}')"
      record "$name" "idle_${tag}_rate" "$(awk -v n="$ok" -v s="$secs" 'BEGIN {print n / s}')"
      percpu=$(awk -v n="$ok" -v c="$cpu" 'BEGIN {if (c > 0) print n / c}')
      [ -z "$percpu" ] || record "$name" "idle_${tag}_percpu" "$percpu"
    fi
    awk -v nm="$name" -v t="$tag" -v ok="$ok" -v s="$secs" -v c="$cpu" -v i="$idlepct" \
        -v a="$rssa" -v b="$rssb" -v fa="$fda" -v fb="$fdb" 'BEGIN {
      printf "  %-9s %-28s %d in %.1f s: %.0f logins/s, %.0f per pooler cpu s" \
        " (machine %d%% idle);\n", nm, "idle " t " clients", ok, s, ok / s, (c > 0 ? ok / c : 0), i
      printf "  %-9s %-28s VmRSS %d -> %d kB: %.0f bytes per idle client; %.2f descriptors each\n",
        "", "", a, b, (ok > 0 ? (b - a) * 1024 / ok : 0), (ok > 0 ? (fb - fa) / ok : 0) }'
  done
  active "$name" held
  alive "$name"
  kill -TERM "$IDLE_PID"
  local rc=0
  wait "$IDLE_PID" || rc=$?
  IDLE_PID=
  line=$(grep '^open ' "$status" || true)
  if [ -z "$line" ]; then
    fail "$name" "the idle clients' check did not run (exit $rc):
      $(tail -n 3 "$work/idle-$name.log")"
  else
    read -r _ ok wanted <<<"$line"
    record "$name" idle_open "$ok"
    record "$name" idle_total "$wanted"
    echo "  $name: $ok of $wanted idle clients still open when released"
    [ "$ok" = "$wanted" ] ||
      fail "$name" "$((wanted - ok)) of $wanted idle clients were lost while idle"
  fi
}

measure() {  # name: the whole sequence for one pooler (in a subshell: a failure ends it only)
  local name=$1
  PIDS=()
  trap stop_pooler EXIT
  "start_$name"
  check_login "$name" "$PORT"
  # Warm-up, not measured: the table into shared buffers, the pools filled.
  PGSSLMODE=disable pgbench -h 127.0.0.1 -p "$PORT" -U bench -n -S -c "$CLIENTS" -j 2 -T 2 bench \
    >"$work/warm-$name.log" 2>&1 || { cat "$work/warm-$name.log" >&2; return 1; }
  active "$name" base
  active "$name" tls13 require
  active "$name" tls12 require TLSv1.2
  connect_rate "$name" disable
  connect_rate "$name" require
  alive "$name"
  sleep 2
  idle "$name"
  alive "$name"
}

: >"$work/results"
echo "each pooler: transaction mode, pool size $POOL_SIZE, SCRAM-SHA-256, TLS key $TLS_KEY;" \
  "$IDLE_CLIENTS idle clients a process x $FLEET process(es) ($IDLE_PLAIN plain, $IDLE_TLS TLS)" \
  "from $CLIENT_PROCESSES client processes"
for p in $POOLERS; do
  echo "$p"
  set +e
  (set -e; measure "$p")
  rc=$?
  set -e
  if [ $rc != 0 ]; then fail "$p" "stopped by a failure (exit $rc)"; fi
  sleep 2  # the ports' TIME_WAIT and the pooler's exit behind us
done

# --- summary -------------------------------------------------------------------------------------
python3 - "$work/results" "$IDLE_CLIENTS" "$FLEET" "$CLIENTS" "$BENCH_SECONDS" "$IDLE_PLAIN" \
  "$IDLE_TLS" <<'PY'
import sys
results = {}
failures = {}
for line in open(sys.argv[1]):
    name, key, value = line.split(maxsplit=2)
    if key == "failed":
        failures.setdefault(name, []).append(value.strip())
    else:
        results[name, key] = float(value)
n, fleet, clients, seconds, plain, tls = sys.argv[2:8]
for name in ("pgflow", "pgbouncer"):
    if (name, "held_tps") in results and (name, "base_tps") in results:
        results[name, "tps_ratio"] = results[name, "held_tps"] / results[name, "base_tps"]
print(f"summary: {int(n):,} idle clients a pooler process x {fleet} ({int(plain):,} plain, "
      f"{int(tls):,} TLS in all); pgbench -S -c {clients} -T {seconds}")
print(f"{'figure':<46} {'pgflow':>9} {'pgbouncer':>9} {'ratio':>6}  goal for pgflow")

def fmt(v, spec):
    return format(v, spec) if v is not None else "n/a"

def line(label, key, spec, lower_better, bound=None):
    """One figure: pgflow's, PgBouncer's, the ratio, and the goal: `bound` (a number pgflow's
    must not pass, or reach) and at least PgBouncer's."""
    a, b = results.get(("pgflow", key)), results.get(("pgbouncer", key))
    # Compared as shown: 1.0003 descriptors a client is not more than 1.00.
    a, b = (float(format(v, spec.replace(",", ""))) if v is not None else None for v in (a, b))
    ratio = f"{a / b:.2f}" if a is not None and b else "n/a"
    goals, met = [], a is not None
    if bound is not None:
        goals.append(f"{'<=' if lower_better else '>='} {bound:,}")
        met = met and (a <= bound if lower_better else a >= bound)
    if b is not None:
        goals.append("<= pgbouncer" if lower_better else ">= pgbouncer")
        met = met and (a <= b if lower_better else a >= b)
    verdict = "met" if met else "not met"
    if not goals:
        goals, verdict = ["vs pgbouncer"], "n/a"
    elif a is None:
        verdict = "not measured"
    print(f"{label:<46} {fmt(a, spec):>9} {fmt(b, spec):>9} {ratio:>6}  "
          f"{', '.join(goals)}: {verdict}")

line("bytes per idle plain client", "idle_plain_bytes", ",.0f", True, 600)
line("bytes per idle TLS client", "idle_tls_bytes", ",.0f", True, 4096)
line("idle plain clients held", "idle_plain_held", ",.0f", False, int(plain))
line("idle TLS clients held", "idle_tls_held", ",.0f", False, int(tls))
line("descriptors per idle plain client", "idle_plain_fds", ".2f", True)
line("descriptors per idle TLS client", "idle_tls_fds", ".2f", True)
line("SCRAM logins/s (pgbench -C)", "conn_plain_rate", ",.0f", False)
line("SCRAM logins per pooler cpu s (pgbench -C)", "conn_plain_percpu", ",.0f", False, 5000)
line("TLS+SCRAM logins/s (pgbench -C)", "conn_tls_rate", ",.0f", False)
line("TLS+SCRAM logins per pooler cpu s (pgbench -C)", "conn_tls_percpu", ",.0f", False)
line("idle plain logins/s (many at once)", "idle_plain_rate", ",.0f", False)
line("idle plain logins per pooler cpu s", "idle_plain_percpu", ",.0f", False, 5000)
line("idle TLS logins/s (many at once)", "idle_tls_rate", ",.0f", False)
line("idle TLS logins per pooler cpu s", "idle_tls_percpu", ",.0f", False)
line("tps, no idle clients", "base_tps", ",.0f", False)
line("p99 latency ms, no idle clients", "base_p99", ".2f", True)
line("tps, idle clients held", "held_tps", ",.0f", False)
line("p99 latency ms, idle clients held", "held_p99", ".2f", True)
line("tps held / tps none", "tps_ratio", ".3f", False, 0.95)
line("pooler cpu s per 1000 tx, no idle clients", "base_cpu", ".3f", True)
line("tps over TLS 1.3", "tls13_tps", ",.0f", False)
line("pooler cpu s per 1000 tx over TLS 1.3", "tls13_cpu", ".3f", True)
line("tps over TLS 1.2", "tls12_tps", ",.0f", False)
line("pooler cpu s per 1000 tx over TLS 1.2", "tls12_cpu", ".3f", True)
for name, what in failures.items():
    for w in what:
        print(f"FAILED {name}: {w}")
PY
if grep -q ' failed ' "$work/results"; then exit 1; fi
