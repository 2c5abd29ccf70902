"""An epoch costs what its new rows cost: valuing 10k new rows against lakes of 100k, 1M and 10M rows.

    .venv/bin/python benchmarks/lake_value.py [--sizes 100000,1000000,10000000] [--new 10000] [--test 2000]

Each lake size runs in its own process (so peak RSS is that size's alone). The lake has 32 continuous features and
10 classes; the new rows are fresh draws, a tenth of them jittered replays of lake rows (near duplicates). Measured
per size, side by side in the same process:
- build (a process of its own): the lake's view made from nothing (LakeView.build: every test point's nearest lake
  rows, the hash and near-duplicate indexes), what every epoch paid before the state was kept, and what a rebuild
  after a holdout change costs;
- epoch (another process): what an epoch pays now, with the view kept in the home: load it (memory-mapped) and value
  the new rows (rewards.marginal.value_new_rows: duplicates, originality, the lake-conditioned game), and of that
  the exact and near-duplicate checks alone.
Goal: epoch <= 1 s at every size, and 100k -> 10M grows it by at most 1.3x. The epoch's memory: the new rows' work
(a few T x new-row arrays) plus the pages of the memory-mapped view it touches; the view on disk holds the lake's
features (8 d bytes a row), ~56 bytes a row of indexes, and 16 K bytes per test point.
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


_CHUNK = 100_000  # the lake is drawn in chunks of its own streams, so a process can redraw just the first one


def _centres(seed: int) -> np.ndarray:
    return np.random.default_rng([seed, 3]).normal(0, 3, (CLASSES, FEATURES))


def _draw(rng: np.random.Generator, n: int, centres: np.ndarray):
    y = rng.integers(0, CLASSES, n)
    x = rng.normal(0, 2, (n, FEATURES))
    x += centres[y]
    return x, y


def make_lake(n_lake: int, seed: int = 0):
    centres = _centres(seed)
    parts = [_draw(np.random.default_rng([seed, 0, lo // _CHUNK]), min(_CHUNK, n_lake - lo), centres)
             for lo in range(0, n_lake, _CHUNK)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def make_new(n_lake: int, n_new: int, n_test: int, seed: int = 0):
    """The epoch's rows (a tenth of them near-duplicate replays of the lake's first rows) and the holdout."""
    centres = _centres(seed)
    new = _draw(np.random.default_rng([seed, 1]), n_new, centres)
    test = _draw(np.random.default_rng([seed, 2]), n_test, centres)
    replays = min(n_new // 10, n_lake)
    first = _draw(np.random.default_rng([seed, 0, 0]), min(_CHUNK, n_lake), centres)
    new[0][:replays] = first[0][:replays] + np.random.default_rng([seed, 4]).normal(0, 1e-7, (replays, FEATURES))
    new[1][:replays] = first[1][:replays]
    return new, test


def _hashes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    from rewards.duplicates import row_hashes

    return np.concatenate([row_hashes(x[lo:lo + _CHUNK], y[lo:lo + _CHUNK])
                           for lo in range(0, len(y), _CHUNK)]) if len(y) else np.zeros(0, dtype=np.uint64)


def build_phase(n_lake: int, n_new: int, n_test: int, folder: Path) -> dict:
    """The lake's view made from nothing and saved: what a rebuild costs (and every epoch paid before)."""
    from rewards.lake_view import LakeView

    lake = make_lake(n_lake)
    _, test = make_new(n_lake, n_new, n_test)
    h = _hashes(*lake)
    start = time.perf_counter()
    view = LakeView.build(*lake, h, *test)
    build = time.perf_counter() - start
    view.save(folder)
    return {"build": build, "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def epoch_phase(n_lake: int, n_new: int, n_test: int, folder: Path) -> dict:
    """What an epoch pays with the view kept: load it (memory-mapped) and value the new rows; then the duplicate
    checks alone."""
    from rewards.lake_view import LakeView
    from rewards.marginal import value_new_rows

    new, test = make_new(n_lake, n_new, n_test)
    h_new = _hashes(*new)
    rss_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    kept = LakeView.load(folder, mmap=True)
    got = value_new_rows(None, None, None, *new, h_new, *test, view=kept)
    epoch = time.perf_counter() - start
    start = time.perf_counter()
    in_lake = kept.lookup(h_new)
    near = kept.near_duplicates(new[0], in_lake < 0)
    dups = time.perf_counter() - start
    replays = min(n_new // 10, n_lake)
    assert (got.duplicate_of[:replays] >= 0).all() and (got.duplicate_of[replays:] < 0).all()
    assert ((in_lake >= 0) | (near >= 0))[:replays].all()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"epoch": epoch, "dups": dups, "rss": rss, "rss_data": rss_data,
            "judged": int(got.originality.judged.sum()), "gain": got.gain}


def _phase(name: str, n: int, args, folder: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--phase", name, "--one", str(n), "--new", str(args.new),
                          "--test", str(args.test), "--folder", str(folder)],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000,10000000")
    parser.add_argument("--new", type=int, default=10_000)
    parser.add_argument("--test", type=int, default=2_000)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: one phase of one size, print JSON
    parser.add_argument("--phase", choices=("build", "epoch"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args()
    if args.one:
        run = build_phase if args.phase == "build" else epoch_phase
        print(json.dumps(run(args.one, args.new, args.test, args.folder)))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"lake value: {args.new} new rows (10% near-duplicate replays) against lakes of {sizes} rows, {FEATURES} "
          f"features, {args.test}-row holdout; each size's build and epoch in processes of their own", flush=True)
    rows = []
    for n in sizes:
        folder = Path(tempfile.mkdtemp(prefix="lake-view-"))
        try:
            b = _phase("build", n, args, folder / "view")
            e = _phase("epoch", n, args, folder / "view")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        r = {"n": n, **b, **{f"e_{k}": v for k, v in e.items()}}
        rows.append(r)
        print(f"  lake {n:>9}: epoch {r['e_epoch']:6.3f} s (duplicate check {r['e_dups']:.3f} s, {r['e_judged']} "
              f"rows tested), peak RSS {r['e_rss'] / 2**20:5.0f} MB ({r['e_rss_data'] / 2**20:.0f} MB before the "
              f"view: interpreter and the epoch's rows); a build from the lake {r['build']:7.2f} s, "
              f"{r['rss'] / 2**20:6.0f} MB = {r['build'] / r['e_epoch']:6.1f}x the epoch", flush=True)
    worst = max(r["e_epoch"] for r in rows)
    growth = rows[-1]["e_epoch"] / rows[0]["e_epoch"]
    print(f"  goal: epoch <= {EPOCH_SECONDS_MAX} s at every size ({'met' if worst <= EPOCH_SECONDS_MAX else 'MISSED'}: "
          f"worst {worst:.3f} s); growth {sizes[0]} -> {sizes[-1]} <= {GROWTH_MAX}x "
          f"({'met' if growth <= GROWTH_MAX else 'MISSED'}: x{growth:.2f})")


if __name__ == "__main__":
    main()
