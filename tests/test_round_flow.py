"""A task's life through din_cli.protocol on a throw-away embedded chain: every actor's step,
re-runs that must say "already done", and the paths that still end in settlement or a refund."""

from __future__ import annotations

import pytest
from round_world import DEPOSIT, MIN_STAKE, SPAN, World

from din_cli.chain.settlement import share
from din_cli.errors import (
    AlreadyDone,
    NotFoundError,
    TransactionReverted,
    UsageError,
    VerificationError,
)
from din_cli.protocol import evaluation, rewards, roundflow, status, verify


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path, participants=3, validators=3, subgroup_size=3, per_group=3, rounds=1)
    yield w
    w.chain.close()


def test_one_round_settles_pays_the_deposit_exactly_and_verifies(world):
    w = world
    roundflow.start(w.ctx(w.owner), w.task)
    with pytest.raises(AlreadyDone):
        roundflow.start(w.ctx(w.owner), w.task)

    first = roundflow.train_and_submit(w.ctx(w.parts[0]), w.task, w.stores[0], epochs=2, lr=0.5)
    assert first["round"] == 1 and w.ctx().store.has(first["cid"])
    with pytest.raises(AlreadyDone):  # a re-run never submits twice
        roundflow.train_and_submit(w.ctx(w.parts[0]), w.task, w.stores[0], epochs=2, lr=0.5)
    w.train_all(skip=(0,), epochs=2)
    assert w.phase() == "aggregation-commit"  # everyone submitted: the phase moved on

    vals = w.assigned()
    committed = [roundflow.aggregate_commit(w.ctx(v), w.task)["cid"] for v in vals]
    assert len(set(committed)) == 1  # bit-exact: every validator computes the same CID
    with pytest.raises(AlreadyDone):
        roundflow.aggregate_commit(w.ctx(vals[0]), w.task)
    # a validator that lost its local record recomputes the same aggregate for the reveal
    w.ctx(vals[0]).record_path(w.task, 1, "aggregate").unlink()
    for v in vals:
        roundflow.aggregate_reveal(w.ctx(v), w.task)
    with pytest.raises(AlreadyDone):
        roundflow.aggregate_reveal(w.ctx(vals[1]), w.task)
    assert w.phase() == "global-model"

    posted = roundflow.finalize(w.ctx(w.owner), w.task)
    with pytest.raises(AlreadyDone):
        roundflow.finalize(w.ctx(w.owner), w.task)
    for v in vals[:2]:
        roundflow.attest(w.ctx(v), w.task)
    with pytest.raises(AlreadyDone):  # the majority already accepted it
        roundflow.attest(w.ctx(vals[2]), w.task)
    assert roundflow.current_model(w.ctx(), w.task) == posted["cid"]
    assert w.phase() == "test-set"

    w.evaluate_all()
    with pytest.raises(AlreadyDone):
        evaluation.post_test_set(w.ctx(w.owner), w.task, w.test_store)
    with pytest.raises(AlreadyDone):
        evaluation.evaluate_reveal(w.ctx(vals[0]), w.task)
    assert w.phase() == "settling"

    paid = w.settle_and_claim()
    assert sum(paid.values()) == DEPOSIT
    with pytest.raises(AlreadyDone):
        rewards.claim(w.ctx(w.parts[0]), w.task)
    with pytest.raises(AlreadyDone):
        rewards.settle(w.ctx(w.owner), w.task)
    shown = rewards.show(w.ctx(), w.task)
    assert shown["fully_paid"] and shown["balanced"]
    # contribution scores (the default GTG-Shapley; exact at 3 updates): each honest update adds,
    # and together they are the whole gain of the round's model over the genesis model (Shapley's
    # efficiency, up to rounding each of the three half up)
    from din_cli.ml.evaluate import evaluate

    scores = [p["score"] for p in shown["participants"]]
    assert all(s > 1000 for s in scores), shown["participants"]
    ctx = w.ctx()
    gain = evaluate(ctx.fetch(posted["cid"], w.tmp / "global.safetensors"), w.test_store).score_bps
    gain -= evaluate(w.tmp / "genesis.safetensors", w.test_store).score_bps
    assert abs(sum(scores) - gain) <= 2, (scores, gain)
    checks = verify.verify(w.ctx(), w.task)
    assert [c["what"] for c in checks] == ["subgroup", "global"] and all(c["ok"] for c in checks)


