"""The governed settings and their ranges: what a proposal may name, and the rule named when it may not."""

from __future__ import annotations

import pytest

from ledger.governance import GOVERNED, GovernanceError, check_proposal, governed_names


@pytest.mark.parametrize("setting, value, canonical", [
    ("epoch_emission_units", "500000000000", "500000000000"),
    ("epoch_emission_units", "5e11", "500000000000"),
    ("kappa", "0.6", "0.6"),
    ("owner_cut", "0", "0.0"),
    ("task.digits.open", "false", "false"),
])
def test_values_in_range_come_back_canonical(setting: str, value: str, canonical: str) -> None:
    assert check_proposal(setting, value, tasks=("digits",)) == canonical


@pytest.mark.parametrize("setting, value, reason, words", [
    ("house_name", '"mine"', "not_governed", "cannot be voted on"),
    ("task.nope.open", "true", "not_governed", "cannot be voted on"),
    ("owner_cut", "0.9", "out_of_range", "a number in [0, 0.5]"),
    ("kappa", "NaN", "out_of_range", "a number in [0, 1]"),
    ("epoch_emission_units", "1.5", "out_of_range", "a whole number"),
    ("epoch_emission_units", "true", "out_of_range", "a whole number"),
    ("governance_pass_share", "0.3", "out_of_range", "[0.5, 1]"),
    ("task.digits.open", "1", "out_of_range", "true or false"),
])
def test_anything_else_names_the_rule(setting: str, value: str, reason: str, words: str) -> None:
    with pytest.raises(GovernanceError) as e:
        check_proposal(setting, value, tasks=("digits",))
    assert e.value.reason == reason and words in e.value.detail and setting in e.value.detail


def test_the_list_holds_what_the_market_says_may_be_voted_on() -> None:
    assert {"epoch_emission_units", "kappa", "owner_cut", "bonds_moving_average", "prediction_share"} <= set(GOVERNED)
    assert governed_names(("iris",))[-1] == "task.iris.open"
