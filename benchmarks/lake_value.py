"""An epoch costs what its new rows cost: valuing 10k new rows against lakes of 100k, 1M and 10M rows.

    .venv/bin/python benchmarks/lake_value.py [--sizes 100000,1000000,10000000] [--new 10000] [--test 2000]

Each lake size runs in its own process (so peak RSS is that size's alone). The lake has 32 continuous features and
10 classes; the new rows are fresh draws, a tenth of them jittered replays of lake rows (near duplicates). Measured
per size, side by side in the same process:
- build: the lake's view made from nothing (LakeView.build: every test point's nearest lake rows, the hash and
  near-duplicate indexes), what every epoch paid before the state was kept, and what a rebuild costs;
- epoch: what an epoch pays now, with the view kept in the home: load it (memory-mapped) and value the new rows
  (rewards.marginal.value_new_rows: duplicates, originality, the lake-conditioned game);
- duplicates: of that, the exact and near-duplicate checks alone.
Goal: epoch <= 1 s at every size, and 100k -> 10M grows it by at most 1.3x. Peak RSS is printed per size; the view
holds the lake's features (8 d bytes a row, memory-mapped), ~48 bytes a row of indexes, and 16 K bytes per test point.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FEATURES, CLASSES = 32, 10
EPOCH_SECONDS_MAX = 1.0
GROWTH_MAX = 1.3


def make(n_lake: int, n_new: int, n_test: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (CLASSES, FEATURES))

    def draw(n):
        y = rng.integers(0, CLASSES, n)
        x = rng.normal(0, 2, (n, FEATURES))
        x += centres[y]
        return x, y

    lake, new, test = draw(n_lake), draw(n_new), draw(n_test)
    replays = n_new // 10
    new[0][:replays] = lake[0][:replays] + rng.normal(0, 1e-7, (replays, FEATURES))
    new[1][:replays] = lake[1][:replays]
    return lake, new, test


def _hashes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    from rewards.duplicates import row_hashes

    return np.concatenate([row_hashes(x[lo:lo + 1_000_000], y[lo:lo + 1_000_000])
                           for lo in range(0, len(y), 1_000_000)]) if len(y) else np.zeros(0, dtype=np.uint64)


def one_size(n_lake: int, n_new: int, n_test: int) -> dict:
    from rewards.lake_view import LakeView
    from rewards.marginal import value_new_rows

    lake, new, test = make(n_lake, n_new, n_test)
    h_lake, h_new = _hashes(*lake), _hashes(*new)
    start = time.perf_counter()
    view = LakeView.build(*lake, h_lake, *test)
    build = time.perf_counter() - start
    del lake
    folder = Path(tempfile.mkdtemp(prefix="lake-view-"))
    try:
        view.save(folder / "view")
        del view
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        start = time.perf_counter()
        kept = LakeView.load(folder / "view", mmap=True)
        got = value_new_rows(None, None, None, *new, h_new, *test, view=kept)
        epoch = time.perf_counter() - start
        start = time.perf_counter()
        in_lake = kept.lookup(h_new)
        near = kept.near_duplicates(new[0], in_lake < 0)
        dups = time.perf_counter() - start
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    replays = n_new // 10
    assert (got.duplicate_of[:replays] >= 0).all() and (got.duplicate_of[replays:] < 0).all()
    assert ((in_lake >= 0) | (near >= 0))[:replays].all()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"n": n_lake, "build": build, "epoch": epoch, "dups": dups, "rss": rss, "rss_before": rss_before,
            "judged": int(got.originality.judged.sum()), "gain": got.gain}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000,10000000")
    parser.add_argument("--new", type=int, default=10_000)
    parser.add_argument("--test", type=int, default=2_000)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: run one size, print JSON
    args, _ = parser.parse_known_args()
    if args.one:
        print(json.dumps(one_size(args.one, args.new, args.test)))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"lake value: {args.new} new rows (10% jittered replays) against lakes of {sizes} rows, {FEATURES} features, "
          f"{args.test}-row holdout; each size in its own process", flush=True)
    rows = []
    for n in sizes:
        out = subprocess.run([sys.executable, __file__, "--one", str(n), "--new", str(args.new), "--test",
                              str(args.test)], capture_output=True, text=True, check=True, cwd=ROOT)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(r)
        print(f"  lake {r['n']:>9}: epoch {r['epoch']:6.3f} s (duplicate check {r['dups']:.3f} s, {r['judged']} rows "
              f"tested) vs a build from the lake {r['build']:8.2f} s = {r['build'] / r['epoch']:7.1f}x; "
              f"epoch time x{r['epoch'] / rows[0]['epoch']:.2f} of the smallest lake; peak RSS "
              f"{r['rss'] / 2**20:6.0f} MB (build included)", flush=True)
    worst = max(r["epoch"] for r in rows)
    growth = rows[-1]["epoch"] / rows[0]["epoch"]
    print(f"  goal: epoch <= {EPOCH_SECONDS_MAX} s at every size ({'met' if worst <= EPOCH_SECONDS_MAX else 'MISSED'}: "
          f"worst {worst:.3f} s); growth {sizes[0]} -> {sizes[-1]} <= {GROWTH_MAX}x "
          f"({'met' if growth <= GROWTH_MAX else 'MISSED'}: x{growth:.2f})")


if __name__ == "__main__":
    main()
