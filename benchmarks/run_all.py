"""`make bench`: run each headline benchmark in its own process and print its figures."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# One script per headline figure; helpers they run in other venvs (e.g. *_pydvl.py) are not listed.
BENCHMARKS = ("consensus.py", "valuation.py", "lake_value.py", "duplicates.py", "submit.py", "ingest.py", "simulate.py",
              "ledger_scale.py")


def main() -> int:
    failed = []
    for name in BENCHMARKS:
        script = HERE / name
        if not script.exists():
            continue
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        code = subprocess.call([sys.executable, str(script), *sys.argv[1:]], cwd=HERE.parent)
        print(f"== {name}: exit {code} in {time.perf_counter() - start:.1f} s\n", flush=True)
        if code:
            failed.append(name)
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
