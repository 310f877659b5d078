"""Generate completions/ (bash, zsh, fish) and man/ (one page per command) from the click tree.

    python scripts/gen_docs.py           # write them
    python scripts/gen_docs.py --check   # exit 1 if the committed files are stale

A test runs --check, so a command whose help changed without `make docs` fails CI.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

import click
from click.shell_completion import get_completion_class

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from din_cli import __version__  # noqa: E402
from din_cli.cli.main import cli  # noqa: E402

SHELLS = {"bash": "din.bash", "zsh": "_din", "fish": "din.fish"}


def completions() -> dict[str, str]:
    out = {}
    for shell, filename in SHELLS.items():
        cls = get_completion_class(shell)
        out[f"completions/{filename}"] = cls(cli, {}, "din", "_DIN_COMPLETE").source()
    return out


def _roff(text: str) -> str:
    lines = []
    for line in text.splitlines():
        line = line.replace("\\", "\\\\").replace("-", "\\-")
        if line.startswith((".", "'")):
            line = "\\&" + line
        lines.append(line)
    return "\n".join(lines)


def _help_paragraphs(help_text: str | None) -> list[str]:
    """A command's help as click's --help reads it: dedented, cut at ``\\f``, split at blank lines.

    A docstring's paragraphs are indented, so the ``\\b`` marker of an
    unwrapped block is found only once the text is dedented.
    """
    text = inspect.cleandoc(help_text or "").split("\f", 1)[0]
    return [p.strip("\n") for p in text.split("\n\n") if p.strip()]


def _walk(cmd: click.Command, path: list[str]):
    yield cmd, path
    if isinstance(cmd, click.Group):
        ctx = click.Context(cmd, info_name=path[-1])
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from _walk(sub, path + [name])


def man_pages() -> dict[str, str]:
    pages = {}
    for cmd, path in _walk(cli, ["din"]):
        name = "-".join(path)
        title = " ".join(path)
        ctx = click.Context(cmd, info_name=title)
        usage = " ".join(cmd.collect_usage_pieces(ctx))
        parts = [
            f'.TH "{name.upper()}" "1" "" "din {__version__}" "din manual"',
            ".nh",  # no hyphenation: option names, choices and CIDs are copied as printed
            ".ad l",  # ragged right: long unbreakable words leave no stretched gaps
            ".SH NAME",
            _roff(f"{name} - {cmd.get_short_help_str(limit=200)}"),
            ".SH SYNOPSIS",
            ".B " + _roff(title),
            _roff(usage),
            ".SH DESCRIPTION",
        ]
        for para in _help_paragraphs(cmd.help):
            if para.startswith("\b"):  # click's "keep these lines as they are" marker
                parts += [".PP", ".nf", _roff(para[1:].strip("\n")), ".fi"]
            else:
                parts += [".PP", _roff(" ".join(para.split()))]
        opts = [p for p in cmd.get_params(ctx) if isinstance(p, click.Option) and not p.hidden]
        if opts:
            parts.append(".SH OPTIONS")
            for p in opts:
                rec = p.get_help_record(ctx)
                if rec:
                    # \: after each | lets a long [a|b|c] choice list break there
                    parts += [
                        ".TP",
                        ".B " + _roff(rec[0]).replace("|", "|\\:"),
                        _roff(rec[1] or ""),
                    ]
        if isinstance(cmd, click.Group):
            parts.append(".SH COMMANDS")
            for sub_name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, sub_name)
                if sub is not None and not sub.hidden:
                    parts += [
                        ".TP",
                        f".B {_roff(title + ' ' + sub_name)}",
                        _roff(sub.get_short_help_str(limit=200)),
                    ]
        if path == ["din"]:
            parts += [
                ".SH ENVIRONMENT",
                ".TP",
                ".B DIN_HOME",
                "State folder (default ./.din).",
                ".TP",
                ".B DIN_CHAIN",
                "JSON\\-RPC node URL instead of the embedded chain.",
                ".TP",
                ".B DIN_IPFS",
                "Kubo RPC multiaddr instead of the local store.",
                ".TP",
                ".B DIN_KEY",
                "Identity to act as.",
                ".TP",
                ".B DIN_PASSWORD_FILE",
                "File holding the keystore password.",
            ]
        parts += [".SH SEE ALSO", ".BR din (1)"]
        pages[f"man/{name}.1"] = "\n".join(parts) + "\n"
    return pages


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    wanted = {**completions(), **man_pages()}
    stale = []
    for rel, text in wanted.items():
        path = REPO / rel
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(rel)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists() or path.read_text() != text:
                path.write_text(text)
    existing = {str(p.relative_to(REPO)) for p in (REPO / "man").glob("*.1")}
    extra = sorted(existing - set(wanted))
    if args.check:
        if stale or extra:
            print(
                "stale docs: "
                + ", ".join(stale + [f"{e} (no such command)" for e in extra])
                + "; run `make docs`",
                file=sys.stderr,
            )
            return 1
        return 0
    for e in extra:
        (REPO / e).unlink()
    print(f"wrote {len(wanted)} files", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
