"""The Dagster graph: partitions are ledger epochs, re-runs are no-ops, the sensors, the schedule, blocking checks."""

from __future__ import annotations

import json
import os
import time

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from assets.definitions import defs
from assets.epoch_assets import EPOCH_ASSETS, EPOCH_CHECKS
from assets.partitions import EPOCH_PARTITIONS
from assets.resources import TributaryHome
from assets.sensors import drop_folder_sensor, settlement_schedule
from assets.sync import sync_ledger
from ledger import accounts
from ledger.audit import audit
from ledger.db import open_ledger
from ledger.epochs import current_epoch, get_epoch, settled_epochs
from ledger.errors import LedgerError
from tests.conftest import digits_table

ASSET_NAMES = {"contributions", "validated_contributions", "contribution_values", "validator_weights", "consensus",
               "epoch_settlement"}
GX_CHECK = dg.AssetCheckKey(dg.AssetKey("validated_contributions"), "lake_passes_quality_suites")
LEDGER_CHECKS = {dg.AssetCheckKey(dg.AssetKey("epoch_settlement"), "ledger_invariants_hold"),
                 dg.AssetCheckKey(dg.AssetKey("epoch_settlement"), "emission_paid_exactly")}


def _resources(market) -> dict:
    return {"tributary": TributaryHome(home=str(market.home.root))}


@pytest.fixture()
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def _materialize(market, instance, partition: str, **kwargs) -> dg.ExecuteInProcessResult:
    sync_ledger(instance, market.home)  # the partitions are the ledger's epochs
    return dg.materialize([*EPOCH_ASSETS, *EPOCH_CHECKS], partition_key=partition, instance=instance,
                          resources=_resources(market), **kwargs)


def _submit_epoch(market) -> None:
    market.submit("alice", digits_table(300, 360), "alice.parquet")
    market.submit("bob", digits_table(360, 420), "bob.parquet")
    market.submit("carol", digits_table(420, 425), "carol_too_few_rows.parquet")  # below the suite's min_rows


def _account_id(con, name: str) -> str:
    return accounts.get(con, name).account_id


def _settled(market) -> list[int]:
    with open_ledger(market.home.paths.ledger, read_only=True) as con:
        return [e.epoch for e in settled_epochs(con)]


def _minted(market) -> int:
    with open_ledger(market.home.paths.ledger, read_only=True) as con:
        return con.execute("SELECT COALESCE(sum(amount), 0) FROM rewards").fetchone()[0]


def _settlement_md(result) -> dict:
    return result.asset_materializations_for_node("epoch_settlement")[0].metadata


# ---------------------------------------------------------------------------------------------------- definitions
def test_definitions_list_the_whole_graph():
    repo = defs.get_repository_def()
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert keys == ASSET_NAMES
    assert {GX_CHECK, *LEDGER_CHECKS} <= set(repo.asset_graph.asset_check_keys)
    assert {"ingest_epoch", "settle_epoch"} <= {j.name for j in repo.get_all_jobs()}
    assert sorted(s.name for s in repo.sensor_defs) == ["drop_folder_sensor", "ledger_sync"]
    assert [s.name for s in repo.schedule_defs] == ["settle_closed_epoch"]
    assert repo.get_schedule_def("settle_closed_epoch").job_name == "settle_epoch"
    assert repo.get_sensor_def("drop_folder_sensor").job_name == "ingest_epoch"
    ingest_assets = {k.to_user_string() for k in repo.get_job("ingest_epoch").asset_layer.executable_asset_keys}
    assert ingest_assets == {"contributions"}  # the sensor ingests only: valuation runs once, at settlement
    for job in ("ingest_epoch", "settle_epoch"):
        assert repo.get_job(job).tags["tributary/epoch_writer"] == "1"
    for asset in EPOCH_ASSETS:
        assert {spec.pool for spec in [asset.op]} == {"tributary_epoch"}


def test_home_instance_limits_epoch_writers_and_disables_telemetry(market, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(market.home.paths.dagster))
    with dg.DagsterInstance.get() as inst:
        config = inst.get_concurrency_config()
        assert config.pool_config.default_pool_limit == 1
        assert {"key": "tributary/epoch_writer", "limit": 1} in config.run_queue_config.tag_concurrency_limits
    assert "enabled: false" in (market.home.paths.dagster / "dagster.yaml").read_text()


