#!/usr/bin/env bash
# The README's run command as a newcomer runs it, checked: builds the release
# binary, starts `cargo run --release --bin ingest -- standalone`, waits until
# control answers (gRPC health, /healthz, the web UI), reports the binary's
# size, then stops it with SIGTERM and expects a clean exit. Its addresses and
# data directory come from INGEST_* variables (free ports, a temporary
# directory), so the command line itself is the README's.
set -euo pipefail
cd "$(dirname "$0")/.."

MAX_BINARY_MB="${MAX_BINARY_MB:-60}"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

work="$(mktemp -d "${TMPDIR:-/tmp}/ingest-smoke.XXXXXX")"
pid=""
finish() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap finish EXIT

t0=$SECONDS
cargo build --release --locked --bin ingest
echo "smoke: release build took $((SECONDS - t0)) s"
target_dir="${CARGO_TARGET_DIR:-target}"
binary="$target_dir/release/ingest"
size_mb=$(( $(stat -c %s "$binary") / 1024 / 1024 ))
echo "smoke: $binary is $size_mb MB"
if [ "$size_mb" -ge "$MAX_BINARY_MB" ]; then
  echo "smoke: the release binary is $size_mb MB, over the $MAX_BINARY_MB MB bar" >&2
  exit 1
fi

grpc="127.0.0.1:$(free_port)"
http="127.0.0.1:$(free_port)"
INGEST_DATA_DIR="$work/ingest-data" INGEST_GRPC_ADDR="$grpc" INGEST_HTTP_ADDR="$http" \
  cargo run --release --bin ingest -- standalone >"$work/out.log" 2>&1 &
pid=$!

ready=""
for _ in $(seq 1 300); do
  if "$binary" health --grpc "$grpc" >/dev/null 2>&1 && curl -fsS -o /dev/null "http://$http/healthz"; then
    ready=1
    break
  fi
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$ready" ]; then
  cat "$work/out.log" >&2
  echo "smoke: ingest standalone did not answer on $grpc and $http" >&2
  exit 1
fi
curl -fsS "http://$http/" | grep -q "<html" || { echo "smoke: the web UI did not answer" >&2; exit 1; }
"$binary" health --grpc "$grpc"
echo "smoke: standalone answers on $grpc (gRPC health SERVING) and http://$http/ (UI, /healthz)"

kill -TERM "$pid"
t1=$SECONDS
status=0
wait "$pid" || status=$?
pid=""
if [ "$status" -ne 0 ]; then
  cat "$work/out.log" >&2
  echo "smoke: ingest standalone exited $status after SIGTERM" >&2
  exit 1
fi
if grep -q $'\e\[' "$work/out.log"; then
  echo "smoke: colour codes in a log that is not a terminal" >&2
  exit 1
fi
echo "smoke: stopped cleanly $((SECONDS - t1)) s after SIGTERM"
