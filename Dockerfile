# syntax=docker/dockerfile:1
# Images of the stack in docker-compose.yml:
#   docker build -t ingest:latest .                   # control, worker, standalone
#   docker build --target etcd -t ingest-etcd:latest .  # etcd from Debian's package
# The build needs only the Rust crate registry: protoc comes from the
# protoc-bin-vendored crate (.cargo/config.toml points PROTOC at scripts/protoc).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin ingest && cp target/release/ingest /usr/local/bin/ingest

FROM debian:bookworm-slim AS etcd
RUN apt-get update && apt-get install -y --no-install-recommends etcd-server etcd-client \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10002 --create-home etcd && mkdir -p /var/lib/etcd && chown etcd /var/lib/etcd
USER etcd
ENTRYPOINT ["etcd"]

FROM debian:bookworm-slim AS ingest
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --create-home ingest
COPY --from=build /usr/local/bin/ingest /usr/local/bin/ingest
USER ingest
WORKDIR /home/ingest
EXPOSE 50051 8080 9464
ENTRYPOINT ["ingest"]
CMD ["standalone", "--grpc-addr", "0.0.0.0:50051", "--http-addr", "0.0.0.0:8080"]
