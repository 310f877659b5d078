"""A simulation scenario: one task's size, behaviours and run settings, from a TOML file.

Example (every key optional; these are the defaults)::

    seed = 1                      # draws behaviours, stores and stragglers: same seed, same run
    [task]
    participants = 50
    subgroup_size = 10
    validators_per_subgroup = 3   # the task gets groups x this many validators
    rounds = 2
    dataset = "digits"            # or "breast_cancer"
    arch = "logreg:64-10"
    rows = [20, 60]               # each store's row count, drawn uniformly in this range
    test_fraction = 0.3           # rows held out as the owner's test pool
    epochs = 1
    lr = 0.5
    scoring = "loo"               # gtg, exact, loo or update (as `din model publish --scoring`)
    aggregation = "mean"
    privacy = "open"              # open or sealed
    [behaviour]                   # fractions of participants (validators for colluders)
    dropouts = 0.0                # skip a round (drawn afresh each round)
    stragglers = 0.0              # submit after the training deadline, every round
    free_riders = 0.0             # resubmit the round's starting model
    copycats = 0.0                # resubmit another participant's update of the round
    poisoners = 0.0               # submit start - 2 x (their trained update - start)
    noisy_labels = 0.0            # honest, but 30 % of their labels are wrong
    colluding_validators = 0.0    # stake share: commit the genesis model, inflate attackers' scores
    [run]
    chain = "embedded"            # "embedded", "anvil" (din starts one) or an http:// URL of a dev node
    workers = 2                   # Ray workers on this machine (ignored with --address)
    ipfs = ""                     # an IPFS node's API (/ip4/HOST/tcp/5001) instead of OUT/home/blocks

Stores reuse the dataset's rows when participants x rows exceeds it (the
report says how many times each row is used on average).
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from din_cli.errors import InputError, UsageError

BEHAVIOURS = (
    "dropouts",
    "stragglers",
    "free_riders",
    "copycats",
    "poisoners",
    "noisy_labels",
    "colluding_validators",
)
#: participant kinds that should earn nothing
ATTACKERS = ("free-rider", "copycat", "poisoner")


@dataclass
class Task:
    participants: int = 50
    subgroup_size: int = 10
    validators_per_subgroup: int = 3
    rounds: int = 2
    dataset: str = "digits"
    arch: str = "logreg:64-10"
    rows: list[int] = field(default_factory=lambda: [20, 60])
    test_fraction: float = 0.3
    epochs: int = 1
    lr: float = 0.5
    batch_size: int = 32
    scoring: str = "loo"
    aggregation: str = "mean"
    privacy: str = "open"

    @property
    def groups(self) -> int:
        return -(-self.participants // self.subgroup_size)

    @property
    def validators(self) -> int:
        return self.groups * self.validators_per_subgroup


@dataclass
class Behaviour:
    dropouts: float = 0.0
    stragglers: float = 0.0
    free_riders: float = 0.0
    copycats: float = 0.0
    poisoners: float = 0.0
    noisy_labels: float = 0.0
    colluding_validators: float = 0.0


@dataclass
class Run:
    chain: str = "embedded"
    workers: int = 2
    ipfs: str = ""  # an IPFS node's API multiaddr as the content store (default: OUT/home/blocks)


@dataclass
class Scenario:
    name: str = "scenario"
    seed: int = 1
    task: Task = field(default_factory=Task)
    behaviour: Behaviour = field(default_factory=Behaviour)
    run: Run = field(default_factory=Run)

    def as_dict(self) -> dict:
        return asdict(self)


def _section(cls, doc: dict, where: str):
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(doc) - set(known))
    if unknown:
        raise InputError(
            f"{where}: unknown key(s) {', '.join(unknown)}",
            f"known keys: {', '.join(known)}",
        )
    out = cls()
    for k, v in doc.items():
        want = type(getattr(out, k))
        if want is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if not isinstance(v, want) or isinstance(v, bool) != (want is bool):
            raise InputError(
                f"{where}.{k} = {v!r}: expected a {want.__name__}",
                f"write {k} as a TOML {want.__name__}",
            )
        setattr(out, k, v)
    return out


def parse(doc: dict, name: str = "scenario") -> Scenario:
    """A Scenario from a TOML document's dict; InputError naming the bad key."""
    top = {k: v for k, v in doc.items() if not isinstance(v, dict)}
    unknown = sorted(set(top) - {"seed", "name"}) + sorted(
        set(k for k, v in doc.items() if isinstance(v, dict)) - {"task", "behaviour", "run"}
    )
    if unknown:
        raise InputError(
            f"unknown scenario key(s) {', '.join(unknown)}",
            "top-level keys: seed, name; tables: [task], [behaviour], [run]",
        )
    seed = top.get("seed", 1)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise InputError(f"seed = {seed!r}: expected an int", "write seed as a TOML integer")
    sc = Scenario(
        name=str(top.get("name", name)),
        seed=seed,
        task=_section(Task, doc.get("task", {}), "task"),
        behaviour=_section(Behaviour, doc.get("behaviour", {}), "behaviour"),
        run=_section(Run, doc.get("run", {}), "run"),
    )
    check(sc)
    return sc


