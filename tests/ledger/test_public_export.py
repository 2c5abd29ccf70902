"""The public export and `tributary verify`: anyone can recompute the books from the published files alone."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from ledger.db import open_ledger
from tests.conftest import build_market, digits_table

slow = pytest.mark.slow  # the `published` market runs two whole epochs


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A market with two settled epochs of submissions, and its public export (built once: tests copy it)."""
    from engine.epoch import run_epoch
    from engine.keys import operator_key, public_hex, signer
    from ledger.public import public_export

    root = tmp_path_factory.mktemp("public-market")
    m = build_market(root)
    m.submit("alice", digits_table(300, 400), "a.parquet")
    m.submit("bob", digits_table(300, 400), "b.parquet")  # a copy of alice's rows: duplicates
    m.submit("carol", digits_table(400, 460, flip=True), "c.parquet")
    run_epoch(m.home, close=True)
    m.submit("alice", digits_table(500, 560), "a2.parquet")
    m.submit("carol", digits_table(560, 620), "c2.parquet")
    run_epoch(m.home, close=True)
    key = operator_key(m.home.paths.keys)
    out = root / "export"
    public_export(m.home.paths.ledger, out, operator_public_key=public_hex(key), sign=signer(key))
    return m, out, public_hex(key)


@pytest.fixture()
def export(published, tmp_path) -> Path:
    """A copy of the published export this test may tamper with."""
    _, out, _ = published
    return Path(shutil.copytree(out, tmp_path / "export"))


def _main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    from tributary.cli import main

    monkeypatch.setattr(sys, "argv", ["tributary", *args])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@slow
def test_an_untouched_export_verifies_and_names_its_operator(published, export, monkeypatch, capsys):
    m, _, operator = published
    code, out, _ = _main(monkeypatch, capsys, "--home", str(m.home.root), "operator-key")
    assert code == 0 and out.strip() == operator
    code, out, err = _main(monkeypatch, capsys, "verify", str(export), "--operator-key", operator)
    assert code == 0, err
    assert "export OK: 3 epochs chained" in out and f"3 epochs signed by operator {operator}" in out
    with open_ledger(m.home.paths.ledger, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM epochs WHERE operator_signature IS NULL AND settled_at IS NOT NULL"
                           ).fetchone()[0] == 0


@slow
def test_the_export_holds_no_holdout_lake_rows_or_private_columns(published, export):
    m, _, _ = published
    from ledger.public import MANIFEST, PUBLIC_TABLES

    names = {p.name for p in export.iterdir()}
    assert names <= {f"{t}.parquet" for t in PUBLIC_TABLES} | {MANIFEST}
    assert "arrivals.parquet" not in names and "ledger.duckdb" not in names
    for path in export.glob("*.parquet"):
        columns = pq.read_schema(path).names
        assert not any(c.startswith("px_") or c == "label" for c in columns), path  # no data rows of any kind
    assert not {"file", "lake_path"} & set(pq.read_schema(export / "contributions.parquet").names)
    assert not {"file", "detail"} & set(pq.read_schema(export / "quarantine.parquet").names)
    holdout = next(m.home.paths.holdout.iterdir()).read_bytes()
    assert all(holdout not in p.read_bytes() for p in export.iterdir())


# (table, column changed, the epoch whose row is tampered with)
TAMPER = [("rewards", "amount", 1), ("transfers", "amount", 2), ("contributions", "value", 1),
          ("epoch_values", "gain", 2), ("epochs", "hash", 1), ("accounts", "name", 0), ("weights", "weight", 2)]


def _rewrite(path: Path, table: pa.Table) -> None:
    pq.write_table(table, path)


def _rows_of(table: pa.Table, column: str, epoch: int) -> list[int]:
    return [i for i, e in enumerate(table.column(column).to_pylist()) if e == epoch]


def _changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 1.5 + 1.0
    return (value or "") + "x"


