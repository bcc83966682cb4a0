#!/usr/bin/env bash
# machat and Redis side by side, measured by the same load generator in the
# same session: every scenario runs machat then Redis, round after round,
# each run on a freshly started server. Results go to $OUT as JSON lines
# (one per run); benches/summarize.py turns them into the tables of
# docs/BENCHMARKS.md and benches/plot.py into docs/fanout.png.
#
#   benches/compare.sh                   # everything, 3 rounds
#   ROUNDS=5 benches/compare.sh fanout   # only scenarios whose name has "fanout"
#   ROUNDS=1 benches/compare.sh burst    # only the bursts (machat only)
#
# Before/after a change: build the old commit's binary, then
#   BASELINE=/path/to/old/machat benches/compare.sh fanout-1x1000
# runs the old binary and the new one alternately instead of machat and
# Redis; the old runs are tagged "build": "baseline" and summarize.py puts
# them side by side.
#
# TLS (machat only): fanout-1x1000, fanout-10x100 and idle-10000 also run
# over TLS (--tcp-tls, and wss:// on --wss), right after their plaintext
# runs, with the same labels and "tls": true in the JSON, against a
# self-signed certificate made in target/bench/. TLS=0 leaves them out;
#   ROUNDS=3 benches/compare.sh tls
# runs only those scenarios, plaintext and TLS alternating (TCP, TCP over
# TLS, WS, wss), and needs no Redis.
#
# Server variants: this build started with different flags, side by side.
#   VARIANTS='off=--history 0;memory=;db=--history-db @TMP@/history.db' \
#       ROUNDS=3 benches/compare.sh fanout-10x100
# runs each selected machat scenario (TCP and WebSocket) once per variant
# instead of machat and Redis, the variants one after the other on fresh
# servers, their order rotated by one every round (so none always runs
# first). A variant is NAME=FLAGS, variants are separated by ';', FLAGS are
# split on spaces (no quoting); @TMP@ in FLAGS is a temporary directory made
# for that run and removed after it. FLAGS starting with @BIN=PATH run the
# binary at PATH instead of this build (without SERVER_ARGS), e.g. an old
# build's database variant beside this one's:
#   VARIANTS='off=--history 0;db-old=@BIN=/tmp/machat-old --history-db @TMP@/h.db;db=--history-db @TMP@/h.db'
# Each run's JSON line gets
# "variant": NAME; summarize.py puts the variants side by side, with ratios
# to the first. Redis, TLS and BASELINE are left out.
#   ROUNDS=3 benches/compare.sh history
# runs fanout-1x1000 and fanout-10x100 over TCP only, with the history
# variants above (VARIANTS overrides them), and needs no Redis.
#
# SERVER_ARGS='--flag value' adds flags to every start of this build (not
# to BASELINE's). Every run's JSON line also gets "round": N, and, for
# machat, "server_metrics": the server's counters from /metrics read just
# after the generator finished (messages received, writes, history lines
# recorded, persisted and dropped, ...), so a run can be checked, e.g. that
# a database variant persisted what it recorded.
#
# The binaries are built into $CARGO_TARGET_DIR (default target/).
#
# Needs redis-server (Debian's package; installed here if missing).
#
# Cluster (issue 14): `ROUNDS=3 benches/compare.sh cluster` runs only
# fanout-1x1000 and fanout-10x100 over TCP, each round alternating three
# systems on fresh processes, every port chosen free (other benchmarks may
# share the machine):
#   - machat, one node, no cluster;
#   - a cluster: a fresh redis-server and two machat nodes with
#     --cluster redis://127.0.0.1:PORT, the generator given both nodes'
#     addresses so every room's members are split over the two; server CPU
#     is both nodes' summed (--server-pid, --extra-server-pid) and Redis's
#     own is reported apart (--backend-pid); after the run the nodes'
#     /metrics and Redis's INFO commandstats are added to the JSON line
#     under "cluster" (publishes sent and dropped, loop turns, PUBLISH calls);
#   - Redis pub/sub alone (--proto redis), for reference.
# Lines are tagged "build": "cluster" for the cluster runs. Summaries:
# benches/summarize.py (the cluster tables come last).
#
# Needs redis-server and redis-cli (Debian's package; installed here if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
OUT=${OUT:-target/bench/results.jsonl}
FILTER=${1:-}
BASELINE=${BASELINE:-}
SERVER_ARGS=${SERVER_ARGS:-}
HISTORY_VARIANTS='off=--history 0;memory=;db=--history-db @TMP@/history.db'
if [ "$FILTER" = history ]; then
    VARIANTS=${VARIANTS:-$HISTORY_VARIANTS}
