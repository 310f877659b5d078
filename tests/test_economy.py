"""The network's economy under attack, on a real task: slashing reaches delegators, credits come
only from honest work, a quadratic credit vote changes the slash amount through the timelock,
and a quadratic-funding round pays its projects exactly its fund.

One task per chain (embedded, and anvil in CI) runs to settlement with a validator that commits
a stale aggregate; the tests then play delegators, voters and contributors, honest and not.
"""

from __future__ import annotations

import pytest
from round_world import MIN_STAKE, UNIT, World

from din_cli.chain.economy import Economy, parse_change
from din_cli.errors import TransactionReverted, UsageError

DAY = 24 * 3600


def reverts(reason: str):
    return pytest.raises(TransactionReverted, match=reason)


def account(chain, din, dev, tokens=0):
    from eth_account import Account

    a = Account.create()
    chain.fund(a.address, UNIT)
    if tokens:
        din.transfer(dev, a.address, tokens)
    return a


@pytest.fixture(scope="module", params=["embedded", "anvil"])
def settled(request, tmp_path_factory):
    """A settled one-round task whose validator v2 committed the genesis model (and was slashed),
    with delegator D (100 DIN) on v2 and E, who delegated 100 and started undelegating 40 after
    the offence; plus what everyone held before the slash."""
    from din_cli.chain.client import connect
    from din_cli.chain.din import deploy_all

    if request.param == "embedded":
        chain = connect("memory")
    else:
        chain = connect(request.getfixturevalue("anvil_url"))
    dev = chain.dev_account()
    dep = deploy_all(chain, dev, min_stake=MIN_STAKE, unstake_delay=3600)
    w = World(tmp_path_factory.mktemp("economy"), deployed=(chain, dev, dep), rounds=1)
    eco = Economy(chain, dep)
    cheat = w.vals[2]
    d = account(chain, w.din, dev, 1000 * UNIT)
    e = account(chain, w.din, dev, 1000 * UNIT)
    eco.delegate(d, cheat.address, 100 * UNIT)
    eco.delegate(e, cheat.address, 100 * UNIT)
    from din_cli.protocol import roundflow
    from din_cli.protocol.cids import to_text

    genesis = to_text(w.din.model_cid(w.task))
    roundflow.start(w.ctx(w.owner), w.task)
    w.train_all()
    if w.phase() == "training":
        w.advance()
    w.aggregate_all(cids={cheat.name: genesis})
    eco.undelegate(e, cheat.address, 40 * UNIT)  # after the offence, before the slash
    before = {
        "self": eco.pool(cheat.address)["self_stake"],
        "d": eco.position(cheat.address, d.address)["delegation"],
        "e": eco.position(cheat.address, e.address),
        "stake": eco.pool(cheat.address)["stake"],
    }
    w.finalize_and_attest()
    w.evaluate_all()
    paid = w.settle_and_claim()
    yield {
        "w": w,
        "eco": eco,
        "dev": dev,
        "cheat": cheat,
        "d": d,
        "e": e,
        "before": before,
        "paid": paid,
    }
    chain.close()


def test_a_slash_takes_the_same_fraction_from_the_validator_its_delegators_and_its_unbonding(
    settled,
):
    """Attacker: a validator that cheats with other people's stake behind it, and a delegator that
    tries to leave before the slash lands. Both lose the same fraction; the cheat is tombstoned."""
    eco, cheat, d, e, before = (settled[k] for k in ("eco", "cheat", "d", "e", "before"))
    pool = eco.pool(cheat.address)
    assert pool["tombstoned"] and not pool["active"]
    slashed = before["stake"] + before["e"]["unbonding"] - pool["stake"] - pool["unbonding"]
    assert slashed > 0
    fraction = slashed / (before["stake"] + before["e"]["unbonding"])
    after_d = eco.position(cheat.address, d.address)["delegation"]
    after_e = eco.position(cheat.address, e.address)
    for was, now in (
        (before["self"], pool["self_stake"]),
        (before["d"], after_d),
        (before["e"]["unbonding"], after_e["unbonding"]),
    ):
        assert abs((was - now) - was * fraction) <= 2, (was, now, fraction)
    # the honest validators and their stake are untouched
    for v in settled["w"].vals[:2]:
        assert eco.pool(v.address)["stake"] == MIN_STAKE and not eco.pool(v.address)["tombstoned"]


