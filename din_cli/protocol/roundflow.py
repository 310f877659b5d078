"""The training round on chain: publish, start, train-and-submit, aggregate commit/reveal, finalize, attest.

Each function is one actor's step. It checks on chain whether the step was
already done (``AlreadyDone``, exit 7, so a killed command can simply be run
again), does the off-chain work (fetch, train, aggregate, add to the content
store), then sends one transaction inside ``chain.writing()`` after checking
again, so two copies of a command can never submit twice.

Commit/reveal salts are derived from the acting key (``Din.derive_salt``) and
the committed CID is recorded under ``$DIN_HOME/commits`` before the commit
is sent: the reveal needs no other saved state, and a validator that lost the
record recomputes the same aggregate bit-exactly.

Example:
    with open_context(identity=alice) as ctx:
        done = train_and_submit(ctx, 1, "stores/participant-01.npz")
        print(done["cid"])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from din_cli.errors import AlreadyDone, InputError, NotFoundError, UsageError, VerificationError
from din_cli.protocol.cids import to_bytes, to_text

TRAIN_DEFAULTS = {"epochs": 1, "lr": 0.1, "batch_size": 32}


def task_number(task: str | int) -> int:
    """A task id from user text (``7``, ``0x7``)."""
    from din_cli.chain.network import task_id

    return task_id(task)


def _hint_wait(task_id: int, phase: str) -> str:
    return f"wait for it with `din round wait --task {task_id} --phase {phase}`"


def require_phase(ctx, task_id: int, *phases: str):
    """The task's info; UsageError naming the phase it is in when it is in none of ``phases``."""
    info = ctx.din.task_info(task_id)
    if info.phase not in phases:
        raise UsageError(
            f"task {task_id} is in phase {info.phase} (round {info.round}), not {' or '.join(phases)}",
            _hint_wait(task_id, phases[0]),
        )
    return info


def _events_of(ctx, task_id: int, name: str, key: str, address: str) -> list:
    """``name`` events of ``task_id`` whose indexed ``key`` is ``address`` (filtered by the node)."""
    return ctx.din.events(task_id, name, **{key: address})


def _member(ctx, task_id: int, address: str) -> dict:
    """A participant's record, from events: ``index1`` (index + 1, 0 = none) and ``last_round`` submitted."""
    joined = _events_of(ctx, task_id, "ParticipantJoined", "participant", address)
    rounds = [
        int(e["args"]["round"])
        for e in _events_of(ctx, task_id, "UpdateSubmitted", "participant", address)
    ]
    return {
        "index1": int(joined[0]["args"]["index"]) + 1 if joined else 0,
        "last_round": max(rounds, default=0),
    }


def validator_state(ctx, task_id: int, address: str) -> dict:
    """A validator's record in a task, from its events: what it committed, revealed, attested, and whether it was slashed."""
    registered = _events_of(ctx, task_id, "ValidatorRegistered", "validator", address)
    commits = _events_of(ctx, task_id, "AggregateCommitted", "validator", address)
    reveals = _events_of(ctx, task_id, "AggregateRevealed", "validator", address)
    attests = _events_of(ctx, task_id, "GlobalModelAttested", "validator", address)
    score_commits = _events_of(ctx, task_id, "ScoresCommitted", "validator", address)
    score_reveals = _events_of(ctx, task_id, "ScoresRevealed", "validator", address)
    removed = bool(
        _events_of(ctx, task_id, "ValidatorSlashed", "validator", address)
        or _events_of(ctx, task_id, "ValidatorPenalised", "validator", address)
    )
    return {
        "index1": int(registered[0]["args"]["index"]) + 1 if registered else 0,
        "commit_round": max((int(e["args"]["round"]) for e in commits), default=0),
        "reveal_round": max((int(e["args"]["round"]) for e in reveals), default=0),
        "attest_round": max((int(e["args"]["round"]) for e in attests), default=0),
        "group": int(commits[-1]["args"]["group"]) if commits else None,
        "score_group": int(score_commits[-1]["args"]["group"]) if score_commits else None,
        "removed": removed,
        "score_committed": bool(score_commits),
        "score_revealed": bool(score_reveals),
    }


def _gas(receipt) -> int:
    return int(receipt["gasUsed"]) if receipt is not None else 0


# ------------------------------------------------------------------ model owner


