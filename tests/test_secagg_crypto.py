"""secagg's cryptographic core: the neighbour graph, pair seeds, Shamir sharing and masking round trips."""

from __future__ import annotations

import hashlib
import itertools
import random

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from din_cli.crypto import hpke, secagg
from din_cli.errors import InputError, UsageError

SEED = bytes(range(32))
OTHER = bytes(range(1, 33))
CONTEXT = b"chain 31337 task 7 round 2"
# an X25519 point of order 8 (RFC 7748 test material): every exchange with it gives zeros
LOW_ORDER = bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")


# -- neighbours ---------------------------------------------------------------


@pytest.mark.parametrize("n,degree", [(1, 4), (2, 4), (5, 4), (5, 7), (1, 0)])
def test_small_subgroups_get_the_complete_graph(n, degree):
    assert secagg.neighbours(SEED, n, degree) == [[j for j in range(n) if j != i] for i in range(n)]


def test_circulant_graph_is_regular_symmetric_and_seeded():
    graph = secagg.neighbours(SEED, 50, 10)
    assert len(graph) == 50
    for i, links in enumerate(graph):
        assert len(links) == 10 and links == sorted(links) and i not in links
        assert all(i in graph[j] for j in links)
    assert secagg.neighbours(SEED, 50, 10) == graph
    assert secagg.neighbours(OTHER, 50, 10) != graph
    assert graph[0] != [1, 2, 3, 4, 5, 45, 46, 47, 48, 49]  # positions are permuted first


def test_circulant_graph_follows_the_documented_ring():
    from din_cli.protocol.contribution import PermutationStream

    ring = PermutationStream(hashlib.sha256(secagg.GRAPH_DOMAIN + SEED).digest()).shuffle(
        list(range(9))
    )
    graph = secagg.neighbours(SEED, 9, 4)
    for i, node in enumerate(ring):
        assert graph[node] == sorted(ring[(i + k) % 9] for k in (-2, -1, 1, 2))


@pytest.mark.parametrize("degree", [3, 0, -2])
def test_odd_or_small_degree_is_refused_when_used(degree):
    with pytest.raises(UsageError):
        secagg.neighbours(SEED, 50, degree)


def test_graph_seed_must_be_32_bytes():
    with pytest.raises(UsageError):
        secagg.neighbours(b"short", 50, 10)


# -- threshold ----------------------------------------------------------------


@pytest.mark.parametrize(
    "degree,fraction,t",
    [(10, 500_000, 5), (10, 500_001, 6), (3, 1, 1), (7, 1_000_000, 7), (1, 666_667, 1)],
)
def test_threshold_rounds_up_within_bounds(degree, fraction, t):
    assert secagg.threshold(degree, fraction) == t


@pytest.mark.parametrize("degree,fraction", [(0, 500_000), (5, 0), (5, 1_000_001)])
def test_threshold_refuses_impossible_arguments(degree, fraction):
    with pytest.raises(UsageError):
        secagg.threshold(degree, fraction)


# -- pair seeds ---------------------------------------------------------------


def test_pair_seed_is_symmetric_and_bound_to_context_and_positions():
    (sk_a, pk_a), (sk_b, pk_b) = hpke.generate_keypair(), hpke.generate_keypair()
    seed = secagg.pair_seed(sk_a, pk_b, CONTEXT, 3, 8)
    assert len(seed) == 32
    assert secagg.pair_seed(sk_b, pk_a, CONTEXT, 8, 3) == seed
    assert secagg.pair_seed(sk_a, pk_b, CONTEXT + b"!", 3, 8) != seed
    assert secagg.pair_seed(sk_a, pk_b, CONTEXT, 3, 9) != seed
    _, pk_c = hpke.generate_keypair()
    assert secagg.pair_seed(sk_a, pk_c, CONTEXT, 3, 8) != seed


@pytest.mark.parametrize("point", [bytes(32), LOW_ORDER])
def test_pair_seed_refuses_a_low_order_peer_key(point):
    sk, _ = hpke.generate_keypair()
    with pytest.raises(InputError, match="low-order"):
        secagg.pair_seed(sk, point, CONTEXT, 0, 1)


