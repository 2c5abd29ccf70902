"""An adversary's toolkit for drop/: hand-built manifests and payloads, raw writes, and ledger read-back.

Everything here follows docs/PROTOCOL.md, not the implementation: manifests are built field by field and signed
over the canonical JSON of §3, files are put in place with the rename contract of §2 (or deliberately without it),
and outcomes are read back from the ledger's `contributions` and `quarantine` tables.
"""

from __future__ import annotations

import io
import json
import os
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nacl.signing
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from pipelines.manifest import MANIFEST_SUFFIX
from engine import actions, keys
from engine.home import Home, open_home
from protocol.canonical import canonical_json, payload_digest

from tests.conftest import TASK, Market, digits_table  # noqa: F401  (re-exported)

CREATED_AT = "2026-11-25T12:00:00+00:00"
INGEST_TIMEOUT_S = 240.0   # a Beam run takes seconds; anything near this is a hang


# ------------------------------------------------------------------------------------------- a market


def build_market(root: Path) -> Market:
    """The market of tests/conftest.py's `market` fixture (the same function), under `root` (for module scope)."""
    from tests import conftest

    return conftest.build_market(root)


def reopen(home: Home, **settings) -> Home:
    """Write `settings` into the home's settings.toml (merged with what is there) and open the home again."""
    path = home.root / "settings.toml"
    lines = path.read_text().splitlines() if path.exists() else []
    kept = [ln for ln in lines if ln.split("=", 1)[0].strip() not in settings]
    for k, v in settings.items():
        kept.append(f"{k} = {json.dumps(v)}")
    path.write_text("\n".join(kept) + "\n")
    return open_home(home.root)


_fresh_counter = iter(range(1, 10**9))


def fresh_key(home: Home, role: str | None = "contributor", prefix: str = "k") -> nacl.signing.SigningKey:
    """A new key, registered with `role` (None: not registered at all)."""
    if role is None:
        return nacl.signing.SigningKey.generate()
    name = f"{prefix}{next(_fresh_counter)}"
    actions.keygen(home, name)
    actions.register(home, name, role)
    return keys.load(home.paths.keys, name)


def key_of(home: Home, name: str) -> nacl.signing.SigningKey:
    return keys.load(home.paths.keys, name)


def pub(k: nacl.signing.SigningKey) -> str:
    return k.verify_key.encode().hex()


# ------------------------------------------------------------------------------------------- payloads


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def csv_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pa_csv.write_csv(table, buf)
    return buf.getvalue()


def honest(lo: int = 300, hi: int = 340) -> pa.Table:
    """Digits rows outside the holdout (rows 0..300), enough for min_rows."""
    return digits_table(lo, hi)


# ------------------------------------------------------------------------------------------- manifests


def fields_for(sk: nacl.signing.SigningKey | None, payload: bytes, name: str, *, nonce: int, kind: str = "dataset",
               task: str = TASK, **overrides) -> dict:
    """The unsigned fields of §3 for `payload` named `name`; overrides replace (or add) fields."""
    doc = {
        "version": 1, "kind": kind, "task": task, "payload": name, "size": len(payload),
        "digest": payload_digest(payload), "nonce": nonce, "created_at": CREATED_AT,
        "public_key": pub(sk) if sk is not None else "00" * 32,
    }
    doc.update(overrides)
    return doc


def sign(sk: nacl.signing.SigningKey, doc: dict) -> dict:
    """`doc` plus the Ed25519 signature of `sk` over the canonical JSON of every field in `doc` (§3)."""
    body = {k: v for k, v in doc.items() if k != "signature"}
    return {**body, "signature": sk.sign(canonical_json(body)).signature.hex()}


def signed(sk: nacl.signing.SigningKey, payload: bytes, name: str, *, nonce: int, **kw) -> dict:
    return sign(sk, fields_for(sk, payload, name, nonce=nonce, **kw))


def to_bytes(doc: dict | bytes | str) -> bytes:
    if isinstance(doc, bytes):
        return doc
    if isinstance(doc, str):
        return doc.encode("utf-8")
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


# ------------------------------------------------------------------------------------------- dropping


def put(drop: Path, name: str, data: bytes) -> Path:
    """Write `data` to drop/name through a dot-name and a rename (§2's writer contract)."""
    target = drop / name
    tmp = drop / f".{name}.tmp-{os.getpid()}"
    tmp.write_bytes(data)
    os.replace(tmp, target)
    return target


def drop_submission(drop: Path, name: str, payload: bytes | None, manifest: dict | bytes | str | None,
                    *, manifest_name: str | None = None) -> Path:
    """Payload first, manifest last; None leaves that file out. Returns the manifest's path."""
    if payload is not None:
        put(drop, name, payload)
    mname = manifest_name or name + MANIFEST_SUFFIX
    if manifest is not None:
        put(drop, mname, to_bytes(manifest))
    return drop / mname


