"""The market runs itself under `tributary ui`: the real daemon's sensor ingests what `tributary submit` drops, and its
schedule settles the epoch once the window closes, once."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from ledger.db import open_ledger
from ledger.epochs import settled_epochs
from tests.conftest import TASK, digits_table
from tests.dagster_server import UiServer, running_ui, tributary

pytestmark = pytest.mark.slow

SCHEDULE_TICKS_QUERY = """
query($s: ScheduleSelector!) { scheduleOrError(scheduleSelector: $s) {
  __typename ... on Schedule { scheduleState { ticks(limit: 20) { status skipReason runIds } } } } }"""


def _schedule_ticks(ui: UiServer) -> list[dict]:
    repo = ui.repository()
    found = ui.graphql(SCHEDULE_TICKS_QUERY, {"s": {"repositoryLocationName": repo["location"]["name"],
                                                    "repositoryName": repo["name"],
                                                    "scheduleName": "settle_closed_epoch"}})["scheduleOrError"]
    assert found["__typename"] == "Schedule", found
    return found["scheduleState"]["ticks"]


def _finished_runs(ui: UiServer, tag: str, name: str) -> list[dict]:
    """The finished runs a sensor or schedule launched (tag dagster/sensor_name or dagster/schedule_name)."""
    return [r for r in ui.runs() if r["tags"].get(tag) == name and r["status"] in ("SUCCESS", "FAILURE", "CANCELED")]


def _alice_rows(home) -> int:
    """Rows of alice's accepted in epoch 1, read as an analyst would (`tributary sql`, never a lock error)."""
    out = tributary(home, "sql", "--format", "json",
                    "SELECT COALESCE(sum(c.rows), 0) AS n FROM contributions c JOIN accounts a USING (account_id) "
                    "WHERE a.name = 'alice' AND c.epoch = 1 AND c.status = 'accepted'")
    return int(json.loads(out)[0]["n"])


def test_the_daemon_ingests_a_submission_and_settles_the_epoch_when_its_window_closes(market, tmp_path):
    home = market.home.root
    (home / "settings.toml").write_text("epoch_seconds = 3600\n")  # the window is open for now
    data = tmp_path / "alice.parquet"
    pq.write_table(digits_table(300, 360), data)

    with running_ui(home, tmp_path) as ui:
        tributary(home, "submit", str(data), "--key", "alice", "--task", TASK)

        # The drop sensor notices the submission and runs ingest (only) for the open epoch's partition.
        ingests = ui.wait_for("an ingest run launched by drop_folder_sensor",
                              lambda: _finished_runs(ui, "dagster/sensor_name", "drop_folder_sensor"))
        assert [(r["jobName"], r["status"], r["tags"]["dagster/partition"]) for r in ingests] == [
            ("ingest_epoch", "SUCCESS", "1")]
        assert _alice_rows(home) == 60
        with open_ledger(market.home.paths.ledger, read_only=True) as con:
            assert [e.epoch for e in settled_epochs(con)] == [0]  # ingest never settles

        # While the window is open, the schedule's ticks skip and say why.
        skipped = ui.wait_for("a skipped tick of settle_closed_epoch",
                              lambda: [t for t in _schedule_ticks(ui) if t["status"] == "SKIPPED"])
        assert "not settling" in skipped[0]["skipReason"]
        assert not _finished_runs(ui, "dagster/schedule_name", "settle_closed_epoch")

        # The operator shortens the epoch: its window has now closed, and the next tick settles epoch 1.
        (home / "settings.toml").write_text("epoch_seconds = 1\n")
        settles = ui.wait_for("a settle run launched by settle_closed_epoch",
                              lambda: _finished_runs(ui, "dagster/schedule_name", "settle_closed_epoch"))
        assert settles[-1]["jobName"] == "settle_epoch" and settles[-1]["status"] == "SUCCESS"
        assert settles[-1]["tags"]["dagster/partition"] == "1"
        # Stop the clock before the next tick: with a 1-second window every minute would settle another epoch.
        (home / "settings.toml").write_text("epoch_seconds = 3600\n")
        ui.wait_for_runs()

    with open_ledger(market.home.paths.ledger, read_only=True) as con:
        settled = [e.epoch for e in settled_epochs(con)]
        paid = con.execute("SELECT r.amount FROM rewards r JOIN accounts a USING (account_id) "
                           "WHERE a.name = 'alice' AND r.epoch = 1").fetchall()
    assert settled[:2] == [0, 1] and settled == sorted(set(settled))  # each epoch settled once, in order
    assert paid and paid[0][0] > 0
