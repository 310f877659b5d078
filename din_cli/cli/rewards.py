"""`din rewards`: settle a task, claim what it owes you, show scores and payouts."""

from __future__ import annotations

import click

from din_cli.cli import output
from din_cli.cli.options import (
    acting_options,
    chain_option,
    context,
    json_option,
    task_option,
)


@click.group("rewards")
def rewards():
    """Settle a task's rewards, claim them, and show who earned what.

    \b
    Example:
        din rewards settle --task 1 --key dev1 && din rewards claim --task 1 --key dev2
    """


@rewards.command("settle")
@task_option()
@acting_options()
def rewards_settle(task, chain_url, key_name, as_json):
    """Slash convicted aggregators and settle every evaluation subgroup (anyone); prints the phase.

    A subgroup whose validators revealed different score vectors settles only
    in the second half of the settling phase, so an outvoted validator can
    dispute the majority's scores first (`din round dispute --round 0`); when
    every unsettled subgroup waits so, exits 2.

    \b
    Example:
        din rewards settle --task 1 --key dev1 --json | jq '.slashed[].validator'
    """
    from din_cli.protocol import rewards as lib
    from din_cli.protocol.roundflow import task_number

    with context(chain_url, None, key_name) as ctx:
        doc = lib.settle(ctx, task_number(task))
    for s in doc["slashed"]:
        output.note(f"slashed {s['validator']} for round {s['round']}")
    output.note(f"settled subgroups {doc['settled']}; task is {doc['phase']}")
    if doc.get("waiting"):
        output.note(
            f"subgroups {doc['waiting']} disagree: they settle in the second half of the settling phase"
        )
    if doc["rejected"]:
        output.note(
            f"subgroups {doc['rejected']} rejected the test set: the pool goes to the contributors"
        )
    output.emit_doc(doc, as_json, doc["phase"])


@rewards.command("claim")
@task_option()
@acting_options()
def rewards_claim(task, chain_url, key_name, as_json):
    """Pull what TASK owes your key (score share, validator fee or owner refund); prints the amount in DIN.

    A validator's fee is paid to its pool in the registry (part burnt, part
    to public goods, the rest shared with its delegators after its
    commission): `din stake claim` pays it out. Claiming twice exits 7
    (already done).

    \b
    Example:
        din rewards claim --task 1 --key dev2 | xargs echo received
    """
    from din_cli.chain.network import format_amount
    from din_cli.protocol import rewards as lib
    from din_cli.protocol.roundflow import task_number

    with context(chain_url, None, key_name) as ctx:
        doc = lib.claim(ctx, task_number(task))
    if doc.get("fee_to_pool"):
        output.note(
            f"your validator fee, {format_amount(doc['fee_to_pool'])} DIN, went to your pool:"
            f" `din stake claim {doc['account']}` pays your commission and share"
        )
    output.emit_doc(doc, as_json, format_amount(doc["amount"]))


@rewards.command("prove")
@task_option()
@acting_options()
def rewards_prove(task, chain_url, key_name, as_json):
    """Prove your accepted training record in TASK (participants, once); prints the rounds.

    Each round whose accepted subgroup result admitted your update counts.
    When the owner withholds its test set, validators reject it or every
    score is 0, the participants' pool is split by these records, so prove
    yours while the task settles, before its settling deadline (a node does
    it by itself). Outside that window exits 2; a second proof exits 7; no
    admitted update exits 4.

    \b
    Example:
        din rewards prove --task 1 --key dev2 && din rewards claim --task 1 --key dev2
    """
    from din_cli.protocol import rewards as lib
    from din_cli.protocol.roundflow import task_number

    with context(chain_url, None, key_name) as ctx:
        doc = lib.prove(ctx, task_number(task))
    output.emit_doc(doc, as_json, " ".join(map(str, doc["rounds"])))


@rewards.command("show")
@task_option()
@chain_option()
@json_option()
def rewards_show(task, chain_url, as_json):
    """Show each participant's scores, accepted score and payout, and each validator's stake and slashes.

    Plain output: ROLE<TAB>ADDRESS<TAB>SCORE|STAKE<TAB>PAID<TAB>CLAIMABLE lines (amounts in DIN);
    validator lines end with the reasons it was slashed (or -).

    \b
    Example:
        din rewards show --task 1 | awk -F'\\t' '$1 == "participant" {print $2, $4}'
    """
    from din_cli.chain.network import format_amount
    from din_cli.protocol import rewards as lib
    from din_cli.protocol.roundflow import task_number

    with context(chain_url, None, None, act=False) as ctx:
        doc = lib.show(ctx, task_number(task))
    if as_json:
        output.emit_json(doc)
        return
    f = format_amount
    lines = [
        f"participant\t{p['address']}\t{'-' if p['score'] is None else p['score']}\t{f(p['claimed'])}\t{f(p['claimable'])}"
        for p in doc["participants"]
    ]
    lines += [
        f"validator\t{v['address']}\t{f(v['stake'])}\t{f(v['claimed'])}\t{f(v['claimable'])}\t{'; '.join(v['reasons']) or '-'}"
        for v in doc["validators"]
    ]
    o = doc["owner"]
    lines.append(f"owner\t{o['address']}\t-\t{f(o['claimed'])}\t{f(o['claimable'])}")
    output.emit(*lines)
    output.note(
        f"deposit {f(doc['deposit'])} DIN; claimed {f(doc['claimed'])}, outstanding {f(doc['outstanding'])}"
    )
