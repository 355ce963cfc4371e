# shellcheck shell=bash
# The project's own Confluent-compatible schema registry (docker/registry/).

REGISTRY_PY="$DOCKER_DIR/registry/registry.py"

registry_curl() {
  local auth=()
  [ -n "${REGISTRY_BASIC_AUTH:-}" ] && auth=(-u "$REGISTRY_BASIC_AUTH")
  [ -n "${REGISTRY_BEARER_TOKEN:-}" ] && auth=(-H "Authorization: Bearer $REGISTRY_BEARER_TOKEN")
  curl -fsS --max-time 3 "${auth[@]}" "$@"
}

registry_healthy() {
  pid_alive "$RUN/registry.pid" &&
    registry_curl -o /dev/null "http://127.0.0.1:$REGISTRY_PORT/subjects"
}

registry_up() {
  stop_pidfile "$RUN/registry.pid"
  ensure_port_free registry "$REGISTRY_PORT"
  start_bg registry "$VENV/bin/python" "$REGISTRY_PY" --host 127.0.0.1 --port "$REGISTRY_PORT"
  wait_for registry 20 registry_healthy || fail_with_log registry
  echo "registry  ready  http://127.0.0.1:$REGISTRY_PORT"
}

# A registry started before registry.py was edited is stale: restart it.
registry_stale() { [ "$REGISTRY_PY" -nt "$RUN/registry.pid" ]; }

registry_down() { stop_pidfile "$RUN/registry.pid"; }
