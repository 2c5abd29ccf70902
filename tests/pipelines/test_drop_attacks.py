"""Attacks on drop/, tested against docs/PROTOCOL.md: an adversary may write anything there.

Most rows of the reason-code matrix share ONE drop and ONE ingest run (a module-scoped batch); each row is then its
own parametrized test reading that run's ledger. The attacks from the bug report (forged nonces, backdated copies,
links and FIFOs, records that go missing) each get their own test.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nacl.signing
import pyarrow as pa
import pytest

from pipelines.manifest import MANIFEST_SUFFIX
from protocol.canonical import WEIGHTS_TASK, payload_digest
from tests.conftest import TASK, digits_table
from tests.drop_tools import (
    Ledger,
    account_id_of,
    backdate,
    build_market,
    csv_bytes,
    drop_submission,
    fields_for,
    fresh_key,
    honest,
    key_of,
    mentions,
    names_under,
    parquet_bytes,
    pub,
    put,
    read_ledger,
    reopen,
    run_ingest,
    sign,
    signed,
    waiting,
)
from engine import actions

pytestmark = pytest.mark.slow

ACCEPTED = "accepted"


# ============================================================================ the matrix: one drop, one ingest


@dataclass
class Case:
    name: str                          # the payload's file name (the manifest is name + .manifest.json)
    reasons: tuple[str, ...]           # acceptable reason codes, or (ACCEPTED,)
    detail_has: tuple[str, ...] = ()   # what quarantine.detail must also name (a field or a column)
    key: nacl.signing.SigningKey | None = None
    attributed: bool | None = None     # True: the key's account; False: NULL; None: not checked
    manifest_name: str | None = None
    verified: bool = True              # False: the manifest does not parse or verify (§4: only it leaves drop/)
    doc: dict | None = None            # the manifest's fields as sent, where it has them


@dataclass
class Ctx:
    market: object

    @property
    def home(self):
        return self.market.home

    @property
    def drop(self) -> Path:
        return self.market.home.paths.drop

    @property
    def outside(self) -> Path:
        return self.market.work  # a folder next to the home, outside drop/

    def key(self, role: str | None = "contributor") -> nacl.signing.SigningKey:
        return fresh_key(self.home, role)


def _good(lo: int = 300, hi: int = 340) -> bytes:
    return parquet_bytes(honest(lo, hi))


def _submit(ctx: Ctx, name: str, data: bytes, reasons, *, detail_has=(), attributed=True, nonce: int = 1,
            role: str | None = "contributor", **fields) -> Case:
    """A correctly signed submission of `data` by a fresh key of `role`."""
    k = ctx.key(role)
    doc = signed(k, data, name, nonce=nonce, **fields)
    drop_submission(ctx.drop, name, data, doc)
    return Case(name, tuple(reasons), tuple(detail_has), k, attributed, doc=doc)


def _manifest_case(ctx: Ctx, name: str, manifest: dict | bytes, detail_has=(), payload: bytes | None = None) -> Case:
    data = payload if payload is not None else _good()
    drop_submission(ctx.drop, name, data, manifest)
    return Case(name, ("unreadable",), tuple(detail_has), None, False, verified=False)


# ---- controls: honest submissions are accepted


def c_honest_parquet(ctx):
    return _submit(ctx, "honest.parquet", _good(300, 340), [ACCEPTED])


def c_honest_csv(ctx):
    return _submit(ctx, "honest.csv", csv_bytes(honest(340, 380)), [ACCEPTED])


def c_honest_arrow(ctx):
    import pyarrow.feather as feather
    import io

    buf = io.BytesIO()
    feather.write_feather(honest(380, 420), buf)
    return _submit(ctx, "honest.arrow", buf.getvalue(), [ACCEPTED])


# ---- signature


def c_wrong_key(ctx):
    """Signed by bob's key, naming alice's public key."""
    alice, bob = ctx.key(), ctx.key()
    data, name = _good(), "wrongkey.parquet"
    doc = fields_for(alice, data, name, nonce=1)
    forged = {**doc, "signature": sign(bob, doc)["signature"]}
    drop_submission(ctx.drop, name, data, forged)
    return Case(name, ("bad_signature",), (), alice, False, verified=False)


def c_flipped_signature_bit(ctx):
    k = ctx.key()
    data, name = _good(), "flipbit.parquet"
    doc = signed(k, data, name, nonce=1)
    sig = bytearray(bytes.fromhex(doc["signature"]))
    sig[10] ^= 0x01
    drop_submission(ctx.drop, name, data, {**doc, "signature": sig.hex()})
    return Case(name, ("bad_signature",), (), k, False, verified=False)


def c_edited_task(ctx):
    k = ctx.key()
    data, name = _good(), "editedtask.parquet"
    doc = signed(k, data, name, nonce=1)
    drop_submission(ctx.drop, name, data, {**doc, "task": "digits2"})
    return Case(name, ("bad_signature",), (), k, False, verified=False)


def c_edited_size(ctx):
    """size lowered after signing (not raised: a payload shorter than its size would wait, §2)."""
    k = ctx.key()
    data, name = _good(), "editedsize.parquet"
    doc = signed(k, data, name, nonce=1)
    drop_submission(ctx.drop, name, data, {**doc, "size": doc["size"] - 1})
    return Case(name, ("bad_signature",), (), k, False, verified=False)


# ---- payload bytes


def c_digest_mismatch(ctx):
    k = ctx.key()
    data, name = _good(), "tampered.parquet"
    doc = signed(k, data, name, nonce=1)
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 0xFF
    drop_submission(ctx.drop, name, bytes(bad), doc)
    return Case(name, ("digest_mismatch",), (), k, True, doc=doc)


def c_zero_rows(ctx):
    return _submit(ctx, "zerorows.parquet", parquet_bytes(digits_table(300, 300)), ["quality_failed"])


def c_truncated_parquet(ctx):
    data = _good()
    return _submit(ctx, "truncated.parquet", data[: len(data) // 2], ["unreadable"])


def c_corrupt_parquet(ctx):
    data = bytearray(_good())
    footer = struct.unpack("<I", data[-8:-4])[0]
    for i in range(len(data) - 8 - footer + 10, len(data) - 18):
        data[i] = 0xAB
    return _submit(ctx, "corrupt.parquet", bytes(data), ["unreadable"])


def c_not_arrow(ctx):
    return _submit(ctx, "notarrow.arrow", b"this is not an Arrow IPC file or stream\n" * 4, ["unreadable"])


def c_csv_semicolon(ctx):
    text = csv_bytes(honest()).replace(b",", b";")
    return _submit(ctx, "semicolon.csv", text, ["schema_mismatch"])


def c_csv_bad_utf8(ctx):
    lines = csv_bytes(honest()).split(b"\n")
    cells = lines[3].split(b",")
    cells[2] = b"\xff\xfe\xfd"
    lines[3] = b",".join(cells)
    return _submit(ctx, "badutf8.csv", b"\n".join(lines), ["unreadable", "schema_mismatch"])


def c_csv_ragged(ctx):
    lines = csv_bytes(honest()).split(b"\n")
    lines[4] = b",".join(lines[4].split(b",")[:4])
    return _submit(ctx, "ragged.csv", b"\n".join(lines), ["unreadable"])


# ---- the manifest itself (all `unreadable`, naming the field)


def c_manifest_not_json(ctx):
    return _manifest_case(ctx, "notjson.parquet", b"{not json at all")


def c_manifest_json_array(ctx):
    return _manifest_case(ctx, "array.parquet", b'["version", 1, "kind", "dataset"]')


def c_manifest_missing_field(ctx):
    k = ctx.key()
    data, name = _good(), "missingfield.parquet"
    doc = fields_for(k, data, name, nonce=1)
    del doc["created_at"]
    return _manifest_case(ctx, name, sign(k, doc), ("created_at",), data)


def c_manifest_extra_field(ctx):
    k = ctx.key()
    data, name = _good(), "extrafield.parquet"
    return _manifest_case(ctx, name, signed(k, data, name, nonce=1, comment="hello"), ("comment",), data)


def c_manifest_nonce_string(ctx):
    k = ctx.key()
    data, name = _good(), "noncestr.parquet"
    return _manifest_case(ctx, name, signed(k, data, name, nonce="1"), ("nonce",), data)


def c_manifest_size_float(ctx):
    k = ctx.key()
    data, name = _good(), "sizefloat.parquet"
    return _manifest_case(ctx, name, signed(k, data, name, nonce=1, size=float(len(data))), ("size",), data)


def c_manifest_version_true(ctx):
    k = ctx.key()
    data, name = _good(), "versiontrue.parquet"
    return _manifest_case(ctx, name, signed(k, data, name, nonce=1, version=True), ("version",), data)


def c_manifest_version_2(ctx):
    k = ctx.key()
    data, name = _good(), "version2.parquet"
    return _manifest_case(ctx, name, signed(k, data, name, nonce=1, version=2), ("version",), data)


def c_manifest_oversized(ctx):
    """A valid, correctly signed manifest padded with JSON whitespace past MAX_MANIFEST_BYTES = 65,536."""
    k = ctx.key()
    data, name = _good(), "oversized.parquet"
    text = json.dumps(signed(k, data, name, nonce=1)).encode() + b" " * 70_000 + b"\n"
    assert len(text) > 65_536
    return _manifest_case(ctx, name, text, (), data)


def c_manifest_nonce_negative(ctx):
    k = ctx.key()
    data, name = _good(), "nonceneg.parquet"
    return _manifest_case(ctx, name, signed(k, data, name, nonce=-1), ("nonce",), data)


# ---- payload names that try to leave drop/ (correctly signed, size and digest of the target outside)


def _outside_target(ctx: Ctx, fname: str) -> tuple[Path, bytes]:
    data = _good(420, 460)
    target = ctx.outside / fname
    target.write_bytes(data)
    return target, data


def c_payload_dotdot(ctx):
    target, data = _outside_target(ctx, "escape-dotdot.parquet")
    rel = os.path.relpath(target, ctx.drop)
    assert rel.startswith("..")
    k = ctx.key()
    doc = signed(k, data, rel, nonce=1)
    drop_submission(ctx.drop, "dotdot.parquet", None, doc)
    return Case("dotdot.parquet", ("unreadable",), ("payload",), k, False, verified=False)


def c_payload_absolute(ctx):
    target, data = _outside_target(ctx, "escape-abs.parquet")
    k = ctx.key()
    doc = signed(k, data, str(target), nonce=1)
    drop_submission(ctx.drop, "absolute.parquet", None, doc)
    return Case("absolute.parquet", ("unreadable",), ("payload",), k, False, verified=False)


def c_payload_nul(ctx):
    k = ctx.key()
    data = _good()
    doc = signed(k, data, "nul\x00.parquet", nonce=1)
    drop_submission(ctx.drop, "nul.parquet", None, doc)
    return Case("nul.parquet", ("unreadable",), ("payload",), k, False, verified=False)


# ---- key, nonce, kind, epoch, task


def c_unknown_key(ctx):
    return _submit(ctx, "unknownkey.parquet", _good(), ["unknown_key"], attributed=False, role=None)


def c_replayed_nonce(ctx):
    k = ctx.replay_keys[0]       # used nonce 5 in an earlier run
    data, name = _good(440, 480), "replayed.parquet"
    doc = signed(k, data, name, nonce=5)
    drop_submission(ctx.drop, name, data, doc)
    return Case(name, ("replayed_nonce",), ("nonce",), k, True, doc=doc)


def c_lower_nonce(ctx):
    k = ctx.replay_keys[1]       # used nonce 5 in an earlier run
    data, name = _good(440, 480), "lowernonce.parquet"
    doc = signed(k, data, name, nonce=3)
    drop_submission(ctx.drop, name, data, doc)
    return Case(name, ("replayed_nonce",), ("nonce",), k, True, doc=doc)


def _weights_doc(ctx, epoch: int) -> bytes:
    alice = pub(key_of(ctx.home, "alice"))
    return json.dumps({"epoch": epoch, "weights": {alice: 1.0}}).encode()


def c_contributor_sends_weights(ctx):
    return _submit(ctx, "cweights.json", _weights_doc(ctx, ctx.epoch), ["kind_not_allowed"], kind="weights",
                   task=WEIGHTS_TASK)


def c_weights_other_epoch(ctx):
    return _submit(ctx, "wother.json", _weights_doc(ctx, ctx.epoch + 5), ["wrong_epoch", "commit_required"],
                   role="validator", kind="weights", task=WEIGHTS_TASK)


def c_commit_other_epoch(ctx):
    data = json.dumps({"epoch": ctx.epoch + 5, "commitment": "ab" * 32}).encode()
    return _submit(ctx, "cother.json", data, ["wrong_epoch"], role="validator", kind="weights", task=WEIGHTS_TASK)


def c_unknown_task(ctx):
    return _submit(ctx, "unknowntask.parquet", _good(), ["unknown_task"], task="nosuchtask")


# ---- schema and quality


def c_missing_column(ctx):
    return _submit(ctx, "missingcol.parquet", parquet_bytes(honest().drop_columns(["px_3"])), ["schema_mismatch"],
                   detail_has=("px_3",))


def c_extra_column(ctx):
    t = honest()
    t = t.append_column("extra_col", pa.array([1.0] * t.num_rows))
    return _submit(ctx, "extracol.parquet", parquet_bytes(t), ["schema_mismatch"], detail_has=("extra_col",))


def c_string_in_numeric(ctx):
    lines = csv_bytes(honest()).split(b"\n")
    header = lines[0].decode().replace('"', "").split(",")
    col = header.index("px_2")
    cells = lines[5].split(b",")
    cells[col] = b"abc"
    lines[5] = b",".join(cells)
    return _submit(ctx, "stringcol.csv", b"\n".join(lines), ["schema_mismatch"], detail_has=("px_2",))


def _with(table: pa.Table, col: str, row: int, value) -> pa.Table:
    values = table.column(col).to_pylist()
    values[row] = value
    i = table.column_names.index(col)
    return table.set_column(i, col, pa.array(values, table.schema.field(col).type))


def c_nan_feature(ctx):
    return _submit(ctx, "nanfeature.parquet", parquet_bytes(_with(honest(), "px_1", 3, float("nan"))),
                   ["quality_failed"], detail_has=("px_1",))


def c_inf_feature(ctx):
    return _submit(ctx, "inffeature.parquet", parquet_bytes(_with(honest(), "px_2", 4, float("inf"))),
                   ["quality_failed"], detail_has=("px_2",))


def c_label_outside_domain(ctx):
    return _submit(ctx, "label42.parquet", parquet_bytes(_with(honest(), "label", 2, 42)), ["quality_failed"],
                   detail_has=("label",))


def c_below_min_rows(ctx):
    return _submit(ctx, "fewrows.parquet", parquet_bytes(honest(300, 305)), ["quality_failed"])


CASES: dict[str, Callable[[Ctx], Case]] = {
    fn.__name__[2:]: fn for fn in [
        c_honest_parquet, c_honest_csv, c_honest_arrow,
        c_wrong_key, c_flipped_signature_bit, c_edited_task, c_edited_size,
        c_digest_mismatch, c_zero_rows, c_truncated_parquet, c_corrupt_parquet, c_not_arrow, c_csv_semicolon,
        c_csv_bad_utf8, c_csv_ragged,
        c_manifest_not_json, c_manifest_json_array, c_manifest_missing_field, c_manifest_extra_field,
        c_manifest_nonce_string, c_manifest_size_float, c_manifest_version_true, c_manifest_version_2,
        c_manifest_oversized, c_manifest_nonce_negative,
        c_payload_dotdot, c_payload_absolute, c_payload_nul,
        c_unknown_key, c_replayed_nonce, c_lower_nonce, c_contributor_sends_weights, c_weights_other_epoch,
        c_commit_other_epoch, c_unknown_task,
        c_missing_column, c_extra_column, c_string_in_numeric, c_nan_feature, c_inf_feature,
        c_label_outside_domain, c_below_min_rows,
    ]
}


@dataclass
class Batch:
    ctx: Ctx
    cases: dict[str, Case]
    ledger: Ledger | None
    error: BaseException | None
    before: set[str]             # submission ids in the ledger before the batch's run
    outside: dict[Path, tuple[bytes, int]]

    def check(self) -> Ledger:
        if self.error is not None:
            pytest.fail(f"ingest of the batch raised {type(self.error).__name__}: {self.error}")
        return self.ledger


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> Batch:
    from ledger.db import open_ledger
    from ledger.epochs import current_epoch

    market = build_market(tmp_path_factory.mktemp("matrix"))
    ctx = Ctx(market)
    with open_ledger(market.home.paths.ledger, read_only=True) as con:
        ctx.epoch = current_epoch(con)
    # an earlier run in which two keys use nonce 5, for the replay cases
    ctx.replay_keys = [fresh_key(market.home), fresh_key(market.home)]
    for i, k in enumerate(ctx.replay_keys):
        data, name = _good(460 + 40 * i, 500 + 40 * i), f"earlier{i}.parquet"
        drop_submission(ctx.drop, name, data, signed(k, data, name, nonce=5))
    run_ingest(market.home)
    before = {r["submission_id"] for r in read_ledger(market.home).contributions}
    assert len(before) == 2 and all(r["status"] == ACCEPTED for r in read_ledger(market.home).contributions)

    cases = {cid: fn(ctx) for cid, fn in CASES.items()}
    outside = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in market.work.iterdir() if p.is_file()}
    try:
        run_ingest(market.home)
        error = None
    except BaseException as e:  # noqa: BLE001 - every test of the batch reports it
        error = e
    ledger = read_ledger(market.home) if error is None else None
    return Batch(ctx, cases, ledger, error, before, outside)


def _in_folder(folder: Path, name: str) -> bool:
    """`name`, or the renamed `stem~N.ext` of it, somewhere under `folder`."""
    stem, dot, ext = name.partition(".")
    return any(n == name or (n.startswith(stem + "~") and n.endswith(dot + ext)) for n in names_under(folder))


@pytest.mark.parametrize("case_id", list(CASES))
def test_matrix(batch: Batch, case_id: str) -> None:
    led = batch.check()
    case = batch.cases[case_id]
    home = batch.ctx.home
    row = led.contribution(case.name)
    mname = case.manifest_name or case.name + MANIFEST_SUFFIX
    if case.reasons == (ACCEPTED,):
        assert (row["status"], row["reason"]) == (ACCEPTED, None), row
        assert not led.quarantine_for(case.name)
        assert _in_folder(home.paths.archive, case.name) and _in_folder(home.paths.archive, mname)
    else:
        assert row["status"] == "quarantined" and row["reason"] in case.reasons, (
            f"{case.name}: expected {case.reasons}, got {row['reason']!r}: {row}")
        q = led.quarantined(case.name)
        assert q["submission_id"] == row["submission_id"] and q["reason"] == row["reason"]
        detail = q["detail"]
        assert case.name in detail or mname in detail, f"detail does not name the file: {detail!r}"
        for needle in case.detail_has:
            assert needle in detail, f"detail does not name {needle!r}: {detail!r}"
        assert _in_folder(home.paths.quarantine, mname), f"{mname} not moved to quarantine/"
    if case.attributed is False:
        assert row["account_id"] is None, f"unverified submission attributed to {row['account_id']}"
        for q in led.quarantine_for(case.name):
            assert q["account_id"] is None
    elif case.attributed:
        assert row["account_id"] == account_id_of(home, pub(case.key)) is not None
    assert mname not in waiting(home), f"{mname} still in drop/"
    if case.verified:
        assert case.name not in waiting(home), f"{case.name} still in drop/"
    else:  # §4: an unverified manifest speaks for nobody; a payload of the same name stays to be judged later
        assert not _in_folder(home.paths.quarantine, case.name) and not _in_folder(home.paths.archive, case.name), (
            f"{case.name} moved out of drop/ on the word of a manifest that does not verify")


def test_matrix_one_row_per_submission_and_drop_empty(batch: Batch) -> None:
    led = batch.check()
    new = [r for r in led.contributions if r["submission_id"] not in batch.before]
    assert len(new) == len(batch.cases), sorted(r["file"] for r in new)
    rejected = [c for c in batch.cases.values() if c.reasons != (ACCEPTED,)]
    assert len(led.quarantine) == len(rejected)
    assert {q["submission_id"] for q in led.quarantine} <= {r["submission_id"] for r in new}
    stays = {c.name for c in batch.cases.values() if not c.verified and (batch.ctx.drop / c.name).exists()}
    assert waiting(batch.ctx.home) == stays


def test_matrix_submission_ids_follow_the_spec(batch: Batch) -> None:
    """§4: `<digest>-<public_key>-<nonce>` (full hex) past the nonce check, `...~<arrival>` for other decisions
    about a verified manifest, `unverified-<arrival>` for a manifest that does not verify."""
    led = batch.check()
    for cid in ("honest_parquet", "missing_column", "label_outside_domain"):
        case = batch.cases[cid]
        row = led.contribution(case.name)
        assert row["submission_id"] == f"{case.doc['digest']}-{pub(case.key)}-{case.doc['nonce']}"
    for cid in ("digest_mismatch", "unknown_task", "replayed_nonce", "lower_nonce"):
        case = batch.cases[cid]
        row = led.contribution(case.name)
        prefix = f"{case.doc['digest']}-{pub(case.key)}-{case.doc['nonce']}~"
        assert row["submission_id"].startswith(prefix) and row["submission_id"][len(prefix):].isdigit(), (
            row["submission_id"])
    for cid in ("wrong_key", "flipped_signature_bit", "manifest_not_json", "manifest_nonce_string"):
        row = led.contribution(batch.cases[cid].name)
        assert row["submission_id"].startswith("unverified-"), row["submission_id"]
        assert row["account_id"] is None


def test_matrix_nothing_outside_drop_is_read_or_moved(batch: Batch) -> None:
    led = batch.check()
    for path, (data, mtime) in batch.outside.items():
        assert path.is_file() and not path.is_symlink(), f"{path} moved or replaced"
        assert path.read_bytes() == data and path.stat().st_mtime_ns == mtime
    lake_names = names_under(batch.ctx.home.paths.lake)
    for path, (data, _) in batch.outside.items():
        if path.name.startswith("escape-"):
            d = payload_digest(data)
            assert not any(d in n for n in lake_names), f"{path.name} was landed in the lake"
            assert not _in_folder(batch.ctx.home.paths.archive, path.name)
            assert not _in_folder(batch.ctx.home.paths.quarantine, path.name)
    assert all(r["status"] != ACCEPTED for c in ("payload_dotdot", "payload_absolute", "payload_nul")
               for r in led.contributions_for(batch.cases[c].name))


# ============================================================================ single-purpose tests


def test_payload_missing_or_short_waits_then_incomplete(market) -> None:
    home = market.home
    drop = home.paths.drop
    k = key_of(home, "alice")
    data = _good()
    drop_submission(drop, "gone.parquet", None, signed(k, data, "gone.parquet", nonce=101))
    drop_submission(drop, "short.parquet", data[: len(data) // 2], signed(k, data, "short.parquet", nonce=102))
    put(drop, "orphan.parquet", data)                      # a payload without its manifest
    k2 = key_of(home, "bob")
    drop_submission(drop, "control.parquet", data, signed(k2, data, "control.parquet", nonce=1))
    run_ingest(home)

    led = read_ledger(home)
    assert led.contribution("control.parquet")["status"] == ACCEPTED
    for name in ("gone.parquet", "short.parquet", "orphan.parquet"):
        assert not led.contributions_for(name), f"{name} was recorded though it is incomplete: {led.contributions}"
    assert waiting(home) == {"gone.parquet.manifest.json", "short.parquet", "short.parquet.manifest.json",
                             "orphan.parquet"}

    home = reopen(home, incomplete_after_seconds=0)
    run_ingest(home)
    led = read_ledger(home)
    for name in ("gone.parquet", "short.parquet", "orphan.parquet"):
        row = led.contribution(name)
        assert (row["status"], row["reason"]) == ("quarantined", "incomplete"), row
        assert name in led.quarantined(name)["detail"]
    assert waiting(home) == set()


def test_payload_over_max_payload_bytes_is_too_large(market) -> None:
    home = reopen(market.home, max_payload_bytes=1000)
    big = csv_bytes(honest(300, 360))
    small = csv_bytes(honest(360, 372))
    assert len(big) > 1000 >= len(small)
    alice, bob = key_of(home, "alice"), key_of(home, "bob")
    drop_submission(home.paths.drop, "big.csv", big, signed(alice, big, "big.csv", nonce=1))
    drop_submission(home.paths.drop, "small.csv", small, signed(bob, small, "small.csv", nonce=1))
    run_ingest(home)
    led = read_ledger(home)
    row = led.contribution("big.csv")
    assert (row["status"], row["reason"]) == ("quarantined", "too_large")
    assert row["account_id"] == account_id_of(home, pub(alice))
    assert "big.csv" in led.quarantined("big.csv")["detail"]
    assert led.contribution("small.csv")["status"] == ACCEPTED
    assert waiting(home) == set()


def test_nonce_2_63_is_unreadable_and_the_batch_survives(market) -> None:
    home = market.home
    alice, bob = key_of(home, "alice"), key_of(home, "bob")
    data = _good()
    drop_submission(home.paths.drop, "huge-nonce.parquet", data,
                    signed(alice, data, "huge-nonce.parquet", nonce=2**63))
    drop_submission(home.paths.drop, "max-nonce.parquet", data, signed(bob, data, "max-nonce.parquet",
                                                                       nonce=2**63 - 1))
    run_ingest(home)
    led = read_ledger(home)
    row = led.contribution("huge-nonce.parquet")
    assert (row["status"], row["reason"]) == ("quarantined", "unreadable")
    assert "nonce" in led.quarantined("huge-nonce.parquet")["detail"]
    assert row["account_id"] is None
    assert led.contribution("max-nonce.parquet")["status"] == ACCEPTED   # 2^63 - 1 is in bounds
    assert waiting(home) == {"huge-nonce.parquet"}   # the payload of an unverified manifest stays (§4)


# ---- attack a: a forged manifest must not burn a real key's nonces


def _forged(home, name: str, data: bytes, nonce: int) -> dict:
    """Unsigned: alice's public key, a nonce, a wrong size and a garbage signature."""
    alice = key_of(home, "alice")
    doc = fields_for(alice, data, name, nonce=nonce, size=len(data) + 17)
    return {**doc, "signature": hashlib.blake2b(b"garbage", digest_size=64).hexdigest()}


