"""Ingest end to end on a real market home: real keys, real payloads, a real Beam run, the real ledger.

The adversarial matrix (every bad input a stranger can drop) is in tests/pipelines/test_drop_attacks.py; this file covers
what an honest run must do, and the pipeline's plumbing: options, runners, storage, idempotence.
"""

from __future__ import annotations

import ast
import hashlib
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import DirectOptions, PortableOptions, StandardOptions

from ledger.db import open_ledger
from pipelines.lake import lake_path
from pipelines.options import DEFAULT_RUNNER, build_options, pipeline_arg_list
from tests.conftest import TASK, digits_table
from engine import actions
from engine.stages.ingest import ingest

ROOT = Path(__file__).resolve().parents[2]


def _rows(home, sql: str, params: list | None = None) -> list[tuple]:
    with open_ledger(home.paths.ledger, read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def _settings(home, **values) -> None:
    import tomli_w

    (home.root / "settings.toml").write_text(tomli_w.dumps(values))


def _reopen(market):
    from engine.home import open_home

    market.home = open_home(market.home.root)
    return market.home


# ------------------------------------------------------------------------------------------------ options


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


@pytest.mark.parametrize("cluster", ["flink", "spark", "dask"])
def test_cluster_options_build_a_valid_pipeline(market, cluster: str) -> None:
    """The README's cluster settings: the options parse and the whole ingest graph builds and serialises; on Dask it
    also translates to the DaskRunner's dask.bag graph (nothing is computed: no scheduler on this machine)."""
    import apache_beam as beam

    from pipelines.transforms import build_pipeline
    from pipelines.records import Listed, Registry
    from pipelines.options import (
        CLUSTER_PIPELINE_ARGS, DASK_RUNNER, DASK_SCHEDULER, JOB_ENDPOINT, WORKER_POOL_ENDPOINT,
    )

    opts = build_options(CLUSTER_PIPELINE_ARGS[cluster])
    if cluster == "dask":
        from apache_beam.runners.dask.dask_runner import DaskOptions

        assert opts.view_as(StandardOptions).runner == DASK_RUNNER
        assert opts.view_as(DaskOptions).address == DASK_SCHEDULER
        assert opts.view_as(DaskOptions).partition_size == 1   # Beam's default puts 128 submissions on one worker
    else:
        assert opts.view_as(StandardOptions).runner == "PortableRunner"
        portable = opts.view_as(PortableOptions)
        assert portable.job_endpoint == JOB_ENDPOINT
        # Python transforms run in a Beam worker pool beside each task manager / worker, not in the submitting
        # process (LOOPBACK), and not in Beam's stock SDK image (DOCKER), which lacks Tributary's code.
        assert (portable.environment_type, portable.environment_config) == ("EXTERNAL", WORKER_POOL_ENDPOINT)
    from quality.task_toml import load_tasks

    p = beam.Pipeline(runner="DirectRunner", options=opts)  # build only: a real job server is not on this machine
    registry = Registry(accounts={}, last_nonce={}, tasks=load_tasks(market.home.paths.tasks))
    build_pipeline(p, drop=str(market.home.paths.drop), lake=str(market.home.paths.lake), staging="/tmp/x",
                   docs_dir=None, epoch=1, registry=registry, listed=[Listed("a.csv.manifest.json", 1, "t", False)],
                   max_payload_bytes=1000, results="/tmp/x/results")
    proto = p.to_runner_api()
    names = {t.unique_name for t in proto.components.transforms.values()}
    for stage in ("CheckFiles", "NonceOrder", "Gate", "WriteLake", "WriteResults"):
        assert stage in names
    if cluster == "dask":
        from apache_beam.runners.dask.dask_runner import DaskRunner
        from apache_beam.runners.dask.overrides import dask_overrides

        p.replace_all(dask_overrides())         # what DaskRunner.run_pipeline does before it computes the last bag
        visitor = DaskRunner.to_dask_bag_visitor({"partition_size": 1})
        p.visit(visitor)
        assert visitor.bags


def test_pipeline_code_goes_through_beam_filesystems() -> None:
    """No os.link, shutil or local temp dirs in the pipeline: drop/ and the lake may be on shared storage."""
    for name in ("ingest.py", "records.py", "verify.py", "drop.py", "lake.py", "weights.py"):  # not manifest.py: submit
        tree = ast.parse((ROOT / "pipelines" / name).read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                    for a in n.names} | {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not imported & {"shutil", "tempfile"}, name
        calls = {ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
        assert not calls & {"os.link", "os.replace", "os.rename", "shutil.move"}, name


# ----------------------------------------------------------------------------------------- honest runs


@pytest.mark.slow
def test_accepted_datasets_land_in_the_lake_with_id_columns(market) -> None:
    home = market.home
    market.submit("alice", digits_table(300, 360), "a.parquet")
    summary = ingest(home)
    assert (summary.accepted, summary.quarantined, summary.rows) == (1, 0, 60)
    ((sid, digest, key, nonce, lake, arrival, verified, status),) = _rows(
        home, "SELECT submission_id, digest, public_key, nonce, lake_path, arrival, verified, status FROM contributions")
    assert sid == f"{digest}-{key}-{nonce}" and len(digest) == 64 and len(key) == 64
    assert verified and status == "accepted" and arrival >= 1
    assert lake == str(Path(lake_path(str(home.paths.lake), 1, "dataset", TASK, digest, key)).relative_to(home.root))
    table = pq.read_table(home.root / lake)
    assert table.column_names[-4:] == ["_submission_id", "_contributor", "_row", "_row_hash"]
    assert table.column("_row").to_pylist() == list(range(60))
    assert sorted(os.listdir(home.paths.archive / "epoch=1")) == ["a.parquet", "a.parquet.manifest.json"]
    assert os.listdir(home.paths.drop) == [] and os.listdir(home.paths.staging) == []


@pytest.mark.slow
def test_csv_and_arrow_payloads_are_read_by_the_one_reader(market) -> None:
    import pyarrow.csv as pa_csv
    import pyarrow.feather as pa_feather

    home = market.home
    csv_path, arrow_path = market.work / "b.csv", market.work / "c.arrow"
    pa_csv.write_csv(digits_table(360, 400), csv_path)
    pa_feather.write_feather(digits_table(400, 440), arrow_path)
    actions.submit(home, csv_path, key="bob", task=TASK)
    actions.submit(home, arrow_path, key="carol", task=TASK)
    assert ingest(home).accepted == 2
    assert sorted(r[0] for r in _rows(home, "SELECT file FROM contributions WHERE status = 'accepted'")) == [
        "b.csv", "c.arrow"]


@pytest.mark.slow
def test_rerun_is_a_no_op_and_copies_are_recorded(market) -> None:
    home = market.home
    market.submit("alice", digits_table(300, 360), "a.parquet")
    ingest(home)
    lake_files = sorted(p for p in home.paths.lake.rglob("*.parquet"))
    again = ingest(home)
    assert (again.accepted, again.quarantined) == (0, 0)
    assert sorted(p for p in home.paths.lake.rglob("*.parquet")) == lake_files
    # bob sends the very same bytes: other content (his rows), so it lands and scoring will find it a duplicate.
    market.submit("bob", digits_table(300, 360), "a.parquet")
    assert ingest(home).accepted == 1
    assert len(_rows(home, "SELECT 1 FROM contributions WHERE status = 'accepted'")) == 2


@pytest.mark.slow
def test_arrival_is_ingest_order_not_file_times(market) -> None:
    """A backdated mtime does not move a file ahead: the later arrival has the larger arrival number."""
    home = market.home
    market.submit("alice", digits_table(300, 360), "first.parquet")
    ingest(home)
    late = market.submit("bob", digits_table(300, 360), "second.parquet")
    day = 24 * 3600
    for p in (late, late.with_name("second.parquet")):
        st = p.stat()
        os.utime(p, (st.st_atime - day, st.st_mtime - day))
    ingest(home)
    order = _rows(home, "SELECT file, arrival FROM contributions ORDER BY arrival")
    assert [f for f, _ in order] == ["first.parquet", "second.parquet"]


@pytest.mark.slow
def test_a_payload_before_its_manifest_waits_then_goes_in(market) -> None:
    home = market.home
    src = market.write("w.parquet", digits_table(300, 360))
    manifest = market.submit("alice", digits_table(300, 360), "w.parquet")
    body = manifest.read_bytes()
    manifest.unlink()                          # the manifest is not there yet: the payload alone waits
    summary = ingest(home)
    assert (summary.accepted, summary.quarantined) == (0, 0)
    assert (home.paths.drop / "w.parquet").exists()
    manifest.write_bytes(body)                 # now it is complete
    assert ingest(home).accepted == 1
    assert src.exists()


@pytest.mark.slow
def test_an_incomplete_submission_is_quarantined_after_the_wait(market) -> None:
    home = market.home
    manifest = market.submit("alice", digits_table(300, 360), "short.parquet")
    payload = home.paths.drop / "short.parquet"
    payload.write_bytes(payload.read_bytes()[:100])   # still being written (shorter than its size)
    assert ingest(home).waiting == 1 and manifest.exists()
    _settings(home, incomplete_after_seconds=0)
    home = _reopen(market)
    summary = ingest(home)
    assert summary.reasons == {"incomplete": 1}
    ((reason, account),) = _rows(home, "SELECT reason, account_id FROM quarantine")
    assert reason == "incomplete" and account is not None
    assert os.listdir(home.paths.drop) == []


@pytest.mark.slow
def test_multi_processing_runner_gives_the_same_decisions(market) -> None:
    home = market.home
    _settings(home, beam_pipeline_args=["--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    home = _reopen(market)
    market.submit("alice", digits_table(300, 360), "a.parquet")
    market.submit("bob", digits_table(360, 365), "short.parquet")   # too few rows: quality_failed
    summary = ingest(home)
    assert (summary.accepted, summary.reasons) == (1, {"quality_failed": 1})


@pytest.mark.slow
def test_weights_are_accepted_from_validators(market) -> None:
    import json

    home = market.home
    _settings(home, commit_reveal=False)
    home = _reopen(market)
    alice = _rows(home, "SELECT public_key FROM accounts WHERE name = 'alice'")[0][0]
    w = market.work / "w.json"
    w.write_text(json.dumps({"epoch": 1, "weights": {alice: 1.0}}))
    actions.submit(home, w, key="val", task=None, kind="weights")
    assert ingest(home).accepted == 1
    ((kind, lake),) = _rows(home, "SELECT kind, lake_path FROM contributions")
    assert kind == "weights" and "task=_weights" in lake


def test_row_hash_is_the_rewards_definition() -> None:
    from pipelines.verify import dataset_row_hashes
    from quality.task import Feature, Task

    task = Task(name="t", features=(Feature("a", "float64"), Feature("b", "float64")), label="y",
                label_dtype="int64", label_domain=(0, 1))
    table = pa.table({"a": [1.5, -0.0], "b": [2.0, 3.0], "y": pa.array([1, 0], pa.int64())})
    data = np.float64(1.5).tobytes() + np.float64(2.0).tobytes() + np.int64(1).tobytes()
    expected = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")
    hashes = dataset_row_hashes(table, task)
    assert int(hashes[0]) == expected
    zero = np.float64(0.0).tobytes() + np.float64(3.0).tobytes() + np.int64(0).tobytes()
    assert int(hashes[1]) == int.from_bytes(hashlib.blake2b(zero, digest_size=8).digest(), "little")


@pytest.mark.slow
def test_a_hard_link_to_a_file_outside_drop_is_not_read(market, tmp_path) -> None:
    """A second name for someone else's file would let a sender learn its size or digest from a detail."""
    from pipelines.manifest import sign_manifest
    from engine import keys

    home = market.home
    secret = tmp_path / "secret.parquet"
    pq.write_table(digits_table(300, 333), secret)
    m = sign_manifest(secret, kind="dataset", task=TASK, nonce=5, signing_key=keys.load(home.paths.keys, "alice"),
                      created_at="2026-12-01T00:00:00Z")
    os.link(secret, home.paths.drop / "secret.parquet")
    (home.paths.drop / "secret.parquet.manifest.json").write_text(m.to_json())
    summary = ingest(home)
    assert summary.reasons == {"not_regular": 1}
    ((detail,),) = _rows(home, "SELECT detail FROM quarantine")
    assert "hard link" in detail or "not a regular file" in detail
    assert str(secret.stat().st_size) not in detail and m.digest not in detail
    assert pq.read_table(secret).num_rows == 33       # untouched
    assert not (home.paths.drop / "secret.parquet").exists()   # the second name moved to quarantine/, as a name
