#!/usr/bin/env bash
# Benchmark: the routing proxy (`pgflow pooler` with a database that lists a replica) against
# the same pooler without routing and against Pgpool-II 4.3 (Debian's `pgpool2`, installed when
# missing: streaming-replication mode, load balancing on), in one run, on one primary and one
# streaming replica of it (pg_basebackup -R) on this machine. They share its cores with the
# poolers and pgbench, so the figures count what the routing costs, not what a replica on
# another machine would add.
#
#   pgbench -i -s 10, then for each workload, through each of them in turn,
#   pgbench -c CLIENTS (default 40) -j 2 -T BENCH_SECONDS (default 10), each run from a
#   CHECKPOINT, ROUNDS (default 3) rounds in turning order (WORKLOADS="select-only mixed"):
#   - select-only: pgbench -S (-M simple, then -M prepared)
#   - mixed: one UPDATE and four SELECTs of other accounts, each its own transaction
#     (read-your-writes sends a writing client's reads to the primary until the replica has
#     replayed its write)
#   TPS of each; pgflow routed / pgflow plain (goal: routing costs under 10%, >= 0.90) and
#   pgflow routed / Pgpool-II (goal >= 1.5); the share of reads the replica served; CPU seconds
#   per 1,000 transactions of each pooler's processes.
#
#   - cached reads: ten aggregates over 1,000 rows each, repeated (-M simple, then -M
#     prepared: bound statements), through the
#     pooler with its query cache, the same pooler without, and Pgpool-II with its memqcache
#     (a second instance, memory_cache_enabled = on): cached / uncached (goal >= 3);
#   - stale reads (bench/cache_race.py, RACE_SECONDS, default 60, each): writers through the
#     pooler and directly on the primary, readers through it; a read older than a write
#     acknowledged before it was sent is stale (goal: 0 for pgflow).
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_SECONDS=${BENCH_SECONDS:-10}
CLIENTS=${CLIENTS:-40}
POOL_SIZE=20
if ! command -v pgpool >/dev/null && [ ! -x /usr/sbin/pgpool ]; then
  echo "installing pgpool2 (Debian)"
  DEBIAN_FRONTEND=noninteractive apt-get -qq install -y pgpool2 >/dev/null 2>&1 ||
    { apt-get -qq update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get -qq install -y pgpool2 >/dev/null; }
fi
PGPOOL=$(command -v pgpool || echo /usr/sbin/pgpool)

source bench/common.sh
PGFLOW_PID= PGPOOL_PID=
cleanup() {
  if [ -n "$PGFLOW_PID" ]; then kill "$PGFLOW_PID" 2>/dev/null || true; wait "$PGFLOW_PID" 2>/dev/null || true; fi
  if [ -n "$PGPOOL_PID" ]; then kill "$PGPOOL_PID" 2>/dev/null || true; sleep 0.5; pkill -f "pgpool -n -f $work" 2>/dev/null || true; fi
  scripts/pgtmp.sh stop "$work/replica" >/dev/null 2>&1 || true
  scripts/pgtmp.sh stop "$work/pg"
  rm -rf "$work"
}
trap cleanup EXIT

psql -q -d postgres -c "ALTER SYSTEM SET max_connections = 200"
scripts/pgtmp.sh pause "$work/pg"
scripts/pgtmp.sh resume "$work/pg"
echo "pgbench -i -s 10"
pgbench -i -s 10 -q bench >"$work/pgbench-init.log" 2>&1 || { cat "$work/pgbench-init.log" >&2; exit 1; }
REPLICA_PORT=$(scripts/pgtmp.sh standby "$work/replica" "$PGPORT" | tail -n 1)
echo "primary 127.0.0.1:$PGPORT, replica 127.0.0.1:$REPLICA_PORT (pg_basebackup -R)"
printf '"postgres" ""\n' >"$work/userlist.txt"
read -r PGFLOW_PORT PGPOOL_PORT PCP_PORT < <(scripts/free_ports 3)
psql -q -d bench -c "CREATE TABLE cache_race (id int PRIMARY KEY, v bigint);
  INSERT INTO cache_race SELECT g, 0 FROM generate_series(1, 4) g"

