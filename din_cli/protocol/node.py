"""A node: one long-lived process that follows the chain and acts for its identities when their turn comes.

The single-step commands (``din train --task``, ``din aggregate --task
--commit``...) stay what scripts and CI call. A node runs the same protocol
functions (``roundflow``, ``evaluation``, ``rewards``, ``disputes``) in a
loop: each tick it reads every followed task's phase and round from the
chain, and for each identity it holds runs the step that the phase asks of
its role, if that step is not done yet.

Roles:

- **owner**: starts round 1 once enough participants and validators joined
  (or lets the join deadline start it), finalizes each round's global model,
  posts the encrypted test set, settles, claims what is unearned.
- **participant**: joins, trains on its store and submits each round, claims.
- **validator**: stakes up to a target and registers, aggregates, commits and
  reveals, attests, audits every accepted subgroup aggregate and files a
  dispute when one does not recompute, draws, votes on and resolves disputes,
  scores, settles when no owner of the task is in this process, claims. For
  experiments a validator node can cheat as the demo's dishonest validator
  does (``commit_genesis``, ``set_scores``).

A node keeps nothing it cannot rebuild. Whether a step is done is read from
the chain (its events), and the commit records under ``$DIN_HOME/commits``
are written before each commit is sent; a lost record is recomputed
bit-exactly. So a node killed at any point (kill -9 included) and started
again neither acts twice nor misses its turn: every step is idempotent
(``AlreadyDone``) and checks the chain again inside ``chain.writing()``.

Failures: an unreachable chain or content store (``BackendUnavailable``) is
retried with a doubling delay up to ``max_backoff``; a reverted transaction
(a nonce race, a phase that moved under the step) is retried with backoff
and stops the node after ``give_up`` consecutive failures of one step; a
step that is not possible yet (``UsageError``/``NotFoundError``) waits, said
once; bad input (``InputError``) stops the node at once. SIGTERM and SIGINT
stop it between steps. Every action, wait and retry is an event handed to
``emit``; the node's state is written to ``$DIN_HOME/nodes/NAME.json`` after
each tick, for ``din node status``.

Example:
    node = Node([owner, alice, val], NodeConfig(tasks=[1]), name="demo", emit=print)
    node.run()  # returns "finished" once every task settled and everyone claimed
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from din_cli.errors import (
    AlreadyDone,
    BackendUnavailable,
    DinError,
    NotFoundError,
    TransactionReverted,
    UsageError,
    VerificationError,
)

ROLES = ("owner", "participant", "validator")
TERMINAL = ("settled", "abandoned")
TRAINING_PHASES = ("training", "aggregation-commit", "aggregation-reveal", "global-model")
#: Phases in which an accepted aggregate can still be disputed (after training: nothing replays).
DISPUTABLE = (*TRAINING_PHASES, "test-set", "score-commit", "score-reveal")
NO_DEADLINE = 2**64 - 1
ADVANCE_EVERY = 5.0  # seconds between two advance transactions for one task
FULL_EVERY = 10  # polls between two full passes when the chain's head does not move


@dataclass
class Identity:
    """One key a node acts as: its ``role``, key ``name``, Context ``ctx`` and ``data`` (a participant's store, the owner's test set)."""

    role: str
    name: str
    ctx: Any
    data: Path | None = None

    @property
    def address(self) -> str:
        return self.ctx.address


@dataclass
class NodeConfig:
    """What a node does beyond the protocol's defaults."""

    tasks: list[int]
    epochs: int = 1
    lr: float = 0.1
    batch_size: int = 32
    stake: int | None = None  # validators: top their registry stake up to this (token units)
    min_participants: int | None = None  # owner: start round 1 once this many joined ...
    min_validators: int = 1  # ... and this many validators registered
    audit: bool = True  # validators: recompute accepted aggregates, dispute wrong ones
    device: str = "auto"
    commit_genesis: bool = (
        False  # adversary (experiments): commit the genesis model as the aggregate
    )
    set_scores: dict = field(default_factory=dict)  # adversary (experiments): address -> bps
    poll: float = 1.0
    max_backoff: float = 30.0
    give_up: int = 8
    forever: bool = False