def test_attack_forged_high_nonce_does_not_block_alice(market) -> None:
    home = market.home
    data = _good()
    drop_submission(home.paths.drop, "forged.parquet", data, _forged(home, "forged.parquet", data, 2**62))
    run_ingest(home)
    led = read_ledger(home)
    row = led.contribution("forged.parquet")
    assert row["status"] == "quarantined" and row["reason"] in ("bad_signature", "unreadable"), row
    assert row["account_id"] is None

    path, manifest = actions.submit(home, market.write("alice.parquet", honest(340, 380)), key="alice", task=TASK)
    assert manifest.nonce == 1
    run_ingest(home)
    row = read_ledger(home).contribution("alice.parquet")
    assert (row["status"], row["reason"]) == (ACCEPTED, None), f"alice's genuine nonce 1 was refused: {row}"


def test_attack_forged_nonce_2_63_in_a_batch(market) -> None:
    home = market.home
    drop = home.paths.drop
    data = _good()
    drop_submission(drop, "forged63.parquet", data, _forged(home, "forged63.parquet", data, 2**63))
    carol = key_of(home, "carol")
    drop_submission(drop, "signed63.parquet", data, signed(carol, data, "signed63.parquet", nonce=2**63))
    market.submit("bob", honest(340, 380), "bob-ok.parquet")
    market.submit("alice", honest(380, 420), "alice-ok.parquet")
    bad = parquet_bytes(honest().drop_columns(["px_0"]))
    drop_submission(drop, "carol-bad.parquet", bad, signed(carol, bad, "carol-bad.parquet", nonce=5))
    drop_submission(drop, "junk.csv", b"a,b\n1,2\n", b"\x00\xff not a manifest")
    files = {"forged63.parquet", "signed63.parquet", "bob-ok.parquet", "alice-ok.parquet", "carol-bad.parquet",
             "junk.csv"}

    run_ingest(home)   # must not raise
    led = read_ledger(home)
    for f in files:
        led.contribution(f)   # exactly one row each
    assert len(led.contributions) == len(files)
    assert led.contribution("forged63.parquet")["reason"] in ("bad_signature", "unreadable")
    assert led.contribution("forged63.parquet")["account_id"] is None
    assert led.contribution("signed63.parquet")["reason"] == "unreadable"
    assert led.contribution("bob-ok.parquet")["status"] == ACCEPTED
    assert led.contribution("alice-ok.parquet")["status"] == ACCEPTED
    assert led.contribution("carol-bad.parquet")["reason"] == "schema_mismatch"
    assert led.contribution("junk.csv")["reason"] == "unreadable"
    # §4: only an unverified manifest leaves drop/; a payload of the same name stays to be judged later
    assert waiting(home) == {"forged63.parquet", "signed63.parquet", "junk.csv"}
    for f in ("bob-ok.parquet", "alice-ok.parquet"):
        assert _in_folder(home.paths.archive, f) and _in_folder(home.paths.archive, f + MANIFEST_SUFFIX)
    for f in files - {"bob-ok.parquet", "alice-ok.parquet"}:
        assert _in_folder(home.paths.quarantine, f + MANIFEST_SUFFIX)


