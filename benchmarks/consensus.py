"""Yuma Consensus speed: one steady-state Yuma 3 epoch with liquid alpha, against one sort of W.

The lower bound for an epoch is one sort of the V x M weights along the validator axis (the stake-weighted median
needs it), so each figure is epoch time / `numpy.sort(W, axis=0)` time on the same matrix, measured side by side in
this run, best of several interleaved repeats. Steady state: bonds carried over a few epochs whose weights
fluctuate, so that pairs both buy and sell bonds. Run from the repository root: `python benchmarks/consensus.py`.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rewards.consensus import EpochState, YumaParams, chain_epoch, yuma_epoch  # noqa: E402

PARAMS = YumaParams(yuma_version="yuma3", liquid_alpha_enabled=True)  # chain defaults otherwise
TARGET = 3.0  # epoch / sort


def market(n_val: int, n_min: int, seed: int = 0) -> tuple[np.ndarray, Callable[[], np.ndarray]]:
    """Lognormal stake, and a generator of each epoch's weights: a fixed 70%-non-zero uniform matrix, jittered."""
    rng = np.random.default_rng(seed)
    w = rng.random((n_val, n_min))
    w *= rng.random((n_val, n_min)) < 0.7
    stake = rng.lognormal(mean=0.0, sigma=2.0, size=n_val)

    def jittered() -> np.ndarray:
        out = rng.random((n_val, n_min))
        out *= 0.4
        out += 0.8
        out *= w
        return out

    return stake, jittered


def steady_state(n_val: int, n_min: int, warmup: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weights, stake and bonds after `warmup` epochs of jittered weights."""
    stake, jittered = market(n_val, n_min)
    bonds = None
    for _ in range(warmup):
        bonds = yuma_epoch(jittered(), stake, bonds, PARAMS).bonds
    return jittered(), stake, bonds


def best_of(repeats: int, runs: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Best wall time (s) of each callable over `repeats` interleaved rounds."""
    best = {name: math.inf for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def measure(n_val: int, n_min: int, repeats: int, warmup: int, with_chain: bool) -> dict[str, float]:
    """Best times of the sort, yuma_epoch and (optionally) chain_epoch on one steady-state market."""
    w, stake, bonds = steady_state(n_val, n_min, warmup)
    runs: dict[str, Callable[[], object]] = {
        "sort": lambda: np.sort(w, axis=0),
        "yuma_epoch": lambda: yuma_epoch(w, stake, bonds, PARAMS),
    }
    if with_chain:
        state = EpochState(weights=w, stake=stake, last_update=np.full(n_val, 10), registered_at=np.zeros(n_min),
                           epoch=10, bonds=bonds)
        params = YumaParams(**{**PARAMS.__dict__, "max_allowed_validators": n_val})
        runs["chain_epoch"] = lambda: chain_epoch(state, params)
    return best_of(repeats, runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="interleaved rounds at 256 x 4096 (default 20)")
    parser.add_argument("--large-repeats", type=int, default=3, help="rounds at 1024 x 16384 (default 3)")
    args, _ = parser.parse_known_args(argv)

    print(f"Yuma 3 + liquid alpha, steady state; numpy {np.__version__}; best of interleaved repeats")
    small = measure(256, 4096, args.repeats, warmup=4, with_chain=True)
    print(f"256 x 4096:    sort(W, axis=0) {small['sort'] * 1e3:8.1f} ms")
    for name in ("yuma_epoch", "chain_epoch"):
        ratio = small[name] / small["sort"]
        print(f"               {name:<15} {small[name] * 1e3:8.1f} ms   epoch/sort = {ratio:.2f} "
              f"(target <= {TARGET:g})")
    large = measure(1024, 16384, args.large_repeats, warmup=2, with_chain=False)
    print(f"1024 x 16384:  sort(W, axis=0) {large['sort'] * 1e3:8.1f} ms")
    ratio = large["yuma_epoch"] / large["sort"]
    print(f"               {'yuma_epoch':<15} {large['yuma_epoch'] * 1e3:8.1f} ms   epoch/sort = {ratio:.2f}")
    work = (1024 * 16384 * math.log2(1024)) / (256 * 4096 * math.log2(256))
    grow_epoch = large["yuma_epoch"] / small["yuma_epoch"]
    grow_sort = large["sort"] / small["sort"]
    print(f"growth 256 x 4096 -> 1024 x 16384: epoch x{grow_epoch:.1f}, sort x{grow_sort:.1f}, "
          f"V*M*log2(V) x{work:.1f} (epoch time per V*M*log2 V: x{grow_epoch / work:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
