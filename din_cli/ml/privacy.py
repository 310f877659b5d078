"""Differential privacy on the participant's side: clip, add Gaussian noise, account.

A task can fix three parameters at publish (``din model publish --dp-clip C
--dp-noise Z --dp-delta D``, stored on chain): before an update leaves the
participant, its distance from the round's starting model is clipped to L2
norm ``C`` and every weight gets independent Gaussian noise of standard
deviation ``Z * C`` (:func:`privatize`). Each round a participant submits is
then one Gaussian mechanism of sensitivity ``C`` on its whole data store
(user-level DP: neighbouring stores may differ in every row), whatever the
aggregation does afterwards (post-processing).

Accounting (:func:`epsilon`) is exact for this mechanism: ``k`` Gaussian
mechanisms of noise multiplier ``Z`` compose to ``mu``-Gaussian differential
privacy with ``mu = sqrt(k) / Z`` (Dong, Roth & Su 2019), whose privacy
curve is the analytic Gaussian mechanism's (Balle & Wang 2018):
``delta(eps) = Phi(-eps/mu + mu/2) - e^eps * Phi(-eps/mu - mu/2)``. The
reported epsilon is the smallest one with ``delta(eps) <= delta``, found by
bisection to 1e-9; the tests check it against dp-accounting's PLD accountant
(which discretises this same curve) and its RDP accountant (an upper bound).
No subsampling amplification is claimed: a participant trains on its whole
store every round.

Noise comes from a CSPRNG: ChaCha20 keyed with 32 bytes of ``os.urandom``
gives the uniform bits, which Box-Muller turns into normal draws. The noise
is floating point, so the usual caveat holds (Mironov 2012: the low bits of
floating-point noise can leak); the discrete Gaussian on the integer grid is
the fix, for secure aggregation.

With secure aggregation nobody sees one participant's update, only the sum,
so each participant adds a share of the noise on din's integer grid
(:func:`discrete_gaussian`) and the sum of the shares protects the sum: the
distributed discrete Gaussian of Kairouz, Liu & Steinke 2021. A sum of
discrete Gaussians is not itself one, so its guarantee is their concentrated
DP bound (:func:`ddg_cdp_epsilon`), composed over rounds by Renyi DP
(:func:`ddg_epsilon`), an upper bound rather than an exact curve.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from din_cli.errors import InputError, UsageError

if TYPE_CHECKING:
    import numpy

MAX_CLIP = 2048  # the contract's bound on dpClip (millionths: 2048e6)
MAX_NOISE = 1000
MAX_DELTA_EXP = 30
MAX_GRID_SIGMA = 2**45  # discrete_gaussian's largest sigma: draws stay below 2^53


@dataclass(frozen=True)
class DP:
    """A task's differential privacy: L2 ``clip``, Gaussian noise ``multiplier``, ``delta``."""

    clip: Decimal
    multiplier: Decimal
    delta_exp: int  # delta = 10^-delta_exp

    @property
    def delta(self) -> float:
        return 10.0**-self.delta_exp

    @property
    def std(self) -> float:
        """The noise's standard deviation per weight."""
        return float(self.clip * self.multiplier)

    def epsilon(self, rounds: int) -> float:
        return epsilon(rounds, float(self.multiplier), self.delta)

    def describe(self) -> str:
        return f"clip {self.clip}, noise multiplier {self.multiplier}, delta 1e-{self.delta_exp}"

    def as_dict(self) -> dict:
        return {
            "clip": str(self.clip),
            "noise_multiplier": str(self.multiplier),
            "delta": self.delta,
        }


def _millionths(value, flag: str, low: Decimal, high: Decimal) -> int:
    try:
        d = Decimal(str(value))
    except ArithmeticError:
        raise UsageError(f"{flag} {value!r} is not a number", f"e.g. {flag} 1.5") from None
    if not (d.is_finite() and low < d <= high):
        raise UsageError(
            f"{flag} {value} is out of range", f"give a number above {low} and at most {high}"
        )
    micro = d * 10**6
    if micro != micro.to_integral_value():
        raise UsageError(
            f"{flag} {value} has more than 6 decimals", "give at most 6: a task stores millionths"
        )
    return int(micro)


