"""The house validator's weight vector: the contributors' measured values, made non-negative and normalized."""

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
