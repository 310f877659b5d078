# Shared by the demos (examples/nodes.sh, examples/round.sh): settings, helpers,
# the task's set-up, and the checks and summary of its outcome. Sourced, not run.
#
#   model owner    dev1
#   participants   dev2..dev7   (dev7 trains on shuffled labels)
#   validators     dev8..dev11  (dev11 reveals a wrong aggregate and inflates
#                                the shuffled-label participant's score)

WORK="${DEMO_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/din-demo.XXXXXX")}"
mkdir -p "$WORK"
cd "$WORK"
export DIN_HOME="$WORK/.din"
unset DIN_KEY
ROUNDS=3
PRIVACY=${DEMO_PRIVACY:-sealed}  # who reads the updates: sealed (their validators only), secagg (nobody) or open
DROPOUT=${DEMO_DROPOUT:-}  # a participant that joins and then never trains (make demo-secagg: dev7)
PHASE_SECONDS=${DEMO_PHASE_SECONDS:-}  # every phase's length (default 30-60 min: phases end when all acted)
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
fail() { echo "$(basename "$0"): FAILED: $*" >&2; exit 1; }


# init, data, genesis model, the task; sets TASK, GENESIS and ADDRESS[key]
setup_task() {
    say "init: contracts and 11 funded dev accounts on ${DIN_CHAIN:-the embedded chain}"
    din init --dev-accounts 11 -q >/dev/null
    din data split --dataset digits --participants 6 --alpha 0.5 --seed 1 --shuffle-labels 6 --out stores >/dev/null
    din model init --arch logreg:64-10 --seed 0 -o genesis.safetensors >/dev/null

    say "model owner publishes the task"
    TASK=$(din model publish genesis.safetensors --test-set stores/test.npz --deposit 1000 --subgroup-size 6 \
        --validators-per-subgroup 4 --rounds "$ROUNDS" --privacy "$PRIVACY" --key "$OWNER" -q \
        ${PHASE_SECONDS:+--phase-seconds "$PHASE_SECONDS"})
    GENESIS=$(din round status --task "$TASK" | field model)
    echo "task $TASK, genesis model $GENESIS" >&2
    declare -gA ADDRESS
    for k in "$OWNER" "${PARTICIPANTS[@]}" "${VALIDATORS[@]}"; do ADDRESS[$k]=$(din keys show "$k" --field address); done
}

# each round's accepted global model from `din verify` (verify.tsv), scored on the pool
round_accuracy() {
    declare -gA ACCURACY
    local r cid
    while IFS=$'\t' read -r r what _ _ cid; do
        [ "$what" = global ] && ACCURACY[$r]=$(din evaluate --model "$cid" --data stores/test.npz)
    done <verify.tsv
}

# needs STAKE_BEFORE[v] and STAKE_AFTER[v]; fails the script when an outcome does not hold
check_and_summarize() {
    say "checks"
    din rewards show --task "$TASK" >rewards.tsv
    din rewards show --task "$TASK" --json >rewards.json
    # a sealed task's updates open for its validators only: check as an honest one of them
    # (a secagg task's sums are checked from public data alone, whoever checks)
    din verify --task "$TASK" --key "${VALIDATORS[0]}" >verify.tsv || fail "din verify: the chain's record does not hold"
    round_accuracy
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
        echo "task $TASK: $ROUNDS rounds, deposit 1000 DIN, updates $PRIVACY, wall time $((SECONDS - T0)) s"
        echo
        printf '%-8s %s\n' round "accuracy (reserved pool)"
        for r in $(seq 1 "$ROUNDS"); do printf '%-8s %s.%02d %%\n' "$r" "$((ACCURACY[$r] / 100))" "$((ACCURACY[$r] % 100))"; done
        echo
        printf '%-12s %-44s %-8s %s\n' participant address "score" "payout (DIN)"
        for p in "${PARTICIPANTS[@]}"; do
            a=${ADDRESS[$p]}
            note=""
            [ "$p" = "$SHUFFLED" ] && note="  <- shuffled labels"
            [ "$p" = "$DROPOUT" ] && note="  <- joined, then dropped out: never trained"
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
}
