"""quality/: task files (hard rules and profile), the one reader, schema casts and the GX gate, on real small data."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
from sklearn.datasets import load_digits

from quality.errors import QualityError, SchemaError, TaskError, UnreadableError
from quality.gate import check_file, check_predictions, check_table, gate, gate_predictions
from quality.holdout import task_from_holdout
from quality.reader import read_table_bytes
from quality.reader import read_table
from quality.schema import cast_to_task
from quality.statistics import predictions_stats, submission_stats
from quality.suite import Report, validate
from quality.task import PROFILE_MARGIN, Feature, FeatureProfile, Task
from quality.task_toml import load_task, load_tasks, write_task

PX = [f"px_{i}" for i in range(64)]


@pytest.fixture(scope="module")
def digits() -> pa.Table:
    """The 1797 8x8 digit images: 64 float64 pixel columns in [0, 16] and an int64 label 0..9."""
    d = load_digits()
    return pa.table({**{name: d.data[:, i] for i, name in enumerate(PX)}, "label": d.target.astype(np.int64)})


@pytest.fixture(scope="module")
def holdout(digits, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("holdout") / "digits.parquet"
    pq.write_table(digits.slice(0, 600), path)
    return str(path)


@pytest.fixture(scope="module")
def task(holdout) -> Task:
    """Digits with the operator's declared pixel bounds 0..16."""
    return task_from_holdout("digits", holdout, "label", bounds={"*": (0.0, 16.0)}, holdout_ref="holdout/digits.parquet")


