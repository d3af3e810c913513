#!/usr/bin/env bash
# Generates the Python, Go and TypeScript clients of ingest.v1.JobService
# from proto/ingest/v1/jobs.proto, with pinned generators (one protoc: the
# one inside grpcio-tools). Generators are installed under $INGEST_CACHE
# (outside the clone) on first use.
#
#   bash clients/generate.sh             # regenerate the committed code
#   bash clients/generate.sh --check     # fail if the committed code is stale
#   bash clients/generate.sh --install   # only install; print the Python with grpcio
set -euo pipefail
cd "$(dirname "$0")/.."

GRPCIO_TOOLS=1.85.1          # protoc 33 + Python generators (PyPI)
PROTOC_GEN_GO=v1.36.11       # google.golang.org/protobuf
PROTOC_GEN_GO_GRPC=v1.6.2    # google.golang.org/grpc/cmd/protoc-gen-go-grpc
# ts-proto: pinned in clients/typescript/package.json (devDependencies).
GO_MODULE=github.com/ingest-project/ingest/clients/go

INGEST_CACHE="${INGEST_CACHE:-$HOME/.cache/ingest}"
check=false
install_only=false
case "${1:-}" in
  --check) check=true ;;
  --install) install_only=true ;;
  "") ;;
  *) echo "usage: bash clients/generate.sh [--check | --install]" >&2; exit 2 ;;
esac

venv="$INGEST_CACHE/clients-venv-$GRPCIO_TOOLS"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import grpc_tools' 2>/dev/null; then
  echo "generate: installing grpcio-tools $GRPCIO_TOOLS" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "grpcio-tools==$GRPCIO_TOOLS" "grpcio==$GRPCIO_TOOLS"
fi
plugins="$INGEST_CACHE/protoc-plugins"
for tool in "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO" \
            "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC"; do
  name="${tool##*/}"; name="${name%@*}"; version="${tool##*@}"
  if [ ! -x "$plugins/$version/$name" ]; then
    echo "generate: building $name $version" >&2
    GOBIN="$plugins/$version" GOFLAGS=-mod=mod go install "$tool"
  fi
done
pinned=$(cd clients/typescript && node -p "require('./package.json').devDependencies['ts-proto']")
installed=$(cd clients/typescript && node -p "require('./node_modules/ts-proto/package.json').version" 2>/dev/null || true)
if [ "$pinned" != "$installed" ]; then
  (cd clients/typescript && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
if $install_only; then
  echo "$venv/bin/python"
  exit 0
fi

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
mkdir -p "$out/python" "$out/go" "$out/typescript"
wkt="$("$venv/bin/python" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')"
protoc=("$venv/bin/python" -m grpc_tools.protoc -I proto -I "$wkt")
file=ingest/v1/jobs.proto

"${protoc[@]}" --python_out="$out/python" --pyi_out="$out/python" --grpc_python_out="$out/python" "$file"
"${protoc[@]}" \
  --plugin=protoc-gen-go="$plugins/$PROTOC_GEN_GO/protoc-gen-go" \
  --plugin=protoc-gen-go-grpc="$plugins/$PROTOC_GEN_GO_GRPC/protoc-gen-go-grpc" \
  --go_out="$out/go" --go_opt=module="$GO_MODULE" --go_opt="M$file=$GO_MODULE/ingestv1;ingestv1" \
  --go-grpc_out="$out/go" --go-grpc_opt=module="$GO_MODULE" --go-grpc_opt="M$file=$GO_MODULE/ingestv1;ingestv1" \
  "$file"
"${protoc[@]}" \
  --plugin=protoc-gen-ts_proto=clients/typescript/node_modules/.bin/protoc-gen-ts_proto \
  --ts_proto_out="$out/typescript" \
  --ts_proto_opt=outputServices=grpc-js,env=node,esModuleInterop=true,forceLong=string,useDate=true \
  "$file"

# Where each generated tree lives in the repository.
targets=(
  "$out/python/ingest/v1:clients/python/src/ingest/v1"
  "$out/go/ingestv1:clients/go/ingestv1"
  "$out/typescript:clients/typescript/src/gen"
)
stale=0
for pair in "${targets[@]}"; do
  from="${pair%%:*}"; to="${pair##*:}"
  if $check; then
    # Hand-written files (e.g. __init__.py) are not generated; compare generated ones.
    if ! diff -r -q -x '__init__.py' "$from" "$to" >/dev/null 2>&1; then
      echo "generate: $to is stale; run: bash clients/generate.sh" >&2
      diff -r -x '__init__.py' "$from" "$to" | head -20 >&2 || true
      stale=1
    fi
  else
    mkdir -p "$to"
    find "$to" -type f ! -name '__init__.py' -delete
    cp -r "$from/." "$to/"
    echo "generate: $to" >&2
  fi
done
exit $stale
