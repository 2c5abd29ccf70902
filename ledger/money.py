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

    Exact in integers: every float is m / 2^k, so scaled to the common denominator 2^K each share is an integer
    n_i, its quota n_i * total / sum(n) and its remainder (n_i * total) mod sum(n), all compared without rounding
    (and ~20x faster than Fractions at a million shares).
    """
    if total < 0:
        raise ValueError("total must be non-negative")
    ratios = [float(s).as_integer_ratio() for s in shares]  # exact; the denominator is a power of two
    if any(num < 0 for num, _ in ratios):
        raise ValueError("shares must be non-negative")
    k = max((den.bit_length() for _, den in ratios), default=1) - 1
    scaled = [num << (k - den.bit_length() + 1) for num, den in ratios]
    weight = sum(scaled)
    if weight == 0:
        if total:
            raise ValueError(f"cannot split {total} units over all-zero shares")
        return [0] * len(scaled)
    amounts, negative_remainders = [], []
    for n in scaled:
        q, r = divmod(n * total, weight)
        amounts.append(q)
        negative_remainders.append(-r)
    leftover = total - sum(amounts)
    # A stable sort on the negated remainder: largest first, and equal remainders keep index order.
    for i in sorted(range(len(scaled)), key=negative_remainders.__getitem__)[:leftover]:
        amounts[i] += 1
    assert sum(amounts) == total, "largest remainder must conserve the total"
    return amounts
