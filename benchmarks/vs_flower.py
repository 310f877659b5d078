"""`make demo` beside Flower's simulation engine running the same federated job.

    python benchmarks/vs_flower.py              # one din run, then one Flower run
    python benchmarks/vs_flower.py --repeat 3   # alternated; the medians count
    python benchmarks/vs_flower.py --json       # one JSON document on stdout

The job, read from ``examples/common.sh`` and ``examples/nodes.sh`` so it
follows the demo: digits split by the demo's own ``din data split`` line (6
stores, Dirichlet 0.5, seed 1, participant 6's labels shuffled) plus the
reserved test pool; the genesis model of its ``din model init`` line
(``logreg:64-10``, seed 0); ROUNDS rounds in which every store trains EPOCHS
local epochs of plain minibatch SGD (learning rate LR, batch 32, ``din node
run``'s default; cross-entropy; batch order drawn from a generator seeded
with the round number, as ``din train`` does); FedAvg weighted by rows (the
task's ``--max-samples`` cap, 65536, is far above every store); the global
model after the last round scored for accuracy on the test pool.

Compared, alternated ``--repeat`` times, each in a fresh process:

- din: the whole ``make demo`` command with the venv already built (run as
  ``make -o .venv/.installed demo``, so a stale install stamp never puts a
  reinstall into the time), in a fresh temporary work folder
  (``DEMO_DIR``, its own ``DIN_HOME``; removed afterwards unless ``--keep``),
  on the embedded chain and local store unless ``DIN_CHAIN``/``DIN_IPFS`` say
  otherwise. Besides the training above it deploys the contracts, funds 11
  accounts, publishes the task with a deposit, runs 11 ``din node run``
  processes (owner, 6 participants, 4 staked validators, one of them
  dishonest), stores every model by CID, has the validators aggregate,
  commit, reveal and audit every round, posts the encrypted test set, scores
  every participant's contribution, slashes, settles and claims, then checks
  the outcome (``din verify``, payouts, each round's accuracy). Its accuracy
  is the final round's line of the demo's summary (``din evaluate`` of the
  accepted global model on the test pool).
- Flower: a child process in Flower's own virtual environment (this file,
  run by that interpreter with ``--flower-child``): ``flwr.simulation.
  run_simulation`` on the Ray backend with 6 virtual SuperNodes (one per
  store) and Flower's default client resources (``--client-cpus`` changes
  them), a ``ServerApp`` running ``flwr.serverapp.strategy.FedAvg``
  (``fraction_train=1``: every client every round; no federated evaluation)
  and a ``ClientApp`` that trains ``torch.nn.Linear(64, 10)`` exactly as
  ``din train`` does (the same update rule, ``p -= lr * grad``, without
  ``torch.optim``, whose optimizer construction pulls in ``torch._dynamo``,
  about a second in each Ray worker: this favours Flower). The strategy's
  ``evaluate_fn`` scores the global model centrally on the test pool after
  each round. Three times are taken: the whole child process (interpreter,
  imports, Ray's start and stop), the ``run_simulation`` call, and
  ``strategy.start`` (the rounds alone). Flower's telemetry is off
  (``FLWR_TELEMETRY_ENABLED=0``) so no network call lands in its time.

The same inputs: the script makes the stores and the genesis model with din's
CLI from the demo's own command lines and, after each din run, checks that
the demo's files hold the same arrays and bytes. Both sides train on all six
stores, the shuffled-label one included: din admits its update into the
aggregate (admission checks form, not quality; the demo penalises it in the
payout through its contribution score), and FedAvg averages it in too, so
both global models carry it.

Not compared: Flower has no chain, content addressing, encryption,
contribution scoring or settlement; that work is inside din's time and
outside Flower's. din's CPU setup (one process per actor, torch's threads) and
Ray's (actors sized by ``client_resources``) both use the whole machine.

Target (issue 13): din's wall time <= 2x Flower's whole child process. Flower
runs in its own virtual environment, never in din's: the interpreter named by
``DIN_BENCH_FLWR_PYTHON``, else ``~/.cache/din-bench/flwr-venv`` (made as
``benchmarks/aggregate.py`` makes it); the script adds din's torch version
and ``flwr[simulation]`` (Ray) at Flower's installed version when missing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET = 2.0  # din's wall time / Flower's, at most
BATCH_SIZE = 32  # `din node run --batch-size`'s default; examples/nodes.sh passes none


def demo_job() -> dict:
    """The demo's settings and its data and model command lines, from examples/*.sh."""
    common = (REPO / "examples" / "common.sh").read_text()
    nodes = (REPO / "examples" / "nodes.sh").read_text()
    if "--batch-size" in nodes:
        raise SystemExit("examples/nodes.sh now passes --batch-size; update BATCH_SIZE here")

    def setting(name: str) -> str:
        m = re.search(rf"^{name}=(\S+)$", common, re.M)
        if not m:
            raise SystemExit(f"examples/common.sh has no {name}= line")
        return m.group(1)

    def command(prefix: str) -> list[str]:
        m = re.search(rf"^\s*({re.escape(prefix)} [^\n>]*)", common, re.M)
        if not m:
            raise SystemExit(f"examples/common.sh has no `{prefix}` line")
        return shlex.split(m.group(1))[1:]  # without the leading `din`

    split = command("din data split")
    participants = int(split[split.index("--participants") + 1])
    return {
        "rounds": int(setting("ROUNDS")),
        "epochs": int(setting("EPOCHS")),
        "lr": float(setting("LR")),
        "batch_size": BATCH_SIZE,
        "participants": participants,
        "split": split,
        "model_init": command("din model init"),
    }