# ---------------------------------------------------------------------------------------------------- partitions
@pytest.mark.slow
def test_a_partition_is_one_epoch_and_a_rerun_is_a_no_op(market, instance):
    _submit_epoch(market)
    assert instance.get_dynamic_partitions(EPOCH_PARTITIONS.name) == []
    result = _materialize(market, instance, "1")
    assert result.success
    assert instance.get_dynamic_partitions(EPOCH_PARTITIONS.name) == ["1", "2"]  # settling opened epoch 2

    checks = {c.asset_check_key: c for c in result.get_asset_check_evaluations()}
    assert {k: c.passed for k, c in checks.items()} == {GX_CHECK: True, **{k: True for k in LEDGER_CHECKS}}
    assert checks[GX_CHECK].metadata["submissions_checked"].value == 2

    ingested = result.asset_materializations_for_node("contributions")[0].metadata
    assert (ingested["accepted"].value, ingested["quarantined"].value, ingested["rows"].value) == (2, 1, 120)
    assert "too_few_rows" in ingested["quarantine_reasons"].value or "quarantine_reasons" in ingested

    settled = _settlement_md(result)
    assert settled["ledger_epoch"].value == 1 and settled["settled_now"].value is True
    chain_hash = settled["chain_hash"].value
    assert settled["reward_distribution"].value.startswith("![epoch 1 rewards](data:image/png;base64,")
    assert settled["value_over_epochs"].value.startswith("![value per contributor](data:image/png;base64,")
    rewards_png = market.home.root / "reports" / "epoch=1" / "rewards.png"
    assert rewards_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    emission = market.home.settings.epoch_emission_units
    with open_ledger(market.home.paths.ledger, read_only=True) as con:
        epoch = get_epoch(con, 1)
        assert epoch.settled_at is not None and epoch.hash == chain_hash and epoch.emission == emission
        paid = dict(con.execute("SELECT account_id, amount FROM rewards WHERE epoch = 1").fetchall())
        assert sum(paid.values()) == emission
        assert paid[_account_id(con, "alice")] > 0 and paid[_account_id(con, "bob")] > 0
        assert paid.get(_account_id(con, "carol"), 0) == 0
        (account_id, file, reason, detail), = con.execute(
            "SELECT account_id, file, reason, detail FROM quarantine WHERE epoch = 1").fetchall()
        assert account_id == _account_id(con, "carol") and reason and detail and "carol_too_few_rows" in file
        report = audit(con)
        assert report.ok, report.problems

    # The same partition again (a re-launch, a retry, a backfill over it): the settled result, nothing minted.
    market.submit("alice", digits_table(430, 490), "alice_late.parquet")  # waits in drop/ for the open epoch
    again = _materialize(market, instance, "1")
    assert again.success
    md = _settlement_md(again)
    assert (md["ledger_epoch"].value, md["settled_now"].value, md["chain_hash"].value) == (1, False, chain_hash)
    assert _settled(market) == [0, 1] and _minted(market) == emission
    with open_ledger(market.home.paths.ledger, read_only=True) as con:
        assert current_epoch(con) == 2
        assert con.execute("SELECT count(*) FROM contributions WHERE epoch = 1").fetchone()[0] == 3


@pytest.mark.slow
def test_backfill_settles_each_open_epoch_once_in_order(market, instance):
    market.submit("alice", digits_table(300, 360), "alice.parquet")
    from engine.epoch import run_epoch

    run_epoch(market.home, close=True)  # epoch 1 settled from the CLI
    emission = market.home.settings.epoch_emission_units
    for key in ("1", "2", "3"):  # settled, open, then the one epoch 2's settlement opens
        assert _materialize(market, instance, key).success
    assert _settled(market) == [0, 1, 2, 3] and _minted(market) == 3 * emission
    for key in ("1", "2", "3"):
        assert _materialize(market, instance, key).success  # the whole backfill again: nothing changes
    assert _settled(market) == [0, 1, 2, 3] and _minted(market) == 3 * emission


def test_an_epoch_that_has_not_begun_fails_and_mints_nothing(market, instance):
    sync_ledger(instance, market.home)
    instance.add_dynamic_partitions(EPOCH_PARTITIONS.name, ["7"])  # someone added a key by hand
    result = dg.materialize([*EPOCH_ASSETS, *EPOCH_CHECKS], partition_key="7", instance=instance,
                            resources=_resources(market), raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "epoch 7 has not begun: epoch 1 is the open one" in str(failure.event_specific_data.error)
    assert _settled(market) == [0]


# ---------------------------------------------------------------------------------------------------- ledger sync
@pytest.mark.slow
def test_cli_epochs_appear_as_materializations_with_the_run_metadata(market, instance):
    from engine.epoch import run_epoch

    market.submit("alice", digits_table(300, 360), "alice.parquet")
    first = run_epoch(market.home, close=True).outcome
    run_epoch(market.home, close=True)
    result = sync_ledger(instance, market.home)
    assert result.partitions_added == ("1", "2", "3") and result.epochs_reported == (1, 2)
    key = dg.AssetKey("epoch_settlement")
    assert instance.get_materialized_partitions(key) == {"1", "2"}
    record = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, asset_partitions=["1"]),
                                             limit=1).records[0]
    md = record.asset_materialization.metadata
    assert md["chain_hash"].value == first.hash and md["emission_tokens"].value
    assert {"rewards", "reward_distribution", "value_over_epochs", "inputs_digest", "results_digest"} <= set(md)
    for asset in ASSET_NAMES:
        assert instance.get_materialized_partitions(dg.AssetKey(asset)) == {"1", "2"}
    assert sync_ledger(instance, market.home) == type(result)((), ())  # idempotent


