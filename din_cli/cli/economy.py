"""`din stake`, `din gov`, `din grants`, `din validator commission`: the network's economy."""

from __future__ import annotations

import click

from din_cli.cli import output
from din_cli.cli.options import (
    acting_options,
    chain_option,
    context,
    json_option,
    key_address,
    key_option,
    quiet_option,
)


def _economy(ctx):
    from din_cli.chain.economy import Economy

    return Economy(ctx.chain, ctx.deployment)


def _address(text: str) -> str:
    from din_cli.cli.chain import _checksum

    return _checksum(text)


def _din(units: int) -> str:
    from din_cli.chain.network import format_amount

    return format_amount(units)


def _units(text: str) -> int:
    from din_cli.chain.network import parse_amount

    return parse_amount(text)


def _position_lines(p: dict) -> str:
    return (
        f"{p['validator']}\t{_din(p['delegation'])}\t{_din(p['unbonding'])}\t{_din(p['rewards'])}"
    )


# ------------------------------------------------------------------ din stake


@click.group("stake")
def stake_group():
    """Delegate DIN to validators, undelegate, and claim or compound their rewards.

    Delegated stake counts in the validator's pool: it earns the pool's share
    of inflation and fees (minus the validator's commission) and loses the
    same fraction as the validator when it is slashed, until its unbonding
    delay is over.

    \b
    Example:
        din stake delegate 0xVALIDATOR 50 --key dev5 && din stake rewards --key dev5
    """


@stake_group.command("delegate")
@click.argument("validator")
@click.argument("amount")
@acting_options()
def stake_delegate(validator, amount, chain_url, key_name, as_json):
    """Delegate AMOUNT DIN to VALIDATOR (an active one; approves first); prints your delegation.

    \b
    Example:
        din stake delegate 0x70997970C51812dc3A010C7d01b50e0d17dc79C8 50 --key dev5
    """
    with context(chain_url, key_name=key_name) as ctx:
        doc = _economy(ctx).delegate(ctx.account, _address(validator), _units(amount))
    output.note(f"delegated {_din(doc['delegated'])} DIN to {doc['validator']}")
    output.emit_doc(doc, as_json, _din(doc["delegation"]))


@stake_group.command("undelegate")
@click.argument("validator")
@click.argument("amount")
@acting_options()
def stake_undelegate(validator, amount, chain_url, key_name, as_json):
    """Start unbonding AMOUNT DIN of your delegation to VALIDATOR; prints when it is released.

    Until then it stays slashable: a slash of the validator takes the same
    fraction of it. `din stake withdraw` pays it out afterwards.

    \b
    Example:
        din stake undelegate 0x70997970C51812dc3A010C7d01b50e0d17dc79C8 20 --key dev5
    """
    from din_cli.chain.network import iso_time

    with context(chain_url, key_name=key_name) as ctx:
        doc = _economy(ctx).undelegate(ctx.account, _address(validator), _units(amount))
    output.note(f"unbonding {_din(doc['undelegated'])} DIN until {iso_time(doc['release_at'])}")
    output.emit_doc(doc, as_json, doc["release_at"])


@stake_group.command("withdraw")
@click.argument("validator")
@acting_options()
def stake_withdraw(validator, chain_url, key_name, as_json):
    """Withdraw what finished unbonding from VALIDATOR; prints the amount in DIN.

    \b
    Example:
        din stake withdraw 0x70997970C51812dc3A010C7d01b50e0d17dc79C8 --key dev5
    """
    with context(chain_url, key_name=key_name) as ctx:
        doc = _economy(ctx).withdraw_unbonded(ctx.account, _address(validator))
    output.emit_doc(doc, as_json, _din(doc["withdrawn"]))


@stake_group.command("claim")
@click.argument("validator")
@click.option("--compound", is_flag=True, help="Add the rewards to your delegation instead.")
@acting_options()
def stake_claim(validator, compound, chain_url, key_name, as_json):
    """Claim your rewards from VALIDATOR's pool (a validator: its commission too); prints DIN.

    \b
    Example:
        din stake claim 0x70997970C51812dc3A010C7d01b50e0d17dc79C8 --compound --key dev5
    """
    with context(chain_url, key_name=key_name) as ctx:
        doc = _economy(ctx).claim_rewards(ctx.account, _address(validator), compound=compound)
    verb = "compounded" if compound else "claimed"
    output.note(f"{verb} {_din(doc['claimed'])} DIN")
    output.emit_doc(doc, as_json, _din(doc["claimed"]))


