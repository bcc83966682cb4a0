#!/usr/bin/env bash
# Interoperability with clients machat did not write: Python's `websockets`
# library on the WebSocket port and netcat (or socat) on the TCP port chat
# in one room through a real machat binary.
#
#   bash tests/interop.sh            # from anywhere in the repository
#
# It installs what it needs (the `websockets` package into target/, and
# netcat-openbsd with apt-get when neither nc nor socat is found), builds
# and starts machat on ephemeral ports, and then:
#   1. the TCP client joins (handshake with no newline, like the original's
#      client) and sees its own first line echoed;
#   2. the Python client joins and sends a line; the TCP client sees it;
#   3. the TCP client sends a line; the Python client sees it and its own
#      echo (and gets a pong to a ping), the TCP client its own echo;
#   4. the server is stopped with SIGTERM and must exit 0.
# Every wait is bounded; any failure exits non-zero with a message.
set -euo pipefail

WEBSOCKETS_VERSION=15.0.1
STEP_TIMEOUT=${INTEROP_TIMEOUT:-15}
ROOM=interop
TCP_NAME=nc-user
WS_NAME=py-user

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/machat-interop.XXXXXX")
SERVER_PID=
TCP_PID=
WS_PID=

say() { printf 'interop: %s\n' "$*" >&2; }

fail() {
    say "FAIL: $*"
    for file in server.log tcp.out ws.out ws.err; do
        if [[ -s $WORK/$file ]]; then
            say "--- $file ---"
            sed 's/^/    /' "$WORK/$file" >&2
        fi
    done
    exit 1
}

cleanup() {
    local pid
    for pid in "$WS_PID" "$TCP_PID" "$SERVER_PID"; do
        if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    exec 3>&- 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Runs a command as root: directly when root, else through sudo.
as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        fail "need root (or sudo) to run: $*"
    fi
}

# Waits until FILE contains the fixed string TEXT as a whole line, or fails.
wait_for_line() {
    local file=$1 text=$2 what=$3
    local deadline=$((SECONDS + STEP_TIMEOUT))
    until grep -qxF -- "$text" "$file" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            fail "timed out after ${STEP_TIMEOUT}s waiting for $what (line \"$text\" in $(basename "$file"))"
        fi
        sleep 0.1
    done
}

# ----- tools -------------------------------------------------------------------

PYTHON=${PYTHON:-python3}
command -v "$PYTHON" >/dev/null || fail "python3 is required"
PYLIB=$TARGET_DIR/interop-python
if ! PYTHONPATH=$PYLIB "$PYTHON" -c "import websockets, sys; sys.exit(websockets.__version__ != '$WEBSOCKETS_VERSION')" 2>/dev/null; then
    say "installing websockets==$WEBSOCKETS_VERSION into $PYLIB"
    mkdir -p "$PYLIB"
    # --target keeps it out of the system Python (and out of PEP 668's way).
    "$PYTHON" -m pip install --quiet --disable-pip-version-check --upgrade --target "$PYLIB" \
        "websockets==$WEBSOCKETS_VERSION" || fail "pip could not install websockets==$WEBSOCKETS_VERSION"
fi
export PYTHONPATH=$PYLIB${PYTHONPATH:+:$PYTHONPATH}

if ! command -v nc >/dev/null && ! command -v socat >/dev/null; then
    say "installing netcat-openbsd (no nc or socat found)"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq || fail "apt-get update failed"
    as_root apt-get install -y -qq netcat-openbsd >/dev/null || fail "apt-get could not install netcat-openbsd"
fi

# ----- server --------------------------------------------------------------------

say "building machat"
(cd "$ROOT" && cargo build --quiet --bin machat) || fail "cargo build failed"
BIN=$TARGET_DIR/debug/machat
[[ -x $BIN ]] || fail "no binary at $BIN"

