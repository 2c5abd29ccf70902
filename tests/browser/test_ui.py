"""`tributary ui` end to end: the real Dagster webserver and daemon on a home with one settled epoch, in chromium.

Drives Debian's /usr/bin/chromium through Playwright (never a downloaded browser), launches the settle job over
GraphQL and sees its materialization in the UI. Always stops the server: SIGINT to its process group, then SIGKILL.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from ledger.audit import audit
from ledger.db import open_ledger
from ledger.epochs import settled_epochs
from tests.conftest import digits_table
from tests.dagster_server import FINISHED, UiServer, log_tail, running_ui, tributary

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
CHROMIUM_INSTALL_WAIT_SECONDS = 300
UI_TIMEOUT_MS = 30_000
ASSETS = ("contributions", "validated_contributions", "contribution_values", "validator_weights", "consensus",
          "epoch_settlement")


def _package_manager_busy() -> bool:
    for name in ("apt-get", "apt", "dpkg"):
        if subprocess.run(["pgrep", "-x", name], capture_output=True).returncode == 0:
            return True
    return False


def _chromium() -> str:
    """Debian's chromium, waiting for an apt-get install still under way; skip with the fix when it is absent."""
    deadline = time.monotonic() + CHROMIUM_INSTALL_WAIT_SECONDS
    while not os.access(CHROMIUM, os.X_OK) and _package_manager_busy() and time.monotonic() < deadline:
        time.sleep(2)
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"Debian's chromium is not installed at {CHROMIUM}: run `sh scripts/ensure-debian.sh /usr/bin/chromium chromium browser` "
                    "(or `apt-get install -y chromium`); the browser tests never download a browser")
    return str(CHROMIUM)


def _launch_run(ui: UiServer, partition: str) -> None:
    """Launch settle_epoch for one partition over GraphQL (as a re-launch or a retry would)."""
    repo = ui.repository()
    launched = ui.graphql("""
        mutation($p: ExecutionParams!) { launchRun(executionParams: $p) {
          __typename ... on LaunchRunSuccess { run { runId } } ... on Error { message } } }""", {"p": {
        "selector": {"repositoryLocationName": repo["location"]["name"], "repositoryName": repo["name"],
                     "jobName": "settle_epoch"},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": partition}]},
    }})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched


def _launch_backfill(ui: UiServer, partitions: list[str]) -> str:
    launched = ui.graphql("""
        mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) {
          __typename ... on LaunchBackfillSuccess { backfillId } ... on Error { message } } }""", {"p": {
        "assetSelection": [{"path": [name]} for name in ASSETS], "partitionNames": partitions}})[
        "launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    return launched["backfillId"]


def _wait_for_backfill(ui: UiServer, backfill_id: str, partitions: int) -> list[str]:
    """Wait until the backfill has launched a run per partition and every run has finished; their statuses."""
    def finished() -> list[str]:
        mine = [r["status"] for r in ui.runs() if r["tags"].get("dagster/backfill") == backfill_id]
        return mine if len(mine) == partitions and all(s in FINISHED for s in mine) else []

    return ui.wait_for(f"backfill {backfill_id} of {partitions} partitions", finished)


def _ledger(market) -> tuple[list[int], int]:
    with open_ledger(market.home.paths.ledger, read_only=True) as con:
        minted = con.execute("SELECT COALESCE(sum(amount), 0) FROM rewards").fetchone()[0]
        return [e.epoch for e in settled_epochs(con)], minted


def test_dagster_ui_runs_the_market(market, tmp_path):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect, sync_playwright

    from engine.epoch import run_epoch

    def visible(locator) -> None:
        expect(locator).to_be_visible(timeout=UI_TIMEOUT_MS)

    chromium = _chromium()
    market.submit("alice", digits_table(300, 360), "alice.parquet")
    assert run_epoch(market.home, close=True).outcome.settled  # epoch 1 settled from the CLI before the UI starts
    emission = market.home.settings.epoch_emission_units
    shots = Path(os.environ.get("TRIBUTARY_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)

    with running_ui(market.home.root, tmp_path) as ui:
        base = ui.base
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1600, "height": 1000})
                page.set_default_timeout(UI_TIMEOUT_MS)
                # A fresh instance greets with a "Join the Dagster community" dialog over the page: skip it.
                page.add_locator_handler(page.get_by_text("Join the Dagster community"),
                                         lambda: page.get_by_role("button", name="Skip").click(), no_wait_after=True)

                page.goto(f"{base}/assets")  # the catalog lists every asset once the code location has loaded
                for name in ASSETS:
                    visible(page.locator(f'a[href="/assets/{name}"]').first)
                try:  # dismissed once here, so it never sits over the launch dialog
                    page.get_by_role("button", name="Skip").click(timeout=10_000)
                except PlaywrightTimeout:
                    pass

                page.goto(f"{base}/automation")
                for name in ("drop_folder_sensor", "ledger_sync", "settle_closed_epoch"):
                    visible(page.get_by_text(name, exact=True).first)

                # The epoch the CLI settled is already there, with the metadata a UI run attaches.
                page.goto(f"{base}/assets/epoch_settlement")
                visible(page.get_by_text("Rewards and payouts written to the DuckDB ledger").first)
                visible(page.get_by_text("chain_hash").first)
                visible(page.get_by_text("reward_distribution").first)
                expect(page.get_by_text("Never materialized")).to_have_count(0)

                # Materialize the open epoch (partition 2) by clicking, as an operator would.
                # From the epoch's asset graph: "Materialize all" runs the whole epoch, upstream included.
                page.goto(f"{base}/locations/tributary/asset-groups/epoch")
                visible(page.get_by_text("epoch_settlement").first)
                page.screenshot(path=str(shots / "asset_graph.png"))
                materialize_all = page.get_by_role("button", name="Materialize all…")
                expect(materialize_all).to_be_enabled(timeout=UI_TIMEOUT_MS)
                try:
                    materialize_all.click()
                finally:
                    page.screenshot(path=str(shots / "after_click.png"))
                dialog = page.get_by_role("dialog")
                visible(dialog.get_by_text(re.compile(r"^Launch runs to materialize")))
                # "Missing" selects the partitions never materialized: only the open epoch, since the ledger sync
                # reported the CLI's epoch 1.
                dialog.get_by_role("button", name="Missing", exact=True).click()
                try:
                    visible(dialog.get_by_text("1 partition", exact=True))
                finally:
                    page.screenshot(path=str(shots / "launch_dialog.png"))
                dialog.get_by_role("button", name=re.compile(r"^Launch")).click()
                runs = ui.wait_for_runs("2")
                assert [r["status"] for r in runs] == ["SUCCESS"], log_tail(ui.log)
                page.goto(f"{base}/runs/{runs[0]['runId']}")
                visible(page.get_by_text("epoch_settlement").first)
                page.screenshot(path=str(shots / "epoch_run.png"))
                page.goto(f"{base}/assets/epoch_settlement?partition=2")
                visible(page.get_by_text("emission_tokens").first)
                page.screenshot(path=str(shots / "epoch_metadata.png"), full_page=True)

            finally:
                browser.close()
        assert _ledger(market) == ([0, 1, 2], 2 * emission)
        assert "2" in tributary(market.home.root, "sql",
                                "SELECT max(epoch) AS settled FROM epochs WHERE state = 'settled'")

        # A re-launch of a settled partition, then a backfill over settled and open ones: only epoch 3 (open) settles.
        _launch_run(ui, "1")
        assert [r["status"] for r in ui.wait_for_runs("1")] == ["SUCCESS"]
        assert _ledger(market) == ([0, 1, 2], 2 * emission)
        assert _wait_for_backfill(ui, _launch_backfill(ui, ["1", "2", "3"]), 3) == ["SUCCESS"] * 3
        assert _ledger(market) == ([0, 1, 2, 3], 3 * emission)
    assert (shots / "asset_graph.png").stat().st_size > 0
    with open_ledger(market.home.paths.ledger, read_only=True) as con:  # the server is gone, so is its lock
        report = audit(con)
        assert report.ok, report.problems
