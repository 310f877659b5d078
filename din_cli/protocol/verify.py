"""Audit a task from its on-chain record: recompute every accepted aggregate and global model.

Aggregation is bit-exact, so anyone holding the content can check the chain:
for each round, every accepted subgroup CID must equal the aggregate of that
subgroup's submitted updates under the admission rule
(``din_cli.protocol.admission``, the one every validator applies), and the
accepted global model must equal the aggregate of the accepted subgroup
results. Each check is one row of the report, with the updates the rule
excluded and why; when an accepted aggregate admitted an update the rule
excludes (its ``din.excluded`` lacks it), the row names it under
``included``. Each subgroup row lists every update's anomaly figures
(``protocol.anomaly``: the rule's verdict and weight, its distance from the
starting model, its cosine with the subgroup's pull, whether the
norm-bounded rule clipped it). A subgroup result a dispute committee overturned is checked
as the committee's CID (``overturned``: the dispute id); rounds a dispute's
replay discarded are labelled ``discarded`` and do not fail the audit.
``verify`` raises VerificationError (exit 3) when any other check fails.

Example:
    with open_context() as ctx:
        report = verify(ctx, 1)
"""

from __future__ import annotations

from din_cli.errors import NotFoundError, VerificationError
from din_cli.protocol import anomaly, sealing
from din_cli.protocol.cids import to_text
from din_cli.protocol.roundflow import (
    admitted_bitmap,
    global_from_accepted,
    start_model,
    subgroup_files,
    subgroup_result,
)


def audit(ctx, task_id: int, round_: int | None = None) -> list[dict]:
    """Every check of ``task_id`` (or of one round): ``{round, what, group, expected, recorded, ok, overturned, discarded, ...}``."""
    from din_cli.chain.din import admitted_positions

    d = ctx.din
    d.task_info(task_id)  # NotFoundError for an unknown task
    started = sorted({int(e["args"]["round"]) for e in d.events(task_id, "RoundStarted")})
    if round_ is not None:
        if round_ not in started:
            raise NotFoundError(
                f"task {task_id} has no round {round_}",
                f"rounds started: {', '.join(map(str, started)) or 'none'}",
            )
        started = [round_]
    globals_ = {
        int(e["args"]["round"]): bytes(e["args"]["cid"])
        for e in d.events(task_id, "GlobalModelAccepted")
    }
    from din_cli.protocol.disputes import summary

    disputed = summary(ctx, task_id)
    checks = []
    with ctx.workdir() as work:
        for r in started:
            discarded = r in disputed["discarded"]
            accepted = d.accepted_results(task_id, r)
            for g in sorted(accepted):
                updates = d.updates_submitted(task_id, r, g)
                recorded = to_text(accepted[g][0])
                try:
                    expected, judged = subgroup_result(ctx, task_id, r, g, work, window=False)
                except sealing.KeyMissing:  # a sealed task: only the subgroup's readers check it
                    checks.append(_sealed_check(r, g, len(updates), recorded, disputed, discarded))
                    continue
                excluded = [_row(v) for v in judged.excluded] if judged else []
                admitted = admitted_bitmap(ctx, task_id, r, g, judged)
                paths, start, out = subgroup_files(work, r, g, len(updates))
                anomalies = anomaly.figures(paths, start, out, judged) if start else []
                for row, u in zip(anomalies, updates, strict=True):
                    row.update(index=u.index, participant=u.participant)
                checks.append(
                    {
                        "round": r,
                        "what": "subgroup",
                        "group": g,
                        "updates": len(updates),
                        "expected": expected,
                        "recorded": recorded,
                        "admitted": admitted_positions(admitted),
                        "recorded_admitted": admitted_positions(accepted[g][1]),
                        "ok": expected == recorded and admitted == accepted[g][1],
                        "overturned": disputed["overturned"].get(f"{r}/{g}"),
                        "discarded": discarded,
                        "excluded": excluded,
                        "anomalies": anomalies,
                        "included": []
                        if expected == recorded
                        else _wrongly_included(ctx, task_id, r, recorded, excluded, work),
                    }
                )
            if r in globals_:
                recorded = to_text(globals_[r])
                expected = global_from_accepted(ctx, task_id, r, work)[0] if accepted else None
                checks.append(
                    {
                        "round": r,
                        "what": "global",
                        "group": None,
                        "updates": len(accepted),
                        "expected": expected,
                        "recorded": recorded,
                        "ok": expected == recorded,
                        "overturned": None,
                        "discarded": discarded,
                        "excluded": [],
                        "anomalies": [],
                        "included": [],
                    }
                )
    return checks


def _sealed_check(r, g, updates, recorded, disputed, discarded) -> dict:
    """A subgroup check this reader cannot make: its updates are sealed to others (``ok`` None)."""
    return {
        "round": r,
        "what": "subgroup",
        "group": g,
        "updates": updates,
        "expected": None,
        "recorded": recorded,
        "ok": None,
        "sealed": True,
        "overturned": disputed["overturned"].get(f"{r}/{g}"),
        "discarded": discarded,
        "excluded": [],
        "anomalies": [],
        "included": [],
    }


def _row(v) -> dict:
    return {"index": v.index, "cid": v.cid, "reason": v.reason, "detail": v.detail}


def _wrongly_included(ctx, task_id: int, round_: int, recorded: str, excluded: list, work) -> list:
    """The rule's exclusions that the recorded aggregate did not record as excluded (it used them).

    Read from the recorded aggregate's ``din.excluded``; ``[]`` when the
    record is the starting model (it used nothing) or its content is not in
    the store (nothing can be said beyond the CID mismatch).
    """
    from din_cli.errors import DinError
    from din_cli.protocol.admission import recorded_exclusions

    if not excluded or recorded == start_model(ctx, task_id, round_):
        return []
    try:
        path = ctx.fetch(recorded, work / f"recorded-r{round_}-{recorded}.safetensors")
    except DinError:
        return []
    left_out = {int(e.get("index", -1)) for e in recorded_exclusions(path) if isinstance(e, dict)}
    return [e for e in excluded if e["index"] not in left_out]


def verify(ctx, task_id: int, round_: int | None = None) -> list[dict]:
    """The audit's checks; VerificationError naming the first failure when the record does not hold."""
    checks = audit(ctx, task_id, round_)
    require_ok(task_id, checks)
    return checks


def require_ok(task_id: int, checks: list[dict]) -> None:
    """VerificationError naming the first failed check, if any (rounds a replay discarded do not
    count, nor sealed subgroups this reader could not open: ``ok`` None)."""
    bad = [c for c in checks if c["ok"] is False and not c.get("discarded")]
    if bad:
        c = bad[0]
        what = (
            f"subgroup {c['group']}'s aggregate" if c["what"] == "subgroup" else "the global model"
        )
        used = "; ".join(
            f"it includes update #{e['index']} {e['cid']} that the admission rule excludes ({e['reason']})"
            for e in c.get("included") or []
        )
        if c["recorded"] == c["expected"]:
            found = f"{what} on chain admits positions {c['recorded_admitted']} but the rule admits {c['admitted']}"
        else:
            found = f"{what} on chain is {c['recorded']} but recomputes to {c['expected']}"
        raise VerificationError(
            f"task {task_id} round {c['round']}: {found}"
            + (f"; {used}" if used else "")
            + (f" ({len(bad)} checks failed)" if len(bad) > 1 else ""),
            "the chain's record does not hold; do not build on it",
        )
