"""Ingest end to end: real Ed25519 keys, real Parquet/CSV/IPC payloads and a real Beam run per test."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import nacl.signing
import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.feather as pa_feather
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

import pipelines.ingest as ingest
from pipelines.ingest import IngestResult, Registry, row_hashes, run_ingest
from pipelines.manifest import MANIFEST_SUFFIX, sign_manifest, write_submission
from pipelines.options import DEFAULT_RUNNER, build_options, pipeline_arg_list

EPOCH = 3
MAX_PAYLOAD_BYTES = 4096
CREATED_AT = "2026-11-25T12:00:00+00:00"
T0 = 1_800_000_000   # fixed mtimes so received_at and result order are deterministic


# -------------------------------------------------------------- a small task, cast and gate written for the tests


@dataclass(frozen=True)
class TaskSpec:
    """Just what ingest uses of quality's Task: name, feature names, label."""

    name: str
    features: tuple[str, ...]
    label: str
    lo: float = 0.0
    hi: float = 10.0

    def feature_names(self) -> list[str]:
        return list(self.features)

    def columns(self) -> list[str]:
        return [*self.features, self.label]


class SchemaError(Exception):
    """Stands in for quality's SchemaError: ingest recognises it by class name."""


def cast(table: pa.Table, task: TaskSpec, *, file: str | None = None) -> pa.Table:
    missing = [c for c in task.columns() if c not in table.column_names]
    if missing:
        raise SchemaError(f"{file}: column '{missing[0]}': missing")
    arrays = [table.column(f).cast(pa.float64()) for f in task.features] + [table.column(task.label).cast(pa.int64())]
    return pa.table(arrays, names=task.columns())


@dataclass(frozen=True)
class Gate:
    success: bool
    detail: str

    def summary(self) -> str:
        return self.detail


def gate(table: pa.Table, task: TaskSpec) -> Gate:
    for f in task.features:
        v = table.column(f).to_numpy()
        bad = int(((v < task.lo) | (v > task.hi)).sum())
        if bad:
            return Gate(False, f"column '{f}': {bad} of {len(v)} values outside [{task.lo}, {task.hi}]")
    return Gate(True, "all 2 expectations passed")


# ------------------------------------------------------------------------------------------- fixtures


def _key(seed: int) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(bytes([seed]) * 32)


ALICE, BOB, VAL, MALLORY = _key(1), _key(2), _key(3), _key(4)


def _hex(k: nacl.signing.SigningKey) -> str:
    return k.verify_key.encode().hex()


TASK = TaskSpec("digits", ("f0", "f1"), "y")


def _registry(last_nonce: dict | None = None) -> Registry:
    return Registry(
        accounts={_hex(ALICE): ("acct-alice", "contributor"), _hex(BOB): ("acct-bob", "contributor"),
                  _hex(VAL): ("acct-val", "validator")},
        last_nonce=last_nonce if last_nonce is not None else {_hex(BOB): 10},
        tasks={"digits": TASK},
    )


def _rows(n: int = 6, offset: float = 0.0) -> pa.Table:
    f0 = np.linspace(0.0, 9.0, n) + offset
    return pa.table({"f0": f0, "f1": np.full(n, -0.0) if offset == 0 else f0 / 2, "y": np.arange(n) % 2})