def publish(ctx, model_path: str | Path, deposit: int, **options) -> dict:
    """Add the genesis model to the store and create a task with ``deposit`` token units; ``{task_id, cid}``.

    ``options``: subgroup_size, validators_per_subgroup, max_rounds, fee_bps,
    slash_amount, max_samples, test_set_hash, durations (see ``Din.create_task``).
    """
    from din_cli.ml.models import read_model

    if deposit <= 0:
        raise UsageError("the reward deposit must be positive", "give --deposit above 0")
    mf = read_model(model_path)
    cid = ctx.add(model_path)
    with ctx.chain.writing():
        task_id = ctx.din.create_task(
            ctx.account, genesis_cid=to_bytes(cid), arch=mf.arch, deposit=int(deposit), **options
        )
    return {"task_id": task_id, "cid": cid, "arch": mf.arch, "deposit": int(deposit)}


def start(ctx, task_id: int) -> dict:
    """Start round 1 (the owner, before the join deadline; anyone after it)."""
    with ctx.chain.writing():
        info = ctx.din.task_info(task_id)
        if info.phase != "joining":
            raise AlreadyDone(
                f"task {task_id} already started (phase {info.phase}, round {info.round})",
                "nothing to do",
            )
        info = ctx.din.start_round(ctx.account, task_id)
    return {"task_id": task_id, "phase": info.phase, "round": info.round}


def advance(ctx, task_id: int) -> dict:
    """Move the task past expired deadlines (anyone); its phase and round."""
    with ctx.chain.writing():
        info = ctx.din.advance(ctx.account, task_id)
    return {"task_id": task_id, "phase": info.phase, "round": info.round}


# ------------------------------------------------------------------ participant


def train_and_submit(
    ctx,
    task_id: int,
    data: str | Path,
    *,
    epochs: int = TRAIN_DEFAULTS["epochs"],
    lr: float = TRAIN_DEFAULTS["lr"],
    batch_size: int = TRAIN_DEFAULTS["batch_size"],
    seed: int | None = None,
    device: str = "auto",
    progress=None,
    dp_budget: float | None = None,
) -> dict:
    """Fetch the round's global model by its on-chain CID, train on ``data``, add the update, submit its CID.

    AlreadyDone when this key already submitted in the current round.
    ``seed`` defaults to the round number (so a re-run trains identically).
    In a differentially private task the update is clipped and noised
    (``ml.privacy.privatize``) before it is added; ``dp_budget`` refuses,
    before any training, a round that would take this participant's epsilon
    above it.
    """
    out = prepare_update(
        ctx,
        task_id,
        data,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        device=device,
        progress=progress,
        dp_budget=dp_budget,
    )
    receipt = submit_prepared(ctx, task_id, out["round"], out["cid"])
    return {**out, "gas": _gas(receipt)}


def submit_prepared(ctx, task_id: int, round_: int, cid: str):
    """Submit ``cid`` as this key's update of ``round_`` (still in its training phase); the receipt."""
    d = ctx.din
    with ctx.chain.writing():
        now = d.task_info(task_id)
        if now.round != round_ or now.phase != "training":
            raise UsageError(
                f"round {round_}'s training phase ended while training (now {now.phase}, round {now.round})",
                "run it again in the next round",
            )
        if _member(ctx, task_id, ctx.address)["last_round"] >= round_:
            raise AlreadyDone(
                f"update already submitted for task {task_id} round {round_}", "nothing to do"
            )
        return d.submit_update(ctx.account, task_id, to_bytes(cid))


