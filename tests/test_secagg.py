"""Secagg tasks: masked updates, Shamir-shared seeds, and sums that equal the plaintext FedAvg.

The tests play the dropouts (before submitting, and during unmasking), a
holder that reveals a tampered share, a participant that submits someone
else's masked file, and a subgroup that loses too many participants: every
validator opens the same sum, which is bit for bit the plaintext aggregate of
the survivors, or falls back to the round's starting model when the sum
cannot be opened, and nobody is slashed for it. A colluding majority of a
subgroup's validators that reveals a wrong sum loses a dispute that an
outsider files, since anyone can recompute a secagg round from public data.
"""

from __future__ import annotations

import json
import time

import pytest
from round_world import World, identity

from din_cli.errors import ExitCode, TransactionReverted, UsageError
from din_cli.ml import tensorfile
from din_cli.protocol import roundflow, secagg
from din_cli.protocol.cids import to_bytes, to_text

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

EPOCHS = 2


def _world(tmp_path, n, threshold, deployed=None, rounds=1, ipfs_api=None):
    return World(
        tmp_path,
        deployed=deployed,
        participants=n,
        validators=2,
        subgroup_size=n,
        per_group=2,
        rounds=rounds,
        privacy_mode="secagg",
        secagg_threshold=threshold,
        ipfs_api=ipfs_api,
    )


def _plain(w, tmp_path, i, round_):
    """Participant ``i``'s round update in the clear, as `din train --task` trains it."""
    from din_cli.ml.train import train

    start = w.ctx().fetch(w.din.round_info(w.task, round_).model_cid, tmp_path / "s.st")
    out = tmp_path / f"plain-r{round_}-p{i}.st"
    train(start, w.stores[i], out, epochs=EPOCHS, lr=0.5, batch_size=32, seed=round_)
    return out


def _fedavg(w, tmp_path, survivors, round_):
    from din_cli.ml.aggregate import aggregate

    out = tmp_path / f"fedavg-r{round_}.st"
    aggregate([_plain(w, tmp_path, i, round_) for i in survivors], out)
    return out


def _same_weights(a, b) -> bool:
    ha, hb = tensorfile.read_header(a), tensorfile.read_header(b)
    wa, wb = tensorfile.load_arrays(ha), tensorfile.load_arrays(hb)
    return (
        ha.samples == hb.samples
        and sorted(wa) == sorted(wb)
        and all(wa[k].tobytes() == wb[k].tobytes() for k in wa)
    )


def _accepted(w, tmp_path, round_):
    (cid,) = w.din.accepted_aggregates(w.task, round_).values()
    return to_text(cid), w.ctx().fetch(cid, tmp_path / f"accepted-r{round_}.st")


def _submit(w, who):
    return [
        roundflow.train_and_submit(w.ctx(w.parts[i]), w.task, w.stores[i], epochs=EPOCHS, lr=0.5)
        for i in who
    ]


def _close_training(w):
    if w.phase() == "training":
        w.advance()
    assert w.phase() == "aggregation-commit"


def _reveal(w, who):
    return [secagg.reveal(w.ctx(w.parts[i]), w.task) for i in who]


def _summed(w, tmp_path, who, round_):
    """``who`` submit and reveal, validators sum, the round's global model goes up; the accepted file."""
    _submit(w, who)
    _close_training(w)
    _reveal(w, who)
    w.aggregate_all()
    w.finalize_and_attest()
    return _accepted(w, tmp_path, round_)[1]


def _judged(w, tmp_path, round_):
    """Each validator's (CID, verdict reasons) for the subgroup, recomputed."""
    seen = set()
    for k, v in enumerate(w.assigned(round_)):
        work = tmp_path / f"judge-r{round_}-{k}"
        work.mkdir()
        cid, judged = roundflow.subgroup_result(w.ctx(v), w.task, round_, 0, work)
        seen.add((cid, tuple(x.reason for x in judged.verdicts)))
    return seen


