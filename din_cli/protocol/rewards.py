"""Settlement and payouts: slash what the record proves, settle every subgroup, claim, show.

``settle`` first slashes every aggregator the chain's record convicts, in
every round (it did not reveal, or revealed a minority aggregate), then settles
each evaluation subgroup: the score vector a strict majority of its validators
revealed is accepted and every other validator there (another vector, or none)
is penalised; with no strict majority the subgroup scores 0 and only silent
validators are penalised. When a subgroup's majority rejected the owner's test
set (revealed the empty vector), its validators earn their fee and the whole
participants' pool goes to the contributors (``rejected`` lists such subgroups). Anyone may run it, until the settling deadline. ``claim`` pulls what the task
owes the acting key; ``show`` lists scores, payouts, stakes and slashes.

The contributors are split by their accepted training record: ``prove``
shows the chain, once per participant, each round whose accepted subgroup
result admitted its update (results carry the bitmap of admitted positions),
while the task settles and until its settling deadline, when aggregate
disputes are closed; a split by record pays only after that deadline. A task
abandoned for want of a test set keeps that window open for the settling
duration. A participant whose every update was excluded (junk, a Sybil's
copy) has no record and gets nothing; only when nobody proved a record is
the pool split by first submission. A subgroup whose validators disagree
settles in the second half of the settling phase (``waiting``), so an
outvoted validator can dispute the majority's scores first.

Payouts telescope (``pool * (before + m) / total - pool * before / total``),
so once everyone has claimed, the claims sum exactly to the deposit: the
participants' pool, the validators' fees, and the owner's refund of any part
nobody earned.

Example:
    with open_context(identity=anyone) as ctx:
        settle(ctx, 1)
"""

from __future__ import annotations

from din_cli.errors import AlreadyDone, NotFoundError, UsageError
from din_cli.protocol.roundflow import require_phase, validator_state

NO_DEADLINE = 2**64 - 1


def settle(ctx, task_id: int) -> dict:
    """Slash convicted aggregators of every round, then settle every unsettled subgroup; what was done."""
    d = ctx.din
    info = d.task_info(task_id)
    if info.phase in ("settled", "abandoned"):
        raise AlreadyDone(
            f"task {task_id} is already {info.phase}",
            f"claim with `din rewards claim --task {task_id}`",
        )
    if (
        info.phase != "settling"
        and info.deadline != NO_DEADLINE
        and ctx.chain.now() >= info.deadline
    ):
        with ctx.chain.writing():
            info = d.advance(ctx.account, task_id)
    if info.phase == "abandoned":
        return {
            "task_id": task_id,
            "phase": info.phase,
            "slashed": [],
            "settled": [],
            "rejected": [],
        }
    require_phase(ctx, task_id, "settling")
    slashed = slash_aggregators(ctx, task_id, range(1, info.round + 1))
    done = {int(e["args"]["group"]) for e in d.events(task_id, "SubgroupSettled")}
    opens = {g: d.settle_opens(task_id, g) for g in range(info.groups) if g not in done}
    now = ctx.chain.now()
    later = [t for t in opens.values() if t > now]
    if later and ctx.chain.clock() >= min(later):
        with ctx.chain.writing():  # a chain that mines on demand: a no-op block at the clock's time
            d.advance(ctx.account, task_id)
        now = ctx.chain.now()
    waiting = sorted(g for g, t in opens.items() if t > now)
    if waiting and len(waiting) == len(opens):
        raise UsageError(
            f"task {task_id}: evaluation subgroups {waiting} disagree and settle in {max(opens.values()) - now} s, after the window for a score dispute",
            f"wait, then settle again (an outvoted validator disputes with `din round dispute --task {task_id} --round 0`)",
        )
    with ctx.chain.writing():
        groups = d.settle(ctx.account, task_id, [g for g in opens if g not in waiting])
    return {
        "task_id": task_id,
        "phase": d.task_info(task_id).phase,
        "slashed": slashed,
        "settled": groups,
        "waiting": waiting,
        "rejected": d.rejected_subgroups(task_id),
    }


