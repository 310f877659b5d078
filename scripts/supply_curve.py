"""The DIN supply curve under the deployed defaults, for 20 years: a table and docs/supply.png.

The supply at time t is the initial supply plus what the registry's emission schedule has
released by then (``ValidatorRegistry.scheduled``), within the token's cap (the initial supply
plus everything the schedule can ever release, as ``deploy_all`` sets it). Burns (slashes, the
fee burn) are not counted: this is the most that can exist. The schedule is replicated here in
Python integers exactly as the contract computes it (``rn = _pow(r, n)``: square-and-multiply,
flooring to 18 decimals at every step; whole epochs' totals, linear in between),
cross-checked against the contract's ``scheduled(t)`` on the embedded chain at a few points,
and scanned for epoch boundaries where it would decrease.

    python scripts/supply_curve.py [--years 20] [--out docs/supply.png] [--no-check]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

ONE = 10**18
BPS = 10_000
UNIT = 10**18
YEAR_DAYS = 365


def pow18(x: int, n: int) -> int:
    """``ValidatorRegistry._pow``: x^n for 18-decimal fixed point, floored at every step."""
    z = ONE
    while n > 0:
        if n & 1:
            z = z * x // ONE
        x = x * x // ONE
        n >>= 1
    return z


def released(n: int, emission: int, decay_bps: int) -> int:
    """``ValidatorRegistry._released(n)``: what the first ``n`` epochs release,
    emission * (1 - r^n) / (1 - r) with r = 1 - decay, rn = _pow(r, n)."""
    rn = pow18((BPS - decay_bps) * ONE // BPS, n)
    return emission * BPS * (ONE - rn) // (decay_bps * ONE)


def scheduled(elapsed: int, emission: int, decay_bps: int, epoch: int, base: int = 0) -> int:
    """``ValidatorRegistry.scheduled(start + elapsed)``: emission released ``elapsed`` seconds
    after the schedule started (epoch k releases emission * (1 - decay)^k), linear within an
    epoch between the whole epochs' totals."""
    if elapsed <= 0:
        return base
    n = elapsed // epoch
    whole = released(n, emission, decay_bps)
    after = released(n + 1, emission, decay_bps)
    part = (after - whole) * (elapsed - n * epoch) // epoch if after > whole else 0
    return base + whole + part


