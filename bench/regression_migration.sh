#!/usr/bin/env bash
# Benchmark: migrating the database PostgreSQL's regression suite leaves behind (hundreds of
# tables of every built-in type, domains, enums, inheritance, partitions, dropped columns) into
# an empty database on another server, pgflow against pgcopydb, in the same run.
#
#   pgcopydb: Debian's pgcopydb, `clone --table-jobs 2 --index-jobs 2` (schema, data, indexes,
#             constraints, VACUUM ANALYZE)
#   pgflow:   `pgflow run` with `snapshot: only` following every schema that holds tables (its
#             schema objects, tables, rows, keys, indexes and constraints, then ANALYZE)
#
# Each copy is then checked by `pgflow verify` against the source: the tables found identical
# are printed beside the time. ROUNDS=n (default 1) copies n times each, alternating which goes
# first; the best time is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-1}
source bench/common.sh   # the source server
need_pgcopydb
TPORT=$(scripts/pgtmp.sh start "$work/target")
trap 'scripts/pgtmp.sh stop "$work/target"; scripts/pgtmp.sh stop "$work/pg"; rm -rf "$work"' EXIT
tpsql() { psql -p "$TPORT" "$@"; }
elapsed() { python3 -c "print(f'{$2 - $1:.2f}')"; }

SRC=$(tests/regress/fetch-suite.sh build)
MAJOR=$(basename "$(dirname "$PGBIN")")
psql -q -d postgres -c "CREATE DATABASE regression TEMPLATE template0"
mkdir -p "$work/regress" && chown postgres "$work/regress" 2>/dev/null || true
echo "building the regression database (pg_regress, parallel schedule)"
"/usr/lib/postgresql/$MAJOR/lib/pgxs/src/test/regress/pg_regress" --use-existing \
  --dbname=regression --host=127.0.0.1 --port="$PGPORT" --user=postgres --bindir="$PGBIN" \
  --inputdir="$SRC" --outputdir="$work/regress" --schedule="$SRC/parallel_schedule" \
  --dlpath="$work/regress" >"$work/regress/pg_regress.log" 2>&1 || true
schemas=$(psql -Atq -d regression -c "SELECT string_agg(DISTINCT quote_ident(n.nspname) || '.*', ', ')
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgflow')
    AND n.nspname NOT LIKE 'pg\_%' AND c.relpersistence = 'p'")
echo "regression: $(psql -Atq -d regression -c "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r','p') AND NOT c.relispartition AND c.relpersistence = 'p' AND n.nspname NOT IN ('pg_catalog','information_schema')") tables (roots) in schemas $schemas"

pipeline() {  # pipeline NAME TARGET_DATABASE
  cat >"$work/$1.yaml" <<YAML
pipeline: $1
source:
  postgres:
    url: postgres://postgres@127.0.0.1:$PGPORT/regression
    tables: [$schemas]
    snapshot: {mode: only, workers: 2}
sinks:
  target: {postgres: {url: "postgres://postgres@127.0.0.1:$TPORT/$2"}}
YAML
}
pipeline pgflow pgflow
pipeline check_pgcopydb pgcopydb
printf '[exclude-schema]\npgflow\n' >"$work/pgcopydb-filters.ini"

settle() {
  for port in "$PGPORT" "$TPORT"; do psql -q -p "$port" -d postgres -c CHECKPOINT; done
  sync
}
verified() {  # verified YAML: "identical N of M tables"
  "$PGFLOW_BINARY" verify "$1" >"$work/verify.out" 2>&1 || true
  local total same
  total=$(grep -oE '\(([0-9]+) tables' "$work/verify.out" | tail -n 1 | tr -dc 0-9)
  same=$(grep -cE ': ([0-9]+ rows.*)?identical' "$work/verify.out" || true)
  echo "$(tail -n 1 "$work/verify.out" | sed 's/^target: //') ; tables not identical: $(grep -vcE 'identical|differs where' "$work/verify.out" || true)"
}
# In a session of its own: pgcopydb signals its whole process group as it ends.
pgcopydb_run() {
  tpsql -q -d postgres -c "DROP DATABASE IF EXISTS pgcopydb" -c "CREATE DATABASE pgcopydb"
  rm -rf "$work/pgcopydb"
  settle
  local t0=$(now)
  setsid --wait pgcopydb clone --source "postgres://postgres@127.0.0.1:$PGPORT/regression" \
    --target "postgres://postgres@127.0.0.1:$TPORT/pgcopydb" --table-jobs 2 --index-jobs 2 \
    --filters "$work/pgcopydb-filters.ini" --dir "$work/pgcopydb" >"$work/pgcopydb.log" 2>&1 \
    && status=ok || status="exit $?"
  echo "pgcopydb $(elapsed "$t0" "$(now)") $status" >>"$work/times"
}
pgflow_run() {
  tpsql -q -d postgres -c "DROP DATABASE IF EXISTS pgflow" -c "CREATE DATABASE pgflow"
  settle
  local t0=$(now)
  "$PGFLOW_BINARY" run "$work/pgflow.yaml" --progress 0 >"$work/pgflow.log" 2>&1 \
    && status=ok || status="exit $?"
  echo "pgflow $(elapsed "$t0" "$(now)") $status" >>"$work/times"
}
for round in $(seq "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then pgcopydb_run; pgflow_run; else pgflow_run; pgcopydb_run; fi
done
echo "pgcopydb: $(grep -c ' ERROR ' "$work/pgcopydb.log" || true) ERROR line(s) in its log; verify: $(verified "$work/check_pgcopydb.yaml")"
grep -vE 'identical|differs where' "$work/verify.out" | head -n 5 | sed 's/^/  /' || true
echo "pgflow:   $(grep -c ' ERROR ' "$work/pgflow.log" || true) ERROR line(s) in its log; verify: $(verified "$work/pgflow.yaml")"
grep -vE 'identical|differs where' "$work/verify.out" | head -n 5 | sed 's/^/  /' || true
python3 - "$work/times" "$ROUNDS" <<'PY'
import sys
best, runs = {}, {}
for line in open(sys.argv[1]):
    name, wall, *status = line.split()
    runs.setdefault(name, []).append(f"{float(wall):.2f}s ({' '.join(status)})")
    best[name] = min(best.get(name, 1e9), float(wall))
print(f"regression database into an empty database" + (f", best of {sys.argv[2]}:" if int(sys.argv[2]) > 1 else ":"))
print(f"  pgcopydb clone (2+2 jobs, with VACUUM ANALYZE)  {best['pgcopydb']:6.2f}s")
print(f"  pgflow snapshot (2 workers, with ANALYZE)      {best['pgflow']:6.2f}s  "
      f"{best['pgcopydb'] / best['pgflow']:.2f}x pgcopydb (goal >= 1.3)")
for name, r in runs.items():
    print(f"  {name:<9} " + "  ".join(r))
PY
