"""What each player does in an epoch. Contributors plan submissions; validators choose weights.

The simulator is omniscient: a copier sees other players' accepted files, a same-epoch copier the files they dropped
this epoch, a late copier who was paid most. Each player draws from its own NumPy stream
(`default_rng([seed, crc32(name)])`), so adding or removing another player never changes what this one does, and the
same scenario and seed give the same market.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from simulation import data as sd
from simulation.scenario import ContributorGroup, ValidatorGroup

if TYPE_CHECKING:
    from simulation.market import World

SECONDS_PER_DAY = 86_400


def player_rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])


@dataclass(frozen=True)
class Planned:
    """One submission a contributor key will drop: a table to write, or the exact bytes of an earlier file."""

    key: str
    table: pa.Table | None = None
    copy_of: Path | None = None  # re-send this file byte for byte (re-signed with `key`)
    backdate_seconds: int = 0  # set the dropped files' times this far in the past (os.utime)


@dataclass
class Contributor:
    group: ContributorGroup
    index: int  # 1-based within its group
    keys: list[str]
    rng: np.random.Generator
    own_rows: tuple[np.ndarray, np.ndarray] | None = None  # self_replayer: its epoch-1 rows
    sent_rows: int = field(default=0)

    @property
    def strategy(self) -> str:
        return self.group.strategy

    @property
    def plans_late(self) -> bool:
        """Plans after every other player has dropped this epoch's files (it copies one of them)."""
        return self.group.strategy == "same_epoch_copier"

    def plan(self, epoch: int, world: World) -> list[Planned]:
        g, ds, key = self.group, world.ds, self.keys[0]
        s = g.strategy
        if s == "honest":
            return [Planned(key, sd.to_table(ds, *world.source.take(g.rows, key)))]
        if s == "noisy_labels":
            x, y = world.source.take(g.rows, key)
            return [Planned(key, sd.to_table(ds, x, sd.flip_labels(ds, y, g.rate, self.rng)))]
        if s == "garbage":
            return [Planned(key, sd.to_table(ds, *sd.garbage(ds, g.rows, self.rng)))]
        if s == "sybil":  # one honest dataset, split over the group's keys
            x, y = world.source.take(g.rows, key)
            parts = np.array_split(np.arange(len(y)), len(self.keys))
            return [Planned(k, sd.to_table(ds, x[p], y[p])) for k, p in zip(self.keys, parts)]
        if s == "self_replayer":
            if self.own_rows is None:
                self.own_rows = world.source.take(g.rows, key)
                return [Planned(key, sd.to_table(ds, *self.own_rows))]
            x, y = self.own_rows
            return [Planned(key, sd.to_table(ds, sd.jitter(ds, x, g.jitter, self.rng), y))]
        if s == "self_augmenter":  # fresh rows, then `synthetic` rows made from each (other keys: split over them)
            x, y = world.source.take(g.rows, key)
            sx, sy = sd.augment(ds, x, y, g.synthetic, g.mode, g.jitter, self.rng)
            if len(self.keys) == 1:
                return [Planned(key, sd.to_table(ds, np.vstack([x, sx]), np.concatenate([y, sy])))]
            parts = np.array_split(np.arange(len(sy)), len(self.keys) - 1)
            return [Planned(key, sd.to_table(ds, x, y))] + [
                Planned(k, sd.to_table(ds, sx[p], sy[p])) for k, p in zip(self.keys[1:], parts)]
        if s == "same_epoch_copier":  # the target's file of this very epoch, from drop/, jittered
            files = world.dropped_files(world.member_key(g.target, self.index), epoch)
            if not files:
                return []
            x, y = sd.from_table(ds, pa.concat_tables([pq.read_table(f) for f in files]))
            return [Planned(key, sd.to_table(ds, sd.jitter(ds, x, g.jitter, self.rng), y))]
        if s in ("exact_copier", "backdated_copier", "near_copier", "jitter_copier", "smote_copier"):
            victim = world.member_key(g.target, self.index)
            files = world.accepted_files(victim, epoch - 1)
            if not files:
                return []
            if s in ("near_copier", "jitter_copier"):
                x, y = sd.from_table(ds, pa.concat_tables([pq.read_table(f) for f in files]))
                return [Planned(key, sd.to_table(ds, sd.jitter(ds, x, g.jitter, self.rng), y))]
            if s == "smote_copier":  # one same-class interpolation per target row
                x, y = sd.from_table(ds, pa.concat_tables([pq.read_table(f) for f in files]))
                return [Planned(key, sd.to_table(ds, *sd.smote(ds, x, y, 1, self.rng)))]
            back = g.days * SECONDS_PER_DAY if s == "backdated_copier" else 0
            return [Planned(key, copy_of=f, backdate_seconds=back) for f in files]
        if s == "late_copier":  # the rows of last epoch's best-paid contributor (not itself)
            top = world.top_earner(epoch - 1, exclude=set(self.keys))
            files = world.accepted_files(top, epoch - 1) if top else []
            if not files:
                return []
            x, y = sd.from_table(ds, pa.concat_tables([pq.read_table(f) for f in files]))
            return [Planned(key, sd.to_table(ds, sd.jitter(ds, x, g.jitter, self.rng), y))]
        raise AssertionError(f"unknown contributor strategy {s}")


@dataclass
class Validator:
    group: ValidatorGroup
    index: int
    key: str
    rng: np.random.Generator
    sample: pa.Table | None = None  # honest: its own labelled held-out rows

    @property
    def strategy(self) -> str:
        return self.group.strategy

    def weights(self, epoch: int, world: World) -> dict[str, float] | None:
        """Its weight vector for the epoch's data (contributor public key -> weight), or None to sit it out."""
        s = self.group.strategy
        if s == "honest":
            w = world.score_on_sample(epoch, self.sample)
        elif s == "weight_copier":  # the last public consensus (the ledger's last settled epoch)
            w = world.last_consensus(epoch)
        elif s == "lazy":
            w = {pub: 1.0 for pub in world.contributor_keys()}
        elif s == "cartel":
            w = {world.public_key(world.member_key(self.group.favours, 1)): 1.0}
        else:
            raise AssertionError(f"unknown validator strategy {s}")
        return w if w and any(v > 0 for v in w.values()) else None


def make_players(scenario, seed: int, holdout: tuple[np.ndarray, np.ndarray], ds: sd.Dataset):
    """The scenario's groups as players, with their key names; validators' samples drawn from the holdout."""
    contributors: list[Contributor] = []
    for g in scenario.contributors:
        for i in range(1, g.count + 1):
            name = f"{g.name}-{i}"
            split = g.strategy == "sybil" or (g.strategy == "self_augmenter" and g.keys > 1)
            keys = [f"{name}-k{j}" for j in range(1, g.keys + 1)] if split else [name]
            contributors.append(Contributor(g, i, keys, player_rng(seed, name)))
    validators: list[Validator] = []
    hx, hy = holdout
    for g in scenario.validators:
        for i in range(1, g.count + 1):
            name = f"{g.name}-{i}"
            v = Validator(g, i, name, player_rng(seed, name))
            if g.strategy == "honest":
                n = min(g.sample_rows or max(1, len(hy) // 2), len(hy))
                pick = np.sort(v.rng.choice(len(hy), size=n, replace=False))
                v.sample = sd.to_table(ds, hx[pick], hy[pick])
            validators.append(v)
    return contributors, validators
