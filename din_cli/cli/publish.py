"""`din model publish`: add a genesis model to the content store and create a task for it."""

from __future__ import annotations

import click

from din_cli.cli import output
from din_cli.cli.options import acting_options, context, rule_options


@click.command("publish")
@click.argument("model", metavar="FILE")
@click.option(
    "--test-set",
    "test_set",
    required=True,
    metavar="FILE",
    type=click.Path(exists=True, dir_okay=False),
    help="The plaintext test set you will post after training; the task commits to its sha256 now.",
)
@click.option(
    "--deposit",
    required=True,
    metavar="AMOUNT",
    help="Reward deposit in DIN (approved and locked).",
)
@click.option(
    "--subgroup-size",
    type=click.IntRange(1, None),
    default=10,
    show_default=True,
    help="Participants per subgroup.",
)
@click.option(
    "--validators-per-subgroup", type=click.IntRange(1, None), default=3, show_default=True
)
@click.option(
    "--rounds",
    type=click.IntRange(1, 65535),
    default=1,
    show_default=True,
    help="Most training rounds.",
)
@click.option(
    "--fee",
    "fee_bps",
    type=click.IntRange(0, 10000),
    default=1000,
    show_default=True,
    metavar="BPS",
    help="Validators' share of the deposit, in basis points.",
)
@click.option(
    "--max-samples",
    type=click.IntRange(1, 2**32 - 1),
    default=2**16,
    show_default=True,
    metavar="N",
    help="Cap on one participant's weight in an aggregate: declared samples above N count as N.",
)
@click.option(
    "--metric",
    type=click.Choice(["accuracy", "f1", "loss"]),
    default="accuracy",
    show_default=True,
    help="What validators score participants with (fixed on chain; `din evaluate --task` uses it).",
)
@click.option(
    "--scoring",
    type=click.Choice(["gtg", "exact", "loo", "update"]),
    default="gtg",
    show_default=True,
    help="How validators score participants (fixed on chain): gtg (GTG-Shapley estimate), exact "
    "(Shapley, subgroups of at most 16), loo (leave-one-out) contribution to each round's model "
    "on that round's test rows, summed over the rounds; update: each latest update scored alone.",
)
@rule_options(
    "How every subgroup aggregates (fixed on chain; see `din aggregate --rule`).",
    clip_from="the round's starting model",
)
@click.option(
    "--dp-clip",
    default=None,
    metavar="C",
    help="Differential privacy (fixed on chain): every update's L2 distance from the round's start is clipped to C.",
)
@click.option(
    "--dp-noise",
    default=None,
    metavar="Z",
    help="With --dp-clip: Gaussian noise of std Z*C is added to every weight before the update leaves its participant.",
)
@click.option(
    "--dp-delta",
    default=None,
    metavar="D",
    help="With --dp-clip: the delta of the (epsilon, delta) that `din privacy report` gives.  [default: 1e-5]",
)
@click.option(
    "--privacy",
    "privacy_mode",
    type=click.Choice(["sealed", "secagg", "open"]),
    default="sealed",
    show_default=True,
    help="Who can read participants' updates (fixed on chain): sealed, each update is encrypted "
    "to its subgroup's validators, who grant its key to the evaluation validators and to a "
    "dispute committee only; secagg, nobody: updates are masked (secure aggregation) and only "
    "each subgroup's sum is opened; open, anyone (for open-source models whose owners choose it).",
)
@click.option(
    "--secagg-threshold",
    default=None,
    metavar="F",
    help="With --privacy secagg: the fraction of a participant's neighbours (above 0.5) whose "
    "shares unmask it; up to the rest may drop out.  [default: 0.666667]",
)
@click.option(
    "--phase-seconds",
    type=click.IntRange(1, None),
    default=None,
    metavar="S",
    help="Length of every phase (default: 30-60 min each).",
)
@acting_options(ipfs=True)
def model_publish(
    model,
    test_set,
    deposit,
    subgroup_size,
    validators_per_subgroup,
    rounds,
    fee_bps,
    max_samples,
    metric,
    scoring,
    rule,
    clip_norm,
    trim,
    dp_clip,
    dp_noise,
    dp_delta,
    privacy_mode,
    secagg_threshold,
    phase_seconds,
    chain_url,
    ipfs_api,
    key_name,
    as_json,
):
    """Add the genesis MODEL to the content store and create a task with a reward deposit; prints the task id.

    The task commits to the sha256 of --test-set FILE: validators refuse to score
    a test set whose plaintext differs, so the owner cannot pick it after seeing
    the updates. --json prints the task id, the model's CID, its architecture and the deposit.

    --dp-clip C --dp-noise Z [--dp-delta D] make the task differentially
    private: each participant's `din train --task` clips its update's
    distance from the round's start to C and adds Gaussian noise of std Z*C
    (from a CSPRNG) before submitting; with --privacy secagg it adds only its
    share of a discrete Gaussian on the integer grid, so that each opened
    sum carries Z. `din privacy report` gives each participant's (epsilon,
    delta) over the rounds it took part in.

    \b
    Example:
        TASK=$(din model publish genesis.safetensors --test-set stores/test.npz --deposit 1000 --rounds 3 --key owner)
        din model publish genesis.safetensors --test-set stores/test.npz --deposit 10 --key owner --json | jq -r .cid
    """
    from din_cli.chain.din import file_sha256
    from din_cli.chain.network import format_amount, parse_amount
    from din_cli.ml import privacy
    from din_cli.protocol import roundflow

    privacy.encode(dp_clip, dp_noise, dp_delta)  # bad DP parameters fail before anything is added
    units = parse_amount(deposit)
    options = dict(
        subgroup_size=subgroup_size,
        validators_per_subgroup=validators_per_subgroup,
        max_rounds=rounds,
        fee_bps=fee_bps,
        max_samples=max_samples,
        metric=metric,
        scoring=scoring,
        aggregation=rule,
        clip_norm=clip_norm,
        trim=trim,
        dp_clip=dp_clip,
        dp_noise=dp_noise,
        dp_delta=dp_delta,
        privacy_mode=privacy_mode,
        secagg_threshold=secagg_threshold,
        test_set_hash=file_sha256(test_set),
    )
    if phase_seconds:
        from din_cli.chain.din import DURATION_NAMES

        options["durations"] = {name: phase_seconds for name in DURATION_NAMES}
    with context(chain_url, ipfs_api, key_name) as ctx:
        doc = roundflow.publish(ctx, model, units, **options)
    output.note(
        f"task {doc['task_id']}: {doc['arch']} model {doc['cid']}, deposit {format_amount(units)} DIN"
    )
    output.emit_doc(doc, as_json, doc["task_id"])
