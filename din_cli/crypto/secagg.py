"""The cryptographic core of din's secure aggregation (SecAgg+: Bonawitz et al. 2017, Bell et al. 2020).

Each participant uploads ``y = v + self mask + signed pairwise masks (mod 2^64)``,
where ``v`` is its int64 fixed-point update times its sample count. Validators
see only ``y``, which is uniform mod 2^64 to anyone lacking the seeds; the sum
of the survivors' ``y`` loses every pairwise mask between two survivors, and
Shamir shares held by a participant's neighbours rebuild the rest: each
survivor's self seed and each dropout's pair seeds with survivors. Honest
holders reveal one of the two for a party, never both, so a late ``y`` stays
hidden; fewer than ``t`` colluding holders learn nothing about a seed. The
neighbour graph (degree ``k`` instead of ``n - 1``) keeps that true against a
minority of colluders with high probability over the random graph, not surely.
Pair seeds come from long-term X25519 keys, so HKDF's ``context`` (chain id,
task, round) makes every seed single-use: a seed rebuilt for a dropout in one
round must unmask nothing elsewhere. Arithmetic mod 2^64 is exact because
``|q| <= 2^30`` and at most ``MAX_TOTAL_SAMPLES = 2^32`` samples give
``|sum| <= 2^62 < 2^63``. Masks are ChaCha20 keystream (RFC 8439), Shamir
coefficients come from ``secrets``; everything is bytes or numpy (no pickle).
Authenticating shares (HPKE) and agreeing on who dropped out belong to the protocol.
"""

from __future__ import annotations

import hashlib
import secrets as _secrets
import sys

import numpy as np

from din_cli.errors import InputError, UsageError

PRIME = 2**521 - 1  # Shamir field (Mersenne prime); secrets are 32-byte values (< 2^256)
SHARE_LEN = 66  # a share's y-coordinate, big-endian: ceil(521 / 8)
SEED_LEN = 32
PAIR_SALT = b"din/secagg/v1 pair"
GRAPH_DOMAIN = b"din/secagg/v1 graph"
# ChaCha20 IV as cryptography takes it: 4-byte little-endian block counter (0), then a 12-byte
# nonce. Every seed keys exactly one stream, so the nonce is a fixed domain tag, not a counter.
NONCE = bytes(4) + b"din/secagg/1"
MAX_WORDS = 1 << 35  # 2^32 ChaCha20 blocks of 8 words: the 32-bit block counter never wraps
CHUNK_WORDS = 1 << 15  # 256 KiB per chunk: the chunk of y and its mask stay in L2 cache
_ZERO = bytes(CHUNK_WORDS * 8)  # keystream XOR zeros = keystream; read-only, shared


