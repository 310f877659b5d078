"""The root ``din`` command: lazy subcommands and the one place errors become exit codes."""

from __future__ import annotations

import importlib
import os
import sys

import click

from din_cli import __version__
from din_cli.errors import DinError, ExitCode

# Subcommands are imported only when used (or when --help lists them), so
# ``din --help`` never imports torch or web3. Values are "module:attribute";
# a nested dict is a group whose subcommands live in several modules.
COMMANDS: dict[str, object] = {
    "config": "din_cli.cli.config:config_group",
    "init": "din_cli.cli.chain:init",
    "chain": "din_cli.cli.chain:chain",
    "keys": {
        "_help": "Manage identities: Ethereum keystores and HPKE encryption keys.",
        "new": "din_cli.cli.keys:keys_new",
        "list": "din_cli.cli.keys:keys_list",
        "show": "din_cli.cli.keys:keys_show",
        "import": "din_cli.cli.keys:keys_import",
        "wrap": "din_cli.cli.keys:keys_wrap",
        "unwrap": "din_cli.cli.keys:keys_unwrap",
        "grant": "din_cli.cli.keys:keys_grant",
        "unseal": "din_cli.cli.keys:keys_unseal",
    },
    "ipfs": "din_cli.cli.ipfs:ipfs",
    "data": {
        "_help": "Split datasets into participants' stores; encrypt and decrypt files.",
        "split": "din_cli.cli.ml:data_split",
        "encrypt": "din_cli.cli.crypto:data_encrypt",
        "decrypt": "din_cli.cli.crypto:data_decrypt",
    },
    "model": {
        "_help": "Create, inspect and publish models.",
        "init": "din_cli.cli.ml:model_init",
        "info": "din_cli.cli.ml:model_info",
        "publish": "din_cli.cli.publish:model_publish",
    },
    "train": "din_cli.cli.ml:train",
    "aggregate": "din_cli.cli.ml:aggregate",
    "evaluate": "din_cli.cli.ml:evaluate",
    "validator": "din_cli.cli.chain:validator",
    "participant": "din_cli.cli.chain:participant",
    "task": "din_cli.cli.chain:task",
    "round": "din_cli.cli.round:round_group",
    "dispute": "din_cli.cli.dispute:dispute_group",
    "rewards": "din_cli.cli.rewards:rewards",
    "verify": "din_cli.cli.verify:verify",
    "privacy": "din_cli.cli.privacy:privacy_group",
    "node": "din_cli.cli.node:node_group",
    "simulate": "din_cli.cli.simulate:simulate",
    "stake": "din_cli.cli.economy:stake_group",
    "gov": "din_cli.cli.economy:gov_group",
    "grants": "din_cli.cli.economy:grants_group",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def __init__(self, *args, lazy: dict[str, object] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = {k: v for k, v in (lazy or {}).items() if not k.startswith("_")}

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx, name):
        if name in self.commands:
            return self.commands[name]
        spec = self.lazy.get(name)
        if spec is None:
            return None
        if isinstance(spec, dict):
            cmd = LazyGroup(name=name, lazy=spec, help=spec.get("_help"))
        else:
            module, attr = str(spec).split(":")
            cmd = getattr(importlib.import_module(module), attr)
        self.commands[name] = cmd
        return cmd


def _set_home(ctx, param, value):
    if value:
        os.environ["DIN_HOME"] = value
    return value


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="din")
@click.option(
    "--home",
    metavar="DIR",
    envvar="DIN_HOME",
    expose_value=False,
    is_eager=True,
    callback=_set_home,
    help="State folder (content store, embedded chain, keys). Default: ./.din  [env: DIN_HOME]",
)
def cli():
    """Run a Decentralized Intelligence Network from the shell.

    Federated learning with no central server: participants train on their own
    data and publish updates to IPFS; contracts on an EVM chain run the rounds;
    staked validators aggregate, audit and score; rewards settle on chain.

    Commands read and write safetensors files and CIDs on stdin/stdout, so a
    round can be piped and scripted. Exit codes: 0 ok, 1 error, 2 usage,
    3 verification failed, 4 not found, 5 transaction reverted, 6 backend
    unavailable, 7 already done, 130 interrupted.

    \b
    Example:
        CID=$(din model init --arch mlp:64-32-10 -o - | din ipfs add -)
        din ipfs cat "$CID" | din model info -
    """


def main(argv: list[str] | None = None) -> None:
    """Entry point: run ``cli`` and map every failure to one stderr line and an exit code."""
    try:
        rv = cli.main(args=argv, prog_name="din", standalone_mode=False)
        code = rv if isinstance(rv, int) else ExitCode.OK
    except DinError as e:
        if os.environ.get("DIN_DEBUG"):  # the traceback, then the line and code scripts rely on
            import traceback

            _show_causes(e)
            traceback.print_exception(e)
        _fail(e.one_line(), e.exit_code)
    except click.exceptions.Exit as e:
        code = e.exit_code
    except click.ClickException as e:  # usage errors keep click's usage line
        e.show()
        code = e.exit_code
    except (KeyboardInterrupt, click.Abort):
        _fail("interrupted", ExitCode.INTERRUPTED)
    except BrokenPipeError:
        # The reader went away (e.g. ``din ipfs cat CID | head``): exit quietly.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        code = 141
    except Exception as e:  # a bug: say so on one line; DIN_DEBUG=1 shows the traceback
        if os.environ.get("DIN_DEBUG"):
            _show_causes(e)
            raise
        _fail(
            f"internal error: {type(e).__name__}: {e} (rerun with DIN_DEBUG=1 for a traceback)",
            ExitCode.ERROR,
        )
    sys.exit(int(code))


def _show_causes(error: BaseException) -> None:
    """Let a traceback of ``error`` show every cause, even those hidden by ``raise ... from None``.

    Library code raises DinErrors ``from None`` so that users read one line;
    under DIN_DEBUG=1 the error it replaced (a parser's ValueError, an RPC
    failure) is what a developer needs to see.
    """
    seen = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        e.__suppress_context__ = False
        e = e.__cause__ or e.__context__


def _fail(message: str, code: int) -> None:
    line = " ".join(str(message).split())
    try:
        sys.stderr.write(f"din: error: {line}\n")
        sys.stderr.flush()
    except Exception:
        pass
    sys.exit(int(code))
