"""No input can stall an epoch (issue 9): each input that used to pass ingest and then make scoring or consensus
raise is refused at its boundary, and the epoch still settles. Internal errors fail loudly, user errors are one line.

1. validator weights whose sum overflows: bounded and normalized when parsed (pipelines/weights.py);
2. a task with an open or zero-width declared range, or a holdout with NaN, inf or null: refused at load / task init;
3. a submission with a null feature: quarantined by the gate (a task cannot allow nulls);
4. a NaN reaching the house weights: a typed ValuationError (an internal bug), never NaN weights;
5. the CLI: a declared user error exits 1 with one line, anything else exits 2 with its traceback.
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pyarrow as pa
import pytest

from ledger.db import open_ledger
from pipelines.weights import MAX_WEIGHT, WeightRules, WeightsRejected, parse_weights, weights_commitment
from quality.errors import TaskError
from quality.holdout import task_from_holdout
from quality.task import Task
from quality.task_toml import load_task
from rewards.errors import ValuationError
from rewards.house import house_weights, mixed_house_weights
from tests.conftest import TASK, digits_table
from tests.drop_tools import read_ledger
from engine import actions

V = "ab" * 32
C1, C2 = "c1" * 32, "c2" * 32
ACCOUNTS = {V: ("val", "validator"), C1: ("c1", "contributor"), C2: ("c2", "contributor")}
SALT = "5a" * 16


def _parse(raw: bytes | dict, rules: WeightRules = WeightRules(2)) -> pa.Table:
    data = raw if isinstance(raw, bytes) else json.dumps(raw).encode()
    return parse_weights(data, "w.json", validator_key=V, rules=rules, accounts=ACCOUNTS)


def _settled(home, epoch: int) -> bool:
    with open_ledger(home.paths.ledger, read_only=True) as con:
        row = con.execute("SELECT settled_at FROM epochs WHERE epoch = ?", [epoch]).fetchone()
    return row is not None and row[0] is not None


def _public_keys(home) -> dict[str, str]:
    from ledger import accounts

    with open_ledger(home.paths.ledger, read_only=True) as con:
        return {a.name: a.public_key for a in accounts.all_accounts(con)}


# ============================================================================ 1. weights: bounded and normalized


def test_weights_are_normalized_to_sum_one():
    table = _parse({"epoch": 2, "weights": {C1: 1.0, C2: 3.0}})
    assert table.column("weight").to_pylist() == [0.25, 0.75]
    many = {f"{i:064x}": float(i % 7) for i in range(1, 200)}
    accounts = {**ACCOUNTS, **{k: ("x", "contributor") for k in many}}
    w = parse_weights(json.dumps({"epoch": 2, "weights": many}).encode(), "w.json", validator_key=V,
                      rules=WeightRules(2), accounts=accounts).column("weight").to_pylist()
    assert math.fsum(w) == pytest.approx(1.0, abs=1e-15) and all(0.0 <= x <= 1.0 for x in w)


def test_weights_at_the_limit_are_accepted_and_normalized():
    table = _parse({"epoch": 2, "weights": {C1: MAX_WEIGHT, C2: MAX_WEIGHT}})
    assert table.column("weight").to_pylist() == [0.5, 0.5]


def test_all_zero_weights_stay_zero():
    w = _parse({"epoch": 2, "weights": {C1: 0, C2: -0.0}}).column("weight").to_pylist()
    assert w == [0.0, 0.0] and all(math.copysign(1.0, x) == 1.0 for x in w)  # a -0.0 is stored as 0.0


@pytest.mark.parametrize("raw,words", [
    ({"epoch": 2, "weights": {C1: 1e308, C2: 1e308}}, "at most"),           # each finite, the sum overflows
    ({"epoch": 2, "weights": {C1: MAX_WEIGHT * 1.5}}, "at most"),
    ({"epoch": 2, "weights": {C1: -1.0, C2: 1.0}}, "non-negative"),
    ({"epoch": 2, "weights": {C1: True}}, "must be a number"),
    ({"epoch": 2, "weights": {C1: "1"}}, "must be a number"),
    (b'{"epoch": 2, "weights": {"' + C1.encode() + b'": 1' + b"0" * 400 + b"}}", "at most"),  # no OverflowError
    (b'{"epoch": 2, "weights": {"' + C1.encode() + b'": 1e400}}', "finite"),  # JSON's 1e400 parses to inf
])
def test_weights_out_of_bounds_are_schema_mismatch(raw, words):
    with pytest.raises(WeightsRejected) as e:
        _parse(raw)
    assert e.value.reason == "schema_mismatch"
    assert "w.json: field 'weights': weight for " in e.value.detail and words in e.value.detail


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_json_constants_are_not_weights(constant):
    with pytest.raises(WeightsRejected) as e:
        _parse(b'{"epoch": 2, "weights": {"' + C1.encode() + b'": ' + constant + b"}}")
    assert e.value.reason == "schema_mismatch" and "w.json" in e.value.detail and "finite" in e.value.detail


def test_the_limit_is_named_in_the_message():
    with pytest.raises(WeightsRejected) as e:
        _parse({"epoch": 2, "weights": {C1: 1e308}})
    assert f"{MAX_WEIGHT:g}" in e.value.detail and "MAX_WEIGHT" in e.value.detail


def test_a_reveal_is_checked_against_the_raw_weights_then_normalized():
    raw = {C1: 2.0, C2: 6.0}
    h = weights_commitment(5, raw, SALT)
    rules = WeightRules(6, commit_reveal=True, commitments={(V, 5): h})
    table = _parse({"epoch": 5, "weights": raw, "salt": SALT}, rules)
    assert table.column("weight").to_pylist() == [0.25, 0.75]
    assert table.column("commitment").to_pylist() == [h, h]
    with pytest.raises(WeightsRejected) as e:  # the normalized vector is not what was committed
        _parse({"epoch": 5, "weights": {C1: 0.25, C2: 0.75}, "salt": SALT}, rules)
    assert e.value.reason == "reveal_mismatch"


def test_a_reveal_over_the_limit_is_refused_before_hashing():
    raw = {C1: 1e308, C2: 1e308}
    rules = WeightRules(6, commit_reveal=True, commitments={(V, 5): weights_commitment(5, raw, SALT)})
    with pytest.raises(WeightsRejected) as e:
        _parse({"epoch": 5, "weights": raw, "salt": SALT}, rules)
    assert e.value.reason == "schema_mismatch" and "at most" in e.value.detail


@pytest.mark.slow
def test_weights_whose_sum_overflows_do_not_stall_the_epoch(market):
    """val commits two weights of 1e308 (each finite, their sum is not); val2 commits 2e11 : 6e11. Epoch 2 settles:
    val's reveal is quarantined naming the field and the limit, val2's counts, stored normalized."""
    from engine.epoch import run_epoch

    home = market.home
    actions.keygen(home, "val2")
    actions.register(home, "val2", "validator")
    actions.grant(home, "val2", "1000")
    actions.stake(home, "val2", "1000")
    market.submit("alice", digits_table(300, 360), "a1.parquet")
    market.submit("bob", digits_table(360, 420), "b1.parquet")
    run_epoch(home)
    keys = _public_keys(home)
    alice, bob = keys["alice"], keys["bob"]
    actions.commit(home, {alice: 1e308, bob: 1e308}, key="val")
    actions.commit(home, {alice: 2e11, bob: 6e11}, key="val2")
    first = run_epoch(home, close=True)
    assert first.ingest.quarantined == 0 and _settled(home, 1)

    actions.reveal(home, key="val")
    actions.reveal(home, key="val2")
    market.submit("alice", digits_table(420, 480), "a2.parquet")
    market.submit("bob", digits_table(480, 540), "b2.parquet")  # both send something new, so both may earn
    run = run_epoch(home, close=True)
    assert _settled(home, 2)
    assert run.ingest.reasons == {"schema_mismatch": 1}
    led = read_ledger(home)
    (q,) = [r for r in led.quarantine if r["epoch"] == 2]
    assert "weight for" in q["detail"] and "MAX_WEIGHT" in q["detail"]
    with open_ledger(home.paths.ledger, read_only=True) as con:
        ids = dict(con.execute("SELECT name, account_id FROM accounts").fetchall())
        used = dict(con.execute("SELECT miner, weight FROM weights WHERE epoch = 2 AND validator = ?",
                                [ids["val2"]]).fetchall())
        val_rows = con.execute("SELECT count(*) FROM weights WHERE epoch = 2 AND validator = ?",
                               [ids["val"]]).fetchone()[0]
        paid = dict(con.execute("SELECT account_id, amount FROM rewards WHERE epoch = 2").fetchall())
    assert used == {ids["alice"]: pytest.approx(0.25), ids["bob"]: pytest.approx(0.75)}
    assert val_rows == 0  # its reveal was refused: inactive this epoch, not a stall
    assert paid[ids["val2"]] > 0 and all(isinstance(a, int) and a >= 0 for a in paid.values())


# ============================================================================ 2. task files and holdouts


def _task_toml(feature: str, extra: str = "") -> str:
    return (f'name = "t"\nlabel = "y"\nlabel_dtype = "int64"\nlabel_domain = [0, 1]\n{extra}'
            f'features = [{{ name = "a", dtype = "float64" }}, {{ name = "b", dtype = "float64", {feature} }}]\n')


@pytest.mark.parametrize("bounds,key,words", [
    ("min = 0.0, max = inf", "features[1].max", "finite"),
    ("min = -inf, max = 1.0", "features[1].min", "finite"),
    ("max = inf", "features[1].max", "finite"),
    ("min = nan, max = 1.0", "features[1].min", "finite"),
    ("min = 0.0, max = nan", "features[1].max", "finite"),
    ("min = 1.0, max = 1.0", "features[1].max", "above min"),
    ("min = 2.0, max = 1.0", "features[1].max", "above min"),
    ("min = -1e308, max = 1e308", "features[1].max", "finite width"),
])
def test_a_task_file_with_an_open_or_empty_declared_range_is_refused(tmp_path, bounds, key, words):
    path = tmp_path / "t.toml"
    path.write_text(_task_toml(bounds))
    with pytest.raises(TaskError) as e:
        load_task(path)
    assert e.value.key == key and e.value.file == str(path)
    assert str(path) in str(e.value) and f"'{key}'" in str(e.value) and words in str(e.value)


def test_one_sided_and_proper_bounds_load(tmp_path):
    path = tmp_path / "t.toml"
    for bounds in ("min = 0.0", "max = 16.0", "min = 0.0, max = 16.0"):
        path.write_text(_task_toml(bounds))
        load_task(path)


def test_a_task_cannot_let_nulls_through(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text(_task_toml("min = 0.0", extra="max_null_fraction = 0.1\n"))
    with pytest.raises(TaskError) as e:
        load_task(path)
    assert e.value.key == "max_null_fraction" and "non-null" in str(e.value)
    with pytest.raises(TaskError):
        Task(name="t", features=(), label="y", label_dtype="int64", label_domain=(0,), max_null_fraction=0.5)


@pytest.mark.parametrize("lo,hi,words", [
    (0.0, math.inf, "finite"), (-math.inf, 1.0, "finite"), (math.nan, 1.0, "finite"), (3.0, 3.0, "above min"),
])
def test_task_from_holdout_refuses_open_or_empty_declared_bounds(lo, hi, words):
    table = pa.table({"a": [1.0, 2.0, 3.0], "y": [0, 1, 0]})
    with pytest.raises(TaskError) as e:
        task_from_holdout("t", table, "y", bounds={"a": (lo, hi)})
    assert "'a'" in str(e.value) and words in str(e.value)


@pytest.mark.parametrize("column,words", [
    ([1.0, math.nan, 2.0, 3.0], "1 of 4 values are NaN or infinite"),
    ([1.0, math.inf, -math.inf, 3.0], "2 of 4 values are NaN or infinite"),
    ([1.0, None, 2.0, 3.0], "1 of 4 values are null"),
])
def test_a_holdout_with_non_finite_or_null_features_is_refused(column, words):
    table = pa.table({"a": [0.0, 1.0, 2.0, 3.0], "b": pa.array(column, pa.float64()), "y": [0, 1, 0, 1]})
    with pytest.raises(TaskError) as e:
        task_from_holdout("t", table, "y")
    assert e.value.key == "b" and "column 'b'" in str(e.value) and words in str(e.value)


def test_a_holdout_with_null_labels_is_refused():
    table = pa.table({"a": [0.0, 1.0, 2.0], "y": pa.array([0, None, 1], pa.int64())})
    with pytest.raises(TaskError) as e:
        task_from_holdout("t", table, "y")
    assert e.value.key == "y" and "label" in str(e.value) and "null" in str(e.value)


def test_a_constant_holdout_feature_is_fine():
    table = pa.table({"a": [5.0] * 4, "b": [0.0, 1.0, 2.0, 3.0], "y": [0, 1, 0, 1]})
    task = task_from_holdout("t", table, "y")  # the scaling treats a zero std or width as 1
    flat = task.profile_of("a")
    assert (flat.min, flat.max) == (5.0, 5.0) and flat.span() > 0 and task.features[0].min is None


@pytest.mark.slow
def test_bad_tasks_are_refused_at_the_boundary_and_the_epoch_settles(market):
    """task init refuses an open bound and a holdout with NaN or null (no task file); a hand-edited task file with
    max = inf is refused when the epoch loads it, naming file and key, before anything leaves drop/; a task whose
    holdout has a constant feature values and settles normally."""
    from engine.epoch import run_epoch

    home = market.home
    good = digits_table(0, 300)
    nan = good.set_column(0, "px_0", pa.array([math.nan] + good.column("px_0").to_pylist()[1:]))
    null = good.set_column(0, "px_0", pa.array([None] + good.column("px_0").to_pylist()[1:], pa.float64()))
    with pytest.raises(TaskError, match="finite"):
        actions.task_init(home, "open", market.write("h-open.parquet", good), "label", bounds={"*": (0.0, math.inf)})
    with pytest.raises(TaskError, match="NaN or infinite"):
        actions.task_init(home, "nan", market.write("h-nan.parquet", nan), "label")
    with pytest.raises(TaskError, match="null"):
        actions.task_init(home, "null", market.write("h-null.parquet", null), "label")
    assert sorted(p.name for p in home.paths.tasks.glob("*.toml")) == [f"{TASK}.toml"]

    flat = good.set_column(0, "px_0", pa.array([7.0] * good.num_rows))
    actions.task_init(home, "flat", market.write("h-flat.parquet", flat), "label", bounds={"*": (0.0, 16.0)})
    sub = digits_table(300, 360)
    actions.submit(home, market.write("flat.parquet", sub.set_column(0, "px_0", pa.array([7.0] * sub.num_rows))),
                   key="alice", task="flat")
    market.submit("bob", digits_table(360, 420), "b1.parquet")

    bad = home.paths.tasks / "edited.toml"
    text = (home.paths.tasks / "flat.toml").read_text().replace('name = "flat"', 'name = "edited"')
    bad.write_text(text.replace("max = 16.0", "max = inf", 1))
    before = sorted(p.name for p in home.paths.drop.iterdir())
    with pytest.raises(TaskError) as e:
        run_epoch(home, close=True)
    assert e.value.file == str(bad) and e.value.key == "features[0].max" and "finite" in str(e.value)
    assert sorted(p.name for p in home.paths.drop.iterdir()) == before  # refused before ingest touched drop/
    bad.unlink()

    run = run_epoch(home, close=True)
    assert run.ingest.accepted == 2 and run.ingest.quarantined == 0 and _settled(home, 1)
    values = {s.task: s.value for s in run.scores.submissions}
    assert all(math.isfinite(v) for v in values.values()) and values["flat"] != 0.0


# ============================================================================ 3. nulls, NaN and inf never reach valuation


@pytest.mark.slow
def test_null_nan_and_inf_features_are_quarantined_and_the_epoch_settles(market):
    from engine.epoch import run_epoch

    home = market.home
    rows = digits_table(360, 420)
    px3 = rows.column("px_3").to_pylist()
    market.submit("alice", digits_table(300, 360), "honest.parquet")
    market.submit("bob", rows.set_column(3, "px_3", pa.array([None] + px3[1:], pa.float64())), "null.parquet")
    market.submit("carol", rows.set_column(3, "px_3", pa.array([math.nan, math.inf] + px3[2:])), "nan.parquet")
    run = run_epoch(home, close=True)
    assert _settled(home, 1)
    assert run.ingest.accepted == 1 and run.ingest.reasons == {"quality_failed": 2}
    led = read_ledger(home)
    null_q, nan_q = led.quarantined("null.parquet"), led.quarantined("nan.parquet")
    assert "px_3" in null_q["detail"] and "null" in null_q["detail"]
    assert "px_3" in nan_q["detail"] and ("NaN" in nan_q["detail"] or "finite" in nan_q["detail"])
    amounts = {r["account_id"]: r["amount"] for r in led.rewards if r["epoch"] == 1}
    alice = led.contribution("honest.parquet")["account_id"]
    assert amounts[alice] > 0 and all(v >= 0 for v in amounts.values())
    assert all(math.isfinite(v) for v in run.scores.values.values())


# ============================================================================ 4. the house weights refuse NaN


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_house_weights_refuse_non_finite_values(bad):
    with pytest.raises(ValuationError) as e:
        house_weights({"acct-ok": 1.0, "acct-bad": bad})
    assert isinstance(e.value, ValueError)
    assert "acct-bad" in str(e.value) and repr(bad) in str(e.value)


def test_mixed_house_weights_refuse_a_non_finite_model_score():
    with pytest.raises(ValuationError, match="acct-m"):
        mixed_house_weights({"acct-d": 1.0}, {"acct-m": math.nan}, 0.5)
    with pytest.raises(ValuationError, match="acct-d"):
        mixed_house_weights({"acct-d": math.inf}, {}, 0.5)


def test_house_weights_of_finite_values_are_finite_and_sum_to_one():
    w = house_weights({"a": 1e308, "b": 1e308, "c": -5.0})
    assert w == {"a": 0.5, "b": 0.5, "c": 0.0}
    assert mixed_house_weights({"a": 1e-320}, {"b": 3.0}, 0.5) == {"a": 0.5, "b": 0.5}


@pytest.mark.slow
def test_a_nan_value_fails_the_run_loudly_and_the_epoch_settles_once_fixed(market, monkeypatch):
    """A NaN value can only be an internal bug (values are KNN-Shapley of finite features): the run fails with
    ValuationError naming the contributor, nothing is settled, and the same epoch settles on the next run."""
    import engine.epoch as epoch_mod
    from engine.epoch import run_epoch

    home = market.home
    market.submit("alice", digits_table(300, 360), "a1.parquet")
    real_score = epoch_mod.score

    def nan_score(h, epoch=None, snapshot=None):
        s = real_score(h, epoch, snapshot)
        return type(s)(s.epoch, s.submissions, {k: math.nan for k in s.values}, s.inputs, s.model_scores)

    monkeypatch.setattr(epoch_mod, "score", nan_score)
    with pytest.raises(ValuationError, match="nan"):
        run_epoch(home, close=True)
    assert not _settled(home, 1)
    monkeypatch.setattr(epoch_mod, "score", real_score)
    run = run_epoch(home, close=True)
    assert _settled(home, 1) and run.settlement is not None


# ============================================================================ 5. the CLI: user errors vs bugs


def _main(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    from tributary.cli import main

    monkeypatch.setattr(sys, "argv", ["tributary", *args])
    with pytest.raises(SystemExit) as e:
        main()
    return e.value.code, capsys.readouterr().err


@pytest.mark.parametrize("error", [RuntimeError("boom"), ValueError("boom"), KeyError("boom"),
                                   FileNotFoundError("boom"), ValuationError("boom")])
def test_an_internal_error_exits_2_with_its_traceback(market, monkeypatch, capsys, error):
    import engine.epoch as epoch_mod

    def broken(home):
        raise error

    monkeypatch.setattr(epoch_mod, "ingest", broken)
    code, err = _main(monkeypatch, capsys, "--home", str(market.home.root), "epoch", "run")
    assert code == 2
    assert "Traceback (most recent call last)" in err and "in broken" in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("internal error: ") and type(error).__name__ in last and "boom" in last
    assert "a bug: please report it with the traceback above" in last


def test_a_user_error_exits_1_with_one_line(market, monkeypatch, capsys):
    home = str(market.home.root)
    for args, words in [
        (("register", "alice", "--role", "wizard"), "role must be one of"),
        (("grant", "val", "1.5x"), "1.5x"),                                     # ledger.money's declared ValueError
        (("grant", "val", "0.0000000001"), "whole number of base units"),
        (("submit", "/no/such/file.parquet", "--key", "alice", "--task", TASK), "no such file"),
        (("task", "init", "t2", "--holdout", "/no/such/holdout.parquet", "--label", "label"), "no such holdout"),
    ]:
        code, err = _main(monkeypatch, capsys, "--home", home, *args)
        assert code == 1, (args, err)
        assert "Traceback" not in err and words in err and len(err.strip().splitlines()) == 1, (args, err)


def test_a_bad_settings_file_is_a_user_error(market, monkeypatch, capsys):
    (market.home.root / "settings.toml").write_text("no_such_setting = 1\n")
    code, err = _main(monkeypatch, capsys, "--home", str(market.home.root), "audit")
    assert code == 1 and "Traceback" not in err and "no_such_setting" in err
    (market.home.root / "settings.toml").write_text("kappa = \n")
    code, err = _main(monkeypatch, capsys, "--home", str(market.home.root), "audit")
    assert code == 1 and "Traceback" not in err and "line 1" in err


def test_a_task_file_error_during_an_epoch_is_a_user_error(market, monkeypatch, capsys):
    (market.home.paths.tasks / "x.toml").write_text(_task_toml("min = 0.0, max = inf"))
    code, err = _main(monkeypatch, capsys, "--home", str(market.home.root), "epoch", "run")
    assert code == 1 and "Traceback" not in err and "features[1].max" in err


def test_commit_refuses_weights_ingest_would_refuse(market, monkeypatch, capsys, tmp_path):
    w = tmp_path / "w.json"
    w.write_text(json.dumps({"weights": {"c1" * 32: 1e308}}))
    code, err = _main(monkeypatch, capsys, "--home", str(market.home.root), "commit", str(w), "--key", "val")
    assert code == 1 and "Traceback" not in err and "MAX_WEIGHT" in err
    w.write_text(json.dumps([1, 2]))
    code, err = _main(monkeypatch, capsys, "--home", str(market.home.root), "commit", str(w), "--key", "val")
    assert code == 1 and "Traceback" not in err and '"weights"' in err
    assert not list(market.home.paths.drop.iterdir())  # nothing was submitted


def test_an_internal_error_does_not_look_like_a_user_error_in_numpy_land():
    """A ValueError from deep inside the math (here Yuma's own check) is a bug, not the user's fault."""
    from engine.errors import is_user_error
    from rewards.consensus import YumaParams, yuma_epoch

    try:
        yuma_epoch(np.array([[np.inf]]), np.array([1.0]), None, YumaParams())
    except ValueError as e:
        assert not is_user_error(e)
    else:
        pytest.fail("yuma_epoch accepted an infinite weight")


def test_settings_driven_checks_raise_typed_user_errors():
    """A bad value in settings.toml surfaces as the typed SettingError of the function that checks it: exit 1. The
    typed errors stay the builtin types their callers expect (ValueError, FileNotFoundError)."""
    from ledger.money import tokens_to_units
    from rewards.backend import get_xp
    from rewards.consensus import YumaParams
    from engine.errors import is_user_error

    for make in (lambda: YumaParams(yuma_version="yuma4"), lambda: YumaParams(kappa=2.0), lambda: get_xp("tpu"),
                 lambda: tokens_to_units("1.5x"), lambda: tokens_to_units("0.0000000001")):
        with pytest.raises(ValueError) as e:
            make()
        assert is_user_error(e.value), e.value
    assert not is_user_error(ValueError("raised anywhere else"))
    assert not is_user_error(FileNotFoundError("raised anywhere else"))
