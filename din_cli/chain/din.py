"""Typed wrapper over the DIN contracts: what the commands call to act on a task.

``deploy_all`` deploys DinToken, ValidatorRegistry, DinPayouts (a library DinTasks links),
DinTasks and DinDisputes and returns the
deployment dict (what ``$DIN_HOME/deployment.json`` holds). ``Din(chain,
deployment)`` then offers one method per contract operation; each takes the
acting ``account`` (an eth_account LocalAccount) first, sends one transaction
(two where an ERC-20 approval is needed) through ``Chain.send`` and returns a
plain value. Reverts surface as ``TransactionReverted`` with the contract's
reason. CIDs are raw bytes here (binary CIDs); text <-> bytes lives in protocol/.

Example:
    chain = connect("memory")
    dep = deploy_all(chain, chain.dev_account(), min_stake=100 * 10**18)
    din = Din(chain, dep)
    task = din.create_task(owner, genesis_cid=cid, arch="mlp", deposit=1000 * 10**18)
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from din_cli.chain import assignment, settlement
from din_cli.errors import AlreadyDone, InputError, NotFoundError, TransactionReverted, UsageError
from din_cli.ml.evaluate import METRICS  # a task's metric is its index here (TaskParams.metric)
from din_cli.protocol.contribution import EXACT_MAX

# How evaluation validators score participants (TaskParams.scoring is the index):
# contribution scores (``protocol.contribution``) summed over the rounds, or "update",
# each participant's latest update scored on its own.
SCORINGS = ("gtg", "exact", "loo", "update")

TOKEN = "DinToken"
REGISTRY = "ValidatorRegistry"
TASKS = "DinTasks"
PAYOUTS = "DinPayouts"  # linked library of DinTasks
DISPUTES = "DinDisputes"
GOVERNOR = "DinGovernor"
GRANTS = "DinGrants"

DAY = 24 * 3600
# The network's economy as deployed (``deploy_all(economy=...)`` overrides any of them):
# staking (commission bound and notice: None = the unstake delay), the emission schedule
# (epoch k emits epoch_emission * (1 - decay_bps/1e4)^k: 100,000 DIN a day halving about
# every 693 days, 100 M DIN in all), governance (credit-vote periods in seconds, quorum in
# votes, the proposal threshold in credits, the deposit that earns an owner credits) and
# quadratic funding (the pool share a round matches with, the counted contribution cap).
ECONOMY = {
    "commission_notice": None,
    "max_commission_bps": 5000,
    "epoch_length": DAY,
    "epoch_emission": 100_000 * 10**18,
    "decay_bps": 10,
    "min_owner_deposit": 100 * 10**18,
    "voting_period": 3 * DAY,
    "timelock_delay": 2 * DAY,
    "grace_period": 14 * DAY,
    "quorum_votes": 10,
    "proposal_threshold": 100,
    "round_share_bps": 5000,
    "contribution_cap": 1000 * 10**18,
}


def schedule_limit(epoch_emission: int, decay_bps: int) -> int:
    """Everything an emission schedule can ever release: epoch_emission * 1e4 / decay_bps."""
    return int(epoch_emission) * 10_000 // int(decay_bps)


#: DinDisputes states, by number.
DISPUTE_STATES = {1: "filed", 2: "drawn", 3: "upheld", 4: "dismissed", 5: "undecided", 6: "void"}

#: Phase numbers of DinTasks, by name.
PHASES = {
    1: "joining",
    2: "training",
    3: "aggregation-commit",
    4: "aggregation-reveal",
    5: "global-model",
    6: "test-set",
    7: "score-commit",
    8: "score-reveal",
    9: "settling",
    10: "settled",
    11: "abandoned",
    12: "disputed",
}
PHASE_NUMBERS = {name: number for number, name in PHASES.items()}
#: Order of TaskParams.durations.
DURATION_NAMES = (
    "join",
    "train",
    "aggregation_commit",
    "aggregation_reveal",
    "global_model",
    "test_set",
    "score_commit",
    "score_reveal",
    "settle",
)
DEFAULT_DURATIONS = {
    "join": 3600,
    "train": 3600,
    "aggregation_commit": 1800,
    "aggregation_reveal": 1800,
    "global_model": 1800,
    "test_set": 3600,
    "score_commit": 1800,
    "score_reveal": 1800,
    "settle": 3600,
}
EVAL_ROUND = 0
#: Who can read participants' updates (TaskParams.privacy): everyone, the validators who must
#: (crypto.seal), or nobody: secure aggregation opens only subgroup sums (protocol.secagg).
PRIVACY_MODES = ("open", "sealed", "secagg")
#: secagg's default Shamir threshold: 2/3 of a participant's neighbours, in millionths (ruleParam).
SECAGG_THRESHOLD = 666667
#: Default per-participant sample cap (FedAvg weight) of a task.
DEFAULT_MAX_SAMPLES = 2**16
TOKEN_UNIT = 10**18


#: Dispute committee size (odd): scripts/dispute_odds.py gives the odds a wrong result survives it.
DISPUTE_COMMITTEE = 21


def deploy_all(
    chain,
    deployer,
    *,
    min_stake: int = 100 * TOKEN_UNIT,
    unstake_delay: int = 7 * 24 * 3600,
    initial_supply: int = 10**9 * TOKEN_UNIT,
    committee: int = DISPUTE_COMMITTEE,
    economy: dict | None = None,
) -> dict:
    """Deploy DinToken, ValidatorRegistry, DinPayouts, DinTasks, DinDisputes, DinGovernor and
    DinGrants; the deployment dict.

    Keys: ``chain_id``, ``deployer``, ``block`` (first block to scan for
    events), the contracts' addresses by name, ``min_stake``, ``unstake_delay``,
    ``committee`` (dispute committee size: odd, 3..255) and ``economy`` (the
    staking, emission, governance and grants parameters: ``ECONOMY`` updated
    with ``economy``). The token's cap is the initial supply plus everything
    the emission schedule can ever release.
    """
    if min_stake <= 0:
        raise UsageError("minimum stake must be positive", "give --min-stake above 0")
    if committee % 2 == 0 or not 3 <= committee <= 255:
        raise UsageError(
            f"dispute committee size {committee} is not odd in 3..255", "give an odd size"
        )
    eco = dict(ECONOMY)
    unknown = set(economy or ()) - set(eco)
    if unknown:
        raise UsageError(f"unknown economy parameter {sorted(unknown)[0]}", f"use {', '.join(eco)}")
    eco.update(economy or {})
    if eco["commission_notice"] is None:
        eco["commission_notice"] = int(unstake_delay)
    block = chain.head() if hasattr(chain, "head") else 0
    cap = int(initial_supply) + schedule_limit(eco["epoch_emission"], eco["decay_bps"])
    token = chain.deploy(deployer, TOKEN, int(initial_supply), cap)
    registry = chain.deploy(
        deployer,
        REGISTRY,
        token,
        int(min_stake),
        int(unstake_delay),
        int(eco["commission_notice"]),
        int(eco["max_commission_bps"]),
        int(eco["epoch_length"]),
        int(eco["epoch_emission"]),
        int(eco["decay_bps"]),
    )
    # a library: settlement and claims run in it on DinTasks' storage
    payouts = chain.deploy(deployer, PAYOUTS)
    # DinTasks names DinDisputes (immutable): the address of the deployer's next contract creation
    import rlp
    from eth_utils import to_checksum_address
    from eth_utils.crypto import keccak

    nonce = chain.w3.eth.get_transaction_count(deployer.address) + 1
    predicted = to_checksum_address(
        keccak(rlp.encode([bytes.fromhex(deployer.address[2:]), nonce]))[12:]
    )
    tasks = chain.deploy(deployer, TASKS, registry, predicted, libraries={PAYOUTS: payouts})
    disputes = chain.deploy(
        deployer, DISPUTES, tasks, int(committee)
    )  # reverts unless at `predicted`
    governor = chain.deploy(
        deployer,
        GOVERNOR,
        tasks,
        int(eco["min_owner_deposit"]),
        int(eco["voting_period"]),
        int(eco["timelock_delay"]),
        int(eco["grace_period"]),
        int(eco["quorum_votes"]),
        int(eco["proposal_threshold"]),
    )
    grants = chain.deploy(
        deployer,
        GRANTS,
        token,
        governor,
        int(eco["round_share_bps"]),
        int(eco["contribution_cap"]),
    )
    reg = chain.contract(REGISTRY, registry)
    # once each; nobody can change them after
    chain.send(deployer, reg.functions.initialize(tasks, disputes, governor, grants))
    chain.send(deployer, chain.contract(TOKEN, token).functions.setMinter(registry))
    return {
        "chain_id": chain.chain_id,
        "deployer": deployer.address,
        "block": block,
        TOKEN: token,
        REGISTRY: registry,
        PAYOUTS: payouts,
        TASKS: tasks,
        DISPUTES: disputes,
        GOVERNOR: governor,
        GRANTS: grants,
        "economy": eco,
        "min_stake": int(min_stake),
        "unstake_delay": int(unstake_delay),
        "committee": int(committee),
    }


# ---------------------------------------------------------------- records


@dataclass(frozen=True)
class ValidatorInfo:
    address: str
    stake: int
    unlock_at: int  # 0 while staked
    hpke_key: bytes
    active: bool
    bonded: int = 0  # stake bonded to tasks not yet settled or abandoned (withdraw needs 0)


@dataclass(frozen=True)
class TaskInfo:
    task_id: int
    owner: str
    arch: str
    deposit: int
    subgroup_size: int
    validators_per_subgroup: int
    max_rounds: int
    fee_bps: int
    slash_amount: int
    max_samples: int  # cap on one participant's FedAvg weight (samples)
    metric: str  # what evaluation validators score with (METRICS)
    aggregation: str  # how each subgroup aggregates (ml.robust.RULES)
    aggregation_param: str  # its parameter as a decimal ("" for mean and median)
    scoring: str  # how evaluation validators score participants (SCORINGS)
    dp: Any  # ml.privacy.DP every participant's update gets, or None
    durations: dict
    phase: str
    round: int
    last_round: int
    deadline: int  # unix time; 2**64-1 when the phase has none
    participants: int
    validators: int
    groups: int
    per_group: int
    acted: int
    committed: int
    contributors: int
    settled_groups: int
    good_validators: int
    total_score: int
    model_digest: bytes
    proposed_digest: bytes
    test_set_digest: bytes
    test_set_hash: bytes = b""  # sha256 of the plaintext test set, committed at creation
    genesis_cid: bytes = b""
    privacy_mode: str = "open"  # PRIVACY_MODES: who can read participants' updates
    secagg_threshold: int = 0  # secagg: Shamir threshold, millionths of a participant's neighbours

    def as_dict(self) -> dict:
        out = asdict(self)
        for k in (
            "model_digest",
            "proposed_digest",
            "test_set_digest",
            "test_set_hash",
            "genesis_cid",
        ):
            out[k] = "0x" + out[k].hex()
        out["dp"] = self.dp.as_dict() if self.dp else None
        out["privacy"] = self.privacy
        return out

    @property
    def privacy(self) -> str:
        """What protects participants' updates, in words (``din task status``)."""
        if self.privacy_mode == "sealed":
            head = "sealed: each update is readable only by its subgroup's validators, the evaluation validators and a dispute committee"
        elif self.privacy_mode == "secagg":
            head = (
                "secagg: updates are masked, nobody reads one; only each subgroup's sum is opened"
                f" (threshold {self.secagg_threshold / 1e6:.6g} of a participant's neighbours)"
            )
        else:
            head = "open"
        if self.dp is None:
            return head + (": updates are public as trained" if head == "open" else "")
        return f"{head}, differentially private: {self.dp.describe()}"


