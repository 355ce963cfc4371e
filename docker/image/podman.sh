# shellcheck shell=bash
# Podman on a machine without a Docker engine or an image registry: the packages, the
# three settings TEST-STACK.md names, and the two base images made locally. Sourced by
# docker/image/test.sh. Images stay in podman's store, so a second run reuses them.

# shellcheck source=docker/build-deps.sh
source "$(dirname "${BASH_SOURCE[0]}")/../build-deps.sh"

DEBIAN_IMAGE=docker.io/library/debian:bookworm-slim
RUST_IMAGE=docker.io/library/rust:1.95-slim-bookworm

ensure_podman() {
  ensure_packages podman buildah debootstrap runc
  # runc here refuses limits at the shell's own hard limits (seen: nofile 20000 and nproc
  # 96365 refused, 16384 and 32768 accepted), so both are capped below them.
  local nofile nproc
  nofile=$(ulimit -Hn); [ "$nofile" = unlimited ] || [ "$nofile" -gt 16384 ] && nofile=16384
  nproc=$(ulimit -Hu); [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ] && nproc=32768
  mkdir -p /etc/containers
  # runc, cgroupfs and file logs: this sandbox has no systemd or journald; ulimits within the machine's hard limit.
  if ! grep -q '^# sinkd v4' /etc/containers/containers.conf 2>/dev/null; then
    cat > /etc/containers/containers.conf <<CONF
# sinkd v4: settings for podman in this sandbox (see ../shared/TEST-STACK.md)
[containers]
default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=${nproc}:${nproc}"]
log_driver = "k8s-file"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
  fi
}

# The Debian base: debootstrap minbase, imported under the name the Dockerfile uses.
ensure_debian_image() {
  podman image exists "$DEBIAN_IMAGE" && return
  local root
  root=$(mktemp -d)
  echo "making $DEBIAN_IMAGE with debootstrap (once per machine)" >&2
  debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >/dev/null
  # What the official slim image leaves out: documentation, manuals, translations, and
  # apt's caches (also for packages installed later).
  cat > "$root/etc/dpkg/dpkg.cfg.d/docker-slim" <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
DPKG
  find "$root/usr/share/doc" -mindepth 2 ! -name copyright -delete 2>/dev/null || true
  rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/lintian/*
  find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/var/log/*
  tar -C "$root" -c . | podman import --change 'CMD ["bash"]' - "$DEBIAN_IMAGE" >/dev/null
  rm -rf "$root"
}

# The Rust builder: the Debian base plus this machine's Rust toolchain (bin and lib only),
# laid out as a sysroot under /usr/local, under the official image's name.
ensure_rust_image() {
  podman image exists "$RUST_IMAGE" && return
  local sysroot ctx
  sysroot=$(rustc --print sysroot)
  ctx=$(mktemp -d)
  echo "making $RUST_IMAGE from $sysroot (once per machine)" >&2
  mkdir -p "$ctx/usr/local/share/ca-certificates"
  cp -a "$sysroot/bin" "$sysroot/lib" "$ctx/usr/local/"
  # This machine reaches crates.io through a TLS-inspecting egress whose CA the host
  # trusts; the stand-in builder trusts the same local CAs (none on most machines).
  cp /usr/local/share/ca-certificates/*.crt "$ctx/usr/local/share/ca-certificates/" 2>/dev/null || true
  cat > "$ctx/Containerfile" <<'CF'
FROM docker.io/library/debian:bookworm-slim
COPY usr/local /usr/local
ENV CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends \
      gcc libc6-dev ca-certificates >/dev/null && rm -rf /var/lib/apt/lists/* \
 && update-ca-certificates >/dev/null \
 && mkdir -p /usr/local/cargo/bin && cargo --version && rustc --version
CF
  podman build --format docker -t "$RUST_IMAGE" "$ctx" >/dev/null
  rm -rf "$ctx"
}
