#!/usr/bin/env bash
# Starts machat on free ports, makes some traffic, and checks that /metrics
# parses as Prometheus text with prometheus_client's parser
# (tests/check_metrics.py). Installs prometheus_client when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PROMETHEUS_CLIENT=0.26.0
installed=$(python3 -c "from importlib.metadata import version; print(version('prometheus_client'))" 2>/dev/null || true)
if [ "$installed" != "$PROMETHEUS_CLIENT" ]; then
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet "prometheus_client==$PROMETHEUS_CLIENT"
fi

cargo build --quiet
bin="${CARGO_TARGET_DIR:-target}/debug/machat"
log=$(mktemp)
RUST_LOG=info "$bin" -tcp 127.0.0.1:0 -ws 127.0.0.1:0 2>"$log" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -f "$log"' EXIT

# The bound addresses are logged at start-up; wait for them (at most 10 s).
tcp="" http=""
for _ in $(seq 100); do
    tcp=$(sed -n 's/.*listening for TCP clients on \([^ ]*\)$/\1/p' "$log")
    http=$(sed -n 's|.*listening for WebSocket clients on ws://\([^/]*\)/.*|\1|p' "$log")
    [ -n "$tcp" ] && [ -n "$http" ] && break
    kill -0 "$pid" 2>/dev/null || { cat "$log"; echo "machat exited" >&2; exit 1; }
    sleep 0.1
done
[ -n "$tcp" ] && [ -n "$http" ] || { cat "$log"; echo "machat did not log its addresses" >&2; exit 1; }

python3 tests/check_metrics.py "$http" "$tcp"

kill -TERM "$pid"
status=0
wait "$pid" || status=$?
trap 'rm -f "$log"' EXIT
[ "$status" -eq 0 ] || { cat "$log"; echo "machat exited with $status after SIGTERM" >&2; exit 1; }