def prepare_update(
    ctx,
    task_id: int,
    data: str | Path,
    *,
    epochs: int = TRAIN_DEFAULTS["epochs"],
    lr: float = TRAIN_DEFAULTS["lr"],
    batch_size: int = TRAIN_DEFAULTS["batch_size"],
    seed: int | None = None,
    device: str = "auto",
    progress=None,
    dp_budget: float | None = None,
) -> dict:
    """All of ``train_and_submit`` but the transaction: the update trained, noised, sealed or masked
    as the task says and added; ``{task_id, round, cid, samples, loss, device, deterministic, dp}``.

    ``din simulate`` trains with it on its workers and sends the submissions in batches.
    """
    from din_cli.ml.privacy import privatize
    from din_cli.ml.train import train
    from din_cli.protocol import privacy, sealing
    from din_cli.protocol import secagg as secure

    d = ctx.din
    info = d.task_info(task_id)
    me = _member(ctx, task_id, ctx.address)
    if not me["index1"]:
        raise NotFoundError(
            f"{ctx.address} is not a participant of task {task_id}",
            f"join first: `din participant join {task_id}`",
        )
    if info.round and me["last_round"] >= info.round:
        raise AlreadyDone(
            f"update already submitted for task {task_id} round {info.round}", "nothing to do"
        )
    info = require_phase(ctx, task_id, "training")
    sealed, masked = sealing.is_sealed_task(info), secure.is_secagg_task(info)
    if (sealed or masked) and d.round_info(task_id, info.round).seed is None:
        with (
            ctx.chain.writing()
        ):  # round 1's subgroups (whom to seal or mask for): any transaction draws them
            if d.round_info(task_id, info.round).seed is None:
                d.advance(ctx.account, task_id)
    eps = None
    if dp_budget is not None:
        eps = privacy.check_budget(ctx, task_id, ctx.address, float(dp_budget), info.round)
    rnd = d.round_info(task_id, info.round)
    dp_doc = None
    with ctx.workdir() as work:
        model = ctx.fetch(rnd.model_cid, work / "global.safetensors")
        update = work / "update.safetensors"
        result = train(
            model,
            data,
            update,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            seed=info.round if seed is None else seed,
            device=device,
            progress=progress,
        )
        masked_dp = info.dp is not None and secure.is_secagg_task(info)
        if info.dp is not None and not masked_dp:  # secagg adds its noise share on the grid
            noised = work / "update-dp.safetensors"
            done = privatize(update, model, noised, info.dp)
            update = noised
            dp_doc = {"norm": done.norm, "clipped": done.clipped, "noise_std": done.std}
            if eps is None:
                rounds = set(privacy.rounds_taken(ctx, task_id).get(ctx.address, []))
                eps = info.dp.epsilon(len(rounds | {info.round}))
            dp_doc["epsilon"] = eps
        if sealed:
            update = sealing.seal_update(ctx, task_id, info.round, update, work / "update.sealed")
        elif masked:
            update, dp_doc = secure.mask_update(
                ctx, task_id, info.round, update, work / "update.masked", info, start=model
            )
            if dp_doc is not None:
                dp_doc["epsilon"] = (
                    eps
                    if eps is not None
                    else privacy.epsilon_of(ctx, task_id, ctx.address, info.round, info=info)
                )
        cid = ctx.add(update)
    return {
        "task_id": task_id,
        "round": info.round,
        "cid": cid,
        "samples": result.samples,
        "loss": result.loss,
        "device": result.device,
        "deterministic": result.deterministic,
        "dp": dp_doc,
    }


# ------------------------------------------------------------------ validators: aggregation


def subgroup_updates(ctx, task_id: int, round_: int, group: int) -> list:
    """The updates submitted in ``round_`` by participants of subgroup ``group`` (from UpdateSubmitted events)."""
    return ctx.din.updates_submitted(task_id, round_, group)


def aggregate_cids(ctx, cids: list[bytes], work: Path, name: str) -> tuple[str, Path]:
    """Fetch ``cids``, aggregate them bit-exactly into ``work/name``, add it; ``(cid text, path)``.

    No admission rule: for results already accepted on chain (the global model).
    """
    from din_cli.ml.aggregate import aggregate

    if not cids:
        raise NotFoundError("nothing to aggregate", "no CIDs were given")
    paths = []
    for i, c in enumerate(cids):
        paths.append(ctx.fetch(c, work / f"{name}-in-{i:04d}.safetensors"))
    out = work / f"{name}.safetensors"
    aggregate(paths, out)
    return ctx.add(out), out


def start_model(ctx, task_id: int, round_: int) -> str:
    """The CID of the global model ``round_`` trains from."""
    return to_text(ctx.din.round_info(task_id, round_).model_cid)


def _cid_text(raw: bytes) -> str:
    try:
        return to_text(raw)
    except InputError:  # not a CID at all (sent to the contract directly)
        return "0x" + bytes(raw).hex()


