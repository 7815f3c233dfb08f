#!/usr/bin/env bash
# User-space instructions per request, counted by valgrind's callgrind: unlike requests/s, a
# figure that a busy or throttled machine (CPU steal) hardly moves, so it tells whether a
# change made the request path cheaper. Counts everything the process does while it serves
# (its worker threads, the log writer, timers), divided by the requests served.
#
# Brings up nginx (the fixed upstream) and the test provider as scripts/loadtest.sh does, then
# one target at a time under callgrind: examples/bare_proxy.rs (the floor), gatehouse with the
# memory store (an `auth = "none"` route, then an `auth = "required"` route; access log at
# `info`, metrics listener on), and with the Redis store (`required`) when one answers. For
# each: `wrk -t1 -c4` for 3 s to warm up, counters zeroed, `wrk` for DURATION, counters read.
#
#   scripts/instructions.sh
#
# Env: DURATION (default 5s), CONNECTIONS (default 4), PORT_BASE (default 22000), REDIS_URL
# (default redis://127.0.0.1:6379), GATEHOUSE_LOG (default info), CARGO_TARGET_DIR, NO_BUILD
# (set: use the binaries already built), KEEP (set: keep the scratch directory and the
# callgrind files, for callgrind_annotate). Installs nginx, wrk and valgrind with apt when
# missing. Under callgrind the process runs some 50 times slower: the whole run takes about
# two minutes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-4}
PORT_BASE=${PORT_BASE:-22000}

BENCH_NAME=instructions
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
need nginx wrk curl valgrind
build
start_nginx
start_provider

# Everything from here on starts under callgrind, which is slow to start.
LAUNCH=(valgrind --tool=callgrind --dump-instr=no "--callgrind-out-file=$scratch/callgrind.%p")
WAIT_SECONDS=180

results=()
declare -A dumps
# count LABEL PID URL [SESSION_COOKIE]: instructions per request of process PID serving URL.
count() {
  local label=$1 pid=$2 url=$3 session=${4:-} out errors requests dump total
  wrk_as "$session" "$url" "-c$CONNECTIONS" -d3s >/dev/null
  callgrind_control -z "$pid" >/dev/null
  say "wrk -t1 -c$CONNECTIONS -d$DURATION $label: $url"
  out=$(wrk_as "$session" "$url" "-c$CONNECTIONS" "-d$DURATION")
  callgrind_control -d "$pid" >/dev/null
  errors=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' <<<"$out")
  [ -z "$errors" ] || die "$label: $errors non-2xx responses"
  requests=$(awk '/requests in/ { print $1 }' <<<"$out")
  # Dumps of a process are numbered from 1; each holds what was counted since the zeroing.
  dumps[$pid]=$((${dumps[$pid]:-0} + 1))
  dump="$scratch/callgrind.$pid.${dumps[$pid]}"
  [ -f "$dump" ] || die "callgrind wrote no dump for $label ($dump)"
  total=$(awk '/^(summary|totals):/ { print $2; exit }' "$dump")
  results+=("$(printf '%-28s %9s requests %9s instructions/request' \
    "$label" "$requests" "$((total / requests))")")
}

# stop PID: ends one target before the next starts (one process under callgrind at a time).
stop() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

say "bare hyper proxy :$BARE_PORT (callgrind)"
"${LAUNCH[@]}" "$TARGET/release/examples/bare_proxy" "127.0.0.1:$BARE_PORT" \
  "127.0.0.1:$UPSTREAM_PORT" 2 >"$scratch/bare.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$BARE_PORT/" "$scratch/bare.log"
count "bare hyper proxy (no logic)" "${pids[-1]}" "http://127.0.0.1:$BARE_PORT/api/x"
stop "${pids[-1]}"

say "gatehouse, memory store (callgrind)"
start_gatehouse "$MEMORY_PORT" 'store = "memory"'
gh="http://127.0.0.1:$MEMORY_PORT"
count "gatehouse none" "${pids[-1]}" "$gh/open/x"
session=$(login "$gh")
count "gatehouse required memory" "${pids[-1]}" "$gh/api/x" "$session"
stop "${pids[-1]}"

if redis_answers "$REDIS_URL"; then
  say "gatehouse, Redis store (callgrind)"
  start_gatehouse "$REDIS_PORT" "store = \"redis\"
redis_url = \"$REDIS_URL\"
redis_prefix = \"gatehouse-instructions:\""
  gh="http://127.0.0.1:$REDIS_PORT"
  session=$(login "$gh")
  count "gatehouse required redis" "${pids[-1]}" "$gh/api/x" "$session"
  stop "${pids[-1]}"
else
  say "no Redis answers at $REDIS_URL: skipping the Redis run"
fi

echo
echo "callgrind, wrk -t1 -c$CONNECTIONS -d$DURATION after a 3 s warm-up, access log at $LOG_FILTER"
printf '%s\n' "${results[@]}"
