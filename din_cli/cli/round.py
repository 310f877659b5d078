"""`din round`: start a task's rounds, follow them, finalize and attest global models, post the test set."""

from __future__ import annotations

import click

from din_cli.cli import output
from din_cli.cli.options import (
    chain_option,
    ipfs_option,
    json_option,
    key_option,
    quiet_option,
    read_password,
)
from din_cli.protocol.status import PHASE_NAMES


def unlock(key_name: str | None):
    """The unlocked identity named by --key (or the only key there is)."""
    from din_cli.crypto.keystore import Keystore

    ks = Keystore()
    name = ks.default_name(key_name)
    ks.show(name)  # NotFoundError before asking for a password
    return ks.unlock(name, read_password(f"Password for {name}"))


def address_of(key_name: str | None) -> str | None:
    """The address of --key without unlocking it (None when no key is chosen or there is none)."""
    from din_cli.crypto.keystore import Keystore
    from din_cli.errors import DinError

    try:
        ks = Keystore()
        return ks.show(ks.default_name(key_name)).address
    except DinError:
        if key_name:
            raise
        return None


def context(chain_url, ipfs_api=None, key_name=None, *, act: bool = True):
    """A protocol Context; ``act`` unlocks --key."""
    from din_cli.protocol.context import open_context

    identity = unlock(key_name) if act else None
    return open_context(chain_url, ipfs_api, identity)


def task_option(f):
    return click.option(
        "--task",
        "task",
        required=True,
        metavar="TASK",
        help="Task id (printed by `din model publish`).",
    )(f)


def print_doc(doc: dict, as_json: bool, line) -> None:
    if as_json:
        output.emit_json(doc)
    elif line is not None:
        output.emit(line)


@click.group("round")
def round_group():
    """Run a task's rounds: start, status, wait, finalize, attest, test-set.

    \b
    Example:
        din round wait --task 1 --phase global-model --timeout 300 && din round finalize --task 1 --key owner
    """


@round_group.command("start")
@task_option
@chain_option
@key_option
@json_option
@quiet_option
def round_start(task, chain_url, key_name, as_json):
    """Start round 1 now instead of at the join deadline (the task's owner); prints the round.

    \b
    Example:
        din round start --task 1 --key owner | xargs echo round
    """
    from din_cli.protocol import roundflow

    with context(chain_url, None, key_name) as ctx:
        doc = roundflow.start(ctx, roundflow.task_number(task))
    output.note(f"task {doc['task_id']}: round {doc['round']}, phase {doc['phase']}")
    print_doc(doc, as_json, doc["round"])


@round_group.command("advance")
@task_option
@chain_option
@key_option
@json_option
@quiet_option
def round_advance(task, chain_url, key_name, as_json):
    """Move TASK past expired deadlines (anyone may); prints the phase it is in.

    \b
    Example:
        din chain advance 3600 && din round advance --task 1 --key dev1
    """
    from din_cli.protocol import roundflow

    with context(chain_url, None, key_name) as ctx:
        doc = roundflow.advance(ctx, roundflow.task_number(task))
    print_doc(doc, as_json, f"{doc['phase']}\t{doc['round']}")


@round_group.command("status")
@task_option
@chain_option
@key_option
@json_option
def round_status(task, chain_url, key_name, as_json):
    """Show TASK's phase, round, deadline, this round's updates, reveals and models.

    Plain output is KEY<TAB>VALUE lines; --json has the whole record.

    \b
    Example:
        din round status --task 1 | grep ^phase | cut -f2
        din round status --task 1 --json | jq -r '.current_round.accepted[]'
    """
    from din_cli.protocol import roundflow, status

    with context(chain_url, None, None, act=False) as ctx:
        doc = status.status(ctx, roundflow.task_number(task), address_of(key_name))
    if as_json:
        output.emit_json(doc)
        return
    rows = [
        (k, doc[k])
        for k in (
            "task_id",
            "phase",
            "round",
            "last_round",
            "deadline",
            "seconds_left",
            "participants",
            "validators",
            "groups",
            "model",
        )
    ]
    cur = doc.get("current_round")
    if cur:
        rows += [
            ("updates", len(cur["updates"])),
            ("commits", len(cur["commits"])),
            ("reveals", len(cur["reveals"])),
            ("accepted", len(cur["accepted"])),
            ("proposed", cur["proposed"]),
        ]
    if "you" in doc:
        rows.append(("you", doc["you"]["role"]))
    output.emit(*(f"{k}\t{'-' if v is None else v}" for k, v in rows))