fi
VARIANTS=${VARIANTS:-}
if [ -n "$VARIANTS" ] && { [ -n "$BASELINE" ] || [ "$FILTER" = tls ]; }; then
    echo "VARIANTS goes with neither BASELINE nor the tls scenarios" >&2
    exit 2
fi
IFS=';' read -r -a VARIANT_LIST <<<"$VARIANTS"
MACHAT_TCP=127.0.0.1:18989
MACHAT_WS=127.0.0.1:18099
MACHAT_TLS=127.0.0.1:18990
MACHAT_WSS=127.0.0.1:18443
TLS=${TLS:-1}
TLS_DIR=target/bench
TLS_CERT=$TLS_DIR/tls-cert.pem
TLS_KEY=$TLS_DIR/tls-key.pem
REDIS=127.0.0.1:16379

if [ -z "$BASELINE" ] && [ -z "$VARIANTS" ] && [ "$FILTER" != tls ] && ! command -v redis-server >/dev/null; then
    # (redis-cli comes with it)
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq redis-server >/dev/null
fi
cargo build --release --quiet --bin machat --example loadgen
TARGET=${CARGO_TARGET_DIR:-target}
MACHAT=$TARGET/release/machat
LOADGEN=$TARGET/release/examples/loadgen
TARGET_DIR=$TARGET
mkdir -p "$(dirname "$OUT")" "$TLS_DIR"
if [ "$TLS" != 0 ] && [ ! -s "$TLS_CERT" ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
        -addext basicConstraints=critical,CA:FALSE \
        -keyout "$TLS_KEY" -out "$TLS_CERT" 2>/dev/null
fi

SERVER_PID=
RUN_TMP=
# A cluster's other processes (its second node, then its Redis): stopped
# after SERVER_PID, nodes before their Redis.
EXTRA_PIDS=()
stop_server() {
    local pid
    for pid in "$SERVER_PID" "${EXTRA_PIDS[@]}"; do
        [ -n "$pid" ] || continue
        kill -INT "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    SERVER_PID=
    EXTRA_PIDS=()
    if [ -n "$RUN_TMP" ]; then
        rm -rf "$RUN_TMP"
        RUN_TMP=
    fi
}
trap stop_server EXIT

wait_port() {
    for _ in $(seq 200); do
        if (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "server on $1 did not start" >&2
    exit 1
}

# start_machat [BINARY [FLAGS...]]: this build (with $SERVER_ARGS), or BINARY.
start_machat() {
    local binary=${1:-}
    shift || true
    # TLS listeners on this build only (a baseline may predate them).
    local tls=() extra=()
    if [ -z "$binary" ]; then
        [ "$TLS" = 0 ] || [ -n "$VARIANTS" ] ||
            tls=(--tcp-tls "$MACHAT_TLS" --wss "$MACHAT_WSS" --tls-cert "$TLS_CERT" --tls-key "$TLS_KEY")
        # shellcheck disable=SC2206 # the words are the flags
        extra=($SERVER_ARGS)
    fi
    RUST_LOG=warn "${binary:-$MACHAT}" --tcp "$MACHAT_TCP" --ws "$MACHAT_WS" "${tls[@]}" "${extra[@]}" "$@" &
    SERVER_PID=$!
    wait_port "$MACHAT_TCP"
    [ ${#tls[@]} = 0 ] || wait_port "$MACHAT_TLS"
}

start_redis() {
    redis-server --port "${REDIS#*:}" --bind 127.0.0.1 --save '' --appendonly no \
        --protected-mode no --maxclients 30000 --loglevel warning &
    SERVER_PID=$!
    wait_port "$REDIS"
}

# The server's counters a run is checked by, from /metrics, as a JSON object
# ({} when there is no answer).
server_metrics() {
    local found
    found=$({ curl -s --max-time 5 "http://$MACHAT_WS/metrics" 2>/dev/null || true; } | python3 -c '
import json, sys
keep = ("messages_received_total", "deliveries_total", "writes_total", "loop_turns_total",
        "history_lines_recorded_total", "history_lines_persisted_total", "history_lines_dropped_total",
        "history_lines_failed_total", "history_writer_queue", "history_lines")
found = {}
for line in sys.stdin:
    name, _, value = line.partition(" ")
    name = name.removeprefix("machat_")
    if name in keep:
        found[name] = int(float(value))
print(json.dumps(found, separators=(",", ":")))' 2>/dev/null) || true
    echo "${found:-\{\}}"
}

ROUND=0

# run SYSTEM LABEL [loadgen flags...]: one run on a fresh server. SYSTEM is
# machat, machat-ws, machat-tls, machat-wss, baseline, baseline-ws, redis,
# or variant:NAME=FLAGS / variant-ws:NAME=FLAGS.
run() {
    local system=$1 label=$2
    shift 2
    [[ -z "$FILTER" || "$FILTER" == tls || "$FILTER" == history || "$label" == *"$FILTER"* ]] || return 0
    local tag= variant= vflags=() vbinary=
    if [[ "$system" == variant*:* ]]; then
        variant=${system#*:}
        local flags=
        [[ "$variant" != *=* ]] || flags=${variant#*=}
        if [[ "$flags" == *@TMP@* ]]; then
            RUN_TMP=$(mktemp -d "${TMPDIR:-/tmp}/machat-bench.XXXXXX")
            flags=${flags//@TMP@/$RUN_TMP}
        fi
        if [[ "$flags" == @BIN=* ]]; then
            vbinary=${flags%% *}
            vbinary=${vbinary#@BIN=}
            [[ "$flags" == *" "* ]] && flags=${flags#* } || flags=
        fi
        # shellcheck disable=SC2206 # the words are the flags
        vflags=($flags)
        system=${system%%:*}
        variant=${variant%%=*}
    fi
    case $system in
        machat) start_machat; args=(--addr "$MACHAT_TCP") ;;
        machat-ws) start_machat; args=(--transport ws --addr "$MACHAT_WS") ;;
        machat-tls) start_machat; args=(--tls --ca "$TLS_CERT" --addr "$MACHAT_TLS") ;;
        machat-wss) start_machat; args=(--transport ws --tls --ca "$TLS_CERT" --addr "$MACHAT_WSS") ;;
        baseline) start_machat "$BASELINE"; args=(--addr "$MACHAT_TCP"); tag=baseline ;;
        baseline-ws) start_machat "$BASELINE"; args=(--transport ws --addr "$MACHAT_WS"); tag=baseline ;;
        variant) start_machat "$vbinary" "${vflags[@]}"; args=(--addr "$MACHAT_TCP") ;;
        variant-ws) start_machat "$vbinary" "${vflags[@]}"; args=(--transport ws --addr "$MACHAT_WS") ;;
        redis) start_redis; args=(--proto redis --addr "$REDIS") ;;
    esac
    echo "== $label $system${variant:+ $variant}" >&2
    if "$LOADGEN" "${args[@]}" --server-pid "$SERVER_PID" --label "$label" --quiet "$@" >"$OUT.run"; then :; else
        echo "   (run failed with status $?)" >&2
    fi
    local fields="\"round\":$ROUND,"
    [ -z "$tag" ] || fields+="\"build\":\"$tag\","
    [ -z "$variant" ] || fields+="\"variant\":\"$variant\","
    [ "$system" = redis ] || fields+="\"server_metrics\":$(server_metrics),"
    sed "s/^{/{${fields//\//\\/}/" "$OUT.run" >>"$OUT"
    rm -f "$OUT.run"
    stop_server
}

# Every variant of this round, in this round's order (rotated by one each
# round): SYSTEM is variant or variant-ws.
variants() {
    local system=$1 count=${#VARIANT_LIST[@]} index
    shift
    for index in $(seq 0 $((count - 1))); do
        run "$system:${VARIANT_LIST[$(((index + ROUND - 1) % count))]}" "$@"
    done
}

# A TCP scenario: machat and Redis, or the baseline build and this one, or
# every variant.
both() {
    if [ -n "$VARIANTS" ]; then
        variants variant "$@"
    elif [ -n "$BASELINE" ]; then
        run baseline "$@"
        run machat "$@"
    else
        run machat "$@"
        run redis "$@"
    fi
}

# A WebSocket scenario (machat only): this build, after the baseline if any.
ws() {
    if [ -n "$VARIANTS" ]; then
        variants variant-ws "$@"
        return
    fi
    [ -z "$BASELINE" ] || run baseline-ws "$@"
    run machat-ws "$@"
}

# A machat-only TCP scenario.
solo() {
    if [ -n "$VARIANTS" ]; then
        variants variant "$@"
        return
    fi
    [ -z "$BASELINE" ] || run baseline "$@"
    run machat "$@"
}

# The same scenario over TLS (this build only): TCP over TLS, then wss.
tls() {
    [ "$TLS" != 0 ] && [ -z "$BASELINE" ] && [ -z "$VARIANTS" ] || return 0
    run machat-tls "$@"
    run machat-wss "$@"
}

# A free TCP port on 127.0.0.1 (the kernel's choice, released at once).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A counter's value in a node's /metrics text (0 when absent).
metric() {
    awk -v name="$2" '$1 == name { print $2; found = 1 } END { if (!found) print 0 }' <<<"$1"
}

# cluster_run SYSTEM LABEL [loadgen flags...]: one run of a cluster-mode
# system on fresh processes, every port free: "single" (one machat node, no
# cluster), "cluster" (Redis and two nodes), "redis" (Redis pub/sub alone).
cluster_run() {
    local system=$1 label=$2
    shift 2
    local redis_port redis_pid ports=() pids=() args=() tag=
    case $system in
        single)
            ports=("$(free_port)" "$(free_port)")
            RUST_LOG=warn "$MACHAT" --tcp "127.0.0.1:${ports[0]}" --ws "127.0.0.1:${ports[1]}" &
            SERVER_PID=$!
            wait_port "127.0.0.1:${ports[0]}"
            args=(--addr "127.0.0.1:${ports[0]}" --server-pid "$SERVER_PID")
            ;;
        cluster)
            redis_port=$(free_port)
            redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
                --protected-mode no --maxclients 30000 --loglevel warning &
            redis_pid=$!
            wait_port "127.0.0.1:$redis_port"
            # node a on ports[0] (TCP) and ports[1] (HTTP: /metrics), b on 2 and 3
            ports=("$(free_port)" "$(free_port)" "$(free_port)" "$(free_port)")
            for node in 0 1; do
                RUST_LOG=warn "$MACHAT" --cluster "redis://127.0.0.1:$redis_port" \
                    --node-id "bench-$node" --tcp "127.0.0.1:${ports[2 * node]}" \
                    --ws "127.0.0.1:${ports[2 * node + 1]}" &
                pids+=($!)
            done
            SERVER_PID=${pids[0]}
            EXTRA_PIDS=("${pids[1]}" "$redis_pid")
            wait_port "127.0.0.1:${ports[0]}"
            wait_port "127.0.0.1:${ports[2]}"
            args=(--addr "127.0.0.1:${ports[0]},127.0.0.1:${ports[2]}"
                --server-pid "${pids[0]}" --extra-server-pid "${pids[1]}" --backend-pid "$redis_pid")
            tag=cluster
            ;;
        redis)
            redis_port=$(free_port)
            redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
                --protected-mode no --maxclients 30000 --loglevel warning &
            SERVER_PID=$!
            wait_port "127.0.0.1:$redis_port"
            args=(--proto redis --addr "127.0.0.1:$redis_port" --server-pid "$SERVER_PID")
            ;;
    esac
    echo "== $label $system (load: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
    if "$LOADGEN" "${args[@]}" --label "$label" --quiet "$@" >"$OUT.run"; then :; else
        echo "   (run failed with status $?)" >&2
    fi
    # What the cluster said to Redis, read before stopping anything: each
    # node's publishes (sent, dropped) and loop turns over its whole life
    # (connect, barrier, warm-up, timed phase, drain), and Redis's PUBLISH
    # calls, which only the nodes make here.
    local extra="\"loadavg\":\"$(cat /proc/loadavg)\""
    if [ "$system" = cluster ]; then
        local nodes=() text
        for node in 0 1; do
            text=$(curl -s --max-time 5 "http://127.0.0.1:${ports[2 * node + 1]}/metrics" || true)
            nodes+=("{\"node\":\"bench-$node\",\"publishes_sent\":$(metric "$text" 'machat_cluster_publishes_total{outcome="sent"}'),\"publishes_dropped\":$(metric "$text" 'machat_cluster_publishes_total{outcome="dropped"}'),\"lines_dropped\":$(metric "$text" machat_cluster_lines_dropped_total),\"loop_turns\":$(metric "$text" machat_loop_turns_total),\"messages_received\":$(metric "$text" machat_messages_received_total),\"payloads_delivered\":$(metric "$text" 'machat_cluster_payloads_received_total{outcome="delivered"}'),\"payloads_refused\":$(metric "$text" 'machat_cluster_payloads_received_total{outcome="refused"}'),\"deliveries\":$(metric "$text" machat_deliveries_total)}")
        done
        local publish_calls
        publish_calls=$(redis-cli -p "$redis_port" info commandstats | tr -d '\r' |
            sed -n 's/^cmdstat_publish:calls=\([0-9]*\),.*/\1/p')
        extra+=",\"cluster\":{\"nodes\":[${nodes[0]},${nodes[1]}],\"redis_publish_calls\":${publish_calls:-0}}"
    fi
    if [ -n "$tag" ]; then extra="\"build\":\"$tag\",$extra"; fi
    # (python, not sed: the load average has slashes)
    EXTRA=$extra python3 -c 'import os, sys