# --- pgflow: one pooler, a database routed and the same one plain ------------------------------
cat >"$work/pooler.yaml" <<YAML
listen: 127.0.0.1:$PGFLOW_PORT
admin: {users: [postgres]}
auth: {method: trust, users: $work/userlist.txt}
databases:
  routed: {url: 'postgres://postgres@127.0.0.1:$PGPORT/bench', pool_mode: transaction, pool_size: $POOL_SIZE,
           replicas: ['postgres://postgres@127.0.0.1:$REPLICA_PORT/bench']}
  plain: {url: 'postgres://postgres@127.0.0.1:$PGPORT/bench', pool_mode: transaction, pool_size: $POOL_SIZE}
YAML
"$PGFLOW_BINARY" pooler --config "$work/pooler.yaml" >"$work/pooler.log" 2>&1 &
PGFLOW_PID=$!
for _ in $(seq 100); do
  psql -X -At -h 127.0.0.1 -p "$PGFLOW_PORT" -d pgflow -c "SHOW REPLICAS" 2>/dev/null |
    grep -q '^routed|1|replica|[^|]*|healthy|' && break
  sleep 0.1
done

# --- Pgpool-II: streaming replication, load balancing, a process per client ------------------
# start_pgpool DIR PORT PCP_PORT MEMQCACHE(on|off): its pid in PGPOOL_PID
start_pgpool() {
  local dir=$1 port=$2 pcp=$3 memq=$4
  mkdir -p "$dir/oiddir"
  cat >"$dir/pgpool.conf" <<CONF
backend_clustering_mode = 'streaming_replication'
listen_addresses = '127.0.0.1'
port = $port
socket_dir = '$dir'
pcp_listen_addresses = ''
pcp_port = $pcp
pcp_socket_dir = '$dir'
backend_hostname0 = '127.0.0.1'
backend_port0 = $PGPORT
backend_weight0 = 1
backend_flag0 = 'ALLOW_TO_FAILOVER'
backend_hostname1 = '127.0.0.1'
backend_port1 = $REPLICA_PORT
backend_weight1 = 1
backend_flag1 = 'ALLOW_TO_FAILOVER'
num_init_children = $((CLIENTS + 10))
max_pool = 1
load_balance_mode = on
disable_load_balance_on_write = 'transaction'
sr_check_period = 1
sr_check_user = 'postgres'
health_check_period = 0
failover_on_backend_error = off
memory_cache_enabled = $memq
memqcache_method = 'shmem'
memqcache_total_size = 256MB
memqcache_max_num_cache = 100000
memqcache_expire = 0
memqcache_auto_cache_invalidation = on
memqcache_maxcache = 1MB
memqcache_oiddir = '$dir/oiddir'
enable_pool_hba = off
logdir = '$dir'
pid_file_name = '$dir/pgpool.pid'
log_min_messages = warning
CONF
  : >"$dir/pcp.conf"
  chown -R postgres:postgres "$dir" 2>/dev/null || true
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$PGPOOL" -n -f "$dir/pgpool.conf" -F "$dir/pcp.conf" \
      >"$dir/pgpool.log" 2>&1 &
  else
    "$PGPOOL" -n -f "$dir/pgpool.conf" -F "$dir/pcp.conf" >"$dir/pgpool.log" 2>&1 &
  fi
  for _ in $(seq 100); do [ -s "$dir/pgpool.pid" ] && break; sleep 0.1; done
  PGPOOL_PID=$(tr -d '\0' <"$dir/pgpool.pid" 2>/dev/null) || { cat "$dir/pgpool.log" >&2; exit 1; }
  for _ in $(seq 100); do
    psql -X -At -h 127.0.0.1 -p "$port" -d bench -c "SELECT 1" >/dev/null 2>&1 && break
    sleep 0.2
  done
}
start_pgpool "$work/pgpool" "$PGPOOL_PORT" "$PCP_PORT" off
echo "$("$PGPOOL" --version 2>&1 | head -n 1): 127.0.0.1:$PGPOOL_PORT (pid $PGPOOL_PID), $((CLIENTS + 10)) children"