def encode(clip=None, noise=None, delta=None) -> tuple[int, int, int]:
    """``(dpClip, dpNoise, dpDelta)`` of TaskParams; ``(0, 0, 0)`` without DP.

    ``delta`` must be a power of ten (1e-5); it defaults to 1e-5 with DP.
    """
    if clip is None and noise is None and delta is None:
        return 0, 0, 0
    if clip is None or noise is None:
        raise UsageError(
            "differential privacy needs both --dp-clip and --dp-noise",
            "e.g. --dp-clip 1 --dp-noise 1.1 (and --dp-delta 1e-5)",
        )
    c = _millionths(clip, "--dp-clip", Decimal(0), Decimal(MAX_CLIP))
    z = _millionths(noise, "--dp-noise", Decimal(0), Decimal(MAX_NOISE))
    d = Decimal(str(1e-5 if delta is None else delta))
    k = -d.log10() if d > 0 else Decimal(-1)
    if not (0 < d < 1 and k == k.to_integral_value() and 1 <= k <= MAX_DELTA_EXP):
        raise UsageError(
            f"--dp-delta {delta} is not a power of ten between 1e-{MAX_DELTA_EXP} and 0.1",
            "e.g. --dp-delta 1e-5",
        )
    return c, z, int(k)


def decode(clip: int, noise: int, delta_exp: int) -> DP | None:
    """A task's stored parameters as :class:`DP` (None when it has none)."""
    if not int(clip):
        return None
    return DP(
        (Decimal(int(clip)) / 10**6).normalize(),
        (Decimal(int(noise)) / 10**6).normalize(),
        int(delta_exp),
    )


def epsilon(rounds: int, multiplier: float, delta: float) -> float:
    """The exact epsilon of ``rounds`` Gaussian mechanisms of noise ``multiplier`` at ``delta``.

    0 rounds spend nothing; a multiplier of 0 is no privacy (``inf``).
    """
    if rounds <= 0:
        return 0.0
    if multiplier <= 0:
        return math.inf
    from scipy.special import log_ndtr

    mu = math.sqrt(rounds) / multiplier

    def gap(eps: float) -> float:  # delta(eps) - delta: decreasing in eps
        first = math.exp(log_ndtr(-eps / mu + mu / 2))
        second = math.exp(eps + log_ndtr(-eps / mu - mu / 2))
        return first - second - delta

    if gap(0.0) <= 0:
        return 0.0
    lo, hi = 0.0, 1.0
    while gap(hi) > 0:
        lo, hi = hi, hi * 2
        if hi > 1e6:
            return math.inf
    while hi - lo > 1e-9 * max(1.0, hi):
        mid = (lo + hi) / 2
        if gap(mid) > 0:
            lo = mid
        else:
            hi = mid
    return hi


class ChaChaNormal:
    """Standard normal draws from ChaCha20 keyed with ``os.urandom(32)`` (Box-Muller)."""

    def __init__(self, key: bytes | None = None):
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

        key = os.urandom(32) if key is None else bytes(key)
        self._enc = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()

    def _uniform(self, n: int):
        """``n`` uniforms in (0, 1): 53 random bits each, offset by half a step (never 0 or 1)."""
        import numpy as np

        bits = np.frombuffer(self._enc.update(bytes(8 * n)), dtype="<u8") >> np.uint64(11)
        return (bits.astype(np.float64) + 0.5) * 2.0**-53

    def normal(self, n: int):
        import numpy as np

        half = (n + 1) // 2
        u1, u2 = self._uniform(half), self._uniform(half)
        r = np.sqrt(-2.0 * np.log(u1))
        out = np.concatenate([r * np.cos(2 * np.pi * u2), r * np.sin(2 * np.pi * u2)])
        return out[:n]


@dataclass
class Privatized:
    norm: float  # the update's L2 distance from the start, before clipping
    clipped: bool
    std: float  # the noise's standard deviation per weight


