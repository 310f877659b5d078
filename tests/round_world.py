"""A whole task on a throw-away embedded chain, driven through din_cli.protocol (test helper)."""

from __future__ import annotations

from pathlib import Path

UNIT = 10**18
MIN_STAKE = 100 * UNIT
DEPOSIT = 1000 * UNIT + 7  # odd on purpose: payouts must still sum to it exactly
SPAN = 600


def identity(name: str):
    from eth_account import Account

    from din_cli.crypto import hpke
    from din_cli.crypto.keystore import Identity

    acct = Account.create()
    private, public = hpke.generate_keypair()
    return Identity(name, acct.address, bytes(acct.key), private, public)


class World:
    """Owner, participants and validators (unlocked identities) with one published task."""

    def __init__(
        self,
        tmp: Path,
        *,
        participants=3,
        validators=3,
        subgroup_size=3,
        per_group=3,
        rounds=1,
        shuffle=(),
        arch="logreg:64-10",
        fee_bps=1000,
        metric="accuracy",
        deployed=None,
        dataset="digits",
        ipfs_api=None,
        **task_kw,
    ):
        """``deployed``: ``(chain, dev, deployment)`` to share (e.g. anvil); default a fresh embedded chain.
        ``ipfs_api``: an IPFS daemon as the content store (default din's local store)."""
        self.ipfs_api = ipfs_api
        from din_cli.chain.client import connect
        from din_cli.chain.din import DURATION_NAMES, Din, deploy_all, file_sha256
        from din_cli.ml.data import split
        from din_cli.ml.models import init_model
        from din_cli.protocol.context import open_context

        if deployed is None:
            self.chain = connect("memory")
            dev = self.chain.dev_account()
            self.dep = deploy_all(self.chain, dev, min_stake=MIN_STAKE, unstake_delay=3600)
        else:
            self.chain, dev, self.dep = deployed
        din = Din(self.chain, self.dep)
        self.tmp = tmp
        self.owner = identity("owner")
        self.parts = [identity(f"p{i}") for i in range(participants)]
        self.vals = [identity(f"v{i}") for i in range(validators)]
        for who in [self.owner, *self.parts, *self.vals]:
            self.chain.fund(who.address, UNIT)
        din.transfer(dev, self.owner.address, 10 * DEPOSIT)
        for v in self.vals:
            din.transfer(dev, v.address, 2 * MIN_STAKE)
        self.stores = split(
            dataset,
            tmp / "stores",
            participants=participants,
            alpha=None,
            seed=0,
            shuffle_labels=tuple(shuffle),
        )
        self.test_store = self.stores[-1]
        init_model(arch, tmp / "genesis.safetensors", seed=0)
        from din_cli.protocol import roundflow

        self.task = roundflow.publish(
            self.ctx(self.owner),
            tmp / "genesis.safetensors",
            DEPOSIT,
            subgroup_size=subgroup_size,
            validators_per_subgroup=per_group,
            max_rounds=rounds,
            fee_bps=fee_bps,
            metric=metric,
            durations={n: SPAN for n in DURATION_NAMES},
            **task_kw,
            test_set_hash=file_sha256(self.test_store),
        )["task_id"]
        for v in self.vals:
            din.stake(v.account, MIN_STAKE, v.hpke_public)
            din.register_validator_for_task(v.account, self.task)
        for p in self.parts:
            din.join_task(p.account, self.task, p.hpke_public)
        self.din = din
        self._open = open_context

    def ctx(self, who=None):
        from din_cli.protocol.context import open_context

        return open_context(None, self.ipfs_api, who, chain=self.chain, deployment=self.dep)

    def phase(self) -> str:
        return self.din.task_info(self.task).phase

    def advance(self, seconds: int = SPAN + 1) -> None:
        from din_cli.protocol import roundflow

        self.chain.advance_time(seconds)
        roundflow.advance(self.ctx(self.owner), self.task)

    def assigned(self, round_: int | None = None) -> list:
        info = self.din.round_info(self.task, round_)
        by = {v.address: v for v in self.vals}
        addrs = self.din.validators(self.task)
        return [by[addrs[i]] for g in info.validator_groups for i in g]

    def train_all(self, skip=(), **kw):
        from din_cli.protocol import roundflow

        kw = {"epochs": 5, "lr": 0.5, **kw}
        return [
            roundflow.train_and_submit(self.ctx(p), self.task, self.stores[i], **kw)
            for i, p in enumerate(self.parts)
            if i not in skip
        ]

    def aggregate_all(self, skip_reveal=(), cids=None):
        from din_cli.protocol import roundflow

        cids = cids or {}
        vals = self.assigned()
        for v in vals:
            roundflow.aggregate_commit(self.ctx(v), self.task, cid=cids.get(v.name))
        if self.phase() != "aggregation-reveal":
            self.advance()
        for v in vals:
            if v.name not in skip_reveal:
                roundflow.aggregate_reveal(self.ctx(v), self.task)
        if self.phase() == "aggregation-reveal":
            self.advance()

    def finalize_and_attest(self):
        from din_cli.errors import DinError
        from din_cli.protocol import roundflow

        roundflow.finalize(self.ctx(self.owner), self.task)
        for v in self.assigned():
            if self.phase() != "global-model":
                break
            try:
                roundflow.attest(self.ctx(v), self.task)
            except DinError:
                pass

    def run_round(self, **kw):
        self.train_all(**kw)
        if self.phase() == "training":
            self.advance()
        self.aggregate_all()
        self.finalize_and_attest()

    def evaluate_all(self, overrides=None, skip_reveal=(), skip=()):
        from din_cli.protocol import evaluation
        from din_cli.protocol.roundflow import validator_state

        overrides = overrides or {}
        evaluation.post_test_set(self.ctx(self.owner), self.task, self.test_store)
        vals = self.assigned(0)
        for v in vals:
            if (
                v.name not in skip
                and not validator_state(self.ctx(), self.task, v.address)["removed"]
            ):
                evaluation.evaluate_commit(self.ctx(v), self.task, overrides=overrides.get(v.name))
        if self.phase() == "score-commit":
            self.advance()
        for v in vals:
            if v.name not in skip_reveal and self.phase() == "score-reveal":
                if validator_state(self.ctx(), self.task, v.address)["score_committed"]:
                    evaluation.evaluate_reveal(self.ctx(v), self.task)
        if self.phase() == "score-reveal":
            self.advance()

    def settle_and_claim(self):
        from din_cli.errors import DinError
        from din_cli.protocol import rewards

        info = self.din.task_info(self.task)
        if info.phase == "settling":  # subgroups whose validators disagree wait for the window
            opens = max(self.din.settle_opens(self.task, g) for g in range(info.groups))
            if opens > self.chain.now():
                self.chain.advance_time(opens - self.chain.now())
        rewards.settle(self.ctx(self.owner), self.task)
        info = self.din.task_info(self.task)  # a split by record waits for the proof window
        if info.phase == "settled" and self.chain.now() < info.deadline:
            self.chain.advance_time(info.deadline - self.chain.now())
        paid = {}
        for who in [self.owner, *self.parts, *self.vals]:
            try:
                paid[who.name] = rewards.claim(self.ctx(who), self.task)["amount"]
            except DinError:
                paid[who.name] = 0
        return paid
