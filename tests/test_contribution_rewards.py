"""Rewards follow contribution (the task's default scoring, GTG-Shapley): each participant is paid
for what its updates added to each round's model, within its subgroup and on that round's test rows.
Participants play the cheaters of the issue: a free-rider resubmitting the round's starting model, a
copycat resubmitting an honest participant's CID, a participant with shuffled labels, and a dropout
that leaves after round 1. Embedded chain and anvil, one deployment per module.
"""

from __future__ import annotations

import pytest
from round_world import DEPOSIT, World

from din_cli.protocol import evaluation, roundflow
from din_cli.protocol.roundflow import start_model, to_bytes

FEE_BPS = 1000
HONEST, DROPOUT, FREE_RIDER, COPYCAT, SHUFFLED = 0, 1, 2, 3, 4


def play_round(w: World, *, dropouts=()) -> None:
    """One training round with the cheaters acting; validators aggregate, the owner finalises."""
    r = w.din.task_info(w.task).round
    cids = {}
    for i, p in enumerate(w.parts):
        if i in dropouts:
            continue
        if i == FREE_RIDER:
            w.din.submit_update(p.account, w.task, to_bytes(start_model(w.ctx(), w.task, r)))
        elif i == COPYCAT:
            w.din.submit_update(p.account, w.task, to_bytes(cids[HONEST]))
        else:
            done = roundflow.train_and_submit(w.ctx(p), w.task, w.stores[i], epochs=5, lr=0.5)
            cids[i] = done["cid"]
    if w.phase() == "training":
        w.advance()
    w.aggregate_all()
    w.finalize_and_attest()


def test_free_riders_copycats_and_shuffled_labels_earn_nothing_and_dropouts_keep_round_one(
    tmp_path, deployed
):
    w = World(tmp_path, participants=5, validators=3, subgroup_size=5, per_group=3, rounds=2,
              shuffle=(SHUFFLED + 1,), fee_bps=FEE_BPS, deployed=deployed)  # fmt: skip
    assert w.din.task_info(w.task).scoring == "gtg"
    roundflow.start(w.ctx(w.owner), w.task)
    play_round(w)
    play_round(w, dropouts=(DROPOUT,))
    assert w.phase() == "test-set"

    evaluation.post_test_set(w.ctx(w.owner), w.task, w.test_store)
    vals = w.assigned(0)
    docs = [evaluation.evaluate_commit(w.ctx(v), w.task) for v in vals]
    assert w.phase() == "score-reveal"
    for v in vals:
        evaluation.evaluate_reveal(w.ctx(v), w.task)
    if w.phase() == "score-reveal":
        w.advance()
    # every honest validator computed the identical integer vector, round by round
    assert all(d["scores"] == docs[0]["scores"] and d["rounds"] == docs[0]["rounds"] for d in docs)
    by_index = {
        w.din.participants(w.task).index(a): k for k, a in enumerate(docs[0]["participants"])
    }
    rounds = {e["round"]: e["scores"] for e in docs[0]["rounds"]}
    assert sorted(rounds) == [1, 2]
    in_round = {r: [s[by_index[i]] for i in range(5)] for r, s in rounds.items()}
    for r in (1, 2):  # an unchanged model and a copy are excluded: 0 in every round
        assert in_round[r][FREE_RIDER] == 0 and in_round[r][COPYCAT] == 0, in_round
        assert in_round[r][HONEST] > 0
    assert in_round[1][DROPOUT] > 0 and in_round[2][DROPOUT] == 0  # paid for what it did

    # din verify shows why each update was weighted as it was
    from din_cli.protocol import verify

    rows = [c for c in verify.verify(w.ctx(), w.task) if c["what"] == "subgroup"][0]["anomalies"]
    seen = {a["index"]: a for a in rows}
    assert seen[FREE_RIDER]["reason"] == "unchanged" and seen[FREE_RIDER]["distance"] == 0
    assert seen[COPYCAT]["reason"] == "duplicate" and not seen[COPYCAT]["admitted"]
    assert seen[HONEST]["admitted"] and seen[HONEST]["cosine"] > 0.5

    paid = w.settle_and_claim()
    assert sum(paid.values()) == DEPOSIT
    fee = DEPOSIT * FEE_BPS // 10000 // len(vals)
    assert all(paid[v.name] == fee for v in vals)  # nobody slashed: the vectors agreed
    got = [paid[f"p{i}"] for i in range(5)]
    assert got[FREE_RIDER] == 0 and got[COPYCAT] == 0, got
    assert got[SHUFFLED] <= got[HONEST] // 100, got  # at most 1 % of the honest participant
    assert 0 < got[DROPOUT] < got[HONEST], got
    assert got[HONEST] > (DEPOSIT - fee * len(vals)) // 2, got  # the honest one earns most


@pytest.mark.parametrize("scoring", ["gtg", "update"])
def test_a_copy_submitted_in_another_subgroup_scores_nothing_and_the_original_keeps_its_score(
    tmp_path, deployed, scoring
):
    """Admission judges one subgroup, so it cannot see a copy of an update from another subgroup.
    Scoring can: the later of two identical updates of a round scores 0 there, whatever its
    metadata says (here it declares another sample count, so its CID differs too), by
    contribution and by the update's own score alike (`din simulate` at N=1,000 paid such a
    copy under `update` before)."""
    from din_cli.ml import models, tensorfile

    w = World(tmp_path, participants=4, validators=4, subgroup_size=2, per_group=2, rounds=1,
              fee_bps=FEE_BPS, deployed=deployed, scoring=scoring)  # fmt: skip
    roundflow.start(w.ctx(w.owner), w.task)
    train = lambda i: roundflow.train_and_submit(w.ctx(w.parts[i]), w.task, w.stores[i], epochs=5)  # noqa: E731
    done = {0: train(0)}  # round 1's subgroups are drawn by its first submission
    groups = w.din.round_info(w.task, 1).participant_groups
    assert len(groups) == 2
    original = 0
    copier = next(i for g in groups if original not in g for i in g)
    for i in range(1, 4):
        if i != copier:
            done[i] = train(i)
    ctx = w.ctx()
    src = models.read_model(ctx.fetch(done[original]["cid"], tmp_path / "orig.safetensors"))
    h = src.header
    meta = tensorfile.make_metadata(arch=h.arch, kind="update", samples=h.samples + 1,
                                    round=h.round, task=h.task)  # fmt: skip
    tensorfile.write(tmp_path / "copy.safetensors", src.weights, meta)
    copy_cid = ctx.add(tmp_path / "copy.safetensors")
    assert copy_cid != done[original]["cid"]
    w.din.submit_update(w.parts[copier].account, w.task, to_bytes(copy_cid))
    assert w.phase() == "aggregation-commit"
    w.aggregate_all()
    w.finalize_and_attest()
    w.evaluate_all()
    paid = w.settle_and_claim()
    assert sum(paid.values()) == DEPOSIT
    assert paid[f"p{copier}"] == 0, paid
    assert paid[f"p{original}"] > 0 and all(paid[f"p{i}"] > 0 for i in done), paid