def test_pair_seed_refuses_a_pair_of_one():
    sk, pk = hpke.generate_keypair()
    with pytest.raises(UsageError):
        secagg.pair_seed(sk, pk, CONTEXT, 4, 4)


# -- Shamir -------------------------------------------------------------------


def test_any_t_shares_recover_and_t_minus_1_do_not():
    secret = bytes(range(100, 132))
    xs = [1, 2, 5, 9, 17]
    shares = secagg.split(secret, 3, xs)
    assert all(len(s) == secagg.SHARE_LEN for s in shares)
    points = list(zip(xs, shares, strict=True))
    for subset in itertools.combinations(points, 3):
        assert secagg.combine(list(subset)) == secret
    for subset in itertools.combinations(points, 2):
        with pytest.raises(InputError):  # a random field element: not < 2^256 but w.p. 2^-265
            secagg.combine(list(subset))
    assert secagg.split(secret, 3, xs) != shares  # fresh coefficients every time


def test_the_secret_is_the_constant_term():
    secret = b"\xff" * 32
    (share,) = secagg.split(secret, 1, [7])
    assert share == secret.rjust(secagg.SHARE_LEN, b"\0")
    assert secagg.combine([(7, share)]) == secret


def test_a_tampered_share_gives_a_wrong_secret_or_an_error():
    secret = bytes(32)
    xs = [1, 2, 3, 4]
    shares = secagg.split(secret, 4, xs)
    bad = bytearray(shares[2])
    bad[-1] ^= 1
    points = list(zip(xs, shares, strict=True))
    points[2] = (3, bytes(bad))
    try:
        assert secagg.combine(points) != secret
    except InputError:
        pass


def test_combine_refuses_repeated_or_malformed_points():
    shares = secagg.split(SEED, 2, [1, 2])
    with pytest.raises(InputError, match="repeat"):
        secagg.combine([(1, shares[0]), (1, shares[0])])
    with pytest.raises(InputError, match="malformed"):
        secagg.combine([(1, shares[0][1:]), (2, shares[1])])
    with pytest.raises(InputError):
        secagg.combine([])


@pytest.mark.parametrize("t,xs", [(0, [1, 2]), (3, [1, 2]), (2, [0, 1]), (2, [1, 1])])
def test_split_refuses_bad_parameters(t, xs):
    with pytest.raises((UsageError, InputError)):
        secagg.split(SEED, t, xs)


# -- expand -------------------------------------------------------------------


def test_expand_is_chacha20_keystream_deterministic_and_reuses_out():
    count = secagg.CHUNK_WORDS + 5  # crosses a chunk boundary
    words = secagg.expand(SEED, count)
    assert words.dtype == np.uint64 and words.shape == (count,)
    enc = Cipher(algorithms.ChaCha20(SEED, secagg.NONCE), None).encryptor()
    assert words.tobytes() == enc.update(bytes(8 * count))  # little-endian words
    assert np.array_equal(secagg.expand(SEED, count), words)
    assert not np.array_equal(secagg.expand(OTHER, count), words)
    out = np.zeros(count + 3, np.uint64)
    got = secagg.expand(SEED, count, out)
    assert np.shares_memory(got, out) and np.array_equal(out[:count], words)
    assert not out[count:].any()
    assert secagg.expand(SEED, 0).size == 0


def test_expand_refuses_bad_buffers_and_seeds():
    with pytest.raises(InputError):
        secagg.expand(SEED, 10, np.empty(9, np.uint64))
    with pytest.raises(InputError):
        secagg.expand(SEED, 10, np.empty(10, np.int64))
    with pytest.raises(InputError):
        secagg.expand(SEED[:31], 10)


# -- mask / unmask -------------------------------------------------------------

BOUND = 2**30 * 1000


