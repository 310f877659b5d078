#!/usr/bin/env bash
# A whole DIN task on chain, run by one node per actor: no conductor.
#
#   model owner    dev1         a node: starts round 1, finalizes, posts the test set, settles
#   participants   dev2..dev7   a node each, training on its own store
#                               (dev7's store has shuffled labels)
#   validators     dev8..dev11  a node each: stake, aggregate, attest, audit, score, claim
#                               (dev11's node cheats: it commits the stale genesis model
#                               as its aggregate every round and inflates the
#                               shuffled-label participant's score)
#
# The script only starts the processes, shows the owner node's log as it goes,
# waits for the task to settle (`din round wait`), and checks the outcome as
# examples/round.sh does (the same task driven one command at a time:
# `make demo-steps`). Node logs: $WORK/logs/. Runs on the
# embedded defaults; DIN_CHAIN / DIN_IPFS select anvil and an IPFS daemon.
#
#   bash examples/nodes.sh            # work folder: a fresh temporary one
#   DEMO_DIR=demo bash examples/nodes.sh
#   DEMO_PRIVACY=secagg DEMO_DROPOUT=dev7 DEMO_PHASE_SECONDS=45 bash examples/nodes.sh   # make demo-secagg
set -euo pipefail

# shellcheck source=examples/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

setup_task
mkdir -p logs
declare -A NODE_PID STAKE_BEFORE STAKE_AFTER
STAKE=100  # DIN each validator node stakes
stop_nodes() {
    local pid
    for pid in "${NODE_PID[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap stop_nodes EXIT
start_node() {  # start_node NAME ARGS...: one `din node run` in the background, its log in logs/NAME.log
    local name=$1
    shift
    din node run --task "$TASK" --name "$name" --poll 0.5 "$@" 2>"logs/$name.log" &
    NODE_PID[$name]=$!
}

say "nodes start: the owner, ${#PARTICIPANTS[@]} participants${DROPOUT:+ ($DROPOUT joins and drops out)}, 4 validators (one dishonest)"
start_node owner --owner "$OWNER" --test-set stores/test.npz --min-participants 6 --min-validators 4
for p in "${PARTICIPANTS[@]}"; do
    i=${p#dev}
    if [ "$p" = "$DROPOUT" ]; then  # joins, then is gone: its subgroup's sum is opened without it
        din participant join "$TASK" --key "$p" -q >/dev/null
        continue
    fi
    start_node "$p" --participant "$p=stores/participant-0$((i - 1)).npz" --epochs "$EPOCHS" --lr "$LR"
done
for v in "${VALIDATORS[@]}"; do
    if [ "$v" = "$DISHONEST" ]; then  # commits the stale genesis model; inflates the shuffled participant's score
        start_node "$v" --validator "$v" --stake "$STAKE" --commit-genesis --set-score "${ADDRESS[$SHUFFLED]}=10000"
    else
        start_node "$v" --validator "$v" --stake "$STAKE"
    fi
done

# The owner's node says what the task does as it happens; the script only
# waits (one process polling the chain) for the task to settle and the nodes to end.
tail -n +1 -F --pid="${NODE_PID[owner]}" logs/owner.log 2>/dev/null | sed -u 's/^node owner: task [0-9]* /  /' >&2 &
din round wait --task "$TASK" --phase settled --timeout 900 >/dev/null ||
    fail "the task did not settle in 900 s (node logs: $WORK/logs/)"
for name in "${!NODE_PID[@]}"; do
    wait "${NODE_PID[$name]}" || { tail -n 20 "logs/$name.log" >&2; fail "node $name failed (logs/$name.log)"; }
done
trap - EXIT
say "settled: every node has claimed and stopped"
for v in "${VALIDATORS[@]}"; do  # each node staked $STAKE; what is left after slashing, read in parallel
    STAKE_BEFORE[$v]=$STAKE
    din validator info --key "$v" | field stake >"logs/$v.stake" &
done
wait
for v in "${VALIDATORS[@]}"; do STAKE_AFTER[$v]=$(cat "logs/$v.stake"); done
echo "$(cat logs/*.log | wc -l) log lines from ${#NODE_PID[@]} nodes in logs/" >&2

check_and_summarize