def _to_the_cutoff(w, round_):
    cutoff = secagg.commit_cutoff(w.ctx(), w.task, round_)
    w.chain.advance_time(cutoff - w.chain.now() + 1)


# --- a whole secagg task ------------------------------------------------------


def test_a_secagg_task_sums_exactly_the_survivors_and_pays_by_subgroup_sums(tmp_path, deployed):
    w = _world(tmp_path, 5, "0.6", deployed)  # 4 neighbours each, t = 3: one dropout is fine
    info = w.din.task_info(w.task)
    assert (info.privacy_mode, info.secagg_threshold) == ("secagg", 600000)
    assert info.privacy.startswith("secagg: updates are masked")
    roundflow.start(w.ctx(w.owner), w.task)
    _submit(w, range(4))  # participant 4 drops out before submitting
    _close_training(w)
    # what the content store holds is masked: none of the plaintext's bytes, no float weights
    for i, u in enumerate(w.din.updates_submitted(w.task, 1)):
        stored = w.ctx().fetch(u.cid, tmp_path / f"stored-{i}")
        h = tensorfile.read_header(stored)
        assert {t.dtype for t in h.tensors.values()} == {"U64"}
        assert h.metadata["din.encoding"] == secagg.ENCODING
        k = w.parts.index(next(p for p in w.parts if p.address == u.participant))
        plain = _plain(w, tmp_path, k, 1).read_bytes()
        raw = stored.read_bytes()
        assert not any(plain[a : a + 16] in raw for a in range(len(plain) - 2048, len(plain), 256))
    # a validator cannot sum before the survivors revealed, nor can anyone else
    early = tmp_path / "early"
    early.mkdir()
    with pytest.raises(secagg.RevealsMissing):
        roundflow.subgroup_result(w.ctx(w.assigned(1)[0]), w.task, 1, 0, early)
    _reveal(w, range(4))
    seen = _judged(w, tmp_path, 1)
    assert len(seen) == 1  # every validator opens the same sum
    w.aggregate_all()
    w.finalize_and_attest()
    cid, path = _accepted(w, tmp_path, 1)
    assert seen == {(cid, ("", "", "", ""))}
    assert _same_weights(path, _fedavg(w, tmp_path, range(4), 1))  # bit for bit
    index = w.din.participants(w.task).index
    assert secagg.included(path) == {
        index(w.parts[i].address): tensorfile.read_header(_plain(w, tmp_path, i, 1)).samples
        for i in range(4)
    }
    # an outsider checks the round from public data alone (din verify's path)
    work = tmp_path / "outsider"
    work.mkdir()
    ctx = w.ctx(identity("eve"))
    assert roundflow.subgroup_result(ctx, w.task, 1, 0, work, window=False)[0] == cid
    # evaluation and payouts: the subgroup's contribution, shared by samples
    w.evaluate_all()
    paid = w.settle_and_claim()
    assert sum(paid.values()) == w.din.task_info(w.task).deposit
    assert paid["p4"] == 0 and all(paid[f"p{i}"] > 0 for i in range(4))
    assert not any(w.din.removed(w.task, v.address) for v in w.vals)


@pytest.mark.integration
def test_a_secagg_round_on_anvil_and_an_ipfs_daemon(tmp_path, anvil_url, ipfs_api):
    from din_cli.chain.client import connect
    from din_cli.chain.din import deploy_all

    chain = connect(anvil_url)
    dev = chain.dev_account()
    dep = deploy_all(chain, dev, min_stake=100 * 10**18, unstake_delay=3600)
    w = _world(tmp_path, 5, "0.6", (chain, dev, dep), ipfs_api=ipfs_api)
    roundflow.start(w.ctx(w.owner), w.task)
    path = _summed(w, tmp_path, range(4), 1)  # participant 4 drops out
    assert _same_weights(path, _fedavg(w, tmp_path, range(4), 1))
    assert not any(w.din.removed(w.task, v.address) for v in w.vals)
    chain.close()


