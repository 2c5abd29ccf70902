"""Near-duplicate throughput: `near_duplicate_mask` on a batch of new rows against a lake of prior rows.

    .venv/bin/python benchmarks/duplicates.py [--rows 1000000] [--lake 1000000] [--features 32]

Honest rows are uniform on each feature's range (the scale); planted copies are lake rows or earlier rows of the same
batch with jitter of 1e-6 of the scale on every feature, half of them a key re-jittering its own row (flagged too:
whose row it was does not matter). Prints throughput in new rows per second, peak memory, and checks that exactly
the planted copies were flagged.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rewards.duplicates import DEFAULT_NEAR_TOL, near_duplicate_mask


def make_data(rows: int, lake: int, d: int, seed: int = 0):
    """Lake and batch arrays, owners, the scale, and which batch rows are planted copies."""
    rng = np.random.default_rng(seed)
    lo = rng.uniform(-100, 100, d)
    scale = rng.uniform(1, 50, d)
    x_lake = lo + rng.random((lake, d)) * scale
    o_lake = rng.integers(0, 50, lake)
    x_new = lo + rng.random((rows, d)) * scale
    o_new = rng.integers(100, 150, rows)  # new keys; none of them owns lake rows
    planted = np.zeros(rows, dtype=bool)
    jitter = 1e-6 * scale

    n_lake_copy = rows // 100  # 1%: copies of lake rows
    at = rng.choice(rows, size=n_lake_copy, replace=False)
    x_new[at] = x_lake[rng.integers(0, lake, n_lake_copy)] + rng.uniform(-1, 1, (n_lake_copy, d)) * jitter
    planted[at] = True

    # 0.5%: another key's copy of an earlier (honest) batch row; 0.5%: the same key re-jittering its own row.
    honest = np.flatnonzero(~planted)
    for cross in (True, False):
        k = rows // 200
        dst = rng.choice(honest[honest > rows // 4], size=k, replace=False)
        honest = np.setdiff1d(honest, dst)
        src = (dst * rng.uniform(0.1, 0.9, k)).astype(np.int64)
        keep = ~planted[src] & ~np.isin(src, dst)  # the original must itself be an honest, accepted row
        src, dst = src[keep], dst[keep]
        honest = np.setdiff1d(honest, src)  # an original stays as it is
        x_new[dst] = x_new[src] + rng.uniform(-1, 1, (dst.size, d)) * jitter
        o_new[dst] = o_new[src] + 1 if cross else o_new[src]
        planted[dst] = True
    return x_lake, o_lake, x_new, o_new, scale, planted


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--lake", type=int, default=1_000_000)
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--tol", type=float, default=DEFAULT_NEAR_TOL)
    args = ap.parse_args()
    x_lake, o_lake, x_new, o_new, scale, planted = make_data(args.rows, args.lake, args.features)
    start = time.perf_counter()
    mask = near_duplicate_mask(x_new, x_lake, scale, args.tol)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    wrong = int(np.count_nonzero(mask != planted))
    print(f"near duplicates {args.rows} x {args.features} vs a {args.lake}-row lake: {seconds:.2f} s, "
          f"{args.rows / seconds:,.0f} rows/s, flagged {int(mask.sum())} of {int(planted.sum())} planted, "
          f"{wrong} wrong, peak RSS {peak:.2f} GiB")
    if wrong:
        raise SystemExit("near_duplicate_mask disagrees with the planted copies")


if __name__ == "__main__":
    main()
