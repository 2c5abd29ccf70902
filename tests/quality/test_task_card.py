"""Task cards (quality/task_card.py, engine.actions.task_cards): the public rules of a task, and nothing hidden."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine import actions
from quality.errors import TaskError
from quality.gate import check_file
from quality.holdout import task_from_holdout
from quality.task_card import (CARD_VERSION, card_from_json, card_max_payload_bytes, card_to_json, task_card,
                               task_from_card)
from quality.task_toml import load_task
from tests.conftest import TASK, digits_table


def _market_task(market):
    return load_task(market.home.paths.tasks / f"{TASK}.toml")


def _hidden_parts_dropped(task):
    return replace(task, holdout="", challenge="", challenge_labels="", profile=())


def test_card_round_trips_through_json_to_the_same_hard_rules(market):
    task = _market_task(market)
    assert task.profile and task.holdout  # the operator's task has both; the card carries neither
    card = task_card(task, open=True, challenge=None, epoch=3, max_payload_bytes=1234)
    assert card["card_version"] == CARD_VERSION == 1
    assert card["kinds"] == ["dataset"] and card["open"] is True and card["epoch"] == 3 and card["challenge"] is None
    back, parsed = card_from_json(card_to_json(card))
    assert back == card
    assert parsed == task_from_card(card) == _hidden_parts_dropped(task)
    assert card_max_payload_bytes(back, 99) == 1234
    assert card_max_payload_bytes({k: v for k, v in card.items() if k != "max_payload_bytes"}, 99) == 99


def _numbers(text: str) -> set[float]:
    return {float(m) for m in re.findall(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?", text)}


def test_no_holdout_value_or_quantile_appears_on_the_card(tmp_path):
    # Distinctive holdout values (nothing like a row limit, k or a label), so any leak would show as a number.
    rng = np.random.default_rng(7)
    n = 200
    holdout = pa.table({"a": rng.normal(100.123, 7.3, n), "b": rng.normal(-42.77, 3.1, n),
                        "label": rng.integers(0, 2, n)})
    path = tmp_path / "hidden-holdout.parquet"
    pq.write_table(holdout, path)
    task = task_from_holdout("secret", path, "label", holdout_ref="holdout/secret.parquet")
    assert task.profile
    text = card_to_json(task_card(task, open=True, challenge=None))
    card = json.loads(text)
    for key in ("holdout", "profile", "challenge_labels"):
        assert key not in card
    assert "hidden-holdout" not in text and "holdout/secret" not in text
    published = _numbers(text)
    hidden = {float(v) for col in ("a", "b") for v in holdout.column(col).to_pylist()}
    for p in task.profile:
        hidden |= {p.q01, p.q50, p.q99, p.min, p.max, *p.band()}
    leaked = {x for x in published for h in hidden if abs(x - h) < 1e-6 * max(1.0, abs(h))}
    assert not leaked
    assert card["suspicious"]["published"] is False and card["suspicious"]["profiled_columns"] == ["a", "b"]


@pytest.mark.parametrize("broken", [False, True])
def test_validate_via_the_card_gives_the_tasks_verdict_on_the_hard_rules(market, broken):
    task = _market_task(market)
    card, from_card = card_from_json(card_to_json(task_card(task, open=True, challenge=None)))
    table = digits_table(0, 40)
    if broken:  # one pixel of 99: outside the declared bounds [0, 16]
        px = table.column("px_3").to_pylist()
        px[5] = 99.0
        table = table.set_column(3, "px_3", pa.array(px, pa.float64()))
    path = market.write("shard.parquet", table)
    by_task, by_card = check_file(path, task), check_file(path, from_card)
    assert by_card.success == by_task.success == (not broken)
    hard = [line for line in by_task.lines if line.hard]
    assert [line for line in by_card.lines if line.hard] == hard
    assert all(line.hard for line in by_card.lines)  # the profile is not on the card, so no profile line
    if broken:
        assert by_card.summary() == "; ".join(line.detail for line in hard if not line.success)
        assert "px_3" in by_card.summary() and "declared bounds" in by_card.summary()


def test_a_card_with_reject_suspicious_says_so(market):
    task = replace(_market_task(market), reject_suspicious=True)
    card = task_card(task, open=False, challenge=None)
    assert card["reject_suspicious"] is True and card["suspicious"]["reject_suspicious"] is True
    assert "rejected" in card["suspicious"]["rule"] and card["open"] is False
    assert task_from_card(card).reject_suspicious is True


@pytest.mark.parametrize("edit, key, words", [
    (lambda c: c.update(card_version=2), "card_version", "expected 1"),
    (lambda c: c.pop("card_version"), "card_version", "expected 1"),
    (lambda c: c.update(profile={}), "profile", "unknown key"),
    (lambda c: c.update(open="yes"), "open", "true or false"),
    (lambda c: c["features"][0].update(dtype="float32"), "features[0].dtype", "float64"),
    (lambda c: c.update(label_domain=[0, 0]), "label_domain", "duplicate"),
    (lambda c: c.update(min_rows=5.0), "min_rows", "whole number"),
    (lambda c: c.update(max_payload_bytes=0), "max_payload_bytes", "whole number"),
])
def test_a_malformed_card_is_a_task_error_naming_the_key(market, edit, key, words):
    card = task_card(_market_task(market), open=True, challenge=None)
    edit(card)
    with pytest.raises(TaskError, match=re.escape(key)) as e:
        task_from_card(card, file="digits.json")
    assert words in str(e.value) and "digits.json" in str(e.value)


def test_card_json_must_be_json():
    with pytest.raises(TaskError, match="not a JSON task card"):
        card_from_json(b"{not json", file="x.json")
    with pytest.raises(TaskError, match="not a JSON task card"):
        card_from_json('{"card_version": NaN}', file="x.json")


# --- the engine's side: open/closed at the open epoch, challenge rows ---------------------------------------------


def test_task_cards_of_a_home(market):
    cards = actions.task_cards(market.home)
    card, challenge = cards[TASK]
    assert challenge is None and card["open"] is True and card["epoch"] == 1 and card["kinds"] == ["dataset"]
    assert card["max_payload_bytes"] == market.home.settings.max_payload_bytes
    assert actions.task_card_of(market.home, TASK) == card
    from engine.errors import TributaryError

    with pytest.raises(TributaryError, match="known: digits"):
        actions.task_card_of(market.home, "nope")


def test_a_task_closed_by_governance_has_a_closed_card(market, monkeypatch):
    import engine.parameters

    monkeypatch.setattr(engine.parameters, "closed_tasks", lambda home, epoch, tasks, con=None: frozenset({TASK}))
    assert actions.task_cards(market.home)[TASK][0]["open"] is False


def test_a_prediction_task_publishes_its_challenge_rows_never_their_labels(market, tmp_path):
    holdout = market.write("h2.parquet", digits_table(300, 500))
    rows = market.write("challenge.parquet", digits_table(500, 530))
    actions.task_init(market.home, "pred", holdout, "label", bounds={"*": (0.0, 16.0)}, challenge=rows)
    card, challenge = actions.task_cards(market.home)["pred"]
    assert card["kinds"] == ["dataset", "predictions"]
    assert challenge.column_names == ["row_id", *(f"px_{i}" for i in range(8))]
    assert card["challenge"] == {"file": "pred.challenge.parquet", "rows": 30, "columns": challenge.column_names,
                                 "prediction_columns": ["row_id", *(f"p_{v}" for v in card["label_domain"])]}
    written = actions.publish_task_cards(market.home, tmp_path / "pub")
    assert sorted(p.name for p in written) == ["digits.json", "pred.challenge.parquet", "pred.json"]
    published = pq.read_table(tmp_path / "pub" / "pred.challenge.parquet")
    assert "label" not in published.column_names and published.equals(challenge)
    assert json.loads((tmp_path / "pub" / "pred.json").read_text()) == card
    assert not [p for p in (tmp_path / "pub").iterdir() if p.name.startswith(".")]  # no temporary file left
