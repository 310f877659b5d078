"""The end of a task: the owner's encrypted test set, validators' score commit and reveal.

The owner encrypts its test store under a fresh key K (AES-256-GCM,
``crypto.aead``), adds the ciphertext to the content store, signs its CID and
encrypts the signed CID under K, and wraps K to the HPKE key every validator
assigned to the evaluation registered on chain (``crypto.wrap``). The chain
keeps the encrypted CID and the wrapped keys (``TestSetPosted``).

A validator unwraps K, checks the owner's signature, fetches and decrypts the
test set, and scores every participant of its evaluation subgroup the way the
task fixed at publish (``TaskParams.scoring``), with the task's metric, in
basis points, in subgroup position order:

- ``gtg`` (the default), ``exact``, ``loo``: the participant's contribution to
  each round's model, measured within its training subgroup of that round on
  that round's test rows (the round seed's resample of half the pool; the
  whole pool in the last round), summed over the rounds and divided by their
  number (:func:`contribution_scores`). A free-rider, a copy, a bad file and
  a harmful update earn 0 in that round.
- ``update``: each participant's latest admitted update scored alone on the
  whole pool (:func:`update_scores`); the pre-contribution scoring.

A participant that never submitted scores 0.

A validator that cannot use the test set (K does not unwrap, the owner's
signature or the ciphertext fails, the ciphertext cannot be fetched, or the
plaintext is not the one the task committed to) commits and reveals the empty
vector instead: a rejection (``TestSetRejected`` names the reason). When a
strict majority of a subgroup rejects, its validators keep their fee and stake
and the whole participants' pool goes to the contributors, never back to the
owner (``chain.settlement``).

Example:
    with open_context(identity=owner) as ctx:
        post_test_set(ctx, 1, "stores/test.npz")
"""

from __future__ import annotations

from pathlib import Path

from din_cli.errors import AlreadyDone, InputError, NotFoundError, UsageError, VerificationError
from din_cli.protocol.roundflow import _gas, require_phase, validator_state

EVAL_ROUND = 0


class TestSetRejected(VerificationError):
    """The owner's test set cannot be used (exit 3): a validator reveals a rejection, not scores."""

    __test__ = False  # not a pytest class


def _binding(ctx, task_id: int):
    from din_cli.crypto.wrap import Binding

    return Binding(int(ctx.chain.chain_id), int(task_id), EVAL_ROUND)


def evaluation_validators(ctx, task_id: int) -> list[str]:
    """Addresses of the validators assigned to the evaluation (slot order), who get K."""
    rnd = ctx.din.round_info(task_id, EVAL_ROUND)
    validators = ctx.din.validators(task_id)
    return [validators[i] for group in rnd.validator_groups for i in group]


def chain_resolver(ctx, *, before: tuple[int, int] | None = None):
    """``address -> HPKE public key`` registered in the validator registry (None when it has no usable one).

    The registry now, or with ``before`` (block number, log index of a chain
    event) as it stood just before that event: the last ``Staked`` key unless a
    ``Withdrawn`` followed it. The owner wraps K, and validators check its wraps,
    against the keys as of the ``EvaluationStarted`` event (``evaluation_keys``),
    so a validator that stakes again with another key later, even just before
    the post, cannot make the others disagree. No key, or one
    nothing can be sealed to (a low-order point), is None: the owner wraps
    ``crypto.wrap.NO_KEY_WRAP`` to it and every validator expects exactly that.
    """
    from din_cli.crypto import hpke

    def usable(key: bytes | None) -> bytes | None:
        return bytes(key) if key and hpke.usable_public(bytes(key)) else None

    if before is None:
        return lambda address: usable(ctx.din.validator_info(address).hpke_key)
    din, at = ctx.din, tuple(before)
    events = [
        (int(e["blockNumber"]), int(e["logIndex"]), e["args"])
        for name in ("Staked", "Withdrawn")
        for e in din.chain.logs(din.registry, name, from_block=din.from_block, to_block=at[0])
    ]
    keys: dict[str, bytes | None] = {}
    for block, index, args in sorted(events, key=lambda x: x[:2]):
        if (block, index) < at:
            keys[args["validator"].lower()] = usable(args.get("hpkeKey"))
    return lambda address: keys.get(address.lower())


