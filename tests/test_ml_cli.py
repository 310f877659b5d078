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
    r = din(
        "data",
        "split",
        "--dataset",
        "wine",
        "--participants",
        "2",
        "--alpha",
        "1",
        "--shuffle-labels",
        "2",
        "--out",
        "w",
    )
    assert r.exit_code == 0, r.output
    assert r.stdout.split() == ["w/participant-01.npz", "w/participant-02.npz", "w/test.npz"]


def test_train_is_deterministic_and_records_samples(tmp_path, stores, genesis, din):
    (p1, p2, _), test = stores
    args = [
        "train",
        "--model",
        genesis,
        "--data",
        p1,
        "--epochs",
        "3",
        "--lr",
        "0.3",
        "--batch-size",
        "8",
        "--seed",
        "7",
    ]
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
        assert (
            din(
                "train",
                "-q",
                "--model",
                "-",
                "--data",
                p,
                "--seed",
                k,
                "-o",
                f"u{k}.safetensors",
                input=genesis.read_bytes(),
            ).exit_code
            == 0
        )
    r = din(
        "aggregate",
        "-o",
        "g.safetensors",
        input=b"u0.safetensors\nu2.safetensors\nu1.safetensors\n",
    )
    assert r.exit_code == 0 and r.stdout == "g.safetensors\n", r.stderr
    assert tensorfile.read_header(tmp_path / "g.safetensors").samples == sum(
        len(data.load_store(p)) for p in (p1, p2, p3)
    )
    r = din("evaluate", "--model", "g.safetensors", "--data", test)
    assert r.exit_code == 0 and 0 <= int(r.stdout) <= 10000
    r = din("evaluate", "--model", "g.safetensors", "--data", test, "--metric", "loss", "--json")
    doc = json.loads(r.stdout)
    assert (
        r.exit_code == 0 and doc["metric"] == "loss" and doc["rows"] == len(data.load_store(test))
    )
    assert doc["score_bps"] == round(10000 * np.exp(-doc["value"]))


def test_aggregate_to_stdout_equals_the_file(tmp_path, stores, genesis, din):
    (p1, p2, _), _ = stores
    for k, p in enumerate((p1, p2)):
        assert (
            din("train", "-q", "--model", genesis, "--data", p, "-o", f"u{k}.safetensors").exit_code
            == 0
        )
    r = din("aggregate", "u0.safetensors", "u1.safetensors", "-o", "-")
    assert r.exit_code == 0, r.stderr
    assert (
        din("aggregate", "u1.safetensors", "u0.safetensors", "-o", "g.safetensors").exit_code == 0
    )
    assert r.stdout_bytes == (tmp_path / "g.safetensors").read_bytes()


def test_evaluate_rows_uses_the_given_indices(tmp_path, stores, genesis):
    _, test = stores
    idx = [0, 0, 5, 9, 9, 9, 3]
    sub = data.select_rows(data.load_store(test), idx)
    data.save_store(tmp_path / "sub.npz", sub.x, sub.y)
    for metric in ("accuracy", "f1", "loss"):
        assert evaluate.evaluate_rows(genesis, test, idx, metric=metric) == evaluate.evaluate(
            genesis, tmp_path / "sub.npz", metric=metric
        )


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
    _assert_failed(
        din("train", "--model", genesis, "--data", "nolabel.csv", "-o", out),
        1,
        "no label column",
        out,
    )
    (tmp_path / "empty.csv").write_text("")
    _assert_failed(
        din("train", "--model", genesis, "--data", "empty.csv", "-o", out), 1, "empty", out
    )
    (tmp_path / "text.safetensors").write_text("hello, I am not a model\n")
    _assert_failed(
        din("train", "--model", "text.safetensors", "--data", p1, "-o", out),
        1,
        "not a safetensors file",
        out,
    )
    _assert_failed(din("model", "info", "text.safetensors"), 1, "not a safetensors file")
    _assert_failed(
        din("train", "--model", genesis, "--data", p1, "--device", "cuda", "-o", out),
        2,
        "no CUDA GPU",
        out,
    ) if not _has_cuda() else None
    _assert_failed(
        din("train", "--model", "nope.safetensors", "--data", p1, "-o", out), 4, "no such file", out
    )
    _assert_failed(
        din("model", "init", "--arch", "resnet:9", "-o", out), 2, "unknown model family", out
    )
    other = tmp_path / "other.safetensors"
    models.init_model("mlp:30-8-2", other)
    _assert_failed(
        din("train", "--model", other, "--data", p1, "-o", out),
        1,
        "rows have 64 features, mlp:30-8-2 expects 30",
        out,
    )
    _assert_failed(din("evaluate", "--model", other, "--data", p1), 1, "expects 30")