def test_participant_missing_the_deadline_still_reaches_settlement(world):
    w = world
    roundflow.start(w.ctx(w.owner), w.task)
    w.train_all(skip=(2,), epochs=2)
    assert w.phase() == "training"  # waits for the late participant until the deadline
    w.advance()
    assert w.phase() == "aggregation-commit"
    with pytest.raises(UsageError, match="not training"):  # too late: the phase is over
        roundflow.train_and_submit(w.ctx(w.parts[2]), w.task, w.stores[2], epochs=1)
    w.aggregate_all()
    w.finalize_and_attest()
    w.evaluate_all()
    paid = w.settle_and_claim()
    assert paid["p2"] == 0 and paid["p0"] > 0 and paid["p1"] > 0
    assert sum(paid.values()) == DEPOSIT
    assert all(c["ok"] for c in verify.verify(w.ctx(), w.task))


def test_validator_that_never_reveals_is_slashed_and_the_task_settles(world):
    """An offline validator: settlement slashes it for the missing reveal and pays it nothing."""
    w = world
    roundflow.start(w.ctx(w.owner), w.task)
    w.train_all(epochs=2)
    lazy = w.assigned()[0]
    w.aggregate_all(skip_reveal=(lazy.name,))
    assert w.phase() == "global-model"  # two of three revealed the same CID: accepted
    w.finalize_and_attest()
    w.evaluate_all(skip=(lazy.name,))  # it went offline: no scores either
    result = rewards.settle(w.ctx(w.owner), w.task)
    assert [s["validator"] for s in result["slashed"]] == [lazy.address]
    assert w.din.validator_info(lazy.address).stake < MIN_STAKE
    assert all(w.din.validator_info(v.address).stake == MIN_STAKE for v in w.vals if v is not lazy)
    paid = {}
    for who in [w.owner, *w.parts, *w.vals]:
        try:
            paid[who.name] = rewards.claim(w.ctx(who), w.task)["amount"]
        except Exception:
            paid[who.name] = 0
    assert paid[lazy.name] == 0
    assert sum(paid.values()) == DEPOSIT


def test_owner_that_never_finalises_ends_in_the_refund_path(world):
    w = world
    roundflow.start(w.ctx(w.owner), w.task)
    w.train_all(epochs=1)
    w.aggregate_all()
    assert w.phase() == "global-model"
    w.advance()  # no global model posted: the round keeps the genesis model and training ends
    assert w.phase() == "test-set"
    with pytest.raises(UsageError):
        roundflow.finalize(w.ctx(w.owner), w.task)
    # a wrapped test-set key must be bound to this chain, task and the evaluation, and reach every validator
    from din_cli.crypto.wrap import Binding, Recipient, wrap_test_key

    vals = evaluation.evaluation_validators(w.ctx(), w.task)
    keys = {v.address: v.hpke_public for v in w.vals}
    cid = w.ctx().add(w.test_store)
    for binding, who in (
        (Binding(w.chain.chain_id, w.task, 3), vals),
        (Binding(w.chain.chain_id, w.task, 0), vals[:-1]),
    ):
        doc = wrap_test_key(
            bytes(32), [Recipient(keys[a], a) for a in who], binding, cid=cid, owner=w.owner
        )
        with pytest.raises(UsageError):
            evaluation.post_wrapped(w.ctx(w.owner), w.task, doc)
    w.advance()  # and no test set either: the task is abandoned
    assert w.phase() == "abandoned"
    with pytest.raises(AlreadyDone):
        rewards.settle(w.ctx(w.parts[0]), w.task)
    with pytest.raises(UsageError):  # claims open once participants had time to prove records
        rewards.claim(w.ctx(w.parts[0]), w.task)
    for p in w.parts[:2]:  # the third never proves its record
        assert rewards.prove(w.ctx(p), w.task)["rounds"] == [1]
    w.chain.advance_time(SPAN + 1)
    paid = {p.name: rewards.claim(w.ctx(p), w.task)["amount"] for p in w.parts[:2]}
    with pytest.raises(NotFoundError):
        rewards.claim(w.ctx(w.parts[2]), w.task)
    assert sorted(paid.values()) == sorted(share(DEPOSIT, [1, 1]))  # contributors by record