def evaluation_keys(ctx, task_id: int):
    """``chain_resolver`` as of the ``EvaluationStarted`` event: the keys the owner wraps K to
    and validators check the wraps against (NotFoundError before the evaluation started)."""
    started = ctx.din.events(task_id, "EvaluationStarted")
    if not started:
        raise NotFoundError(
            f"task {task_id}'s evaluation has not started", "wait for the test-set phase"
        )
    e = started[-1]
    return chain_resolver(ctx, before=(int(e["blockNumber"]), int(e["logIndex"])))


def post_wrapped(ctx, task_id: int, doc: dict) -> dict:
    """Post a ``din/test-key/v1`` document (encrypted signed CID, K per validator) as the task's test set (owner)."""
    from din_cli.crypto.wrap import chain_args

    info = ctx.din.task_info(task_id)
    if info.test_set_digest != bytes(32):
        raise AlreadyDone(
            f"task {task_id}'s test set is already posted",
            "validators score it with `din evaluate --task TASK --commit`",
        )
    if ctx.address != info.owner:
        raise UsageError(
            f"only the task's owner {info.owner} posts its test set", "use the owner's --key"
        )
    if (doc.get("chain_id"), doc.get("task"), doc.get("round")) != (
        int(ctx.chain.chain_id),
        int(task_id),
        EVAL_ROUND,
    ):
        raise UsageError(
            f"the wrapped key is bound to chain {doc.get('chain_id')} task {doc.get('task')} round {doc.get('round')}",
            f"wrap it for --chain-id {ctx.chain.chain_id} --task {task_id} --round {EVAL_ROUND}",
        )
    require_phase(ctx, task_id, "test-set")
    encrypted_cid, wrapped = chain_args(doc)
    missing = [a for a in evaluation_validators(ctx, task_id) if a not in wrapped]
    if missing:
        raise UsageError(
            f"K is not wrapped for evaluation validator(s) {', '.join(missing)}",
            "wrap it for every validator of the task",
        )
    with ctx.chain.writing():
        if ctx.din.task_info(task_id).test_set_digest != bytes(32):
            raise AlreadyDone(f"task {task_id}'s test set is already posted", "nothing to do")
        receipt = ctx.din.post_test_set(ctx.account, task_id, encrypted_cid, wrapped)
    return {"task_id": task_id, "validators": list(wrapped), "gas": _gas(receipt)}


def post_test_set(ctx, task_id: int, test_store: str | Path) -> dict:
    """Encrypt ``test_store``, add it, and post its signed CID with K wrapped to each evaluation validator (owner).

    Each wrap is a function of K (``crypto.wrap.wrap_for``) that validators
    recompute; a validator with no usable registered HPKE key (``chain_resolver``
    gives None) gets ``NO_KEY_WRAP``, which every validator expects for it.
    """
    from din_cli.crypto import aead
    from din_cli.crypto.wrap import Recipient, wrap_test_key
    from din_cli.ml.data import load_store

    info = ctx.din.task_info(task_id)
    if info.test_set_digest != bytes(32):
        raise AlreadyDone(
            f"task {task_id}'s test set is already posted",
            "validators score it with `din evaluate --task TASK --commit`",
        )
    info = require_phase(ctx, task_id, "test-set")
    if ctx.address != info.owner:
        raise UsageError(
            f"only the task's owner {info.owner} posts its test set", "use the owner's --key"
        )
    rows = len(load_store(test_store))  # a readable store, before anything is published
    resolve = evaluation_keys(ctx, task_id)
    recipients = [Recipient(resolve(a), a) for a in evaluation_validators(ctx, task_id)]
    key = aead.generate_key()
    with ctx.workdir() as work:
        sealed = work / "test.enc"
        aead.encrypt_file(str(test_store), sealed, key)
        cid = ctx.add(sealed)
    doc = wrap_test_key(key, recipients, _binding(ctx, task_id), cid=cid, owner=ctx.identity)
    posted = post_wrapped(ctx, task_id, doc)
    return {
        "task_id": task_id,
        "cid": cid,
        "rows": rows,
        "validators": posted["validators"],
        "gas": posted["gas"],
    }


def _posted_document(ctx, task_id: int) -> dict:
    """The owner's ``din/test-key/v1`` document as the chain holds it (recipients' keys as the
    registry stood at the post); NotFoundError before the post."""
    from din_cli.crypto.wrap import document_from_chain

    posted = ctx.din.test_set(task_id)
    if posted is None:
        raise NotFoundError(
            f"task {task_id} has no test set yet", "wait for the owner's `din round test-set`"
        )
    encrypted_cid, wrapped = posted
    resolve = evaluation_keys(ctx, task_id)
    return document_from_chain(encrypted_cid, wrapped, _binding(ctx, task_id), resolve)


