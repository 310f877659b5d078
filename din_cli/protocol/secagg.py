"""Secure aggregation (``--privacy secagg``): nobody reads one update, every validator opens the same sum.

In a task published with ``--privacy secagg`` (``TaskParams.privacy`` 2), a
round of subgroup ``g`` runs SecAgg+ (Bonawitz et al. 2017; Bell et al. 2020)
on din's fixed-point grid, with the chain as the bulletin board:

1. **Masking** (``din train --task --submit``): a participant quantises its
   update as din's aggregation does (``q = rint(clip(w * 2^20))``), multiplies
   by its FedAvg weight ``n`` (its samples, capped at the task's
   ``maxSamples``) and adds, mod 2^64, a self mask from a fresh seed ``b`` and
   a pairwise mask with each neighbour (``crypto.secagg``: X25519 between the
   HPKE keys participants published at join, HKDF bound to chain, task, round
   and subgroup; ChaCha20 streams). The neighbour graph is drawn from the
   round seed: complete up to ``COMPLETE_UP_TO`` neighbours, a circulant graph
   of degree ~4 log2 n beyond. It Shamir-shares ``b`` and each pair seed among
   its neighbours, threshold ``t`` = the task's fraction of its neighbours,
   encrypts each neighbour's shares to that neighbour's HPKE key, and puts
   everything in the masked file (``din.secagg`` metadata: binding, sample
   weight, a hash of every secret and of every share). Its CID goes on chain
   by ``submitUpdate`` as any update.
2. **Who survived**: the participants with an ``UpdateSubmitted`` of that
   round and subgroup whose file passes the structural check (:func:`_judge`);
   everyone applies the same check to the same public files. Dropouts are
   facts of the chain and the files: no update, or one that fails the check
   (``bad-secagg``, ``over-total``). An update on chain that a reader cannot
   fetch is ``unavailable``: validators cannot sum it, and holders never
   count it a dropout (they reveal nothing about it).
3. **Unmasking** (``din participant unmask``, and participant nodes by
   themselves): once the training phase has closed, each survivor decrypts the
   shares its neighbours dealt it and reveals, for every surviving neighbour,
   its share of that neighbour's self seed, and for every dropout among that
   neighbour's neighbours, its share of their pair seed. Never both for one
   participant, whatever each holder could fetch, so a survivor's ``y``
   stays masked to anyone short of ``t`` colluding neighbours. The reveal is a
   ``din/secagg-reveal/v1`` document in the content store, announced with
   ``DinDisputes.grantKeys``.
4. **Summing** (validators, ``din verify``, a dispute committee; anyone, from
   public data): a revealed share counts only if its hash matches the one its
   dealer published, and only from the holder's first announcement in the
   round, made before the **cutoff**, the middle of the round's
   aggregation-commit phase. A validator proceeds as soon as every survivor
   has revealed, else waits until the cutoff (``RevealsMissing``, exit 2),
   then uses what was announced before it (``roundflow.aggregate_commit``
   mines a no-op ``advance`` once the clock passes the cutoff, for chains
   whose time stands still between transactions). The first ``t`` valid shares in holder order rebuild each seed, which
   must match its dealer's hash. The survivors' ``y`` summed mod 2^64, minus
   the rebuilt masks, is exactly ``sum(q * n)``: the aggregate file is written
   from it with the same two roundings as ``din aggregate`` (bit-identical
   weights to the plaintext FedAvg of the survivors). When a seed cannot be
   rebuilt (fewer than ``t`` holders revealed, or a dealer's shares do not
   match its hash), the subgroup's result is the round's starting model, as
   for a subgroup with no admitted update: every honest validator that read
   the same files and reveals reaches it alike, nobody is slashed, and its
   participants earn nothing that round.

What it cannot do: validators cannot check one update (no admission rule
beyond the file's structure, no robust aggregation, no copy detection), so
a participant can poison its subgroup's sum or sink its round by dealing bad
shares; rewards use only the sums (``secagg_scores``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

from din_cli.errors import AlreadyDone, DinError, InputError, NotFoundError, UsageError
from din_cli.protocol.sealing import KeyMissing

FORMAT = "din/secagg-update/v1"
REVEAL_FORMAT = "din/secagg-reveal/v1"
ENCODING = "secagg-u64"
META_KEY = "din.secagg"  # tensorfile.SECAGG_KEY
COMPLETE_UP_TO = 16  # neighbours: the complete graph up to 17 participants
MIN_GROUP = 3  # with 2, each participant would learn the other's update from the public sum
_CHECK = 16  # bytes of SHA-256 kept per secret and per share


class RevealsMissing(KeyMissing):
    """Survivors' reveals are still missing before the cutoff (exit 2): wait."""

    def __init__(self, message: str, hint: str, cutoff: int | None = None):
        super().__init__(message, hint)
        self.cutoff = cutoff  # unix time from which the sum goes ahead without them


