"""Where a task stands, and waiting for a phase from a script.

``status`` reads the task, its current round (seed, subgroups, updates,
commits, reveals, accepted aggregates, proposed and accepted global model), its
disputes (open and decided, overturned subgroups, rounds a replay discarded) and,
for the acting address, its role and what it has done. ``wait`` polls until
the task reaches a phase (optionally of a given round), or fails after a
timeout.

Example:
    with open_context() as ctx:
        wait(ctx, 1, "aggregation-commit", timeout=60)
"""

from __future__ import annotations

import time

from din_cli.chain.din import PHASES, admitted_positions, split_result
from din_cli.errors import DinError, NotFoundError, UsageError
from din_cli.protocol.cids import to_text

NO_DEADLINE = 2**64 - 1
#: Phases in the order a task goes through them (the per-round ones repeat),
#: from the contract's own numbering; "abandoned" is the refund path, off the line.
PHASE_NAMES = [PHASES[n] for n in sorted(PHASES)]
ORDER = [name for name in PHASE_NAMES if name != "abandoned"]
PER_ROUND = {"training", "aggregation-commit", "aggregation-reveal", "global-model"}


class WaitTimeout(DinError):
    """``din round wait`` gave up (exit 1)."""


def _position(phase: str, round_: int) -> tuple[int, int]:
    if phase in PER_ROUND:
        return (1, round_ * 10 + ORDER.index(phase))
    if phase == "joining":
        return (0, 0)
    return (2, ORDER.index(phase))


def status(ctx, task_id: int, address: str | None = None) -> dict:
    """The task's state and the current round's record (and ``address``'s part in it)."""
    d = ctx.din
    info = d.task_info(task_id)
    now = ctx.chain.now()
    doc = {
        "task_id": task_id,
        "phase": info.phase,
        "round": info.round,
        "last_round": info.last_round,
        "deadline": None if info.deadline == NO_DEADLINE else info.deadline,
        "seconds_left": None if info.deadline == NO_DEADLINE else max(0, info.deadline - now),
        "now": now,
        "owner": info.owner,
        "arch": info.arch,
        "deposit": info.deposit,
        "metric": info.metric,
        "scoring": info.scoring,
        "privacy": info.privacy,
        "dp": info.dp.as_dict() if info.dp else None,
        "aggregation": info.aggregation,
        "aggregation_param": info.aggregation_param,
        "participants": info.participants,
        "validators": info.validators,
        "groups": info.groups,
        "per_group": info.per_group,
        "model": None,
    }
    try:
        doc["model"] = to_text(d.model_cid(task_id))
    except NotFoundError:
        pass
    if info.round:
        r = info.round
        updates = d.updates_submitted(task_id, r)
        reveals = [
            e for e in d.events(task_id, "AggregateRevealed") if int(e["args"]["round"]) == r
        ]
        commits = [
            e for e in d.events(task_id, "AggregateCommitted") if int(e["args"]["round"]) == r
        ]
        posted = [e for e in d.events(task_id, "GlobalModelPosted") if int(e["args"]["round"]) == r]
        doc["current_round"] = {
            "round": r,
            "updates": [
                {
                    "participant": u.participant,
                    "index": u.index,
                    "group": u.group,
                    "cid": to_text(u.cid),
                }
                for u in updates
            ],
            "commits": [e["args"]["validator"] for e in commits],
            "reveals": [
                {
                    "validator": e["args"]["validator"],
                    "group": int(e["args"]["group"]),
                    "cid": to_text(cid),
                    "admitted": admitted_positions(bits),
                }
                for e in reveals
                for cid, bits in [split_result(e["args"]["cid"])]
            ],
            "accepted": {str(g): to_text(c) for g, c in d.accepted_aggregates(task_id, r).items()},
            # removed validators whose slots this round were counted out of the majorities (markGone)
            "counted_out": d.gone_slots(task_id, r),
            "proposed": to_text(bytes(posted[-1]["args"]["cid"])) if posted else None,
        }
        if info.privacy_mode == "secagg" and updates:
            from din_cli.protocol import secagg

            # secagg: the shares each subgroup's survivors revealed for unmasking its sum
            doc["current_round"]["unmasking"] = secagg.unmask_status(ctx, task_id, r)
    if info.phase in ("score-reveal", "settling", "settled"):
        revealed = d.scores_revealed(task_id)
        doc["evaluation"] = {  # an empty vector is a rejection of the owner's test set
            "reveals": len(revealed),
            "rejections": sorted(v for v, vec in revealed.items() if not vec),
            "rejected_subgroups": d.rejected_subgroups(task_id),
        }
    from din_cli.protocol.disputes import summary

    doc.update(summary(ctx, task_id))  # disputes, overturned subgroups, discarded rounds
    doc["history"] = [
        {"round": int(e["args"]["round"]), "model": to_text(bytes(e["args"]["cid"]))}
        for e in d.events(task_id, "GlobalModelAccepted")
    ]
    if address:
        m = None
        if info.round:  # membership of the current round (none before round 1)
            try:
                m = d.subgroup_of(task_id, address)
            except NotFoundError:
                m = None
        role = "owner" if address == info.owner else None
        if m is not None:
            role = m.role if m.role != "none" else role
        elif address in d.participants(task_id):
            role = "participant"
        elif address in d.validators(task_id):
            role = "validator"
        doc["you"] = {
            "address": address,
            "role": role or "none",
            "group": None if m is None else m.group,
            "index": None if m is None else m.index,
        }
    return doc


def reached(info, phase: str, round_: int | None) -> bool:
    """Whether the task (TaskInfo) is at or past ``phase`` (of ``round_`` when given)."""
    if info.phase == "abandoned":
        return phase == "abandoned"
    if phase == "abandoned":
        return False
    target_round = info.round if round_ is None else round_
    if phase in PER_ROUND and info.phase in PER_ROUND and round_ is None:
        # without --round, a per-round phase means "this phase of the current round" (or later)
        return _position(info.phase, info.round) >= _position(phase, info.round)
    return _position(info.phase, info.round) >= _position(phase, target_round)


def wait(
    ctx,
    task_id: int,
    phase: str,
    *,
    round_: int | None = None,
    timeout: float = 600,
    poll: float = 0.5,
) -> dict:
    """Poll until the task reaches ``phase`` (of ``round_``); WaitTimeout after ``timeout`` seconds.

    With an acting key on a chain whose deadline passed, it also sends the
    permissionless ``advance`` so that expired phases move on.
    """
    if phase not in PHASE_NAMES:
        raise UsageError(
            f"--phase {phase!r} is not a phase", f"use one of {', '.join(PHASE_NAMES)}"
        )
    d = ctx.din
    end = time.monotonic() + max(0.0, timeout)
    while True:
        info = d.task_info(task_id)
        if reached(info, phase, round_):
            return {"task_id": task_id, "phase": info.phase, "round": info.round}
        if info.phase in ("abandoned", "settled"):  # ended: a deadline here is no phase's end
            raise NotFoundError(
                f"task {task_id} was {info.phase}; it will never reach {phase}",
                f"claim with `din rewards claim --task {task_id}`",
            )
        if (
            ctx.identity is not None
            and info.deadline != NO_DEADLINE
            and ctx.chain.now() >= info.deadline
        ):
            with ctx.chain.writing():
                d.advance(ctx.account, task_id)
            continue
        if time.monotonic() >= end:
            raise WaitTimeout(
                f"task {task_id} is still in {info.phase} (round {info.round}) after {timeout:g} s",
                "raise --timeout, or pass the deadline (`din chain advance SECONDS` on a dev chain)",
            )
        time.sleep(poll)
