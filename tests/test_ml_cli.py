"""The offline ML commands end to end: din model init/info, data split, train, aggregate, evaluate."""

from __future__ import annotations

import json

import numpy as np
import pytest

from din_cli.ml import data, evaluate, models, tensorfile


@pytest.fixture
def stores(tmp_path):
    paths = data.split("digits", tmp_path / "stores", participants=3, seed=0)
    return paths[:-1], paths[-1]


@pytest.fixture
def genesis(tmp_path):
    path = tmp_path / "genesis.safetensors"
    models.init_model("mlp:64-32-10", path, seed=1)
    return path


def test_model_init_and_info(tmp_path, din):
    r = din("model", "init", "--arch", "cnn:1x8x8-10", "--seed", "2", "-o", "g.safetensors")
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == "g.safetensors"
    r = din("model", "info", "--json", "g.safetensors")
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["arch"] == "cnn:1x8x8-10" and info["kind"] == "model" and info["samples"] == 0
    assert info["params"] == 16 * 9 + 16 + 32 * 16 * 9 + 32 + 10 * 128 + 10
    piped = din("model", "init", "--arch", "cnn:1x8x8-10", "--seed", "2", "-o", "-")
    assert piped.stdout_bytes == (tmp_path / "g.safetensors").read_bytes()
    r = din("model", "info", "-", input=piped.stdout_bytes)
    assert r.exit_code == 0 and "arch\tcnn:1x8x8-10" in r.stdout.splitlines()


def test_data_split_prints_the_stores(tmp_path, din):
    r = din("data", "split", "--dataset", "wine", "--participants", "2", "--alpha", "1", "--shuffle-labels", "2", "--out", "w")
    assert r.exit_code == 0, r.output
    assert r.stdout.split() == ["w/participant-01.npz", "w/participant-02.npz", "w/test.npz"]


def test_train_is_deterministic_and_records_samples(tmp_path, stores, genesis, din):
    (p1, p2, _), test = stores
    args = ["train", "--model", genesis, "--data", p1, "--epochs", "3", "--lr", "0.3", "--batch-size", "8", "--seed", "7"]
    assert din(*args, "-o", "a.safetensors").exit_code == 0
    assert din(*args, "-o", "b.safetensors").exit_code == 0
    r = din(*args[:-1], "8", "-o", "c.safetensors")
    assert r.exit_code == 0 and r.stdout.strip() == "c.safetensors"
    a, b, c = ((tmp_path / f"{n}.safetensors").read_bytes() for n in "abc")
    assert a == b != c
    h = tensorfile.read_header(tmp_path / "a.safetensors")
    assert h.kind == "update" and h.samples == len(data.load_store(p1)) and h.round == 1
    before = evaluate.evaluate(genesis, test).score_bps
    after = evaluate.evaluate(tmp_path / "a.safetensors", test).score_bps
    assert after > before + 2000


def test_a_round_through_pipes(tmp_path, stores, genesis, din):
    (p1, p2, p3), test = stores
    for k, p in enumerate((p1, p2, p3)):
        assert din("train", "-q", "--model", "-", "--data", p, "--seed", k, "-o", f"u{k}.safetensors", input=genesis.read_bytes()).exit_code == 0
    r = din("aggregate", "-o", "g.safetensors", input=b"u0.safetensors\nu2.safetensors\nu1.safetensors\n")
    assert r.exit_code == 0 and r.stdout == "g.safetensors\n", r.stderr
    assert tensorfile.read_header(tmp_path / "g.safetensors").samples == sum(len(data.load_store(p)) for p in (p1, p2, p3))
    r = din("evaluate", "--model", "g.safetensors", "--data", test)
    assert r.exit_code == 0 and 0 <= int(r.stdout) <= 10000
    r = din("evaluate", "--model", "g.safetensors", "--data", test, "--metric", "loss", "--json")
    doc = json.loads(r.stdout)
    assert r.exit_code == 0 and doc["metric"] == "loss" and doc["rows"] == len(data.load_store(test))
    assert doc["score_bps"] == round(10000 * np.exp(-doc["value"]))


def test_aggregate_to_stdout_equals_the_file(tmp_path, stores, genesis, din):
    (p1, p2, _), _ = stores
    for k, p in enumerate((p1, p2)):
        assert din("train", "-q", "--model", genesis, "--data", p, "-o", f"u{k}.safetensors").exit_code == 0
    r = din("aggregate", "u0.safetensors", "u1.safetensors", "-o", "-")
    assert r.exit_code == 0, r.stderr
    assert din("aggregate", "u1.safetensors", "u0.safetensors", "-o", "g.safetensors").exit_code == 0
    assert r.stdout_bytes == (tmp_path / "g.safetensors").read_bytes()


def test_evaluate_rows_uses_the_given_indices(tmp_path, stores, genesis):
    _, test = stores
    idx = [0, 0, 5, 9, 9, 9, 3]
    sub = data.select_rows(data.load_store(test), idx)
    data.save_store(tmp_path / "sub.npz", sub.x, sub.y)
    for metric in ("accuracy", "f1", "loss"):
        assert evaluate.evaluate_rows(genesis, test, idx, metric=metric) == evaluate.evaluate(genesis, tmp_path / "sub.npz", metric=metric)


