# shellcheck shell=bash
# The real mongod 6.0.5 (from a PyPI wheel) as a single-node replica set rs0,
# so transactions and change streams work. Data on tmpfs: tests run ~3x faster.

MONGO_DBPATH="/dev/shm/sinkd-mongo-$MONGO_PORT"

mongo_healthy() {
  pid_alive "$RUN/mongo.pid" &&
    "$VENV/bin/python" "$DOCKER_DIR/probes/mongo_rs.py" check "$MONGO_PORT"
}

mongo_up() {
  local mongod
  mongod=$(site_file fiftyone/db/bin/mongod)
  chmod +x "$mongod"
  mongo_down
  ensure_port_free mongo "$MONGO_PORT"
  mkdir -p "$MONGO_DBPATH" "$LOGS" "$RUN"
  # --fork returns once mongod accepts connections (or has failed). Its own
  # early errors (bad options) go to stdout, so they join the log; --logappend
  # stops mongod from renaming the old log aside on every start.
  : >"$LOGS/mongo.log"
  # shellcheck disable=SC2094  # mongod appends to the log we redirect into
  # transactionLifetimeLimitSeconds: a writer killed with -9 leaves its transaction
  # open, holding its documents, until the server reaps it (60 s by default). The
  # crash tests kill often, so the test server reaps after 5 s.
  "$mongod" --replSet rs0 --bind_ip 127.0.0.1 --port "$MONGO_PORT" \
    --dbpath "$MONGO_DBPATH" --wiredTigerCacheSizeGB 0.25 \
    --setParameter transactionLifetimeLimitSeconds=5 \
    --logpath "$LOGS/mongo.log" --logappend --pidfilepath "$RUN/mongo.pid" \
    --fork >>"$LOGS/mongo.log" 2>&1 || fail_with_log mongo
  "$VENV/bin/python" "$DOCKER_DIR/probes/mongo_rs.py" initiate "$MONGO_PORT" >&2 ||
    fail_with_log mongo
  wait_for mongo 60 mongo_healthy || fail_with_log mongo
  echo "mongo     ready  127.0.0.1:$MONGO_PORT (replica set rs0, PRIMARY)"
}

mongo_down() { stop_pidfile "$RUN/mongo.pid"; rm -rf "$MONGO_DBPATH"; }

# mongo_stale: running, but started without the current settings.
mongo_stale() {
  local pid
  pid=$(head -n1 "$RUN/mongo.pid" 2>/dev/null) || return 0
  ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'transactionLifetimeLimitSeconds=5'
}
