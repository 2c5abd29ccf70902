"""Money: integer base units, and the one place where float shares become integers."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

from ledger.errors import AmountError

UNITS_PER_TOKEN = 10**9


def tokens_to_units(tokens: float | int | str) -> int:
    """Exact conversion of a decimal token amount (e.g. "12.5") to base units; rejects sub-unit precision."""
    try:
        units = Fraction(str(tokens)) * UNITS_PER_TOKEN
    except (ValueError, ZeroDivisionError):
        raise AmountError(f"{tokens!r} is not a token amount (a decimal number such as 12.5)") from None
    if units.denominator != 1:
        raise AmountError(f"{tokens} tokens is not a whole number of base units (1 token = {UNITS_PER_TOKEN} units)")
    return int(units)


def units_to_tokens(units: int) -> str:
    """Base units as an exact decimal token string, for people."""
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), UNITS_PER_TOKEN)
    return f"{sign}{whole}.{frac:09d}".rstrip("0").rstrip(".") if frac else f"{sign}{whole}"


def largest_remainder(shares: Sequence[float], total: int) -> list[int]:
    """Split `total` units in proportion to non-negative `shares`, summing exactly to `total`.

    Floors each exact quota, then hands the leftover units to the largest remainders (ties: lower index first),
    so the result is deterministic. All-zero shares give all zeros (and then `total` must be 0).
    """
    if total < 0:
        raise ValueError("total must be non-negative")
    fracs = [Fraction(float(s)) for s in shares]  # exact binary value of each float: no rounding drift
    if any(f < 0 for f in fracs):
        raise ValueError("shares must be non-negative")
    weight = sum(fracs, Fraction(0))
    if weight == 0:
        if total:
            raise ValueError(f"cannot split {total} units over all-zero shares")
        return [0] * len(fracs)
    quotas = [f * total / weight for f in fracs]
    amounts = [q.numerator // q.denominator for q in quotas]
    leftover = total - sum(amounts)
    order = sorted(range(len(quotas)), key=lambda i: (-(quotas[i] - amounts[i]), i))
    for i in order[:leftover]:
        amounts[i] += 1
    assert sum(amounts) == total, "largest remainder must conserve the total"
    return amounts
