"""The dispute path: a subgroup's wrong accepted aggregate is overturned by a larger random committee.

Anyone who recomputes a subgroup's accepted aggregate (with the code `din
verify` runs, :func:`din_cli.protocol.roundflow.subgroup_result`) and gets
another CID may ``file`` a dispute, escrowing the task's slash amount as a
bond; it freezes the task. In a later block anyone may ``draw`` the committee
(DinDisputes picks it from the whole staked set, seeded by the filing block's
hash). Each member ``vote``\\ s: recomputes the subgroup the same way and
commits its CID, then reveals it; the salt is derived from the member's key
(``Din.derive_salt``) so no state is needed between the two steps. Anyone
``resolve``\\ s once every member revealed or the reveal window closed: a CID
revealed by a strict majority of the committee decides.

An evaluation subgroup's majority score vector is disputed the same way,
with round 0: while the task settles, an evaluation validator that scores the
subgroup otherwise (it holds K) files; the disputed subgroup then settles only
after the dispute, and a dissenting subgroup settles in the second half of the
settling phase, so the minority has time to file. A validator of the task
grants K (and in a sealed task the update keys it holds) to the committee
(``sealing.grant_for_dispute``); each member recomputes the vector an honest
validator of that subgroup reveals, with a granted K that opens the owner's
signed CID (none by the grant cutoff: the rejection). Upheld, ``settle``
accepts the committee's vector and slashes every validator of the subgroup
that revealed another.

Each step checks the chain first and raises ``AlreadyDone`` (exit 7) when it
was already done, so a killed command can simply be run again.

Example:
    with open_context(identity=filer) as ctx:
        doc = file(ctx, 1, 1, 0)
        print(doc["dispute_id"])
"""

from __future__ import annotations

from din_cli.errors import AlreadyDone, InputError, NotFoundError, UsageError, VerificationError
from din_cli.protocol.cids import to_bytes, to_text
from din_cli.protocol.roundflow import subgroup_aggregate

OPEN = ("filed", "drawn")
#: Outcome of DinDisputes' state numbers (``DisputeResolved.outcome``).
OUTCOMES = {3: "upheld", 4: "dismissed", 5: "undecided", 6: "void"}


def dispute_number(text: str | int) -> int:
    """A dispute id from user text (``3``, ``0x3``); UsageError otherwise."""
    try:
        n = int(str(text), 0)
    except ValueError:
        n = 0
    if n < 1:
        raise UsageError(
            f"{text!r} is not a dispute id", "give the number `din round dispute` printed"
        )
    return n


def _require_disputes(ctx) -> None:
    if ctx.din.disputes is None:
        raise NotFoundError(
            "this deployment has no dispute contract", "redeploy with `din init` (a newer din)"
        )


def _info(ctx, dispute_id: int) -> dict:
    from din_cli.errors import TransactionReverted

    _require_disputes(ctx)
    try:
        return ctx.din.dispute_info(dispute_id)
    except TransactionReverted as e:
        if "no such dispute" in e.reason:
            raise NotFoundError(
                f"dispute {dispute_id} does not exist",
                "list a task's disputes with `din dispute status --task TASK`",
            ) from None
        raise


def _cid_or_hex(raw: bytes) -> str:
    try:
        return to_text(bytes(raw))
    except InputError:
        return "0x" + bytes(raw).hex()


# ------------------------------------------------------------------ filing


def _require_bond(ctx, info) -> int:
    """The task's slash amount, which a filer escrows; InputError when it holds less."""
    bond = info.slash_amount
    if ctx.din.balance(ctx.address) < bond:
        raise InputError(
            f"{ctx.address} holds {ctx.din.balance(ctx.address)} DIN units, the bond is {bond}",
            "get tokens for the bond first (the task's slash amount)",
        )
    return bond


def recompute(ctx, task_id: int, round_: int, group: int) -> dict:
    """Subgroup ``group``'s accepted result of ``round_`` and the result it recomputes to (``din
    verify``'s code): CIDs and admitted bitmaps."""
    accepted = ctx.din.accepted_results(task_id, round_)
    if group not in accepted:
        raise NotFoundError(
            f"task {task_id} round {round_}: subgroup {group} has no accepted aggregate",
            f"only an accepted result can be disputed; see `din verify --task {task_id} --round {round_}`",
        )
    with ctx.workdir() as work:
        expected, admitted = subgroup_aggregate(ctx, task_id, round_, group, work)
    return {
        "accepted": to_text(accepted[group][0]),
        "accepted_admitted": accepted[group][1],
        "expected": expected,
        "admitted": admitted,
    }


