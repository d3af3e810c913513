#!/usr/bin/env bash
# Installs what the tests need and is not a Rust crate: etcd (Debian's
# etcd-server), grpcurl (built from the Go module proxy, pinned), OpenSearch
# and Elasticsearch 9.1 and 8.19 (scripts/opensearch.sh,
# scripts/elasticsearch.sh, from Maven Central), an S3 server (scripts/s3.sh:
# MinIO from the Go module proxy, else Garage), and for the browser test of
# the web UI Debian's Chromium and playwright-core (npm, pinned by
# control/ui-tests/package-lock.json; no browser download), buf, and the
# generators and runtimes of the clients (clients/generate.sh). Idempotent;
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
# Test certificates (testkit, scripts/elasticsearch.sh) and the scripts' HTTP checks.
command -v openssl >/dev/null 2>&1 || apt_install openssl
command -v curl >/dev/null 2>&1 || apt_install curl
# The partition test (cli/tests/partition.rs) makes a network namespace.
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || apt_install iproute2
bash "$deps_dir/opensearch.sh" install
# Elasticsearch 9 needs Java 21+ (a Temurin under /usr/lib/jvm on this kind of machine).
ES_VERSION=9.1.0 bash "$deps_dir/elasticsearch.sh" install
ES_VERSION=8.19.0 bash "$deps_dir/elasticsearch.sh" install
bash "$deps_dir/s3.sh" install

# The web UI's browser test: Debian's Chromium, driven by playwright-core.
command -v chromium >/dev/null 2>&1 || { echo "deps: installing chromium (Debian)" >&2; apt_install chromium; }
ui_tests="$deps_dir/../control/ui-tests"
pinned=$(cd "$ui_tests" && node -p "require('./package.json').dependencies['playwright-core']")
installed=$(cd "$ui_tests" && node -p "require('./node_modules/playwright-core/package.json').version" 2>/dev/null || true)
if [ "$pinned" != "$installed" ]; then
  echo "deps: installing playwright-core for the UI test (npm ci)" >&2
  (cd "$ui_tests" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi

# buf: lint and breaking-change checks of proto/ (proto/tests/buf.rs).
BUF_VERSION="v1.75.0"
if [ ! -x "$INGEST_CACHE/bin/buf" ] || [ ! -f "$INGEST_CACHE/bin/.buf-$BUF_VERSION" ]; then
  echo "deps: building buf $BUF_VERSION from the Go module proxy" >&2
  GOBIN="$INGEST_CACHE/bin" GOFLAGS=-mod=mod go install "github.com/bufbuild/buf/cmd/buf@$BUF_VERSION"
  touch "$INGEST_CACHE/bin/.buf-$BUF_VERSION"
fi

# The generated clients' generators and runtimes (cli/tests/clients.rs runs
# their examples against a live control).
INGEST_CLIENTS_PYTHON="$(bash "$deps_dir/../clients/generate.sh" --install)"
export INGEST_CLIENTS_PYTHON

echo "deps: $(etcd --version 2>/dev/null | head -n1); grpcurl $GRPCURL_VERSION" >&2
