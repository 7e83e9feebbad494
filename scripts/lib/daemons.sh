# Start, check and stop the environment's long-running programs. Each one has a directory
# $TESTENV_RUN/<name> with its pid file and log; `down` stops only what a pid file names.

daemon_dir() { echo "$TESTENV_RUN/$1"; }

# daemon_running NAME: the pid file names a live process that is still the program we started
# (a pid left by a previous machine session may belong to something else by now).
daemon_running() {
  local pidfile pid exe
  pidfile=$(daemon_dir "$1")/pid
  [ -f "$pidfile" ] || return 1
  pid=$(cat "$pidfile")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  exe=$(cat "$(daemon_dir "$1")/exe" 2>/dev/null)
  [ -z "$exe" ] || tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$exe"
}

# start_daemon NAME PROGRAM ARGS...: start in its own session, detached from this shell.
start_daemon() {
  local name=$1 dir
  shift
  dir=$(daemon_dir "$name")
  mkdir -p "$dir"
  echo "$1" >"$dir/exe"
  setsid nohup "$@" >"$dir/log" 2>&1 </dev/null &
  echo $! >"$dir/pid"
  await_exec "$!" "$1"
}

# await_exec PID PROGRAM: until the forked shell has exec'd, /proc/PID/cmdline is this script's,
# and daemon_running would call a healthy start dead (a CI run failed on exactly that race).
await_exec() {
  local pid=$1 program=$2 i
  for i in $(seq 1 100); do
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$program" && return 0
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.02
  done
}

# fail_daemon NAME REASON: name the component, show the tail of its log, stop.
fail_daemon() {
  local log_file
  log_file=$(daemon_dir "$1")/log
  printf '[testenv] ERROR: %s failed to start: %s\n' "$1" "$2" >&2
  if [ -f "$log_file" ]; then
    printf '[testenv] last lines of %s:\n' "$log_file" >&2
    tail -n 25 "$log_file" | sed 's/^/    /' >&2
  fi
  exit 1
}

# wait_until NAME SECONDS COMMAND...: poll COMMAND until it succeeds; fail NAME on timeout or exit.
wait_until() {
  local name=$1 seconds=$2 deadline
  shift 2
  deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    daemon_running "$name" || [ ! -f "$(daemon_dir "$name")/pid" ] || fail_daemon "$name" "the process exited"
    [ "$SECONDS" -lt "$deadline" ] || fail_daemon "$name" "not ready after ${seconds}s"
    sleep 0.5
  done
}

stop_daemon() {
  local name=$1 dir pid i
  dir=$(daemon_dir "$name")
  [ -f "$dir/pid" ] || return 0
  if daemon_running "$name"; then
    pid=$(cat "$dir/pid")
    kill "$pid" 2>/dev/null || true
    for i in $(seq 1 40); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.25
    done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
    log "stopped $name (pid $pid)"
  fi
  rm -f "$dir/pid"
}

daemon_status() {
  if daemon_running "$1"; then
    printf '%-24s running (pid %s)\n' "$1" "$(cat "$(daemon_dir "$1")/pid")"
  else
    printf '%-24s stopped\n' "$1"
  fi
}