def _fetch_updates(
    ctx, task_id: int, updates: list, work: Path, name: str, *, window: bool = True
) -> list:
    """Each update's file (opened, in a sealed task); None (``unavailable``) when the store has no
    such CID or it is not one; a ``sealing.Refused`` for a sealed update every reader refuses.

    A sealed update this reader holds no key for raises ``sealing.KeyMissing``
    until the grant cutoff of the window it reads in (``sealing.read_cutoff``).
    """
    from din_cli.protocol import sealing

    info = ctx.din.task_info(task_id)
    sealed = window and sealing.is_sealed_task(info)
    cutoff = sealing.read_cutoff(ctx, task_id, info, updates) if sealed else None
    paths: list = []
    for i, u in enumerate(updates):
        try:
            paths.append(
                sealing.open_update(
                    ctx, task_id, info, u, work / f"{name}-in-{i:04d}.safetensors", cutoff=cutoff
                )
            )
        except (NotFoundError, InputError):
            paths.append(None)
    return paths


def subgroup_result(
    ctx,
    task_id: int,
    round_: int,
    group: int,
    work: Path,
    *,
    aggregate: bool = True,
    device: str = "cpu",
    window: bool = True,
):
    """Subgroup ``group``'s result of ``round_`` by the admission rule; ``(cid text, Admission | None)``.

    In a secagg task the subgroup's masked updates are summed instead
    (``protocol.secagg.subgroup_result``): nobody reads one of them.

    ``window=False``: in a sealed task, a missing key is always
    ``sealing.KeyMissing``, never ``unavailable`` past a grant cutoff (``din
    verify`` reports the subgroup as sealed instead of recomputing it without
    an update).

    The subgroup's submitted updates, in submission order, go through
    :func:`din_cli.protocol.admission.admit` against the round's starting
    model with the task's ``maxSamples`` cap; the admitted ones are
    aggregated (their exclusions recorded in ``din.excluded``). A subgroup
    that received no update, or whose every update was excluded, agrees on
    the starting model (the contracts' convention), so its validators still
    have a result to commit and reveal, and nobody is slashed for it.
    ``aggregate=False`` only judges (the CID is then None unless it is the
    starting model).
    """
    from din_cli.chain.din import task_rule
    from din_cli.protocol import admission, secagg

    updates = subgroup_updates(ctx, task_id, round_, group)
    start = start_model(ctx, task_id, round_)
    if not updates:
        return start, None
    if secagg.is_secagg_task(ctx.din.task_info(task_id)):
        return secagg.subgroup_result(
            ctx, task_id, round_, group, work, updates, start, aggregate=aggregate, window=window
        )
    name = f"r{round_}-g{group}"
    base = ctx.fetch(start, work / f"{name}-start.safetensors")
    paths = _fetch_updates(ctx, task_id, updates, work, name, window=window)
    info = ctx.din.task_info(task_id)
    rule = {
        "base": base,
        "max_samples": info.max_samples,
        "ids": [_cid_text(u.cid) for u in updates],
    }
    if not aggregate:
        judged = admission.admit(paths, **rule)
        return (start if not judged.admitted else None), judged
    out = work / f"{name}.safetensors"
    outcome = admission.aggregate(paths, out, rule=task_rule(info), device=device, **rule)
    if outcome.unchanged:
        return start, outcome.admission
    return ctx.add(out), outcome.admission


def subgroup_files(work: Path, round_: int, group: int, count: int):
    """Where :func:`subgroup_result` left its files in ``work``: ``(update paths or None, start, aggregate)``.

    An update that could not be fetched, and an aggregate or start that was not written, is None.
    """
    name = f"r{round_}-g{group}"
    ups = [work / f"{name}-in-{i:04d}.safetensors" for i in range(count)]
    start, out = work / f"{name}-start.safetensors", work / f"{name}.safetensors"
    return (
        [p if p.exists() else None for p in ups],
        start if start.exists() else None,
        out if out.exists() else None,
    )


def admitted_bitmap(ctx, task_id: int, round_: int, group: int, judged) -> int:
    """The subgroup positions whose update ``judged`` (``subgroup_result``'s Admission, or None)
    admitted, as the bitmap a result carries on chain (bit k = position k in the subgroup).

    The verdicts index the subgroup's updates in :func:`subgroup_updates`
    order; a result that fell back to the starting model admitted nobody.
    """
    from din_cli.chain import assignment
    from din_cli.chain.din import admitted_bitmap as bitmap

    if judged is None or not judged.admitted:
        return 0
    rnd = ctx.din.round_info(task_id, round_)
    updates = subgroup_updates(ctx, task_id, round_, group)
    return bitmap(
        assignment.participant_group(
            rnd.seed, updates[v.index].index, rnd.participants, rnd.groups
        )[1]
        for v in judged.verdicts
        if v.admitted
    )


