"""What a simulation measured: the report's dict, its short table, and its plots.

Payouts are read back from the chain's ``Claimed`` events, slashes from
``ValidatorSlashed``/``ValidatorPenalised``; gas from every receipt the run's
transactions produced. A participant's *true quality* (for the rank
correlation) is the number of correctly labelled rows it trained on in the
rounds it took part in: an honest store's rows, 40 % of a 30 %-noisy store's
(its wrong rows also pull the model away), nothing for a free-rider, a
copycat or a poisoner.
"""

from __future__ import annotations

import json
import statistics
from math import comb
from pathlib import Path

from din_cli.sim.scenario import ATTACKERS

UNIT = 10**18


def spearman(a: list[float], b: list[float]) -> float | None:
    """Spearman's rank correlation with average ranks for ties; None when either side is constant."""

    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        out = [0.0] * len(v)
        i = 0
        while i < len(v):
            j = i
            while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2
            i = j + 1
        return out

    if len(a) < 2:
        return None
    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    va = sum((x - ma) ** 2 for x in ra) ** 0.5
    vb = sum((y - mb) ** 2 for y in rb) ** 0.5
    return cov / (va * vb) if va and vb else None


def dishonest_majority_odds(validators: int, colluders: int, per_group: int) -> float:
    """P(a subgroup's ``per_group`` validators, drawn without replacement, are a strict colluding majority)."""
    if per_group <= 0 or validators < per_group:
        return 0.0
    need = per_group // 2 + 1
    total = comb(validators, per_group)
    return (
        sum(
            comb(colluders, x) * comb(validators - colluders, per_group - x)
            for x in range(need, min(per_group, colluders) + 1)
        )
        / total
    )


def quality(actor, discarded: set[int]) -> float:
    """Clean rows times the counted rounds (not ones a dispute discarded) it submitted in."""
    if actor.kind in ATTACKERS:
        return 0.0
    clean = actor.rows * (0.4 if actor.kind == "noisy" else 1.0)
    return clean * len([r for r in actor.rounds if r not in discarded])