def test_dropouts_before_submitting_and_during_unmasking_still_sum_exactly(
    tmp_path, deployed, monkeypatch
):
    w = _world(tmp_path, 7, "0.51", deployed, rounds=2)  # 6 neighbours each, t = 4
    roundflow.start(w.ctx(w.owner), w.task)
    # round 1: two participants drop out before submitting (k - t = 2 is the most it takes)
    path = _summed(w, tmp_path, range(5), 1)
    assert _same_weights(path, _fedavg(w, tmp_path, range(5), 1))
    # round 2: all seven submit, and participant 3 drops out during unmasking
    assert w.phase() == "training"
    _submit(w, range(7))
    _close_training(w)
    _reveal(w, [0, 1, 2, 4, 5, 6])
    v = w.assigned(2)[0]
    work = tmp_path / "waiting"
    work.mkdir()
    with pytest.raises(secagg.RevealsMissing, match="1 of 7 survivors"):
        roundflow.subgroup_result(w.ctx(v), w.task, 2, 0, work)
    cutoff = secagg.commit_cutoff(w.ctx(), w.task, 2)
    if type(w.chain).__name__ == "EmbeddedChain":
        # a chain that mines on demand: its time stands still until a transaction comes, so a
        # validator past the cutoff by the wall clock mines a block (a no-op advance) and sums
        fake = time.time() + (cutoff + 5 - w.chain.clock())  # the wall clock 5 s past the cutoff
        with monkeypatch.context() as mp:
            mp.setattr(time, "time", lambda: fake)
            assert w.chain.now() < cutoff <= w.chain.clock()
            w.aggregate_all()
    else:
        _to_the_cutoff(w, 2)  # from the middle of the phase on, validators sum without it
        w.aggregate_all()
    w.finalize_and_attest()
    _, path = _accepted(w, tmp_path, 2)
    assert _same_weights(path, _fedavg(w, tmp_path, range(7), 2))
    assert not any(w.din.removed(w.task, v.address) for v in w.vals)


def test_too_few_survivors_fall_back_to_the_start_model_and_nobody_is_slashed(tmp_path, deployed):
    w = _world(tmp_path, 5, "0.6", deployed)  # t = 3 of 4 neighbours: two dropouts are one too many
    roundflow.start(w.ctx(w.owner), w.task)
    _submit(w, range(3))
    _close_training(w)
    _reveal(w, range(3))
    seen = _judged(w, tmp_path, 1)
    start = to_text(w.din.round_info(w.task, 1).model_cid)
    assert seen == {(start, ("unrecoverable",) * 3)}
    w.aggregate_all()
    assert w.din.accepted_aggregates(w.task, 1) == {0: to_bytes(start)}
    assert not any(w.din.removed(w.task, v.address) for v in w.vals)


def test_a_pair_submits_nothing_since_the_sum_would_show_each_update(tmp_path):
    w = _world(tmp_path, 2, "0.6")
    roundflow.start(w.ctx(w.owner), w.task)
    with pytest.raises(UsageError, match="its public sum would show each one.s update"):
        _submit(w, [0])
    assert w.din.updates_submitted(w.task, 1) == []


def test_a_copied_masked_file_and_a_tampered_share_are_caught(tmp_path, deployed, monkeypatch):
    w = _world(tmp_path, 6, "0.6", deployed)  # 5 neighbours each, t = 3
    roundflow.start(w.ctx(w.owner), w.task)
    done = _submit(w, range(1, 6))
    # participant 0 submits participant 1's masked file as its own
    w.din.submit_update(w.parts[0].account, w.task, to_bytes(done[0]["cid"]))
    _close_training(w)
    # participant 2 reveals a tampered share of every dealer's self seed
    honest = secagg._my_shares

    def tampered(ctx, g, dealer, me):
        shares = honest(ctx, g, dealer, me)
        return [bytes([shares[0][0] ^ 1]) + shares[0][1:], *shares[1:]] if shares else shares

    monkeypatch.setattr(secagg, "_my_shares", tampered)
    _reveal(w, [2])
    monkeypatch.setattr(secagg, "_my_shares", honest)
    _reveal(w, [1, 3, 4, 5])
    updates = w.din.updates_submitted(w.task, 1)
    reasons = {u.participant: None for u in updates}
    (seen,) = _judged(w, tmp_path, 1)
    for u, reason in zip(updates, seen[1], strict=True):
        reasons[u.participant] = reason
    assert reasons[w.parts[0].address] == "bad-secagg"
    assert all(reasons[w.parts[i].address] == "" for i in range(1, 6))
    w.aggregate_all()
    w.finalize_and_attest()
    _, path = _accepted(w, tmp_path, 1)
    assert _same_weights(path, _fedavg(w, tmp_path, range(1, 6), 1))
    assert not any(w.din.removed(w.task, v.address) for v in w.vals)