RUST_LOG=info RUST_LOG_STYLE=never "$BIN" -tcp 127.0.0.1:0 -ws 127.0.0.1:0 2>"$WORK/server.log" &
SERVER_PID=$!
deadline=$((SECONDS + STEP_TIMEOUT))
TCP_ADDR=
WS_URL=
while [[ -z $TCP_ADDR || -z $WS_URL ]]; do
    kill -0 "$SERVER_PID" 2>/dev/null || fail "machat exited during start-up"
    ((SECONDS < deadline)) || fail "machat did not log its addresses within ${STEP_TIMEOUT}s"
    sleep 0.1
    TCP_ADDR=$(sed -n 's/.*listening for TCP clients on \([^ ]*\).*/\1/p' "$WORK/server.log")
    WS_URL=$(sed -n 's/.*listening for WebSocket clients on \(ws:[^ ]*\).*/\1/p' "$WORK/server.log")
done
say "machat is listening: TCP $TCP_ADDR, WebSocket $WS_URL"

# ----- TCP client: nc (or socat) reading a FIFO held open on fd 3 ----------

mkfifo "$WORK/tcp.in"
: >"$WORK/tcp.out"
if command -v nc >/dev/null; then
    nc "${TCP_ADDR%:*}" "${TCP_ADDR##*:}" <"$WORK/tcp.in" >"$WORK/tcp.out" 2>&1 &
    TCP_TOOL=nc
else
    socat - "TCP:$TCP_ADDR" <"$WORK/tcp.in" >"$WORK/tcp.out" 2>&1 &
    TCP_TOOL=socat
fi
TCP_PID=$!
exec 3>"$WORK/tcp.in"

# The original TCP client's handshake: the JSON object with no newline.
printf '{"name":"%s","room":"%s"}' "$TCP_NAME" "$ROOM" >&3
printf 'ready\n' >&3
wait_for_line "$WORK/tcp.out" "$TCP_NAME:ready" "the $TCP_TOOL client to join and see its own echo"
say "$TCP_TOOL client joined room $ROOM"

# ----- WebSocket client: Python websockets -----------------------------------

"$PYTHON" "$ROOT/tests/interop_ws.py" "$WS_URL" "$WS_NAME" "$ROOM" "hello from python" \
    "$TCP_NAME" "hello from $TCP_TOOL" "$STEP_TIMEOUT" >"$WORK/ws.out" 2>"$WORK/ws.err" &
WS_PID=$!
wait_for_line "$WORK/tcp.out" "$WS_NAME:hello from python" "the $TCP_TOOL client to see the Python client's line"
say "$TCP_TOOL client saw the Python client's line"

printf 'hello from %s\n' "$TCP_TOOL" >&3
wait_for_line "$WORK/tcp.out" "$TCP_NAME:hello from $TCP_TOOL" "the $TCP_TOOL client's own echo"

if ! wait "$WS_PID"; then
    WS_PID=
    fail "the Python websockets client failed"
fi
WS_PID=
grep -qxF "websocket client: OK" "$WORK/ws.out" || fail "the Python client did not report success"
say "Python client saw its own echo and the $TCP_TOOL client's line, and got a pong"

# Nothing but chat lines reached the TCP client.
if grep -v -x -e "$TCP_NAME:ready" -e "$WS_NAME:hello from python" -e "$TCP_NAME:hello from $TCP_TOOL" \
    "$WORK/tcp.out" >"$WORK/unexpected"; then
    fail "the $TCP_TOOL client received unexpected lines: $(cat "$WORK/unexpected")"
fi

# ----- graceful stop ----------------------------------------------------------

exec 3>&-
kill -TERM "$SERVER_PID"
deadline=$((SECONDS + STEP_TIMEOUT))
while kill -0 "$SERVER_PID" 2>/dev/null; do
    ((SECONDS < deadline)) || fail "machat did not stop within ${STEP_TIMEOUT}s of SIGTERM"
    sleep 0.1
done
status=0
wait "$SERVER_PID" || status=$?
SERVER_PID=
((status == 0)) || fail "machat exited with status $status after SIGTERM"

say "PASS: Python websockets $WEBSOCKETS_VERSION and $TCP_TOOL chatted through machat"
