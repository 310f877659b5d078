"""Sealed tasks: who can read a participant's update, and how each reader gets its key.

In a task published with ``--privacy sealed`` (``TaskParams.privacy`` 1):

- a participant seals its update (``crypto.seal``) to the validators of its
  subgroup for that round, in slot order, and submits the sealed file's CID;
- those validators open it with their own wrapped key; any of them that
  opened it checks every other wrapped key, so a participant that wraps
  garbage for one of them is refused by all of them (``bad-seal``), a
  plaintext update is refused (``not-sealed``), and a copy of another
  participant's sealed update is refused (it names someone else);
- after the last round, each validator that aggregated grants the keys it
  opened to the task's evaluation validators (``grant_for_evaluation``); when
  a dispute committee is drawn, the subgroup's validators grant that
  subgroup's keys to the committee (``grant_for_dispute``). A grant is a
  ``din/key-grant/v1`` document in the content store, announced on chain
  (``DinDisputes.grantKeys``);
- a reader that has no key yet waits (``KeyMissing``) until the middle of
  the window it reads in (the score-commit phase, or the dispute's commit
  window). From then on, grants announced in later blocks are ignored and an
  update with no key counts as unavailable, so every honest reader judges
  the same set of grants.

Subgroup aggregates and global models are never sealed: training goes on
from them, and anyone can check a round's result against the chain.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from din_cli.errors import DinError, InputError, NotFoundError, UsageError, VerificationError

#: The name a grant document gives the test set's K (granted to a committee disputing scores).
TEST_KEY = "din:test-set-key"

# What a reader learnt, kept on its chain connection (two chains in one process never mix):
#   keys        (tasks contract, task, update CID, reader) -> U
#   grants      (grant CID, reader) -> {update CID: [candidate U]}
#   block_times block number -> its timestamp
#   recipients  (tasks contract, task, round, group) -> [(address, HPKE key)]
#   wraps       (tasks contract, task, update CID) -> check_wraps' verdict


def _cache(ctx, name: str) -> dict:
    caches = ctx.chain.__dict__.setdefault("_sealing_caches", {})
    return caches.setdefault(name, {})


class KeyMissing(UsageError):
    """This reader holds no key for a sealed update yet (exit 2): wait for a grant."""


@dataclass(frozen=True)
class Refused:
    """A sealed update every honest reader refuses, and why (an admission exclusion)."""

    reason: str  # "not-sealed" | "bad-seal"
    detail: str


def is_sealed_task(info) -> bool:
    return getattr(info, "privacy_mode", "open") == "sealed"


def _publics(ctx, addresses) -> dict[str, bytes]:
    out = {}
    for a in addresses:
        key = ctx.din.validator_info(a).hpke_key
        if key and any(key):
            out[a.lower()] = bytes(key)
    return out


def recipients(ctx, task_id: int, round_: int, group: int) -> list[tuple[str, bytes]]:
    """``(address, HPKE key)`` of subgroup ``group``'s validators in ``round_``, slot order (those with a key).

    Kept on the chain connection once read: a round's subgroup never changes, and a
    validator serving the task cannot withdraw (and so drop its key).
    """
    slot = (ctx.deployment["DinTasks"], int(task_id), int(round_), group)
    got = _cache(ctx, "recipients").get(slot)
    if got is None:
        validators = ctx.din.members(task_id, group, round_)["validators"]
        keys = _publics(ctx, validators)
        got = _cache(ctx, "recipients")[slot] = [
            (a, keys[a.lower()]) for a in validators if a.lower() in keys
        ]
    return got


def seal_update(ctx, task_id: int, round_: int, plain: Path, out: Path) -> Path:
    """As a participant: seal ``plain`` to this round's subgroup validators into ``out``."""
    from din_cli.crypto import seal

    me = ctx.din.subgroup_of(task_id, ctx.address, round_)
    if me.group is None:
        raise UsageError(
            f"round {round_}'s subgroups are not drawn yet",
            "send any transaction first (`din chain advance` on a dev chain), then submit",
        )
    readers = recipients(ctx, task_id, round_, me.group)
    if not readers:
        raise NotFoundError(
            f"no validator of subgroup {me.group} has an HPKE key to seal to",
            "wait for the task's validators to register",
        )
    binding = seal.UpdateBinding(int(ctx.chain.chain_id), int(task_id), int(round_), ctx.address)
    seal.seal_file(plain, out, binding, readers)
    return out