def neighbours(seed: bytes, n: int, degree: int) -> list[list[int]]:
    """The round's neighbour graph over positions ``0..n-1``, each list sorted ascending.

    The complete graph when ``n - 1 <= degree``; else a circulant (Harary) graph of even
    ``degree``: positions sit on a ring in the order of a permutation drawn with
    ``PermutationStream(sha256(GRAPH_DOMAIN || seed))`` and each links to ``degree / 2`` ring
    neighbours on either side. Hashing the seed first keeps this permutation independent of
    any other one din draws from the same round seed.
    """
    seed = bytes(seed)
    if len(seed) != SEED_LEN:
        raise UsageError(f"the graph seed is {len(seed)} bytes, not 32", "pass the round's seed")
    if n < 0:
        raise UsageError(f"a subgroup of {n} positions", "pass the subgroup's size")
    if n - 1 <= degree:
        return [[j for j in range(n) if j != i] for i in range(n)]
    if degree < 2 or degree % 2:
        raise UsageError(
            f"neighbour degree {degree} must be even and at least 2", "use e.g. 2 * ceil(log2 n)"
        )
    from din_cli.protocol.contribution import PermutationStream

    ring = PermutationStream(hashlib.sha256(GRAPH_DOMAIN + seed).digest()).shuffle(list(range(n)))
    out: list[list[int]] = [[] for _ in range(n)]
    for i, node in enumerate(ring):
        for k in range(1, degree // 2 + 1):  # 2k <= degree < n - 1: all distinct
            out[node] += (ring[(i + k) % n], ring[(i - k) % n])
    return [sorted(links) for links in out]


def threshold(degree_used: int, fraction_millionths: int) -> int:
    """``ceil(degree_used * fraction / 10^6)``, clamped to ``1..degree_used``."""
    if degree_used < 1:
        raise UsageError(
            f"a dealer with {degree_used} share holders", "secure aggregation needs 2+ participants"
        )
    if not 0 < fraction_millionths <= 1_000_000:
        raise UsageError(
            f"threshold fraction {fraction_millionths} millionths is outside 1..1000000",
            "give a fraction in (0, 1] in millionths",
        )
    t = -(-degree_used * fraction_millionths // 1_000_000)
    return min(max(t, 1), degree_used)


def pair_seed(private: bytes, peer_public: bytes, context: bytes, a: int, b: int) -> bytes:
    """The 32-byte mask seed shared by positions ``a != b``: HKDF-SHA256 over X25519(private, peer).

    ``salt = PAIR_SALT``, ``info = context || min(a, b) || max(a, b)`` (4 bytes each, big-endian).
    """
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    from din_cli.crypto.hpke import _load_private, _load_public

    if a == b or not (0 <= a < 1 << 32 and 0 <= b < 1 << 32):
        raise UsageError(f"positions {a} and {b} do not make a pair", "pass two distinct positions")
    try:
        shared = _load_private(private).exchange(_load_public(peer_public))
    except ValueError:  # cryptography refuses an all-zero shared secret
        raise InputError(
            f"public key {bytes(peer_public).hex()} is a low-order X25519 point: no secret pair seed",
            "use the participant's real HPKE public key",
        ) from None
    info = bytes(context) + min(a, b).to_bytes(4, "big") + max(a, b).to_bytes(4, "big")
    return HKDF(hashes.SHA256(), SEED_LEN, PAIR_SALT, info).derive(shared)


def split(secret: bytes, t: int, xs: list[int]) -> list[bytes]:
    """Shamir ``t``-of-``len(xs)`` shares of a 32-byte secret; ``SHARE_LEN``-byte y values, in xs order."""
    secret = bytes(secret)
    if len(secret) != SEED_LEN:
        raise InputError(f"a secret of {len(secret)} bytes, not 32", "share 32-byte seeds")
    if not 1 <= t <= len(xs):
        raise UsageError(f"threshold {t} for {len(xs)} holders", "pick 1 <= t <= holders")
    _check_xs(xs)
    coeffs = [int.from_bytes(secret, "big")] + [_secrets.randbelow(PRIME) for _ in range(t - 1)]
    shares = []
    for x in xs:
        y = 0
        for c in reversed(coeffs):
            y = (y * x + c) % PRIME
        shares.append(y.to_bytes(SHARE_LEN, "big"))
    return shares


def combine(points: list[tuple[int, bytes]]) -> bytes:
    """Lagrange interpolation at 0 of ``(x, share)`` points; the 32-byte secret."""
    if not points:
        raise InputError("no shares to combine", "collect t shares")
    xs = [x for x, _ in points]
    _check_xs(xs)
    ys = []
    for x, share in points:
        if len(share) != SHARE_LEN or int.from_bytes(share, "big") >= PRIME:
            raise InputError(f"the share for x={x} is malformed", "ask its holder again")
        ys.append(int.from_bytes(share, "big"))
    secret = 0
    for i, (xi, yi) in enumerate(zip(xs, ys, strict=True)):
        num = den = 1
        for j, xj in enumerate(xs):
            if j != i:
                num, den = num * xj % PRIME, den * (xj - xi) % PRIME
        secret = (secret + yi * num * pow(den, -1, PRIME)) % PRIME
    if secret >> (8 * SEED_LEN):
        raise InputError(
            "the shares interpolate to no 32-byte secret: some are wrong",
            "drop the shares whose holders' messages did not verify",
        )
    return secret.to_bytes(SEED_LEN, "big")


def _check_xs(xs: list[int]) -> None:
    if len(set(xs)) != len(xs):
        raise InputError("shares repeat an x-coordinate", "give each holder's share once")
    if any(not 1 <= x < PRIME for x in xs):
        raise InputError("share x-coordinates must be >= 1", "use holder position + 1")


def _stream(seed: bytes):
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

    seed = bytes(seed)
    if len(seed) != SEED_LEN:
        raise InputError(f"a mask seed of {len(seed)} bytes, not 32", "seeds are 32 bytes")
    return Cipher(algorithms.ChaCha20(seed, NONCE), None).encryptor()


def _fill(enc, out: np.ndarray) -> None:
    """Write the next ``len(out)`` words of ``enc``'s keystream into ``out`` (<= CHUNK_WORDS)."""
    enc.update_into(memoryview(_ZERO)[: out.size * 8], out.view(np.uint8))
    if sys.byteorder == "big":  # the words are little-endian on every machine
        out.byteswap(inplace=True)


def _words(a: np.ndarray, name: str) -> np.ndarray:
    if a.dtype != np.uint64 or not a.flags.c_contiguous or not a.flags.writeable:
        raise InputError(f"{name} must be a writable contiguous uint64 array", "see secagg's API")
    return a.reshape(-1)


def expand(seed: bytes, count: int, out: np.ndarray | None = None) -> np.ndarray:
    """``count`` uint64 words of ChaCha20 keystream keyed by ``seed`` (IV ``NONCE``), little-endian.

    Writes into ``out[:count]`` when given (uint64, contiguous) and returns that view.
    """
    if not 0 <= count <= MAX_WORDS:
        raise InputError(f"{count} mask words", f"masks hold 0..{MAX_WORDS} words")
    enc = _stream(seed)
    if out is None:
        out = np.empty(count, np.uint64)
    elif _words(out, "out").size < count:
        raise InputError(f"out holds {out.size} words, not {count}", "pass a larger buffer")
    dst = out.reshape(-1)[:count]
    for off in range(0, count, CHUNK_WORDS):
        _fill(enc, dst[off : off + CHUNK_WORDS])
    return dst


def _apply(y: np.ndarray, terms: list[tuple[int, bytes]]) -> None:
    """``y += sum(sign * expand(seed))`` mod 2^64, in place, one chunk of ``y`` at a time."""
    if y.size > MAX_WORDS:
        raise InputError(f"{y.size} weights", f"secure aggregation masks at most {MAX_WORDS}")
    streams = []
    for sign, seed in terms:
        if sign not in (1, -1):
            raise InputError(f"mask sign {sign}", "signs are +1 or -1")
        streams.append((np.add if sign == 1 else np.subtract, _stream(seed)))
    buf = np.empty(min(CHUNK_WORDS, y.size), np.uint64)
    for off in range(0, y.size, CHUNK_WORDS):
        part = y[off : off + CHUNK_WORDS]
        mask_part = buf[: part.size]
        for op, enc in streams:
            _fill(enc, mask_part)
            op(part, mask_part, out=part)


def mask(values: np.ndarray, me: int, self_seed: bytes, pair_seeds: dict[int, bytes]) -> np.ndarray:
    """``y = values + expand(self_seed) + sum(+-expand(pair seed))`` mod 2^64, as a new uint64 array.

    The pair seed with peer ``p`` is added when ``me < p`` and subtracted otherwise, so it
    cancels in the sum of ``me``'s and ``p``'s ``y``.
    """
    if values.dtype != np.int64:
        raise InputError(f"values are {values.dtype}, not int64", "mask the fixed-point update")
    if me in pair_seeds:
        raise UsageError(f"position {me} has a pair seed with itself", "drop it")
    y = np.ascontiguousarray(values).view(np.uint64).copy()  # two's complement, mod 2^64
    terms = [(1, self_seed)] + [(1 if me < p else -1, pair_seeds[p]) for p in sorted(pair_seeds)]
    _apply(y.reshape(-1), terms)
    return y


def unmask(
    total: np.ndarray, self_seeds: list[bytes], pair_terms: list[tuple[int, bytes]]
) -> np.ndarray:
    """The int64 sum of the survivors' values from ``total``, the sum of their ``y``.

    Subtracts every self seed's mask and ``sign * expand(seed)`` for each ``(sign, seed)`` in
    ``pair_terms`` (the sign the survivor applied). Works IN PLACE on ``total`` (uint64) and
    returns its int64 view.
    """
    flat = _words(total, "total")
    _apply(flat, [(-1, s) for s in self_seeds] + [(-sign, s) for sign, s in pair_terms])
    return total.view(np.int64)


def add_into(total: np.ndarray, y: np.ndarray) -> None:
    """``total += y`` mod 2^64, in place (both uint64 of one shape)."""
    _words(total, "total")
    if y.dtype != np.uint64 or y.shape != total.shape:
        raise InputError(
            f"a masked update of {y.dtype} {y.shape}, not uint64 {total.shape}",
            "every participant masks the same weights",
        )
    np.add(total, y, out=total)


if __name__ == "__main__":  # throughput: python -m din_cli.crypto.secagg
    import time

    n_weights, peers = 1_000_000, 10
    seeds = [_secrets.token_bytes(SEED_LEN) for _ in range(peers + 1)]
    out = np.empty(n_weights, np.uint64)
    t0 = time.perf_counter()
    for _ in range(20):
        expand(seeds[0], n_weights, out)
    dt = (time.perf_counter() - t0) / 20
    print(f"expand: {n_weights * 8 / dt / 1e9:.2f} GB/s ({dt * 1e3:.1f} ms per 1M words)")
    values = np.arange(n_weights, dtype=np.int64)
    pairs = dict(zip([p for p in range(peers + 1) if p != 5], seeds[1:], strict=True))
    t0 = time.perf_counter()
    for _ in range(5):
        mask(values, 5, seeds[0], pairs)
    dt = (time.perf_counter() - t0) / 5
    rate = (peers + 1) * n_weights * 8 / dt / 1e9
    print(f"mask 1M weights, {peers} peers: {dt * 1e3:.0f} ms ({rate:.2f} GB/s of mask)")
