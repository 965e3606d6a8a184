# The drivers the tests run, installed once into the build tree ($CACHE: BUILD_DIR/drivers).
# Sourced by the scripts that run them, which set ROOT, HERE (tests/drivers), CACHE and a
# function say. install_drivers node|python|java|go...: node-postgres, postgres.js, Neon's
# serverless driver and ws (npm), psycopg and asyncpg (PyPI, in $CACHE/venv), the PostgreSQL
# JDBC driver (Maven Central; its jar's path in JAR), pgx (the Go module proxy: the clients in
# tests/drivers/pgx built into PGX_CLIENTS).
JDBC_VERSION=42.7.14
REPO=${MAVEN_REPOSITORY:-$HOME/.m2/repository}
JAR=$REPO/org/postgresql/postgresql/$JDBC_VERSION/postgresql-$JDBC_VERSION.jar
PGX_CLIENTS=$CACHE/pgx_clients

install_drivers() {
  local which
  for which in "$@"; do
    case "$which" in
      node)
        mkdir -p "$CACHE/node"
        if ! cmp -s "$HERE/package.json" "$CACHE/node/package.json" ||
            [ ! -d "$CACHE/node/node_modules/@neondatabase/serverless" ]; then
          say "installing node-postgres and postgres.js from npm"
          cp "$HERE/package.json" "$CACHE/node/package.json"
          (cd "$CACHE/node" && npm install --no-audit --no-fund --loglevel=error </dev/null >/dev/null)
        fi
        ;;
      python)
        if ! "$CACHE/venv/bin/python" -c 'import psycopg, asyncpg' 2>/dev/null; then
          say "installing psycopg and asyncpg from PyPI"
          rm -rf "$CACHE/venv"
          python3 -m venv "$CACHE/venv"
          "$CACHE/venv/bin/pip" install -q --disable-pip-version-check 'psycopg[binary]==3.2.3' \
            'asyncpg==0.30.0' </dev/null
        fi
        ;;
      java)
        if [ ! -f "$JAR" ]; then
          say "fetching the PostgreSQL JDBC driver $JDBC_VERSION from Maven Central"
          "$ROOT/scripts/mvn_plain" -Dmaven.repo.local="$REPO" dependency:get \
            -Dartifact="org.postgresql:postgresql:$JDBC_VERSION" -Dtransitive=false
        fi
        ;;
      go)
        if [ ! -x "$PGX_CLIENTS" ] ||
            [ -n "$(find "$HERE/pgx" -newer "$PGX_CLIENTS" -type f)" ]; then
          say "building the pgx clients (pgx from the Go module proxy)"
          local go_bin
          go_bin=$(command -v go || echo /usr/local/go/bin/go)
          (cd "$HERE/pgx" && GOFLAGS="-mod=readonly -modcacherw" GOTOOLCHAIN=local \
            GOCACHE="$CACHE/go-cache" GOPATH="$CACHE/go-path" \
            "$go_bin" build -o "$PGX_CLIENTS" . </dev/null)
        fi
        ;;
      *) echo "install_drivers: $which?" >&2; return 2 ;;
    esac
  done
}