def test_a_tombstoned_validator_cannot_come_back_or_take_delegations(settled):
    w, eco, cheat, dev = (settled[k] for k in ("w", "eco", "cheat", "dev"))
    reg = eco.registry.functions
    with reverts("tombstoned"):
        w.din.stake(cheat.account, MIN_STAKE, cheat.hpke_public)
    newcomer = account(w.chain, w.din, dev, 10 * UNIT)
    with reverts("validator is not active"):
        eco.delegate(newcomer, cheat.address, 10 * UNIT)
    with reverts("validator is not active: claim instead of compounding"):
        w.chain.send(settled["d"], reg.claimRewards(cheat.address, True))
    # its pool earns no more emission: a day of inflation goes to the active validators only
    rewards = eco.position(cheat.address, settled["d"].address)["rewards"]
    honest = eco.position(w.vals[0].address, w.vals[0].address)["rewards"]
    w.chain.advance_time(DAY)
    eco.distribute(dev)
    assert eco.position(cheat.address, settled["d"].address)["rewards"] == rewards
    assert eco.position(w.vals[0].address, w.vals[0].address)["rewards"] > honest
    # the delegator that tried to leave gets what the slash left of its unbonding, once
    left = eco.position(cheat.address, settled["e"].address)
    assert left["release_at"] <= w.chain.now()
    assert eco.withdraw_unbonded(settled["e"], cheat.address)["withdrawn"] == left["unbonding"]
    with reverts("nothing unbonding"):
        eco.withdraw_unbonded(settled["e"], cheat.address)


def test_credits_come_only_from_honest_work_and_only_once(settled):
    w, eco, cheat = (settled[k] for k in ("w", "eco", "cheat"))
    doc = eco.claim_credits(w.owner.account, w.task)
    assert doc["roles"] == ["owner"] and doc["earned"] == 100
    for p in w.parts:
        assert eco.claim_credits(p.account, w.task)["roles"] == ["participant"]
    assert eco.claim_credits(w.vals[0].account, w.task)["roles"] == ["validator"]
    with reverts("no honest role in this task earns credits"):
        eco.claim_credits(cheat.account, w.task)  # slashed: no fee, no credits
    with reverts("credits already claimed"):
        eco.claim_credits(w.parts[0].account, w.task)
    with reverts("no honest role"):
        eco.claim_credits(settled["d"], w.task)  # a delegator did no work in the task
    assert eco.credits(w.parts[0].address) == 100


def test_a_credit_vote_changes_the_slash_amount_only_through_the_timelock(settled):
    """Attackers: a whale with tokens and no credits, a voter buying votes above sqrt(credits),
    credits earned after the proposal opened, an executor who swaps the actions or runs early."""
    w, eco, dev = (settled[k] for k in ("w", "eco", "dev"))
    for who in [w.owner, *w.parts]:
        try:
            eco.claim_credits(who.account, w.task)
        except TransactionReverted:
            pass  # already claimed by the test before
    gov = eco.governor.functions
    whale = account(w.chain, w.din, dev, 10**6 * UNIT)
    with reverts("credits below the proposal threshold"):
        eco.propose(whale, b"\x01" * 4, [parse_change("offence-slash-bps=0")])
    cid = bytes.fromhex("01551220" + "ab" * 32)
    prop = eco.propose(w.owner.account, cid, [parse_change("offence-slash-bps=1000")])
    assert prop["state"] == "active" and prop["actions"] == ["offence-slash-bps=1000"]
    pid = prop["id"]
    # credits earned after the proposal opened do not vote on it
    late = w.vals[1]
    assert eco.claim_credits(late.account, w.task)["credits"] == 100
    with reverts("votes\\^2 above your credits"):
        eco.vote(late.account, pid, False, 1)
    with reverts("votes\\^2 above your credits"):
        eco.vote(whale, pid, False, 1)  # tokens buy no votes
    with reverts("votes\\^2 above your credits"):
        eco.vote(w.parts[0].account, pid, True, 11)  # 121 > 100 credits
    for p in w.parts:
        eco.vote(p.account, pid, True, 10)  # 100 credits each: 10 votes
    with reverts("cannot change sides"):
        eco.vote(w.parts[0].account, pid, False, 10)
    doc = eco.vote(w.owner.account, pid, True, 5)
    assert doc["for"] == 35 and doc["cost"] == 25
    with reverts("proposal has not passed"):
        eco.queue(dev, pid)  # voting still open
    with reverts("only governance changes parameters"):
        w.chain.send(whale, eco.registry.functions.setOffenceSlashBps(10_000))
    w.chain.advance_time(3 * DAY + 1)
    assert eco.queue(dev, pid)["state"] == "queued"
    with reverts("timelock not over"):
        eco.execute(dev, pid)
    w.chain.advance_time(2 * DAY + 1)
    targets, calldatas = eco.actions([parse_change("offence-slash-bps=10000")])
    with reverts("actions differ"):
        w.chain.send(whale, gov.execute(pid, targets, calldatas))
    assert w.chain.call(eco.registry.functions.offenceSlashBps()) == 0
    assert eco.execute(whale, pid)["state"] == "executed"  # anyone runs it, as proposed
    assert w.chain.call(eco.registry.functions.offenceSlashBps()) == 1000
    with reverts("proposal is not queued"):
        eco.execute(whale, pid)


