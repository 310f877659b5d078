"""Bit-exact, streaming FedAvg (din_cli.ml.aggregate)."""

from __future__ import annotations

import hashlib
import itertools
import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from din_cli.errors import InputError
from din_cli.ml import aggregate as agg
from din_cli.ml import models, tensorfile, zoo

ARCH = "mlp:20-300-7"  # 8407 weights: several tensors, one partial block


def _update(
    path, seed, samples, *, scale=0.3, arch=ARCH, round=1, task="t", kind="update", tweak=None
):
    rng = np.random.default_rng(seed)
    w = {
        k: (rng.standard_normal(s) * scale).astype(np.float32)
        for k, s in zoo.param_shapes(arch).items()
    }
    if tweak:
        tweak(w)
    tensorfile.write(
        path,
        w,
        tensorfile.make_metadata(arch=arch, kind=kind, samples=samples, round=round, task=task),
    )
    return path


@pytest.fixture
def updates(tmp_path):
    return [
        _update(tmp_path / f"u{i}.safetensors", i, samples)
        for i, samples in enumerate([120, 7, 3001, 55, 1])
    ]


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_bytes_whatever_the_input_order(tmp_path, updates):
    digests = set()
    for k, perm in enumerate(itertools.islice(itertools.permutations(updates), 0, 120, 17)):
        out = tmp_path / f"a{k}.safetensors"
        agg.aggregate(list(perm), out)
        digests.add(_digest(out))
    assert len(digests) == 1


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 6, 7])  # every remainder of the 4-input pass
def test_numba_and_numpy_kernels_give_the_same_bytes(tmp_path, updates, monkeypatch, count):
    more = updates + [
        _update(tmp_path / "u5.safetensors", 5, 9),
        _update(tmp_path / "u6.safetensors", 6, 40),
    ]
    chosen = more[:count]
    monkeypatch.setattr(agg, "NUMBA_MIN_BYTES", 0)  # numba for these small inputs too
    assert agg._kernels(1).name == "numba"
    agg.aggregate(chosen, tmp_path / "fast.safetensors")
    monkeypatch.setattr(agg, "_KERNELS", agg.NUMPY_KERNELS)
    agg.aggregate(chosen[::-1], tmp_path / "slow.safetensors")
    assert _digest(tmp_path / "fast.safetensors") == _digest(tmp_path / "slow.safetensors")


def test_thread_count_and_block_size_do_not_change_the_bytes(tmp_path, updates, monkeypatch):
    agg.aggregate(updates, tmp_path / "a.safetensors", threads=1)
    monkeypatch.setattr(agg, "BLOCK", 1000)
    for threads in (1, 2, 3, 8):
        agg.aggregate(updates[::-1], tmp_path / f"t{threads}.safetensors", threads=threads)
        assert _digest(tmp_path / "a.safetensors") == _digest(tmp_path / f"t{threads}.safetensors")


def test_within_the_documented_bound_of_a_float64_reference(tmp_path, updates):
    out = agg.aggregate(updates, tmp_path / "a.safetensors")
    assert out.samples == 120 + 7 + 3001 + 55 + 1
    mf = models.read_model(tmp_path / "a.safetensors")
    assert mf.header.kind == "aggregate" and mf.header.samples == out.samples
    assert mf.header.metadata["din.encoding"] == agg.ENCODING
    ref = agg.reference_mean(updates)
    for k, v in ref.items():
        err = np.abs(mf.weights[k].astype(np.float64) - v)
        assert (err <= agg.ERROR_BOUND_ABS + agg.ERROR_BOUND_REL * np.abs(v) + 1e-12).all(), k
    # and it is not merely close to one input: the weighting matters
    heavy = models.read_model(updates[2]).weights
    assert any(not np.array_equal(mf.weights[k], heavy[k]) for k in ref)


def test_aggregate_of_subgroup_aggregates_matches_the_flat_one(tmp_path, updates):
    flat = tmp_path / "flat.safetensors"
    agg.aggregate(updates, flat)
    agg.aggregate(updates[:2], tmp_path / "g1.safetensors")
    agg.aggregate(updates[2:], tmp_path / "g2.safetensors")
    agg.aggregate(
        [tmp_path / "g1.safetensors", tmp_path / "g2.safetensors"], tmp_path / "global.safetensors"
    )
    g = models.read_model(tmp_path / "global.safetensors")
    f = models.read_model(flat)
    assert g.header.samples == f.header.samples
    ref = agg.reference_mean(updates)
    for k, v in ref.items():
        err = np.abs(g.weights[k].astype(np.float64) - v)
        assert (
            err <= 2 * agg.ERROR_BOUND_ABS + 2 * agg.ERROR_BOUND_REL * np.abs(v) + 1e-12
        ).all(), k
        assert (
            np.abs(g.weights[k] - f.weights[k]).max()
            <= 2 * agg.ERROR_BOUND_ABS + 2 * agg.ERROR_BOUND_REL
        )