# ---- attack b: a backdated copy must not take the first submitter's credit


def _status_and_amount(home, led: Ledger, name: str) -> tuple[str, int]:
    row = led.contribution(name)
    epoch = row["epoch"]
    amount = sum(r["amount"] for r in led.rewards if r["account_id"] == row["account_id"] and r["epoch"] == epoch)
    return row["status"], amount


def _copy_for_bob(market, src_table: pa.Table) -> Path:
    return actions.submit(market.home, market.write("b-copy.parquet", src_table), key="bob", task=TASK)[0]


@pytest.mark.parametrize("backdated", [False, True], ids=["control", "backdated"])
def test_attack_backdated_copy_in_the_same_run(market, backdated: bool) -> None:
    home = market.home
    table = honest(300, 400)
    market.submit("alice", table, "a-original.parquet")
    bob_manifest = _copy_for_bob(market, table)
    if backdated:
        backdate(home.paths.drop / "b-copy.parquet")
        backdate(bob_manifest)
    run_ingest(home)
    led = read_ledger(home)
    a, b = led.contribution("a-original.parquet"), led.contribution("b-copy.parquet")
    assert (a["status"], b["status"]) == (ACCEPTED, ACCEPTED)
    assert a["received_at"] <= b["received_at"], "bob's copy was stamped as arriving before alice's original"

    from engine.epoch import run_epoch  # imported here: the other attacks do not need scoring to import

    run_epoch(home, close=True)
    led = read_ledger(home)
    alice_status, alice_amount = _status_and_amount(home, led, "a-original.parquet")
    bob_status, bob_amount = _status_and_amount(home, led, "b-copy.parquet")
    assert alice_status == ACCEPTED and alice_amount > 0
    assert bob_status == "duplicate" and bob_amount == 0


