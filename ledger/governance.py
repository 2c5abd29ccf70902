"""Governance by stake: what may be voted on (each setting with its range), and the check a proposal must pass.

A proposal names a governed setting and a value; it is tallied when the epoch it landed in settles, with stakes
at that epoch's start, and a passed one is in force from the next epoch on (never the one being settled).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection
from dataclasses import dataclass

from ledger.errors import LedgerError
from ledger.money import UNITS_PER_TOKEN

MAX_EMISSION_UNITS = 1_000_000 * UNITS_PER_TOKEN  # per epoch: far above any sane emission, far below BIGINT
MAX_REGISTRATION_FEE_UNITS = 1_000_000 * UNITS_PER_TOKEN
MAX_COOLDOWN_EPOCHS = 1_000
TASK_OPEN = re.compile(r"task\.([A-Za-z0-9_.-]+)\.open")  # opening or closing a task: task.NAME.open = true|false


class GovernanceError(LedgerError):
    """A proposal or vote that breaks a rule; `reason` is the quarantine reason code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class Rule:
    """A governed setting: its type and inclusive range."""

    kind: str  # int | fraction | bool
    low: float = 0
    high: float = 1

    def describe(self) -> str:
        if self.kind == "bool":
            return "true or false"
        if self.kind == "int":
            return f"a whole number in [{int(self.low)}, {int(self.high)}]"
        return f"a number in [{self.low:g}, {self.high:g}]"


GOVERNED: dict[str, Rule] = {
    "epoch_emission_units": Rule("int", 0, MAX_EMISSION_UNITS),
    "kappa": Rule("fraction", 0.0, 1.0),
    "owner_cut": Rule("fraction", 0.0, 0.5),
    "bonds_moving_average": Rule("fraction", 0.0, 1.0),
    "prediction_share": Rule("fraction", 0.0, 1.0),
    "registration_fee_units": Rule("int", 0, MAX_REGISTRATION_FEE_UNITS),
    "unstake_cooldown_epochs": Rule("int", 0, MAX_COOLDOWN_EPOCHS),
    "governance_pass_share": Rule("fraction", 0.5, 1.0),  # never below a majority: a minority cannot rule
}


def governed_names(tasks: Collection[str] = ()) -> list[str]:
    """Every setting a proposal may name: the GOVERNED list, then task.NAME.open for each task."""
    return [*GOVERNED, *(f"task.{t}.open" for t in sorted(tasks))]


def rule_for(setting: str, tasks: Collection[str]) -> Rule:
    """The rule of a governed setting; GovernanceError (reason not_governed) naming the list otherwise."""
    if setting in GOVERNED:
        return GOVERNED[setting]
    m = TASK_OPEN.fullmatch(setting)
    if m and m.group(1) in tasks:
        return Rule("bool")
    raise GovernanceError("not_governed", f"setting {setting!r} cannot be voted on; governed settings: "
                                          f"{', '.join(governed_names(tasks))}")


def check_proposal(setting: str, value: str, tasks: Collection[str] = ()) -> str:
    """The proposed value as canonical JSON text, or GovernanceError (reason out_of_range) naming the rule."""
    rule = rule_for(setting, tasks)
    try:
        parsed = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        parsed = value
    bad = GovernanceError("out_of_range", f"setting {setting!r} must be {rule.describe()}, got {value!r}")
    if rule.kind == "bool":
        if not isinstance(parsed, bool):
            raise bad
        return json.dumps(parsed)
    if isinstance(parsed, bool) or not isinstance(parsed, (int, float)):
        raise bad
    if rule.kind == "int":
        if isinstance(parsed, float):
            if not parsed.is_integer():
                raise bad
            parsed = int(parsed)
    elif not math.isfinite(parsed):
        raise bad
    if not rule.low <= parsed <= rule.high:
        raise bad
    return json.dumps(int(parsed) if rule.kind == "int" else float(parsed))
