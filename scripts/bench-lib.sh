# Shared by scripts/loadtest.sh and scripts/instructions.sh (sourced, not run): nginx as the
# fixed-response upstream and the reference proxy, the test provider, gatehouse instances,
# and signing in the way a browser would. The sourcing script sets BENCH_NAME and PORT_BASE
# first; the environment may set REDIS_URL, GATEHOUSE_LOG and CARGO_TARGET_DIR. Everything
# started is stopped when the script exits.

REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
LOG_FILTER=${GATEHOUSE_LOG:-info}
TARGET=${CARGO_TARGET_DIR:-target}
UPSTREAM_PORT=$((PORT_BASE + 1))
NGINX_PORT=$((PORT_BASE + 2))
MEMORY_PORT=$((PORT_BASE + 3))
REDIS_PORT=$((PORT_BASE + 4))
METRICS_PORT=$((PORT_BASE + 5))
QUIET_PORT=$((PORT_BASE + 6))
BARE_PORT=$((PORT_BASE + 7))
DEMO_OFFSET=$((PORT_BASE - 8080 + 100)) # the demo's own gatehouse, provider and API
WAIT_SECONDS=${WAIT_SECONDS:-15}
LAUNCH=()

say() { printf '==> %s\n' "$*" >&2; }
die() { printf '%s: %s\n' "$BENCH_NAME" "$*" >&2; exit 1; }

# need PACKAGE...: installs with apt the packages whose command (of the same name) is missing.
need() {
  local missing=() tool
  for tool in "$@"; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  [ "${#missing[@]}" -eq 0 ] && return 0
  say "installing ${missing[*]} with apt"
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null \
    || die "cannot install ${missing[*]} (apt-get install -y ${missing[*]})"
}

# build: the release binaries both scripts run, unless NO_BUILD is set.
build() {
  [ -n "${NO_BUILD:-}" ] && return 0
  say "cargo build --release --locked --bin gatehouse --example demo --example bare_proxy"
  cargo build --release --locked --bin gatehouse --example demo --example bare_proxy
}

scratch=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ -n "${KEEP:-}" ]; then say "kept $scratch"; else rm -rf "$scratch"; fi
}
trap cleanup EXIT

# wait_for URL LOG: until URL answers 2xx (for at most WAIT_SECONDS), or shows LOG and gives
# up.
wait_for() {
  for _ in $(seq "$((WAIT_SECONDS * 10))"); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  cat "$2" >&2
  die "nothing answers at $1"
}

# nginx_instance NAME SERVER_BLOCK: an nginx of 2 workers of its own, serving SERVER_BLOCK
# (inside `http`), its files under $scratch/NAME.
nginx_instance() {
  local dir="$scratch/$1"
  mkdir -p "$dir"
  cat >"$dir/nginx.conf" <<EOF
worker_processes 2;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  keepalive_requests 1000000;
$2
}
EOF
  nginx -p "$dir" -c "$dir/nginx.conf" >"$dir/stdout.log" 2>&1 &
  pids+=($!)
}

# start_nginx: the fixed-response upstream, and the reference proxy in front of it. They are
# two nginx instances of 2 workers each, as gatehouse and its upstream are two processes: one
# nginx serving both would answer many a proxied request within the worker that took it,
# with no hop to another process, which no deployed proxy gets. The reference keeps up to
# 512 idle upstream connections per worker, more than any run has requests in flight, so
# that it never closes and reopens them (a pool of 64 would, at 256 connections).
start_nginx() {
  nginx_instance upstream "  server {
    listen 127.0.0.1:$UPSTREAM_PORT reuseport;
    access_log off;
    location / {
      default_type application/json;
      return 200 '{\"ok\":true}';
    }
  }"
  nginx_instance nginx "  upstream fixed {
    server 127.0.0.1:$UPSTREAM_PORT;
    keepalive 512;
  }
  server {
    listen 127.0.0.1:$NGINX_PORT reuseport;
    access_log $scratch/nginx/access.log;
    location / {
      proxy_pass http://fixed;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
    }
  }"
  say "nginx: upstream :$UPSTREAM_PORT, reference proxy :$NGINX_PORT (two instances)"
  wait_for "http://127.0.0.1:$UPSTREAM_PORT/" "$scratch/upstream/error.log"
  wait_for "http://127.0.0.1:$NGINX_PORT/" "$scratch/nginx/error.log"
}

