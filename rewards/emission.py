"""Split of one epoch's emission between the subnet owner, miners and validators (yuma.md section 1, step 12)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SUM_TOLERANCE = 1e-12


@dataclass(frozen=True)
class EmissionShares:
    """Fractions of the epoch emission; owner + sum(miners) + sum(validators) == 1."""

    owner: float
    miners: np.ndarray
    validators: np.ndarray


def _non_negative_vector(name: str, values: object) -> np.ndarray:
    """A 1-D float64 copy of values, rejecting negative or non-finite entries."""
    a = np.asarray(values, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D vector, got shape {a.shape}")
    if not (np.all(np.isfinite(a)) and np.all(a >= 0)):
        raise ValueError(f"{name} must be finite and non-negative")
    return a


def emission_shares(incentive: object, dividends: object, active_stake: object, *,
                    owner_cut: float = 0.18) -> EmissionShares:
    """Owner takes owner_cut; the rest goes to miners by I/e and validators by D/e, with e = sum(I) + sum(D).

    When e == 0 (no weight survived) validators share the rest by active stake, and when that is all zero too the
    owner gets everything, so the shares always sum to 1.
    """
    if not 0.0 <= owner_cut <= 1.0:
        raise ValueError(f"owner_cut must lie in [0, 1], got {owner_cut}")
    i = _non_negative_vector("incentive", incentive)
    d = _non_negative_vector("dividends", dividends)
    s = _non_negative_vector("active_stake", active_stake)
    if s.shape != d.shape:
        raise ValueError(f"active_stake and dividends need one entry per validator, got {s.shape} and {d.shape}")
    rest = 1.0 - owner_cut
    e = float(i.sum() + d.sum())
    if e > 0:
        owner, miners, validators = owner_cut, rest * i / e, rest * d / e
    elif s.sum() > 0:
        owner, miners, validators = owner_cut, np.zeros_like(i), rest * s / s.sum()
    else:
        owner, miners, validators = 1.0, np.zeros_like(i), np.zeros_like(s)
    total = owner + float(miners.sum()) + float(validators.sum())
    assert abs(total - 1.0) <= SUM_TOLERANCE, f"emission shares sum to {total!r}, not 1"
    return EmissionShares(owner=float(owner), miners=miners, validators=validators)