def test_attack_backdated_copy_in_a_later_run(market) -> None:
    home = market.home
    table = honest(300, 400)
    market.submit("alice", table, "a-original.parquet")
    run_ingest(home)
    bob_manifest = _copy_for_bob(market, table)
    backdate(home.paths.drop / "b-copy.parquet")
    backdate(bob_manifest)
    run_ingest(home)
    led = read_ledger(home)
    assert led.contribution("a-original.parquet")["received_at"] <= led.contribution("b-copy.parquet")["received_at"]

    from engine.epoch import run_epoch  # imported here: the other attacks do not need scoring to import

    run_epoch(home, close=True)
    led = read_ledger(home)
    alice_status, alice_amount = _status_and_amount(home, led, "a-original.parquet")
    bob_status, bob_amount = _status_and_amount(home, led, "b-copy.parquet")
    assert alice_status == ACCEPTED and alice_amount > 0
    assert bob_status == "duplicate" and bob_amount == 0


# ---- attack c: links, FIFOs and directories are never opened or followed


@dataclass
class Links:
    home: object
    ledger: Ledger | None
    error: BaseException | None
    secret: Path
    secret_bytes: bytes
    secret_mtime: int
    manifest_target: Path
    manifest_target_bytes: bytes

    def check(self) -> Ledger:
        if self.error is not None:
            pytest.fail(f"ingest raised {type(self.error).__name__}: {self.error}")
        return self.ledger