def build(sim) -> dict:
    """The report of a finished ``Simulation``; also written to ``report.json`` and ``report.png``."""
    sc, din, task = sim.sc, sim.din, sim.task
    t = sc.task
    role = {sim.owner.ident.address: "owner"}
    role.update({p.ident.address: "participant" for p in sim.parts})
    role.update({v.ident.address: "validator" for v in sim.vals})
    gas_by_actor: dict[str, int] = {}
    gas_by_fn: dict[str, dict] = {}
    for sender, name, gas in sim.gas:
        who = role.get(sender, "deployer")
        gas_by_actor[who] = gas_by_actor.get(who, 0) + gas
        f = gas_by_fn.setdefault(name, {"count": 0, "gas": 0})
        f["count"] += 1
        f["gas"] += gas
    for f in gas_by_fn.values():
        f["mean"] = f["gas"] // max(1, f["count"])
    task_gas = sum(g for who, g in gas_by_actor.items() if who != "deployer")
    ran = max(1, len(sim.rounds))  # rounds run, replays after upheld disputes included
    paid: dict[str, int] = {}
    for e in din.events(task, "Claimed"):
        a = e["args"]["account"]
        paid[a] = paid.get(a, 0) + int(e["args"]["amount"])
    slashed: dict[str, int] = {}
    for name in ("ValidatorSlashed", "ValidatorPenalised"):
        for e in din.events(task, name):
            a = e["args"]["validator"]
            slashed[a] = slashed.get(a, 0) + int(e["args"]["amount"])

    discarded = set(din.discarded_rounds(task))
    parts = []
    for p in sim.parts:
        parts.append(
            {
                "address": p.ident.address,
                "kind": p.kind,
                "rows": p.rows,
                "straggler": p.straggler,
                "rounds": p.rounds,
                "quality": quality(p, discarded),
                "paid": paid.get(p.ident.address, 0) / UNIT,
            }
        )
    honest = [x["paid"] for x in parts if x["kind"] == "honest" and x["rounds"]]
    median = statistics.median(honest) if honest else 0.0
    attackers: dict[str, dict] = {}
    for kind in ATTACKERS:
        got = [x["paid"] for x in parts if x["kind"] == kind]
        if got:
            attackers[kind] = {
                "count": len(got),
                "paid_max": max(got),
                "paid_max_of_honest_median": (max(got) / median) if median else None,
                "paid_nothing": sum(1 for g in got if g == 0),
            }
    colluders = [v for v in sim.vals if v.kind == "colluder"]
    vals = {
        "count": len(sim.vals),
        "colluders": len(colluders),
        "colluders_slashed": sum(1 for v in colluders if slashed.get(v.ident.address)),
        "honest_slashed": sum(
            1 for v in sim.vals if v.kind != "colluder" and slashed.get(v.ident.address)
        ),
        "colluders_paid": sum(paid.get(v.ident.address, 0) for v in colluders) / UNIT,
        "honest_paid": sum(paid.get(v.ident.address, 0) for v in sim.vals if v.kind != "colluder")
        / UNIT,
    }
    evaluated = getattr(sim, "eval_dishonest", None) is not None
    rnd0 = din.round_info(task, 0) if evaluated else None
    per = rnd0.per_group if rnd0 is not None else t.validators_per_subgroup
    groups_seen = sum(x["groups"] for x in sim.rounds) + (rnd0.groups if evaluated else 0)
    dishonest_seen = sum(x["dishonest_majority"] for x in sim.rounds) + (
        sim.eval_dishonest if evaluated else 0
    )
    work_by_round = []
    for v, steps in sim.work.items():
        agg = sum(
            c for s, c in steps.items() if s in ("aggregate-commit", "aggregate-reveal", "attest")
        )
        ev = sum(c for s, c in steps.items() if s in ("score-commit", "score-reveal", "grant-keys"))
        work_by_round.append((v, agg / ran, ev))
    report = {
        "scenario": sc.as_dict(),
        "task": task,
        "participants": len(sim.parts),
        "validators": len(sim.vals),
        "groups": t.groups,
        "validators_per_group": per,
        "wall_s": round(sim.wall, 2),
        "stages_s": {k: round(v, 2) for k, v in sim.stages.items()},
        "rounds": sim.rounds,
        "final_accuracy": sim.rounds[-1]["accuracy"] if sim.rounds else None,
        "transactions": len(sim.gas),
        "gas": {
            "by_actor": gas_by_actor,
            "by_function": gas_by_fn,
            "task_total": task_gas,
            "per_participant_per_round": task_gas / (len(sim.parts) * ran),
            "participants_per_participant_per_round": gas_by_actor.get("participant", 0)
            / (len(sim.parts) * ran),
        },
        "validator_cpu_s": {
            "aggregation_per_round_mean": statistics.fmean([w[1] for w in work_by_round])
            if work_by_round
            else 0.0,
            "aggregation_per_round_max": max((w[1] for w in work_by_round), default=0.0),
            "evaluation_mean": statistics.fmean([w[2] for w in work_by_round])
            if work_by_round
            else 0.0,
            "evaluation_max": max((w[2] for w in work_by_round), default=0.0),
        },
        "rewards": {
            "spearman_payout_vs_quality": spearman(
                [x["paid"] for x in parts], [x["quality"] for x in parts]
            ),
            "honest_median": median,
            "attackers": attackers,
            "paid_total": sum(paid.values()) / UNIT,
        },
        "validators_outcome": vals,
        "dishonest_majority": {
            "observed": dishonest_seen,
            "subgroups": groups_seen,
            "observed_fraction": dishonest_seen / groups_seen if groups_seen else 0.0,
            "predicted_fraction": dishonest_majority_odds(len(sim.vals), len(colluders), per),
            "binomial_fraction": _binomial(len(colluders) / max(1, len(sim.vals)), per),
        },
        "peak_rss_bytes": sim.peaks,
        "disputes": sim.disputes,
        "failures": dict(sim.failures),
        "notes": sim.notes,
        "participants_detail": parts,
    }
    try:
        plot(report, sim.out / "report.png")
    except ImportError:
        report["notes"].append("no plots: matplotlib is not installed")
    from din_cli.files import write_atomic

    write_atomic(sim.out / "report.json", (json.dumps(report, indent=2) + "\n").encode())
    return report


