#!/usr/bin/env bash
# Single-node Apache Kafka 4.x KRaft broker (broker+controller in one JVM) for
# development and CI, run from the Maven Central jars -- no Docker, no tarball.
#
#   deploy/kafka-local.sh start            # prints the bootstrap address as the last stdout line
#   deploy/kafka-local.sh status           # exit 0 if running, 1 if not
#   deploy/kafka-local.sh stop [--clean]   # --clean also deletes the data dir
#   deploy/kafka-local.sh clean            # = stop --clean
#
# Environment:
#   KAFKA_PORT             PLAINTEXT listener port            (default 9092)
#   KAFKA_CONTROLLER_PORT  CONTROLLER listener port           (default KAFKA_PORT+1)
#   KAFKA_DATA_DIR         data dir (logs, pid, config)       (default .cache/kafka/data-<port>)
#   KAFKA_CACHE_DIR        jar cache root                     (default <repo>/.cache/kafka)
#   KAFKA_VERSION          broker version                     (default: kafka.version in deploy/kafka/pom.xml)
#   KAFKA_HEAP_OPTS        JVM heap options                   (default "-Xmx512m -Xms256m")
#   KAFKA_OPTS             extra JVM options
#   KAFKA_START_TIMEOUT    seconds to wait for the broker     (default 60)
#   KAFKA_STOP_TIMEOUT     seconds before SIGKILL on stop     (default 30)
#   JAVA_HOME / JAVA       Java 17+ to use                    (default: java on PATH)
#   KAFKA_PYTHON           python used for the readiness probe (default python3; stdlib only)
#
# Progress messages go to stderr; stdout of `start` is only the bootstrap address.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
POM="$SCRIPT_DIR/kafka/pom.xml"
LOG4J_CONF="$SCRIPT_DIR/kafka/log4j2.yaml"

HOST=127.0.0.1
PORT="${KAFKA_PORT:-9092}"
CPORT="${KAFKA_CONTROLLER_PORT:-$((PORT + 1))}"
CACHE_ROOT="${KAFKA_CACHE_DIR:-$REPO_ROOT/.cache/kafka}"
DATA_DIR="${KAFKA_DATA_DIR:-$CACHE_ROOT/data-$PORT}"
START_TIMEOUT="${KAFKA_START_TIMEOUT:-60}"
STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
PYTHON="${KAFKA_PYTHON:-python3}"

VERSION="${KAFKA_VERSION:-$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM" | head -n1)}"
LIB_DIR="$CACHE_ROOT/$VERSION/lib"

CONF="$DATA_DIR/server.properties"
PID_FILE="$DATA_DIR/kafka.pid"
SERVER_LOG="$DATA_DIR/server.log"     # written by log4j2 (see deploy/kafka/log4j2.yaml)
CONSOLE_LOG="$DATA_DIR/console.log"   # JVM stdout/stderr (WARN+ and crashes)
BOOTSTRAP="$HOST:$PORT"

