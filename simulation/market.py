"""The driver: a fresh home, the scenario's players, and N epochs through the production functions.

Each epoch, in this order (the order is part of the determinism):
1. every contributor plans its submissions (players in scenario order, same-epoch copiers last, as they copy what
   others dropped) and they are signed and dropped with `engine.actions.submit`, under names
   `EEEEE-SSSSS-<key>.parquet` that sort in the order they were dropped;
2. validators that committed last epoch reveal (`actions.reveal`; their files `<key>-reveal-E.json` sort after the
   data files, and validators go in name order);
3. ingest (`engine.epoch.ingest`, the Beam pipeline and the GX gate), then a check that ingest's arrival order is
   exactly the drop order (arrival goes by file ctime, then name: a mismatch would make runs differ);
4. validators weigh the epoch's data: honest ones through the market's own scoring function on their own held-out
   sample, and commit (`actions.commit`) or, with commit-reveal off, send plain weight files;
5. `engine.epoch.run_epoch(home, close=True)`: ingest the weight files, score, weights, Yuma Consensus, settle.

Keys are Ed25519 seeds derived from the seed and the key's name (written in the format `tributary keygen` writes),
so account ids, and with them every order the ledger keeps, are the same in every run of a scenario and seed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ledger.money import UNITS_PER_TOKEN, units_to_tokens
from simulation import data as sd
from simulation.data import SimulationError
from simulation.scenario import Scenario
from simulation.strategies import Planned, make_players

MARKER = ".tributary-simulation"
STAGES = ("ingest: data", "ingest: weights", "score", "weights+consensus", "settle", "validators", "driver")
# engine.epoch's stages (EPOCH_STAGES), by the figure they are summed under; the driver's own ingest of the data,
# before validators weigh it, is timed as "ingest: data".
_TIMED = {"ingest": "ingest: weights", "score": "score", "weights": "weights+consensus",
          "consensus": "weights+consensus", "settle": "settle", "view": "settle"}


@dataclass
class SimulationResult:
    scenario: Scenario
    epochs: int
    seed: int
    out: Path
    home: Path
    accounts: pa.Table  # one row per contributor key x epoch
    validators: pa.Table  # one row per validator x epoch (the house included)
    stage_seconds: dict[str, float]  # summed over epochs
    epoch_seconds: list[float]
    setup_seconds: float
    synthesized_rows: int
    submissions: int
    report: Path | None = None


@dataclass
class World:
    """What players may look at: the data, the ledger, and (the simulator being omniscient) every file sent."""

    home: object
    ds: sd.Dataset
    source: sd.RowSource
    task: str
    keys: dict[str, str]  # key name -> public key
    groups: dict[str, list[str]]  # contributor group -> its members' first key names
    contributor_pubs: list[str] = field(default_factory=list)  # every contributor key's public key, in player order
    sent: dict[tuple[str, int], list[Path]] = field(default_factory=dict)  # (key, epoch) -> files landed in the lake

    def public_key(self, key: str) -> str:
        return self.keys[key]

    def member_key(self, group: str, index: int) -> str:
        members = self.groups[group]
        return members[(index - 1) % len(members)]

    def accepted_files(self, key: str, epoch: int) -> list[Path]:
        return list(self.sent.get((key, epoch), []))

    def dropped_files(self, key: str, epoch: int) -> list[Path]:
        """`key`'s data files waiting in drop/ for `epoch`'s ingest (the driver's names: EEEEE-SSSSS-<key>.parquet)."""
        head, tail = f"{epoch:05d}-", f"-{key}.parquet"
        return sorted(p for p in self.home.paths.drop.iterdir()
                      if p.name.startswith(head) and p.name.endswith(tail) and p.name[len(head):-len(tail)].isdigit())

    def contributor_keys(self) -> list[str]:
        return list(self.contributor_pubs)

    def top_earner(self, epoch: int, exclude: set[str]) -> str | None:
        from ledger.db import open_ledger
        from ledger.epoch_report import paid_contributors

        with open_ledger(self.home.paths.ledger, read_only=True) as con:
            rows = paid_contributors(con, epoch)
        return next((name for name, _ in rows if name not in exclude), None)

    def last_consensus(self, epoch: int) -> dict[str, float]:
        """The consensus the ledger published for the last settled epoch before `epoch`, by public key."""
        from ledger.accounts import all_accounts
        from ledger.db import open_ledger
        from ledger.history import last_public_consensus

        with open_ledger(self.home.paths.ledger, read_only=True) as con:
            consensus = last_public_consensus(con, epoch)
            key_of = {a.account_id: a.public_key for a in all_accounts(con)}
        rows = sorted((key_of[a], c) for a, c in consensus.items() if key_of.get(a) is not None)
        return {pub: float(c) for pub, c in rows if c is not None and c > 0}

    def score_on_sample(self, epoch: int, sample: pa.Table) -> dict[str, float]:
        """What an honest validator sends: the market's own valuation, on its own held-out sample."""
        from engine.stages.scoring import weights_from_sample

        return weights_from_sample(self.home, epoch, sample)


class StageTimer:
    """Seconds spent in each stage: `stage(name)` times a block; `epoch_stage` is run_epoch's `on_stage` hook."""

    def __init__(self) -> None:
        self.seconds = {s: 0.0 for s in STAGES}

    def epoch_stage(self, stage: str) -> contextlib.AbstractContextManager[None]:
        return self.stage(_TIMED[stage])

    @contextlib.contextmanager
    def stage(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - start


def _derived_seed(seed: int, name: str) -> bytes:
    return hashlib.blake2b(f"tributary-simulate/{seed}/{name}".encode(), digest_size=32).digest()


def _write_key(keys_dir: Path, name: str, seed: int) -> None:
    """keys/NAME.key as `tributary keygen` writes it (hex Ed25519 seed, mode 0600), from a derived seed."""
    from engine import keys

    path = keys.key_path(keys_dir, name)
    keys_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(_derived_seed(seed, name).hex() + "\n")


def prepare_out(out: Path) -> Path:
    """A fresh output folder: refuses to wipe one that a simulation did not make."""
    out = out.resolve()
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists():
            raise SimulationError(f"{out} exists and was not made by `tributary simulate`; pass another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by `tributary simulate`; the next run with this --out replaces this folder\n")
    return out


def _setup_home(scenario: Scenario, out: Path, seed: int, ds: sd.Dataset, source: sd.RowSource):
    import tomli_w

    from quality.task_toml import load_task, write_task
    from engine import actions
    from engine.home import open_home

    root = out / "home"
    root.mkdir()
    market = dict(scenario.market)
    if market:
        (root / "settings.toml").write_text(tomli_w.dumps(market))
    _write_key(root / "keys", "house", seed)  # before open_home, which registers the house with this key
    home = open_home(root)
    work = out / "work"
    work.mkdir()
    hx, hy = source.holdout()
    pq.write_table(sd.to_table(ds, hx, hy), work / "holdout.parquet")
    bounds = {}
    if scenario.task.bounds_margin is not None:
        for i, f in enumerate(ds.features):
            lo, hi = float(ds.lo[i]), float(ds.hi[i])
            pad = (hi - lo) * scenario.task.bounds_margin if hi > lo else 1.0
            bounds[f] = (lo - pad, hi + pad)
    actions.task_init(home, scenario.task_name, work / "holdout.parquet", sd.LABEL, bounds=bounds)
    path = home.paths.tasks / f"{scenario.task_name}.toml"
    task = load_task(path)
    options = {"k": scenario.task.k, "scaling": scenario.task.scaling,
               "near_duplicate_tol": scenario.task.near_duplicate_tol, "min_rows": scenario.task.min_rows}
    write_task(dataclasses.replace(task, **{name: v for name, v in options.items() if v is not None}), path)
    return home, work


def simulate(scenario: Scenario, *, epochs: int | None = None, seed: int | None = None, out: Path,
             write_report: bool = True, progress: Callable[[str], None] | None = None) -> SimulationResult:
    """Run the scenario's market for `epochs` epochs into `out` (home/, work/, report.md, charts, Parquet)."""
    from ledger.db import open_ledger
    from engine import actions, keys
    from engine.epoch import run_epoch
    from engine.stages.ingest import ingest

    epochs = epochs if epochs is not None else scenario.epochs
    if epochs is None or epochs < 1:
        raise SimulationError(f"{scenario.file}: give the number of epochs (--epochs N, or epochs = N in the file)")
    seed = scenario.seed if seed is None else seed
    say = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    out = prepare_out(Path(out))
    ds = sd.load_dataset(scenario.dataset)
    source = sd.RowSource(ds, scenario.holdout_fraction, seed, synthesize=scenario.synthesize)
    home, work = _setup_home(scenario, out, seed, ds, source)
    contributors, validators = make_players(scenario, seed, source.holdout(), ds)

    pubs: dict[str, str] = {}
    for player in contributors:
        for key in player.keys:
            _write_key(home.paths.keys, key, seed)
            actions.register(home, key, "contributor")
            pubs[key] = keys.public_hex(keys.load(home.paths.keys, key))
    for v in sorted(validators, key=lambda v: v.key):
        _write_key(home.paths.keys, v.key, seed)
        actions.register(home, v.key, "validator")
        pubs[v.key] = keys.public_hex(keys.load(home.paths.keys, v.key))
        units = int(round(v.group.stake * UNITS_PER_TOKEN))
        actions.grant(home, v.key, units_to_tokens(units))
        actions.stake(home, v.key, units_to_tokens(units))
    groups: dict[str, list[str]] = {}
    for player in contributors:
        groups.setdefault(player.group.name, []).append(player.keys[0])
    world = World(home, ds, source, scenario.task_name, pubs, groups,
                  contributor_pubs=[pubs[k] for p in contributors for k in p.keys])
    setup_seconds = time.perf_counter() - t0
    say(f"home {home.root}: {sum(len(p.keys) for p in contributors)} contributor keys, {len(validators)} validators, "
        f"task {scenario.task_name} ({ds.name}, {len(source.holdout_index)} holdout rows)")

    timer = StageTimer()
    sent_rows: dict[tuple[str, int], int] = {}
    committed: set[str] = set()
    epoch_seconds: list[float] = []
    submissions = 0
    files = work / "files"
    files.mkdir()
    for step in range(1, epochs + 1):
        start = time.perf_counter()
        with open_ledger(home.paths.ledger, read_only=True) as con:
            from ledger.epochs import current_epoch
            epoch = current_epoch(con)
        dropped: list[str] = []
        landed: dict[str, tuple[str, Path]] = {}  # drop name -> (key, our copy)
        seq = 0
        for player in sorted(contributors, key=lambda p: p.plans_late):  # stable: scenario order otherwise
            for planned in player.plan(epoch, world):
                seq += 1
                name = f"{epoch:05d}-{seq:05d}-{planned.key}.parquet"
                path = _drop(home, files, name, planned, task=scenario.task_name)
                dropped += [name, name + ".manifest.json"]
                landed[name] = (planned.key, path)
                sent_rows[(planned.key, epoch)] = sent_rows.get((planned.key, epoch), 0) + _rows_of(planned, path)
        submissions += seq
        for v in sorted(validators, key=lambda v: v.key):
            if v.key in committed:
                actions.reveal(home, key=v.key)
                dropped.append(f"{v.key}-reveal-{epoch - 1}.json")
                dropped.append(f"{v.key}-reveal-{epoch - 1}.json.manifest.json")
        committed = set()
        with timer.stage("ingest: data"):
            ingest(home)
        _check_arrival_order(home, epoch, dropped)
        _record_landed(home, epoch, landed, world)
        with timer.stage("validators"):
            for v in sorted(validators, key=lambda v: v.key):
                weights = v.weights(epoch, world)
                if weights is None:
                    continue
                if home.settings.commit_reveal:
                    actions.commit(home, weights, key=v.key)
                    committed.add(v.key)
                else:
                    path = files / f"{v.key}-weights-{epoch}.json"
                    path.write_text(json.dumps({"epoch": epoch, "weights": weights}, sort_keys=True))
                    actions.submit(home, path, key=v.key, task=None, kind="weights")
        run_epoch(home, close=True, on_stage=timer.epoch_stage)
        epoch_seconds.append(time.perf_counter() - start)
        say(f"epoch {epoch}: {seq} submissions, {epoch_seconds[-1]:.2f} s")
    timed = sum(timer.seconds[s] for s in STAGES if s != "driver")
    timer.seconds["driver"] = sum(epoch_seconds) - timed

    from simulation.report import collect_figures, write_outputs

    accounts, vals = collect_figures(home, contributors, validators, sent_rows, epochs_run=len(epoch_seconds))
    result = SimulationResult(scenario, epochs, seed, out, home.root, accounts, vals, dict(timer.seconds),
                              epoch_seconds, setup_seconds, source.synthesized, submissions)
    if write_report:
        result.report = write_outputs(result)
    return result


def _rows_of(planned: Planned, path: Path) -> int:
    return planned.table.num_rows if planned.table is not None else pq.read_metadata(path).num_rows


def _drop(home, files: Path, name: str, planned: Planned, *, task: str) -> Path:
    """Write our copy of the payload, sign it and drop it (backdated copiers then age the files' times)."""
    from engine import actions

    path = files / name
    if planned.copy_of is not None:
        shutil.copyfile(planned.copy_of, path)
    else:
        pq.write_table(planned.table, path)
    if planned.backdate_seconds:
        old = time.time() - planned.backdate_seconds
        os.utime(path, (old, old))
    manifest, _ = actions.submit(home, path, key=planned.key, task=task)
    if planned.backdate_seconds:  # an old file time on what lands in drop/: ingest must not believe it
        for p in (home.paths.drop / name, manifest):
            os.utime(p, (old, old))
    return path


def _check_arrival_order(home, epoch: int, dropped: list[str]) -> None:
    """Ingest numbers names by ctime, then name: it must have seen this epoch's files in exactly the drop order."""
    from ledger.arrivals import names_in_order
    from ledger.db import open_ledger

    with open_ledger(home.paths.ledger, read_only=True) as con:
        seen = names_in_order(con, epoch)
    if seen != dropped:
        first = next((i for i, (a, b) in enumerate(zip(seen, dropped)) if a != b), min(len(seen), len(dropped)))
        raise SimulationError(
            f"epoch {epoch}: ingest's arrival order differs from the drop order at position {first} "
            f"(ingest: {seen[first:first + 2]}, dropped: {dropped[first:first + 2]}); runs would not be reproducible")


def _record_landed(home, epoch: int, landed: dict[str, tuple[str, Path]], world: World) -> None:
    """Which of this epoch's files ingest accepted into the lake (copiers copy only those)."""
    from ledger.contributions import dataset_statuses
    from ledger.db import open_ledger

    with open_ledger(home.paths.ledger, read_only=True) as con:
        rows = dataset_statuses(con, epoch)
    for file, status in rows:
        if file in landed and status != "quarantined":
            key, path = landed[file]
            world.sent.setdefault((key, epoch), []).append(path)


def tokens(units: int | float) -> float:
    return float(units) / UNITS_PER_TOKEN


def per_row(amount_units: float, rows: float) -> float:
    return tokens(amount_units) / rows if rows else 0.0

