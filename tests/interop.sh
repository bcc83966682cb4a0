#!/usr/bin/env bash
# Interoperability with clients machat did not write: Python's `websockets`
# library on the WebSocket port and netcat (or socat) on the TCP port chat
# in one room through a real machat binary.
#
#   bash tests/interop.sh            # from anywhere in the repository
#   MACHAT_BIN=/path/to/machat bash tests/interop.sh   # another binary
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
# Then, when this machat has TLS listeners (`--wss` in its --help; skipped
# with a note until then), TLS with clients machat did not write, against a
# self-signed pair made by `openssl req` (openssl and curl are installed
# with apt-get when missing):
#   5. curl --cacert gets /healthz over HTTPS (--wss), as HTTP/1.1 via ALPN,
#      with TLS 1.2 and with TLS 1.3; plain HTTP on that port gets no 200;
#   6. `openssl s_client` joins over --tcp-tls, verifying the certificate,
#      and chats with an nc client on the plain TCP port, in one room;
#   7. SIGHUP with a new pair on disk: a new connection gets the new
#      certificate, the s_client connection made before goes on chatting;
#   8. that server too stops with SIGTERM and exits 0.
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
TLS_SERVER_PID=
SCLIENT_PID=
PLAIN_PID=
APT_UPDATED=

say() { printf 'interop: %s\n' "$*" >&2; }

fail() {
    say "FAIL: $*"
    for file in server.log tcp.out ws.out ws.err tls-server.log sclient.out plain.out curl.err; do
        if [[ -s $WORK/$file ]]; then
            say "--- $file ---"
            sed 's/^/    /' "$WORK/$file" >&2
        fi
    done
    exit 1
}

