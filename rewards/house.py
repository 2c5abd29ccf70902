"""The house validator's weight vector: the contributors' measured values, made non-negative and normalized.

Mixing rule for the two kinds of contribution: data values and model scores are each normalized over their own
pool, then mixed as (1 - prediction_share) * data + prediction_share * models. A pool with no positive value gives
its share to the other, so an epoch with only datasets pays exactly as before.

A NaN or infinite value is refused with ValuationError (rewards/errors.py): values come from KNN-Shapley of finite
features and from checked probabilities, so one can only be an internal bug, and the run must fail loudly rather than
settle NaN weights. Finite values never overflow: a sum too large for a float is taken over the values scaled down.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from rewards.errors import ValuationError


def house_weights(values: Mapping[str, float], *, what: str = "data value") -> dict[str, float]:
    """Each contributor's positive value over the sum of positive values; harmful or worthless data weighs 0.

    Summed in sorted key order so the result does not depend on dict order. ValuationError on a NaN or inf value.
    """
    for k, v in sorted(values.items()):
        if not math.isfinite(float(v)):
            raise ValuationError(f"the {what} of contributor {k} is {float(v)!r}: values must be finite (a bug in "
                                 "scoring, since they come from finite features; nothing was settled)")
    positive = {k: max(float(v), 0.0) for k, v in sorted(values.items())}
    try:
        total = math.fsum(positive.values())
    except OverflowError:  # finite values whose sum is not: sum them scaled by the largest (each then <= 1)
        top = max(positive.values())
        positive = {k: v / top for k, v in positive.items()}
        total = math.fsum(positive.values())
    if total <= 0.0:
        return {k: 0.0 for k in positive}
    return {k: v / total for k, v in positive.items()}


def mixed_house_weights(
    data_values: Mapping[str, float], model_scores: Mapping[str, float], prediction_share: float
) -> dict[str, float]:
    """House weights over both kinds of contribution, per the mixing rule in this module's docstring."""
    assert 0.0 <= prediction_share <= 1.0, "prediction_share is a fraction"
    data, models = house_weights(data_values), house_weights(model_scores, what="model score")
    data_mass, model_mass = math.fsum(data.values()), math.fsum(models.values())
    if model_mass == 0.0:
        share = 0.0
    elif data_mass == 0.0:
        share = 1.0
    else:
        share = prediction_share
    keys = sorted(set(data) | set(models))
    return {k: (1.0 - share) * data.get(k, 0.0) + share * models.get(k, 0.0) for k in keys}