def test_scores_in_basis_points():
    z = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    y = np.array([0, 1, 1])
    acc = evaluate.score("accuracy", z, y)
    assert (acc.score_bps, acc.correct, acc.rows) == (6667, 2, 3)
    f1 = evaluate.score("f1", z, y)  # class 0: P=1/2 R=1 F1=2/3; class 1: P=1 R=1/2 F1=2/3
    assert f1.score_bps == 6667


# --- bad input: one line, an exit code, nothing written ---


def _assert_failed(result, code, text, *absent):
    err = result.stderr
    assert result.exit_code == code, err
    assert result.stdout_bytes == b""
    assert err.startswith("din: error:") and err.count("\n") == 1 and text in err, err
    for path in absent:
        assert not path.exists()


def test_bad_inputs(tmp_path, stores, genesis, din):
    (p1, _, _), _ = stores
    out = tmp_path / "out.safetensors"
    (tmp_path / "nolabel.csv").write_text("a,b\n1,2\n")
    _assert_failed(din("train", "--model", genesis, "--data", "nolabel.csv", "-o", out), 1, "no label column", out)
    (tmp_path / "empty.csv").write_text("")
    _assert_failed(din("train", "--model", genesis, "--data", "empty.csv", "-o", out), 1, "empty", out)
    (tmp_path / "text.safetensors").write_text("hello, I am not a model\n")
    _assert_failed(din("train", "--model", "text.safetensors", "--data", p1, "-o", out), 1, "not a safetensors file", out)
    _assert_failed(din("model", "info", "text.safetensors"), 1, "not a safetensors file")
    _assert_failed(din("train", "--model", genesis, "--data", p1, "--device", "cuda", "-o", out), 2, "no CUDA GPU", out) if not _has_cuda() else None
    _assert_failed(din("train", "--model", "nope.safetensors", "--data", p1, "-o", out), 4, "no such file", out)
    _assert_failed(din("model", "init", "--arch", "resnet:9", "-o", out), 2, "unknown model family", out)
    other = tmp_path / "other.safetensors"
    models.init_model("mlp:30-8-2", other)
    _assert_failed(din("train", "--model", other, "--data", p1, "-o", out), 1, "rows have 64 features, mlp:30-8-2 expects 30", out)
    _assert_failed(din("evaluate", "--model", other, "--data", p1), 1, "expects 30")


def test_bad_updates_in_aggregate(tmp_path, stores, genesis, din):
    (p1, p2, _), _ = stores
    assert din("train", "-q", "--model", genesis, "--data", p1, "-o", "u1.safetensors").exit_code == 0
    other = tmp_path / "other.safetensors"
    models.init_model("mlp:64-16-10", other)
    h = tensorfile.read_header(other)
    w = tensorfile.load_arrays(h)
    tensorfile.write(other, w, {**h.metadata, "din.samples": "5", "din.kind": "update"})
    out = tmp_path / "agg.safetensors"
    _assert_failed(din("aggregate", "u1.safetensors", other, "-o", out), 1, "differs", out)
    h = tensorfile.read_header(tmp_path / "u1.safetensors")
    w = tensorfile.load_arrays(h)
    w["layers.0.weight"][0, 0] = np.nan
    tensorfile.write(tmp_path / "nan.safetensors", w, h.metadata)
    _assert_failed(din("aggregate", "u1.safetensors", "nan.safetensors", "-o", out), 1, "contains NaN", out)
    _assert_failed(din("aggregate", "u1.safetensors", "nan.safetensors", "-o", "-"), 1, "contains NaN")
    w["layers.0.weight"][0, 0] = np.inf
    tensorfile.write(tmp_path / "inf.safetensors", w, h.metadata)
    _assert_failed(din("aggregate", "inf.safetensors", "u1.safetensors", "-o", out), 1, "contains Inf", out)
    _assert_failed(din("evaluate", "--model", "inf.safetensors", "--data", p1), 1, "contains Inf")
    _assert_failed(din("aggregate", "-o", out, input=b""), 2, "no inputs", out)


def _has_cuda():
    import torch

    return torch.cuda.is_available()


def test_cid_inputs_come_from_the_content_store(tmp_path, stores, genesis, din):
    store_mod = pytest.importorskip("din_cli.store")
    if not hasattr(store_mod, "open_store"):
        pytest.skip("content store not built yet")
    (p1, _, _), test = stores
    cid = str(store_mod.open_store().add(str(genesis)))
    r = din("model", "info", "--json", cid)
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["arch"] == "mlp:64-32-10"
    assert din("train", "-q", "--model", cid, "--data", p1, "-o", "u.safetensors").exit_code == 0
    assert din("train", "-q", "--model", genesis, "--data", p1, "-o", "v.safetensors").exit_code == 0
    assert (tmp_path / "u.safetensors").read_bytes() == (tmp_path / "v.safetensors").read_bytes()
    ucid = str(store_mod.open_store().add(str(tmp_path / "u.safetensors")))
    r = din("aggregate", ucid, "v.safetensors", "-o", "g.safetensors")
    assert r.exit_code == 0, r.stderr
    missing = "bafkreie5cvv4h45feadgeuwhbcutmh6t2ceseocckahdoe6uat64zmz454"
    _assert_failed(din("model", "info", missing), 4, missing)