def test_the_contract_refuses_secagg_with_a_bad_threshold_or_rule(tmp_path, deployed, monkeypatch):
    from din_cli.chain import din as din_mod

    monkeypatch.setattr(din_mod, "encode_threshold", lambda *a: 500000)  # at most half
    with pytest.raises(TransactionReverted, match="bad privacy mode"):
        _world(tmp_path, 3, "0.6", deployed)
    monkeypatch.setattr(din_mod, "encode_threshold", lambda *a: 0)  # none at all
    with pytest.raises(TransactionReverted, match="bad privacy mode"):
        _world(tmp_path, 3, "0.6", deployed)


def test_the_cli_publishes_secagg_and_unmasks_once(run_din):
    def ok(*args):
        proc = run_din(*args)
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
        return proc.stdout.decode()

    ok("init", "--dev-accounts", "5", "-q")
    ok("model", "init", "--arch", "logreg:64-10", "-o", "genesis.safetensors")
    ok("data", "split", "--dataset", "digits", "--participants", "3", "--out", "stores")
    publish = ("model", "publish", "genesis.safetensors", "--test-set", "stores/test.npz")
    publish += ("--deposit", "10", "--key", "dev1", "-q", "--privacy", "secagg")
    for bad in (("--secagg-threshold", "0.5"), ("--rule", "median"), ("--scoring", "update")):
        proc = run_din(*publish, *bad)
        assert proc.returncode == ExitCode.USAGE and proc.stdout == b"", proc.stderr
        assert len(proc.stderr.decode().strip().splitlines()) == 1
    stray = run_din(*publish[:-2], "--secagg-threshold", "0.7")
    assert stray.returncode == ExitCode.USAGE and b"secagg tasks only" in stray.stderr
    assert ok(*publish, "--phase-seconds", "60").strip() == "1"
    assert "secagg: updates are masked" in ok("task", "status", "1")
    ok("validator", "stake", "100", "--key", "dev5", "-q")
    ok("validator", "join", "1", "--key", "dev5", "-q")
    for k in (2, 3, 4):
        ok("participant", "join", "1", "--key", f"dev{k}", "-q")
    early = run_din("participant", "unmask", "1", "--key", "dev2")
    assert early.returncode == ExitCode.USAGE and b"aggregation-commit" in early.stderr
    ok("round", "start", "--task", "1", "--key", "dev1", "-q")
    for k in (2, 3, 4):
        ok("train", "--task", "1", "--data", f"stores/participant-0{k - 1}.npz", "--submit",
           "--epochs", "1", "--key", f"dev{k}", "-q")  # fmt: skip
    for k in (2, 3, 4):
        cid = ok("participant", "unmask", "1", "--key", f"dev{k}").strip()
        assert cid.startswith("bafk")
    again = run_din("participant", "unmask", "1", "--key", "dev2")
    assert again.returncode == ExitCode.ALREADY_DONE
    assert "unmask_reveals\t0:3/3" in ok("round", "status", "--task", "1")
    commit = json.loads(ok("aggregate", "--task", "1", "--commit", "--key", "dev5", "--json"))
    assert commit["cid"].startswith("bafk") and commit["round"] == 1


