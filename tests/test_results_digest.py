"""The results digest has versions: epochs settled before version 2 still recompute as they were settled, new
epochs hash Arrow columns, and the columnar form tells apart every pair of different row sets we could think of."""

from __future__ import annotations

import pyarrow as pa
import pytest

from ledger.audit import audit
from ledger.db import open_ledger
from ledger.digest import chain_hash
from ledger.results import RESULTS_VERSION, columns_digest, results_digest, settled_version
from tests.conftest import digits_table
from tributary.epoch import run_epoch


def _digest(**columns) -> str:
    return columns_digest({"t": pa.table(columns)})


@pytest.mark.parametrize("a, b", [
    ({"x": pa.array([1, 2], pa.int64())}, {"x": pa.array([1, 3], pa.int64())}),
    ({"x": pa.array([0, 1], pa.int64())}, {"x": pa.array([None, 1], pa.int64())}),  # null is not 0
    ({"x": pa.array([0.0])}, {"x": pa.array([-0.0])}),  # bit patterns, not values
    ({"x": pa.array(["", "a"])}, {"x": pa.array([None, "a"])}),  # null is not ""
    ({"x": pa.array(["ab", "c"])}, {"x": pa.array(["a", "bc"])}),  # offsets are hashed, not only the bytes
    ({"x": pa.array(["a"]), "y": pa.array(["b"])}, {"x": pa.array(["ab"]), "y": pa.array([""])}),
    ({"x": pa.array(["a"])}, {"y": pa.array(["a"])}),  # column names count
    ({"x": pa.array([1], pa.int64())}, {"x": pa.array([1.0])}),  # so do types
    ({"x": pa.array([["s1"], None])}, {"x": pa.array([None, ["s1"]])}),  # other types: canonical JSON
])
def test_different_rows_digest_differently(a, b):
    assert _digest(**a) != _digest(**b)


def test_the_digest_does_not_depend_on_chunking_or_slicing():
    whole = pa.table({"x": pa.array(["a", "bb", None, "ccc"]), "y": pa.array([1, None, 3, 4], pa.int64())})
    chunked = pa.concat_tables([whole.slice(0, 1), whole.slice(1, 3)])
    sliced = pa.table({"x": pa.array(["zz", "a", "bb", None, "ccc"]).slice(1),
                       "y": pa.array([9, 1, None, 3, 4], pa.int64()).slice(1)})
    assert columns_digest({"t": whole}) == columns_digest({"t": chunked}) == columns_digest({"t": sliced})
    assert columns_digest({"t": whole.slice(0, 0)}) == columns_digest({"t": whole.slice(2, 0)})


def test_new_epochs_use_version_2_and_an_epoch_settled_in_version_1_still_audits(market):
    market.submit("alice", digits_table(300, 360), "a.parquet")
    run_epoch(market.home, close=True)
    with open_ledger(market.home.paths.ledger) as con:
        assert settled_version(con, 1) == RESULTS_VERSION == 2
        v1, v2 = results_digest(con, 1, 1), results_digest(con, 1, 2)
        assert v1 != v2 and results_digest(con, 1) == v2
        # Epoch 1 as a ledger from before versions recorded it: a version-1 digest, results_version NULL.
        prev, inputs = con.execute("SELECT prev_hash, inputs_digest FROM epochs WHERE epoch = 1").fetchone()
        con.execute("UPDATE epochs SET results_version = NULL, results_digest = ?, hash = ? WHERE epoch = 1",
                    [v1, chain_hash(prev, 1, inputs, v1)])
        assert settled_version(con, 1) == 1 and results_digest(con, 1) == v1
        report = audit(con)
        assert report.ok, report.problems
        con.execute("UPDATE rewards SET amount = amount + 1 WHERE epoch = 1 AND role = 'owner'")
        problems = "\n".join(audit(con).problems)
    assert "epoch 1: its rows now digest to" in problems


def test_an_unknown_version_is_refused_with_the_versions_known(market):
    with open_ledger(market.home.paths.ledger) as con:
        con.execute("UPDATE epochs SET results_version = 9 WHERE epoch = 0")
        with pytest.raises(ValueError, match="unknown results_version 9"):
            results_digest(con, 0)


def test_audit_names_an_unknown_version_instead_of_failing(market):
    with open_ledger(market.home.paths.ledger) as con:
        con.execute("UPDATE epochs SET results_version = 9 WHERE epoch = 0")
        problems = audit(con).problems
    assert any("epoch 0: unknown results_version 9" in p for p in problems)