def file(ctx, task_id: int, round_: int, group: int) -> dict:
    """Recompute subgroup ``group`` of ``round_`` and, when its accepted CID is wrong, file a dispute.

    UsageError (nothing filed) when the accepted result recomputes exactly,
    when the round was discarded by an earlier dispute's replay, or when the
    task is past training; AlreadyDone when this very subgroup is already
    under dispute.
    """
    d = ctx.din
    _require_disputes(ctx)
    info = d.task_info(task_id)
    discarded = d.discarded_rounds(task_id)
    if round_ in discarded:
        raise UsageError(
            f"task {task_id} round {round_} was discarded by a dispute's replay"
            f" (rounds {', '.join(map(str, discarded))})",
            "a discarded round cannot be disputed again; check the replay with `din verify`",
        )
    for o in d.disputes_of(task_id):
        if o["state"] in OPEN:
            if (o["round"], o["group"]) == (round_, group):
                raise AlreadyDone(
                    f"dispute {o['dispute_id']} already disputes task {task_id} round {round_} subgroup {group}",
                    f"follow it with `din dispute status {o['dispute_id']}`",
                )
            raise UsageError(
                f"task {task_id} already has an open dispute ({o['dispute_id']})",
                f"file again once it is resolved: `din dispute status {o['dispute_id']}`",
            )
    if round_ == 0:
        return _file_scores(ctx, task_id, group, info)
    if info.phase in ("joining", "settling", "settled", "abandoned", "disputed"):
        raise UsageError(
            f"task {task_id} is in phase {info.phase}: aggregates are disputed until the task settles",
            "nothing to file now (an evaluation subgroup's scores: --round 0)",
        )
    doc = recompute(ctx, task_id, round_, group)
    if (doc["expected"], doc["admitted"]) == (doc["accepted"], doc["accepted_admitted"]):
        raise UsageError(
            f"task {task_id} round {round_} subgroup {group}: the accepted aggregate {doc['accepted']} recomputes exactly",
            "nothing to dispute (`din verify` lists the subgroups that do not hold)",
        )
    bond = _require_bond(ctx, info)
    with ctx.chain.writing():
        did = d.file_dispute(
            ctx.account, task_id, round_, group, to_bytes(doc["expected"]), doc["admitted"]
        )
    return {
        "dispute_id": did,
        "task_id": task_id,
        "round": round_,
        "group": group,
        "accepted": doc["accepted"],
        "cid": doc["expected"],
        "bond": bond,
    }


def _file_scores(ctx, task_id: int, group: int, info) -> dict:
    """File a dispute of evaluation subgroup ``group``'s majority score vector (see ``file``)."""
    from din_cli.protocol.evaluation import evaluation_validators, score_subgroup

    d = ctx.din
    if info.phase != "settling" and info.deadline <= ctx.chain.now():
        with ctx.chain.writing():
            info = d.advance(ctx.account, task_id)
    if info.phase != "settling":
        raise UsageError(
            f"task {task_id} is in phase {info.phase}: scores are disputed while the task settles",
            "file once every score is revealed, before the subgroup settles",
        )
    if group >= info.groups:
        raise UsageError(f"task {task_id} has no evaluation subgroup {group}", "give a subgroup")
    if group in {int(e["args"]["group"]) for e in d.events(task_id, "SubgroupSettled")}:
        raise UsageError(
            f"task {task_id}'s evaluation subgroup {group} is already settled",
            "file before it settles (a dissenting subgroup waits half the settling phase)",
        )
    if ctx.address not in evaluation_validators(ctx, task_id):
        raise UsageError(
            f"{ctx.address} is not an evaluation validator of task {task_id}: it holds no test-set key",
            "file with the key of a validator that scored",
        )
    participants, _, winner = d.score_majority(task_id, group)
    with ctx.workdir() as work:
        mine = score_subgroup(ctx, task_id, group, work)
    if list(mine) == list(winner if winner is not None else [0] * len(participants)):
        raise UsageError(
            f"task {task_id} evaluation subgroup {group}: the majority's scores recompute exactly",
            "nothing to dispute",
        )
    bond = _require_bond(ctx, info)
    with ctx.chain.writing():
        did = d.file_score_dispute(ctx.account, task_id, group, mine)
    return {
        "dispute_id": did,
        "task_id": task_id,
        "round": 0,
        "group": group,
        "accepted": list(winner),
        "cid": list(mine),
        "bond": bond,
    }


