"""The ingest graph's shape, and its DoFns run by hand on real dropped files (no runner).

What must hold on any runner (issue 20): no side outputs and no side inputs (a runner may ignore output tags or
recompute what a side input reads), results written by the graph's last transform under deterministic names, each
payload read once, and the nonce rule applied before anything found while decoding (a replay is a replay first).
"""

from __future__ import annotations

import json

import pytest

from engine.stages.ingest import ingest
from ledger import accounts
from ledger.db import open_ledger
from pipelines import storage
from pipelines.records import Listed, Registry
from pipelines.verify import CheckFileFn, NonceOrderFn, Staged, WriteResultFn, nonce_key
from protocol import reasons as R
from quality.task_toml import load_tasks
from tests.drop_tools import csv_bytes, drop_submission, honest, key_of, parquet_bytes, pub, signed


def _registry(home) -> Registry:
    with open_ledger(home.paths.ledger, read_only=True) as con:
        accts = {a.public_key: (a.account_id, a.role) for a in accounts.all_accounts(con) if a.public_key}
    return Registry(accounts=accts, last_nonce={}, tasks=load_tasks(home.paths.tasks))


def _check(home, tmp_path, names: list[str]) -> list:
    fn = CheckFileFn(str(home.paths.drop), str(tmp_path / "staging"), _registry(home), 10**8, 1)
    return [c for i, n in enumerate(names) for c in fn.process(Listed(n + ".manifest.json", i + 1, "t", False))]


def test_graph_has_no_side_outputs_no_side_inputs_and_ends_in_the_result_write(market) -> None:
    import apache_beam as beam

    from pipelines.options import build_options
    from pipelines.transforms import build_pipeline

    p = beam.Pipeline(options=build_options())
    build_pipeline(p, drop=str(market.home.paths.drop), lake=str(market.home.paths.lake), staging="/tmp/x",
                   docs_dir=None, epoch=1, registry=_registry(market.home),
                   listed=[Listed("a.csv.manifest.json", 1, "t", False)], max_payload_bytes=1000, results="/tmp/r")
    proto = p.to_runner_api()
    pardos = [t for t in proto.components.transforms.values() if t.spec.urn == "beam:transform:pardo:v1"]
    assert pardos
    for t in pardos:
        from apache_beam.portability.api import beam_runner_api_pb2

        payload = beam_runner_api_pb2.ParDoPayload.FromString(t.spec.payload)
        assert not payload.side_inputs, t.unique_name
        assert len(t.outputs) == 1, (t.unique_name, list(t.outputs))
    consumed = {pc for t in proto.components.transforms.values() for pc in t.inputs.values()}
    leaves = [t.unique_name for t in proto.components.transforms.values()
              if not t.subtransforms and t.outputs and not set(t.outputs.values()) & consumed]
    assert leaves == ["WriteResults/Write"], leaves


def test_each_payload_is_read_once_and_decided_in_one_place(market, tmp_path, monkeypatch) -> None:
    home, alice = market.home, key_of(market.home, "alice")
    data = parquet_bytes(honest(300, 340))
    drop_submission(home.paths.drop, "a.parquet", data, signed(alice, data, "a.parquet", nonce=7))
    opened: list[str] = []
    real_open = storage.open_regular
    monkeypatch.setattr(storage, "open_regular", lambda path: opened.append(path) or real_open(path))
    (c,) = _check(home, tmp_path, ["a.parquet"])
    assert opened == [str(home.paths.drop / "a.parquet")]
    assert isinstance(c.staged, Staged) and c.staged.rows == 40 and c.final is None and c.late is None
    assert nonce_key(c) == pub(alice)


def test_a_replay_is_refused_as_a_replay_whatever_its_decode_would_say(market, tmp_path) -> None:
    home, alice = market.home, key_of(market.home, "alice")
    good = parquet_bytes(honest(300, 340))
    bad = csv_bytes(honest(340, 350).drop_columns(["label"]))   # a schema mismatch, and a replayed nonce
    drop_submission(home.paths.drop, "a.parquet", good, signed(alice, good, "a.parquet", nonce=7))
    drop_submission(home.paths.drop, "b.csv", bad, signed(alice, bad, "b.csv", nonce=7))
    checked = _check(home, tmp_path, ["a.parquet", "b.csv"])
    assert checked[1].late is not None and checked[1].late["reason"] == R.SCHEMA_MISMATCH
    out = list(NonceOrderFn({}).process((pub(alice), list(reversed(checked)))))
    assert isinstance(out[0], Staged)
    assert out[1]["reason"] == R.REPLAYED_NONCE and "nonce 7 is not above 7" in out[1]["detail"]
    # Refused at admission after its signature verified: decided, and its nonce still counts.
    later = list(NonceOrderFn({pub(alice): 9}).process((pub(alice), checked)))
    assert [r["reason"] for r in later] == [R.REPLAYED_NONCE, R.REPLAYED_NONCE]


def test_result_files_are_named_by_arrival_and_rewritten_the_same(tmp_path) -> None:
    rec = {"status": "waiting", "manifest_file": "x.csv.manifest.json", "arrival": 42}
    fn = WriteResultFn(str(tmp_path))
    (first,) = fn.process(rec)
    (again,) = fn.process(rec)   # a retried bundle
    assert first == again == str(tmp_path / "000000000042.json")
    assert json.loads((tmp_path / "000000000042.json").read_text()) == rec
    assert sorted(p.name for p in tmp_path.iterdir()) == ["000000000042.json"]


@pytest.mark.slow
def test_an_empty_drop_builds_no_pipeline_and_imports_no_beam(market, monkeypatch) -> None:
    import pipelines.ingest as driver

    def refuse(*_a, **_k):
        raise AssertionError("a pipeline was built for an empty drop")

    monkeypatch.setattr(driver, "_run_pipeline", refuse)
    summary = ingest(market.home)
    assert (summary.accepted, summary.quarantined) == (0, 0)


@pytest.mark.process
def test_an_empty_epoch_run_imports_neither_beam_nor_great_expectations(market) -> None:
    import subprocess
    import sys

    code = ("import sys; from engine.home import open_home; from engine.epoch import run_epoch; "
            "run_epoch(open_home(sys.argv[1])); "
            "print(sorted(m for m in ('apache_beam', 'great_expectations') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(market.home.root)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