SECRET_MARKER = "SECRET_MARKER_7f3a9c"


@pytest.fixture(scope="module")
def links(tmp_path_factory) -> Links:
    root = tmp_path_factory.mktemp("links")
    market = build_market(root)
    home = market.home
    drop = home.paths.drop
    secret = root / "secret.csv"
    secret.write_bytes(f"{SECRET_MARKER},px_1\n1.0,2.0\n".encode() * 3)
    secret_mtime = secret.stat().st_mtime_ns

    # a payload that is a symlink to the secret; the manifest claims another size and digest
    k1 = fresh_key(home)
    decoy = b"x"
    (drop / "link.csv").symlink_to(secret)
    drop_submission(drop, "link.csv", None, signed(k1, decoy, "link.csv", nonce=1))
    # a manifest that is a symlink to a valid, signed manifest outside drop/ (its payload is regular)
    k2 = fresh_key(home)
    data = _good()
    target = root / "outside.manifest.json"
    target.write_bytes(json.dumps(signed(k2, data, "mlink.parquet", nonce=1)).encode())
    put(drop, "mlink.parquet", data)
    (drop / "mlink.parquet.manifest.json").symlink_to(target)
    # a FIFO as the payload of a signed manifest, a bare FIFO, a FIFO named like a manifest
    k3 = fresh_key(home)
    os.mkfifo(drop / "fifo.csv")
    drop_submission(drop, "fifo.csv", None, signed(k3, decoy, "fifo.csv", nonce=1))
    os.mkfifo(drop / "barefifo.parquet")
    os.mkfifo(drop / "fifomanifest.parquet.manifest.json")
    # a directory named like a manifest
    (drop / "x.parquet.manifest.json").mkdir()
    (drop / "x.parquet.manifest.json" / "inner.txt").write_text("inside a directory")
    # and an honest submission alongside
    market.submit("alice", honest(340, 380), "honest.parquet")

    fifos = [drop / "fifo.csv", drop / "barefifo.parquet", drop / "fifomanifest.parquet.manifest.json"]
    try:
        run_ingest(home, timeout=180, fifos=fifos)
        error = None
    except BaseException as e:  # noqa: BLE001
        error = e
    return Links(home, read_ledger(home) if error is None else None, error, secret, secret.read_bytes(),
                 secret_mtime, target, target.read_bytes())


