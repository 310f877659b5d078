"""The network's economy on chain: delegated stake and its rewards, emission, governance, grants.

``Economy(chain, deployment)`` wraps ValidatorRegistry's delegation side,
DinToken's supply, DinGovernor (credits, proposals, quadratic votes, timelock)
and DinGrants (quadratic-funding rounds). Each method takes the acting
``account`` first where it sends a transaction, approves tokens when needed and
returns a plain dict of what changed. Amounts are token units (10^18 per DIN).

Proposal actions are named parameter changes (``PARAMETERS``), so a user writes
``offence-slash-bps=1000`` and never calldata:

    eco = Economy(chain, dep)
    pid = eco.propose(alice, cid_bytes, [("offence-slash-bps", "1000")])["id"]
"""

from __future__ import annotations

from din_cli.errors import InputError, NotFoundError, UsageError

PROPOSAL_STATES = ("none", "active", "defeated", "succeeded", "queued", "executed", "expired")

# name -> (contract, function, number of integer arguments, what the value means)
PARAMETERS = {
    "min-stake": ("registry", "setMinStake", 1, "minimum self-stake in DIN"),
    "offence-slash-bps": (
        "registry",
        "setOffenceSlashBps",
        1,
        "share of a pool a protocol offence burns at least (basis points)",
    ),
    "fee-shares": (
        "registry",
        "setFeeShares",
        2,
        "BURN_BPS,PUBLIC_GOODS_BPS: shares of network fees burnt and sent to the public-goods pool",
    ),
    "inflation": (
        "registry",
        "setInflation",
        2,
        "EMISSION,DECAY_BPS: DIN emitted in the first epoch from now, and the decay per epoch",
    ),
    "rules": (
        "governor",
        "setRules",
        5,
        "VOTING_S,TIMELOCK_S,GRACE_S,QUORUM_VOTES,THRESHOLD_CREDITS: the governor's own rules",
    ),
}
# values given in DIN (converted to token units); the rest are plain integers
_DIN_VALUES = {("min-stake", 0), ("inflation", 0)}


def parse_change(text: str) -> tuple[str, list[int]]:
    """``NAME=V[,V...]`` -> (name, integer arguments); UsageError naming the fix otherwise."""
    from din_cli.chain.network import parse_amount

    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or name not in PARAMETERS:
        known = ", ".join(f"{k}=" for k in PARAMETERS)
        raise UsageError(f"unknown parameter change {text!r}", f"give one of {known}")
    count = PARAMETERS[name][2]
    parts = [p.strip() for p in value.split(",")]
    if len(parts) != count or not all(parts):
        raise UsageError(
            f"{name} takes {count} value(s), got {value!r}", f"give {name}={PARAMETERS[name][3]}"
        )
    args = []
    for i, p in enumerate(parts):
        if (name, i) in _DIN_VALUES:
            args.append(parse_amount(p))
            continue
        try:
            args.append(int(p, 0))
        except ValueError:
            raise UsageError(
                f"{name}: {p!r} is not an integer", f"give {name}={PARAMETERS[name][3]}"
            ) from None
        if args[-1] < 0:
            raise UsageError(f"{name}: {p} is negative", "give a value of 0 or more")
    return name, args


