#!/usr/bin/env bash
# Gatehouse against nginx, side by side in one run on loopback (issue 11's proof).
#
# Brings up, all on 127.0.0.1:
#   - nginx as a fixed-response upstream (`return 200`, no access log, 2 workers);
#   - another nginx as the reference: plain `proxy_pass` to it, 2 workers of its own, a
#     keepalive pool no run outgrows, access log on (one line per request to a file, as
#     nginx ships);
#   - examples/bare_proxy.rs, the smallest proxy on gatehouse's own parts (hyper, a pooled
#     client, a current-thread runtime per worker) with no logic: the floor of the stack;
#   - the test provider (from examples/demo.rs) to sign in against;
#   - the gatehouse release binary, memory store then Redis store, each with an
#     `auth = "none"` route and an `auth = "required"` route to the same upstream, access log
#     at `info` to a file and (memory) the metrics listener on; and once more logging warnings
#     only without metrics, to show what logging and metrics cost;
# signs in the way a browser would (curl through the provider's sign-in form), and runs
# `wrk -t1 -c32` and `-c256` against each target: a warm-up run of each, then ROUNDS rounds
# that each run every target once, in turn (so that a slow spell of the machine falls on all
# targets alike, not on whichever came last). Prints the median requests/s, the median p99
# latency and the ratio to nginx plain from this one run, and the CPU time the hypervisor
# took from this machine meanwhile (steal): figures from different runs, or from a run with
# much steal, are not comparable.
#
#   scripts/loadtest.sh
#
# Env: DURATION (default 5s), ROUNDS (default 3), CONNECTIONS (default "32 256"), PORT_BASE
# (default 21000), REDIS_URL (default redis://127.0.0.1:6379; the Redis run is skipped when
# none answers), GATEHOUSE_LOG (default info), CARGO_TARGET_DIR, NO_BUILD (set: use the
# binaries already in $CARGO_TARGET_DIR/release), KEEP (set: keep the scratch directory).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-"32 256"}
PORT_BASE=${PORT_BASE:-21000}

BENCH_NAME=loadtest
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
need nginx wrk curl
build
start_nginx
start_provider

# ms LATENCY: wrk's "1.23ms" / "456.00us" / "1.02s" in milliseconds.
ms() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.2f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.2f", v }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.2f", v * 1000 }
    else printf "?" }'
}

declare -A rps p99 url session_of all_rps all_p99
labels=()
# median N...: the middle of the numbers given (the lower middle of an even count).
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
# target LABEL URL [SESSION_COOKIE]: one more target to measure (with the session cookie and
# the anti-forgery header when a cookie is given).
target() {
  labels+=("$1")
  url[$1]=$2
  session_of[$1]=${3:-}
}
# wrk_at LABEL C [wrk flags...]: wrk against the target, with its cookie.
wrk_at() {
  local label=$1 c=$2
  shift 2
  wrk_as "${session_of[$label]}" "${url[$label]}" "-c$c" "$@"
}
# steal: the machine's CPU time counters from /proc/stat: "steal total" (user to steal; the
# guest columns are already counted in user).
steal() { awk '$1 == "cpu" { t = 0; for (i = 2; i <= 9; i++) t += $i; print $9, t }' /proc/stat; }
# measure: per connection count, a warm-up run of each target (not counted: fresh pools and
# caches), then ROUNDS rounds of one run of each target in turn; keeps the median
# requests/s and the median p99 of each.
measure() {
  local c label out errors round
  read -r steal0 total0 < <(steal)
  for c in $CONNECTIONS; do
    for label in "${labels[@]}"; do
      wrk_at "$label" "$c" -d1s >/dev/null
      all_rps[$label]=""
      all_p99[$label]=""
    done
    for round in $(seq "$ROUNDS"); do
      for label in "${labels[@]}"; do
        say "wrk -t1 -c$c -d$DURATION $label ($round/$ROUNDS): ${url[$label]}"
        out=$(wrk_at "$label" "$c" "-d$DURATION" --latency)
        printf '%s\n' "$out" >&2
        errors=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' <<<"$out")
        [ -z "$errors" ] || die "$label at c$c: $errors non-2xx responses"
        all_rps[$label]+=" $(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")"
        all_p99[$label]+=" $(ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")"
      done
    done
    for label in "${labels[@]}"; do
      # shellcheck disable=SC2086 # the lists split into their numbers
      rps[$label,$c]=$(median ${all_rps[$label]})
      # shellcheck disable=SC2086
      p99[$label,$c]=$(median ${all_p99[$label]})
    done
  done
  read -r steal1 total1 < <(steal)
  steal_pct=$(awk -v s="$((steal1 - steal0))" -v t="$((total1 - total0))" \
    'BEGIN { printf "%.1f", (t > 0 ? 100 * s / t : 0) }')
}

target "upstream direct" "http://127.0.0.1:$UPSTREAM_PORT/api/x"
target "nginx plain proxy_pass" "http://127.0.0.1:$NGINX_PORT/api/x"

say "bare hyper proxy :$BARE_PORT"
"$TARGET/release/examples/bare_proxy" "127.0.0.1:$BARE_PORT" "127.0.0.1:$UPSTREAM_PORT" 2 \
  >"$scratch/bare.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$BARE_PORT/" "$scratch/bare.log"
target "bare hyper proxy (no logic)" "http://127.0.0.1:$BARE_PORT/api/x"

start_gatehouse "$MEMORY_PORT" 'store = "memory"'
gh="http://127.0.0.1:$MEMORY_PORT"
target "gatehouse none" "$gh/open/x"
session=$(login "$gh")
target "gatehouse required memory" "$gh/api/x" "$session"

# What the access log and metrics cost: the same route, logging warnings only, no metrics.
start_gatehouse "$QUIET_PORT" 'store = "memory"' warn
target "gatehouse none, log warn, no metrics" "http://127.0.0.1:$QUIET_PORT/open/x"

if redis_answers "$REDIS_URL"; then
  start_gatehouse "$REDIS_PORT" "store = \"redis\"
redis_url = \"$REDIS_URL\"
redis_prefix = \"gatehouse-loadtest:\""
  gh="http://127.0.0.1:$REDIS_PORT"
  session=$(login "$gh")
  target "gatehouse required redis" "$gh/api/x" "$session"
else
  say "no Redis answers at $REDIS_URL: skipping the Redis run"
fi

measure


echo
echo "wrk -t1 -d$DURATION, median of $ROUNDS interleaved rounds after a warm-up, $(nproc) cores, loopback, access logs on"
echo "CPU steal meanwhile: ${steal_pct}% of the machine's time"
printf '%-38s' "target"
for c in $CONNECTIONS; do printf ' | %10s %9s %7s' "c$c req/s" "p99 ms" "ratio"; done
echo
ref=${labels[1]}
for label in "${labels[@]}"; do
  printf '%-38s' "$label"
  for c in $CONNECTIONS; do
    ratio=$(awk -v a="${rps[$label,$c]}" -v b="${rps[$ref,$c]}" 'BEGIN { printf "%.2f", a / b }')
    printf ' | %10s %9s %6sx' "${rps[$label,$c]}" "${p99[$label,$c]}" "$ratio"
  done
  echo
done
if awk -v s="$steal_pct" 'BEGIN { exit !(s > 2) }'; then
  echo "warning: the hypervisor took ${steal_pct}% of the CPU time during the run; figures are noisy"
fi
