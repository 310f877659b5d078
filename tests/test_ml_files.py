"""Canonical safetensors files, the model zoo and checked loading (din_cli.ml.tensorfile/zoo/models)."""

from __future__ import annotations

import json
import struct
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from din_cli.errors import InputError, UsageError
from din_cli.ml import models, tensorfile, zoo

META = tensorfile.make_metadata(arch="mlp:4-3-2", kind="update", samples=7, round=2, task="t1")


def _weights(seed=0, arch="mlp:4-3-2"):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in zoo.param_shapes(arch).items()}


def test_same_content_same_bytes_whatever_the_insertion_order(tmp_path):
    w = _weights()
    a = tensorfile.dumps(w, META)
    b = tensorfile.dumps(dict(reversed(list(w.items()))), dict(reversed(list(META.items()))))
    assert a == b
    tensorfile.write(tmp_path / "m.safetensors", w, META)
    assert (tmp_path / "m.safetensors").read_bytes() == a


def test_layout_is_the_documented_one():
    blob = tensorfile.dumps(_weights(), META)
    (n,) = struct.unpack("<Q", blob[:8])
    assert n % 8 == 0 and (8 + n) % 8 == 0
    text = blob[8 : 8 + n].decode("ascii").rstrip(" ")
    doc = json.loads(text)
    assert text == json.dumps(doc, sort_keys=True, separators=(",", ":"))
    names = [k for k in doc if k != "__metadata__"]
    starts = [doc[k]["data_offsets"][0] for k in names]
    assert names == sorted(names) and starts == sorted(starts) and starts[0] == 0
    assert sorted(doc["__metadata__"]) == list(tensorfile.META_KEYS)


def test_files_load_in_the_reference_safetensors_library(tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import load_file

    w = _weights()
    path = tmp_path / "m.safetensors"
    tensorfile.write(path, w, META)
    loaded = load_file(str(path))
    assert sorted(loaded) == sorted(w)
    for k in w:
        np.testing.assert_array_equal(loaded[k], w[k])
    with safe_open(str(path), "np") as f:
        assert f.metadata() == META


@settings(max_examples=40, deadline=None)
@given(
    st.dictionaries(
        st.text(alphabet="abcdefghij._0123456789", min_size=1, max_size=12),
        arrays(
            np.float32,
            st.tuples(st.integers(0, 4), st.integers(1, 5)),
            elements=st.floats(-1e6, 1e6, width=32),
        ),
        min_size=1,
        max_size=5,
    ),
    st.integers(0, 10**9),
)
def test_round_trip_and_determinism(tmp_path_factory, tensors, samples):
    meta = tensorfile.make_metadata(arch="x:1", kind="update", samples=samples)
    path = tmp_path_factory.mktemp("rt") / "f.safetensors"
    tensorfile.write(path, tensors, meta)
    assert path.read_bytes() == tensorfile.dumps(tensors, meta)
    header = tensorfile.read_header(path)
    assert header.metadata == meta and header.samples == samples
    back = tensorfile.load_arrays(header)
    assert sorted(back) == sorted(tensors)
    for k, v in tensors.items():
        np.testing.assert_array_equal(back[k], v)


@pytest.mark.parametrize(
    "arch", ["logreg:64-10", "mlp:64-128-10", "mlp:30-16-8-2", "cnn:1x8x8-10", "cnn:3x16x12-5"]
)
def test_torch_free_shapes_match_the_torch_modules(arch):
    model = zoo.build_model(arch)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == zoo.param_shapes(arch)
    import torch

    x = torch.zeros(2, zoo.input_features(arch))
    assert model(x).shape[0] == 2


@pytest.mark.parametrize(
    "arch",
    ["mlp", "mlp:64", "mlp:64-x-10", "mlp:64-0-10", "nope:1-2", "cnn:8x8-10", "logreg:1-2-3"],
)
def test_bad_architecture_strings_are_usage_errors(arch):
    with pytest.raises(UsageError):
        zoo.param_shapes(arch)


def test_genesis_is_deterministic_per_seed(tmp_path):
    models.init_model("mlp:64-32-10", tmp_path / "a", seed=3)
    models.init_model("mlp:64-32-10", tmp_path / "b", seed=3)
    models.init_model("mlp:64-32-10", tmp_path / "c", seed=4)
    assert (
        (tmp_path / "a").read_bytes()
        == (tmp_path / "b").read_bytes()
        != (tmp_path / "c").read_bytes()
    )
    info = models.describe(tmp_path / "a")
    assert (
        info["arch"] == "mlp:64-32-10"
        and info["kind"] == "model"
        and info["params"] == 64 * 32 + 32 + 32 * 10 + 10
    )


def _write(path, tensors, meta=META):
    tensorfile.write(path, tensors, meta)
    return path


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda w: w.pop("layers.2.bias"), "tensor 'layers.2.bias' is missing"),
        (lambda w: w.update(extra=np.zeros(1, np.float32)), "unexpected tensor 'extra'"),
        (lambda w: w.update({"layers.0.weight": np.zeros((3, 5), np.float32)}), "has shape [3, 5]"),
        (lambda w: w.update({"layers.0.bias": np.zeros(3, np.float64)}), "is F64, expected F32"),
        (lambda w: w["layers.0.weight"].__setitem__((1, 1), np.nan), "contains NaN"),
        (lambda w: w["layers.2.weight"].__setitem__((0, 0), -np.inf), "contains Inf"),
    ],
)
def test_loading_names_the_first_mismatch(tmp_path, mutate, message):
    w = _weights()
    mutate(w)
    path = _write(tmp_path / "bad.safetensors", w)
    with pytest.raises(InputError) as e:
        models.read_model(path)
    assert message in str(e.value) and "\n" not in e.value.one_line()


def test_wrong_architecture_and_not_safetensors(tmp_path):
    path = _write(tmp_path / "m.safetensors", _weights())
    with pytest.raises(InputError, match="does not match"):
        models.read_model(path, arch="mlp:4-5-2")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"this is not a model file at all, just text\n")
    with pytest.raises(InputError, match="not a safetensors file"):
        models.read_model(junk)
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(InputError, match="truncated"):
        models.read_model(truncated)


def test_plugin_architecture_from_entry_point(tmp_path, monkeypatch):
    pkg = tmp_path / "site"
    (pkg / "dinplug").mkdir(parents=True)
    (pkg / "dinplug" / "__init__.py").write_text(
        "import torch\n"
        "def tiny(spec):\n"
        "    a, b = (int(x) for x in spec.split('-'))\n"
        "    return torch.nn.Sequential(torch.nn.Linear(a, b), torch.nn.Tanh(), torch.nn.Linear(b, b))\n"
    )
    dist = pkg / "dinplug-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: dinplug\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[din.models]\ntiny = dinplug:tiny\n")
    monkeypatch.syspath_prepend(str(pkg))
    zoo._plugins.cache_clear()
    zoo.param_shapes.cache_clear()
    try:
        assert zoo.param_shapes("tiny:4-3") == {
            "0.weight": (3, 4),
            "0.bias": (3,),
            "2.weight": (3, 3),
            "2.bias": (3,),
        }
        models.init_model("tiny:4-3", tmp_path / "p.safetensors", seed=1)
        assert models.read_model(tmp_path / "p.safetensors").arch == "tiny:4-3"
    finally:
        zoo._plugins.cache_clear()
        zoo.param_shapes.cache_clear()
        sys.modules.pop("dinplug", None)
