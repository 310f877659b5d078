"""Each participant's differential privacy spend in a task (``din privacy report``, ``--dp-budget``)."""

from __future__ import annotations

import math

from din_cli.errors import UsageError


def rounds_taken(ctx, task_id: int) -> dict[str, list[int]]:
    """``{participant address: rounds it submitted an update in}``, from UpdateSubmitted events.

    Every submission counts, also in a round a dispute later discarded: the
    update was released all the same.
    """
    out: dict[str, list[int]] = {}
    for e in ctx.din.events(task_id, "UpdateSubmitted"):
        a = e["args"]
        out.setdefault(a["participant"], []).append(int(a["round"]))
    return {k: sorted(set(v)) for k, v in out.items()}


def report(ctx, task_id: int) -> dict:
    """The task's DP parameters and each participant's rounds and epsilon at the task's delta."""
    info = ctx.din.task_info(task_id)
    taken = rounds_taken(ctx, task_id)
    rows = []
    for address in ctx.din.participants(task_id):
        rounds = taken.get(address, [])
        eps = info.dp.epsilon(len(rounds)) if info.dp else (math.inf if rounds else 0.0)
        rows.append({"participant": address, "rounds": rounds, "epsilon": eps})
    return {
        "task_id": task_id,
        "privacy": info.privacy,
        "dp": info.dp.as_dict() if info.dp else None,
        "delta": info.dp.delta if info.dp else None,
        "participants": rows,
    }


def check_budget(ctx, task_id: int, address: str, budget: float, round_: int) -> float:
    """The epsilon ``address`` reaches by submitting in ``round_``; UsageError above ``budget``."""
    info = ctx.din.task_info(task_id)
    if info.dp is None:
        raise UsageError(
            f"task {task_id} has no differential privacy: its updates are released as trained",
            "drop --dp-budget, or join a task published with --dp-clip and --dp-noise",
        )
    rounds = set(rounds_taken(ctx, task_id).get(address, [])) | {round_}
    eps = info.dp.epsilon(len(rounds))
    if eps > budget:
        raise UsageError(
            f"round {round_} would bring your epsilon in task {task_id} to {eps:.4g} "
            f"(delta {info.dp.delta:g}), over --dp-budget {budget:g}",
            "stop training for this task, or raise --dp-budget",
        )
    return eps
