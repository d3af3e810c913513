#!/usr/bin/env bash
# An S3-compatible server on 127.0.0.1 for the tests: MinIO built from the Go
# module proxy, or else Garage built with cargo install. Both are AGPL: they are only
# run here as test servers, never linked into or shipped with ingest.
#
#   scripts/s3.sh install   # build the server once into $INGEST_CACHE (MinIO 4-6 min, Garage ~20 min)
#   scripts/s3.sh start     # install if needed, start, wait until it answers, print the endpoint
#   scripts/s3.sh status    # print the endpoint (exit 3 if not running)
#   scripts/s3.sh stop      # stop it by pid and wait
#   scripts/s3.sh check     # create a bucket, put and get an object (curl --aws-sigv4)
#
# Credentials are generated once into $INGEST_CACHE/s3.env (mode 600, outside the
# clone), which `start` completes with the endpoint; tests read or source it:
#   INGEST_S3_ENDPOINT=http://127.0.0.1:<port>  INGEST_S3_REGION=us-east-1
#   INGEST_S3_ACCESS_KEY=...  INGEST_S3_SECRET_KEY=...  INGEST_S3_SERVER=minio|garage
# Path-style addressing (http://127.0.0.1:<port>/<bucket>/<key>).
# With several servers at once (S3_RUN_DIR each), s3.env names the last one
# started; each one's own endpoint is in $S3_RUN_DIR/env.
#
# Settings (environment):
#   INGEST_CACHE          cache root (default ~/.cache/ingest)
#   S3_SERVER             auto (default: MinIO, else Garage) | minio | garage
#   S3_PORT               S3 API port (default 9000); 0 or "auto" picks a free one
#   S3_RUN_DIR            data, logs, pid (default $INGEST_CACHE/run/s3); one per concurrent server
#   S3_KEEP_DATA=1        keep the data across starts (default: wiped at start)
#   S3_START_TIMEOUT      seconds to wait (default 60)
#   INGEST_S3_ACCESS_KEY / INGEST_S3_SECRET_KEY   use these instead of generated ones
set -euo pipefail

INGEST_CACHE="${INGEST_CACHE:-$HOME/.cache/ingest}"
MINIO_MODULE="github.com/minio/minio"
# MinIO tags (RELEASE.*) are not semver, so the proxy serves pseudo-versions only;
# this is the proxy's @latest on 2026-11-28 (commit 7aac2a2c5b7c, 2026-02-12).
MINIO_VERSION="${MINIO_VERSION:-v0.0.0-20260212201848-7aac2a2c5b7c}"
GARAGE_VERSION="${GARAGE_VERSION:-2.5.0}"
MINIO_BIN="$INGEST_CACHE/minio-$MINIO_VERSION/bin/minio"
GARAGE_BIN="$INGEST_CACHE/garage-$GARAGE_VERSION/bin/garage"
RUN_DIR="${S3_RUN_DIR:-$INGEST_CACHE/run/s3}"
PID_FILE="$RUN_DIR/s3.pid"
ENV_FILE="$INGEST_CACHE/s3.env"
REGION="us-east-1"
START_TIMEOUT="${S3_START_TIMEOUT:-60}"

log() { echo "s3: $*" >&2; }
die() { echo "s3: error: $*" >&2; exit 1; }

# port_busy, free_port
source "$(dirname "${BASH_SOURCE[0]}")/lib/ports.sh"

hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }

env_get() { [ -f "$ENV_FILE" ] || return 0; sed -n "s/^$1=//p" "$ENV_FILE" | tail -n1; }

# Credentials: from the environment, else from s3.env, else new ones. The same
# shape suits both servers (Garage wants a key id of [A-Za-z0-9-_.]{8,}).
ensure_credentials() {
  ACCESS_KEY="${INGEST_S3_ACCESS_KEY:-$(env_get INGEST_S3_ACCESS_KEY)}"
  SECRET_KEY="${INGEST_S3_SECRET_KEY:-$(env_get INGEST_S3_SECRET_KEY)}"
  [ -n "$ACCESS_KEY" ] || ACCESS_KEY="GK$(hex 12)"
  [ -n "$SECRET_KEY" ] || SECRET_KEY="$(hex 32)"
}