def slash_aggregators(ctx, task_id: int, rounds) -> list[dict]:
    """Slash every aggregator the record convicts in ``rounds`` (no reveal, or a minority CID); what was slashed.

    The contract keeps every round's record until the task is settled; a
    validator slashed meanwhile (by someone else) is skipped.
    """
    from din_cli.errors import TransactionReverted

    d = ctx.din
    slashed = []
    for r in rounds:
        for who in d.slashable_aggregators(task_id, r):
            try:
                with ctx.chain.writing():
                    amount = d.slash_aggregator(ctx.account, task_id, r, who)
            except TransactionReverted as e:
                if "already removed" in e.reason:
                    continue
                raise
            slashed.append({"validator": who, "round": r, "amount": amount})
    return slashed


def by_record(ctx, task_id: int, info) -> bool:
    """Whether ``task_id``'s participants are (or, settling, already will be) paid by record: it
    was abandoned, a settled subgroup rejected the test set, or, settled, no score is positive."""
    d = ctx.din
    if info.phase == "abandoned" or d.rejected_subgroups(task_id):
        return True
    return info.phase == "settled" and not any(d.settlement_results(task_id).values())


def proving(ctx, info) -> bool:
    """Whether ``info``'s task takes record proofs now: while it settles, and after it settled
    or was abandoned for want of a test set until its deadline (aggregate disputes are closed
    by then, so no proven result can be overturned)."""
    if info.phase == "settling":
        return True
    return info.phase in ("settled", "abandoned") and ctx.chain.now() < info.deadline != NO_DEADLINE


def prove(ctx, task_id: int) -> dict:
    """Prove the acting participant's accepted training record of ``task_id``: ``{rounds, gas}``.

    UsageError outside the window (before the task settles, or after its
    settling deadline); AlreadyDone once proven; NotFoundError when no
    accepted result admitted its update.
    """
    d = ctx.din
    info = d.task_info(task_id)
    if info.phase in ("test-set", "score-reveal") and ctx.chain.now() >= info.deadline:
        with ctx.chain.writing():  # past its deadline: the task moves on (abandoned, or settling)
            info = d.advance(ctx.account, task_id)
    if not proving(ctx, info):
        raise UsageError(
            f"task {task_id} is in phase {info.phase}: records are proven while it settles, until its settling deadline",
            "the window has closed"
            if info.phase in ("settled", "abandoned")
            else "prove once every score is revealed (`din round wait --phase settling`)",
        )
    if ctx.address in d.records(task_id):
        raise AlreadyDone(
            f"{ctx.address} already proved its record in task {task_id}", "nothing to do"
        )
    with ctx.chain.writing():
        doc = d.prove_record(ctx.account, task_id)
    return {"task_id": task_id, "account": ctx.address, **doc}


def claim(ctx, task_id: int) -> dict:
    """Pull what ``task_id`` owes the acting key and release its validator bond; AlreadyDone once claimed."""
    d = ctx.din
    info = d.task_info(task_id)
    if info.phase not in ("settled", "abandoned"):
        raise UsageError(
            f"task {task_id} is in phase {info.phase}, not settled",
            f"settle it first: `din rewards settle --task {task_id}`",
        )
    split = by_record(ctx, task_id, info)
    wait = info.deadline - ctx.chain.now() if info.deadline != NO_DEADLINE and split else 0
    if wait > 0 and d.claimable(task_id, ctx.address) == 0 and ctx.chain.clock() >= info.deadline:
        with ctx.chain.writing():  # a chain that mines on demand: a no-op block at the clock's time
            d.advance(ctx.account, task_id)
        wait = info.deadline - ctx.chain.now()
    waits = wait > 0 and ctx.address != info.owner and not d.bonded(task_id, ctx.address)
    if waits and d.claimable(task_id, ctx.address) == 0:
        raise UsageError(
            f"task {task_id}'s contributors are paid by record: claims open in {wait} s, when the window for proving records closes",
            f"prove yours meanwhile: `din rewards prove --task {task_id}`",
        )
    with ctx.chain.writing():
        if d.claimable(task_id, ctx.address) == 0 and d.bonded(task_id, ctx.address):
            d.release(ctx.account, task_id, ctx.address)  # nothing to pay, but the stake unlocks
            return {"task_id": task_id, "account": ctx.address, "amount": 0, "bond_released": True}
        if d.claimable(task_id, ctx.address) == 0:
            claimed = [
                e for e in d.events(task_id, "Claimed") if e["args"]["account"] == ctx.address
            ]
            if claimed:
                raise AlreadyDone(
                    f"{ctx.address} already claimed {claimed[-1]['args']['amount']} from task {task_id}",
                    "nothing to do",
                )
            raise NotFoundError(
                f"task {task_id} owes {ctx.address} nothing",
                "only participants with a score, validators that earned a fee, and the owner of unearned rewards can claim",
            )
        amount, fee = d.claim_detail(ctx.account, task_id)
    # a validator's fee went to its pool in the registry: `din stake claim` pays its share
    return {"task_id": task_id, "account": ctx.address, "amount": amount, "fee_to_pool": fee}


