"""`din init`, `din chain`, `din validator`, `din participant`, `din task`: the chain commands."""

from __future__ import annotations

import os

import click

from din_cli.cli import output
from din_cli.cli.options import (
    acting_options,
    chain_option,
    context,
    json_option,
    key_address,
    key_option,
    quiet_option,
    read_password,
    unlock,
)


def _dev_password() -> str:
    """The dev accounts' password: DIN_PASSWORD_FILE / config's password_file, else a generated one.

    A generated password goes to $DIN_HOME/dev-password (mode 600) and
    config.toml's ``password_file`` points at it, so later commands need no prompt.
    """
    import secrets

    from din_cli import config
    from din_cli.files import write_secret

    if os.environ.get("DIN_PASSWORD_FILE") or config.setting("password_file"):
        return read_password()
    home = config.ensure_home()
    path = home / "dev-password"
    if not path.exists():
        write_secret(path, (secrets.token_urlsafe(24) + "\n").encode())
    _set_config("password_file", str(path))
    return path.read_text().rstrip("\r\n")


def _set_config(name: str, value: str) -> None:
    """Set a top-level string key in $DIN_HOME/config.toml, keeping the rest of the file."""
    import json
    import re

    from din_cli import config
    from din_cli.files import write_atomic

    path = config.din_home() / "config.toml"
    text = path.read_text() if path.exists() else ""
    line = f"{name} = {json.dumps(value)}\n"
    pattern = re.compile(rf"^{re.escape(name)}\s*=.*\n?", re.M)
    first_table = re.search(r"^\s*\[", text, re.M)  # top-level keys come before the first table
    cut = first_table.start() if first_table else len(text)
    head, tail = text[:cut], text[cut:]
    if pattern.search(head):
        new = pattern.sub(line, head, count=1) + tail
    else:
        new = line + text
    write_atomic(path, new.encode(), mode=0o600)


@click.command("init")
@chain_option()
@click.option(
    "--dev-accounts",
    type=click.IntRange(0, 100),
    default=None,
    metavar="N",
    help="Dev accounts to create and fund (dev1..devN) on a dev chain. Default: 8.",
)
@key_option()
@json_option()
@quiet_option()
def init(chain_url, dev_accounts, key_name, as_json):
    """Create $DIN_HOME, deploy din's contracts and fund dev accounts.

    With no --chain the chain is embedded in $DIN_HOME/chain.sqlite. On a dev
    chain (embedded, anvil) keystores dev1..devN are created and funded with
    ether and DIN tokens; their password goes to $DIN_HOME/dev-password unless
    DIN_PASSWORD_FILE is set. On another node, --key NAME deploys. Prints the
    contract addresses (NAME<TAB>ADDRESS). Running it again changes nothing
    (exit 7).

    \b
    Example:
        din init --dev-accounts 4 | grep DinTasks | cut -f2
    """
    from din_cli.chain import network
    from din_cli.config import ensure_home

    ensure_home()
    names: dict[str, str] = {}
    password: list[str] = []

    def dev_key(i: int) -> str:
        from din_cli.crypto.keystore import Keystore

        ks = Keystore()
        name = f"dev{i + 1}"
        if name in ks.names():
            info = ks.show(name)
        else:
            if not password:
                password.append(_dev_password())
            info = ks.new(name, password[0], light_kdf=True)
        names[info.address] = name
        return info.address

    dep = network.init_network(
        chain_url,
        dev_accounts=dev_accounts,
        dev_key=dev_key,
        deployer=lambda: unlock(key_name).account if key_name else None,
    )
    dev = [{"name": names.get(a, ""), "address": a} for a in dep["dev_accounts"]]
    if as_json:
        output.emit_json({**dep, "dev_accounts": dev})
        return
    output.emit(*(f"{name}\t{address}" for name, address in dep["contracts"].items()))
    where = dep["url"] or "the embedded chain"
    output.note(f"deployed on {where} (chain id {dep['chain_id']}, block {dep['block']})")
    if dev:
        output.note(
            f"dev accounts {dev[0]['name']}..{dev[-1]['name']} funded; act as one with --key NAME"
        )


@click.group("chain")
def chain():
    """Inspect the chain din runs on (embedded or JSON-RPC) and its deployment.

    \b
    Example:
        din chain info --json | jq -r .contracts.DinTasks
    """