def _binomial(p: float, k: int) -> float:
    need = k // 2 + 1
    return sum(comb(k, x) * p**x * (1 - p) ** (k - x) for x in range(need, k + 1))


def summary_rows(report: dict) -> list[tuple[str, str]]:
    """The short table printed on stderr: (figure, value) pairs."""
    g = report["gas"]
    rw = report["rewards"]
    dm = report["dishonest_majority"]
    rows = [
        (
            "participants / validators / subgroups",
            f"{report['participants']} / {report['validators']} / {report['groups']}",
        ),
        ("wall time", f"{report['wall_s']:.1f} s"),
    ]
    for k, v in report["stages_s"].items():
        rows.append((f"  {k}", f"{v:.1f} s"))
    rows.append(("accuracy by round", " ".join(f"{r['accuracy']:.3f}" for r in report["rounds"])))
    rows.append(("transactions", str(report["transactions"])))
    rows.append(("gas per participant per round", f"{g['per_participant_per_round']:,.0f}"))
    for who, v in sorted(g["by_actor"].items()):
        rows.append((f"  gas {who}", f"{v:,}"))
    sp = rw["spearman_payout_vs_quality"]
    rows.append(("payout vs quality (Spearman)", "n/a" if sp is None else f"{sp:.3f}"))
    rows.append(("honest median payout", f"{rw['honest_median']:.3f} DIN"))
    for kind, a in rw["attackers"].items():
        share = a["paid_max_of_honest_median"]
        rows.append(
            (
                f"  {kind} x{a['count']}",
                f"max {a['paid_max']:.3f} DIN"
                + ("" if share is None else f" ({100 * share:.2f} % of median)"),
            )
        )
    vo = report["validators_outcome"]
    rows.append(
        (
            "colluders slashed",
            f"{vo['colluders_slashed']}/{vo['colluders']} (honest slashed {vo['honest_slashed']})",
        )
    )
    rows.append(
        (
            "dishonest-majority subgroups",
            f"{dm['observed']}/{dm['subgroups']} observed, {100 * dm['predicted_fraction']:.3f} % predicted",
        )
    )
    vc = report["validator_cpu_s"]
    rows.append(
        (
            "validator CPU / round (mean, max)",
            f"{vc['aggregation_per_round_mean']:.3f} s, {vc['aggregation_per_round_max']:.3f} s",
        )
    )
    rows.append(
        ("peak memory, coordinator", f"{report['peak_rss_bytes']['coordinator'] / 2**20:.0f} MiB")
    )
    return rows


def plot(report: dict, path: Path) -> None:
    """Four panels: accuracy by round, wall time by stage, gas by actor, payout against quality."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 2, figsize=(11, 8))
    rounds = report["rounds"]
    ax[0, 0].plot([r["round"] for r in rounds], [r["accuracy"] for r in rounds], marker="o")
    ax[0, 0].set(title="global model accuracy", xlabel="round", ylabel="accuracy")
    ax[0, 0].set_xticks([r["round"] for r in rounds])
    stages = report["stages_s"]
    ax[0, 1].barh(list(stages), list(stages.values()))
    ax[0, 1].set(title=f"wall time by stage ({report['wall_s']:.0f} s)", xlabel="seconds")
    by = report["gas"]["by_actor"]
    ax[1, 0].bar(list(by), [v / 1e6 for v in by.values()])
    ax[1, 0].set(title="gas by actor", ylabel="million gas")
    detail = report["participants_detail"]
    kinds = sorted({d["kind"] for d in detail})
    for k in kinds:
        xs = [d["quality"] for d in detail if d["kind"] == k]
        ys = [d["paid"] for d in detail if d["kind"] == k]
        ax[1, 1].scatter(xs, ys, s=8, label=k)
    sp = report["rewards"]["spearman_payout_vs_quality"]
    ax[1, 1].set(
        title="payout against true quality" + ("" if sp is None else f" (Spearman {sp:.2f})"),
        xlabel="clean rows x rounds",
        ylabel="DIN",
    )
    ax[1, 1].legend(fontsize=7)
    fig.suptitle(
        f"{report['scenario']['name']}: {report['participants']} participants, "
        f"{report['validators']} validators, {report['groups']} subgroups"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
