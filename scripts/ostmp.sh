#!/usr/bin/env bash
# A throwaway OpenSearch node for the tests and the benchmarks: OpenSearch's minimal
# distribution from Maven Central (org.opensearch.distribution.integ-test-zip:opensearch, no
# security plugin), fetched once by Maven into its local repository, run on the installed Java.
#
#   scripts/ostmp.sh start DIR   unpack into DIR, start a single node on free loopback ports
#                                with a bounded heap, wait for green health; prints the HTTP port
#   scripts/ostmp.sh stop DIR    stop it and delete DIR
#
# OPENSEARCH_VERSION (default 2.19.1) and OPENSEARCH_HEAP (default 512m) change the node;
# MAVEN_REPOSITORY the local repository (default ~/.m2/repository).
# As root, the node runs as the `postgres` user (OpenSearch refuses to run as root).
set -euo pipefail

VERSION=${OPENSEARCH_VERSION:-2.19.1}
HEAP=${OPENSEARCH_HEAP:-512m}
ARTIFACT="org.opensearch.distribution.integ-test-zip:opensearch:$VERSION:zip"

as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}


# The zip in Maven's local repository, downloaded the first time only.
fetch() {
  local repo zip
  repo=${MAVEN_REPOSITORY:-$HOME/.m2/repository}
  zip="$repo/org/opensearch/distribution/integ-test-zip/opensearch/$VERSION/opensearch-$VERSION.zip"
  if [ ! -f "$zip" ]; then
    echo "ostmp: fetching $ARTIFACT from Maven Central" >&2
    "$(dirname "$0")/mvn_plain" -Dmaven.repo.local="$repo" dependency:get \
      -Dartifact="$ARTIFACT" -Dtransitive=false || {
      echo "ostmp: could not fetch $ARTIFACT with Maven" >&2
      exit 1
    }
  fi
  echo "$zip"
}

cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

case "$cmd" in
  start)
    command -v java >/dev/null || { echo "ostmp: no java (install openjdk-17-jre-headless)" >&2; exit 1; }
    command -v mvn >/dev/null || { echo "ostmp: no mvn (install maven)" >&2; exit 1; }
    zip=$(fetch)
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    unzip -q -o "$zip" -d "$dir"
    mkdir -p "$dir/data" "$dir/logs"
    [ "$(id -u)" = 0 ] && chown -R postgres: "$dir"
    read -r port transport < <("$(dirname "$0")/free_ports" 2)
    java_home=$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")
    echo "$port" >"$dir/port"
    as_owner env OPENSEARCH_JAVA_HOME="$java_home" OPENSEARCH_JAVA_OPTS="-Xms$HEAP -Xmx$HEAP" \
      "$dir/opensearch-$VERSION/bin/opensearch" -d -p "$dir/pid" \
      -Ediscovery.type=single-node -Enetwork.host=127.0.0.1 \
      -Ehttp.port="$port" -Etransport.port="$transport" \
      -Epath.data="$dir/data" -Epath.logs="$dir/logs" \
      -Ecluster.routing.allocation.disk.threshold_enabled=false \
      -Eaction.auto_create_index=false >"$dir/start.log" 2>&1 || {
      cat "$dir/start.log" >&2
      exit 1
    }
    for _ in $(seq 1 240); do
      if curl -sf "http://127.0.0.1:$port/_cluster/health?wait_for_status=green&timeout=1s" >/dev/null 2>&1; then
        echo "$port"
        exit 0
      fi
      sleep 0.5
    done
    echo "ostmp: the node did not become green in 120s; its log:" >&2
    tail -n 40 "$dir/logs/"*.log >&2 2>/dev/null || cat "$dir/start.log" >&2
    exit 1
    ;;
  stop)
    [ -d "$dir" ] || exit 0
    if [ -f "$dir/pid" ]; then
      pid=$(cat "$dir/pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -rf "$dir"
    ;;
  *)
    echo "usage: $0 start|stop DIR" >&2
    exit 2
    ;;
esac