NOT_REGULAR = ("not_regular", "unreadable")


@pytest.mark.parametrize("name", ["link.csv", "mlink.parquet.manifest.json", "fifo.csv", "barefifo.parquet",
                                  "fifomanifest.parquet.manifest.json", "x.parquet.manifest.json"])
def test_attack_non_regular_entries_are_quarantined(links: Links, name: str) -> None:
    led = links.check()
    rows = [r for r in led.contributions_for(name) if r["status"] == "quarantined" and r["reason"] in NOT_REGULAR]
    assert rows, f"{name}: no not_regular/unreadable row; rows for it: {led.contributions_for(name)}"
    assert not [r for r in led.contributions_for(name) if r["status"] == ACCEPTED]
    q = led.quarantine_for(name)
    assert q and all(name in r["detail"] or name.removesuffix(MANIFEST_SUFFIX) in r["detail"] for r in q)
    assert name not in waiting(links.home), f"{name} left in drop/"


def test_attack_links_leak_nothing_and_touch_nothing(links: Links) -> None:
    led = links.check()
    assert links.secret.is_file() and not links.secret.is_symlink()
    assert links.secret.read_bytes() == links.secret_bytes and links.secret.stat().st_mtime_ns == links.secret_mtime
    assert links.manifest_target.read_bytes() == links.manifest_target_bytes
    leaks = [payload_digest(links.secret_bytes), str(len(links.secret_bytes)), SECRET_MARKER]
    for q in led.quarantine:
        assert not mentions(q["detail"], leaks), f"quarantine detail reveals the link's target: {q['detail']!r}"
    assert not [r for r in led.contributions if r["digest"] == payload_digest(links.secret_bytes)]
    # the honest submission next to them went through
    assert led.contribution("honest.parquet")["status"] == ACCEPTED