write_env() {
  local endpoint="$1" server="$2"
  mkdir -p "$INGEST_CACHE"
  (
    umask 077
    cat >"$ENV_FILE.tmp" <<EOF
# written by scripts/s3.sh: test-only credentials for the local S3 server
INGEST_S3_SERVER=$server
INGEST_S3_ENDPOINT=$endpoint
INGEST_S3_REGION=$REGION
INGEST_S3_ACCESS_KEY=$ACCESS_KEY
INGEST_S3_SECRET_KEY=$SECRET_KEY
EOF
  )
  mv "$ENV_FILE.tmp" "$ENV_FILE"
}

install_minio() {
  [ -x "$MINIO_BIN" ] && return 0
  command -v go >/dev/null 2>&1 || { log "go not found (install Go >= 1.24)"; return 1; }
  local t0=$SECONDS tmp
  tmp="$(mktemp -d "$INGEST_CACHE/.minio-build.XXXXXX")"
  log "building MinIO $MINIO_VERSION from the Go module proxy (4 to 6 minutes)"
  if ! GOBIN="$tmp/bin" go install "$MINIO_MODULE@$MINIO_VERSION" >"$tmp/build.log" 2>&1; then
    tail -n 30 "$tmp/build.log" >&2
    rm -rf "$tmp"
    log "could not build $MINIO_MODULE@$MINIO_VERSION"
    return 1
  fi
  mkdir -p "$(dirname "$MINIO_BIN")"
  mv "$tmp/bin/minio" "$MINIO_BIN"
  rm -rf "$tmp"
  log "built MinIO in $((SECONDS - t0)) s: $MINIO_BIN"
}

install_garage() {
  [ -x "$GARAGE_BIN" ] && return 0
  command -v cargo >/dev/null 2>&1 || { log "cargo not found (install Rust with rustup)"; return 1; }
  local t0=$SECONDS root="$INGEST_CACHE/garage-$GARAGE_VERSION" tmp
  tmp="$(mktemp -d "$INGEST_CACHE/.garage-build.XXXXXX")"
  log "building Garage $GARAGE_VERSION with cargo install --locked (about 20 minutes)"
  if ! CARGO_TARGET_DIR="$tmp/target" cargo install "garage@$GARAGE_VERSION" --locked --root "$tmp/root" >"$tmp/build.log" 2>&1; then
    tail -n 30 "$tmp/build.log" >&2
    rm -rf "$tmp"
    log "could not build garage@$GARAGE_VERSION"
    return 1
  fi
  mkdir -p "$root/bin"
  mv "$tmp/root/bin/garage" "$GARAGE_BIN"
  rm -rf "$tmp"
  log "built Garage in $((SECONDS - t0)) s: $GARAGE_BIN"
}

# Which server to use; installs it if needed. Prints minio or garage.
select_server() {
  mkdir -p "$INGEST_CACHE"
  # One builder at a time per cache (parallel CI jobs, two clones).
  exec 9>"$INGEST_CACHE/.s3.lock"
  flock 9
  case "${S3_SERVER:-auto}" in
    minio) install_minio || die "MinIO build failed: check Go and the module proxy, or try S3_SERVER=garage"; echo minio ;;
    garage) install_garage || die "Garage build failed: check cargo and its registry, or try S3_SERVER=minio"; echo garage ;;
    auto)
      if [ -x "$MINIO_BIN" ]; then echo minio
      elif [ -x "$GARAGE_BIN" ]; then echo garage
      elif install_minio; then echo minio
      else
        log "MinIO unavailable; falling back to Garage"
        install_garage || die "neither MinIO (go install) nor Garage (cargo install) could be built; see the messages above"
        echo garage
      fi ;;
    *) die "S3_SERVER must be auto, minio or garage (got '$S3_SERVER')" ;;
  esac
}

running_pid() {
  [ -f "$PID_FILE" ] || return 1
  local pid
  pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -Eq '(minio|garage).* server' || return 1
  echo "$pid"
}

current_endpoint() { [ -f "$RUN_DIR/env" ] || return 0; sed -n 's/^INGEST_S3_ENDPOINT=//p' "$RUN_DIR/env"; }

