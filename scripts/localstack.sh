#!/usr/bin/env bash
# LocalStack (community core, SQS only) on 127.0.0.1:4566, straight on the host (no Docker).
#
#   ./scripts/localstack.sh start    install into .localstack/venv if needed, start, wait for SQS
#   ./scripts/localstack.sh stop     stop the instance this script started
#   ./scripts/localstack.sh status   say whether SQS answers on 127.0.0.1:4566
#
# Idempotent: `start` does nothing when SQS already answers there (whoever started it), and
# `stop` only stops the process whose pid this script recorded. Everything it writes is
# under .localstack/ (git-ignored): the venv, the emulator's files (fs/), its log and pid.
# The facts behind the settings (Python 3.13, the pins, the environment) are in
# ../shared/notes/local-sqs.md.
set -euo pipefail
cd "$(dirname "$0")/.."

HOST=127.0.0.1
PORT=4566
HEALTH="http://$HOST:$PORT/_localstack/health"
DIR="$PWD/.localstack"
VENV="$DIR/venv"
LOG="$DIR/localstack.log"
PIDFILE="$DIR/localstack.pid"
# The last community release, and the pins without which it fails on import.
PACKAGES=('localstack-core[runtime]==2026.3.0' 'cbor2<6' 'pyopenssl<26' 'cryptography<47' 'service_identity')

say() { printf '== localstack: %s\n' "$*"; }
die() {
  printf 'FAILED: localstack: %s\n' "$1" >&2
  if [ -f "$LOG" ]; then
    printf -- '--- last lines of %s:\n' "$LOG" >&2
    tail -n 40 "$LOG" >&2
  fi
  exit 1
}

# True when the health endpoint reports sqs as available (or running).
sqs_up() {
  local body
  body="$(curl -fsS -m 2 "$HEALTH" 2>/dev/null)" || return 1
  printf '%s' "$body" | grep -Eq '"sqs": *"(available|running)"'
}

python313() {
  local root
  root="$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"
  local py="$root/versions/3.13.0/bin/python3.13"
  [ -x "$py" ] || py="$(command -v python3.13 || true)"
  [ -n "$py" ] && [ -x "$py" ] || die "Python 3.13 not found (expected \$(pyenv root)/versions/3.13.0/bin/python3.13); LocalStack needs 3.13"
  printf '%s' "$py"
}

install() {
  if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import localstack.runtime.main' 2>/dev/null; then
    return
  fi
  say "installing LocalStack into $VENV (about a minute)"
  mkdir -p "$DIR"
  rm -rf "$VENV"
  "$(python313)" -m venv "$VENV" || die "creating the venv failed"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PACKAGES[@]}" >>"$DIR/install.log" 2>&1 \
    || { tail -n 20 "$DIR/install.log" >&2; die "pip install failed (see $DIR/install.log)"; }
}

our_pid() {
  [ -f "$PIDFILE" ] || return 1
  local pid
  pid="$(cat "$PIDFILE")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && printf '%s' "$pid"
}

start() {
  if sqs_up; then
    say "SQS already answers on $HOST:$PORT"
    return
  fi
  if our_pid >/dev/null; then
    say "started earlier (pid $(our_pid)); waiting for it"
  else
    if (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; then
      die "something else listens on $HOST:$PORT but does not answer $HEALTH with sqs available"
    fi
    install
    mkdir -p "$DIR/fs"
    say "starting on $HOST:$PORT (log: $LOG)"
    # setsid: its own session, so a Ctrl-C in the calling shell does not reach it.
    env SERVICES=sqs \
      GATEWAY_LISTEN="$HOST:$PORT" \
      LOCALSTACK_HOST="$HOST:$PORT" \
      SQS_ENDPOINT_STRATEGY=path \
      DNS_ADDRESS=0 \
      SKIP_SSL_CERT_DOWNLOAD=1 \
      DISABLE_EVENTS=1 \
      OVERRIDE_IN_DOCKER=0 \
      FILESYSTEM_ROOT="$DIR/fs" \
      setsid "$VENV/bin/python" -m localstack.runtime.main >>"$LOG" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
  fi
  for _ in $(seq 1 120); do
    sqs_up && { say "SQS is available on $HOST:$PORT"; return; }
    our_pid >/dev/null || die "LocalStack exited during start"
    sleep 0.5
  done
  die "SQS did not become available on $HOST:$PORT within 60 s"
}

stop() {
  local pid
  if ! pid="$(our_pid)"; then
    rm -f "$PIDFILE"
    if sqs_up; then
      say "SQS answers on $HOST:$PORT but this script did not start it; leaving it alone"
    else
      say "not running"
    fi
    return
  fi
  say "stopping pid $pid"
  kill -TERM "$pid"
  for _ in $(seq 1 40); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$PIDFILE"; say "stopped"; return; }
    sleep 0.25
  done
  say "pid $pid still running 10 s after SIGTERM; sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$PIDFILE"
}

status() {
  local pid who="not started by this script"
  pid="$(our_pid)" && who="pid $pid, started by this script"
  if sqs_up; then
    say "SQS available on $HOST:$PORT ($who)"
  else
    say "SQS not available on $HOST:$PORT"
    return 1
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
