"""ValidatorRegistry's delegated proof of stake under random operation sequences, plus the
pitfalls audits of reward-per-share contracts keep finding.

A Hypothesis state machine drives a standalone registry (its own DinToken, whose minter it is;
the dev account is task manager, dispute contract and governor, so it can bond, slash and change
parameters directly): validators stake, unstake, withdraw and set commissions; delegators
delegate, undelegate, withdraw and claim or compound; time jumps (days with nothing staked
included); emission is distributed, fees notified, stake bonded and slashed (sometimes with an
offence floor), fee shares and the inflation schedule changed. After every step every invariant
is checked exactly, in integers, from one consistent read of the chain (one block):

* ``totalBonded`` = sum of pools' tokens, ``totalUnbonding`` = sum of unbonding tokens,
  ``totalWeight`` = sum of active pools' tokens (and a pool weighs its tokens iff it is active);
* a pool's shares are exactly its delegations' shares, and its tokens are their worth to within
  one unit per holder (each worth is floored); an empty unbonding pool holds nothing;
* registry balance = totalBonded + totalUnbonding + rewardsIn - rewardsPaid;
* rewardsIn (plus the emission due now) = rewardsPaid + sum of ``pendingRewards`` over every
  (validator, account) pair + what waits undistributed + dust, 0 <= dust <= DUST_PER_TX per
  transaction + one unit per pool and per pair (see ``dust_bound``);
* minted = initial supply + emitted <= cap, emitted <= scheduled(now); supply = minted - burnt;
  the public-goods pool got exactly its shares of fees;
* a slash cuts the bonded and the unbonding pool, and so every holder's worth, by the same
  fraction (each pool to within one unit, each holder to within one unit plus its part of its
  pool's unit); a tombstoned validator is never active.

Rewards that arrive while nothing is staked are part of the accounting identity (waiting in
``undistributed`` and then in the next stakers' ``pendingRewards``), so none can get lost.

The embedded chain deploys a fresh registry per example; on anvil (``DIN_TEST_ANVIL``) one
deployment serves the module and each example runs between ``evm_snapshot`` and ``evm_revert``.
Reads go in one batch per check: straight on the py-evm state on the embedded chain (a plain
eth_call costs ~10 ms there), as one JSON-RPC batch of eth_calls pinned to one block on anvil.

The contract bugs this file found (and that were fixed) keep a regression test each at the end.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from din_cli.errors import TransactionReverted

UNIT = 10**18
BPS = 10_000
DAY = 86_400
MIN_STAKE = 10 * UNIT
DELAY = 3600  # unstake and unbonding delay
NOTICE = 1800  # commission notice
MAX_COMMISSION = 5000
EPOCH = DAY
EMISSION = 1000 * UNIT  # first epoch's emission
DECAY = 1000  # 10 % per epoch: the schedule can release 10,000 DIN in all
CAP_ROOM = 8000 * UNIT  # the cap allows less, so it binds after ~15 days
INITIAL = 10**9 * UNIT  # a standalone token's initial supply (the dev account's)
TOKENS = 10**6 * UNIT  # each test account's tokens
#: an X25519 public key the registry accepts (the base point, u = 9)
KEY = (9).to_bytes(32, "little")
#: Dust one transaction can add to ``rewardsIn - paid - owed``: each of its floors (pool share
#: of ``accPerWeight``, the delegation's share of ``accPerShare``) loses under one unit; the
#: per-unit-of-weight and per-share accumulator floors lose under weight/1e36 and shares/1e36
#: units, far below one while stakes stay below 2^96 units, and are counted as one more.
DUST_PER_TX = 3

#: examples and steps of the state machine, on the embedded chain and on anvil (~0.15 s and
#: ~0.1 s a step here; DIN_STAKING_EXAMPLES / DIN_STAKING_STEPS set both, to explore longer)
EXAMPLES = {"embedded": 15, "anvil": 10}
STEPS = {"embedded": 40, "anvil": 30}
for _kind in EXAMPLES:
    EXAMPLES[_kind] = int(os.environ.get("DIN_STAKING_EXAMPLES", EXAMPLES[_kind]))
    STEPS[_kind] = int(os.environ.get("DIN_STAKING_STEPS", STEPS[_kind]))
#: DIN_STAKING_SHRINK=0: report a failure as found, without minutes of shrinking
SHRINK = os.environ.get("DIN_STAKING_SHRINK", "1") != "0"


def reverts(reason: str):
    return pytest.raises(TransactionReverted, match=reason)


# ---------------------------------------------------------------- reads in one batch


def read_views(chain, fns) -> list:
    """Results of the view calls ``fns`` (web3 contract functions), all from the latest block.

    Embedded chain: executed one after another on the head's py-evm state (built once);
    RPC chain: one JSON-RPC batch of eth_calls pinned to the latest block's number."""
    from eth_abi import decode

    if not fns:
        return []
    if chain.url is not None and chain.url.startswith("http"):
        outputs = _rpc_calls(chain, fns)
    else:
        outputs = _evm_calls(chain, fns)
    results = []
    for fn, raw in zip(fns, outputs, strict=True):
        types = [o["type"] for o in fn.abi["outputs"]]
        values = decode(types, raw)
        results.append(values[0] if len(values) == 1 else tuple(values))
    return results


def _evm_calls(chain, fns) -> list[bytes]:
    from eth.vm.message import Message
    from eth_utils import to_canonical_address

    backend = chain.backend
    chain._fresh()
    head = backend.chain.get_canonical_head()
    state = backend.chain.get_vm(at_header=head).state
    origin = b"\0" * 20
    context = state.get_transaction_context_class()(gas_price=head.base_fee_per_gas, origin=origin)
    codes: dict[bytes, bytes] = {}
    out = []
    for fn in fns:
        to = to_canonical_address(fn.address)
        if to not in codes:
            codes[to] = state.get_code(to)
        message = Message(
            gas=30_000_000,
            to=to,
            sender=origin,
            value=0,
            data=bytes.fromhex(fn._encode_transaction_data()[2:]),
            code=codes[to],
        )
        snapshot = state.snapshot()
        try:
            computation = state.computation_class.apply_message(state, message, context)
        finally:
            state.revert(snapshot)
        if computation.is_error:
            raise AssertionError(f"view {fn.fn_name} failed: {computation._error!r}")
        out.append(bytes(computation.output))
    return out


def _rpc_calls(chain, fns) -> list[bytes]:
    import requests

    block = hex(chain.head())
    body = [
        {
            "jsonrpc": "2.0",
            "id": i,
            "method": "eth_call",
            "params": [{"to": fn.address, "data": fn._encode_transaction_data()}, block],
        }
        for i, fn in enumerate(fns)
    ]
    answer = {a["id"]: a for a in requests.post(chain.url, json=body, timeout=60).json()}
    out = []
    for i, fn in enumerate(fns):
        if "error" in answer[i]:
            raise AssertionError(f"view {fn.fn_name} failed: {answer[i]['error']}")
        out.append(bytes.fromhex(answer[i]["result"][2:]))
    return out


