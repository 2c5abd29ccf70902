"""quality/: task files, schema casting, file reading and the GX suite, on real small data."""

from __future__ import annotations

import json
import time

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
from sklearn.datasets import load_digits

from quality.errors import QualityError, SchemaError, TaskError
from quality.schema import cast_to_task, read_table
from quality.suite import Report, build_suite, validate
from quality.task import Feature, Task, load_task, load_tasks, task_from_holdout, write_task

PX = [f"px_{i}" for i in range(64)]


@pytest.fixture(scope="module")
def digits() -> pa.Table:
    """The 1797 8x8 digit images: 64 float64 pixel columns in [0, 16] and an int64 label 0..9."""
    d = load_digits()
    return pa.table({**{name: d.data[:, i] for i, name in enumerate(PX)}, "label": d.target.astype(np.int64)})


@pytest.fixture(scope="module")
def holdout(digits, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("holdout") / "digits.parquet"
    pq.write_table(digits, path)
    return str(path)


@pytest.fixture(scope="module")
def task(holdout) -> Task:
    return task_from_holdout("digits", holdout, "label", holdout_ref="holdout/digits.parquet")


@pytest.fixture()
def small() -> Task:
    """A small task so the GX failure tests run few expectations."""
    return Task(
        name="small",
        features=(Feature("a", "float64", 0.0, 16.0), Feature("b", "int64", -5.0, 5.0)),
        label="y", label_dtype="int64", label_domain=(0, 1, 2), min_rows=10,
    )


def small_table(n: int = 20, **override) -> pa.Table:
    cols = {
        "a": pa.array(np.linspace(0, 16, n)),
        "b": pa.array(np.arange(n) % 11 - 5, pa.int64()),
        "y": pa.array(np.arange(n) % 3, pa.int64()),
    }
    cols.update(override)
    return pa.table(cols)


# --- task files ------------------------------------------------------------------------------------------------


def test_task_from_holdout_schema_and_ranges(task, digits):
    assert task.feature_names() == PX
    assert task.columns() == PX + ["label"]
    assert task.label_dtype == "int64" and task.label_domain == tuple(range(10))
    assert task.holdout == "holdout/digits.parquet"
    assert all(f.dtype == "float64" for f in task.features)  # integer-valued floats stay float64
    px_20 = task.features[20]
    assert (px_20.min, px_20.max) == (-16.0, 32.0)  # [0, 16] widened by 1 * span on each side
    px_0 = task.features[0]
    assert (px_0.min, px_0.max) == (-1.0, 1.0)  # constant 0: span 0, widened by max(span, 1) = 1
    assert task.arrow_schema() == pa.schema([*(pa.field(n, pa.float64()) for n in PX), pa.field("label", pa.int64())])


def test_task_from_holdout_dtypes_and_margin(tmp_path):
    path = tmp_path / "h.parquet"
    pq.write_table(pa.table({
        "i": pa.array([1, 2, 4], pa.int32()),
        "x": pa.array([0.5, 1.0, 2.5]),
        "species": ["setosa", "virginica", "setosa"],
    }), path)
    t = task_from_holdout("iris", path, "species", range_margin=0.5)
    assert [(f.name, f.dtype, f.min, f.max) for f in t.features] == [
        ("i", "int64", -1.0, 6.0),       # span 3, pad 1.5, rounded outward to whole numbers
        ("x", "float64", -0.5, 3.5),     # span 2, pad 1.0
    ]
    assert t.label_dtype == "string" and t.label_domain == ("setosa", "virginica")
    assert t.holdout == str(path)

    pq.write_table(pa.table({"x": [1.0, 2.0], "y": [1.0, 0.0]}), path)
    t = task_from_holdout("f", path, "y")
    assert t.label_dtype == "int64" and t.label_domain == (0, 1)  # whole-number float labels become int64


def test_task_from_holdout_errors(tmp_path):
    path = tmp_path / "h.parquet"
    pq.write_table(pa.table({"x": [1.0], "y": [0]}), path)
    with pytest.raises(TaskError, match="no label column 'label'"):
        task_from_holdout("t", path, "label")
    with pytest.raises(TaskError, match="cannot read"):
        task_from_holdout("t", tmp_path / "absent.parquet", "y")


def test_write_load_round_trip(task, tmp_path):
    path = tmp_path / "tasks" / "digits.toml"
    write_task(task, path)
    text = path.read_text()
    assert "[valuation]" in text and '{ name = "px_63", dtype = "float64", min = -16.0, max = 32.0 }' in text
    assert load_task(path) == task

    strings = Task(name="iris", features=(Feature("x", "int64", -1.0, float("inf")),), label="species",
                   label_dtype="string", label_domain=("virginica", "setosa"), min_rows=1, max_rows=50,
                   max_null_fraction=0.25, holdout="/abs/h.parquet", k=3)
    assert strings.label_domain == ("setosa", "virginica")  # kept sorted
    write_task(strings, tmp_path / "tasks" / "iris.toml")
    assert load_task(tmp_path / "tasks" / "iris.toml") == strings
    assert load_tasks(tmp_path / "tasks") == {"digits": task, "iris": strings}


GOOD_TOML = """
name = "t"
label = "y"
label_dtype = "int64"
label_domain = [0, 1]

[[features]]
name = "a"
dtype = "float64"
min = 0.0
max = 1
"""


@pytest.mark.parametrize("edit, key, words", [
    (lambda s: s.replace('label = "y"\n', ""), "label", "missing"),
    (lambda s: s.replace('"int64"', '"int32"'), "label_dtype", "expected one of int64, string"),
    (lambda s: s.replace("[0, 1]", '[0, "one"]'), "label_domain", "must be integers"),
    (lambda s: s.replace("min = 0.0", 'min = "low"'), "features[0].min", "expected a number"),
    (lambda s: s.replace("max = 1", "max = -1"), "features[0].max", "below min"),
    (lambda s: s.replace('dtype = "float64"', 'dtype = "float"'), "features[0].dtype", "expected one of"),
    (lambda s: s + "\n[valuation]\nk = 0\n", "valuation.k", "must be >= 1"),
    (lambda s: s.replace('name = "t"', 'name = "t"\nmax_row = 5'), "max_row", "unknown key"),
    (lambda s: s.replace('name = "a"', 'name = "y"'), "features[0].name", "appears twice"),
])
def test_load_task_names_file_and_key(tmp_path, edit, key, words):
    path = tmp_path / "t.toml"
    path.write_text(edit(GOOD_TOML))
    with pytest.raises(TaskError) as info:
        load_task(path)
    msg = str(info.value)
    assert str(path) in msg and f"key '{key}'" in msg and words in msg
    assert info.value.key == key and info.value.file == str(path)


def test_load_task_unreadable(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text(GOOD_TOML)
    assert load_task(path).features == (Feature("a", "float64", 0.0, 1.0),)
    path.write_text("name = [unclosed")
    with pytest.raises(TaskError, match="not a readable TOML file"):
        load_task(path)
    with pytest.raises(TaskError, match="no such task file"):
        load_task(tmp_path / "absent.toml")
    (tmp_path / "u.toml").write_text(GOOD_TOML)
    path.write_text(GOOD_TOML)
    with pytest.raises(TaskError, match="already defined"):
        load_tasks(tmp_path)


# --- schema ----------------------------------------------------------------------------------------------------


def test_cast_to_task_orders_and_casts(small):
    raw = pa.table({"y": pa.array([0, 2], pa.int8()), "b": pa.array([1.0, -5.0]), "a": pa.array([3, 4])})
    out = cast_to_task(raw, small)
    assert out.schema == small.arrow_schema()
    assert out.to_pydict() == {"a": [3.0, 4.0], "b": [1, -5], "y": [0, 2]}


def test_cast_to_task_string_label():
    t = Task(name="s", features=(Feature("x", "float64", 0, 1),), label="c", label_dtype="string",
             label_domain=("a", "b"))
    out = cast_to_task(pa.table({"x": [0.5], "c": pa.array(["a"], pa.large_string())}), t)
    assert out.schema.field("c").type == pa.string()


@pytest.mark.parametrize("table, column, rule", [
    (small_table().drop(["b"]), "b", "missing column"),
    (small_table().append_column("z", pa.array([0] * 20)), "z", "unexpected column; the task's columns are a, b, y"),
    (small_table(a=pa.array(["1.5"] * 19 + ["abc"])), "a", "cannot cast to float64: 'abc' (row 19"),
    (small_table(y=pa.array([0.0] * 7 + [3.5] + [1.0] * 12)), "y", "cannot cast to int64: 3.5 (row 7"),
    (small_table(b=pa.array([2**40] * 20, pa.uint64()).cast(pa.int64()).cast(pa.string())), None, None),
])
def test_cast_errors_name_column_and_rule(small, table, column, rule):
    if column is None:  # strings of whole numbers cast fine
        assert cast_to_task(table, small).column("b")[0].as_py() == 2**40
        return
    with pytest.raises(SchemaError) as info:
        cast_to_task(table, small, file="batch.csv")
    e = info.value
    assert (e.file, e.field) == ("batch.csv", column) and e.rule.startswith(rule)
    assert str(e).startswith(f"batch.csv: column '{column}': {rule}")
    assert isinstance(e, QualityError)


def test_cast_long_column_list_is_abbreviated(task, digits):
    with pytest.raises(SchemaError, match=r"columns are px_0, px_1, px_2, px_3, \.\.\., px_63, label \(65 in all\)"):
        cast_to_task(digits.append_column("extra", pa.array(np.zeros(len(digits)))), task)


def test_read_table_formats(tmp_path, small):
    t = small_table()
    pq.write_table(t, tmp_path / "d.parquet")
    feather.write_feather(t, tmp_path / "d.feather")
    with pa.OSFile(str(tmp_path / "d.arrow"), "wb") as sink, pa.ipc.new_file(sink, t.schema) as w:
        w.write_table(t)
    with pa.OSFile(str(tmp_path / "d.ipc"), "wb") as sink, pa.ipc.new_stream(sink, t.schema) as w:
        w.write_table(t)  # the stream format, also accepted
    pcsv.write_csv(t, tmp_path / "d.csv")
    for name in ("d.parquet", "d.feather", "d.arrow", "d.ipc", "d.csv"):
        got = cast_to_task(read_table(tmp_path / name), small)
        assert got.equals(t), name


def test_read_table_unreadable(tmp_path):
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    (tmp_path / "junk.arrow").write_bytes(b"not arrow")
    (tmp_path / "ragged.csv").write_text("a,b\n1,2\n3\n")
    (tmp_path / "d.xlsx").write_bytes(b"")
    for name, words in [("junk.parquet", "not a valid Parquet file"), ("junk.arrow", "not a valid Arrow IPC file"),
                        ("ragged.csv", "not a valid CSV file"), ("d.xlsx", "unsupported file type '.xlsx'"),
                        ("absent.csv", "no such file")]:
        with pytest.raises(SchemaError) as info:
            read_table(tmp_path / name)
        assert info.value.rule.startswith("unreadable: ") and words in info.value.rule, name
        assert str(info.value) == f"{tmp_path / name}: {info.value.rule}"


def test_csv_bad_value_names_column(tmp_path, small):
    (tmp_path / "d.csv").write_text("a,b,y\n" + "1.5,2,0\n" * 11 + "abc,1,1\n")
    with pytest.raises(SchemaError, match=r"d.csv: column 'a': cannot cast to float64: 'abc' \(row 11"):
        cast_to_task(read_table(tmp_path / "d.csv"), small, file="d.csv")


# --- the GX suite ----------------------------------------------------------------------------------------------


def test_build_suite_has_one_expectation_per_rule(task):
    suite = build_suite(task)
    assert len(suite.expectations) == 2 + 3 * 64 + 3
    kinds = [e.expectation_type for e in suite.expectations]
    assert kinds[:2] == ["expect_table_row_count_to_be_between", "expect_table_columns_to_match_ordered_list"]
    assert kinds[-1] == "expect_column_values_to_be_in_set"


def test_validate_digits_passes(task, digits):
    report = validate(cast_to_task(digits.slice(0, 1000), task), task)
    assert report.success and report.rows == 1000 and not report.failures()
    assert len(report.lines) == 197 and report.summary() == "all 197 expectations passed"
    assert report.lines[0].detail == "table: 1000 rows, within the allowed 10..1000000"
    assert report.lines[4].detail == "column 'px_0': all 1000 non-null values within [-1.0, 1.0]"
    assert json.loads(json.dumps(report.to_dict()))["lines"][2]["column"] == "px_0"


def test_validate_out_of_range(task, digits):
    t = digits.slice(0, 200)
    px_3 = t.column("px_3").to_numpy().copy()
    px_3[:12] = 40.0
    t = t.set_column(3, "px_3", pa.array(px_3))
    report = validate(t, task)
    assert not report.success
    (line,) = report.failures()
    assert (line.expectation, line.column) == ("expect_column_values_to_be_between", "px_3")
    assert line.detail == "column 'px_3': 12 of 200 values outside [-16.0, 32.0] (e.g. 40.0)"
    assert report.summary() == line.detail


def test_validate_label_outside_domain(small):
    report = validate(small_table(y=pa.array([42, 7, 42] + [0] * 17, pa.int64())), small)
    (line,) = report.failures()
    assert (line.expectation, line.column) == ("expect_column_values_to_be_in_set", "y")
    assert line.detail == "column 'y': 3 values not in the label domain (e.g. 42, 7)"


def test_validate_nulls(small):
    a = pa.array([None, None] + [1.0] * 18)
    b = pa.array([None] + [0] * 19, pa.int64())
    report = validate(small_table(a=a, b=b), small)
    assert {(f.expectation, f.column) for f in report.failures()} == {
        ("expect_column_values_to_not_be_null", "a"), ("expect_column_values_to_not_be_null", "b")}
    assert "column 'a': 2 of 20 values null (none allowed)" in report.summary()
    # int columns stay int64 in pandas (nullable), so a null does not also fail the type check
    assert all(line.success for line in report.lines if line.expectation.endswith("of_type"))

    lenient = Task(**{**small.__dict__, "max_null_fraction": 0.1})
    report = validate(small_table(a=a, b=b), lenient)
    assert report.success, report.summary()
    assert validate(small_table(a=pa.array([None] * 3 + [1.0] * 17)), lenient).summary() == (
        "column 'a': 3 of 20 values null (at most 10% allowed)")

    report = validate(small_table(y=pa.array([None] + [0] * 19, pa.int64())), lenient)  # never for the label
    assert [f.column for f in report.failures()] == ["y"]


def test_validate_too_few_rows(small):
    report = validate(small_table(5), small)
    (line,) = report.failures()
    assert line.expectation == "expect_table_row_count_to_be_between" and line.column is None
    assert line.detail == "table: 5 rows, outside the allowed 10..1000000"


def test_validate_uncast_table_reports_instead_of_raising(small):
    raw = small_table().drop(["b"]).append_column("z", pa.array(["x"] * 20))
    raw = raw.set_column(0, "a", pa.array(["1"] * 20))
    report = validate(raw, small)
    details = [f.detail for f in report.failures()]
    assert "table: missing 'b'; unexpected 'z'" in details
    assert "column 'b': missing, so it could not be checked" in details
    assert "column 'a': 20 of 20 values are not of type float64 (e.g. '1')" in details
    assert any(d.startswith("column 'a': could not be checked (Column values") for d in details)


def test_validate_string_label(tmp_path):
    t = Task(name="s", features=(Feature("x", "float64", 0, 1),), label="c", label_dtype="string",
             label_domain=("cat", "dog"), min_rows=1)
    good = pa.table({"x": [0.1, 0.9], "c": ["cat", "dog"]})
    assert validate(good, t).success
    (line,) = validate(pa.table({"x": [0.1, 0.9], "c": ["cat", "cow"]}), t).failures()
    assert line.detail == "column 'c': 1 values not in the label domain (e.g. 'cow')"


def test_validate_is_quick_after_warm_up(task, digits):
    table = cast_to_task(digits.slice(0, 1000), task)
    validate(table, task)
    start = time.perf_counter()
    report = validate(table, task)
    assert report.success and time.perf_counter() - start < 15  # ~1-2 s; generous for loaded CI machines
    assert isinstance(report, Report)


def test_cast_predictions_names_column_and_rule():
    from quality.schema import cast_predictions
    from quality.task import Feature, Task

    t = Task("p", (Feature("a", "float64", 0.0, 1.0),), "y", "int64", (0, 1, 2))
    assert t.prediction_columns() == ["row_id", "p_0", "p_1", "p_2"]
    ok = cast_predictions(pa.table({"row_id": [0, 1], "p_0": [0.2, 1.0], "p_1": [0.3, 0.0], "p_2": [0.5, 0.0]}), t)
    assert ok.schema.field("row_id").type == pa.int64() and ok.schema.field("p_1").type == pa.float64()
    with pytest.raises(SchemaError, match="column 'p_2': missing column"):
        cast_predictions(pa.table({"row_id": [0], "p_0": [0.5], "p_1": [0.5]}), t, file="x.parquet")
    with pytest.raises(SchemaError, match="'extra': unexpected column; predictions have columns row_id"):
        cast_predictions(pa.table({"row_id": [0], "p_0": [1.0], "p_1": [0.0], "p_2": [0.0], "extra": [1]}), t)
    with pytest.raises(SchemaError, match=r"row 1: probabilities sum to 1\.5"):
        cast_predictions(pa.table({"row_id": [0, 1], "p_0": [1.0, 1.0], "p_1": [0.0, 0.5], "p_2": [0.0, 0.0]}), t)