@round_group.command("wait")
@task_option
@click.option(
    "--phase",
    required=True,
    type=click.Choice(PHASE_NAMES),
    help="Phase to wait for (or any later one).",
)
@click.option(
    "--round",
    "round_",
    type=click.IntRange(1, None),
    default=None,
    metavar="R",
    help="Round of a per-round phase (default: the current round).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(0, None),
    default=600,
    show_default=True,
    help="Seconds before giving up (exit 1).",
)
@chain_option
@key_option
@json_option
def round_wait(task, phase, round_, timeout, chain_url, key_name, as_json):
    """Block until TASK reaches PHASE (or a later one); prints the phase reached.

    With --key, expired deadlines are pushed along (the permissionless advance).

    \b
    Example:
        din round wait --task 1 --phase aggregation-commit --timeout 120 && din aggregate --task 1 --commit
    """
    from din_cli.protocol import roundflow, status

    with context(chain_url, None, key_name, act=bool(key_name)) as ctx:
        doc = status.wait(ctx, roundflow.task_number(task), phase, round_=round_, timeout=timeout)
    print_doc(doc, as_json, f"{doc['phase']}\t{doc['round']}")


@round_group.command("finalize")
@task_option
@chain_option
@ipfs_option
@key_option
@json_option
@quiet_option
def round_finalize(task, chain_url, ipfs_api, key_name, as_json):
    """Combine the round's accepted subgroup aggregates into the global model and post it (owner); prints its CID.

    \b
    Example:
        CID=$(din round finalize --task 1 --key owner) && din ipfs cat "$CID" | din model info -
    """
    from din_cli.protocol import roundflow

    with context(chain_url, ipfs_api, key_name) as ctx:
        doc = roundflow.finalize(ctx, roundflow.task_number(task))
    output.note(
        f"round {doc['round']}: posted the global model of {len(doc['subgroups'])} subgroup(s)"
    )
    print_doc(doc, as_json, doc["cid"])


@round_group.command("attest")
@task_option
@chain_option
@ipfs_option
@key_option
@json_option
@quiet_option
def round_attest(task, chain_url, ipfs_api, key_name, as_json):
    """Recompute the posted global model and attest it (validators); prints its CID.

    Exit 3 without voting when the posted CID is not the aggregate of the
    round's accepted subgroup results.

    \b
    Example:
        din round attest --task 1 --key val1 | xargs din model info
    """
    from din_cli.protocol import roundflow

    with context(chain_url, ipfs_api, key_name) as ctx:
        doc = roundflow.attest(ctx, roundflow.task_number(task))
    if doc["accepted"]:
        output.note(f"round {doc['round']}: global model accepted")
    print_doc(doc, as_json, doc["cid"])


@round_group.command("test-set")
@task_option
@click.option(
    "--data", required=True, metavar="STORE", help="The reserved test pool (e.g. stores/test.npz)."
)
@chain_option
@ipfs_option
@key_option
@json_option
@quiet_option
def round_test_set(task, data, chain_url, ipfs_api, key_name, as_json):
    """Encrypt the test pool, add it, and post its signed CID with the key wrapped per validator (owner).

    Each validator assigned to the evaluation gets the AES key sealed to the
    HPKE key it registered on chain; prints the encrypted test set's CID.

    \b
    Example:
        din round wait --task 1 --phase test-set && din round test-set --task 1 --data stores/test.npz --key owner
    """
    from din_cli.protocol import evaluation, roundflow

    with context(chain_url, ipfs_api, key_name) as ctx:
        doc = evaluation.post_test_set(ctx, roundflow.task_number(task), data)
    output.note(f"test set ({doc['rows']} rows) wrapped for {len(doc['validators'])} validator(s)")
    print_doc(doc, as_json, doc["cid"])


