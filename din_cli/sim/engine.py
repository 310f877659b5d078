"""One simulated task, end to end: real contracts, a real store, real training, on Ray workers.

``simulate(scenario, out)`` deploys din's contracts on the scenario's chain,
creates the owner, N participants and V validators, cuts N data stores from a
bundled dataset, publishes the task and drives it phase by phase: the
participants train on Ray workers (``roundflow.prepare_update``) and their
joins, submissions and claims go out in batches from this process
(``sim.batch``); the validators' steps run on the workers through the same
protocol functions the commands and nodes call, each sending its own
transactions; the owner's steps run here. A phase some actors skipped
(dropouts, stragglers, slashed validators) ends at its deadline, which the
simulation reaches by moving the dev chain's clock. What happened is
collected into a report (``sim.report``).
"""

from __future__ import annotations

import os
import random
import resource
import shutil
import socket
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from din_cli.errors import BackendUnavailable, UsageError
from din_cli.sim.scenario import ATTACKERS, Scenario

UNIT = 10**18
MIN_STAKE = 100 * UNIT
DEPOSIT = 1000 * UNIT
SPAN = 3600  # every phase's length: long enough never to cut a phase short by wall time


@dataclass
class Actor:
    ident: Any
    role: str  # owner | participant | validator
    kind: str = "honest"  # participants: honest, noisy, free-rider, copycat, poisoner; validators: honest, colluder
    rows: int = 0
    store: str = ""
    straggler: bool = False
    rounds: list[int] = field(default_factory=list)


def _identity(seed: int, role: str, i: int):
    """A deterministic account (same scenario seed, same addresses) with a fresh HPKE key."""
    from eth_account import Account
    from eth_utils import keccak

    from din_cli.crypto import hpke
    from din_cli.crypto.keystore import Identity

    key = keccak(f"din-simulate/{seed}/{role}/{i}".encode())
    acct = Account.from_key(key)
    private, public = hpke.generate_keypair()
    return Identity(f"{role}{i}", acct.address, bytes(key), private, public)