def is_secagg_task(info) -> bool:
    return getattr(info, "privacy_mode", "open") == "secagg"


def degree(n: int) -> int:
    """Neighbours per participant in a subgroup of ``n``: all up to COMPLETE_UP_TO, ~4 log2 n beyond."""
    if n - 1 <= COMPLETE_UP_TO:
        return COMPLETE_UP_TO
    d = max(COMPLETE_UP_TO, 4 * math.ceil(math.log2(n)))
    return min(d, n - 1 - (n - 1) % 2)


def _cache(ctx, name: str) -> dict:
    caches = ctx.chain.__dict__.setdefault("_secagg_caches", {})
    return caches.setdefault(name, {})


@dataclass(frozen=True)
class Group:
    """One round's subgroup as secagg sees it: positions, keys, graph and thresholds."""

    task_id: int
    round: int
    group: int
    members: list[str]  # participant addresses by position
    indices: list[int]  # their participant indices
    publics: list[bytes]  # their HPKE keys
    graph: list[list[int]]
    fraction: int  # millionths
    context: bytes
    unusable: frozenset = frozenset()  # positions whose HPKE key agrees no secret: off the graph

    @property
    def usable(self) -> list[int]:
        return [k for k in range(len(self.members)) if k not in self.unusable]

    def threshold(self, pos: int) -> int:
        from din_cli.crypto import secagg as sa

        return sa.threshold(len(self.graph[pos]), self.fraction)


def group_of(ctx, task_id: int, round_: int, group: int, info=None) -> Group:
    """Subgroup ``group`` of ``round_`` (cached on the chain connection)."""
    from din_cli.crypto import secagg as sa

    key = (ctx.din.tasks.address, int(task_id), int(round_), int(group))
    cache = _cache(ctx, "groups")
    if key in cache:
        return cache[key]
    info = info or ctx.din.task_info(task_id)
    rnd = ctx.din.round_info(task_id, round_)
    if rnd.seed is None:
        raise UsageError(
            f"round {round_}'s subgroups are not drawn yet", "wait for the next transaction"
        )
    parts = ctx.din.participants(task_id)
    keys = ctx.din.participant_keys(task_id)
    indices = list(rnd.participant_groups[group])
    members = [parts[i] for i in indices]
    n = len(members)
    graph_seed = hashlib.sha256(rnd.seed + int(group).to_bytes(4, "big")).digest()
    # pair seeds come from long-term keys: the context makes each one single-use (chain,
    # deployment, task, round, subgroup and the round's seed, which a redeployment never repeats)
    context = b"".join(
        (
            int(ctx.chain.chain_id).to_bytes(8, "big"),
            bytes.fromhex(ctx.din.tasks.address[2:]),
            int(task_id).to_bytes(32, "big"),
            int(round_).to_bytes(4, "big"),
            int(group).to_bytes(4, "big"),
            rnd.seed,
        )
    )
    publics = [keys[a] for a in members]
    bad = {k for k, pub in enumerate(publics) if not usable_key(pub)}
    graph = [
        [] if k in bad else [p for p in peers if p not in bad]
        for k, peers in enumerate(sa.neighbours(graph_seed, n, degree(n)))
    ]
    out = cache[key] = Group(
        task_id=int(task_id),
        round=int(round_),
        group=int(group),
        members=members,
        indices=indices,
        publics=publics,
        graph=graph,
        fraction=int(info.secagg_threshold),
        context=context,
        unusable=frozenset(bad),
    )
    return out


def usable_key(public: bytes) -> bool:
    """Whether an X25519 key agrees a secret with anyone: not a low-order point, 32 bytes.

    A participant that joined with such a key would stop every neighbour from
    masking; it is cut off the graph instead, alike for everyone.
    """
    from din_cli.crypto import secagg as sa

    probe = hashlib.sha256(b"din/secagg/v1 key probe").digest()
    try:
        sa.pair_seed(probe, bytes(public), b"probe", 0, 1)
    except DinError:
        return False
    return True


def _h(*parts: bytes) -> str:
    return hashlib.sha256(b"".join(parts)).digest()[:_CHECK].hex()


def _i4(v: int) -> bytes:
    return int(v).to_bytes(4, "big")


def secret_check(g: Group, dealer: int, j: int, secret: bytes) -> str:
    return _h(b"din/secagg/v1 secret", g.context, _i4(dealer), _i4(j), secret)


def share_check(g: Group, dealer: int, holder: int, j: int, share: bytes) -> str:
    return _h(b"din/secagg/v1 share", g.context, _i4(dealer), _i4(holder), _i4(j), share)


def _box_info(g: Group, dealer: int, holder: int) -> bytes:
    return b"din/secagg/v1 shares" + g.context + _i4(dealer) + _i4(holder)