def test_key(ctx, task_id: int) -> bytes:
    """K, unwrapped with this validator's own key and checked like ``open_test_set`` does (the
    owner's signature, every wrap recomputes); VerificationError when it does not open."""
    from din_cli.crypto.wrap import open_test_key

    doc = _posted_document(ctx, task_id)
    owner = ctx.din.task_info(task_id).owner
    return open_test_key(doc, ctx.identity, _binding(ctx, task_id), owner_address=owner).key


def open_test_set(ctx, task_id: int, dest: Path, *, key: bytes | None = None) -> tuple[str, Path]:
    """As a validator: unwrap K, verify the owner's signature on the CID, fetch and decrypt the test set.

    TestSetRejected when the owner's part fails (K, a wrap to any validator
    that does not recompute from K, signature, ciphertext, committed hash).
    ``key``: K granted to a dispute committee member, used instead of a wrap of
    its own (VerificationError when the owner's signature does not open under
    it: not K at all); every other check is the same.
    """
    from din_cli.crypto import aead
    from din_cli.crypto.wrap import (
        OpenedKey,
        WrapMismatch,
        check_wraps,
        cid_opens,
        open_signed_cid,
        open_test_key,
    )

    doc = _posted_document(ctx, task_id)
    if key is None and (ctx.identity is None or not hasattr(ctx.identity, "hpke_private")):
        raise UsageError("opening the test set needs your HPKE key", "act with --key NAME")
    owner = ctx.din.task_info(task_id).owner
    binding = _binding(ctx, task_id)
    hint = "reveal the rejection; the owner sabotaged its test set"
    encrypted_cid = bytes.fromhex(doc["encrypted_cid"][2:])
    if key is not None and not cid_opens(key, encrypted_cid, binding):
        raise VerificationError(  # only K opens the ciphertext the owner posted
            "the granted key is not the test set's K", "use a grant from an evaluation validator"
        )
    try:
        if key is None:
            opened = open_test_key(doc, ctx.identity, binding, owner_address=owner)
        else:
            check_wraps(doc, key, binding)
            opened = OpenedKey(key, open_signed_cid(key, encrypted_cid, owner, binding))
    except WrapMismatch as e:  # K opened, but not every validator was given it
        raise TestSetRejected(e.message, hint) from None
    except (VerificationError, InputError, NotFoundError) as e:
        raise TestSetRejected(f"the test set key does not open: {e.message}", hint) from None
    try:
        sealed = ctx.fetch(opened.cid, dest.with_suffix(".enc"))
    except NotFoundError as e:
        raise TestSetRejected(f"the test set cannot be fetched: {e.message}", hint) from None
    plain = dest.with_suffix(".plain")
    try:
        aead.decrypt_file(sealed, plain, opened.key)
    except (VerificationError, InputError) as e:
        raise TestSetRejected(f"the test set does not decrypt: {e.message}", hint) from None
    _check_committed(ctx, task_id, plain)
    with open(plain, "rb") as f:  # the store's format decides its suffix
        head = f.read(9)
    suffix = ".npz" if head.startswith(b"PK") else ".safetensors" if head[8:9] == b"{" else ".csv"
    dest = dest.with_suffix(suffix)
    plain.rename(dest)
    return opened.cid, dest


def _check_committed(ctx, task_id: int, plain: Path) -> None:
    """Refuse a test set whose plaintext differs from the one the task committed to at publish."""
    from din_cli.chain.din import file_sha256

    want = ctx.din.task_info(task_id).test_set_hash
    got = file_sha256(plain)
    if got != want:
        plain.unlink(missing_ok=True)
        raise TestSetRejected(
            f"task {task_id}'s test set hashes to {got.hex()}, not the {want.hex()} committed at publish",
            "reveal the rejection; the owner posted another test set than it committed to",
        )


def latest_updates(ctx, task_id: int) -> dict[int, bytes]:
    """``{participant index: CID of its latest update}`` over every round."""
    out: dict[int, tuple[int, bytes]] = {}
    for e in ctx.din.events(task_id, "UpdateSubmitted"):
        a = e["args"]
        i, r = int(a["index"]), int(a["round"])
        if i not in out or r >= out[i][0]:
            out[i] = (r, bytes(a["cid"]))
    return {i: c for i, (_, c) in out.items()}


