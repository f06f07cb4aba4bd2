#!/usr/bin/env bash
# podman-base.sh — make this machine able to run docker-compose.yml under
# podman, with no registry image pulled (none can be here):
#
#   1. Debian's podman, runc, netavark + aardvark-dns (service names resolve
#      inside a compose network), iptables (published ports), debootstrap;
#   2. /etc/containers/containers.conf: runc (crun refuses this host's hybrid
#      cgroup v1/v2 mounts) and no default ulimits (podman's defaults exceed
#      the host's hard limits, so every container would fail to start);
#   3. podman-compose from PyPI in .venv-compose/ (pinned below);
#   4. the base images the Dockerfile names, built locally and tagged with
#      those names, so that the unchanged Dockerfile builds here:
#        debian:<DEBIAN>-slim   `debootstrap --variant=minbase` from Debian's
#                               default mirror, `podman import`ed;
#        rust:<RUST_VERSION>-<DEBIAN>   that image + gcc/libc6-dev (what the
#                               official image's buildpack-deps base gives a
#                               build) + this host's Rust toolchain, laid out
#                               as in the official image (CARGO_HOME
#                               /usr/local/cargo, RUSTUP_HOME /usr/local/rustup)
#                               and the CAs this host adds to Debian's (cargo
#                               reaches crates.io as the host's cargo does).
#      The sidecar profiles' bases (python:3.11-slim, node:20-slim) are not
#      made: the compose run test uses the default services only.
#
# Idempotent: each step is skipped when its result is there (packages
# installed, config equal, venv at the pinned version, images present).
# FORCE=1 rebuilds the base images. Needs root. Prints what it did and how
# long it took.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PODMAN_COMPOSE_VERSION=1.6.0
VENV=$ROOT/.venv-compose
CONF=/etc/containers/containers.conf
t0=$SECONDS
say() { echo "podman-base: $*" >&2; }
die() { say "$*"; exit 1; }
[[ $(id -u) == 0 ]] || die "needs root (apt-get, /etc/containers, rootful podman)"

# The names the Dockerfile builds FROM, read from its ARG defaults.
arg() { sed -n "s/^ARG $1=\(.*\)$/\1/p" "$ROOT/Dockerfile" | head -1; }
RUST_VERSION=$(arg RUST_VERSION)
DEBIAN=$(arg DEBIAN)
[[ -n $RUST_VERSION && -n $DEBIAN ]] || die "Dockerfile has no ARG RUST_VERSION=/ARG DEBIAN= defaults"
DEBIAN_IMAGE=docker.io/library/debian:$DEBIAN-slim
RUST_IMAGE=docker.io/library/rust:$RUST_VERSION-$DEBIAN

# --- 1. packages
PKGS=(podman runc netavark aardvark-dns iptables catatonit debootstrap)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  say "installing ${missing[*]}"
  [[ -n $(find /var/lib/apt/lists -name '*Packages*' -print -quit 2>/dev/null) ]] || apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- 2. containers.conf
want_conf='# Written by didmesh scripts/podman-base.sh.
[containers]
# podman'"'"'s default ulimits (nofile 1048576) exceed this host'"'"'s hard limits.
default_ulimits = []

[engine]
# crun refuses this host'"'"'s hybrid cgroups (v1 controllers + a v2 mount).
runtime = "runc"

[network]
# netavark + aardvark-dns: containers reach each other by service name.
network_backend = "netavark"'
if [[ ! -f $CONF || $(cat "$CONF") != "$want_conf" ]]; then
  [[ -f $CONF ]] && cp "$CONF" "$CONF.before-didmesh"
  mkdir -p "$(dirname "$CONF")"
  printf '%s\n' "$want_conf" >"$CONF"
  say "wrote $CONF"
fi

# --- 3. podman-compose
if [[ $("$VENV/bin/podman-compose" --version 2>/dev/null | head -1) != *" $PODMAN_COMPOSE_VERSION" ]]; then
  say "installing podman-compose $PODMAN_COMPOSE_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "podman-compose==$PODMAN_COMPOSE_VERSION"
fi

# --- 4. base images
[[ ${FORCE:-0} == 1 ]] && podman rmi -f "$RUST_IMAGE" "$DEBIAN_IMAGE" >/dev/null 2>&1 || true
work=$(mktemp -d /var/tmp/didmesh-podman-base.XXXXXX)
trap 'rm -rf "$work"' EXIT