def _tomllib():
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # the same parser, published as tomli before it joined the standard library
        import tomli as tomllib
    return tomllib


def parse_text(text: str, name: str = "scenario", where: str = "scenario") -> Scenario:
    """A Scenario from TOML text; InputError naming the bad key or the syntax error."""
    tomllib = _tomllib()
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{where}: not valid TOML ({e})", "fix the file's syntax") from None
    return parse(doc, name)


def load(path: str | Path) -> Scenario:
    """Read and check a scenario file."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise InputError(
            f"{p}: no such scenario file", "give the path of a .toml scenario"
        ) from None
    return parse_text(text, p.stem, str(p))


def check(sc: Scenario) -> None:
    t, b = sc.task, sc.behaviour
    if t.participants < 1:
        raise UsageError("task.participants must be at least 1", "give a positive count")
    if not 1 <= t.subgroup_size <= 256:
        raise UsageError("task.subgroup_size must be in 1..256", "the contract's bitmap holds 256")
    if t.validators_per_subgroup < 1:
        raise UsageError("task.validators_per_subgroup must be at least 1", "give 1 or more")
    if t.rounds < 1:
        raise UsageError("task.rounds must be at least 1", "give 1 or more")
    if (
        len(t.rows) != 2
        or not all(isinstance(r, int) and not isinstance(r, bool) for r in t.rows)
        or not 1 <= t.rows[0] <= t.rows[1]
    ):
        raise UsageError(
            f"task.rows = {t.rows}: expected [least, most] rows per store",
            "for example rows = [20, 60]",
        )
    if not 0.05 <= t.test_fraction <= 0.9:
        raise UsageError("task.test_fraction must be in 0.05..0.9", "for example 0.3")
    from din_cli.ml.data import BUNDLED
    from din_cli.ml.robust import RULES

    scorings = ("gtg", "exact", "loo", "update")  # chain.din.SCORINGS, without importing web3 here
    for key, value, known in (
        ("dataset", t.dataset, tuple(BUNDLED)),
        ("scoring", t.scoring, scorings),
        ("aggregation", t.aggregation, RULES),
    ):
        if value not in known:
            raise UsageError(
                f"task.{key} = {value!r} is not one of {', '.join(known)}", "pick one of those"
            )
    if t.epochs < 1 or t.lr <= 0 or t.batch_size < 1:
        raise UsageError(
            "task.epochs and task.batch_size must be at least 1, task.lr above 0", "fix them"
        )
    chain = sc.run.chain
    if chain not in ("embedded", "anvil") and not chain.startswith(("http://", "https://")):
        raise UsageError(f"run.chain = {chain!r}", 'use "embedded", "anvil" or an http:// URL')
    if t.privacy not in ("open", "sealed"):
        raise UsageError(
            f"task.privacy = {t.privacy!r}: the simulator runs open or sealed tasks",
            'use "open" or "sealed"',
        )
    for k in BEHAVIOURS:
        v = getattr(b, k)
        if not 0.0 <= v <= 1.0:
            raise UsageError(f"behaviour.{k} = {v}: not a fraction", "give a number in 0..1")
    if b.free_riders + b.copycats + b.poisoners + b.noisy_labels > 1.0:
        raise UsageError(
            "behaviour: free_riders + copycats + poisoners + noisy_labels exceed 1",
            "lower the fractions",
        )
    if sc.run.workers < 1:
        raise UsageError("run.workers must be at least 1", "give the number of Ray workers")
