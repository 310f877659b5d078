"""The GPU paths of aggregate, evaluate and train give the CPU's bytes and scores.

Each check runs the torch code path on the CPU (``torch-cpu``: the very
kernels the GPU runs, on torch's CPU backend) and, when a CUDA GPU is
present, on it (``cuda``); without one the CUDA cases skip with a reason.
"""

from __future__ import annotations

import hashlib
import io
import itertools

import numpy as np
import pytest
from test_ml_aggregate import _non_canonical_copy, _update

from din_cli.errors import InputError
from din_cli.ml import aggregate as agg
from din_cli.ml import data, evaluate, models, tensorfile, train
from din_cli.ml.device import cuda_available
from din_cli.protocol import contribution as C

NO_GPU = (
    "no CUDA GPU on this machine: the CUDA path runs on a GPU machine (benchmarks/gpu_check.sh)"
)
ENGINES = [
    "torch-cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not cuda_available(), reason=NO_GPU)),
]


def _bytes(paths, device, **kw) -> bytes:
    out = io.BytesIO()
    agg.aggregate_to(paths, out, device=device, **kw)
    return out.getvalue()


def _same(paths, engine, **kw):
    cpu = _bytes(paths, "cpu", **kw)
    assert hashlib.sha256(_bytes(paths, engine, **kw)).digest() == hashlib.sha256(cpu).digest()
    return cpu


@pytest.fixture
def updates(tmp_path):
    return [
        _update(tmp_path / f"u{i}.safetensors", i, n)
        for i, n in enumerate([120, 7, 3001, 55, 1, 9, 40])
    ]


@pytest.mark.parametrize("engine", ENGINES)
def test_aggregate_bytes_match_the_cpu_for_every_order_and_dropout(tmp_path, updates, engine):
    for count in range(1, len(updates) + 1):  # every remainder of the CPU's 4-input pass
        _same(updates[:count], engine)
    for perm in itertools.islice(itertools.permutations(updates[:5]), 0, 120, 29):
        _same(list(perm), engine)
    _same([updates[k] for k in (0, 2, 5)], engine)  # participants 2, 4, 5, 7 dropped out


@pytest.mark.parametrize("engine", ENGINES)
def test_aggregate_bytes_match_across_chunk_remainders(tmp_path, updates, engine, monkeypatch):
    whole = _same(updates, engine)
    for chunk in (1000, 4096, 8406):  # partial last chunks; chunks that cut through tensors
        monkeypatch.setattr(agg, "TORCH_CHUNK", chunk)
        assert _bytes(updates, engine) == whole
        assert _bytes(updates, engine, threads=1) == whole


@pytest.mark.parametrize("engine", ENGINES)
def test_aggregate_bytes_match_at_the_clip_bounds_and_rounding_ties(tmp_path, engine):
    def edges(w):
        b = w["layers.0.bias"]
        b[:6] = [3e38, -3e38, 1024.0, -1024.0, 1024.0 + 2**-13, -(2.0**-21)]
        g = w["layers.2.weight"].reshape(-1)
        k = np.arange(64, dtype=np.float64)
        g[:64] = ((k + 0.5) * 2.0**-20).astype(np.float32)  # exact halves: round half to even
        g[64:128] = -g[:64]
        g[128] = np.float32(2**-149)  # the smallest subnormal

    paths = [
        _update(tmp_path / "edge.safetensors", 1, 13, tweak=edges),
        _update(tmp_path / "edge2.safetensors", 2, 2**20, tweak=edges),
        _update(tmp_path / "h.safetensors", 3, 5),
    ]
    (tmp_path / "a.safetensors").write_bytes(_same(paths, engine))
    b = models.read_model(tmp_path / "a.safetensors").weights["layers.0.bias"]
    assert b[0] > 1023.9 and b[1] < -1023.9  # +-3e38 clipped to +-1024 on every path


