#!/usr/bin/env bash
# The test command: installs what the tests need (etcd, grpcurl), then runs
# every test of the workspace. Tests start their own etcd servers on
# 127.0.0.1 with free ports and stop them when done.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
cargo test --workspace --locked "$@"
