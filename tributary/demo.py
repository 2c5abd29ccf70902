"""`tributary demo`: a whole market on scikit-learn's bundled digits, two epochs, honest and dishonest players.

The cast: five honest contributors with disjoint shards, a label flipper, a copycat who resubmits an honest
contributor's file, and a broken file; two external validators beside the house: an honest one who scores the
epoch's data on its own private sample, and a lazy one who spreads its weight evenly over everyone.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console

from ledger import accounts
from ledger.db import open_ledger
from ledger.queries import LEADERBOARD_SQL
from engine import actions
from engine.epoch import run_epoch
from engine.errors import TributaryError
from engine.home import Home, open_home
from tributary.report import print_epoch_run, print_market

DEMO_MARKER = ".tributary-demo"
DEMO_SEED = 7
TASK = "digits"
SHARD_ROWS = 80
HOLDOUT_FRACTION = 0.3
PIXEL_BOUNDS = (0.0, 16.0)  # the operator declares every pixel in 0..16 (what an 8x8 digit image can hold)
VALIDATOR_SAMPLE_ROWS = 100
VALIDATOR_STAKE_TOKENS = "4000"
FLIP_FRACTION = 0.8
VALIDATORS = ("val-honest", "val-lazy")
BROKEN_VALUE = 99.0  # far outside the digits' 0..16 pixel range


@dataclass(frozen=True)
class DemoData:
    holdout: pa.Table
    shards: list[pa.Table]  # honest, disjoint
    flipped: list[pa.Table]
    broken: pa.Table
    validator_sample: pa.Table


def make_data(seed: int = DEMO_SEED) -> DemoData:
    """Split load_digits (bundled with scikit-learn, nothing downloaded) into the demo's files."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(digits.target))
    x, y = digits.data[order].astype(np.float64), digits.target[order].astype(np.int64)

    def table(lo: int, hi: int, labels: np.ndarray | None = None) -> pa.Table:
        cols = {f"px_{i}": x[lo:hi, i] for i in range(x.shape[1])}
        cols["label"] = y[lo:hi] if labels is None else labels
        return pa.table(cols)

    n_holdout = int(len(y) * HOLDOUT_FRACTION)
    cursor = n_holdout
    holdout = table(0, n_holdout)
    validator_sample = table(cursor, cursor + VALIDATOR_SAMPLE_ROWS)
    cursor += VALIDATOR_SAMPLE_ROWS
    shards = []
    for _ in range(10):
        shards.append(table(cursor, cursor + SHARD_ROWS))
        cursor += SHARD_ROWS
    flipped = []
    for _ in range(2):
        labels = y[cursor:cursor + SHARD_ROWS].copy()
        flip = rng.random(SHARD_ROWS) < FLIP_FRACTION
        labels[flip] = (labels[flip] + rng.integers(1, 10, flip.sum())) % 10
        flipped.append(table(cursor, cursor + SHARD_ROWS, labels))
        cursor += SHARD_ROWS
    broken = table(cursor, cursor + 50)
    px = broken.column("px_10").to_numpy().copy()
    px[::10] = BROKEN_VALUE
    broken = broken.set_column(broken.schema.get_field_index("px_10"), "px_10", pa.array(px))
    return DemoData(holdout, shards, flipped, broken, validator_sample)


def fresh_home(root: Path) -> Home:
    """Start the demo home from scratch, refusing to wipe a home that the demo did not make."""
    root = root.resolve()
    if root.exists() and any(root.iterdir()):
        if not (root / DEMO_MARKER).exists():
            raise TributaryError(
                f"{root} holds a market that the demo did not make; run the demo with --home pointing elsewhere"
            )
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / DEMO_MARKER).write_text("made by `tributary demo`; the next demo run replaces this folder\n")
    return open_home(root)


def honest_validator_weights(home: Home, epoch: int, sample: pa.Table) -> dict[str, float]:
    """An independent validator: the market's own valuation of the epoch's new rows, on its private sample."""
    from engine.stages.scoring import weights_from_sample

    return weights_from_sample(home, epoch, sample)


def submit_validator_weights(home: Home, epoch: int, sample: pa.Table, *, reveal_only: bool = False) -> None:
    """The two external validators weigh in: plainly, or by commit and later reveal when commit-reveal is on."""
    if reveal_only:
        if home.settings.commit_reveal:
            for name in VALIDATORS:
                actions.reveal(home, key=name)
        return
    honest = honest_validator_weights(home, epoch, sample)
    with open_ledger(home.paths.ledger, read_only=True) as con:
        everyone = {a.public_key: 1.0 for a in accounts.all_accounts(con, "contributor")}
    for name, weights in (("val-honest", honest), ("val-lazy", everyone)):
        if home.settings.commit_reveal:
            actions.commit(home, weights, key=name)
        else:
            path = home.root / "demo-files" / f"{name}-weights-e{epoch}.json"
            path.write_text(json.dumps({"epoch": epoch, "weights": weights}, indent=1))
            actions.submit(home, path, key=name, task=None, kind="weights")


