#!/usr/bin/env bash
# Installs what the tests need and is not a Rust crate: etcd (Debian's
# etcd-server), grpcurl (built from the Go module proxy, pinned), OpenSearch
# (scripts/opensearch.sh, from Maven Central) and an S3 server (scripts/s3.sh:
# MinIO from the Go module proxy, else Garage). Idempotent;
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

# `go install` builds report version "dev": a stamp file records the version.
if [ ! -x "$INGEST_CACHE/bin/grpcurl" ] || [ ! -f "$INGEST_CACHE/bin/.grpcurl-$GRPCURL_VERSION" ]; then
  echo "deps: building grpcurl $GRPCURL_VERSION from the Go module proxy" >&2
  GOBIN="$INGEST_CACHE/bin" GOFLAGS=-mod=mod go install "github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_VERSION"
  touch "$INGEST_CACHE/bin/.grpcurl-$GRPCURL_VERSION"
fi

# The tests start their own OpenSearch and S3 servers (testkit) from these installs.
deps_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
command -v java >/dev/null 2>&1 || apt_install openjdk-17-jre-headless
command -v mvn >/dev/null 2>&1 || apt_install maven
command -v unzip >/dev/null 2>&1 || apt_install unzip
bash "$deps_dir/opensearch.sh" install
bash "$deps_dir/s3.sh" install

echo "deps: $(etcd --version 2>/dev/null | head -n1); grpcurl $GRPCURL_VERSION" >&2