def open_update(ctx, task_id: int, info, update, dest: Path, *, cutoff: int | None = None):
    """The plaintext of ``update`` at ``dest``: a Path, or Refused (sealed task, refused by every reader).

    NotFoundError/InputError when the store has no such CID (``unavailable``);
    KeyMissing when this reader holds no key and ``cutoff`` (unix time) has
    not passed; with ``cutoff`` passed, a missing key is ``unavailable`` too
    (NotFoundError), judged on grants announced before it.
    """
    from din_cli.crypto import seal
    from din_cli.protocol.cids import to_text

    if not is_sealed_task(info):
        return ctx.fetch(update.cid, dest)
    raw = ctx.fetch(update.cid, dest.with_name(dest.name + ".sealed"))
    try:
        if not seal.is_sealed(raw):
            return Refused("not-sealed", "the task takes sealed updates only")
        try:
            s = seal.read_header(raw)
        except InputError as e:
            return Refused("bad-seal", e.message)
        want = (
            int(ctx.chain.chain_id),
            int(task_id),
            int(update.round),
            update.participant.lower(),
        )
        got = (s.binding.chain_id, s.binding.task, s.binding.round, s.binding.participant.lower())
        if got != want:
            return Refused(
                "bad-seal",
                f"sealed for chain {got[0]} task {got[1]} round {got[2]} participant {got[3]}",
            )
        expected = recipients(ctx, task_id, update.round, update.group)
        if [a.lower() for a, _ in s.recipients] != [a.lower() for a, _ in expected]:
            return Refused("bad-seal", "not sealed to exactly its subgroup's validators")
        cid = to_text(update.cid)
        try:
            key = _key_for(ctx, task_id, cid, s, cutoff)
        except VerificationError as e:  # our own wrapped key does not open: the participant's doing
            return Refused(
                "bad-seal", f"the key wrapped for {ctx.address} does not open ({e.message})"
            )
        wraps, verdict = _cache(ctx, "wraps"), (ctx.deployment["DinTasks"], int(task_id), cid)
        if verdict not in wraps:  # a function of U and the recipients: checked once
            wraps[verdict] = seal.check_wraps(s, key, dict((a.lower(), k) for a, k in expected))
        bad = wraps[verdict]
        if bad:
            return Refused("bad-seal", bad)
        try:
            seal.open_file(raw, dest, key, s)
        except (VerificationError, InputError) as e:
            return Refused("bad-seal", f"the payload does not decrypt ({e.message})")
        return dest
    finally:
        raw.unlink(missing_ok=True)


def unseal(ctx, task_id: int, cid: str, dest: Path) -> dict:
    """Open the sealed update ``cid`` of ``task_id`` into ``dest`` as this key; what it is.

    VerificationError (nothing written) when this key cannot read it: it is
    neither one of the update's validators nor granted its key, or the
    update is refused by every reader (its reason).
    """
    from din_cli.files import atomic_output
    from din_cli.protocol.cids import to_text

    info = ctx.din.task_info(task_id)
    if not is_sealed_task(info):
        raise NotFoundError(
            f"task {task_id} is not sealed: its updates are plaintext",
            f"fetch it as it is: `din ipfs cat {cid}`",
        )
    found = [
        u
        for r in range(1, info.round + 1)
        for u in ctx.din.updates_submitted(task_id, r)
        if to_text(u.cid) == cid
    ]
    if not found:
        raise NotFoundError(
            f"{cid} is not an update submitted to task {task_id}",
            f"list them with `din round status --task {task_id} --json`",
        )
    u = found[0]
    with ctx.workdir() as work:
        try:
            got = open_update(ctx, task_id, info, u, work / "plain.safetensors")
        except KeyMissing as e:
            raise VerificationError(
                f"update {cid} is sealed and {ctx.address} holds no key for it",
                "only its subgroup's validators and the readers they granted it to can open it",
            ) from e
        if not isinstance(got, Path):
            raise VerificationError(
                f"update {cid} is refused ({got.reason}): {got.detail}", "nothing to open"
            )
        with open(got, "rb") as fin, atomic_output(dest, mode=0o600) as fout:
            while chunk := fin.read(1 << 20):
                fout.write(chunk)
    return {
        "task_id": task_id,
        "round": u.round,
        "group": u.group,
        "participant": u.participant,
        "cid": cid,
    }


