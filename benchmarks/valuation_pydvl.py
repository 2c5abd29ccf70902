"""Time pyDVL's exact KNN-Shapley on arrays from an .npz; run inside the bench venv (pyDVL 0.10 pins numpy < 2).

    .venv/pydvl-bench/bin/python benchmarks/valuation_pydvl.py IN.npz OUT.npz --jobs 1 [--test-rows M]

IN holds x_train, y_train, x_test, y_test (and k). Only `KNNShapleyValuation.fit` is timed: building the pyDVL
datasets and the model is not. `--jobs 1` is pyDVL's default (no joblib context: one process); `--jobs N` runs the
fit inside `joblib.parallel_config(n_jobs=N)`, the way pyDVL's documentation says to parallelize it. (pyDVL 0.10
reads n_jobs straight from the active joblib config and divides the test set by it, so n_jobs=-1 would give a
negative batch size: pass the core count instead.) `--test-rows M` values against the first M test points only.
OUT gets `values` (one per training row, in row order) and `seconds`. Nothing here imports tributary.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inp")
    ap.add_argument("out")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--test-rows", type=int, default=0)
    args = ap.parse_args()
    warnings.simplefilter("ignore")  # pyDVL 0.10's own deprecation notices
    from joblib import parallel_config
    from pydvl.valuation import Dataset, KNNShapleyValuation
    from sklearn.neighbors import KNeighborsClassifier

    arrays = np.load(args.inp)
    x_test, y_test = arrays["x_test"], arrays["y_test"]
    if args.test_rows:
        x_test, y_test = x_test[: args.test_rows], y_test[: args.test_rows]
    train = Dataset(arrays["x_train"], arrays["y_train"])
    test = Dataset(x_test, y_test)
    model = KNeighborsClassifier(n_neighbors=int(arrays["k"]))
    valuation = KNNShapleyValuation(model, test, progress=False)
    jobs = os.cpu_count() if args.jobs < 1 else args.jobs
    start = time.perf_counter()
    if jobs == 1:
        valuation.fit(train)
    else:
        with parallel_config(n_jobs=jobs):
            valuation.fit(train)
    seconds = time.perf_counter() - start
    result = valuation.result
    values = np.zeros(len(train), dtype=np.float64)
    values[np.asarray(result.indices, dtype=np.int64)] = result.values
    np.savez(args.out, values=values, seconds=seconds, jobs=jobs, test_rows=len(y_test))


if __name__ == "__main__":
    main()