# ---------------------------------------------------------------------------------------------------- sensor
def test_drop_folder_sensor_requests_ingest_of_the_open_epoch(market, instance):
    resources = _resources(market)
    with dg.build_sensor_context(resources=resources, instance=instance) as ctx:
        empty = drop_folder_sensor(ctx)
    assert not empty.run_requests and "0 waiting" in empty.skip_reason.skip_message

    market.submit("alice", digits_table(300, 360), "alice.parquet")
    with dg.build_sensor_context(resources=resources, instance=instance) as ctx:
        fired = drop_folder_sensor(ctx)
    (request,) = fired.run_requests
    assert request.partition_key == "1" and request.run_key.startswith("1:")
    assert request.tags["tributary/waiting"] == "1"
    assert [r.partition_keys for r in fired.dynamic_partitions_requests] == [["1"]]

    with dg.build_sensor_context(resources=resources, instance=instance, cursor=fired.cursor) as ctx:
        quiet = drop_folder_sensor(ctx)
    assert not quiet.run_requests and "1 waiting" in quiet.skip_reason.skip_message

    # A backdated file is still news: the cursor does not read file times.
    path = market.submit("bob", digits_table(360, 420), "bob.parquet")
    os.utime(path, (1_000_000, 1_000_000))
    os.utime(path.with_name("bob.parquet"), (1_000_000, 1_000_000))
    with dg.build_sensor_context(resources=resources, instance=instance, cursor=fired.cursor) as ctx:
        again = drop_folder_sensor(ctx)
    assert len(again.run_requests) == 1 and again.run_requests[0].tags["tributary/waiting"] == "2"
    assert json.loads(again.cursor)["listing"] != json.loads(fired.cursor)["listing"]


# ---------------------------------------------------------------------------------------------------- schedule
def test_schedule_requests_the_open_epoch_once_its_window_closes(market, instance):
    repo = defs.get_repository_def()
    schedule = repo.get_schedule_def(settlement_schedule.name)
    assert schedule.job_name == "settle_epoch"

    def tick():
        with dg.build_schedule_context(instance=instance, resources=_resources(market), repository_def=repo) as ctx:
            return schedule.evaluate_tick(ctx)

    not_yet = tick()  # the default epoch_seconds (an hour) has not passed since genesis
    assert not not_yet.run_requests and "closes in" in not_yet.skip_message

    (market.home.root / "settings.toml").write_text("epoch_seconds = 1\n")
    time.sleep(1.2)
    from engine.home import open_home

    market.home = open_home(market.home.root)
    ticks = [tick() for _ in range(5)]  # catch-up after the daemon was down: five missed ticks evaluated now
    requests = {(r.partition_key, r.run_key) for t in ticks for r in t.run_requests}
    assert requests == {("1", "settle:1")}  # one epoch, one run key: at most one run, never a new epoch