def _committee_scores(ctx, task_id: int, dispute: dict, work) -> list[int]:
    """What a committee member of a score dispute votes: the vector an honest validator of the
    subgroup reveals, scored with a granted K.

    A granted key counts only if the owner's posted ciphertext opens under it.
    Scores from one vote at once: the committed test set's plaintext is unique.
    A rejection (the test set fails with every such key) and the lack of any
    key wait for the grant cutoff (UsageError), so every member judges the
    same grants; past it, the rejection stands, and with no key at all the
    member votes the vector the filer disputed: a filer that grants nothing
    cannot win a dispute.
    """
    from din_cli.protocol import sealing
    from din_cli.protocol.evaluation import score_subgroup

    opened = False
    for key in sealing.granted_test_keys(ctx, task_id, dispute):
        try:
            scores = score_subgroup(ctx, task_id, dispute["group"], work, key=key)
        except VerificationError:  # not K: another grant may hold it
            continue
        if scores:
            return scores
        opened = True
    if ctx.chain.now() < sealing.dispute_cutoff(ctx, task_id, dispute):
        raise UsageError(
            f"dispute {dispute['dispute_id']}: no grant of the test set's key that scores yet",
            "wait for a validator's `din keys grant --dispute` (or the grant cutoff), then vote again",
        )
    return [] if opened else list(_filed(ctx, dispute["dispute_id"])["accepted"])


# ------------------------------------------------------------------ the committee


def draw(ctx, dispute_id: int) -> dict:
    """Draw the dispute's committee (anyone, a later block than the filing); its status."""
    info = _info(ctx, dispute_id)
    if info["state"] != "filed":
        raise AlreadyDone(
            f"dispute {dispute_id} is {info['state']}: its committee was already drawn",
            f"see it with `din dispute status {dispute_id}`",
        )
    with ctx.chain.writing():
        if _info(ctx, dispute_id)["state"] != "filed":
            raise AlreadyDone(
                f"dispute {dispute_id}'s committee was already drawn", "nothing to do"
            )
        ctx.din.draw_committee(ctx.account, dispute_id)
    return status(ctx, dispute_id)


def _voted(ctx, dispute_id: int, event: str) -> set[str]:
    return {e["args"]["member"] for e in ctx.din.dispute_logs(event, disputeId=int(dispute_id))}


def vote(ctx, dispute_id: int, *, reveal: bool = False) -> dict:
    """A committee member's vote: recompute the disputed subgroup and commit its CID (``reveal``: reveal it).

    The CID is recorded under ``$DIN_HOME/commits`` before the commit and
    recomputed bit-exactly when the record is gone; the salt is derived from
    the member's key.
    """
    info = _info(ctx, dispute_id)
    me = ctx.address
    if me not in info["committee"]:
        raise NotFoundError(
            f"{me} is not on dispute {dispute_id}'s committee",
            f"its members are listed by `din dispute status {dispute_id}`",
        )
    step = "reveal" if reveal else "commit"
    if me in _voted(ctx, dispute_id, "DisputeVoteRevealed" if reveal else "DisputeVoteCommitted"):
        raise AlreadyDone(
            f"dispute {dispute_id}: vote already {step}ted",
            "nothing to do" if reveal else f"reveal it: `din dispute vote {dispute_id} --reveal`",
        )
    if info["state"] != "drawn":
        raise UsageError(
            f"dispute {dispute_id} is {info['state']}, not open for votes",
            f"see `din dispute status {dispute_id}`",
        )
    now = ctx.chain.now()
    if not reveal and now >= info["commit_end"]:
        raise UsageError(f"dispute {dispute_id}'s commit window is over", "nothing to do")
    if reveal:
        if me not in _voted(ctx, dispute_id, "DisputeVoteCommitted"):
            raise UsageError(
                f"dispute {dispute_id}: no vote committed", "only a committed vote can be revealed"
            )
        if info["committed"] < info["size"] and now < info["commit_end"]:
            raise UsageError(
                f"dispute {dispute_id}: {info['committed']} of {info['size']} members committed; reveals open when all have or in {info['commit_end'] - now} s",
                f"wait, then run `din dispute vote {dispute_id} --reveal` again",
            )
    task_id, round_, group = info["task_id"], info["round"], info["group"]
    kind = f"dispute-{dispute_id}"
    record = ctx.load_record(task_id, round_, kind) if reveal else None
    if round_ == 0:
        return _vote_scores(ctx, info, record, reveal)
    if record is None:
        with ctx.workdir() as work:
            cid, admitted = subgroup_aggregate(ctx, task_id, round_, group, work)
    else:
        cid, admitted = record["cid"], int(record.get("admitted", "0x0"), 16)
    if not reveal:
        record = {"cid": cid, "admitted": hex(admitted), "dispute_id": dispute_id}
        ctx.save_record(task_id, round_, kind, record)
    with ctx.chain.writing():
        if me in _voted(
            ctx, dispute_id, "DisputeVoteRevealed" if reveal else "DisputeVoteCommitted"
        ):
            raise AlreadyDone(f"dispute {dispute_id}: vote already {step}ted", "nothing to do")
        if reveal:
            ctx.din.dispute_reveal(ctx.account, dispute_id, to_bytes(cid), admitted=admitted)
        else:
            ctx.din.dispute_commit(ctx.account, dispute_id, to_bytes(cid), admitted=admitted)
    return {
        "dispute_id": dispute_id,
        "task_id": task_id,
        "round": round_,
        "group": group,
        "step": step,
        "cid": cid,
        "agrees": (cid, admitted) == _filed(ctx, dispute_id)["accepted_result"],
    }