def test_bad_updates_in_aggregate_are_left_out_not_fatal(tmp_path, stores, genesis, din):
    (p1, p2, _), _ = stores
    assert (
        din("train", "-q", "--model", genesis, "--data", p1, "-o", "u1.safetensors").exit_code == 0
    )
    assert (
        din("train", "-q", "--model", genesis, "--data", p2, "-o", "u2.safetensors").exit_code == 0
    )
    other = tmp_path / "other.safetensors"
    models.init_model("mlp:64-16-10", other)
    h = tensorfile.read_header(other)
    w = tensorfile.load_arrays(h)
    tensorfile.write(other, w, {**h.metadata, "din.samples": "5", "din.kind": "update"})
    h = tensorfile.read_header(tmp_path / "u1.safetensors")
    w = tensorfile.load_arrays(h)
    w["layers.0.weight"][0, 0] = np.nan
    tensorfile.write(tmp_path / "nan.safetensors", w, h.metadata)
    w["layers.0.weight"][0, 0] = np.inf
    tensorfile.write(tmp_path / "inf.safetensors", w, h.metadata)
    assert (
        din("aggregate", "u1.safetensors", "u2.safetensors", "-o", "clean.safetensors").exit_code
        == 0
    )
    code, out, err = _triple(
        din(
            "aggregate",
            "u1.safetensors",
            "nan.safetensors",
            other,
            "inf.safetensors",
            "u2.safetensors",
            "-o",
            "agg.safetensors",
        )
    )
    assert code == 0 and out == "agg.safetensors\n", err
    assert "excluded nan.safetensors: non-finite: tensor 'layers.0.weight' holds NaN" in err
    assert (
        f"excluded {other}: architecture" in err and "excluded inf.safetensors: non-finite" in err
    )
    got = models.read_model(tmp_path / "agg.safetensors")
    clean = models.read_model(tmp_path / "clean.safetensors")
    assert all(np.array_equal(got.weights[k], clean.weights[k]) for k in clean.weights)
    assert [(e["index"], e["reason"]) for e in json.loads(got.header.metadata["din.excluded"])] == [
        (1, "non-finite"),
        (2, "architecture"),
        (3, "non-finite"),
    ]
    # every input excluded: nothing to aggregate, nothing written (with --base: the base itself)
    out = tmp_path / "none.safetensors"
    _assert_failed(
        din("aggregate", "nan.safetensors", "inf.safetensors", "-o", out),
        1,
        "nothing to aggregate",
        out,
    )
    _assert_failed(din("aggregate", "nan.safetensors", "-o", "-"), 1, "non-finite")
    code, out, err = _triple(
        din("aggregate", "--base", genesis, "nan.safetensors", genesis, "-o", "same.safetensors")
    )
    assert code == 0 and (tmp_path / "same.safetensors").read_bytes() == genesis.read_bytes(), err
    assert "unchanged" in err
    _assert_failed(din("evaluate", "--model", "inf.safetensors", "--data", p1), 1, "contains Inf")
    _assert_failed(
        din("aggregate", "-o", tmp_path / "x", input=b""), 2, "no inputs", tmp_path / "x"
    )
    code, _, err = _triple(din("aggregate", "--task", "1", "--commit", "--max-samples", "5"))
    assert code == 2 and "drop --base and --max-samples" in err


def test_aggregate_max_samples_caps_each_weight(tmp_path, stores, genesis, din):
    (p1, p2, _), _ = stores
    for k, p in enumerate((p1, p2)):
        assert (
            din("train", "-q", "--model", genesis, "--data", p, "-o", f"u{k}.safetensors").exit_code
            == 0
        )
    h = tensorfile.read_header(tmp_path / "u0.safetensors")
    tensorfile.write(
        tmp_path / "liar.safetensors",
        tensorfile.load_arrays(h),
        {**h.metadata, "din.samples": str(2**31)},
    )
    assert (
        din(
            "aggregate",
            "--max-samples",
            "50",
            "liar.safetensors",
            "u1.safetensors",
            "-o",
            "a.safetensors",
        ).exit_code
        == 0
    )
    assert (
        din(
            "aggregate",
            "--max-samples",
            "50",
            "u0.safetensors",
            "u1.safetensors",
            "-o",
            "b.safetensors",
        ).exit_code
        == 0
    )
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    assert tensorfile.read_header(tmp_path / "a.safetensors").samples == 100


def _triple(r):
    return r.exit_code, r.stdout, r.stderr


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
    assert (
        din("train", "-q", "--model", genesis, "--data", p1, "-o", "v.safetensors").exit_code == 0
    )
    assert (tmp_path / "u.safetensors").read_bytes() == (tmp_path / "v.safetensors").read_bytes()
    ucid = str(store_mod.open_store().add(str(tmp_path / "u.safetensors")))
    r = din("aggregate", ucid, "v.safetensors", "-o", "g.safetensors")
    assert r.exit_code == 0, r.stderr
    missing = "bafkreie5cvv4h45feadgeuwhbcutmh6t2ceseocckahdoe6uat64zmz454"
    _assert_failed(din("model", "info", missing), 4, missing)


# --- evaluation is exact: the same integers on any machine, thread count and batch size ---


