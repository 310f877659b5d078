#!/usr/bin/env bash
# A whole DIN task on chain, one shell standing in for every actor.
#
#   model owner    dev1
#   participants   dev2..dev7   (dev7 trains on shuffled labels)
#   validators     dev8..dev11  (dev11 reveals a wrong aggregate and inflates
#                                the shuffled-label participant's score)
#
# Each actor's steps are single commands, driven in turn from this one shell:
# it teaches the commands (`make demo-steps`). `make demo` runs the same task
# with one node per actor (examples/nodes.sh).
#
# digits, split Dirichlet(0.5) over 6 participants with 40 % reserved as the
# owner's test pool, 3 rounds. The script checks the outcome and prints a
# summary table. Runs on the embedded defaults; DIN_CHAIN / DIN_IPFS select
# anvil and an IPFS daemon instead. Needs `din` on PATH.
#
#   bash examples/round.sh            # work folder: a fresh temporary one
#   DEMO_DIR=demo bash examples/round.sh
set -euo pipefail

# shellcheck source=examples/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

setup_task

say "validators stake and register; participants join"
declare -A STAKE_BEFORE STAKE_AFTER
stake() { din validator stake 100 --key "$1" -q >/dev/null && din validator join "$TASK" --key "$1" -q >/dev/null; }
join() { din participant join "$TASK" --key "$1" -q >/dev/null; }
each stake "${VALIDATORS[@]}"
each join "${PARTICIPANTS[@]}"
for v in "${VALIDATORS[@]}"; do STAKE_BEFORE[$v]=$(din validator info --key "$v" | field stake); done
din round start --task "$TASK" --key "$OWNER" -q >/dev/null

declare -A ACCURACY
train() {
    local i=${1#dev}
    din train --task "$TASK" --data "stores/participant-0$((i - 1)).npz" --submit \
        --epochs "$EPOCHS" --lr "$LR" --key "$1" -q >/dev/null
}
commit() {
    if [ "$1" = "$DISHONEST" ]; then  # commits the stale genesis model as its "aggregate"
        din aggregate --task "$TASK" --commit --cid "$GENESIS" --key "$1" -q >/dev/null
    else
        din aggregate --task "$TASK" --commit --key "$1" -q >/dev/null
    fi
}
reveal() { din aggregate --task "$TASK" --reveal --key "$1" -q >/dev/null; }
attest() { tolerate 7 din round attest --task "$TASK" --key "$1" -q >/dev/null; }  # after a majority: exit 7
# Each phase ends as soon as everyone expected has acted, so one shell can
# drive the actors in turn; `din round wait` shows how separate shells sync.
for r in $(seq 1 "$ROUNDS"); do
    say "round $r: participants train and submit"
    each train "${PARTICIPANTS[@]}"
    say "round $r: validators aggregate, commit, reveal"
    each commit "${VALIDATORS[@]}"
    each reveal "${VALIDATORS[@]}"
    say "round $r: owner posts the global model, validators attest"
    din round wait --task "$TASK" --phase global-model --round "$r" --timeout 60 >/dev/null
    MODEL=$(din round finalize --task "$TASK" --key "$OWNER" -q)
    each attest "${VALIDATORS[@]}"
    [ "$(din round status --task "$TASK" | field model)" = "$MODEL" ] || fail "round $r's global model was not accepted"
    ACCURACY[$r]=$(din evaluate --model "$MODEL" --data stores/test.npz)
    echo "round $r: global model $MODEL, accuracy ${ACCURACY[$r]} bps" >&2
done

say "evaluation: the owner posts the encrypted test set, validators score"
din round wait --task "$TASK" --phase test-set --timeout 60 >/dev/null
# sealed updates: each validator grants the keys it opened to the evaluation validators
grant() { tolerate 7 din keys grant --task "$TASK" --key "$1" -q >/dev/null; }
[ "$PRIVACY" = sealed ] && each grant "${VALIDATORS[@]}"
din data encrypt stores/test.npz --key-out test.key -o test.enc -q  # AES-256-GCM under a fresh key K
TEST_CID=$(din ipfs add test.enc)
# sign the CID, seal K to each evaluation validator's on-chain HPKE key, post it
din keys wrap --key test.key --cid "$TEST_CID" --task "$TASK" --round 0 --post --signer "$OWNER" -q -o wrapped.json
score() {
    if [ "$1" = "$DISHONEST" ]; then  # inflates the shuffled-label participant's score
        din evaluate --task "$TASK" --commit --set-score "${ADDRESS[$SHUFFLED]}=10000" --key "$1" -q >/dev/null
    else
        din evaluate --task "$TASK" --commit --key "$1" -q >/dev/null
    fi
}
reveal_scores() { din evaluate --task "$TASK" --reveal --key "$1" -q >/dev/null; }
each score "${VALIDATORS[@]}"
each reveal_scores "${VALIDATORS[@]}"

say "settlement and claims"
din round wait --task "$TASK" --phase settling --timeout 60 >/dev/null
din rewards settle --task "$TASK" --key "$OWNER" -q >/dev/null
claim() { tolerate 4 din rewards claim --task "$TASK" --key "$1" -q >/dev/null; }  # nothing owed: exit 4
each claim "$OWNER" "${PARTICIPANTS[@]}" "${VALIDATORS[@]}"
for v in "${VALIDATORS[@]}"; do STAKE_AFTER[$v]=$(din validator info --key "$v" | field stake); done

check_and_summarize