def test_a_minority_aggregate_is_slashed_when_reported_and_the_validator_is_out(world):
    w = world
    roundflow.start(w.ctx(w.owner), w.task)
    w.train_all(epochs=1)
    liar = w.assigned()[0]
    w.aggregate_all(cids={liar.name: roundflow.current_model(w.ctx(), w.task)})  # the genesis model
    assert w.phase() == "global-model"  # the honest two-of-three majority was accepted
    # until the task settles a dispute may still overturn the majority: nothing to report yet
    assert rewards.slash_aggregators(w.ctx(w.parts[0]), w.task, [1]) == []
    w.finalize_and_attest()
    assert w.phase() == "test-set"
    assert rewards.slash_aggregators(w.ctx(w.parts[0]), w.task, [1]) == []
    w.evaluate_all()
    assert w.phase() == "settling"
    reported = rewards.slash_aggregators(w.ctx(w.parts[0]), w.task, [1])  # anyone may report it
    assert [(s["validator"], s["round"]) for s in reported] == [(liar.address, 1)]
    assert rewards.slash_aggregators(w.ctx(w.parts[0]), w.task, [1]) == []  # never twice
    state = roundflow.validator_state(w.ctx(), w.task, liar.address)
    assert state["removed"] and not w.din.bonded(w.task, liar.address)  # out, its bond burnt
    assert (
        w.din.validator_info(liar.address).stake == MIN_STAKE - w.din.task_info(w.task).slash_amount
    )


def test_reverts_carry_the_contracts_reason(world):
    w = world
    roundflow.start(w.ctx(w.owner), w.task)
    w.train_all(epochs=1)
    w.aggregate_all()
    with pytest.raises(TransactionReverted, match="only the model owner"):
        roundflow.finalize(w.ctx(w.parts[0]), w.task)


def test_verify_fails_when_colluding_validators_accepted_a_wrong_aggregate(world, tmp_path):
    w = world
    roundflow.start(w.ctx(w.owner), w.task)
    w.train_all(epochs=1)
    first = w.din.updates_submitted(w.task, 1)[0]
    with w.ctx().workdir() as work:  # a well-formed aggregate that leaves two updates out
        partial, _ = roundflow.aggregate_cids(w.ctx(), [first.cid], work, "partial")
    w.aggregate_all(cids={v.name: partial for v in w.vals})  # all validators agree on it
    roundflow.finalize(w.ctx(w.owner), w.task)
    with pytest.raises(VerificationError, match="subgroup 0's aggregate"):
        verify.verify(w.ctx(), w.task)
    checks = verify.audit(w.ctx(), w.task)
    assert [c["ok"] for c in checks] == [False]


def test_wait_returns_at_a_reached_phase_and_times_out_otherwise(world):
    w = world
    assert status.wait(w.ctx(), w.task, "joining", timeout=0)["phase"] == "joining"
    with pytest.raises(status.WaitTimeout):
        status.wait(w.ctx(), w.task, "training", timeout=0.2, poll=0.05)
    with pytest.raises(UsageError):
        status.wait(w.ctx(), w.task, "lunch", timeout=0)
    roundflow.start(w.ctx(w.owner), w.task)
    assert status.wait(w.ctx(), w.task, "training", timeout=0)["round"] == 1
    doc = status.status(w.ctx(), w.task, w.parts[0].address)
    assert doc["phase"] == "training" and doc["you"]["role"] == "participant"
    assert doc["current_round"]["updates"] == []
    w.chain.advance_time(700)  # past the training deadline; nobody sent a transaction since
    assert w.phase() == "training"
    with pytest.raises(status.WaitTimeout):  # read-only: it cannot move the task
        status.wait(w.ctx(), w.task, "aggregation-commit", timeout=0.2, poll=0.05)
    # with a key it pushes the expired phase along (the permissionless advance)
    done = status.wait(w.ctx(w.owner), w.task, "aggregation-commit", timeout=5)
    assert done == {"task_id": w.task, "phase": "aggregation-commit", "round": 1}


class _Info:
    def __init__(self, phase, round_):
        self.phase, self.round = phase, round_


@pytest.mark.parametrize(
    ("now", "want", "round_", "ok"),
    [
        (("training", 2), "training", None, True),
        (("training", 2), "global-model", None, False),
        (("training", 2), "global-model", 1, True),
        (("aggregation-reveal", 1), "aggregation-commit", None, True),
        (("test-set", 3), "global-model", 3, True),
        (("test-set", 3), "score-commit", None, False),
        (("abandoned", 1), "settled", None, False),
        (("abandoned", 1), "abandoned", None, True),
        (("joining", 0), "training", None, False),
    ],
)
def test_reached_orders_phases_by_round(now, want, round_, ok):
    assert status.reached(_Info(*now), want, round_) is ok