def compute_scores(
    ctx,
    task_id: int,
    group: int,
    test_path: Path,
    work: Path,
    metric: str = "accuracy",
    scoring: str = "update",
    device: str = "cpu",
) -> tuple[list[str], list[int], dict]:
    """Score each participant of evaluation subgroup ``group``; ``(addresses, scores in bps, per round)``.

    ``scoring`` is the task's (``chain.din.SCORINGS``): a contribution method
    (:func:`contribution_scores`), or ``update``, each participant's latest
    update scored alone (:func:`update_scores`). The third item maps each
    counted round to the participants' scores in it (empty for ``update``).
    ``device`` is where models are scored (``ml.evaluate.logits``): the
    scores are the same on either.
    """
    from din_cli.protocol import secagg

    if secagg.is_secagg_task(ctx.din.task_info(task_id)):
        return secagg_scores(ctx, task_id, group, test_path, work, metric, scoring, device)
    if scoring == "update":
        return (*update_scores(ctx, task_id, group, test_path, work, metric, device), {})
    return contribution_scores(ctx, task_id, group, test_path, work, metric, scoring, device)


def counted_rounds(ctx, task_id: int) -> list[int]:
    """The training rounds that count for contribution: every round but those an upheld dispute discarded."""
    discarded = set(ctx.din.discarded_rounds(task_id))
    last = ctx.din.task_info(task_id).round
    return [r for r in range(1, last + 1) if r not in discarded]


def contribution_scores(
    ctx,
    task_id: int,
    group: int,
    test_path: Path,
    work: Path,
    metric: str,
    method: str,
    device: str = "cpu",
) -> tuple[list[str], list[int], dict]:
    """Contribution scores of evaluation subgroup ``group``'s participants, summed over the rounds.

    For each counted round (:func:`counted_rounds`) and each training subgroup
    of that round holding one of ``group``'s participants: the subgroup's
    updates go through the admission rule as its validators judged them;
    ``protocol.contribution`` scores the admitted ones (``method``: gtg,
    exact or loo; the admitted FedAvg weights; the round's seed) against the
    round's starting model, on that round's test rows, the seed's resample of
    half the pool (``sampling.evaluation_rows``), and on the whole pool in the
    last counted round. A participant's score in a round is its contribution
    in basis points (floored at 0); 0 when it submitted nothing that round,
    its update was excluded (a copy, an unchanged model, a bad file), or it
    copies the weights of an update submitted before it in another subgroup
    (:func:`copies_across_subgroups`). Its final score is the sum over the
    counted rounds divided by their number, rounded half up: at most 10000,
    and proportional to what it added over the rounds it took part in, so
    late joiners and dropouts are paid for what they did. Everything is
    integer or exact, so every honest validator reveals the same vector.
    """
    from din_cli.ml.data import load_store
    from din_cli.protocol.contribution import contributions
    from din_cli.protocol.roundflow import subgroup_files, subgroup_result
    from din_cli.protocol.sampling import evaluation_rows

    members = list(ctx.din.round_info(task_id, EVAL_ROUND).participant_groups[group])
    parts = ctx.din.participants(task_id)
    wanted = set(members)
    test = load_store(test_path)
    rounds = counted_rounds(ctx, task_id)
    per_round: dict[int, list[int]] = {}
    for r in rounds:
        rnd = ctx.din.round_info(task_id, r)
        rows = evaluation_rows(rnd.seed, len(test), final=r == rounds[-1])
        got: dict[int, int] = {}
        groups = sorted(
            {u.group for u in ctx.din.updates_submitted(task_id, r) if u.index in wanted}
        )
        copied = copies_across_subgroups(ctx, task_id, r, work) if groups else set()
        for g in groups:
            sub = work / f"contribution-r{r}-g{g}"
            sub.mkdir(exist_ok=True)
            _, judged = subgroup_result(ctx, task_id, r, g, sub, aggregate=False)
            updates = ctx.din.updates_submitted(task_id, r, g)
            keep = [k for k, v in enumerate(judged.verdicts) if v.admitted] if judged else []
            if not keep:
                continue
            fetched, start, _ = subgroup_files(sub, r, g, len(updates))  # what admission read
            c = contributions(
                [fetched[k] for k in keep],
                start,
                test,
                rows=rows,
                weights=[judged.verdicts[k].weight for k in keep],
                method=method,
                metric=metric,
                seed=rnd.seed,
                device=device,
            )
            for pos, k in enumerate(keep):
                got[updates[k].index] = 0 if updates[k].index in copied else c.scores[pos]
        per_round[r] = [got.get(i, 0) for i in members]
    return [parts[i] for i in members], _averaged(per_round, len(members)), per_round