@stake_group.command("rewards")
@click.argument("address", required=False)
@chain_option()
@key_option()
@json_option()
def stake_rewards(address, chain_url, key_name, as_json):
    """Show ADDRESS's delegations (default: --key's): VALIDATOR, DELEGATION, UNBONDING, REWARDS in DIN.

    \b
    Example:
        din stake rewards --key dev5 | awk -F'\\t' '{s += $4} END {print s}'
    """
    address = _address(address) if address else key_address(key_name)
    with context(chain_url, act=False) as ctx:
        docs = _economy(ctx).positions(address)
    if as_json:
        output.emit_json(docs)
        return
    output.emit(*[_position_lines(p) for p in docs])


@stake_group.command("pool")
@click.argument("validator")
@chain_option()
@json_option()
def stake_pool(validator, chain_url, as_json):
    """Show VALIDATOR's pool: stake, self-stake, unbonding, commission, active or tombstoned.

    \b
    Example:
        din stake pool 0x70997970C51812dc3A010C7d01b50e0d17dc79C8 --json | jq .commission_bps
    """
    with context(chain_url, act=False) as ctx:
        doc = _economy(ctx).pool(_address(validator))
    if as_json:
        output.emit_json(doc)
        return
    output.emit_fields(
        [
            ("validator", doc["validator"]),
            ("stake", _din(doc["stake"])),
            ("self_stake", _din(doc["self_stake"])),
            ("unbonding", _din(doc["unbonding"])),
            ("bonded", _din(doc["bonded"])),
            ("commission_bps", doc["commission_bps"]),
            ("next_commission_bps", doc["next_commission_bps"]),
            ("active", str(doc["active"]).lower()),
            ("tombstoned", str(doc["tombstoned"]).lower()),
        ]
    )


@stake_group.command("fees")
@click.argument("validator")
@click.argument("amount")
@acting_options()
def stake_fees(validator, amount, chain_url, key_name, as_json):
    """Pay AMOUNT DIN as fees VALIDATOR earned: part burnt, part to public goods, the rest to its pool.

    A validator routes its task fees to its delegators this way.

    \b
    Example:
        din stake fees 0x70997970C51812dc3A010C7d01b50e0d17dc79C8 10 --key dev2
    """
    with context(chain_url, key_name=key_name) as ctx:
        doc = _economy(ctx).notify_fees(ctx.account, _address(validator), _units(amount))
    output.note(
        f"burnt {_din(doc['burnt'])}, public goods {_din(doc['public_goods'])}, pool {_din(doc['to_pool'])} DIN"
    )
    output.emit_doc(doc, as_json, _din(doc["to_pool"]))


@stake_group.command("supply")
@click.option("--mint", is_flag=True, help="Mint the emission due first (needs --key).")
@acting_options()
def stake_supply(mint, chain_url, key_name, as_json):
    """Show the token supply, its cap, the emission schedule and the staked totals (DIN).

    \b
    Example:
        din stake supply --json | jq '.total_supply / 1e18'
    """
    with context(chain_url, key_name=key_name if mint else None, act=mint) as ctx:
        eco = _economy(ctx)
        doc = eco.distribute(ctx.account) if mint else eco.supply()
    if as_json:
        output.emit_json(doc)
        return
    amounts = {k for k in doc if k not in {"epoch_length", "decay_bps"} and not k.endswith("_bps")}
    output.emit_fields([(k, _din(v) if k in amounts else v) for k, v in doc.items()])


# ------------------------------------------------------------------ din validator commission


@click.command("commission")
@click.argument("bps", type=int)
@acting_options()
def validator_commission(bps, chain_url, key_name, as_json):
    """Set your commission to BPS basis points of your pool's rewards; prints when it applies.

    Once others delegate to you, a change applies only after the registry's
    notice period, so delegators can leave first.

    \b
    Example:
        din validator commission 500 --key dev2
    """
    from din_cli.chain.network import iso_time

    with context(chain_url, key_name=key_name) as ctx:
        doc = _economy(ctx).set_commission(ctx.account, bps)
    output.note(f"commission {bps} bps from {iso_time(doc['from'])}")
    output.emit_doc(doc, as_json, doc["from"])


# ------------------------------------------------------------------ din gov


@click.group("gov")
def gov_group():
    """Proposals decided by quadratic votes of credits earned in tasks, run through a timelock.

    Credits are not tokens: each task you completed honestly as participant,
    validator or owner earns them once (`din gov credits --task N`). Casting
    n votes on a proposal costs n^2 of the credits you held when it opened.
    Economic parameters change only through a passed, queued and executed
    proposal.

    \b
    Example:
        din gov propose --text dpp.md --set offence-slash-bps=1000 --key dev1
    """


