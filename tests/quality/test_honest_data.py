"""Honest data is never turned away: the default task from a holdout sample accepts every honest shard of the rest.

A holdout sample cannot prove what honest data may contain, so only hard rules reject; values far outside the
learned profile are flagged `suspicious`. Real data: scikit-learn's bundled digits, breast cancer, wine and iris.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pytest
from sklearn import datasets

from quality.errors import SchemaError
from quality.gate import check_table, gate
from quality.holdout import task_from_holdout
from quality.schema import cast_to_task
from quality.statistics import submission_stats

pytestmark = pytest.mark.slow

LOADERS = {"digits": datasets.load_digits, "breast_cancer": datasets.load_breast_cancer,
           "wine": datasets.load_wine, "iris": datasets.load_iris}
SEEDS = (0, 1, 2)
SHARDS = 6


def as_table(x: np.ndarray, y: np.ndarray) -> pa.Table:
    return pa.table({**{f"x{i}": x[:, i].astype(np.float64) for i in range(x.shape[1])},
                     "label": y.astype(np.int64)})


def split(name: str, seed: int):
    """A random quarter as the holdout; the rest as ~6 honest shards."""
    d = LOADERS[name]()
    order = np.random.default_rng(seed).permutation(len(d.target))
    n_hold = len(order) // 4
    hold, rest = order[:n_hold], order[n_hold:]
    shards = [as_table(d.data[p], d.target[p]) for p in np.array_split(rest, SHARDS)]
    return as_table(d.data[hold], d.target[hold]), shards


@pytest.mark.parametrize("name", sorted(LOADERS))
@pytest.mark.parametrize("seed", SEEDS)
def test_every_honest_shard_passes(name, seed):
    holdout, shards = split(name, seed)
    task = task_from_holdout(name, holdout, "label")
    assert all(f.min is None and f.max is None for f in task.features)  # nothing inferred is a hard bound
    for i, shard in enumerate(shards):
        report = check_table(cast_to_task(shard, task), task)
        assert report.success, f"{name} seed {seed} shard {i}: {report.summary()}"
        assert not report.suspicious, f"{name} seed {seed} shard {i}: {report.summary()}"


def test_honest_shards_pass_in_one_gate_call():
    holdout, shards = split("digits", 0)
    task = task_from_holdout("digits", holdout, "label")
    stats = [submission_stats(cast_to_task(s, task), task, f"shard-{i}") for i, s in enumerate(shards)]
    reports = gate(stats, task)
    assert sorted(reports) == sorted(s["submission_id"] for s in stats)
    assert all(r.success and not r.suspicious for r in reports.values())


@pytest.fixture(scope="module")
def wine():
    holdout, shards = split("wine", 0)
    return task_from_holdout("wine", holdout, "label", bounds={"x0": (0.0, 100.0)}), shards[0]


def _set(table: pa.Table, column: str, values) -> pa.Table:
    return table.set_column(table.schema.get_field_index(column), column, pa.array(values))


def test_missing_column_and_string_are_schema_errors(wine):
    task, shard = wine
    with pytest.raises(SchemaError, match="column 'x3': missing column"):
        cast_to_task(shard.drop_columns(["x3"]), task, file="s.parquet")
    words = shard.column("x2").to_pylist()
    words[4] = "lots"
    with pytest.raises(SchemaError, match=r"column 'x2': cannot cast to float64: 'lots' \(row 4"):
        cast_to_task(_set(shard, "x2", [str(w) for w in words]), task, file="s.csv")


@pytest.mark.parametrize("bad, detail", [
    (np.nan, "column 'x5': 2 of {n} values not finite (NaN or infinite)"),
    (np.inf, "column 'x5': 2 of {n} values not finite (NaN or infinite)"),
])
def test_non_finite_features_are_refused(wine, bad, detail):
    task, shard = wine
    x = shard.column("x5").to_numpy().copy()
    x[[1, 7]] = bad
    report = check_table(_set(shard, "x5", x), task)
    assert not report.success
    assert [(line.expectation, line.column) for line in report.failures() if line.hard] == [("finite", "x5")]
    assert detail.format(n=shard.num_rows) in report.summary()


def test_null_feature_is_refused(wine):
    task, shard = wine
    x = shard.column("x1").to_pylist()
    x[0] = None
    report = check_table(_set(shard, "x1", x), task)
    assert not report.success and f"column 'x1': 1 of {shard.num_rows} values null" in report.summary()


def test_label_outside_domain_is_refused(wine):
    task, shard = wine
    y = shard.column("label").to_numpy().copy()
    y[:3] = 42
    report = check_table(_set(shard, "label", y), task)
    (line,) = report.failures()
    assert (line.expectation, line.column, line.hard) == ("label_domain", "label", True)
    assert line.detail == f"column 'label': 3 of {shard.num_rows} labels not in the label domain [0, 1, 2] (e.g. 42)"


def test_too_few_rows_is_refused(wine):
    task, shard = wine
    (line,) = check_table(shard.slice(0, 4), task).failures()
    assert line.expectation == "row_count" and line.detail == "table: 4 rows, outside the allowed 10..1000000"


def test_declared_bounds_are_hard(wine):
    task, shard = wine
    x = shard.column("x0").to_numpy().copy()
    x[:5] = 150.0
    report = check_table(_set(shard, "x0", x), task)
    assert not report.success
    line = next(line for line in report.failures() if line.hard)
    assert (line.expectation, line.column) == ("declared_bounds", "x0")
    assert line.detail == (f"column 'x0': 5 of {shard.num_rows} values outside the declared bounds "
                           "[0.0, 100.0] (max 150.0)")


def test_scaled_shard_is_suspicious_but_accepted(wine):
    task, shard = wine
    scaled = pa.table({c: (pa.compute.multiply(shard.column(c), 1000.0) if c != "label" else shard.column(c))
                       for c in shard.column_names}).drop_columns(["x0"])
    scaled = scaled.add_column(0, "x0", shard.column("x0"))  # keep the declared-bounds column honest
    report = check_table(cast_to_task(scaled, task), task)
    assert report.success, report.summary()
    assert len(report.suspicious) >= 10 and "x0" not in report.suspicious
    assert all(not line.hard for line in report.failures())
    assert "suspicious" in report.summary()

    strict = dataclasses.replace(task, reject_suspicious=True)
    report = check_table(cast_to_task(scaled, strict), strict)
    assert not report.success and report.suspicious
    assert "far outside the holdout profile" in report.summary()


def test_through_the_cli_and_ingest_every_honest_shard_is_accepted(tmp_path):
    """As a new user would: `tributary task init` with its defaults on a random quarter of each dataset, every
    honest shard of the rest submitted and ingested, next to files that must still be refused."""
    import os
    import subprocess
    import sys

    import pyarrow.parquet as pq

    from ledger.db import open_ledger
    from engine import actions
    from engine.home import open_home
    from engine.stages.ingest import ingest

    home = open_home(tmp_path / "home")
    cli = [sys.executable, "-m", "tributary.cli", "--home", str(home.root)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    actions.keygen(home, "honest")
    actions.register(home, "honest", "contributor")
    expected_refusals = {}
    for name in sorted(LOADERS):
        holdout, shards = split(name, seed=7)
        pq.write_table(holdout, tmp_path / f"{name}-holdout.parquet")
        done = subprocess.run([*cli, "task", "init", name, "--holdout", str(tmp_path / f"{name}-holdout.parquet"),
                               "--label", "label"], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr
        for i, shard in enumerate(shards):
            pq.write_table(shard, tmp_path / f"{name}-{i}.parquet")
            actions.submit(home, tmp_path / f"{name}-{i}.parquet", key="honest", task=name)
    bad = split("iris", seed=7)[1][0]
    refused = {
        "missing-column.parquet": (bad.drop_columns(["x0"]), "schema_mismatch"),
        "string-feature.parquet": (bad.set_column(1, "x1", pa.array(["oops"] * bad.num_rows)), "schema_mismatch"),
        "nan-feature.parquet": (bad.set_column(0, "x0", pa.array([np.nan] * bad.num_rows)), "quality_failed"),
    }
    for file, (table, reason) in refused.items():
        pq.write_table(table, tmp_path / file)
        actions.submit(home, tmp_path / file, key="honest", task="iris")
        expected_refusals[file] = reason
    summary = ingest(home)
    assert summary.accepted == len(LOADERS) * SHARDS
    with open_ledger(home.paths.ledger, read_only=True) as con:
        details = con.execute("SELECT file, reason, detail FROM quarantine").fetchall()
    quarantined = {f: r for f, r, _ in details}
    assert quarantined == expected_refusals, details
