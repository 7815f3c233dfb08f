#!/usr/bin/env bash
# The test command. Makes sure what the tests need is there (Redis on 127.0.0.1:6379 and the
# redis-server binary, nginx, Chromium, the e2e suite's npm packages), then runs rustfmt, clippy and
# every test.
# Works on a fresh Debian machine as root; safe to run again (each step skips what is done).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '==> %s\n' "$*"; }

apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    say "apt-get update"
    apt-get update -qq
    apt_updated=1
  fi
  say "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

redis_up() {
  if command -v redis-cli >/dev/null; then
    timeout 3 redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG
  else
    (exec 3<>/dev/tcp/127.0.0.1/6379 && printf 'PING\r\n' >&3 && timeout 3 head -c 7 <&3 | grep -q PONG) 2>/dev/null
  fi
}

# (a) Redis, unless REDIS_URL points the tests elsewhere.
if [ -n "${REDIS_URL:-}" ]; then
  say "using REDIS_URL from the environment"
elif redis_up; then
  say "redis answers on 127.0.0.1:6379"
else
  command -v redis-server >/dev/null || apt_install redis-server
  redis_up || {
    say "starting redis-server on 127.0.0.1:6379"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
  }
  for _ in $(seq 50); do redis_up && break; sleep 0.1; done
  redis_up || { echo "redis did not come up on 127.0.0.1:6379" >&2; exit 1; }
fi

# (a2) redis-server and redis-cli themselves (Debian's 7.x, built with TLS): the TLS, Cluster
# and Sentinel suites start their own servers (sentinels are `redis-server --sentinel`).
command -v redis-server >/dev/null && command -v redis-cli >/dev/null || apt_install redis-server

# (a3) nginx: tests/nginx_reload.rs starts its own (prefix and config in a temp dir) and
# reloads it under load.
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || apt_install nginx

# (b) Chromium for the browser test (Debian's build; playwright never downloads one).
[ -x /usr/bin/chromium ] || apt_install chromium chromium-driver

# (c) The e2e suite's packages, reinstalled only when package-lock.json changed.
command -v node >/dev/null || { echo "Node.js 20 or later is needed for tests/e2e" >&2; exit 1; }
lock_sum="$(sha256sum tests/e2e/package-lock.json | cut -d' ' -f1)"
stamp=tests/e2e/node_modules/.package-lock.sha256
if [ "$(cat "$stamp" 2>/dev/null)" = "$lock_sum" ]; then
  say "tests/e2e/node_modules is up to date"
else
  say "npm ci --prefix tests/e2e"
  npm ci --prefix tests/e2e --no-audit --no-fund
  echo "$lock_sum" >"$stamp"
fi

# (d) Formatting and lints.
say "cargo fmt --all -- --check"
cargo fmt --all -- --check
say "cargo clippy --all-targets --locked -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

say "cargo doc --no-deps (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --lib --locked --quiet

# (e) The tests.
if command -v cargo-nextest >/dev/null; then
  say "cargo nextest run --locked"
  cargo nextest run --locked
else
  say "cargo test --locked"
  cargo test --locked
fi
