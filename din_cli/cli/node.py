"""``din node``: long-lived processes that follow the chain and act for their identities."""

from __future__ import annotations

import json
import sys
import time

import click

from din_cli.cli import output
from din_cli.cli.options import (
    chain_option,
    ipfs_option,
    json_option,
    parse_scores,
    quiet_option,
)


@click.group("node")
def node_group():
    """Run nodes: processes that follow the chain and act when their turn comes.

    A node holds one or more identities (the task's owner, participants,
    validators) and acts for each as the task's phases ask, until every task
    it follows is settled and everyone has claimed. It keeps no state of its
    own: killed at any point and started again, it picks up where the chain
    says it is.

    \b
    Example:
        din node run --task 1 --validator dev8 --validator dev9 --json | jq -r .message
    """


@node_group.command("run")
@click.option(
    "--task",
    "tasks",
    multiple=True,
    required=True,
    metavar="TASK",
    help="Task to follow (repeatable).",
)
@click.option("--owner", metavar="NAME", help="Act as the tasks' model owner (needs --test-set).")
@click.option(
    "--test-set",
    metavar="STORE",
    help="With --owner: the plaintext test store whose hash the task committed to; it is encrypted before posting.",
)
@click.option(
    "--participant",
    "participants",
    multiple=True,
    metavar="NAME=STORE",
    help="Act as participant NAME, training on STORE (repeatable).",
)
@click.option(
    "--validator",
    "validators",
    multiple=True,
    metavar="NAME",
    help="Act as validator NAME (repeatable).",
)
@click.option(
    "--stake",
    metavar="DIN",
    help="Validators: top the registry stake up to DIN before registering.",
)
@click.option(
    "--min-participants",
    type=click.IntRange(1, None),
    metavar="N",
    help="Owner: start round 1 once N participants joined.  [default: the join deadline starts it]",
)
@click.option(
    "--min-validators",
    type=click.IntRange(1, None),
    default=1,
    show_default=True,
    metavar="N",
    help="Owner: with --min-participants, also wait for N validators.",
)
@click.option(
    "--commit-genesis",
    is_flag=True,
    help="Validators, to play an adversary in experiments: commit the task's genesis model as the aggregate every round (outvoted and slashed).",
)
@click.option(
    "--set-score",
    "set_scores",
    multiple=True,
    metavar="ADDRESS=BPS",
    help="Validators, to play an adversary in experiments: commit BPS for ADDRESS instead of its computed score (repeatable).",
)
@click.option("--epochs", default=1, show_default=True, type=click.IntRange(1, None))
@click.option("--lr", default=0.1, show_default=True, type=float, help="SGD learning rate.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1, None))
@click.option(
    "--audit/--no-audit",
    default=True,
    show_default=True,
    help="Validators: recompute every accepted subgroup aggregate and dispute a wrong one.",
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="Where training, aggregation and scoring run.",
)
@click.option(
    "--poll",
    type=click.FloatRange(0.05, None),
    default=1.0,
    show_default=True,
    metavar="SECONDS",
    help="How often to read the chain when nothing is to be done.",
)
@click.option(
    "--max-backoff",
    type=click.FloatRange(0.1, None),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="Longest wait between retries of a failed step or an unreachable backend.",
)
@click.option(
    "--name",
    metavar="NAME",
    help="Name in `din node status`.  [default: the first identity's key]",
)
@click.option(
    "--forever", is_flag=True, help="Keep following after every task is settled and claimed."
)
@chain_option()
@ipfs_option()
@json_option("Print one JSON event per line (NDJSON) on stdout.")
@quiet_option()
def node_run(
    tasks,
    owner,
    test_set,
    participants,
    validators,
    stake,
    min_participants,
    min_validators,
    commit_genesis,
    set_scores,
    epochs,
    lr,
    batch_size,
    audit,
    device,
    poll,
    max_backoff,
    name,
    forever,
    chain_url,
    ipfs_api,
    as_json,
):
    """Follow TASKs and act for the identities given, until every task is settled and claimed.

    One line per action, wait, retry and refusal goes to stderr (--json: NDJSON
    events on stdout). Every step is read back from the chain before it is
    taken, so a node killed at any point (kill -9 too) resumes without acting
    twice: start it again with the same options. SIGTERM or Ctrl-C stops it
    between steps. Exit 0 when every task is done (or on SIGTERM), 130 on
    Ctrl-C, the failing step's code when one fails for good.

    \b
    Example:
        din node run --task 1 --owner dev1 --test-set stores/test.npz --min-participants 3 &
        din node run --task 1 --participant dev2=stores/participant-01.npz &
        din node run --task 1 --validator dev8 --validator dev9 --stake 100 &
        wait
    """
    from din_cli.errors import ExitCode, UsageError
    from din_cli.protocol import node as nodes

    planned = _plan(owner, test_set, participants, validators)
    if (commit_genesis or set_scores) and not validators:
        raise UsageError(
            "--commit-genesis and --set-score are validators' options",
            "add --validator NAME, or drop them",
        )
    if planned is None:
        raise UsageError(
            "give at least one identity",
            "add --owner NAME --test-set STORE, --participant NAME=STORE or --validator NAME",
        )
    from din_cli.chain import network
    from din_cli.cli.options import unlock
    from din_cli.protocol.context import open_context
    from din_cli.protocol.roundflow import task_number

    task_ids = [task_number(t) for t in tasks]
    units = network.parse_amount(stake) if stake else None
    unlocked = [(role, key, unlock(key), data) for role, key, data in planned]
    first = open_context(chain_url, ipfs_api, unlocked[0][2])
    try:
        identities = []
        for role, key, ident, data in unlocked:
            ctx = (
                first
                if not identities
                else open_context(
                    identity=ident,
                    chain=first.chain,
                    deployment=first.deployment,
                    store=first.store,
                    ipfs_api=ipfs_api,
                )
            )
            identities.append(nodes.Identity(role, key, ctx, data))
        for t in task_ids:
            first.din.task_info(t)  # NotFoundError for an unknown task, before anything runs
        label = name or planned[0][1]
        node = nodes.Node(
            identities,
            nodes.NodeConfig(
                tasks=task_ids,
                epochs=epochs,
                lr=lr,
                batch_size=batch_size,
                stake=units,
                min_participants=min_participants,
                min_validators=min_validators,
                audit=audit,
                device=device,
                commit_genesis=commit_genesis,
                set_scores=parse_scores(set_scores),
                poll=poll,
                max_backoff=max_backoff,
                forever=forever,
            ),
            name=label,
            emit=_printer(label, as_json),
            status_path=nodes.status_dir() / f"{_safe(label)}.json",
        )
        node.install_signals()
        outcome = node.run()
    finally:
        first.close()
    if outcome == "stopped" and node.stop_signal == "SIGINT":
        return int(ExitCode.INTERRUPTED)
    return 0


def _plan(owner, test_set, participants, validators) -> list[tuple[str, str, object]] | None:
    """``[(role, key, data)]`` checked before anything is unlocked or sent."""
    from pathlib import Path

    from din_cli.errors import UsageError
    from din_cli.ml.data import load_store

    planned: list[tuple[str, str, object]] = []
    if owner:
        if not test_set:
            raise UsageError(
                "--owner needs --test-set STORE", "give the task's plaintext test store"
            )
        load_store(test_set)  # a readable store, or one line naming the problem
        planned.append(("owner", owner, Path(test_set)))
    elif test_set:
        raise UsageError("--test-set goes with --owner", "drop --test-set or add --owner NAME")
    seen: set[tuple[str, str]] = set()
    for spec in participants:
        key, sep, store = spec.partition("=")
        if not sep or not key or not store:
            raise UsageError(
                f"--participant {spec!r} is not NAME=STORE",
                "give the key and its data store, e.g. --participant dev2=stores/participant-01.npz",
            )
        if ("participant", key) in seen:
            raise UsageError(f"--participant {key} is given twice", "give each key once")
        seen.add(("participant", key))
        load_store(store)
        planned.append(("participant", key, Path(store)))
    for key in validators:
        if ("validator", key) in seen:
            raise UsageError(f"--validator {key} is given twice", "give each key once")
        seen.add(("validator", key))
        planned.append(("validator", key, None))
    from din_cli.crypto.keystore import Keystore

    ks = Keystore()
    for _, key, _ in planned:
        ks.show(ks.default_name(key))  # NotFoundError for an unknown key, before any password
    return planned or None


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "node"


def _stderr(line: str) -> None:
    """Retries and failures reach stderr even under -q: an operator must see them."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _printer(label: str, as_json: bool):
    def emit(event: dict) -> None:
        if as_json:
            sys.stdout.write(json.dumps(event, default=str, separators=(",", ":")) + "\n")
            sys.stdout.flush()
            return
        kind = event["event"]
        if kind == "action":
            where = f"task {event['task']} round {event['round']} {event['phase']}"
            output.note(f"node {label}: {where}: {event['role']} {event['key']} {event['message']}")
        elif kind in ("wait", "refused"):
            where = f"task {event['task']} round {event['round']} {event['phase']}"
            output.note(
                f"node {label}: {where}: {event['role']} {event['key']} {kind} ({event['step']}): {event['message']}"
            )
        elif kind == "retry":
            step = f"{event['key']} {event['step']}: " if "step" in event else ""
            _stderr(f"node {label}: {step}{event['error']}; retrying in {event['delay']:g} s")
        elif kind == "started":
            who = ", ".join(f"{i['role']} {i['key']}" for i in event["identities"])
            output.note(
                f"node {label}: following task(s) {', '.join(map(str, event['tasks']))} as {who}"
            )
        elif kind == "stopped":
            output.note(f"node {label}: stopped by {event['signal']}")
        elif kind == "finished":
            output.note(f"node {label}: every task is done ({event['actions']} actions)")

    return emit


@node_group.command("status")
@click.argument("name", required=False)
@json_option("Print the nodes' status documents as JSON.")
def node_status(name, as_json):
    """Show the nodes that ran under $DIN_HOME: state, tasks, last action.

    A node that was killed without a chance to say so shows as ``dead``;
    start it again with the same options and it resumes.

    \b
    Example:
        din node status --json | jq -r '.[] | select(.state == "dead") | .name'
    """
    from din_cli.protocol import node as nodes

    docs = nodes.read_status(name)
    if as_json:
        output.emit_json(docs)
        return
    now = time.time()
    for doc in docs:
        tasks = "; ".join(
            f"task {t}: {s.get('phase', '?')} round {s.get('round', '?')}"
            for t, s in doc.get("tasks", {}).items()
        )
        last = (doc.get("last_action") or {}).get("message", "-")
        output.emit(
            "\t".join(
                [
                    doc.get("name", "?"),
                    doc.get("state", "?"),
                    f"pid {doc.get('pid', '?')}",
                    f"{doc.get('actions', 0)} actions",
                    f"updated {now - float(doc.get('updated', now)):.0f} s ago",
                    tasks,
                    last,
                ]
            )
        )
