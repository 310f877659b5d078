"""The fairness experiment (examples/fairness) runs and meets its targets, in a shortened version:
one round on breast_cancer. Contribution scoring pays the free-rider, the copycat, the
shuffled-label participant and the poisoner nothing, ranks payouts with exact Shapley, and the
task's median rule keeps the final accuracy within a point of the run without attackers."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "fairness"


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_the_fairness_example_meets_its_targets_on_a_short_run():
    run = subprocess.run(
        [
            "make",
            "-C",
            str(EXAMPLE),
            "check",
            "DATASETS=breast_cancer",
            "ROUNDS=1",
            f"PYTHON={sys.executable}",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    lines = {line.split("  ")[0]: line for line in run.stdout.splitlines()}
    gtg = [float(v) for v in lines["free-rider"].split()[1:]]
    assert gtg[-1] == 0.0  # the free-rider's gtg payout
    assert "target missed" not in run.stderr
    honest = lines["honest-big"].split()
    assert float(honest[-1]) > float(honest[-2])  # gtg pays the big honest one more than update