# ---- attack d: a second copy of a recorded submission gets rows of its own


def test_attack_redropped_submission_has_its_own_rows(market) -> None:
    home = market.home
    manifest_path = market.submit("alice", honest(300, 340), "orig.parquet")
    payload = (home.paths.drop / "orig.parquet").read_bytes()
    manifest = manifest_path.read_bytes()
    run_ingest(home)
    first = read_ledger(home).contribution("orig.parquet")
    assert first["status"] == ACCEPTED

    # the same two files again, byte for byte (same names: the manifest names its payload) ...
    drop_submission(home.paths.drop, "orig.parquet", payload, manifest)
    # ... and the same bytes under a new name (the manifest's payload field then no longer matches its name)
    drop_submission(home.paths.drop, "copy.parquet", payload, manifest)
    run_ingest(home)
    led = read_ledger(home)

    assert len(led.contributions) == 3, led.contributions
    rows = led.contributions_for("orig.parquet")
    assert len(rows) == 2, f"the re-dropped copy has no contributions row of its own: {rows}"
    again = next(r for r in rows if r["submission_id"] != first["submission_id"])
    assert (again["status"], again["reason"]) == ("quarantined", "replayed_nonce")
    assert again["submission_id"].startswith(first["submission_id"] + "~"), again["submission_id"]
    assert [q["submission_id"] for q in led.quarantine_for("orig.parquet")] == [again["submission_id"]]
    copy = led.contribution("copy.parquet")
    assert copy["status"] == "quarantined" and copy["reason"] in ("unreadable", "replayed_nonce")
    assert len(led.quarantine_for("copy.parquet")) == 1
    if copy["reason"] == "unreadable":
        assert "payload" in led.quarantined("copy.parquet")["detail"]
        # its manifest names another payload, so it does not verify as copy.parquet's: that payload stays (§4)
        assert waiting(home) == {"copy.parquet"}
    else:
        assert waiting(home) == set()
    # every copy is kept: the original in the archive, the later ones in quarantine
    assert _in_folder(home.paths.archive, "orig.parquet")
    assert _in_folder(home.paths.quarantine, "orig.parquet")
    assert _in_folder(home.paths.quarantine, "copy.parquet" + MANIFEST_SUFFIX)