def prepare_inputs(job: dict, folder: Path) -> dict:
    """Run the demo's data split and model init in ``folder``; the files Flower reads."""
    env = {**os.environ, "DIN_HOME": str(folder / ".din"), "PYTHONPATH": str(REPO)}
    for args in (job["split"], job["model_init"]):
        subprocess.run(
            [sys.executable, "-m", "din_cli", *args],
            cwd=folder,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    out = job["split"][job["split"].index("--out") + 1]
    genesis = job["model_init"][job["model_init"].index("-o") + 1]
    stores = sorted((folder / out).glob("participant-*.npz"))
    if len(stores) != job["participants"]:
        raise SystemExit(f"din data split made {len(stores)} stores, not {job['participants']}")
    return {
        "folder": str(folder),
        "stores": [str(p) for p in stores],
        "test": str(folder / out / "test.npz"),
        "genesis": str(folder / genesis),
        "out": out,
        "genesis_name": genesis,
    }


def same_inputs(inputs: dict, work: Path) -> bool:
    """Whether the demo's work folder holds the stores' arrays and the genesis bytes used here."""
    import numpy as np

    mine = [*inputs["stores"], inputs["test"]]
    for path in mine:
        theirs = work / inputs["out"] / Path(path).name
        if not theirs.exists():
            return False
        with np.load(path) as a, np.load(theirs) as b:
            if sorted(a.files) != sorted(b.files):
                return False
            if not all(np.array_equal(a[k], b[k]) for k in a.files):
                return False
    demo_genesis = work / inputs["genesis_name"]
    return (
        demo_genesis.exists() and Path(inputs["genesis"]).read_bytes() == demo_genesis.read_bytes()
    )


def run_din(job: dict, inputs: dict, keep: bool) -> dict:
    """Time one whole `make demo` in a fresh work folder; its final accuracy from the summary."""
    folder = Path(tempfile.mkdtemp(prefix="din-vs-flower-demo-"))
    work = folder / "demo"
    env = {**os.environ, "DEMO_DIR": str(work)}
    failed = True
    try:
        t = time.perf_counter()
        proc = subprocess.run(
            ["make", "-o", ".venv/.installed", "demo"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - t
        if proc.returncode:
            raise SystemExit(
                f"make demo failed (exit {proc.returncode}; work folder kept: {work}):\n"
                f"{proc.stderr[-3000:]}"
            )
        summary = (work / "summary.txt").read_text()
        per_round = {
            int(r): (int(whole) * 100 + int(frac)) / 10000  # the summary's basis points
            for r, whole, frac in re.findall(r"^(\d+)\s+(\d+)\.(\d\d) %$", summary, re.M)
        }
        if job["rounds"] not in per_round:
            raise SystemExit(f"no round {job['rounds']} accuracy in {work / 'summary.txt'}")
        failed = False
        return {
            "seconds": wall,
            "accuracy": per_round[job["rounds"]],
            "per_round": [per_round.get(r) for r in range(1, job["rounds"] + 1)],
            "same_inputs": same_inputs(inputs, work),
            # the demo's progress lines: each step's start, in seconds from the script's start
            "steps": [
                {"step": step, "at": int(at)}
                for step, at in re.findall(r"^== (.*) \((\d+)s\)$", proc.stderr, re.M)
            ],
            "work": str(work) if keep else None,
        }
    finally:
        if not (keep or failed):
            shutil.rmtree(folder, ignore_errors=True)


def flower_python(torch_version: str) -> str:
    """Flower's interpreter, with torch and Ray added when missing."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from aggregate import flwr_python

    py = flwr_python()
    probe = subprocess.run([py, "-c", "import torch, ray"], capture_output=True)
    if probe.returncode:
        version = subprocess.run(
            [py, "-c", "import flwr; print(flwr.__version__)"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        print(f"adding torch=={torch_version} and flwr[simulation] to {py} (once)", file=sys.stderr)
        subprocess.run(
            [
                py,
                "-m",
                "pip",
                "install",
                "-q",
                f"torch=={torch_version}",
                f"flwr[simulation]=={version}",
            ],
            check=True,
        )
    return py


def run_flower(py: str, job: dict, inputs: dict, client_cpus: float | None) -> dict:
    """Time one whole Flower child process; its own timings and accuracy from its last line."""
    config = {**job, **inputs, "client_cpus": client_cpus}
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0"}
    t = time.perf_counter()
    proc = subprocess.run(
        [py, str(Path(__file__).resolve()), "--flower-child", json.dumps(config)],
        capture_output=True,
        text=True,
        env=env,
    )
    wall = time.perf_counter() - t
    lines = proc.stdout.strip().splitlines()
    if proc.returncode or not lines:
        raise SystemExit(
            f"the Flower child failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    return {"seconds": wall, **json.loads(lines[-1])}


def flower_child(config: dict) -> None:
    """In Flower's venv: the job on Flower's simulation engine; one JSON line on stdout."""
    import numpy as np
    import torch
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation
    from safetensors.numpy import load_file

    stores, epochs, lr = config["stores"], int(config["epochs"]), float(config["lr"])
    batch_size, rounds = int(config["batch_size"]), int(config["rounds"])
    genesis = load_file(config["genesis"])
    (w_name,) = [k for k in genesis if k.endswith("weight")]
    (b_name,) = [k for k in genesis if k.endswith("bias")]
    out_features, in_features = genesis[w_name].shape
    with np.load(config["test"]) as z:
        test_x, test_y = torch.from_numpy(z["x"]), torch.from_numpy(z["y"])

    def linear(state: dict) -> torch.nn.Linear:
        model = torch.nn.Linear(in_features, out_features)
        model.load_state_dict(state)
        return model

    client = ClientApp()

    @client.train()
    def train(msg: Message, context: Context) -> Message:
        with np.load(stores[int(context.node_config["partition-id"])]) as z:
            x, y = torch.from_numpy(z["x"]), torch.from_numpy(z["y"])
        model = linear(msg.content["arrays"].to_torch_state_dict())
        params = list(model.parameters())
        loss_fn = torch.nn.CrossEntropyLoss()
        gen = torch.Generator().manual_seed(int(msg.content["config"]["server-round"]))
        n = len(y)
        model.train()
        for _ in range(epochs):
            perm = torch.randperm(n, generator=gen)
            for start in range(0, n, batch_size):
                idx = perm[start : start + batch_size]
                for p in params:
                    p.grad = None
                loss = loss_fn(model(x[idx]), y[idx])
                loss.backward()
                with torch.no_grad():
                    for p in params:
                        p.add_(p.grad, alpha=-lr)
        content = RecordDict(
            {
                "arrays": ArrayRecord(model.state_dict()),
                "metrics": MetricRecord({"num-examples": n, "train-loss": float(loss)}),
            }
        )
        return Message(content=content, reply_to=msg)

    server = ServerApp()
    result: dict = {"accuracy": {}}

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model = linear(arrays.to_torch_state_dict())
        model.eval()
        with torch.no_grad():
            correct = int((model(test_x).argmax(1) == test_y).sum())
        result["accuracy"][server_round] = correct / len(test_y)
        return MetricRecord({"accuracy": correct / len(test_y)})

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = FedAvg(
            fraction_train=1.0,
            fraction_evaluate=0.0,
            min_train_nodes=len(stores),
            min_available_nodes=len(stores),
        )
        start = linear(
            {"weight": torch.from_numpy(genesis[w_name]), "bias": torch.from_numpy(genesis[b_name])}
        )
        t = time.perf_counter()
        strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(start.state_dict()),
            num_rounds=rounds,
            evaluate_fn=evaluate,
        )
        result["rounds_seconds"] = time.perf_counter() - t

    backend = None
    if config["client_cpus"] is not None:
        backend = {"client_resources": {"num_cpus": config["client_cpus"], "num_gpus": 0.0}}
    t = time.perf_counter()
    run_simulation(
        server_app=server,
        client_app=client,
        num_supernodes=len(stores),
        backend_config=backend,
    )
    simulation = time.perf_counter() - t
    if rounds not in result["accuracy"]:
        raise SystemExit(f"Flower's simulation ended before round {rounds} was evaluated")
    import flwr

    print(
        json.dumps(
            {
                "accuracy": result["accuracy"][rounds],
                "per_round": [result["accuracy"][r] for r in range(1, rounds + 1)],
                "simulation_seconds": simulation,
                "rounds_seconds": result["rounds_seconds"],
                "flwr": flwr.__version__,
                "torch": torch.__version__,
            }
        )
    )


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--flower-child":
        flower_child(json.loads(sys.argv[2]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="din and Flower runs, alternated; the medians count (default 1)",
    )
    ap.add_argument(
        "--client-cpus",
        type=float,
        help="Ray CPUs per Flower client (default: Flower's own default, 2)",
    )
    ap.add_argument("--keep", action="store_true", help="keep each demo's work folder")
    ap.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    args = ap.parse_args()
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    if not (REPO / ".venv" / "bin" / "din").exists():
        raise SystemExit("din's venv is not built; run `make install` first")

    from importlib.metadata import version

    job = demo_job()
    py = flower_python(version("torch").split("+")[0])
    dins, flowers = [], []
    with tempfile.TemporaryDirectory(prefix="din-vs-flower-inputs-") as d:
        inputs = prepare_inputs(job, Path(d))
        for i in range(args.repeat):
            print(f"run {i + 1}/{args.repeat}: make demo", file=sys.stderr, flush=True)
            dins.append(run_din(job, inputs, args.keep))
            print(f"run {i + 1}/{args.repeat}: Flower", file=sys.stderr, flush=True)
            flowers.append(run_flower(py, job, inputs, args.client_cpus))
    din_s = statistics.median(r["seconds"] for r in dins)
    flwr_s = statistics.median(r["seconds"] for r in flowers)
    ratio = din_s / flwr_s
    report = {
        "job": {k: job[k] for k in ("rounds", "epochs", "lr", "batch_size", "participants")},
        "din": {
            "seconds": din_s,
            "accuracy": dins[-1]["accuracy"],
            "same_inputs": all(r["same_inputs"] for r in dins),
            "runs": dins,
        },
        "flower": {
            "seconds": flwr_s,
            "simulation_seconds": statistics.median(r["simulation_seconds"] for r in flowers),
            "rounds_seconds": statistics.median(r["rounds_seconds"] for r in flowers),
            "accuracy": flowers[-1]["accuracy"],
            "version": flowers[-1]["flwr"],
            "torch": flowers[-1]["torch"],
            "client_cpus": args.client_cpus,
            "runs": flowers,
        },
        "ratio": ratio,
        "target": TARGET,
        "met": ratio <= TARGET,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    fl = report["flower"]
    print(
        f"job: digits, {job['participants']} stores (participant {job['participants']} with "
        f"shuffled labels), logreg:64-10, {job['rounds']} rounds x {job['epochs']} epochs, "
        f"lr {job['lr']}, batch {job['batch_size']}; median of {args.repeat}"
    )
    print(f"{'':<30} {'wall s':>8} {'accuracy':>9}")
    print(
        f"{'din: make demo':<30} {din_s:>8.1f} {report['din']['accuracy']:>9.2%}"
        "   chain, encryption, evaluation and settlement included"
    )
    print(
        f"{'Flower ' + fl['version'] + ' simulation':<30} {flwr_s:>8.1f} {fl['accuracy']:>9.2%}"
        f"   whole process; run_simulation {fl['simulation_seconds']:.1f} s,"
        f" rounds {fl['rounds_seconds']:.1f} s"
    )
    print(
        f"ratio din / Flower: {ratio:.2f}x; target <= {TARGET:.1f}x: "
        f"{'met' if report['met'] else 'missed'}"
    )
    if not report["din"]["same_inputs"]:
        print("WARNING: the demo's stores or genesis model differ from Flower's inputs")


if __name__ == "__main__":
    main()
