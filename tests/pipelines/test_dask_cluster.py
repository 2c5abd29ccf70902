"""Ingest on a real multi-process engine: Beam's DaskRunner on a local dask.distributed cluster (issue 20).

The same drop is ingested twice from two copies of one market home: once on the default in-process runner, once on
`DaskRunner` against a `LocalCluster` of two worker processes. Both must decide every submission the same way, land
byte-identical lake files, leave nothing behind in staging/, and the work must really have been spread over both
workers. stack-notes §1 ("Beam's DaskRunner on a local dask.distributed cluster") lists what the DaskRunner gets wrong
that the pipeline must avoid: `with_outputs` tags not honoured, side inputs recomputed, only the last output computed,
a `Client` per run that is never closed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
import time
from pathlib import Path

import pytest

from engine.home import Home, open_home
from pipelines.options import dask_pipeline_args
from tests.drop_tools import (
    build_market,
    csv_bytes,
    drop_submission,
    fresh_key,
    honest,
    key_of,
    parquet_bytes,
    read_ledger,
    reopen,
    run_ingest,
    signed,
)

pytestmark = [pytest.mark.slow, pytest.mark.process]

# The first run on a fresh cluster imports Beam and GX in every worker (30-44 s measured); a hang fails, not blocks.
INGEST_TIMEOUT_S = 420.0


@pytest.fixture()
def cluster():
    """Two single-threaded worker processes on the loopback interface, dashboard off; closed (and checked) after."""
    from distributed import Client, LocalCluster
    from distributed.core import Status

    lc = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None)
    client = Client(lc, set_as_default=False)   # the test's own client, to look at the workers; not the runner's
    workers = dict(lc.workers)
    try:
        client.wait_for_workers(2, timeout=120)
        yield lc, client
    finally:
        client.close()
        lc.close()
    assert lc.status == Status.closed
    assert lc.scheduler.status == Status.closed
    assert all(w.status == Status.closed for w in workers.values()), {n: w.status for n, w in workers.items()}
    assert all(getattr(w, "process", None) is None or not w.process.is_alive() for w in workers.values())


def _submissions(template: Home, replayer) -> list[tuple[str, bytes, dict]]:
    """~15 signed submissions by several contributors, with one of each kind of reject, signed with a fixed
    created_at so both copies receive byte-identical files: (payload name, payload bytes, manifest fields)."""
    alice, bob, carol = (key_of(template, n) for n in ("alice", "bob", "carol"))
    dave, erin = fresh_key(template, prefix="dave"), fresh_key(template, prefix="erin")
    stranger = fresh_key(template, role=None)             # never registered
    out: list[tuple[str, bytes, dict]] = []

    def add(name: str, key, data: bytes, nonce: int) -> None:
        out.append((name, data, signed(key, data, name, nonce=nonce)))

    lo = 500
    for i, (name, key) in enumerate([("a", alice), ("b", bob), ("c", carol), ("d", dave), ("e", erin)]):
        for j in range(2):                                 # two honest Parquet datasets each, 40 rows
            add(f"{name}{j}.parquet", key, parquet_bytes(honest(lo, lo + 40)), nonce=10 + j)
            lo += 40
    add("b2.csv", bob, csv_bytes(honest(lo, lo + 40)), nonce=12)        # CSV goes through the same reader
    lo += 40
    add("c2.parquet", carol, parquet_bytes(honest(lo, lo + 5)), nonce=12)    # too few rows: the GX gate fails it
    lo += 5
    # a tampered payload: signed over the original bytes, one byte flipped after signing -> digest_mismatch
    data = parquet_bytes(honest(lo, lo + 40))
    lo += 40
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 0xFF
    out.append(("tampered.parquet", bytes(bad), signed(dave, data, "tampered.parquet", nonce=20)))
    add("stranger.parquet", stranger, parquet_bytes(honest(lo, lo + 40)), nonce=1)          # unknown_key
    lo += 40
    add("replayed.parquet", replayer, parquet_bytes(honest(lo, lo + 40)), nonce=5)          # replayed_nonce
    lo += 40
    add("schema.parquet", erin, parquet_bytes(honest(lo, lo + 40).drop_columns(["px_3"])), nonce=20)  # schema_mismatch
    return out


def _decisions(home: Home) -> tuple[list[dict], list[dict]]:
    """The ledger's contributions and quarantine rows without their timestamps, in a fixed order."""
    led = read_ledger(home)

    def strip(rows: list[dict]) -> list[dict]:
        return sorted(({k: v for k, v in r.items() if not isinstance(v, (dt.datetime, dt.date))} for r in rows),
                      key=lambda r: r["submission_id"])

    return strip(led.contributions), strip(led.quarantine)


