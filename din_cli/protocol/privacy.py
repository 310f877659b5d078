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


def epsilon_of(
    ctx, task_id: int, address: str, extra_round: int | None = None, *, info=None, taken=None
) -> float:
    """``address``'s epsilon at the task's delta over the rounds it submitted in (and ``extra_round``).

    A plain DP task: each round is one Gaussian mechanism of the task's
    multiplier, composed exactly (``ml.privacy.epsilon``). A secagg task:
    only subgroup sums are released, and each round is the distributed
    discrete Gaussian of that round's subgroup (``protocol.secagg.dp_round_epsilon``,
    Kairouz et al. 2021), composed by the RDP accountant (``ml.privacy.ddg_epsilon``).
    """
    from din_cli.protocol import secagg

    info = info or ctx.din.task_info(task_id)
    taken = rounds_taken(ctx, task_id) if taken is None else taken
    rounds = set(taken.get(address, [])) | ({extra_round} if extra_round else set())
    if info.dp is None:
        return math.inf if rounds else 0.0
    if not secagg.is_secagg_task(info):
        return info.dp.epsilon(len(rounds))
    from din_cli.ml import zoo
    from din_cli.ml.privacy import ddg_epsilon

    dim = sum(math.prod(s) for s in zoo.param_shapes(info.arch).values())
    per_round = []
    for r in sorted(rounds):
        m = ctx.din.subgroup_of(task_id, address, r)
        g = secagg.group_of(ctx, task_id, r, m.group, info)
        per_round.append(secagg.dp_round_epsilon(info.dp, g, dim))
    return ddg_epsilon(per_round, info.dp.delta)


def report(ctx, task_id: int) -> dict:
    """The task's DP parameters and each participant's rounds and epsilon at the task's delta."""
    info = ctx.din.task_info(task_id)
    taken = rounds_taken(ctx, task_id)
    rows = []
    for address in ctx.din.participants(task_id):
        rounds = taken.get(address, [])
        eps = epsilon_of(ctx, task_id, address, info=info, taken=taken)
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
    eps = epsilon_of(ctx, task_id, address, round_, info=info)
    if eps > budget:
        raise UsageError(
            f"round {round_} would bring your epsilon in task {task_id} to {eps:.4g} "
            f"(delta {info.dp.delta:g}), over --dp-budget {budget:g}",
            "stop training for this task, or raise --dp-budget",
        )
    return eps