def _key_for(ctx, task_id: int, cid: str, s, cutoff: int | None) -> bytes:
    """U of the sealed update ``cid``: from this process's cache, our own wrapped key, or a grant."""
    from din_cli.crypto import seal

    private = getattr(ctx.identity, "hpke_private", None)
    if private is None:
        raise KeyMissing(
            f"update {cid} is sealed: only the readers it names have a key to open it",
            "read it as one of them (--key NAME)",
        )
    keys, slot = _cache(ctx, "keys"), _key_slot(ctx, task_id, cid)
    cached = keys.get(slot)
    if cached is not None:
        return cached
    if any(a.lower() == ctx.address.lower() for a, _ in s.recipients):
        key = seal.open_key(s, ctx.address, private)  # VerificationError: a bad wrap
        keys[slot] = key
        return key
    for key in _granted(ctx, task_id, cid, private, cutoff):
        try:
            seal.check_key(s, key)
        except VerificationError:
            continue
        keys[slot] = key
        return key
    if cutoff is not None and ctx.chain.now() >= cutoff:
        raise NotFoundError(
            f"no key for sealed update {cid} was granted to {ctx.address} in time",
            "it counts as unavailable",
        )
    raise KeyMissing(
        f"sealed update {cid} has no key for {ctx.address} yet",
        "wait for its subgroup's validators to grant it (`din keys grant`), then run this again",
    )


def _key_slot(ctx, task_id: int, cid: str) -> tuple:
    return (ctx.deployment["DinTasks"], int(task_id), cid, ctx.address.lower())


def _granted(ctx, task_id: int, cid: str, private: bytes, cutoff: int | None) -> list[bytes]:
    from din_cli.crypto import seal
    from din_cli.protocol.cids import to_text

    chain_id = int(ctx.chain.chain_id)
    times, grants = _cache(ctx, "block_times"), _cache(ctx, "grants")
    holders = {a.lower() for a in ctx.din.validators(task_id)}  # only they ever hold a key
    out: list[bytes] = []
    for granter, raw, block in ctx.din.key_grants(task_id):
        if granter.lower() not in holders:  # anyone may announce; nobody else's grant is fetched
            continue
        if cutoff is not None:
            when = times.get(block)
            if when is None:
                when = times[block] = ctx.chain.block_time(block)
            if when >= cutoff:
                continue
        try:
            gcid = to_text(raw)
        except InputError:
            continue
        slot = (gcid, ctx.address.lower())
        mine = grants.get(slot)
        if mine is None:
            try:
                with ctx.workdir() as work:
                    doc = json.loads(ctx.fetch(gcid, work / "grant.json").read_bytes())
            except DinError:  # not in the store (yet): read it again next time
                continue
            except (ValueError, UnicodeDecodeError):
                doc = {}  # not a grant document: nothing in it, ever
            mine = grants[slot] = seal.granted_keys(
                doc, chain_id, int(task_id), ctx.address, private
            )
        out += mine.get(cid, [])
    return out


def evaluation_cutoff(ctx, task_id: int) -> int | None:
    """The middle of the score-commit phase (None before it opened): the evaluation's grant cutoff."""
    from din_cli.chain.din import PHASE_NUMBERS

    info = ctx.din.task_info(task_id)
    for e in reversed(ctx.din.events(task_id, "PhaseChanged")):
        if int(e["args"]["phase"]) == PHASE_NUMBERS["score-commit"]:
            return int(e["args"]["deadline"]) - info.durations["score_commit"] // 2
    return None