# --- The workloads ---------------------------------------------------------------------------
cat >"$work/mixed.sql" <<'SQL'
\set aid random(1, 100000 * :scale)
\set delta random(-5000, 5000)
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
\set r1 random(1, 100000 * :scale)
SELECT abalance FROM pgbench_accounts WHERE aid = :r1;
\set r2 random(1, 100000 * :scale)
SELECT abalance FROM pgbench_accounts WHERE aid = :r2;
\set r3 random(1, 100000 * :scale)
SELECT abalance FROM pgbench_accounts WHERE aid = :r3;
\set r4 random(1, 100000 * :scale)
SELECT abalance FROM pgbench_accounts WHERE aid = :r4;
SQL
replica_transactions() {  # transactions the replica's bench database has committed so far
  psql -X -At -h 127.0.0.1 -p "$REPLICA_PORT" -d postgres \
    -c "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = 'bench'"
}
: >"$work/results"
run() {  # name port database pid workload mode
  local name=$1 port=$2 db=$3 pid=$4 workload=$5 mode=$6 log="$work/pgbench-$1-$5-$6.log" args
  if [ "$workload" = select-only ]; then args=(-S); else args=(-f "$work/mixed.sql"); fi
  local c0 c1 r0 r1
  # (Each run starts from a checkpoint: the full-page images after one cost every run alike.)
  psql -X -q -h 127.0.0.1 -p "$PGPORT" -d postgres -c CHECKPOINT >/dev/null
  local s0 s1
  c0=$(process_tree_cpu "$pid"); r0=$(replica_transactions)
  s0=$(awk -v a="$(cluster_cpu "$work/pg")" -v b="$(cluster_cpu "$work/replica")" 'BEGIN {print a + b}')
  pgbench -h 127.0.0.1 -p "$port" -c "$CLIENTS" -j 2 -T "$BENCH_SECONDS" -n -M "$mode" "${args[@]}" "$db" \
    >"$log" 2>&1 || { echo "pgbench through $name failed:" >&2; cat "$log" >&2; exit 1; }
  c1=$(process_tree_cpu "$pid"); r1=$(replica_transactions)
  s1=$(awk -v a="$(cluster_cpu "$work/pg")" -v b="$(cluster_cpu "$work/replica")" 'BEGIN {print a + b}')
  local tps tx
  tps=$(awk '/^tps = /{print $3}' "$log" | tail -n 1)
  tx=$(awk -F': ' '/^number of transactions actually processed/{split($2, a, "/"); print a[1]}' "$log")
  # (pgbench's statements per transaction: 1 for -S, 5 for the mixed script.)
  local statements=5
  [ "$workload" = select-only ] && statements=1
  printf '%s %s %s %s %s %s %s %s\n' "$name" "$workload" "$mode" "$tps" \
    "$(awk -v a="$c0" -v b="$c1" -v n="$tx" 'BEGIN {printf "%.3f", (b - a) * 1000 / n}')" \
    "$(awk -v a="$r0" -v b="$r1" -v n="$tx" -v s="$statements" 'BEGIN {printf "%.2f", (b - a) / (n * (s == 1 ? 1 : 4))}')" \
    "$tx" "$(awk -v a="$s0" -v b="$s1" -v n="$tx" 'BEGIN {printf "%.3f", (b - a) * 1000 / n}')" \
    >>"$work/results"
  printf '  %-14s %-12s %-9s %10.0f tps\n' "$name" "$workload" "$mode" "$tps"
}
# ROUNDS rounds of the three, each round in another order (a run's rate drifts with the
# table's bloat, autovacuum and the disk: no one of them always goes first); the tables give
# the mean of each one's rounds.
ROUNDS=${ROUNDS:-3}
for workload in ${WORKLOADS:-select-only mixed}; do
  for mode in simple prepared; do
    [ "$workload" = mixed ] && [ "$mode" = simple ] && continue
    echo "$workload, -M $mode, $CLIENTS clients, $BENCH_SECONDS s each, $ROUNDS rounds"
    for ((round = 0; round < ROUNDS; round++)); do
      for ((k = 0; k < 3; k++)); do
        case $(((round + k) % 3)) in
          0) run pgflow-routed "$PGFLOW_PORT" routed "$PGFLOW_PID" "$workload" "$mode" ;;
          1) run pgflow-plain "$PGFLOW_PORT" plain "$PGFLOW_PID" "$workload" "$mode" ;;
          2) run pgpool "$PGPOOL_PORT" bench "$PGPOOL_PID" "$workload" "$mode" ;;
        esac
      done
    done
  done