@pytest.mark.parametrize("engine", ENGINES)
def test_aggregate_bytes_match_with_huge_sample_counts(tmp_path, engine):
    # total over 2^23: the CPU folds several exact float64 passes into int64
    c = 3_000_000
    big = [_update(tmp_path / f"b{i}", i, n * c, scale=1e-4) for i, n in enumerate([3, 5, 2])]
    assert len(agg._passes([agg._Input("", n * c, None) for n in [3, 5, 2]])) > 1
    _same(big, engine)
    _same(big, engine, weights=[2**32 // 3 - 7, 1, 2**31])  # the largest exact range


@pytest.mark.parametrize("engine", ENGINES)
def test_aggregates_of_aggregates_and_non_canonical_inputs_match(tmp_path, updates, engine):
    g1, g2 = tmp_path / "g1.safetensors", tmp_path / "g2.safetensors"
    g1.write_bytes(_same(updates[:3], engine))
    g2.write_bytes(_same(updates[3:], engine))
    _same([g1, g2], engine)
    odd = _non_canonical_copy(updates[0], tmp_path / "odd.safetensors")
    _same([odd] + updates[1:], engine, weights=[1, 2, 3, 4, 5, 6, 7])


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_aggregate_refuses_nan_or_inf_and_writes_nothing(tmp_path, updates, engine, bad):
    def poison(w):
        w["layers.2.weight"][3, 100] = bad

    sick = _update(tmp_path / "sick.safetensors", 99, 10, tweak=poison)
    out = tmp_path / "out.safetensors"
    with pytest.raises(InputError) as e:
        agg.aggregate(updates + [sick], out, device=engine)
    assert "sick.safetensors" in str(e.value) and "layers.2.weight" in str(e.value)
    assert ("NaN" if np.isnan(bad) else "Inf") in str(e.value)
    assert not out.exists() and list(tmp_path.glob(".out*")) == []


@pytest.mark.parametrize("engine", ENGINES)
def test_aggregate_tensors_in_memory_holds_the_files_bits(tmp_path, updates, engine, monkeypatch):
    import torch

    dev = "cuda" if engine == "cuda" else "cpu"
    states = [
        {k: torch.from_numpy(v).to(dev) for k, v in models.read_model(p).weights.items()}
        for p in updates
    ]
    samples = [tensorfile.read_header(p).samples for p in updates]
    (tmp_path / "f.safetensors").write_bytes(_bytes(updates, "cpu"))
    want = models.read_model(tmp_path / "f.safetensors").weights
    monkeypatch.setattr(agg, "TORCH_CHUNK", 1000)  # chunks that cut through every tensor
    got = agg.aggregate_tensors(states, samples)
    assert sorted(got) == sorted(want)
    for k, v in want.items():
        assert got[k].device.type == dev and got[k].shape == v.shape
        assert got[k].cpu().numpy().tobytes() == v.tobytes(), k
    states[3]["layers.2.weight"][0, 0] = float("inf")
    with pytest.raises(InputError, match="input 3: tensor 'layers.2.weight' contains Inf"):
        agg.aggregate_tensors(states, samples)
    with pytest.raises(InputError, match="sample counts must be positive"):
        agg.aggregate_tensors(states[:2], [5, 0])


def test_auto_takes_the_cpu_below_the_threshold(tmp_path, updates, monkeypatch):
    plan = agg._plan(updates)
    assert agg._engine("auto", plan) == "cpu"
    monkeypatch.setattr(agg, "AUTO_CUDA_BYTES", 1)
    assert agg._engine("auto", plan) == ("cuda" if cuda_available() else "cpu")


def test_cli_device_choices(tmp_path, updates, din):
    r = din("aggregate", "--device", "cpu", *map(str, updates[:3]), "-o", "cpu.safetensors")
    assert r.exit_code == 0, r.output
    r = din("aggregate", "--device", "auto", *map(str, updates[:3]), "-o", "auto.safetensors")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "cpu.safetensors").read_bytes() == (
        tmp_path / "auto.safetensors"
    ).read_bytes()
    r = din("aggregate", "--device", "cuda", *map(str, updates[:3]), "-o", "gpu.safetensors")
    if cuda_available():
        assert r.exit_code == 0, r.output
        gpu = (tmp_path / "gpu.safetensors").read_bytes()
        assert gpu == (tmp_path / "cpu.safetensors").read_bytes()
        return
    assert r.exit_code == 2 and "no CUDA GPU" in r.stderr and len(r.stderr.splitlines()) == 1
    assert not (tmp_path / "gpu.safetensors").exists()
    r = din("evaluate", "--model", str(updates[0]), "--data", "x.npz", "--device", "cuda")
    assert r.exit_code == 2 and "no CUDA GPU" in r.stderr and r.stdout == ""


# --- evaluation ---


@pytest.fixture(scope="module")
def digits():
    ds = data.load_dataset("digits")
    order = np.random.default_rng(5).permutation(len(ds))
    return ds.x[order], ds.y[order]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("arch", ["logreg:64-10", "mlp:64-32-16-10", "cnn:1x8x8-10"])
def test_logits_and_scores_match_the_cpu(tmp_path, digits, engine, arch):
    x, y = digits
    genesis = tmp_path / "g.safetensors"
    models.init_model(arch, genesis, seed=2)
    store = tmp_path / "s.npz"
    data.save_store(store, x[:300], y[:300])
    trained = tmp_path / "t.safetensors"
    train.train(genesis, store, trained, epochs=2, lr=0.1, seed=1, device="cpu")
    mf = models.read_model(trained)
    rows = np.concatenate([np.arange(1000, 1797), np.arange(1000, 1100)])  # repeats, as a resample
    a = evaluate.logits(mf, x[rows])
    b = evaluate.logits(mf, x[rows], device=engine)
    assert a.shape == b.shape and np.array_equal(a, b)  # every value (a zero's sign aside)
    test = tmp_path / "test.npz"
    data.save_store(test, x[1000:], y[1000:])
    for metric in evaluate.METRICS:
        cpu = evaluate.evaluate_rows(trained, test, rows - 1000, metric=metric)
        dev = evaluate.evaluate_rows(trained, test, rows - 1000, metric=metric, device=engine)
        assert cpu == dev and 0 < cpu.score_bps < 10000


@pytest.mark.parametrize("engine", ENGINES)
def test_contribution_scores_match_the_cpu(tmp_path, digits, engine):
    x, y = digits
    arch = "mlp:64-16-10"
    genesis = tmp_path / "g.safetensors"
    models.init_model(arch, genesis, seed=0)
    paths = []
    for k, (a, b) in enumerate([(0, 200), (200, 260), (260, 460), (460, 470)]):
        store = tmp_path / f"p{k}.npz"
        data.save_store(store, x[a:b], y[a:b])
        paths.append(tmp_path / f"u{k}.safetensors")
        train.train(genesis, store, paths[-1], epochs=2, lr=0.2, seed=k, device="cpu")
    test = data.Dataset(x[1500:], y[1500:], "test")
    kw = dict(method="exact", seed=bytes(range(32)))
    cpu = C.contributions(paths, genesis, test, **kw)
    dev = C.contributions(paths, genesis, test, device=engine, **kw)
    assert cpu.scores == dev.scores and cpu.full == dev.full and max(cpu.scores) > 0


# --- training ---


def test_training_reports_its_device_and_repeats_on_the_cpu(tmp_path, digits):
    x, y = digits
    genesis = tmp_path / "g.safetensors"
    models.init_model("cnn:1x8x8-10", genesis, seed=0)
    store = tmp_path / "s.npz"
    data.save_store(store, x[:200], y[:200])
    runs = [
        train.train(genesis, store, tmp_path / f"{k}.safetensors", seed=4, device="cpu")
        for k in range(2)
    ]
    assert all(r.device == "cpu" and r.deterministic for r in runs)
    assert (tmp_path / "0.safetensors").read_bytes() == (tmp_path / "1.safetensors").read_bytes()


def test_cuda_determinism_settings_are_restored_and_import_no_compiler():
    """The settings deterministic("cuda") makes hold inside and are restored after, and making
    them imports neither torch._dynamo nor torch._inductor (torch.use_deterministic_algorithms
    did: ~4.7 s of start-up on a GPU machine). Settable without a GPU."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from din_cli.ml import train\n"
        "before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)\n"
        "with train.deterministic('cuda'):\n"
        "    assert torch.are_deterministic_algorithms_enabled()\n"
        "    assert torch.is_deterministic_algorithms_warn_only_enabled()\n"
        "    assert torch.backends.cudnn.deterministic and not torch.backends.cuda.matmul.allow_tf32\n"
        "assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark) == before\n"
        "assert not torch.is_deterministic_algorithms_warn_only_enabled()\n"
        "print(sorted(m for m in sys.modules if m.startswith(('torch._dynamo', 'torch._inductor'))))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


@pytest.mark.skipif(not cuda_available(), reason=NO_GPU)
@pytest.mark.parametrize("arch", ["mlp:64-128-10", "cnn:1x8x8-10"])
def test_cuda_training_is_deterministic_and_restores_torch_settings(tmp_path, digits, arch):
    import torch

    x, y = digits
    genesis = tmp_path / "g.safetensors"
    models.init_model(arch, genesis, seed=0)
    store = tmp_path / "s.npz"
    data.save_store(store, x[:1000], y[:1000])
    before = torch.are_deterministic_algorithms_enabled()
    runs = [
        train.train(genesis, store, tmp_path / f"{k}.safetensors", epochs=3, seed=4, device="cuda")
        for k in range(2)
    ]
    assert all(r.device == "cuda" and r.deterministic for r in runs)
    assert (tmp_path / "0.safetensors").read_bytes() == (tmp_path / "1.safetensors").read_bytes()
    assert torch.are_deterministic_algorithms_enabled() == before
    cpu = train.train(genesis, store, tmp_path / "cpu.safetensors", epochs=3, seed=4, device="cpu")
    a = models.read_model(tmp_path / "0.safetensors").weights
    b = models.read_model(tmp_path / "cpu.safetensors").weights
    assert cpu.samples == runs[0].samples
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) < 1e-2  # same training, other rounding
