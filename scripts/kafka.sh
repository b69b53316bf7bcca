#!/usr/bin/env bash
# Apache Kafka, the broker the tests run against (single node, KRaft, broker+controller).
#   scripts/kafka.sh install        resolve Kafka $VERSION (+ a log4j2 SLF4J binding) from Maven
#                                   Central into $KAFKA_HOME; installs a JDK and Maven with apt-get
#                                   when missing
#   scripts/kafka.sh start [DIR]    format a fresh log dir (DIR, else a new temporary one) and start a
#                                   broker on free loopback ports; when DIR already holds a formatted
#                                   broker, start it again with the same ports and data. Waits until it
#                                   accepts connections and prints "PORT PID DIR" (logs in DIR/broker.log).
#                                   With KAFKA_ADVERTISED_PORT, clients are told to connect there (a
#                                   proxy forwarding to PORT) while the broker reaches itself directly
#   scripts/kafka.sh start-secured  a secured node (SASL_SSL with SCRAM-SHA-512, SSL with client
#                                   certificates, ACLs; certificates made with openssl): prints
#                                   "SASL_SSL_PORT SSL_PORT PLAINTEXT_PORT PID DIR" (see start_secured)
#   scripts/kafka.sh start-cluster N [DIR]
#                                   an N-node cluster (each node broker+controller, static voters,
#                                   replication factor 3): prints "BOOTSTRAP DIR" (see start_cluster)
#   scripts/kafka.sh stop PID       stop it gracefully (SIGTERM, then SIGKILL after 60 s)
# With KAFKA_WATCH_PID set, `start` also stops the broker once that process has exited.
# The tests start their own brokers through tidemark-testkit (KafkaBroker), which calls this
# script; it is also how to try the CLI by hand.
set -euo pipefail
# KAFKA_VERSION picks another Apache Kafka release (scripts/versions.sh runs the core
# tests on 3.9.1 and 4.4.0 too); each version installs into its own $KAFKA_HOME. Java >= 17.
VERSION="${KAFKA_VERSION:-4.3.1}"
LOG4J=2.24.3           # log4j2 with its SLF4J 1.x binding (Kafka pins slf4j-api 1.7.36)
KAFKA_HOME="${KAFKA_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/tidemark/kafka-$VERSION}"
HEAP="${KAFKA_HEAP:-768m}"

die() { echo "kafka.sh: $*" >&2; exit 1; }

java_ok() {
  command -v java >/dev/null 2>&1 || return 1
  local v
  v=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)
  [ -n "$v" ] && [ "$v" -ge 17 ]
}

installed() { [ -f "$KAFKA_HOME/.complete" ]; }

