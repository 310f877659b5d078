"""`din simulate`: a 50-participant task with every kind of cheater, on the embedded chain and anvil.

One run per chain (module-scoped): 50 participants in 5 subgroups of 10, 3
validators each, 2 rounds on digits, with dropouts, stragglers, free-riders,
copycats, poisoners, noisy labels and a fifth of the validators colluding.
The tests read what the run's report says each actor ended up with, and
check the report against the chain.
"""

from __future__ import annotations

import json
from math import comb
from pathlib import Path

import pytest

pytest.importorskip("ray")

SCENARIO = """
name = "n50"
seed = 3
[task]
participants = 50
subgroup_size = 10
validators_per_subgroup = 3
rounds = 2
rows = [20, 60]
epochs = 5
lr = 0.5
scoring = "gtg"
[behaviour]
dropouts = 0.04
stragglers = 0.04
free_riders = 0.06
copycats = 0.06
poisoners = 0.06
noisy_labels = 0.1
colluding_validators = 0.2
[run]
chain = "embedded"
workers = 2
"""


@pytest.fixture(scope="module", params=["embedded", "anvil"])
def run(request, tmp_path_factory):
    """``(report, out folder)`` of one run of SCENARIO on the embedded chain or on anvil."""
    from din_cli.sim.engine import simulate
    from din_cli.sim.scenario import parse_text

    sc = parse_text(SCENARIO)
    if request.param == "anvil":
        sc.run.chain = request.getfixturevalue("anvil_url")
    out = tmp_path_factory.mktemp(f"sim-{request.param}") / "run"
    notes: list[str] = []
    report = simulate(sc, out, say=notes.append)
    return report, out


def test_the_task_trains_settles_and_pays_out_the_deposit(run):
    report, out = run
    rounds = [r["round"] for r in report["rounds"]]
    replays = sum(1 for d in report["disputes"] if d["round"] > 0 and d["state"] == "upheld")
    assert len(rounds) >= 2 and rounds == sorted(rounds) and rounds[0] == 1
    if not replays:
        assert rounds == [1, 2]
    # it learnt (chance is 0.1); subgroups come from the chain's randomness, so with 20 %
    # colluders, poisoners and noisy labels the figure varies by run (0.7978 seen on anvil)
    assert report["final_accuracy"] > 0.7
    # every token of the 1000 DIN deposit is claimed by someone (participants, validators, owner)
    assert report["rewards"]["paid_total"] == pytest.approx(1000.0, abs=1e-9)
    assert json.loads((out / "report.json").read_text())["task"] == report["task"]
    assert (out / "report.png").stat().st_size > 10_000
    # dropouts and stragglers did not submit; the late ones were refused on chain, not lost
    r1 = report["rounds"][0]
    assert r1["dropped"] == 2 and r1["late"] >= 1
    assert r1["submitted"] <= 50 - r1["dropped"] - r1["late"]
    assert any(k.startswith("submitUpdate (late)") for k in report["failures"])


def test_cheating_participants_are_paid_nothing(run):
    """Free-riders and copycats are excluded by rule: exactly nothing. Poisoners are scored by
    their contribution (GTG-Shapley, floored at 0): less than the honest participants."""
    report, _ = run
    why = (report["disputes"], report["dishonest_majority"], report["failures"])
    detail = report["participants_detail"]
    paid = {k: [p["paid"] for p in detail if p["kind"] == k] for k in {p["kind"] for p in detail}}
    assert len(paid["free-rider"]) == len(paid["copycat"]) == len(paid["poisoner"]) == 3
    assert paid["free-rider"] == [0.0] * 3 and paid["copycat"] == [0.0] * 3, why
    honest = [p["paid"] for p in detail if p["kind"] == "honest" and p["rounds"]]
    assert sum(paid["poisoner"]) / 3 < sum(honest) / len(honest), why
    assert report["rewards"]["honest_median"] > 0
    # participants with more clean data are paid more, by and large
    assert report["rewards"]["spearman_payout_vs_quality"] > 0.2, why


def test_colluding_validators_are_slashed_and_honest_ones_are_not(run):
    report, _ = run
    vo = report["validators_outcome"]
    assert vo["colluders"] == 3
    assert vo["colluders_slashed"] == vo["colluders"]
    assert vo["honest_slashed"] == 0
    assert vo["colluders_paid"] == 0
    assert vo["honest_paid"] > 0
    # a subgroup the colluders held was taken back by a dispute, never kept
    for d in report["disputes"]:
        assert d["state"] == "upheld", d


def test_gas_and_transactions_add_up(run):
    """The report's transaction counts agree with what the rounds say happened on chain."""
    report, _ = run
    g = report["gas"]
    assert set(g["by_actor"]) >= {"owner", "participant", "validator"}
    fn = g["by_function"]
    assert fn["joinTask"]["count"] == 50
    assert fn["submitUpdate"]["count"] == sum(r["submitted"] for r in report["rounds"])
    assert fn["submitUpdate (late)"]["count"] == sum(r["late"] for r in report["rounds"])
    assert fn["registerValidator"]["count"] == report["validators"] == 15
    assert 30_000 < fn["submitUpdate"]["mean"] < 80_000  # one storage write and an event


def test_dishonest_majority_prediction_is_the_hypergeometric_tail():
    from din_cli.sim.report import dishonest_majority_odds

    # 15 validators, 3 colluders, subgroups of 3: P(X >= 2) by counting every draw
    exact = (comb(3, 2) * comb(12, 1) + comb(3, 3)) / comb(15, 3)
    assert dishonest_majority_odds(15, 3, 3) == pytest.approx(exact)
    assert dishonest_majority_odds(100, 0, 10) == 0.0
    assert dishonest_majority_odds(10, 10, 10) == 1.0


def test_bad_scenarios_fail_with_one_line(tmp_path, run_din):
    def fails(toml: str, out: Path, *words: str) -> None:
        bad = tmp_path / "bad.toml"
        bad.write_text(toml)
        r = run_din("simulate", bad, "--out", out)
        err = r.stderr.decode()
        assert r.returncode != 0 and all(w in err for w in words), err
        assert len(err.strip().splitlines()) == 1, err  # one line: the problem and the fix

    fails("[task]\nparticipantz = 3\n", tmp_path / "o", "participantz", "known keys")
    fails("[behaviour]\nfree_riders = 2.0\n", tmp_path / "o", "not a fraction")
    fails('[task]\nrounds = "two"\n', tmp_path / "o", "task.rounds", "int")
    fails("[task\n", tmp_path / "o", "not valid TOML")
    fails('[run]\nchain = "ftp://x"\n', tmp_path / "o", "run.chain")
    fails('[task]\nscoring = "best"\n', tmp_path / "o", "task.scoring")
    fails('seed = "x"\n', tmp_path / "o", "seed")
    (tmp_path / "file").write_text("")
    fails("[task]\nparticipants = 5\n", tmp_path / "file", "is a file")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    fails("[task]\nparticipants = 5\n", tmp_path / "full", "not empty")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    assert not (tmp_path / "o").exists()  # nothing written for a refused scenario
