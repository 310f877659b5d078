"""The admission rule plays the attacker: bad updates are excluded with their reason, never fatal,
every honest validator reaches the same CID, and a claimed sample count buys no more than the cap."""

from __future__ import annotations

import json
import shutil
import struct

import numpy as np
import pytest

from din_cli.errors import InputError
from din_cli.ml import aggregate as agg
from din_cli.ml import models, tensorfile, zoo
from din_cli.protocol import admission

ARCH = "mlp:20-30-5"


def _write(path, weights, *, samples=100, kind="update", arch=ARCH, round=1, task="1", extra=None):
    meta = tensorfile.make_metadata(arch=arch, kind=kind, samples=samples, round=round, task=task)
    tensorfile.write(path, weights, {**meta, **(extra or {})})
    return path


def _weights(seed, base=None, scale=0.05):
    rng = np.random.default_rng(seed)
    shapes = zoo.param_shapes(ARCH)
    if base is None:
        return {k: (rng.standard_normal(s) * 0.3).astype(np.float32) for k, s in shapes.items()}
    return {
        k: (base[k] + rng.standard_normal(s) * scale).astype(np.float32) for k, s in shapes.items()
    }


@pytest.fixture
def start(tmp_path):
    path = tmp_path / "start.safetensors"
    models.init_model(ARCH, path, seed=3)
    return path


@pytest.fixture
def honest(tmp_path, start):
    base = models.read_model(start).weights
    return [
        _write(tmp_path / f"h{i}.safetensors", _weights(i, base), samples=n)
        for i, n in enumerate((120, 300, 75))
    ]


def _fedavg_of(paths, tmp_path, name, weights=None):
    out = tmp_path / f"{name}.safetensors"
    agg.aggregate(paths, out, weights=weights)
    return models.read_model(out).weights


def _header_samples(path):
    return tensorfile.read_header(path).samples


# --- one attacker per reason -------------------------------------------------


def _negated(tmp_path, start, honest):
    w = models.read_model(honest[0]).weights
    return _write(tmp_path / "bad.safetensors", {k: -v for k, v in w.items()}, samples=2**31)


def _nan(tmp_path, start, honest):
    w = models.read_model(honest[0]).weights
    w["layers.2.weight"][1, 2] = np.nan
    return _write(tmp_path / "bad.safetensors", w, samples=10)


def _inf(tmp_path, start, honest):
    w = models.read_model(honest[0]).weights
    w["layers.0.bias"][0] = -np.inf
    return _write(tmp_path / "bad.safetensors", w, samples=10)


def _huge(tmp_path, start, honest):
    w = models.read_model(honest[1]).weights
    w["layers.0.weight"][0, 0] = 1024.5
    return _write(tmp_path / "bad.safetensors", w, samples=10)


def _zero_samples(tmp_path, start, honest):
    return _write(
        tmp_path / "bad.safetensors", _weights(9, models.read_model(start).weights), samples=0
    )


def _wrong_arch(tmp_path, start, honest):
    other = "mlp:20-31-5"
    rng = np.random.default_rng(1)
    w = {k: rng.standard_normal(s).astype(np.float32) for k, s in zoo.param_shapes(other).items()}
    return _write(tmp_path / "bad.safetensors", w, arch=other)


def _renamed_tensor(tmp_path, start, honest):
    w = models.read_model(honest[0]).weights
    w["layers.9.bias"] = w.pop("layers.2.bias")
    return _write(tmp_path / "bad.safetensors", w)


def _float64(tmp_path, start, honest):
    w = {k: v.astype(np.float64) for k, v in models.read_model(honest[0]).weights.items()}
    return _write(tmp_path / "bad.safetensors", w)


def _genesis(tmp_path, start, honest):
    return shutil.copy(start, tmp_path / "bad.safetensors")


def _relabelled_start(tmp_path, start, honest):
    return _write(tmp_path / "bad.safetensors", models.read_model(start).weights, samples=500)


