"""The results digest has versions: epochs settled in versions 1, 2 and 3 still recompute as they were settled, new
epochs hash Arrow columns per column (3) with the originality figures and what each epoch added per task (4), and
the columnar forms tell apart every pair of different row sets we could think of."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from ledger.audit import audit
from ledger.db import open_ledger
from ledger.digest import chain_hash
from ledger.results import RESULTS_VERSION, columns_digest, results_digest, settled_version
from tests.conftest import digits_table
from engine.epoch import run_epoch


def _digest(version: int = 4, **columns) -> str:
    return columns_digest({"t": pa.table(columns)}, version)


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
@pytest.mark.parametrize("version", [2, 3, 4])
def test_different_rows_digest_differently(a, b, version):
    assert _digest(version, **a) != _digest(version, **b)


@pytest.mark.parametrize("version", [2, 3, 4])
def test_the_digest_does_not_depend_on_chunking_slicing_or_what_nulls_hide(version):
    whole = pa.table({"x": pa.array(["a", "bb", None, "ccc"]), "y": pa.array([1, None, 3, 4], pa.int64())})
    chunked = pa.concat_tables([whole.slice(0, 1), whole.slice(1, 3)])
    sliced = pa.table({"x": pa.array(["zz", "a", "bb", None, "ccc"]).slice(1),
                       "y": pa.array([9, 1, None, 3, 4], pa.int64()).slice(1)})
    # Arrow lets a null slot keep bytes: the same rows with "junk" under the null hash the same.
    junk = pa.Array.from_buffers(pa.string(), 4, [pa.py_buffer(bytes([0b1011])),
                                                  pa.py_buffer(np.array([0, 1, 3, 7, 10], "<i4").tobytes()),
                                                  pa.py_buffer(b"abbjunkccc")], null_count=1)
    hidden = pa.table({"x": junk, "y": whole.column("y")})
    digests = {columns_digest({"t": t}, version) for t in (whole, chunked, sliced, hidden)}
    assert len(digests) == 1
    assert columns_digest({"t": whole.slice(0, 0)}, version) == columns_digest({"t": whole.slice(2, 0)}, version)


def test_versions_2_and_3_digest_as_they_did_when_epochs_were_settled_with_them():
    """Golden values from the version-2 and version-3 code that settled epochs: their byte forms must not drift.
    Version 4 hashes the same form under its own domain."""
    tables = {"a": pa.table({"x": pa.array(["a", None, "bcd"]), "y": pa.array([1, None, 3], pa.int64()),
                             "z": pa.array([1.5, 2.0, None]), "l": pa.array([["s"], None, []])}),
              "b": pa.table({"x": pa.array([], pa.string())})}
    assert columns_digest(tables, 2) == "960f05866b1f8064b973a5fe2e2a10995aca5639c98f9fe051e8d0fba8768173"
    assert columns_digest(tables, 3) == "2ac2716c83fc64479d66559c07a22039357e0047870b5167d501c02c833172d0"
    assert columns_digest(tables, 4) not in {columns_digest(tables, 2), columns_digest(tables, 3)}


@pytest.mark.slow
def test_new_epochs_use_version_4_and_epochs_settled_in_versions_1_to_3_still_audit(market):
    market.submit("alice", digits_table(300, 360), "a.parquet")
    run_epoch(market.home, close=True)
    with open_ledger(market.home.paths.ledger) as con:
        assert settled_version(con, 1) == RESULTS_VERSION == 4
        v1, v2, v3, v4 = (results_digest(con, 1, v) for v in (1, 2, 3, 4))
        assert len({v1, v2, v3, v4}) == 4 and results_digest(con, 1) == v4
        prev, inputs = con.execute("SELECT prev_hash, inputs_digest FROM epochs WHERE epoch = 1").fetchone()
        # Epoch 1 as settled by an earlier Tributary: version 3, 2, then from before versions were recorded (NULL: 1).
        for version, digest in ((3, v3), (2, v2), (None, v1)):
            con.execute("UPDATE epochs SET results_version = ?, results_digest = ?, hash = ? WHERE epoch = 1",
                        [version, digest, chain_hash(prev, 1, inputs, digest)])
            assert settled_version(con, 1) == (version or 1) and results_digest(con, 1) == digest
            report = audit(con)
            assert report.ok, report.problems
        con.execute("UPDATE rewards SET amount = amount + 1 WHERE epoch = 1 AND role = 'owner'")
        problems = "\n".join(audit(con).problems)
    assert "epoch 1: its rows now digest to" in problems


def test_version_3_changes_with_any_column_of_any_table():
    """Version 3 hashes per column: a change in any one column of any table changes it."""
    base = {"a": pa.table({"x": pa.array([1, 2], pa.int64()), "y": pa.array(["p", "q"])}),
            "b": pa.table({"z": pa.array([0.5])})}
    seen = {columns_digest(base, 3), columns_digest(base, 2)}
    for table, column, values in (("a", "x", pa.array([1, 3], pa.int64())), ("a", "y", pa.array(["p", "r"])),
                                  ("b", "z", pa.array([0.25]))):
        changed = dict(base)
        changed[table] = base[table].set_column(base[table].column_names.index(column), column, values)
        seen.add(columns_digest(changed, 3))
    renamed = {"c" if k == "b" else k: v for k, v in base.items()}
    seen.add(columns_digest(renamed, 3))
    assert len(seen) == 6


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
