"""Exact KNN-Shapley: ours against pyDVL 0.10's `KNNShapleyValuation`, and how ours grows with the pool.

    .venv/bin/python benchmarks/valuation.py [--full] [--pydvl-test-rows 500] [--no-scaling]

pyDVL 0.10 pins numpy < 2, so it runs in its own venv, `.venv/pydvl-bench` (created on first use with python3.11, pyDVL
0.10.0 and scikit-learn), through `benchmarks/valuation_pydvl.py`, which times only pyDVL's `fit`. The same seeded
arrays (float64, 10 classes, 32 features, k = 5) go to both sides through .npz files in `.bench/`. pyDVL runs once
in a single process (its default) and once under joblib with every core (`parallel_config(n_jobs=<cores>)`).

pyDVL's recursion is ours (s[i] = s[i+1] + (m_i - m_{i+1}) / max(k, i), 1/max(k, i) = min(k, i) / (k i)); the
conventions differ in two places, neither of which these arrays touch: for a pool smaller than k pyDVL starts the
farthest row at m/N where we use m/k (ours keeps efficiency; the difference is m_far (1/k - 1/N) for every row of
that test point), and distance ties are broken by sklearn's unstable sort there, by the lower index here
(continuous random features have no ties). So values are compared directly.

At 20000 x 2000 pyDVL takes minutes per run on a small machine, so by default it values against the first
`--pydvl-test-rows` test points and its time is scaled to the full test set (its cost is linear in test points);
values are compared on that subset. `--full` runs pyDVL on every test point.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rewards.valuation import knn_shapley

BENCH_VENV = ROOT / ".venv" / "pydvl-bench"  # inside .venv: ignored, and removed with it
WORK = ROOT / ".bench"
HELPER = Path(__file__).resolve().with_name("valuation_pydvl.py")
SIZES = [(5000, 500), (20000, 2000)]
FEATURES, CLASSES, K = 32, 10, 5


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def ensure_bench_venv() -> Path:
    """The bench venv's python, creating the venv (python3.11, pydvl==0.10.0, scikit-learn) on first use."""
    python = BENCH_VENV / "bin" / "python"
    probe = [str(python), "-c", "import pydvl, sklearn; assert pydvl.__version__ == '0.10.0'"]
    if python.exists() and subprocess.run(probe, capture_output=True, check=False).returncode == 0:
        return python
    base = shutil.which("python3.11") or sys.executable
    print(f"creating {BENCH_VENV.name} with {base} (pydvl==0.10.0, scikit-learn; first use only)", flush=True)
    steps = [[base, "-m", "venv", "--clear", str(BENCH_VENV)],
             [str(python), "-m", "pip", "install", "-q", "pydvl==0.10.0", "scikit-learn"]]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, check=False)
        if done.returncode:
            sys.exit(f"{' '.join(step)} failed:\n{done.stdout}\n{done.stderr}")
    return python


def make_arrays(n: int, t: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded 10-class data: class means plus unit noise (continuous, so no distance ties)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=1.5, size=(CLASSES, FEATURES))
    y_train, y_test = rng.integers(0, CLASSES, n), rng.integers(0, CLASSES, t)
    return {"x_train": means[y_train] + rng.normal(size=(n, FEATURES)), "y_train": y_train,
            "x_test": means[y_test] + rng.normal(size=(t, FEATURES)), "y_test": y_test, "k": np.int64(K)}


def time_ours(a: dict[str, np.ndarray], repeats: int, **kwargs) -> tuple[float, np.ndarray]:
    """Best wall time of `repeats` runs of knn_shapley, and its values."""
    best, values = math.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        values = knn_shapley(a["x_train"], a["y_train"], a["x_test"], a["y_test"], k=K, **kwargs)
        best = min(best, time.perf_counter() - start)
    return best, values


def run_pydvl(python: Path, npz: Path, jobs: int, test_rows: int) -> tuple[float, np.ndarray]:
    out = npz.with_name(f"{npz.stem}-pydvl-{jobs}.npz")
    cmd = [str(python), str(HELPER), str(npz), str(out), "--jobs", str(jobs), "--test-rows", str(test_rows)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"pyDVL run failed:\n{done.stdout}\n{done.stderr}")
    result = np.load(out)
    return float(result["seconds"]), result["values"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="run pyDVL on every test point at every size")
    ap.add_argument("--pydvl-test-rows", type=int, default=500,
                    help="test points pyDVL values at 20000 x 2000 (time scaled to all 2000)")
    ap.add_argument("--no-scaling", action="store_true", help="skip the 20k..200k training-row growth table")
    args = ap.parse_args()
    WORK.mkdir(exist_ok=True)
    python = ensure_bench_venv()
    n_cores = cores()
    print(f"machine: {n_cores} cores; ours: NumPy {np.__version__}, best of 3, every core; "
          f"pyDVL 0.10.0 in {BENCH_VENV.name}, one run each", flush=True)
    for n, t in SIZES:
        size = f"{n}x{t}x{FEATURES}"
        arrays = make_arrays(n, t)
        npz = WORK / f"valuation-{size}.npz"
        np.savez(npz, **arrays)
        ours, values = time_ours(arrays, 3)
        ours_1, _ = time_ours(arrays, 3, workers=1)
        sub = t if args.full or n <= 5000 else min(t, args.pydvl_test_rows)
        if sub < t:  # compare values on the same test subset pyDVL sees
            part = dict(arrays, x_test=arrays["x_test"][:sub], y_test=arrays["y_test"][:sub])
            _, compare = time_ours(part, 1)
        else:
            compare = values
        print(f"  ours {size}: {ours:.3f} s on {n_cores} threads, {ours_1:.3f} s on 1 "
              f"({ours / (n * t) * 1e9:.1f} ns per train x test pair)", flush=True)
        for jobs, label in ((1, "single process"), (n_cores, f"joblib n_jobs={n_cores}")):
            seconds, theirs = run_pydvl(python, npz, jobs, sub)
            scaled = seconds * t / sub
            note = f" (timed on {sub} of {t} test points, scaled x{t / sub:g})" if sub < t else ""
            diff = float(np.abs(theirs - compare).max())
            print(f"valuation {size} [pyDVL {label}]: ours {ours:.3f} s, pyDVL {scaled:.2f} s, "
                  f"ratio {scaled / ours:.1f} x, max|diff| {diff:.1e}{note}", flush=True)
    if not args.no_scaling:
        growth()


def growth() -> None:
    """Time per test point as the pool grows 20k -> 200k rows (fixed 200 test points), against N log N."""
    t = 200
    print(f"growth with the training pool ({t} test points, every core):")
    base = None
    for n in (20_000, 50_000, 100_000, 200_000):
        a = make_arrays(n, t, seed=1)
        seconds, _ = time_ours(a, 2)
        per_point = seconds / t
        nlogn = n * math.log2(n)
        base = base or (per_point, nlogn)
        print(f"  N={n:>7}: {seconds:.3f} s, {per_point * 1e3:.2f} ms per test point, x{per_point / base[0]:.2f} "
              f"time vs x{nlogn / base[1]:.2f} N log N", flush=True)


if __name__ == "__main__":
    main()
