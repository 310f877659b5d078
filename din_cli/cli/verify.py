"""`din verify`: recompute a task's accepted aggregates and global models from on-chain CIDs."""

from __future__ import annotations

import click

from din_cli.cli import output
from din_cli.cli.options import (
    chain_option,
    context,
    ipfs_option,
    json_option,
    round_option,
    task_option,
)


@click.command("verify")
@task_option()
@round_option("Check one round only.")
@chain_option()
@ipfs_option()
@click.option(
    "--key",
    "key_name",
    default=None,
    metavar="NAME",
    help="Open a sealed task's updates as this identity (a validator of the subgroup); no default.",
)
@json_option()
def verify(task, round_, chain_url, ipfs_api, key_name, as_json):
    """Check that TASK's on-chain record holds: every accepted aggregate and global model recomputes bit-exactly.

    Prints one line per check (ROUND<TAB>WHAT<TAB>GROUP<TAB>ok|FAIL|discarded|sealed<TAB>CID);
    exit 0 when all hold, 3 when any does not. In a sealed task only a
    subgroup's own validators (and readers they granted keys to) can open its
    updates: give --key NAME to check as one of them; the subgroups you
    cannot open read `sealed` ("ok": null with --json) and do not fail, while
    the global models are checked by anyone. A subgroup result that a
    dispute committee overturned is checked as the committee's CID (named on
    stderr); a check that does not hold in a round a dispute's replay
    discarded reads `discarded` and does not fail. Subgroups are recomputed with
    the admission rule every validator applies: the updates it excluded are
    named on stderr (and under "excluded" with --json), and a recorded
    aggregate that used one of them fails, naming it. Every update's anomaly
    figures (verdict, weight, L2 distance from the round's starting model,
    cosine with the subgroup's pull, clipped or not) are under "anomalies"
    with --json; stderr names updates the norm bound clipped and admitted
    updates that pull against their subgroup.

    \b
    Example:
        din verify --task 1 && echo "the record holds"
        din verify --task 1 --round 2 --json | jq '.[] | select(.ok | not)'
    """
    from din_cli.protocol import verify as lib
    from din_cli.protocol.roundflow import task_number

    tid = task_number(task)
    with context(chain_url, ipfs_api, key_name, act=key_name is not None) as ctx:
        checks = lib.audit(ctx, tid, round_)
    lines = (
        f"{c['round']}\t{c['what']}\t{'-' if c['group'] is None else c['group']}\t{_verdict(c)}\t{c['recorded']}"
        for c in checks
    )
    output.emit_doc(checks, as_json, *lines)
    for c in checks:
        if c.get("sealed"):
            output.note(
                f"round {c['round']} subgroup {c['group']}: sealed; only its validators can check it (--key)"
            )
        if c["overturned"]:
            output.note(
                f"round {c['round']} subgroup {c['group']}: overturned by dispute {c['overturned']}; checked the committee's CID"
            )
        for e in c["excluded"]:
            output.note(
                f"round {c['round']} subgroup {c['group']}: excluded update #{e['index']} {e['cid']}: {e['reason']}"
            )
        for a in c.get("anomalies", []):
            why = []
            if a["clipped"]:
                why.append(f"clipped to the task's norm bound (distance {a['distance']:.6g})")
            if a["admitted"] and a["cosine"] is not None and a["cosine"] < 0:
                why.append(f"pulls against the subgroup (cosine {a['cosine']:.3f})")
            if why:
                output.note(
                    f"round {c['round']} subgroup {c['group']}: update #{a['index']} {a['cid']}: {'; '.join(why)}"
                )
    lib.require_ok(tid, checks)


def _verdict(check: dict) -> str:
    if check["ok"]:
        return "ok"
    if check["ok"] is None:
        return "sealed"
    return "discarded" if check["discarded"] else "FAIL"
