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


FAST_SPLIT_MIN_SHARES = 2048  # below this the integer loop is as fast; above it, the vectorized split
_MAX_FAST_TOTAL = 2**62  # floors are summed in int64 on the vectorized path


def largest_remainder(shares: Sequence[float], total: int) -> list[int]:
    """Split `total` units in proportion to non-negative `shares`, summing exactly to `total`.

    Floors each exact quota, then hands the leftover units to the largest remainders (ties: lower index first),
    so the result is deterministic. All-zero shares give all zeros (and then `total` must be 0).

    Exact in integers: every float is m / 2^k, so scaled to the common denominator 2^K each share is an integer
    n_i, its quota n_i * total / sum(n) and its remainder (n_i * total) mod sum(n), all compared without rounding.
    From FAST_SPLIT_MIN_SHARES shares on, the same result is reached vectorized (`_split_vectorized`).
    """
    fast = _split_fast(shares, total)
    return fast.tolist() if fast is not None else _split_exact(shares, total)


def largest_remainder_array(shares, total: int):
    """`largest_remainder` as an int64 NumPy array, for callers that write the amounts as a column (a million Python
    ints cost a tenth of a second to make and another to convert back)."""
    import numpy as np

    fast = _split_fast(shares, total)
    return fast if fast is not None else np.array(_split_exact(shares, total), dtype=np.int64)


def _split_fast(shares, total: int):
    """The vectorized split where it applies (None: the exact loop decides), after checking the total."""
    if total < 0:
        raise ValueError("total must be non-negative")
    if len(shares) >= FAST_SPLIT_MIN_SHARES and total < _MAX_FAST_TOTAL:
        return _split_vectorized(shares, total)
    return None


def _split_exact(shares: Sequence[float], total: int) -> list[int]:
    """The split in Python integers, one share at a time (the definition; ~20x faster than Fractions)."""
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


def _split_vectorized(shares: Sequence[float], total: int):
    """The same split as `_split_exact`, with NumPy: quotas in extended precision with a proven error bound, and
    exact integers only where that bound leaves a floor, or the remainders' cut, in doubt. None: not applicable
    (a negative or non-finite share, all-zero shares, an overflow): the exact loop decides and raises.

    Each share is m_i * 2^k_i (m_i < 2^53). With K = min k_i, n_i = m_i << (k_i - K) and W = sum n_i exactly (summed
    per exponent). q~_i = s_i * total / W~ in float64 (or long double, where float64 would leave more than
    FAST_SPLIT_DOUBT_LIMIT rows in doubt) has relative error under 8 eps, so the floor is exact
    wherever [q~ - d, q~ + d] holds no integer. Remainders closer than 2 D (D the largest d) to the cut are ranked
    by their exact integer remainders (n_i * total) mod W, so the chosen set is exactly the definition's.
    """
    import numpy as np

    s = np.asarray(shares, dtype=np.float64)
    if s.ndim != 1 or not np.all(np.isfinite(s)) or np.any(s < 0) or not np.any(s > 0):
        return None
    if total == 0:
        return np.zeros(s.size, dtype=np.int64)
    # Temporaries are made in place where they can be: at a million shares each new array costs its page faults.
    frac, exp = np.frexp(s)
    frac *= 2.0**53
    mant = frac.astype(np.int64)  # exact: a float's significand has 53 bits
    del frac
    k = exp.astype(np.int64)
    k -= 53
    nonzero = mant > 0
    k_min = int(np.min(k, where=nonzero, initial=np.iinfo(np.int64).max))

    def scaled(i: int) -> int:
        return int(mant[i]) << int(k[i] - k_min) if mant[i] else 0

    # The exact sum, grouped by exponent: a significand's 27-bit high and 26-bit low halves, summed over fewer than
    # 2^26 shares, stay below 2^53, so float64 bins add them without rounding.
    if s.size >= 2**26:
        return None
    group = k - k_min
    group[~nonzero] = 0
    highs = np.bincount(group, weights=(mant >> 26).astype(np.float64))
    lows = np.bincount(group, weights=(mant & ((1 << 26) - 1)).astype(np.float64))
    weight = sum(((int(hi) << 26) + int(lo)) << g for g, (hi, lo) in enumerate(zip(highs, lows)) if hi or lo)

    # float64 first: exact for the usual quotas, with few doubtful rows; long double where float64 leaves too many.
    amounts = _split_at(np.float64, s, total, weight, k_min, scaled, FAST_SPLIT_DOUBT_LIMIT)
    if amounts is None:
        amounts = _split_at(np.longdouble, s, total, weight, k_min, scaled, None)
    if amounts is None:
        return None
    assert int(amounts.sum()) == total, "largest remainder must conserve the total"
    return amounts


FAST_SPLIT_DOUBT_LIMIT = 4096  # float64 rows left for exact integers (doubtful floors, the cut's band) before long double


def _split_at(ld, s, total: int, weight: int, k_min: int, scaled, limit: int | None):
    """`_split_vectorized`'s quotas, floors and cut in floating type `ld` (its eps in the error bound). None: not
    decided at this precision (out of range, or more than `limit` rows would need exact integers)."""
    import numpy as np

    eps = float(np.finfo(ld).eps)
    top_shift = max(weight.bit_length() - 63, 0)
    weight_ld = np.ldexp(ld(weight >> top_shift), top_shift + k_min)  # W * 2^K, relative error <= eps
    if not np.isfinite(weight_ld) or weight_ld <= 0:
        return None
    total_ld = ld(total >> 31) * ld(2**31) + ld(total & (2**31 - 1))
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        quota = s.astype(ld, copy=False) * total_ld
        quota /= weight_ld
    if not np.all(np.isfinite(quota)):
        return None
    slack = quota * (8 * eps)
    slack += 8 * eps  # |quota - exact quota| <= slack
    floors = np.floor(quota)
    part = np.subtract(quota, floors, out=quota)  # exact: the fraction's bits
    del quota
    doubtful = np.flatnonzero((part <= slack) | (part >= 1 - slack))  # an integer within the slack: exact floor
    if limit is not None and doubtful.size > limit:
        return None
    amounts = floors.astype(np.int64)
    remainder = part.astype(np.float64, copy=False)
    exact_rem: dict[int, int] = {}
    for i in doubtful.tolist():
        q, r = divmod(scaled(i) * total, weight)
        amounts[i] = q
        exact_rem[i] = r
        remainder[i] = r / weight
    leftover = total - int(amounts.sum())
    assert 0 <= leftover <= s.size, "the floors of the quotas leave fewer units than shares"
    if leftover:
        bound = 2 * float(slack.max()) + 2**-40  # D, plus the rounding of the remainders to float64
        cut = -np.partition(-remainder, leftover - 1)[leftover - 1]  # the leftover-th largest remainder
        surely_in = np.flatnonzero(remainder > cut + 2 * bound)
        band = np.flatnonzero(np.abs(remainder - cut) <= 2 * bound)
        assert surely_in.size <= leftover, "the vectorized split's error bound does not hold"
        if limit is not None and band.size > limit:
            return None

        def exact_remainder(i: int) -> int:
            if i not in exact_rem:
                exact_rem[i] = (scaled(i) * total) % weight
            return exact_rem[i]

        chosen = sorted(band.tolist(), key=lambda i: (-exact_remainder(i), i))[: leftover - surely_in.size]
        amounts[surely_in] += 1
        amounts[np.array(chosen, dtype=np.int64)] += 1
    return amounts
