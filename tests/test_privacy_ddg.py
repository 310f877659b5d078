"""The distributed discrete Gaussian: the sampler, Kairouz et al.'s bound, its composition."""

from __future__ import annotations

import math

import numpy as np
import pytest

from din_cli.errors import UsageError
from din_cli.ml import privacy

N = 200_000


def _rng(seed: int = 0) -> privacy.ChaChaNormal:
    return privacy.ChaChaNormal(bytes([seed]) * 32)  # a fixed key: the statistics cannot flake


def _moments(sigma: float) -> tuple[float, float]:
    """The exact variance and fourth moment of N_Z(0, sigma^2), summed over its support."""
    if sigma > 1e4:  # the continuous Gaussian's, to well under float64 precision
        return sigma**2, 3 * sigma**4
    x = np.arange(-int(40 * sigma) - 10, int(40 * sigma) + 11, dtype=np.float64)
    w = np.exp(-(x**2) / (2 * sigma**2))
    w /= w.sum()
    return float((w * x**2).sum()), float((w * x**4).sum())


@pytest.mark.parametrize("sigma", [0.5, 3, 1000, 1e6])
def test_discrete_gaussian_has_mean_zero_and_the_discrete_gaussians_variance(sigma):
    x = privacy.discrete_gaussian(sigma, N, _rng())
    assert x.dtype == np.int64 and x.shape == (N,)
    var, m4 = _moments(sigma)
    assert abs(x.mean()) < 5 * math.sqrt(var / N)
    assert abs(float((x.astype(np.float64) ** 2).mean()) - var) < 5 * math.sqrt((m4 - var**2) / N)
    if sigma == 0.5:
        assert var < 0.9 * sigma**2  # the discrete variance, not sigma^2: the check can tell


def test_discrete_gaussian_pmf_at_sigma_2():
    sigma = 2.0
    x = privacy.discrete_gaussian(sigma, N, _rng(1))
    support = np.arange(-30, 31)
    pmf = np.exp(-(support**2) / (2 * sigma**2))
    pmf /= pmf.sum()
    for k in range(-6, 7):
        p = pmf[support == k][0]
        assert abs((x == k).mean() - p) < 5 * math.sqrt(p * (1 - p) / N), k
    tail = pmf[np.abs(support) > 6].sum()
    assert (np.abs(x) > 6).mean() < tail + 5 * math.sqrt(tail / N)


@pytest.mark.parametrize("sigma", [1e6, 1e9])
def test_discrete_gaussian_at_large_scale_is_gaussian_down_to_its_low_digits(sigma):
    from scipy import stats

    x = privacy.discrete_gaussian(sigma, N, _rng(2))
    assert stats.kstest(x / sigma, "norm").pvalue > 1e-3
    for m in (2, 3, 1024):  # no lattice left by the float64 geometric draws
        counts = np.bincount(x % m, minlength=m)
        assert stats.chisquare(counts).pvalue > 1e-3, m


