"""The man pages in man/ render: no control bytes, no formatter warnings, examples line by line."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

MAN = Path(__file__).resolve().parent.parent / "man"
PAGES = sorted(MAN.glob("*.1"))
# Control bytes other than newline and tab: a stray \b or an escape sequence shows as garbage.
CONTROL = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]")


def _renderer() -> list[str] | None:
    """``man -l`` (what a user runs), else plain groff; None when this machine has neither."""
    if shutil.which("man"):
        return ["man", "-l"]
    if shutil.which("groff"):
        # -P-c -P-b -P-o -P-u: grotty writes plain text, no SGR escapes or overstrikes
        return ["groff", "-man", "-Tutf8", "-ww", "-P-c", "-P-b", "-P-o", "-P-u"]
    return None


def render(page: Path) -> subprocess.CompletedProcess:
    cmd = _renderer()
    if cmd is None:
        pytest.skip("neither man nor groff is installed: cannot render man pages")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MAN_KEEP_FORMATTING", "MANOPT", "GROFF_SGR")
    }
    env.update(MANWIDTH="80", MANPAGER="cat", PAGER="cat", LC_ALL="C.UTF-8")
    return subprocess.run([*cmd, str(page)], capture_output=True, env=env, timeout=60)


def unroff(line: str) -> str:
    """A source line as the reader sees it: the escapes gen_docs writes undone."""
    return line.replace("\\&", "").replace("\\:", "").replace("\\-", "-").replace("\\\\", "\\")


def example_blocks(source: str) -> list[list[str]]:
    """The lines of each ``.nf`` ... ``.fi`` (no-fill) block of a page."""
    return [
        block.strip("\n").splitlines()
        for block in re.findall(r"^\.nf\n(.*?)^\.fi$", source, re.M | re.S)
    ]


def test_every_command_has_a_page():
    assert len(PAGES) >= 50, f"only {len(PAGES)} pages in {MAN}"
    assert (MAN / "din.1").is_file()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_source_has_no_control_bytes_and_examples_are_unfilled(page):
    data = page.read_bytes()
    bad = CONTROL.search(data)
    assert bad is None, f"{page.name}: control byte {bad.group()!r} at offset {bad.start()}"
    source = data.decode()
    blocks = example_blocks(source)
    # an "Example:" outside a no-fill block has had its lines joined into one
    assert source.count("Example:") == sum(line == "Example:" for b in blocks for line in b), (
        page.name
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_renders_cleanly_and_keeps_example_lines(page):
    proc = render(page)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stderr == b"", f"{page.name}: {proc.stderr.decode()}"
    out = proc.stdout
    bad = CONTROL.search(out)
    assert bad is None, (
        f"{page.name} renders control byte {bad.group()!r}: {out[max(0, bad.start() - 40) : bad.start() + 40]!r}"
    )
    rendered = [line.strip() for line in out.decode().splitlines()]
    title = page.stem.upper()
    assert rendered[0].startswith(f"{title}(1)"), rendered[0]
    for block in example_blocks(page.read_text()):
        for line in block:
            if line.strip():
                assert unroff(line).strip() in rendered, (
                    f"{page.name}: example line {unroff(line)!r} not on a line of its own"
                )


def test_example_of_ipfs_add_renders_line_by_line():
    """The case that broke: click's indented \\b block was folded into one paragraph."""
    rendered = [
        line.strip() for line in render(MAN / "din-ipfs-add.1").stdout.decode().splitlines()
    ]
    i = rendered.index("Example:")
    assert rendered[i + 1].startswith("CID=$(curl -sL ")
    assert rendered[i + 2] == "din ipfs add --only-hash --cid-version 0 model.safetensors"