@dataclass
class Home:
    root: Path

    @property
    def drop(self) -> Path:
        return self.root / "drop"

    @property
    def lake(self) -> Path:
        return self.root / "lake"

    @property
    def archive(self) -> Path:
        return self.root / "archive"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    def stage(self, name: str) -> Path:
        (self.root / "staging").mkdir(parents=True, exist_ok=True)
        return self.root / "staging" / name

    def submit(self, name: str, key: nacl.signing.SigningKey, nonce: int, *, kind: str = "dataset",
               task: str = "digits", table: pa.Table | None = None, data: bytes | None = None,
               at: int = 0) -> Path:
        """Write a payload, sign it and drop it; `at` orders arrival (manifest mtime)."""
        src = self.stage(name)
        if data is not None:
            src.write_bytes(data)
        elif name.endswith(".csv"):
            pa_csv.write_csv(table, src)
        elif name.endswith(".arrow"):
            pa_feather.write_feather(table, src)
        else:
            pq.write_table(table, src)
        m = sign_manifest(src, kind=kind, task=task, nonce=nonce, signing_key=key, created_at=CREATED_AT)
        mp = write_submission(self.drop, src, m)
        os.utime(mp, (T0 + at, T0 + at))
        return mp

    def run(self, registry: Registry | None = None, **kw) -> IngestResult:
        args = dict(drop=self.drop, lake=self.lake, archive=self.archive, quarantine=self.quarantine, epoch=EPOCH,
                    registry=registry or _registry(), cast=cast, gate=gate, max_payload_bytes=MAX_PAYLOAD_BYTES) | kw
        return run_ingest(**args)


@pytest.fixture()
def home(tmp_path: Path) -> Home:
    h = Home(tmp_path)
    h.drop.mkdir()
    return h


def _weights(epoch: int, weights: dict) -> bytes:
    return json.dumps({"epoch": epoch, "weights": weights}).encode()


def _expected_hash(features: list[float], label: int) -> int:
    data = b"".join(np.float64(0.0 if v == 0 else v).astype("<f8").tobytes() for v in features)
    data += np.int64(label).astype("<i8").tobytes()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


# ------------------------------------------------------------------------------------------------ tests


def test_options_default_runner_and_pass_through() -> None:
    opts = build_options()
    assert opts.view_as(StandardOptions).runner == DEFAULT_RUNNER
    assert opts.view_as(DirectOptions).direct_num_workers == os.cpu_count()
    user = ["--direct_num_workers=1", "--runner", "BundleBasedDirectRunner", "--my_flag=x"]
    args = pipeline_arg_list(user)
    assert args[-len(user):] == user and not any(a.startswith("--runner=") for a in args)
    opts = build_options(user)
    assert opts.view_as(StandardOptions).runner == "BundleBasedDirectRunner"
    assert opts.view_as(DirectOptions).direct_num_workers == 1


def test_empty_drop_runs_nothing(home: Home) -> None:
    (home.drop / ".half.csv.manifest.json").write_text("{")      # a temp name: not a submission yet
    assert home.run() == IngestResult(epoch=EPOCH, accepted=(), rejected=())
    assert (home.drop / ".half.csv.manifest.json").exists()


def test_accepted_datasets_land_in_the_lake_with_id_columns(home: Home) -> None:
    home.submit("a.parquet", ALICE, 1, table=_rows(), at=1)
    home.submit("b.csv", BOB, 11, table=_rows(5, offset=0.5), at=2)
    home.submit("c.arrow", ALICE, 2, table=_rows(4, offset=1.0), at=3)
    (home.drop / ".d.csv.tmp").write_text("in flight")
    res = home.run()

    assert res.rejected == ()
    assert [a.file for a in res.accepted] == ["a.parquet", "b.csv", "c.arrow"]
    a = res.accepted[0]
    assert (a.account_id, a.kind, a.task, a.nonce, a.rows) == ("acct-alice", "dataset", "digits", 1, 6)
    assert a.submission_id == f"{a.digest[:12]}-{a.public_key[:8]}-1" and a.received_at.startswith("2027-01-15T08:00:01")
    assert Path(a.lake_path) == home.lake / f"epoch={EPOCH}" / "kind=dataset" / "task=digits" / f"{a.digest}-{a.public_key[:16]}.parquet"

    t = pq.read_table(a.lake_path)
    assert t.column_names == ["f0", "f1", "y", "_submission_id", "_contributor", "_row", "_row_hash"]
    assert t.schema.field("_row").type == pa.int64() and t.schema.field("_row_hash").type == pa.uint64()
    assert set(t.column("_submission_id").to_pylist()) == {a.submission_id}
    assert set(t.column("_contributor").to_pylist()) == {"acct-alice"}
    assert t.column("_row").to_pylist() == list(range(6))
    rows = t.to_pylist()
    assert [r["_row_hash"] for r in rows] == [_expected_hash([r["f0"], r["f1"]], r["y"]) for r in rows]
    assert pq.read_table(res.accepted[1].lake_path).column("_contributor").to_pylist() == ["acct-bob"] * 5

    # files moved to the archive; the temp file is untouched
    assert sorted(p.name for p in home.drop.iterdir()) == [".d.csv.tmp"]
    archived = sorted(p.name for p in (home.archive / f"epoch={EPOCH}").iterdir())
    assert archived == sorted(n + s for n in ("a.parquet", "b.csv", "c.arrow") for s in ("", MANIFEST_SUFFIX))