# start_provider: the demo stack's test OpenID Provider; sets `issuer`.
start_provider() {
  say "demo (test provider) at port offset $DEMO_OFFSET"
  "$TARGET/release/examples/demo" --port-offset "$DEMO_OFFSET" --log warn >"$scratch/demo.log" 2>&1 &
  pids+=($!)
  issuer="http://127.0.0.1:$((9000 + DEMO_OFFSET))"
  wait_for "$issuer/.well-known/openid-configuration" "$scratch/demo.log"
}

# start_gatehouse PORT STORE_TOML [LOG_FILTER]: the release binary (run by LAUNCH, if set)
# with both routes (and the metrics listener on the instance at MEMORY_PORT); waits for
# /readyz.
start_gatehouse() {
  local port=$1 store=$2 filter=${3:-$LOG_FILTER} dir="$scratch/gatehouse-$1" metrics=""
  mkdir -p "$dir"
  [ "$port" = "$MEMORY_PORT" ] && metrics="metrics_listen = \"127.0.0.1:$METRICS_PORT\""
  cat >"$dir/config.toml" <<EOF
[server]
listen = "127.0.0.1:$port"
public_origin = "http://127.0.0.1:$port"
max_connections_per_ip = 0
$metrics

[oidc]
issuer = "$issuer"
client_id = "bff"
client_secret = "bff-secret"

[session]
keys = ["$(head -c 32 /dev/urandom | base64)"]
$store

[[routes]]
path = "/open/"
upstream = "http://127.0.0.1:$UPSTREAM_PORT"
auth = "none"

[[routes]]
path = "/api/"
upstream = "http://127.0.0.1:$UPSTREAM_PORT"
auth = "required"
EOF
  "${LAUNCH[@]}" "$TARGET/release/gatehouse" --config "$dir/config.toml" --log "$filter" \
    >"$dir/access.log" 2>&1 &
  pids+=($!)
  wait_for "http://127.0.0.1:$port/readyz" "$dir/access.log"
}

# header NAME: the first value of response header NAME in the headers on stdin.
header() {
  tr -d '\r' | awk -v name="$1" 'tolower($0) ~ "^" name ":" { sub(/^[^:]*: */, ""); print; exit }'
}

# cookie NAME_REGEX: "name=value" of the first Set-Cookie on stdin whose name matches.
cookie() {
  tr -d '\r' | grep -i '^set-cookie:' | sed -E 's/^[^:]*: *//; s/;.*//' | grep -E "^$1=" | head -n1
}

# login ORIGIN: signs in as alice the way a browser would; prints the session cookie pair.
login() {
  local origin=$1 headers authorize binding form callback provider session
  headers=$(curl -sS -D - -o /dev/null "$origin/auth/login?return_to=/")
  authorize=$(header location <<<"$headers")
  binding=$(cookie '__Host-gatehouse-login-[^=]*' <<<"$headers")
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
  curl -fsS -o /dev/null -H "Cookie: $session" -H 'X-CSRF: 1' "$origin/api/check" \
    || die "the session cookie does not pass the required route"
  printf '%s\n' "$session"
}

# wrk_as SESSION_COOKIE URL [wrk flags...]: `wrk -t1` against URL, signed in (the cookie and
# the anti-forgery header) when SESSION_COOKIE is not empty.
wrk_as() {
  local session=$1 url=$2 headers=()
  shift 2
  [ -z "$session" ] || headers=(-H "Cookie: $session" -H 'X-CSRF: 1')
  wrk -t1 "$@" "${headers[@]}" "$url"
}

# redis_answers URL: whether a Redis answers PING at redis://HOST:PORT.
redis_answers() {
  local host_port=${1#*://}
  host_port=${host_port%%/*}
  (exec 3<>"/dev/tcp/${host_port%:*}/${host_port##*:}" && printf 'PING\r\n' >&3 \
    && timeout 3 head -c 7 <&3 | grep -q PONG) 2>/dev/null
}