@slow
@pytest.mark.parametrize("mode", ["change", "drop", "swap"])
@pytest.mark.parametrize("table,column,epoch", TAMPER)
def test_a_tampered_table_fails_naming_the_table_and_epoch(published, export, table, column, epoch, mode):
    from ledger.public import PUBLIC_TABLES, verify_export

    _, _, operator = published
    path = export / f"{table}.parquet"
    t = pq.read_table(path)
    epoch_column = PUBLIC_TABLES[table][0]
    rows = _rows_of(t, epoch_column, epoch)
    assert rows, f"{table} has no rows of epoch {epoch}"
    i = rows[0]
    if mode == "change":
        values = t.column(column).to_pylist()
        values[i] = _changed(values[i])
        t = t.set_column(t.column_names.index(column), column, pa.array(values, type=t.schema.field(column).type))
    elif mode == "drop":
        t = t.filter(pa.array([j != i for j in range(t.num_rows)]))
    else:  # swap two rows: within the epoch when it has two, else with the next row
        j = rows[1] if len(rows) > 1 else i + 1 if i + 1 < t.num_rows else i - 1
        order = list(range(t.num_rows))
        order[i], order[j] = order[j], order[i]
        t = t.take(pa.array(order))
    _rewrite(path, t)
    report = verify_export(export, operator_key=operator)
    assert not report.ok
    where = f"table {table}, epoch {epoch}"
    if mode == "swap" and len(rows) == 1:
        where = f"table {table}, epoch "  # the row that moved out of order names its own epoch
    assert any(p.startswith(where) for p in report.problems), report.problems


@slow
def test_rebuilding_the_manifest_does_not_hide_a_change(published, export):
    """A forger who rewrites the manifest (and signs it with a key of their own) is caught by the chain, and by the
    pinned operator key."""
    import nacl.signing

    from engine.keys import public_hex, signer
    from ledger.public import manifest_message, table_digest, verify_export

    _, _, operator = published
    path = export / "rewards.parquet"
    t = pq.read_table(path)
    i = _rows_of(t, "epoch", 1)[0]
    amounts = t.column("amount").to_pylist()
    amounts[i] += 5
    t = t.set_column(t.column_names.index("amount"), "amount", pa.array(amounts, type=pa.int64()))
    _rewrite(path, t)
    manifest = json.loads((export / "manifest.json").read_text())
    part = t.filter(pc.equal(t.column("epoch"), 1))
    manifest["tables"]["rewards"]["1"] = {"rows": part.num_rows, "digest": table_digest("rewards", part)}
    forger = nacl.signing.SigningKey.generate()
    manifest["operator_public_key"] = public_hex(forger)
    manifest["signature"] = signer(forger)(manifest_message(manifest))
    (export / "manifest.json").write_text(json.dumps(manifest))
    unpinned = verify_export(export)
    assert any(p.startswith("epoch 1: its rows now digest to") for p in unpinned.problems), unpinned.problems
    # the forger's key signed none of the epochs
    assert any(p.startswith("table epochs, epoch 0: operator_signature does not verify") for p in unpinned.problems)
    pinned = verify_export(export, operator_key=operator)
    assert any(p.startswith("manifest.json: the export names operator key") for p in pinned.problems)
    assert any(p.startswith("manifest.json: its signature does not verify") for p in pinned.problems)
    assert any(p.startswith("epoch 1: its rows now digest to") for p in pinned.problems)


@slow
def test_a_wrong_operator_key_fails(published, export, monkeypatch, capsys):
    import nacl.signing

    other = nacl.signing.SigningKey.generate().verify_key.encode().hex()
    code, out, err = _main(monkeypatch, capsys, "verify", str(export), "--operator-key", other)
    assert code == 1
    assert "operator_signature does not verify" in err and "export does not verify" in err
    assert "export OK" not in out