def test_a_colluding_majority_is_overturned_in_a_secagg_task(tmp_path, deployed):
    """Anyone can check a secagg round from public data, so an outsider files, and a committee of
    stakers outside the task overturns the colluders' result without reading one update."""
    from din_cli.chain.din import deploy_all
    from din_cli.protocol import disputes

    chain, dev, _ = deployed
    dep = deploy_all(chain, dev, min_stake=100 * 10**18, unstake_delay=3600, committee=3)
    w = World(
        tmp_path,
        deployed=(chain, dev, dep),
        participants=3,
        validators=5,
        subgroup_size=3,
        per_group=5,
        privacy_mode="secagg",
    )
    stakers = [identity(f"s{i}") for i in range(3)]
    filer = identity("eve")
    for s in [*stakers, filer]:
        chain.fund(s.address, 10**18)
        w.din.transfer(dev, s.address, 200 * 10**18)
    for s in stakers:
        w.din.stake(s.account, 100 * 10**18, s.hpke_public)
    roundflow.start(w.ctx(w.owner), w.task)
    _submit(w, range(3))
    _close_training(w)
    _reveal(w, range(3))
    start = to_text(w.din.round_info(w.task, 1).model_cid)
    vals = w.assigned(1)
    colluders, honest = vals[:3], vals[3:]
    for v in vals:  # three of five reveal the starting model: every update "left out"
        roundflow.aggregate_commit(w.ctx(v), w.task, cid=start if v in colluders else None)
    if w.phase() == "aggregation-commit":
        w.advance()
    for v in vals:
        roundflow.aggregate_reveal(w.ctx(v), w.task)
    assert w.din.accepted_aggregates(w.task, 1) == {0: to_bytes(start)}
    filed = disputes.file(w.ctx(filer), w.task, 1, 0)  # an outsider recomputes the sum and files
    assert filed["accepted"] == start and filed["cid"] != start
    did = filed["dispute_id"]
    drawn = disputes.draw(w.ctx(filer), did)
    by = {s.address: s for s in stakers}
    committee = [m["member"] for m in drawn["committee"]]
    assert sorted(committee) == sorted(by)
    for m in committee:
        disputes.vote(w.ctx(by[m]), did)
    for m in committee:
        disputes.vote(w.ctx(by[m]), did, reveal=True)
    done = disputes.resolve(w.ctx(filer), did)
    assert done["state"] == "upheld"
    assert {m["cid"] for m in done["committee"]} == {filed["cid"]}  # one sum, from public data
    assert all(w.din.removed(w.task, v.address) for v in colluders)
    assert not any(w.din.removed(w.task, v.address) for v in honest)


def test_a_dp_secagg_sum_carries_the_distributed_discrete_gaussian_and_reports_its_epsilon(
    tmp_path, deployed
):
    import math

    import numpy as np

    from din_cli.ml import models, privacy
    from din_cli.protocol import privacy as dp_report

    w = World(
        tmp_path,
        deployed=deployed,
        participants=5,
        validators=2,
        subgroup_size=5,
        per_group=2,
        privacy_mode="secagg",
        dp_clip="0.5",
        dp_noise="1.5",
        dp_delta="1e-5",
    )
    roundflow.start(w.ctx(w.owner), w.task)
    docs = _submit(w, range(5))
    _close_training(w)
    _reveal(w, range(5))
    w.aggregate_all()
    w.finalize_and_attest()
    _, path = _accepted(w, tmp_path, 1)
    index = w.din.participants(w.task).index
    assert secagg.included(path) == {index(p.address): 1 for p in w.parts}  # every weight is 1
    # each share: std z * (C * 2^20 + sqrt(d)) / sqrt(t + 1) on the grid, t = 3 of 4 neighbours
    d = 650
    sigma = 1.5 * (0.5 * 2**20 + math.sqrt(d)) / math.sqrt(4)
    assert all(math.isclose(x["dp"]["noise_std"], sigma / 2**20) for x in docs)
    # the sum is the uniform mean of the clipped updates plus 5 shares of noise: std sigma*sqrt(5)/5
    start = models.read_model(w.ctx().fetch(w.din.round_info(w.task, 1).model_cid, tmp_path / "s"))
    clipped = []
    for i in range(5):
        up = models.read_model(_plain(w, tmp_path, i, 1))
        delta = {k: up.weights[k].astype(np.float64) - start.weights[k] for k in start.weights}
        norm = math.sqrt(sum(float((v**2).sum()) for v in delta.values()))
        clipped.append({k: start.weights[k] + delta[k] * min(1.0, 0.5 / norm) for k in delta})
    got = models.read_model(path).weights
    err = np.concatenate(
        [(got[k] - sum(c[k] for c in clipped) / 5).reshape(-1) for k in sorted(got)]
    )
    want = sigma * math.sqrt(5) / 5 / 2**20
    assert abs(float(err.mean())) < 5 * want / math.sqrt(d)
    assert 0.8 * want < float(err.std()) < 1.2 * want
    # each participant's epsilon: one round of the distributed discrete Gaussian, RDP-composed
    round_eps = privacy.ddg_cdp_epsilon(0.5 * 2**20 + math.sqrt(d), sigma, 4, d)
    expected = privacy.ddg_epsilon([round_eps], 1e-5)
    rows = dp_report.report(w.ctx(), w.task)["participants"]
    assert all(math.isclose(r["epsilon"], expected) for r in rows)
    assert all(math.isclose(x["dp"]["epsilon"], expected) for x in docs)
    assert privacy.epsilon(1, 1.5, 1e-5) <= expected < 1.3 * privacy.epsilon(1, 1.5, 1e-5)


