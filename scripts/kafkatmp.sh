#!/usr/bin/env bash
# A throwaway Apache Kafka broker for the tests and the benchmarks: the real broker
# (org.apache.kafka:kafka_2.13, KRaft mode: broker and controller in one process, no
# ZooKeeper), its jars resolved from Maven Central by Maven into its local repository once
# (tests/integration/tools/kafka_broker/pom.xml), run on the installed Java.
#
#   scripts/kafkatmp.sh start DIR   format a log directory in DIR, start the broker on free
#                                   loopback ports with a bounded heap, wait until it answers a
#                                   metadata request; prints the bootstrap address host:port
#   scripts/kafkatmp.sh stop DIR    stop it (SIGTERM, then SIGKILL) and delete DIR
#   scripts/kafkatmp.sh kill DIR    kill -9 it, keeping DIR (restart it with `resume DIR`)
#   scripts/kafkatmp.sh resume DIR  start it again on the same ports and log directory
#
# KAFKA_VERSION (default 4.1.1), KAFKA_HEAP (default 512m) and KAFKA_JVM_OPTS (default: the
# serial collector, two JIT threads) change the broker;
# MAVEN_REPOSITORY the local repository (default ~/.m2/repository). Extra broker settings can
# be appended, one per line, in KAFKA_EXTRA_CONFIG.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VERSION=${KAFKA_VERSION:-4.1.1}
HEAP=${KAFKA_HEAP:-512m}


all_present() {  # every jar of the class path in file $1 is there
  local jar
  for jar in $(tr ':' ' ' <"$1"); do [ -f "$jar" ] || return 1; done
}

# The broker's class path, resolved (and downloaded the first time) by Maven; cached beside the
# local repository per version.
classpath() {
  local repo cache
  repo=${MAVEN_REPOSITORY:-$HOME/.m2/repository}
  cache="$repo/.pgflow-kafka-$VERSION.classpath"
  if [ ! -s "$cache" ] || ! all_present "$cache"; then
    echo "kafkatmp: resolving Apache Kafka $VERSION from Maven Central" >&2
    scripts/mvn_plain -Dmaven.repo.local="$repo" -f "$ROOT/tests/integration/tools/kafka_broker/pom.xml" \
      -Dkafka.version="$VERSION" dependency:build-classpath -Dmdep.includeScope=runtime \
      -Dmdep.outputFile="$cache.tmp" || {
      echo "kafkatmp: could not resolve org.apache.kafka:kafka_2.13:$VERSION with Maven" >&2
      exit 1
    }
    mv "$cache.tmp" "$cache"
  fi
  cat "$cache"
}

launch() {  # DIR: starts the broker configured in DIR and waits for it
  local dir=$1 port cp
  port=$(cat "$dir/port")
  cp=$(classpath)
  # The heap bounded, the JIT's threads few: two-core CI shares the machine with PostgreSQL.
  # Its collector's pauses are logged in DIR/gc.log (the benchmarks count them).
  # shellcheck disable=SC2086
  nohup java -Xms"$HEAP" -Xmx"$HEAP" ${KAFKA_JVM_OPTS:--XX:+UseSerialGC -XX:CICompilerCount=2} \
    -Xlog:gc:file="$dir/gc.log":uptime \
    -Dlog4j2.configurationFile="$dir/log4j2.properties" -Dkafka.logs.dir="$dir" \
    -cp "$cp" kafka.Kafka "$dir/server.properties" >"$dir/stdout.log" 2>&1 &
  echo $! >"$dir/pid"
  # Ready when it answers a metadata request with itself as a broker.
  for _ in $(seq 1 240); do
    if kcat -L -b "127.0.0.1:$port" -m 2 2>/dev/null | grep -q "1 brokers"; then
      echo "127.0.0.1:$port"
      return 0
    fi
    if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then break; fi
    sleep 0.25
  done
  echo "kafkatmp: the broker did not answer in 60s; its log:" >&2
  tail -n 40 "$dir/broker.log" "$dir/stdout.log" >&2 2>/dev/null || true
  return 1
}

cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop|kill|resume DIR" >&2; exit 2; }

case "$cmd" in
  start)
    command -v java >/dev/null || { echo "kafkatmp: no java (install openjdk-17-jre-headless)" >&2; exit 1; }
    command -v mvn >/dev/null || { echo "kafkatmp: no mvn (install maven)" >&2; exit 1; }
    command -v kcat >/dev/null || { echo "kafkatmp: no kcat (install kcat)" >&2; exit 1; }
    mkdir -p "$dir/data"
    dir=$(cd "$dir" && pwd)
    read -r port controller < <(scripts/free_ports 2)
    echo "$port" >"$dir/port"
    cat >"$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.check.interval.ms=1000
${KAFKA_EXTRA_CONFIG:-}
PROPS
    cat >"$dir/log4j2.properties" <<PROPS
rootLogger.level=WARN
rootLogger.appenderRef.file.ref=file
appender.file.type=File
appender.file.name=file
appender.file.fileName=$dir/broker.log
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
PROPS
    # A random cluster id as Kafka writes them (22 url-safe base64 characters), never one that
    # starts with '-': the storage tool's option parser would take that for an option.
    cluster=$(python3 -c '
import base64, uuid
while True:
    cluster = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode()[:22]
    if not cluster.startswith("-"):
        print(cluster)
        break')
    java -Xmx256m -XX:+UseSerialGC -Dlog4j2.configurationFile="$dir/log4j2.properties" \
      -cp "$(classpath)" kafka.tools.StorageTool format -t "$cluster" \
      -c "$dir/server.properties" >"$dir/format.log" 2>&1 || {
      cat "$dir/format.log" >&2
      exit 1
    }
    launch "$dir"
    ;;
  resume)
    launch "$(cd "$dir" && pwd)"
    ;;
  kill)
    [ -f "$dir/pid" ] && kill -9 "$(cat "$dir/pid")" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$(cat "$dir/pid")" 2>/dev/null || break; sleep 0.1; done
    ;;
  stop)
    [ -d "$dir" ] || exit 0
    if [ -f "$dir/pid" ]; then
      pid=$(cat "$dir/pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -rf "$dir"
    ;;
  *)
    echo "usage: $0 start|stop|kill|resume DIR" >&2
    exit 2
    ;;
esac
