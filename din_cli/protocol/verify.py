"""Audit a task from its on-chain record: recompute every accepted aggregate and global model.

Aggregation is bit-exact, so anyone holding the content can check the chain:
for each round, every accepted subgroup CID must equal the aggregate of that
subgroup's submitted updates, and the accepted global model must equal the
aggregate of the accepted subgroup results. Each check is one row of the
report; ``verify`` raises VerificationError (exit 3) when any fails.

Example:
    with open_context() as ctx:
        report = verify(ctx, 1)
"""

from __future__ import annotations

from din_cli.errors import NotFoundError, VerificationError
from din_cli.protocol.cids import to_text
from din_cli.protocol.roundflow import global_from_accepted, subgroup_aggregate


def audit(ctx, task_id: int, round_: int | None = None) -> list[dict]:
    """Every check of ``task_id`` (or of one round): ``{round, what, group, expected, recorded, ok}``."""
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
    checks = []
    with ctx.workdir() as work:
        for r in started:
            accepted = d.accepted_aggregates(task_id, r)
            for g in sorted(accepted):
                updates = d.updates_submitted(task_id, r, g)
                recorded = to_text(accepted[g])
                expected = subgroup_aggregate(ctx, task_id, r, g, work)
                checks.append(
                    {
                        "round": r,
                        "what": "subgroup",
                        "group": g,
                        "updates": len(updates),
                        "expected": expected,
                        "recorded": recorded,
                        "ok": expected == recorded,
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
                    }
                )
    return checks


def verify(ctx, task_id: int, round_: int | None = None) -> list[dict]:
    """The audit's checks; VerificationError naming the first failure when the record does not hold."""
    checks = audit(ctx, task_id, round_)
    require_ok(task_id, checks)
    return checks


def require_ok(task_id: int, checks: list[dict]) -> None:
    """VerificationError naming the first failed check, if any."""
    bad = [c for c in checks if not c["ok"]]
    if bad:
        c = bad[0]
        what = (
            f"subgroup {c['group']}'s aggregate" if c["what"] == "subgroup" else "the global model"
        )
        raise VerificationError(
            f"task {task_id} round {c['round']}: {what} on chain is {c['recorded']} but recomputes to {c['expected']}"
            + (f" ({len(bad)} checks failed)" if len(bad) > 1 else ""),
            "the chain's record does not hold; do not build on it",
        )