def show(ctx, task_id: int) -> dict:
    """Scores, payouts (claimed and claimable), validator stakes and slashes of ``task_id``."""
    d = ctx.din
    info = d.task_info(task_id)
    claimed: dict[str, int] = {}
    for e in d.events(task_id, "Claimed"):
        claimed[e["args"]["account"]] = claimed.get(e["args"]["account"], 0) + int(
            e["args"]["amount"]
        )
    accepted = d.settlement_results(task_id)
    revealed = d.scores_revealed(task_id)
    parts = d.participants(task_id)
    index = {a: i for i, a in enumerate(parts)}
    slashes: dict[str, list] = {}
    for name in ("ValidatorSlashed", "ValidatorPenalised"):
        for e in d.events(task_id, name):
            slashes.setdefault(e["args"]["validator"], []).append(
                {"amount": int(e["args"]["amount"]), "reason": e["args"]["reason"]}
            )
    participants = []
    for a in parts:
        scores = []
        for v, vec in revealed.items():
            st = validator_state(ctx, task_id, v)
            grp = (
                d.round_info(task_id, 0).participant_groups[int(st["score_group"])]
                if vec and st["score_group"] is not None
                else []
            )
            if index[a] in grp:
                scores.append(vec[grp.index(index[a])])
        participants.append(
            {
                "address": a,
                "index": index[a],
                "scores": scores,
                "score": accepted.get(a),
                "claimed": claimed.get(a, 0),
                "claimable": d.claimable(task_id, a)
                if info.phase in ("settled", "abandoned")
                else 0,
            }
        )
    validators = []
    for v in d.validators(task_id):
        st = validator_state(ctx, task_id, v)
        validators.append(
            {
                "address": v,
                "stake": d.validator_info(v).stake,
                "slashed": sum(s["amount"] for s in slashes.get(v, [])),
                "reasons": [s["reason"] for s in slashes.get(v, [])],
                "fee_earned": bool(
                    st["score_revealed"] and not st["removed"] and info.phase in ("settled",)
                ),
                "claimed": claimed.get(v, 0),
                "claimable": d.claimable(task_id, v)
                if info.phase in ("settled", "abandoned")
                else 0,
            }
        )
    owner = {
        "address": info.owner,
        "claimed": claimed.get(info.owner, 0),
        "claimable": d.claimable(task_id, info.owner)
        if info.phase in ("settled", "abandoned")
        else 0,
    }
    total_claimed = sum(claimed.values())
    outstanding = (
        sum(p["claimable"] for p in participants)
        + sum(v["claimable"] for v in validators)
        + owner["claimable"]
    )
    return {
        "task_id": task_id,
        "phase": info.phase,
        "deposit": info.deposit,
        "fee_bps": info.fee_bps,
        "claimed": total_claimed,
        "outstanding": outstanding,
        "balanced": total_claimed + outstanding == info.deposit
        if info.phase in ("settled", "abandoned")
        else None,
        "fully_paid": total_claimed == info.deposit,
        "rejected_subgroups": d.rejected_subgroups(task_id),
        "participants": participants,
        "validators": validators,
        "owner": owner,
    }
