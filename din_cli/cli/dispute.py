"""`din dispute`: draw a dispute's committee, vote as a member, resolve it, show it.

A dispute is filed with `din round dispute` (in din_cli/cli/round.py).
"""

from __future__ import annotations

import click

from din_cli.cli import output
from din_cli.cli.options import acting_options, chain_option, context, json_option, task_option

DISPUTE_ID = click.argument("dispute_id", metavar="ID")


@click.group("dispute")
def dispute_group():
    """Overturn a subgroup's wrong accepted aggregate: draw a committee, vote, resolve.

    Anyone files a dispute with `din round dispute`; a committee drawn at
    random from the whole staked set after the filing recomputes the subgroup
    and decides by strict majority.

    \b
    Example:
        ID=$(din round dispute --task 1 --round 1 --group 0 --key dev9) && din dispute draw "$ID" --key dev9
    """


def _vote_text(vote) -> str:
    """A vote for people and scripts: a CID, or a score vector (space-separated basis points;
    ``reject``: the test set is rejected)."""
    if vote is None or isinstance(vote, str):
        return vote or "-"
    return " ".join(map(str, vote)) or "reject"


def _line(doc: dict) -> str:
    return f"{doc['dispute_id']}\t{doc['state']}\t{doc['round']}\t{doc['group']}\t{_vote_text(doc['decided'])}"


@dispute_group.command("draw")
@DISPUTE_ID
@acting_options()
def dispute_draw(dispute_id, chain_url, key_name, as_json):
    """Draw dispute ID's committee (anyone, after the filing block); prints one member per line.

    Fewer than 3 eligible stakers: no committee, the dispute is undecided and
    the filer's bond goes back (state `undecided`).

    \b
    Example:
        din dispute draw 1 --key dev9 | wc -l
    """
    from din_cli.protocol import disputes

    with context(chain_url, None, key_name) as ctx:
        doc = disputes.draw(ctx, disputes.dispute_number(dispute_id))
    output.note(f"dispute {doc['dispute_id']}: {doc['state']}, committee of {doc['size']}")
    output.emit_doc(doc, as_json, *(m["member"] for m in doc["committee"]))


@dispute_group.command("vote")
@DISPUTE_ID
@click.option("--reveal", is_flag=True, help="Reveal the committed vote (second step).")
@acting_options(ipfs=True)
def dispute_vote(dispute_id, reveal, chain_url, ipfs_api, key_name, as_json):
    """Recompute the disputed subgroup's aggregate and commit its CID (committee members); prints the CID.

    Run it again with --reveal once every member committed or the commit
    window closed. The salt is derived from your key: no state is kept
    between the steps. A step already done exits 7.

    \b
    Example:
        din dispute vote 1 --key dev10 && din dispute vote 1 --reveal --key dev10
    """
    from din_cli.protocol import disputes

    with context(chain_url, ipfs_api, key_name) as ctx:
        doc = disputes.vote(ctx, disputes.dispute_number(dispute_id), reveal=reveal)
    side = "upholds the accepted result" if doc["agrees"] else "overturns the accepted result"
    output.note(f"dispute {doc['dispute_id']}: vote {doc['step']}ted ({side})")
    output.emit_doc(doc, as_json, _vote_text(doc["cid"]))


@dispute_group.command("resolve")
@DISPUTE_ID
@acting_options()
def dispute_resolve(dispute_id, chain_url, key_name, as_json):
    """Decide dispute ID (anyone) once its committee revealed or the window closed; prints its outcome.

    Plain output: ID<TAB>STATE<TAB>ROUND<TAB>GROUP<TAB>DECIDED-CID. Upheld:
    the subgroup's validators that revealed the wrong CID are slashed and
    removed and the task replays from the disputed round's starting model;
    dismissed: the filer's bond goes to the committee's majority.

    \b
    Example:
        din dispute resolve 1 --key dev9 | cut -f2
    """
    from din_cli.protocol import disputes

    with context(chain_url, None, key_name) as ctx:
        doc = disputes.resolve(ctx, disputes.dispute_number(dispute_id))
    for s in doc.get("slashed_validators", []):
        output.note(f"slashed {s['validator']} ({s['amount']})")
    if doc["new_round"]:
        output.note(f"task {doc['task_id']} replays as round {doc['new_round']}")
    output.emit_doc(doc, as_json, _line(doc))


@dispute_group.command("status")
@click.argument("dispute_id", metavar="[ID]", required=False)
@task_option("Every dispute of this task.", required=False)
@chain_option()
@json_option()
def dispute_status(dispute_id, task, chain_url, as_json):
    """Show a dispute (or every dispute of --task): state, committee, votes, outcome.

    Plain output: ID<TAB>STATE<TAB>ROUND<TAB>GROUP<TAB>DECIDED-CID per
    dispute; for one ID, then MEMBER<TAB>committed|-<TAB>REVEALED-CID|- per
    committee member. --json has the whole record.

    \b
    Example:
        din dispute status --task 1 | awk -F'\t' '$2 == "drawn" {print $1}'
        din dispute status 1 --json | jq '.committee[] | select(.cid == null) | .member'
    """
    from din_cli.errors import UsageError
    from din_cli.protocol import disputes, roundflow

    if (dispute_id is None) == (task is None):
        raise UsageError("give a dispute ID or --task TASK", "one of them, not both")
    with context(chain_url, None, None, act=False) as ctx:
        if dispute_id is not None:
            doc = disputes.status(ctx, disputes.dispute_number(dispute_id))
            lines = [_line(doc)] + [
                f"{m['member']}\t{'committed' if m['committed'] else '-'}\t{m['cid'] or '-'}"
                for m in doc["committee"]
            ]
            output.emit_doc(doc, as_json, *lines)
            return
        docs = disputes.of_task(ctx, roundflow.task_number(task))
    output.emit_doc(docs, as_json, *(_line(d) for d in docs))