# ---------------------------------------------------------------------------------------------------- blocking check
@pytest.mark.slow
def test_failed_quality_check_blocks_settlement_until_excluded(market, instance):
    from engine import epoch as stages

    market.submit("alice", digits_table(300, 360), "alice.parquet")
    market.submit("bob", digits_table(360, 420), "bob.parquet")
    summary = stages.ingest(market.home)  # landed and accepted, as `tributary epoch run` would leave it
    assert (summary.epoch, summary.accepted) == (1, 2)
    with open_ledger(market.home.paths.ledger, read_only=True) as con:
        (bad_id, lake_path), = con.execute(
            "SELECT submission_id, lake_path FROM contributions JOIN accounts USING (account_id) "
            "WHERE epoch = 1 AND name = 'alice'").fetchall()
    path = market.home.root / lake_path
    table = pq.read_table(path)
    px = table.column("px_0").to_numpy().copy()
    px[0] = 1e9  # far outside the task's range: someone edited the lake behind the ledger's back
    pq.write_table(table.set_column(table.schema.get_field_index("px_0"), "px_0", pa.array(px)), path)

    result = _materialize(market, instance, "1", raise_on_error=False)
    assert not result.success
    checks = result.get_asset_check_evaluations()
    assert [(c.asset_check_key, c.passed) for c in checks] == [(GX_CHECK, False)]
    assert "px_0" in checks[0].metadata["failures"].value
    assert f"tributary exclude {bad_id}" in checks[0].metadata["way_out"].value
    assert not result.asset_materializations_for_node("epoch_settlement")
    assert not result.asset_materializations_for_node("contribution_values")
    assert _settled(market) == [0] and _minted(market) == 0

    assert stages.exclude(market.home, bad_id, "lake file edited after ingest") == 1
    unblocked = _materialize(market, instance, "1")
    assert unblocked.success
    with open_ledger(market.home.paths.ledger, read_only=True) as con:
        paid = dict(con.execute("SELECT account_id, amount FROM rewards WHERE epoch = 1").fetchall())
        assert paid.get(_account_id(con, "alice"), 0) == 0 and paid[_account_id(con, "bob")] > 0
        assert con.execute("SELECT status, reason FROM contributions WHERE submission_id = ?", [bad_id]).fetchone() \
            == ("quarantined", "operator_excluded")
        assert con.execute("SELECT detail FROM quarantine WHERE submission_id = ?", [bad_id]).fetchone()[0] \
            == "excluded by the operator: lake file edited after ingest"
        report = audit(con)
        assert report.ok, report.problems
    assert path.exists()  # nothing deleted


@pytest.mark.slow
def test_exclude_refuses_what_it_cannot_change(market):
    from engine import epoch as stages

    with pytest.raises(LedgerError, match="no such submission"):
        stages.exclude(market.home, "nope", "why")
    market.submit("alice", digits_table(300, 360), "alice.parquet")
    run = stages.run_epoch(market.home, close=True)
    sid = run.scores.submissions[0].submission_id
    with pytest.raises(LedgerError, match="settled epochs never change"):
        stages.exclude(market.home, sid, "too late")
    with pytest.raises(LedgerError, match="say why"):
        stages.exclude(market.home, sid, "  ")


# ---------------------------------------------------------------------------------------------------- originality
@pytest.mark.slow
def test_value_metadata_and_the_epoch_run_report_say_what_the_epoch_added_and_who_was_unoriginal(market):
    """contribution_values' metadata (built by scored_report before settlement, from the ledger after) and `epoch
    run`'s report show per task the gain and U'(lake), and per submission its originality figures."""
    import io

    from rich.console import Console

    from assets.epoch_assets import scored_report
    from assets.metadata import values_metadata
    from ledger.epoch_report import epoch_report
    from tests.ledger.test_views import copier_epoch
    from engine.epoch import run_epoch
    from tributary.report import print_epoch_run

    scored = copier_epoch(market, close=False)  # epoch 2 scored, not settled
    before = values_metadata(scored_report(market.home, scored.scores))
    run = run_epoch(market.home, close=True)
    with open_ledger(market.home.paths.ledger, read_only=True) as con:
        after = values_metadata(epoch_report(con, 2))
    for md in (before, after):
        assert md["unoriginal_submissions"] == 1 and md["unoriginal_rows"] >= 0
        table = md["originality"].value
        assert "| bob | digits | unoriginal | 200 |" in table and "| carol | digits | accepted | 100 |" in table
        assert "| task | gain | U'(lake) | lake rows | new rows | admitted rows | holdout rows |" in md["epoch_value"].value
        assert md["gain_digits"] > 0 and md["lake_utility_digits"] > 0
        assert md["originality_cost"] > 0
    assert {k: v for k, v in before.items() if k != "ledger_epoch"} == {k: v for k, v in after.items()
                                                                        if k != "ledger_epoch"}
    (gain,) = [v for v in run.settlement.epoch_values]
    assert after["gain_digits"] == gain.gain and f"| digits | {gain.gain:.6f} | {gain.lake_utility:.6f} | 200 | 300 | " \
        f"{gain.admitted_rows} | 300 |" in after["epoch_value"].value

    out = io.StringIO()
    print_epoch_run(Console(file=out, width=250), market.home, run)
    text = out.getvalue()
    assert "unoriginal" in text and "gate p" in text and "judged" in text
    assert (f"task digits: the epoch's rows added {gain.gain:.6f} to the lake's KNN utility on the holdout "
            f"(U'(lake) = {gain.lake_utility:.6f}, 200 lake rows, {gain.admitted_rows} of 300 new rows admitted)"
            in text)