done

# --- The query cache ---------------------------------------------------------------------------
# Ten queries, each an aggregate over a thousand rows, repeated (-M simple: both caches answer
# the simple protocol): pgflow's cache, the same pooler uncached, Pgpool-II's memqcache.
cat >"$work/cached.sql" <<'SQL'
\set k random(1, 10)
SELECT count(*), sum(abalance), max(bid) FROM pgbench_accounts WHERE aid BETWEEN :k * 1000 AND :k * 1000 + 999;
SQL
kill "$PGPOOL_PID" 2>/dev/null || true; sleep 1; pkill -f "pgpool -n -f $work/pgpool/" 2>/dev/null || true; sleep 0.5
read -r PGPOOLQ_PORT PCPQ_PORT < <(scripts/free_ports 2)
start_pgpool "$work/pgpool-memq" "$PGPOOLQ_PORT" "$PCPQ_PORT" on
echo "Pgpool-II with memory_cache_enabled: 127.0.0.1:$PGPOOLQ_PORT (pid $PGPOOL_PID)"
# The cached database joins the pooler only now (RELOAD): its change stream decodes every
# write, which the routing runs above do not share the cores with.
cat >>"$work/pooler.yaml" <<YAML
  cached: {url: 'postgres://postgres@127.0.0.1:$PGPORT/bench', pool_mode: transaction, pool_size: $POOL_SIZE,
           cache: {tables: [public.pgbench_accounts, public.cache_race], ttl: 300s, max_memory: 256MiB}}
YAML
psql -X -q -h 127.0.0.1 -p "$PGFLOW_PORT" -d pgflow -c "RELOAD" >/dev/null
for _ in $(seq 100); do
  psql -X -At -h 127.0.0.1 -p "$PGFLOW_PORT" -d pgflow -c "SHOW CACHE" 2>/dev/null |
    grep -q '^cached|ready|' && break
  sleep 0.1
done
cached_run() {  # name port database pid mode
  local name=$1 port=$2 db=$3 pid=$4 mode=$5 log="$work/pgbench-cached-$1-$5.log"
  pgbench -h 127.0.0.1 -p "$port" -c "$CLIENTS" -j 2 -T "$BENCH_SECONDS" -n -M "$mode" -f "$work/cached.sql" "$db" \
    >"$log" 2>&1 || { echo "pgbench through $name failed:" >&2; cat "$log" >&2; exit 1; }
  local tps
  tps=$(awk '/^tps = /{print $3}' "$log" | tail -n 1)
  printf '%s %s %s\n' "$name" "$mode" "$tps" >>"$work/cached-results"
  printf '  %-22s %-9s %10.0f tps\n' "$name" "$mode" "$tps"
}
: >"$work/cached-results"
for mode in simple prepared; do
  echo "cached reads (10 aggregates over 1,000 rows), -M $mode, $CLIENTS clients, $BENCH_SECONDS s each"
  cached_run pgflow-cached "$PGFLOW_PORT" cached "$PGFLOW_PID" "$mode"
  cached_run pgflow-uncached "$PGFLOW_PORT" plain "$PGFLOW_PID" "$mode"
  cached_run pgpool-memqcache "$PGPOOLQ_PORT" bench "$PGPOOL_PID" "$mode"
done

# Stale reads: writers (one through the pooler, one directly on the primary) and readers
# through it, RACE_SECONDS (default 60) each: bench/cache_race.py.
VENV=$(dirname "$PGFLOW_BINARY")/drivers/venv
if ! "$VENV/bin/python" -c 'import psycopg' 2>/dev/null; then
  echo "installing psycopg from PyPI"
  rm -rf "$VENV" && python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check 'psycopg[binary]==3.2.3' </dev/null
