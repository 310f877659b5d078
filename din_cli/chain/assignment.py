"""Subgroup assignment: who trains, aggregates and evaluates together in a round.

A pure function of (seed, index), computed identically here and in
``din_cli/chain/contracts/Assignment.sol`` (which checks one index in O(1)):

* the permutation key of a population is ``keccak256(abi.encode(seed, population))``
  with population 0 for participants and 1 for validators;
* an index in ``[0, n)`` is moved by a 4-round balanced Feistel network on ``2h``-bit
  values (``h >= 1`` the smallest with ``4**h >= n``); the round function is the
  low ``h`` bits of ``keccak256(abi.encode(key, round, right))``; values ``>= n``
  are re-encrypted (cycle-walking) until they fall inside the domain;
* participants: ``G = ceil(n / subgroup_size)`` subgroups; the participant at
  position ``p`` is in subgroup ``p * G // n`` (consecutive, balanced blocks);
* validators: ``per = min(validators_per_subgroup, n_validators // G)`` per
  subgroup; the validator at position ``q`` serves subgroup ``q // per`` in slot
  ``q % per`` when ``q < G * per`` and sits the round out otherwise.

The seed of a round is ``keccak256(abi.encode(source, task, round))`` (round 0:
the evaluation). For round 1 ``source`` is the hash of the block that started the
round; for later rounds and the evaluation it is the task's entropy, the XOR of
``keccak256(salt, validator)`` over every aggregate salt revealed so far (see
README, "Subgroups").

Example:
    >>> groups = participant_groups(bytes(32), n=5, groups=group_count(5, 2))
    >>> sorted(i for g in groups for i in g)
    [0, 1, 2, 3, 4]
"""

from __future__ import annotations

import functools

PARTICIPANTS = 0
VALIDATORS = 1
ROUNDS = 4


def keccak(data: bytes) -> bytes:
    """Keccak-256 (Ethereum's, not SHA3-256) of ``data``."""
    from eth_hash.auto import keccak as _keccak

    return _keccak(data)


def _word(value: int | bytes) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        if len(value) != 32:
            raise ValueError(f"expected 32 bytes, got {len(value)}")
        return bytes(value)
    return int(value).to_bytes(32, "big")


def population_key(seed: bytes, population: int) -> bytes:
    """The permutation key of ``population`` (PARTICIPANTS or VALIDATORS) under ``seed``."""
    return keccak(_word(seed) + _word(population))


def round_seed(source: int | bytes, task_id: int, round_: int) -> bytes:
    """The seed the contract fixes for ``round_`` of ``task_id`` from ``source`` (a block hash or
    the task's entropy)."""
    return keccak(_word(source) + _word(task_id) + _word(round_))


def _half_bits(n: int) -> int:
    h = 1
    while (1 << (2 * h)) < n:
        h += 1
    return h


def _walk(key: bytes, index: int, n: int) -> tuple[int, int]:
    """(position of ``index``, Feistel passes it took: 1 plus the cycle walk's re-encryptions)."""
    if not 0 <= index < n:
        raise ValueError(f"index {index} outside [0, {n})")
    h = _half_bits(n)
    mask = (1 << h) - 1
    k = _word(key)
    x, passes = index, 0
    while True:
        passes += 1
        left, right = x >> h, x & mask
        for i in range(ROUNDS):
            f = int.from_bytes(keccak(k + _word(i) + _word(right)), "big") & mask
            left, right = right, left ^ f
        x = (left << h) | right
        if x < n:
            return x, passes


def permute(key: bytes, index: int, n: int) -> int:
    """Position of ``index`` in the keyed permutation of ``[0, n)``."""
    return _walk(key, index, n)[0]


def feistel_passes(key: bytes, index: int, n: int) -> int:
    """How many Feistel passes the contract's ``permute`` runs for ``index`` (its gas grows with
    them: the number is geometric, ``4**h / n`` on average, at most a few for most indices)."""
    return _walk(key, index, n)[1]


def permutation(key: bytes, n: int) -> list[int]:
    """``order[p]`` = the index at position ``p`` (the inverse of :func:`permute`); a fresh list.

    Computed once per (key, n) in a process: every reader of a round's subgroups asks for the
    same one, and 10,000 indices take most of a second."""
    return list(_permutation(bytes(key), int(n)))


@functools.lru_cache(maxsize=32)
def _permutation(key: bytes, n: int) -> tuple[int, ...]:
    order = [0] * n
    for i in range(n):
        order[permute(key, i, n)] = i
    return tuple(order)


def group_count(n: int, subgroup_size: int) -> int:
    """Number of participant subgroups: ``ceil(n / subgroup_size)``."""
    if subgroup_size <= 0:
        raise ValueError("subgroup size must be positive")
    return (n + subgroup_size - 1) // subgroup_size


def per_group(n_validators: int, groups: int, validators_per_subgroup: int) -> int:
    """Validators serving each subgroup: ``min(k, n_validators // groups)``."""
    return min(validators_per_subgroup, n_validators // groups) if groups else 0


def group_start(group: int, n: int, groups: int) -> int:
    """First position of subgroup ``group``: ``ceil(group * n / groups)``."""
    return (group * n + groups - 1) // groups


def group_of_position(pos: int, n: int, groups: int) -> int:
    return pos * groups // n


def participant_group(seed: bytes, index: int, n: int, groups: int) -> tuple[int, int]:
    """``(subgroup, offset in it)`` of participant ``index``."""
    pos = permute(population_key(seed, PARTICIPANTS), index, n)
    group = group_of_position(pos, n, groups)
    return group, pos - group_start(group, n, groups)


def groups_of(seed: bytes, n: int, groups: int) -> tuple[int, ...]:
    """The subgroup of every participant index (``participant_group(...)[0]`` for all of them at
    once, from the permutation computed once per process)."""
    return _groups_of(bytes(seed), int(n), int(groups))


@functools.lru_cache(maxsize=32)
def _groups_of(seed: bytes, n: int, groups: int) -> tuple[int, ...]:
    out = [0] * n
    for g, members in enumerate(participant_groups(seed, n, groups)):
        for i in members:
            out[i] = g
    return tuple(out)


def validator_slot(
    seed: bytes, index: int, n_validators: int, groups: int, per: int
) -> tuple[int, int] | None:
    """``(subgroup, slot)`` of validator ``index``, or None when it sits this round out."""
    pos = permute(population_key(seed, VALIDATORS), index, n_validators)
    if per <= 0 or pos >= groups * per:
        return None
    return pos // per, pos % per


def participant_groups(seed: bytes, n: int, groups: int) -> list[list[int]]:
    """Participant indices of every subgroup, in position order (the score vector order)."""
    order = permutation(population_key(seed, PARTICIPANTS), n)
    return [order[group_start(g, n, groups) : group_start(g + 1, n, groups)] for g in range(groups)]


def validator_groups(seed: bytes, n_validators: int, groups: int, per: int) -> list[list[int]]:
    """Validator indices of every subgroup, in slot order."""
    order = permutation(population_key(seed, VALIDATORS), n_validators)
    return [order[g * per : (g + 1) * per] for g in range(groups)]