@dataclass(frozen=True)
class RoundInfo:
    task_id: int
    round: int  # 0 = the evaluation assignment
    seed: bytes | None  # None: round 1's seed is drawn by the next transaction (no groups yet)
    model_cid: bytes  # the global model this round trains from
    participants: int
    validators: int
    groups: int
    per_group: int
    participant_groups: list = field(default_factory=list)  # indices per subgroup, position order
    validator_groups: list = field(default_factory=list)  # indices per subgroup, slot order


@dataclass(frozen=True)
class Membership:
    role: str  # "participant" | "validator" | "owner" | "none"
    index: int | None
    group: int | None  # None: not assigned this round
    slot: int | None  # offset in the subgroup (participant) or slot (validator)


@dataclass(frozen=True)
class Update:
    participant: str
    index: int
    round: int
    cid: bytes
    group: int | None = None


def _keccak(data: bytes) -> bytes:
    return assignment.keccak(data)


def cid_digest(cid: bytes) -> bytes:
    """The on-chain digest of a binary CID: keccak256(cid)."""
    return _keccak(bytes(cid))


def encode_result(cid: bytes, admitted: int | None = 0) -> bytes:
    """A subgroup result as validators commit and reveal it: the aggregate's binary CID, then the
    32-byte big-endian bitmap of the subgroup positions whose update it admitted (bit k = position k).

    One digest binds both, so a majority agrees on the aggregate and on whom it
    admitted, and each participant can prove its admitted rounds (``prove_record``).
    ``admitted`` None: ``cid`` is a result too short to carry a bitmap, as revealed.
    """
    if admitted is None:
        return bytes(cid)
    if not 0 <= int(admitted) < 1 << 256:
        raise InputError(
            f"admitted bitmap {admitted} is out of range", "give at most 256 positions"
        )
    return _cid(cid) + int(admitted).to_bytes(32, "big")


def _vote(cid: bytes, admitted: int | None, scores: Sequence[int] | None) -> bytes:
    """A dispute committee member's vote: a subgroup result, or a packed score vector."""
    return encode_result(cid, admitted) if scores is None else pack_scores(scores)


def split_result(raw: bytes) -> tuple[bytes, int | None]:
    """``(CID, admitted bitmap)`` of a revealed result; a result too short to carry a bitmap
    (sent to the contract directly) is ``(raw, None)``: it matches no honest one, admits
    nobody, and ``encode_result`` gives its bytes back (so it can still be disputed)."""
    raw = bytes(raw)
    if len(raw) <= 32:
        return raw, None
    return raw[:-32], int.from_bytes(raw[-32:], "big")


def result_digest(cid: bytes, admitted: int = 0) -> bytes:
    """The on-chain digest of a subgroup result (what majorities, slashing and disputes compare)."""
    return _keccak(encode_result(cid, admitted))


def admitted_bitmap(positions) -> int:
    """The bitmap of subgroup ``positions`` (bit k = position k)."""
    out = 0
    for k in positions:
        if not 0 <= int(k) < 256:
            raise InputError(f"subgroup position {k} is out of range", "subgroups hold at most 256")
        out |= 1 << int(k)
    return out


def admitted_positions(bitmap: int | None) -> list[int]:
    """The subgroup positions set in ``bitmap`` (None: a result without one)."""
    return [k for k in range(256) if bitmap and bitmap >> k & 1]


def _require_drawn(rnd: RoundInfo) -> None:
    if rnd.seed is None:
        raise NotFoundError(
            f"task {rnd.task_id}'s round {rnd.round} subgroups are not drawn yet: they come from the"
            " hash of the block that started the round",
            "they are known after the next transaction (`din round advance`)",
        )


@functools.lru_cache(maxsize=1)
def task_layout() -> dict:
    """Storage layout of ``DinTasks.Task`` (from the artifact) that ``taskWords`` returns (read once;
    callers only read it)."""
    from din_cli.chain.client import load_artifact

    return load_artifact(TASKS)["structs"]["Task"]