def test_rerun_writes_nothing_new_and_keeps_every_copy(home: Home) -> None:
    home.submit("a.parquet", ALICE, 1, table=_rows(), at=1)
    first = home.run()
    lake_files = {p: p.stat().st_mtime_ns for p in home.lake.rglob("*") if p.is_file()}
    assert len(lake_files) == 1

    # the same submission dropped again (e.g. an epoch re-run with the same ledger state)
    arch = home.archive / f"epoch={EPOCH}"
    for name in ("a.parquet", "a.parquet" + MANIFEST_SUFFIX):
        shutil.copy2(arch / name, home.drop / name)
    second = home.run()
    assert second == first
    assert {p: p.stat().st_mtime_ns for p in home.lake.rglob("*") if p.is_file()} == lake_files
    assert sorted(p.name for p in arch.iterdir()) == sorted(
        ["a.parquet", "a.parquet" + MANIFEST_SUFFIX, "a~1.parquet", "a~1.parquet" + MANIFEST_SUFFIX])


def test_every_reject_reason_names_file_and_rule(home: Home) -> None:
    d = home.drop
    home.submit("good.parquet", ALICE, 5, table=_rows(), at=0)
    # unreadable: manifest is not JSON; manifest whose payload is missing
    (d / "junk.csv").write_text("x")
    (d / "junk.csv.manifest.json").write_text("{not json")
    os.utime(d / "junk.csv.manifest.json", (T0 + 1, T0 + 1))
    mp = home.submit("gone.parquet", ALICE, 6, table=_rows(), at=2)
    (d / "gone.parquet").unlink()
    # too_large
    home.submit("big.csv", ALICE, 7, data=b"f0,f1,y\n" + b"1.0,1.0,1\n" * 500, at=3)
    # digest_mismatch: same size, different bytes
    home.submit("tampered.csv", ALICE, 8, table=_rows(), at=4)
    raw = bytearray((d / "tampered.csv").read_bytes())
    raw[-2] = ord("0") if raw[-2] != ord("0") else ord("1")
    (d / "tampered.csv").write_bytes(bytes(raw))
    # bad_signature: a signed field changed after signing
    mp = home.submit("forged.parquet", ALICE, 9, table=_rows(), at=5)
    doc = json.loads(mp.read_text())
    doc["nonce"] = 99
    mp.write_text(json.dumps(doc))
    os.utime(mp, (T0 + 5, T0 + 5))
    # unknown_key, unknown_task, kind_not_allowed (x3)
    home.submit("stranger.parquet", MALLORY, 1, table=_rows(), at=6)
    home.submit("notask.parquet", ALICE, 10, task="nope", table=_rows(), at=7)
    home.submit("vdata.parquet", VAL, 1, table=_rows(), at=8)
    home.submit("cweights.json", ALICE, 11, kind="weights", task="_weights",
                data=_weights(EPOCH, {_hex(BOB): 1.0}), at=9)
    home.submit("preds.parquet", ALICE, 12, kind="predictions", table=_rows(), at=10)
    # replayed_nonce: bob's last used nonce is 10; and two of alice's with the same nonce
    home.submit("replay.parquet", BOB, 10, table=_rows(), at=11)
    home.submit("dup-nonce.parquet", ALICE, 5, table=_rows(3), at=12)
    # schema_mismatch and quality_failed
    home.submit("nolabel.csv", ALICE, 13, table=_rows().drop_columns(["y"]), at=13)
    home.submit("outofrange.parquet", ALICE, 14, table=_rows(offset=5.0), at=14)
    home.submit("weird.xlsx", ALICE, 15, data=b"PK\x03\x04", at=15)

    res = home.run()
    assert [a.file for a in res.accepted] == ["good.parquet"]
    got = {r.file: r for r in res.rejected}
    expected = {
        "junk.csv": ("unreadable", "junk.csv.manifest.json: not valid UTF-8 JSON"),
        "gone.parquet": ("unreadable", "gone.parquet: payload named by gone.parquet.manifest.json is missing"),
        "big.csv": ("too_large", f"big.csv: 5008 bytes is over max_payload_bytes={MAX_PAYLOAD_BYTES}"),
        "tampered.csv": ("digest_mismatch", "tampered.csv: BLAKE2b-256 digest is"),
        "forged.parquet": ("bad_signature", "forged.parquet.manifest.json: field 'signature'"),
        "stranger.parquet": ("unknown_key", f"stranger.parquet: public key {_hex(MALLORY)} is not registered"),
        "notask.parquet": ("unknown_task", "notask.parquet: task 'nope' is not a known task (known: digits)"),
        "vdata.parquet": ("kind_not_allowed", "vdata.parquet: kind 'dataset' is not allowed for role 'validator'"),
        "cweights.json": ("kind_not_allowed", "cweights.json: kind 'weights' is not allowed for role 'contributor'"),
        "preds.parquet": ("kind_not_allowed", "preds.parquet: predictions are not open for task digits yet"),
        "replay.parquet": ("replayed_nonce", "replay.parquet: nonce 10 is not above the last used nonce 10"),
        "dup-nonce.parquet": ("replayed_nonce", "dup-nonce.parquet: nonce 5 is not above the last used nonce 5"),
        "nolabel.csv": ("schema_mismatch", "nolabel.csv: column 'y': missing"),
        "outofrange.parquet": ("quality_failed", "outofrange.parquet: quality gate for task 'digits' failed: "
                                                 "column 'f0': 3 of 6 values outside [0.0, 10.0]"),
        "weird.xlsx": ("unreadable", "weird.xlsx: unsupported payload format '.xlsx'"),
    }
    assert {f: (r.reason, r.detail[: len(expected[f][1])]) for f, r in got.items()} == expected
    # sorted by arrival; attributed to an account only once the signature and key are proven
    assert [r.file for r in res.rejected] == list(expected)
    assert got["vdata.parquet"].account_id == "acct-val" and got["forged.parquet"].account_id is None
    assert got["junk.csv"].submission_id.endswith("-unreadable") and got["junk.csv"].nonce is None
    assert got["replay.parquet"].nonce == 10 and got["replay.parquet"].public_key == _hex(BOB)

    # nothing is deleted: every file is in quarantine (or the archive), drop is empty
    q = sorted(p.name for p in (home.quarantine / f"epoch={EPOCH}").iterdir())
    assert "junk.csv" in q and "junk.csv.manifest.json" in q and "gone.parquet.manifest.json" in q
    assert "gone.parquet" not in q and len(q) == 2 * len(expected) - 1
    assert sorted(p.name for p in (home.archive / f"epoch={EPOCH}").iterdir()) == [
        "good.parquet", "good.parquet.manifest.json"]
    assert list(home.drop.iterdir()) == []
    lake_files = [p for p in home.lake.rglob("*.parquet")]
    assert [p.parent.name for p in lake_files] == ["task=digits"]


