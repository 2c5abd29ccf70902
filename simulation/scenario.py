"""The scenario file: which data, which task options, which market settings, who plays and how.

Every rule is checked when the file is read; a broken file is one `ScenarioError` whose message names the file, the
dotted key and the rule it broke (the CLI prints it in one line). Unknown keys are errors, so a typo never silently
falls back to a default. The format is documented in README.md ("Simulate a market").
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import TributaryError
from protocol.settings_rules import RULES, SettingRuleError, check_setting

DATASETS = ("breast_cancer", "wine", "digits", "iris")  # scikit-learn's bundled copies: nothing downloads
SCALINGS = ("standard", "range", "none")
CONTRIBUTOR_STRATEGIES = ("honest", "noisy_labels", "exact_copier", "near_copier", "self_replayer", "sybil",
                          "garbage", "late_copier", "backdated_copier", "jitter_copier", "smote_copier",
                          "self_augmenter", "same_epoch_copier")
VALIDATOR_STRATEGIES = ("honest", "weight_copier", "lazy", "cartel")
COPIERS = ("exact_copier", "near_copier", "backdated_copier", "jitter_copier", "smote_copier",
           "same_epoch_copier")  # strategies that copy a named target group
AUGMENT_MODES = ("interpolate", "jitter")  # self_augmenter: how its synthetic rows are made from its own
DEFAULT_JITTER = 1e-7  # relative to each feature's standard deviation: far inside any near-duplicate tolerance
# Default jitter of the new copying strategies, in each feature's std: enough to pass a near-duplicate check. Capped,
# so that what they send stays a copy of its source (further out it is noise around it: another strategy).
COPY_JITTER = {"jitter_copier": 0.1, "same_epoch_copier": 0.05, "self_augmenter": 0.05}
MAX_COPY_JITTER = 0.3
DEFAULT_SYNTHETIC = 3  # self_augmenter: synthetic rows per fresh row
MAX_SYNTHETIC = 3  # a few synthetic rows per real one, as augmentation does; more would be a different attack
DEFAULT_SYBIL_KEYS = 4
DEFAULT_BACKDATE_DAYS = 365
MAX_EPOCHS = 10_000
MAX_COUNT = 10_000
MAX_ROWS = 1_000_000
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")  # group names become key names: `<group>-<n>` (letters first: see market.py)

TOP_KEYS = {"seed", "epochs", "data", "task", "market", "contributors", "validators"}
DATA_KEYS = {"dataset", "holdout_fraction", "rows_per_submission", "synthesize"}
TASK_KEYS = {"name", "k", "scaling", "near_duplicate_tol", "min_rows", "bounds_margin"}
GROUP_KEYS = {"strategy", "name", "count"}
CONTRIBUTOR_PARAMS = {
    "honest": {"rows"},
    "noisy_labels": {"rows", "rate"},
    "exact_copier": {"target"},
    "near_copier": {"target", "jitter"},
    "self_replayer": {"rows", "jitter"},
    "sybil": {"rows", "keys"},
    "garbage": {"rows"},
    "late_copier": {"jitter"},
    "backdated_copier": {"target", "days"},
    "jitter_copier": {"target", "jitter"},
    "smote_copier": {"target"},
    "self_augmenter": {"rows", "synthetic", "mode", "jitter", "keys"},
    "same_epoch_copier": {"target", "jitter"},
}
VALIDATOR_PARAMS = {
    "honest": {"stake", "sample_rows"},
    "weight_copier": {"stake"},
    "lazy": {"stake"},
    "cartel": {"stake", "favours"},
}


class ScenarioError(TributaryError):
    """A scenario file that breaks a rule: the message names the file, the key and the rule."""

    def __init__(self, file: str, key: str, rule: str):
        self.file, self.key, self.rule = file, key, rule
        super().__init__(f"{file}: key '{key}': {rule}" if key else f"{file}: {rule}")


@dataclass(frozen=True)
class ContributorGroup:
    name: str
    strategy: str
    count: int = 1
    rows: int = 0  # rows per submission (0: the scenario's rows_per_submission); sybil: the whole dataset's rows
    rate: float = 0.3  # noisy_labels: share of labels replaced by another label
    target: str = ""  # copiers: the group whose accepted files (same_epoch_copier: dropped files) they copy
    jitter: float = 0.0  # near/jitter/same_epoch/late copiers, self_replayer, self_augmenter: noise in feature stds
    keys: int = DEFAULT_SYBIL_KEYS  # sybil: keys the one dataset is split over; self_augmenter: 1 + synthetic keys
    days: int = DEFAULT_BACKDATE_DAYS  # backdated_copier: how old the file times are set
    synthetic: int = DEFAULT_SYNTHETIC  # self_augmenter: synthetic rows per fresh row
    mode: str = "interpolate"  # self_augmenter: one of AUGMENT_MODES


@dataclass(frozen=True)
class ValidatorGroup:
    name: str
    strategy: str
    count: int = 1
    stake: float = 1000.0  # tokens each
    sample_rows: int = 0  # honest: rows of held-out data it scores on (0: half the holdout)
    favours: str = ""  # cartel: the contributor group whose first key it pushes


@dataclass(frozen=True)
class TaskOptions:
    name: str = ""  # default: the dataset's name
    k: int = 5
    scaling: str = "standard"
    near_duplicate_tol: float | None = None  # None: the task's default
    min_rows: int | None = None
    bounds_margin: float | None = 0.1  # declared bounds: the dataset's range widened by this share; None: none


@dataclass(frozen=True)
class Scenario:
    file: str
    dataset: str
    holdout_fraction: float = 0.3
    rows_per_submission: int = 40
    synthesize: bool = True
    task: TaskOptions = TaskOptions()
    market: dict[str, Any] = field(default_factory=dict)  # settings.toml overrides (engine/settings.py names)
    contributors: tuple[ContributorGroup, ...] = ()
    validators: tuple[ValidatorGroup, ...] = ()
    seed: int = 0
    epochs: int | None = None

    @property
    def task_name(self) -> str:
        return self.task.name or self.dataset

    def group(self, name: str) -> ContributorGroup:
        return next(g for g in self.contributors if g.name == name)

    def with_changes(self, **changes: Any) -> "Scenario":
        """A copy with some fields replaced (for tests and benchmarks that vary one thing)."""
        return dataclasses.replace(self, **changes)


class _Table:
    """Typed access to one TOML table; every failure is a ScenarioError naming file and dotted key."""

    def __init__(self, file: str, data: Any, prefix: str):
        self.file, self.prefix = file, prefix
        if not isinstance(data, dict):
            raise ScenarioError(file, prefix.rstrip("."), f"must be a table, got {data!r}")
        self.data = data

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def fail(self, name: str, rule: str) -> ScenarioError:
        return ScenarioError(self.file, self.key(name), rule)

    def allow(self, allowed: set[str]) -> None:
        for name in self.data:
            if name not in allowed:
                raise self.fail(name, f"unknown key (allowed here: {', '.join(sorted(allowed))})")

    def has(self, name: str) -> bool:
        return name in self.data

    def integer(self, name: str, default: Any, lo: int, hi: int) -> Any:
        if name not in self.data:
            return default
        v = self.data[name]
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.fail(name, f"must be a whole number, got {v!r}")
        if not lo <= v <= hi:
            raise self.fail(name, f"must be in {lo}..{hi}, got {v}")
        return v

    def number(self, name: str, default: Any, lo: float, hi: float, *, open_lo: bool = False,
               open_hi: bool = False) -> Any:
        if name not in self.data:
            return default
        v = self.data[name]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise self.fail(name, f"must be a finite number, got {v!r}")
        if v < lo or v > hi or (open_lo and v == lo) or (open_hi and v == hi):
            interval = f"{'(' if open_lo else '['}{lo:g}, {hi:g}{')' if open_hi else ']'}"
            raise self.fail(name, f"must be in {interval}, got {v!r}")
        return float(v)

    def string(self, name: str, default: Any, choices: tuple[str, ...] | None = None) -> Any:
        if name not in self.data:
            if default is ...:
                raise self.fail(name, "missing" + (f" (one of {', '.join(choices)})" if choices else ""))
            return default
        v = self.data[name]
        if not isinstance(v, str):
            raise self.fail(name, f"must be a string, got {v!r}")
        if choices is not None and v not in choices:
            raise self.fail(name, f"must be one of {', '.join(choices)}, got {v!r}")
        return v

    def boolean(self, name: str, default: bool) -> bool:
        if name not in self.data:
            return default
        v = self.data[name]
        if not isinstance(v, bool):
            raise self.fail(name, f"must be true or false, got {v!r}")
        return v


def load_scenario(path: str | Path) -> Scenario:
    """Read and check a scenario file; ScenarioError (file, key, rule) on the first rule it breaks."""
    path = Path(path)
    file = str(path)
    if not path.is_file():
        raise ScenarioError(file, "", "no such scenario file")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ScenarioError(file, "", f"not valid TOML: {e}") from None
    return parse_scenario(doc, file)


def parse_scenario(doc: dict, file: str = "<scenario>") -> Scenario:
    """Check a parsed scenario document (as tomllib returns it)."""
    top = _Table(file, doc, "")
    top.allow(TOP_KEYS)
    seed = top.integer("seed", 0, 0, 2**63 - 1)
    epochs = top.integer("epochs", None, 1, MAX_EPOCHS)

    if not top.has("data"):
        raise top.fail("data", "missing: a [data] table with at least dataset = one of " + ", ".join(DATASETS))
    data = _Table(file, doc["data"], "data.")
    data.allow(DATA_KEYS)
    dataset = data.string("dataset", ..., DATASETS)
    holdout_fraction = data.number("holdout_fraction", 0.3, 0.0, 1.0, open_lo=True, open_hi=True)
    rows_per_submission = data.integer("rows_per_submission", 40, 1, MAX_ROWS)
    synthesize = data.boolean("synthesize", True)

    t = _Table(file, doc.get("task", {}), "task.")
    t.allow(TASK_KEYS)
    task_name = t.string("name", "")
    if task_name and not re.fullmatch(r"[A-Za-z0-9_-]+", task_name):
        raise t.fail("name", f"must be letters, digits, '-' or '_', got {task_name!r}")
    margin = t.number("bounds_margin", 0.1, 0.0, 1e6)
    task = TaskOptions(
        name=task_name, k=t.integer("k", 5, 1, 1000), scaling=t.string("scaling", "standard", SCALINGS),
        near_duplicate_tol=t.number("near_duplicate_tol", None, 0.0, 1e6),
        min_rows=t.integer("min_rows", None, 1, MAX_ROWS), bounds_margin=margin,
    )
    min_rows = task.min_rows or 10  # quality.task's default

    market = _market(file, doc.get("market", {}))

    contributors = tuple(_contributor(file, raw, i, rows_per_submission)
                         for i, raw in enumerate(_list(file, doc, "contributors")))
    validators = tuple(_validator(file, raw, i) for i, raw in enumerate(_list(file, doc, "validators")))
    if not contributors:
        raise ScenarioError(file, "contributors", "missing: at least one [[contributors]] group")

    seen: dict[str, str] = {}
    for kind, groups in (("contributors", contributors), ("validators", validators)):
        for i, g in enumerate(groups):
            key = f"{kind}[{i}].name"
            if g.name in seen:
                raise ScenarioError(file, key, f"group name {g.name!r} is used twice ({seen[g.name]} too); "
                                               "give each group its own name = \"...\"")
            seen[g.name] = key
    by_name = {g.name: g for g in contributors}
    for i, g in enumerate(contributors):
        if g.strategy in COPIERS:
            if g.target not in by_name:
                raise ScenarioError(file, f"contributors[{i}].target",
                                    f"names no contributor group (groups: {', '.join(by_name)}), got {g.target!r}")
            if g.target == g.name:
                raise ScenarioError(file, f"contributors[{i}].target", "a group cannot copy itself")
            if by_name[g.target].strategy in COPIERS + ("late_copier",):
                raise ScenarioError(file, f"contributors[{i}].target",
                                    f"must name a group that sends its own data, not the copier {g.target!r}")
        if g.strategy not in COPIERS + ("late_copier",) and g.rows < min_rows:
            raise ScenarioError(file, f"contributors[{i}].rows",
                                f"{g.rows} rows is below the task's min_rows {min_rows}: ingest would quarantine it")
        if g.strategy == "sybil" and g.rows // g.keys < min_rows:
            raise ScenarioError(file, f"contributors[{i}].keys",
                                f"{g.rows} rows over {g.keys} keys leaves {g.rows // g.keys} rows a key, below the "
                                f"task's min_rows {min_rows}")
        if g.strategy == "self_augmenter" and g.keys > 1 and g.synthetic * g.rows // (g.keys - 1) < min_rows:
            n = g.synthetic * g.rows
            raise ScenarioError(file, f"contributors[{i}].keys",
                                f"{n} synthetic rows over {g.keys - 1} keys leaves {n // (g.keys - 1)} rows a key, "
                                f"below the task's min_rows {min_rows}")
    for i, v in enumerate(validators):
        if v.strategy == "cartel" and v.favours not in by_name:
            raise ScenarioError(file, f"validators[{i}].favours",
                                f"names no contributor group (groups: {', '.join(by_name)}), got {v.favours!r}")
    return Scenario(file=file, dataset=dataset, holdout_fraction=holdout_fraction,
                    rows_per_submission=rows_per_submission, synthesize=synthesize, task=task, market=market,
                    contributors=contributors, validators=validators, seed=seed, epochs=epochs)


def _list(file: str, doc: dict, key: str) -> list:
    raw = doc.get(key, [])
    if not isinstance(raw, list):
        raise ScenarioError(file, key, f"must be an array of tables ([[{key}]]), got {raw!r}")
    return raw


def _group_name(t: _Table, strategy: str) -> str:
    name = t.string("name", strategy)
    if not _NAME.match(name):
        raise t.fail("name", f"must start with a lowercase letter and hold only a-z, 0-9 and '_', got {name!r}")
    return name


def _contributor(file: str, raw: Any, i: int, default_rows: int) -> ContributorGroup:
    t = _Table(file, raw, f"contributors[{i}].")
    strategy = t.string("strategy", ..., CONTRIBUTOR_STRATEGIES)
    t.allow(GROUP_KEYS | CONTRIBUTOR_PARAMS[strategy])
    jitter_default = COPY_JITTER.get(strategy, 0.0 if strategy == "late_copier" else DEFAULT_JITTER)
    jitter_max = MAX_COPY_JITTER if strategy in COPY_JITTER else 1e6
    mode = t.string("mode", "interpolate", AUGMENT_MODES)
    if strategy == "self_augmenter" and mode != "jitter" and t.has("jitter"):
        raise t.fail("jitter", f"only with mode = \"jitter\" (mode {mode!r} adds no noise)")
    return ContributorGroup(
        name=_group_name(t, strategy), strategy=strategy, count=t.integer("count", 1, 1, MAX_COUNT),
        rows=t.integer("rows", default_rows, 1, MAX_ROWS), rate=t.number("rate", 0.3, 0.0, 1.0),
        target=t.string("target", "honest"), jitter=t.number("jitter", jitter_default, 0.0, jitter_max),
        keys=t.integer("keys", 1 if strategy == "self_augmenter" else DEFAULT_SYBIL_KEYS, 1, 1000),
        days=t.integer("days", DEFAULT_BACKDATE_DAYS, 1, 100_000),
        synthetic=t.integer("synthetic", DEFAULT_SYNTHETIC, 1, MAX_SYNTHETIC), mode=mode,
    )


def _validator(file: str, raw: Any, i: int) -> ValidatorGroup:
    t = _Table(file, raw, f"validators[{i}].")
    strategy = t.string("strategy", ..., VALIDATOR_STRATEGIES)
    t.allow(GROUP_KEYS | VALIDATOR_PARAMS[strategy])
    if strategy == "cartel" and not t.has("favours"):
        raise t.fail("favours", "missing: the contributor group whose first key the cartel pushes")
    return ValidatorGroup(
        name=_group_name(t, f"val_{strategy}"), strategy=strategy, count=t.integer("count", 1, 1, MAX_COUNT),
        stake=t.number("stake", 1000.0, 0.0, 1e12, open_lo=True), sample_rows=t.integer("sample_rows", 0, 0, MAX_ROWS),
        favours=t.string("favours", ""),
    )


def _market(file: str, raw: Any) -> dict[str, Any]:
    """[market]: overrides of engine/settings.py, each checked against its rule in protocol/settings_rules.py (the
    table settings.toml and governance use): a value no vote could set is refused here too."""
    t = _Table(file, raw, "market.")
    t.allow(set(RULES) - {"house_name"})  # the simulator names the house itself
    for name, value in t.data.items():
        try:
            check_setting(name, value)
        except SettingRuleError as e:
            raise t.fail(name, str(e)) from None
    return dict(t.data)