def _vote_scores(ctx, info: dict, record: dict | None, reveal: bool) -> dict:
    """``vote`` on a score dispute: commit (or reveal) the recomputed score vector."""
    dispute_id, task_id = info["dispute_id"], info["task_id"]
    if record is None:
        with ctx.workdir() as work:
            scores = _committee_scores(ctx, task_id, info, work)
    else:
        scores = list(record["scores"])
    if not reveal:
        record = {"scores": scores, "dispute_id": dispute_id}
        ctx.save_record(task_id, 0, f"dispute-{dispute_id}", record)
    step = "reveal" if reveal else "commit"
    with ctx.chain.writing():
        if ctx.address in _voted(
            ctx, dispute_id, "DisputeVoteRevealed" if reveal else "DisputeVoteCommitted"
        ):
            raise AlreadyDone(f"dispute {dispute_id}: vote already {step}ted", "nothing to do")
        if reveal:
            ctx.din.dispute_reveal(ctx.account, dispute_id, b"", scores=scores)
        else:
            ctx.din.dispute_commit(ctx.account, dispute_id, b"", scores=scores)
    _, _, winner = ctx.din.score_majority(task_id, info["group"])
    return {
        "dispute_id": dispute_id,
        "task_id": task_id,
        "round": 0,
        "group": info["group"],
        "step": step,
        "cid": scores,
        "agrees": winner is not None and list(winner) == scores,
    }


def resolve(ctx, dispute_id: int) -> dict:
    """Decide the dispute (anyone) once the committee revealed or its window closed; its status.

    Upheld: the subgroup's validators that revealed the accepted CID are
    slashed and removed, and the task replays from the disputed round's
    starting model. A dispute nobody drew within 256 blocks is voided.
    """
    info = _info(ctx, dispute_id)
    if info["state"] not in OPEN:
        raise AlreadyDone(f"dispute {dispute_id} is already {info['state']}", "nothing to do")
    now = ctx.chain.now()
    if info["state"] == "filed" and ctx.chain.head() < info["filed_block"] + 256:
        raise UsageError(
            f"dispute {dispute_id} has no committee yet",
            f"draw it first: `din dispute draw {dispute_id}`",
        )
    if info["state"] == "drawn" and info["revealed"] < info["size"] and now < info["reveal_end"]:
        raise UsageError(
            f"dispute {dispute_id}: the committee is still voting ({info['revealed']} of {info['size']} revealed, the window closes in {info['reveal_end'] - now} s)",
            "wait for every reveal or the window's end, then run it again",
        )
    with ctx.chain.writing():
        if _info(ctx, dispute_id)["state"] not in OPEN:
            raise AlreadyDone(f"dispute {dispute_id} was already resolved", "nothing to do")
        ctx.din.resolve_dispute(ctx.account, dispute_id)
    return status(ctx, dispute_id)


# ------------------------------------------------------------------ reading


