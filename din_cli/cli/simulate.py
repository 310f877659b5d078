"""`din simulate`: one whole task with many simulated actors, on Ray workers."""

from __future__ import annotations

import click

from din_cli.cli import output
from din_cli.cli.options import json_option, quiet_option


@click.command("simulate")
@click.argument("scenario", type=click.Path(dir_okay=False))
@click.option(
    "--out",
    "out",
    metavar="DIR",
    required=True,
    help="Folder for the run's chain, store, report.json and report.png (new or empty).",
)
@click.option(
    "--address",
    metavar="ADDR",
    default=None,
    help="A Ray cluster to run the workers on (ray://HOST:PORT or auto); default: Ray on this machine.",
)
@click.option(
    "--participants",
    type=click.IntRange(min=1),
    default=None,
    help="Override the scenario's task.participants.",
)
@click.option("--chain", "chain", metavar="URL", default=None, help="Override run.chain.")
@json_option("Print the whole report as JSON on stdout.")
@quiet_option()
def simulate(scenario, out, address, participants, chain, as_json):
    """Run one whole DIN task with the participants and validators SCENARIO.toml describes.

    Every actor acts through din's own protocol code on the real contracts:
    participants train on their own stores (cut from a bundled dataset) on
    Ray workers and submit in batches of transactions; validators aggregate,
    commit, reveal, attest and score on the workers; the owner publishes,
    finalizes, posts the encrypted test set and settles; then everyone
    claims. Behaviours (dropouts, stragglers, free-riders, copycats,
    poisoners, noisy labels, colluding validators) are fractions drawn from
    the scenario's seed. Phases that someone skipped end at their deadline
    on the dev chain's clock.

    Prints the report's path (report.json; with --json the report itself)
    and a short table on stderr: wall time by stage, gas by actor and per
    participant per round, accuracy by round, the payouts' rank correlation
    with each participant's true quality, what attackers were paid and which
    colluders were slashed, and the share of subgroups with a dishonest
    majority beside its hypergeometric prediction. report.png plots them.
    Needs Ray and matplotlib (pip install 'din-cli[sim]'); run.chain
    "anvil" starts an anvil node for the run, and a Ray cluster needs an
    http:// chain it can reach.

    \b
    Example:
        din simulate examples/simulate/small.toml --out runs/small
        din simulate benchmarks/scale/n1000.toml --out runs/n1000 --json | jq .gas
    """
    from pathlib import Path

    from din_cli.sim import report as rep
    from din_cli.sim.engine import simulate as run
    from din_cli.sim.scenario import load

    sc = load(scenario)
    if participants is not None:
        sc.task.participants = participants
    if chain is not None:
        sc.run.chain = chain
    doc = run(sc, out, address=address, say=output.note)
    output.table(
        f"din simulate {sc.name}", ["figure", "value"], [list(r) for r in rep.summary_rows(doc)]
    )
    if as_json:
        output.emit_json(doc)
    else:
        output.emit(str(Path(out) / "report.json"))
