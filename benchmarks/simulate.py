"""A simulated market at scale: 50 epochs, 200 contributor keys, 16 validators, through the production stages.

Prints the time per epoch and how it splits across stages (ingest of the data, ingest of the validators' weight
files, scoring, weights + consensus, settlement, the validators' own scoring, and the simulator's own work: planning,
writing, signing and dropping files), how an epoch's time grows as the lake grows, and the headline ratio: the share
of an epoch spent in the market's own stages (the rest is the simulator and the external validators).
Run from the repository root: `python benchmarks/simulate.py [--epochs N] [--contributors N] [--validators N]`;
`--quick` (as `make bench` passes it on) runs 5 epochs with 40 contributors and 8 validators.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simulation.market import STAGES, simulate  # noqa: E402
from simulation.scenario import parse_scenario  # noqa: E402

# Shares of the contributor keys by strategy (the rest are honest), and of the validators.
CONTRIBUTOR_MIX = (("noisy_labels", 0.10), ("exact_copier", 0.05), ("near_copier", 0.05), ("self_replayer", 0.05),
                   ("garbage", 0.05), ("late_copier", 0.025), ("backdated_copier", 0.025), ("jitter_copier", 0.025),
                   ("smote_copier", 0.025), ("self_augmenter", 0.025), ("same_epoch_copier", 0.025))
EPOCH_GROWTH_MAX = 1.2  # the last 5 epochs over epochs 2-6: an epoch costs what its new rows cost, not the lake
VALIDATOR_MIX = (("weight_copier", 3 / 16), ("lazy", 2 / 16), ("cartel", 3 / 16))  # the rest honest
ROWS = 20


def scenario_doc(contributors: int, validators: int, dataset: str) -> dict:
    groups, used = [], 0
    for strategy, share in CONTRIBUTOR_MIX:
        n = max(1, round(contributors * share))
        groups.append({"strategy": strategy, "count": n, **({"rows": ROWS} if "copier" not in strategy else {})})
        used += n
    groups.insert(0, {"strategy": "honest", "count": max(1, contributors - used), "rows": ROWS})
    vals, used = [], 0
    for strategy, share in VALIDATOR_MIX:
        n = max(1, round(validators * share))
        vals.append({"strategy": strategy, "count": n, "stake": 500 if strategy == "cartel" else 1000,
                     **({"favours": "garbage"} if strategy == "cartel" else {})})
        used += n
    vals.insert(0, {"strategy": "honest", "count": max(1, validators - used), "stake": 1000})
    return {"data": {"dataset": dataset, "synthesize": True}, "market": {"commit_reveal": True},
            "contributors": groups, "validators": vals}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--contributors", type=int, default=None, help="contributor keys (default 200)")
    parser.add_argument("--validators", type=int, default=None, help="validators besides the house (default 16)")
    parser.add_argument("--dataset", default="breast_cancer")
    parser.add_argument("--quick", action="store_true", help="5 epochs, 40 contributors, 8 validators")
    parser.add_argument("--out", type=Path, default=None, help="keep the market and its report here")
    args, _unknown = parser.parse_known_args()  # run_all passes its own flags to every benchmark
    epochs = args.epochs or (5 if args.quick else 50)
    n_contributors = args.contributors or (40 if args.quick else 200)
    n_validators = args.validators or (8 if args.quick else 16)
    scenario = parse_scenario(scenario_doc(n_contributors, n_validators, args.dataset), "benchmarks/simulate.py")
    keys = sum(g.count for g in scenario.contributors)
    print(f"simulated market: {epochs} epochs, {keys} contributor keys, {sum(v.count for v in scenario.validators)} "
          f"validators + the house, {args.dataset}, {ROWS} rows a submission, commit-reveal on", flush=True)
    with tempfile.TemporaryDirectory(prefix="tributary-sim-bench-") as tmp:
        out = args.out or Path(tmp) / "out"
        def progress(msg: str) -> None:
            if msg.startswith("epoch "):
                print(f"  {msg}", flush=True)

        start = time.perf_counter()
        result = simulate(scenario, epochs=epochs, seed=0, out=out, progress=progress)
        wall = time.perf_counter() - start
    per_epoch = result.epoch_seconds
    total = sum(per_epoch)
    print(f"\nsetup {result.setup_seconds:.1f} s; {len(per_epoch)} epochs in {total:.1f} s: "
          f"{total / len(per_epoch):.2f} s per epoch on average ({result.submissions} dataset submissions, "
          f"{result.synthesized_rows:,} rows synthesized); whole run {wall:.1f} s")
    if len(per_epoch) >= 3:
        n = min(5, (len(per_epoch) - 1) // 2)
        head, tail = per_epoch[1:1 + n], per_epoch[-n:]
        growth = sum(tail) / sum(head)
        print(f"epoch time as the lake grows: epochs 2-{1 + n} {sum(head) / n:.2f} s, the last {n} "
              f"{sum(tail) / n:.2f} s (epoch 1, {per_epoch[0]:.2f} s, also pays for imports and Beam's warm-up): "
              f"x{growth:.2f}, goal <= {EPOCH_GROWTH_MAX}x: {'met' if growth <= EPOCH_GROWTH_MAX else 'MISSED'}")
    print(f"{'stage':22} {'s in all':>9} {'s / epoch':>10} {'share':>6}")
    for stage in STAGES:
        s = result.stage_seconds.get(stage, 0.0)
        print(f"{stage:22} {s:9.1f} {s / len(per_epoch):10.3f} {s / total:6.0%}")
    market = sum(result.stage_seconds[s] for s in STAGES if s not in ("validators", "driver"))
    print(f"market stages / epoch time: {market / total:.2f} (the rest: external validators' scoring "
          f"{result.stage_seconds['validators'] / total:.0%}, the simulator {result.stage_seconds['driver'] / total:.0%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
