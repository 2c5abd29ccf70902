"""The one rule table of the market's settings: each setting's type, range, unit, and whether governance may vote on it.

Loading settings.toml (engine/settings.py), checking a governance proposal (ledger/governance.py) and reading a
simulation scenario's [market] table (simulation/scenario.py) all check values here, so a value no vote could set is
refused where it is first read. Defaults live in engine/settings.py's Settings; the table covers every field of it
(tests/engine/test_settings.py checks both ways). A governed setting's range is the only range it has: settings.toml may
set it anywhere a passed proposal could, and nowhere else.

A leaf module: the standard library only, never our packages (ledger/ imports it, and must not import engine/).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Named choice lists: rewards/backend.py and rewards/yuma_core.py import these (one place).
ARRAY_BACKENDS = ("auto", "numpy", "cupy")
YUMA_VERSIONS = ("yuma2", "yuma3")
YUMA_STORAGES = ("float64", "u16")
REGISTRATION_MODES = ("operator", "open")  # engine/settings.py's `registration`

# Upper bounds of governed amounts. A token is 10**9 base units (ledger/money.py UNITS_PER_TOKEN; a test checks).
_UNITS_PER_TOKEN = 10**9
MAX_EMISSION_UNITS = 1_000_000 * _UNITS_PER_TOKEN  # per epoch: far above any sane emission, far below BIGINT
MAX_REGISTRATION_FEE_UNITS = 1_000_000 * _UNITS_PER_TOKEN
MAX_COOLDOWN_EPOCHS = 1_000
MAX_REGISTRATION_POW_BITS = 40  # 2**40 hashes: hours of one core; far above what a test or a demo asks

TYPES = ("bool", "int", "float", "str", "list[str]")


class SettingRuleError(ValueError):
    """A value that breaks its setting's rule. str(): the problem, the value, and the rule; callers wrap it in their
    own error (SettingsError naming the file and key, GovernanceError out_of_range, ScenarioError)."""

    def __init__(self, rule: "SettingRule", value: object, problem: str):
        self.rule, self.value, self.problem = rule, value, problem
        super().__init__(f"{problem}, got {value!r} (rule: {rule.name} is {rule.describe()}"
                         f"{'; governed' if rule.governed else ''})")


def _num(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


@dataclass(frozen=True)
class SettingRule:
    """One setting: its type, inclusive range (None: open on that side), choices, unit, and whether it is governed."""

    name: str
    type: str  # one of TYPES
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    unit: str = ""  # seconds | base units | fraction | rows | bytes | epochs | validators | bits | "" (a pure number)
    governed: bool = False  # a passed proposal may change it, within the same range
    meaning: str = ""

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"setting rule {self.name!r}: type must be one of {', '.join(TYPES)}, got {self.type!r}")

    def describe(self) -> str:
        """The rule in words: 'a number in [0, 0.5] (fraction)', 'a whole number of at least 1 (seconds)', ..."""
        if self.type == "bool":
            return "true or false"
        if self.type == "str":
            return f"one of {', '.join(self.choices)}" if self.choices else "a non-empty string"
        if self.type == "list[str]":
            return "a list of strings"
        text = "a whole number" if self.type == "int" else "a number"
        if self.low is not None and self.high is not None:
            text += f" in [{_num(self.low)}, {_num(self.high)}]"
        elif self.low is not None:
            text += f" of at least {_num(self.low)}"
        elif self.high is not None:
            text += f" of at most {_num(self.high)}"
        elif self.type == "float":
            text = "a finite number"
        return text + (f" ({self.unit})" if self.unit else "")

    def problem(self, value: object) -> str | None:
        """What is wrong with `value` under this rule ('must lie in [0, 0.5]', ...), or None when it passes."""
        if self.type == "bool":
            return None if isinstance(value, bool) else "must be true or false"
        if self.type == "str":
            if not isinstance(value, str) or not value:
                return "must be a non-empty string"
            if self.choices and value not in self.choices:
                return f"must be one of {', '.join(self.choices)}"
            return None
        if self.type == "list[str]":
            ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
            return None if ok else "must be a list of strings"
        if self.type == "int":
            if not isinstance(value, int) or isinstance(value, bool):
                return "must be a whole number"
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return "must be a finite number"
        low, high = self.low, self.high
        if (low is None or value >= low) and (high is None or value <= high):
            return None
        if self.type == "float" and low is not None and high is not None:
            return f"must lie in [{_num(low)}, {_num(high)}]"
        return f"must be at least {_num(low)}" if low is not None and value < low else f"must be at most {_num(high)}"

    def check(self, value: object) -> object:
        """`value` unchanged when it passes; SettingRuleError naming the rule otherwise."""
        problem = self.problem(value)
        if problem is not None:
            raise SettingRuleError(self, value, problem)
        return value


def _fraction(name: str, meaning: str, *, low: float = 0.0, high: float = 1.0, governed: bool = False) -> SettingRule:
    return SettingRule(name, "float", low, high, unit="fraction", governed=governed, meaning=meaning)


SETTING_RULES: tuple[SettingRule, ...] = (
    SettingRule("epoch_seconds", "int", 1, unit="seconds", meaning="length of an epoch"),
    SettingRule("epoch_emission_units", "int", 0, MAX_EMISSION_UNITS, unit="base units", governed=True,
                meaning="tokens minted and paid out each epoch"),
    SettingRule("house_stake_units", "int", 0, unit="base units", meaning="the house validator's stake at genesis"),
    _fraction("owner_cut", "share of each epoch's emission paid to the market's owner", high=0.5, governed=True),
    SettingRule("max_payload_bytes", "int", 1, unit="bytes", meaning="largest payload file a submission may carry"),
    SettingRule("incomplete_after_seconds", "int", 0, unit="seconds",
                meaning="a submission still missing a part this long after ingest first saw it is quarantined"),
    SettingRule("knn_k", "int", 1, unit="rows", meaning="neighbours KNN-Shapley values each test point by"),
    SettingRule("commit_reveal", "bool", meaning="validators commit a hash of their weights, reveal them next epoch"),
    SettingRule("reveal_epochs", "int", 1, unit="epochs",
                meaning="how many epochs after its commit a commitment may still be revealed"),
    _fraction("prediction_share", "share of a house weight for model contributions, when data ones have value too",
              governed=True),
    SettingRule("array_backend", "str", choices=ARRAY_BACKENDS, meaning="array library of the consensus maths"),
    SettingRule("beam_pipeline_args", "list[str]", meaning="extra Apache Beam pipeline options for ingest"),
    _fraction("kappa", "Yuma Consensus: stake share a weight needs to count in consensus", governed=True),
    _fraction("bonds_penalty", "Yuma Consensus: how much a weight above consensus is cut from bonds"),
    _fraction("bonds_moving_average", "Yuma Consensus: weight of the old bond in each epoch's bond", governed=True),
    SettingRule("yuma_version", "str", choices=YUMA_VERSIONS, meaning="Yuma Consensus variant"),
    SettingRule("liquid_alpha_enabled", "bool", meaning="Yuma Consensus: per-pair bond moving average (liquid alpha)"),
    _fraction("alpha_low", "Yuma Consensus: liquid alpha's lower bound"),
    _fraction("alpha_high", "Yuma Consensus: liquid alpha's upper bound"),
    SettingRule("alpha_sigmoid_steepness", "float", meaning="Yuma Consensus: steepness of liquid alpha's sigmoid"),
    SettingRule("max_allowed_validators", "int", 0, unit="validators",
                meaning="validator permits: the top-k stakes at the epoch's start (the house always holds one)"),
    SettingRule("yuma_storage", "str", choices=YUMA_STORAGES,
                meaning="u16: weights and bonds pass through the chain's u16 storage, to compare"),
    SettingRule("sparse_bonds", "bool", meaning="Yuma 3 + liquid alpha: a zero weight resets its bond"),
    SettingRule("house_name", "str", meaning="key name of the house validator"),
    SettingRule("unstake_cooldown_epochs", "int", 0, MAX_COOLDOWN_EPOCHS, unit="epochs", governed=True,
                meaning="unstaked tokens stay unbonding until this many more epochs have settled"),
    SettingRule("registration_fee_units", "int", 0, MAX_REGISTRATION_FEE_UNITS, unit="base units", governed=True,
                meaning="burned from a sponsor's liquid tokens at registration, so sybil keys are not free"),
    SettingRule("registration", "str", choices=REGISTRATION_MODES,
                meaning="who registers keys: the operator only, or also any key by a signed register request with "
                        "a proof of work (open)"),
    SettingRule("registration_pow_bits", "int", 0, MAX_REGISTRATION_POW_BITS, unit="bits", governed=True,
                meaning="leading zero bits an open registration's proof of work must have (about 2**bits hashes)"),
    _fraction("governance_pass_share", "a proposal passes when yes-stake exceeds this share of the active stake",
              low=0.5, governed=True),  # never below a majority: a minority cannot rule
    SettingRule("lock_wait_seconds", "float", 0.0, unit="seconds",
                meaning="how long a writer waits for the home's epoch lock before naming its holder"),
)

RULES: dict[str, SettingRule] = {r.name: r for r in SETTING_RULES}
GOVERNED_RULES: dict[str, SettingRule] = {r.name: r for r in SETTING_RULES if r.governed}


def rule_of(name: str) -> SettingRule:
    """The rule of a setting; KeyError for a name that is no setting."""
    return RULES[name]


def check_setting(name: str, value: object) -> object:
    """`value` unchanged when it passes `name`'s rule; SettingRuleError naming the rule otherwise (KeyError for a
    name that is no setting: callers refuse unknown keys first, naming the known ones)."""
    return RULES[name].check(value)


def task_open_rule(task: str) -> SettingRule:
    """The governed pseudo-setting task.NAME.open: whether a task accepts new submissions."""
    return SettingRule(f"task.{task}.open", "bool", governed=True,
                       meaning=f"whether task {task} accepts new submissions")
