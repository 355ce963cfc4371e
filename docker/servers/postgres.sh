# shellcheck shell=bash
# PostgreSQL 15 from Debian, run as the postgres OS user (it refuses root) with
# its own data dir under .stack/; Debian's own cluster is never used.

PG_BIN=/usr/lib/postgresql/15/bin
PGDATA="$STACK/postgres"
PG_PIDFILE="$RUN/postgres.pid"

as_postgres() { runuser -u postgres -- "$@"; }

# Durability costs a lot of speed and tests do not need it; a benchmark that
# claims durability sets SINKD_PG_DURABLE=1.
pg_want_fsync() { [ "${SINKD_PG_DURABLE:-0}" = 1 ] && echo on || echo off; }

pg_sinkd_query() {
  PGPASSWORD=sinkd "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U sinkd -d sinkd \
    -XtAq -v ON_ERROR_STOP=1 -c "$1"
}

postgres_healthy() {
  pid_alive "$PG_PIDFILE" && "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" &&
    [ "$(pg_sinkd_query 'SELECT 1')" = 1 ]
}

# Running with the other durability setting than asked for: restart it.
postgres_stale() { [ "$(pg_sinkd_query 'SHOW fsync')" != "$(pg_want_fsync)" ]; }

pg_install() {
  [ -x "$PG_BIN/postgres" ] && return 0
  log "docker/up: installing postgresql-15 from Debian"
  # Stop the package from creating (and starting) its own "main" cluster.
  mkdir -p /etc/postgresql-common/createcluster.d
  echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.d/sinkd.conf
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq postgresql-15 >/dev/null
  pg_ctlcluster 15 main stop 2>/dev/null || true
}

pg_init() {
  # The postgres user must be able to reach its data dir through our parents.
  chmod o+x "$ROOT" "$STACK"
  mkdir -p "$PGDATA" "$LOGS" "$RUN"
  chown postgres:postgres "$PGDATA"
  chmod 700 "$PGDATA"
  touch "$LOGS/postgres.log" && chown postgres:postgres "$LOGS/postgres.log"
  if [ ! -f "$PGDATA/PG_VERSION" ]; then
    as_postgres "$PG_BIN/initdb" -D "$PGDATA" -U postgres -E UTF8 --locale=C.UTF-8 \
      --auth-local=trust --auth-host=scram-sha-256 >>"$LOGS/postgres.log" 2>&1 ||
      fail_with_log postgres
    echo "include 'sinkd.conf'" >>"$PGDATA/postgresql.conf"
  fi
  # The socket lives in the 0700 data dir, so "trust" on it admits only the
  # postgres OS user (and root via runuser); TCP always needs a password.
  cat >"$PGDATA/pg_hba.conf" <<HBA
local all         all                trust
host  all         all  127.0.0.1/32  scram-sha-256
host  replication all  127.0.0.1/32  scram-sha-256
HBA
  local fsync; fsync=$(pg_want_fsync)
  cat >"$PGDATA/sinkd.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PGDATA'
wal_level = logical
max_replication_slots = 10
max_wal_senders = 10
max_connections = 200
shared_buffers = 256MB
fsync = $fsync
synchronous_commit = $fsync
full_page_writes = $fsync
CONF
  chown postgres:postgres "$PGDATA/pg_hba.conf" "$PGDATA/sinkd.conf"
}

# Role and database for the tests; safe to run again.
pg_bootstrap() {
  as_postgres "$PG_BIN/psql" -h "$PGDATA" -p "$PG_PORT" -U postgres -d postgres -XqA \
    -v ON_ERROR_STOP=1 >>"$LOGS/postgres.log" 2>&1 <<'SQL'
SELECT 'CREATE ROLE sinkd' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sinkd') \gexec
ALTER ROLE sinkd WITH LOGIN SUPERUSER REPLICATION PASSWORD 'sinkd';
SELECT 'CREATE DATABASE sinkd OWNER sinkd' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'sinkd') \gexec
SQL
}

postgres_up() {
  pg_install
  postgres_stop
  ensure_port_free postgres "$PG_PORT"
  pg_init
  as_postgres "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$LOGS/postgres.log" -w -t 60 start \
    >/dev/null || fail_with_log postgres
  head -n1 "$PGDATA/postmaster.pid" >"$PG_PIDFILE"
  pg_bootstrap || fail_with_log postgres
  wait_for postgres 30 postgres_healthy || fail_with_log postgres
  echo "postgres  ready  127.0.0.1:$PG_PORT (fsync=$(pg_want_fsync))"
}

# SIGINT is PostgreSQL's "fast" shutdown: it does not wait for clients to leave.
postgres_stop() {
  # PostgreSQL writes its own pid file; keep a copy in $RUN like the others.
  if [ ! -s "$PG_PIDFILE" ] && [ -s "$PGDATA/postmaster.pid" ]; then
    mkdir -p "$RUN" && head -n1 "$PGDATA/postmaster.pid" >"$PG_PIDFILE"
  fi
  stop_pidfile "$PG_PIDFILE" INT
}

postgres_down() { postgres_stop; rm -rf "$PGDATA"; }
