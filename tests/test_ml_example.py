"""The offline example (examples/offline/Makefile) runs and learns, in a shortened version."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

MAKEFILE = Path(__file__).resolve().parent.parent / "examples" / "offline" / "Makefile"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_shortened_offline_training_learns(tmp_path):
    din = f"{sys.executable} -m din_cli"
    args = [
        "make",
        "-s",
        "-f",
        str(MAKEFILE),
        "-j2",
        "check",
        f"DIN={din}",
        "PARTICIPANTS=3",
        "ROUNDS=2",
        "EPOCHS=3",
        "MIN_BPS=8000",
        "WORK=w",
    ]
    proc = subprocess.run(
        args, cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**os.environ}
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    score = json.loads((tmp_path / "w" / "score.json").read_text())
    assert score["metric"] == "accuracy" and score["score_bps"] >= 8000
    assert sorted(p.name for p in (tmp_path / "w").glob("round-*.safetensors")) == [
        "round-0.safetensors",
        "round-1.safetensors",
        "round-2.safetensors",
    ]
    # Everything is a file: nothing is left to do, and redoing a step gives the same bytes.
    first = (tmp_path / "w" / "round-2.safetensors").read_bytes()
    settings = [f"DIN={din}", "PARTICIPANTS=3", "ROUNDS=2", "EPOCHS=3", "WORK=w"]
    assert (
        subprocess.run(
            ["make", "-q", "-f", str(MAKEFILE), "w/score.json", *settings], cwd=tmp_path
        ).returncode
        == 0
    )
    (tmp_path / "w" / "round-2.safetensors").unlink()  # only the last aggregation is redone
    subprocess.run(
        ["make", "-s", "-f", str(MAKEFILE), "w/round-2.safetensors", *settings],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    assert (tmp_path / "w" / "round-2.safetensors").read_bytes() == first