def _averaged(per_round: dict[int, list[int]], size: int) -> list[int]:
    """Each position's score summed over the counted rounds divided by their number, half up."""
    count = len(per_round)
    return [
        (2 * sum(v[k] for v in per_round.values()) + count) // (2 * count) if count else 0
        for k in range(size)
    ]


def secagg_scores(
    ctx,
    task_id: int,
    group: int,
    test_path: Path,
    work: Path,
    metric: str,
    method: str,
    device: str = "cpu",
) -> tuple[list[str], list[int], dict]:
    """Contribution scores in a secagg task, where only subgroup sums were ever opened.

    For each counted round, the players of ``protocol.contribution`` are the
    round's accepted subgroup aggregates (each weighted by its samples; a
    subgroup that fell back to the starting model plays no part), scored by
    ``method`` on that round's test rows as in :func:`contribution_scores`.
    A subgroup's contribution (basis points, floored at 0) is shared among
    the participants its sum included by their FedAvg weights, rounded down:
    ``contribution * n_i // sum(n)``. Nothing here looks at one update, and no
    coalition is smaller than a subgroup's sum, so no score reveals an
    individual update; a free-rider inside a subgroup shares its score like
    anyone else in it. Final scores average over the counted rounds as there.
    """
    from din_cli.ml.data import load_store
    from din_cli.protocol import secagg
    from din_cli.protocol.cids import to_text
    from din_cli.protocol.contribution import contributions
    from din_cli.protocol.sampling import evaluation_rows

    members = list(ctx.din.round_info(task_id, EVAL_ROUND).participant_groups[group])
    parts = ctx.din.participants(task_id)
    test = load_store(test_path)
    rounds = counted_rounds(ctx, task_id)
    per_round: dict[int, list[int]] = {}
    for r in rounds:
        rnd = ctx.din.round_info(task_id, r)
        rows = evaluation_rows(rnd.seed, len(test), final=r == rounds[-1])
        start = to_text(rnd.model_cid)
        sub = work / f"secagg-r{r}"
        sub.mkdir(exist_ok=True)
        base = ctx.fetch(start, sub / "start.safetensors")
        players, weights, shares = [], [], []
        for g, raw in sorted(ctx.din.accepted_aggregates(task_id, r).items()):
            if to_text(raw) == start:
                continue
            path = ctx.fetch(raw, sub / f"g{g}.safetensors")
            split = secagg.included(path)
            if not split:
                continue
            players.append(path)
            weights.append(sum(split.values()))
            shares.append(split)
        got: dict[int, int] = {}
        if players:
            c = contributions(
                players,
                base,
                test,
                rows=rows,
                weights=weights,
                method=method if method != "update" else "gtg",
                metric=metric,
                seed=rnd.seed,
                device=device,
            )
            for score, total, split in zip(c.scores, weights, shares, strict=True):
                for i, n in split.items():
                    got[i] = max(0, int(score)) * n // total
        per_round[r] = [got.get(i, 0) for i in members]
    return [parts[i] for i in members], _averaged(per_round, len(members)), per_round