# Anything that speaks HTTP on the S3 port (an anonymous request gets a 403).
s3_answers() {
  local code
  code="$(curl -s -m 5 -o /dev/null -w '%{http_code}' "$1/" 2>/dev/null || true)"
  [ -n "$code" ] && [ "$code" != 000 ]
}

wait_until() { # wait_until PID DESCRIPTION COMMAND...
  local pid="$1" what="$2"
  shift 2
  until "$@" >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$PID_FILE"
      tail -n 30 "$RUN_DIR/logs/server.log" >&2 || true
      die "the server exited during startup; log: $RUN_DIR/logs/server.log"
    fi
    if [ "$SECONDS" -ge "$DEADLINE" ]; then
      tail -n 30 "$RUN_DIR/logs/server.log" >&2 || true
      cmd_stop || true
      die "no $what after ${START_TIMEOUT}s (S3_START_TIMEOUT); log: $RUN_DIR/logs/server.log"
    fi
    sleep 0.5
  done
}

start_minio() {
  local port="$1"
  (
    export MINIO_ROOT_USER="$ACCESS_KEY" MINIO_ROOT_PASSWORD="$SECRET_KEY" MINIO_REGION="$REGION"
    # No console (it would listen on another port), no update checks.
    export MINIO_BROWSER=off MINIO_UPDATE=off MINIO_CI_CD=on
    exec setsid "$MINIO_BIN" server --address "127.0.0.1:$port" --certs-dir "$RUN_DIR/certs" \
      --anonymous "$RUN_DIR/data" >"$RUN_DIR/logs/server.log" 2>&1 </dev/null
  ) &
  SERVER_PID=$!
  echo "$SERVER_PID" >"$PID_FILE"
  wait_until "$SERVER_PID" "answer from /minio/health/ready" \
    curl -fsS -m 5 -o /dev/null "http://127.0.0.1:$port/minio/health/ready"
}

garage() { "$GARAGE_BIN" -c "$RUN_DIR/garage.toml" "$@"; }

start_garage() {
  local port="$1" rpc_port admin_port
  rpc_port="$(free_port S3_PORT)"
  admin_port="$(free_port S3_PORT)"
  mkdir -p "$RUN_DIR/meta"
  (
    umask 077
    cat >"$RUN_DIR/garage.toml" <<EOF
# written by scripts/s3.sh; regenerated at every start
metadata_dir = "$RUN_DIR/meta"
data_dir = "$RUN_DIR/data"
db_engine = "lmdb"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc_port"
rpc_public_addr = "127.0.0.1:$rpc_port"
rpc_secret = "$(hex 32)"

[s3_api]
s3_region = "$REGION"
api_bind_addr = "127.0.0.1:$port"
root_domain = ".s3.localhost"

[admin]
api_bind_addr = "127.0.0.1:$admin_port"
admin_token = "$(hex 16)"
EOF
  )
  (
    export RUST_LOG="${RUST_LOG:-garage=info}"
    exec setsid "$GARAGE_BIN" -c "$RUN_DIR/garage.toml" server >"$RUN_DIR/logs/server.log" 2>&1 </dev/null
  ) &
  SERVER_PID=$!
  echo "$SERVER_PID" >"$PID_FILE"
  wait_until "$SERVER_PID" "answer from 'garage status'" garage status

  # A one-node layout, then the key: only on a fresh metadata dir (S3_KEEP_DATA keeps both).
  if ! garage key info "$ACCESS_KEY" >/dev/null 2>&1; then
    if ! garage layout show 2>/dev/null | grep -q 'Current cluster layout version: [1-9]'; then
      local node_id
      node_id="$(garage node id -q 2>/dev/null || garage node id)"
      node_id="${node_id%%@*}"
      garage layout assign -z local -c 1G "$node_id" >/dev/null
      garage layout apply --version 1 >/dev/null
    fi
    garage key import --yes -n ingest-test "$ACCESS_KEY" "$SECRET_KEY" >/dev/null
    garage key allow --create-bucket "$ACCESS_KEY" >/dev/null
  fi
  wait_until "$SERVER_PID" "answer on the S3 port" s3_answers "http://127.0.0.1:$port"
}

