"""`make demo` (examples/nodes.sh: one node per actor) and `make demo-steps` (examples/round.sh: one
command at a time) run a whole task, and its outcome holds when checked again here; `make
governance` (examples/governance/governance.sh) then runs the network's economy on it.

The demo takes minutes, so it runs when asked (DIN_RUN_DEMO=1) and in CI
(DIN_REQUIRE_INTEGRATION=1), on the embedded chain and, in CI, on anvil with
an IPFS daemon.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NODES = REPO / "examples" / "nodes.sh"
STEPS = REPO / "examples" / "round.sh"
GOVERNANCE = REPO / "examples" / "governance" / "governance.sh"

pytestmark = pytest.mark.slow


def _wanted():
    if not (os.environ.get("DIN_RUN_DEMO") or os.environ.get("DIN_REQUIRE_INTEGRATION")):
        pytest.skip("the demo takes minutes: set DIN_RUN_DEMO=1 (CI sets DIN_REQUIRE_INTEGRATION)")


def run_demo(tmp_path: Path, script: Path, **env) -> tuple[Path, subprocess.CompletedProcess]:
    work = tmp_path / "demo"
    return work, run_script(work, script, timeout=1800, **env)


def run_script(work: Path, script: Path, timeout: int = 900, **env) -> subprocess.CompletedProcess:
    """Run ``script`` (a demo, or an example that continues one) in the work folder ``work``."""
    bindir = Path(sys.executable).parent
    full = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DIN_")},
        "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
        "DEMO_DIR": str(work),
        **env,
    }
    proc = subprocess.run(
        ["bash", str(script)], env=full, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"{script.name} failed ({proc.returncode}):\n{proc.stderr[-5000:]}"
    return proc


def din(work: Path, *args: str, **env) -> str:
    full = {**os.environ, "DIN_HOME": str(work / ".din"), **env}
    proc = subprocess.run(
        [sys.executable, "-m", "din_cli", *args], env=full, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def check_outcome(work: Path, env: dict, privacy: str = "sealed") -> None:
    summary = (work / "summary.txt").read_text()
    accuracy = [
        line.split()[1] for line in summary.splitlines() if line[:1].isdigit() and "%" in line
    ]
    assert len(accuracy) == 3 and float(accuracy[-1]) >= 90.0, summary

    shown = json.loads(din(work, "rewards", "show", "--task", "1", "--json", **env))
    assert (
        shown["phase"] == "settled" and shown["fully_paid"] and shown["claimed"] == shown["deposit"]
    )
    dishonest = [v for v in shown["validators"] if v["slashed"]]
    assert len(dishonest) == 1 and dishonest[0]["stake"] < 100 * 10**18
    assert all(v["stake"] == 100 * 10**18 for v in shown["validators"] if not v["slashed"])
    keys = dict(line.split("\t") for line in din(work, "keys", "list").splitlines())
    assert dishonest[0]["address"] == keys["dev11"]

    paid = {p["address"]: p["claimed"] for p in shown["participants"]}
    shuffled = paid.pop(keys["dev7"])
    honest = list(paid.values())
    assert len(honest) == 5 and shuffled < statistics.median(honest) / 2

    # the demo's task is sealed: without a key only the global models can be checked; an honest
    # validator of the subgroup checks every subgroup aggregate too. A secagg task's sums are
    # checked by anyone, from the masked updates and the revealed shares.
    blind = din(work, "verify", "--task", "1", **env).splitlines()
    first = "ok" if privacy == "secagg" else "sealed"
    assert [c.split("\t")[3] for c in blind] == [first, "ok"] * 3, blind
    checks = din(work, "verify", "--task", "1", "--key", "dev8", **env).splitlines()
    assert len(checks) == 6 and all("\tok\t" in c for c in checks)


def test_demo_on_nodes_on_the_embedded_defaults(tmp_path):
    _wanted()
    work, proc = run_demo(tmp_path, NODES)
    assert "all checks passed" in proc.stderr
    assert "payout" in proc.stdout and "slashed for" in proc.stdout
    check_outcome(work, {})
    # the owner, 6 participants and 4 validators (the dishonest one too) each ran a node to the end
    status = json.loads(din(work, "node", "status", "--json"))
    assert sorted(s["state"] for s in status) == ["finished"] * 11

    # `make governance` on the settled task: credits, a DPP passed by a quadratic credit vote that
    # raises the minimum slash, a delegation's reward, a quadratic-funding round paying two projects
    proc = run_script(work, GOVERNANCE)
    assert "all checks passed" in proc.stderr, proc.stderr[-3000:]
    supply = json.loads(din(work, "stake", "supply", "--json"))
    assert supply["offence_slash_bps"] == 1000
    proposal = json.loads(din(work, "gov", "status", "1", "--json"))
    assert proposal["state"] == "executed" and proposal["for"] > proposal["against"]
    grants = json.loads(din(work, "grants", "status", "1", "--json"))
    matched = [p["matched"] for p in grants["projects"]]
    assert sum(matched) == grants["matching"] and all(m > 0 for m in matched)
    assert all(p["claimed"] for p in grants["projects"])
    credits = json.loads(din(work, "gov", "credits", "--key", "dev11", "--json"))
    assert credits["credits"] == 0  # the slashed validator


def test_demo_secagg_on_nodes_with_a_participant_dropping_out(tmp_path):
    _wanted()
    env = {"DEMO_PRIVACY": "secagg", "DEMO_DROPOUT": "dev7", "DEMO_PHASE_SECONDS": "45"}
    work, proc = run_demo(tmp_path, NODES, **env)
    assert "all checks passed" in proc.stderr and "dropped out" in proc.stdout
    check_outcome(work, {}, privacy="secagg")
    shown = json.loads(din(work, "rewards", "show", "--task", "1", "--json"))
    keys = dict(line.split("\t") for line in din(work, "keys", "list").splitlines())
    paid = {p["address"]: p["claimed"] for p in shown["participants"]}
    assert paid[keys["dev7"]] == 0 and all(v > 0 for a, v in paid.items() if a != keys["dev7"])
    # every node ran to the end; the dropout ran none
    status = json.loads(din(work, "node", "status", "--json"))
    assert sorted(s["state"] for s in status) == ["finished"] * 10
    # the last round summed every survivor: no masked update was refused, no seed was lost
    shown = din(work, "round", "status", "--task", "1", "--json")
    assert "bad-secagg" not in shown and "unrecoverable" not in shown


@pytest.mark.integration
def test_demo_steps_on_anvil_and_an_ipfs_daemon(tmp_path, anvil_url, ipfs_api):
    env = {"DIN_CHAIN": anvil_url, "DIN_IPFS": ipfs_api}
    work, _ = run_demo(tmp_path, STEPS, **env)
    check_outcome(work, env)