for line in sys.stdin:
    print("{" + os.environ["EXTRA"] + "," + line[1:] if line.startswith("{") else line, end="")' \
        <"$OUT.run" >>"$OUT"
    rm -f "$OUT.run"
    stop_server
}

if [ "$FILTER" = cluster ]; then
    for round in $(seq "$ROUNDS"); do
        echo "=== round $round of $ROUNDS (cluster)" >&2
        for scenario in "fanout-1x1000 --rooms 1" "fanout-10x100 --rooms 10"; do
            # shellcheck disable=SC2086 # the words are the flags
            set -- $scenario --receivers 1000 --senders 10 --duration "$DURATION"
            cluster_run single "$@"
            cluster_run cluster "$@"
            cluster_run redis "$@"
        done
    done
    echo "results: $OUT" >&2
    exit 0
fi

TLS_SCENARIOS=(
    "fanout-1x1000 --rooms 1 --receivers 1000 --senders 10 --duration $DURATION"
    "fanout-10x100 --rooms 10 --receivers 1000 --senders 10 --duration $DURATION"
    "idle-10000 --idle 10000 --hold 0"
)
if [ "$FILTER" = tls ]; then
    # Only the TLS scenarios, each plaintext and TLS alternating.
    for ROUND in $(seq "$ROUNDS"); do
        echo "=== round $ROUND of $ROUNDS (TLS)" >&2
        for scenario in "${TLS_SCENARIOS[@]}"; do
            # shellcheck disable=SC2086 # the words are the flags
            set -- $scenario
            run machat "$@"
            run machat-tls "$@"
            run machat-ws "$@"
            run machat-wss "$@"
        done
    done
    echo "results: $OUT" >&2
    exit 0