def copies_across_subgroups(ctx, task_id: int, round_: int, work: Path) -> set[int]:
    """Participants whose ``round_`` update holds the same weights as one submitted before it in
    another subgroup of that round: copies the admission rule cannot see (it judges one subgroup).

    Weights are compared as bytes (every tensor in name order, whatever the
    metadata says), in submission order, so the first submitter keeps its
    score and later copies score 0 that round. Updates that cannot be
    fetched or read are skipped (admission excludes them anyway).
    """
    import hashlib

    from din_cli.errors import DinError
    from din_cli.ml import models
    from din_cli.protocol import sealing

    first: dict[bytes, int] = {}  # weights digest -> subgroup of its first submission
    out: set[int] = set()
    sub = work / f"copies-r{round_}"
    sub.mkdir(exist_ok=True)
    info = ctx.din.task_info(task_id)
    updates = ctx.din.updates_submitted(task_id, round_)
    # It reads every update of the round, so a process holding many evaluators (a node with many
    # identities, `din simulate`'s workers) reads them once: the answer depends only on the
    # round's submissions, final once its training phase is over, and on what this process can
    # open (sealed tasks: the evaluator's keys, so the key includes who asks).
    memo = (
        ctx.deployment["DinTasks"],
        int(ctx.chain.chain_id),
        int(task_id),
        int(round_),
        tuple((u.index, u.group, bytes(u.cid)) for u in updates),
        ctx.address if sealing.is_sealed_task(info) else None,
    )
    if memo in _COPIES:
        return set(_COPIES[memo])
    complete = True  # every update read: only then is the answer kept
    cutoff = sealing.read_cutoff(ctx, task_id, info, updates)
    for k, u in enumerate(updates):
        try:
            path = sealing.open_update(
                ctx, task_id, info, u, sub / f"{k:05d}.safetensors", cutoff=cutoff
            )
            if not isinstance(path, Path):
                complete = False
                continue
            mf = models.read_model(path, finite=False)
        except sealing.KeyMissing:
            raise
        except DinError:
            complete = False
            continue
        h = hashlib.sha256()
        for name in sorted(mf.weights):
            h.update(name.encode() + b"\0" + mf.weights[name].astype("<f4").tobytes())
        digest = h.digest()
        if digest in first and first[digest] != u.group:
            out.add(u.index)
        first.setdefault(digest, u.group)
        (sub / f"{k:05d}.safetensors").unlink(missing_ok=True)
    if complete:
        if len(_COPIES) >= 8:
            _COPIES.pop(next(iter(_COPIES)))
        _COPIES[memo] = frozenset(out)
    return out


#: copies_across_subgroups' answers in this process (its last 8 rounds)
_COPIES: dict[tuple, frozenset[int]] = {}


def update_scores(
    ctx,
    task_id: int,
    group: int,
    test_path: Path,
    work: Path,
    metric: str = "accuracy",
    device: str = "cpu",
) -> tuple[list[str], list[int]]:
    """Score each participant of evaluation subgroup ``group`` by its latest update alone; ``(addresses, bps)``.

    A participant scores its latest update; 0 when it never submitted, when
    that update can no longer be fetched, when the admission rule excluded it from its round's subgroup
    aggregate (judged as the validators of that subgroup judged it), or when
    it copies the weights of an update submitted before it in another
    subgroup of that round (:func:`copies_across_subgroups`), so a bad update
    or a copy earns nothing and is never evaluated.
    """
    from din_cli.ml.data import load_store
    from din_cli.ml.evaluate import evaluate_rows
    from din_cli.protocol.sampling import evaluation_rows

    rnd = ctx.din.round_info(task_id, EVAL_ROUND)
    parts = ctx.din.participants(task_id)
    latest = latest_updates(ctx, task_id)
    rows = evaluation_rows(rnd.seed, len(load_store(test_path)), final=True)
    admitted = _admitted_latest(
        ctx, task_id, [i for i in rnd.participant_groups[group] if i in latest], work
    )
    copied: set[int] = set()
    for r in sorted(set(admitted.values())):
        copied |= {
            i for i in copies_across_subgroups(ctx, task_id, r, work) if admitted.get(i) == r
        }
    addresses, scores = [], []
    for i in rnd.participant_groups[group]:
        addresses.append(parts[i])
        if i not in admitted or i in copied:
            scores.append(0)
            continue
        try:
            model = _open_latest(ctx, task_id, latest[i], work / f"model-{i}.safetensors")
        except NotFoundError:  # gone since admission: scored as admission scores it, 0
            scores.append(0)
            continue
        scores.append(
            int(evaluate_rows(model, test_path, rows, metric=metric, device=device).score_bps)
        )
    return addresses, scores


def _open_latest(ctx, task_id: int, cid: bytes, dest: Path) -> Path:
    """A participant's latest update (admitted, so it opens in a sealed task), as a plaintext file."""
    from din_cli.protocol import sealing

    info = ctx.din.task_info(task_id)
    if not sealing.is_sealed_task(info):
        return ctx.fetch(cid, dest)
    for r in range(info.round, 0, -1):
        for u in ctx.din.updates_submitted(task_id, r):
            if u.cid == cid:
                got = sealing.open_update(
                    ctx, task_id, info, u, dest, cutoff=sealing.evaluation_cutoff(ctx, task_id)
                )
                if isinstance(got, Path):
                    return got
                raise NotFoundError(f"update {cid.hex()} is refused: {got.detail}", "it scores 0")
    raise NotFoundError(f"update {cid.hex()} was not submitted to task {task_id}", "it scores 0")