def test_an_empty_subgroup_agrees_on_the_starting_model_and_nobody_is_slashed(tmp_path):
    from din_cli.protocol.cids import to_text

    w = World(tmp_path, participants=4, validators=2, subgroup_size=2, per_group=1, rounds=1)
    try:
        roundflow.start(w.ctx(w.owner), w.task)
        w.advance(0)  # a call after the starting block draws round 1's subgroups
        groups = w.din.round_info(w.task).participant_groups
        assert len(groups) == 2
        w.train_all(skip=tuple(groups[1]), epochs=2)  # nobody in subgroup 1 submits
        w.advance()
        w.aggregate_all()
        assert w.phase() == "global-model"
        start = roundflow.start_model(w.ctx(), w.task, 1)
        accepted = {g: to_text(c) for g, c in w.din.accepted_aggregates(w.task, 1).items()}
        assert accepted[1] == start and accepted[0] != start
        assert w.din.slashable_aggregators(w.task, 1) == []
        w.finalize_and_attest()
        assert w.phase() == "test-set"
        model = roundflow.current_model(w.ctx(), w.task)
        assert model not in (start, accepted[0])  # subgroup 0's result, re-aggregated alone
        assert all(c["ok"] for c in verify.verify(w.ctx(), w.task))
    finally:
        w.chain.close()


def test_a_majority_revealing_the_genesis_model_cannot_stop_the_global_model(tmp_path):
    """Round 2: subgroup 0's validators agree on the genesis model (no samples, not this round's
    start). The owner's finalize leaves it out as it does an empty subgroup's, instead of failing
    on it every time; the global model is subgroup 1's aggregate, and `din verify` agrees."""
    from din_cli.protocol.cids import to_text

    w = World(tmp_path, participants=4, validators=2, subgroup_size=2, per_group=1, rounds=2)
    try:
        roundflow.start(w.ctx(w.owner), w.task)
        w.run_round(epochs=2)
        genesis = to_text(w.din.task_info(w.task).genesis_cid)
        w.train_all(epochs=2)
        if w.phase() == "training":
            w.advance()
        liar = w.assigned()[0]  # subgroup 0's only validator
        w.aggregate_all(cids={liar.name: genesis})
        accepted = {g: to_text(c) for g, c in w.din.accepted_aggregates(w.task, 2).items()}
        assert accepted[0] == genesis and accepted[1] != genesis
        roundflow.finalize(w.ctx(w.owner), w.task)
        proposed = roundflow._proposed(w.ctx(), w.task, 2)
        with w.ctx().workdir() as work:
            alone, _ = roundflow.aggregate_cids(
                w.ctx(), [w.din.accepted_aggregates(w.task, 2)[1]], work, "a"
            )
        assert proposed == alone
    finally:
        w.chain.close()


def test_validators_refuse_a_test_set_other_than_the_committed_one(tmp_path):
    """Old: the owner chose the test set after seeing every update. New: the task commits to the
    plaintext's sha256 at publish; a validator refuses to score anything else and commits the
    rejection (the empty vector) instead (tests/test_test_set_sabotage.py settles it)."""
    w = World(tmp_path, participants=3, validators=3, subgroup_size=3, per_group=3, rounds=1)
    try:
        roundflow.start(w.ctx(w.owner), w.task)
        w.run_round(epochs=1)
        assert w.phase() == "test-set"
        evaluation.post_test_set(w.ctx(w.owner), w.task, w.stores[0])  # not the committed file
        v = w.assigned(0)[0]
        doc = evaluation.evaluate_commit(w.ctx(v), w.task)
        assert doc["scores"] == [] and "committed at publish" in doc["rejected"]
        assert roundflow.validator_state(w.ctx(), w.task, v.address)["score_committed"]
    finally:
        w.chain.close()


def test_validators_score_with_the_metric_the_task_fixed_at_publish(tmp_path):
    """A metric is a task parameter: nobody is slashed for scoring with the wrong one by mistake."""
    from din_cli.ml.evaluate import evaluate

    w = World(tmp_path, participants=3, validators=3, subgroup_size=3, per_group=3, metric="f1",
              scoring="update")  # fmt: skip
    roundflow.start(w.ctx(w.owner), w.task)
    assert w.din.task_info(w.task).metric == "f1"
    assert status.status(w.ctx(), w.task)["metric"] == "f1"
    w.run_round(epochs=2)
    evaluation.post_test_set(w.ctx(w.owner), w.task, w.test_store)
    v = w.assigned(0)[0]
    with pytest.raises(UsageError, match="task 1 scores by f1, not accuracy"):
        evaluation.evaluate_commit(w.ctx(v), w.task, metric="accuracy")
    doc = evaluation.evaluate_commit(w.ctx(v), w.task)
    updates = evaluation.latest_updates(w.ctx(), w.task)
    parts = w.din.participants(w.task)
    want, acc = [], []
    for a in doc["participants"]:
        model = w.ctx().fetch(updates[parts.index(a)], tmp_path / f"{a}.safetensors")
        want.append(evaluate(model, w.test_store, metric="f1").score_bps)
        acc.append(evaluate(model, w.test_store, metric="accuracy").score_bps)
    assert doc["scores"] == want and want != acc
    w.chain.close()