def test_an_unfetchable_update_is_never_judged_a_dropout_and_junk_reveals_are_harmless(tmp_path):
    """A holder that cannot fetch a neighbour's update reveals nothing about it: another holder
    that can might count it a survivor, and the two together would unmask it. The subgroup then
    falls back alike for every validator. A member's malformed reveal documents are skipped."""
    from din_cli.store.cid import sha256_cid

    w = _world(tmp_path, 5, "0.6")
    roundflow.start(w.ctx(w.owner), w.task)
    _submit(w, range(4))
    ghost = sha256_cid(b"never stored")  # a CID nobody serves
    w.din.submit_update(w.parts[4].account, w.task, to_bytes(str(ghost)))
    assert w.phase() == "aggregation-commit"
    index = w.din.participants(w.task).index(w.parts[4].address)
    for doc in _reveal(w, range(4)):
        assert doc["unseen"] == [index] and doc["shares"] == 3  # self seeds only, no pair seed
    for junk in (b"[" * 50000 + b"]" * 50000, b'{"format": "din/secagg-reveal/v1", "shares": 5}'):
        path = tmp_path / "junk.json"
        path.write_bytes(junk)
        w.din.grant_keys(w.parts[4].account, w.task, to_bytes(w.ctx().add(path)))
    start = to_text(w.din.round_info(w.task, 1).model_cid)
    (seen,) = _judged(w, tmp_path, 1)
    assert seen[0] == start and sorted(seen[1]) == ["unavailable"] + ["unrecoverable"] * 4
    w.aggregate_all()
    assert not any(w.din.removed(w.task, v.address) for v in w.vals)


def test_a_participant_whose_key_agrees_no_secret_is_cut_off_the_graph(tmp_path):
    w = World(
        tmp_path,
        participants=4,
        validators=2,
        subgroup_size=5,  # one subgroup, with room for the fifth
        per_group=2,
        privacy_mode="secagg",
        secagg_threshold="0.6",
    )
    low = identity("low-order")
    w.chain.fund(low.address, 10**18)
    w.din.join_task(low.account, w.task, bytes(32))  # the all-zero point: no shared secret
    roundflow.start(w.ctx(w.owner), w.task)
    with pytest.raises(UsageError, match="agrees no secret"):
        roundflow.train_and_submit(w.ctx(low), w.task, w.stores[0], epochs=1)
    path = _summed(w, tmp_path, range(4), 1)  # its neighbours still mask: it is off their graph
    assert _same_weights(path, _fedavg(w, tmp_path, range(4), 1))
