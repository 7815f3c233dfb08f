#!/usr/bin/env bash
# A bounded load test on loopback. Builds the demo (examples/demo.rs) in release mode, signs in
# with curl through the test provider's sign-in form, then points wrk at the demo API directly
# and through gatehouse, and prints requests/s for each run.
#
#   scripts/loadtest.sh            # memory store, then Redis if it answers on 127.0.0.1:6379
#
# Env: DURATION (default 10s), PORT_OFFSET (default 20000: gatehouse on 28080, provider 29000,
# API 29100; the Redis run uses PORT_OFFSET+1), REDIS_URL (default
# redis://127.0.0.1:6379), CARGO_TARGET_DIR. Every wrk run is -t2 -c32 -d$DURATION.
#
# /api/echo answers without calling anyone, so "direct" vs "gatehouse" on it is the proxy's
# cost (cookie open, session load, CSRF check, header rewrite, one more hop). /api/hello also
# asks the provider's /userinfo about the token on every request.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DURATION=${DURATION:-10s}
PORT_OFFSET=${PORT_OFFSET:-20000}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
BIN="${CARGO_TARGET_DIR:-target}/release/examples/demo"
WRK=(wrk -t2 -c32 "-d$DURATION" --latency)

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'loadtest: %s\n' "$*" >&2; exit 1; }

command -v wrk >/dev/null || die "wrk is not installed"
command -v curl >/dev/null || die "curl is not installed"

say "cargo build --release --locked --example demo"
cargo build --release --locked --example demo

pids=()
logs=()
cleanup() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  for log in "${logs[@]}"; do rm -f "$log"; done
}
trap cleanup EXIT

# start_demo OFFSET [demo flags...]: runs the demo with warnings-only logs (the per-request
# access log would otherwise be part of what we measure) and waits until gatehouse is ready.
start_demo() {
  local offset=$1 log
  shift
  log=$(mktemp)
  logs+=("$log")
  "$BIN" --port-offset "$offset" --log warn "$@" >"$log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$((8080 + offset))/readyz" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  cat "$log" >&2
  die "the demo did not become ready on port $((8080 + offset))"
}

# header NAME: the first value of response header NAME in the headers on stdin.
header() {
  tr -d '\r' | awk -v name="$1" 'tolower($0) ~ "^" name ":" { sub(/^[^:]*: */, ""); print; exit }'
}

# cookie NAME: "NAME=value" from the Set-Cookie headers on stdin.
cookie() {
  tr -d '\r' | grep -i '^set-cookie:' | sed -E 's/^[^:]*: *//; s/;.*//' | grep "^$1=" | head -n1
}

# login ORIGIN: signs in as alice the way a browser would; prints the session cookie pair.
login() {
  local origin=$1 headers authorize binding form callback provider session
  headers=$(curl -sS -D - -o /dev/null "$origin/auth/login?return_to=/")
  authorize=$(header location <<<"$headers")
  binding=$(cookie __Host-gatehouse-login <<<"$headers")
  [ -n "$authorize" ] && [ -n "$binding" ] || die "/auth/login did not redirect to the provider"

  # The provider's sign-in form: post back its hidden fields, choosing alice.
  form=$(curl -sS "$authorize")
  local fields=()
  while IFS= read -r input; do
    local name value
    name=$(sed -E 's/.* name="([^"]*)".*/\1/' <<<"$input")
    value=$(sed -E 's/.* value="([^"]*)".*/\1/; s/&quot;/"/g; s/&#39;/'"'"'/g; s/&lt;/</g; s/&gt;/>/g; s/&amp;/\&/g' <<<"$input")
    fields+=(--data-urlencode "$name=$value")
  done < <(grep -oE '<input type="hidden" name="[^"]*" value="[^"]*"' <<<"$form")
  [ "${#fields[@]}" -gt 0 ] || die "the provider did not show its sign-in form"
  provider=${authorize%%/authorize*}
  callback=$(curl -sS -D - -o /dev/null "${fields[@]}" --data-urlencode login_hint=alice \
    "$provider/authorize" | header location)
  [[ "$callback" == "$origin/auth/callback"* ]] || die "the provider did not send us back: $callback"

  session=$(curl -sS -D - -o /dev/null -H "Cookie: $binding" "$callback" | cookie __Host-gatehouse)
  [ -n "$session" ] || die "the callback set no session cookie"
  curl -fsS -o /dev/null -H "Cookie: $session" -H 'X-CSRF: 1' "$origin/api/hello" \
    || die "the session cookie does not reach /api/hello"
  printf '%s\n' "$session"
}

results=()
# run LABEL URL [wrk -H flags...]: one wrk run; records requests/s and p99 latency.
run() {
  local label=$1 url=$2 out rps p99 errors
  shift 2
  say "wrk $label: $url"
  out=$("${WRK[@]}" "$@" "$url")
  printf '%s\n' "$out" >&2
  rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
  p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
  errors=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' <<<"$out")
  results+=("$(printf '%-34s %10s req/s   p99 %-8s %s' "$label" "$rps" "$p99" \
    "${errors:+non-2xx: $errors}")")
}

# Memory store.
start_demo "$PORT_OFFSET"
gh="http://127.0.0.1:$((8080 + PORT_OFFSET))"
api="http://127.0.0.1:$((9100 + PORT_OFFSET))"
session=$(login "$gh")
run "direct  /api/echo" "$api/api/echo"
run "gatehouse /api/echo (memory)" "$gh/api/echo" -H "Cookie: $session" -H 'X-CSRF: 1'
run "gatehouse /api/hello (memory)" "$gh/api/hello" -H "Cookie: $session" -H 'X-CSRF: 1'

# Redis store, when one answers.
redis_host_port=${REDIS_URL#*://}
redis_host_port=${redis_host_port%%/*}
if (exec 3<>"/dev/tcp/${redis_host_port%:*}/${redis_host_port##*:}" && printf 'PING\r\n' >&3 \
    && timeout 3 head -c 7 <&3 | grep -q PONG) 2>/dev/null; then
  offset=$((PORT_OFFSET + 1))
  start_demo "$offset" --redis "$REDIS_URL"
  gh="http://127.0.0.1:$((8080 + offset))"
  session=$(login "$gh")
  run "gatehouse /api/echo (redis)" "$gh/api/echo" -H "Cookie: $session" -H 'X-CSRF: 1'
  run "gatehouse /api/hello (redis)" "$gh/api/hello" -H "Cookie: $session" -H 'X-CSRF: 1'
else
  say "no Redis answers at $REDIS_URL: skipping the Redis runs"
fi

echo
echo "wrk -t2 -c32 -d$DURATION on $(nproc) cores, loopback:"
printf '  %s\n' "${results[@]}"
