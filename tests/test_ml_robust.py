"""Robust aggregation rules (din_cli.ml.robust): bit-exact on the grid, and what they buy against a poisoner."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from din_cli.errors import InputError, UsageError
from din_cli.ml import aggregate as agg
from din_cli.ml import data, evaluate, models, robust, tensorfile, train, zoo

ARCH = "logreg:64-10"
BIG = "mlp:20-300-7"  # 8407 weights: two robust blocks, several tensors
S = float(2**agg.SCALE_BITS)


def _write(path, weights, samples, arch=ARCH, kind="update"):
    meta = tensorfile.make_metadata(arch=arch, kind=kind, samples=samples, round=1, task="t")
    tensorfile.write(path, weights, meta)
    return Path(path)


def _random(path, seed, samples, arch=BIG, scale=0.3):
    rng = np.random.default_rng(seed)
    w = {
        k: (rng.standard_normal(s) * scale).astype(np.float32)
        for k, s in zoo.param_shapes(arch).items()
    }
    return _write(path, w, samples, arch)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A digits round: a starting model, five honest logreg updates, a negated and scaled poisoner."""
    tmp: Path = tmp_path_factory.mktemp("robust")
    ds = data.load_dataset("digits")
    order = np.random.default_rng(5).permutation(len(ds))
    x, y = ds.x[order], ds.y[order]
    genesis = tmp / "genesis.safetensors"
    models.init_model(ARCH, genesis, seed=0)
    store = tmp / "start.npz"
    data.save_store(store, x[300:400], y[300:400])
    start = tmp / "start.safetensors"
    train.train(genesis, store, start, epochs=2, lr=0.2, batch_size=16, seed=0, device="cpu")
    honest = []
    for k in range(5):
        rows = slice(400 + 200 * k, 600 + 200 * k)
        store = tmp / f"h{k}.npz"
        data.save_store(store, x[rows], y[rows])
        out = tmp / f"honest-{k}.safetensors"
        train.train(start, store, out, epochs=3, lr=0.2, batch_size=16, seed=k, device="cpu")
        honest.append(out)
    base = models.read_model(start).weights
    ref = models.read_model(honest[0]).weights

    def poisoner(name, factor, samples=200):
        w = {k: (base[k] + factor * (ref[k] - base[k])).astype(np.float32) for k in base}
        return _write(tmp / name, w, samples)

    return {
        "tmp": tmp,
        "start": start,
        "honest": honest,
        "negated": poisoner("negated.safetensors", -20.0),
        "scaled": poisoner("scaled.safetensors", 1000.0),
        "scaled10": poisoner("scaled10.safetensors", 10.0),
        "test": data.Dataset(x[:300], y[:300], "test"),
    }


# --- a straightforward reference on the int grid ---


def _grid(path):
    mf = models.read_model(path)
    names = sorted(mf.weights)
    flat = np.concatenate([mf.weights[n].reshape(-1) for n in names]).astype(np.float64)
    return np.rint(np.clip(flat * S, -(2.0**30), 2.0**30)).astype(np.int64), mf.header.samples


def _flat(path):
    mf = models.read_model(path)
    return np.concatenate([mf.weights[n].reshape(-1) for n in sorted(mf.weights)])


