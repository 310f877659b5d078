#!/usr/bin/env bash
# The network's economy after a task (`make governance`):
#
#   credits     every key that did honest work in task 1 earns governance credits;
#               the slashed validator (dev11) earns none
#   DPP-1       dev1 proposes that a protocol offence burns at least 10 % of the
#               offender's pool (offence-slash-bps=1000); credit holders vote
#               quadratically (n votes cost n^2 credits); it passes, waits in the
#               timelock and runs
#   staking     dev2 delegates to validator dev8 and claims a day of inflation
#   grants      fees and a donation fill the public-goods pool; a quadratic-funding
#               round pays two projects, and the one with more backers gets more
#
# Runs on the work folder of the step-by-step demo (DEMO_DIR, with its settled
# task 1); without one it runs examples/round.sh first (minutes). Needs `din` on PATH.
#
#   DEMO_DIR=demo bash examples/governance/governance.sh
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ -z "${DEMO_DIR:-}" ] || [ ! -f "$DEMO_DIR/summary.txt" ]; then
    export DEMO_DIR="${DEMO_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/din-gov.XXXXXX")}"
    echo "no settled demo task in DEMO_DIR: running examples/round.sh first" >&2
    bash "$HERE/../round.sh" >/dev/null
fi
cd "$DEMO_DIR"
export DIN_HOME="$DEMO_DIR/.din"
unset DIN_KEY
DAY=86400
T0=$SECONDS
say() { printf '\n== %s (%ss)\n' "$*" "$((SECONDS - T0))" >&2; }
field() { awk -F'\t' -v k="$1" '$1 == k {print $2}'; }
fail() { echo "$(basename "$0"): FAILED: $*" >&2; exit 1; }
addr() { din keys show "$1" --field address; }

say "credits: each key claims what its honest roles in task 1 earn"
# the owner, every participant that was paid, every validator that earned its fee;
# not the slashed validator, nor (usually) the shuffled-label participant, scored 0
declare -A CREDITS
for k in dev1 dev2 dev3 dev4 dev5 dev6 dev7 dev8 dev9 dev10 dev11; do
    CREDITS[$k]=$(din gov credits --task 1 --key "$k" -q 2>/dev/null || echo 0)
    echo "$k: ${CREDITS[$k]} credits" >&2
done
[ "${CREDITS[dev11]}" = 0 ] || fail "the slashed validator earned credits"
for k in dev1 dev8 dev9 dev10; do
    [ "${CREDITS[$k]}" = 100 ] || fail "$k did honest work in task 1 but has ${CREDITS[$k]} credits"
done
VOTERS=()  # the participants that were paid (a participant that contributed nothing earns nothing)
for k in dev2 dev3 dev4 dev5 dev6 dev7; do [ "${CREDITS[$k]}" = 100 ] && VOTERS+=("$k"); done
[ "${#VOTERS[@]}" -ge 4 ] || fail "only ${#VOTERS[@]} participants earned credits"

say "DPP-1: dev1 proposes a 10 % minimum slash; credit holders vote"
cat >dpp-1.md <<'TEXT'
# DPP-1: a protocol offence burns at least 10 % of the offender's pool

A validator slashed today loses only its task's bond. With delegation, one cheat
puts other people's stake at risk and should cost its pool more than one task's
bond: raise `offenceSlashBps` from 0 to 1000.
TEXT
PROPOSAL=$(din gov propose --text dpp-1.md --set offence-slash-bps=1000 --key dev1 -q)
for k in "${VOTERS[@]}"; do din gov vote "$PROPOSAL" for 10 --key "$k" -q >/dev/null; done  # 100 credits: 10 votes
din gov vote "$PROPOSAL" against 10 --key dev8 -q >/dev/null
din gov vote "$PROPOSAL" against 7 --key dev9 -q >/dev/null  # 40 or more for, 17 against
if din gov vote "$PROPOSAL" for 11 --key dev10 -q 2>/dev/null; then fail "11 votes cost only 100 credits"; fi
din chain advance $((3 * DAY + 1)) >/dev/null
din gov queue "$PROPOSAL" --key dev1 -q >/dev/null
if din gov execute "$PROPOSAL" --key dev1 -q 2>/dev/null; then fail "ran before its timelock"; fi
din chain advance $((2 * DAY + 1)) >/dev/null
din gov execute "$PROPOSAL" --key dev1 -q >/dev/null
din gov status "$PROPOSAL" >&2
[ "$(din stake supply | field offence_slash_bps)" = 1000 ] || fail "the slash amount did not change"

say "staking: dev2 delegates 50 DIN to dev8 and claims a day of rewards"
V=$(addr dev8)
din stake delegate "$V" 50 --key dev2 -q >/dev/null
din chain advance "$DAY" >/dev/null
REWARD=$(din stake claim "$V" --key dev2 -q)
echo "dev2 earned $REWARD DIN delegating to dev8" >&2

say "grants: fees and a donation fill the pool; a round funds two projects"
din stake fees "$V" 100 --key dev8 -q >/dev/null  # 10 % burnt, 10 % to public goods
din grants donate 90 --key dev1 -q >/dev/null
echo "# Project A: a data card for every bundled dataset" >project-a.md
echo "# Project B: din on a Raspberry Pi" >project-b.md
ROUND=$(din grants round --project "$(addr dev6):project-a.md" --project "$(addr dev7):project-b.md" \
    --duration "$DAY" --key dev1 -q)
for k in "${VOTERS[@]:0:3}"; do din grants contribute "$ROUND" 0 4 --key "$k" -q >/dev/null; done  # three backers
din grants contribute "$ROUND" 1 9 --key dev8 -q >/dev/null  # two backers, more money
din grants contribute "$ROUND" 1 1 --key dev9 -q >/dev/null
din chain advance $((DAY + 1)) >/dev/null
MATCHED=$(din grants finalize "$ROUND" --key dev1 -q)
din grants claim "$ROUND" 0 --key dev1 -q >/dev/null
din grants claim "$ROUND" 1 --key dev1 -q >/dev/null
A=$(echo "$MATCHED" | field 0)
B=$(echo "$MATCHED" | field 1)
python3 -c "import sys; a, b = map(float, sys.argv[1:]); sys.exit(not a > b > 0)" "$A" "$B" ||
    fail "the project with more backers should get the larger match ($A vs $B)"

printf 'DPP-1\tpassed and executed: offence-slash-bps=1000\n'
printf 'delegation reward\t%s DIN\n' "$REWARD"
printf 'grant round %s\tproject 0 matched %s DIN, project 1 matched %s DIN\n' "$ROUND" "$A" "$B"
echo "all checks passed" >&2
