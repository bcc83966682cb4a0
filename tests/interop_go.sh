#!/usr/bin/env bash
# The original MaChat's example clients, written in Go with the same
# libraries (tests/go_clients/original_clients.go), chat through a real
# machat binary: a TCP client and a WebSocket client in one room, with
# WebSocket pings every half second, so the WebSocket client must answer
# them (golang.org/x/net/websocket does, as it reads) to stay.
#
#   bash tests/interop_go.sh
#
# Installs Debian's Go and golang.org/x/net when missing (no module proxy:
# the build is in GOPATH mode against Debian's copy). Every wait is bounded.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/machat-interop-go.XXXXXX")
STEP_TIMEOUT=15
PIDS=()

say() { printf 'interop-go: %s\n' "$*" >&2; }
fail() {
    say "FAIL: $*"
    for file in server.log tcp.out ws.out tcp.err ws.err; do
        [[ -s $WORK/$file ]] && { say "--- $file ---"; sed 's/^/    /' "$WORK/$file" >&2; }
    done
    exit 1
}
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

if ! command -v go >/dev/null || [[ ! -d /usr/share/gocode/src/golang.org/x/net/websocket ]]; then
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq golang-go golang-golang-x-net-dev >/dev/null
fi
say "building the Go clients"
GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE=$WORK/gocache GOFLAGS= \
    go build -o "$WORK/client" "$ROOT/tests/go_clients/original_clients.go"

cargo build --quiet --bin machat --manifest-path "$ROOT/Cargo.toml"
RUST_LOG=info "$TARGET_DIR/debug/machat" -tcp 127.0.0.1:0 -ws 127.0.0.1:0 --ws-ping-interval 0.5 \
    2>"$WORK/server.log" &
PIDS+=($!)

# wait_for FILE TEXT: until FILE has a line TEXT, at most STEP_TIMEOUT s.
wait_for() {
    local deadline=$((SECONDS + STEP_TIMEOUT))
    until grep -qxF -- "$2" "$1" 2>/dev/null; do
        ((SECONDS < deadline)) || fail "no line '$2' in $(basename "$1")"
        sleep 0.05
    done
}
wait_log() {
    local deadline=$((SECONDS + STEP_TIMEOUT))
    until grep -q -- "$1" "$WORK/server.log"; do
        ((SECONDS < deadline)) || fail "no '$1' in the server log"
        sleep 0.05
    done
}
wait_log "listening for WebSocket clients"
TCP_ADDR=$(sed -n 's/.*listening for TCP clients on //p' "$WORK/server.log")
WS_ADDR=$(sed -n 's#.*listening for WebSocket clients on ws://\(.*\)/mychat#\1#p' "$WORK/server.log")

mkfifo "$WORK/tcp.in" "$WORK/ws.in"
"$WORK/client" -proto tcp -client gopher -room original -address "$TCP_ADDR" \
    <"$WORK/tcp.in" >"$WORK/tcp.out" 2>"$WORK/tcp.err" &
PIDS+=($!)
exec 3>"$WORK/tcp.in"
"$WORK/client" -proto ws -client wsgopher -room original -address "$WS_ADDR" \
    <"$WORK/ws.in" >"$WORK/ws.out" 2>"$WORK/ws.err" &
PIDS+=($!)
exec 4>"$WORK/ws.in"

echo "hello from tcp" >&3
wait_for "$WORK/tcp.out" "gopher:hello from tcp"
echo "hello from ws" >&4
wait_for "$WORK/ws.out" "wsgopher:hello from ws"
wait_for "$WORK/tcp.out" "wsgopher:hello from ws"

# Several ping intervals pass; the WebSocket client must still be there.
say "letting six ping intervals pass"
sleep 3
echo "still here" >&4
wait_for "$WORK/ws.out" "wsgopher:still here"
wait_for "$WORK/tcp.out" "wsgopher:still here"
if grep -q "ping timeout" "$WORK/server.log"; then
    fail "the Go WebSocket client was closed for not answering pings"
fi
say "OK: the original's TCP and WebSocket clients chat, and answer pings"