def privatize(update, start, output, dp: DP, *, rng: ChaChaNormal | None = None) -> Privatized:
    """Write ``update`` clipped to ``dp.clip`` around ``start`` plus N(0, std^2) noise to ``output``.

    The metadata (samples, round, task) stays the update's; weights are float32.
    """
    import numpy as np

    from din_cli.ml import models, tensorfile

    up = models.read_model(update)
    base = models.read_model(start, arch=up.arch)
    names = sorted(up.weights)
    deltas = {n: up.weights[n].astype(np.float64) - base.weights[n] for n in names}
    norm = math.sqrt(sum(float(np.dot(d.reshape(-1), d.reshape(-1))) for d in deltas.values()))
    clip = float(dp.clip)
    scale = min(1.0, clip / norm) if norm > 0 else 1.0
    rng = rng or ChaChaNormal()
    out = {}
    for n in names:
        noise = rng.normal(deltas[n].size).reshape(deltas[n].shape) * dp.std
        w = base.weights[n].astype(np.float64) + deltas[n] * scale + noise
        out[n] = w.astype(np.float32)
        if not np.isfinite(out[n]).all():
            raise InputError(f"noise made {n} non-finite", "use a smaller --dp-clip or --dp-noise")
    h = up.header
    meta = tensorfile.make_metadata(
        arch=up.arch, kind=h.kind, samples=h.samples, round=h.round, task=h.task
    )
    tensorfile.write(output, out, meta)
    return Privatized(norm=norm, clipped=scale < 1.0, std=dp.std)