def backdate(path: Path, seconds: float = 86400.0) -> None:
    st = os.stat(path, follow_symlinks=False)
    os.utime(path, (st.st_atime - seconds, st.st_mtime - seconds), follow_symlinks=False)


# ------------------------------------------------------------------------------------------- ingest


class IngestHung(AssertionError):
    pass


def run_ingest(home: Home, *, timeout: float = INGEST_TIMEOUT_S, fifos: Iterable[Path] = ()):
    """engine.stages.ingest.ingest(home) in a thread with a deadline; a hang fails the test.

    When it does not finish in time, each FIFO in `fifos` is opened for writing and closed, which gives any reader
    blocked on it an EOF, so that the hung thread can end and the test process is not left stuck.
    """
    from engine.stages.ingest import ingest

    out: dict = {}

    def target() -> None:
        try:
            out["result"] = ingest(home)
        except BaseException as e:  # re-raised in the test's thread
            out["error"] = e

    t = threading.Thread(target=target, name="ingest-under-test", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        for f in fifos:
            for candidate in (f, *home.paths.quarantine.rglob(f.name), *home.paths.archive.rglob(f.name)):
                try:
                    fd = os.open(candidate, os.O_WRONLY | os.O_NONBLOCK)
                    os.close(fd)
                except OSError:
                    pass
        t.join(30)
        raise IngestHung(f"ingest did not finish within {timeout:.0f} s (blocked on a FIFO or a link?)")
    if "error" in out:
        raise out["error"]
    return out["result"]


# ------------------------------------------------------------------------------------------- ledger read-back


@dataclass
class Ledger:
    contributions: list[dict] = field(default_factory=list)
    quarantine: list[dict] = field(default_factory=list)
    rewards: list[dict] = field(default_factory=list)

    def _match(self, rows: list[dict], name: str) -> list[dict]:
        names = {name, name + MANIFEST_SUFFIX}
        if name.endswith(MANIFEST_SUFFIX):
            names.add(name[: -len(MANIFEST_SUFFIX)])
        return [r for r in rows if r.get("file") in names]

    def contribution(self, name: str) -> dict:
        """The one contributions row for the file set `name` (payload or manifest name); fails unless exactly one."""
        rows = self._match(self.contributions, name)
        assert len(rows) == 1, f"{name}: expected exactly one contributions row, found {len(rows)}: {rows}"
        return rows[0]

    def contributions_for(self, name: str) -> list[dict]:
        return self._match(self.contributions, name)

    def quarantined(self, name: str) -> dict:
        """The one quarantine row for `name`; fails unless exactly one."""
        rows = self._match(self.quarantine, name)
        assert len(rows) == 1, f"{name}: expected exactly one quarantine row, found {len(rows)}: {rows}"
        return rows[0]

    def quarantine_for(self, name: str) -> list[dict]:
        return self._match(self.quarantine, name)


def _rows(con, sql: str) -> list[dict]:
    cur = con.execute(sql)
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def read_ledger(home: Home) -> Ledger:
    from ledger.db import open_ledger

    with open_ledger(home.paths.ledger, read_only=True) as con:
        return Ledger(
            contributions=_rows(con, "SELECT * FROM contributions ORDER BY received_at, submission_id"),
            quarantine=_rows(con, "SELECT * FROM quarantine ORDER BY received_at, submission_id"),
            rewards=_rows(con, "SELECT * FROM rewards ORDER BY epoch, account_id"),
        )


def account_id_of(home: Home, public_key: str) -> str | None:
    from ledger.db import open_ledger

    with open_ledger(home.paths.ledger, read_only=True) as con:
        row = con.execute("SELECT account_id FROM accounts WHERE public_key = ?", [public_key]).fetchone()
    return row[0] if row else None


def waiting(home: Home) -> set[str]:
    """Names in drop/ that are not in-progress dot-names."""
    return {p.name for p in home.paths.drop.iterdir() if not p.name.startswith(".")}


def names_under(folder: Path) -> set[str]:
    if not os.path.lexists(folder):
        return set()
    return {p.name for p in folder.rglob("*")}


def mentions(text: str, needles: Sequence[str]) -> list[str]:
    """Which of `needles` occur in `text` as whole tokens (numbers are matched on word boundaries)."""
    found = []
    for n in needles:
        if re.search(rf"(?<![0-9A-Za-z]){re.escape(n)}(?![0-9A-Za-z])", text):
            found.append(n)
    return found