def _filed(ctx, dispute_id: int) -> dict:
    """The filed dispute's accepted and claimed results: CID text (and ``accepted_result``, the
    accepted ``(CID text, admitted bitmap)``)."""
    from din_cli.chain.din import split_result, unpack_scores

    e = ctx.din.dispute_logs("DisputeFiled", disputeId=int(dispute_id))[0]["args"]
    if int(e["round"]) == 0:  # scores of an evaluation subgroup
        accepted = unpack_scores(e["acceptedCid"])
        return {
            "accepted": accepted,
            "accepted_result": accepted,
            "claimed": unpack_scores(e["cid"]),
        }
    accepted, admitted = split_result(e["acceptedCid"])
    return {
        "accepted": _cid_or_hex(accepted),
        "accepted_result": (_cid_or_hex(accepted), admitted),
        "claimed": _cid_or_hex(split_result(e["cid"])[0]),
    }


def status(ctx, dispute_id: int) -> dict:
    """Dispute ``dispute_id``: state, CIDs, committee and each member's vote, outcome and slashes."""
    info = _info(ctx, dispute_id)
    did = int(dispute_id)
    committed = _voted(ctx, did, "DisputeVoteCommitted")
    from din_cli.chain.din import cid_digest, split_result, unpack_scores

    raw = {
        e["args"]["member"]: bytes(e["args"]["cid"])
        for e in ctx.din.dispute_logs("DisputeVoteRevealed", disputeId=did)
    }
    shown = unpack_scores if info["round"] == 0 else lambda r: _cid_or_hex(split_result(r)[0])
    revealed = {m: shown(r) for m, r in raw.items()}
    resolved = ctx.din.dispute_logs("DisputeResolved", disputeId=did)
    slashed = {
        e["args"]["member"]: {"amount": int(e["args"]["amount"]), "reason": e["args"]["reason"]}
        for e in ctx.din.dispute_logs("CommitteeSlashed", disputeId=did)
    }
    decided = None
    if info["decided_digest"] != bytes(32):
        decided = next(
            (revealed[m] for m, r in raw.items() if cid_digest(r) == info["decided_digest"]), None
        )
    filed = _filed(ctx, did)
    doc = {
        "dispute_id": did,
        "task_id": info["task_id"],
        "round": info["round"],
        "group": info["group"],
        "state": info["state"],
        "filer": info["filer"],
        "bond": info["bond"],
        "accepted": filed["accepted"],
        "claimed": filed["claimed"],
        "size": info["size"],
        "committed": info["committed"],
        "revealed": info["revealed"],
        "commit_end": info["commit_end"] or None,
        "reveal_end": info["reveal_end"] or None,
        "decided": decided,
        "new_round": int(resolved[-1]["args"]["newRound"]) or None if resolved else None,
        "committee": [
            {
                "member": m,
                "committed": m in committed,
                "cid": revealed.get(m),
                "slashed": slashed.get(m, {}).get("amount", 0),
            }
            for m in info["committee"]
        ],
    }
    if info["state"] == "upheld":
        doc["slashed_validators"] = [
            {"validator": e["args"]["validator"], "amount": int(e["args"]["amount"])}
            for e in ctx.din.events(info["task_id"], "ValidatorSlashed")
            if int(e["args"]["round"]) == info["round"]
            and int(e["blockNumber"]) == int(resolved[-1]["blockNumber"])
        ]
    return doc


def of_task(ctx, task_id: int) -> list[dict]:
    """Every dispute filed against ``task_id``, oldest first (the same records as :func:`status`)."""
    ctx.din.task_info(task_id)  # NotFoundError for an unknown task
    return [
        status(ctx, int(e["args"]["disputeId"]))
        for e in ctx.din.dispute_logs("DisputeFiled", taskId=int(task_id))
    ]


def summary(ctx, task_id: int) -> dict:
    """What `din round status` and `din verify` show of a task's disputes.

    ``disputes``: ``{dispute_id, round, group, state, new_round}`` oldest
    first; ``overturned``: ``{"ROUND/GROUP": dispute_id}`` of upheld ones;
    ``discarded``: the rounds upheld disputes' replays discarded.
    """
    d = ctx.din
    rows = [
        {
            "dispute_id": o["dispute_id"],
            "round": o["round"],
            "group": o["group"],
            "state": o["state"],
        }
        for o in d.disputes_of(task_id)
    ]
    return {
        "disputes": rows,
        "overturned": {
            f"{o['round']}/{o['group']}": o["dispute_id"] for o in rows if o["state"] == "upheld"
        },
        "discarded": d.discarded_rounds(task_id),
    }
