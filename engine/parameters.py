"""The governed settings in force at an epoch: settings.toml, overridden by the proposals passed before it.

Every stage that reads a governed setting (emission, owner cut, κ, bonds' moving average, prediction share, fees,
cooldown, the pass share, which tasks are open) reads it here, for the epoch it works on, so a passed proposal
applies from the epoch after its tally and never to the one being settled.
"""

from __future__ import annotations

import json
from dataclasses import replace

import duckdb

from ledger import governance
from ledger.db import open_ledger
from engine.home import Home
from engine.settings import Settings


def settings_at(home: Home, epoch: int, con: duckdb.DuckDBPyConnection | None = None) -> Settings:
    """home.settings with each governed setting replaced by the value a passed proposal put in force at `epoch`."""
    return _overridden(home.settings, _in_force(home, epoch, con))


def _overridden(settings: Settings, overrides: dict[str, tuple[str, int]]) -> Settings:
    fields = {k: json.loads(v) for k, (v, _) in overrides.items() if k in governance.GOVERNED}
    return replace(settings, **fields) if fields else settings


def closed_tasks(home: Home, epoch: int, tasks: list[str], con: duckdb.DuckDBPyConnection | None = None) -> frozenset[str]:
    """Tasks a passed `task.NAME.open = false` has closed at `epoch` (every task is open until then)."""
    overrides = _in_force(home, epoch, con)
    return frozenset(t for t in tasks if overrides.get(f"task.{t}.open", ("true", 0))[0] == "false")


def parameters_at(home: Home, epoch: int, tasks: list[str],
                  con: duckdb.DuckDBPyConnection | None = None) -> tuple[tuple[str, str, int | None], ...]:
    """(setting, JSON value, proposal id or None for settings.toml) of every governed setting in force at `epoch`:
    what the `parameters` view shows and settlement records."""
    overrides = _in_force(home, epoch, con)
    s = _overridden(home.settings, overrides)
    rows = [(name, json.dumps(getattr(s, name)), overrides.get(name, (None, None))[1]) for name in governance.GOVERNED]
    for t in sorted(tasks):
        value, pid = overrides.get(f"task.{t}.open", ("true", None))
        rows.append((f"task.{t}.open", value, pid))
    return tuple(rows)


def _in_force(home: Home, epoch: int, con: duckdb.DuckDBPyConnection | None) -> dict[str, tuple[str, int]]:
    if con is not None:
        return governance.in_force(con, epoch)
    with open_ledger(home.paths.ledger, read_only=True) as own:
        return governance.in_force(own, epoch)