def read_cutoff(ctx, task_id: int, info, updates) -> int | None:
    """The grant cutoff for reading ``updates`` (one subgroup's, or one round's) now, as this reader.

    A member of the committee of a drawn dispute on their subgroup: the
    middle of its commit window. An evaluation validator, once the
    score-commit phase has opened: its middle. Anyone else: None, so a
    missing key is always ``KeyMissing`` (the subgroup's own validators read
    with their own keys; other readers have no window to judge in).
    """
    from din_cli.protocol.evaluation import evaluation_validators

    if not updates or getattr(ctx.identity, "hpke_private", None) is None:
        return None
    me = ctx.address
    rounds = {u.round for u in updates}
    groups = {u.group for u in updates}
    if info.phase == "disputed":
        for d in ctx.din.disputes_of(task_id):
            scores = d["round"] == 0  # an evaluation subgroup's scores read every round's updates
            if d.get("state") == "drawn" and (
                scores or d["round"] in rounds and d["group"] in groups
            ):
                return dispute_cutoff(ctx, task_id, d) if me in d["committee"] else None
    cutoff = evaluation_cutoff(ctx, task_id)
    if cutoff is None or me not in evaluation_validators(ctx, task_id):
        return None
    return cutoff


def dispute_cutoff(ctx, task_id: int, dispute: dict) -> int:
    """The middle of a dispute's commit window: the committee's grant cutoff."""
    span = ctx.din.task_info(task_id).durations["aggregation_commit"]
    return int(dispute["commit_end"]) - span // 2


def _held_keys(ctx, task_id: int, rounds_groups, work: Path) -> list[tuple[str, bytes]]:
    """``(update CID, U)`` this validator can open among the updates of ``rounds_groups``."""
    from din_cli.protocol.cids import to_text

    info = ctx.din.task_info(task_id)
    out: list[tuple[str, bytes]] = []
    for r, g in rounds_groups:
        for k, u in enumerate(ctx.din.updates_submitted(task_id, r, g)):
            try:
                got = open_update(ctx, task_id, info, u, work / f"held-r{r}-{k:05d}.safetensors")
            except DinError:
                continue
            if isinstance(got, Path):
                got.unlink(missing_ok=True)
                key = _cache(ctx, "keys").get(_key_slot(ctx, task_id, to_text(u.cid)))
                if key is not None:
                    out.append((to_text(u.cid), key))
    return out


def grant(ctx, task_id: int, keys: list[tuple[str, bytes]], readers: list[str]) -> dict:
    """Wrap ``keys`` to ``readers`` (their registered HPKE keys), add the grant, announce it; a summary."""
    from din_cli.crypto import seal
    from din_cli.files import write_atomic
    from din_cli.protocol.roundflow import _gas

    publics = _publics(ctx, readers)
    to = [(a, publics[a.lower()]) for a in readers if a.lower() in publics and a != ctx.address]
    if not keys or not to:
        return {"task_id": task_id, "keys": len(keys), "readers": [a for a, _ in to], "cid": None}
    doc = seal.grant_document(int(ctx.chain.chain_id), int(task_id), ctx.address, keys, to)
    with ctx.workdir() as work:
        path = work / "grant.json"
        write_atomic(path, json.dumps(doc, sort_keys=True).encode())
        cid = ctx.add(path)
    from din_cli.protocol.cids import to_bytes

    receipt = ctx.din.grant_keys(ctx.account, task_id, to_bytes(cid))
    return {
        "task_id": task_id,
        "keys": len(keys),
        "readers": [a for a, _ in to],
        "cid": cid,
        "gas": _gas(receipt),
    }


def granted_by(ctx, task_id: int, address: str) -> bool:
    return any(g.lower() == address.lower() for g, _, _ in ctx.din.key_grants(task_id))


