# shellcheck shell=bash
# Installs the Debian packages that building sinkd needs (librdkafka is built from the
# rdkafka crate's bundled sources; TLS links OpenSSL). Sourced by ./demo and ./test.

# ensure_packages PKG…: installs those of the Debian packages that are not installed.
ensure_packages() {
  local missing=() pkg
  for pkg in "$@"; do
    # Installed, not merely known: a removed package keeps a dpkg entry.
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
      || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

ensure_build_deps() {
  ensure_packages build-essential pkg-config libssl-dev zlib1g-dev python3-venv
  command -v cargo >/dev/null || {
    echo "cargo is not on PATH: install Rust (rustup) first" >&2
    exit 1
  }
  # Two cores: two jobs, one shared target/.
  export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
}
