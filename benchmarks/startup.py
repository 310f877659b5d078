"""Single steps start fast: whole-process wall times of one-shot commands beside their baselines.

    python benchmarks/startup.py            # median of 5, alternated
    python benchmarks/startup.py --repeat 9 --no-flower

Scripts and CI call din one step at a time, so each step pays its start-up.
Side by side, alternated run by run (median of ``--repeat``):

- ``din train`` of a logreg:64-10 model, 1 epoch on a 74-row digits store,
  against ``python -c "import torch"`` (target: at most 1.3x);
- ``din chain info --chain URL`` against a real anvil node, against
  ``python -c "import web3"`` (target: at most 1.5x);
- ``din aggregate`` of 20 updates of 1M parameters against a Flower script
  that loads the same files, runs Flower's ``aggregate`` and saves the result
  (target: at most 1x; Flower in its own virtual environment, as in
  ``benchmarks/aggregate.py``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

FLWR_SCRIPT = r"""
import sys
from safetensors.numpy import load_file, save_file
from flwr.server.strategy.aggregate import aggregate
files, out = sys.argv[1:-1], sys.argv[-1]
results = []
for f in files:
    d = load_file(f)
    names = sorted(d)
    results.append(([d[k] for k in names], 1))
mean = aggregate(results)
save_file(dict(zip(names, mean)), out)
"""


def wall(cmd: list[str], env: dict) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def side_by_side(name: str, ours: list[str], base: list[str], base_env, env, repeat: int, target):
    a, b = [], []
    for _ in range(repeat):
        a.append(wall(ours, env))
        b.append(wall(base, base_env))
    ma, mb = statistics.median(a), statistics.median(b)
    verdict = "met" if ma <= target * mb else "MISSED"
    print(f"{name:<34} {ma:>7.3f} {mb:>7.3f} {ma / mb:>6.2f}x  <= {target}x {verdict}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-flower", action="store_true", help="skip the aggregate line")
    args = ap.parse_args()

    import numpy as np

    from din_cli.ml import data, models

    py = sys.executable
    din = [py, "-m", "din_cli"]
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        env = {**os.environ, "PYTHONPATH": str(REPO), "DIN_HOME": str(folder / "home")}
        models.init_model("logreg:64-10", folder / "g.safetensors")
        ds = data.load_dataset("digits")
        data.save_store(folder / "s.npz", ds.x[:74], ds.y[:74])
        print(f"{'median of ' + str(args.repeat) + ' (s)':<34} {'din':>7} {'base':>7} {'ratio':>7}")
        train = [*din, "train", "--model", str(folder / "g.safetensors"), "--data"]
        train += [str(folder / "s.npz"), "--epochs", "1", "-o", str(folder / "u.safetensors")]
        side_by_side(
            "din train (74 rows, 1 epoch)",
            train,
            [py, "-c", "import torch"],
            env,
            env,
            args.repeat,
            1.3,
        )

        anvil = REPO / "node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
        if anvil.exists():
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            node = subprocess.Popen(
                [str(anvil), "--port", str(port), "--host", "127.0.0.1", "--silent"],
                start_new_session=True,
            )
            try:
                for _ in range(100):
                    try:
                        socket.create_connection(("127.0.0.1", port), 0.2).close()
                        break
                    except OSError:
                        time.sleep(0.1)
                subprocess.run(
                    [*din, "init", "--chain", url, "--dev-accounts", "1", "-q"],
                    check=True,
                    env=env,
                    stdout=subprocess.DEVNULL,
                )
                side_by_side(
                    "din chain info --chain URL (anvil)",
                    [*din, "chain", "info", "--chain", url],
                    [py, "-c", "import web3"],
                    env,
                    env,
                    args.repeat,
                    1.5,
                )
            finally:
                os.killpg(node.pid, signal.SIGTERM)
                node.wait()
        else:
            print("din chain info: no anvil in node_modules (npm install first)")

        if not args.no_flower:
            from aggregate import flwr_python, make_inputs

            fpy = flwr_python()
            files, _ = make_inputs(folder, 20, 1_000_000)
            agg = [*din, "aggregate", *files, "-o", str(folder / "out.safetensors")]
            flwr = [fpy, "-c", FLWR_SCRIPT, *files, str(folder / "flwr.safetensors")]
            side_by_side("din aggregate (20 x 1M)", agg, flwr, os.environ, env, args.repeat, 1.0)
        shutil.rmtree(folder / "home", ignore_errors=True)
    print(f"python: {py}; np {np.__version__}; each line alternates din and its baseline")


if __name__ == "__main__":
    main()
