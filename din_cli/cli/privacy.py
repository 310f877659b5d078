"""din privacy: what a differentially private task has cost each participant."""

from __future__ import annotations

import math

import click

from din_cli.cli import output as out
from din_cli.cli.options import chain_option, context, json_option


@click.group("privacy")
def privacy_group():
    """Differential privacy: each participant's (epsilon, delta) in a task."""


@privacy_group.command("report")
@click.option("--task", "task", required=True, metavar="TASK", help="The task to report on.")
@chain_option()
@json_option()
def privacy_report(task, chain_url, as_json):
    """Print each participant's rounds and epsilon at the task's delta.

    Each update a participant submitted in a differentially private task is
    one Gaussian mechanism (its distance from the round's start clipped to
    the task's C, noise of std Z*C); k of them compose exactly to
    sqrt(k)/Z-Gaussian privacy, reported as the smallest epsilon for the
    task's delta. Lines are ADDRESS<TAB>ROUNDS<TAB>EPSILON; a task without
    differential privacy reports inf for everyone who submitted.

    \b
    Example:
        din privacy report --task 1
        din privacy report --task 1 --json | jq '.participants[] | select(.epsilon > 8)'
    """
    from din_cli.protocol import privacy, roundflow

    with context(chain_url, None, None, act=False) as ctx:
        doc = privacy.report(ctx, roundflow.task_number(task))
    out.note(f"task {doc['task_id']}: {doc['privacy']}")
    lines = (
        f"{r['participant']}\t{len(r['rounds'])}\t{'inf' if math.isinf(r['epsilon']) else format(r['epsilon'], '.4f')}"
        for r in doc["participants"]
    )
    out.emit_doc(doc, as_json, *lines)
