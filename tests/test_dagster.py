"""The Dagster graph: definitions load, one epoch materializes in process, the sensor, the schedule, a blocking check."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from assets.definitions import defs
from assets.epoch_assets import EPOCH_ASSETS, EPOCH_CHECKS
from assets.partitions import EPOCH_PARTITIONS
from assets.resources import TributaryHome
from assets.sensors import drop_folder_sensor, settlement_schedule
from ledger import accounts
from ledger.audit import audit
from ledger.db import open_ledger
from ledger.epochs import get_epoch
from tests.conftest import digits_table

ASSET_NAMES = {"contributions", "validated_contributions", "contribution_values", "validator_weights", "consensus",
               "epoch_settlement"}
CHECK = dg.AssetCheckKey(dg.AssetKey("validated_contributions"), "lake_passes_quality_suites")
PARTITION = "2026-11-25-12:00"


def _resources(market) -> dict:
    return {"tributary": TributaryHome(home=str(market.home.root))}


def _materialize(market, **kwargs) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [*EPOCH_ASSETS, *EPOCH_CHECKS], partition_key=PARTITION, instance=dg.DagsterInstance.ephemeral(),
        resources=_resources(market), **kwargs,
    )


def _submit_epoch(market) -> None:
    market.submit("alice", digits_table(300, 360), "alice.parquet")
    market.submit("bob", digits_table(360, 420), "bob.parquet")
    market.submit("carol", digits_table(420, 425), "carol_too_few_rows.parquet")  # below the suite's min_rows


def _account_id(con, name: str) -> str:
    return accounts.get(con, name).account_id


# ---------------------------------------------------------------------------------------------------- definitions
def test_definitions_list_the_whole_graph():
    repo = defs.get_repository_def()
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert keys == ASSET_NAMES
    assert CHECK in repo.asset_graph.asset_check_keys
    assert {"ingest_epoch", "settle_epoch"} <= {j.name for j in repo.get_all_jobs()}
    assert [s.name for s in repo.sensor_defs] == ["drop_folder_sensor"]
    assert [s.name for s in repo.schedule_defs] == ["settle_closed_epoch"]
    assert repo.get_schedule_def("settle_closed_epoch").job_name == "settle_epoch"
    assert repo.get_sensor_def("drop_folder_sensor").job_name == "ingest_epoch"


# ---------------------------------------------------------------------------------------------------- one epoch
@pytest.mark.slow
def test_materialize_one_epoch_settles_the_ledger(market):
    _submit_epoch(market)
    result = _materialize(market)
    assert result.success

    checks = result.get_asset_check_evaluations()
    assert [(c.asset_check_key, c.passed) for c in checks] == [(CHECK, True)]
    assert checks[0].metadata["submissions_checked"].value == 2

    ingested = result.asset_materializations_for_node("contributions")[0].metadata
    assert (ingested["accepted"].value, ingested["quarantined"].value, ingested["rows"].value) == (2, 1, 120)
    assert "quarantine_reasons" in ingested

    settled = result.asset_materializations_for_node("epoch_settlement")[0].metadata
    assert settled["ledger_epoch"].value == 1
    assert settled["settled_now"].value is True
    chain_hash = settled["chain_hash"].value
    assert isinstance(chain_hash, str) and len(chain_hash) >= 32
    assert "rewards" in settled and "emission_tokens" in settled

    emission = market.home.settings.epoch_emission_units
    with open_ledger(market.home.paths.ledger, read_only=True) as con:
        epoch = get_epoch(con, 1)
        assert epoch.settled_at is not None and epoch.hash == chain_hash and epoch.emission == emission
        paid = dict(con.execute("SELECT account_id, amount FROM rewards WHERE epoch = 1").fetchall())
        assert sum(paid.values()) == emission
        assert paid[_account_id(con, "alice")] > 0
        assert paid[_account_id(con, "bob")] > 0
        assert paid.get(_account_id(con, "carol"), 0) == 0
        quarantined = con.execute("SELECT account_id, file, reason, detail FROM quarantine WHERE epoch = 1").fetchall()
        assert len(quarantined) == 1
        account_id, file, reason, detail = quarantined[0]
        assert account_id == _account_id(con, "carol") and reason and detail
        assert "carol_too_few_rows" in file
        report = audit(con)
        assert report.ok, report.problems
        assert report.epochs_checked == 2  # genesis and epoch 1

    # The same partition again: nothing new in drop/, epoch 2 is open and settles with no contributions.
    again = _materialize(market)
    assert again.success
    assert again.asset_materializations_for_node("epoch_settlement")[0].metadata["ledger_epoch"].value == 2


# ---------------------------------------------------------------------------------------------------- sensor
def test_drop_folder_sensor_requests_a_run_per_new_submission(market):
    resources = _resources(market)
    with dg.build_sensor_context(resources=resources) as ctx:
        empty = drop_folder_sensor(ctx)
    assert isinstance(empty, dg.SensorResult)
    assert not empty.run_requests and "0 waiting" in empty.skip_reason.skip_message

    market.submit("alice", digits_table(300, 360), "alice.parquet")
    with dg.build_sensor_context(resources=resources) as ctx:
        fired = drop_folder_sensor(ctx)
    assert len(fired.run_requests) == 1
    request = fired.run_requests[0]
    now_key = EPOCH_PARTITIONS.get_partition_key_for_timestamp(datetime.now(timezone.utc).timestamp())
    assert request.partition_key in {now_key, _next_hour(now_key)}  # the tick may straddle an hour
    assert request.run_key.startswith(f"{request.partition_key}:")
    assert request.tags["tributary/waiting"] == "1"
    assert json.loads(fired.cursor)["listing"]

    with dg.build_sensor_context(resources=resources, cursor=fired.cursor) as ctx:
        quiet = drop_folder_sensor(ctx)
    assert not quiet.run_requests and "1 waiting" in quiet.skip_reason.skip_message

    # A backdated file is still news: the cursor does not read file times.
    path = market.submit("bob", digits_table(360, 420), "bob.parquet")
    os.utime(path, (1_000_000, 1_000_000))
    os.utime(path.with_name("bob.parquet"), (1_000_000, 1_000_000))
    with dg.build_sensor_context(resources=resources, cursor=fired.cursor) as ctx:
        again = drop_folder_sensor(ctx)
    assert len(again.run_requests) == 1 and again.run_requests[0].tags["tributary/waiting"] == "2"


def _next_hour(key: str) -> str:
    return (datetime.strptime(key, "%Y-%m-%d-%H:%M") + timedelta(hours=1)).strftime("%Y-%m-%d-%H:%M")


# ---------------------------------------------------------------------------------------------------- schedule
def test_settlement_schedule_settles_the_window_that_just_closed():
    repo = defs.get_repository_def()
    schedule = repo.get_schedule_def(settlement_schedule.name)
    assert schedule.cron_schedule == "0 * * * *" and schedule.job_name == "settle_epoch"
    for tick, closed in [(datetime(2026, 11, 25, 13, 0, tzinfo=timezone.utc), "2026-11-25-12:00"),
                         (datetime(2026, 12, 1, 0, 0, tzinfo=timezone.utc), "2026-11-30-23:00")]:
        with dg.build_schedule_context(scheduled_execution_time=tick, repository_def=repo) as ctx:
            data = schedule.evaluate_tick(ctx)
        assert [(r.partition_key, r.run_key) for r in data.run_requests] == [(closed, closed)]
    with dg.build_schedule_context(scheduled_execution_time=datetime(2026, 11, 1, 0, 0, tzinfo=timezone.utc),
                                   repository_def=repo) as ctx:
        before_start = schedule.evaluate_tick(ctx)
    assert not before_start.run_requests and before_start.skip_message


# ---------------------------------------------------------------------------------------------------- blocking check
@pytest.mark.slow
def test_failed_quality_check_blocks_settlement(market):
    from tributary import epoch as stages

    market.submit("alice", digits_table(300, 360), "alice.parquet")
    summary = stages.ingest(market.home)  # landed and accepted, as `tributary epoch run` would leave it
    assert (summary.epoch, summary.accepted) == (1, 1)
    with open_ledger(market.home.paths.ledger, read_only=True) as con:
        (lake_path,) = con.execute("SELECT lake_path FROM contributions WHERE epoch = 1").fetchone()
    path = market.home.root / lake_path
    table = pq.read_table(path)
    px = table.column("px_0").to_numpy().copy()
    px[0] = 1e9  # far outside the task's range: someone edited the lake behind the ledger's back
    pq.write_table(table.set_column(table.schema.get_field_index("px_0"), "px_0", pa.array(px)), path)

    result = _materialize(market, raise_on_error=False)
    assert not result.success
    checks = result.get_asset_check_evaluations()
    assert [(c.asset_check_key, c.passed) for c in checks] == [(CHECK, False)]
    assert "px_0" in checks[0].metadata["failures"].value
    assert not result.asset_materializations_for_node("epoch_settlement")
    assert not result.asset_materializations_for_node("contribution_values")
    with open_ledger(market.home.paths.ledger, read_only=True) as con:
        assert get_epoch(con, 1).settled_at is None
        assert con.execute("SELECT count(*) FROM rewards WHERE epoch = 1").fetchone()[0] == 0