def decode_struct(layout: dict, words: Sequence[bytes]) -> dict[str, int | bytes | list[int]]:
    """Decode storage ``words`` of a struct by its ``layout`` (``{slots, members}``, see the build
    script): ``bytesN`` members as bytes, addresses checksummed, arrays as lists of ints, every
    other member an int."""
    if len(words) < layout["slots"]:
        raise ValueError(f"struct needs {layout['slots']} storage words, got {len(words)}")

    def value(slot: int, offset: int, size: int) -> int:
        word = int.from_bytes(bytes(words[slot]), "big")
        return (word >> (8 * offset)) & ((1 << (8 * size)) - 1)

    out: dict[str, int | bytes | list[int]] = {}
    for m in layout["members"]:
        size, slot, offset = m["bytes"], m["slot"], m["offset"]
        if "length" in m:  # a static array packs 32 // size elements per word from a fresh slot
            per = 32 // size
            out[m["label"]] = [
                value(slot + k // per, (k % per) * size, size) for k in range(m["length"])
            ]
        elif m["type"].startswith("bytes"):
            out[m["label"]] = value(slot, offset, size).to_bytes(size, "big")
        elif m["type"] == "address":
            from eth_utils import to_checksum_address

            out[m["label"]] = to_checksum_address(value(slot, offset, size).to_bytes(20, "big"))
        else:
            out[m["label"]] = value(slot, offset, size)
    return out


def aggregate_commitment(cid: bytes, salt: bytes, sender: str) -> bytes:
    """``keccak256(cid ‖ salt ‖ sender)``: what ``commitAggregate`` stores."""
    return _keccak(bytes(cid) + _salt(salt) + bytes.fromhex(sender[2:]))


def encode_rule(name: str, *, clip_norm=None, trim=None) -> tuple[int, int]:
    """``(TaskParams.rule, TaskParams.ruleParam)`` of an aggregation rule (parameter in millionths)."""
    from decimal import Decimal

    from din_cli.ml.robust import RULES, make_rule

    make_rule(name, clip_norm=clip_norm, trim=trim)  # a one-line UsageError for a bad one
    flag, value = {
        "norm-bounded": ("--clip-norm", clip_norm),
        "trimmed-mean": ("--trim", trim),
    }.get(name, ("", None))
    if value is None:
        return RULES.index(name), 0
    micro = Decimal(str(value)) * 10**6
    if micro != micro.to_integral_value():
        raise UsageError(
            f"{flag} {value} has more than 6 decimals", "give at most 6: a task stores millionths"
        )
    return RULES.index(name), int(micro)


def encode_threshold(threshold, aggregation: str, scoring: str) -> int:
    """A secagg task's Shamir threshold in millionths (stored in ruleParam), checked."""
    from decimal import Decimal, InvalidOperation

    if aggregation != "mean":
        raise UsageError(
            f"secagg opens only subgroup sums, so --aggregation {aggregation} cannot run on it",
            "use --aggregation mean with --privacy secagg",
        )
    if scoring == "update":
        raise UsageError(
            "secagg cannot score one update alone: nobody can read one",
            "use --scoring gtg, exact or loo with --privacy secagg",
        )
    if threshold is None:
        return SECAGG_THRESHOLD
    try:
        micro = Decimal(str(threshold)) * 10**6
    except InvalidOperation:
        micro = Decimal(-1)
    if micro != micro.to_integral_value() or not 5 * 10**5 < micro <= 10**6:
        raise UsageError(
            f"secagg threshold {threshold} is not a fraction in (0.5, 1] with at most 6 decimals",
            "give e.g. --secagg-threshold 0.67: above half, so two disjoint sets of neighbours can never both unmask",
        )
    return int(micro)


def decode_rule(rule: int, param: int) -> tuple[str, str]:
    """``(rule name, parameter as a decimal string or "")`` of a task's stored rule."""
    from decimal import Decimal

    from din_cli.ml.robust import RULES

    name = RULES[int(rule)]
    if name not in ("norm-bounded", "trimmed-mean"):
        return name, ""
    return name, format((Decimal(int(param)) / 10**6).normalize(), "f")  # 2048, not 2.048E+3


def task_rule(info: TaskInfo):
    """The ``ml.robust.Rule`` every validator of the task aggregates its subgroup with."""
    from din_cli.ml.robust import make_rule

    p = info.aggregation_param or None
    if info.aggregation == "norm-bounded":
        return make_rule(info.aggregation, clip_norm=p)
    return make_rule(info.aggregation, trim=p if info.aggregation == "trimmed-mean" else None)


def pack_scores(scores: Sequence[int]) -> bytes:
    """A score vector as the contract takes it: one big-endian uint16 per score (basis points)."""
    out = bytearray()
    for s in scores:
        s = int(s)
        if not 0 <= s <= 10000:
            raise UsageError(f"score {s} is outside 0..10000 basis points", "give basis points")
        out += s.to_bytes(2, "big")
    return bytes(out)


def unpack_scores(packed: bytes) -> list[int]:
    """The scores of a packed vector (from ``ScoresRevealed`` or ``SubgroupSettled``)."""
    packed = bytes(packed)
    return [int.from_bytes(packed[i : i + 2], "big") for i in range(0, len(packed) - 1, 2)]


def scores_digest(scores: Sequence[int]) -> bytes:
    """``keccak256(packed scores)``: the digest ``revealScores`` and ``settle`` compare."""
    return _keccak(pack_scores(scores))


def scores_commitment(scores: Sequence[int], salt: bytes, sender: str) -> bytes:
    """``keccak256(keccak256(scores) ‖ salt ‖ sender)``: what ``commitScores`` stores."""
    return _keccak(scores_digest(scores) + _salt(salt) + bytes.fromhex(sender[2:]))


def derive_salt(account, task_id: int, round_: int, kind: str) -> bytes:
    """A salt only ``account`` can compute, so commit and reveal need no saved state."""
    key = bytes(account.key)
    return _keccak(b"din-salt" + key + _word(task_id) + _word(round_) + kind.encode())


def new_salt() -> bytes:
    return os.urandom(32)


def file_sha256(path) -> bytes:
    """sha256 of a file's bytes: what a task commits to as its test set (``test_set_hash``)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.digest()


def _word(n: int) -> bytes:
    return int(n).to_bytes(32, "big")


def _salt(salt: bytes) -> bytes:
    salt = bytes(salt)
    if len(salt) != 32:
        raise InputError(f"salt is {len(salt)} bytes", "give a 32-byte salt")
    return salt


def _arch32(arch: str | bytes) -> bytes:
    raw = arch.encode() if isinstance(arch, str) else bytes(arch)
    if len(raw) > 32:
        raise InputError(f"architecture id {arch!r} is longer than 32 bytes", "use a shorter id")
    return raw.ljust(32, b"\0")


def _hpke(key: bytes) -> bytes:
    key = bytes(key)
    if len(key) != 32:
        raise InputError(f"HPKE public key is {len(key)} bytes", "give a 32-byte X25519 public key")
    return key


def _cid(cid: bytes) -> bytes:
    if isinstance(cid, str):
        raise InputError("CID given as text to the chain layer", "convert it to binary first")
    cid = bytes(cid)
    if not cid:
        raise InputError("CID is empty", "give the binary CID")
    return cid


# ---------------------------------------------------------------- the wrapper


class Din:
    """The DIN contracts of one deployment on one chain."""

    def __init__(self, chain, deployment: dict):
        missing = [k for k in (TOKEN, REGISTRY, TASKS) if not deployment.get(k)]
        if missing:
            raise NotFoundError(
                f"deployment lacks {', '.join(missing)}", "run `din init` to deploy the contracts"
            )
        self.chain = chain
        self.deployment = deployment
        self.from_block = int(deployment.get("block", 0))
        self.token = chain.contract(TOKEN, deployment[TOKEN])
        self.registry = chain.contract(REGISTRY, deployment[REGISTRY])
        self.tasks = chain.contract(TASKS, deployment[TASKS])
        self.disputes = (
            chain.contract(DISPUTES, deployment[DISPUTES]) if deployment.get(DISPUTES) else None
        )

    # -- plumbing
    def _send(self, account, fn, **kw):
        return self.chain.send(account, fn, **kw)

    def _call(self, fn, sender: str | None = None):
        return self.chain.call(fn, sender=sender)

    def _events(self, receipt, contract, name: str) -> list:
        return list(contract.events[name]().process_receipt(receipt, errors=_discard()))

    def _logs(self, name: str, contract=None, **filters) -> list:
        return self.chain.logs(contract or self.tasks, name, from_block=self.from_block, **filters)

    def _ensure_allowance(self, account, spender: str, amount: int) -> None:
        have = self._call(self.token.functions.allowance(account.address, spender))
        if have < amount:
            self._send(account, self.token.functions.approve(spender, int(amount)))

    # -- token
    def balance(self, address: str) -> int:
        """DIN token balance of ``address`` (smallest unit)."""
        return int(self._call(self.token.functions.balanceOf(address)))

    def transfer(self, account, to: str, amount: int) -> None:
        self._send(account, self.token.functions.transfer(to, int(amount)))

    # -- registry
    def stake(self, account, amount: int, hpke_key: bytes) -> ValidatorInfo:
        """Approve and lock ``amount`` more DIN, setting the HPKE public key."""
        amount = int(amount)
        if amount:
            self._ensure_allowance(account, self.registry.address, amount)
        self._send(account, self.registry.functions.stake(amount, _hpke(hpke_key)))
        return self.validator_info(account.address)

    def unstake(self, account) -> int:
        """Ask to unstake; the time from which ``withdraw`` works."""
        receipt = self._send(account, self.registry.functions.requestUnstake())
        return int(self._events(receipt, self.registry, "UnstakeRequested")[0]["args"]["unlockAt"])

    def withdraw(self, account) -> int:
        """Withdraw the whole stake after the unstake delay; the amount."""
        receipt = self._send(account, self.registry.functions.withdraw())
        return int(self._events(receipt, self.registry, "Withdrawn")[0]["args"]["amount"])

    def validator_info(self, address: str) -> ValidatorInfo:
        stake, unlock_at, bonded, key = self._call(self.registry.functions.validators(address))
        active = self._call(self.registry.functions.isActive(address))
        return ValidatorInfo(
            address, int(stake), int(unlock_at), bytes(key), bool(active), int(bonded)
        )

    def min_stake(self) -> int:
        return int(self._call(self.registry.functions.minStake()))

    # -- task creation and joining
    def create_task(
        self,
        account,
        *,
        genesis_cid: bytes,
        arch: str,
        deposit: int,
        test_set_hash: bytes,
        subgroup_size: int = 10,
        validators_per_subgroup: int = 3,
        max_rounds: int = 1,
        fee_bps: int = 1000,
        slash_amount: int | None = None,
        max_samples: int = DEFAULT_MAX_SAMPLES,
        metric: str = "accuracy",
        aggregation: str = "mean",
        clip_norm: str | float | None = None,
        trim: str | float | None = None,
        scoring: str = "gtg",
        dp_clip: str | float | None = None,
        dp_noise: str | float | None = None,
        dp_delta: str | float | None = None,
        privacy_mode: str = "open",
        secagg_threshold: str | float | None = None,
        durations: dict | None = None,
    ) -> int:
        """Approve the deposit and create a task; its id.

        ``durations`` maps names of DURATION_NAMES to seconds (missing ones take
        DEFAULT_DURATIONS); ``slash_amount`` defaults to a tenth of the minimum stake.
        ``max_samples`` caps one participant's FedAvg weight: a declared sample
        count above it counts as ``max_samples``. ``test_set_hash`` is the sha256
        of the plaintext test set the owner will post (``file_sha256``). ``metric``
        (one of METRICS) is what every evaluation validator scores with;
        ``aggregation`` (one of ``ml.robust.RULES``, with ``clip_norm`` or
        ``trim``, at most 6 decimals) is how every subgroup aggregates;
        ``scoring`` (one of SCORINGS) how evaluation validators score participants;
        ``dp_clip``, ``dp_noise`` and ``dp_delta`` the differential privacy every
        participant's update gets (``ml.privacy``; none when omitted);
        ``privacy_mode`` (one of PRIVACY_MODES) who can read the updates;
        with ``secagg``, ``secagg_threshold`` (a fraction in (0.5, 1], at most 6
        decimals; default 2/3) is the share of a participant's neighbours that
        must reveal shares to unmask it. Secagg aggregates by the weighted mean
        and scores by contribution (it cannot see one update).
        """
        from din_cli.ml import privacy

        rule, rule_param = encode_rule(aggregation, clip_norm=clip_norm, trim=trim)
        dp = privacy.encode(dp_clip, dp_noise, dp_delta)
        if metric not in METRICS:
            raise UsageError(
                f"metric {metric!r} is not one of {', '.join(METRICS)}", "pick one of those"
            )
        if privacy_mode not in PRIVACY_MODES:
            raise UsageError(
                f"privacy {privacy_mode!r} is not one of {', '.join(PRIVACY_MODES)}",
                "pick one of those",
            )
        if scoring not in SCORINGS:
            raise UsageError(
                f"scoring {scoring!r} is not one of {', '.join(SCORINGS)}", "pick one of those"
            )
        if privacy_mode == "secagg":
            rule_param = encode_threshold(secagg_threshold, aggregation, scoring)
        elif secagg_threshold is not None:
            raise UsageError(
                "--secagg-threshold applies to secagg tasks only",
                "add --privacy secagg, or drop it",
            )
        if scoring == "exact" and int(subgroup_size) > EXACT_MAX:
            raise UsageError(
                f"exact Shapley over subgroups of {subgroup_size} costs 2^{subgroup_size} evaluations",
                f"use --subgroup-size {EXACT_MAX} or less, or --scoring gtg",
            )
        test_set_hash = bytes(test_set_hash)
        if len(test_set_hash) != 32 or not any(test_set_hash):
            raise InputError(
                "the test set hash must be 32 non-zero bytes",
                "give the sha256 of the test set file (`din model publish --test-set FILE`)",
            )
        if not 0 <= int(max_samples) < 2**32:  # 0 reaches the contract, which refuses it
            raise UsageError(
                f"max samples {max_samples} out of range",
                "give --max-samples between 1 and 2**32-1",
            )
        spans = {**DEFAULT_DURATIONS, **(durations or {})}
        unknown = set(spans) - set(DURATION_NAMES)
        if unknown:
            raise UsageError(
                f"unknown phase durations: {', '.join(sorted(unknown))}",
                f"use {', '.join(DURATION_NAMES)}",
            )
        if slash_amount is None:
            slash_amount = self.min_stake() // 10
        params = (
            _cid(genesis_cid),
            _arch32(arch),
            int(deposit),
            int(subgroup_size),
            int(validators_per_subgroup),
            int(max_rounds),
            int(fee_bps),
            int(slash_amount),
            int(max_samples),
            METRICS.index(metric),
            rule,
            rule_param,
            SCORINGS.index(scoring),
            *dp,
            PRIVACY_MODES.index(privacy_mode),
            test_set_hash,
            [int(spans[name]) for name in DURATION_NAMES],
        )
        self._ensure_allowance(account, self.tasks.address, int(deposit))
        receipt = self._send(account, self.tasks.functions.createTask(params))
        return int(self._events(receipt, self.tasks, "TaskCreated")[0]["args"]["taskId"])

    def join_task(self, account, task_id: int, hpke_key: bytes) -> int:
        """Opt in to ``task_id`` as a participant; the participant index."""
        receipt = self._send(account, self.tasks.functions.joinTask(int(task_id), _hpke(hpke_key)))
        return int(self._events(receipt, self.tasks, "ParticipantJoined")[0]["args"]["index"])

    def register_validator_for_task(self, account, task_id: int) -> int:
        """Register a staked validator for ``task_id``; its validator index."""
        receipt = self._send(account, self.tasks.functions.registerValidator(int(task_id)))
        return int(self._events(receipt, self.tasks, "ValidatorRegistered")[0]["args"]["index"])

    # -- phases
    def start_round(self, account, task_id: int) -> TaskInfo:
        """Start round 1 (owner, before the join deadline) or move past the join deadline."""
        self._send(account, self.tasks.functions.startRound(int(task_id)))
        return self.task_info(task_id)

    def advance(self, account, task_id: int) -> TaskInfo:
        """Move ``task_id`` past expired deadlines (anyone)."""
        self._send(account, self.tasks.functions.advance(int(task_id)))
        return self.task_info(task_id)

    def signal_final_round(self, account, task_id: int) -> int:
        """Make the round in progress the last one (owner); that round's number."""
        receipt = self._send(account, self.tasks.functions.signalFinalRound(int(task_id)))
        return int(self._events(receipt, self.tasks, "FinalRoundSignalled")[0]["args"]["round"])

    # -- training and aggregation
    def submit_update(self, account, task_id: int, cid: bytes) -> dict:
        """Submit this round's update CID; the receipt."""
        return self._send(account, self.tasks.functions.submitUpdate(int(task_id), _cid(cid)))

    def commit_aggregate(
        self, account, task_id: int, cid: bytes, salt: bytes | None = None, admitted: int = 0
    ) -> bytes:
        """Commit to the subgroup result (aggregate ``cid``, ``admitted`` bitmap); the salt to reveal with."""
        if salt is None:
            salt = derive_salt(account, task_id, self.task_info(task_id).round, "aggregate")
        commitment = aggregate_commitment(encode_result(cid, admitted), salt, account.address)
        self._send(account, self.tasks.functions.commitAggregate(int(task_id), commitment))
        return salt

    def reveal_aggregate(
        self, account, task_id: int, cid: bytes, salt: bytes | None = None, admitted: int = 0
    ) -> dict:
        """Reveal the committed result; the receipt."""
        if salt is None:
            salt = derive_salt(account, task_id, self.task_info(task_id).round, "aggregate")
        result = encode_result(cid, admitted)
        return self._send(
            account, self.tasks.functions.revealAggregate(int(task_id), result, _salt(salt))
        )

    def slash_aggregator(self, account, task_id: int, round_: int, validator: str) -> int:
        """Slash ``validator`` for ``round_`` (did not reveal or revealed a minority CID); the amount."""
        member = self.subgroup_of(task_id, validator, round_)
        accepted = self.accepted_results(task_id, round_)
        majority = result_digest(*accepted[member.group]) if member.group in accepted else bytes(32)
        receipt = self._send(
            account,
            self.tasks.functions.slashAggregator(int(task_id), int(round_), validator, majority),
        )
        return int(self._events(receipt, self.tasks, "ValidatorSlashed")[0]["args"]["amount"])

    def slashable_aggregators(self, task_id: int, round_: int) -> list[str]:
        """Validators of ``round_`` that did not reveal or revealed a minority aggregate.

        Every round's record stays on chain until the task is settled, so any past
        round's liars are slashable; only validators already removed are skipped, and in a
        round a dispute's replay discarded only the disputed subgroup counts, without the
        validators that had committed when a dispute filed in its reveal phase cut it short.
        A minority becomes slashable once the task settles (until then a dispute may
        overturn the majority), or at once where a dispute committee decided the CID.
        By convention a subgroup without updates aggregates to the round's starting
        global model, so its validators can reveal and are not slashed.
        """
        info = self.round_info(task_id, round_)
        accepted = self.accepted_results(task_id, round_)
        phase = self.task_info(task_id).phase
        if phase == "disputed":  # frozen: slashAggregator reverts until the dispute is resolved
            return []
        # a replay discarded it (perhaps before anyone could reveal): only a subgroup whose
        # result a dispute committee decided is slashable in it
        only = (
            set(self.overturned(task_id, round_))
            if int(round_) in self.discarded_rounds(task_id)
            else None
        )
        if PHASE_NUMBERS.get(phase, 0) < PHASE_NUMBERS["settling"]:
            accepted = self.overturned(
                task_id, round_
            )  # disputes open: only committee decisions count

        revealed = {
            e["args"]["validator"]: split_result(e["args"]["cid"])
            for e in self._logs("AggregateRevealed", taskId=int(task_id), round=int(round_))
        }
        slashed = {
            e["args"]["validator"] for e in self._logs("ValidatorSlashed", taskId=int(task_id))
        }
        slashed |= {
            e["args"]["validator"] for e in self._logs("ValidatorPenalised", taskId=int(task_id))
        }
        addresses = self.validators(task_id)
        out = []
        for g, indices in enumerate(info.validator_groups):
            if only is not None and g not in only:
                continue
            for i in indices:
                who = addresses[i]
                if who in slashed:
                    continue
                if who not in revealed:
                    if (
                        only is not None
                        and self.disputes is not None
                        and self._call(
                            self.disputes.functions.revealCutShort(int(task_id), int(round_), who)
                        )
                    ):
                        continue  # a dispute filed in its reveal phase cut its reveal short
                    out.append(who)
                elif g in accepted and revealed[who] != accepted[g]:
                    out.append(who)
        return out

    def post_global_model(self, account, task_id: int, cid: bytes) -> dict:
        """Propose the round's global model (owner)."""
        return self._send(account, self.tasks.functions.postGlobalModel(int(task_id), _cid(cid)))

    def attest_global(self, account, task_id: int, cid: bytes) -> bool:
        """Attest the proposed global model; True when this vote made it accepted.

        Raises AlreadyDone when a majority already accepted ``cid`` (the round moved on).
        """
        info = self.task_info(task_id)
        if info.phase != "global-model" and info.model_digest == cid_digest(_cid(cid)):
            raise AlreadyDone(f"task {task_id}: global model already accepted", "nothing to do")
        receipt = self._send(account, self.tasks.functions.attestGlobal(int(task_id), _cid(cid)))
        return bool(self._events(receipt, self.tasks, "GlobalModelAccepted"))

    # -- evaluation
    def post_test_set(
        self, account, task_id: int, cid: bytes, wrapped_keys: dict[str, bytes]
    ) -> dict:
        """Publish the encrypted test set CID and the key wrapped per validator (owner).

        The contract takes exactly the evaluation validators in slot order; ``wrapped_keys``
        must hold one for each of them (others are left out).
        """
        try:
            rnd = self.round_info(task_id, EVAL_ROUND)
        except NotFoundError:  # no evaluation yet: the contract says which phase it is in
            rnd = None
        addresses = self.validators(task_id)
        validators = (
            [addresses[i] for group in rnd.validator_groups for i in group]
            if rnd
            else list(wrapped_keys)
        )
        missing = [v for v in validators if not wrapped_keys.get(v)]
        if missing:
            raise InputError(
                f"K is not wrapped for evaluation validator(s) {', '.join(missing)}",
                "wrap it for every validator assigned to the evaluation",
            )
        keys = [bytes(wrapped_keys[v]) for v in validators]
        return self._send(
            account, self.tasks.functions.postTestSet(int(task_id), _cid(cid), validators, keys)
        )

    def test_set(self, task_id: int) -> tuple[bytes, dict[str, bytes]] | None:
        """``(cid, {validator: wrapped key})`` of the posted test set, or None."""
        logs = self._logs("TestSetPosted", taskId=int(task_id))
        if not logs:
            return None
        args = logs[-1]["args"]
        return bytes(args["cid"]), {
            v: bytes(k) for v, k in zip(args["validators"], args["wrappedKeys"], strict=True)
        }

    def commit_scores(
        self, account, task_id: int, scores: Sequence[int], salt: bytes | None = None
    ) -> bytes:
        """Commit to a score vector (basis points, subgroup position order); the salt."""
        if salt is None:
            salt = derive_salt(account, task_id, EVAL_ROUND, "scores")
        commitment = scores_commitment(scores, salt, account.address)
        self._send(account, self.tasks.functions.commitScores(int(task_id), commitment))
        return salt

    def reveal_scores(
        self, account, task_id: int, scores: Sequence[int], salt: bytes | None = None
    ) -> dict:
        """Reveal the committed score vector."""
        if salt is None:
            salt = derive_salt(account, task_id, EVAL_ROUND, "scores")
        return self._send(
            account,
            self.tasks.functions.revealScores(int(task_id), pack_scores(scores), _salt(salt)),
        )

    def settlement_inputs(self, task_id: int, group: int) -> tuple[list[int], list[str], list[int]]:
        """``(participant indices, validator addresses, scores)`` that settle ``group``, from events.

        ``scores`` is the vector a dispute committee decided for the subgroup, else the one a
        strict majority of the subgroup's validators not removed from the task revealed, or []
        when none has one (then every participant of the subgroup scores 0) or when the
        majority rejected the test set (revealed [] itself).
        """
        participants, chosen, winner = self.score_majority(task_id, group)
        decided = self.decided_scores(task_id, group)
        return participants, chosen, list(winner or []) if decided is None else decided

    def score_majority(self, task_id: int, group: int) -> tuple[list[int], list[str], list | None]:
        """``(participant indices, validators in slot order, majority vector or None)`` of
        evaluation subgroup ``group`` (its live validators' strict majority)."""
        info = self.round_info(task_id, EVAL_ROUND)
        participants = info.participant_groups[group]
        validators = info.validator_groups[group]
        addresses = self.validators(task_id)
        revealed = self.scores_revealed(task_id)
        chosen = [addresses[i] for i in validators]
        live = [not self.removed(task_id, a) for a in chosen]
        winner, _ = settlement.majority(
            [revealed.get(a) if ok else None for a, ok in zip(chosen, live, strict=True)], sum(live)
        )
        return list(participants), chosen, winner

    def settle_opens(self, task_id: int, group: int) -> int:
        """The chain time from which evaluation subgroup ``group`` can settle (0: at once).

        At once when a dispute decided its vector or when every live validator revealed the
        majority's vector (or, without a majority, none revealed); a subgroup whose validators
        disagree settles in the second half of the settling phase, so the outvoted (or, with
        no majority, either side) can file a dispute.
        """
        if self.decided_scores(task_id, group) is not None:
            return 0
        _, chosen, winner = self.score_majority(task_id, group)
        revealed = self.scores_revealed(task_id)
        if all(self.removed(task_id, a) or revealed.get(a) == winner for a in chosen):
            return 0
        info = self.task_info(task_id)
        return info.deadline - info.durations[DURATION_NAMES[8]] // 2

    def decided_scores(self, task_id: int, group: int) -> list[int] | None:
        """The score vector a dispute committee decided for evaluation subgroup ``group`` where
        it overturned the majority's, else None."""
        for d in self.disputes_of(task_id):
            if d["state"] == "upheld" and d["round"] == EVAL_ROUND and d["group"] == int(group):
                for e in self.dispute_logs("DisputeVoteRevealed", disputeId=d["dispute_id"]):
                    if cid_digest(bytes(e["args"]["cid"])) == d["decided_digest"]:
                        return unpack_scores(e["args"]["cid"])
        return None

    def file_score_dispute(self, account, task_id: int, group: int, scores: Sequence[int]) -> int:
        """Dispute evaluation subgroup ``group``'s majority score vector, claiming ``scores`` ([]:
        the test set should be rejected); the dispute id. Escrows the task's slash amount.

        With no strict majority (the subgroup would score 0) the named vector is the first
        revealed one that is not ``scores``, else the zeros it would settle with.
        """
        participants, validators, winner = self.score_majority(task_id, group)
        if winner is None:
            revealed = self.scores_revealed(task_id)
            others = [
                revealed[a] for a in validators if revealed.get(a) not in (None, list(scores))
            ]
            winner = others[0] if others else [0] * len(participants)
        bond = self.task_info(task_id).slash_amount
        self._ensure_allowance(account, self.disputes.address, bond)
        fn = self.disputes.functions.fileScores(
            int(task_id), int(group), pack_scores(winner), pack_scores(scores), validators
        )
        receipt = self._send(account, fn)
        return int(self._events(receipt, self.disputes, "DisputeFiled")[0]["args"]["disputeId"])

    def settle(self, account, task_id: int, groups: Iterable[int] | None = None) -> list[int]:
        """Settle the given subgroups (default: every unsettled one); the subgroups settled."""
        info = self.task_info(task_id)
        done = {int(e["args"]["group"]) for e in self._logs("SubgroupSettled", taskId=int(task_id))}
        todo = [g for g in (range(info.groups) if groups is None else groups) if g not in done]
        for g in todo:
            participants, validators, scores = self.settlement_inputs(task_id, g)
            self._send(
                account,
                self.tasks.functions.settle(
                    int(task_id), int(g), participants, validators, pack_scores(scores)
                ),
            )
        return todo

    def settled_scores(self, task_id: int, address: str) -> list[int]:
        """The accepted scores of the settled subgroup ``address`` was evaluated in ([] if none)."""
        parts = self.participants(task_id)
        if address not in parts:
            return []
        index = parts.index(address)
        for e in self._logs("SubgroupSettled", taskId=int(task_id)):
            if index in e["args"]["participants"]:
                return unpack_scores(e["args"]["scores"])
        return []

    def settlement_results(self, task_id: int) -> dict[str, int]:
        """``{participant address: accepted score}`` of every settled subgroup that scored."""
        parts = self.participants(task_id)
        out = {}
        for e in self._logs("SubgroupSettled", taskId=int(task_id)):
            if not e["args"]["scores"]:  # the subgroup rejected the test set: no scores
                continue
            for i, m in zip(
                e["args"]["participants"], unpack_scores(e["args"]["scores"]), strict=True
            ):
                out[parts[i]] = int(m)
        return out

    def rejected_subgroups(self, task_id: int) -> list[int]:
        """Settled evaluation subgroups whose strict majority rejected the test set.

        Any one makes the contract split the participants' pool among the contributors.
        """
        return sorted(
            int(e["args"]["group"])
            for e in self._logs("SubgroupSettled", taskId=int(task_id))
            if e["args"]["participants"] and not e["args"]["scores"]
        )

    def admitted_rounds(self, task_id: int, address: str) -> dict[int, bytes]:
        """``{round: accepted result}`` of every finished round whose accepted subgroup result
        admitted ``address``'s update (what ``prove_record`` proves)."""
        from eth_utils import to_checksum_address

        parts = self.participants(task_id)
        address = to_checksum_address(address)
        if address not in parts:
            return {}
        index = parts.index(address)
        info = self.task_info(task_id)
        over = (
            PHASE_NUMBERS["global-model"]
            < PHASE_NUMBERS.get(info.phase, 0)
            < PHASE_NUMBERS["disputed"]
        )
        last = info.round if over else info.round - 1
        discarded = set(self.discarded_rounds(task_id))  # a replay's discarded rounds prove nothing
        out = {}
        for r in range(1, last + 1):
            rnd = self.round_info(task_id, r)
            if rnd.seed is None or r in discarded:
                continue
            group, pos = assignment.participant_group(rnd.seed, index, rnd.participants, rnd.groups)
            result = self.accepted_results(task_id, r).get(group)
            if result is not None and result[1] and result[1] >> pos & 1:
                out[r] = encode_result(*result)
        return out

    def prove_record(self, account, task_id: int) -> dict:
        """Prove ``account``'s accepted training record (participants that submitted, once, while
        the task settles, until its settling deadline); ``{"rounds": [...], "gas": ...}``.

        When the test set is withheld or rejected, or every score is 0, the participants' pool
        is split by these records.
        """
        rounds = self.admitted_rounds(task_id, account.address)
        if not rounds:
            raise NotFoundError(
                f"{account.address} has no admitted update in task {task_id}",
                "only rounds whose accepted result admitted your update count",
            )
        fn = self.tasks.functions.proveRecord(int(task_id), list(rounds), list(rounds.values()))
        receipt = self._send(account, fn)
        return {"rounds": list(rounds), "gas": int(receipt["gasUsed"])}

    def records(self, task_id: int) -> dict[str, int]:
        """``{participant: rounds}`` proven with ``proveRecord``, in proof order."""
        return {
            e["args"]["participant"]: int(e["args"]["records"])
            for e in self._logs("RecordProven", taskId=int(task_id))
        }

    def claimable(self, task_id: int, address: str) -> int:
        """What ``address`` can claim from ``task_id`` now."""
        from eth_utils import to_checksum_address

        address = to_checksum_address(address)
        scores = self.settled_scores(task_id, address)
        return int(
            self._call(self.tasks.functions.claimable(int(task_id), address, pack_scores(scores)))
        )

    def claim(self, account, task_id: int) -> int:
        """Pull what ``task_id`` owes ``account`` (and release its bond); the amount."""
        return self.claim_detail(account, task_id)[0]

    def claim_detail(self, account, task_id: int) -> tuple[int, int]:
        """``claim``, and the part of the amount that was a validator's fee: DinTasks pays that to
        the validator's pool in the registry (burn and public-goods shares, commission, delegators)."""
        scores = self.settled_scores(task_id, account.address)
        receipt = self._send(account, self.tasks.functions.claim(int(task_id), pack_scores(scores)))
        amount = sum(int(e["args"]["amount"]) for e in self._events(receipt, self.tasks, "Claimed"))
        fees = self._events(receipt, self.registry, "FeesNotified")
        return amount, sum(int(e["args"]["amount"]) for e in fees)

    def release(self, account, task_id: int, validator: str) -> None:
        """Release ``validator``'s bond in a settled or abandoned task (anyone)."""
        self._send(account, self.tasks.functions.release(int(task_id), validator))

    def removed(self, task_id: int, validator: str) -> bool:
        """Whether ``validator`` was slashed out of ``task_id`` (its votes no longer count)."""
        return bool(self._call(self.tasks.functions.validatorState(int(task_id), validator))[6] & 1)

    def mark_gone(self, account, task_id: int, validator: str) -> None:
        """Count removed ``validator``'s slot of the current round out of its subgroup's majority."""
        self._send(account, self.tasks.functions.markGone(int(task_id), validator))

    def gone_slots(self, task_id: int, round_: int) -> dict[str, int]:
        """``{validator: subgroup}`` of the slots counted out of ``round_`` by ``markGone``."""
        return {
            e["args"]["validator"]: int(e["args"]["group"])
            for e in self._logs("SlotGone", taskId=int(task_id), round=int(round_))
        }

    def bonded(self, task_id: int, validator: str) -> bool:
        """Whether ``validator`` still holds a bond in ``task_id``."""
        return bool(self._call(self.tasks.functions.validatorState(int(task_id), validator))[6] & 8)

    # -- disputes (DinDisputes)
    def file_dispute(
        self, account, task_id: int, round_: int, group: int, cid: bytes, admitted: int = 0
    ) -> int:
        """Dispute subgroup ``group``'s accepted result of ``round_``, claiming ``cid`` admitting
        ``admitted``; the dispute id.

        Escrows the task's slash amount (approved here) and freezes the task.
        """
        accepted = self.accepted_results(task_id, round_)
        if group not in accepted:
            raise NotFoundError(
                f"task {task_id} round {round_}: subgroup {group} has no accepted aggregate",
                "only an accepted (strict-majority) result can be disputed",
            )
        bond = self.task_info(task_id).slash_amount
        self._ensure_allowance(account, self.disputes.address, bond)
        fn = self.disputes.functions.file(
            int(task_id),
            int(round_),
            int(group),
            encode_result(*accepted[group]),
            encode_result(cid, admitted),
        )
        receipt = self._send(account, fn)
        return int(self._events(receipt, self.disputes, "DisputeFiled")[0]["args"]["disputeId"])

    def draw_committee(self, account, dispute_id: int) -> list[str]:
        """Draw the dispute's committee (a later block than the filing); its members."""
        receipt = self._send(account, self.disputes.functions.draw(int(dispute_id)))
        drawn = self._events(receipt, self.disputes, "CommitteeDrawn")
        return list(drawn[0]["args"]["committee"]) if drawn else []

    def dispute_commit(
        self,
        account,
        dispute_id: int,
        cid: bytes,
        salt: bytes | None = None,
        admitted: int = 0,
        *,
        scores: Sequence[int] | None = None,
    ) -> bytes:
        """Commit a committee member's result for the disputed subgroup (``scores`` instead, for an
        evaluation subgroup: ``cid`` is then ignored); the salt."""
        if salt is None:
            salt = derive_salt(account, dispute_id, 0, "dispute")
        commitment = aggregate_commitment(_vote(cid, admitted, scores), salt, account.address)
        self._send(account, self.disputes.functions.commit(int(dispute_id), commitment))
        return salt

    def dispute_reveal(
        self,
        account,
        dispute_id: int,
        cid: bytes,
        salt: bytes | None = None,
        admitted: int = 0,
        *,
        scores: Sequence[int] | None = None,
    ) -> dict:
        """Reveal the committed result (or ``scores``)."""
        if salt is None:
            salt = derive_salt(account, dispute_id, 0, "dispute")
        result = _vote(cid, admitted, scores)
        return self._send(
            account, self.disputes.functions.reveal(int(dispute_id), result, _salt(salt))
        )

    def resolve_dispute(self, account, dispute_id: int) -> dict:
        """Decide the dispute (anyone); ``dispute_info`` afterwards."""
        d = self.dispute_info(dispute_id)
        vals = self.members(d["task_id"], d["group"], d["round"])["validators"]
        self._send(account, self.disputes.functions.resolve(int(dispute_id), vals))
        return self.dispute_info(dispute_id)

    def dispute_info(self, dispute_id: int) -> dict:
        """A dispute as a dict (``state`` by name, digests as bytes, ``committee`` addresses)."""
        abi = next(f for f in self.disputes.abi if f.get("name") == "dispute")
        names = [c["name"] for c in abi["outputs"][0]["components"]]
        r = dict(
            zip(names, self._call(self.disputes.functions.dispute(int(dispute_id))), strict=True)
        )
        return {
            "dispute_id": int(dispute_id),
            "task_id": int(r["taskId"]),
            "filer": r["filer"],
            "round": int(r["round"]),
            "group": int(r["group"]),
            "state": DISPUTE_STATES.get(int(r["state"]), str(r["state"])),
            "size": int(r["size"]),
            "committed": int(r["committed"]),
            "revealed": int(r["revealed"]),
            "filed_block": int(r["filedBlock"]),
            "commit_end": int(r["commitEnd"]),
            "reveal_end": int(r["revealEnd"]),
            "bond": int(r["bond"]),
            "accepted_digest": bytes(r["accepted"]),
            "decided_digest": bytes(r["decided"]),
            "committee": list(r["committee"]),
        }

    def disputes_of(self, task_id: int) -> list[dict]:
        """Every dispute filed against ``task_id``, oldest first."""
        if self.disputes is None:
            return []
        logs = self.chain.logs(
            self.disputes, "DisputeFiled", from_block=self.from_block, taskId=int(task_id)
        )
        return [self.dispute_info(int(e["args"]["disputeId"])) for e in logs]

    def dispute_logs(self, name: str, **filters) -> list:
        """Raw decoded ``name`` events of DinDisputes (``disputeId=``/``taskId=`` filter them)."""
        if self.disputes is None:
            return []
        return self._logs(name, self.disputes, **filters)

    def grant_keys(self, account, task_id: int, cid: bytes) -> dict:
        """Announce a ``din/key-grant/v1`` document (its CID) for ``task_id``; the receipt."""
        return self._send(account, self.disputes.functions.grantKeys(int(task_id), _cid(cid)))

    def key_grants(self, task_id: int) -> list[tuple[str, bytes, int]]:
        """``(granter, grant CID, block number)`` of every key grant announced for ``task_id``."""
        if self.disputes is None:
            return []
        return [
            (e["args"]["granter"], bytes(e["args"]["cid"]), int(e["blockNumber"]))
            for e in self.dispute_logs("KeysGranted", taskId=int(task_id))
        ]

    def discarded_rounds(self, task_id: int) -> list[int]:
        """Rounds of ``task_id`` that upheld disputes discarded (each replays from the disputed
        round's starting model: rounds ``round .. newRound - 1``), ascending."""
        out: set[int] = set()
        for e in self.dispute_logs("DisputeResolved", taskId=int(task_id)):
            a = e["args"]
            if int(a["outcome"]) == 3:  # upheld
                out.update(range(int(a["round"]), int(a["newRound"])))
        return sorted(out)

    # -- reads
    def task_count(self) -> int:
        return int(self._call(self.tasks.functions.taskCount()))

    def task_info(self, task_id: int) -> TaskInfo:
        """Configuration and live state of ``task_id`` (NotFoundError if there is none)."""
        missing = NotFoundError(f"task {task_id} does not exist", "list tasks with `din task list`")
        if not 1 <= int(task_id) < 2**256:
            raise missing
        from din_cli.ml import privacy

        try:  # one call: taskWords reverts for an id no task has (no taskCount round trip)
            words = self._call(self.tasks.functions.taskWords(int(task_id)))
        except TransactionReverted as e:
            if "no such task" in e.reason:
                raise missing from None
            raise
        r = decode_struct(task_layout(), words)
        created = self._logs("TaskCreated", taskId=int(task_id))
        secagg = PRIVACY_MODES[int(r["privacy"])] == "secagg"
        aggregation, aggregation_param = decode_rule(r["rule"], 0 if secagg else r["ruleParam"])
        return TaskInfo(
            task_id=int(task_id),
            owner=r["owner"],
            arch=bytes(r["arch"]).rstrip(b"\0").decode(errors="replace"),
            deposit=int(r["deposit"]),
            subgroup_size=int(r["subgroupSize"]),
            validators_per_subgroup=int(r["validatorsPerSubgroup"]),
            max_rounds=int(r["maxRounds"]),
            fee_bps=int(r["feeBps"]),
            slash_amount=int(r["slashAmount"]),
            max_samples=int(r["maxSamples"]),
            metric=METRICS[int(r["metric"])],
            aggregation=aggregation,
            aggregation_param=aggregation_param,
            scoring=SCORINGS[int(r["scoring"])],
            dp=privacy.decode(r["dpClip"], r["dpNoise"], r["dpDelta"]),
            durations=dict(zip(DURATION_NAMES, (int(d) for d in r["durations"]), strict=True)),
            phase=PHASES.get(int(r["phase"]), str(r["phase"])),
            round=int(r["round"]),
            last_round=int(r["lastRound"]),
            deadline=int(r["deadline"]),
            participants=int(r["participants"]),
            validators=int(r["validators"]),
            groups=int(r["groups"]),
            per_group=int(r["perGroup"]),
            acted=int(r["acted"]),
            committed=int(r["committed"]),
            contributors=int(r["contributors"]),
            settled_groups=int(r["settledGroups"]),
            good_validators=int(r["goodValidators"]),
            total_score=int(r["totalScore"]),
            model_digest=bytes(r["model"]),
            proposed_digest=bytes(r["proposed"]),
            test_set_digest=bytes(r["testSet"]),
            test_set_hash=bytes(r["testSetHash"]),
            genesis_cid=bytes(created[0]["args"]["genesisCid"]) if created else b"",
            privacy_mode=PRIVACY_MODES[int(r["privacy"])],
            secagg_threshold=int(r["ruleParam"]) if secagg else 0,
        )

    def participants(self, task_id: int) -> list[str]:
        """Participant addresses by index (joins beyond the cap applied at round 1 sit out)."""
        logs = self._logs("ParticipantJoined", taskId=int(task_id))
        capped = self._logs("ParticipantsCapped", taskId=int(task_id))
        joined = [e["args"]["participant"] for e in sorted(logs, key=lambda e: e["args"]["index"])]
        return joined[: int(capped[0]["args"]["participants"])] if capped else joined

    def participant_keys(self, task_id: int) -> dict[str, bytes]:
        return {
            e["args"]["participant"]: bytes(e["args"]["hpkeKey"])
            for e in self._logs("ParticipantJoined", taskId=int(task_id))
        }

    def validators(self, task_id: int) -> list[str]:
        """Validator addresses by index."""
        logs = self._logs("ValidatorRegistered", taskId=int(task_id))
        return [e["args"]["validator"] for e in sorted(logs, key=lambda e: e["args"]["index"])]

    def validator_keys(self, task_id: int) -> dict[str, bytes]:
        """``{validator: HPKE public key}`` of the task's validators (from the registry)."""
        return {v: self.validator_info(v).hpke_key for v in self.validators(task_id)}

    def model_cid(self, task_id: int, digest: bytes | None = None) -> bytes:
        """The CID bytes of the current global model (or of the model with ``digest``)."""
        if digest is None:
            digest = self.task_info(task_id).model_digest
        candidates = [
            bytes(e["args"]["genesisCid"]) for e in self._logs("TaskCreated", taskId=int(task_id))
        ]
        candidates += [
            bytes(e["args"]["cid"]) for e in self._logs("GlobalModelAccepted", taskId=int(task_id))
        ]
        for cid in reversed(candidates):
            if cid_digest(cid) == bytes(digest):
                return cid
        raise NotFoundError(
            f"no CID with digest 0x{bytes(digest).hex()} in task {task_id}'s events"
        )

    def round_seed(self, task_id: int, round_: int) -> bytes:
        """The seed of ``round_`` (0: evaluation); 32 zero bytes when it is not drawn yet.

        Round 1's is drawn from the hash of the block that started the round, by the first
        transaction after that block; until then the contract holds ``PENDING | block`` and this
        computes the same value from that block's hash (zero bytes while it is the latest block,
        or once the next transaction could no longer read it, 256 blocks on: the contract then
        pends it again on that transaction's block, so wait for one, e.g. `din round advance`).
        """
        seed = bytes(self._call(self.tasks.functions.roundSeed(int(task_id), int(round_))))
        value = int.from_bytes(seed, "big")
        if value >> 64 != 1 << 191:  # drawn (a hash); pending is 1 << 255 | start block
            return seed
        start = value & (2**64 - 1)
        latest = int(self.chain.w3.eth.block_number)
        if not start < latest < start + 256:  # the next transaction, in latest + 1, can read it
            return bytes(32)
        block_hash = bytes(self.chain.w3.eth.get_block(start)["hash"])
        return assignment.round_seed(block_hash, task_id, 1)

    def round_info(self, task_id: int, round_: int | None = None) -> RoundInfo:
        """Seed, starting model and subgroups of ``round_`` (default: the current; 0: evaluation)."""
        info = self.task_info(task_id)
        if round_ is None:
            if info.round == 0:
                raise NotFoundError(
                    f"task {task_id} has not started its first round yet",
                    "wait for the join phase to end (`din task status`)",
                )
            round_ = info.round
        seed = self.round_seed(task_id, round_)
        if seed == bytes(32) and round_ == 1 and info.round >= 1:
            seed = None  # started, seed drawn from the starting block by the next transaction
        elif seed == bytes(32):
            raise NotFoundError(
                f"task {task_id} has no seed for {'the evaluation' if round_ == 0 else f'round {round_}'} yet",
                "wait for the phase to start (`din task status`)",
            )
        if round_ == EVAL_ROUND:
            model = info.model_digest
        else:
            started = self._logs("RoundStarted", taskId=int(task_id), round=int(round_))
            model = bytes(started[-1]["args"]["model"]) if started else info.model_digest
        return RoundInfo(
            task_id=int(task_id),
            round=int(round_),
            seed=seed,
            model_cid=self.model_cid(task_id, model),
            participants=info.participants,
            validators=info.validators,
            groups=info.groups,
            per_group=info.per_group,
            participant_groups=[]
            if seed is None
            else assignment.participant_groups(seed, info.participants, info.groups),
            validator_groups=[]
            if seed is None
            else assignment.validator_groups(seed, info.validators, info.groups, info.per_group),
        )

    def subgroup_of(self, task_id: int, address: str, round_: int | None = None) -> Membership:
        """Role, index and subgroup of ``address`` in ``round_`` (default: current; 0: evaluation)."""
        from eth_utils import to_checksum_address

        address = to_checksum_address(address)
        info = self.task_info(task_id)
        rnd = self.round_info(task_id, round_)
        parts = self.participants(task_id)
        vals = self.validators(task_id)
        if rnd.seed is None:  # subgroups not drawn yet
            if address in parts:
                return Membership("participant", parts.index(address), None, None)
            if address in vals:
                return Membership("validator", vals.index(address), None, None)
        elif address in parts:
            i = parts.index(address)
            g, off = assignment.participant_group(rnd.seed, i, rnd.participants, rnd.groups)
            return Membership("participant", i, g, off)
        if address in vals:
            i = vals.index(address)
            slot = assignment.validator_slot(rnd.seed, i, rnd.validators, rnd.groups, rnd.per_group)
            return Membership("validator", i, slot[0] if slot else None, slot[1] if slot else None)
        if address == info.owner:
            return Membership("owner", None, None, None)
        return Membership("none", None, None, None)

    def members(self, task_id: int, group: int, round_: int | None = None) -> dict[str, list[str]]:
        """``{"participants": [...], "validators": [...]}`` of subgroup ``group`` (position/slot order)."""
        rnd = self.round_info(task_id, round_)
        _require_drawn(rnd)
        if not 0 <= group < rnd.groups:
            raise NotFoundError(
                f"task {task_id} has no subgroup {group}", f"subgroups are 0..{rnd.groups - 1}"
            )
        parts = self.participants(task_id)
        vals = self.validators(task_id)
        return {
            "participants": [parts[i] for i in rnd.participant_groups[group]],
            "validators": [vals[i] for i in rnd.validator_groups[group]],
        }

    def updates_submitted(
        self, task_id: int, round_: int | None = None, group: int | None = None
    ) -> list[Update]:
        """Updates submitted in ``round_`` (default: current), optionally of one subgroup only."""
        rnd = self.round_info(task_id, round_)
        out = []
        of = None
        for e in self._logs("UpdateSubmitted", taskId=int(task_id), round=rnd.round):
            _require_drawn(rnd)
            a = e["args"]
            if of is None:
                of = assignment.groups_of(rnd.seed, rnd.participants, rnd.groups)
            g = of[int(a["index"])]
            if group is None or g == group:
                out.append(Update(a["participant"], int(a["index"]), rnd.round, bytes(a["cid"]), g))
        return out

    def accepted_aggregates(self, task_id: int, round_: int | None = None) -> dict[int, bytes]:
        """``{subgroup: aggregate CID}`` accepted in ``round_`` (default: current)."""
        return {g: cid for g, (cid, _) in self.accepted_results(task_id, round_).items()}

    def accepted_results(self, task_id: int, round_: int | None = None) -> dict[int, tuple]:
        """``{subgroup: (aggregate CID, admitted bitmap)}`` accepted in ``round_`` (default: current)."""
        if round_ is None:
            round_ = self.task_info(task_id).round
        accepted = {
            int(e["args"]["group"]): split_result(e["args"]["cid"])
            for e in self._logs("SubgroupAccepted", taskId=int(task_id), round=int(round_))
        }
        accepted.update(self.overturned(task_id, round_))
        return accepted

    def overturned(self, task_id: int, round_: int) -> dict[int, tuple]:
        """``{subgroup: (CID, admitted bitmap)}`` a dispute committee decided for ``round_`` where it
        overturned the accepted result."""
        out = {}
        for d in self.disputes_of(task_id):
            if d["state"] == "upheld" and d["round"] == int(round_):
                logs = self.chain.logs(
                    self.disputes,
                    "DisputeVoteRevealed",
                    from_block=self.from_block,
                    disputeId=d["dispute_id"],
                )
                for e in logs:
                    if cid_digest(bytes(e["args"]["cid"])) == d["decided_digest"]:
                        out[d["group"]] = split_result(e["args"]["cid"])
                        break
        return out

    def scores_revealed(self, task_id: int) -> dict[str, list[int]]:
        return {
            e["args"]["validator"]: unpack_scores(e["args"]["scores"])
            for e in self._logs("ScoresRevealed", taskId=int(task_id))
        }

    def events(self, task_id: int, name: str, **filters) -> list:
        """Raw decoded ``name`` events of ``task_id`` (for status views); ``filters`` match indexed arguments."""
        return self._logs(name, taskId=int(task_id), **filters)


def _discard():
    from web3.logs import DISCARD

    return DISCARD


def as_plain(value: Any) -> Any:
    """Dataclasses, bytes and tuples as JSON-ready values (bytes as 0x hex)."""
    if hasattr(value, "__dataclass_fields__"):
        value = asdict(value)
    if isinstance(value, dict):
        return {k: as_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_plain(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    return value