@gov_group.command("credits")
@click.option("--task", "task", default=None, help="Claim the credits this settled task earns you.")
@click.argument("address", required=False)
@chain_option()
@key_option()
@json_option()
@quiet_option()
def gov_credits(task, address, chain_url, key_name, as_json):
    """Show ADDRESS's credits (default: --key's); with --task, claim that task's first.

    \b
    Example:
        din gov credits --task 1 --key dev2
    """
    from din_cli.chain.network import task_id

    if task is not None:
        with context(chain_url, key_name=key_name) as ctx:
            doc = _economy(ctx).claim_credits(ctx.account, task_id(task))
        output.note(f"earned {doc['earned']} credits as {', '.join(doc['roles'])}")
        output.emit_doc(doc, as_json, doc["credits"])
        return
    address = _address(address) if address else key_address(key_name)
    with context(chain_url, act=False) as ctx:
        credits = _economy(ctx).credits(address)
    output.emit_doc({"address": address, "credits": credits}, as_json, credits)


@gov_group.command("propose")
@click.option(
    "--text",
    "text",
    type=click.Path(dir_okay=False),
    help="The proposal's text file (added to the content store).",
)
@click.option("--cid", "cid", help="The proposal's text, already in the content store.")
@click.option(
    "--set",
    "changes",
    multiple=True,
    metavar="NAME=VALUE",
    help="A parameter change to run if it passes (repeatable): min-stake, offence-slash-bps, fee-shares, inflation, rules.",
)
@acting_options(ipfs=True)
def gov_propose(text, cid, changes, chain_url, ipfs_api, key_name, as_json):
    """Propose a DPP: its text and the parameter changes it makes; prints the proposal id.

    Without --set it is a signal: voting is its whole outcome.

    \b
    Example:
        din gov propose --text dpp.md --set offence-slash-bps=1000 --key dev1
    """
    from din_cli.chain.economy import parse_change
    from din_cli.errors import UsageError
    from din_cli.protocol import cids

    if bool(text) == bool(cid):
        raise UsageError("give the proposal's text", "give exactly one of --text FILE or --cid CID")
    parsed = [parse_change(c) for c in changes]
    with context(chain_url, ipfs_api, key_name) as ctx:
        if text:
            cid = str(ctx.store.add(str(text)))
        doc = _economy(ctx).propose(ctx.account, cids.to_bytes(cid), parsed)
    output.note(f"proposal {doc['id']} open for votes until {doc['vote_end']}")
    output.emit_doc(doc, as_json, doc["id"])


@gov_group.command("vote")
@click.argument("proposal", type=int)
@click.argument("side", type=click.Choice(["for", "against"]))
@click.argument("votes", type=int)
@acting_options()
def gov_vote(proposal, side, votes, chain_url, key_name, as_json):
    """Bring your votes on PROPOSAL to VOTES on SIDE; costs VOTES^2 credits of the snapshot.

    \b
    Example:
        din gov vote 1 for 10 --key dev2
    """
    with context(chain_url, key_name=key_name) as ctx:
        doc = _economy(ctx).vote(ctx.account, proposal, side == "for", votes)
    output.note(f"{doc['voted']} votes {side} (cost {doc['cost']} credits)")
    output.emit_doc(doc, as_json, f"{doc['for']}\t{doc['against']}")


@gov_group.command("queue")
@click.argument("proposal", type=int)
@acting_options()
def gov_queue(proposal, chain_url, key_name, as_json):
    """Queue passed PROPOSAL in the timelock (anyone); prints when it may run.

    \b
    Example:
        din gov queue 1 --key dev1
    """
    with context(chain_url, key_name=key_name) as ctx:
        doc = _economy(ctx).queue(ctx.account, proposal)
    output.emit_doc(doc, as_json, doc["eta"])


@gov_group.command("execute")
@click.argument("proposal", type=int)
@acting_options()
def gov_execute(proposal, chain_url, key_name, as_json):
    """Run queued PROPOSAL's changes once its timelock is over (anyone); prints its state.

    \b
    Example:
        din gov execute 1 --key dev1
    """
    with context(chain_url, key_name=key_name) as ctx:
        doc = _economy(ctx).execute(ctx.account, proposal)
    output.emit_doc(doc, as_json, doc["state"])


@gov_group.command("status")
@click.argument("proposal", type=int, required=False)
@chain_option()
@json_option()
def gov_status(proposal, chain_url, as_json):
    """Show PROPOSAL (default: every one): ID, STATE, FOR, AGAINST, ACTIONS.

    \b
    Example:
        din gov status 1 --json | jq -r .state
    """
    with context(chain_url, act=False) as ctx:
        eco = _economy(ctx)
        docs = [eco.proposal(proposal)] if proposal is not None else eco.proposals()
    if as_json:
        output.emit_json(docs[0] if proposal is not None else docs)
        return
    output.emit(
        *[
            f"{d['id']}\t{d['state']}\t{d['for']}\t{d['against']}\t{' '.join(d['actions']) or '-'}"
            for d in docs
        ]
    )


# ------------------------------------------------------------------ din grants