def quantise(weights: dict, n: int):
    """``rint(clip(w * 2^20)) * n`` of every tensor, in name order, as one int64 vector."""
    import numpy as np

    from din_cli.ml.aggregate import Q_MAX, SCALE_BITS

    parts = []
    for name in sorted(weights):
        t = np.asarray(weights[name], dtype=np.float32).reshape(-1).astype(np.float64)
        t *= 2.0**SCALE_BITS
        np.clip(t, -Q_MAX, Q_MAX, out=t)
        np.rint(t, out=t)
        parts.append(t.astype(np.int64) * np.int64(n))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


# ------------------------------------------------------------------ participants: masking


def parties(g: Group) -> int:
    """The fewest survivors a sum of ``g`` opens with: every survivor needs ``t`` surviving neighbours."""
    return min(g.threshold(p) for p in g.usable) + 1


def dp_sensitivity(dp, dim: int) -> float:
    """L2 sensitivity of one survivor's grid vector in a DP secagg sum (zero-out neighbours).

    Clipping bounds its update's distance from the start to ``C``; on the
    grid that is ``C * 2^20``, plus at most 1 per weight of rounding
    (``rint`` of the update and of the start each move a weight by <= 1/2).
    """
    from din_cli.ml.aggregate import SCALE_BITS

    return float(dp.clip) * 2.0**SCALE_BITS + math.sqrt(dim)


def dp_sigma(dp, g: Group, dim: int) -> float:
    """Each survivor's discrete Gaussian std (grid units): any sum that opens carries the task's
    noise multiplier ``z`` times the sensitivity (Kairouz, Liu & Steinke 2021)."""
    return float(dp.multiplier) * dp_sensitivity(dp, dim) / math.sqrt(parties(g))


def dp_round_epsilon(dp, g: Group, dim: int) -> float:
    """One round's concentrated-DP epsilon of a survivor of ``g`` (``ml.privacy.ddg_cdp_epsilon``)."""
    from din_cli.ml.privacy import ddg_cdp_epsilon

    return ddg_cdp_epsilon(dp_sensitivity(dp, dim), dp_sigma(dp, g, dim), parties(g), dim)


def _dp_values(mf, start: Path, dp, g: Group):
    """Clip ``mf`` to ``dp.clip`` around ``start``, quantise, add the discrete Gaussian; (int64 values, doc)."""
    import numpy as np

    from din_cli.ml import models
    from din_cli.ml.aggregate import Q_MAX, SCALE_BITS
    from din_cli.ml.privacy import discrete_gaussian

    base = models.read_model(start, arch=mf.arch)
    names = sorted(mf.weights)
    deltas = [
        mf.weights[k].astype(np.float64).reshape(-1) - base.weights[k].reshape(-1) for k in names
    ]
    norm = math.sqrt(sum(float(np.dot(d, d)) for d in deltas))
    scale = min(1.0, float(dp.clip) / norm) if norm > 0 else 1.0
    parts = []
    for k, d in zip(names, deltas, strict=True):
        t = (base.weights[k].reshape(-1).astype(np.float64) + d * scale) * 2.0**SCALE_BITS
        np.clip(t, -Q_MAX, Q_MAX, out=t)
        parts.append(np.rint(t).astype(np.int64))
    values = np.concatenate(parts)
    sigma = dp_sigma(dp, g, values.size)
    values += discrete_gaussian(sigma, values.size)
    doc = {"norm": norm, "clipped": scale < 1.0, "noise_std": sigma / 2.0**SCALE_BITS}
    return values, doc