class Curve:
    """The supply curve of one economy (``ECONOMY``-style keys) and initial supply."""

    def __init__(self, economy: dict, initial: int):
        from din_cli.chain.din import schedule_limit

        self.emission = int(economy["epoch_emission"])
        self.decay = int(economy["decay_bps"])
        self.epoch = int(economy["epoch_length"])
        self.initial = int(initial)
        self.cap = self.initial + schedule_limit(self.emission, self.decay)

    def released(self, elapsed: int) -> int:
        return scheduled(elapsed, self.emission, self.decay, self.epoch)

    def supply(self, elapsed: int) -> int:
        return min(self.initial + self.released(elapsed), self.cap)

    def decreasing_boundaries(self, seconds: int) -> list[tuple[int, int]]:
        """(epoch, drop) where scheduled() at an epoch's first second is below the previous
        second's value (``_pow``'s flooring), within ``seconds``."""
        out = []
        for n in range(1, seconds // self.epoch + 1):
            t = n * self.epoch
            drop = self.released(t - 1) - self.released(t)
            if drop > 0:
                out.append((n, drop))
        return out


def cross_check(curve: Curve, economy: dict, initial: int, points: list[int]) -> list[tuple]:
    """The contract's scheduled(start + t) at ``points`` (seconds) against the replica."""
    from din_cli.chain.client import connect
    from din_cli.chain.din import deploy_all

    chain = connect("memory")
    try:
        dep = deploy_all(chain, chain.dev_account(), initial_supply=initial, economy=economy)
        reg = chain.contract("ValidatorRegistry", dep["ValidatorRegistry"])
        token = chain.contract("DinToken", dep["DinToken"])
        assert chain.call(token.functions.cap()) == curve.cap, "the token's cap differs"
        start = chain.call(reg.functions.scheduleStart())
        rows = []
        for t in points:
            got = chain.call(reg.functions.scheduled(start + t))
            rows.append((t, got, curve.released(t)))
        return rows
    finally:
        chain.close()


def table(curve: Curve, years: int) -> list[tuple[int, int, float]]:
    """(year, supply at its end, inflation over it in %)."""
    rows = []
    previous = curve.supply(0)
    for y in range(0, years + 1):
        s = curve.supply(y * YEAR_DAYS * curve.epoch)
        rate = 0.0 if y == 0 else (s - previous) / previous * 100
        rows.append((y, s, rate))
        previous = s
    return rows


def plot(curve: Curve, years: int, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days = range(0, years * YEAR_DAYS + 1, 5)
    xs = [d / YEAR_DAYS for d in days]
    supply = [curve.supply(d * curve.epoch) / UNIT / 1e6 for d in days]
    rate = [
        (curve.supply((d + YEAR_DAYS) * curve.epoch) - curve.supply(d * curve.epoch))
        / curve.supply(d * curve.epoch)
        * 100
        for d in days
    ]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    ax.plot(xs, supply, color="tab:blue", label="supply (emission released)")
    ax.axhline(curve.cap / UNIT / 1e6, color="tab:blue", ls="--", lw=1, label="cap")
    ax.axhline(curve.initial / UNIT / 1e6, color="grey", ls=":", lw=1, label="initial supply")
    ax.set_xlabel("years since deployment")
    ax.set_ylabel("DIN (millions)")
    ax.set_xlim(0, years)
    ax.grid(alpha=0.3)
    right = ax.twinx()
    right.plot(xs, rate, color="tab:orange", label="inflation over the next year")
    right.set_ylabel("annual inflation (%)")
    right.set_ylim(0, max(rate) * 1.15)
    lines = ax.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="center right", fontsize=8)
    ax.set_title(
        f"DIN supply: {curve.emission / UNIT:,.0f} DIN/day decaying {curve.decay / 100:g} % a day"
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def main() -> int:
    from din_cli.chain.din import ECONOMY, TOKEN_UNIT

    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--years", type=int, default=20)
    ap.add_argument("--out", default=str(REPO / "docs" / "supply.png"))
    ap.add_argument("--no-check", action="store_true", help="skip the on-chain cross-check")
    args = ap.parse_args()

    import inspect

    from din_cli.chain.din import deploy_all

    initial = inspect.signature(deploy_all).parameters["initial_supply"].default
    assert initial == 10**9 * TOKEN_UNIT
    curve = Curve(ECONOMY, initial)
    print(
        f"initial supply {initial / UNIT:,.0f} DIN; epoch {curve.epoch} s; first epoch "
        f"{curve.emission / UNIT:,.0f} DIN, decaying {curve.decay} bps an epoch; "
        f"cap {curve.cap / UNIT:,.0f} DIN"
    )
    print()
    print(f"{'year':>4}  {'supply (DIN)':>22}  {'released (DIN)':>20}  {'inflation':>9}")
    for y, s, rate in table(curve, args.years):
        print(f"{y:>4}  {s / UNIT:>22,.0f}  {(s - initial) / UNIT:>20,.0f}  {rate:>8.3f}%")
    horizon = args.years * YEAR_DAYS * curve.epoch
    drops = curve.decreasing_boundaries(horizon)
    print()
    if drops:
        worst = max(d for _, d in drops)
        print(
            f"scheduled() decreases at {len(drops)} epoch boundaries within {args.years} years "
            f"(first at epoch {drops[0][0]}, at most {worst} units): _pow's flooring"
        )
    else:
        print(f"scheduled() never decreases within {args.years} years (every epoch boundary)")

    if not args.no_check:
        day, year = curve.epoch, YEAR_DAYS * curve.epoch
        points = [0, 1, day - 1, day, day + 1, 10 * day + 12345, year, 7 * year + 3, horizon]
        points += [horizon + 17 * day, 100 * year]
        rows = cross_check(curve, dict(ECONOMY), initial, points)
        bad = [(t, got, want) for t, got, want in rows if got != want]
        print(
            f"cross-check against the contract's scheduled(t): {len(rows) - len(bad)}/{len(rows)}"
        )
        for t, got, want in rows:
            mark = "ok" if got == want else f"MISMATCH (replica {want})"
            print(f"  t = {t:>11} s  scheduled = {got:>34}  {mark}")
        if bad:
            return 1

    plot(curve, args.years, Path(args.out))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
