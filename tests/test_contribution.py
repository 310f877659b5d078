"""Contribution scores (din_cli.protocol.contribution) on real, tiny updates of the digits set."""

from __future__ import annotations

import hashlib
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from din_cli.errors import InputError, UsageError
from din_cli.ml import aggregate as agg
from din_cli.ml import data, evaluate, models, tensorfile, train
from din_cli.protocol import contribution as C

ARCH = "mlp:64-16-10"
SEED = bytes(range(32))
HONEST = (0, 1)  # honest-300, honest-150
TEN, FREE, SHUFFLED, NEGATED, COPY = 2, 3, 4, 5, 6


def _write(path, weights, samples):
    meta = tensorfile.make_metadata(arch=ARCH, kind="update", samples=samples, round=1, task="t")
    tensorfile.write(path, weights, meta)
    return path


def _train(start, x, y, out, seed, epochs):
    store = out.with_suffix(".npz")
    data.save_store(store, x, y)
    train.train(start, store, out, epochs=epochs, lr=0.2, batch_size=16, seed=seed, device="cpu")
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A round in progress: starting model, 200 test rows, and seven updates of known quality."""
    tmp: Path = tmp_path_factory.mktemp("contribution")
    ds = data.load_dataset("digits")
    order = np.random.default_rng(3).permutation(len(ds))
    x, y = ds.x[order], ds.y[order]
    test = data.Dataset(x[:200], y[:200], "test")
    genesis = tmp / "genesis.safetensors"
    models.init_model(ARCH, genesis, seed=0)
    start = _train(genesis, x[200:280], y[200:280], tmp / "start.safetensors", 0, epochs=2)
    base = models.read_model(start).weights
    paths = [
        _train(start, x[300:600], y[300:600], tmp / "honest-300.safetensors", 1, 5),
        _train(start, x[600:750], y[600:750], tmp / "honest-150.safetensors", 2, 5),
        _train(start, x[750:760], y[750:760], tmp / "ten-rows.safetensors", 3, 1),
        _write(tmp / "free-rider.safetensors", base, 150),
    ]
    wrong = (y[800:1000] + np.random.default_rng(4).integers(1, 10, 200)) % 10
    paths.append(_train(start, x[800:1000], wrong, tmp / "shuffled.safetensors", 4, 5))
    ref = models.read_model(paths[1]).weights
    poison = {k: (base[k] - 2.0 * (ref[k] - base[k])).astype(np.float32) for k in base}
    paths.append(_write(tmp / "negated.safetensors", poison, 150))
    copy = tmp / "copy.safetensors"
    copy.write_bytes(paths[0].read_bytes())
    paths.append(copy)
    return {"start": start, "test": test, "paths": paths, "tmp": tmp}


def _game(world, paths=None, **kw):
    return C.CoalitionGame.load(paths or world["paths"], world["start"], world["test"], **kw)


@pytest.fixture(scope="module")
def exact(world):
    return C.exact_shapley(_game(world))


@pytest.mark.parametrize(
    "weights",
    [[300, 7, 10, 150, 64], [2**24, 3, 2**23 + 1, 150, 64]],  # the second: several exact passes
)
def test_a_coalition_model_is_the_bytes_din_aggregate_writes(world, tmp_path, weights):
    paths = world["paths"][:5]
    game = _game(world, paths, weights=weights)
    for threads in (1, 2):
        out = tmp_path / f"agg{threads}.safetensors"
        agg.aggregate(paths, out, threads=threads, weights=weights)
        written = models.read_model(out).weights
        mine = game.model(game.full_mask)
        assert sorted(written) == sorted(mine)
        for name in written:
            assert written[name].tobytes() == mine[name].tobytes(), name


def test_leave_one_out_matches_aggregating_the_others_and_evaluating_them(world, tmp_path):
    paths = world["paths"][:4]
    res = C.contributions(paths, world["start"], world["test"], method="loo")
    store = tmp_path / "test.npz"
    data.save_store(store, world["test"].x, world["test"].y)
    full = evaluate.evaluate(_aggregate(paths, tmp_path / "all.safetensors"), store).score_bps
    assert res.full == full
    assert res.empty == evaluate.evaluate(world["start"], store).score_bps
    for i in range(len(paths)):
        others = _aggregate(paths[:i] + paths[i + 1 :], tmp_path / f"without{i}.safetensors")
        value = full - evaluate.evaluate(others, store).score_bps
        assert res.values[i] == value
        assert res.scores[i] == max(0, value)


def _aggregate(paths, out):
    agg.aggregate(paths, out)
    return out


def test_scores_do_not_depend_on_thread_counts(world, monkeypatch):
    import torch

    before = torch.get_num_threads()
    vectors = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            monkeypatch.setenv("DIN_THREADS", str(threads))
            res = C.gtg_shapley(_game(world), SEED, max_evaluations=40)
            vectors.append((res.scores, res.values))
    finally:
        torch.set_num_threads(before)
    assert vectors[0] == vectors[1]


def test_exact_shapley_is_efficient_and_symmetric(world, exact):
    # efficiency: the values share out exactly the gain of the whole subgroup
    assert sum(exact.values) == exact.full - exact.empty
    assert exact.full > exact.empty
    # symmetry: an update and its byte copy are worth the same
    assert exact.values[0] == exact.values[COPY]
    assert exact.scores[0] == exact.scores[COPY]


def test_free_rider_and_shuffled_labels_earn_about_nothing(world, exact):
    gain = exact.full - exact.empty
    honest = min(exact.scores[i] for i in HONEST)
    assert honest > 0.1 * gain
    for i in (FREE, SHUFFLED, NEGATED):
        assert exact.scores[i] <= 0.01 * gain, (i, exact.scores)
        assert exact.scores[i] < honest
    assert exact.scores[TEN] < honest


def test_harmful_updates_floor_at_zero(world, exact):
    assert exact.values[NEGATED] < 0
    assert exact.scores[NEGATED] == 0
    assert all(s >= 0 for s in exact.scores)
    # rounding is half up on the exact rational, before the floor
    for v, s in zip(exact.values, exact.scores, strict=True):
        assert s == max(0, int((v + Fraction(1, 2)) // 1))


def test_gtg_is_deterministic_per_seed_and_close_to_exact(world, exact):
    runs = [C.gtg_shapley(_game(world), seed, max_evaluations=60) for seed in (SEED, SEED)]
    assert runs[0] == runs[1]
    assert runs[0].permutations > 0  # an estimate, not the exact fallback
    other = C.gtg_shapley(_game(world), bytes(32), max_evaluations=60)
    assert other.permutations > 0
    for res in (runs[0], other):
        gap = max(abs(a - b) for a, b in zip(res.normalised(), exact.normalised(), strict=True))
        assert gap <= 0.1, (res.scores, exact.scores)
        assert res.evaluations <= 60 + 2 * len(world["paths"])


def test_gtg_computes_exact_values_when_every_coalition_fits_the_budget(world, exact):
    res = C.gtg_shapley(_game(world), SEED, max_evaluations=128)
    assert res.method == "gtg" and res.permutations == 0
    assert res.values == exact.values


def test_gtg_truncates_a_round_that_gained_nothing(world):
    free = world["paths"][FREE]
    res = C.gtg_shapley(_game(world, [free, free]), SEED, max_evaluations=0)
    assert res.full == res.empty
    assert res.scores == [0, 0]
    assert (res.evaluations, res.permutations) == (2, 0)  # the start and the aggregate only


def test_permutations_follow_the_documented_sha256_stream():
    seed = bytes(range(32))
    stream = C.PermutationStream(seed)
    block = hashlib.sha256(b"din/contribution-perm/v1" + seed + (0).to_bytes(8, "big")).digest()
    words = [int.from_bytes(block[o : o + 8], "big") for o in range(0, 32, 8)]
    assert [stream.below(1000) for _ in range(4)] == [w % 1000 for w in words]
    # Fisher-Yates from the last position down, j = below(i + 1)
    stream, check = C.PermutationStream(seed), C.PermutationStream(seed)
    items = list(range(5))
    for i in range(4, 0, -1):
        j = check.below(i + 1)
        items[i], items[j] = items[j], items[i]
    assert stream.shuffle(list(range(5))) == items
    assert C.PermutationStream(int.from_bytes(seed, "big")).below(2**63) == words[0] % 2**63


@pytest.mark.parametrize(
    ("kw", "error", "text"),
    [
        ({"method": "median"}, UsageError, "not one of loo, exact, gtg"),
        ({"method": "gtg"}, UsageError, "needs the round's seed"),
        ({"method": "gtg", "seed": b"short"}, UsageError, "5 bytes, not 32"),
        ({"method": "loo", "weights": [1]}, UsageError, "1 weights for 2 updates"),
        ({"method": "loo", "weights": [1, 0]}, InputError, "FedAvg weight 0"),
        ({"method": "loo", "metric": "auc"}, UsageError, "metric 'auc'"),
    ],
)
def test_bad_input_is_one_clear_error(world, kw, error, text):
    with pytest.raises(error, match=text):
        C.contributions(world["paths"][:2], world["start"], world["test"], **kw)


def test_exact_refuses_subgroups_too_large_and_other_architectures(world, tmp_path):
    many = [world["paths"][0]] * (C.EXACT_MAX + 1)
    with pytest.raises(UsageError, match=r"2\^17 model evaluations"):
        C.contributions(many, world["start"], world["test"], method="exact")
    other = tmp_path / "other.safetensors"
    models.init_model("mlp:64-8-10", other)
    with pytest.raises(InputError, match="does not match"):
        C.contributions([other], world["start"], world["test"], method="loo")