def mask_update(
    ctx, task_id: int, round_: int, plain: Path, out: Path, info=None, *, start: Path | None = None
) -> tuple[Path, dict | None]:
    """Mask this participant's trained update ``plain`` for ``round_`` into ``out`` (see module doc).

    In a differentially private task (``start``, the round's starting model,
    is then required) the update is clipped to the task's ``C`` around it,
    and the discrete Gaussian noise share of :func:`dp_sigma` is added on the
    grid before masking; its weight is 1, like every survivor's, so the
    opened sum carries the task's noise multiplier whatever the samples.
    Returns ``(out, DP figures or None)``.
    """
    import secrets

    import numpy as np

    from din_cli.crypto import hpke
    from din_cli.crypto import secagg as sa
    from din_cli.ml import models, tensorfile
    from din_cli.ml.aggregate import CLIP

    info = info or ctx.din.task_info(task_id)
    m = ctx.din.subgroup_of(task_id, ctx.address, round_)
    if m.role != "participant" or m.group is None:
        raise NotFoundError(
            f"{ctx.address} is not in a subgroup of round {round_}", "join the task first"
        )
    private = getattr(ctx.identity, "hpke_private", None)
    if private is None:
        raise UsageError(
            "this key has no HPKE key to agree masks with", "use the key you joined the task with"
        )
    g = group_of(ctx, task_id, round_, m.group, info)
    if len(g.usable) < MIN_GROUP:
        raise UsageError(
            f"subgroup {g.group} of round {round_} has {len(g.usable)} participant(s) that can mask:"
            " its public sum would show each one's update to the others",
            f"secure aggregation needs {MIN_GROUP} or more; nothing is submitted this round",
        )
    me = g.members.index(ctx.address)
    if me in g.unusable:
        raise UsageError(
            "the HPKE key you joined with agrees no secret (a low-order point)",
            "join a new task with a key made by `din keys new`",
        )
    mf = models.read_model(plain)
    n = min(int(mf.header.samples), int(info.max_samples))
    if n < 1:
        raise InputError(
            f"{plain}: din.samples is 0, so it has no weight", "train on at least one sample"
        )
    dp_doc = None
    if info.dp is not None:
        if start is None:
            raise UsageError("a DP secagg update needs the round's starting model", "pass start=")
        values, dp_doc = _dp_values(mf, start, info.dp, g)  # clipped near the start
        n = 1
    else:
        if any(float(np.abs(w).max(initial=0.0)) > CLIP for w in mf.weights.values()):
            raise InputError(
                f"{plain}: a weight lies outside [-{CLIP:g}, {CLIP:g}], din's fixed-point range",
                "train with a smaller learning rate; validators would exclude it in the clear too",
            )
        values = quantise(mf.weights, n)
    self_seed = secrets.token_bytes(sa.SEED_LEN)
    holders = g.graph[me]
    pairs = {p: sa.pair_seed(private, g.publics[p], g.context, me, p) for p in holders if p != me}
    y = sa.mask(values, me, self_seed, pairs)
    secrets_ = [self_seed] + [pairs[p] for p in holders]
    t = g.threshold(me)
    xs = [h + 1 for h in holders]
    shares = [sa.split(s, t, xs) for s in secrets_]
    boxes = []
    for k, h in enumerate(holders):
        mine = [shares[j][k] for j in range(len(secrets_))]
        boxes.append(
            {
                "holder": h,
                "box": base64.b64encode(
                    hpke.seal(g.publics[h], b"".join(mine), info=_box_info(g, me, h))
                ).decode(),
                "checks": [share_check(g, me, h, j, s) for j, s in enumerate(mine)],
            }
        )
    doc = {
        "format": FORMAT,
        "chain": int(ctx.chain.chain_id),
        "task": int(task_id),
        "round": int(round_),
        "group": g.group,
        "position": me,
        "participant": ctx.address,
        "samples": n,
        "threshold": t,
        "neighbours": holders,
        "secrets": [secret_check(g, me, j, s) for j, s in enumerate(secrets_)],
        "shares": boxes,
    }
    meta = tensorfile.make_metadata(
        arch=mf.header.arch,
        kind="update",
        samples=n,
        round=mf.header.round,
        task=mf.header.task,
        encoding=ENCODING,
    )
    meta[META_KEY] = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    tensors, a = {}, 0
    for name in sorted(mf.weights):
        shape = np.asarray(mf.weights[name]).shape
        size = int(np.prod(shape, dtype=np.int64))
        tensors[name] = y[a : a + size].reshape(shape)
        a += size
    tensorfile.write(out, tensors, meta)
    return out, dp_doc


# ------------------------------------------------------------------ everyone: who survived


@dataclass(frozen=True)
class Masked:
    """A survivor's masked file, checked: its position, weight, header document and where its y is."""

    position: int
    samples: int
    doc: dict
    path: Path
    offset: int
    count: int
    round: int
    task: str