install() {
  if installed; then echo "kafka $VERSION already installed in $KAFKA_HOME"; return; fi
  # One install per version at a time (scripts/test.sh resolves the other versions
  # in the background while scripts/versions.sh may ask for them).
  mkdir -p "$(dirname "$KAFKA_HOME")"
  exec 9>"$KAFKA_HOME.lock"
  flock 9
  if installed; then echo "kafka $VERSION already installed in $KAFKA_HOME"; return; fi
  if ! java_ok || ! command -v mvn >/dev/null 2>&1; then
    echo "installing a JDK (>= 17) and Maven with apt-get..."
    command -v apt-get >/dev/null 2>&1 || die "Java >= 17 and Maven are needed and apt-get is missing"
    local sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
    $sudo apt-get update -qq && $sudo apt-get install -y -qq openjdk-17-jdk-headless maven >/dev/null \
      || die "apt-get could not install openjdk-17-jdk-headless and maven"
  fi
  java_ok || die "java is missing or older than 17: $(java -version 2>&1 | head -1)"
  mvn -v >/dev/null 2>&1 || die "mvn does not run: $(mvn -v 2>&1 | head -1)"
  echo "resolving org.apache.kafka:kafka_2.13:$VERSION from Maven Central into $KAFKA_HOME..."
  local work; work=$(mktemp -d)
  cat >"$work/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>tidemark</groupId><artifactId>kafka-broker</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$LOG4J</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-api</artifactId><version>$LOG4J</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J</version></dependency>
  </dependencies>
</project>
EOF
  mkdir -p "$KAFKA_HOME/libs"
  (cd "$work" && mvn -q -B org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$KAFKA_HOME/libs") \
    || die "maven could not resolve kafka_2.13:$VERSION (is Maven Central reachable?)"
  cat >"$KAFKA_HOME/log4j2.properties" <<'EOF'
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = ${sys:kafka.logs.dir}/broker.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.file.ref = FILE
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = INFO
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = INFO
EOF
  rm -rf "$work"
  touch "$KAFKA_HOME/.complete"
  echo "kafka $VERSION installed in $KAFKA_HOME ($(ls "$KAFKA_HOME/libs" | wc -l) jars)"
}

# The single node's storage and internal-topic settings (replication factor 1, few
# partitions for 2 cores), shared by `start` and `start-secured`.
node_properties() {
  cat <<EOF
log.dirs=$dir/data
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

kjava() {
  java -Xms256m "-Xmx$HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    "-Dlog4j2.configurationFile=$KAFKA_HOME/log4j2.properties" "-Dkafka.logs.dir=$dir" \
    -cp "$KAFKA_HOME/libs/*" "$@"
}

start() {
  installed || die "kafka is not installed: run $0 install"
  java_ok || die "java is missing or older than 17"
  dir="${1:-}"
  if [ -n "$dir" ] && [ -f "$dir/server.properties" ]; then
    port=$(sed -n 's/^listeners=PLAINTEXT:\/\/127.0.0.1:\([0-9]*\),.*/\1/p' "$dir/server.properties")
  else
    [ -n "$dir" ] || dir=$(mktemp -d "${TMPDIR:-/tmp}/tidemark-kafka.XXXXXX")
    mkdir -p "$dir"
    port=$(free_port); local cport iport; cport=$(free_port); iport=$(free_port)
    while [ "$cport" = "$port" ]; do cport=$(free_port); done
    while [ "$iport" = "$port" ] || [ "$iport" = "$cport" ]; do iport=$(free_port); done
    # Clients use PLAINTEXT, advertised at $KAFKA_ADVERTISED_PORT when set (a proxy in
    # front of the broker: Toxiproxy); the broker talks to itself over INTERNAL, direct.
    cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://127.0.0.1:$port,INTERNAL://127.0.0.1:$iport,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:${KAFKA_ADVERTISED_PORT:-$port},INTERNAL://127.0.0.1:$iport
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=INTERNAL
controller.quorum.bootstrap.servers=127.0.0.1:$cport
$(node_properties)
group.consumer.min.heartbeat.interval.ms=500
group.consumer.heartbeat.interval.ms=1000
group.consumer.min.session.timeout.ms=6000
group.consumer.session.timeout.ms=10000
log.cleaner.backoff.ms=500
log.retention.check.interval.ms=5000
num.network.threads=2
num.io.threads=4
background.threads=4
EOF
    kjava kafka.tools.StorageTool format --standalone \
      -t "$(kjava kafka.tools.StorageTool random-uuid)" -c "$dir/server.properties" >"$dir/format.log" 2>&1 \
      || { cat "$dir/format.log" >&2; die "formatting $dir failed"; }
  fi
  launch
  echo "$port $pid $dir"
}

# Starts the broker of $dir/server.properties and waits until it accepts connections on
# $port; sets $pid.
launch() {
  spawn_node "$dir"
  pid=$spawned
  await_node "$dir" "$port" "$pid" "$spawned_seen"
}

# Starts the node of $1/server.properties in the background without waiting; sets
# $spawned (its pid, also in $1/pid) and $spawned_seen (the lines its broker.log had).
spawn_node() {
  local d="$1"
  spawned_seen=$(cat "$d/broker.log" 2>/dev/null | wc -l)
  nohup java -Xms256m "-Xmx$HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    "-Dlog4j2.configurationFile=$KAFKA_HOME/log4j2.properties" "-Dkafka.logs.dir=$d" \
    -cp "$KAFKA_HOME/libs/*" kafka.Kafka "$d/server.properties" >"$d/stdout.log" 2>&1 &
  spawned=$!
  echo "$spawned" >"$d/pid"
}

# Waits until the node in $1 (port $2, pid $3, $4 log lines before its start) has
# started and accepts connections (120 s at most: a cluster's nodes wait for a quorum).
await_node() {
  local d="$1" p="$2" id="$3" seen="$4"
  for _ in $(seq 1 1200); do
    if tail -n "+$((seen + 1))" "$d/broker.log" 2>/dev/null | grep -q "Kafka Server started" \
       && (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      if [ -n "${KAFKA_WATCH_PID:-}" ]; then
        # Stop the broker when the process that started it is gone (a test binary).
        ( while kill -0 "$KAFKA_WATCH_PID" 2>/dev/null && kill -0 "$id" 2>/dev/null; do sleep 1; done
          stop "$id" ) </dev/null >/dev/null 2>&1 &
      fi
      return 0
    fi
    kill -0 "$id" 2>/dev/null || { tail -30 "$d/broker.log" "$d/stdout.log" >&2 2>/dev/null; die "broker in $d exited"; }
    sleep 0.1
  done
  kill "$id"; die "broker did not start within 120 s (see $d/broker.log)"
}

# An N-node cluster in DIR (else a new temporary folder): nodes 1..N, each
# broker+controller with its own folder DIR/node-I, a static voter set
# (controller.quorum.voters), replication factor 3 (N when smaller) with
# min.insync.replicas 2 for new topics and the internal ones, and a 4 s broker session
# (a killed node is fenced and its leaderships move in ~4 s). Starts every node, waits
# until all have started, and prints "BOOTSTRAP DIR"; DIR/cluster.env holds NODES,
# BOOTSTRAP and NODE_I_PORT. One node stops with `stop $(cat DIR/node-I/pid)` (or a
# SIGKILL) and starts again with `start DIR/node-I` (same ports and data).
start_cluster() {
  installed || die "kafka is not installed: run $0 install"
  java_ok || die "java is missing or older than 17"
  local n="${1:?number of nodes}"; dir="${2:-}"
  [ "$n" -ge 1 ] || die "a cluster needs at least one node"
  HEAP="${KAFKA_HEAP:-640m}"
  [ -n "$dir" ] || dir=$(mktemp -d "${TMPDIR:-/tmp}/tidemark-kafka-cluster.XXXXXX")
  mkdir -p "$dir"
  local ports=() cports=() used="" i p kind voters="" bootstrap="" rf isr
  rf=$(( n < 3 ? n : 3 )); isr=$(( rf < 2 ? 1 : 2 ))
  for i in $(seq 1 "$n"); do
    for kind in client controller; do
      p=$(free_port); while [[ " $used " == *" $p "* ]]; do p=$(free_port); done
      used="$used $p"
      if [ "$kind" = client ]; then ports+=("$p"); else cports+=("$p"); fi
    done
    voters="${voters:+$voters,}$i@127.0.0.1:${cports[$((i - 1))]}"
    bootstrap="${bootstrap:+$bootstrap,}127.0.0.1:${ports[$((i - 1))]}"
  done
  local id; id=$(kjava kafka.tools.StorageTool random-uuid)
  printf 'NODES=%s\nBOOTSTRAP=%s\n' "$n" "$bootstrap" >"$dir/cluster.env"
  for i in $(seq 1 "$n"); do
    local d="$dir/node-$i"; mkdir -p "$d"
    cat >"$d/server.properties" <<EOF
process.roles=broker,controller
node.id=$i
listeners=PLAINTEXT://127.0.0.1:${ports[$((i - 1))]},CONTROLLER://127.0.0.1:${cports[$((i - 1))]}
advertised.listeners=PLAINTEXT://127.0.0.1:${ports[$((i - 1))]}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.quorum.voters=$voters
log.dirs=$d/data
num.partitions=1
auto.create.topics.enable=false
default.replication.factor=$rf
min.insync.replicas=$isr
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr
group.initial.rebalance.delay.ms=0
group.consumer.min.session.timeout.ms=6000
group.consumer.session.timeout.ms=10000
broker.session.timeout.ms=4000
broker.heartbeat.interval.ms=1000
num.network.threads=2
num.io.threads=2
background.threads=2
EOF
    printf 'NODE_%s_PORT=%s\n' "$i" "${ports[$((i - 1))]}" >>"$dir/cluster.env"
    dir="$d" kjava kafka.tools.StorageTool format -t "$id" -c "$d/server.properties" \
      >"$d/format.log" 2>&1 || { cat "$d/format.log" >&2; die "formatting $d failed"; }
  done
  local pids=() seens=()
  for i in $(seq 1 "$n"); do
    spawn_node "$dir/node-$i"
    pids+=("$spawned"); seens+=("$spawned_seen")
  done
  for i in $(seq 1 "$n"); do
    await_node "$dir/node-$i" "${ports[$((i - 1))]}" "${pids[$((i - 1))]}" "${seens[$((i - 1))]}"
  done
  echo "$bootstrap $dir"
}

# Test certificates in $1: a CA (ca.pem), the broker's key and certificate for localhost
# and 127.0.0.1 in one PEM keystore (broker.keystore.pem), a client certificate for
# mTLS (CN=carol: carol.pem, carol.key) and a CA nobody trusts (other-ca.pem).
make_certs() {
  local c="$1"; mkdir -p "$c"
  if ! command -v openssl >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    local sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
    $sudo apt-get install -y -qq openssl >/dev/null 2>&1 \
      || { $sudo apt-get update -qq && $sudo apt-get install -y -qq openssl >/dev/null; } || true
  fi
  command -v openssl >/dev/null 2>&1 || die "openssl is needed for the secured broker's certificates"
  (
    cd "$c"
    openssl req -x509 -newkey rsa:2048 -noenc -keyout ca.key -out ca.pem -days 30 -subj "/CN=tidemark-test-ca"
    openssl req -x509 -newkey rsa:2048 -noenc -keyout other-ca.key -out other-ca.pem -days 30 -subj "/CN=untrusted-ca"
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >broker.ext
    openssl req -newkey rsa:2048 -noenc -keyout broker.key -out broker.csr -subj "/CN=localhost"
    openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out broker.pem -days 30 -extfile broker.ext
    cat broker.key broker.pem >broker.keystore.pem
    openssl req -newkey rsa:2048 -noenc -keyout carol.key -out carol.csr -subj "/CN=carol"
    openssl x509 -req -in carol.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out carol.pem -days 30
  ) >"$c/openssl.log" 2>&1 || { cat "$c/openssl.log" >&2; die "making test certificates failed"; }
}

# A secured single node: SASL_SSL (SCRAM-SHA-512: admin, alice, bob), SSL with required
# client certificates (CN=carol), PLAINTEXT (for benchmarks; ANONYMOUS is a super user,
# as the controller listener needs), StandardAuthorizer (no ACL means denied) and the
# tests' ACLs. Prints "SASL_SSL_PORT SSL_PORT PLAINTEXT_PORT PID DIR"; DIR/secured.env
# holds the ports and the certificates' folder.
start_secured() {
  installed || die "kafka is not installed: run $0 install"
  java_ok || die "java is missing or older than 17"
  dir=$(mktemp -d "${TMPDIR:-/tmp}/tidemark-kafka-secured.XXXXXX")
  make_certs "$dir/certs"
  local sasl ssl cport
  port=$(free_port); sasl=$(free_port); ssl=$(free_port); cport=$(free_port)
  [ "$(printf '%s\n' "$port" "$sasl" "$ssl" "$cport" | sort -u | wc -l)" = 4 ] || die "port clash, try again"
  cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://127.0.0.1:$port,SASL_SSL://127.0.0.1:$sasl,SSL://127.0.0.1:$ssl,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port,SASL_SSL://localhost:$sasl,SSL://localhost:$ssl
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL
inter.broker.listener.name=SASL_SSL
controller.quorum.bootstrap.servers=127.0.0.1:$cport
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="admin-secret";
ssl.keystore.type=PEM
ssl.keystore.location=$dir/certs/broker.keystore.pem
ssl.truststore.type=PEM
ssl.truststore.location=$dir/certs/ca.pem
listener.name.ssl.ssl.client.auth=required
ssl.principal.mapping.rules=RULE:^CN=([^,]+).*\$/\$1/,DEFAULT
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:admin;User:ANONYMOUS
$(node_properties)
num.network.threads=2
num.io.threads=4
background.threads=4
EOF
  kjava kafka.tools.StorageTool format --standalone -t "$(kjava kafka.tools.StorageTool random-uuid)" \
    -c "$dir/server.properties" \
    --add-scram 'SCRAM-SHA-512=[name=admin,password=admin-secret]' \
    --add-scram 'SCRAM-SHA-512=[name=alice,password=alice-secret]' \
    --add-scram 'SCRAM-SHA-512=[name=bob,password=bob-secret]' >"$dir/format.log" 2>&1 \
    || { cat "$dir/format.log" >&2; die "formatting $dir failed"; }
  launch
  cat >"$dir/admin.properties" <<EOF
bootstrap.servers=localhost:$sasl
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="admin-secret";
ssl.truststore.type=PEM
ssl.truststore.location=$dir/certs/ca.pem
EOF
  # alice: her topics and groups, and transactional ids (exactly-once); carol (mTLS) the
  # same over SSL; bob: his groups, but topics bob-describe-* he may only describe,
  # bob-readonly-* he may not write, bob-ok-* all.
  java -cp "$KAFKA_HOME/libs/*" "$(dirname "$0")/java/CreateAcls.java" "$dir/admin.properties" \
    User:alice:TOPIC:PREFIXED:alice-:ALL User:alice:GROUP:PREFIXED:alice-:ALL \
    User:alice:TRANSACTIONAL_ID:PREFIXED:tidemark-:ALL \
    User:carol:TOPIC:PREFIXED:carol-:ALL User:carol:GROUP:PREFIXED:carol-:ALL \
    User:bob:GROUP:PREFIXED:bob-:ALL User:bob:TOPIC:PREFIXED:bob-describe-:DESCRIBE \
    User:bob:TOPIC:PREFIXED:bob-readonly-:READ User:bob:TOPIC:PREFIXED:bob-readonly-:DESCRIBE \
    User:bob:TOPIC:PREFIXED:bob-ok-:ALL >"$dir/acls.log" 2>&1 \
    || { cat "$dir/acls.log" >&2; stop "$pid"; die "creating the test ACLs failed"; }
  printf 'SASL_SSL_PORT=%s\nSSL_PORT=%s\nPLAINTEXT_PORT=%s\nCERTS=%s\n' "$sasl" "$ssl" "$port" "$dir/certs" >"$dir/secured.env"
  echo "$sasl $ssl $port $pid $dir"
}

stop() {
  local pid="${1:?PID}"
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 600); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

case "${1:-}" in
  install) install ;;
  start) shift; start "$@" ;;
  start-secured) start_secured ;;
  start-cluster) shift; start_cluster "$@" ;;
  stop) shift; stop "$@" ;;
  *) sed -n '2,21p' "$0"; exit 2 ;;
esac