def grant_for_evaluation(ctx, task_id: int) -> dict:
    """As a validator, once the evaluation is drawn: grant every key it opened to the evaluation validators.

    AlreadyDone when it already announced a grant for this task; UsageError
    before the evaluation is drawn; NotFoundError in a task that is not sealed.
    """
    from din_cli.errors import AlreadyDone
    from din_cli.protocol.evaluation import evaluation_validators

    info = ctx.din.task_info(task_id)
    if not is_sealed_task(info):
        raise NotFoundError(
            f"task {task_id} is not sealed: its updates need no keys", "nothing to grant"
        )
    if info.phase not in ("test-set", "score-commit"):
        raise UsageError(
            f"task {task_id} is in phase {info.phase}: keys are granted once the evaluation is drawn",
            f"run it in the test-set phase (`din round wait {task_id} --phase test-set`)",
        )
    if granted_by(ctx, task_id, ctx.address):
        raise AlreadyDone(
            f"{ctx.address} already granted its keys for task {task_id}", "nothing to do"
        )
    served = []
    for r in range(1, info.round + 1):
        try:
            g = ctx.din.subgroup_of(task_id, ctx.address, r).group
        except NotFoundError:
            continue
        if g is not None:
            served.append((r, g))
    with ctx.workdir() as work:
        keys = _held_keys(ctx, task_id, served, work)
    readers = evaluation_validators(ctx, task_id)
    with ctx.chain.writing():
        if granted_by(ctx, task_id, ctx.address):
            raise AlreadyDone(
                f"{ctx.address} already granted its keys for task {task_id}", "nothing to do"
            )
        return grant(ctx, task_id, keys, readers)


def granted_test_keys(ctx, task_id: int, dispute: dict) -> list[bytes]:
    """Candidate test-set keys K granted to this committee member of ``dispute`` (unchecked), by
    the task's validators in blocks before the committee's grant cutoff."""
    private = getattr(ctx.identity, "hpke_private", None)
    if private is None:
        raise UsageError("reading granted keys needs your HPKE key", "act with --key NAME")
    return _granted(ctx, task_id, TEST_KEY, private, dispute_cutoff(ctx, task_id, dispute))


def grant_for_dispute(ctx, task_id: int, dispute: dict) -> dict:
    """As a validator of the disputed subgroup: grant that subgroup's keys to the drawn committee.

    A dispute of an evaluation subgroup's scores (round 0) grants the test
    set's K (any evaluation validator holds it) and, in a sealed task, every
    update key this validator holds, since scoring reads every round.
    AlreadyDone when it announced a grant after the dispute was filed.
    """
    from din_cli.errors import AlreadyDone

    if any(
        g.lower() == ctx.address.lower() and block > int(dispute["filed_block"])
        for g, _, block in ctx.din.key_grants(task_id)
    ):
        raise AlreadyDone(
            f"{ctx.address} already granted keys since dispute {dispute['dispute_id']} was filed",
            "nothing to do",
        )
    info = ctx.din.task_info(task_id)
    if dispute["round"] != 0 and not is_sealed_task(info):
        raise NotFoundError(
            f"task {task_id} is not sealed: its updates need no keys", "nothing to grant"
        )
    if not dispute["committee"]:
        raise UsageError(
            "the dispute's committee is not drawn yet", "draw it first (`din round dispute-draw`)"
        )
    with ctx.workdir() as work:
        if dispute["round"] != 0:
            keys = _held_keys(ctx, task_id, [(dispute["round"], dispute["group"])], work)
        else:
            from din_cli.protocol.evaluation import test_key

            try:
                keys = [(TEST_KEY, test_key(ctx, task_id))]
            except DinError as e:
                raise NotFoundError(
                    f"this validator holds no test-set key to grant: {e.message}",
                    "nothing to grant",
                ) from None
            if is_sealed_task(info):
                every = [(r, g) for r in range(1, info.round + 1) for g in range(info.groups)]
                keys += _held_keys(ctx, task_id, every, work)
    return grant(ctx, task_id, keys, list(dispute["committee"]))
