# Shared by the benchmarks: a throwaway PostgreSQL with an empty database `bench`, removed on
# exit; PGHOST, PGPORT and PGUSER exported for psql; $work a scratch directory. Source it.
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
[ -x build/pgflow ] || scripts/setup.sh >/dev/null

work=$(mktemp -d /tmp/pgflow-bench.XXXXXX)
trap 'scripts/pgtmp.sh stop "$work/pg"; rm -rf "$work"' EXIT
chmod 755 "$work"
PGPORT=$(scripts/pgtmp.sh start "$work/pg")
export PGPORT PGHOST=127.0.0.1 PGUSER=postgres
psql -q -d postgres -c "CREATE DATABASE bench"

now() { date +%s.%N; }