def test_huge_sample_counts_use_the_int64_path_exactly(tmp_path):
    # Scaling every sample count by c leaves FedAvg unchanged; with small
    # weights the integer sums stay below 2^53, so the bytes must match.
    small = [_update(tmp_path / f"s{i}", i, n, scale=1e-4) for i, n in enumerate([3, 5, 2])]
    c = 3_000_000  # 5 * c > 2^23: an input split in several passes, several groups
    big = [_update(tmp_path / f"b{i}", i, n * c, scale=1e-4) for i, n in enumerate([3, 5, 2])]
    assert len(agg._passes([agg._Input("", n * c, None) for n in [3, 5, 2]])) > 1
    agg.aggregate(small, tmp_path / "small")
    agg.aggregate(big, tmp_path / "big")
    a = models.read_model(tmp_path / "small")
    b = models.read_model(tmp_path / "big")
    assert b.header.samples == 10 * c
    for k in a.weights:
        np.testing.assert_array_equal(a.weights[k], b.weights[k])


def test_clipping_bounds_a_malicious_update(tmp_path):
    honest = _update(tmp_path / "h", 1, 10)
    evil = _update(tmp_path / "e", 2, 10, tweak=lambda w: w["layers.0.bias"].fill(3e38))
    agg.aggregate([honest, evil], tmp_path / "a")
    w = models.read_model(tmp_path / "a").weights["layers.0.bias"]
    h = models.read_model(honest).weights["layers.0.bias"]
    assert np.allclose(w, (h + agg.CLIP) / 2, atol=1e-5)


def _non_canonical_copy(src, dst):
    """The same tensors written in reverse order (a valid safetensors file din would not write)."""
    h = tensorfile.read_header(src)
    arrays = tensorfile.load_arrays(h)
    names = sorted(arrays, reverse=True)
    doc, off, body = {"__metadata__": h.metadata}, 0, b""
    for n in names:
        raw = arrays[n].astype("<f4").tobytes()
        doc[n] = {
            "dtype": "F32",
            "shape": list(arrays[n].shape),
            "data_offsets": [off, off + len(raw)],
        }
        off += len(raw)
        body += raw
    text = json.dumps(doc).encode() + b"  "  # odd length: misaligned data section
    dst.write_bytes(struct.pack("<Q", len(text)) + text + body)
    return dst


def test_non_canonical_inputs_give_the_same_result(tmp_path, updates):
    agg.aggregate(updates, tmp_path / "a")
    odd = [_non_canonical_copy(updates[0], tmp_path / "odd")] + updates[1:]
    agg.aggregate(odd, tmp_path / "b")
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_is_refused_and_nothing_written(tmp_path, updates, bad):
    def poison(w):
        w["layers.2.weight"][3, 100] = bad

    sick = _update(tmp_path / "sick.safetensors", 99, 10, tweak=poison)
    out = tmp_path / "out.safetensors"
    with pytest.raises(InputError) as e:
        agg.aggregate(updates + [sick], out)
    assert "sick.safetensors" in str(e.value) and "layers.2.weight" in str(e.value)
    assert ("NaN" if np.isnan(bad) else "Inf") in str(e.value)
    assert not out.exists() and list(tmp_path.glob(".out*")) == []


def test_mismatched_architecture_and_zero_samples_are_refused(tmp_path, updates):
    other = _update(tmp_path / "other.safetensors", 1, 10, arch="mlp:20-30-7")
    with pytest.raises(InputError, match="architecture 'mlp:20-30-7' differs"):
        agg.aggregate(updates + [other], tmp_path / "out")
    genesis = tmp_path / "g.safetensors"
    models.init_model(ARCH, genesis)
    with pytest.raises(InputError, match="din.samples is 0"):
        agg.aggregate([genesis], tmp_path / "out")
    assert not (tmp_path / "out").exists()


@settings(max_examples=15, deadline=None)
@given(
    st.lists(st.integers(1, 10**6), min_size=1, max_size=6),
    st.randoms(use_true_random=False),
)
def test_any_permutation_any_samples_same_bytes(tmp_path_factory, samples, rnd):
    d = tmp_path_factory.mktemp("perm")
    files = [
        _update(d / f"u{i}", 1000 + i, n, arch="logreg:5-3", scale=rnd.choice([1e-3, 1.0, 50.0]))
        for i, n in enumerate(samples)
    ]
    agg.aggregate(files, d / "a")
    shuffled = files[:]
    rnd.shuffle(shuffled)
    agg.aggregate(shuffled, d / "b")
    assert (d / "a").read_bytes() == (d / "b").read_bytes()