def _reference_logits(mf, x):
    """The published order in plain Python floats: bias, then + x_k * w_k for k = 0, 1, ... (convs: c, dy, dx)."""
    w = {k: v.astype(np.float64).tolist() for k, v in mf.weights.items()}

    def linear(h, W, b):
        out = []
        for j in range(len(W)):
            acc = b[j]
            for k in range(len(h)):
                acc = acc + h[k] * W[j][k]
            out.append(acc)
        return out

    def relu(h):
        return [v if v > 0 else 0.0 for v in h]

    rows = []
    for row in np.asarray(x, dtype=np.float64).tolist():
        if mf.arch.startswith("cnn"):
            c, hh, ww = (int(d) for d in mf.arch.split(":")[1].split("-")[0].split("x"))
            img = [
                [row[(ci * hh + y) * ww : (ci * hh + y) * ww + ww] for y in range(hh)]
                for ci in range(c)
            ]
            for name in ("layers.1", "layers.4"):
                W, b = w[f"{name}.weight"], w[f"{name}.bias"]
                chans, hh, ww = len(img), len(img[0]), len(img[0][0])
                pad = [
                    [[0.0] * (ww + 2)] + [[0.0, *r, 0.0] for r in ch] + [[0.0] * (ww + 2)]
                    for ch in img
                ]
                conv = []
                for o in range(len(W)):
                    plane = []
                    for y in range(hh):
                        line = []
                        for xx in range(ww):
                            acc = b[o]
                            for ci in range(chans):
                                for dy in range(3):
                                    for dx in range(3):
                                        acc = acc + W[o][ci][dy][dx] * pad[ci][y + dy][xx + dx]
                            line.append(acc if acc > 0 else 0.0)
                        plane.append(line)
                    conv.append(plane)
                img = [
                    [
                        [
                            max(
                                p[2 * y][2 * xx],
                                p[2 * y][2 * xx + 1],
                                p[2 * y + 1][2 * xx],
                                p[2 * y + 1][2 * xx + 1],
                            )
                            for xx in range(ww // 2)
                        ]
                        for y in range(hh // 2)
                    ]
                    for p in conv
                ]
            rows.append(
                linear(
                    [v for ch in img for r in ch for v in r],
                    w["layers.8.weight"],
                    w["layers.8.bias"],
                )
            )
        else:
            h = row
            n = len(w) // 2
            for i in range(n):
                h = linear(h, w[f"layers.{2 * i}.weight"], w[f"layers.{2 * i}.bias"])
                h = relu(h) if i < n - 1 else h
            rows.append(h)
    return np.array(rows, dtype=np.float64)


@pytest.mark.parametrize(
    "arch", ["logreg:64-10", "mlp:64-24-16-10", "cnn:1x8x8-10", "mlp:64-1200-10"]
)
def test_logits_are_the_published_order_bit_for_bit(tmp_path, stores, arch):
    _, test = stores
    models.init_model(arch, tmp_path / "m.safetensors", seed=4)
    mf = models.read_model(tmp_path / "m.safetensors")
    # the 1200-wide layer sums 13 rows per cache block: 30 rows cross three blocks
    x = data.load_store(test).x[: 30 if "1200" in arch else 6]
    got = evaluate.logits(mf, x)
    assert got.tobytes() == _reference_logits(mf, x).tobytes()


def test_scores_do_not_depend_on_threads_or_batch_size(tmp_path, stores, genesis, din):
    import torch

    (p1, _, _), test = stores
    assert (
        din(
            "train", "-q", "--model", genesis, "--data", p1, "--epochs", "2", "-o", "u.safetensors"
        ).exit_code
        == 0
    )
    mf = models.read_model(tmp_path / "u.safetensors")
    ds = data.load_store(test)
    before = torch.get_num_threads()
    seen = set()
    try:
        for threads, batch in ((1, 4096), (2, 4096), (2, 1), (1, 33)):
            torch.set_num_threads(threads)
            z = evaluate.logits(mf, ds.x, batch=batch)
            scores = tuple(evaluate.score(m, z, ds.y).score_bps for m in evaluate.METRICS)
            seen.add((z.tobytes(), scores))
    finally:
        torch.set_num_threads(before)
    assert len(seen) == 1
    ((_, (acc, f1, loss)),) = seen
    assert 0 < loss < acc <= 10000 and 0 < f1 <= 10000
    # and it is what the command prints
    assert din("evaluate", "--model", "u.safetensors", "--data", test).stdout.strip() == str(acc)


def test_loss_score_rounds_exactly_in_decimal():
    z = np.array([[0.0, 0.0], [0.0, 0.0]])  # loss ln 2: exp(-L) = 0.5 exactly -> 5000
    s = evaluate.score("loss", z, np.array([0, 1]))
    assert s.score_bps == 5000 and abs(s.value - np.log(2)) < 1e-15
    z = np.array([[np.log(3.0), 0.0, 0.0]])  # p = 3/5 -> 6000
    assert evaluate.score("loss", z, np.array([0])).score_bps == 6000
    assert evaluate.score("loss", np.array([[np.inf, 0.0]]), np.array([1])).score_bps == 0
