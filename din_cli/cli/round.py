"""`din round`: start a task's rounds, follow them, finalize and attest global models, post the test set."""

from __future__ import annotations

import click

from din_cli.cli import output
from din_cli.cli.options import (
    acting_options,
    chain_option,
    context,
    json_option,
    key_address,
    key_option,
    round_option,
    task_option,
)
from din_cli.protocol.status import PHASE_NAMES


@click.group("round")
def round_group():
    """Run a task's rounds: start, status, wait, finalize, attest, test-set.

    \b
    Example:
        din round wait --task 1 --phase global-model --timeout 300 && din round finalize --task 1 --key owner
    """


@round_group.command("start")
@task_option()
@acting_options()
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
    output.emit_doc(doc, as_json, doc["round"])


@round_group.command("advance")
@task_option()
@acting_options()
def round_advance(task, chain_url, key_name, as_json):
    """Move TASK past expired deadlines (anyone may); prints the phase it is in.

    \b
    Example:
        din chain advance 3600 && din round advance --task 1 --key dev1
    """
    from din_cli.protocol import roundflow

    with context(chain_url, None, key_name) as ctx:
        doc = roundflow.advance(ctx, roundflow.task_number(task))
    output.emit_doc(doc, as_json, f"{doc['phase']}\t{doc['round']}")


@round_group.command("status")
@task_option()
@chain_option()
@key_option()
@json_option()
def round_status(task, chain_url, key_name, as_json):
    """Show TASK's phase, round, deadline, this round's updates, reveals and models.

    Plain output is KEY<TAB>VALUE lines; --json has the whole record. From the
    score reveal on it counts score reveals and test-set rejections, and lists
    the settled subgroups whose majority rejected the test set. `disputes`
    lists ID:STATE of every dispute (`din dispute status`), `overturned` the
    ROUND/GROUP results a committee overturned, and `discarded` the rounds
    disputes' replays discarded. In a secagg task `unmask_reveals` gives
    GROUP:REVEALS/UPDATES, the survivors that revealed their shares so far.

    \b
    Example:
        din round status --task 1 | grep ^phase | cut -f2
        din round status --task 1 --json | jq -r '.current_round.accepted[]'
    """
    from din_cli.protocol import roundflow, status

    with context(chain_url, None, None, act=False) as ctx:
        doc = status.status(ctx, roundflow.task_number(task), key_address(key_name, optional=True))
    if as_json:
        output.emit_json(doc)
        return
    rows = []
    cur = doc.get("current_round")
    if cur:
        rows = [(k, len(cur[k])) for k in ("updates", "commits", "reveals", "accepted")]
        rows.append(("proposed", cur["proposed"]))
        if "unmasking" in cur:  # secagg: reveals/updates per subgroup
            groups = cur["unmasking"]["groups"]
            rows.append(
                (
                    "unmask_reveals",
                    ",".join(f"{g}:{len(v['revealed'])}/{v['updates']}" for g, v in groups.items()),
                )
            )
    ev = doc.get("evaluation")
    if ev:
        rows += [("score_reveals", ev["reveals"]), ("score_rejections", len(ev["rejections"]))]
        rows.append(("rejected_subgroups", ",".join(map(str, ev["rejected_subgroups"])) or "-"))
    rows.append(
        ("disputes", ",".join(f"{d['dispute_id']}:{d['state']}" for d in doc["disputes"]) or "-")
    )
    rows.append(("overturned", ",".join(doc["overturned"]) or "-"))
    rows.append(("discarded", ",".join(map(str, doc["discarded"])) or "-"))
    output.emit_task_status(doc, ("privacy", "model"), rows)


@round_group.command("wait")
@task_option()
@click.option(
    "--phase",
    required=True,
    type=click.Choice(PHASE_NAMES),
    help="Phase to wait for (or any later one).",
)
@round_option("Round of a per-round phase (default: the current round).")
@click.option(
    "--timeout",
    type=click.FloatRange(0, None),
    default=600,
    show_default=True,
    help="Seconds before giving up (exit 1).",
)
@chain_option()
@key_option()
@json_option()
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
    output.emit_doc(doc, as_json, f"{doc['phase']}\t{doc['round']}")


@round_group.command("finalize")
@task_option()
@acting_options(ipfs=True)
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
    output.emit_doc(doc, as_json, doc["cid"])


@round_group.command("attest")
@task_option()
@acting_options(ipfs=True)
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
    output.emit_doc(doc, as_json, doc["cid"])


@round_group.command("test-set")
@task_option()
@click.option(
    "--data", required=True, metavar="STORE", help="The reserved test pool (e.g. stores/test.npz)."
)
@acting_options(ipfs=True)
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
    output.emit_doc(doc, as_json, doc["cid"])


@round_group.command("slash")
@task_option()
@round_option("Round to report (default: every round so far).")
@acting_options()
def round_slash(task, round_, chain_url, key_name, as_json):
    """Slash TASK's validators that did not reveal their aggregate or revealed a minority one (anyone); prints them.

    The contract takes a report for any past round until the task is settled;
    `din rewards settle` reports every one still open.

    \b
    Example:
        din round wait --task 1 --phase global-model && din round slash --task 1 --key dev2 | wc -l
    """
    from din_cli.protocol import rewards, roundflow

    with context(chain_url, None, key_name) as ctx:
        tid = roundflow.task_number(task)
        rounds = [round_] if round_ else range(1, ctx.din.task_info(tid).round + 1)
        slashed = rewards.slash_aggregators(ctx, tid, rounds)
    output.emit_doc(slashed, as_json, *(f"{s['validator']}\t{s['round']}" for s in slashed))


@round_group.command("dispute")
@task_option()
@round_option(
    "Round of the accepted result; 0: an evaluation subgroup's scores.", required=True, min=0
)
@click.option(
    "--group", required=True, type=click.IntRange(0, None), metavar="G", help="Subgroup to dispute."
)
@acting_options(ipfs=True)
def round_dispute(task, round_, group, chain_url, ipfs_api, key_name, as_json):
    """Recompute a subgroup's accepted aggregate and, when it is wrong, file a dispute (anyone); prints its id.

    The subgroup is recomputed with the code `din verify` runs; an accepted
    result that recomputes exactly is refused (exit 2, nothing filed). Filing
    escrows the task's slash amount as a bond and freezes the task until a
    committee drawn after the filing decides (`din dispute`). Disputes of
    aggregates are open until the settling phase begins; once training is
    over an upheld one slashes the liars but replays nothing.

    With --round 0, an evaluation validator disputes evaluation subgroup G's
    majority score vector while the task settles, before G settles: it
    rescores G with its own K, then grants K to the drawn committee with
    `din keys grant --task T --dispute D`.

    \b
    Example:
        din verify --task 1 || din round dispute --task 1 --round 1 --group 0 --key dev9 | xargs din dispute draw --key dev9
    """
    from din_cli.protocol import disputes, roundflow

    with context(chain_url, ipfs_api, key_name) as ctx:
        doc = disputes.file(ctx, roundflow.task_number(task), round_, group)
    output.note(
        f"task {doc['task_id']} round {doc['round']} subgroup {doc['group']}: accepted {doc['accepted']}, recomputes to {doc['cid']}; dispute {doc['dispute_id']} filed"
    )
    output.emit_doc(doc, as_json, doc["dispute_id"])
