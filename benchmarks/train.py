"""``din train`` throughput vs a plain torch training loop on the same model and data.

    python benchmarks/train.py                       # mlp:64-128-10, 20k rows, batch 32
    python benchmarks/train.py --arch cnn:1x8x8-10 --rows 20000

Both sides run in this process on the CPU, alternately, best of ``--repeat``:

- din: ``din_cli.ml.train.train`` from a genesis file and an NPZ store to an
  update file (loading, checks and the canonical write included);
- plain: the loop a torch user would write -- the same module, SGD, seeded
  shuffling, ``model(x[idx])``, ``loss.backward()``, ``opt.step()`` on
  tensors already in memory.

Prints rows/s for each and din's share of the plain loop's throughput
(target: at least 90 %).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="mlp:64-128-10")
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads for both sides (default 1: small models, shared CPUs)",
    )
    args = ap.parse_args()

    import numpy as np
    import torch

    from din_cli.ml import data, models, zoo
    from din_cli.ml.train import train

    torch.set_num_threads(args.threads)
    features = zoo.input_features(args.arch)
    classes = list(zoo.param_shapes(args.arch).values())[-1][0]
    rng = np.random.default_rng(0)
    x = rng.random((args.rows, features), dtype=np.float32)
    y = (x[:, :classes].argmax(axis=1)).astype(np.int64)

    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        store = folder / "store.npz"
        data.save_store(store, x, y)
        genesis = folder / "genesis.safetensors"
        models.init_model(args.arch, genesis, seed=0)

        def run_din() -> float:
            t = time.perf_counter()
            train(
                genesis,
                store,
                folder / "update.safetensors",
                epochs=args.epochs,
                lr=0.05,
                batch_size=args.batch_size,
                seed=1,
                device="cpu",
            )
            return time.perf_counter() - t

        def run_plain() -> float:
            t = time.perf_counter()
            torch.manual_seed(0)
            model = zoo.build_model(args.arch)
            xt, yt = torch.from_numpy(x), torch.from_numpy(y)
            opt = torch.optim.SGD(model.parameters(), lr=0.05)
            loss_fn = torch.nn.CrossEntropyLoss()
            gen = torch.Generator().manual_seed(1)
            for _ in range(args.epochs):
                perm = torch.randperm(args.rows, generator=gen)
                for s in range(0, args.rows, args.batch_size):
                    idx = perm[s : s + args.batch_size]
                    opt.zero_grad()
                    loss = loss_fn(model(xt[idx]), yt[idx])
                    loss.backward()
                    opt.step()
            return time.perf_counter() - t

        run_din(), run_plain()  # warm-up
        din_t, plain_t = [], []
        for k in range(args.repeat):  # alternate which goes first
            if k % 2:
                plain_t.append(run_plain())
                din_t.append(run_din())
            else:
                din_t.append(run_din())
                plain_t.append(run_plain())
    total = args.rows * args.epochs
    d, p = min(din_t), min(plain_t)
    print(
        f"{args.arch}, {args.rows} rows x {args.epochs} epochs, batch {args.batch_size}, torch threads {torch.get_num_threads()}"
    )
    print(f"{'':8} {'seconds':>8} {'rows/s':>10}")
    print(f"{'din':8} {d:>8.3f} {total / d:>10,.0f}")
    print(f"{'plain':8} {p:>8.3f} {total / p:>10,.0f}")
    print(f"din throughput = {p / d:.0%} of the plain loop (target >= 90%)")


if __name__ == "__main__":
    main()