def _cli_command() -> str:
    """How to call the CLI from here: `tributary` when it is on PATH, else the venv's script."""
    import os
    import shutil
    import sys

    script = Path(sys.executable).with_name("tributary")
    if shutil.which("tributary") == str(script):
        return "tributary"
    return os.path.relpath(script) if script.is_relative_to(Path.cwd()) else str(script)


def run_demo(console: Console, root: Path, *, fresh: bool = True) -> Home:
    """Set up the demo market, run two epochs and print the outcome."""
    home = fresh_home(root) if fresh else open_home(root)
    work = home.root / "demo-files"
    work.mkdir(exist_ok=True)
    data = make_data()

    pq.write_table(data.holdout, work / "holdout.parquet")
    task = actions.task_init(home, TASK, work / "holdout.parquet", "label", bounds={"*": PIXEL_BOUNDS})
    console.print(f"[bold]task {TASK}[/]: {len(task.features)} pixel features, {len(task.label_domain)} classes, "
                  f"{data.holdout.num_rows} hidden holdout rows")

    contributors = [f"honest-{i}" for i in range(1, 6)] + ["flipper", "copycat", "broken"]
    validators = list(VALIDATORS)
    for name in contributors + validators:
        actions.keygen(home, name)
        actions.register(home, name, "contributor" if name in contributors else "validator")
    for name in validators:
        actions.grant(home, name, VALIDATOR_STAKE_TOKENS)
        actions.stake(home, name, VALIDATOR_STAKE_TOKENS)
    console.print(f"{len(contributors)} contributors and {len(validators)} validators registered; validators staked "
                  f"{VALIDATOR_STAKE_TOKENS} tokens each (counting from epoch 2)")

    def drop(name: str, table: pa.Table, file: str) -> None:
        path = work / file
        pq.write_table(table, path)
        actions.submit(home, path, key=name, task=TASK)

    # Epoch 1: a shard from each honest contributor, the first flipped shard, the broken file. After ingest, the validators look at
    # the epoch's data and commit to their weights (commit-reveal: they count next epoch, when revealed).
    for i in range(5):
        drop(f"honest-{i + 1}", data.shards[i], f"honest-{i + 1}-e1.parquet")
    drop("flipper", data.flipped[0], "flipper-e1.parquet")
    drop("broken", data.broken, "broken-e1.parquet")
    console.rule("epoch 1")
    epoch = run_epoch(home).ingest.epoch
    submit_validator_weights(home, epoch, data.validator_sample)
    print_epoch_run(console, home, run_epoch(home, close=True))

    # Epoch 2: the validators reveal; more honest data, a second flipped shard, and a copy of honest-1's file.
    submit_validator_weights(home, epoch + 1, data.validator_sample, reveal_only=True)
    for i in range(5):
        drop(f"honest-{i + 1}", data.shards[5 + i], f"honest-{i + 1}-e2.parquet")
    drop("flipper", data.flipped[1], "flipper-e2.parquet")
    drop("copycat", data.shards[0], "copycat-e2.parquet")
    console.rule("epoch 2")
    print_epoch_run(console, home, run_epoch(home, close=True))

    console.rule("the market after two epochs")
    print_market(console, home)
    console.print("\n[bold]Next, ask the ledger yourself[/] (read-only SQL; --format csv|json too):")
    cli = _cli_command()
    where = "" if home.root == Path("data").resolve() else f" --home {home.root}"
    for q in (
        "SELECT * FROM rewards WHERE epoch = 2 ORDER BY amount DESC",
        "SELECT * FROM balances ORDER BY liquid + staked DESC",
        "SELECT reason, detail FROM quarantine",
        "SELECT epoch, hash, prev_hash FROM epochs ORDER BY epoch",
        "SELECT epoch, name, copy_signal, validator_trust FROM validator_report",
    ):
        console.print(f'  {cli}{where} sql "{q}"', soft_wrap=True)
    console.print(f"  {cli}{where} audit        # recompute the hash chain and the money invariants", soft_wrap=True)
    console.print(f"\nThe leaderboard query:\n{LEADERBOARD_SQL}", soft_wrap=True)
    return home
