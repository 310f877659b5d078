"""What a simulated actor does, as Ray work: participants train, validators act on chain.

Every step calls the same ``din_cli.protocol`` function the commands and nodes
call (``roundflow.prepare_update``, ``roundflow.aggregate_commit``,
``evaluation.evaluate_commit``, ...). A ``Worker`` is one process (a Ray actor)
with its own chain connection; it acts for whichever identities a job names,
records the gas each of its transactions used, and times each job's CPU.
"""

from __future__ import annotations

import os
import resource
import time
from typing import Any

#: the validator steps a job can ask for, in the order a round needs them
STEPS = (
    "aggregate-commit",
    "aggregate-reveal",
    "attest",
    "grant-keys",
    "score-commit",
    "score-reveal",
    "dispute-file",
    "dispute-grant",
    "dispute-commit",
    "dispute-reveal",
)


def record_sends(chain, sink: list) -> None:
    """Make ``chain.send`` append ``(sender, function, gas used)`` of each receipt to ``sink``."""
    send = chain.send

    def recorded(account, fn, **kw):
        receipt = send(account, fn, **kw)
        sink.append((account.address, kw.get("_name") or fn.fn_name, int(receipt["gasUsed"])))
        return receipt

    chain.send = recorded


class Worker:
    """One worker process: a chain connection, the content store, and the steps actors take."""

    def __init__(self, home: str, chain_url: str, deployment: dict, ipfs_api: str | None = None):
        os.environ["DIN_HOME"] = home
        import torch

        torch.set_num_threads(1)  # one core per worker: Ray runs as many workers as cores
        from din_cli.chain.client import connect

        self.dep = deployment
        self.ipfs_api = ipfs_api
        self.chain = connect(chain_url)
        self.gas: list[tuple[str, str, int]] = []
        self._shared = None
        record_sends(self.chain, self.gas)

    def ctx(self, ident=None):
        """A Context acting as ``ident`` that shares this worker's contracts and store."""
        from din_cli.protocol.context import Context, open_context

        if self._shared is None:
            self._shared = open_context(
                None, self.ipfs_api, None, chain=self.chain, deployment=self.dep
            )
        base = self._shared
        return Context(
            self.chain,
            self.dep,
            self.ipfs_api,
            ident,
            _store=base.store,
            _din=base.din,
            _owns_chain=False,
        )

    def peak_rss(self) -> int:
        """Peak resident memory of this process, bytes."""
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def take_gas(self) -> list[tuple[str, str, int]]:
        out = list(self.gas)
        self.gas.clear()  # the same list record_sends appends to
        return out

    # ------------------------------------------------------------------ participants
    def train(self, task_id: int, jobs: list[dict], settings: dict) -> list[dict]:
        """Train each job's participant (or build its attack); ``{index, cid, cpu, wall, ...}`` each."""
        from din_cli.protocol import roundflow

        out = []
        for job in jobs:
            c0, w0 = time.process_time(), time.perf_counter()
            ctx = self.ctx(job["ident"])
            kind = job["kind"]
            doc: dict[str, Any] = {"index": job["index"], "kind": kind}
            try:
                if kind == "free-rider":
                    doc["cid"] = roundflow.start_model(ctx, task_id, job["round"])
                else:
                    r = roundflow.prepare_update(
                        ctx,
                        task_id,
                        job["store"],
                        epochs=settings["epochs"],
                        lr=settings["lr"],
                        batch_size=settings["batch_size"],
                        device="cpu",
                    )
                    doc.update(cid=r["cid"], samples=r["samples"], loss=r["loss"])
                    if kind == "poisoner":
                        doc["cid"] = _negated(ctx, task_id, job["round"], r["cid"])
            except Exception as e:  # noqa: BLE001 - reported per actor, the run goes on
                doc["error"] = f"{type(e).__name__}: {e}"
            doc["cpu"] = time.process_time() - c0
            doc["wall"] = time.perf_counter() - w0
            out.append(doc)
        return out

    # ------------------------------------------------------------------ validators
    def act(self, task_id: int, step: str, jobs: list[dict]) -> list[dict]:
        """Take ``step`` for each job's validator; ``{address, ok, note, cpu, wall}`` each."""
        out = []
        for job in jobs:
            c0, w0 = time.process_time(), time.perf_counter()
            ident = job["ident"]
            doc: dict[str, Any] = {"address": ident.address, "step": step}
            try:
                doc["note"] = self._step(task_id, step, ident, job)
                doc["ok"] = True
            except Exception as e:  # noqa: BLE001 - a refused step is an outcome of the run
                doc["ok"] = False
                doc["note"] = f"{type(e).__name__}: {e}"
            doc["cpu"] = time.process_time() - c0
            doc["wall"] = time.perf_counter() - w0
            out.append(doc)
        return out

    def _step(self, task_id: int, step: str, ident, job: dict) -> str:
        from din_cli.protocol import evaluation, roundflow, sealing
        from din_cli.protocol.cids import to_text

        ctx = self.ctx(ident)
        if step == "aggregate-commit":
            cid = None
            if job.get("colluder"):  # the colluders' agreed lie: the genesis model
                cid = to_text(ctx.din.task_info(task_id).genesis_cid)
            r = roundflow.aggregate_commit(ctx, task_id, cid=cid, device="cpu")
            return f"group {r['group']} {r['cid']}"
        if step == "aggregate-reveal":
            r = roundflow.aggregate_reveal(ctx, task_id)
            return f"group {r['group']} {r['cid']}"
        if step == "attest":
            r = roundflow.attest(ctx, task_id)
            return "accepted" if r["accepted"] else "attested"
        if step == "grant-keys":
            r = sealing.grant_for_evaluation(ctx, task_id)
            return f"{r['keys']} keys"
        if step == "score-commit":
            overrides = None
            if job.get("colluder"):
                overrides = _inflated(ctx, task_id, ident.address, set(job.get("friends", ())))
            r = evaluation.evaluate_commit(ctx, task_id, overrides=overrides, device="cpu")
            return f"group {r.get('group')}"
        if step == "score-reveal":
            r = evaluation.evaluate_reveal(ctx, task_id)
            return f"group {r['group']}"
        if step == "dispute-file":
            from din_cli.protocol import disputes

            r = disputes.file(ctx, task_id, job["round"], job["group"])
            return str(r["dispute_id"])
        if step == "dispute-grant":
            r = sealing.grant_for_dispute(ctx, task_id, ctx.din.dispute_info(job["dispute"]))
            return f"{r.get('keys', 0)} keys"
        if step in ("dispute-commit", "dispute-reveal"):
            from din_cli.protocol import disputes

            r = disputes.vote(ctx, job["dispute"], reveal=step == "dispute-reveal")
            return "agrees" if r.get("agrees") else "disagrees"
        raise ValueError(f"unknown step {step!r}")


