#!/usr/bin/env bash
# Checks that the declared minimum Rust (rust-version in Cargo.toml) is true:
#  - no locked dependency asks for a newer Rust (any target);
#  - the Dockerfile's build image and the README name the same version;
#  - that toolchain builds the workspace: when the rustc in use is that
#    version, the CI build that follows proves it; otherwise the declared
#    toolchain is installed with rustup and checks the workspace (its own
#    target directory under $INGEST_CACHE).
set -euo pipefail
cd "$(dirname "$0")/.."

INGEST_CACHE="${INGEST_CACHE:-$HOME/.cache/ingest}"
declared="$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
[ -n "$declared" ] || { echo "msrv: no rust-version in Cargo.toml" >&2; exit 1; }

# Versions as comparable integers: 1.94.1 -> 1094001.
as_number() { awk -F. '{ printf "%d\n", $1 * 1000000 + $2 * 1000 + $3 }' <<<"$1"; }

newer="$(cargo metadata --format-version 1 --locked 2>/dev/null | python3 -c '
import json, sys
declared = tuple(int(x) for x in sys.argv[1].split("."))
def pad(v): return v + (0,) * (3 - len(v))
for p in json.load(sys.stdin)["packages"]:
    rv = p.get("rust_version")
    if rv and pad(tuple(int(x) for x in rv.split("."))) > pad(declared):
        print(p["name"], p["version"], "needs Rust", rv)
' "$declared")"
if [ -n "$newer" ]; then
  echo "msrv: Cargo.lock holds crates that need a newer Rust than rust-version = $declared:" >&2
  echo "$newer" >&2
  echo "msrv: raise rust-version (and the Dockerfile and README with it) or pin older crates" >&2
  exit 1
fi

short="$(cut -d. -f1,2 <<<"$declared")"
grep -q "^FROM rust:$declared-\|^FROM rust:$short-" Dockerfile \
  || { echo "msrv: the Dockerfile's build stage is not FROM rust:$declared-…" >&2; exit 1; }
grep -q "Rust $declared\b\|Rust $short\b" README.md \
  || { echo "msrv: README.md does not say \"Rust $declared\"" >&2; exit 1; }

current="$(rustc --version | awk '{print $2}')"
if [ "$(as_number "$current")" -lt "$(as_number "$declared")" ]; then
  echo "msrv: rustc $current is older than rust-version = $declared: rustup update" >&2
  exit 1
fi
if [ "$(cut -d. -f1,2 <<<"$current")" = "$short" ]; then
  echo "msrv: rust-version $declared agrees with Cargo.lock, the Dockerfile and the README; rustc $current is that version, so this build checks it" >&2
  exit 0
fi
echo "msrv: rustc $current is newer than rust-version = $declared: checking the workspace with $declared" >&2
rustup toolchain install "$declared" --profile minimal >/dev/null
CARGO_TARGET_DIR="$INGEST_CACHE/target-msrv" cargo "+$declared" check --workspace --all-targets --locked
echo "msrv: Rust $declared builds the workspace" >&2