def subgroup_aggregate(
    ctx, task_id: int, round_: int, group: int, work: Path, *, device: str = "cpu"
) -> tuple[str, int]:
    """Recompute subgroup ``group``'s result of ``round_`` by the admission rule: ``(aggregate CID
    text, admitted bitmap)``, what its validators commit and reveal."""
    cid, judged = subgroup_result(ctx, task_id, round_, group, work, device=device)
    return cid, admitted_bitmap(ctx, task_id, round_, group, judged)


def _my_slot(ctx, task_id: int, round_: int):
    m = ctx.din.subgroup_of(task_id, ctx.address, round_)
    if m.role != "validator":
        raise NotFoundError(
            f"{ctx.address} is not a validator of task {task_id}",
            f"register first: `din validator join {task_id}`",
        )
    if m.group is None:
        raise AlreadyDone(
            f"{ctx.address} is not assigned to a subgroup in round {round_}",
            "nothing to do this round",
        )
    return m


def _check_round(info, round_: int | None, task_id: int) -> int:
    if round_ is None:
        return info.round
    if round_ != info.round:
        raise UsageError(
            f"task {task_id} is in round {info.round}, not {round_}",
            "give the current round or leave --round out",
        )
    return round_


def aggregate_commit(
    ctx,
    task_id: int,
    round_: int | None = None,
    *,
    cid: str | None = None,
    admitted: int = 0,
    device: str = "cpu",
) -> dict:
    """Aggregate this validator's subgroup and commit ``keccak(result ‖ salt ‖ sender)``, where the
    result is the aggregate's CID and the bitmap of the subgroup positions it admitted.

    ``cid`` (and ``admitted``) commit that result instead of the computed one
    (a validator using its own tooling; the demo's dishonest validator).
    AlreadyDone when already committed this round.
    """
    from din_cli.chain.din import admitted_positions

    d = ctx.din
    info = d.task_info(task_id)
    r = info.round if round_ is None else round_
    if r and validator_state(ctx, task_id, ctx.address)["commit_round"] >= r:
        raise AlreadyDone(
            f"aggregate already committed for task {task_id} round {r}",
            f"reveal it: `din aggregate --task {task_id} --reveal`",
        )
    info = require_phase(ctx, task_id, "aggregation-commit")
    r = _check_round(info, round_, task_id)
    m = _my_slot(ctx, task_id, r)
    if cid is None:
        from din_cli.protocol import secagg

        with ctx.workdir() as work:
            try:
                cid, admitted = subgroup_aggregate(ctx, task_id, r, m.group, work, device=device)
            except secagg.RevealsMissing as e:
                # The cutoff is judged by block time, which stands still on a chain that mines
                # on demand: past it by the clock, a no-op `advance` mines a block at it.
                if e.cutoff is None or ctx.chain.clock() < e.cutoff:
                    raise
                d.advance(ctx.account, task_id)
                cid, admitted = subgroup_aggregate(ctx, task_id, r, m.group, work, device=device)
    else:
        to_bytes(cid)
    record = {"cid": cid, "group": m.group, "admitted": hex(admitted)}
    ctx.save_record(task_id, r, "aggregate", record)
    with ctx.chain.writing():
        if validator_state(ctx, task_id, ctx.address)["commit_round"] >= r:
            raise AlreadyDone(
                f"aggregate already committed for task {task_id} round {r}", "nothing to do"
            )
        gone = count_out_removed(ctx, task_id, r)
        d.commit_aggregate(ctx.account, task_id, to_bytes(cid), admitted=admitted)
    return {
        "task_id": task_id,
        "round": r,
        "group": m.group,
        "cid": cid,
        "admitted": admitted_positions(admitted),
        "counted_out": gone,
    }