class Economy:
    """Staking, emission, governance and grants of one deployment."""

    def __init__(self, chain, deployment: dict):
        from din_cli.chain.din import GOVERNOR, GRANTS, REGISTRY, TOKEN

        missing = [k for k in (GOVERNOR, GRANTS) if not deployment.get(k)]
        if missing:
            raise NotFoundError(
                f"this deployment predates {', '.join(missing)}",
                "deploy afresh with `din init` in a new DIN_HOME",
            )
        self.chain = chain
        self.deployment = deployment
        self.from_block = int(deployment.get("block", 0))
        self.token = chain.contract(TOKEN, deployment[TOKEN])
        self.registry = chain.contract(REGISTRY, deployment[REGISTRY])
        self.governor = chain.contract(GOVERNOR, deployment[GOVERNOR])
        self.grants = chain.contract(GRANTS, deployment[GRANTS])

    # -- plumbing
    def _send(self, account, fn):
        return self.chain.send(account, fn)

    def _call(self, fn):
        return self.chain.call(fn)

    def _event(self, receipt, contract, name: str) -> dict:
        from din_cli.chain.din import _discard

        events = list(contract.events[name]().process_receipt(receipt, errors=_discard()))
        return dict(events[-1]["args"]) if events else {}

    def _approve(self, account, spender: str, amount: int) -> None:
        have = self._call(self.token.functions.allowance(account.address, spender))
        if have < amount:
            self._send(account, self.token.functions.approve(spender, int(amount)))

    # -- staking
    def delegate(self, account, validator: str, amount: int) -> dict:
        self._approve(account, self.registry.address, int(amount))
        r = self._send(account, self.registry.functions.delegate(validator, int(amount)))
        e = self._event(r, self.registry, "Delegated")
        return {**self.position(validator, account.address), "delegated": int(e["amount"])}

    def undelegate(self, account, validator: str, amount: int) -> dict:
        r = self._send(account, self.registry.functions.undelegate(validator, int(amount)))
        e = self._event(r, self.registry, "Undelegated")
        return {
            **self.position(validator, account.address),
            "undelegated": int(e["amount"]),
            "release_at": int(e["releaseAt"]),
        }

    def withdraw_unbonded(self, account, validator: str) -> dict:
        r = self._send(account, self.registry.functions.withdrawUnbonded(validator))
        e = self._event(r, self.registry, "UnbondedWithdrawn")
        return {**self.position(validator, account.address), "withdrawn": int(e["amount"])}

    def claim_rewards(self, account, validator: str, *, compound: bool = False) -> dict:
        r = self._send(account, self.registry.functions.claimRewards(validator, bool(compound)))
        e = self._event(r, self.registry, "RewardsClaimed")
        return {
            **self.position(validator, account.address),
            "claimed": int(e["amount"]),
            "compounded": bool(compound),
        }

    def set_commission(self, account, bps: int) -> dict:
        if not 0 <= int(bps) <= 10_000:
            raise UsageError(f"commission {bps} is not 0..10000 basis points", "give e.g. 500")
        r = self._send(account, self.registry.functions.setCommission(int(bps)))
        e = self._event(r, self.registry, "CommissionAnnounced")
        return {"validator": account.address, "commission_bps": int(bps), "from": int(e["at"])}

    def distribute(self, account) -> dict:
        before = int(self._call(self.registry.functions.emitted()))
        self._send(account, self.registry.functions.distribute())
        return {
            **self.supply(),
            "minted": int(self._call(self.registry.functions.emitted())) - before,
        }

    def notify_fees(self, account, validator: str, amount: int) -> dict:
        self._approve(account, self.registry.address, int(amount))
        r = self._send(account, self.registry.functions.notifyFees(validator, int(amount)))
        e = self._event(r, self.registry, "FeesNotified")
        return {
            "validator": validator,
            "amount": int(e["amount"]),
            "burnt": int(e["burnt"]),
            "public_goods": int(e["publicGoods"]),
            "to_pool": int(e["amount"]) - int(e["burnt"]) - int(e["publicGoods"]),
        }

    def pool(self, validator: str) -> dict:
        fields = self._call(self.registry.functions.pools(validator))
        names = (
            "tokens shares ub_tokens ub_shares bonded weight unlock_at tombstoned commission_bps"
            " next_commission_bps commission_at hpke_key acc_global acc_per_share commission_owed"
        ).split()
        p = dict(zip(names, fields, strict=True))
        return {
            "validator": validator,
            "stake": int(p["tokens"]),
            "self_stake": int(self._call(self.registry.functions.selfStakeOf(validator))),
            "unbonding": int(p["ub_tokens"]),
            "bonded": int(p["bonded"]),
            "active": bool(self._call(self.registry.functions.isActive(validator))),
            "tombstoned": bool(p["tombstoned"]),
            "unlock_at": int(p["unlock_at"]) or None,
            "commission_bps": int(p["commission_bps"]),
            "next_commission_bps": int(p["next_commission_bps"]) if p["commission_at"] else None,
            "commission_from": int(p["commission_at"]) or None,
        }

    def position(self, validator: str, delegator: str) -> dict:
        """``delegator``'s delegation to ``validator``: worth, unbonding, pending rewards."""
        amount, release, ready = self._call(
            self.registry.functions.unbondingOf(validator, delegator)
        )
        return {
            "validator": validator,
            "delegator": delegator,
            "delegation": int(
                self._call(self.registry.functions.delegationOf(validator, delegator))
            ),
            "unbonding": int(amount),
            "release_at": int(release) or None,
            "withdrawable": int(ready),
            "rewards": int(
                self._call(self.registry.functions.pendingRewards(validator, delegator))
            ),
        }

    def positions(self, delegator: str) -> list[dict]:
        """Every validator ``delegator`` ever delegated to (from the chain's events), with its position."""
        seen: list[str] = []
        for name in ("Delegated", "Staked"):
            for e in self.chain.logs(self.registry, name, from_block=self.from_block):
                a = e["args"]
                who = a.get("delegator", a.get("validator"))
                if who.lower() == delegator.lower() and a["validator"] not in seen:
                    seen.append(a["validator"])
        return [self.position(v, delegator) for v in seen]

    def supply(self) -> dict:
        now = self.chain.now()
        r = self.registry.functions
        return {
            "total_supply": int(self._call(self.token.functions.totalSupply())),
            "cap": int(self._call(self.token.functions.cap())),
            "total_minted": int(self._call(self.token.functions.totalMinted())),
            "emitted": int(self._call(r.emitted())),
            "scheduled": int(self._call(r.scheduled(now))),
            "total_bonded": int(self._call(r.totalBonded())),
            "total_unbonding": int(self._call(r.totalUnbonding())),
            "active_stake": int(self._call(r.totalWeight())),
            "undistributed": int(self._call(r.undistributed())),
            "epoch_length": int(self._call(r.epochLength())),
            "epoch_emission": int(self._call(r.epochEmission())),
            "decay_bps": int(self._call(r.decayBps())),
            "min_stake": int(self._call(r.minStake())),
            "offence_slash_bps": int(self._call(r.offenceSlashBps())),
            "fee_burn_bps": int(self._call(r.feeBurnBps())),
            "public_goods_bps": int(self._call(r.publicGoodsBps())),
            "public_goods_pool": int(self._call(self.grants.functions.available())),
        }

    # -- governance
    def claim_credits(self, account, task_id: int) -> dict:
        r = self._send(account, self.governor.functions.claimCredits(int(task_id)))
        e = self._event(r, self.governor, "CreditsEarned")
        roles = int(e["roles"])
        return {
            "task": int(task_id),
            "roles": [
                n for bit, n in ((1, "participant"), (2, "validator"), (4, "owner")) if roles & bit
            ],
            "earned": int(e["credits"]),
            "credits": int(e["total"]),
        }

    def credits(self, address: str) -> int:
        return int(self._call(self.governor.functions.creditsOf(address)))

    def actions(self, changes: list[tuple[str, list[int]]]) -> tuple[list[str], list[bytes]]:
        """Targets and calldata of named parameter changes."""
        targets, calldatas = [], []
        for name, args in changes:
            where, fn, _, _ = PARAMETERS[name]
            contract = self.registry if where == "registry" else self.governor
            targets.append(contract.address)
            calldatas.append(bytes.fromhex(contract.encode_abi(fn, args=list(args))[2:]))
        return targets, calldatas

    def propose(self, account, cid: bytes, changes: list[tuple[str, list[int]]]) -> dict:
        targets, calldatas = self.actions(changes)
        r = self._send(account, self.governor.functions.propose(bytes(cid), targets, calldatas))
        e = self._event(r, self.governor, "ProposalCreated")
        return self.proposal(int(e["id"]))

    def vote(self, account, proposal: int, support: bool, votes: int) -> dict:
        r = self._send(
            account, self.governor.functions.vote(int(proposal), bool(support), int(votes))
        )
        e = self._event(r, self.governor, "VoteCast")
        return {**self.proposal(int(proposal)), "voted": int(e["votes"]), "cost": int(e["cost"])}

    def queue(self, account, proposal: int) -> dict:
        self._send(account, self.governor.functions.queue(int(proposal)))
        return self.proposal(int(proposal))

    def execute(self, account, proposal: int) -> dict:
        created = self._created(int(proposal))
        self._send(
            account,
            self.governor.functions.execute(
                int(proposal), list(created["targets"]), [bytes(c) for c in created["calldatas"]]
            ),
        )
        return self.proposal(int(proposal))

    def _created(self, proposal: int) -> dict:
        logs = self.chain.logs(
            self.governor, "ProposalCreated", from_block=self.from_block, id=int(proposal)
        )
        if not logs:
            raise NotFoundError(f"no proposal {proposal}", "list them with `din gov status`")
        return dict(logs[-1]["args"])

    def proposal(self, proposal: int) -> dict:
        from din_cli.protocol import cids

        created = self._created(int(proposal))
        p = self._call(self.governor.functions.proposals(int(proposal)))
        proposer, snapshot, vote_end, eta, executed, has_actions, for_v, against_v, _ = p
        state = PROPOSAL_STATES[int(self._call(self.governor.functions.state(int(proposal))))]
        try:
            text = cids.to_text(created["cid"])
        except InputError:
            text = "0x" + bytes(created["cid"]).hex()
        return {
            "id": int(proposal),
            "state": state,
            "proposer": proposer,
            "cid": text,
            "actions": self._describe(created["targets"], created["calldatas"]),
            "snapshot_block": int(snapshot),
            "vote_end": int(vote_end),
            "eta": int(eta) or None,
            "for": int(for_v),
            "against": int(against_v),
            "quorum": int(self._call(self.governor.functions.quorumVotes())),
        }

    def proposals(self) -> list[dict]:
        n = int(self._call(self.governor.functions.proposalCount()))
        return [self.proposal(i) for i in range(1, n + 1)]

    def _describe(self, targets, calldatas) -> list[str]:
        out = []
        for target, data in zip(targets, calldatas, strict=True):
            contract = self.registry if target == self.registry.address else self.governor
            try:
                fn, args = contract.decode_function_input(bytes(data))
            except ValueError:
                out.append(f"{target}: 0x{bytes(data).hex()}")
                continue
            name = next((k for k, v in PARAMETERS.items() if v[1] == fn.fn_name), fn.fn_name)
            out.append(f"{name}={','.join(str(v) for v in args.values())}")
        return out

    # -- grants
    def open_round(self, account, recipients: list[str], cids: list[bytes], duration: int) -> dict:
        r = self._send(
            account, self.grants.functions.openRound(list(recipients), list(cids), int(duration))
        )
        e = self._event(r, self.grants, "RoundOpened")
        return self.round(int(e["round"]))

    def contribute(self, account, round_id: int, project: int, amount: int) -> dict:
        self._approve(account, self.grants.address, int(amount))
        r = self._send(
            account, self.grants.functions.contribute(int(round_id), int(project), int(amount))
        )
        e = self._event(r, self.grants, "Contributed")
        return {
            **self.round(int(round_id)),
            "contributed": int(amount),
            "counted": bool(e["counted"]),
        }

    def finalize(self, account, round_id: int) -> dict:
        self._send(account, self.grants.functions.finalize(int(round_id)))
        return self.round(int(round_id))

    def claim_grant(self, account, round_id: int, project: int) -> dict:
        r = self._send(account, self.grants.functions.claim(int(round_id), int(project)))
        e = self._event(r, self.grants, "GrantClaimed")
        return {
            "round": int(round_id),
            "project": int(project),
            "recipient": e["recipient"],
            "amount": int(e["amount"]),
        }

    def donate(self, account, amount: int) -> dict:
        self._send(account, self.token.functions.transfer(self.grants.address, int(amount)))
        return {
            "donated": int(amount),
            "available": int(self._call(self.grants.functions.available())),
        }

    def round(self, round_id: int) -> dict:
        from din_cli.protocol import cids

        end, snapshot, count, finalized, matching = self._call(
            self.grants.functions.rounds(int(round_id))
        )
        if not end:
            raise NotFoundError(f"no funding round {round_id}", "open one with `din grants round`")
        opened = self.chain.logs(
            self.grants, "RoundOpened", from_block=self.from_block, round=int(round_id)
        )[-1]["args"]
        projects = []
        for i in range(int(count)):
            recipient, _, counted, contributed, matched, claimed = self._call(
                self.grants.functions.projects(int(round_id), i)
            )
            projects.append(
                {
                    "project": i,
                    "recipient": recipient,
                    "cid": cids.to_text(opened["cids"][i]),
                    "contributed": int(contributed),
                    "counted": int(counted),
                    "raw_match": int(self._call(self.grants.functions.rawMatch(int(round_id), i))),
                    "matched": int(matched),
                    "claimed": bool(claimed),
                }
            )
        return {
            "round": int(round_id),
            "end": int(end),
            "finalized": bool(finalized),
            "matching": int(matching),
            "projects": projects,
        }