def _reference(rule, paths, *, trim=0.0, base=None, clip_norm=None):
    qs, ns = zip(*(_grid(p) for p in paths), strict=True)
    q = np.stack(qs)
    n = len(paths)
    if rule == "median":
        s = np.sort(q, axis=0)
        if n % 2:
            return (s[n // 2] / S).astype(np.float32)
        return ((s[n // 2 - 1] + s[n // 2]) / (2 * S)).astype(np.float32)
    if rule == "trimmed-mean":
        k = math.floor(round(trim * 1000) * n / 1000)
        s = np.sort(q, axis=0)[k : n - k]
        return (s.sum(axis=0) / ((n - 2 * k) * S)).astype(np.float32)
    qb, _ = _grid(base)
    bq = round(clip_norm * S)
    total = np.zeros(q.shape[1], dtype=object)
    for row, w in zip(q, ns, strict=True):
        d = [int(v) for v in row - qb]
        sq = sum(v * v for v in d)
        if sq > bq * bq:
            r = math.isqrt(sq)
            r += r * r != sq
            d = [(abs(v) * bq // r) * (1 if v >= 0 else -1) for v in d]
        total += (np.array(d, dtype=object) + qb.astype(object)) * w
    return (total.astype(np.float64) / (sum(ns) * S)).astype(np.float32)


def _digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "rule,kw",
    [
        ("median", {}),
        ("trimmed-mean", {"trim": 0.2}),
        ("trimmed-mean", {"trim": 0.0}),
        ("norm-bounded", {"clip_norm": 1.5}),
    ],
)
def test_every_rule_equals_a_numpy_reference_on_the_grid(world, tmp_path, rule, kw):
    paths = [*world["honest"], world["negated"], world["scaled"]]
    for count in (len(paths), len(paths) - 1):  # odd and even n
        if rule == "norm-bounded":
            kw = {**kw, "base": world["start"]}
        out = tmp_path / f"{rule}-{count}.safetensors"
        robust.aggregate(paths[:count], out, rule=rule, **kw)
        want = _reference(rule, paths[:count], **kw)
        assert _flat(out).tobytes() == want.tobytes()
        h = tensorfile.read_header(out)
        assert tensorfile.is_canonical(h)
        assert json.loads(h.metadata["din.rule"])["rule"] == rule
        assert h.samples == sum(tensorfile.read_header(p).samples for p in paths[:count])


@pytest.mark.parametrize("rule", ["median", "trimmed-mean", "norm-bounded"])
def test_thread_count_and_input_layout_do_not_change_the_bytes(tmp_path, rule):
    paths = [
        _random(tmp_path / f"u{i}.safetensors", i, 10 + i, scale=0.1 + 0.05 * i) for i in range(6)
    ]
    base = _random(tmp_path / "base.safetensors", 99, 1)
    kw = {"trim": 0.2} if rule == "trimmed-mean" else {}
    if rule == "norm-bounded":
        kw = {"base": base, "clip_norm": 35.0}  # clips some (norms ~ 29-42), not all
    digests = set()
    for threads in (1, 2, 5):
        out = tmp_path / f"{rule}-{threads}.safetensors"
        robust.aggregate(paths, out, rule=rule, threads=threads, **kw)
        digests.add(_digest(out))
    assert len(digests) == 1
    assert _flat(out).tobytes() == _reference(rule, paths, **kw).tobytes()
    if rule == "norm-bounded":
        clipped = json.loads(tensorfile.read_header(out).metadata["din.rule"])["clipped"]
        assert 0 < len(clipped) < len(paths)
    if rule != "norm-bounded":  # order-free too (norm-bounded is a weighted mean: also order-free)
        robust.aggregate(paths[::-1], tmp_path / "rev.safetensors", rule=rule, **kw)
        assert _digest(tmp_path / "rev.safetensors") == _digest(out)


def test_norm_bounded_without_clipping_is_the_mean_bit_for_bit(world, tmp_path):
    paths = world["honest"]
    agg.aggregate(paths, tmp_path / "mean.safetensors")
    robust.aggregate(
        paths, tmp_path / "nb.safetensors", rule="norm-bounded", base=world["start"], clip_norm=2000
    )
    assert (
        _flat(tmp_path / "nb.safetensors").tobytes()
        == _flat(tmp_path / "mean.safetensors").tobytes()
    )


def _accuracy(world, path):
    mf = models.read_model(path)
    return evaluate.score(
        "accuracy", evaluate.logits(mf, world["test"].x), world["test"].y
    ).score_bps


def test_a_poisoner_moves_median_and_trimmed_mean_far_less_than_the_mean(world, tmp_path):
    tmp = tmp_path
    honest = world["honest"]
    agg.aggregate(honest, tmp / "clean.safetensors")
    clean = _flat(tmp / "clean.safetensors")
    moved, acc = {}, {}
    for rule, kw in [("mean", {}), ("median", {}), ("trimmed-mean", {"trim": 0.2})]:
        out = tmp / f"{rule}.safetensors"
        robust.aggregate([*honest, world["negated"]], out, rule=rule, **kw)
        moved[rule] = float(np.linalg.norm(_flat(out) - clean))
        acc[rule] = _accuracy(world, out)
    clean_acc = _accuracy(world, tmp / "clean.safetensors")
    assert moved["median"] < moved["mean"] / 10, moved
    assert moved["trimmed-mean"] < moved["mean"] / 10, moved
    assert acc["mean"] < clean_acc - 1000, (acc, clean_acc)  # the poison works on the mean...
    assert acc["median"] >= clean_acc - 300, (acc, clean_acc)  # ...and not on the robust rules
    assert acc["trimmed-mean"] >= clean_acc - 300, (acc, clean_acc)


def test_norm_bounded_caps_a_scaled_update_at_a_norm_b_update(world, tmp_path):
    tmp, start, honest = tmp_path, world["start"], world["honest"]
    b = 0.5
    kw = {"rule": "norm-bounded", "base": start, "clip_norm": b}
    res = robust.aggregate([*honest, world["scaled"]], tmp / "x1000.safetensors", **kw)
    robust.aggregate([*honest, world["scaled10"]], tmp / "x10.safetensors", **kw)
    robust.aggregate(honest, tmp / "clean.safetensors", **kw)
    assert 5 in [i for i, _ in res.clipped]
    x1000, x10 = _flat(tmp / "x1000.safetensors"), _flat(tmp / "x10.safetensors")
    # both poisoners are clipped to one direction and length B: the same pull, to a grid step or two
    assert np.abs(x1000 - x10).max() <= 4 / S
    # its pull on the aggregate is at most its weight share times B
    clean = _flat(tmp / "clean.safetensors")
    mean_clean = clean * 1000 / 1200  # the clean aggregate diluted by the poisoner's 200 samples...
    shift = (
        x1000 - mean_clean - _flat(start) * 200 / 1200
    )  # ...standing at the start, plus its delta
    assert np.linalg.norm(shift) <= b * 200 / 1200 + 1e-3
    agg.aggregate([*honest, world["scaled"]], tmp / "mean.safetensors")
    assert np.linalg.norm(_flat(tmp / "mean.safetensors") - clean) > 100 * np.linalg.norm(
        x1000 - clean
    )


# --- bad input ---


@pytest.mark.parametrize(
    "rule,kw,fragment",
    [
        ("mode", {}, "not one of"),
        ("median", {"trim": 0.1}, "--trim applies"),
        ("mean", {"clip_norm": 1.0}, "--clip-norm applies"),
        ("trimmed-mean", {}, "needs a fraction"),
        ("trimmed-mean", {"trim": 0.5}, "outside [0, 0.5)"),
        ("trimmed-mean", {"trim": "nan"}, "not finite"),
        ("norm-bounded", {}, "needs a bound"),
        ("norm-bounded", {"clip_norm": 0}, "outside (0, 2048]"),
        ("norm-bounded", {"clip_norm": 1e6}, "outside (0, 2048]"),
        ("norm-bounded", {"clip_norm": "x"}, "not a number"),
    ],
)
def test_bad_rule_parameters_are_usage_errors(rule, kw, fragment):
    with pytest.raises(UsageError) as e:
        robust.make_rule(rule, **kw)
    assert fragment in e.value.one_line()


def test_bad_inputs_are_refused_and_nothing_written(world, tmp_path):
    honest = world["honest"]
    out = tmp_path / "out.safetensors"
    with pytest.raises(UsageError, match="starting model"):
        robust.aggregate(honest, out, rule="norm-bounded", clip_norm=1.0)
    nan = {k: v.copy() for k, v in models.read_model(honest[1]).weights.items()}
    next(iter(nan.values())).reshape(-1)[7] = np.nan
    bad = _write(tmp_path / "nan.safetensors", nan, 5)
    with pytest.raises(InputError, match="nan.safetensors.*NaN"):
        robust.aggregate([honest[0], bad, honest[2]], out, rule="median")
    other = _random(tmp_path / "other.safetensors", 1, 5)
    with pytest.raises(InputError, match="not a logreg:64-10 model"):
        robust.aggregate(honest, out, rule="norm-bounded", base=other, clip_norm=1.0)
    assert not out.exists()


def test_cli_rules_and_their_bad_combinations(world, din, tmp_path):
    honest = [str(p) for p in world["honest"]]
    start = str(world["start"])
    plain, ruled = tmp_path / "plain.safetensors", tmp_path / "ruled.safetensors"
    r = din("aggregate", *honest, "-o", plain)
    assert r.exit_code == 0, r.output
    r = din("aggregate", "--rule", "mean", *honest, "-o", ruled)
    assert r.exit_code == 0, r.output
    assert ruled.read_bytes() == plain.read_bytes()  # the default is today's bytes
    med = tmp_path / "median.safetensors"
    r = din("aggregate", "--rule", "median", *honest, world["negated"], "-o", med)
    assert r.exit_code == 0, r.output
    assert json.loads(tensorfile.read_header(med).metadata["din.rule"]) == {"rule": "median"}
    # a robust aggregate is a valid input again: the admission rule takes it
    again = tmp_path / "again.safetensors"
    r = din("aggregate", med, plain, "-o", again)
    assert r.exit_code == 0 and "excluded" not in r.output, r.output
    nb = tmp_path / "nb.safetensors"
    r = din(
        "aggregate", "--rule", "norm-bounded", "--clip-norm", "0.5", "--base", start,
        *honest, world["scaled"], "-o", nb,
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "clipped input 6" in r.stderr
    assert 5 in json.loads(tensorfile.read_header(nb).metadata["din.rule"])["clipped"]
    bad = tmp_path / "bad.safetensors"
    for args in (
        ["--rule", "norm-bounded", "--clip-norm", "1"],
        ["--rule", "median", "--trim", "0.1"],
        ["--rule", "trimmed-mean", "--trim", "0.7"],
        ["--clip-norm", "1"],
        ["--rule", "median", "--task", "1", "--commit"],
    ):
        extra = [] if "--task" in args else [*honest, "-o", bad]
        r = din("aggregate", *args, *extra)
        assert r.exit_code == 2, (args, r.output)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not bad.exists()
