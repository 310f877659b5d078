"""Probability that a wrong subgroup result survives, with and without the dispute path.

A subgroup's aggregate (or score vector) is accepted when a strict majority of its
``v`` validators reveal it. Validators are drawn without replacement from a staked set
of ``N`` equal stake units, a fraction ``f`` of which is dishonest and colludes.

- Without disputes, a wrong result survives whenever the dishonest validators hold a
  strict majority of the subgroup: P(X > v/2), X ~ Hypergeometric(N, fN, v).
- With the dispute path, an honest validator of the subgroup (or, for open updates,
  anyone) who sees the wrong result files a dispute; a committee of ``c`` validators
  drawn at random from the whole staked set *after* the filing decides by strict
  majority. The wrong result survives only if the committee also has a dishonest
  strict majority, or if nobody able to check was honest (a fully dishonest subgroup
  when updates are sealed to the subgroup):

      sealed: P(X = v) + P(v/2 < X < v) * P(Y > c/2)
      open:   P(X > v/2) * P(Y > c/2)

  with Y ~ Hypergeometric(N - v, D - X, c), the committee drawn from the validators
  outside the subgroup (D = fN dishonest units in all).

This is the dispute path as built (DinDisputes, `din round dispute`, `din dispute`):
the committee is drawn after the filing from the whole staked set, never the
filer or the disputed subgroup's validators, and its size is fixed at
deployment (``DISPUTE_COMMITTEE``, 21 by default, odd). With fewer eligible
stakers the committee is smaller (the largest odd number available, at least 3),
and a smaller committee is easier to capture: run with ``--committee`` to see it.
The README's "Disputes" table is this script's default output, and
tests/test_dispute_odds.py checks it is, and the formulas against brute-force
enumeration.

    python scripts/dispute_odds.py [--staked 1000] [--committee 21 [--committee 101]]
"""

from __future__ import annotations

import argparse
from fractions import Fraction
from math import comb

FRACTIONS = (0.10, 0.20, 1 / 3, 0.40, 0.49)
SUBGROUPS = (3, 5, 7)
COMMITTEES = (21,)  # the deployed size (din_cli.chain.din.DISPUTE_COMMITTEE)


def hypergeom_pmf(population: int, successes: int, draws: int, k: int) -> Fraction:
    """P(exactly k successes) drawing ``draws`` without replacement."""
    if k < 0 or k > draws or k > successes or draws - k > population - successes:
        return Fraction(0)
    return Fraction(
        comb(successes, k) * comb(population - successes, draws - k), comb(population, draws)
    )


def majority_dishonest(population: int, dishonest: int, draws: int) -> Fraction:
    """P(dishonest draws form a strict majority)."""
    return sum(
        (hypergeom_pmf(population, dishonest, draws, k) for k in range(draws // 2 + 1, draws + 1)),
        Fraction(0),
    )


def survival(
    staked: int, dishonest: int, subgroup: int, committee: int | None, *, sealed: bool = True
) -> Fraction:
    """P(a wrong result is accepted and stands), per subgroup and round.

    ``committee=None`` is the protocol without disputes.
    """
    total = Fraction(0)
    for x in range(subgroup // 2 + 1, subgroup + 1):
        p_x = hypergeom_pmf(staked, dishonest, subgroup, x)
        if p_x == 0:
            continue
        if committee is None or (sealed and x == subgroup):
            total += p_x
            continue
        rest = staked - subgroup
        total += p_x * majority_dishonest(rest, dishonest - x, min(committee, rest))
    return total


def table(staked: int, committees: tuple[int, ...] = COMMITTEES) -> list[dict]:
    rows = []
    for f in FRACTIONS:
        dishonest = round(f * staked)
        for v in SUBGROUPS:
            row = {
                "fraction": f,
                "subgroup": v,
                "no_dispute": float(survival(staked, dishonest, v, None)),
            }
            for c in committees:
                row[f"sealed_c{c}"] = float(survival(staked, dishonest, v, c, sealed=True))
                row[f"open_c{c}"] = float(survival(staked, dishonest, v, c, sealed=False))
            rows.append(row)
    return rows


def markdown(staked: int, committees: tuple[int, ...] = COMMITTEES) -> str:
    cols = ["no_dispute"] + [f"{m}_c{c}" for c in committees for m in ("sealed", "open")]
    heads = ["dishonest stake", "subgroup validators", "no dispute"] + [
        f"{m}, committee {c}" for c in committees for m in ("sealed", "open")
    ]
    lines = [
        f"Staked set: {staked} equal stake units. Probability that a wrong subgroup result"
        " is accepted and stands, per subgroup and round.",
        "",
        "| " + " | ".join(heads) + " |",
        "|" + "---|" * len(heads),
    ]
    for r in table(staked, committees):
        cells = [f"{r['fraction']:.0%}", str(r["subgroup"])] + [_fmt(r[c]) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(p: float) -> str:
    return "0" if p == 0 else f"{p:.2e}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--staked", type=int, default=1000, help="stake units in the staked set")
    parser.add_argument(
        "--committee",
        type=int,
        action="append",
        help=f"committee size (repeatable; default {COMMITTEES[0]}, the deployed one)",
    )
    args = parser.parse_args(argv)
    committees = tuple(args.committee or COMMITTEES)
    if any(c < 3 or c % 2 == 0 for c in committees):
        parser.error("a committee size is odd and at least 3")
    print(markdown(args.staked, committees))


if __name__ == "__main__":
    main()