cleanup() {
    local pid
    for pid in "$WS_PID" "$TCP_PID" "$SERVER_PID" "$SCLIENT_PID" "$PLAIN_PID" "$TLS_SERVER_PID"; do
        if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    exec 3>&- 2>/dev/null || true
    exec 4>&- 2>/dev/null || true
    exec 5>&- 2>/dev/null || true
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

# Installs Debian packages, running apt-get update once per run.
apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    if [[ -z $APT_UPDATED ]]; then
        as_root apt-get update -qq || fail "apt-get update failed"
        APT_UPDATED=1
    fi
    as_root apt-get install -y -qq "$@" >/dev/null || fail "apt-get could not install $*"
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
    apt_install netcat-openbsd
fi

# ----- server --------------------------------------------------------------------

say "building machat"
(cd "$ROOT" && cargo build --quiet --bin machat) || fail "cargo build failed"
BIN=${MACHAT_BIN:-$TARGET_DIR/debug/machat}
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

say "Python websockets $WEBSOCKETS_VERSION and $TCP_TOOL chatted through machat"

# ----- TLS: curl and openssl s_client --------------------------------------------

if ! "$BIN" --help 2>/dev/null | grep -q -- '--wss'; then
    say "skipping the TLS checks: this machat has no --wss flag yet"
    say "PASS: Python websockets $WEBSOCKETS_VERSION and $TCP_TOOL chatted through machat (TLS not checked)"
    exit 0
fi

missing=()
command -v openssl >/dev/null || missing+=(openssl)
command -v curl >/dev/null || missing+=(curl)
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    apt_install "${missing[@]}"
fi

# A self-signed pair for localhost and 127.0.0.1, as docs/TLS-draft.md makes
# it. CA:FALSE: rustls-based clients (the example clients) refuse a
# certificate that is both the CA and the server's (CaUsedAsEndEntity).
make_pair() {
    local stem=$1
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
        -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -addext "basicConstraints=critical,CA:FALSE" \
        -keyout "$WORK/$stem.key.pem" -out "$WORK/$stem.cert.pem" 2>"$WORK/openssl-req.err" ||
        fail "openssl req failed: $(cat "$WORK/openssl-req.err")"
}
make_pair first
make_pair second
cp "$WORK/first.cert.pem" "$WORK/cert.pem"
cp "$WORK/first.key.pem" "$WORK/key.pem"

# A port free right now (the TLS listeners' log lines are not relied on).
free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
PLAIN_PORT=$(free_port)
WSS_PORT=$(free_port)
TLS_PORT=$(free_port)

RUST_LOG=info RUST_LOG_STYLE=never "$BIN" --tcp "127.0.0.1:$PLAIN_PORT" --no-ws \
    --tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem" \
    --wss "127.0.0.1:$WSS_PORT" --tcp-tls "127.0.0.1:$TLS_PORT" 2>"$WORK/tls-server.log" &
TLS_SERVER_PID=$!
for port in "$PLAIN_PORT" "$WSS_PORT" "$TLS_PORT"; do
    deadline=$((SECONDS + STEP_TIMEOUT))
    until (exec 9<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        kill -0 "$TLS_SERVER_PID" 2>/dev/null || fail "machat with TLS exited during start-up"
        ((SECONDS < deadline)) || fail "machat did not listen on 127.0.0.1:$port within ${STEP_TIMEOUT}s"
        sleep 0.1
    done
done
say "machat is listening: TCP $PLAIN_PORT, HTTPS/wss $WSS_PORT, TLS line protocol $TLS_PORT"

# 5. curl over HTTPS, both TLS versions, HTTP/1.1 through ALPN.
for version in "--tlsv1.2 --tls-max 1.2" "--tlsv1.3"; do
    # shellcheck disable=SC2086 # the version flags are two words on purpose
    reply=$(curl --silent --show-error --max-time "$STEP_TIMEOUT" --cacert "$WORK/cert.pem" $version \
        --write-out ' %{http_code} %{http_version}' "https://localhost:$WSS_PORT/healthz" 2>"$WORK/curl.err") ||
        fail "curl $version could not GET https://localhost:$WSS_PORT/healthz"
    [[ $reply == "ok 200 1.1" || $reply == $'ok\n 200 1.1' ]] ||
        fail "curl $version got \"$reply\" from /healthz, wanted ok, 200, HTTP/1.1"
done
say "curl got /healthz over HTTPS with TLS 1.2 and 1.3 (HTTP/1.1 by ALPN)"
code=$(curl --silent --max-time 5 --output /dev/null --write-out '%{http_code}' \
    "http://127.0.0.1:$WSS_PORT/healthz" 2>/dev/null || true)
[[ $code != 200 ]] || fail "plain HTTP on the HTTPS port was answered 200"
say "plain HTTP on the HTTPS port was not served (curl saw ${code:-no status})"

# 6. openssl s_client on --tcp-tls, nc (or socat) on the plain port, one room.
mkfifo "$WORK/sclient.in" "$WORK/plain.in"
: >"$WORK/sclient.out"
: >"$WORK/plain.out"
openssl s_client -quiet -verify_return_error -CAfile "$WORK/cert.pem" -servername localhost \
    -connect "127.0.0.1:$TLS_PORT" <"$WORK/sclient.in" >"$WORK/sclient.out" 2>"$WORK/sclient.err" &
SCLIENT_PID=$!
exec 4>"$WORK/sclient.in"
if [[ $TCP_TOOL == nc ]]; then
    nc 127.0.0.1 "$PLAIN_PORT" <"$WORK/plain.in" >"$WORK/plain.out" 2>&1 &
else
    socat - "TCP:127.0.0.1:$PLAIN_PORT" <"$WORK/plain.in" >"$WORK/plain.out" 2>&1 &
fi
PLAIN_PID=$!
exec 5>"$WORK/plain.in"

printf '{"name":"ossl-user","room":"%s"}' "$ROOM" >&4
printf 'ready\n' >&4
wait_for_line "$WORK/sclient.out" "ossl-user:ready" "openssl s_client to join over TLS and see its own echo"
printf '{"name":"%s","room":"%s"}' "$TCP_NAME" "$ROOM" >&5
printf 'hello from %s\n' "$TCP_TOOL" >&5
wait_for_line "$WORK/sclient.out" "$TCP_NAME:hello from $TCP_TOOL" "s_client to see the plain TCP client's line"
printf 'hello from openssl\n' >&4
wait_for_line "$WORK/plain.out" "ossl-user:hello from openssl" "the plain TCP client to see s_client's line"
say "openssl s_client (TLS) and $TCP_TOOL (plain TCP) chatted in one room"

protocol=$(openssl s_client -brief -tls1_2 -CAfile "$WORK/cert.pem" -servername localhost \
    -connect "127.0.0.1:$TLS_PORT" </dev/null 2>&1 | sed -n 's/^Protocol version: //p')
[[ $protocol == TLSv1.2 ]] || fail "openssl s_client -tls1_2 on --tcp-tls negotiated \"$protocol\""
say "openssl s_client -tls1_2 negotiated TLS 1.2 on --tcp-tls"

# 7. SIGHUP: new connections get the new certificate, old ones go on.
fingerprint_served() {
    openssl s_client -connect "127.0.0.1:$TLS_PORT" -servername localhost </dev/null 2>/dev/null |
        openssl x509 -noout -fingerprint -sha256 2>/dev/null
}
fingerprint_file() { openssl x509 -noout -fingerprint -sha256 -in "$1"; }
[[ $(fingerprint_served) == "$(fingerprint_file "$WORK/first.cert.pem")" ]] ||
    fail "the server does not serve the certificate it was started with"
cp "$WORK/second.cert.pem" "$WORK/cert.pem"
cp "$WORK/second.key.pem" "$WORK/key.pem"
kill -HUP "$TLS_SERVER_PID"
deadline=$((SECONDS + STEP_TIMEOUT))
until [[ $(fingerprint_served) == "$(fingerprint_file "$WORK/second.cert.pem")" ]]; do
    ((SECONDS < deadline)) || fail "new connections did not get the new certificate within ${STEP_TIMEOUT}s of SIGHUP"
    sleep 0.2
done
printf 'still here\n' >&4
wait_for_line "$WORK/plain.out" "ossl-user:still here" "the connection made before SIGHUP to go on"
say "SIGHUP: new connections got the new certificate; the s_client connection went on"

# 8. graceful stop.
exec 4>&- 5>&-
kill -TERM "$TLS_SERVER_PID"
deadline=$((SECONDS + STEP_TIMEOUT))
while kill -0 "$TLS_SERVER_PID" 2>/dev/null; do
    ((SECONDS < deadline)) || fail "machat with TLS did not stop within ${STEP_TIMEOUT}s of SIGTERM"
    sleep 0.1
done
status=0
wait "$TLS_SERVER_PID" || status=$?
TLS_SERVER_PID=
((status == 0)) || fail "machat with TLS exited with status $status after SIGTERM"

say "PASS: Python websockets $WEBSOCKETS_VERSION and $TCP_TOOL chatted through machat; curl and openssl s_client spoke TLS to it"
