#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60) each. cargo fuzz needs
# nightly compiler features; this machine has only stable Rust, so
# RUSTC_BOOTSTRAP=1 unlocks them.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_EACH=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
for target in handshake line_framing http_request websocket session names resp; do
    RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir tests/fuzz "$target" -- -max_total_time="$SECONDS_EACH"
done