def _lake_digests(home: Home) -> dict[str, str]:
    lake = home.paths.lake
    return {str(p.relative_to(lake)): hashlib.blake2b(p.read_bytes()).hexdigest()
            for p in sorted(lake.rglob("*")) if p.is_file()}


def _assert_clean(home: Home) -> None:
    left = [str(p.relative_to(home.root)) for p in home.root.rglob("beam-temp-*")]
    assert not left, f"Beam temp folders left in the home: {left}"
    assert sorted(p.name for p in home.paths.staging.iterdir()) == [], "staging/ is not empty after ingest"
    assert sorted(p.name for p in home.paths.drop.iterdir() if not p.name.startswith(".")) == []


def _scheduler_clients(client) -> set[str]:
    return set(client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.clients)))


def test_dask_runner_on_a_local_cluster_decides_like_the_default_runner(tmp_path: Path, cluster) -> None:
    from distributed import get_task_stream

    lc, client = cluster
    # The template: the conftest market, plus one earlier ingest in which `replayer` used nonce 5.
    market = build_market(tmp_path / "template")
    template = market.home
    replayer = fresh_key(template, prefix="replayer")
    early = parquet_bytes(honest(460, 500))
    drop_submission(template.paths.drop, "earlier.parquet", early, signed(replayer, early, "earlier.parquet", nonce=5))
    first = run_ingest(template)
    assert first.accepted == 1
    subs = _submissions(template, replayer)              # `replayer` sends nonce 5 again: replayed_nonce

    homes: dict[str, Home] = {}
    for which in ("default", "dask"):
        root = tmp_path / which
        shutil.copytree(template.root, root / "home", symlinks=True)   # a home holds no absolute path
        homes[which] = open_home(root / "home")
        # Same bytes, dropped in name order: arrival numbers follow (ctime, name), so both copies number them alike.
        for name, data, doc in sorted(subs, key=lambda s: s[0]):
            drop_submission(homes[which].paths.drop, name, data, doc)
    # --runner=...DaskRunner --dask_client_address=tcp://127.0.0.1:PORT --dask_partition_size=1
    homes["dask"] = reopen(homes["dask"], beam_pipeline_args=dask_pipeline_args(lc.scheduler_address))

    on_default = run_ingest(homes["default"], timeout=INGEST_TIMEOUT_S)
    assert on_default.accepted == 11 and on_default.quarantined == 5, on_default
    assert on_default.reasons == {"quality_failed": 1, "digest_mismatch": 1, "unknown_key": 1,
                                  "replayed_nonce": 1, "schema_mismatch": 1}, on_default.reasons

    clients_before = _scheduler_clients(client)
    executed_before = client.run(lambda dask_worker: dask_worker.state.executed_count)
    # Where tasks ran, two ways that do not touch the pipeline's code: the scheduler's task stream (one record per
    # finished task, with the worker that ran it, from every client, the DaskRunner's included), and each worker's
    # own count of tasks it executed (before/after). Both must show both worker processes.
    with get_task_stream(client) as stream:
        on_dask = run_ingest(homes["dask"], timeout=INGEST_TIMEOUT_S)
    executed_after = client.run(lambda dask_worker: dask_worker.state.executed_count)

    assert _decisions(homes["dask"]) == _decisions(homes["default"])
    assert (on_dask.accepted, on_dask.quarantined, on_dask.reasons, on_dask.rows) == (
        on_default.accepted, on_default.quarantined, on_default.reasons, on_default.rows)
    default_lake = _lake_digests(homes["default"])
    assert len([p for p in default_lake if p.endswith(".parquet")]) >= on_default.accepted
    assert _lake_digests(homes["dask"]) == default_lake
    for home in homes.values():
        _assert_clean(home)

    workers = set(lc.scheduler_info["workers"])
    assert len(workers) == 2
    ran_on = {t["worker"] for t in stream.data}
    assert ran_on == workers, f"tasks ran on {sorted(ran_on)}, not on both of {sorted(workers)}"
    busy = {w for w in workers if executed_after[w] > executed_before.get(w, 0)}
    assert busy == workers, f"executed counts before {executed_before}, after {executed_after}"

    # The runner's own Client (DaskRunnerResult.client) must be closed by the driver: only ours stays connected.
    # A `Client-worker-*` name is a client opened inside a task: a side input or a nested compute on a worker.
    deadline = time.monotonic() + 10
    while (left := _scheduler_clients(client) - clients_before - {"fire-and-forget"}) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"clients left connected to the scheduler after ingest (close result.client): {sorted(left)}"
