# Shared by scripts/anvil.sh and scripts/ipfs-daemon.sh (sourced, not run).
# The caller sets: name, pidfile, log, and defines `up` (exit 0 once the service answers).

# wait_up SECONDS EXPORT_LINE: wait for `up`, print EXPORT_LINE; fail if the process dies.
wait_up() {
  local seconds=$1 line=$2 i
  for ((i = 0; i < seconds * 4; i++)); do
    if up; then
      echo "$line"
      return 0
    fi
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "$name: the process exited; last lines of $log:" >&2
      tail -n 20 "$log" >&2
      rm -f "$pidfile"
      return 1
    fi
    sleep 0.25
  done
  echo "$name: no answer within $seconds s; see $log" >&2
  return 1
}

# stop_pid: TERM the recorded PID, wait up to 10 s, then KILL; forget the PID.
stop_pid() {
  [[ -f $pidfile ]] || return 0
  local pid i
  pid=$(cat "$pidfile")
  if kill "$pid" 2>/dev/null; then
    for ((i = 0; i < 40; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.25
    done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

# running: the recorded PID is alive.
running() {
  [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}