def _negated(ctx, task_id: int, round_: int, trained_cid: str) -> str:
    """A poisoner's update: the starting model pushed twice as far against its own progress."""
    from din_cli.ml import models, tensorfile
    from din_cli.protocol import roundflow

    with ctx.workdir() as work:
        start = models.read_model(
            ctx.fetch(roundflow.start_model(ctx, task_id, round_), work / "start.safetensors")
        )
        mine = models.read_model(ctx.fetch(trained_cid, work / "mine.safetensors"))
        weights = {
            k: (v - 2.0 * (mine.weights[k] - v)).astype(v.dtype) for k, v in start.weights.items()
        }
        h = mine.header
        meta = tensorfile.make_metadata(
            arch=h.arch, kind="update", samples=h.samples, round=h.round, task=h.task
        )
        out = work / "poisoned.safetensors"
        tensorfile.write(out, weights, meta)
        return ctx.add(out)


def _inflated(ctx, task_id: int, address: str, friends: set[str]) -> dict[str, int] | None:
    """A colluding evaluator's overrides: full marks for the attackers in its evaluation subgroup."""
    m = ctx.din.subgroup_of(task_id, address, 0)
    if m.group is None:
        return None
    parts = ctx.din.members(task_id, m.group, 0)["participants"]
    return {a: 10000 for a in parts if a in friends} or None


def remote_worker():
    """The Ray actor class for ``Worker`` (Ray imported only when a simulation runs)."""
    import ray

    return ray.remote(num_cpus=1)(Worker)