def _admitted_latest(ctx, task_id: int, indices: list[int], work: Path) -> dict[int, int]:
    """Which of participants ``indices`` had their latest update admitted in its round:
    ``{participant index: that round}``."""
    from din_cli.protocol import sealing
    from din_cli.protocol.roundflow import subgroup_result

    wanted = set(indices)
    last_round: dict[int, int] = {}
    for e in ctx.din.events(task_id, "UpdateSubmitted"):
        i, r = int(e["args"]["index"]), int(e["args"]["round"])
        if i in wanted:
            last_round[i] = max(r, last_round.get(i, 0))
    of_round: dict[int, tuple[list, dict]] = {}  # round -> (its updates, index -> subgroup)
    sealed = sealing.is_sealed_task(ctx.din.task_info(task_id))
    out: dict[int, int] = {}
    for i, r in last_round.items():
        if r not in of_round:  # read once per round, not once per member
            every = ctx.din.updates_submitted(task_id, r)
            start = bytes(ctx.din.round_info(task_id, r).model_cid)
            of_round[r] = (every, {u.index: u.group for u in every}, start)
        every, group_of, start = of_round[r]
        g = group_of[i]
        updates = [u for u in every if u.group == g]
        # the same verdicts for every evaluator reading this subgroup: a process holding many
        # (a node with many identities, `din simulate`'s workers) judges it once
        memo = (
            ctx.deployment["DinTasks"],
            int(ctx.chain.chain_id),
            int(task_id),
            r,
            g,
            start,  # judged against the round's starting model
            tuple((u.index, bytes(u.cid)) for u in updates),
            ctx.address if sealed else None,
        )
        if memo not in _ADMITTED:
            sub = work / f"admission-r{r}-g{g}"
            sub.mkdir(exist_ok=True)
            admission = subgroup_result(ctx, task_id, r, g, sub, aggregate=False)[1]
            verdicts = admission.verdicts if admission is not None else []
            judged = frozenset(pos for pos, v in enumerate(verdicts) if v.admitted)
            if not any(v.reason == "unavailable" for v in verdicts):  # a miss may be transient
                if len(_ADMITTED) >= 4096:
                    _ADMITTED.pop(next(iter(_ADMITTED)))
                _ADMITTED[memo] = judged
        else:
            judged = _ADMITTED[memo]
        k = max(pos for pos, u in enumerate(updates) if u.index == i)
        if k in judged:
            out[i] = r
    return out


#: _admitted_latest's verdicts in this process: admitted positions per judged subgroup
_ADMITTED: dict[tuple, frozenset[int]] = {}


def _overrides(
    addresses: list[str], scores: list[int], overrides: dict[str, int] | None
) -> list[int]:
    if not overrides:
        return scores
    lower = {a.lower(): k for k, a in enumerate(addresses)}
    out = list(scores)
    for who, bps in overrides.items():
        if who.lower() not in lower:
            raise UsageError(
                f"{who} is not in your evaluation subgroup",
                f"participants there: {', '.join(addresses)}",
            )
        if not 0 <= int(bps) <= 10000:
            raise UsageError(f"score {bps} is outside 0..10000", "scores are basis points")
        out[lower[who.lower()]] = int(bps)
    return out


