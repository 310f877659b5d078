"""din's GPU paths beside its CPU paths: training and evaluation speed, and bit-identity.

    python benchmarks/gpu.py                  # cuda beside cpu (needs a CUDA GPU)
    python benchmarks/gpu.py --device torch-cpu  # the GPU code on the CPU, anywhere

On digits-sized inputs (8x8 images, 10 classes; ``--rows`` random rows) it prints:

- ``din train`` rows/s on the CPU and on the device, for the zoo's CNN and an
  MLP, at two batch sizes, and whether two device runs gave the same bytes
  (torch's deterministic algorithms);
- evaluation rows/s of the bit-exact forward pass (numpy on the CPU, torch
  element-wise kernels on the device) and whether every metric's score is
  the same integer;
- whether aggregates of the same updates have the same CID on both paths
  (``--agg`` inputs of ``--agg-params`` weights each).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "torch-cpu"])
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--eval-rows", type=int, default=20_000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--agg", type=int, default=8, help="updates in the CID check (default 8)")
    ap.add_argument("--agg-params", type=float, default=3e6)
    args = ap.parse_args()

    import numpy as np
    import torch

    from din_cli.ml import aggregate as agg
    from din_cli.ml import data, evaluate, models, tensorfile, train
    from din_cli.protocol.admission import file_cid

    dev = args.device
    tdev = "cpu" if dev == "torch-cpu" else dev
    if tdev == "cuda":
        print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    rng = np.random.default_rng(0)
    x = rng.random((args.rows, 64), dtype=np.float32)
    y = (x[:, :10].argmax(axis=1)).astype(np.int64)
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        store = folder / "store.npz"
        data.save_store(store, x, y)
        print(f"\ntrain ({args.rows} rows x {args.epochs} epochs), rows/s:")
        print(f"{'arch':>16} {'batch':>6} | {'cpu':>9} {tdev:>9} | {'ratio':>6} {'repeatable':>10}")
        for arch in ("cnn:1x8x8-10", "mlp:64-128-10"):
            genesis = folder / "g.safetensors"
            models.init_model(arch, genesis, seed=0)
            for batch in (32, 256):
                rate = {}
                outs = []
                for device in ("cpu", tdev, tdev):
                    out = folder / f"u{len(outs)}.safetensors"
                    t = time.perf_counter()
                    train.train(
                        genesis,
                        store,
                        out,
                        epochs=args.epochs,
                        lr=0.05,
                        batch_size=batch,
                        seed=1,
                        device=device,
                    )
                    rate[device] = max(
                        rate.get(device, 0), args.rows * args.epochs / (time.perf_counter() - t)
                    )
                    outs.append(out.read_bytes())
                same = "yes" if outs[1] == outs[2] else "NO"
                print(
                    f"{arch:>16} {batch:>6} | {rate['cpu']:>9.0f} {rate[tdev]:>9.0f} | {rate[tdev] / rate['cpu']:>5.1f}x {same:>10}"
                )

        ex = rng.random((args.eval_rows, 64), dtype=np.float32)
        ey = (ex[:, :10].argmax(axis=1) + (rng.random(args.eval_rows) < 0.3)) % 10
        test = folder / "test.npz"
        data.save_store(test, ex, ey.astype(np.int64))
        print(f"\nevaluate ({args.eval_rows} rows), rows/s of the bit-exact forward pass:")
        print(f"{'arch':>16} | {'cpu':>9} {dev:>9} | {'ratio':>6} {'scores':>7}")
        for arch in ("cnn:1x8x8-10", "mlp:64-128-10", "logreg:64-10"):
            model = folder / "m.safetensors"
            models.init_model(arch, model, seed=0)
            train.train(model, store, model, epochs=1, lr=0.05, seed=1, device="cpu")
            mf = models.read_model(model)
            evaluate.logits(mf, ex[:100], device=dev)  # warm-up (CUDA context, kernels)
            seconds = {}
            for device in ("cpu", dev):
                t = time.perf_counter()
                evaluate.logits(mf, ex, device=device)
                seconds[device] = time.perf_counter() - t
            same = all(
                evaluate.evaluate(model, test, metric=m)
                == evaluate.evaluate(model, test, metric=m, device=dev)
                for m in evaluate.METRICS
            )
            print(
                f"{arch:>16} | {args.eval_rows / seconds['cpu']:>9.0f} {args.eval_rows / seconds[dev]:>9.0f} | {seconds['cpu'] / seconds[dev]:>5.1f}x {'same' if same else 'DIFFER':>7}"
            )

        p = int(args.agg_params)
        rows = p // 1000 - 1
        arch = f"logreg:{rows}-1000"
        paths = []
        for i in range(args.agg):
            w = {
                "layers.0.weight": (rng.standard_normal((1000, rows)) * (0.05 + i)).astype(
                    np.float32
                ),
                "layers.0.bias": rng.standard_normal(1000).astype(np.float32),
            }
            path = folder / f"a{i}.safetensors"
            meta = tensorfile.make_metadata(
                arch=arch, kind="update", samples=int(rng.integers(1, 5000)), round=1
            )
            tensorfile.write(path, w, meta)
            paths.append(path)
        cids = {}
        for device in ("cpu", dev):
            out = folder / f"agg-{device}.safetensors"
            agg.aggregate(paths, out, device=device)
            cids[device] = file_cid(out)
        print(
            f"\naggregate of {args.agg} updates x {p:,} weights: CID on cpu {cids['cpu']}, on {dev} {cids[dev]}: {'same' if cids['cpu'] == cids[dev] else 'DIFFER'}"
        )


if __name__ == "__main__":
    main()