def _copy(tmp_path, start, honest):
    return shutil.copy(honest[1], tmp_path / "bad.safetensors")


def _copy_claiming_more(tmp_path, start, honest):
    return _write(tmp_path / "bad.safetensors", models.read_model(honest[1]).weights, samples=5000)


def _aggregate_kind(tmp_path, start, honest):
    return _write(
        tmp_path / "bad.safetensors",
        _weights(8, models.read_model(start).weights),
        kind="aggregate",
    )


def _garbage(tmp_path, start, honest):
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    return tmp_path / "bad.safetensors"


def _non_canonical(tmp_path, start, honest):
    h = tensorfile.read_header(honest[0])
    text = tensorfile.encode_header(
        h.metadata, {n: (t.dtype, t.shape) for n, t in h.tensors.items()}
    )[8:]
    text = text.rstrip(b" ") + b"  \n" + b" " * 5  # same JSON, other padding
    body = honest[0].read_bytes()[h.data_start :]
    (tmp_path / "bad.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + body)
    return tmp_path / "bad.safetensors"


def _samples_text(tmp_path, start, honest):
    return _write(
        tmp_path / "bad.safetensors",
        _weights(7, models.read_model(start).weights),
        extra={"din.samples": "1_000"},
    )


ATTACKS = {
    "negated update claiming 2**31 samples": (_negated, None),
    "NaN": (_nan, "non-finite"),
    "-Inf": (_inf, "non-finite"),
    "a weight beyond the clip": (_huge, "out-of-range"),
    "zero samples": (_zero_samples, "samples"),
    "samples not a plain integer": (_samples_text, "samples"),
    "another architecture": (_wrong_arch, "architecture"),
    "a renamed tensor": (_renamed_tensor, "architecture"),
    "float64 weights": (_float64, "architecture"),
    "the starting model itself": (_genesis, "unchanged"),
    "the starting model relabelled as an update": (_relabelled_start, "unchanged"),
    "a byte copy of an earlier update": (_copy, "duplicate"),
    "a copy claiming more samples": (_copy_claiming_more, "duplicate"),
    "an aggregate posing as an update": (_aggregate_kind, "kind"),
    "not safetensors": (_garbage, "unparseable"),
    "a non-canonical header": (_non_canonical, "not-canonical"),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_bad_update_is_excluded_with_its_reason_and_the_rest_aggregate(
    tmp_path, start, honest, attack
):
    make, reason = ATTACKS[attack]
    bad = make(tmp_path, start, honest)
    inputs = [honest[0], honest[1], bad, honest[2]]
    out = tmp_path / "out.safetensors"
    outcome = admission.aggregate(
        inputs, out, base=start, max_samples=200, ids=["a", "b", "c", "d"]
    )
    got = models.read_model(out)
    verdicts = outcome.admission.verdicts
    assert [v.admitted for v in verdicts[:2]] + [verdicts[3].admitted] == [True, True, True]
    if reason is None:  # admitted, but its weight is the cap
        assert verdicts[2].admitted and verdicts[2].weight == 200
        return
    assert not verdicts[2].admitted and verdicts[2].reason == reason, verdicts[2]
    assert json.loads(got.header.metadata["din.excluded"]) == [
        {"cid": "c", "index": 2, "reason": reason}
    ]
    # the aggregate is FedAvg over the honest ones at their capped weights
    want = _fedavg_of(honest, tmp_path, "want", weights=[120, 200, 75])
    for k in want:
        np.testing.assert_array_equal(got.weights[k], want[k])
    assert got.header.samples == 120 + 200 + 75


def test_honest_validators_reach_the_same_cid_through_the_local_store(tmp_path, start, honest):
    from din_cli.store import open_store

    store = open_store()
    base_cid = str(store.add(str(start)))
    cids = [
        str(store.add(str(p)))
        for p in [honest[0], _nan(tmp_path, start, honest), honest[1], honest[0], honest[2]]
    ]
    results = []
    for who in ("v1", "v2", "v3"):
        work = tmp_path / who
        work.mkdir()
        store.cat_to(base_cid, work / "start")
        paths = []
        for i, c in enumerate(cids):
            store.cat_to(c, work / f"in{i}")
            paths.append(work / f"in{i}")
        outcome = admission.aggregate(
            paths, work / "out", base=work / "start", max_samples=2**16, ids=cids
        )
        results.append((str(store.add(str(work / "out"))), outcome.admission.excluded_json()))
    assert len(set(results)) == 1
    excluded = json.loads(results[0][1])
    assert excluded == [
        {"cid": cids[1], "index": 1, "reason": "non-finite"},
        {"cid": cids[3], "index": 3, "reason": "duplicate"},
    ]
    assert admission.recorded_exclusions(tmp_path / "v1" / "out") == excluded


def test_a_claim_of_2_31_samples_moves_the_model_no_more_than_an_honest_participant_at_the_cap(
    tmp_path, start, honest
):
    cap = 300
    bad = _negated(tmp_path, start, honest)  # -w of honest[0], claiming 2**31
    at_cap = _write(tmp_path / "cap.safetensors", models.read_model(bad).weights, samples=cap)
    honest_only = _fedavg_of(honest, tmp_path, "honest")
    claimed = tmp_path / "claimed.safetensors"
    capped = tmp_path / "capped.safetensors"
    admission.aggregate([*honest, bad], claimed, base=start, max_samples=cap)
    admission.aggregate([*honest, at_cap], capped, base=start, max_samples=cap)
    assert claimed.read_bytes() == capped.read_bytes()  # the claim bought nothing beyond the cap
    got = models.read_model(claimed).weights
    # the shift is the cap's share of the distance to the attacker's weights, no more
    share = cap / (120 + 300 + 75 + cap)
    attacker = models.read_model(bad).weights
    for k in got:
        shift = np.abs(got[k].astype(np.float64) - honest_only[k])
        bound = (
            share * np.abs(attacker[k].astype(np.float64) - honest_only[k])
            + 2 * agg.ERROR_BOUND_ABS
        )
        assert (shift <= bound + 1e-6).all(), k
    # without the cap the same file takes the model over: the test above can fail
    uncapped = tmp_path / "uncapped.safetensors"
    admission.aggregate([*honest, bad], uncapped, base=start)
    taken = models.read_model(uncapped).weights
    assert all(np.allclose(taken[k], attacker[k], atol=1e-5) for k in taken)


def test_every_update_excluded_gives_the_starting_model(tmp_path, start, honest):
    bad = [_nan(tmp_path, start, honest), shutil.copy(start, tmp_path / "same.safetensors")]
    out = tmp_path / "out.safetensors"
    outcome = admission.aggregate(bad, out, base=start, max_samples=10)
    assert outcome.unchanged and out.read_bytes() == start.read_bytes()
    assert [v.reason for v in outcome.admission.verdicts] == ["non-finite", "unchanged"]
    with pytest.raises(InputError, match="nothing to aggregate: excluded 2 of 2"):
        admission.aggregate(bad, tmp_path / "none.safetensors")
    assert not (tmp_path / "none.safetensors").exists()


def test_unavailable_inputs_and_the_total_bound_are_excluded_in_order(tmp_path, start, honest):
    big = [
        _write(
            tmp_path / f"b{i}.safetensors",
            _weights(50 + i, models.read_model(start).weights),
            samples=2**31,
        )
        for i in range(3)
    ]
    verdicts = admission.admit(
        [None, *big], base=start, ids=["bafkmissing", "x", "y", "z"]
    ).verdicts
    assert [(v.admitted, v.reason) for v in verdicts] == [
        (False, "unavailable"),
        (True, ""),
        (True, ""),
        (False, "over-total"),
    ]
    assert agg.MAX_TOTAL_SAMPLES == 2 * 2**31


def test_excluded_files_are_named_by_the_cid_din_ipfs_add_gives(tmp_path, start, honest):
    from din_cli.store import open_store

    bad = _nan(tmp_path, start, honest)
    (v,) = admission.admit([bad], base=start).excluded
    assert v.cid == str(open_store().add(str(bad)))


def test_the_rule_does_not_depend_on_where_the_files_are(tmp_path, start, honest):
    a = admission.aggregate(honest, tmp_path / "a.safetensors", base=start, max_samples=100)
    moved = []
    for i, p in enumerate(honest):
        moved.append(shutil.copy(p, tmp_path / f"elsewhere-{i}"))
    b = admission.aggregate(
        moved, tmp_path / "b.safetensors", base=shutil.copy(start, tmp_path / "s2"), max_samples=100
    )
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    assert a.samples == b.samples == 100 + 100 + 75
    assert "din.excluded" not in tensorfile.read_header(tmp_path / "a.safetensors").metadata


# --- through the round flow on the embedded chain ----------------------------

CAP = 300  # above every honest participant's rows (digits split six ways: ~180 each)


@pytest.fixture
def capped_world(tmp_path, monkeypatch):
    """Three honest participants and three attackers in one subgroup of a task whose maxSamples is CAP."""
    import functools

    from round_world import World

    from din_cli.protocol import roundflow

    monkeypatch.setattr(roundflow, "publish", functools.partial(roundflow.publish, max_samples=CAP))
    w = World(tmp_path, participants=6, validators=3, subgroup_size=6, per_group=3, rounds=1)
    yield w
    w.chain.close()


def _submit_file(w, who, path) -> str:
    from din_cli.protocol.cids import to_bytes

    cid = w.ctx().add(path)
    w.din.submit_update(who.account, w.task, to_bytes(cid))
    return cid


def test_attackers_in_a_round_are_excluded_and_honest_validators_agree(capped_world, tmp_path):
    from din_cli.protocol import roundflow, verify
    from din_cli.protocol.cids import to_text
    from din_cli.protocol.roundflow import validator_state

    w = capped_world
    roundflow.start(w.ctx(w.owner), w.task)
    start = w.ctx().fetch(roundflow.start_model(w.ctx(), w.task, 1), tmp_path / "start.safetensors")
    honest = [
        roundflow.train_and_submit(w.ctx(w.parts[i]), w.task, w.stores[i], epochs=2, lr=0.5)
        for i in range(3)
    ]
    assert all(h["samples"] < CAP for h in honest)
    # attacker 3: a negated copy of participant 0's update claiming 2**31 samples (issue 10 item 2)
    w0 = models.read_model(w.ctx().fetch(honest[0]["cid"], tmp_path / "h0.safetensors")).weights
    negated = _write(
        tmp_path / "neg.safetensors",
        {k: -v for k, v in w0.items()},
        samples=2**31,
        arch="logreg:64-10",
    )
    # attacker 4: a NaN; attacker 5: the starting model itself (issue 10 item 1)
    w0["layers.0.bias"][3] = np.nan
    poisoned = _write(tmp_path / "nan.safetensors", w0, samples=50, arch="logreg:64-10")
    bad = {
        3: _submit_file(w, w.parts[3], negated),
        4: _submit_file(w, w.parts[4], poisoned),
        5: _submit_file(w, w.parts[5], start),
    }
    assert w.phase() == "aggregation-commit"

    w.aggregate_all()
    assert w.phase() == "global-model"  # the subgroup was not sunk
    committed = {w.ctx(v).load_record(w.task, 1, "aggregate")["cid"] for v in w.assigned()}
    (accepted,) = (to_text(c) for c in w.din.accepted_aggregates(w.task, 1).values())
    assert committed == {accepted}  # every honest validator reached the same CID
    assert w.din.slashable_aggregators(w.task, 1) == []
    got = models.read_model(w.ctx().fetch(accepted, tmp_path / "accepted.safetensors"))
    order = [u.cid for u in w.din.updates_submitted(w.task, 1)]
    pos = {to_text(c): k for k, c in enumerate(order)}
    assert json.loads(got.header.metadata["din.excluded"]) == sorted(
        [
            {"cid": bad[4], "index": pos[bad[4]], "reason": "non-finite"},
            {"cid": bad[5], "index": pos[bad[5]], "reason": "unchanged"},
        ],
        key=lambda e: e["index"],
    )
    # FedAvg over the honest updates plus the 2**31 claim counted at the cap, no more
    files = [
        w.ctx().fetch(h["cid"], tmp_path / f"u{i}.safetensors") for i, h in enumerate(honest)
    ] + [negated]
    weights = [h["samples"] for h in honest] + [CAP]
    order_files = sorted(
        zip(files, weights, [h["cid"] for h in honest] + [bad[3]], strict=True),
        key=lambda t: pos[t[2]],
    )
    want = _fedavg_of(
        [f for f, _, _ in order_files], tmp_path, "want", weights=[n for _, n, _ in order_files]
    )
    for k in want:
        np.testing.assert_array_equal(got.weights[k], want[k])
    assert got.header.samples == sum(weights)

    checks = verify.verify(w.ctx(), w.task)  # recomputes with the same rule
    sub = [c for c in checks if c["what"] == "subgroup"][0]
    assert sorted((e["cid"], e["reason"]) for e in sub["excluded"]) == sorted(
        [(bad[4], "non-finite"), (bad[5], "unchanged")]
    )

    w.finalize_and_attest()
    w.evaluate_all()
    revealed = w.din.scores_revealed(w.task)
    assert len(revealed) == 3 and len({tuple(s) for s in revealed.values()}) == 1
    rec = w.ctx(w.assigned(0)[0]).load_record(w.task, 0, "scores")  # the vector in subgroup order
    assert rec["scores"] == next(iter(revealed.values()))
    scores = dict(zip(rec["participants"], rec["scores"], strict=True))
    assert (
        scores[w.parts[4].address] == 0 and scores[w.parts[5].address] == 0
    )  # excluded: nothing earned
    # contribution scoring: each honest update adds to the round's model; the admitted negated
    # update (capped at CAP samples) pulls it back, so its contribution is negative: 0
    assert all(scores[w.parts[i].address] > 1000 for i in range(3))
    assert scores[w.parts[3].address] == 0
    assert not any(validator_state(w.ctx(), w.task, v.address)["removed"] for v in w.vals)


def test_verify_names_an_excluded_update_that_a_recorded_aggregate_used(capped_world, tmp_path):
    from din_cli.errors import VerificationError
    from din_cli.ml.aggregate import aggregate
    from din_cli.protocol import roundflow, verify

    w = capped_world
    roundflow.start(w.ctx(w.owner), w.task)
    start = w.ctx().fetch(roundflow.start_model(w.ctx(), w.task, 1), tmp_path / "start.safetensors")
    w.train_all(skip=(3, 4, 5), epochs=1)
    lazy = _write(
        tmp_path / "lazy.safetensors",
        models.read_model(start).weights,
        samples=CAP,
        arch="logreg:64-10",
    )
    lazy_cid = _submit_file(w, w.parts[3], lazy)  # the starting model relabelled: a free-rider
    w.advance()
    ups = w.din.updates_submitted(w.task, 1)
    files = [w.ctx().fetch(u.cid, tmp_path / f"in{k}.safetensors") for k, u in enumerate(ups)]
    aggregate(files, tmp_path / "naive.safetensors")  # plain FedAvg: the free-rider counts
    naive = w.ctx().add(tmp_path / "naive.safetensors")
    w.aggregate_all(cids={v.name: naive for v in w.vals})  # a colluding majority accepts it
    with pytest.raises(
        VerificationError,
        match=f"includes update #3 {lazy_cid} that the admission rule excludes \\(unchanged\\)",
    ):
        verify.verify(w.ctx(), w.task)