# ---- names that are not UTF-8


def test_attack_non_utf8_file_names_do_not_crash_ingest(market) -> None:
    """A drop/ entry named with bytes that are not UTF-8 (Python lists it with surrogate escapes): a signed
    manifest naming it, and a FIFO so named. Ingest must not raise; the manifest's payload is not 1-255 bytes of
    UTF-8 (§3), so it is unreadable, and the FIFO not_regular; an honest submission next to them goes through."""
    home = market.home
    drop = os.fsencode(home.paths.drop)
    k = key_of(home, "alice")
    data = _good()
    name = os.fsdecode(b"x\xff.parquet")                       # 'x\udcff.parquet'
    doc = fields_for(k, data, name, nonce=7)
    msg = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogateescape")
    doc["signature"] = k.sign(msg).signature.hex()
    with open(drop + b"/x\xff.parquet", "wb") as f:
        f.write(data)
    with open(drop + b"/x\xff.parquet.manifest.json", "wb") as f:
        f.write(json.dumps(doc).encode())                      # "\udcff" as a JSON escape
    os.mkfifo(drop + b"/fifo\xfe.csv")
    market.submit("bob", honest(340, 380), "bob-ok.parquet")

    run_ingest(home, timeout=180, fifos=[home.paths.drop / os.fsdecode(b"fifo\xfe.csv")])
    led = read_ledger(home)
    assert led.contribution("bob-ok.parquet")["status"] == ACCEPTED
    assert len(led.contributions) == 3, led.contributions
    reasons = sorted(r["reason"] for r in led.contributions if r["status"] == "quarantined")
    assert reasons == ["not_regular", "unreadable"], led.contributions
    left = {os.fsdecode(n) for n in os.listdir(drop)}
    assert os.fsdecode(b"x\xff.parquet.manifest.json") not in left and os.fsdecode(b"fifo\xfe.csv") not in left