def _round(n: int, size: int, rng: np.random.Generator):
    keys = [hpke.generate_keypair() for _ in range(n)]
    values = [rng.integers(-BOUND, BOUND, size, dtype=np.int64, endpoint=True) for _ in range(n)]
    self_seeds = [random.randbytes(32) for _ in range(n)]
    pairs = [
        {p: secagg.pair_seed(keys[i][0], keys[p][1], CONTEXT, i, p) for p in range(n) if p != i}
        for i in range(n)
    ]
    return values, self_seeds, pairs


def test_masks_cancel_and_unmask_gives_the_exact_sum():
    rng = np.random.default_rng(1)
    values, self_seeds, pairs = _round(6, 1000, rng)
    ys = [secagg.mask(values[i], i, self_seeds[i], pairs[i]) for i in range(6)]
    total = np.zeros(1000, np.uint64)
    for y in ys:
        secagg.add_into(total, y)
    exact = np.sum(values, axis=0)
    got = secagg.unmask(total, self_seeds, [])
    assert got.dtype == np.int64 and np.shares_memory(got, total)
    assert np.array_equal(got, exact)


def test_dropouts_pair_masks_are_removed_from_the_survivors_sum():
    rng = np.random.default_rng(2)
    n, dropped = 6, {1, 4}
    values, self_seeds, pairs = _round(n, 777, rng)
    survivors = [i for i in range(n) if i not in dropped]
    total = np.zeros(777, np.uint64)
    for i in survivors:
        secagg.add_into(total, secagg.mask(values[i], i, self_seeds[i], pairs[i]))
    # the pair seeds of each dropout d with survivor s, rebuilt from shares, and s's sign
    pair_terms = [(1 if s < d else -1, pairs[d][s]) for d in dropped for s in survivors]
    s0 = survivors[0]
    shares = {d: secagg.split(pairs[d][s0], 2, [1, 2, 3]) for d in dropped}
    assert all(secagg.combine([(1, sh[0]), (3, sh[2])]) == pairs[d][s0] for d, sh in shares.items())
    got = secagg.unmask(total.copy(), [self_seeds[i] for i in survivors], pair_terms)
    assert np.array_equal(got, np.sum([values[i] for i in survivors], axis=0))
    short = secagg.unmask(total.copy(), [self_seeds[i] for i in survivors], pair_terms[1:])
    assert not np.array_equal(short, got)  # a missing term leaves a mask in


def test_a_masked_update_looks_random():
    rng = np.random.default_rng(3)
    values, self_seeds, pairs = _round(3, 4096, rng)
    before = values[0].copy()
    y = secagg.mask(values[0], 0, self_seeds[0], pairs[0])
    again = secagg.mask(values[0], 0, random.randbytes(32), pairs[0])
    assert y.dtype == np.uint64 and y.shape == values[0].shape
    assert not np.any(y == values[0].view(np.uint64))
    assert not np.any(y == again)
    assert np.count_nonzero(y >> np.uint64(63)) in range(1800, 2300)  # top bit ~ fair coin
    assert np.array_equal(values[0], before)  # masking copies


def test_mask_keeps_shape_and_refuses_wrong_inputs():
    values = np.arange(12, dtype=np.int64).reshape(3, 4)
    y = secagg.mask(values, 0, SEED, {1: OTHER})
    assert y.shape == (3, 4)
    back = secagg.unmask(y, [SEED], [(1, OTHER)])
    assert np.array_equal(back, values)
    with pytest.raises(InputError):
        secagg.mask(values.astype(np.float32), 0, SEED, {})
    with pytest.raises(UsageError):
        secagg.mask(values, 1, SEED, {1: OTHER})
    with pytest.raises(InputError):
        secagg.unmask(np.zeros(3, np.int64), [SEED], [])
    with pytest.raises(InputError):
        secagg.unmask(np.zeros(3, np.uint64), [], [(2, SEED)])
    with pytest.raises(InputError):
        secagg.add_into(np.zeros(3, np.uint64), np.zeros(4, np.uint64))


def test_add_into_wraps_mod_2_64():
    total = np.array([2**64 - 1, 5], np.uint64)
    secagg.add_into(total, np.array([2, 2**64 - 5], np.uint64))
    assert total.tolist() == [1, 0]