if ! podman image exists "$DEBIAN_IMAGE"; then
  t=$SECONDS
  say "debootstrap --variant=minbase $DEBIAN (default mirror) -> $DEBIAN_IMAGE"
  debootstrap --variant=minbase "$DEBIAN" "$work/rootfs" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
  # As in the official image: main, updates and security in deb822 form,
  # no package lists or downloaded .debs left in the image.
  rm -f "$work/rootfs/etc/apt/sources.list"
  cat >"$work/rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: http://deb.debian.org/debian
Suites: $DEBIAN $DEBIAN-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: $DEBIAN-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  rm -rf "$work/rootfs/var/lib/apt/lists/"* "$work/rootfs/var/cache/apt/"*.bin "$work/rootfs/var/cache/apt/archives/"*.deb
  # Through a file, not a pipe: a failed tar must not leave an empty image.
  tar -C "$work/rootfs" --numeric-owner -cf "$work/rootfs.tar" .
  rm -rf "$work/rootfs"
  podman import --change 'CMD ["bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --message "debootstrap --variant=minbase $DEBIAN (didmesh scripts/podman-base.sh)" \
    --quiet "$work/rootfs.tar" "$DEBIAN_IMAGE" >/dev/null
  rm -f "$work/rootfs.tar"
  say "$DEBIAN_IMAGE built in $((SECONDS - t)) s"
fi

if ! podman image exists "$RUST_IMAGE"; then
  t=$SECONDS
  command -v rustc >/dev/null || die "no rustc on this host to put into $RUST_IMAGE"
  sysroot=$(rustc --print sysroot)
  host_version=$(rustc --version | awk '{print $2}')
  [[ $host_version == "$RUST_VERSION" || $host_version == "$RUST_VERSION".* ]] \
    || die "the host's rustc is $host_version, the Dockerfile wants $RUST_VERSION (ARG RUST_VERSION)"
  toolchain=$host_version-x86_64-unknown-linux-gnu
  say "$RUST_IMAGE from $DEBIAN_IMAGE + the host's Rust $host_version ($sysroot)"
  cat >"$work/Containerfile" <<EOF
FROM $DEBIAN_IMAGE
# What a build gets from the official image's buildpack-deps base and needs
# here: a C compiler for crates with C parts (ring), CA certificates for cargo.
RUN apt-get update \\
 && apt-get install -y --no-install-recommends ca-certificates gcc libc6-dev make pkg-config git \\
 && rm -rf /var/lib/apt/lists/*
# The CAs this host adds to Debian's (/usr/local/share/ca-certificates):
# where crates.io is reached through a TLS proxy, cargo in the build stage
# must trust what the host's cargo trusts. Only this build-stage image gets
# them; the runtime image has Debian's list alone.
RUN cp /host-ca/*.crt /usr/local/share/ca-certificates/ 2>/dev/null; update-ca-certificates >/dev/null
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo \\
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    RUST_VERSION=$host_version
# The host's toolchain without its HTML docs; cargo/rustc/rustdoc on PATH
# where the official image has them (there via rustup's proxies).
RUN mkdir -p /usr/local/rustup/toolchains/$toolchain /usr/local/cargo/bin \\
 && cp -a /toolchain/bin /toolchain/lib /usr/local/rustup/toolchains/$toolchain/ \\
 && if [ -d /toolchain/libexec ]; then cp -a /toolchain/libexec /usr/local/rustup/toolchains/$toolchain/; fi \\
 && for b in /usr/local/rustup/toolchains/$toolchain/bin/*; do ln -s "\$b" /usr/local/cargo/bin/; done \\
 && cargo --version && rustc --version
CMD ["bash"]
EOF
  mkdir -p /usr/local/share/ca-certificates
  podman build --network host --pull=never -v "$sysroot:/toolchain:ro" \
    -v /usr/local/share/ca-certificates:/host-ca:ro \
    -t "$RUST_IMAGE" -f "$work/Containerfile" "$work" >"$work/build.log" 2>&1 \
    || { tail -30 "$work/build.log" >&2; die "building $RUST_IMAGE failed"; }
  say "$RUST_IMAGE built in $((SECONDS - t)) s"
fi

say "ready in $((SECONDS - t0)) s: podman $(podman --version | awk '{print $3}'), runc, podman-compose $PODMAN_COMPOSE_VERSION ($VENV), $DEBIAN_IMAGE, $RUST_IMAGE"