fi
RACE_SECONDS=${RACE_SECONDS:-60}
direct="postgresql://postgres@127.0.0.1:$PGPORT/bench"
echo "stale reads, $RACE_SECONDS s each"
race_pgflow=$("$VENV/bin/python" bench/cache_race.py "$RACE_SECONDS" \
  "postgresql://postgres@127.0.0.1:$PGFLOW_PORT/cached" "postgresql://postgres@127.0.0.1:$PGFLOW_PORT/cached" "$direct")
echo "  pgflow cache:        $race_pgflow"
race_pgpool=$("$VENV/bin/python" bench/cache_race.py "$RACE_SECONDS" \
  "postgresql://postgres@127.0.0.1:$PGPOOLQ_PORT/bench" "postgresql://postgres@127.0.0.1:$PGPOOLQ_PORT/bench" "$direct")
echo "  Pgpool-II memqcache: $race_pgpool"

echo
echo "| workload | mode | pgflow routed tps | pgflow plain tps | Pgpool-II tps | routed/plain (goal >= 0.90) | routed/Pgpool-II (goal >= 1.5) | reads on the replica: routed / Pgpool-II | pooler CPU s per 1k tx: routed / plain / Pgpool-II | servers' CPU s per 1k tx (primary + replica): routed / plain / Pgpool-II |"
echo "|---|---|---|---|---|---|---|---|---|---|"
awk '
  # (Each round a line: the mean rate; CPU and the replica share weighted by transactions.)
  { k = $1 "|" $2 "|" $3; n[k]++; sum[k] += $4; tx[k] += $7; cpus[k] += $5 * $7; shares[k] += $6 * $7
    servers[k] += $8 * $7
    tps[k] = sum[k] / n[k]; cpu[k] = sprintf("%.3f", cpus[k] / tx[k]); share[k] = shares[k] / tx[k]
    scpu[k] = sprintf("%.3f", servers[k] / tx[k]); seen[$2 "|" $3] = 1 }
  END {
    for (k in seen) {
      split(k, p, "|")
      r = tps["pgflow-routed|" k]; q = tps["pgflow-plain|" k]; g = tps["pgpool|" k]
      printf "| %s | %s | %.0f | %.0f | %.0f | %.2f | %.2f | %.0f%% / %.0f%% | %s / %s / %s | %s / %s / %s |\n", p[1], p[2], r, q, g,
        r / q, r / g, 100 * share["pgflow-routed|" k], 100 * share["pgpool|" k],
        cpu["pgflow-routed|" k], cpu["pgflow-plain|" k], cpu["pgpool|" k],
        scpu["pgflow-routed|" k], scpu["pgflow-plain|" k], scpu["pgpool|" k]
    }
  }' "$work/results" | sort
echo
echo "| cached reads | mode | pgflow cached tps | pgflow uncached tps | Pgpool-II memqcache tps | cached/uncached (goal >= 3) | cached/Pgpool-II |"
echo "|---|---|---|---|---|---|---|"
awk '
  { tps[$1 "|" $2] = $3; modes[$2] = 1 }
  END {
    for (m in modes) {
      c = tps["pgflow-cached|" m]; u = tps["pgflow-uncached|" m]; q = tps["pgpool-memqcache|" m]
      printf "| 10 aggregates over 1,000 rows | %s | %.0f | %.0f | %.0f | %.2f | %.2f |\n", m, c, u, q, c / u, c / q
    }
  }' "$work/cached-results" | sort -r
echo
echo "stale reads (goal 0 for pgflow): pgflow $race_pgflow; Pgpool-II memqcache $race_pgpool"
psql -X -h 127.0.0.1 -p "$PGFLOW_PORT" -d pgflow -c "SHOW CACHE" || true
if grep -q "ERROR\|FATAL" "$work/pooler.log"; then
  echo "the pooler logged errors:" >&2; grep "ERROR\|FATAL" "$work/pooler.log" | head >&2
fi
