#!/usr/bin/env bash
# Installs what the tests need and is not a Rust crate: etcd (Debian's
# etcd-server) and grpcurl (built from the Go module proxy, pinned). Idempotent;
# downloads and binaries are cached under $INGEST_CACHE (default
# ~/.cache/ingest), outside the clone. Source it to get PATH set:
#   source scripts/deps.sh
set -euo pipefail

INGEST_CACHE="${INGEST_CACHE:-$HOME/.cache/ingest}"
GRPCURL_VERSION="v1.9.4"
mkdir -p "$INGEST_CACHE/bin"
export PATH="$INGEST_CACHE/bin:$PATH"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "deps: need root to run: $*" >&2; return 1; fi
}

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get install -y -qq "$@" >/dev/null 2>&1 || {
    as_root apt-get update -qq >/dev/null
    as_root apt-get install -y -qq "$@" >/dev/null
  }
}

if ! command -v "${INGEST_ETCD_BIN:-etcd}" >/dev/null 2>&1; then
  echo "deps: installing etcd (Debian etcd-server)" >&2
  apt_install etcd-server etcd-client
fi

if ! grpcurl -version 2>&1 | grep -q "${GRPCURL_VERSION#v}"; then
  echo "deps: building grpcurl $GRPCURL_VERSION from the Go module proxy" >&2
  GOBIN="$INGEST_CACHE/bin" GOFLAGS=-mod=mod go install "github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_VERSION"
fi

echo "deps: $(etcd --version 2>/dev/null | head -n1); grpcurl $(grpcurl -version 2>&1 | awk '{print $2}')" >&2