class NodeStopped(DinError):
    """A step failed for good; the node stops with this error."""


@dataclass
class _Retry:
    failures: int = 0
    at: float = 0.0


@dataclass
class Node:
    """Follow ``config.tasks`` and act for ``identities``; see the module docstring."""

    identities: list[Identity]
    config: NodeConfig
    name: str = "node"
    emit: Callable[[dict], None] = lambda event: None
    status_path: Path | None = None
    finished: set = field(default_factory=set)  # (task, address, role) with nothing left to do
    stop_signal: str | None = None
    actions: int = 0
    _retries: dict = field(default_factory=dict)
    _said: set = field(default_factory=set)
    _audited: set = field(default_factory=set)
    _advanced: dict = field(default_factory=dict)  # task -> monotonic time of the last advance sent
    _audited_rounds: set = field(default_factory=set)
    _refused: set = field(default_factory=set)
    _proved: set = field(
        default_factory=set
    )  # (task, participant): record proven, or none to prove
    _once: set = field(default_factory=set)  # one-off steps done (a sealed task's key grant)
    _seen: dict = field(default_factory=dict)
    _last_head: int | None = None
    _full_at: float = 0.0
    _last_action: dict | None = None
    _last_error: str | None = None
    _started: float = field(default_factory=time.time)

    # ------------------------------------------------------------------ running

    def install_signals(self) -> None:
        """SIGTERM and SIGINT ask the node to stop after the step it is in."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        self.stop_signal = signal.Signals(signum).name

    def run(self) -> str:
        """Tick until every task is done for every identity (``"finished"``) or a signal (``"stopped"``).

        NodeStopped (or the step's own DinError) when a step failed for good.
        """
        cfg = self.config
        delay = cfg.poll
        self._write_status("running")  # before "started": a watcher that saw it finds the file
        self._event("started", identities=[self._who(i) for i in self.identities], tasks=cfg.tasks)
        try:
            while True:
                if self.stop_signal:
                    self._event("stopped", signal=self.stop_signal)
                    self._write_status("stopped")
                    return "stopped"
                try:
                    acted = self.tick()
                    delay = cfg.poll
                except BackendUnavailable as e:
                    self._last_error = e.one_line()
                    self._event("retry", error=e.one_line(), delay=delay)
                    acted = False
                    self._write_status("running")
                    self._sleep(delay)
                    delay = min(delay * 2, cfg.max_backoff)
                    continue
                if not cfg.forever and self.done():
                    self._event("finished", actions=self.actions)
                    self._write_status("finished")
                    return "finished"
                self._write_status("running")
                if not acted:
                    self._sleep(self._next_wait(delay))
        except DinError as e:
            self._last_error = e.one_line()
            self._event("failed", error=e.one_line())
            self._write_status("failed")
            raise

    def done(self) -> bool:
        return all(
            (t, i.address, i.role) in self.finished
            for t in self.config.tasks
            for i in self.identities
        )

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + max(0.0, seconds)
        while not self.stop_signal and (left := end - time.monotonic()) > 0:
            time.sleep(min(0.1, left))

    def _next_wait(self, delay: float) -> float:
        """The poll delay, shortened to the earliest pending retry."""
        now = time.monotonic()
        pending = [r.at - now for r in self._retries.values() if r.at > now]
        return min([delay, *pending]) if pending else delay

    # ------------------------------------------------------------------ one tick

    def tick(self) -> bool:
        """One pass over every task and identity; True when some step acted (the state moved).

        Nothing the node acts on changes without a new block, a deadline or a retry coming due,
        so a tick that finds none of them since the last full pass only reads the head (and a
        full pass runs at least every FULL_EVERY polls all the same).
        """
        if self._idle():
            return False
        self._last_head = self.identities[0].ctx.chain.head()
        self._full_at = time.monotonic() + FULL_EVERY * self.config.poll
        for task_id in self.config.tasks:
            for ident in self.identities:
                if (task_id, ident.address, ident.role) in self.finished:
                    continue
                info = ident.ctx.din.task_info(task_id)
                if self._seen.get(task_id, {}).get("round") != info.round:
                    self._forget(task_id, info.round)
                self._seen[task_id] = {
                    "phase": info.phase,
                    "round": info.round,
                    "deadline": info.deadline,
                }
                if self._advance_if_expired(ident, task_id, info):
                    return True
                if self._act(ident, task_id, info):
                    return True
        return False

    def _idle(self) -> bool:
        now = time.monotonic()
        if self._last_head is None or now >= self._full_at:
            return False
        if any(r.at <= now for r in self._retries.values()):
            return False
        wall = time.time()
        if any(wall >= seen.get("deadline", NO_DEADLINE) for seen in self._seen.values()):
            return False
        return self.identities[0].ctx.chain.head() == self._last_head

    def _forget(self, task_id: int, round_: int) -> None:
        """Drop what was said and retried in ``task_id``'s earlier rounds: memory stays flat over rounds."""

        def old(key) -> bool:  # a step's key: (task, address, step, round, phase)
            return len(key) == 5 and key[0] == task_id and key[3] < round_

        self._said = {said for said in self._said if not old(said[0])}
        self._retries = {k: r for k, r in self._retries.items() if not old(k)}

    def _advance_if_expired(self, ident: Identity, task_id: int, info) -> bool:
        """Send ``advance`` once a deadline passed. The latest block's time stands still while
        nobody sends a transaction (a dev chain mines only on demand), so the wall clock counts
        too; one try per task every ADVANCE_EVERY seconds, whatever came of the last."""
        if info.phase in TERMINAL or info.deadline == NO_DEADLINE:
            return False
        if max(ident.ctx.chain.now(), int(time.time())) < info.deadline:
            return False
        if time.monotonic() - self._advanced.get(task_id, -ADVANCE_EVERY) < ADVANCE_EVERY:
            return False
        self._advanced[task_id] = time.monotonic()
        from din_cli.protocol import roundflow

        return self._attempt(
            ident,
            task_id,
            info,
            "advance",
            lambda: roundflow.advance(ident.ctx, task_id),
            lambda r: f"advanced past an expired deadline: now {r['phase']} (round {r['round']})",
        )

    def _act(self, ident: Identity, task_id: int, info) -> bool:
        from din_cli.protocol import rewards

        if (
            ident.role == "participant"
            and info.phase in TERMINAL
            and rewards.proving(ident.ctx, info)
            and rewards.by_record(ident.ctx, task_id, info)
            and self._prove(ident, task_id, info)  # prove the record while the split by it waits
        ):
            return True
        if info.phase in TERMINAL:  # every role's last step: claim what the task owes it
            return self._claim(ident, task_id, info)
        steps = {
            "owner": self._owner,
            "participant": self._participant,
            "validator": self._validator,
        }
        return steps[ident.role](ident, task_id, info)

    def _attempt(self, ident, task_id, info, step, fn, describe, *, key=None) -> bool:
        """Run one step; True when it acted. Handles AlreadyDone, waits, retries and refusals."""
        key = key or (task_id, ident.address, step, info.round, info.phase)
        retry = self._retries.get(key)
        if retry is not None and time.monotonic() < retry.at:
            return False
        try:
            result = fn()
        except AlreadyDone:
            self._retries.pop(key, None)
            return False
        except (UsageError, NotFoundError) as e:
            self._say_once(key, "wait", ident, task_id, info, step, e.one_line())
            return False
        except VerificationError as e:
            self._refused.add(key)
            self._say_once(key, "refused", ident, task_id, info, step, e.one_line())
            return False
        except (TransactionReverted, BackendUnavailable) as e:
            r = self._retries.setdefault(key, _Retry())
            r.failures += 1
            delay = min(self.config.poll * 2**r.failures, self.config.max_backoff)
            r.at = time.monotonic() + delay
            self._last_error = e.one_line()
            if isinstance(e, TransactionReverted) and r.failures >= self.config.give_up:
                stopped = NodeStopped(
                    f"{ident.role} {ident.name}: {step} for task {task_id} failed {r.failures} times: {e.one_line()}",
                    "fix the cause and start the node again; it resumes where it stopped",
                )
                stopped.exit_code = e.exit_code  # the step's own code (5: reverted)
                raise stopped from None
            self._event(
                "retry",
                task=task_id,
                round=info.round,
                role=ident.role,
                key=ident.name,
                step=step,
                error=e.one_line(),
                delay=delay,
            )
            return False
        self._retries.pop(key, None)
        self.actions += 1
        message = describe(result)
        self._last_action = self._event(
            "action",
            task=task_id,
            round=info.round,
            phase=info.phase,
            role=ident.role,
            key=ident.name,
            address=ident.address,
            step=step,
            message=message,
            result=_plain(result),
        )
        return True

    def _say_once(self, key, kind, ident, task_id, info, step, message) -> None:
        said = (key, message)
        if said in self._said:
            return
        self._said.add(said)
        self._event(
            kind,
            task=task_id,
            round=info.round,
            phase=info.phase,
            role=ident.role,
            key=ident.name,
            step=step,
            message=message,
        )

    # ------------------------------------------------------------------ roles

    def _sit_out(self, ident: Identity, task_id: int, info, step: str, what: str) -> bool:
        """The task started without this identity: say so once; it is done with the task."""
        message = f"task {task_id} started before {ident.name} {what}"
        self._say_once((task_id, ident.address, step), "wait", ident, task_id, info, step, message)
        self.finished.add((task_id, ident.address, ident.role))
        return False

    def _claim(self, ident: Identity, task_id: int, info) -> bool:
        from din_cli.chain.network import format_amount
        from din_cli.protocol import rewards

        def claim():
            try:
                return rewards.claim(ident.ctx, task_id)
            except (AlreadyDone, NotFoundError):
                self.finished.add((task_id, ident.address, ident.role))
                raise AlreadyDone("nothing to claim", "done") from None

        def said(r):
            self.finished.add((task_id, ident.address, ident.role))
            if r.get("bond_released"):
                return "released its validator bond (nothing owed)"
            return f"claimed {format_amount(r['amount'])} DIN"

        return self._attempt(ident, task_id, info, "claim", claim, said)

    def _prove(self, ident: Identity, task_id: int, info) -> bool:
        """Prove the participant's accepted training record once (the contributors' split)."""
        from din_cli.protocol import rewards

        done = (task_id, ident.address)
        if done in self._proved:
            return False

        def prove():
            try:
                return rewards.prove(ident.ctx, task_id)
            except (AlreadyDone, NotFoundError):  # proven already, or no admitted update
                self._proved.add(done)
                raise AlreadyDone("nothing to prove", "done") from None

        def said(r):
            self._proved.add(done)
            return f"proved its training record: rounds {r['rounds']}"

        return self._attempt(ident, task_id, info, "prove", prove, said)

    def _owner(self, ident: Identity, task_id: int, info) -> bool:
        from din_cli.protocol import evaluation, rewards, roundflow

        ctx, phase, cfg = ident.ctx, info.phase, self.config
        if ctx.address != info.owner:
            raise NodeStopped(
                f"{ident.name} ({ctx.address}) is not the owner of task {task_id} ({info.owner})",
                "give the owner's key to --owner",
            )
        if phase == "joining":
            if cfg.min_participants is None:
                return False  # the join deadline starts round 1
            if info.participants < cfg.min_participants or info.validators < cfg.min_validators:
                return False
            return self._attempt(
                ident,
                task_id,
                info,
                "start",
                lambda: roundflow.start(ctx, task_id),
                lambda r: (
                    f"started round 1 with {info.participants} participants and {info.validators} validators"
                ),
            )
        if phase == "global-model":
            if not ctx.din.accepted_aggregates(task_id, info.round):
                return False  # no subgroup decided yet: the deadline keeps the last model
            return self._attempt(
                ident,
                task_id,
                info,
                "finalize",
                lambda: roundflow.finalize(ctx, task_id),
                lambda r: f"posted round {r['round']}'s global model {r['cid']}",
            )
        if phase == "test-set":
            return self._attempt(
                ident,
                task_id,
                info,
                "post-test-set",
                lambda: evaluation.post_test_set(ctx, task_id, ident.data),
                lambda r: (
                    f"posted the encrypted test set {r['cid']} ({r['rows']} rows) to {len(r['validators'])} validators"
                ),
            )
        if phase == "settling":
            return self._attempt(
                ident,
                task_id,
                info,
                "settle",
                lambda: rewards.settle(ctx, task_id),
                lambda r: f"settled: now {r['phase']}, {len(r['slashed'])} validator(s) slashed",
            )
        return False

    def _participant(self, ident: Identity, task_id: int, info) -> bool:
        from din_cli.chain import network
        from din_cli.protocol import roundflow

        ctx, phase, cfg = ident.ctx, info.phase, self.config
        member = roundflow._member(ctx, task_id, ctx.address)
        if phase == "joining":
            if member["index1"]:
                return False
            return self._attempt(
                ident,
                task_id,
                info,
                "join",
                lambda: network.join(
                    ctx.chain, ctx.deployment, ctx.account, task_id, ctx.identity.hpke_public
                ),
                lambda r: f"joined as participant {r['index']}",
            )
        if not member["index1"]:
            return self._sit_out(ident, task_id, info, "join", "joined; nothing to do in it")
        if phase == "settling":  # a rejected test set: the pool goes by record
            from din_cli.protocol import rewards

            if member["last_round"] and rewards.by_record(ctx, task_id, info):
                return self._prove(ident, task_id, info)
            return False
        if (
            phase == "aggregation-commit"
            and member["last_round"] == info.round
            and info.privacy_mode == "secagg"
        ):
            from din_cli.protocol import secagg

            return self._attempt(
                ident,
                task_id,
                info,
                "unmask",
                lambda: secagg.reveal(ctx, task_id),
                lambda r: f"revealed {r['shares']} shares for round {r['round']}'s unmasking",
            )
        if phase != "training" or member["last_round"] >= info.round:
            return False
        return self._attempt(
            ident,
            task_id,
            info,
            "train",
            lambda: roundflow.train_and_submit(
                ctx,
                task_id,
                ident.data,
                epochs=cfg.epochs,
                lr=cfg.lr,
                batch_size=cfg.batch_size,
                device=cfg.device,
            ),
            lambda r: (
                f"trained on {r['samples']} samples (loss {r['loss']:.4f}) and submitted {r['cid']}"
            ),
        )

    def _validator(self, ident: Identity, task_id: int, info) -> bool:
        from din_cli.ml.device import resolve
        from din_cli.protocol import evaluation, rewards, roundflow, sealing
        from din_cli.protocol.cids import to_text

        ctx, phase, cfg = ident.ctx, info.phase, self.config
        state = roundflow.validator_state(ctx, task_id, ctx.address)
        if phase == "joining":
            return self._register(ident, task_id, info, state)
        if not state["index1"]:
            return self._sit_out(
                ident, task_id, info, "register", "registered; nothing to do in it"
            )
        if self._disputes(ident, task_id, info):
            return True
        if state["removed"]:
            return False  # slashed out of the task: only its claim (nothing) is left
        if phase in DISPUTABLE and cfg.audit and self._audit(ident, task_id, info):
            return True
        r = info.round
        if phase == "aggregation-commit" and state["commit_round"] < r:
            return self._attempt(
                ident,
                task_id,
                info,
                "aggregate-commit",
                lambda: roundflow.aggregate_commit(
                    ctx,
                    task_id,
                    cid=to_text(info.genesis_cid) if cfg.commit_genesis else None,
                    device=cfg.device,
                ),
                lambda x: f"committed subgroup {x['group']}'s aggregate {x['cid']}",
            )
        if phase == "aggregation-reveal" and state["commit_round"] >= r > state["reveal_round"]:
            return self._attempt(
                ident,
                task_id,
                info,
                "aggregate-reveal",
                lambda: roundflow.aggregate_reveal(ctx, task_id),
                lambda x: f"revealed subgroup {x['group']}'s aggregate {x['cid']}",
            )
        if phase == "global-model" and state["attest_round"] < r:
            if roundflow._proposed(ctx, task_id, r) is None:
                return False
            key = (task_id, ident.address, "attest", r, phase)
            if key in self._refused:
                return False
            return self._attempt(
                ident,
                task_id,
                info,
                "attest",
                lambda: roundflow.attest(ctx, task_id),
                lambda x: (
                    f"attested round {x['round']}'s global model {x['cid']}"
                    + (" (accepted)" if x["accepted"] else "")
                ),
            )
        if phase in ("test-set", "score-commit") and sealing.is_sealed_task(info):
            key = (task_id, ident.address, "grant-keys")  # before scoring: others may wait for it
            if key not in self._once:
                acted = self._attempt(
                    ident,
                    task_id,
                    info,
                    "grant-keys",
                    lambda: sealing.grant_for_evaluation(ctx, task_id),
                    lambda x: (
                        f"granted {x['keys']} update key(s) to {len(x['readers'])} evaluation validator(s)"
                    ),
                    key=key,
                )
                if acted or sealing.granted_by(ctx, task_id, ctx.address):
                    self._once.add(key)
                if acted:
                    return True
        if phase == "score-commit" and not state["score_committed"]:
            return self._attempt(
                ident,
                task_id,
                info,
                "score-commit",
                lambda: evaluation.evaluate_commit(
                    ctx, task_id, overrides=cfg.set_scores or None, device=resolve(cfg.device)
                ),
                lambda x: (
                    f"rejected the test set: {x['rejected']}"
                    if x.get("rejected")
                    else f"committed subgroup {x['group']}'s scores {x['scores']}"
                ),
            )
        if phase == "score-reveal" and state["score_committed"] and not state["score_revealed"]:
            return self._attempt(
                ident,
                task_id,
                info,
                "score-reveal",
                lambda: evaluation.evaluate_reveal(ctx, task_id),
                lambda x: f"revealed subgroup {x['group']}'s scores",
            )
        if phase == "settling" and self._dispute_scores(ident, task_id, info, state):
            return True
        if phase == "settling" and not any(
            i.role == "owner" and (task_id, i.address, "owner") not in self.finished
            for i in self.identities
        ):
            return self._attempt(
                ident,
                task_id,
                info,
                "settle",
                lambda: rewards.settle(ctx, task_id),
                lambda x: f"settled: now {x['phase']}, {len(x['slashed'])} validator(s) slashed",
            )
        return False

    def _dispute_scores(self, ident: Identity, task_id: int, info, state) -> bool:
        """Outvoted in its evaluation subgroup (it revealed another vector than the majority's):
        file a dispute of the majority's scores, once, before the subgroup settles."""
        from din_cli.protocol import disputes

        group = state.get("score_group")
        d = ident.ctx.din
        if group is None or not state["score_revealed"] or state["removed"] or d.disputes is None:
            return False
        key = (task_id, ident.address, "dispute-scores", group)
        if key in self._refused:
            return False
        _, validators, winner = d.score_majority(task_id, group)
        revealed = d.scores_revealed(task_id)
        mine = revealed.get(ident.address)
        if mine is None or (winner is not None and list(mine) == list(winner)):
            return False
        if winner is None and all(revealed.get(a) in (None, mine) for a in validators):
            return False  # no majority only for want of reveals: nobody revealed otherwise
        if any(o["round"] == 0 and o["group"] == group for o in d.disputes_of(task_id)):
            return False  # filed already (by it or another)

        def file():
            try:
                return disputes.file(ident.ctx, task_id, 0, group)
            except (UsageError, NotFoundError):
                self._refused.add(key)  # it recomputes to the majority, or it is too late
                raise
            except (TransactionReverted, BackendUnavailable):
                raise  # retried
            except DinError as e:  # no bond, say: not this node's to fix
                self._refused.add(key)
                raise UsageError(e.message, e.hint) from None

        return self._attempt(
            ident,
            task_id,
            info,
            "dispute-scores",
            file,
            lambda x: f"disputed evaluation subgroup {group}'s scores: dispute {x['dispute_id']}",
            key=key,
        )

    def _register(self, ident: Identity, task_id: int, info, state) -> bool:
        from din_cli.chain import network

        ctx, cfg = ident.ctx, self.config
        if state["index1"]:
            return False
        if cfg.stake:
            have = ctx.din.validator_info(ctx.address).stake
            if have < cfg.stake:
                return self._attempt(
                    ident,
                    task_id,
                    info,
                    "stake",
                    lambda: network.stake(
                        ctx.chain,
                        ctx.deployment,
                        ctx.account,
                        ctx.identity.hpke_public,
                        cfg.stake - have,
                    ),
                    lambda r: f"staked; total {r['stake_din']} DIN, active: {r['active']}",
                )
        return self._attempt(
            ident,
            task_id,
            info,
            "register",
            lambda: network.register_validator(ctx.chain, ctx.deployment, ctx.account, task_id),
            lambda r: f"registered as validator {r['index']}",
        )

    def _audit(self, ident: Identity, task_id: int, info) -> bool:
        """Recompute each accepted subgroup aggregate once; file a dispute for one that does not hold."""
        from din_cli.protocol import disputes, sealing

        ctx, d = ident.ctx, ident.ctx.din
        if d.disputes is None:
            return False
        last = info.round if info.phase not in TRAINING_PHASES[:3] else info.round - 1
        discarded = set(d.discarded_rounds(task_id))
        open_ = [o for o in d.disputes_of(task_id) if o["state"] in disputes.OPEN]
        for r in range(1, last + 1):
            if r in discarded or (task_id, ident.address, r) in self._audited_rounds:
                continue
            groups = sorted(d.accepted_aggregates(task_id, r))
            if r < info.round and all(
                (task_id, ident.address, r, g) in self._audited for g in groups
            ):
                self._audited_rounds.add((task_id, ident.address, r))  # final: not read again
                continue
            for group in groups:
                mark = (task_id, ident.address, r, group)
                if mark in self._audited:
                    continue
                if open_:
                    return False  # one dispute at a time per task: audit again once it is decided
                if (
                    sealing.is_sealed_task(info)
                    and ctx.din.subgroup_of(task_id, ident.address, r).group != group
                ):
                    self._audited.add(mark)  # sealed: only the subgroup's own validators read it
                    continue
                doc = disputes.recompute(ctx, task_id, r, group)
                self._audited.add(mark)
                if doc["expected"] == doc["accepted"]:
                    continue
                return self._attempt(
                    ident,
                    task_id,
                    info,
                    "dispute-file",
                    lambda r=r, group=group: disputes.file(ctx, task_id, r, group),
                    lambda x: (
                        f"filed dispute {x['dispute_id']}: round {x['round']} subgroup {x['group']} accepted {x['accepted']}, recomputes to {x['cid']}"
                    ),
                    key=(task_id, ident.address, "dispute-file", r, group),
                )
        return False

    def _disputes(self, ident: Identity, task_id: int, info) -> bool:
        """Draw, vote on (as a committee member) and resolve the task's open disputes."""
        from din_cli.protocol import disputes

        d = ident.ctx.din
        if d.disputes is None:
            return False
        return any(
            self._dispute(ident, task_id, info, o)
            for o in d.disputes_of(task_id)
            if o["state"] in disputes.OPEN
        )

    def _dispute(self, ident: Identity, task_id: int, info, o: dict) -> bool:
        from din_cli.protocol import disputes, sealing

        ctx, did = ident.ctx, int(o["dispute_id"])

        def step(name, fn, describe):
            key = (task_id, ident.address, name, did)
            return self._attempt(ident, task_id, info, name, fn, describe, key=key)

        if o["state"] == "filed":
            return step(
                "dispute-draw",
                lambda: disputes.draw(ctx, did),
                lambda x: f"drew dispute {did}'s committee of {x['size']}",
            )
        served = o["state"] == "drawn" and sealing.is_sealed_task(info)
        if served and o["round"] != 0:
            m = ctx.din.subgroup_of(task_id, ident.address, o["round"])
            served = m.role == "validator" and m.group == o["group"]
        if (
            o["round"] == 0
        ):  # scores: every evaluation validator holding K grants it to the committee
            served = (
                o["state"] == "drawn"
                and ctx.din.subgroup_of(task_id, ident.address, 0).group is not None
            )
        if served and step(  # the committee reads the subgroup's sealed updates with these keys
            "dispute-grant",
            lambda: sealing.grant_for_dispute(ctx, task_id, o),
            lambda x: f"granted {x['keys']} key(s) of dispute {did}'s subgroup to its committee",
        ):
            return True
        if ident.address in o["committee"] and (
            step(
                "dispute-commit",
                lambda: disputes.vote(ctx, did),
                lambda x: f"committed its vote on dispute {did}: {x['cid']}",
            )
            or step(
                "dispute-reveal",
                lambda: disputes.vote(ctx, did, reveal=True),
                lambda x: f"revealed its vote on dispute {did}: {x['cid']}",
            )
        ):
            return True
        return step(
            "dispute-resolve",
            lambda: disputes.resolve(ctx, did),
            lambda x: f"resolved dispute {did}: {x['state']}",
        )

    # ------------------------------------------------------------------ events and status

    def _who(self, ident: Identity) -> dict:
        return {"role": ident.role, "key": ident.name, "address": ident.address}

    def _event(self, kind: str, **fields) -> dict:
        event = {"time": round(time.time(), 3), "node": self.name, "event": kind, **fields}
        self.emit(event)
        return event

    def status(self, state: str) -> dict:
        return {
            "name": self.name,
            "pid": os.getpid(),
            "state": state,
            "started": round(self._started, 3),
            "updated": round(time.time(), 3),
            "identities": [self._who(i) for i in self.identities],
            "tasks": {
                str(t): {
                    **self._seen.get(t, {}),
                    "finished": [
                        i.name for i in self.identities if (t, i.address, i.role) in self.finished
                    ],
                }
                for t in self.config.tasks
            },
            "actions": self.actions,
            "last_action": self._last_action,
            "last_error": self._last_error,
        }

    def _write_status(self, state: str) -> None:
        if self.status_path is None:
            return
        from din_cli.files import write_atomic

        self.status_path.parent.mkdir(parents=True, exist_ok=True)
        doc = json.dumps(self.status(state), indent=2, default=str) + "\n"
        write_atomic(self.status_path, doc.encode())


def status_dir() -> Path:
    from din_cli.config import din_home

    return din_home() / "nodes"


def alive(pid: int) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_status(name: str | None = None) -> list[dict]:
    """The status documents of the nodes that ran under ``$DIN_HOME`` (one ``name``, or all)."""
    folder = status_dir()
    paths = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if name is not None:
        paths = [p for p in paths if p.stem == name]
        if not paths:
            raise NotFoundError(
                f"no node named {name!r} ran under {folder.parent}",
                "list them with `din node status`",
            )
    docs = []
    for p in paths:
        try:
            doc = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if doc.get("state") == "running" and not alive(doc.get("pid", 0)):
            doc["state"] = "dead"  # killed without a chance to say so; start it again to resume
        docs.append(doc)
    return docs


def _plain(value: Any) -> Any:
    from din_cli.protocol.roundflow import plain

    try:
        return plain(value)
    except Exception:  # a result that does not convert is still logged by its message
        return None
