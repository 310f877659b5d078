#!/usr/bin/env bash
# Start or stop a js-ipfs 0.66.1 daemon (node_modules/.bin/jsipfs) on loopback
# for din's integration tests.
#
#   scripts/ipfs-daemon.sh start [IPFS_PATH]   # prints: export DIN_TEST_IPFS=/ip4/127.0.0.1/tcp/PORT
#   scripts/ipfs-daemon.sh stop  [IPFS_PATH]
#
# IPFS_PATH defaults to .ci/state/ipfs; the API port to $DIN_IPFS_PORT or 5001.
# The repo is offline: no routing, no bootstrap peers, swarm on 127.0.0.1 only.
# Logs go to .ci/state/ipfs.log, the PID to .ci/state/ipfs.pid (stop kills it);
# DIN_IPFS_STATE moves that folder.
set -euo pipefail
cd "$(dirname "$0")/.."
cmd=${1:-start}
state=${DIN_IPFS_STATE:-.ci/state}
repo=${2:-$state/ipfs}
port=${DIN_IPFS_PORT:-5001}
swarm_port=${DIN_IPFS_SWARM_PORT:-$((port + 1))}
gw_port=${DIN_IPFS_GATEWAY_PORT:-$((port + 2))}
# js-ipfs also serves a websocket RPC, by default on 5003: move it beside the others.
rpc_port=${DIN_IPFS_RPC_PORT:-$((port + 3))}
pidfile=$state/ipfs.pid
log=$state/ipfs.log
jsipfs=node_modules/.bin/jsipfs

name=ipfs-daemon
# shellcheck source=scripts/service-lib.sh
source scripts/service-lib.sh

up() {
  curl -fsS -X POST --max-time 2 "http://127.0.0.1:$port/api/v0/id" >/dev/null 2>&1
}

case "$cmd" in
  start)
    mkdir -p "$state"
    if [[ ! -x $jsipfs ]]; then
      echo "ipfs-daemon: $jsipfs not found; run `npm install` (or `make services`) first" >&2
      exit 1
    fi
    if running; then
      echo "ipfs-daemon: already running (pid $(cat "$pidfile"))" >&2
    else
      export IPFS_PATH=$repo
      if [[ ! -f $repo/config ]]; then
        mkdir -p "$repo"
        "$jsipfs" init --profile test >>"$log" 2>&1
      fi
      "$jsipfs" config Routing.Type none >>"$log" 2>&1
      "$jsipfs" config --json Bootstrap '[]' >>"$log" 2>&1
      "$jsipfs" config Addresses.API "/ip4/127.0.0.1/tcp/$port" >>"$log" 2>&1
      "$jsipfs" config Addresses.Gateway "/ip4/127.0.0.1/tcp/$gw_port" >>"$log" 2>&1
      "$jsipfs" config Addresses.RPC "/ip4/127.0.0.1/tcp/$rpc_port" >>"$log" 2>&1
      "$jsipfs" config --json Addresses.Swarm "[\"/ip4/127.0.0.1/tcp/$swarm_port\"]" >>"$log" 2>&1
      "$jsipfs" config --json Addresses.Delegates '[]' >>"$log" 2>&1
      "$jsipfs" config --json Discovery.MDNS.Enabled false >>"$log" 2>&1
      "$jsipfs" config --json Discovery.webRTCStar.Enabled false >>"$log" 2>&1
      nohup "$jsipfs" daemon --enable-preload=false >>"$log" 2>&1 &
      echo $! >"$pidfile"
    fi
    wait_up 60 "export DIN_TEST_IPFS=/ip4/127.0.0.1/tcp/$port"
    ;;
  stop)
    stop_pid
    ;;
  *)
    echo "usage: $0 start|stop [IPFS_PATH]" >&2
    exit 2
    ;;
esac