def count_out_removed(ctx, task_id: int, round_: int) -> list[str]:
    """Count every removed validator's slot in ``round_`` out of the majorities (``markGone``).

    A validator slashed out of the task keeps its assignment slots; counted out, they
    no longer stand between the live validators and a strict majority (a subgroup
    whose colluders a dispute removed decides again in the replay). Done before this
    validator's commit, while the commit phase lasts; the addresses counted out.
    """
    d = ctx.din
    removed = {
        e["args"]["validator"]
        for name in ("ValidatorSlashed", "ValidatorPenalised")
        for e in d.events(task_id, name)
    }
    if not removed:
        return []
    rnd = d.round_info(task_id, round_)
    addresses = d.validators(task_id)
    done = d.gone_slots(task_id, round_)
    out = []
    for group in rnd.validator_groups:
        for i in group:
            a = addresses[i]
            if (
                a in removed
                and a not in done
                and validator_state(ctx, task_id, a)["commit_round"] < round_
            ):
                d.mark_gone(ctx.account, task_id, a)
                out.append(a)
    return out


def aggregate_reveal(ctx, task_id: int, round_: int | None = None) -> dict:
    """Reveal the aggregate committed this round (recomputed when the local record is gone)."""
    from din_cli.chain.din import admitted_positions

    d = ctx.din
    info = d.task_info(task_id)
    r = info.round if round_ is None else round_
    state = validator_state(ctx, task_id, ctx.address)
    if r and state["reveal_round"] >= r:
        raise AlreadyDone(
            f"aggregate already revealed for task {task_id} round {r}", "nothing to do"
        )
    info = require_phase(ctx, task_id, "aggregation-reveal")
    r = _check_round(info, round_, task_id)
    if state["commit_round"] < r:
        raise NotFoundError(
            f"no aggregate committed for task {task_id} round {r}",
            "the commit phase is over; nothing to reveal",
        )
    rec = ctx.load_record(task_id, r, "aggregate")
    if rec is None:
        with ctx.workdir() as work:
            cid, admitted = subgroup_aggregate(ctx, task_id, r, int(state["group"]), work)
            rec = {"cid": cid, "group": int(state["group"]), "admitted": hex(admitted)}
    admitted = int(rec.get("admitted", "0x0"), 16)
    with ctx.chain.writing():
        if validator_state(ctx, task_id, ctx.address)["reveal_round"] >= r:
            raise AlreadyDone(
                f"aggregate already revealed for task {task_id} round {r}", "nothing to do"
            )
        receipt = d.reveal_aggregate(ctx.account, task_id, to_bytes(rec["cid"]), admitted=admitted)
    return {
        "task_id": task_id,
        "round": r,
        "group": rec["group"],
        "cid": rec["cid"],
        "admitted": admitted_positions(admitted),
        "gas": _gas(receipt),
    }


# ------------------------------------------------------------------ the global model


def global_from_accepted(ctx, task_id: int, round_: int, work: Path) -> tuple[str, dict[int, str]]:
    """The global model of ``round_``: the aggregate of its accepted subgroup aggregates; ``(cid, {group: cid})``.

    Empty subgroups (their accepted result is the round's starting model)
    add nothing; nor does an accepted result that is no weighted aggregate of
    the task's architecture (another architecture, no samples, not a
    safetensors file, NaN or Inf weights, not a CID: what a colluding majority
    may have revealed) is left out, so such a majority cannot stop the
    round's global model with it; a dispute replaces its result. When no subgroup adds anything the starting model stays.
    """
    accepted = ctx.din.accepted_aggregates(task_id, round_)
    if not accepted:
        raise NotFoundError(
            f"no subgroup aggregate was accepted in round {round_} of task {task_id}",
            "the round keeps the previous global model once the global-model deadline passes",
        )
    groups = {g: _cid_text(accepted[g]) for g in sorted(accepted)}
    start = start_model(ctx, task_id, round_)
    fresh = [g for g, cid in groups.items() if cid != start]
    fresh = _weighted(ctx, start, {g: accepted[g] for g in fresh}, work, f"r{round_}-probe")
    if not fresh:
        return start, groups
    cid, _ = aggregate_cids(ctx, [accepted[g] for g in fresh], work, f"r{round_}-global")
    return cid, groups


