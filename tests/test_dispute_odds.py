"""The dispute path's survival odds (scripts/dispute_odds.py) against brute-force enumeration."""

from __future__ import annotations

import importlib.util
from fractions import Fraction
from itertools import combinations
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("dispute_odds", REPO / "scripts" / "dispute_odds.py")
odds = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(odds)


def brute_force(staked: int, dishonest: int, subgroup: int, committee: int | None, sealed: bool):
    """Average over every subgroup and every committee drawn from the validators outside it."""
    bad = set(range(dishonest))
    total, count = Fraction(0), 0
    for group in combinations(range(staked), subgroup):
        count += 1
        x = len(bad.intersection(group))
        if x <= subgroup // 2:
            continue
        if committee is None or (sealed and x == subgroup):
            total += 1
            continue
        rest = [i for i in range(staked) if i not in group]
        committees = list(combinations(rest, committee))
        wins = sum(1 for c in committees if len(bad.intersection(c)) > committee // 2)
        total += Fraction(wins, len(committees))
    return total / count


@pytest.mark.parametrize("dishonest", [0, 2, 4, 6, 9])
@pytest.mark.parametrize("committee", [None, 3, 5])
@pytest.mark.parametrize("sealed", [True, False])
def test_formula_matches_enumeration(dishonest, committee, sealed):
    staked, subgroup = 10, 3
    exact = odds.survival(staked, dishonest, subgroup, committee, sealed=sealed)
    assert exact == brute_force(staked, dishonest, subgroup, committee, sealed)


def test_a_dispute_never_makes_a_wrong_result_likelier():
    for row in odds.table(200):
        for key, value in row.items():
            if key.startswith(("sealed_", "open_")):
                assert value <= row["no_dispute"] + 1e-15, (key, row)


def test_the_default_committee_is_the_deployed_one():
    from din_cli.chain.din import DISPUTE_COMMITTEE

    assert odds.COMMITTEES == (DISPUTE_COMMITTEE,)


def test_readme_table_is_the_scripts_output():
    """The README's Disputes table is what `python scripts/dispute_odds.py` prints, verbatim."""
    import subprocess
    import sys

    printed = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "dispute_odds.py")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert printed == odds.markdown(1000)
    assert printed in (REPO / "README.md").read_text(), (
        "README's Disputes table is stale: paste `python scripts/dispute_odds.py`"
    )
