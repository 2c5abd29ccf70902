"""settings.toml is checked when it loads: every value's type and range, with the file, the key and the rule named."""

from __future__ import annotations

import json
import math
from dataclasses import fields
from pathlib import Path

import pytest

from engine.errors import SettingsError
from engine.settings import SETTINGS_FILE, Settings
from ledger.governance import GOVERNED, GovernanceError, check_proposal
from ledger.money import UNITS_PER_TOKEN
from protocol.settings_rules import (ARRAY_BACKENDS, MAX_EMISSION_UNITS, MAX_REGISTRATION_FEE_UNITS, RULES,
                                     SETTING_RULES, YUMA_STORAGES, SettingRule)


def load(tmp_path: Path, text: str) -> Settings:
    (tmp_path / SETTINGS_FILE).write_text(text)
    return Settings.load(tmp_path)


@pytest.mark.parametrize("text, rule", [
    ('owner_cut = "lots"', "must be a finite number"),
    ("prediction_share = 7.0", "must lie in [0, 1]"),
    ("kappa = -0.1", "must lie in [0, 1]"),
    ("epoch_emission_units = 1.5", "must be a whole number"),
    ("epoch_emission_units = -1", "must be at least 0"),
    ("epoch_seconds = 0", "must be at least 1"),
    ("commit_reveal = 1", "must be true or false"),
    ("max_allowed_validators = true", "must be a whole number"),
    ('array_backend = "tpu"', "must be one of auto, numpy, cupy"),
    ('yuma_version = "yuma9"', "must be one of"),
    ('house_name = ""', "must be a non-empty string"),
    ('beam_pipeline_args = "--runner=x"', "must be a list of strings"),
    ("alpha_sigmoid_steepness = inf", "must be a finite number"),
])
def test_a_bad_value_names_the_file_the_key_and_the_rule(tmp_path: Path, text: str, rule: str) -> None:
    with pytest.raises(SettingsError) as e:
        load(tmp_path, text)
    key = text.split(" =")[0]
    assert str(e.value).startswith(f"{tmp_path / SETTINGS_FILE}: setting '{key}': {rule}"), str(e.value)


def test_good_values_load_and_unknown_or_unreadable_files_are_errors(tmp_path: Path) -> None:
    s = load(tmp_path, 'kappa = 1\nowner_cut = 0.2\ncommit_reveal = false\nbeam_pipeline_args = ["--a=b"]\n'
                       'array_backend = "auto"\nepoch_emission_units = 5_000_000_000\n')
    assert (s.kappa, s.owner_cut, s.commit_reveal, s.beam_pipeline_args) == (1, 0.2, False, ("--a=b",))
    with pytest.raises(SettingsError, match="unknown setting"):
        load(tmp_path, "owner_cutt = 0.1")
    with pytest.raises(SettingsError, match="not a readable TOML file"):
        load(tmp_path, "owner_cut = [")
    assert Settings.load(tmp_path / "nowhere") == Settings()


# One rule table (issue 21): protocol/settings_rules.py is what settings.toml, proposals and scenarios are checked by.


def test_a_value_no_vote_could_set_is_refused_at_load(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as e:
        load(tmp_path, "owner_cut = 0.9")
    message = str(e.value)
    assert message.startswith(f"{tmp_path / SETTINGS_FILE}: setting 'owner_cut': must lie in [0, 0.5], got 0.9"), message
    assert "rule: owner_cut is a number in [0, 0.5] (fraction); governed" in message, message
    with pytest.raises(SettingsError, match=r"setting 'governance_pass_share': must lie in \[0.5, 1\]"):
        load(tmp_path, "governance_pass_share = 0.3")  # a minority could then rule


def _toml(value: object) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _just_outside(rule: SettingRule, bound: float, side: int) -> float:
    return bound + side if rule.type == "int" else math.nextafter(bound, side * math.inf)


@pytest.mark.parametrize("name", sorted(GOVERNED))
def test_load_and_governance_enforce_one_range(tmp_path: Path, name: str) -> None:
    """A governed setting's bounds load and may be proposed; a value just outside is refused by both."""
    rule = GOVERNED[name]
    assert rule is SETTING_RULES[[r.name for r in SETTING_RULES].index(name)] and rule.governed
    assert rule.low is not None and rule.high is not None, "a governed setting has a range on both sides"
    for bound in (rule.low, rule.high):
        assert getattr(load(tmp_path, f"{name} = {_toml(bound)}"), name) == bound
        assert json.loads(check_proposal(name, json.dumps(bound))) == bound
    for bound, side in ((rule.low, -1), (rule.high, 1)):
        outside = _just_outside(rule, bound, side)
        with pytest.raises(SettingsError, match=f"setting '{name}': must"):
            load(tmp_path, f"{name} = {_toml(outside)}")
        with pytest.raises(GovernanceError) as e:
            check_proposal(name, json.dumps(outside))
        assert e.value.reason == "out_of_range" and rule.describe() in e.value.detail


def test_every_setting_has_exactly_one_rule_and_every_default_passes_it() -> None:
    names = [r.name for r in SETTING_RULES]
    assert len(names) == len(set(names)), "a setting with two rules"
    assert names == [f.name for f in fields(Settings)], "the table and Settings list different settings"
    defaults = Settings()
    for rule in SETTING_RULES:
        assert rule.check(getattr(defaults, rule.name)) is getattr(defaults, rule.name), rule.name
        assert rule.unit or rule.type in ("bool", "str", "list[str]") or rule.name == "alpha_sigmoid_steepness"
        assert rule.meaning, rule.name
    assert set(GOVERNED) == {r.name for r in SETTING_RULES if r.governed}


def test_the_named_choice_lists_live_in_the_table() -> None:
    from rewards.backend import BACKENDS
    from rewards.yuma_core import STORAGES, YUMA_VERSIONS

    assert BACKENDS is ARRAY_BACKENDS is RULES["array_backend"].choices
    assert YUMA_VERSIONS is RULES["yuma_version"].choices and STORAGES is YUMA_STORAGES is RULES["yuma_storage"].choices
    assert MAX_EMISSION_UNITS == MAX_REGISTRATION_FEE_UNITS == 1_000_000 * UNITS_PER_TOKEN
