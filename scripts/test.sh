#!/usr/bin/env bash
# The project's test command. On a fresh machine it starts (or installs) what the tests
# need (PostgreSQL, RabbitMQ), then runs every test, every tier of tests/Cargo.toml: formatting, lints, unit tests, the
# queue contract on memory and RabbitMQ, store tests on SQLite and PostgreSQL, and the
# end-to-end tests against real gateways and workers, in-process and as processes.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

say() { printf '\n== %s\n' "$*"; }
die() { printf '\nFAILED: %s\n' "$*" >&2; exit 1; }

apt_install() {
  [ "$(id -u)" = 0 ] || die "$* missing and not root to install it; install: apt-get install $*"
  if [ -z "${APT_UPDATED:-}" ]; then apt-get update -qq || true; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_postgres() {
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    say "installing PostgreSQL"
    apt_install postgresql postgresql-client
  fi
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    say "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main start || true
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  fi
  pg_isready -q -h 127.0.0.1 -p 5432 \
    || die "PostgreSQL is not reachable at 127.0.0.1:5432 (tried: pg_ctlcluster ... main start)"
  psql -h 127.0.0.1 -U postgres -tAc 'select 1' >/dev/null \
    || die "PostgreSQL at 127.0.0.1:5432 refuses user postgres (trust auth expected)"
}

rabbit_up() { timeout 10 rabbitmqctl -q status >/dev/null 2>&1 && (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }

ensure_rabbitmq() {
  if ! command -v rabbitmq-server >/dev/null 2>&1; then
    say "installing RabbitMQ"
    apt_install rabbitmq-server
  fi
  if ! rabbit_up; then
    say "starting RabbitMQ"
    rabbitmq-server -detached || true
    for _ in $(seq 1 60); do rabbit_up && break; sleep 1; done
  fi
  rabbit_up || die "RabbitMQ is not reachable at 127.0.0.1:5672 (tried: rabbitmq-server -detached)"
  timeout 30 rabbitmqctl -q await_startup >/dev/null 2>&1 || true
}

redis_up() { (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; }

# Redis backs the Socket.IO cluster that the benchmark peers' smoke test starts.
ensure_redis() {
  if ! command -v redis-server >/dev/null 2>&1; then
    say "installing Redis"
    apt_install redis-server
  fi
  if ! redis_up; then
    say "starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no || true
    for _ in $(seq 1 30); do redis_up && break; sleep 0.5; done
  fi
  redis_up || die "Redis is not reachable at 127.0.0.1:6379 (tried: redis-server --daemonize yes)"
}

ensure_chromium() {
  if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    say "installing Chromium and chromedriver (browser tests)"
    apt_install chromium chromium-driver
  fi
  [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] \
    || die "/usr/bin/chromium or /usr/bin/chromedriver is missing (tried: apt-get install chromium chromium-driver)"
}

ensure_node() {
  command -v node >/dev/null 2>&1 \
    || die "node is missing: the client unit tests need Node.js 20 or newer (node --test)"
  local major
  major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
  [ "$major" -ge 20 ] || die "node $(node --version 2>/dev/null) is too old: the client unit tests need Node.js 20 or newer"
}

ensure_nginx() {
  # tests/e2e/nginx.rs starts its own nginx (own config, prefix and free port): only the
  # binary is needed, no system nginx service.
  if [ ! -x /usr/sbin/nginx ]; then
    say "installing nginx"
    apt_install nginx
  fi
  [ -x /usr/sbin/nginx ] || die "/usr/sbin/nginx is missing (tried: apt-get install nginx)"
}

ensure_postgres
ensure_nginx
ensure_chromium
ensure_node
ensure_rabbitmq
ensure_redis
./scripts/localstack.sh start || die "LocalStack (SQS) did not start: see .localstack/localstack.log"

say "formatting"
cargo fmt --all -- --check || die "cargo fmt would change files; run cargo fmt --all"

say "lints"
# --all-features: the tests behind courier-tests' service features are linted too.
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

say "build"
cargo build --workspace --bins --locked

say "a gateway without workers or brokers"
# The gateway's cargo features: without its defaults it must build with neither broker
# client nor the worker crate, and the worker must not pull axum's WebSocket support.
cargo check -p courier-gateway --no-default-features --locked \
  || die "courier-gateway does not build without its default features"
lean="$(cargo tree -p courier-gateway -e normal --no-default-features --locked --prefix none)"
if printf '%s\n' "$lean" | grep -E '^(lapin|aws-sdk-[a-z]+|courier-worker) '; then
  die "courier-gateway --no-default-features still depends on the crates above"
fi
axum_features="$(cargo tree -p courier-worker -e features -i axum --locked --prefix none)"
if printf '%s\n' "$axum_features" | grep -q '^axum feature "ws"'; then
  die "courier-worker pulls axum's ws feature"
fi

say "client unit tests"
node_status=0
node_out="$(node --test clients/js/test/ 2>&1)" || node_status=$?
printf '%s\n' "$node_out"
node_passed=$(printf '%s\n' "$node_out" | awk '/^# pass [0-9]+$/ {s+=$3} END {print s+0}')
node_failed=$(printf '%s\n' "$node_out" | awk '/^# fail [0-9]+$/ {s+=$3} END {print s+0}')
[ "$node_status" -eq 0 ] || die "client unit tests failed (node --test clients/js/test/, exit $node_status)"

say "benchmark tools"
# The peer servers (Socket.IO alone and clustered over Redis, Node ws) answer as the load
# generator expects, and the load generator counts a short run against the reference
# server with nothing lost.
(cd bench/peers && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci in bench/peers failed"
peers_out="$(node bench/peers/smoke.mjs 2>&1)" || { printf '%s\n' "$peers_out"; die "benchmark peers smoke test failed (node bench/peers/smoke.mjs)"; }
printf '%s\n' "$peers_out"
node_passed=$((node_passed + $(printf '%s\n' "$peers_out" | grep -c '^ok ')))
./scripts/loadgen-smoke.sh || die "load generator smoke test failed (scripts/loadgen-smoke.sh)"
node_passed=$((node_passed + 1))

say "patched whatlang (vendor/whatlang): the inverted index against upstream's walk"
wl_out="$(CARGO_TARGET_DIR=target/vendor-whatlang cargo test --manifest-path vendor/whatlang/Cargo.toml --lib --locked 2>&1)" \
  || { printf '%s\n' "$wl_out"; die "vendor/whatlang tests failed"; }
printf '%s\n' "$wl_out" | grep 'test result'
node_passed=$((node_passed + $(printf '%s\n' "$wl_out" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')))

say "infra checks"
./scripts/check-infra.sh

say "tests"
# The SQS tests and the processes they start talk to LocalStack unless told otherwise.
export AWS_ENDPOINT_URL="${AWS_ENDPOINT_URL:-http://127.0.0.1:4566}"
export AWS_REGION="${AWS_REGION:-us-east-1}"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
# Every tier: the tests that need RabbitMQ, SQS, PostgreSQL, nginx, a browser or root
# (tests/Cargo.toml) are on, as every service above is up.
cargo test --workspace --locked --features courier-tests/services 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
passed=$(grep -Eo '[0-9]+ passed' "$log" | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' "$log" | awk '{s+=$1} END {print s+0}')
passed=$((passed + node_passed))
failed=$((failed + node_failed))
echo
echo "all: $passed passed, $failed failed"
[ "$status" -eq 0 ] || die "cargo test failed (exit $status)"
[ "$passed" -gt 0 ] || die "no test ran"