def rpc(chain, method: str, params: list):
    response = chain.w3.provider.make_request(method, params)
    assert "error" not in response, response
    return response["result"]


# ---------------------------------------------------------------- a standalone registry


@dataclass
class Standalone:
    """A DinToken and a ValidatorRegistry of their own; ``dev`` is task manager, dispute
    contract and governor, ``grants`` a fresh address (the public-goods pool)."""

    chain: object
    dev: object
    token: object
    reg: object
    grants: str
    initial: int
    cap: int
    accounts: list = field(default_factory=list)

    def send(self, account, fn):
        return self.chain.send(account, fn)

    def view(self, *fns):
        """One view's result, or a list of several views' (all from the latest block)."""
        out = read_views(self.chain, list(fns))
        return out[0] if len(fns) == 1 else out

    def views(self, fns) -> list:
        return read_views(self.chain, list(fns))

    def account(self, tokens: int = TOKENS, key: bytes | None = None):
        """A fresh account (or the one of ``key``) with ether, ``tokens`` and an unlimited
        allowance to the registry."""
        from eth_account import Account

        a = Account.create() if key is None else Account.from_key(key)
        self.chain.fund(a.address, 10 * UNIT)
        if tokens:
            self.send(self.dev, self.token.functions.transfer(a.address, tokens))
        self.send(a, self.token.functions.approve(self.reg.address, 2**256 - 1))
        self.accounts.append(a)
        return a


def deploy_standalone(
    chain,
    dev,
    *,
    min_stake: int = MIN_STAKE,
    emission: int = EMISSION,
    decay: int = DECAY,
    cap_room: int | None = CAP_ROOM,
    fee_shares: tuple[int, int] | None = None,
) -> Standalone:
    """Deploy a token and a registry as ``deploy_all`` does, with ``dev`` in every role.

    ``cap_room``: what the cap leaves above the initial supply (None: the schedule's limit)."""
    from eth_account import Account

    from din_cli.chain.din import schedule_limit

    initial = INITIAL
    room = schedule_limit(emission, decay) if cap_room is None else cap_room
    cap = initial + room
    token = chain.contract("DinToken", chain.deploy(dev, "DinToken", initial, cap))
    reg = chain.contract(
        "ValidatorRegistry",
        chain.deploy(
            dev,
            "ValidatorRegistry",
            token.address,
            min_stake,
            DELAY,
            NOTICE,
            MAX_COMMISSION,
            EPOCH,
            emission,
            decay,
        ),
    )
    grants = Account.create().address
    chain.send(dev, reg.functions.initialize(dev.address, dev.address, dev.address, grants))
    chain.send(dev, token.functions.setMinter(reg.address))
    chain.send(dev, token.functions.approve(reg.address, 2**256 - 1))
    if fee_shares is not None:
        chain.send(dev, reg.functions.setFeeShares(*fee_shares))
    return Standalone(chain, dev, token, reg, grants, initial, cap)


@pytest.fixture(scope="module", params=["embedded", "anvil"])
def chain(request):
    from din_cli.chain.client import connect

    if request.param == "embedded":
        c = connect("memory")
    else:
        c = connect(request.getfixturevalue("anvil_url"))
    yield c
    c.close()


def is_rpc(chain) -> bool:
    return chain.url is not None and chain.url.startswith("http")


# ---------------------------------------------------------------- the state machine

N_VALIDATORS = 4  # validator accounts (registered as the machine goes)
N_DELEGATORS = 3

amounts = st.one_of(
    st.integers(1, 10**6),  # a few wei: rounding
    st.integers(UNIT, 500 * UNIT),
    st.sampled_from([1, 3, 7, UNIT - 1, 10 * UNIT + 1]),
)
stakes = st.one_of(
    st.integers(MIN_STAKE, 1000 * UNIT),
    st.just(MIN_STAKE),
    st.just(MIN_STAKE + 1),
    st.just(0),  # a key update only
    st.integers(1, 10**6),  # below the minimum for a newcomer
)
#: (mostly, index, index): see StakingMachine.validator and .pair
picks = st.tuples(st.integers(0, 4), st.integers(0, 2**16 - 1), st.integers(0, 2**16 - 1))
durations = st.one_of(
    st.integers(1, 3600),
    st.integers(3600, 5 * DAY),
    st.sampled_from([DELAY, NOTICE, 30 * DAY, 200 * DAY]),
)


class Accounts:
    """Who the machine drives: validator accounts first, then delegators (every one of them
    may delegate, to any validator)."""

    def __init__(self, sa: Standalone, n_validators: int, n_delegators: int):
        from eth_utils import keccak

        # the same accounts in every example: Hypothesis replays an example's choices, and
        # which pair an index picks must not change with random addresses
        keys = [keccak(b"din staking machine %d" % i) for i in range(n_validators + n_delegators)]
        self.all = [sa.account(key=k) for k in keys]
        self.validators = self.all[:n_validators]
        self.delegators = self.all[n_validators:]