fi

if [ "$FILTER" = history ]; then
    # Only the two fan-out scenarios over TCP, the variants alternating.
    for ROUND in $(seq "$ROUNDS"); do
        echo "=== round $ROUND of $ROUNDS (variants)" >&2
        for scenario in "${TLS_SCENARIOS[@]:0:2}"; do
            # shellcheck disable=SC2086 # the words are the flags
            variants variant $scenario
        done
    done
    echo "results: $OUT" >&2
    exit 0
fi

for ROUND in $(seq "$ROUNDS"); do
    echo "=== round $ROUND of $ROUNDS" >&2
    both fanout-1x1000 --rooms 1 --receivers 1000 --senders 10 --duration "$DURATION"
    both fanout-10x100 --rooms 10 --receivers 1000 --senders 10 --duration "$DURATION"
    ws fanout-1x1000 --rooms 1 --receivers 1000 --senders 10 --duration "$DURATION"
    ws fanout-10x100 --rooms 10 --receivers 1000 --senders 10 --duration "$DURATION"
    for scenario in "${TLS_SCENARIOS[@]:0:2}"; do
        # shellcheck disable=SC2086 # the words are the flags
        tls $scenario
    done
    # The same with more messages in flight per sender (more to coalesce).
    both fanout-1x1000-window64 --rooms 1 --receivers 1000 --senders 10 --window 64 --duration "$DURATION"
    both fanout-10x100-window64 --rooms 10 --receivers 1000 --senders 10 --window 64 --duration "$DURATION"
    ws fanout-10x100-window64 --rooms 10 --receivers 1000 --senders 10 --window 64 --duration "$DURATION"
    both latency-paced-1x1000 --rooms 1 --receivers 1000 --senders 1 --rate 100 --duration "$DURATION"
    for size in 10 100 1000 10000; do
        both "room-size-$size" --rooms 1 --receivers "$size" --senders 10 --duration 5 --warmup 1
    done
    both idle-10000 --idle 10000 --hold 0
    ws idle-10000 --idle 10000 --hold 0
    tls idle-10000 --idle 10000 --hold 0
    for n in 1000 19000; do
        solo "idle-$n" --idle "$n" --hold 0
        ws "idle-$n" --idle "$n" --hold 0
    done
    # Bursts (machat only): one sender writes 16 MB as fast as it can into a
    # room of 3 receivers, all reading flat out, or one of them at 1 MB/s (a
    # slow consumer the server may cut: reported, not a failure).
    solo burst-16m --burst 16000000 --receivers 3 --senders 1 --drain-timeout 30
    solo burst-16m-slow-reader --burst 16000000 --receivers 3 --senders 1 \
        --read-rate 1000000 --slow-receivers 1 --drain-timeout 30
    ws burst-16m-slow-reader --burst 16000000 --receivers 3 --senders 1 \
        --read-rate 1000000 --slow-receivers 1 --drain-timeout 30
done
echo "results: $OUT" >&2
