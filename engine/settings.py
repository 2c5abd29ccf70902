"""Every named limit and parameter in one place; read when a command runs, never at import time."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from engine.errors import SettingsError
from ledger.money import UNITS_PER_TOKEN
from protocol.files import MAX_PAYLOAD_BYTES
from protocol.settings_rules import SettingRuleError, check_setting

HOME_ENV = "TRIBUTARY_HOME"
DEFAULT_HOME = Path("data")
SETTINGS_FILE = "settings.toml"


@dataclass(frozen=True)
class Settings:
    """Market parameters. A home may override any of them in `settings.toml` (same names, lower case); each field's
    type, range, unit and whether governance may change it are in protocol/settings_rules.py's SETTING_RULES."""

    epoch_seconds: int = 3600
    epoch_emission_units: int = 1_000 * UNITS_PER_TOKEN
    house_stake_units: int = 10_000 * UNITS_PER_TOKEN
    owner_cut: float = 0.18
    max_payload_bytes: int = MAX_PAYLOAD_BYTES
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
    # Open registration (issue 22; docs/PROTOCOL.md §6 `register`): "open" lets an unknown key register itself with a
    # signed register request carrying a proof of work of registration_pow_bits leading zero bits.
    registration: str = "operator"
    registration_pow_bits: int = 16
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
            _check_setting(path, key, value)
        if "beam_pipeline_args" in data:
            data["beam_pipeline_args"] = tuple(data["beam_pipeline_args"])
        return replace(defaults, **data)


def _check_setting(path: Path, key: str, value: object) -> None:
    """SettingsError naming the file, the key and the rule (protocol/settings_rules.py, the one rule table) when a
    value has the wrong type or lies out of range; a governed setting's range is the one a proposal is held to."""
    try:
        check_setting(key, value)
    except SettingRuleError as e:
        raise SettingsError(f"{path}: setting '{key}': {e}") from None


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