class StakingMachine(RuleBasedStateMachine):
    """One example: random operations on one standalone registry; invariants after each.

    Rules draw their validator mostly among those that registered, and their (validator,
    account) pair mostly among those holding something, so most operations go through; the
    rest may be refused, but only for one of the reasons the rule names."""

    def __init__(self, sa: Standalone, people: Accounts):
        super().__init__()
        self.sa, self.people = sa, people
        self.chain = self.sa.chain
        self.dev = self.sa.dev
        self.reg = self.sa.reg.functions
        self.token = self.sa.token.functions
        self.snapshot = rpc(self.chain, "evm_snapshot", []) if is_rpc(self.chain) else None
        self.vals = self.people.validators
        self.actors = self.people.all
        self.by_address = {a.address: a for a in self.actors}
        # the model: what the contract state alone cannot tell
        self.pairs: set[tuple[str, str]] = set()  # (validator, account) ever holding shares
        self.registered: list[str] = []  # validators that ever staked, in order
        self.last: dict = {}  # (validator, account) -> (delegation, pending) at the last check
        self.burnt = 0  # tokens burnt by slashes and fee burns
        self.goods = 0  # tokens the public-goods pool received
        self.txs = 0  # successful registry transactions (each may leave dust)
        self.tombstoned: set[str] = set()
        self.fee_shares = tuple(self.sa.view(self.reg.feeBurnBps(), self.reg.publicGoodsBps()))
        self.goods0 = self.sa.view(self.token.balanceOf(self.sa.grants))

    def teardown(self):
        if self.snapshot is not None:
            assert rpc(self.chain, "evm_revert", [self.snapshot]) is True

    # helpers -----------------------------------------------------------------
    def send(self, account, fn, allowed: tuple[str, ...] = ()) -> bool:
        """Send; True when mined. A revert must carry one of ``allowed`` reasons."""
        try:
            self.sa.send(account, fn)
        except TransactionReverted as e:
            reason = str(e)
            assert any(a in reason for a in allowed), f"unexpected revert: {reason}"
            self.outcome(f"{fn.fn_name} refused: {next(a for a in allowed if a in reason)}")
            return False
        self.txs += 1
        self.outcome(f"{fn.fn_name} ok")
        return True

    @staticmethod
    def outcome(note: str) -> None:
        event(note)
        OUTCOMES[note] += 1

    def pool(self, v: str) -> dict:
        names = (
            "tokens shares ubTokens ubShares bonded weight unlockAt tombstoned commission "
            "nextCommission commissionAt hpkeKey accGlobal accPerShare commissionOwed"
        ).split()
        return dict(zip(names, self.sa.view(self.reg.pools(v)), strict=True))

    def holders(self, v: str) -> list[str]:
        return sorted({a for (w, a) in self.pairs if w == v} | {v})

    def validator(self, pick):
        """A validator account: mostly (four picks in five) one that registered, else any.

        ``pick`` (``picks``) is drawn whatever the state, so that replaying an example draws
        the same values even where the model's lists differ."""
        mostly, i, _ = pick
        if self.registered and mostly > 0:
            return self.by_address[self.registered[i % len(self.registered)]]
        return self.vals[i % len(self.vals)]

    def pair(self, pick, holding: str = "any"):
        """(validator address, account): mostly a pair the last check read (one that ever
        held shares, or a validator's own) that then held bonded shares of a delegation
        (``holding="shares"``), unbonding shares (``"unbonding"``) or rewards (``"rewards"``);
        else any account with any validator."""
        mostly, i, j = pick
        last = self.last
        keep = {
            "any": lambda v, a: True,
            "shares": lambda v, a: v != a and last[(v, a)][0][0] > 0,
            "unbonding": lambda v, a: last[(v, a)][0][1] > 0,
            "rewards": lambda v, a: last[(v, a)][1] > 0,
        }[holding]
        pairs = sorted((v, a) for v, a in last if keep(v, a))
        if pairs and mostly > 0:
            v, a = pairs[i % len(pairs)]
            return v, self.by_address[a]
        return self.validator((0, i, j)).address, self.actors[j % len(self.actors)]

    # rules: validators -------------------------------------------------------
    @initialize(n=st.integers(0, 2), delegated=st.integers(0, 2))
    def first_stakes(self, n, delegated):
        """Start with 0..2 validators and as many delegations (0: the first rewards wait)."""
        for v in self.vals[:n]:
            self.stake_from(v, MIN_STAKE + 12345)
        for d in self.people.delegators[: delegated if n else 0]:
            assert self.send(d, self.reg.delegate(self.vals[0].address, 3 * UNIT + 1))
            self.pairs.add((self.vals[0].address, d.address))

    def stake_from(self, v, amount) -> bool:
        ok = self.send(
            v,
            self.reg.stake(amount, KEY),
            ("tombstoned", "unstake pending", "stake below minimum", "amount below one share"),
        )
        if ok:
            assert v.address not in self.tombstoned
            self.pairs.add((v.address, v.address))
            if v.address not in self.registered:
                self.registered.append(v.address)
        return ok

    @rule(vi=st.integers(0, N_VALIDATORS - 1), amount=stakes)
    def stake(self, vi, amount):
        self.stake_from(self.vals[vi], amount)

    @rule(pick=picks)
    def request_unstake(self, pick):
        self.send(
            self.validator(pick),
            self.reg.requestUnstake(),
            ("nothing staked", "unstake already requested"),
        )

    @rule(pick=picks)
    def withdraw(self, pick):
        v = self.validator(pick)
        before, worth = self.sa.view(
            self.token.balanceOf(v.address), self.reg.selfStakeOf(v.address)
        )
        ok = self.send(
            v,
            self.reg.withdraw(),
            (
                "no unstake requested",
                "unstake delay not over",
                "bonded to a task",
                "nothing to withdraw",
            ),
        )
        if ok:  # pools' tokens do not grow with time: the worth read a block ago is paid
            assert self.sa.view(self.token.balanceOf(v.address)) - before == worth
            assert self.sa.view(self.reg.delegations(v.address, v.address))[0] == 0

    @rule(pick=picks, bps=st.integers(0, MAX_COMMISSION + 1))
    def set_commission(self, pick, bps):
        self.send(
            self.validator(pick),
            self.reg.setCommission(bps),
            ("not a registered validator", "commission above the maximum"),
        )

    # rules: delegators -------------------------------------------------------
    @rule(pick=picks, ai=st.integers(0, N_VALIDATORS + N_DELEGATORS - 1), amount=amounts)
    def delegate(self, pick, ai, amount):
        a, v = self.actors[ai], self.validator(pick).address
        shares0 = self.sa.view(self.reg.delegations(v, a.address))[0]
        ok = self.send(
            a,
            self.reg.delegate(v, amount),
            ("validator is not active", "amount below one share"),
        )
        if ok:
            self.pairs.add((v, a.address))
            assert self.sa.view(self.reg.delegations(v, a.address))[0] > shares0

    @rule(pick=picks, part=st.sampled_from(["all", "half", "one", "over"]))
    def undelegate(self, pick, part):
        v, a = self.pair(pick, "shares")
        worth = self.sa.view(self.reg.delegationOf(v, a.address))
        amount = {"all": worth, "half": worth // 2, "one": min(worth, 1), "over": worth + 1}[part]
        if amount == 0:
            self.outcome("undelegate skipped: nothing delegated")
            return
        p = self.pool(v)
        try:
            self.sa.send(a, self.reg.undelegate(v, amount))
        except TransactionReverted as e:
            reason = str(e)
            allowed = (
                "a validator leaves with requestUnstake",
                "the pool was slashed to nothing",
                "bonded to tasks in progress",
                "7 undelegations from this validator are unbonding",
            )
            if "undelegating more than the delegation" in reason:
                assert part == "over", f"{amount} of a delegation worth {worth}: {reason}"
            else:
                assert any(r in reason for r in allowed), f"unexpected revert: {reason}"
            self.outcome(f"undelegate refused: {reason.split(': ', 1)[-1]}")
            return
        self.txs += 1
        self.outcome("undelegate ok")
        assert a.address != v
        assert self.pool(v)["ubTokens"] == p["ubTokens"] + amount

    @rule(pick=picks)
    def withdraw_unbonded(self, pick):
        v, a = self.pair(pick, "unbonding")
        (worth, _, ready), before = self.sa.view(
            self.reg.unbondingOf(v, a.address), self.token.balanceOf(a.address)
        )
        ok = self.send(
            a,
            self.reg.withdrawUnbonded(v),
            ("nothing unbonding", "unbonding delay not over"),
        )
        if ok:  # what was ready a block ago, plus entries released since; the rest stays
            paid = self.sa.view(self.token.balanceOf(a.address)) - before
            assert ready <= paid <= worth, (ready, paid, worth)
            left = self.sa.view(self.reg.unbondingOf(v, a.address))[0]
            assert abs(left - (worth - paid)) <= 1, (worth, paid, left)
            self.outcome("withdraw partial" if left else "withdraw all")

    @rule(pick=picks, compound=st.booleans())
    def claim(self, pick, compound):
        v, a = self.pair(pick, "rewards")
        paid0, bal0, worth0 = self.sa.view(
            self.reg.rewardsPaid(),
            self.token.balanceOf(a.address),
            self.reg.delegationOf(v, a.address),
        )
        ok = self.send(
            a,
            self.reg.claimRewards(v, compound),
            ("no rewards to claim", "claim instead of compounding", "amount below one share"),
        )
        if not ok:
            return
        self.pairs.add((v, a.address))
        paid1, bal1, worth1, pending = self.sa.view(
            self.reg.rewardsPaid(),
            self.token.balanceOf(a.address),
            self.reg.delegationOf(v, a.address),
            self.reg.pendingRewards(v, a.address),
        )
        amount = paid1 - paid0
        assert amount > 0
        assert pending == 0  # in the claim's own block nothing more is owed: claims pay once
        if compound:
            assert bal1 == bal0
            # the new shares are floored, and every holder's worth is: two units at most
            assert worth0 + amount - 2 <= worth1 <= worth0 + amount + 1
        else:
            assert bal1 - bal0 == amount

    # rules: rewards in ----------------------------------------------------------
    @rule(seconds=durations)
    def advance_time(self, seconds):
        self.chain.advance_time(seconds)

    @rule()
    def distribute(self):
        assert self.send(self.dev, self.reg.distribute())

    @rule(pick=picks)
    def poke(self, pick):
        assert self.send(self.dev, self.reg.poke(self.validator(pick).address))

    @rule(pick=picks, amount=amounts)
    def notify_fees(self, pick, amount):
        v = self.validator(pick).address
        burn_bps, goods_bps = self.fee_shares
        in0, em0 = self.sa.view(self.reg.rewardsIn(), self.reg.emitted())
        # a validator without shares (never staked, or left) gets the whole rest itself
        ok = self.send(self.dev, self.reg.notifyFees(v, amount))
        if ok:
            burnt, goods = amount * burn_bps // BPS, amount * goods_bps // BPS
            self.burnt += burnt
            self.goods += goods
            in1, em1 = self.sa.view(self.reg.rewardsIn(), self.reg.emitted())
            assert in1 - in0 == (amount - burnt - goods) + (em1 - em0)  # fees' rest, emission

    @rule(
        kind=st.sampled_from(["fees", "inflation", "min stake"]),
        a=st.integers(0, BPS),
        b=st.integers(0, BPS),
        emission=st.sampled_from([0, UNIT, 500 * UNIT, 2000 * UNIT]),
    )
    def govern(self, kind, a, b, emission):
        """The governor's setters: fee shares (burn a, public goods b), a new schedule, or a
        minimum stake ((1 + a)/1000 of MIN_STAKE: up to ten times it) followed by a poke of
        every pool (a pool follows it only at its next operation or poke)."""
        if kind == "min stake":
            assert self.send(self.dev, self.reg.setMinStake(MIN_STAKE * (1 + a) // 1000 + 1))
            for v in self.vals:
                assert self.send(self.dev, self.reg.poke(v.address))
            return
        if kind == "fees":
            goods = min(b, BPS - a)
            assert self.send(self.dev, self.reg.setFeeShares(a, goods))
            self.fee_shares = (a, goods)
        else:
            assert self.send(self.dev, self.reg.setInflation(emission, max(a, 1)))
            emitted, base = self.sa.view(self.reg.emitted(), self.reg.scheduleBase())
            assert base == emitted

    # rules: tasks ---------------------------------------------------------------
    @rule(pick=picks, amount=amounts, release=st.booleans())
    def bond(self, pick, amount, release):
        v = self.validator(pick).address
        if release:
            assert self.send(self.dev, self.reg.unbond(v, amount))
        else:
            self.send(
                self.dev, self.reg.bond(v, amount), ("stake below minimum", "free stake below")
            )

    @rule(
        pick=picks,
        amount=st.one_of(st.just(0), amounts, st.just(2**96)),
        bps=st.one_of(st.none(), st.sampled_from([0, 1, 2500, 5000, 9999, BPS])),
    )
    def slash(self, pick, amount, bps):
        if pick[0] >= 2:  # two slashes in five picks: pools should live a while
            return
        v = self.validator((1, pick[1], pick[2])).address
        if bps is not None:
            assert self.send(self.dev, self.reg.setOffenceSlashBps(bps))
        holders = self.holders(v)
        floor_bps, supply0, minted0 = self.sa.view(
            self.reg.offenceSlashBps(), self.token.totalSupply(), self.token.totalMinted()
        )
        p0 = self.pool(v)
        shares0 = self.sa.views(self.reg.delegations(v, a) for a in holders)
        assert self.send(self.dev, self.reg.slash(v, amount))
        p1 = self.pool(v)
        worth1 = self.sa.views(self.reg.delegationOf(v, a) for a in holders)
        ub1 = self.sa.views(self.reg.unbondingOf(v, a) for a in holders)
        base = p0["tokens"] + p0["ubTokens"]
        burnt = max(min(amount, p0["bonded"]), base * floor_bps // BPS)
        burnt = min(burnt, base)
        supply1, minted1 = self.sa.view(self.token.totalSupply(), self.token.totalMinted())
        assert supply0 + (minted1 - minted0) - supply1 == burnt  # emission is minted first
        self.burnt += burnt
        assert p1["tokens"] + p1["ubTokens"] == base - burnt
        assert p1["tombstoned"] and p1["weight"] == 0
        assert p1["bonded"] <= p1["tokens"]
        self.tombstoned.add(v)
        if base == 0:
            return
        keep = Fraction(base - burnt, base)  # every holder keeps this fraction
        # each pool within one unit of it (the split of the burn rounds one way)...
        assert abs(p1["tokens"] - p0["tokens"] * keep) < 1
        assert abs(p1["ubTokens"] - p0["ubTokens"] * keep) < 1
        # ... and each holder's worth (floored) within one unit of its exact worth before times
        # that fraction, plus its share of its pool's rounding unit
        for d0, w1, (u1, _, _) in zip(shares0, worth1, ub1, strict=True):
            for held, after, tokens, shares in (
                (d0[0], w1, p0["tokens"], p0["shares"]),
                (d0[1], u1, p0["ubTokens"], p0["ubShares"]),
            ):
                if shares:
                    exact = Fraction(held * tokens, shares) * keep
                    assert abs(after - exact) < 1 + Fraction(held, shares), (after, exact)

    # the invariants -------------------------------------------------------------
    def dust_bound(self, pools: int, pairs: int) -> int:
        """Rounding dust allowed: DUST_PER_TX per transaction since deployment, plus the view's
        own floors (one per pool's share and one per pair's share, and one for the virtual
        distribution)."""
        return DUST_PER_TX * self.txs + pools + pairs + 1

    @invariant()
    def accounts_balance(self):
        r, t, sa = self.reg, self.token, self.sa
        vals = [a.address for a in self.vals]
        pairs = sorted(self.pairs | {(v, v) for v in vals})
        now = self.chain.now()
        globals_ = [
            r.totalBonded(),
            r.totalUnbonding(),
            r.totalWeight(),
            r.rewardsIn(),
            r.rewardsPaid(),
            r.undistributed(),
            r.emitted(),
            r.scheduled(now),
            t.balanceOf(r.address),
            t.balanceOf(sa.grants),
            t.totalSupply(),
            t.totalMinted(),
            t.cap(),
        ]
        per_pool = [f(v) for v in vals for f in (r.pools, r.isActive)]
        per_pair = [f(v, a) for v, a in pairs for f in (r.delegations, r.pendingRewards)]
        out = sa.views(globals_ + per_pool + per_pair)
        (
            bonded,
            unbonding,
            weight,
            rin,
            paid,
            undistributed,
            emitted,
            scheduled,
            balance,
            goods,
            supply,
            minted,
            cap,
        ) = out[: len(globals_)]
        rest = out[len(globals_) :]
        pools = {v: (rest[2 * i], rest[2 * i + 1]) for i, v in enumerate(vals)}
        rest = rest[2 * len(vals) :]
        pair_data = {pair: (rest[2 * i], rest[2 * i + 1]) for i, pair in enumerate(pairs)}
        self.last = pair_data

        # sums over pools
        assert bonded == sum(p[0] for p, _ in pools.values())
        assert unbonding == sum(p[2] for p, _ in pools.values())
        assert weight == sum(p[5] for p, _ in pools.values())
        for v, (p, active) in pools.items():
            tokens, shares, ub_tokens, ub_shares, bonded_v, weight_v = p[:6]
            tombstoned = p[7]
            assert weight_v == (tokens if active else 0), f"{v} weighs {weight_v}"
            assert bonded_v <= tokens
            if v in self.tombstoned:
                assert tombstoned and not active
            held = [(d, pending) for (w, _), (d, pending) in pair_data.items() if w == v]
            assert sum(d[0] for d, _ in held) == shares
            assert sum(d[1] for d, _ in held) == ub_shares
            if shares:  # every holder's worth is floored: under one unit lost per holder
                worth = sum(d[0] * tokens // shares for d, _ in held)
                assert 0 <= tokens - worth < sum(1 for d, _ in held if d[0]), (tokens, worth)
            else:  # what the last leaver's rounding left (its own), no more
                assert tokens <= 10**6, f"{tokens} units stranded in {v}'s empty pool"
            if ub_shares:
                worth = sum(d[1] * ub_tokens // ub_shares for d, _ in held)
                assert 0 <= ub_tokens - worth < sum(1 for d, _ in held if d[1])
            else:
                assert ub_tokens == 0

        # tokens: the registry holds stake plus rewards not paid; supply and mint bounds
        assert balance == bonded + unbonding + rin - paid
        assert minted == sa.initial + emitted <= cap
        assert emitted <= scheduled, (emitted, scheduled)
        assert supply == minted - self.burnt
        assert goods == self.goods0 + self.goods

        # rewards: in = paid + owed + waiting + dust, the emission due now included
        due = min(max(scheduled - emitted, 0), cap - minted)
        waiting = undistributed + due if weight == 0 else 0
        owed = sum(pending for _, pending in pair_data.values())
        dust = rin + due - paid - owed - waiting
        bound = self.dust_bound(len(vals), len(pairs))
        assert 0 <= dust <= bound, f"dust {dust} outside [0, {bound}]"
        OUTCOMES["max dust"] = max(OUTCOMES["max dust"], dust)
        OUTCOMES["checks"] += 1


def run_machine(chain):
    kind = "anvil" if is_rpc(chain) else "embedded"
    dev = chain.dev_account()
    shared: dict = {}

    def factory():
        if is_rpc(chain):  # one deployment per module run; each example reverts to it
            if "sa" not in shared:
                shared["sa"] = deploy_standalone(chain, dev)
                shared["people"] = Accounts(shared["sa"], N_VALIDATORS, N_DELEGATORS)
            sa, people = shared["sa"], shared["people"]
        else:
            sa = deploy_standalone(chain, dev)
            people = Accounts(sa, N_VALIDATORS, N_DELEGATORS)
        return StakingMachine(sa, people)

    run_state_machine_as_test(
        factory,
        settings=settings(
            max_examples=EXAMPLES[kind],
            stateful_step_count=STEPS[kind],
            deadline=None,
            suppress_health_check=list(HealthCheck),
            print_blob=True,
            phases=list(Phase) if SHRINK else [Phase.explicit, Phase.reuse, Phase.generate],
        ),
    )


#: how often each operation went through or was refused, and the largest dust seen (pytest -s)
OUTCOMES: Counter = Counter()


def test_staking_invariants_hold_under_random_operations(chain):
    OUTCOMES.clear()
    run_machine(chain)
    print("\n".join(f"{n:6d}  {k}" for k, n in sorted(OUTCOMES.items())))


# ---------------------------------------------------------------- explicit pitfalls


def owed_total(sa: Standalone, pairs) -> int:
    return sum(sa.views(sa.reg.functions.pendingRewards(v, a) for v, a in pairs))


def accounting_dust(sa: Standalone, pairs) -> int:
    """rewardsIn + due - paid - owed - waiting at the latest block (as the invariant)."""
    r, t = sa.reg.functions, sa.token.functions
    rin, paid, undistributed, emitted, weight, minted, cap = sa.view(
        r.rewardsIn(),
        r.rewardsPaid(),
        r.undistributed(),
        r.emitted(),
        r.totalWeight(),
        t.totalMinted(),
        t.cap(),
    )
    scheduled = sa.view(r.scheduled(sa.chain.now()))
    due = min(max(scheduled - emitted, 0), cap - minted)
    waiting = undistributed + due if weight == 0 else 0
    return rin + due - paid - owed_total(sa, pairs) - waiting


def test_notify_fees_pulls_the_tokens_it_credits(chain):
    """Fees credited without the tokens arriving would make the pool insolvent: notifyFees must
    pull the whole amount (or revert), burn and forward its shares and credit only the rest."""
    sa = deploy_standalone(chain, chain.dev_account(), emission=0, fee_shares=(1500, 2000))
    r, t = sa.reg.functions, sa.token.functions
    v, payer = sa.account(), sa.account(tokens=0)
    sa.send(v, r.stake(MIN_STAKE, KEY))
    # the payer approved the registry (Standalone.account) but holds nothing
    with reverts("ERC20InsufficientBalance"):
        sa.send(payer, r.notifyFees(v.address, UNIT))
    sa.send(payer, t.approve(sa.reg.address, 0))
    sa.send(sa.dev, t.transfer(payer.address, 10 * UNIT))
    with reverts("ERC20InsufficientAllowance"):
        sa.send(payer, r.notifyFees(v.address, UNIT))
    assert sa.view(r.rewardsIn()) == 0 and sa.view(r.pendingRewards(v.address, v.address)) == 0
    sa.send(payer, t.approve(sa.reg.address, 2**256 - 1))
    amount = 7 * UNIT + 13
    bal0, supply0 = sa.view(t.balanceOf(sa.reg.address), t.totalSupply())
    sa.send(payer, r.notifyFees(v.address, amount))
    burnt, goods = amount * 1500 // BPS, amount * 2000 // BPS
    rest = amount - burnt - goods
    assert sa.view(t.balanceOf(payer.address)) == 10 * UNIT - amount
    assert sa.view(t.balanceOf(sa.reg.address)) - bal0 == rest
    assert sa.view(t.balanceOf(sa.grants)) == goods
    assert supply0 - sa.view(t.totalSupply()) == burnt
    assert sa.view(r.rewardsIn()) == rest
    assert 0 <= rest - sa.view(r.pendingRewards(v.address, v.address)) <= 1
    # fees for an address without a pool: the whole rest is that address's, claimable by it
    nobody = sa.account(tokens=0)
    sa.send(payer, r.notifyFees(nobody.address, UNIT))
    rest2 = UNIT - UNIT * 1500 // BPS - UNIT * 2000 // BPS
    assert sa.view(r.pendingRewards(nobody.address, nobody.address)) == rest2
    sa.send(nobody, r.claimRewards(nobody.address, False))
    assert sa.view(t.balanceOf(nobody.address)) == rest2
    assert sa.view(t.balanceOf(sa.reg.address)) - bal0 == rest  # rest2 came in and went out


def test_rewards_while_nothing_is_staked_go_to_the_next_stakers(chain):
    """No emission is lost to an empty active set: it waits and the next stakers get it; a
    validator that left earns nothing for the time it was out."""
    sa = deploy_standalone(chain, chain.dev_account(), cap_room=None)
    r = sa.reg.functions
    v1, v2 = sa.account(), sa.account()
    pairs = [(v1.address, v1.address), (v2.address, v2.address)]
    chain.advance_time(3 * DAY)  # nothing staked yet
    assert sa.view(r.totalWeight()) == 0
    sa.send(v1, r.stake(MIN_STAKE, KEY))  # distributes first: all of it waits
    emitted = sa.view(r.emitted())
    assert emitted >= 3 * EMISSION * 7 // 10 and sa.view(r.undistributed()) == emitted
    chain.advance_time(600)
    sa.send(sa.dev, r.distribute())
    emitted, owed1 = sa.view(r.emitted(), r.pendingRewards(v1.address, v1.address))
    assert sa.view(r.undistributed()) == 0
    assert 0 <= emitted - owed1 <= 2  # everything, to the only staker
    sa.send(v1, r.requestUnstake())  # the active set is empty again
    left = sa.view(r.pendingRewards(v1.address, v1.address))
    emitted_then = sa.view(r.emitted())
    chain.advance_time(2 * DAY)
    assert sa.view(r.pendingRewards(v1.address, v1.address)) == left  # earns nothing now
    sa.send(v2, r.stake(2 * MIN_STAKE, KEY))
    chain.advance_time(600)
    sa.send(sa.dev, r.distribute())
    emitted = sa.view(r.emitted())
    owed2 = sa.view(r.pendingRewards(v2.address, v2.address))
    assert 0 <= (emitted - emitted_then) - owed2 <= 2
    assert sa.view(r.pendingRewards(v1.address, v1.address)) == left
    assert 0 <= accounting_dust(sa, pairs) <= 8


def test_rounding_dust_stays_bounded_under_many_tiny_operations(chain):
    """Odd and tiny amounts everywhere: shares of a few wei, fees of a few wei, claims of a
    wei. Every floor rounds toward the registry, and the dust stays within the bound."""
    sa = deploy_standalone(chain, chain.dev_account(), fee_shares=(333, 777))
    r = sa.reg.functions
    v = sa.account()
    ds = [sa.account() for _ in range(3)]
    sa.send(v, r.stake(MIN_STAKE + 7, KEY))
    sa.send(v, r.setCommission(1234))
    pairs = [(v.address, v.address)] + [(v.address, d.address) for d in ds]
    txs = 2
    for i in range(12):
        d = ds[i % 3]
        sa.send(d, r.delegate(v.address, 1 + 2 * i))
        sa.send(sa.dev, r.notifyFees(v.address, 3 + i))
        txs += 2
        try:
            sa.send(d, r.claimRewards(v.address, i % 2 == 0))
            txs += 1
        except TransactionReverted as e:  # a reward below one share cannot be compounded
            assert "no rewards to claim" in str(e) or "below one share" in str(e)
        if i % 4 == 3:
            sa.send(d, r.undelegate(v.address, 1))
            txs += 1
    dust = accounting_dust(sa, pairs)
    assert 0 <= dust <= DUST_PER_TX * txs + 1 + len(pairs) + 1
    # the pool's tokens are its holders' worth to within a unit each
    tokens, shares = sa.view(r.pools(v.address))[:2]
    held = [d[0] for d in sa.views(r.delegations(v.address, a) for _, a in pairs)]
    assert sum(held) == shares
    assert 0 <= tokens - sum(s * tokens // shares for s in held) < len(pairs)


def test_staking_or_delegating_twice_counts_once(chain):
    """A second stake, a second delegation, a validator's delegation to itself and a return
    after withdrawing all land in the one pool and the one delegation: nothing counts twice."""
    sa = deploy_standalone(chain, chain.dev_account(), emission=0)
    r = sa.reg.functions
    v, d = sa.account(), sa.account()
    n0 = sa.view(r.stakerCount())
    sa.send(v, r.stake(MIN_STAKE, KEY))
    sa.send(v, r.stake(5 * UNIT, KEY))
    sa.send(v, r.delegate(v.address, 3 * UNIT))  # its own pool: self-stake
    sa.send(d, r.delegate(v.address, 2 * UNIT))
    sa.send(d, r.delegate(v.address, 4 * UNIT))
    total = MIN_STAKE + 5 * UNIT + 3 * UNIT + 6 * UNIT
    assert sa.view(r.stakerCount()) == n0 + 1
    assert sa.view(r.stakeOf(v.address)) == sa.view(r.totalBonded()) == total
    assert sa.view(r.totalWeight()) == total
    assert sa.view(r.selfStakeOf(v.address)) == MIN_STAKE + 8 * UNIT
    assert sa.view(r.delegationOf(v.address, d.address)) == 6 * UNIT
    pool = sa.view(r.pools(v.address))
    assert pool[1] == total  # shares: one per unit, every deposit counted once
    sa.send(v, r.requestUnstake())
    chain.advance_time(DELAY + 1)
    sa.send(v, r.withdraw())
    sa.send(v, r.stake(MIN_STAKE, KEY))
    assert sa.view(r.stakerCount()) == n0 + 1
    assert sa.view(r.totalBonded()) == sa.view(r.totalWeight()) == MIN_STAKE + 6 * UNIT
    with reverts("a validator leaves with requestUnstake"):
        sa.send(v, r.undelegate(v.address, UNIT))


def test_claiming_twice_pays_once(chain):
    """With fees only (no emission), a claim, a second claim, a compound then a claim, and a
    claim after leaving pay every reward exactly once."""
    sa = deploy_standalone(chain, chain.dev_account(), emission=0, fee_shares=(0, 0))
    r, t = sa.reg.functions, sa.token.functions
    v, d = sa.account(), sa.account()
    sa.send(v, r.stake(MIN_STAKE, KEY))
    sa.send(v, r.setCommission(1000))  # at once: nobody else has delegated yet
    sa.send(d, r.delegate(v.address, MIN_STAKE))
    sa.send(sa.dev, r.notifyFees(v.address, 100 * UNIT))
    bal = sa.view(t.balanceOf(d.address))
    sa.send(d, r.claimRewards(v.address, False))
    assert sa.view(t.balanceOf(d.address)) - bal == 45 * UNIT  # 90 % of 100, half the shares
    with reverts("no rewards to claim"):
        sa.send(d, r.claimRewards(v.address, False))
    with reverts("no rewards to claim"):
        sa.send(d, r.claimRewards(v.address, True))
    bal = sa.view(t.balanceOf(v.address))
    sa.send(v, r.claimRewards(v.address, False))  # its half of the rest and the commission
    assert sa.view(t.balanceOf(v.address)) - bal == 55 * UNIT
    with reverts("no rewards to claim"):
        sa.send(v, r.claimRewards(v.address, False))
    sa.send(sa.dev, r.notifyFees(v.address, 100 * UNIT))
    sa.send(d, r.claimRewards(v.address, True))  # compounds 45
    assert sa.view(r.delegationOf(v.address, d.address)) == MIN_STAKE + 45 * UNIT
    with reverts("no rewards to claim"):
        sa.send(d, r.claimRewards(v.address, False))
    sa.send(sa.dev, r.notifyFees(v.address, 100 * UNIT))
    owed = sa.view(r.pendingRewards(v.address, d.address))
    sa.send(d, r.undelegate(v.address, sa.view(r.delegationOf(v.address, d.address))))
    assert sa.view(r.pendingRewards(v.address, d.address)) == owed  # kept after leaving
    bal = sa.view(t.balanceOf(d.address))
    sa.send(d, r.claimRewards(v.address, False))
    assert sa.view(t.balanceOf(d.address)) - bal == owed
    with reverts("no rewards to claim"):
        sa.send(d, r.claimRewards(v.address, False))
    paid, rin, owed_v = sa.view(
        r.rewardsPaid(), r.rewardsIn(), r.pendingRewards(v.address, v.address)
    )
    assert 0 <= rin - paid - owed_v <= 2  # floors of 1/1.45 shares: a unit each


def test_a_late_delegator_gets_nothing_that_arrived_before_it(chain):
    """Reward sniping: delegating right after fees (or a long wait for emission) must not buy
    a share of them."""
    sa = deploy_standalone(chain, chain.dev_account(), cap_room=None)
    r = sa.reg.functions
    v, d = sa.account(), sa.account()
    sa.send(v, r.stake(MIN_STAKE, KEY))
    sa.send(sa.dev, r.notifyFees(v.address, 50 * UNIT))
    chain.advance_time(5 * DAY)
    sa.send(d, r.delegate(v.address, 1000 * MIN_STAKE))  # a thousandfold stake, just in time
    assert sa.view(r.pendingRewards(v.address, d.address)) == 0
    owed_v = sa.view(r.pendingRewards(v.address, v.address))
    assert owed_v >= 40 * UNIT + 4 * EMISSION  # the fees' rest and five days of emission


def test_a_tombstoned_validator_is_never_active_again(chain):
    sa = deploy_standalone(chain, chain.dev_account())
    r = sa.reg.functions
    v, d = sa.account(), sa.account()
    sa.send(v, r.stake(MIN_STAKE, KEY))
    sa.send(d, r.delegate(v.address, MIN_STAKE))
    sa.send(sa.dev, r.bond(v.address, 3 * UNIT))
    sa.send(sa.dev, r.slash(v.address, 3 * UNIT))
    assert not sa.view(r.isActive(v.address)) and sa.view(r.pools(v.address))[7]
    with reverts("tombstoned"):
        sa.send(v, r.stake(MIN_STAKE, KEY))
    with reverts("not a registered validator"):
        sa.send(v, r.setCommission(0))
    with reverts("validator is not active"):
        sa.send(d, r.delegate(v.address, UNIT))
    with reverts("unstake delay not over"):
        sa.send(v, r.withdraw())
    chain.advance_time(DELAY + 1)
    sa.send(v, r.withdraw())
    with reverts("tombstoned"):
        sa.send(v, r.stake(MIN_STAKE, KEY))
    sa.send(d, r.undelegate(v.address, sa.view(r.delegationOf(v.address, d.address))))
    assert not sa.view(r.isActive(v.address))
    assert sa.view(r.totalWeight()) == 0


# ---------------------------------------------------------------- bugs this file found (fixed)


def test_a_slash_leaves_small_unbonding_entries_their_share(chain):
    """Found here: a 1-unit unbonding entry and a 50 % slash left the unbonding pool with shares
    and no tokens (the unbonding side took the rounding), and from then on every undelegation
    from the pool panicked (division by zero) until every unbonding holder withdrew. Rounding
    now falls on the bonded side; only a 100 % slash empties the unbonding pool, and then the
    bonded pool is empty too and undelegating is refused with a reason."""
    sa = deploy_standalone(chain, chain.dev_account())
    r = sa.reg.functions
    v, d1, d2 = sa.account(), sa.account(), sa.account()
    sa.send(v, r.stake(MIN_STAKE, KEY))
    sa.send(d1, r.delegate(v.address, MIN_STAKE - 1))
    sa.send(d2, r.delegate(v.address, 5 * UNIT))
    sa.send(d1, r.undelegate(v.address, 1))
    sa.send(sa.dev, r.setOffenceSlashBps(5000))
    sa.send(sa.dev, r.slash(v.address, 0))
    tokens, _, ub_tokens, ub_shares = sa.view(r.pools(v.address))[:4]
    assert tokens > 0 and ub_tokens == 1 and ub_shares == 1
    sa.send(d2, r.undelegate(v.address, UNIT))
    chain.advance_time(DELAY + 1)
    sa.send(d1, r.withdrawUnbonded(v.address))
    assert sa.view(sa.token.functions.balanceOf(d1.address)) == TOKENS - (MIN_STAKE - 1) + 1
    # a 100 % slash empties both pools: leaving is refused with a reason, not a panic
    w, d3 = sa.account(), sa.account()
    sa.send(w, r.stake(MIN_STAKE, KEY))
    sa.send(d3, r.delegate(w.address, 4 * UNIT))
    sa.send(d3, r.undelegate(w.address, UNIT))
    sa.send(sa.dev, r.setOffenceSlashBps(BPS))
    sa.send(sa.dev, r.slash(w.address, 0))
    assert sa.view(r.pools(w.address))[:4][0::2] == (0, 0)
    with reverts("slashed to nothing"):
        sa.send(d3, r.undelegate(w.address, 1))


def test_a_raised_minimum_reaches_a_pool_at_its_next_operation_or_poke(chain):
    """Found here: setMinStake reweighs nobody, so a validator below a raised minimum (not
    active: no new tasks, no delegations) kept earning the emission. By design a pool now
    follows a parameter change at its next operation or at ``poke`` (anyone); until then it
    keeps its weight."""
    sa = deploy_standalone(chain, chain.dev_account(), cap_room=None)
    r = sa.reg.functions
    v1, v2 = sa.account(), sa.account()
    sa.send(v1, r.stake(MIN_STAKE, KEY))
    sa.send(v2, r.stake(5 * MIN_STAKE, KEY))
    sa.send(sa.dev, r.setMinStake(2 * MIN_STAKE))
    assert not sa.view(r.isActive(v1.address))
    assert sa.view(r.pools(v1.address))[5] == MIN_STAKE  # still weighs until poked
    sa.send(sa.dev, r.poke(v1.address))
    assert sa.view(r.pools(v1.address))[5] == 0
    assert sa.view(r.totalWeight()) == 5 * MIN_STAKE
    before = sa.view(r.pendingRewards(v1.address, v1.address))
    chain.advance_time(DAY)
    assert sa.view(r.pendingRewards(v1.address, v1.address)) == before  # earns nothing now
    sa.send(sa.dev, r.setMinStake(MIN_STAKE))
    sa.send(sa.dev, r.poke(v1.address))  # back in
    assert sa.view(r.pools(v1.address))[5] == MIN_STAKE
    assert sa.view(r.totalWeight()) == 6 * MIN_STAKE


def test_a_commission_raise_does_not_reach_rewards_earned_before_it(chain):
    """Found here: the pool's unsettled rewards of the notice period got the new commission
    once the notice was over, so a delegator's pending rewards halved the second a raise took
    effect. Rewards collected across the change now pay the lower rate."""
    sa = deploy_standalone(chain, chain.dev_account(), cap_room=None)
    r = sa.reg.functions
    v, d = sa.account(), sa.account()
    sa.send(v, r.stake(MIN_STAKE, KEY))
    sa.send(d, r.delegate(v.address, MIN_STAKE))
    sa.send(v, r.setCommission(MAX_COMMISSION))
    at = sa.view(r.pools(v.address))[10]
    chain.advance_time(at - chain.now() - 10)
    before = sa.view(r.pendingRewards(v.address, d.address))
    chain.advance_time(20)
    assert sa.view(r.pendingRewards(v.address, d.address)) >= before
    sa.send(sa.dev, r.poke(v.address))  # settles at the new rate from here on
    owed, owed_v = sa.view(
        r.pendingRewards(v.address, d.address), r.pendingRewards(v.address, v.address)
    )
    chain.advance_time(DAY)
    sa.send(sa.dev, r.poke(v.address))
    gained = sa.view(r.pendingRewards(v.address, d.address)) - owed
    gained_v = sa.view(r.pendingRewards(v.address, v.address)) - owed_v
    assert gained > 0 and abs(gained_v - 3 * gained) <= 3  # 50 % plus half the rest


def test_the_schedule_never_decreases(chain):
    """Found here: with ``_pow`` flooring at every step, scheduled(t) at the start of an epoch
    could be below the previous second's (by up to ~7,000 units with a 10 % decay, from epoch
    277; with the deployed 0.1 % decay from year 64). It now interpolates between whole
    epochs' totals."""
    sa = deploy_standalone(chain, chain.dev_account())
    r = sa.reg.functions
    start = sa.view(r.scheduleStart())
    times = [start + n * EPOCH + dt for n in range(270, 300) for dt in (-1, 0)]
    values = sa.views(r.scheduled(t) for t in times)
    assert values == sorted(values)


def test_a_due_commission_change_applies_even_when_nothing_accrued_since(chain):
    """Found here: once a change's time had passed, only a pool collecting new spread rewards
    applied it, so without emission the first fees after it were split at min(old, new) (here
    0 %, all to the delegator). ``_settle`` now applies a due change when nothing accrued."""
    sa = deploy_standalone(chain, chain.dev_account(), emission=0)
    r = sa.reg.functions
    v, d, payer = sa.account(), sa.account(), sa.account()
    sa.send(v, r.stake(MIN_STAKE, KEY))
    sa.send(d, r.delegate(v.address, MIN_STAKE))
    sa.send(v, r.setCommission(MAX_COMMISSION))  # 0 -> 50 %, after the notice
    chain.advance_time(NOTICE + 1)
    fee = 8 * UNIT
    sa.send(payer, r.notifyFees(v.address, fee))
    rest = fee - fee * sa.view(r.feeBurnBps()) // BPS - fee * sa.view(r.publicGoodsBps()) // BPS
    got_v, got_d = sa.view(
        r.pendingRewards(v.address, v.address), r.pendingRewards(v.address, d.address)
    )
    assert abs(got_v - 3 * rest // 4) <= 2 and abs(got_d - rest // 4) <= 2  # 50 % + half the rest


def test_each_undelegation_waits_its_own_delay(chain):
    """Old: one release time per delegation, restarted by every undelegation, so undelegating a
    little more postponed what was about to be released. Each undelegation now waits its own
    delay (undelegations in one block share one of at most 7 entries)."""
    sa = deploy_standalone(chain, chain.dev_account(), emission=0)
    r = sa.reg.functions
    v, d = sa.account(), sa.account()
    sa.send(v, r.stake(MIN_STAKE, KEY))
    sa.send(d, r.delegate(v.address, 10 * UNIT))
    sa.send(d, r.undelegate(v.address, 3 * UNIT))
    chain.advance_time(DELAY // 2)
    sa.send(d, r.undelegate(v.address, 2 * UNIT))
    chain.advance_time(DELAY // 2 + 1)  # the first is released, the second is not
    amount, release, ready = sa.view(r.unbondingOf(v.address, d.address))
    assert (amount, ready) == (5 * UNIT, 3 * UNIT) and release > chain.now()
    bal = sa.view(sa.token.functions.balanceOf(d.address))
    sa.send(d, r.withdrawUnbonded(v.address))
    assert sa.view(sa.token.functions.balanceOf(d.address)) - bal == 3 * UNIT
    with reverts("unbonding delay not over"):
        sa.send(d, r.withdrawUnbonded(v.address))
    for _ in range(6):  # 7 entries wait at once, the 8th is refused
        chain.advance_time(1)
        sa.send(d, r.undelegate(v.address, UNIT // 10))
    chain.advance_time(1)  # a later release time (one block's undelegations share an entry)
    with reverts("7 undelegations from this validator are unbonding"):
        sa.send(d, r.undelegate(v.address, UNIT // 10))
    chain.advance_time(DELAY)
    sa.send(d, r.withdrawUnbonded(v.address))
    assert sa.view(r.unbondingOf(v.address, d.address)) == (0, 0, 0)
    assert sa.view(r.delegationOf(v.address, d.address)) == 10 * UNIT - 5 * UNIT - 6 * UNIT // 10