class _Anvil:
    """An anvil node this run started (chain = "anvil"), stopped at the end."""

    def __init__(self, log: Path):
        exe = os.environ.get("DIN_ANVIL") or shutil.which("anvil")
        if not exe:
            for base in (Path.cwd(), *Path.cwd().parents, Path(__file__).resolve().parents[2]):
                cand = base / "node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
                if cand.exists():
                    exe = str(cand)
                    break
        if not exe:
            raise UsageError(
                'run.chain = "anvil" but no anvil binary was found',
                "install it (`npm install` in din's checkout, or Foundry), set DIN_ANVIL, or give an http:// URL",
            )
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            # blocks of 300M gas: posting the test set wraps K to every validator in one
            # transaction, past 30M gas at thousands of validators (the report shows its gas)
            [
                exe,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--gas-limit",
                "300000000",
                "--silent",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        import requests

        for _ in range(200):
            try:
                requests.post(
                    self.url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}, timeout=1
                )
                return
            except requests.RequestException:
                time.sleep(0.05)
        self.stop()
        raise BackendUnavailable(
            f"anvil did not start on {self.url}", "see anvil.log in the output folder"
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()


class Simulation:
    """The state of one run; ``run()`` returns the report's dict."""

    def __init__(
        self,
        sc: Scenario,
        out: Path,
        *,
        address: str | None = None,
        say: Callable[[str], None] = print,
    ):
        self.sc, self.out, self.address, self.say = sc, out, address, say
        self.rng = random.Random(sc.seed)
        self.stages: dict[str, float] = defaultdict(float)
        self.gas: list[tuple[str, str, int]] = []  # (sender, function, gas)
        self.work: dict[str, dict[str, float]] = defaultdict(
            lambda: defaultdict(float)
        )  # validator -> step -> cpu
        self.rounds: list[dict] = []
        self.failures: dict[str, int] = defaultdict(int)
        self.notes: list[str] = []
        self.disputes: list[dict] = []
        self.anvil: _Anvil | None = None

    # ------------------------------------------------------------------ plumbing
    def _time(self, stage: str):
        sim = self

        class _T:
            def __enter__(self):
                self.t = time.perf_counter()

            def __exit__(self, *exc):
                sim.stages[stage] += time.perf_counter() - self.t

        return _T()

    def ctx(self, ident=None):
        """A Context acting as ``ident`` on the run's chain, sharing one contract wrapper and store."""
        from din_cli.protocol.context import Context

        return Context(
            self.chain, self.dep, None, ident, _store=self._store, _din=self.din, _owns_chain=False
        )

    def _batch(self, items, name: str):
        sent = self.batch.send_many(items, name)
        for s in sent:
            self.gas.append((s.sender, name, s.gas))
            if not s.ok:
                self.failures[f"{name}: {s.reason}"] += 1
        return sent

    def _phase(self):
        return self.din.task_info(self.task)

    def _expire(self) -> None:
        """End the phase in progress at its deadline (the dev chain's clock moves there)."""
        info = self._phase()
        wait = max(1, int(info.deadline) - self.chain.now() + 1)
        self.chain.advance_time(wait)
        from din_cli.protocol import roundflow

        roundflow.advance(self.ctx(self.owner.ident), self.task)

    def _act(self, step: str, validators: list[Actor], **extra) -> list[dict]:
        import ray

        if not validators:
            return []
        friends = [a.ident.address for a in self.parts if a.kind in ATTACKERS]
        jobs = [
            {
                "ident": v.ident,
                "colluder": v.kind == "colluder",
                "friends": friends if v.kind == "colluder" else (),
                **extra,
            }
            for v in validators
        ]
        n = len(self.workers)
        refs = [
            w.act.remote(self.task, step, jobs[i::n])
            for i, w in enumerate(self.workers)
            if jobs[i::n]
        ]
        results = [r for part in ray.get(refs) for r in part]
        for r in results:
            self.work[r["address"]][step] += r["cpu"]
            late = r["note"].startswith("AlreadyDone")  # attesting after the majority: fine
            if not r["ok"] and not late:
                self.failures[f"{step}: {r['note'][:120]}"] += 1
        return results

    # ------------------------------------------------------------------ set-up
    def _open_chain(self) -> str:
        from din_cli.chain.client import connect

        want = self.sc.run.chain
        if want == "embedded":
            if self.address:
                raise UsageError(
                    "a Ray cluster (--address) cannot share the embedded chain",
                    'set run.chain to "anvil" or an http:// URL the cluster reaches',
                )
            url = f"sqlite:{self.home / 'chain.sqlite'}"
        elif want == "anvil":
            self.anvil = _Anvil(self.out / "anvil.log")
            url = self.anvil.url
        elif want.startswith(("http://", "https://")):
            url = want
        else:
            raise UsageError(f"run.chain = {want!r}", 'use "embedded", "anvil" or an http:// URL')
        self.chain = connect(url)
        if not self.chain.is_dev:
            raise UsageError(
                f"{url} is not a dev chain (anvil, hardhat)",
                "the simulation funds accounts and moves the clock: give a dev node",
            )
        return url

    def _stores(self) -> Path:
        """The test pool and one store per participant, cut from the scenario's dataset."""
        import numpy as np

        from din_cli.ml import data

        t = self.sc.task
        ds = data.load_dataset(t.dataset)
        rng = np.random.default_rng(self.sc.seed)
        order = rng.permutation(len(ds.y))
        cut = int(round(len(order) * t.test_fraction))
        test_idx, train_idx = order[:cut], order[cut:]
        folder = self.home / "stores"
        folder.mkdir(parents=True, exist_ok=True)
        test = folder / "test.npz"
        data.save_store(test, ds.x[test_idx], ds.y[test_idx])
        classes = int(ds.y.max()) + 1
        used = 0
        for a in self.parts:
            m = int(rng.integers(t.rows[0], t.rows[1] + 1))
            pick = train_idx[rng.integers(0, len(train_idx), size=m)]
            x, y = ds.x[pick], ds.y[pick].copy()
            if a.kind == "noisy":
                wrong = rng.random(m) < 0.3
                y[wrong] = (y[wrong] + rng.integers(1, classes, size=int(wrong.sum()))) % classes
            a.rows = m
            a.store = str(folder / f"p{a.ident.name[len('participant') :]}.npz")
            data.save_store(a.store, x, y)
            used += m
        self.reuse = used / max(1, len(train_idx))
        self.notes.append(
            f"{len(self.parts)} stores of {t.rows[0]}-{t.rows[1]} rows drawn with replacement from "
            f"{len(train_idx)} {t.dataset} rows (each row used {self.reuse:.1f} times on average); "
            f"test pool {len(test_idx)} rows"
        )
        return test

    def _actors(self) -> None:
        t, b, seed = self.sc.task, self.sc.behaviour, self.sc.seed
        self.owner = Actor(_identity(seed, "owner", 0), "owner")
        self.parts = [
            Actor(_identity(seed, "participant", i), "participant") for i in range(t.participants)
        ]
        self.vals = [
            Actor(_identity(seed, "validator", i), "validator") for i in range(t.validators)
        ]
        n = len(self.parts)
        order = list(range(n))
        self.rng.shuffle(order)
        pos = 0
        for kind, frac in (
            ("free-rider", b.free_riders),
            ("copycat", b.copycats),
            ("poisoner", b.poisoners),
            ("noisy", b.noisy_labels),
        ):
            k = int(round(frac * n))
            for i in order[pos : pos + k]:
                self.parts[i].kind = kind
            pos += k
        for i in self.rng.sample(range(n), int(round(b.stragglers * n))):
            self.parts[i].straggler = True
        colluders = int(round(b.colluding_validators * len(self.vals)))
        for i in self.rng.sample(range(len(self.vals)), colluders):
            self.vals[i].kind = "colluder"

    def _setup(self, test_store: Path) -> None:
        from din_cli.chain.din import DURATION_NAMES, Din, deploy_all, file_sha256
        from din_cli.ml.models import init_model
        from din_cli.protocol import roundflow
        from din_cli.sim.batch import Batch

        t = self.sc.task
        dev = self.chain.dev_account()
        self.dep = deploy_all(self.chain, dev, min_stake=MIN_STAKE, unstake_delay=3600)
        self.din = Din(self.chain, self.dep)
        # `DIN_HOME=OUT/home din ...` reads the run's chain, store and task afterwards
        from din_cli.chain.network import save_deployment
        from din_cli.store import open_store

        save_deployment({**self.dep, "url": self.chain.url})

        self._store = open_store(self.sc.run.ipfs or None)
        self.batch = Batch(self.chain)
        everyone = [self.owner, *self.parts, *self.vals]
        if self.chain.url and self.chain.url.startswith("http"):
            method = (
                "hardhat_setBalance"
                if "hardhat" in self.chain.client_version
                else "anvil_setBalance"
            )
            self.batch._post([(method, [a.ident.address, hex(UNIT)]) for a in everyone])
        else:
            for a in everyone:
                self.chain.fund(a.ident.address, UNIT)
        token = self.din.token.functions
        self._batch(
            [(dev, token.transfer(self.owner.ident.address, 2 * DEPOSIT))]
            + [
                (dev, token.transfer(v.ident.address, 2 * MIN_STAKE)) for v in self.vals
            ],  # stake + dispute bonds
            "transfer",
        )
        from din_cli.sim.workers import record_sends

        record_sends(self.chain, self.gas)
        init_model(t.arch, self.home / "genesis.safetensors", seed=self.sc.seed)
        self.task = roundflow.publish(
            self.ctx(self.owner.ident),
            self.home / "genesis.safetensors",
            DEPOSIT,
            subgroup_size=t.subgroup_size,
            validators_per_subgroup=t.validators_per_subgroup,
            max_rounds=t.rounds,
            scoring=t.scoring,
            aggregation=t.aggregation,
            privacy_mode=t.privacy,
            durations={n: SPAN for n in DURATION_NAMES},
            test_set_hash=file_sha256(test_store),
        )["task_id"]
        reg = self.din.registry.functions
        tasks = self.din.tasks.functions
        self._batch(
            [
                (v.ident.account, token.approve(self.din.registry.address, MIN_STAKE))
                for v in self.vals
            ],
            "approve",
        )
        from din_cli.chain.din import _hpke

        self._batch(
            [
                (v.ident.account, reg.stake(MIN_STAKE, _hpke(v.ident.hpke_public)))
                for v in self.vals
            ],
            "stake",
        )
        self._batch(
            [(v.ident.account, tasks.registerValidator(self.task)) for v in self.vals],
            "registerValidator",
        )
        self._batch(
            [
                (p.ident.account, tasks.joinTask(self.task, _hpke(p.ident.hpke_public)))
                for p in self.parts
            ],
            "joinTask",
        )
        self.stakes_before = {v.ident.address: MIN_STAKE for v in self.vals}

    def _start_workers(self, url: str) -> None:
        import ray

        from din_cli.sim.workers import remote_worker

        if self.address:
            if not self.sc.run.ipfs:
                raise UsageError(
                    "workers on a Ray cluster need a content store they all reach",
                    "set run.ipfs to an IPFS node's API multiaddr (and keep --out on a shared filesystem)",
                )
            ray.init(address=self.address, log_to_driver=False)
            n = max(1, int(ray.cluster_resources().get("CPU", 1)))
        else:
            n = self.sc.run.workers
            ray.init(
                num_cpus=n,
                include_dashboard=False,
                log_to_driver=False,
                object_store_memory=256 * 1024 * 1024,
                ignore_reinit_error=True,
            )
        cls = remote_worker()
        ipfs = self.sc.run.ipfs or None
        self.workers = [cls.remote(str(self.home), url, self.dep, ipfs) for _ in range(n)]
        ray.get([w.peak_rss.remote() for w in self.workers])  # started, din imported

    # ------------------------------------------------------------------ the task
    def _assigned(self, round_: int) -> list[Actor]:
        rnd = self.din.round_info(self.task, round_)
        addrs = self.din.validators(self.task)
        by = {v.ident.address: v for v in self.vals}
        return [by[addrs[i]] for g in rnd.validator_groups for i in g]

    def _round(self, r: int) -> None:
        import ray

        from din_cli.chain.din import _cid
        from din_cli.ml.evaluate import evaluate
        from din_cli.protocol import roundflow
        from din_cli.protocol.cids import to_bytes

        b, t = self.sc.behaviour, self.sc.task
        before = dict(self.stages)
        tasks = self.din.tasks.functions
        if (
            self.din.round_info(self.task, r).seed is None
        ):  # round 1's subgroups: any transaction draws them
            roundflow.advance(self.ctx(self.owner.ident), self.task)
        dropped = set(
            self.rng.sample(range(len(self.parts)), int(round(b.dropouts * len(self.parts))))
        )
        active = [i for i, p in enumerate(self.parts) if i not in dropped]
        jobs = [
            {
                "ident": self.parts[i].ident,
                "index": i,
                "kind": self.parts[i].kind,
                "store": self.parts[i].store,
                "round": r,
            }
            for i in active
            if self.parts[i].kind != "copycat"
        ]
        settings = {"epochs": t.epochs, "lr": t.lr, "batch_size": t.batch_size}
        with self._time("training"):
            n = len(self.workers)
            refs = [
                w.train.remote(self.task, jobs[i::n], settings)
                for i, w in enumerate(self.workers)
                if jobs[i::n]
            ]
            trained = [d for part in ray.get(refs) for d in part]
        cpu = [d["cpu"] for d in trained]
        cids: dict[int, str] = {}
        for d in trained:
            if "error" in d:
                self.failures[f"train: {d['error'][:80]}"] += 1
            else:
                cids[d["index"]] = d["cid"]
        # a copycat copies an update already public: one submitted on time (not a straggler's)
        originals = [
            i
            for i in cids
            if self.parts[i].kind in ("honest", "noisy") and not self.parts[i].straggler
        ]
        for i in active:
            if self.parts[i].kind == "copycat" and originals:
                cids[i] = cids[self.rng.choice(originals)]
        on_time = [
            i
            for i in sorted(cids, key=lambda i: (self.parts[i].kind == "copycat", i))
            if not self.parts[i].straggler
        ]
        late = [i for i in sorted(cids) if self.parts[i].straggler]
        with self._time("submission"):
            # copycats send once the originals are mined: they copy what is public (a node may
            # mine one JSON-RPC batch's transactions in any order)
            first = [i for i in on_time if self.parts[i].kind != "copycat"]
            then = [i for i in on_time if self.parts[i].kind == "copycat"]
            sent = []
            for part in (first, then):
                sent += self._batch(
                    [
                        (
                            self.parts[i].ident.account,
                            tasks.submitUpdate(self.task, _cid(to_bytes(cids[i]))),
                        )
                        for i in part
                    ],
                    "submitUpdate",
                )
            on_time = first + then
            for i, s in zip(on_time, sent, strict=True):
                if s.ok:
                    self.parts[i].rounds.append(r)
            if self._phase().phase == "training":
                info = self._phase()
                self.chain.advance_time(max(1, int(info.deadline) - self.chain.now() + 1))
                self._batch(
                    [
                        (
                            self.parts[i].ident.account,
                            tasks.submitUpdate(self.task, _cid(to_bytes(cids[i]))),
                        )
                        for i in late
                    ],
                    "submitUpdate (late)",
                )
                roundflow.advance(self.ctx(self.owner.ident), self.task)
        assigned = self._assigned(r)
        with self._time("aggregation"):
            self._act("aggregate-commit", assigned)
            if self._phase().phase == "aggregation-commit":
                self._expire()
            self._act("aggregate-reveal", assigned)
            if self._phase().phase == "aggregation-reveal":
                self._expire()
        with self._time("global model"):
            info = self._phase()
            if info.phase == "global-model" and self.din.accepted_aggregates(self.task, r):
                roundflow.finalize(self.ctx(self.owner.ident), self.task)
                self._act("attest", assigned)
            if self._phase().phase == "global-model":
                self._expire()
        with self._time("accuracy"):
            with self.ctx().workdir() as work:
                cid = roundflow.current_model(self.ctx(), self.task)
                model = self.ctx().fetch(cid, work / "g.safetensors")
                acc = evaluate(model, self.test_store).score_bps / 10000
        accepted = self.din.accepted_aggregates(self.task, r)
        rnd = self.din.round_info(self.task, r)
        self.rounds.append(
            {
                "round": r,
                "accuracy": acc,
                "submitted": sum(1 for s in sent if s.ok),
                "dropped": len(dropped),
                "late": len(late),
                "groups": rnd.groups,
                "accepted_groups": len(accepted),
                "train_cpu_mean": sum(cpu) / len(cpu) if cpu else 0.0,
                "dishonest_majority": self._dishonest_groups(rnd),
            }
        )
        took = ", ".join(
            f"{k} {v - before.get(k, 0):.1f} s"
            for k, v in self.stages.items()
            if v - before.get(k, 0) >= 0.05
        )
        self.say(
            f"round {r}: accuracy {acc:.3f}, {self.rounds[-1]['submitted']} updates, "
            f"{len(accepted)}/{rnd.groups} subgroups accepted ({took})"
        )

    # ------------------------------------------------------------------ disputes
    def _audit_round(self, r: int) -> None:
        """An honest validator outvoted in a subgroup of round ``r`` disputes the accepted aggregate."""
        accepted = self.din.accepted_results(self.task, r)
        mine: dict[str, bytes] = {}
        for e in self.din.events(self.task, "AggregateRevealed"):
            if int(e["args"]["round"]) == r:
                mine[e["args"]["validator"]] = bytes(e["args"]["cid"])
        by = {v.ident.address: v for v in self.vals}
        members_of = self.din.round_info(self.task, r).validator_groups
        addrs = self.din.validators(self.task)
        from din_cli.chain.din import encode_result

        for g, (cid, bitmap) in sorted(accepted.items()):
            result = encode_result(cid, bitmap)
            outvoted = [
                by[addrs[i]]
                for i in members_of[g]
                if by[addrs[i]].kind != "colluder" and mine.get(addrs[i], result) != result
            ]
            if outvoted:
                self._dispute(outvoted[0], r, g)
                if self._phase().round < r or r in self.din.discarded_rounds(self.task):
                    return  # upheld: the task replays from round r

    def _audit_scores(self) -> None:
        """An honest evaluator outvoted in its evaluation subgroup disputes the majority's scores."""
        revealed = self.din.scores_revealed(self.task)
        by = {v.ident.address: v for v in self.vals}
        for g in range(self.din.round_info(self.task, 0).groups):
            _, validators, winner = self.din.score_majority(self.task, g)
            outvoted = [
                by[a]
                for a in validators
                if a in by
                and by[a].kind != "colluder"
                and revealed.get(a) is not None
                and (winner is None or list(revealed[a]) != list(winner))
            ]
            if outvoted and winner is not None:
                self._dispute(outvoted[0], 0, g)

    def _dispute(self, filer: Actor, round_: int, group: int) -> None:
        """File, draw, vote on and resolve one dispute (colluders on the committee abstain)."""
        from din_cli.protocol import disputes

        with self._time("disputes"):
            got = self._act("dispute-file", [filer], round=round_, group=group)
            if not got or not got[0]["ok"]:
                self.disputes.append(
                    {
                        "round": round_,
                        "group": group,
                        "state": "not filed",
                        "why": got[0]["note"] if got else "",
                    }
                )
                return
            did = int(got[0]["note"])
            owner = self.ctx(self.owner.ident)
            self.chain.advance_time(1)  # the committee is drawn from a later block than the filing
            info = disputes.draw(owner, did)
            by = {v.ident.address: v for v in self.vals}
            committee = [by[c["member"]] for c in info["committee"] if c["member"] in by]
            honest = [v for v in committee if v.kind != "colluder"]
            # the committee recomputes: the evaluation validators give it the test set's key (a
            # score dispute), the subgroup's validators their update keys (a sealed task)
            if round_ == 0:
                granters = self._assigned(0)
            elif self.sc.task.privacy == "sealed":
                granters = [v for v in self._assigned(round_) if self._group_of(v, round_) == group]
            else:
                granters = []
            granters = [  # colluders grant nothing
                v
                for v in granters
                if v.kind != "colluder" and not self.din.removed(self.task, v.ident.address)
            ]
            self._act("dispute-grant", granters, dispute=did)
            self._act("dispute-commit", honest, dispute=did)
            st = disputes.status(owner, did)
            if st["committed"] < st["size"]:
                self.chain.advance_time(max(1, st["commit_end"] - self.chain.now()))
            self._act("dispute-reveal", honest, dispute=did)
            st = disputes.status(owner, did)
            if st["revealed"] < st["size"]:
                self.chain.advance_time(max(1, st["reveal_end"] - self.chain.now()))
            st = disputes.resolve(owner, did)
            self.disputes.append(
                {
                    "id": did,
                    "round": round_,
                    "group": group,
                    "state": st["state"],
                    "committee": len(committee),
                    "colluders_on_committee": len(committee) - len(honest),
                }
            )
            self.say(f"dispute {did} (round {round_} subgroup {group}): {st['state']}")

    def _group_of(self, v: Actor, round_: int) -> int | None:
        return self.din.subgroup_of(self.task, v.ident.address, round_).group

    def _dishonest_groups(self, rnd) -> int:
        addrs = self.din.validators(self.task)
        colluders = {v.ident.address for v in self.vals if v.kind == "colluder"}
        return sum(
            1 for g in rnd.validator_groups if 2 * sum(addrs[i] in colluders for i in g) > len(g)
        )

    def _evaluate(self) -> None:
        from din_cli.protocol import evaluation

        with self._time("evaluation"):
            if self._phase().phase != "test-set":
                self.notes.append(f"evaluation skipped: the task is {self._phase().phase}")
                return
            evaluation.post_test_set(self.ctx(self.owner.ident), self.task, self.test_store)
            if self.sc.task.privacy == "sealed":
                self._act("grant-keys", self.vals)
            if self._phase().phase == "test-set":
                self._expire()
            removed = {
                v.ident.address for v in self.vals if self.din.removed(self.task, v.ident.address)
            }
            assigned = [v for v in self._assigned(0) if v.ident.address not in removed]
            self._act("score-commit", assigned)
            if self._phase().phase == "score-commit":
                self._expire()
            self._act("score-reveal", assigned)
            if self._phase().phase == "score-reveal":
                self._expire()
            self.eval_dishonest = self._dishonest_groups(self.din.round_info(self.task, 0))

    def _settle(self) -> None:
        from din_cli.chain.din import pack_scores, unpack_scores
        from din_cli.protocol import rewards

        with self._time("settlement"):
            info = self._phase()
            if info.phase == "settling":
                opens = max(self.din.settle_opens(self.task, g) for g in range(info.groups))
                if opens > self.chain.now():
                    self.chain.advance_time(opens - self.chain.now())
                rewards.settle(self.ctx(self.owner.ident), self.task)
            info = self._phase()
            if info.phase not in ("settled", "abandoned"):
                self.notes.append(f"not settled: the task is {info.phase}")
                return
            parts = self.din.participants(self.task)
            scores: dict[str, list[int]] = {}
            for e in self.din._logs("SubgroupSettled", taskId=self.task):
                vec = unpack_scores(e["args"]["scores"])
                for i in e["args"]["participants"]:
                    scores[parts[i]] = vec
            tasks = self.din.tasks.functions
            settled = self.din.settlement_results(self.task)
            claim_p = [p for p in self.parts if settled.get(p.ident.address, 0) > 0]
            self._batch(
                [
                    (p.ident.account, tasks.claim(self.task, pack_scores(scores[p.ident.address])))
                    for p in claim_p
                ],
                "claim",
            )
            removed = {
                v.ident.address for v in self.vals if self.din.removed(self.task, v.ident.address)
            }
            self._batch(
                [
                    (v.ident.account, tasks.claim(self.task, pack_scores([])))
                    for v in self.vals
                    if v.ident.address not in removed
                ],
                "claim",
            )
            if self.din.claimable(self.task, self.owner.ident.address):
                self._batch(
                    [(self.owner.ident.account, tasks.claim(self.task, pack_scores([])))], "claim"
                )

    # ------------------------------------------------------------------ the run
    def run(self) -> dict:
        import ray

        t0 = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        self.home = self.out / "home"
        self.home.mkdir()
        os.environ["DIN_HOME"] = str(self.home)
        try:
            with self._time("set-up"):
                url = self._open_chain()
                self._actors()
                self.test_store = self._stores()
                self._setup(self.test_store)
                self.say(
                    f"task {self.task}: {len(self.parts)} participants, {len(self.vals)} validators, "
                    f"{self.sc.task.groups} subgroups on {url if self.anvil is None else 'anvil ' + url}"
                )
            with self._time("workers start"):
                self._start_workers(url)
            from din_cli.protocol import roundflow

            roundflow.start(self.ctx(self.owner.ident), self.task)
            for _ in range(3 * self.sc.task.rounds):  # replays after upheld disputes included
                info = self._phase()
                if info.phase != "training":
                    break
                self._round(info.round)
                self._audit_round(info.round)
            self._evaluate()
            if self._phase().phase == "settling":
                self._audit_scores()
            self._settle()
            for w in self.workers:
                for g in ray.get(w.take_gas.remote()):
                    self.gas.append(tuple(g))
            self.peaks = {
                "coordinator": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                "workers": ray.get([w.peak_rss.remote() for w in self.workers]),
            }
            self.wall = time.perf_counter() - t0
            from din_cli.sim.report import build

            return build(self)
        finally:
            if ray.is_initialized():
                ray.shutdown()
            if self.anvil is not None:
                self.anvil.stop()


def simulate(sc: Scenario, out: str | Path, *, address: str | None = None, say=print) -> dict:
    """Run ``sc`` with its files under ``out`` (must be empty or absent); the report's dict."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise UsageError(
            "din simulate runs its workers on Ray, which is not installed",
            "pip install 'din-cli[sim]' (Ray and matplotlib)",
        ) from None
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} is a file", "give a new folder with --out")
    if address and (sc.run.chain in ("embedded", "anvil") or not sc.run.ipfs):
        raise UsageError(
            "workers on a Ray cluster need a chain and a content store they all reach",
            "set run.chain to an http:// dev node and run.ipfs to an IPFS node's API",
        )
    if out.exists() and any(out.iterdir()):
        raise UsageError(
            f"{out} is not empty", "give a new folder with --out (nothing is overwritten)"
        )
    if sc.behaviour.poisoners and sc.task.privacy != "open":
        raise UsageError(
            "the simulated poisoners build their update from their own plain one",
            'run poisoners with task.privacy = "open"',
        )
    return Simulation(sc, out, address=address, say=say).run()