@click.group("grants")
def grants_group():
    """Quadratic funding of public goods from the network's fee pool.

    \b
    Example:
        din grants round --project 0xA:a.md --project 0xB:b.md --duration 86400 --key dev1
    """


@grants_group.command("round")
@click.option(
    "--project",
    "projects",
    multiple=True,
    required=True,
    metavar="ADDRESS:FILE",
    help="A project: its recipient and the file describing it (repeatable, 2..200).",
)
@click.option("--duration", type=int, required=True, help="Seconds the round takes contributions.")
@acting_options(ipfs=True)
def grants_round(projects, duration, chain_url, ipfs_api, key_name, as_json):
    """Open a funding round over the projects; prints its id.

    It reserves half the pool's free balance as its matching fund.

    \b
    Example:
        din grants round --project 0xA:a.md --project 0xB:b.md --duration 86400 --key dev1
    """
    from din_cli.errors import UsageError
    from din_cli.protocol import cids

    recipients, files = [], []
    for p in projects:
        address, sep, path = p.partition(":")
        if not sep or not path:
            raise UsageError(f"project {p!r} is not ADDRESS:FILE", "give --project 0x...:about.md")
        recipients.append(_address(address))
        files.append(path)
    with context(chain_url, ipfs_api, key_name) as ctx:
        raw = [cids.to_bytes(str(ctx.store.add(f))) for f in files]
        doc = _economy(ctx).open_round(ctx.account, recipients, raw, duration)
    output.note(f"round {doc['round']} matches up to {_din(doc['matching'])} DIN")
    output.emit_doc(doc, as_json, doc["round"])


@grants_group.command("contribute")
@click.argument("round_id", type=int)
@click.argument("project", type=int)
@click.argument("amount")
@acting_options()
def grants_contribute(round_id, project, amount, chain_url, key_name, as_json):
    """Contribute AMOUNT DIN to PROJECT of ROUND_ID; counts for matching if you hold credits.

    \b
    Example:
        din grants contribute 1 0 5 --key dev3
    """
    with context(chain_url, key_name=key_name) as ctx:
        doc = _economy(ctx).contribute(ctx.account, round_id, project, _units(amount))
    if not doc["counted"]:
        output.note("you held no credits when the round opened: this contribution earns no match")
    output.emit_doc(doc, as_json, _din(doc["projects"][project]["raw_match"]))


@grants_group.command("finalize")
@click.argument("round_id", type=int)
@acting_options()
def grants_finalize(round_id, chain_url, key_name, as_json):
    """Split ROUND_ID's matching fund once it has ended (anyone); prints PROJECT, MATCHED lines.

    \b
    Example:
        din grants finalize 1 --key dev1
    """
    with context(chain_url, key_name=key_name) as ctx:
        doc = _economy(ctx).finalize(ctx.account, round_id)
    output.emit_doc(
        doc, as_json, *[f"{p['project']}\t{_din(p['matched'])}" for p in doc["projects"]]
    )


@grants_group.command("claim")
@click.argument("round_id", type=int)
@click.argument("project", type=int)
@acting_options()
def grants_claim(round_id, project, chain_url, key_name, as_json):
    """Pay PROJECT of finalized ROUND_ID its contributions and match (to its recipient); prints DIN.

    \b
    Example:
        din grants claim 1 0 --key dev1
    """
    with context(chain_url, key_name=key_name) as ctx:
        doc = _economy(ctx).claim_grant(ctx.account, round_id, project)
    output.emit_doc(doc, as_json, _din(doc["amount"]))


@grants_group.command("donate")
@click.argument("amount")
@acting_options()
def grants_donate(amount, chain_url, key_name, as_json):
    """Give AMOUNT DIN to the public-goods pool; prints its free balance.

    \b
    Example:
        din grants donate 100 --key dev1
    """
    with context(chain_url, key_name=key_name) as ctx:
        doc = _economy(ctx).donate(ctx.account, _units(amount))
    output.emit_doc(doc, as_json, _din(doc["available"]))


@grants_group.command("status")
@click.argument("round_id", type=int)
@chain_option()
@json_option()
def grants_status(round_id, chain_url, as_json):
    """Show ROUND_ID's projects: PROJECT, RECIPIENT, CONTRIBUTED, RAW_MATCH, MATCHED (DIN).

    \b
    Example:
        din grants status 1 --json | jq '.projects[].matched'
    """
    with context(chain_url, act=False) as ctx:
        doc = _economy(ctx).round(round_id)
    if as_json:
        output.emit_json(doc)
        return
    output.emit(
        *[
            f"{p['project']}\t{p['recipient']}\t{_din(p['contributed'])}\t{_din(p['raw_match'])}\t{_din(p['matched'])}"
            for p in doc["projects"]
        ]
    )
