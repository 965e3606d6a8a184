# Shared by the scripts that run PostgreSQL's regression suite (regression_suite.sh,
# pooler_regress.sh); sourced, after ROOT and WORK are set. Gives:
#   BUILD, PGFLOW          the build tree (the script's first argument) and its binary
#   PGBIN, PG_REGRESS      the newest installed server's binaries and pg_regress
#   SRC                    the suite's sources (fetch-suite.sh, cached in the build tree)
#   start_server           a throwaway server in $WORK/pg with the suite's extra settings;
#                          sets PORT and exports PGHOST, PGPORT, PGUSER
#   psql_ ARGS...          psql, quiet, stopping at the first error
#   run_suite PORT OUT     the parallel schedule against PORT into OUT; prints the failed tests
#   tests_run OUT          how many tests that run ran
#   fresh_database         drops and creates `regression` (pg_regress --use-existing does
#                          neither), directly on the server
BUILD=$(cd "${1:-$ROOT/build}" && pwd)
PGFLOW=$BUILD/pgflow
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
MAJOR=$(basename "$(dirname "$PGBIN")")
PG_REGRESS=/usr/lib/postgresql/$MAJOR/lib/pgxs/src/test/regress/pg_regress
[ -x "$PG_REGRESS" ] || { echo "$(basename "$0"): $PG_REGRESS missing (postgresql-client-$MAJOR)" >&2; exit 1; }
SRC=$("$ROOT/tests/regress/fetch-suite.sh" "$BUILD")
# The server reads the suite's data files itself (COPY ... FROM a file), as postgres: from a
# checkout only root may enter, the suite runs from a copy in WORK.
if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -r "$SRC/parallel_schedule"; then
  cp -r "$SRC" "$WORK/suite"
  chmod -R a+rX "$WORK/suite"
  SRC=$WORK/suite
fi

start_server() {
  PORT=$("$ROOT/scripts/pgtmp.sh" start "$WORK/pg")
  cat >>"$WORK/pg/data/postgresql.conf" <<CONF
allow_in_place_tablespaces = on
max_prepared_transactions = 10
CONF
  "$ROOT/scripts/pgtmp.sh" pause "$WORK/pg" && "$ROOT/scripts/pgtmp.sh" resume "$WORK/pg"
  export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres
}

psql_() { "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 "$@"; }

run_suite() {
  local port=$1 out=$2
  mkdir -p "$out"
  chown -R postgres:postgres "$out" 2>/dev/null || true
  "$PG_REGRESS" --use-existing --dbname=regression --host=127.0.0.1 --port="$port" \
    --user=postgres --bindir="$PGBIN" --inputdir="$SRC" --outputdir="$out" \
    --schedule="$SRC/parallel_schedule" --dlpath="$out" >"$out/pg_regress.log" 2>&1 || true
  grep -E '^(not ok|test |     ).*(FAILED|failed)' "$out/pg_regress.log" |
    sed -E 's/^(not ok [0-9]+ +- +|test +| +)//; s/ +\.\.\..*//; s/ +[0-9]+ ms.*//' | sort
}

tests_run() { grep -cE '^(ok|not ok|test |     )' "$1/pg_regress.log" || true; }

fresh_database() {
  psql_ -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS regression WITH (FORCE)"
  psql_ -d postgres -c "CREATE DATABASE regression TEMPLATE template0"
}