def test_weights_accepted_and_checked(home: Home) -> None:
    w = {_hex(ALICE): 0.75, _hex(BOB): 0.25}
    home.submit("w.json", VAL, 1, kind="weights", task="_weights", data=_weights(EPOCH, w), at=1)
    home.submit("old.json", VAL, 2, kind="weights", task="_weights", data=_weights(EPOCH - 1, w), at=2)
    home.submit("neg.json", VAL, 3, kind="weights", task="_weights",
                data=_weights(EPOCH, {_hex(ALICE): -1.0}), at=3)
    home.submit("nan.json", VAL, 4, kind="weights", task="_weights",
                data=b'{"epoch": 3, "weights": {"%s": NaN}}' % _hex(ALICE).encode(), at=4)
    home.submit("who.json", VAL, 5, kind="weights", task="_weights",
                data=_weights(EPOCH, {_hex(MALLORY): 1.0}), at=5)
    home.submit("garbled.json", VAL, 6, kind="weights", task="_weights", data=b"[1, 2", at=6)
    res = home.run()

    [a] = res.accepted
    assert (a.file, a.kind, a.account_id, a.rows) == ("w.json", "weights", "acct-val", 2)
    assert Path(a.lake_path).parent == home.lake / f"epoch={EPOCH}" / "kind=weights" / "task=_weights"
    t = pq.read_table(a.lake_path)
    assert t.column_names == ["validator", "miner_key", "weight", "mode", "commit_epoch", "commitment",
                              "_submission_id", "_contributor", "_row"]
    assert t.select(["validator", "miner_key", "weight"]).to_pylist() == [
        {"validator": _hex(VAL), "miner_key": k, "weight": w[k]} for k in sorted(w)]
    got = {r.file: (r.reason, r.detail) for r in res.rejected}
    assert got["old.json"] == ("wrong_epoch", f"old.json: field 'epoch': weights are for epoch {EPOCH - 1}, "
                                              f"this run ingests epoch {EPOCH}")
    assert got["neg.json"][0] == "schema_mismatch" and "must be finite and non-negative" in got["neg.json"][1]
    assert got["nan.json"][0] == "schema_mismatch" and "NaN" in got["nan.json"][1]
    assert got["garbled.json"][0] == "schema_mismatch" and got["garbled.json"][1].startswith("garbled.json: ")
    assert got["who.json"] == ("unknown_key", f"who.json: weights name key {_hex(MALLORY)}, which is not "
                                              f"registered as a contributor")