def check_masked(
    g: Group, path: Path, position: int, shapes: dict, max_samples: int, *, dp: bool = False
):
    """``Masked``, or the reason (a string) the file is not a valid masked update of ``position``."""
    import numpy as np

    from din_cli.ml import tensorfile

    try:
        h = tensorfile.read_header(path)
    except DinError as e:
        return f"not a safetensors file: {e.one_line()}"
    raw = h.metadata.get(META_KEY)
    if raw is None:
        return "not a masked update (no din.secagg metadata)"
    doc = _json(raw)
    if not isinstance(doc, dict):
        return "din.secagg is not a JSON object"
    holders = g.graph[position]
    if len(g.usable) < MIN_GROUP:
        return f"a subgroup of {len(g.usable)}: secure aggregation needs {MIN_GROUP} or more"
    if position in g.unusable:
        return "its participant's HPKE key agrees no secret"
    want = {
        "format": FORMAT,
        "chain": int(g.context[:8].hex(), 16),
        "task": g.task_id,
        "round": g.round,
        "group": g.group,
        "position": position,
        "participant": g.members[position],
        "threshold": g.threshold(position),
        "neighbours": holders,
    }
    for k, v in want.items():
        if doc.get(k) != v:
            return f"din.secagg {k} is {doc.get(k)!r}, not {v!r}"
    n = doc.get("samples")
    top = 1 if dp else max_samples  # with DP every survivor weighs 1: the noise covers each alike
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= top:
        return f"samples {n!r} is not 1..{top}"
    secrets_ = doc.get("secrets")
    boxes = doc.get("shares")
    count = len(holders) + 1
    if not (isinstance(secrets_, list) and len(secrets_) == count):
        return "the secret checks do not cover the self seed and every pair seed"
    if not (
        isinstance(boxes, list)
        and [b.get("holder") if isinstance(b, dict) else None for b in boxes] == holders
    ):
        return "the share boxes are not one per neighbour, in order"
    if any(
        not (
            isinstance(b.get("box"), str)
            and isinstance(b.get("checks"), list)
            and len(b["checks"]) == count
            and all(isinstance(c, str) for c in b["checks"])
        )
        for b in boxes
    ) or not all(isinstance(c, str) for c in secrets_):
        return "a share box is not a sealed box with one check per secret"
    if sorted(h.tensors) != sorted(shapes) or any(
        h.tensors[k].dtype != "U64" or tuple(h.tensors[k].shape) != tuple(shapes[k]) for k in shapes
    ):
        return "its tensors are not the task's architecture as uint64"
    if not tensorfile.is_canonical(h) or h.metadata.get("din.encoding") != ENCODING:
        return "not din's canonical masked encoding"
    total = sum(int(np.prod(s, dtype=np.int64)) for s in shapes.values())
    first = sorted(shapes)[0] if shapes else None
    offset = h.tensors[first].start if first else 0
    return Masked(position, n, doc, Path(path), offset, total, h.round, h.task)


