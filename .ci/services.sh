#!/usr/bin/env bash
# Start or stop the loopback services the integration tests use:
#   anvil (JSON-RPC chain) and a js-ipfs daemon (IPFS RPC API).
# `start` prints `export ...` lines for the tests; both record PIDs in .ci/state/
# and `stop` kills exactly those PIDs.
set -euo pipefail
cd "$(dirname "$0")/.."
cmd=${1:-start}
case "$cmd" in
  start)
    # One retry each: a port briefly held by a process that is just exiting
    # should not fail a whole CI run.
    bash scripts/anvil.sh start || { bash scripts/anvil.sh stop; sleep 3; bash scripts/anvil.sh start; }
    bash scripts/ipfs-daemon.sh start || { bash scripts/ipfs-daemon.sh stop; sleep 3; bash scripts/ipfs-daemon.sh start; }
    ;;
  stop)
    bash scripts/anvil.sh stop || true
    bash scripts/ipfs-daemon.sh stop || true
    ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