@chain.command("info")
@chain_option()
@json_option()
def chain_info(chain_url, as_json):
    """Print chain id, head block, block time and contract addresses.

    \b
    Example:
        din chain info | grep ^head | cut -f2
    """
    from din_cli.chain import network

    info = network.chain_info(chain_url)
    if as_json:
        output.emit_json(info)
        return
    rows = [
        ("chain_id", info["chain_id"]),
        ("url", info["url"] or "embedded"),
        ("head", info["head"]),
        ("time", info["time"]),
        *info["contracts"].items(),
    ]
    output.emit(*(f"{k}\t{v}" for k, v in rows))


@chain.command("advance")
@click.argument("seconds", type=click.IntRange(0, None))
@chain_option()
def chain_advance(seconds, chain_url):
    """Move a dev chain's clock SECONDS ahead and mine a block; prints the new time.

    Lets a demo pass a phase deadline without waiting.

    \b
    Example:
        din chain advance 3600 | xargs -I{} date -d @{}
    """
    from din_cli.chain import network

    output.emit(network.advance_time(seconds, chain_url))


@click.group("validator")
def validator():
    """Stake DIN as a validator, unstake, and show a validator's state.

    \b
    Example:
        din validator stake 100 --key dev2 && din validator info --key dev2 --json | jq .active
    """


@validator.command("stake")
@click.argument("amount")
@acting_options()
def validator_stake(amount, chain_url, key_name, as_json):
    """Lock AMOUNT DIN in the validator registry (approving it first); prints the total stake.

    AMOUNT is in DIN (decimals allowed); the total must reach the registry's
    minimum stake. Your HPKE public key is published with it.

    \b
    Example:
        din validator stake 100 --key dev2 | xargs echo total stake
    """
    from din_cli.chain import network

    units = network.parse_amount(amount)
    with context(chain_url, key_name=key_name) as ctx:
        ident = ctx.identity
        state = network.stake(ctx.chain, ctx.deployment, ident.account, ident.hpke_public, units)
    output.note(
        f"staked {network.format_amount(units)} DIN; total {state['stake_din']} DIN, active: {state['active']}"
    )
    output.emit_doc(state, as_json, state["stake_din"])


@validator.command("unstake")
@acting_options()
def validator_unstake(chain_url, key_name, as_json):
    """Ask to unstake (prints the unlock time); after the delay, withdraw (prints the amount).

    While the delay runs, asking again changes nothing (exit 7).

    \b
    Example:
        din validator unstake --key dev2 --json | jq -r .unlock_at
    """
    from din_cli.chain import network

    with context(chain_url, key_name=key_name) as ctx:
        state = network.unstake(ctx.chain, ctx.deployment, ctx.account)
    if state["action"] == "withdrawn":
        output.note(f"withdrew {state['amount_din']} DIN")
        line = state["amount_din"]
    else:
        output.note(
            f"unstake requested; run it again after {network.iso_time(state['unlock_at'])} to withdraw"
        )
        line = state["unlock_at"]
    output.emit_doc(state, as_json, line)


@validator.command("info")
@click.argument("address", required=False)
@chain_option()
@key_option()
@json_option()
def validator_info(address, chain_url, key_name, as_json):
    """Show the stake (self-stake plus delegations), status and HPKE key of ADDRESS (default: --key's).

    \b
    Example:
        din validator info --key dev2 | grep ^stake | cut -f2
    """
    from din_cli.chain import network

    address = _checksum(address) if address else key_address(key_name)
    with context(chain_url, act=False) as ctx:
        state = network.validator_state(ctx.chain, ctx.deployment, address)
    if as_json:
        output.emit_json(state)
        return
    output.emit_fields(
        [
            ("address", state["address"]),
            ("stake", state["stake_din"]),
            ("self_stake", network.format_amount(state["self_stake"])),
            ("delegated", network.format_amount(state["delegated"])),
            ("bonded", state["bonded_din"]),
            ("active", str(state["active"]).lower()),
            ("unlock_at", state["unlock_at"] or None),
            ("hpke_public", state["hpke_public"]),
        ]
    )


def _commission():
    from din_cli.cli.economy import validator_commission

    return validator_commission


validator.add_command(_commission())


@validator.command("join")
@click.argument("task")
@acting_options()
def validator_join(task, chain_url, key_name, as_json):
    """Register as a validator of TASK (needs an active stake); prints your validator index.

    \b
    Example:
        din validator join 1 --key dev4 | xargs echo validator index
    """
    from din_cli.chain import network

    with context(chain_url, key_name=key_name) as ctx:
        result = network.register_validator(ctx.chain, ctx.deployment, ctx.account, task)
    _print_joined(result, as_json, f"registered for task {result['task']} as validator")