@slow
def test_verify_submission_matches_explain(published, export, monkeypatch, capsys):
    m, _, operator = published
    with open_ledger(m.home.paths.ledger, read_only=True) as con:
        sid, epoch, account, status, value = con.execute(
            "SELECT c.submission_id, c.epoch, c.account_id, c.status, c.value FROM contributions c "
            "JOIN accounts a USING (account_id) WHERE a.name = 'alice' AND c.epoch = 1").fetchone()
        (amount, explain_value) = con.execute("SELECT amount, value FROM explain WHERE epoch = ? AND account_id = ?",
                                              [epoch, account]).fetchone()
    assert amount > 0
    code, out, err = _main(monkeypatch, capsys, "verify", str(export), "--operator-key", operator,
                           "--submission", sid)
    assert code == 0, err
    line = next(x for x in out.splitlines() if x.startswith(f"submission {sid}"))
    assert f"epoch {epoch}, account {account}, status {status}, value {value}," in line
    assert f"account paid {amount} units that epoch (explain: value {explain_value})" in line
    code, _, err = _main(monkeypatch, capsys, "verify", str(export), "--submission", "no-such-id")
    assert code == 1 and "no-such-id is not recorded" in err


@slow
def test_status_lists_a_keys_submissions_from_home_and_from_an_export(published, export, monkeypatch, capsys):
    from engine.keys import load, public_hex

    m, _, _ = published
    with open_ledger(m.home.paths.ledger, read_only=True) as con:
        ids = [s for (s,) in con.execute("SELECT submission_id FROM contributions c JOIN accounts a "
                                         "USING (account_id) WHERE a.name = 'alice' ORDER BY epoch").fetchall()]
    assert len(ids) == 2
    code, from_home, err = _main(monkeypatch, capsys, "--home", str(m.home.root), "status", "--key", "alice")
    assert code == 0, err
    hex_key = public_hex(load(m.home.paths.keys, "alice"))
    code, from_dir, err = _main(monkeypatch, capsys, "status", "--key", hex_key, "--from", str(export))
    assert code == 0, err
    for out in (from_home, from_dir):
        assert all(s in out for s in ids) and "accepted" in out
    assert from_home == from_dir


def test_unsigned_epochs_pass_only_before_the_first_signed_one():
    """Epochs settled before migration 11 have no signature: reported, not failed; one missing after a signed epoch
    fails, and a signature under another key fails."""
    import duckdb
    import nacl.signing

    from engine.keys import public_hex, signer
    from ledger.digest import epoch_signing_message
    from ledger.public import VerifyReport, _check_signatures

    key = nacl.signing.SigningKey.generate()
    sign = signer(key)
    con = duckdb.connect()
    con.execute("CREATE TABLE epochs (epoch BIGINT, hash VARCHAR, settled_at TIMESTAMP, operator_signature VARCHAR)")
    hashes = {e: f"{e:064x}" for e in range(4)}
    sigs = {0: None, 1: None, 2: sign(epoch_signing_message(2, hashes[2])), 3: sign(epoch_signing_message(3, hashes[3]))}
    for e in range(4):
        con.execute("INSERT INTO epochs VALUES (?, ?, now(), ?)", [e, hashes[e], sigs[e]])
    report = VerifyReport()
    _check_signatures(con, public_hex(key), True, report)
    assert report.ok and report.unsigned == [0, 1] and report.signed == 2
    con.execute("UPDATE epochs SET operator_signature = NULL WHERE epoch = 3")
    report = VerifyReport()
    _check_signatures(con, public_hex(key), True, report)
    assert report.problems == ["table epochs, epoch 3: unsigned, but an earlier epoch is signed (its "
                               "operator_signature was removed)"]
    report = VerifyReport()
    _check_signatures(con, public_hex(nacl.signing.SigningKey.generate()), True, report)
    assert report.problems[0].startswith("table epochs, epoch 2: operator_signature does not verify")
