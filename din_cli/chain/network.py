"""A deployment of din's contracts and the chain-side steps the commands run.

``$DIN_HOME/deployment.json`` records where the contracts of this network live
so every command finds them: the dict ``din.deploy_all`` returns (chain id,
deployer, first block, ``DinToken`` / ``ValidatorRegistry`` / ``DinTasks``
addresses, minimum stake, unstake delay) plus ``url`` (None: the embedded
chain), ``contracts`` (the three addresses by name) and ``dev_accounts``. ``init_network`` creates it; ``open_network`` connects and checks that
the chain is the one deployed to. The functions below take a ``Chain``, the
deployment and an eth-account ``LocalAccount``; they never touch keystores
(the CLI unlocks keys and passes accounts and HPKE public keys in).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path

from din_cli.errors import AlreadyDone, InputError, NotFoundError, UsageError

DEPLOYMENT_FILE = "deployment.json"
TOKEN_DECIMALS = 18
#: What each dev account gets on a dev chain.
DEFAULT_DEV_ACCOUNTS = 8
DEV_ETHER = 1_000 * 10**18
DEV_TOKENS = 10_000 * 10**18
CONTRACTS = (
    "DinToken",
    "ValidatorRegistry",
    "DinPayouts",
    "DinTasks",
    "DinDisputes",
    "DinGovernor",
    "DinGrants",
)
NO_DEADLINE = 2**64 - 1


# ------------------------------------------------------------------ deployment.json


def deployment_path() -> Path:
    from din_cli.config import din_home

    return din_home() / DEPLOYMENT_FILE


def load_deployment() -> dict:
    """The deployment of this ``$DIN_HOME``; NotFoundError naming ``din init`` when there is none."""
    path = deployment_path()
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise NotFoundError(f"no deployment in {path.parent}", "run `din init` first") from None
    except json.JSONDecodeError as e:
        raise InputError(
            f"{path}: not valid JSON ({e})", "move it away and run `din init` again"
        ) from None
    if "chain_id" not in doc or any(not doc.get(name) for name in CONTRACTS):
        raise InputError(f"{path}: not a din deployment", "move it away and run `din init` again")
    return doc


def save_deployment(doc: dict) -> None:
    """Write ``deployment.json`` atomically (never half-written)."""
    from din_cli.files import write_atomic

    path = deployment_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (json.dumps(doc, indent=2) + "\n").encode())


def open_network(url: str | None = None, deployment: dict | None = None):
    """(chain, deployment): the chain at ``url`` (or the deployment's), checked against deployment.json."""
    from din_cli.chain.client import connect

    dep = deployment or load_deployment()
    chain = connect(url if url is not None else dep.get("url"))
    if chain.chain_id != dep["chain_id"]:
        where = dep.get("url") or "the embedded chain"
        raise UsageError(
            f"deployment.json is for chain {dep['chain_id']} ({where}) but the chain here has id {chain.chain_id}",
            "use the --chain of that deployment, or another DIN_HOME",
        )
    if not chain.w3.eth.get_code(dep["DinTasks"]):
        raise NotFoundError(
            f"no DinTasks contract at {dep['DinTasks']} on chain {chain.chain_id} (was the node reset?)",
            "run `din init` again in a fresh DIN_HOME",
        )
    return chain, dep


def din(chain, dep: dict):
    """The typed contract wrapper (din_cli.chain.din.Din) of this deployment."""
    from din_cli.chain.din import Din

    return Din(chain, dep)


# ------------------------------------------------------------------ amounts


def parse_amount(text: str) -> int:
    """Token units (18 decimals) from a decimal string such as ``100`` or ``0.5``."""
    try:
        value = Decimal(str(text).replace("_", ""))
    except InvalidOperation:
        raise UsageError(
            f"amount {text!r} is not a number", "give DIN as a decimal, e.g. 100 or 0.5"
        ) from None
    units = value * (Decimal(10) ** TOKEN_DECIMALS)
    if not value.is_finite() or units != units.to_integral_value() or units < 0:
        raise UsageError(
            f"amount {text!r} is not a whole number of token units", "use at most 18 decimals"
        )
    return int(units)


def format_amount(units: int) -> str:
    """``units`` as a decimal DIN amount (``1500000000000000000`` -> ``1.5``)."""
    whole, frac = divmod(int(units), 10**TOKEN_DECIMALS)
    return f"{whole}.{frac:018d}".rstrip("0").rstrip(".") if frac else str(whole)


# ------------------------------------------------------------------ init


def _home_lock(name: str):
    from din_cli.chain.client import file_lock
    from din_cli.config import din_home

    return file_lock(din_home() / "locks" / f"{name}.lock")


def init_network(
    url: str | None = None,
    *,
    dev_accounts: int | None = None,
    dev_key: Callable[[int], str] | None = None,
    deployer=None,
) -> dict:
    """Deploy din's contracts on the chain at ``url`` (None: the embedded one) and record them.

    On a dev chain, ``dev_key(i)`` is called for i in range(dev_accounts)
    (default DEFAULT_DEV_ACCOUNTS) and returns the address of dev account i
    (the CLI creates keystores); each gets ether and staking tokens. On a
    non-dev chain ``deployer`` (a LocalAccount, or a callable returning one,
    called only then) deploys; on a dev chain the chain's dev account does.
    AlreadyDone if this ``DIN_HOME`` already has a deployment; nothing is
    changed then.
    """
    from din_cli.chain.client import connect

    with _home_lock("init"):  # two `din init` at once: the second finds the first's deployment
        if deployment_path().exists():
            dep = load_deployment()
            where = dep.get("url") or "the embedded chain"
            raise AlreadyDone(
                f"already initialised: contracts on chain {dep['chain_id']} ({where})",
                "nothing changed",
            )
        chain = connect(url)
        try:
            return _init(chain, url, dev_accounts, dev_key, deployer)
        finally:
            chain.close()


def _init(chain, url, dev_accounts, dev_key, deployer) -> dict:
    from din_cli.chain.din import deploy_all

    if chain.is_dev:
        deployer = chain.dev_account()
        dev_accounts = DEFAULT_DEV_ACCOUNTS if dev_accounts is None else dev_accounts
    else:
        if dev_accounts:
            raise UsageError(
                "--dev-accounts works only on a dev chain (embedded or anvil)", "leave it out"
            )
        dev_accounts = 0
        deployer = deployer() if callable(deployer) else deployer
        if deployer is None:
            raise UsageError(
                f"{url} is not a dev chain, so din has no funded deployer",
                "give --key NAME of a funded account",
            )
    with chain.writing():  # embedded: one SQLite transaction, all or nothing
        dep = deploy_all(chain, deployer)
        dep["url"] = chain.url if chain.url != "memory" else None
        dep["contracts"] = {name: dep[name] for name in CONTRACTS}
        wrapper = din(chain, dep)
        devs = []
        for i in range(dev_accounts if dev_key else 0):
            address = dev_key(i)
            chain.fund(address, DEV_ETHER)
            wrapper.transfer(deployer, address, DEV_TOKENS)
            devs.append(address)
        dep["dev_accounts"] = devs
        dep["created"] = int(time.time())
    # after COMMIT: a crash in between leaves contracts nobody points at and
    # `din init` deploys again; never a deployment.json without its contracts
    save_deployment(dep)
    return dep


# ------------------------------------------------------------------ chain info


def chain_info(url: str | None = None) -> dict:
    """Chain id, head block, its time, and the deployment's addresses."""
    chain, dep = open_network(url)
    try:
        return {
            "chain_id": chain.chain_id,
            "url": chain.url,
            "head": chain.head(),
            "time": chain.now(),
            "deployed_at": dep.get("block"),
            "contracts": {name: dep.get(name) for name in CONTRACTS},
        }
    finally:
        chain.close()


def advance_time(seconds: int, url: str | None = None) -> int:
    """Move a dev chain's clock ``seconds`` ahead (mining a block); the new block time."""
    chain, _ = open_network(url)
    try:
        chain.advance_time(int(seconds))
        return chain.now()
    finally:
        chain.close()


# ------------------------------------------------------------------ validators


def validator_state(chain, dep: dict, address: str) -> dict:
    """Stake, activity, unlock time, HPKE key and balances of ``address``."""
    d = din(chain, dep)
    v = d.validator_info(address)
    return {
        "address": v.address,
        "stake": v.stake,
        "stake_din": format_amount(v.stake),
        "self_stake": (own := int(d.chain.call(d.registry.functions.selfStakeOf(address)))),
        "delegated": v.stake - own,  # the stake is the whole pool: self-stake plus delegations
        "bonded": v.bonded,
        "bonded_din": format_amount(v.bonded),
        "min_stake": d.min_stake(),
        "active": v.active,
        "unlock_at": v.unlock_at or None,
        "hpke_public": "0x" + v.hpke_key.hex(),
        "token_balance": d.balance(address),
        "eth_balance": chain.balance(address),
    }


def stake(chain, dep: dict, account, hpke_public: bytes, amount: int) -> dict:
    """Approve and lock ``amount`` token units in the registry, publishing ``hpke_public``."""
    with chain.writing():
        din(chain, dep).stake(account, int(amount), bytes(hpke_public))
    return validator_state(chain, dep, account.address)


def unstake(chain, dep: dict, account) -> dict:
    """Ask to unstake; once the delay is over, withdraw the stake instead.

    AlreadyDone while a request waits for its delay.
    """
    d = din(chain, dep)
    with chain.writing():
        v = d.validator_info(account.address)
        if v.unlock_at and chain.now() >= v.unlock_at:
            if v.bonded:
                raise UsageError(
                    f"{format_amount(v.bonded)} DIN of the stake is bonded to tasks in progress",
                    "withdraw after they settle: `din rewards claim --task N` releases a bond",
                )
            amount, action = d.withdraw(account), "withdrawn"
        elif v.unlock_at:
            raise AlreadyDone(
                f"unstake already requested; the stake unlocks at {iso_time(v.unlock_at)}",
                "run `din validator unstake` again after that to withdraw",
            )
        else:
            d.unstake(account)
            amount, action = v.stake, "requested"
    state = validator_state(chain, dep, account.address)
    state.update(action=action, amount=amount, amount_din=format_amount(amount))
    return state


# ------------------------------------------------------------------ tasks


def task_id(task: str | int) -> int:
    """A task id from user text (``7``, ``0x7``); UsageError otherwise."""
    try:
        value = int(str(task), 0)
    except ValueError:
        raise UsageError(
            f"task {task!r} is not a task id", "give the number `din model publish` printed"
        ) from None
    if value <= 0:
        raise UsageError(f"task {task!r} is not a task id", "task ids start at 1")
    return value


def join(chain, dep: dict, account, task: str | int, hpke_public: bytes) -> dict:
    """Join task ``task`` as a participant, publishing ``hpke_public``; AlreadyDone if already in."""
    d = din(chain, dep)
    tid = task_id(task)
    with chain.writing():
        d.task_info(tid)  # NotFoundError for an unknown task
        index1 = chain.call(d.tasks.functions.member(tid, account.address))[0]
        if index1:
            raise AlreadyDone(
                f"{account.address} already joined task {tid} as participant {index1 - 1}",
                "nothing to do",
            )
        index = d.join_task(account, tid, bytes(hpke_public))
    return {"task": tid, "participant": account.address, "index": index}


def task_status(chain, dep: dict, task: str | int, *, account: str | None = None) -> dict:
    """The state of task ``task``: phase by name, round, deadline, counts, digests (and your role)."""
    d = din(chain, dep)
    tid = task_id(task)
    doc = d.task_info(tid).as_dict()
    now = chain.now()
    doc["now"] = now
    if doc["deadline"] == NO_DEADLINE:
        doc["deadline"] = None
    doc["seconds_left"] = None if doc["deadline"] is None else max(0, doc["deadline"] - now)
    if account:
        index1 = chain.call(d.tasks.functions.member(tid, account))[0]
        vindex1 = chain.call(d.tasks.functions.validatorState(tid, account))[0]
        role = (
            "owner"
            if account == doc["owner"]
            else "participant"
            if index1
            else "validator"
            if vindex1
            else "none"
        )
        doc["you"] = {
            "address": account,
            "role": role,
            "index": index1 - 1 if index1 else vindex1 - 1 if vindex1 else None,
        }
    return doc


def iso_time(ts: int) -> str:
    """A unix time as ISO 8601 UTC."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(ts)))


def list_tasks(chain, dep: dict) -> list[dict]:
    """Every task: id, phase, round, owner, participants, validators, deadline."""
    d = din(chain, dep)
    out = []
    for tid in range(1, d.task_count() + 1):
        t = d.task_info(tid)
        out.append(
            {
                "task_id": tid,
                "phase": t.phase,
                "round": t.round,
                "owner": t.owner,
                "arch": t.arch,
                "participants": t.participants,
                "validators": t.validators,
                "deadline": None if t.deadline == NO_DEADLINE else t.deadline,
            }
        )
    return out


def register_validator(chain, dep: dict, account, task: str | int) -> dict:
    """Register a staked validator for task ``task``; AlreadyDone if registered."""
    d = din(chain, dep)
    tid = task_id(task)
    with chain.writing():
        d.task_info(tid)  # NotFoundError for an unknown task
        index1 = chain.call(d.tasks.functions.validatorState(tid, account.address))[0]
        if index1:
            raise AlreadyDone(
                f"{account.address} already validates task {tid} as validator {index1 - 1}",
                "nothing to do",
            )
        index = d.register_validator_for_task(account, tid)
    return {"task": tid, "validator": account.address, "index": index}
