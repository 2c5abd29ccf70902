"""settings.toml is checked when it loads: every value's type and range, with the file, the key and the rule named."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import SettingsError
from engine.settings import SETTINGS_FILE, Settings


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
