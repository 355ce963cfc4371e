#!/usr/bin/env bash
# The sidecar image, tested as a user would use it: builds docker/Dockerfile with podman
# (base images made locally, as no registry is reachable), then runs it with
# --network host against the local stack (tests/src/bin/container-check.rs): healthcheck,
# events into PostgreSQL through the container, SIGTERM mid-batch with nothing lost.
# Prints the build time, the image size and the daemon's idle RSS. Run by ./test.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=docker/image/podman.sh
source docker/image/podman.sh
ensure_podman
ensure_debian_image
ensure_rust_image

docker/up kafka registry postgres
eval "$(docker/env)"

started=$(date +%s)
podman build --format docker --layers -f docker/Dockerfile -t localhost/sinkd:test . \
  > .stack/logs/image-build.log 2>&1 || { tail -n 40 .stack/logs/image-build.log; exit 1; }
echo "image built from docker/Dockerfile in $(( $(date +%s) - started )) s"
cargo build --locked -q -p sinkd-tests --bin container-check
target/debug/container-check --image localhost/sinkd:test
# Intermediate build layers are kept only while they are the latest (disk stays bounded).
# Best effort: a dangling image still held by a container podman does not manage (a
# buildah working container left by an interrupted build) makes prune exit 125, and
# that must not turn a passing check red. Shown, so the leftover can be removed by hand.
podman image prune -f >/dev/null 2>.stack/logs/image-prune.log \
  || echo "image prune skipped: $(tail -n 1 .stack/logs/image-prune.log)"