def _weighted(ctx, start: str, results: dict[int, bytes], work: Path, name: str) -> list[int]:
    """The groups of ``results`` whose file is an update or aggregate of ``start``'s architecture
    with a positive sample count and finite weights (what FedAvg can weigh). A result that is no
    CID is left out; one the store cannot serve stops the global model, as before (whether it
    can be fetched is not the same for everyone, so it cannot decide the model)."""
    from din_cli.ml import models, tensorfile, zoo

    arch = tensorfile.read_header(ctx.fetch(start, work / f"{name}-start.safetensors")).arch
    shapes = zoo.param_shapes(arch)
    keep = []
    for g, cid in results.items():
        try:
            to_text(cid)
        except InputError:
            continue
        path = ctx.fetch(cid, work / f"{name}-{g:04d}.safetensors")
        try:
            h = tensorfile.read_header(path)
            tensorfile.check_model(h, shapes, arch=arch, kinds=("update", "aggregate"))
            models.read_model(path)  # refuses NaN and Inf
        except InputError:
            continue
        if h.samples > 0:
            keep.append(g)
    return keep


def _proposed(ctx, task_id: int, round_: int) -> str | None:
    posted = ctx.din.events(task_id, "GlobalModelPosted")
    posted = [e for e in posted if int(e["args"]["round"]) == round_]
    return to_text(bytes(posted[-1]["args"]["cid"])) if posted else None


def finalize(ctx, task_id: int) -> dict:
    """Combine the round's accepted subgroup aggregates into the global model, add it and post its CID (owner)."""
    from din_cli.chain.din import cid_digest

    info = ctx.din.task_info(task_id)
    accepted = ctx.din.events(task_id, "GlobalModelAccepted")
    if (
        info.phase != "global-model"
        and accepted
        and int(accepted[-1]["args"]["round"]) >= info.round - (info.phase == "training")
    ):
        cid = to_text(bytes(accepted[-1]["args"]["cid"]))
        raise AlreadyDone(
            f"round {accepted[-1]['args']['round']}'s global model {cid} was already accepted",
            "nothing to do",
        )
    info = require_phase(ctx, task_id, "global-model")
    with ctx.workdir() as work:
        cid, groups = global_from_accepted(ctx, task_id, info.round, work)
    if info.proposed_digest == cid_digest(to_bytes(cid)):
        raise AlreadyDone(
            f"global model of round {info.round} already posted: {cid}",
            "validators attest it with `din round attest`",
        )
    with ctx.chain.writing():
        receipt = ctx.din.post_global_model(ctx.account, task_id, to_bytes(cid))
    return {
        "task_id": task_id,
        "round": info.round,
        "cid": cid,
        "subgroups": groups,
        "gas": _gas(receipt),
    }


def attest(ctx, task_id: int) -> dict:
    """Recompute the proposed global model from the accepted aggregates and attest it when it matches.

    VerificationError (exit 3, no vote) when the owner posted anything else.
    """
    info = ctx.din.task_info(task_id)
    if info.phase != "global-model":
        accepted = ctx.din.events(task_id, "GlobalModelAccepted")
        if accepted and int(accepted[-1]["args"]["round"]) >= info.round - (
            info.phase == "training"
        ):
            cid = to_text(bytes(accepted[-1]["args"]["cid"]))
            raise AlreadyDone(
                f"round {accepted[-1]['args']['round']}'s global model {cid} was already accepted",
                "nothing to do",
            )
    info = require_phase(ctx, task_id, "global-model")
    r = info.round
    proposed = _proposed(ctx, task_id, r)
    if proposed is None:
        raise NotFoundError(
            f"the owner has not posted round {r}'s global model yet",
            "wait for `din round finalize`",
        )
    state = validator_state(ctx, task_id, ctx.address)
    if not state["index1"]:
        raise NotFoundError(
            f"{ctx.address} is not a validator of task {task_id}",
            "only the task's validators attest",
        )
    if state["attest_round"] >= r:
        raise AlreadyDone(f"global model of round {r} already attested", "nothing to do")
    _my_slot(ctx, task_id, r)
    with ctx.workdir() as work:
        cid, _ = global_from_accepted(ctx, task_id, r, work)
    if cid != proposed:
        raise VerificationError(
            f"the posted global model {proposed} is not the aggregate of round {r}'s accepted subgroups ({cid})",
            "do not attest; the owner must post the right one",
        )
    with ctx.chain.writing():
        accepted = ctx.din.attest_global(ctx.account, task_id, to_bytes(cid))
    return {"task_id": task_id, "round": r, "cid": cid, "accepted": accepted}


def current_model(ctx, task_id: int) -> str:
    """CID text of the task's current global model."""
    return to_text(ctx.din.model_cid(task_id))


def plain(value: Any) -> Any:
    from din_cli.chain.din import as_plain

    return as_plain(value)
