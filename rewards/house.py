"""The house validator's weight vector: the contributors' measured values, made non-negative and normalized.

Mixing rule for the two kinds of contribution: data values and model scores are each normalized over their own
pool, then mixed as (1 - prediction_share) * data + prediction_share * models. A pool with no positive value gives
its share to the other, so an epoch with only datasets pays exactly as before.
"""

from __future__ import annotations

import math
from collections.abc import Mapping


def house_weights(values: Mapping[str, float]) -> dict[str, float]:
    """Each contributor's positive value over the sum of positive values; harmful or worthless data weighs 0.

    Summed in sorted key order so the result does not depend on dict order.
    """
    positive = {k: max(float(v), 0.0) for k, v in sorted(values.items())}
    total = math.fsum(positive.values())
    if total <= 0.0:
        return {k: 0.0 for k in positive}
    return {k: v / total for k, v in positive.items()}


def mixed_house_weights(
    data_values: Mapping[str, float], model_scores: Mapping[str, float], prediction_share: float
) -> dict[str, float]:
    """House weights over both kinds of contribution, per the mixing rule in this module's docstring."""
    assert 0.0 <= prediction_share <= 1.0, "prediction_share is a fraction"
    data, models = house_weights(data_values), house_weights(model_scores)
    data_mass, model_mass = math.fsum(data.values()), math.fsum(models.values())
    if model_mass == 0.0:
        share = 0.0
    elif data_mass == 0.0:
        share = 1.0
    else:
        share = prediction_share
    keys = sorted(set(data) | set(models))
    return {k: (1.0 - share) * data.get(k, 0.0) + share * models.get(k, 0.0) for k in keys}
