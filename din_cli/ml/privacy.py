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
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from decimal import Decimal

from din_cli.errors import InputError, UsageError

MAX_CLIP = 2048  # the contract's bound on dpClip (millionths: 2048e6)
MAX_NOISE = 1000
MAX_DELTA_EXP = 30


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
