"""The public export (`tributary export DIR --public`) and its verification from the files alone (`tributary verify`).

The export holds what any contributor may see: the tables that the hash chain commits to, the accounts' public keys
and roles, requests, proposals and the inputs documents, each as Parquet in a fixed row order, and `manifest.json`:
per table and epoch the row count and digest (results.columns_digest, version 4 form) of the rows as written, the
operator's public key, and the operator's Ed25519 signature over the manifest. Never the holdout, lake rows, drop
folder names (arrivals), contributors' file names, the lake path column or quarantine details (which can quote the
holdout's profile). The inputs documents keep the lake paths they hashed: content addresses (epoch, kind, task,
payload digest, a key prefix) that the public columns already give.

`verify_export` rebuilds an in-memory DuckDB from the Parquet files and runs on it the same audit as `tributary
audit` (the hash chain, results and inputs digests, money invariants), then checks each table against the manifest
(naming table and epoch), the epochs' operator signatures and the manifest's signature.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from ledger.db import open_ledger
from ledger.digest import epoch_signing_message, signature_valid
from ledger.errors import LedgerError
from ledger.queries import sql_path
from ledger.results import columns_digest
from ledger.schema import EMISSION_ACCOUNT
from ledger.settlement import PAYOUT_KINDS
from protocol.canonical import canonical_json

MANIFEST = "manifest.json"
EXPORT_FORMAT = "tributary public export 1"
ALL_ROWS = "all"  # the manifest's group for a table without an epoch column

# table -> (the column naming each row's epoch, or None; the row order written)
PUBLIC_TABLES: dict[str, tuple[str | None, str]] = {
    "epochs": ("epoch", "epoch"),
    "epoch_inputs": ("epoch", "epoch"),
    "accounts": ("registered_epoch", "account_id"),
    "contributions": ("epoch", "submission_id"),
    "quarantine": ("epoch", "submission_id"),
    "rewards": ("epoch", "account_id"),
    "transfers": ("epoch", "id"),
    "bonds": ("epoch", "validator, miner"),
    "weights": ("epoch", "validator, miner"),
    "commitments": ("epoch", "submission_id"),
    "validator_reports": ("epoch", "validator"),
    "requests": ("epoch", "submission_id"),
    "proposals": ("epoch", "proposal_id"),
    "votes": ("epoch", "submission_id"),
    "epoch_parameters": ("epoch", "setting"),
    "epoch_values": ("epoch", "task"),
    "balance_totals": (None, "account_id"),
    "market": (None, "key"),
}
# Columns never published: contributors' own file names, the operator's lake paths, quarantine details.
PRIVATE_COLUMNS = {"contributions": ("file", "lake_path"), "quarantine": ("file", "detail")}
NEVER_PUBLISHED = ("arrivals",)  # drop-folder names and identities


class ExportError(LedgerError):
    """A public export cannot be read (no manifest, a malformed one)."""


@dataclass
class VerifyReport:
    epochs_checked: int = 0
    transfers_checked: int = 0
    tables_checked: int = 0
    signed: int = 0
    unsigned: list[int] = field(default_factory=list)
    operator_public_key: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def manifest_message(manifest: dict) -> bytes:
    """What the operator signs: the manifest's canonical JSON without its signature."""
    return canonical_json({k: v for k, v in manifest.items() if k != "signature"})