def test_discrete_gaussian_at_sigma_1e9_repeats_values_no_more_often_than_chance():
    sigma = 1e9  # a coarse float grid under the geometric draws would make values collide
    x = privacy.discrete_gaussian(sigma, N, _rng(3))
    pairs = (
        N * (N - 1) / 2 / (2 * math.sqrt(math.pi) * sigma)
    )  # sum_x p(x)^2 ~ 1/(2 sqrt(pi) sigma)
    _, counts = np.unique(x, return_counts=True)
    assert (counts * (counts - 1) // 2).sum() < pairs + 5 * math.sqrt(pairs) + 5  # ~5.6 expected


def test_discrete_gaussian_draws_from_chacha20_keyed_by_os_urandom(monkeypatch):
    same = privacy.discrete_gaussian(1000, 5000, _rng(7))
    assert np.array_equal(same, privacy.discrete_gaussian(1000, 5000, _rng(7)))
    assert not np.array_equal(same, privacy.discrete_gaussian(1000, 5000, _rng(8)))
    assert not np.array_equal(
        privacy.discrete_gaussian(1000, 5000), privacy.discrete_gaussian(1000, 5000)
    )
    monkeypatch.setattr(privacy.os, "urandom", lambda n: bytes([7]) * n)
    assert np.array_equal(privacy.discrete_gaussian(1000, 5000), same)
    empty = privacy.discrete_gaussian(3, 0)
    assert empty.dtype == np.int64 and empty.shape == (0,)


@pytest.mark.parametrize("sigma", [0, -1, math.nan, math.inf, 2.0**46])
def test_discrete_gaussian_refuses_a_bad_sigma(sigma):
    with pytest.raises(UsageError):
        privacy.discrete_gaussian(sigma, 10)


def test_discrete_gaussian_refuses_a_negative_size():
    with pytest.raises(UsageError):
        privacy.discrete_gaussian(3, -1)


def test_ddg_bound_is_the_continuous_gaussians_once_sigma_is_a_few_steps():
    for n, d, sens, sigma in [(1, 1, 1, 0.5), (7, 10**6, 37, 1000), (64, 10**5, 2**20, 2**20)]:
        want = sens / (math.sqrt(n) * sigma)  # n = 1: the discrete Gaussian's own zCDP
        assert privacy.ddg_cdp_epsilon(sens, sigma, n, d) == pytest.approx(want, rel=1e-12)


def test_ddg_bound_known_answer_and_its_terms():
    tau = 10 * math.exp(-(math.pi**2) / 4)  # n = 2, sigma = 1/2: one term, k = 1
    a = 1 / (math.sqrt(2) * 0.5)
    assert privacy.ddg_cdp_epsilon(1, 0.5, 2, 1) == pytest.approx(math.sqrt(a * a + 2 * tau))
    # Small shares: tau > 0 costs privacy, the more so the larger the dimension.
    plain = 1 / (math.sqrt(5) * 0.8)
    eps = [privacy.ddg_cdp_epsilon(1, 0.8, 5, d) for d in (1, 100, 1000)]
    assert plain < eps[0] < eps[1] < eps[2]
    # An L1 bound under sqrt(d) * L2 (on the grid, |D|_1 <= |D|_2^2) tightens it.
    assert plain < privacy.ddg_cdp_epsilon(1, 0.8, 5, 1000, l1=1.0) < 0.8 * eps[2]


def test_ddg_bound_falls_with_parties_unless_shares_are_tiny():
    eps = [privacy.ddg_cdp_epsilon(2**20, 2**20, n, 10**5) for n in range(1, 65)]
    assert all(np.diff(eps) < 0)
    eps = [privacy.ddg_cdp_epsilon(1, 0.8, n, 1) for n in (2, 5, 20, 100)]
    assert all(np.diff(eps) < 0)
    # sigma 0.8, d 100: tau grows with every party and wins past ~200 of them.
    assert privacy.ddg_cdp_epsilon(1, 0.8, 1000, 100) > privacy.ddg_cdp_epsilon(1, 0.8, 200, 100)


@pytest.mark.parametrize(
    "args", [(1, 0.4, 5, 10), (1, 2, 0, 10), (1, 2, 5, 0), (-1, 2, 5, 10), (1, math.nan, 5, 10)]
)
def test_ddg_bound_refuses_what_the_theorem_does_not_cover(args):
    with pytest.raises(UsageError):
        privacy.ddg_cdp_epsilon(*args)


def test_ddg_epsilon_is_dp_accountings_rdp_epsilon():
    dpa = pytest.importorskip("dp_accounting", reason="dp-accounting is a dev dependency")
    for rounds, delta in [([1.0] * 10, 1e-5), ([0.3, 1.2, 0.05, 2.0], 1e-6), ([0.1] * 50, 1e-3)]:
        acc = dpa.rdp.RdpAccountant()
        for e in rounds:
            acc.compose(dpa.GaussianDpEvent(1 / e))
        assert privacy.ddg_epsilon(rounds, delta) == pytest.approx(acc.get_epsilon(delta), rel=1e-9)


@pytest.mark.parametrize("k,z,delta", [(10, 1.0, 1e-5), (1, 1.0, 1e-5), (100, 4.0, 1e-6)])
def test_ddg_epsilon_bounds_the_exact_gaussian_curve_from_above_and_near(k, z, delta):
    rdp, exact = privacy.ddg_epsilon([1 / z] * k, delta), privacy.epsilon(k, z, delta)
    print(f"k={k} z={z} delta={delta}: ddg_epsilon {rdp:.4f}, exact epsilon {exact:.4f}")
    assert exact < rdp < 1.2 * exact


def test_ddg_epsilon_composes_by_adding_rho():
    assert privacy.ddg_epsilon([0.5] * 4, 1e-5) == pytest.approx(privacy.ddg_epsilon([1.0], 1e-5))
    assert privacy.ddg_epsilon([0.5, 0.0], 1e-5) == privacy.ddg_epsilon([0.5], 1e-5)
    assert privacy.ddg_epsilon([], 1e-5) == 0.0
    assert privacy.ddg_epsilon([0.0, 0.0], 1e-5) == 0.0
    assert privacy.ddg_epsilon([1.0, math.inf], 1e-5) == math.inf
    assert privacy.ddg_epsilon([1e-4], 0.5) == 0.0  # delta covers the whole divergence


@pytest.mark.parametrize(
    "rounds,delta", [([1.0], 0), ([1.0], 1), ([-0.1], 1e-5), ([math.nan], 1e-5)]
)
def test_ddg_epsilon_refuses_bad_input(rounds, delta):
    with pytest.raises(UsageError):
        privacy.ddg_epsilon(rounds, delta)