def discrete_gaussian(sigma: float, size: int, rng: ChaChaNormal | None = None) -> numpy.ndarray:
    """``size`` independent draws of the discrete Gaussian N_Z(0, sigma^2), as int64.

    Canonne, Kamath & Steinke 2020, Algorithm 3: a discrete Laplace proposal
    ``Y`` of scale ``t = floor(sigma) + 1`` (the difference of two geometric
    draws, each ``floor(-t * ln U)`` by inverse CDF) is kept with probability
    ``exp(-(|Y| - sigma^2/t)^2 / (2 sigma^2))``; half to three quarters are kept,
    in numpy batches. The uniforms come from ``rng``'s ChaCha20 stream (a
    fresh ``ChaChaNormal`` keyed from ``os.urandom`` by default). The
    geometric draws and the acceptance probabilities are float64 (as in
    TensorFlow Privacy's sampler), so the output is the discrete Gaussian up
    to float64 rounding, not the paper's bit-exact rational sampling. Sigma
    is at most ``MAX_GRID_SIGMA`` so every draw stays an exact float64 integer.
    """
    import numpy as np

    sigma, size = float(sigma), int(size)
    if not 0 < sigma <= MAX_GRID_SIGMA:
        raise UsageError(
            f"discrete Gaussian sigma {sigma} is out of range",
            f"give one above 0 and at most 2^{MAX_GRID_SIGMA.bit_length() - 1} grid steps",
        )
    if size < 0:
        raise UsageError(f"cannot draw {size} values", "give a size of at least 0")
    rng = rng or ChaChaNormal()
    t = math.floor(sigma) + 1
    shift, two_var = sigma * sigma / t, 2 * sigma * sigma
    out = np.empty(size, dtype=np.int64)
    filled = 0
    while filled < size:
        n = min(1 << 20, 64 + (size - filled) * 3 // 2)
        u = rng._uniform(3 * n)
        y = np.floor(-t * np.log(u[:n])) - np.floor(-t * np.log(u[n : 2 * n]))
        gap = np.abs(y) - shift
        kept = y[u[2 * n :] < np.exp(-gap * gap / two_var)][: size - filled]
        out[filled : filled + kept.size] = kept
        filled += kept.size
    return out


def ddg_cdp_epsilon(
    sensitivity: float, sigma: float, parties: int, dim: int, l1: float | None = None
) -> float:
    """The ``eps`` of the sum of ``parties`` discrete Gaussian shares: (eps^2/2)-zCDP.

    Kairouz, Liu & Steinke 2021 (Theorem 1 and Proposition 14): adding the sum
    of ``parties`` independent N_Z(0, sigma^2)^dim vectors to a query on the
    integer grid whose change has L2 norm at most ``sensitivity`` (L1 norm
    ``l1``, at most ``sqrt(dim) * sensitivity``, the default) is
    (eps^2/2)-concentrated DP for ``eps = min(sqrt(a^2 + 2 tau dim),
    sqrt(a^2 + 2 tau b + tau^2 dim), a + tau sqrt(dim))``, where ``a`` and
    ``b`` are the L2 and L1 sensitivities over ``sqrt(parties) * sigma`` and
    ``tau = 10 * sum_{k=1}^{parties-1} exp(-2 pi^2 sigma^2 k/(k+1))``. Both
    ``sensitivity`` and ``sigma`` are in grid steps (the theorem needs
    ``sigma >= 1/2``); ``tau`` vanishes once sigma is a few steps, leaving the
    continuous Gaussian's ``sensitivity / (sqrt(parties) sigma)``.
    """
    if not sigma >= 0.5:
        raise UsageError(f"sigma {sigma} is under half a grid step", "the bound needs sigma >= 0.5")
    if parties < 1 or dim < 1 or not sensitivity >= 0:
        raise UsageError(
            f"no bound for {parties} parties, dimension {dim}, sensitivity {sensitivity}",
            "give at least 1 party, dimension 1 and a sensitivity of at least 0",
        )
    l1 = math.sqrt(dim) * sensitivity if l1 is None else l1
    tau = 0.0
    for k in range(1, parties):  # the terms shrink with k: stop at the first that underflows
        term = math.exp(-2 * math.pi**2 * sigma**2 * k / (k + 1))
        if term == 0.0:
            break
        tau += term
    tau *= 10
    scale = math.sqrt(parties) * sigma
    a, b = sensitivity / scale, l1 / scale
    return min(
        math.sqrt(a * a + 2 * tau * dim),
        math.sqrt(a * a + 2 * tau * b + tau * tau * dim),
        a + tau * math.sqrt(dim),
    )


# dp-accounting's default RDP orders, so that ddg_epsilon gives its RdpAccountant's number.
_RDP_ORDERS = [1 + x / 10 for x in range(1, 100)] + list(range(11, 64)) + [128, 256, 512, 1024]


def ddg_epsilon(round_epsilons: Sequence[float], delta: float) -> float:
    """The epsilon at ``delta`` of rounds that are each (eps_r^2/2)-zCDP (:func:`ddg_cdp_epsilon`).

    zCDP composes by adding: the rounds have the Renyi curve ``alpha * rho``
    with ``rho = sum(eps_r^2) / 2``, the curve of dp-accounting's
    ``GaussianDpEvent(1 / eps_r)``, one per round. It is converted to
    (epsilon, delta) as dp-accounting's ``RdpAccountant.get_epsilon`` does
    (Canonne, Kamath & Steinke 2020, Proposition 12, on its orders), and the
    tests check the two agree. The conversion is an upper bound: for
    Gaussian noise :func:`epsilon`'s exact curve gives less.
    """
    eps = [float(e) for e in round_epsilons]
    if any(not e >= 0 for e in eps):
        raise UsageError("a round's epsilon is negative or not a number", "give eps >= 0")
    if not 0 < delta < 1:
        raise UsageError(f"delta {delta} is not between 0 and 1", "e.g. delta 1e-5")
    if math.inf in eps:
        return math.inf
    rho = sum(e * e for e in eps) / 2
    if rho == 0:
        return 0.0
    best = math.inf
    for alpha in _RDP_ORDERS:
        r = rho * alpha
        if delta**2 + math.expm1(-r) > 0:  # delta <= sqrt(1 - exp(-KL)): epsilon 0 suffices
            return 0.0
        if alpha > 1.01:
            best = min(best, r + math.log1p(-1 / alpha) - math.log(delta * alpha) / (alpha - 1))
    return max(0.0, best)
