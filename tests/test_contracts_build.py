"""The committed contract artifacts are the compiled sources: no Node needed to check hashes."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "din_cli" / "chain" / "artifacts"
SOURCES = REPO / "din_cli" / "chain" / "contracts"


def manifest() -> dict:
    return json.loads((ARTIFACTS / "manifest.json").read_text())


def test_manifest_names_every_source_with_its_hash():
    m = manifest()
    ours = {f"din_cli/chain/contracts/{p.name}": p for p in sorted(SOURCES.glob("*.sol"))}
    assert ours, "no Solidity sources"
    for unit, path in ours.items():
        assert m["sources"].get(unit) == hashlib.sha256(path.read_bytes()).hexdigest(), (
            f"{unit} changed since the artifacts were built: run `make contracts`"
        )
    assert m["compiler"]["version"].startswith("0.8.30+")
    assert m["settings"]["evmVersion"] == "prague"
    assert m["openzeppelin"] == "5.4.0"


def test_artifacts_are_abi_and_bytecode_within_the_size_limit():
    m = manifest()
    from din_cli.chain.network import CONTRACTS

    assert "DinPayouts" in CONTRACTS  # the linked library is deployed and checked like the rest
    for name in CONTRACTS:
        text = (ARTIFACTS / f"{name}.json").read_text()
        art = json.loads(text)
        assert art["bytecode"].startswith("0x") and len(art["bytecode"]) > 1000
        # a library's functions take storage references, which have no ABI: it has events only
        kind = "event" if name == "DinPayouts" else "function"
        assert any(e.get("type") == kind for e in art["abi"])
        assert m["artifacts"][f"{name}.json"] == hashlib.sha256(text.encode()).hexdigest()
        assert m["runtimeSizes"][name] <= 24576
        assert "/work/" not in text and "/home/" not in text  # no absolute paths


@pytest.mark.slow
def test_recompiling_reproduces_the_committed_artifacts():
    node = shutil.which("node")
    if node is None or not (REPO / "node_modules" / "solc").is_dir():
        pytest.skip("node and node_modules/solc are needed to recompile (npm ci)")
    proc = subprocess.run(
        [node, "scripts/build_contracts.mjs", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
