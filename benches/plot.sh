#!/usr/bin/env bash
# Installs matplotlib under target/ (not system-wide) and draws docs/fanout.png.
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS=${1:-target/bench/results.jsonl}
PY=target/bench-python
if ! PYTHONPATH=$PY python3 -c "import matplotlib" 2>/dev/null; then
    python3 -m pip install --quiet --target "$PY" "matplotlib==3.9.2"
fi
PYTHONPATH=$PY python3 benches/plot.py "$RESULTS" docs/fanout.png