def test_subgroups_aggregate_with_the_rule_the_task_fixed_at_publish(tmp_path):
    """The owner picks a poisoning-resistant rule at publish; every validator and `din verify` use it."""
    from din_cli.ml import robust, tensorfile
    from din_cli.protocol.roundflow import start_model, subgroup_updates

    w = World(tmp_path, participants=3, validators=3, subgroup_size=3, per_group=3,
              aggregation="trimmed-mean", trim="0.34")  # fmt: skip
    info = w.din.task_info(w.task)
    assert (info.aggregation, info.aggregation_param) == ("trimmed-mean", "0.34")
    assert status.status(w.ctx(), w.task)["aggregation"] == "trimmed-mean"
    roundflow.start(w.ctx(w.owner), w.task)
    w.train_all(epochs=2)
    w.aggregate_all()
    accepted = w.din.accepted_aggregates(w.task, 1)[0]
    ctx = w.ctx()
    got = ctx.fetch(roundflow.to_text(accepted), tmp_path / "accepted.safetensors")
    assert '"rule":"trimmed-mean"' in tensorfile.read_header(got).metadata["din.rule"]
    # the same updates by an independent call of the rule: one value dropped at each end (the median)
    base = ctx.fetch(start_model(ctx, w.task, 1), tmp_path / "start.safetensors")
    ups = [
        ctx.fetch(roundflow.to_text(u.cid), tmp_path / f"u{i}.safetensors")
        for i, u in enumerate(subgroup_updates(ctx, w.task, 1, 0))
    ]
    rule = robust.make_rule("trimmed-mean", trim="0.34")
    robust.aggregate(ups, tmp_path / "want.safetensors", rule=rule, base=base)
    assert got.read_bytes() == (tmp_path / "want.safetensors").read_bytes()
    w.finalize_and_attest()
    assert all(c["ok"] for c in verify.verify(w.ctx(), w.task, 1))
    with pytest.raises(UsageError, match="more than 6 decimals"):
        World(tmp_path / "bad", aggregation="norm-bounded", clip_norm="1.0000001")
    w.chain.close()


def test_verify_names_the_update_the_norm_bound_clipped_and_the_one_pulling_against(tmp_path):
    """A scaled poisoner in a norm-bounded task: `din verify --json` shows it clipped, far from the
    start and pulling against its subgroup; the honest updates pull with it."""
    from din_cli.ml import models, tensorfile
    from din_cli.protocol.roundflow import start_model, to_bytes

    w = World(tmp_path, participants=3, validators=3, subgroup_size=3, per_group=3,
              aggregation="norm-bounded", clip_norm="5")  # fmt: skip
    roundflow.start(w.ctx(w.owner), w.task)
    w.train_all(skip=(2,), epochs=2)
    ctx = w.ctx()
    start = models.read_model(ctx.fetch(start_model(ctx, w.task, 1), tmp_path / "s.safetensors"))
    first = w.din.updates_submitted(w.task, 1)[0].cid
    honest = models.read_model(ctx.fetch(first, tmp_path / "h.safetensors"))
    poison = {k: v - 20 * (honest.weights[k] - v) for k, v in start.weights.items()}
    meta = tensorfile.make_metadata(arch=honest.header.arch, kind="update", samples=100)
    tensorfile.write(tmp_path / "poison.safetensors", poison, meta)
    w.din.submit_update(
        w.parts[2].account, w.task, to_bytes(ctx.add(tmp_path / "poison.safetensors"))
    )
    w.aggregate_all()
    (check,) = [c for c in verify.audit(w.ctx(), w.task, 1) if c["what"] == "subgroup"]
    rows = {a["index"]: a for a in check["anomalies"]}
    assert rows[2]["clipped"] and rows[2]["distance"] > 50 and rows[2]["cosine"] < 0, rows
    assert not rows[0]["clipped"] and rows[0]["cosine"] > 0 and rows[1]["cosine"] > 0, rows
    assert all(a["admitted"] for a in rows.values())
    w.chain.close()