@pytest.fixture()
def small() -> Task:
    """A small task: a in [0, 16] declared, b undeclared; labels 0..2."""
    return Task(
        name="small",
        features=(Feature("a", "float64", 0.0, 16.0), Feature("b", "int64")),
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


def test_task_from_holdout_infers_only_what_a_sample_proves(holdout):
    t = task_from_holdout("digits", holdout, "label")
    assert t.feature_names() == PX and t.columns() == PX + ["label"]
    assert t.label_dtype == "int64" and t.label_domain == tuple(range(10))
    assert all(f.dtype == "float64" and f.min is None and f.max is None for f in t.features)  # no inferred bounds
    assert t.holdout == holdout and not t.reject_suspicious
    assert t.arrow_schema() == pa.schema([*(pa.field(n, pa.float64()) for n in PX), pa.field("label", pa.int64())])
    p20 = t.profile_of("px_20")
    assert p20.min <= p20.q01 <= p20.q50 <= p20.q99 <= p20.max and (p20.min, p20.max) == (0.0, 16.0)
    lo, hi = p20.band()
    assert lo < 0 and hi == p20.q99 + PROFILE_MARGIN * p20.span()
    p0 = t.profile_of("px_0")  # constant 0 in digits: a unit span, so the band is not empty
    assert (p0.q01, p0.q99) == (0.0, 0.0) and p0.band() == (-PROFILE_MARGIN, PROFILE_MARGIN)


def test_task_from_holdout_bounds_labels_and_dtypes(tmp_path):
    table = pa.table({"i": pa.array([1, 2, 4], pa.int32()), "x": pa.array([0.5, 1.0, 2.5]),
                      "species": ["setosa", "virginica", "setosa"]})
    t = task_from_holdout("iris", table, "species", extra_labels=["versicolor"], bounds={"*": (0, 10), "x": (0, 3)})
    assert [(f.name, f.dtype, f.min, f.max) for f in t.features] == [("i", "int64", 0.0, 10.0),
                                                                     ("x", "float64", 0.0, 3.0)]
    assert t.label_dtype == "string" and t.label_domain == ("setosa", "versicolor", "virginica")
    path = tmp_path / "h.parquet"
    pq.write_table(pa.table({"x": [1.0, 2.0], "y": [1.0, 0.0]}), path)
    t = task_from_holdout("f", path, "y", extra_labels=["2", 3])
    assert t.label_dtype == "int64" and t.label_domain == (0, 1, 2, 3)  # whole-number float labels become int64


@pytest.mark.parametrize("bounds, words", [
    ({"x": (0.0, float("inf"))}, "finite"), ({"x": (1.0, 1.0)}, "must be above min"),
    ({"x": (float("nan"), 1.0)}, "finite"), ({"nope": (0, 1)}, "not a feature"), ({"y": (0, 1)}, "not a feature"),
])
def test_task_from_holdout_bad_bounds(bounds, words):
    with pytest.raises(TaskError, match=words):
        task_from_holdout("t", pa.table({"x": [1.0, 2.0], "y": [0, 1]}), "y", bounds=bounds)


def test_task_from_holdout_errors(tmp_path):
    path = tmp_path / "h.parquet"
    pq.write_table(pa.table({"x": [1.0], "y": [0]}), path)
    with pytest.raises(TaskError, match="no label column 'label'"):
        task_from_holdout("t", path, "label")
    with pytest.raises(TaskError, match="cannot read"):
        task_from_holdout("t", tmp_path / "absent.parquet", "y")
    with pytest.raises(TaskError, match="1 of 1 values are NaN or infinite"):  # any non-finite value, not only all
        task_from_holdout("t", pa.table({"x": [float("nan")], "y": [0]}), "y")


def test_write_load_round_trip(task, tmp_path):
    path = tmp_path / "tasks" / "digits.toml"
    write_task(task, path)
    text = path.read_text()
    assert "[valuation]" in text and '{ name = "px_63", dtype = "float64", min = 0.0, max = 16.0 }' in text
    assert re.search(r"^\[profile\]$", text, re.M) and re.search(r"^px_20 = \{ q01 = ", text, re.M)
    assert "max_null_fraction" not in text and "reject_suspicious = false" in text
    assert load_task(path) == task

    strings = Task(name="iris", features=(Feature("x", "int64", -1.0, None), Feature("odd name", "float64")),
                   label="species", label_dtype="string", label_domain=("virginica", "setosa"), min_rows=1,
                   max_rows=50, holdout="/abs/h.parquet", k=3, reject_suspicious=True,
                   profile=(FeatureProfile("odd name", 0.0, 1.0, 2.0, -1.0, 3.0),))
    assert strings.label_domain == ("setosa", "virginica")  # kept sorted
    write_task(strings, tmp_path / "tasks" / "iris.toml")
    assert load_task(tmp_path / "tasks" / "iris.toml") == strings
    assert load_tasks(tmp_path / "tasks") == {"digits": task, "iris": strings}


GOOD_TOML = """
name = "t"
label = "y"
label_dtype = "int64"
label_domain = [0, 1]
max_null_fraction = 0.0

[[features]]
name = "a"
dtype = "float64"
min = 0.0
max = 1

[profile]
a = { q01 = 0.1, q50 = 0.5, q99 = 0.9, min = 0.0, max = 1.0 }
"""


@pytest.mark.parametrize("edit, key, words", [
    (lambda s: s.replace('label = "y"\n', ""), "label", "missing"),
    (lambda s: s.replace('"int64"', '"int32"'), "label_dtype", "expected one of int64, string"),
    (lambda s: s.replace("[0, 1]", '[0, "one"]'), "label_domain", "must be integers"),
    (lambda s: s.replace("[0, 1]", "[]"), "label_domain", "at least one"),
    (lambda s: s.replace("min = 0.0\n", 'min = "low"\n'), "features[0].min", "expected a number"),
    (lambda s: s.replace("max = 1\n", "max = inf\n"), "features[0].max", "finite"),
    (lambda s: s.replace("min = 0.0\n", "min = nan\n"), "features[0].min", "finite"),
    (lambda s: s.replace("max = 1\n", "max = -1\n"), "features[0].max", "must be above min"),
    (lambda s: s.replace("max = 1\n", "max = 0.0\n"), "features[0].max", "must be above min"),
    (lambda s: s.replace('dtype = "float64"', 'dtype = "float"'), "features[0].dtype", "expected one of"),
    (lambda s: s.replace("[[features]]", "[valuation]\nk = 0\n\n[[features]]"), "valuation.k", "must be >= 1"),
    (lambda s: s.replace("[[features]]", "[valuation]\nnear_duplicate_tol = inf\n\n[[features]]"),
     "valuation.near_duplicate_tol", "finite"),
    (lambda s: s.replace("[[features]]", "[valuation]\nnear_duplicate_tol = 0.0\n\n[[features]]"),
     "valuation.near_duplicate_tol", "must be > 0"),
    (lambda s: s.replace('name = "t"', 'name = "t"\nmax_row = 5'), "max_row", "unknown key"),
    (lambda s: s.replace('name = "t"', 'name = "t"\nmin_rows = 50\nmax_rows = 5'), "max_rows", "below min_rows"),
    (lambda s: s.replace('name = "t"', 'name = "t"\nmin_rows = 0'), "min_rows", "must be >= 1"),
    (lambda s: s.replace("max_null_fraction = 0.0", "max_null_fraction = 0.1"), "max_null_fraction",
     "features must be non-null"),
    (lambda s: s.replace('name = "t"', 'name = "t"\nreject_suspicious = 1'), "reject_suspicious", "true or false"),
    (lambda s: s.replace('name = "a"', 'name = "y"'), "features[0].name", "appears twice"),
    (lambda s: s.replace("a = {", "b = {"), "profile.b", "not a feature"),
    (lambda s: s.replace("q50 = 0.5", "q50 = 0.95"), "profile.a", "min <= q01 <= q50 <= q99 <= max"),
    (lambda s: s.replace("q99 = 0.9", "q99 = inf"), "profile.a.q99", "finite"),
    (lambda s: s.replace("q99 = 0.9,", "q99 = 0.9, q75 = 0.7,"), "profile.a.q75", "unknown key"),
])
def test_load_task_names_file_and_key(tmp_path, edit, key, words):
    path = tmp_path / "t.toml"
    path.write_text(edit(GOOD_TOML))
    with pytest.raises(TaskError) as info:
        load_task(path)
    msg = str(info.value)
    assert str(path) in msg and f"key '{key}'" in msg and words in msg, msg
    assert info.value.key == key and info.value.file == str(path)


def test_old_task_files_load_with_declared_bounds(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text(GOOD_TOML.split("[profile]")[0])  # the layout task init wrote before profiles
    t = load_task(path)
    assert t.features == (Feature("a", "float64", 0.0, 1.0),) and t.profile == ()
    path.write_text(GOOD_TOML.replace("min = 0.0\nmax = 1\n", ""))
    assert load_task(path).features == (Feature("a", "float64", None, None),)


def test_load_task_unreadable(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text("name = [unclosed")
    with pytest.raises(TaskError, match="not a readable TOML file"):
        load_task(path)
    with pytest.raises(TaskError, match="no such task file"):
        load_task(tmp_path / "absent.toml")
    (tmp_path / "u.toml").write_text(GOOD_TOML)
    path.write_text(GOOD_TOML)
    with pytest.raises(TaskError, match="already defined"):
        load_tasks(tmp_path)


def test_task_refuses_nullable_features():
    with pytest.raises(TaskError, match="features must be non-null"):
        Task("t", (Feature("a", "float64"),), "y", "int64", (0,), max_null_fraction=0.1)


# --- schema ----------------------------------------------------------------------------------------------------


def test_cast_to_task_orders_and_casts(small):
    raw = pa.table({"y": pa.array([0, 2], pa.int8()), "b": pa.array([1.0, -5.0]), "a": pa.array([3, 4])})
    out = cast_to_task(raw, small)
    assert out.schema == small.arrow_schema()
    assert out.to_pydict() == {"a": [3.0, 4.0], "b": [1, -5], "y": [0, 2]}


def test_cast_to_task_string_label():
    t = Task(name="s", features=(Feature("x", "float64"),), label="c", label_dtype="string",
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


# --- the one reader --------------------------------------------------------------------------------------------


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
        assert cast_to_task(read_table(tmp_path / name), small).equals(t), name
        data = (tmp_path / name).read_bytes()
        assert cast_to_task(read_table_bytes(data, name), small).equals(t), name


def test_read_table_unreadable(tmp_path, small):
    pq.write_table(small_table(200), tmp_path / "good.parquet")
    whole = (tmp_path / "good.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    (tmp_path / "junk.arrow").write_bytes(b"not arrow")
    (tmp_path / "ragged.csv").write_text("a,b\n1,2\n3\n")
    (tmp_path / "latin1.csv").write_bytes(b"a,b\n\xe9t\xe9,2\n")
    (tmp_path / "d.xlsx").write_bytes(b"")
    for name, words in [("cut.parquet", "truncated"), ("junk.parquet", "not a valid Parquet file"),
                        ("junk.arrow", "not a valid Arrow IPC file"), ("ragged.csv", "different numbers of fields"),
                        ("latin1.csv", "not UTF-8"), ("d.xlsx", "unsupported file type '.xlsx'"),
                        ("absent.csv", "no such file")]:
        with pytest.raises(UnreadableError) as info:
            read_table(tmp_path / name)
        assert info.value.rule.startswith("unreadable: ") and words in info.value.rule, (name, info.value.rule)
        assert str(info.value) == f"{tmp_path / name}: {info.value.rule}"
        assert isinstance(info.value, SchemaError)


def test_read_table_opens_only_regular_files(tmp_path):
    pq.write_table(small_table(), tmp_path / "real.parquet")
    os.symlink(tmp_path / "real.parquet", tmp_path / "link.parquet")
    os.mkfifo(tmp_path / "pipe.csv")
    (tmp_path / "dir.csv").mkdir()
    for name, words in [("link.parquet", "symbolic link"), ("pipe.csv", "not a regular file"),
                        ("dir.csv", "not a regular file")]:
        with pytest.raises(UnreadableError, match=words):
            read_table(tmp_path / name)


def test_csv_bad_value_names_column(tmp_path, small):
    (tmp_path / "d.csv").write_text("a,b,y\n" + "1.5,2,0\n" * 11 + "abc,1,1\n")
    with pytest.raises(SchemaError, match=r"d.csv: column 'a': cannot cast to float64: 'abc' \(row 11"):
        cast_to_task(read_table(tmp_path / "d.csv"), small, file="d.csv")


# --- statistics ------------------------------------------------------------------------------------------------


def test_submission_stats(small):
    a = np.linspace(0, 16, 20)
    a[[0, 1]] = [np.nan, np.inf]
    a[5] = 99.0
    t = cast_to_task(small_table(a=pa.array(list(a[:19]) + [None]), y=pa.array([5] + [0] * 19, pa.int64())), small)
    s = submission_stats(t, small, "sub-1")
    assert s["submission_id"] == "sub-1" and s["rows"] == 20
    assert (s["a__nulls"], s["a__nonfinite"], s["a__max"], s["a__outside"]) == (1, 2, 99.0, 1)
    assert s["a__min"] == pytest.approx(a[2])
    assert (s["b__nulls"], s["b__nonfinite"], s["b__min"], s["b__max"]) == (0, 0, -5.0, 5.0)
    assert "b__outside" not in s and "a__far" not in s  # no declared bounds on b; no profile in this task
    assert (s["y__nulls"], s["y__not_in_domain"], s["y__examples"]) == (0, 1, "5")


# --- the GX gate -----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_digits_pass(task, digits):
    report = check_table(cast_to_task(digits.slice(600, 1000), task), task)
    assert report.success and report.rows == 1000 and not report.failures() and not report.suspicious
    assert len(report.lines) == 1 + 64 * 4 + 2 and report.summary() == f"all {len(report.lines) - 64} hard rules passed"
    assert report.lines[0].detail == "table: 1000 rows, within the allowed 10..1000000"
    px0 = [line for line in report.lines if line.column == "px_0"]
    assert [(line.expectation, line.hard) for line in px0] == [
        ("not_null", True), ("finite", True), ("declared_bounds", True), ("profile", False)]
    assert px0[2].detail == "column 'px_0': all values within the declared bounds [0.0, 16.0]"
    d = json.loads(json.dumps(report.to_dict()))
    assert d["lines"][1]["column"] == "px_0" and d["lines"][1]["observed"] == "0" and d["suspicious"] == []
    assert validate(digits.slice(600, 100), task) == check_table(digits.slice(600, 100), task)  # the old name


@pytest.mark.slow
def test_declared_bounds_detail(task, digits):
    t = digits.slice(600, 50)
    px = t.column("px_10").to_numpy().copy()
    px[::10] = 99.0
    report = check_table(t.set_column(10, "px_10", pa.array(px)), task)
    assert not report.success
    (line,) = [line for line in report.failures() if line.hard]
    assert (line.expectation, line.column, line.observed) == ("declared_bounds", "px_10", "min 0.0, max 99.0")
    assert line.detail == "column 'px_10': 5 of 50 values outside the declared bounds [0.0, 16.0] (max 99.0)"
    assert report.summary().startswith(line.detail)


@pytest.mark.slow
def test_failures_name_rule_and_column(small):
    cases = {
        "nulls": (small_table(a=pa.array([None, None] + [1.0] * 18)), "column 'a': 2 of 20 values null"),
        "nan": (small_table(a=pa.array([np.nan] + [1.0] * 19)), "column 'a': 1 of 20 values not finite"),
        "label": (small_table(y=pa.array([42, 7, 42] + [0] * 17, pa.int64())),
                  "column 'y': 3 of 20 labels not in the label domain [0, 1, 2] (e.g. 42, 7)"),
        "rows": (small_table(5), "table: 5 rows, outside the allowed 10..1000000"),
        "low": (small_table(a=pa.array([-1.0] + [1.0] * 19)),
                "column 'a': 1 of 20 values outside the declared bounds [0.0, 16.0] (min -1.0)"),
    }
    for name, (table, detail) in cases.items():
        report = check_table(table, small)
        assert not report.success and report.summary().startswith(detail), (name, report.summary())


@pytest.mark.slow
def test_gate_attributes_each_failure_to_its_submission(task, digits):
    tables = [cast_to_task(digits.slice(600 + 20 * i, 20), task) for i in range(30)]
    bad_px = tables[7].column("px_3").to_numpy().copy()
    bad_px[0] = 40.0
    tables[7] = tables[7].set_column(3, "px_3", pa.array(bad_px))
    tables[12] = tables[12].slice(0, 3)
    y = tables[20].column("label").to_numpy().copy()
    y[1] = 11
    tables[20] = tables[20].set_column(64, "label", pa.array(y))
    stats = [submission_stats(t, task, f"sub-{i:02d}") for i, t in enumerate(tables)]
    reports = gate(stats, task)
    failed = {sid: [(line.expectation, line.column) for line in r.failures() if line.hard]
              for sid, r in reports.items() if not r.success}
    assert failed == {"sub-07": [("declared_bounds", "px_3")], "sub-12": [("row_count", None)],
                      "sub-20": [("label_domain", "label")]}
    assert reports["sub-07"].failures()[0].observed == "min 0.0, max 40.0"
    with pytest.raises(ValueError, match="appears twice"):
        gate(stats[:2] + stats[:1], task)
    with pytest.raises(ValueError, match="lack 'px_0__nulls'"):
        gate([{"submission_id": "x", "rows": 10}], task)
    assert gate([], task) == {}


@pytest.mark.slow
def test_check_file_and_data_docs_offline(task, digits, tmp_path):
    path = tmp_path / "shard.parquet"
    pq.write_table(digits.slice(600, 100), path)
    report = check_file(path, task, docs_dir=tmp_path / "docs")
    assert report.success and report.docs == str((tmp_path / "docs" / "index.html").resolve())
    pages = list((tmp_path / "docs").rglob("*.html"))
    assert len(pages) >= 3
    remote = re.compile(r"<(?:link|script)\b[^>]*(?:href|src)\s*=\s*[\"']?(?:https?:)?//", re.I)
    for page in pages:
        text = page.read_text()
        assert not remote.search(text), page
        assert "tributary: offline stylesheet" in text
    index = (tmp_path / "docs" / "index.html").read_text()
    assert 'href="validations/' in index  # a plain link list: GX's own index table needs jQuery
    with pytest.raises(UnreadableError):
        check_file(tmp_path / "absent.parquet", task)


def _page_shape(page: Path) -> str:
    """A Data Docs page with what differs between two runs (times, run and element ids, counts) blanked out."""
    return re.sub(r"\d+", "0", re.sub(r"[0-9a-f]{8,}(?:-[0-9a-f]{4,})*", "X", page.read_text()))


def test_data_docs_templates_compile_once_per_process(task, digits, tmp_path, monkeypatch):
    """GX makes a new Jinja environment per page; the shared bytecode cache means a second gate with Data Docs
    compiles no template again, and renders the same pages as the first (times and ids aside)."""
    import jinja2

    bad = cast_to_task(digits.slice(600, 50), task)
    bad = bad.set_column(0, bad.schema.field(0), pa.array([None] + bad.column(0).to_pylist()[1:], bad.schema.field(0).type))
    stats = [submission_stats(cast_to_task(digits.slice(700, 50), task), task, "good"),
             submission_stats(bad, task, "bad")]
    first = gate(stats, task, docs_dir=tmp_path / "a")
    compiled: list[str] = []
    compile_template = jinja2.Environment.compile

    def counting(self, source, name=None, filename=None, raw=False, defer_init=False):
        compiled.append(name)
        return compile_template(self, source, name, filename, raw, defer_init)

    monkeypatch.setattr(jinja2.Environment, "compile", counting)
    second = gate(stats, task, docs_dir=tmp_path / "b")
    assert compiled == []
    assert [r.success for r in first.values()] == [r.success for r in second.values()] == [True, False]
    pages_a = sorted(p.relative_to(tmp_path / "a").parts[0] for p in (tmp_path / "a").rglob("*.html"))
    pages_b = sorted(p.relative_to(tmp_path / "b").parts[0] for p in (tmp_path / "b").rglob("*.html"))
    assert pages_a == pages_b and len(pages_a) >= 3
    shapes = {}
    for root in ("a", "b"):
        for page in (tmp_path / root).rglob("*.html"):
            shapes.setdefault(page.relative_to(tmp_path / root).parts[0], []).append(_page_shape(page))
    for kind, found in shapes.items():
        assert len(found) == 2 and found[0] == found[1], kind
    assert "bad" in (next((tmp_path / "b" / "validations").rglob("*.html"))).read_text()


@pytest.mark.process
def test_the_next_process_compiles_no_data_docs_template(task, digits, tmp_path):
    """The compiled templates are also kept on disk (Jinja's per-user cache folder): a new process's first gate with
    Data Docs, the one an `epoch run` pays for, compiles no page template once any process has rendered them (GX's
    few inline string templates, compiled once per process, have no name to be cached by)."""
    import subprocess
    import sys

    stats = [submission_stats(cast_to_task(digits.slice(700, 50), task), task, "good")]
    gate(stats, task, docs_dir=tmp_path / "warm")  # this process renders (and stores) every page's templates
    (tmp_path / "stats.json").write_text(json.dumps(stats, default=float))
    child = (
        "import json, sys, jinja2\n"
        "from pathlib import Path\n"
        "from quality.gate import gate\n"
        "from quality.task_toml import load_task\n"
        "compiled = []\n"
        "original = jinja2.Environment.compile\n"
        "def counting(self, source, name=None, *a, **k):\n"
        "    compiled.append(name)\n"
        "    return original(self, source, name, *a, **k)\n"
        "jinja2.Environment.compile = counting\n"
        "tmp = Path(sys.argv[1])\n"
        "reports = gate(json.loads((tmp / 'stats.json').read_text()), load_task(Path(sys.argv[2])),\n"
        "               docs_dir=tmp / 'cold')\n"
        "print(len([n for n in compiled if n]), all(r.success for r in reports.values()))\n")
    root = Path(__file__).resolve().parents[2]
    task_file = tmp_path / "task.toml"
    write_task(task, task_file)
    proc = subprocess.run([sys.executable, "-c", child, str(tmp_path), str(task_file)], cwd=root,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["0", "True"]
    assert (tmp_path / "cold" / "index.html").exists()


@pytest.mark.slow
def test_gate_cost_per_submission(task, digits):
    """One GX validation for many submissions: the cost per submission is small (~1-5 ms here)."""
    tables = [cast_to_task(digits.slice(600 + 5 * (i % 200), 20), task) for i in range(200)]
    stats = [submission_stats(t, task, f"s{i}") for i, t in enumerate(tables)]
    gate(stats[:2], task)
    start = time.perf_counter()
    reports = gate(stats, task)
    per_submission = (time.perf_counter() - start) / len(stats)
    assert all(r.success for r in reports.values()) and per_submission < 0.05  # generous for loaded CI machines
    assert isinstance(reports["s0"], Report)


# --- predictions -----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_predictions_gate():
    t = Task("p", (Feature("a", "float64"),), "y", "int64", (0, 1))
    ids = list(range(10))

    def preds(row_ids, p0):
        p0 = np.asarray(p0, dtype=float)
        return pa.table({"row_id": pa.array(row_ids, pa.int64()), "p_0": p0, "p_1": 1 - p0})

    good = preds(ids, np.full(10, 0.3))
    assert check_predictions(good, t, ids).success
    stats = [predictions_stats(good, t, ids, "good"),
             predictions_stats(preds(ids[:9], np.full(9, 0.3)), t, ids, "short"),
             predictions_stats(preds([0] * 2 + ids[2:], np.full(10, 0.3)), t, ids, "dup"),
             predictions_stats(preds(ids[:9] + [99], np.full(10, 0.3)), t, ids, "unknown"),
             predictions_stats(preds(ids, [1.5] + [0.3] * 9), t, ids, "over")]
    reports = gate_predictions(stats, t, ids)
    failed = {sid: [(line.expectation, line.column) for line in r.failures()] for sid, r in reports.items()}
    assert failed == {"good": [], "short": [("row_count", None)], "dup": [("row_id_unique", "row_id")],
                      "unknown": [("row_id_in_challenge", "row_id")],
                      "over": [("probability_bounds", "p_0"), ("probability_bounds", "p_1")]}
    assert reports["short"].summary() == "table: 9 rows, but 10 expected (one per challenge row)"


def test_cast_predictions_names_column_and_rule():
    from quality.schema import cast_predictions
    from quality.task import Feature, Task

    t = Task("p", (Feature("a", "float64"),), "y", "int64", (0, 1, 2))
    assert t.prediction_columns() == ["row_id", "p_0", "p_1", "p_2"]
    ok = cast_predictions(pa.table({"row_id": [0, 1], "p_0": [0.2, 1.0], "p_1": [0.3, 0.0], "p_2": [0.5, 0.0]}), t)
    assert ok.schema.field("row_id").type == pa.int64() and ok.schema.field("p_1").type == pa.float64()
    with pytest.raises(SchemaError, match="column 'p_2': missing column"):
        cast_predictions(pa.table({"row_id": [0], "p_0": [0.5], "p_1": [0.5]}), t, file="x.parquet")
    with pytest.raises(SchemaError, match="'extra': unexpected column; predictions have columns row_id"):
        cast_predictions(pa.table({"row_id": [0], "p_0": [1.0], "p_1": [0.0], "p_2": [0.0], "extra": [1]}), t)
    with pytest.raises(SchemaError, match=r"row 1: probabilities sum to 1\.5"):
        cast_predictions(pa.table({"row_id": [0, 1], "p_0": [1.0, 1.0], "p_1": [0.0, 0.5], "p_2": [0.0, 0.0]}), t)


@pytest.mark.parametrize("seed", range(6))
def test_submission_stats_equal_a_plain_numpy_count(small, seed):
    """The fast paths (no copy when every value is finite, no scan when min and max lie inside the bounds) count
    exactly what a plain NumPy pass over the finite values counts, with nulls, NaN, inf and out-of-bound values."""
    rng = np.random.default_rng(seed)
    n = 200
    a = rng.normal(scale=10.0 if seed % 2 else 1.0, size=n)
    if seed % 3 == 0:
        a[rng.integers(0, n, 5)] = rng.choice([np.nan, np.inf, -np.inf], 5)
    nulls = rng.random(n) < (0.05 if seed % 2 else 0.0)
    t = cast_to_task(small_table(n, a=pa.array(a, mask=nulls), y=pa.array(np.zeros(n, np.int64))), small)
    s = submission_stats(t, small, "s")
    fin = a[~nulls & np.isfinite(a)]
    lo, hi = 0.0, 16.0  # a's declared bounds in `small`
    expect_out = int((fin < lo).sum() + (fin > hi).sum())
    assert (s["a__nulls"], s["a__nonfinite"]) == (int(nulls.sum()), int((~nulls & ~np.isfinite(a)).sum()))
    assert (s["a__min"], s["a__max"]) == (float(fin.min()), float(fin.max()))
    assert s["a__outside"] == expect_out
