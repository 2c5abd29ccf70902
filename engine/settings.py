"""Every named limit and parameter in one place; read when a command runs, never at import time."""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from ledger.money import UNITS_PER_TOKEN
from engine.errors import SettingsError

HOME_ENV = "TRIBUTARY_HOME"
DEFAULT_HOME = Path("data")
SETTINGS_FILE = "settings.toml"


@dataclass(frozen=True)
class Settings:
    """Market parameters. A home may override any of them in `settings.toml` (same names, lower case)."""

    epoch_seconds: int = 3600
    epoch_emission_units: int = 1_000 * UNITS_PER_TOKEN
    house_stake_units: int = 10_000 * UNITS_PER_TOKEN
    owner_cut: float = 0.18
    max_payload_bytes: int = 64 * 2**20
    incomplete_after_seconds: int = 3600  # a submission still missing a part this long after ingest first saw it
    knn_k: int = 5
    commit_reveal: bool = True  # validators commit a hash of their weights in one epoch, reveal them in the next
    reveal_epochs: int = 1  # how many epochs after its commit a commitment may still be revealed
    prediction_share: float = 0.5  # of a house weight, when both data and model contributions have value
    array_backend: str = "numpy"  # numpy | cupy | auto; rewards/backend.py resolves it
    beam_pipeline_args: tuple[str, ...] = ()
    # Yuma Consensus, with the chain's names and defaults (../shared/reference/yuma.md §3).
    kappa: float = 32767 / 65535
    bonds_penalty: float = 1.0
    bonds_moving_average: float = 0.9
    yuma_version: str = "yuma3"
    liquid_alpha_enabled: bool = False
    alpha_low: float = 0.7
    alpha_high: float = 0.9
    alpha_sigmoid_steepness: float = 10.0
    max_allowed_validators: int = 128  # validator permits: the top-k stakes at the epoch's start (house always)
    yuma_storage: str = "float64"  # "u16": weights and bonds pass through the chain's u16 storage, to compare
    sparse_bonds: bool = False  # Yuma 3 + liquid alpha: a zero weight resets its bond, as the chain's sparse path
    house_name: str = "house"
    # Staking, fees and governance (issue 10; README "Staking and governance").
    unstake_cooldown_epochs: int = 2  # unstaked tokens stay unbonding until this many more epochs have settled
    registration_fee_units: int = 0  # burned from a sponsor's liquid at registration, so sybil keys are not free
    governance_pass_share: float = 0.5  # a proposal passes when yes-stake exceeds this share of the active stake
    lock_wait_seconds: float = 300.0  # how long a writer waits for the home's epoch lock before naming its holder

    @classmethod
    def load(cls, home: Path) -> "Settings":
        """Defaults, overridden by the home's settings.toml when it exists; unknown keys are an error."""
        path = home / SETTINGS_FILE
        if not path.exists():
            return cls()
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise SettingsError(f"{path}: not a readable TOML file ({e})") from None
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SettingsError(f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        defaults = cls()
        for key, value in data.items():
            _check_setting(path, key, value, getattr(defaults, key))
        if "beam_pipeline_args" in data:
            data["beam_pipeline_args"] = tuple(data["beam_pipeline_args"])
        return replace(defaults, **data)


# Ranges beyond the type: (low, high) inclusive for numbers, a tuple of names for strings (filled lazily: rewards'
# own lists, so they are never restated here).
_FRACTIONS = ("owner_cut", "prediction_share", "kappa", "bonds_penalty", "bonds_moving_average", "alpha_low",
              "alpha_high", "governance_pass_share")
_AT_LEAST = {"epoch_seconds": 1, "epoch_emission_units": 0, "house_stake_units": 0, "max_payload_bytes": 1,
             "incomplete_after_seconds": 0, "knn_k": 1, "reveal_epochs": 1, "max_allowed_validators": 0,
             "unstake_cooldown_epochs": 0, "registration_fee_units": 0}


def _choices(key: str) -> tuple[str, ...]:
    if key == "array_backend":
        from rewards.backend import BACKENDS

        return BACKENDS
    if key in ("yuma_version", "yuma_storage"):
        from rewards.yuma_core import STORAGES, YUMA_VERSIONS

        return YUMA_VERSIONS if key == "yuma_version" else STORAGES
    return ()


def _check_setting(path: Path, key: str, value: object, default: object) -> None:
    """SettingsError naming the file, the key and the rule when a value has the wrong type or lies out of range."""

    def bad(rule: str) -> SettingsError:
        return SettingsError(f"{path}: setting '{key}': {rule}, got {value!r}")

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad("must be true or false")
    elif isinstance(default, int):
        if not isinstance(value, int) or isinstance(value, bool):
            raise bad("must be a whole number")
        if key in _AT_LEAST and value < _AT_LEAST[key]:
            raise bad(f"must be at least {_AT_LEAST[key]}")
    elif isinstance(default, float):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise bad("must be a finite number")
        if key in _FRACTIONS and not 0.0 <= value <= 1.0:
            raise bad("must lie in [0, 1]")
    elif isinstance(default, str):
        if not isinstance(value, str) or not value:
            raise bad("must be a non-empty string")
        allowed = _choices(key)
        if allowed and value not in allowed:
            raise bad(f"must be one of {', '.join(allowed)}")
    elif isinstance(default, tuple):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad("must be a list of strings")


def resolve_home(home: str | Path | None) -> Path:
    """--home, else $TRIBUTARY_HOME, else ./data; always absolute."""
    chosen = home or os.environ.get(HOME_ENV) or DEFAULT_HOME
    return Path(chosen).expanduser().resolve()


@dataclass(frozen=True)
class HomePaths:
    """The folders and files of a home (DESIGN 3: data/)."""

    root: Path
    drop: Path = field(init=False)
    lake: Path = field(init=False)
    quarantine: Path = field(init=False)
    archive: Path = field(init=False)
    keys: Path = field(init=False)
    tasks: Path = field(init=False)
    holdout: Path = field(init=False)
    challenges: Path = field(init=False)
    dagster: Path = field(init=False)
    staging: Path = field(init=False)  # ingest's working files (staged tables, result shards); emptied after each run
    docs: Path = field(init=False)  # Great Expectations Data Docs, per epoch
    ledger: Path = field(init=False)

    def __post_init__(self) -> None:
        for name in ("drop", "lake", "quarantine", "archive", "keys", "tasks", "holdout", "challenges", "dagster",
                     "staging", "docs"):
            object.__setattr__(self, name, self.root / name)
        object.__setattr__(self, "ledger", self.root / "ledger.duckdb")

    def folders(self) -> tuple[Path, ...]:
        return (self.drop, self.lake, self.quarantine, self.archive, self.keys, self.tasks, self.holdout,
                self.challenges, self.dagster, self.staging, self.docs)
