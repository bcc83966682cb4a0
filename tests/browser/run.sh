#!/usr/bin/env bash
# The chat page in a real browser: installs what is missing (Debian's
# Chromium, playwright-core from package-lock.json), builds machat, and runs
# chat.test.mjs with node's test runner. Playwright never downloads a
# browser: it drives /usr/bin/chromium. Screenshots go to target/browser/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

if [ ! -x /usr/bin/chromium ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
fi

cd "$here"
if [ ! -d node_modules/playwright-core ] || ! npm ls --silent >/dev/null 2>&1; then
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund
fi

if ! command -v openssl >/dev/null; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y openssl
fi
# A self-signed certificate for the HTTPS listener; the browser is told to
# accept it (--ignore-certificate-errors), as a person clicks through.
tls_dir="$(mktemp -d)"
trap 'rm -rf "$tls_dir"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -addext "basicConstraints=critical,CA:FALSE" \
    -keyout "$tls_dir/key.pem" -out "$tls_dir/cert.pem" 2>/dev/null
export MACHAT_TLS_CERT="$tls_dir/cert.pem" MACHAT_TLS_KEY="$tls_dir/key.pem"

(cd "$root" && cargo build --quiet)
target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac
export MACHAT_BIN="$target_dir/debug/machat"
node --test --test-timeout=90000 chat.test.mjs