def evaluate_commit(
    ctx,
    task_id: int,
    *,
    overrides: dict[str, int] | None = None,
    metric: str | None = None,
    device: str = "cpu",
) -> dict:
    """Score this validator's evaluation subgroup on the decrypted test set and commit the score vector.

    Scores use the task's metric (fixed at publish); ``metric``, when given,
    must be that one, so no validator scores with another by mistake and is
    slashed for it. ``overrides`` (address -> bps) replaces computed scores (a validator
    disagreeing on purpose: the demo's dishonest validator; settlement
    slashes it unless a strict majority of its subgroup revealed the same vector).
    """
    state = validator_state(ctx, task_id, ctx.address)
    if not state["index1"]:
        raise NotFoundError(
            f"{ctx.address} is not a validator of task {task_id}",
            "only the task's validators score",
        )
    if state["score_committed"]:
        raise AlreadyDone(
            f"scores already committed for task {task_id}",
            f"reveal them: `din evaluate --task {task_id} --reveal`",
        )
    require_phase(ctx, task_id, "score-commit")
    task_metric = ctx.din.task_info(task_id).metric
    if metric is not None and metric != task_metric:
        raise UsageError(
            f"task {task_id} scores by {task_metric}, not {metric}",
            "drop --metric: `din evaluate --task` uses the task's metric",
        )
    metric = task_metric
    m = ctx.din.subgroup_of(task_id, ctx.address, EVAL_ROUND)
    if m.group is None:
        raise AlreadyDone(
            f"{ctx.address} is not assigned to an evaluation subgroup", "nothing to do"
        )
    with ctx.workdir() as work:
        cid, rec = _score_or_reject(ctx, task_id, m.group, work, device)
    if rec["rejected"] is None:
        rec["scores"] = _overrides(rec["participants"], rec["scores"], overrides)
    scores = rec["scores"]
    ctx.save_record(task_id, EVAL_ROUND, "scores", rec)
    with ctx.chain.writing():
        if validator_state(ctx, task_id, ctx.address)["score_committed"]:
            raise AlreadyDone(f"scores already committed for task {task_id}", "nothing to do")
        ctx.din.commit_scores(ctx.account, task_id, scores)
    return {"task_id": task_id, "test_set": cid, **rec}


def _score_or_reject(
    ctx, task_id: int, group: int, work: Path, device: str = "cpu", *, key: bytes | None = None
) -> tuple[str | None, dict]:
    """``(test set CID, record)`` scored with the task's metric and scoring, or ``(None, record)``
    with empty scores and the ``rejected`` reason when the test set is unusable. ``key``: K
    granted to a dispute committee member (see ``open_test_set``)."""
    info = ctx.din.task_info(task_id)
    rec = {"group": group, "metric": info.metric, "scoring": info.scoring}
    try:
        cid, test = open_test_set(ctx, task_id, work / "test.npz", key=key)
    except TestSetRejected as e:
        parts = ctx.din.participants(task_id)
        members = ctx.din.round_info(task_id, EVAL_ROUND).participant_groups[group]
        return None, {
            **rec,
            "participants": [parts[i] for i in members],
            "scores": [],
            "rejected": e.one_line(),
        }
    addresses, scores, per_round = compute_scores(
        ctx, task_id, group, test, work, info.metric, info.scoring, device
    )
    rounds = [{"round": r, "scores": v} for r, v in per_round.items()]
    return cid, {
        **rec,
        "participants": addresses,
        "scores": scores,
        "rejected": None,
        "rounds": rounds,
    }


def score_subgroup(
    ctx, task_id: int, group: int, work: Path, device: str = "cpu", *, key: bytes | None = None
) -> list[int]:
    """The score vector an honest evaluation validator of ``group`` reveals ([]: it rejects the
    test set): what a score dispute's filer and committee recompute."""
    return _score_or_reject(ctx, task_id, group, work, device, key=key)[1]["scores"]


def evaluate_reveal(ctx, task_id: int) -> dict:
    """Reveal the committed score vector (recomputed when the local record is gone)."""
    state = validator_state(ctx, task_id, ctx.address)
    if state["score_revealed"]:
        raise AlreadyDone(f"scores already revealed for task {task_id}", "nothing to do")
    require_phase(ctx, task_id, "score-reveal")
    if not state["score_committed"]:
        raise NotFoundError(
            f"no scores committed for task {task_id}", "the commit phase is over; nothing to reveal"
        )
    rec = ctx.load_record(task_id, EVAL_ROUND, "scores")
    if rec is None:
        group = int(state["score_group"])
        with ctx.workdir() as work:
            _, rec = _score_or_reject(ctx, task_id, group, work)
    rec.setdefault("rejected", None)
    scores, participants = rec.get("scores", []), rec.get("participants", [])
    if scores if rec["rejected"] else len(scores) != len(participants):
        raise InputError(
            f"{ctx.record_path(task_id, EVAL_ROUND, 'scores')}: damaged record",
            "delete it to recompute the scores",
        )
    with ctx.chain.writing():
        if validator_state(ctx, task_id, ctx.address)["score_revealed"]:
            raise AlreadyDone(f"scores already revealed for task {task_id}", "nothing to do")
        receipt = ctx.din.reveal_scores(ctx.account, task_id, rec["scores"])
    return {"task_id": task_id, **rec, "gas": _gas(receipt)}