def _checksum(address: str) -> str:
    from eth_utils import is_address, to_checksum_address

    from din_cli.errors import UsageError

    if not is_address(address):
        raise UsageError(f"{address!r} is not an address", "give a 0x-prefixed 20-byte address")
    return to_checksum_address(address)


@click.group("participant")
def participant():
    """Take part in tasks as a participant (trainer).

    \b
    Example:
        din participant join 1 --key dev3 | xargs echo participant index
    """


@participant.command("join")
@click.argument("task")
@acting_options()
def participant_join(task, chain_url, key_name, as_json):
    """Join TASK as a participant, publishing your HPKE key; prints your participant index.

    \b
    Example:
        din participant join 1 --key dev3 --json | jq .index
    """
    from din_cli.chain import network

    with context(chain_url, key_name=key_name) as ctx:
        ident = ctx.identity
        result = network.join(ctx.chain, ctx.deployment, ident.account, task, ident.hpke_public)
    _print_joined(result, as_json, f"joined task {result['task']} as participant")


@participant.command("unmask")
@click.argument("task")
@acting_options(ipfs=True)
def participant_unmask(task, chain_url, ipfs_api, key_name, as_json):
    """Reveal your shares for unmasking your subgroup's sum in a secagg TASK; prints the reveal's CID.

    Run it once the round's training phase has closed (aggregation-commit):
    for each surviving neighbour it reveals your share of its self-mask seed,
    and of its pair seeds with neighbours that dropped out (no update on
    chain, or a bad one), never both, and nothing about an update it cannot
    fetch; short of t colluding neighbours, no single update is unmasked.
    Validators sum as soon as every survivor
    has revealed, or at the middle of the phase with the reveals in by then.
    Exit 2 outside that phase or when you submitted nothing this round;
    exit 7 (already done) when you already revealed.

    \b
    Example:
        din round wait 1 --phase aggregation-commit && din participant unmask 1 --key dev3
    """
    from din_cli.protocol import secagg
    from din_cli.protocol.roundflow import task_number

    with context(chain_url, ipfs_api, key_name) as ctx:
        result = secagg.reveal(ctx, task_number(task))
    if as_json:
        output.emit_json(result)
        return
    output.note(
        f"revealed {result['shares']} shares for task {result['task_id']} round {result['round']}"
    )
    output.emit(result["cid"])


def _print_joined(result: dict, as_json: bool, what: str) -> None:
    """The index a join gave: JSON, or the index on stdout and ``what INDEX`` on stderr."""
    if as_json:
        output.emit_json(result)
        return
    output.note(f"{what} {result['index']}")
    output.emit(result["index"])


@click.group("task")
def task():
    """Follow tasks: phase, round, deadline and members.

    \b
    Example:
        din task status 1 --json | jq -r .phase
    """


@task.command("list")
@chain_option()
@json_option()
def task_list(chain_url, as_json):
    """List the tasks of this deployment, newest first: id, phase, round, participants, validators.

    \b
    Example:
        din task list | awk -F'\t' '$2 == "joining" {print $1}'
        din task list | head -n 1 | cut -f1
    """
    from din_cli.chain import network

    with context(chain_url, act=False) as ctx:
        tasks = network.list_tasks(ctx.chain, ctx.deployment)[::-1]  # newest first
    lines = (
        f"{t['task_id']}\t{t['phase']}\t{t['round']}\t{t['participants']}\t{t['validators']}"
        for t in tasks
    )
    output.emit_doc(tasks, as_json, *lines)


@task.command("status")
@click.argument("task_id", metavar="TASK")
@chain_option()
@key_option()
@json_option()
def task_status(task_id, chain_url, key_name, as_json):
    """Show TASK's phase, round, deadline and counts (and your role with --key).

    \b
    Example:
        din task status 1 | grep ^phase | cut -f2
    """
    from din_cli.chain import network

    account = key_address(key_name) if key_name else None
    with context(chain_url, act=False) as ctx:
        doc = network.task_status(ctx.chain, ctx.deployment, task_id, account=account)
    if as_json:
        output.emit_json(doc)
        return
    output.emit_task_status(
        doc,
        (
            "owner",
            "arch",
            "deposit",
            "metric",
            "scoring",
            "privacy",
            "aggregation",
            "aggregation_param",
            "max_samples",
            "model_digest",
        ),
    )