def public_export(ledger_path: Path, out_dir: Path, *, operator_public_key: str,
                  sign: Callable[[bytes], str]) -> list[Path]:
    """Write the public tables as Parquet in their fixed order, and the signed manifest.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with open_ledger(ledger_path, read_only=True) as con:
        for name, (epoch_column, keys) in PUBLIC_TABLES.items():
            order = keys if epoch_column in (None, keys) else f"{epoch_column}, {keys}"
            cols = [c for (c,) in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position",
                [name]).fetchall() if c not in PRIVATE_COLUMNS.get(name, ())]
            if not cols:
                continue  # a ledger from before the table existed
            path = out_dir / f"{name}.parquet"
            select = ", ".join(f'"{c}"' for c in cols)
            con.execute(f"COPY (SELECT {select} FROM {name} ORDER BY {order}) TO '{sql_path(path)}' "
                        "(FORMAT parquet)")
            written.append(path)
    tables = {}
    for path in written:
        name = path.stem
        tables[name] = {group: {"rows": t.num_rows, "digest": table_digest(name, t)}
                        for group, t in _groups(name, _read(path)).items()}
    manifest = {"format": EXPORT_FORMAT, "operator_public_key": operator_public_key, "tables": tables}
    manifest["signature"] = sign(manifest_message(manifest))
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    written.append(out_dir / MANIFEST)
    return written


def table_digest(name: str, table) -> str:
    """The manifest's digest of some rows of a table: results.columns_digest (version 4 form), timestamps hashed as
    their integer microseconds since the epoch (columns_digest hashes numbers, strings and JSON values)."""
    import pyarrow as pa

    for i, f in enumerate(table.schema):
        if pa.types.is_timestamp(f.type) or pa.types.is_date(f.type) or pa.types.is_time(f.type):
            table = table.set_column(i, f.name, table.column(i).cast(pa.int64()))
    return columns_digest({name: table}, 4)


def _read(path: Path):
    import pyarrow.parquet as pq

    return pq.read_table(path)


def _groups(name: str, table) -> dict[str, object]:
    """A table's rows per epoch (as the manifest keys them), each group in file order."""
    import pyarrow.compute as pc

    column = PUBLIC_TABLES.get(name, (None, ""))[0]
    if column is None or column not in table.column_names:
        return {ALL_ROWS: table}
    epochs = table.column(column)
    out = {}
    for epoch in dict.fromkeys(epochs.to_pylist()):
        mask = pc.is_null(epochs) if epoch is None else pc.fill_null(pc.equal(epochs, epoch), False)
        out[str(epoch)] = table.filter(mask)
    return dict(sorted(out.items(), key=lambda kv: (len(kv[0]), kv[0])))


