"""Cost of the quality gate per submission: 200 submissions x 32 features x 5,000 rows, one GX validation.

Run: .venv/bin/python -m quality.bench [--submissions 200] [--features 32] [--rows 5000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pyarrow as pa

from quality.gate import gate
from quality.holdout import task_from_holdout
from quality.statistics import submission_stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--submissions", type=int, default=200)
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    rng = np.random.default_rng(0)

    def table(n: int) -> pa.Table:
        return pa.table({**{f"f{i}": rng.normal(size=n) for i in range(a.features)},
                         "label": rng.integers(0, 3, n)})

    task = task_from_holdout("bench", table(2000), "label", bounds={"*": (-100.0, 100.0)})
    subs = [table(a.rows) for _ in range(a.submissions)]
    start = time.perf_counter()
    stats = [submission_stats(s, task, f"s{i}") for i, s in enumerate(subs)]
    t_stats = (time.perf_counter() - start) / a.submissions
    stats[17]["f3__max"] = 500.0  # one planted failure, which GX must attribute to s17
    gate(stats[:2], task)  # import GX and make its context once, as a worker does
    times = []
    for _ in range(a.repeat):
        start = time.perf_counter()
        reports = gate(stats, task)
        times.append(time.perf_counter() - start)
    failed = sorted(k for k, r in reports.items() if not r.success)
    assert failed == ["s17"], failed
    print(f"{a.submissions} submissions x {a.features} features x {a.rows} rows: "
          f"stats {t_stats * 1e3:.2f} ms/submission; GX gate {min(times):.2f}-{max(times):.2f} s in all, "
          f"{min(times) / a.submissions * 1e3:.2f}-{max(times) / a.submissions * 1e3:.2f} ms/submission "
          f"(failure attributed to {failed[0]})")


if __name__ == "__main__":
    main()