def test_pipeline_args_reach_beam(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []

    def spy(args):
        opts = build_options(args)
        seen.append(opts)
        return opts

    monkeypatch.setattr(ingest, "build_options", spy)
    home.submit("a.csv", ALICE, 1, table=_rows(), at=1)
    res = home.run(pipeline_args=["--direct_num_workers=1", "--direct_running_mode=in_memory"])
    assert [a.file for a in res.accepted] == ["a.csv"]
    [opts] = seen
    assert opts.view_as(DirectOptions).direct_num_workers == 1
    assert opts.view_as(DirectOptions).direct_running_mode == "in_memory"
    assert opts.view_as(StandardOptions).runner == DEFAULT_RUNNER


def test_row_hash_normalises_negative_zero_and_string_labels() -> None:
    t = pa.table({"a": [0.0, -0.0, 1.5], "b": pa.array([1, 1, 2], pa.int64()), "y": ["x", "x", "é"]})
    h = row_hashes(t, ["a", "b"], "y")
    assert h.dtype == np.uint64 and h[0] == h[1] and h[0] != h[2]
    data = np.array([1.5, 2.0], "<f8").tobytes() + "é".encode()
    assert int(h[2]) == int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def test_row_hash_matches_rewards_definition() -> None:
    duplicates = pytest.importorskip("rewards.duplicates")
    t = pa.table({"a": [0.0, -0.0, 1.5, None], "b": [1.0, 2.0, float("nan"), 4.0], "y": pa.array([0, 1, -7, 3])})
    feats = np.column_stack([t.column(c).to_numpy(zero_copy_only=False) for c in ("a", "b")]).astype(np.float64)
    expected = duplicates.row_hashes(feats, t.column("y").to_numpy())
    assert row_hashes(t, ["a", "b"], "y").tolist() == expected.tolist()
    s = pa.table({"a": [1.0, 2.0], "y": ["cat", "dög"]})
    assert row_hashes(s, ["a"], "y").tolist() == duplicates.row_hashes(
        np.array([[1.0], [2.0]]), np.array(["cat", "dög"])).tolist()