cmd_install() {
  local server
  server="$(select_server)"
  ensure_credentials
  [ -f "$ENV_FILE" ] || write_env "" "$server"
  log "$server ready to start; credentials in $ENV_FILE"
}

cmd_start() {
  local pid endpoint
  if pid="$(running_pid)"; then
    endpoint="$(current_endpoint)"
    log "already running (pid $pid) at $endpoint; credentials in $ENV_FILE"
    echo "$endpoint"
    return 0
  fi
  rm -f "$PID_FILE"
  local server port
  server="$(select_server)"
  ensure_credentials
  port="${S3_PORT:-9000}"
  if [ "$port" = 0 ] || [ "$port" = auto ]; then port="$(free_port S3_PORT)"; fi
  if port_busy "$port"; then
    die "port $port on 127.0.0.1 is in use: stop what holds it, or set S3_PORT (0 picks a free port)"
  fi
  mkdir -p "$RUN_DIR"
  if [ "${S3_KEEP_DATA:-0}" != 1 ]; then rm -rf "$RUN_DIR/data" "$RUN_DIR/meta"; fi
  mkdir -p "$RUN_DIR/data" "$RUN_DIR/logs"
  endpoint="http://127.0.0.1:$port"
  write_env "$endpoint" "$server"
  echo "INGEST_S3_ENDPOINT=$endpoint" >"$RUN_DIR/env"

  log "starting $server on $endpoint (run dir $RUN_DIR)"
  local t0=$SECONDS
  DEADLINE=$((SECONDS + START_TIMEOUT))
  "start_$server" "$port"
  log "$server answering after $((SECONDS - t0)) s (pid $SERVER_PID); credentials in $ENV_FILE"
  echo "$endpoint"
}

cmd_stop() {
  local pid
  if ! pid="$(running_pid)"; then
    rm -f "$PID_FILE"
    log "not running"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.3
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "pid $pid still alive after 30 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
  fi
  rm -f "$PID_FILE"
  log "stopped (pid $pid)"
}

cmd_status() {
  local pid endpoint
  if ! pid="$(running_pid)"; then
    echo "s3: not running"
    return 3
  fi
  endpoint="$(current_endpoint)"
  if s3_answers "$endpoint"; then
    echo "s3: $(env_get INGEST_S3_SERVER) running, pid $pid, $endpoint; credentials in $ENV_FILE"
  else
    echo "s3: pid $pid alive but $endpoint does not answer"
    return 1
  fi
}

# A real round trip with SigV4-signed requests: create a bucket, put, get, delete.
cmd_check() {
  local endpoint bucket body got
  running_pid >/dev/null || die "not running: scripts/s3.sh start"
  endpoint="$(current_endpoint)"
  ensure_credentials
  bucket="ingest-check-$(hex 4)"
  body="hello from scripts/s3.sh check $(date +%s)"
  local sig=(--aws-sigv4 "aws:amz:$REGION:s3" --user "$ACCESS_KEY:$SECRET_KEY" -fsS -m 10)
  local sha
  sha="$(printf '%s' "$body" | sha256sum | cut -d' ' -f1)"
  curl "${sig[@]}" -H "x-amz-content-sha256: $(printf '' | sha256sum | cut -d' ' -f1)" -X PUT "$endpoint/$bucket" -o /dev/null \
    || die "CreateBucket $bucket failed"
  curl "${sig[@]}" -H "x-amz-content-sha256: $sha" -X PUT --data-binary "$body" "$endpoint/$bucket/hello.txt" -o /dev/null \
    || die "PutObject failed"
  got="$(curl "${sig[@]}" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$endpoint/$bucket/hello.txt")" || die "GetObject failed"
  [ "$got" = "$body" ] || die "GetObject returned '$got', expected '$body'"
  curl "${sig[@]}" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -X DELETE "$endpoint/$bucket/hello.txt" -o /dev/null || die "DeleteObject failed"
  curl "${sig[@]}" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -X DELETE "$endpoint/$bucket" -o /dev/null || die "DeleteBucket failed"
  echo "s3: check passed against $endpoint (bucket $bucket: create, put, get, delete)"
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  check) cmd_check ;;
  *) echo "usage: $0 {install|start|stop|status|check}  (see the header of this script for settings)" >&2; exit 2 ;;
esac
