"""The round-seeded resample of the model owner's test pool.

Every validator must score on identical rows, on any machine, so rows are
drawn from the round seed with a portable counter-mode generator (SHA-256 of
``domain || seed || counter``) rather than a library RNG whose stream could
change between versions. Each draw is unbiased: 64-bit values at or above the
largest multiple of ``pool_size`` are rejected.

Per DESIGN.md: each round draws half the pool with replacement; the final
evaluation uses the whole pool in order, without resampling.
"""

from __future__ import annotations

import hashlib

from din_cli.errors import UsageError

DOMAIN = b"din/test-sample/v1"


def _stream(seed: bytes):
    counter = 0
    while True:
        block = hashlib.sha256(DOMAIN + seed + counter.to_bytes(8, "big")).digest()
        for off in range(0, 32, 8):
            yield int.from_bytes(block[off : off + 8], "big")
        counter += 1


def resample(seed: bytes | int, pool_size: int, count: int | None = None) -> list[int]:
    """Row indices drawn with replacement from ``range(pool_size)``.

    ``seed`` is the round's on-chain seed (32 bytes, or an int); ``count``
    defaults to half the pool, rounded up.
    """
    if pool_size <= 0:
        raise UsageError("the test pool is empty", "split a dataset with a test fraction above 0")
    if isinstance(seed, int):
        seed = seed.to_bytes(32, "big")
    if count is None:
        count = (pool_size + 1) // 2
    limit = (1 << 64) - ((1 << 64) % pool_size)
    out: list[int] = []
    for value in _stream(bytes(seed)):
        if value < limit:
            out.append(value % pool_size)
            if len(out) == count:
                return out
    raise AssertionError("unreachable")


def evaluation_rows(seed: bytes | int | None, pool_size: int, *, final: bool) -> list[int]:
    """The rows a validator scores: the whole pool for the final evaluation, else a resample."""
    if final or seed is None:
        return list(range(pool_size))
    return resample(seed, pool_size)
