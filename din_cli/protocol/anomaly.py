"""Anomaly figures of a subgroup's updates: how far each moved, and whether it pulled with the rest.

For each submitted update of a round's subgroup, next to the admission rule's
verdict (admitted with its FedAvg weight, or excluded and why):

``distance``  L2 norm of ``update - start`` over every weight (float64), the
              round's starting model being ``start``. A scaled poisoner is
              far; a resubmitted start is 0.
``cosine``    cosine between ``update - start`` and ``aggregate - start``,
              the subgroup's recomputed result: near 1 for an update that
              pulls where the subgroup went, negative for one that pulls
              against it (a negated poisoner). None when either is zero.
``clipped``   the norm-bounded rule clipped it (read from the aggregate's
              ``din.rule``, so it is the rule's own exact decision).

These are figures for people reading ``din verify --json``; nothing on chain
depends on them, and an update's payout is its contribution score
(``protocol.contribution``), not these.

Example:
    rows = figures(paths, "start.safetensors", "aggregate.safetensors", admission)
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence


def _flat(path) -> object | None:
    """A model's weights as one float64 vector in name order; None when it cannot be read."""
    import numpy as np

    from din_cli.errors import DinError
    from din_cli.ml import models

    try:
        mf = models.read_model(path)
    except DinError:
        return None
    return np.concatenate(
        [mf.weights[k].reshape(-1).astype(np.float64) for k in sorted(mf.weights)]
    )


def _clipped(aggregate) -> list[int]:
    """Positions (among the admitted inputs) that the aggregate's ``din.rule`` lists as clipped."""
    from din_cli.errors import DinError
    from din_cli.ml import tensorfile

    try:
        rule = tensorfile.read_header(aggregate).metadata.get("din.rule")
        return [int(i) for i in json.loads(rule).get("clipped", [])] if rule else []
    except (DinError, ValueError, AttributeError):
        return []


def figures(
    paths: Sequence[str | os.PathLike | None],
    start: str | os.PathLike,
    aggregate: str | os.PathLike | None,
    admission=None,
) -> list[dict]:
    """One row per update of ``paths`` (None: not fetched): verdict, weight, distance, cosine, clipped.

    ``admission`` is the rule's ``Admission`` of the same inputs (None: no
    verdicts); ``aggregate`` the subgroup's recomputed result (None, or the
    start itself, when every update was excluded).
    """
    import numpy as np

    base = _flat(start)
    agg = _flat(aggregate) if aggregate is not None else None
    pull = None if agg is None or base is None or agg.shape != base.shape else agg - base
    pull_norm = float(np.linalg.norm(pull)) if pull is not None else 0.0
    verdicts = admission.verdicts if admission is not None else [None] * len(paths)
    admitted = [k for k, v in enumerate(verdicts) if v is not None and v.admitted]
    clipped = (
        {admitted[i] for i in _clipped(aggregate) if i < len(admitted)}
        if agg is not None
        else set()
    )
    rows = []
    for k, path in enumerate(paths):
        v = verdicts[k]
        row = {
            "position": k,
            "cid": None if v is None else v.cid,
            "admitted": None if v is None else v.admitted,
            "reason": "" if v is None else v.reason,
            "weight": None if v is None else v.weight,
            "distance": None,
            "cosine": None,
            "clipped": k in clipped,
        }
        u = _flat(path) if path is not None else None
        if u is not None and base is not None and u.shape == base.shape:
            delta = u - base
            norm = float(np.linalg.norm(delta))
            row["distance"] = round(norm, 6)
            if norm > 0 and pull_norm > 0 and math.isfinite(norm):
                row["cosine"] = round(float(delta @ pull) / (norm * pull_norm), 6)
        rows.append(row)
    return rows
