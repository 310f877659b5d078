#!/usr/bin/env bash
# Start or stop an anvil node on loopback for din's integration tests.
#
#   scripts/anvil.sh start [--state FILE]   # prints: export DIN_TEST_ANVIL=http://127.0.0.1:PORT
#   scripts/anvil.sh stop
#
# The port is $ANVIL_PORT (default 8545). --state FILE keeps the chain in FILE
# across restarts (anvil --state). Logs go to .ci/state/anvil.log, the PID to
# .ci/state/anvil.pid (stop kills exactly that PID); DIN_ANVIL_STATE moves that folder.
set -euo pipefail
cd "$(dirname "$0")/.."
cmd=${1:-start}
shift || true
state=${DIN_ANVIL_STATE:-.ci/state}
port=${ANVIL_PORT:-8545}
pidfile=$state/anvil.pid
log=$state/anvil.log
anvil=${ANVIL_BIN:-node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil}
extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --state) extra+=(--state "$2"); shift 2 ;;
    --state=*) extra+=(--state "${1#--state=}"); shift ;;
    *) echo "anvil.sh: unknown option $1 (use --state FILE)" >&2; exit 2 ;;
  esac
done

name=anvil.sh
# shellcheck source=scripts/service-lib.sh
source scripts/service-lib.sh

up() {
  curl -fsS --max-time 2 -H 'content-type: application/json' \
    -d '{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}' \
    "http://127.0.0.1:$port" >/dev/null 2>&1
}

case "$cmd" in
  start)
    mkdir -p "$state"
    if [[ ! -x $anvil ]]; then
      echo "anvil.sh: $anvil not found; run `npm install` (or `make services`) first" >&2
      exit 1
    fi
    if running; then
      echo "anvil.sh: already running (pid $(cat "$pidfile"))" >&2
    else
      if up; then
        echo "anvil.sh: port $port is taken by another process; set ANVIL_PORT" >&2
        exit 1
      fi
      nohup "$anvil" --host 127.0.0.1 --port "$port" ${extra[@]+"${extra[@]}"} >>"$log" 2>&1 &
      echo $! >"$pidfile"
    fi
    wait_up 30 "export DIN_TEST_ANVIL=http://127.0.0.1:$port"
    ;;
  stop)
    stop_pid
    ;;
  *)
    echo "usage: $0 start [--state FILE] | stop" >&2
    exit 2
    ;;
esac