def test_a_funding_round_pays_its_projects_exactly_its_fund_and_ignores_sybils(settled):
    """Attacker: one person splitting money over fresh addresses (no credits) to win the match."""
    w, eco, dev = (settled[k] for k in ("w", "eco", "dev"))
    for who in w.parts:
        try:
            eco.claim_credits(who.account, w.task)
        except TransactionReverted:
            pass
    validator = w.vals[0]
    fees = eco.notify_fees(dev, validator.address, 1000 * UNIT)
    assert fees["public_goods"] == 100 * UNIT and fees["burnt"] == 100 * UNIT
    # the task's validator fees already sent their public-goods share here
    before = w.chain.call(eco.grants.functions.available())
    assert eco.donate(dev, 500 * UNIT + 3)["available"] == before + 500 * UNIT + 3
    a, b, c = (account(w.chain, w.din, dev).address for _ in range(3))
    cid = bytes.fromhex("01551220" + "cd" * 32)
    rnd = eco.open_round(dev, [a, b, c], [cid, cid, cid], DAY)
    matching = rnd["matching"]
    assert matching == (before + 500 * UNIT + 3) // 2 and before >= 100 * UNIT
    sybils = [account(w.chain, w.din, dev, 10 * UNIT) for _ in range(5)]
    for s in sybils:
        assert not eco.contribute(s, rnd["round"], 2, UNIT)["counted"]
    funders = [p.account for p in w.parts]
    for f in funders:
        assert eco.contribute(f, rnd["round"], 0, 4 * UNIT)["counted"]
    eco.contribute(funders[0], rnd["round"], 1, 9 * UNIT)
    eco.contribute(funders[1], rnd["round"], 1, UNIT)
    with reverts("round has not ended"):
        eco.finalize(dev, rnd["round"])
    w.chain.advance_time(DAY)
    with reverts("round is not open"):
        eco.contribute(funders[0], rnd["round"], 0, UNIT)
    done = eco.finalize(dev, rnd["round"])
    matched = [p["matched"] for p in done["projects"]]
    assert sum(matched) == matching  # exactly, rounding included
    assert matched[2] == 0  # the sybils' project: no credits, no match
    # QF: 3 x 4 DIN from three people beats 9 + 1 DIN from two
    assert matched[0] > matched[1] > 0
    raw = [p["raw_match"] for p in done["projects"]]
    assert abs(matched[0] - matching * raw[0] // (raw[0] + raw[1])) <= 1
    before = [w.din.balance(x) for x in (a, b, c)]
    for i, x in enumerate((a, b, c)):
        paid = eco.claim_grant(dev, rnd["round"], i)["amount"]
        assert (
            w.din.balance(x) - before[i] == paid == matched[i] + done["projects"][i]["contributed"]
        )
    with reverts("already claimed"):
        eco.claim_grant(dev, rnd["round"], 0)


def test_parameter_changes_are_checked_before_anything_is_sent():
    assert parse_change("fee-shares=1000,500") == ("fee-shares", [1000, 500])
    assert parse_change("min-stake=150") == ("min-stake", [150 * UNIT])
    for bad in ("slash=5", "fee-shares=1", "offence-slash-bps=x", "offence-slash-bps=-1"):
        with pytest.raises(UsageError):
            parse_change(bad)