def read_manifest(export_dir: Path) -> dict:
    """The export's manifest.json; ExportError when it is missing or malformed."""
    path = export_dir / MANIFEST
    if not export_dir.is_dir():
        raise ExportError(f"{export_dir} is not a folder: name the folder `tributary export DIR --public` wrote")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExportError(f"{path} is missing: {export_dir} is not a public export (`tributary export DIR "
                          "--public` writes one)") from None
    except (OSError, ValueError) as e:
        raise ExportError(f"{path}: cannot read it as JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT or \
            not isinstance(manifest.get("tables"), dict):
        raise ExportError(f"{path}: not a manifest of format {EXPORT_FORMAT!r}")
    return manifest


def load_export(export_dir: Path, manifest: dict | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB holding the export's tables as written (plus the `balances` and `explain` views)."""
    from ledger.views import VIEWS

    manifest = read_manifest(export_dir) if manifest is None else manifest
    con = duckdb.connect(":memory:")
    for name in manifest["tables"]:
        path = export_dir / f"{name}.parquet"
        if name in PUBLIC_TABLES and path.is_file():
            con.execute(f"CREATE TABLE {name} AS SELECT * FROM read_parquet('{sql_path(path)}')")
    present = {n for (n,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    for view, needs in (("balances", {"accounts", "balance_totals"}), ("explain", {"contributions", "rewards",
                                                                                    "accounts"})):
        if needs <= present:
            try:
                con.execute(f"CREATE VIEW {view} AS {VIEWS[view]}")
            except duckdb.Error:
                pass  # a view over a column the export leaves out: the checks do not need it
    return con


def verify_export(export_dir: Path, *, operator_key: str | None = None) -> VerifyReport:
    """Recompute the chain, the digests and the money invariants from an export's files alone; check every table
    against the manifest, every settled epoch's operator signature and the manifest's signature."""
    from ledger.audit import audit

    manifest = read_manifest(export_dir)
    report = VerifyReport()
    report.operator_public_key = key = (operator_key or manifest.get("operator_public_key") or "").lower()
    if operator_key and manifest.get("operator_public_key", "").lower() != operator_key.lower():
        report.problems.append(f"manifest.json: the export names operator key {manifest.get('operator_public_key')}, "
                               f"not the one given ({operator_key})")
    if not signature_valid(key, manifest_message(manifest), manifest.get("signature")):
        report.problems.append(f"manifest.json: its signature does not verify under operator key {key}")
    for name, groups in manifest["tables"].items():
        report.tables_checked += 1
        path = export_dir / f"{name}.parquet"
        if name not in PUBLIC_TABLES:
            report.problems.append(f"table {name}: manifest.json names a table a public export does not hold")
            continue
        if not path.is_file():
            report.problems.append(f"table {name}: {path.name} is missing")
            continue
        try:
            table = _read(path)
            found = _groups(name, table)
        except Exception as e:  # noqa: BLE001 (any unreadable file is the export's problem, reported as such)
            report.problems.append(f"table {name}: {path.name} cannot be read as Parquet ({e})")
            continue
        column = PUBLIC_TABLES[name][0]
        if column is not None and column in table.column_names:  # groups are in file order: so must the epochs be
            epochs = table.column(column).to_pylist()
            for before, after in zip(epochs, epochs[1:]):
                if before is not None and after is not None and after < before:
                    report.problems.append(f"table {name}, epoch {after}: a row of epoch {after} follows one of "
                                           f"epoch {before} (rows were reordered)")
                    break
        for group in sorted(set(groups) | set(found), key=lambda g: (len(g), g)):
            where = f"table {name}, epoch {group}" if group != ALL_ROWS else f"table {name}"
            want, have = groups.get(group), found.get(group)
            if want is None:
                report.problems.append(f"{where}: {have.num_rows} rows the manifest does not list (rows were added)")
            elif have is None:
                report.problems.append(f"{where}: the manifest lists {want['rows']} rows, the file has none "
                                       "(rows were dropped)")
            elif have.num_rows != want["rows"]:
                report.problems.append(f"{where}: {have.num_rows} rows, the manifest lists {want['rows']} (rows were "
                                       "dropped or added)")
            elif table_digest(name, have) != want["digest"]:
                report.problems.append(f"{where}: its rows do not digest as the manifest says (a row was changed or "
                                       "reordered)")
    con = load_export(export_dir, manifest)
    try:
        missing = [t for t in ("epochs", "rewards", "transfers", "contributions", "accounts", "balance_totals")
                   if not con.execute("SELECT 1 FROM duckdb_tables() WHERE table_name = ?", [t]).fetchall()]
        if missing:
            report.problems.append(f"the export lacks {', '.join(missing)}: the chain cannot be recomputed")
            return report
        audited = audit(con)
        report.epochs_checked, report.transfers_checked = audited.epochs_checked, audited.transfers_checked
        report.problems.extend(audited.problems)
        _check_signatures(con, key, bool(operator_key), report)
    finally:
        con.close()
    return report


def _check_signatures(con: duckdb.DuckDBPyConnection, key: str, pinned: bool, report: VerifyReport) -> None:
    """Every settled epoch's operator_signature verifies under the operator key. Epochs settled before migration 11
    have none: reported as unsigned, and allowed only before the first signed epoch (an operator cannot stop
    signing)."""
    columns = {c for (c,) in con.execute("SELECT column_name FROM information_schema.columns "
                                         "WHERE table_name = 'epochs'").fetchall()}
    sig = "operator_signature" if "operator_signature" in columns else "NULL"
    seen_signed = False
    for epoch, hash_, signature in con.execute(
            f"SELECT epoch, hash, {sig} FROM epochs WHERE settled_at IS NOT NULL ORDER BY epoch").fetchall():
        if signature is None:
            report.unsigned.append(int(epoch))
            if seen_signed:
                report.problems.append(f"table epochs, epoch {epoch}: unsigned, but an earlier epoch is signed "
                                       "(its operator_signature was removed)")
            continue
        seen_signed = True
        if signature_valid(key, epoch_signing_message(int(epoch), hash_), signature):
            report.signed += 1
        else:
            report.problems.append(f"table epochs, epoch {epoch}: operator_signature does not verify under operator "
                                   f"key {key}{'' if pinned else ' (the key manifest.json names)'}")


@dataclass(frozen=True)
class SubmissionCheck:
    submission_id: str
    epoch: int
    account_id: str | None
    kind: str | None
    status: str
    reason: str | None
    value: float | None
    amount: int | None  # the account's rewards.amount in that epoch (None: the epoch is not settled)
    explain_value: float | None
    problems: tuple[str, ...] = ()


def check_submission(export_dir: Path, submission_id: str) -> SubmissionCheck:
    """One submission as the export records it: its status, value and epoch, and what its account was paid that
    epoch, checked against the `explain` view recomputed from the exported tables and against the payout transfers."""
    con = load_export(export_dir)
    try:
        row = con.execute("SELECT epoch, account_id, kind, status, reason, value FROM contributions "
                          "WHERE submission_id = ?", [submission_id]).fetchone()
        if row is None:
            quarantined = con.execute("SELECT epoch, account_id, reason FROM quarantine WHERE submission_id = ?",
                                      [submission_id]).fetchone() if _has(con, "quarantine") else None
            if quarantined is None:
                raise ExportError(f"submission {submission_id} is not recorded in {export_dir}")
            epoch, account_id, reason = quarantined
            row = (epoch, account_id, None, "quarantined", reason, None)
        epoch, account_id, kind, status, reason, value = row
        problems = []
        settled = con.execute("SELECT settled_at IS NOT NULL FROM epochs WHERE epoch = ?", [epoch]).fetchone()
        amount = explain_value = None
        if not settled or not settled[0]:
            problems.append(f"submission {submission_id}: epoch {epoch} is not settled in this export")
        else:
            got = con.execute("SELECT amount FROM rewards WHERE epoch = ? AND account_id = ?",
                              [epoch, account_id]).fetchone()
            amount = int(got[0]) if got else 0
            kinds = ", ".join("?" * len(PAYOUT_KINDS))
            paid = con.execute("SELECT COALESCE(SUM(amount), 0) FROM transfers WHERE epoch = ? AND credit_account = ? "
                               f"AND debit_account = ? AND kind IN ({kinds})",
                               [epoch, account_id, EMISSION_ACCOUNT, *PAYOUT_KINDS]).fetchone()[0]
            if int(paid) != amount:
                problems.append(f"submission {submission_id}: account {account_id} has rewards.amount {amount} in "
                                f"epoch {epoch}, but its payout transfers sum to {paid}")
            if status in ("accepted", "duplicate", "unoriginal") and kind in ("dataset", "predictions") \
                    and value is None:
                problems.append(f"submission {submission_id}: {status} in settled epoch {epoch}, but has no value")
            if _has(con, "explain"):
                ex = con.execute("SELECT value, amount FROM explain WHERE epoch = ? AND account_id = ?",
                                 [epoch, account_id]).fetchone()
                if ex is None:
                    problems.append(f"submission {submission_id}: explain has no row for account {account_id} "
                                    f"in epoch {epoch}")
                else:
                    explain_value = ex[0]
                    if int(ex[1] or 0) != amount:
                        problems.append(f"submission {submission_id}: explain says account {account_id} earned "
                                        f"{ex[1]} in epoch {epoch}, rewards.amount {amount}")
        return SubmissionCheck(submission_id, int(epoch), account_id, kind, status, reason, value, amount,
                               explain_value, tuple(problems))
    finally:
        con.close()


def _has(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(con.execute("SELECT 1 FROM duckdb_tables() WHERE table_name = ? UNION ALL "
                            "SELECT 1 FROM duckdb_views() WHERE view_name = ?", [name, name]).fetchall())


KEY_STATUS_SQL = """
SELECT c.epoch, c.submission_id, c.kind, c.task, c.status, c.reason, c.value,
       e.settled_at IS NOT NULL AS settled, r.amount AS epoch_pay
FROM contributions c JOIN accounts a ON a.account_id = c.account_id
LEFT JOIN epochs e ON e.epoch = c.epoch
LEFT JOIN rewards r ON r.epoch = c.epoch AND r.account_id = c.account_id
WHERE a.public_key = ?
ORDER BY c.epoch, c.submission_id
""".strip()
KEY_STATUS_COLUMNS = ("epoch", "submission_id", "kind", "task", "status", "reason", "value", "settled", "epoch_pay")


def key_status(con: duckdb.DuckDBPyConnection, public_key: str) -> list[tuple]:
    """A public key's submissions: epoch, id, kind, task, status, reason, value, whether settled, and what its
    account earned that epoch (None while unsettled); on a ledger or on an export loaded by load_export."""
    rows = con.execute(KEY_STATUS_SQL, [public_key.lower()]).fetchall()
    if _has(con, "quarantine"):
        rows += con.execute(
            "SELECT q.epoch, q.submission_id, NULL, NULL, 'quarantined', q.reason, NULL, e.settled_at IS NOT NULL, "
            "r.amount FROM quarantine q JOIN accounts a ON a.account_id = q.account_id "
            "LEFT JOIN epochs e ON e.epoch = q.epoch "
            "LEFT JOIN rewards r ON r.epoch = q.epoch AND r.account_id = q.account_id "
            "WHERE a.public_key = ? AND q.submission_id NOT IN (SELECT submission_id FROM contributions)",
            [public_key.lower()]).fetchall()
    return sorted(rows, key=lambda r: (r[0], r[1]))
