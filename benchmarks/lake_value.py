"""The cost of paying once for what is new: valuing an epoch's new rows against the whole lake as it grows.

    .venv/bin/python benchmarks/lake_value.py [--sizes 100000,300000,1000000] [--new 10000] [--test 2000]

Each lake size runs in its own process (so peak RSS is that size's alone): `rewards.marginal.value_new_rows` on
`--new` fresh rows (a tenth of them jittered replays of lake rows) against a lake of N rows, 32 continuous features,
10 classes, a `--test`-row holdout. Beside it, in the same process, the baseline: the least work any exact
KNN-Shapley must do, one distance matrix product and one `numpy.sort` per test point over the pool. Printed per
size: time, peak RSS, the ratio to the baseline, and growth against N log N.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FEATURES, CLASSES = 32, 10


def make(n_lake: int, n_new: int, n_test: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (CLASSES, FEATURES))

    def draw(n):
        y = rng.integers(0, CLASSES, n)
        return centres[y] + rng.normal(0, 2, (n, FEATURES)), y

    lake, new, test = draw(n_lake), draw(n_new), draw(n_test)
    replays = n_new // 10
    new[0][:replays] = lake[0][:replays] + rng.normal(0, 1e-7, (replays, FEATURES))
    new[1][:replays] = lake[1][:replays]
    return lake, new, test


def baseline(pool: np.ndarray, test: np.ndarray) -> float:
    """Distances by one product per test chunk and a sort of each test point's row: exact order's floor."""
    start = time.perf_counter()
    sq = np.einsum("ij,ij->i", pool, pool)
    for lo in range(0, len(test), 16):
        t = test[lo:lo + 16]
        d = sq[None, :] - 2.0 * (t @ pool.T)
        d.sort(axis=1)
    return time.perf_counter() - start


def one_size(n_lake: int, n_new: int, n_test: int) -> dict:
    from rewards.duplicates import row_hashes
    from rewards.marginal import value_new_rows
    from rewards.scaling import fit_scaling

    lake, new, test = make(n_lake, n_new, n_test)
    h_lake, h_new = row_hashes(*lake), row_hashes(*new)
    start = time.perf_counter()
    got = value_new_rows(lake[0], lake[1], h_lake, new[0], new[1], h_new, *test)
    seconds = time.perf_counter() - start
    assert (got.duplicate_of[: n_new // 10] >= 0).all() and (got.duplicate_of[n_new // 10:] < 0).all()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    s = fit_scaling(test[0])
    base = baseline(s.apply(np.concatenate([lake[0], new[0]])), s.apply(test[0]))
    return {"n": n_lake, "seconds": seconds, "baseline": base, "rss": rss, "pool": got.pool_rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,300000,1000000")
    parser.add_argument("--new", type=int, default=10_000)
    parser.add_argument("--test", type=int, default=2_000)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: run one size, print JSON
    args, _ = parser.parse_known_args()
    if args.one:
        print(json.dumps(one_size(args.one, args.new, args.test)))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"lake value: {args.new} new rows (10% jittered replays) against lakes of {sizes} rows, {FEATURES} features, "
          f"{args.test}-row holdout; each size in its own process")
    rows = []
    for n in sizes:
        out = subprocess.run([sys.executable, __file__, "--one", str(n), "--new", str(args.new), "--test",
                              str(args.test)], capture_output=True, text=True, check=True, cwd=ROOT)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(r)
        n0 = rows[0]["n"] + args.new
        n1 = r["n"] + args.new
        nlogn = (n1 * math.log(n1)) / (n0 * math.log(n0))
        print(f"  lake {r['n']:>8}: {r['seconds']:7.2f} s, peak RSS {r['rss'] / 2**20:6.0f} MB, "
              f"{r['seconds'] / r['baseline']:.2f}x the sort baseline ({r['baseline']:.2f} s); "
              f"time x{r['seconds'] / rows[0]['seconds']:.2f} and RSS x{r['rss'] / rows[0]['rss']:.2f} "
              f"where N log N grows x{nlogn:.2f}", flush=True)


if __name__ == "__main__":
    main()
