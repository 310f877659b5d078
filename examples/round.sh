#!/usr/bin/env bash
# A whole DIN task on chain, one shell standing in for every actor.
#
#   model owner    dev1
#   participants   dev2..dev7   (dev7 trains on shuffled labels)
#   validators     dev8..dev11  (dev11 reveals a wrong aggregate and inflates
#                                the shuffled-label participant's score)
#
# digits, split Dirichlet(0.5) over 6 participants with 40 % reserved as the
# owner's test pool, 3 rounds. The script checks the outcome and prints a
# summary table. Runs on the embedded defaults; DIN_CHAIN / DIN_IPFS select
# anvil and an IPFS daemon instead. Needs `din` on PATH.
#
#   bash examples/round.sh            # work folder: a fresh temporary one
#   DEMO_DIR=demo bash examples/round.sh
set -euo pipefail

WORK="${DEMO_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/din-demo.XXXXXX")}"
mkdir -p "$WORK"
cd "$WORK"
export DIN_HOME="$WORK/.din"
unset DIN_KEY
ROUNDS=3
EPOCHS=20
LR=0.5
OWNER=dev1
PARTICIPANTS=(dev2 dev3 dev4 dev5 dev6 dev7)
SHUFFLED=dev7
VALIDATORS=(dev8 dev9 dev10 dev11)
DISHONEST=dev11
T0=$SECONDS

say() { printf '\n== %s (%ss)\n' "$*" "$((SECONDS - T0))" >&2; }
# Run a step that may find nothing to do (exit 7: already done; 4: nothing
# to claim) without failing the script; other errors are shown and fail it.
tolerate() {
    local codes=$1 err rc=0
    shift
    err=$(mktemp)
    "$@" 2>"$err" || rc=$?
    if [ "$rc" -ne 0 ] && [[ " $codes " != *" $rc "* ]]; then cat "$err" >&2; fi
    rm -f "$err"
    if [ "$rc" -ne 0 ] && [[ " $codes " != *" $rc "* ]]; then return "$rc"; fi
    return 0
}
# Run one command per key in parallel: each actor in its own process.
each() {
    local -a pids=()
    local key
    local cmd=$1
    shift
    for key in "$@"; do
        $cmd "$key" &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid"; done
}
field() { awk -F'\t' -v k="$1" '$1 == k {print $2}'; }
fail() { echo "round.sh: FAILED: $*" >&2; exit 1; }

say "init: contracts and 11 funded dev accounts on ${DIN_CHAIN:-the embedded chain}"
din init --dev-accounts 11 -q >/dev/null
din data split --dataset digits --participants 6 --alpha 0.5 --seed 1 --shuffle-labels 6 --out stores >/dev/null
din model init --arch logreg:64-10 --seed 0 -o genesis.safetensors >/dev/null

say "model owner publishes the task"
TASK=$(din model publish genesis.safetensors --test-set stores/test.npz --deposit 1000 --subgroup-size 6 \
    --validators-per-subgroup 4 --rounds "$ROUNDS" --key "$OWNER" -q)
GENESIS=$(din round status --task "$TASK" | field model)
echo "task $TASK, genesis model $GENESIS" >&2

say "validators stake and register; participants join"
declare -A STAKE_BEFORE STAKE_AFTER ADDRESS
for k in "$OWNER" "${PARTICIPANTS[@]}" "${VALIDATORS[@]}"; do ADDRESS[$k]=$(din keys show "$k" --field address); done
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

say "checks"
din rewards show --task "$TASK" >rewards.tsv
din rewards show --task "$TASK" --json >rewards.json
din verify --task "$TASK" >verify.tsv || fail "din verify: the chain's record does not hold"
grep -q '"fully_paid": true' rewards.json || fail "payouts do not sum to the deposit"
FINAL=${ACCURACY[$ROUNDS]}
[ "$FINAL" -ge 9000 ] || fail "final accuracy $FINAL bps is below 9000"
for v in "${VALIDATORS[@]}"; do
    lower=$(awk -v a="${STAKE_AFTER[$v]}" -v b="${STAKE_BEFORE[$v]}" 'BEGIN {print (a < b) ? 1 : 0}')
    if [ "$v" = "$DISHONEST" ]; then
        [ "$lower" = 1 ] || fail "the dishonest validator $v was not slashed"
    else
        [ "$lower" = 0 ] || fail "honest validator $v lost stake"
    fi
done
payout() { awk -F'\t' -v a="$1" '$1 == "participant" && $2 == a {print $4}' rewards.tsv; }
HONEST=$(for p in "${PARTICIPANTS[@]}"; do [ "$p" = "$SHUFFLED" ] || payout "${ADDRESS[$p]}"; done | sort -g)
MEDIAN=$(echo "$HONEST" | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}')
BAD=$(payout "${ADDRESS[$SHUFFLED]}")
awk -v b="$BAD" -v m="$MEDIAN" 'BEGIN {exit !(b <= m / 100)}' ||
    fail "the shuffled-label participant got $BAD DIN, more than 1 % of the honest median $MEDIAN"

say "summary"
{
    echo "task $TASK: $ROUNDS rounds, deposit 1000 DIN, wall time $((SECONDS - T0)) s"
    echo
    printf '%-8s %s\n' round "accuracy (reserved pool)"
    for r in $(seq 1 "$ROUNDS"); do printf '%-8s %s.%02d %%\n' "$r" "$((ACCURACY[$r] / 100))" "$((ACCURACY[$r] % 100))"; done
    echo
    printf '%-12s %-44s %-8s %s\n' participant address "score" "payout (DIN)"
    for p in "${PARTICIPANTS[@]}"; do
        a=${ADDRESS[$p]}
        note=""
        [ "$p" = "$SHUFFLED" ] && note="  <- shuffled labels"
        printf '%-12s %-44s %-8s %s%s\n' "$p" "$a" \
            "$(awk -F'\t' -v a="$a" '$1 == "participant" && $2 == a {print $3}' rewards.tsv)" "$(payout "$a")" "$note"
    done
    echo
    printf '%-8s %-44s %-8s %-8s %-24s %s\n' validator address "staked" "after" "fee (DIN)" "slashed for"
    for v in "${VALIDATORS[@]}"; do
        a=${ADDRESS[$v]}
        printf '%-8s %-44s %-8s %-8s %-24s %s\n' "$v" "$a" "${STAKE_BEFORE[$v]}" "${STAKE_AFTER[$v]}" \
            "$(awk -F'\t' -v a="$a" '$1 == "validator" && $2 == a {print $4}' rewards.tsv)" \
            "$(awk -F'\t' -v a="$a" '$1 == "validator" && $2 == a {print $6}' rewards.tsv)"
    done
    echo "($DISHONEST revealed a wrong aggregate each round, outvoted 3 to 1, and inflated $SHUFFLED's score)"
    echo
    echo "payouts sum exactly to the deposit; din verify: $(grep -c 'ok' verify.tsv) checks hold"
} | tee summary.txt
echo "all checks passed (work folder: $WORK)" >&2