@round_group.command("slash")
@task_option
@click.option(
    "--round",
    "round_",
    type=click.IntRange(1, None),
    default=None,
    metavar="R",
    help="Round to report (default: every round so far).",
)
@chain_option
@key_option
@json_option
@quiet_option
def round_slash(task, round_, chain_url, key_name, as_json):
    """Slash TASK's validators that did not reveal their aggregate or revealed a minority one (anyone); prints them.

    The contract takes a report only until the validator commits again, so
    report a round right after its reveal phase.

    \b
    Example:
        din round wait --task 1 --phase global-model && din round slash --task 1 --key dev2 | wc -l
    """
    from din_cli.protocol import rewards, roundflow

    with context(chain_url, None, key_name) as ctx:
        tid = roundflow.task_number(task)
        rounds = [round_] if round_ else range(1, ctx.din.task_info(tid).round + 1)
        slashed = rewards.slash_aggregators(ctx, tid, rounds)
    if as_json:
        output.emit_json(slashed)
        return
    output.emit(*(f"{s['validator']}\t{s['round']}" for s in slashed))


# ---------------------------------------------------------------- task-aware steps of din train/aggregate/evaluate
# din_cli/cli/ml.py's commands call these when given --task (kept here so the chain side of a round lives in one place).


def train_on_task(
    task,
    data,
    *,
    submit,
    epochs,
    lr,
    batch_size,
    seed,
    device,
    chain_url,
    ipfs_api,
    key_name,
    as_json=False,
):
    """`din train --task TASK --data STORE --submit`: fetch the round's model, train, add, submit; prints the CID."""
    from din_cli.errors import UsageError
    from din_cli.protocol import roundflow

    if not submit:
        raise UsageError(
            "--task trains for the chain and needs --submit",
            "add --submit, or give --model FILE to train offline",
        )
    with (
        context(chain_url, ipfs_api, key_name) as ctx,
        output.progress("training", total=epochs) as advance,
    ):
        doc = roundflow.train_and_submit(
            ctx,
            roundflow.task_number(task),
            data,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            seed=seed,
            device=device,
            progress=advance,
        )
    output.note(
        f"task {doc['task_id']} round {doc['round']}: submitted {doc['samples']} samples' update"
    )
    print_doc(doc, as_json, doc["cid"])


def aggregate_on_task(
    task, round_, *, commit, reveal, cid, chain_url, ipfs_api, key_name, as_json=False
):
    """`din aggregate --task TASK [--round R] --commit|--reveal`: the validator's aggregation step; prints the CID."""
    from din_cli.errors import UsageError
    from din_cli.protocol import roundflow

    if commit == reveal:
        raise UsageError(
            "--task needs exactly one of --commit and --reveal",
            "commit first, reveal in the reveal phase",
        )
    if cid and not commit:
        raise UsageError("--cid goes with --commit", "drop --cid")
    with context(chain_url, ipfs_api, key_name) as ctx:
        tid = roundflow.task_number(task)
        if commit:
            doc = roundflow.aggregate_commit(ctx, tid, round_, cid=cid)
        else:
            doc = roundflow.aggregate_reveal(ctx, tid, round_)
    output.note(
        f"task {doc['task_id']} round {doc['round']} subgroup {doc['group']}: {'committed' if commit else 'revealed'}"
    )
    print_doc(doc, as_json, doc["cid"])


def parse_overrides(pairs) -> dict[str, int]:
    from din_cli.errors import UsageError

    out = {}
    for pair in pairs or ():
        who, sep, bps = pair.partition("=")
        if not sep or not bps.strip().isdigit():
            raise UsageError(
                f"--set-score {pair!r} is not ADDRESS=BPS", "e.g. --set-score 0xAbC...=10000"
            )
        out[who.strip()] = int(bps)
    return out


def evaluate_on_task(
    task, *, commit, reveal, overrides, metric, chain_url, ipfs_api, key_name, as_json=False
):
    """`din evaluate --task TASK --commit|--reveal`: score the subgroup on the owner's test set; prints the scores."""
    from din_cli.errors import UsageError
    from din_cli.protocol import evaluation, roundflow

    if commit == reveal:
        raise UsageError(
            "--task needs exactly one of --commit and --reveal",
            "commit first, reveal in the reveal phase",
        )
    if overrides and not commit:
        raise UsageError("--set-score goes with --commit", "drop --set-score")
    with context(chain_url, ipfs_api, key_name) as ctx:
        tid = roundflow.task_number(task)
        if commit:
            doc = evaluation.evaluate_commit(
                ctx, tid, overrides=parse_overrides(overrides), metric=metric
            )
        else:
            doc = evaluation.evaluate_reveal(ctx, tid)
    if as_json:
        output.emit_json(doc)
        return
    output.emit(*(f"{a}\t{s}" for a, s in zip(doc["participants"], doc["scores"], strict=True)))