def _json(raw):
    """Parsed JSON, or None for anything that is not (including nesting too deep to parse)."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError, TypeError):
        return None


def _judge(ctx, g: Group, updates, paths, base) -> tuple[dict, list]:
    """``({position: Masked}, verdicts)`` of a subgroup's submissions, in submission order.

    Survivors pass the structural check; a verdict ``unavailable`` is an
    update on chain this reader could not fetch (not a dropout for a holder's
    reveals: see :func:`reveal`); ``over-total`` one that would take the
    survivors' weights past 2^32, the exact range of the sums.
    """
    from din_cli.ml import tensorfile, zoo
    from din_cli.ml.aggregate import MAX_TOTAL_SAMPLES
    from din_cli.protocol import admission
    from din_cli.protocol.cids import to_text

    info = ctx.din.task_info(g.task_id)
    arch = tensorfile.read_header(base).arch
    shapes = zoo.param_shapes(arch)
    survivors: dict[int, Masked] = {}
    verdicts = []
    total = 0
    for i, (u, p) in enumerate(zip(updates, paths, strict=True)):
        pos = g.indices.index(u.index)
        try:
            cid = to_text(u.cid)
        except (
            InputError
        ):  # not a CID at all: invalid for everyone alike, unlike an unfetchable one
            verdicts.append(
                admission.Verdict(i, "0x" + bytes(u.cid).hex(), False, 0, "bad-secagg", "not a CID")
            )
            continue
        if p is None:
            verdicts.append(admission.Verdict(i, cid, False, 0, "unavailable"))
            continue
        got = check_masked(g, p, pos, shapes, int(info.max_samples), dp=info.dp is not None)
        if isinstance(got, str):
            verdicts.append(admission.Verdict(i, cid, False, 0, "bad-secagg", got))
            continue
        if pos in survivors:  # one update per participant per round: cannot happen on chain
            verdicts.append(admission.Verdict(i, cid, False, 0, "duplicate"))
            continue
        if total + got.samples > MAX_TOTAL_SAMPLES:
            verdicts.append(admission.Verdict(i, cid, False, 0, "over-total"))
            continue
        total += got.samples
        survivors[pos] = got
        verdicts.append(admission.Verdict(i, cid, True, got.samples))
    return survivors, verdicts


def _fetch(ctx, updates, work: Path, name: str) -> list:
    out = []
    for i, u in enumerate(updates):
        try:
            out.append(ctx.fetch(u.cid, work / f"{name}-in-{i:04d}.safetensors"))
        except (NotFoundError, InputError):
            out.append(None)
    return out


# ------------------------------------------------------------------ participants: unmasking


def _my_shares(ctx, g: Group, dealer: Masked, me: int) -> list[bytes] | None:
    """The shares ``dealer`` dealt this participant, each checked against its hash (None: unusable)."""
    from din_cli.crypto import hpke
    from din_cli.crypto import secagg as sa

    box = dealer.doc["shares"][g.graph[dealer.position].index(me)]
    try:
        raw = hpke.unseal(
            ctx.identity.hpke_private,
            base64.b64decode(box["box"], validate=True),
            info=_box_info(g, dealer.position, me),
        )
    except (DinError, ValueError, TypeError):
        return None
    count = len(box["checks"])
    if len(raw) != count * sa.SHARE_LEN:
        return None
    shares = [raw[j * sa.SHARE_LEN : (j + 1) * sa.SHARE_LEN] for j in range(count)]
    if any(
        share_check(g, dealer.position, me, j, s) != box["checks"][j] for j, s in enumerate(shares)
    ):
        return None
    return shares


def wanted(g: Group, survivors: dict, dropouts: set | None = None) -> dict[int, list[int]]:
    """``{dealer: [secret indices]}`` the sum needs: each survivor's self seed (0) and its pair
    seeds with its neighbours in ``dropouts`` (default: every neighbour that did not survive),
    ``1 +`` their place among its neighbours."""
    out = {}
    for w in sorted(survivors):
        gone = [x for x in g.graph[w] if x not in survivors]
        if dropouts is not None:
            gone = [x for x in gone if x in dropouts]
        out[w] = [0] + [1 + g.graph[w].index(x) for x in gone]
    return out


def _announced(ctx, g: Group, window=None) -> dict[int, tuple[str | None, int]]:
    """``{holder position: (reveal CID or None, block)}``: each member's first announcement in the
    round's reveal window, by chain order, whatever it holds. Only that one counts for the holder
    (a later one never replaces it), so every reader counts the same document."""
    from din_cli.protocol.cids import to_text

    window = window or reveal_window(ctx, g.task_id, g.round)
    if window is None:
        return {}
    first, _ = window
    where = {a.lower(): k for k, a in enumerate(g.members)}
    out: dict[int, tuple[str | None, int]] = {}
    for granter, raw, block in ctx.din.key_grants(g.task_id):
        k = where.get(granter.lower())
        if k is None or block < first or k in out:
            continue
        try:
            out[k] = (to_text(raw), block)
        except InputError:
            out[k] = (None, block)
    return out


def _reveal_rows(ctx, g: Group, holder: int, cid: str | None) -> dict | None:
    """``{(dealer, j): share}`` a holder's reveal document carries; None while it cannot be
    fetched, ``{}`` for anything that is not a well-formed reveal of this holder."""
    if cid is None:
        return {}
    cache = _cache(ctx, "reveals")
    key = (cid, g.task_id, g.round, g.group, holder)
    if key in cache:
        return cache[key]
    try:
        with ctx.workdir() as work:
            raw = ctx.fetch(cid, work / "reveal.json").read_bytes()
    except DinError:  # not in the store (yet): the holder counts as missing until it is
        return None
    doc = _json(raw)
    rows: dict = {}
    binding = {
        "format": REVEAL_FORMAT,
        "task": g.task_id,
        "round": g.round,
        "group": g.group,
        "holder": holder,
    }
    if isinstance(doc, dict) and all(doc.get(k) == v for k, v in binding.items()):
        shares = doc.get("shares")
        for row in shares if isinstance(shares, list) else []:
            try:
                w, j, share = int(row[0]), int(row[1]), bytes.fromhex(row[2])
            except (TypeError, ValueError, IndexError, KeyError):
                continue  # a malformed row is skipped, never fatal
            rows.setdefault((w, j), share)
    cache[key] = rows
    return rows


def reveal(ctx, task_id: int) -> dict:
    """Publish this participant's shares for its subgroup's unmasking in the current round (see module doc).

    Who dropped out is decided from the chain and the files alone: a
    neighbour with no update on chain, or whose fetched file fails the
    structural check. A neighbour whose update is on chain but cannot be
    fetched here is not judged at all: nothing about it is revealed (neither
    its self seed's share nor a pair seed with it), so two holders with
    different views of the content store never reveal both halves of one
    update. AlreadyDone when this participant already announced in the
    round's window; UsageError outside the aggregation-commit phase or
    without a valid update of its own; InputError when no share box dealt to
    it opens (a wrong key), and then nothing is published.
    """
    from din_cli.protocol.cids import to_bytes
    from din_cli.protocol.roundflow import _gas

    d = ctx.din
    info = d.task_info(task_id)
    if not is_secagg_task(info):
        raise UsageError(f"task {task_id} is not a secagg task", "only secagg tasks unmask")
    if info.phase != "aggregation-commit":
        raise UsageError(
            f"task {task_id} is in {info.phase}, not aggregation-commit",
            "reveal after the training phase closes (`din round wait --phase aggregation-commit`)",
        )
    r = info.round
    m = d.subgroup_of(task_id, ctx.address, r)
    if m.role != "participant" or m.group is None:
        raise NotFoundError(f"{ctx.address} is not a participant of round {r}", "nothing to reveal")
    g = group_of(ctx, task_id, r, m.group, info)
    me = g.members.index(ctx.address)
    if me in _announced(ctx, g):
        raise AlreadyDone(f"already revealed for round {r}", "nothing to do")
    updates = d.updates_submitted(task_id, r, m.group)
    with ctx.workdir() as work:
        base = ctx.fetch(d.round_info(task_id, r).model_cid, work / "start.safetensors")
        survivors, verdicts = _judge(ctx, g, updates, _fetch(ctx, updates, work, "reveal"), base)
        if me not in survivors:
            raise UsageError(
                f"{ctx.address} has no valid masked update in round {r}",
                "only participants that submitted reveal; submit in the next round",
            )
        unseen = {
            g.indices.index(u.index)
            for u, v in zip(updates, verdicts, strict=True)
            if v.reason == "unavailable"
        }
        dropouts = set(range(len(g.members))) - set(survivors) - unseen
        rows, skipped = [], []
        for w, secrets_ in wanted(g, survivors, dropouts).items():
            if w == me or me not in g.graph[w]:
                continue
            shares = _my_shares(ctx, g, survivors[w], me)
            if shares is None:
                skipped.append(w)
                continue
            rows += [[w, j, shares[j].hex()] for j in secrets_]
        if skipped and not rows:
            raise InputError(
                f"none of the {len(skipped)} share boxes dealt to {ctx.address} opens",
                "unmask with the key you joined the task with",
            )
        doc = {
            "format": REVEAL_FORMAT,
            "chain": int(ctx.chain.chain_id),
            "task": int(task_id),
            "round": r,
            "group": g.group,
            "holder": me,
            "participant": ctx.address,
            "shares": rows,
        }
        path = work / "reveal.json"
        path.write_text(json.dumps(doc, sort_keys=True, separators=(",", ":")))
        with ctx.chain.writing():
            now = d.task_info(task_id)
            if (now.round, now.phase) != (r, "aggregation-commit"):
                raise UsageError(
                    f"round {r}'s aggregation-commit phase ended while revealing",
                    "nothing to reveal now",
                )
            if me in _announced(ctx, g):
                raise AlreadyDone(f"already revealed for round {r}", "nothing to do")
            cid = ctx.add(path)
            receipt = d.grant_keys(ctx.account, task_id, to_bytes(cid))
    return {
        "task_id": int(task_id),
        "round": r,
        "group": g.group,
        "cid": cid,
        "shares": len(rows),
        "unusable_dealers": [g.indices[w] for w in skipped],
        "unseen": [g.indices[w] for w in sorted(unseen)],
        "gas": _gas(receipt),
    }


# ------------------------------------------------------------------ validators: the sum


def reveal_window(ctx, task_id: int, round_: int) -> tuple[int, int] | None:
    """``(first block, cutoff)`` of ``round_``'s reveals: from the block that opened its
    aggregation-commit phase to the middle of that phase; None before it opened."""
    from din_cli.chain.din import PHASE_NUMBERS

    info = ctx.din.task_info(task_id)
    for e in reversed(ctx.din.events(task_id, "PhaseChanged")):
        a = e["args"]
        if (
            int(a["round"]) == int(round_)
            and int(a["phase"]) == PHASE_NUMBERS["aggregation-commit"]
        ):
            cutoff = int(a["deadline"]) - info.durations["aggregation_commit"] // 2
            return int(e["blockNumber"]), cutoff
    return None


def commit_cutoff(ctx, task_id: int, round_: int) -> int | None:
    """The middle of ``round_``'s aggregation-commit phase (None before it opened): the reveals' cutoff."""
    window = reveal_window(ctx, task_id, round_)
    return window[1] if window else None


def _block_time(ctx, block: int) -> int:
    times = _cache(ctx, "block_times")
    if block not in times:
        times[block] = ctx.chain.block_time(block)
    return times[block]


def _rebuild(ctx, g: Group, survivors: dict, *, wait: bool):
    """``({(dealer, j): secret}, None)``, or ``(None, why)`` when some needed secret cannot be rebuilt.

    Counts, per surviving holder, its first announcement in the round's window
    if that lies before the cutoff. RevealsMissing (with ``wait``) while a
    survivor's reveal is missing or not fetchable and the chain's time is
    before the cutoff.
    """
    from din_cli.crypto import secagg as sa

    now = ctx.chain.now()  # before the reveals: one mined after this read is never counted
    window = reveal_window(ctx, g.task_id, g.round)
    cutoff = window[1] if window else None
    announced = _announced(ctx, g, window)
    need = wanted(g, survivors)
    reveals: dict[int, dict] = {}
    for k, (cid, block) in announced.items():
        if k not in survivors:
            continue  # only survivors hold usable shares (and are expected to reveal)
        if cutoff is not None and _block_time(ctx, block) >= cutoff:
            continue
        rows = _reveal_rows(ctx, g, k, cid)
        if rows is not None:
            reveals[k] = rows
    missing = [k for k in survivors if k not in reveals]
    if missing and wait and (cutoff is None or now < cutoff):
        when = (
            f"until {cutoff} (the middle of the aggregation-commit phase)"
            if cutoff
            else ("for the aggregation-commit phase to open")
        )
        raise RevealsMissing(
            f"round {g.round} subgroup {g.group}: {len(missing)} of {len(survivors)} survivors"
            " have not revealed their shares",
            f"wait {when}, or for their reveals",
            cutoff,
        )
    out = {}
    for w, js in need.items():
        dealer = survivors[w]
        t = g.threshold(w)
        for j in js:
            points = []
            for h in g.graph[w]:  # holder order
                share = reveals.get(h, {}).get((w, j))
                if share is None:
                    continue
                box = dealer.doc["shares"][g.graph[w].index(h)]
                if share_check(g, w, h, j, share) != box["checks"][j]:
                    continue  # a tampered share: not its dealer's
                points.append((h + 1, share))
                if len(points) == t:
                    break
            if len(points) < t:
                what = "self seed" if j == 0 else f"pair seed with position {g.graph[w][j - 1]}"
                return (
                    None,
                    f"position {w}'s {what}: {len(points)} of the {t} shares needed were revealed",
                )
            try:
                secret = sa.combine(points)
            except InputError:
                secret = b""
            if secret_check(g, w, j, secret) != dealer.doc["secrets"][j]:
                return None, f"position {w}'s shares do not rebuild the secret it committed to"
            out[(w, j)] = secret
    return out, None


def subgroup_result(
    ctx,
    task_id: int,
    round_: int,
    group: int,
    work: Path,
    updates,
    start: str,
    *,
    aggregate: bool = True,
    window: bool = True,
):
    """A secagg subgroup's result: ``(cid text, Admission)`` (``roundflow.subgroup_result``'s contract).

    ``window=False`` (``din verify``) never waits: reveals are counted up to
    the cutoff whatever the time.
    """
    from din_cli.crypto import secagg as sa
    from din_cli.protocol import admission

    name = f"r{round_}-g{group}"
    g = group_of(ctx, task_id, round_, group)
    base = ctx.fetch(start, work / f"{name}-start.safetensors")
    paths = _fetch(ctx, updates, work, name)
    survivors, verdicts = _judge(ctx, g, updates, paths, base)
    if not survivors:
        return start, admission.Admission(verdicts)
    secrets_, why = _rebuild(ctx, g, survivors, wait=window)
    if secrets_ is None:
        verdicts = [
            v
            if not v.admitted
            else admission.Verdict(v.index, v.cid, False, 0, "unrecoverable", why)
            for v in verdicts
        ]
        return start, admission.Admission(verdicts)
    judged = admission.Admission(verdicts)
    if not aggregate:
        return None, judged
    import numpy as np

    total = None
    for w in sorted(survivors):
        m = survivors[w]
        y = np.fromfile(m.path, dtype="<u8", count=m.count, offset=m.offset).astype(np.uint64)
        if total is None:
            total = y
        else:
            sa.add_into(total, y)
    pair_terms = []
    for w in sorted(survivors):
        for k, x in enumerate(g.graph[w]):
            if x not in survivors:
                pair_terms.append((1 if w < x else -1, secrets_[(w, 1 + k)]))
    sums = sa.unmask(total, [secrets_[(w, 0)] for w in sorted(survivors)], pair_terms)
    out = work / f"{name}.safetensors"
    included = sorted([g.indices[w], survivors[w].samples] for w in survivors)
    metadata = {META_KEY: json.dumps({"included": included}, separators=(",", ":"))}
    excluded = judged.excluded_json()
    if excluded:
        metadata["din.excluded"] = excluded
    from din_cli.ml.aggregate import write_sums

    rounds = max(m.round for m in survivors.values())
    tasks = {m.task for m in survivors.values()}
    write_sums(
        sums,
        sum(m.samples for m in survivors.values()),
        out,
        base=base,
        round_=rounds,
        task=tasks.pop() if len(tasks) == 1 else "",
        metadata=metadata,
    )
    return ctx.add(out), judged


def unmask_status(ctx, task_id: int, round_: int) -> dict:
    """Where ``round_``'s unmasking stands: the cutoff, and per subgroup with updates, who revealed."""
    out: dict = {"cutoff": commit_cutoff(ctx, task_id, round_), "groups": {}}
    groups = sorted({u.group for u in ctx.din.updates_submitted(task_id, round_)})
    for group in groups:
        g = group_of(ctx, task_id, round_, group)
        out["groups"][str(group)] = {
            "updates": len(ctx.din.updates_submitted(task_id, round_, group)),
            "revealed": [g.members[k] for k in sorted(_announced(ctx, g))],
        }
    return out


def included(path) -> dict[int, int]:
    """``{participant index: FedAvg weight}`` a secagg aggregate was summed from ({} for another file)."""
    from din_cli.ml import tensorfile

    try:
        raw = tensorfile.read_header(path).metadata.get(META_KEY)
        rows = json.loads(raw) if raw else {}
        return {int(i): int(n) for i, n in rows.get("included", [])}
    except (DinError, ValueError, TypeError, AttributeError):
        return {}
