"""Offline ML commands: model init/info, data split, train, aggregate, evaluate."""

from __future__ import annotations

import click

from din_cli.cli import output as out
from din_cli.cli.options import (
    acting_options,
    chain_option,
    context,
    ipfs_option,
    json_option,
    key_option,
    output_option,
    parse_scores,
    quiet_option,
    require_one_step,
    round_option,
    rule_options,
    task_option,
)

DEVICE = click.Choice(["auto", "cpu", "cuda"])


@click.command("init")
@click.option(
    "--arch",
    required=True,
    metavar="ARCH",
    help="Architecture, e.g. mlp:64-128-10, logreg:64-10, cnn:1x8x8-10.",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the initial weights.")
@click.option("--task", default="", metavar="ID", help="Task id recorded in the file's metadata.")
@output_option()
def model_init(arch, seed, task, output):
    """Make a genesis model: a canonical safetensors file for ARCH.

    The same arch and seed always give the same bytes (hence the same CID).

    \b
    Example:
        din model init --arch mlp:64-128-10 --seed 1 -o genesis.safetensors
        din model init --arch logreg:64-10 -o - | din model info -
    """
    from din_cli.ml.models import init_model

    init_model(arch, output, seed=seed, task=task)
    if output != "-":
        out.emit(output)


@click.command("info")
@click.argument("model", metavar="FILE|CID|-")
@ipfs_option()
@json_option()
def model_info(model, ipfs_api, as_json):
    """Print a model file's architecture, kind, samples, round and parameter count.

    \b
    Example:
        din model init --arch mlp:64-32-10 -o - | din model info --json -
    """
    from din_cli.ml.models import describe
    from din_cli.protocol.inputs import resolved

    with resolved([model], ipfs_api) as (path,):
        info = describe(path)
    out.emit_doc(info, as_json, *(f"{k}\t{v}" for k, v in info.items()))


@click.command("split")
@click.option(
    "--dataset",
    required=True,
    metavar="NAME|FILE",
    help="digits, breast_cancer, wine, iris, or a CSV/NPZ/safetensors store.",
)
@click.option(
    "--participants",
    required=True,
    type=click.IntRange(min=1),
    help="Number of participant stores.",
)
@click.option(
    "--alpha",
    type=float,
    default=None,
    metavar="A",
    help="Dirichlet concentration for non-IID splits (omit for IID).",
)
@click.option(
    "--test-fraction",
    type=float,
    default=0.4,
    show_default=True,
    help="Share of rows reserved as the model owner's test pool.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every random choice.")
@click.option(
    "--shuffle-labels",
    "shuffle",
    type=int,
    multiple=True,
    metavar="K",
    help="Corrupt participant K's labels (1-based; repeatable): a dishonest participant.",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    metavar="DIR",
    help="Folder for participant-NN.npz and test.npz.",
)
def data_split(dataset, participants, alpha, test_fraction, seed, shuffle, out_dir):
    """Split a dataset into one store per participant plus a reserved test pool.

    Prints the paths written, one per line (test.npz last).

    \b
    Example:
        din data split --dataset digits --participants 10 --alpha 0.5 --out stores
        din data split --dataset iris --participants 3 --out iris | tail -n 1
    """
    from din_cli.ml.data import split

    paths = split(
        dataset,
        out_dir,
        participants=participants,
        alpha=alpha,
        test_fraction=test_fraction,
        seed=seed,
        shuffle_labels=tuple(shuffle),
    )
    out.emit(*paths)


@click.command("train")
@click.option(
    "--model",
    "model",
    default=None,
    metavar="FILE|CID|-",
    help="The global model to start from (not with --task).",
)
@click.option(
    "--data",
    required=True,
    metavar="STORE",
    help="Local data store: CSV, NPZ, safetensors, or a folder.",
)
@click.option("--epochs", default=1, show_default=True, type=int)
@click.option("--lr", default=0.1, show_default=True, type=float, help="SGD learning rate.")
@click.option("--batch-size", default=32, show_default=True, type=int)
@click.option(
    "--seed",
    default=None,
    type=int,
    help="Seed of the batch order.  [default: 0; with --task, the round]",
)
@click.option(
    "--device", type=DEVICE, default="auto", show_default=True, help="auto uses CUDA when present."
)
@task_option("Train for TASK's current round: the model comes from the chain.", required=False)
@click.option(
    "--submit",
    is_flag=True,
    help="With --task: add the update to the content store and submit its CID.",
)
@click.option(
    "--dp-budget",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="EPS",
    help="With --task: refuse a round that would take your epsilon in a differentially private task above EPS.",
)
@click.option(
    "--dp-clip",
    default=None,
    metavar="C",
    help="Offline: clip the update's L2 distance from --model to C (a task fixes its own).",
)
@click.option(
    "--dp-noise",
    default=None,
    metavar="Z",
    help="Offline, with --dp-clip: add Gaussian noise of std Z*C (CSPRNG) to every weight.",
)
@ipfs_option()
@chain_option()
@key_option()
@output_option()
@json_option()
@quiet_option()
def train(
    model,
    data,
    epochs,
    lr,
    batch_size,
    seed,
    device,
    task,
    submit,
    dp_budget,
    dp_clip,
    dp_noise,
    ipfs_api,
    chain_url,
    key_name,
    output,
    as_json,
):
    """Train a model on a local data store and write the update with its sample count.

    The same inputs and seed give the same bytes on the CPU, and on a GPU
    (--device cuda: torch's deterministic algorithms, no TF32) the same
    bytes on the same GPU model and software. With --task
    TASK --submit a participant trains the round's global model (fetched by
    the CID on chain), adds the update and submits its CID; it prints the
    CID, and running it again in the same round exits 7 (already done).

    In a differentially private task (`din model publish --dp-clip`) the
    update is clipped and noised as the task fixed before it leaves this
    machine; --dp-budget EPS refuses (exit 2, nothing trained) a round that
    would take your epsilon above EPS (see `din privacy report`). Offline,
    --dp-clip C --dp-noise Z do the same around --model.

    \b
    Example:
        din train --model genesis.safetensors --data stores/participant-01.npz -o u1.safetensors
        din ipfs cat "$GLOBAL_CID" | din train --model - --data mine.csv -o - | din ipfs add -
        din train --task 1 --data stores/participant-01.npz --submit --key dev2 | xargs din model info
    """
    hyper = dict(epochs=epochs, lr=lr, batch_size=batch_size, device=device)
    if task is not None or submit:
        if task is None:
            raise click.UsageError("--submit needs --task TASK")
        if model is not None or output != "-":
            raise click.UsageError(
                "--task takes the model from the chain and submits the update: drop --model and -o"
            )
        if dp_clip is not None or dp_noise is not None:
            from din_cli.errors import UsageError

            raise UsageError(
                "--task applies the differential privacy the task fixed at publish",
                "drop --dp-clip and --dp-noise",
            )
        _train_on_task(
            task, data, submit, seed, hyper, dp_budget, chain_url, ipfs_api, key_name, as_json
        )
        return
    if model is None:
        raise click.UsageError("Missing option '--model' (or give --task TASK --submit).")
    if dp_budget is not None:
        from din_cli.errors import UsageError

        raise UsageError(
            "--dp-budget counts a task's rounds and needs --task TASK --submit",
            "drop --dp-budget offline",
        )
    import tempfile

    from din_cli.ml import privacy
    from din_cli.ml.train import train as run
    from din_cli.protocol.inputs import resolved

    dp = None
    if dp_clip is not None or dp_noise is not None:
        dp = privacy.decode(*privacy.encode(dp_clip, dp_noise))
    with (
        resolved([model], ipfs_api) as (path,),
        tempfile.TemporaryDirectory() as tmp,
        out.progress("training", total=epochs) as advance,
    ):
        trained = output if dp is None else f"{tmp}/update.safetensors"
        seed = 0 if seed is None else seed
        result = run(path, data, trained, seed=seed, progress=advance, **hyper)
        if dp is not None:
            done = privacy.privatize(trained, path, output, dp)
            out.note(
                f"update clipped from L2 distance {done.norm:.6g} to {dp.clip}"
                if done.clipped
                else f"update within the clip (L2 distance {done.norm:.6g})"
            )
    _note_device(result.device, result.deterministic)
    if output != "-":
        out.emit(output)


def _note_device(device: str, deterministic: bool) -> None:
    if device != "cuda":
        return
    if deterministic:
        out.note("trained on cuda with torch's deterministic algorithms (repeatable on this GPU)")
    else:
        out.note("trained on cuda: an operation has no deterministic kernel, so a rerun may differ")


def _train_on_task(
    task, data, submit, seed, hyper, dp_budget, chain_url, ipfs_api, key_name, as_json
):
    """`din train --task TASK --data STORE --submit`: fetch the round's model, train, add, submit; prints the CID."""
    from din_cli.errors import UsageError
    from din_cli.protocol import roundflow

    if not submit:
        raise UsageError(
            "--task trains for the chain and needs --submit",
            "add --submit, or give --model FILE to train offline",
        )
    with (
        context(chain_url, ipfs_api, key_name) as ctx,
        out.progress("training", total=hyper["epochs"]) as advance,
    ):
        doc = roundflow.train_and_submit(
            ctx,
            roundflow.task_number(task),
            data,
            seed=seed,
            progress=advance,
            dp_budget=dp_budget,
            **hyper,
        )
    _note_device(doc["device"], doc["deterministic"])
    if doc["dp"]:
        out.note(
            f"differential privacy: update clipped to the task's bound and noised (std {doc['dp']['noise_std']:g}); "
            f"your epsilon is now {doc['dp']['epsilon']:.4g}"
        )
    out.note(
        f"task {doc['task_id']} round {doc['round']}: submitted {doc['samples']} samples' update"
    )
    out.emit_doc(doc, as_json, doc["cid"])


@click.command("aggregate")
@click.argument("inputs", nargs=-1, metavar="[FILE|CID]...")
@task_option("Aggregate your subgroup of TASK's current round (validators).", required=False)
@round_option("With --task: the round (default: the current one).")
@click.option(
    "--commit",
    is_flag=True,
    help="With --task: aggregate the subgroup's submitted updates and commit the result.",
)
@click.option("--reveal", is_flag=True, help="With --task: reveal the committed aggregate.")
@click.option(
    "--cid",
    default=None,
    metavar="CID",
    help="With --commit: commit this CID instead of computing the aggregate.",
)
@click.option(
    "--base",
    default=None,
    metavar="FILE|CID",
    help="The round's starting model: admit updates of its architecture only, exclude copies of it, and output it when every input is excluded.",
)
@click.option(
    "--max-samples",
    type=click.IntRange(1, 2**32 - 1),
    default=None,
    metavar="N",
    help="Cap each input's weight at N samples (a task's maxSamples).  [default: no cap]",
)
@rule_options(
    "Aggregation rule: the sample-weighted mean, or one that bounds a poisoned update's pull (see below)."
)
@click.option(
    "--device",
    type=DEVICE,
    default="auto",
    show_default=True,
    help="Where the weighted mean is summed; the same bytes on either (robust rules: CPU).",
)
@ipfs_option()
@chain_option()
@key_option()
@output_option()
@json_option()
@quiet_option()
def aggregate(
    inputs,
    task,
    round_,
    commit,
    reveal,
    cid,
    base,
    max_samples,
    rule,
    clip_norm,
    trim,
    device,
    ipfs_api,
    chain_url,
    key_name,
    output,
    as_json,
):
    """Average updates weighted by their samples, bit-exactly (FedAvg).

    Inputs come from the arguments or, when none are given, from stdin one
    per line. Each input goes through the admission rule every validator
    applies (canonical din file, one architecture, finite weights within
    +-1024, samples >= 1, no copies): an input that fails it is left out,
    named on stderr with its reason and in the result's din.excluded, and
    its weight is min(samples, --max-samples). With the same inputs in the
    same order the bytes are identical on any machine; the result carries
    the total weight, so aggregates can be aggregated again.

    With --task TASK --commit a validator fetches exactly its subgroup's
    submitted updates (from the chain's events), aggregates them, adds the
    result and commits keccak(CID, salt); --reveal later reveals it. Both
    print the CID; a step already done exits 7.

    --rule bounds what one poisoned update can do, bit-exactly on the same
    grid: norm-bounded clips each update's distance from --base to
    --clip-norm before the weighted mean; trimmed-mean drops the floor(F*n)
    largest and smallest values of every coordinate and averages the rest,
    unweighted; median takes every coordinate's median, unweighted (even n:
    the midpoint of the two middle values). The result names the rule and
    its parameters in din.rule.

    --device cuda sums the weighted mean's integers on the GPU (torch,
    int64), streaming the inputs through pinned buffers: the output bytes
    are those of the CPU, so validators on different hardware still agree.
    auto (the default) takes a GPU only for inputs of 256 GiB or more, where
    it pays for starting CUDA; --device cuda takes it for any size.

    \b
    Example:
        din aggregate u1.safetensors u2.safetensors -o global.safetensors
        ls updates/*.safetensors | din aggregate -o - | din ipfs add -
        din aggregate --base global.safetensors --max-samples 5000 u*.safetensors -o next.safetensors
        din aggregate --rule median u*.safetensors -o next.safetensors
        din aggregate --rule norm-bounded --clip-norm 2 --base global.safetensors u*.safetensors -o next.safetensors
        din aggregate --task 1 --commit --key dev8 && din aggregate --task 1 --reveal --key dev8
    """
    from din_cli.errors import UsageError

    if task is not None or commit or reveal or cid or round_:
        if task is None:
            raise click.UsageError("--commit, --reveal, --round and --cid need --task TASK")
        if base is not None or max_samples is not None:
            raise click.UsageError(
                "--task takes the starting model and --max-samples from the chain: drop --base and --max-samples"
            )
        if inputs or output != "-":
            raise click.UsageError(
                "--task aggregates the subgroup's updates from the chain: drop the inputs and -o"
            )
        if rule != "mean" or clip_norm is not None or trim is not None:
            raise UsageError(
                "--task aggregates with the rule the task fixed at publish",
                "drop --rule, --clip-norm and --trim",
            )
        _aggregate_on_task(
            task, round_, commit, reveal, cid, device, chain_url, ipfs_api, key_name, as_json
        )
        return
    from din_cli.ml.device import resolve
    from din_cli.ml.robust import make_rule
    from din_cli.protocol.admission import aggregate as run
    from din_cli.protocol.inputs import read_refs, resolved

    chosen = make_rule(rule, clip_norm=clip_norm, trim=trim)  # bad flags fail before any reading
    if device == "cuda":
        resolve(device)  # no GPU: fail before any reading
    if chosen.name == "norm-bounded" and base is None:
        raise UsageError(
            "--rule norm-bounded measures each update from the starting model",
            "pass --base FILE|CID",
        )
    refs = read_refs(inputs)
    bases = [base] if base is not None else []
    with resolved(bases + refs, ipfs_api) as paths, out.progress("aggregating") as advance:
        done = run(
            paths[len(bases) :],
            output,
            base=paths[0] if bases else None,
            max_samples=max_samples,
            progress=advance,
            rule=chosen,
            device=device,
        )
    for v in done.admission.excluded:
        out.note(f"excluded {refs[v.index]}: {v.reason}: {v.detail or v.cid}")
    for i, norm in done.clipped:
        out.note(f"clipped input {i + 1}: L2 distance {norm:.6g} from --base")
    if output != "-":
        out.emit(output)


def _aggregate_on_task(
    task, round_, commit, reveal, cid, device, chain_url, ipfs_api, key_name, as_json
):
    """`din aggregate --task TASK [--round R] --commit|--reveal`: the validator's aggregation step; prints the CID."""
    from din_cli.ml.device import resolve
    from din_cli.protocol import roundflow

    require_one_step(commit, reveal, {"--cid": cid})
    if device == "cuda":
        resolve(device)
    with context(chain_url, ipfs_api, key_name) as ctx:
        tid = roundflow.task_number(task)
        if commit:
            doc = roundflow.aggregate_commit(ctx, tid, round_, cid=cid, device=device)
        else:
            doc = roundflow.aggregate_reveal(ctx, tid, round_)
    out.note(
        f"task {doc['task_id']} round {doc['round']} subgroup {doc['group']}: {'committed' if commit else 'revealed'}"
    )
    out.emit_doc(doc, as_json, doc["cid"])


@click.command("evaluate")
@click.option(
    "--model",
    "model",
    default=None,
    metavar="FILE|CID|-",
    help="The model to score (not with --task).",
)
@click.option(
    "--data",
    default=None,
    metavar="STORE",
    help="Test store: CSV, NPZ, safetensors, or a folder (not with --task).",
)
@click.option(
    "--metric",
    type=click.Choice(["accuracy", "f1", "loss"]),
    default=None,
    help="Score with this metric.  [default: accuracy; with --task: the task's, set at publish]",
)
@task_option(
    "Score your evaluation subgroup of TASK on the owner's test set (validators).", required=False
)
@click.option("--commit", is_flag=True, help="With --task: score and commit the score vector.")
@click.option("--reveal", is_flag=True, help="With --task: reveal the committed scores.")
@click.option(
    "--set-score",
    "overrides",
    multiple=True,
    metavar="ADDRESS=BPS",
    help="With --commit: commit BPS for ADDRESS instead of its measured score (a deliberate disagreement; settlement penalises it).",
)
@click.option(
    "--device",
    type=DEVICE,
    default="auto",
    show_default=True,
    help="Where the forward passes run; the scores are the same on either.",
)
@ipfs_option()
@acting_options()
def evaluate(
    model,
    data,
    metric,
    task,
    commit,
    reveal,
    overrides,
    device,
    ipfs_api,
    chain_url,
    key_name,
    as_json,
):
    """Score a model on a store; print the score in basis points (0..10000).

    With --task TASK --commit a validator unwraps the test-set key sealed to
    its HPKE key, checks the owner's signature on the test set's CID,
    decrypts it, scores each participant of its evaluation subgroup the way
    the task fixed at publish (default: its GTG-Shapley contribution to each
    round's model on that round's test rows, summed over the rounds; --json
    shows each round's scores) with the task's metric, and commits the vector;
    --reveal reveals it. Both print ADDRESS<TAB>SCORE lines. A test set that
    cannot be used (K does not unwrap, signature or ciphertext fails, the
    plaintext is not the committed one) is rejected instead: a warning names
    the reason, nothing is printed, and the empty vector is committed.

    --device cuda runs the bit-exact forward pass on the GPU, step for step
    as on the CPU, so the scores are the same integers (a plugin
    architecture is scored on the CPU).

    \b
    Example:
        din evaluate --model global.safetensors --data stores/test.npz
        din evaluate --model global.safetensors --data stores/test.npz --metric f1 --json | jq .score_bps
        din evaluate --task 1 --commit --key dev8 | sort -k2 -n | head -n 1
    """
    if task is not None or commit or reveal or overrides:
        if task is None:
            raise click.UsageError("--commit, --reveal and --set-score need --task TASK")
        if model is not None or data is not None:
            raise click.UsageError(
                "--task scores the subgroup's models on the owner's test set: drop --model and --data"
            )
        _evaluate_on_task(
            task, commit, reveal, overrides, metric, device, chain_url, ipfs_api, key_name, as_json
        )
        return
    if model is None or data is None:
        raise click.UsageError(
            "Missing option '--model' or '--data' (or give --task TASK --commit|--reveal)."
        )
    from din_cli.ml.device import resolve
    from din_cli.ml.evaluate import evaluate as run
    from din_cli.protocol.inputs import resolved

    device = resolve(device)
    with resolved([model], ipfs_api) as (path,):
        result = run(path, data, metric=metric or "accuracy", device=device)
    out.emit_doc(result.to_dict(), as_json, result.score_bps)


def _evaluate_on_task(
    task, commit, reveal, overrides, metric, device, chain_url, ipfs_api, key_name, as_json
):
    """`din evaluate --task TASK --commit|--reveal`: score the subgroup on the owner's test set; prints the scores."""
    from din_cli.ml.device import resolve
    from din_cli.protocol import evaluation, roundflow

    require_one_step(commit, reveal, {"--set-score": overrides})
    device = resolve(device)
    with context(chain_url, ipfs_api, key_name) as ctx:
        tid = roundflow.task_number(task)
        if commit:
            doc = evaluation.evaluate_commit(
                ctx, tid, overrides=parse_scores(overrides), metric=metric, device=device
            )
        else:
            doc = evaluation.evaluate_reveal(ctx, tid)
    if doc.get("rejected"):
        click.echo(f"warning: test set rejected: {doc['rejected']}", err=True)
        out.emit_doc(doc, as_json)  # the empty score vector: nothing to print
        return
    lines = (f"{a}\t{s}" for a, s in zip(doc["participants"], doc["scores"], strict=True))
    out.emit_doc(doc, as_json, *lines)
