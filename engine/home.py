"""A Tributary home: its folders, its ledger, the house validator and the genesis epoch, made on first use."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from engine import keys
from engine.errors import TributaryError
from engine.settings import HomePaths, Settings, resolve_home

GENESIS_EPOCH = 0
# The home's Dagster instance: no telemetry, and one epoch writer at a time. Every epoch asset is in the
# `tributary_epoch` pool (one op at a time across runs) and the epoch jobs carry the `tributary/epoch_writer` tag
# (one such run at a time); the home's epoch lock stays the last word for the CLI and Dagster alike.
DAGSTER_YAML = """telemetry:
  enabled: false
concurrency:
  runs:
    tag_concurrency_limits:
      - key: tributary/epoch_writer
        limit: 1
  pools:
    default_limit: 1
"""
OLD_DAGSTER_YAMLS = ("telemetry:\n  enabled: false\n",)  # written by earlier versions: upgraded in place


@dataclass(frozen=True)
class Home:
    paths: HomePaths
    settings: Settings

    @property
    def root(self) -> Path:
        return self.paths.root

    def path_of(self, ref: str) -> Path:
        """A path named in a task file or the ledger: absolute, or relative to the home."""
        path = Path(ref)
        return path if path.is_absolute() else self.root / path


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def open_home(home: str | Path | None = None) -> Home:
    """Resolve the home and set it up if it is new (idempotent)."""
    paths = HomePaths(resolve_home(home))
    settings = Settings.load(paths.root)
    for folder in paths.folders():
        folder.mkdir(parents=True, exist_ok=True)
    dagster_yaml = paths.dagster / "dagster.yaml"
    if not dagster_yaml.exists() or dagster_yaml.read_text() in OLD_DAGSTER_YAMLS:
        dagster_yaml.write_text(DAGSTER_YAML)
    _ensure_genesis(paths, settings)
    return Home(paths, settings)


def existing_home(home: str | Path | None = None) -> Home:
    """An existing home, opened without touching its ledger: for commands that only read keys and write to drop/.

    Creates and migrates nothing (no DuckDB, no genesis); a home that was never set up is a TributaryError.
    """
    paths = HomePaths(resolve_home(home))
    missing = [p.name for p in (paths.ledger, paths.drop, paths.keys) if not p.exists()]
    if missing:
        raise TributaryError(
            f"{paths.root} is not a market home (no {', '.join(missing)}): check --home or $TRIBUTARY_HOME; "
            "an operator command such as `tributary register` or `tributary task init` sets up a new one"
        )
    return Home(paths, Settings.load(paths.root))


def _ensure_genesis(paths: HomePaths, settings: Settings) -> None:
    """Epoch 0: the house validator registered and staked; the hash chain starts here."""
    from ledger.db import open_ledger, transaction  # DuckDB only for commands that open the ledger
    from ledger.epochs import get_epoch, open_epoch

    with open_ledger(paths.ledger) as con:
        genesis_row = get_epoch(con, GENESIS_EPOCH)
        if genesis_row is not None and genesis_row.settled_at is not None:
            return
        from ledger import accounts, transfers  # only to set up a new home: settling imports numpy and Arrow
        from ledger.digest import digest
        from ledger.market import HOUSE_ACCOUNT_KEY, set_fact
        from ledger.settlement import Settlement, settle_epoch

        key_exists = keys.key_path(paths.keys, settings.house_name).exists()
        house_key = (keys.load if key_exists else keys.generate)(paths.keys, settings.house_name)
        now = utcnow()
        if genesis_row is None:  # one transaction: the epoch-0 row exists iff the house is registered and staked
            with transaction(con):
                accounts.ensure_system_accounts(con)
                open_epoch(con, GENESIS_EPOCH, now)
                house = accounts.register(con, keys.public_hex(house_key), settings.house_name, "validator", GENESIS_EPOCH)
                set_fact(con, HOUSE_ACCOUNT_KEY, house.account_id)
                if settings.house_stake_units:
                    transfers.grant(con, house.account_id, settings.house_stake_units, GENESIS_EPOCH, "house stake")
                    transfers.stake(con, house.account_id, settings.house_stake_units, GENESIS_EPOCH)
        genesis = {"house": keys.public_hex(house_key), "stake": settings.house_stake_units}
        settle_epoch(con, Settlement(epoch=GENESIS_EPOCH, inputs_digest=digest(genesis), emission=0), now=now,
                     sign=keys.signer(keys.operator_key(paths.keys)))
