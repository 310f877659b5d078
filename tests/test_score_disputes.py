"""A griefer disputes an honest evaluation subgroup's scores and grants the committee nothing.

Old: a committee member with no granted test-set key voted the rejection, so anyone could file
against a unanimous honest subgroup, claim "reject", withhold K, win, get its bond back and have
the honest validators slashed and the whole task's pool sent to the contributors. New: a member
with no usable key waits for the grant cutoff and then votes the vector the filer disputed, so
the dispute is dismissed, the griefer's bond is burnt and settlement pays by the honest scores.
A fresh deployment per test (the committee is drawn from every staker), on the embedded chain and
on anvil.
"""

from __future__ import annotations

import pytest
from round_world import DEPOSIT, MIN_STAKE, World, identity

from din_cli.chain.din import deploy_all
from din_cli.errors import UsageError
from din_cli.protocol import disputes, roundflow, sealing


@pytest.fixture(params=["embedded", "anvil"])
def fresh(request):
    """``(chain, dev, deployment)``: contracts deployed for this test alone (committee of 3)."""
    from din_cli.chain.client import connect

    if request.param == "embedded":
        chain = connect("memory")
    else:
        chain = connect(request.getfixturevalue("anvil_url"))
    dev = chain.dev_account()
    yield chain, dev, deploy_all(chain, dev, min_stake=MIN_STAKE, unstake_delay=3600, committee=3)
    chain.close()


def test_a_griefer_that_grants_no_key_loses_its_bond_and_the_honest_scores_stand(tmp_path, fresh):
    w = World(tmp_path, participants=3, validators=3, rounds=1, deployed=fresh)
    chain, din = w.chain, w.din
    members = [identity(f"c{i}") for i in range(3)]  # stakers outside the task: the committee
    for m in members:
        chain.fund(m.address, 10**18)
        din.transfer(fresh[1], m.address, 2 * MIN_STAKE)
        din.stake(m.account, MIN_STAKE, m.hpke_public)
    griefer = identity("griefer")
    chain.fund(griefer.address, 10**18)
    din.transfer(fresh[1], griefer.address, MIN_STAKE)
    roundflow.start(w.ctx(w.owner), w.task)
    w.run_round(epochs=1)
    w.evaluate_all()
    assert w.phase() == "settling"
    parts, vals, honest = din.score_majority(w.task, 0)
    assert honest and all(v == honest for v in din.scores_revealed(w.task).values())
    # the griefer claims the test set should be rejected, straight through the contract
    did = din.file_score_dispute(griefer.account, w.task, 0, [])
    chain.advance_time(1)
    committee = din.draw_committee(fresh[1], did)
    assert sorted(committee) == sorted(m.address for m in members)
    for m in members:  # no usable key was granted: wait for the cutoff
        with pytest.raises(UsageError, match="no grant of the test set's key"):
            disputes.vote(w.ctx(m), did)
    info = din.dispute_info(did)
    cutoff = sealing.dispute_cutoff(w.ctx(), w.task, info)
    chain.advance_time(cutoff - chain.now() + 10)  # past the grant cutoff, inside the window
    votes = [disputes.vote(w.ctx(m), did)["cid"] for m in members]
    assert votes == [honest] * 3  # the vector the griefer disputed
    for m in members:
        disputes.vote(w.ctx(m), did, reveal=True)
    bond = info["bond"]
    before = din.balance(griefer.address)
    assert disputes.resolve(w.ctx(griefer), did)["state"] == "dismissed"
    assert din.balance(griefer.address) == before  # the bond is gone
    assert din.decided_scores(w.task, 0) is None
    paid = w.settle_and_claim()
    for v in w.vals:
        assert din.validator_info(v.address).stake == MIN_STAKE  # nobody honest slashed
    assert din.settlement_results(w.task) == dict(
        zip([din.participants(w.task)[i] for i in parts], honest, strict=True)
    )
    assert sum(paid.values()) == DEPOSIT and bond > 0