log() { echo "kafka-local: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

java_bin() {
    if [[ -n "${JAVA:-}" ]]; then echo "$JAVA"
    elif [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then echo "$JAVA_HOME/bin/java"
    else command -v java || die "java not found (Kafka 4.x needs Java 17+)"
    fi
}

# ---------------------------------------------------------------- processes

# Pids of broker JVMs started from *this* data dir (matched by the config path
# on their command line), so we never touch anybody else's processes.
broker_pids() {
    local f pid
    for f in /proc/[0-9]*/cmdline; do
        pid="${f#/proc/}"; pid="${pid%/cmdline}"
        if cmdline_has "$pid" "$CONF" && cmdline_has "$pid" kafka.Kafka; then echo "$pid"; fi
    done
}

# cmdline_has PID WORD: true if WORD is one of the process's arguments.
cmdline_has() {
    { tr '\0' '\n' <"/proc/$1/cmdline" | grep -qxF -- "$2"; } 2>/dev/null
}

# Pid of the running broker for this data dir, or nothing.
running_pid() {
    local pid
    if [[ -f "$PID_FILE" ]]; then
        pid="$(cat "$PID_FILE" 2>/dev/null || true)"
        if [[ "$pid" =~ ^[0-9]+$ ]] && cmdline_has "$pid" "$CONF"; then
            echo "$pid"; return 0
        fi
    fi
    broker_pids | head -n1
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# ---------------------------------------------------------------- readiness

# Real API check with the python stdlib only (no client library needed):
# ApiVersions v0 (always supported), then a Metadata request at a version the
# broker supports; ready when the broker lists itself.
api_ready() {
    "$PYTHON" - "$HOST" "$PORT" <<'PY' >/dev/null 2>&1
import socket, struct, sys
host, port = sys.argv[1], int(sys.argv[2])

def call(sock, key, ver, body, corr):
    cid = b"kafka-local"
    msg = struct.pack(">hhih", key, ver, corr, len(cid)) + cid + body
    sock.sendall(struct.pack(">i", len(msg)) + msg)
    def recv(n):
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf
    (size,) = struct.unpack(">i", recv(4))
    data = recv(size)
    assert struct.unpack(">i", data[:4])[0] == corr
    return data[4:]

with socket.create_connection((host, port), timeout=3) as s:
    s.settimeout(3)
    r = call(s, 18, 0, b"", 1)                    # ApiVersions v0
    err, n = struct.unpack(">hi", r[:6])
    assert err == 0
    versions = {}
    for i in range(n):
        k, lo, hi = struct.unpack(">hhh", r[6 + 6 * i: 12 + 6 * i])
        versions[k] = (lo, hi)
    lo, hi = versions[3]                          # Metadata
    v = min(hi, 8)                                # v9+ are "flexible" (tagged fields)
    assert v >= max(lo, 1)
    body = struct.pack(">i", 0)                   # empty topic list
    if v >= 4: body += b"\x00"                    # allow_auto_topic_creation
    if v >= 8: body += b"\x00\x00"                # include_*_authorized_operations
    r = call(s, 3, v, body, 2)
    off = 4 if v >= 3 else 0                      # throttle_time_ms
    (nb,) = struct.unpack(">i", r[off:off + 4]); off += 4
    ports = []
    for _ in range(nb):
        node, hl = struct.unpack(">ih", r[off:off + 6]); off += 6 + hl
        (p,) = struct.unpack(">i", r[off:off + 4]); off += 4
        (rl,) = struct.unpack(">h", r[off:off + 2]); off += 2 + max(rl, 0)
        ports.append(p)
    assert port in ports
PY
}

broker_ready() {
    if command -v "$PYTHON" >/dev/null 2>&1; then
        api_ready
    else
        # No python: the listener accepts connections and the server says it started.
        port_open "$PORT" && grep -q "Kafka Server started" "$SERVER_LOG" 2>/dev/null
    fi
}

show_logs() {
    local f
    for f in "$SERVER_LOG" "$CONSOLE_LOG"; do
        if [[ -s "$f" ]]; then
            echo "----- tail $f -----" >&2
            tail -n 40 "$f" >&2
        fi
    done
}

# ---------------------------------------------------------------- jars

ensure_jars() {
    [[ -f "$LIB_DIR/.complete" ]] && return 0
    command -v mvn >/dev/null 2>&1 || die "mvn not found; needed once to fetch the Kafka $VERSION jars"
    mkdir -p "$CACHE_ROOT/$VERSION"
    (
        flock 8
        [[ -f "$LIB_DIR/.complete" ]] && exit 0
        log "resolving Kafka $VERSION jars from Maven Central into $LIB_DIR ..."
        tmp="$CACHE_ROOT/$VERSION/lib.tmp.$$"
        rm -rf "$tmp" "$LIB_DIR"
        mvnlog="$CACHE_ROOT/$VERSION/mvn.log"
        if ! mvn -q -B -Dstyle.color=never -f "$POM" -Dkafka.version="$VERSION" \
                dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" \
                >"$mvnlog" 2>&1; then
            tail -n 40 "$mvnlog" >&2
            rm -rf "$tmp"
            exit 1
        fi
        ls "$tmp"/kafka_2.13-*.jar >/dev/null 2>&1 || { rm -rf "$tmp"; echo "kafka_2.13 jar missing" >&2; exit 1; }
        touch "$tmp/.complete"
        mv "$tmp" "$LIB_DIR"
    ) 8>"$CACHE_ROOT/$VERSION/.lock" || die "resolving the Kafka $VERSION jars with mvn failed"
}

# ---------------------------------------------------------------- config

write_config() {
    cat >"$CONF" <<EOF
# Generated by deploy/kafka-local.sh -- rewritten on every start.
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CPORT
advertised.listeners=PLAINTEXT://$HOST:$PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
controller.quorum.voters=1@$HOST:$CPORT

log.dirs=$DATA_DIR/logs
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=true
delete.topic.enable=true

offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0

num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
EOF
}

# ---------------------------------------------------------------- commands

cmd_start() {
    [[ "$PORT" =~ ^[0-9]+$ && "$CPORT" =~ ^[0-9]+$ ]] || die "KAFKA_PORT/KAFKA_CONTROLLER_PORT must be numbers"
    local fresh_dir=""
    [[ -d "$DATA_DIR" ]] || fresh_dir=1
    mkdir -p "$DATA_DIR"
    exec 9>"$DATA_DIR/.lock"
    flock 9   # serialise concurrent starts for the same data dir

    local pid
    pid="$(running_pid)"
    if [[ -n "$pid" ]]; then
        log "already running (pid $pid, data $DATA_DIR)"
        echo "$pid" >"$PID_FILE"
        wait_ready "$pid"
        echo "$BOOTSTRAP"
        return 0
    fi
    rm -f "$PID_FILE"
    local busy
    for busy in "$PORT" "$CPORT"; do
        if port_open "$busy"; then
            [[ -n "$fresh_dir" ]] && rm -rf "$DATA_DIR"
            die "port $busy is already in use by another process"
        fi
    done

    ensure_jars
    local java; java="$(java_bin)"
    local -a heap jvm
    read -r -a heap <<<"${KAFKA_HEAP_OPTS:--Xmx512m -Xms256m}"
    read -r -a jvm <<<"-server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true ${KAFKA_OPTS:-}"
    jvm+=("-Dlog4j2.configurationFile=$LOG4J_CONF" "-Dkafka.logs.dir=$DATA_DIR")

    write_config
    if [[ ! -f "$DATA_DIR/logs/meta.properties" ]]; then
        local cluster_id="-"
        # 16 random bytes, base64url without padding (Kafka's Uuid format); a leading
        # '-' would be taken for an option by the storage tool, so draw again.
        while [[ "$cluster_id" == -* ]]; do
            cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
        done
        log "formatting storage in $DATA_DIR/logs (cluster id $cluster_id)"
        "$java" "${jvm[@]}" -Dkafka.log.level=WARN -cp "$LIB_DIR/*" kafka.tools.StorageTool format \
            -t "$cluster_id" -c "$CONF" >>"$CONSOLE_LOG" 2>&1 9>&- \
            || { show_logs; die "kafka-storage format failed"; }
    fi

    log "starting Kafka $VERSION on $BOOTSTRAP (controller $HOST:$CPORT, data $DATA_DIR)"
    (
        cd "$DATA_DIR"
        exec nohup setsid "$java" "${heap[@]}" "${jvm[@]}" -cp "$LIB_DIR/*" kafka.Kafka "$CONF" \
            >>"$CONSOLE_LOG" 2>&1 </dev/null 9>&-
    ) &
    pid=$!
    # setsid normally execs in place; if it had to fork, find the JVM by its config path.
    sleep 0.2
    if ! cmdline_has "$pid" "$CONF"; then
        pid="$(broker_pids | head -n1)"
        [[ -n "$pid" ]] || { show_logs; die "broker process exited immediately"; }
    fi
    echo "$pid" >"$PID_FILE"
    wait_ready "$pid"
    log "ready (pid $pid)"
    echo "$BOOTSTRAP"
}

wait_ready() {
    local pid="$1" deadline=$((SECONDS + START_TIMEOUT))
    while ! broker_ready; do
        if ! kill -0 "$pid" 2>/dev/null; then
            show_logs; rm -f "$PID_FILE"
            die "broker (pid $pid) died during startup"
        fi
        if ((SECONDS >= deadline)); then
            show_logs
            log "not ready after ${START_TIMEOUT}s; stopping it"
            stop_pids "$pid"; rm -f "$PID_FILE"
            die "broker did not become ready on $BOOTSTRAP"
        fi
        sleep 0.5
    done
}

stop_pids() {
    local pids=("$@") p alive deadline=$((SECONDS + STOP_TIMEOUT))
    kill -TERM "${pids[@]}" 2>/dev/null || true
    while :; do
        alive=()
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive+=("$p"); done
        ((${#alive[@]} == 0)) && return 0
        if ((SECONDS >= deadline)); then
            log "still running after ${STOP_TIMEOUT}s, sending SIGKILL to ${alive[*]}"
            kill -KILL "${alive[@]}" 2>/dev/null || true
            deadline=$((SECONDS + 10))
            pids=("${alive[@]}")
            STOP_TIMEOUT=10
        fi
        sleep 0.2
    done
}

cmd_stop() {
    local clean="${1:-}"
    local -a pids=()
    local p
    [[ -d "$DATA_DIR" ]] || { log "not running (no data dir $DATA_DIR)"; return 0; }
    while read -r p; do [[ -n "$p" ]] && pids+=("$p"); done < <({ running_pid; broker_pids; } | sort -u)
    if ((${#pids[@]})); then
        log "stopping broker on $BOOTSTRAP (pid ${pids[*]})"
        stop_pids "${pids[@]}"
        log "stopped"
    else
        log "not running"
    fi
    rm -f "$PID_FILE"
    if [[ "$clean" == "--clean" ]]; then
        log "removing $DATA_DIR"
        rm -rf "$DATA_DIR"
    fi
}

cmd_status() {
    local pid
    pid="$(running_pid)"
    if [[ -n "$pid" ]]; then
        echo "running (pid $pid) on $BOOTSTRAP, data $DATA_DIR"
        return 0
    fi
    echo "not running ($BOOTSTRAP, data $DATA_DIR)"
    return 1
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop "${2:-}" ;;
    clean) cmd_stop --clean ;;
    status) cmd_status ;;
    *) echo "usage: $0 start|stop [--clean]|clean|status" >&2; exit 2 ;;
esac
