"""`tributary ui` end to end: the real Dagster webserver and daemon on a home with one settled epoch, in chromium.

Drives Debian's /usr/bin/chromium through Playwright (never a downloaded browser), launches the settle job over
GraphQL and sees its materialization in the UI. Always stops the server: SIGINT to its process group, then SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ledger.audit import audit
from ledger.db import open_ledger
from ledger.epochs import settled_epochs
from tests.conftest import digits_table

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
CHROMIUM_INSTALL_WAIT_SECONDS = 300
SERVER_START_TIMEOUT_SECONDS = 120
SERVER_STOP_TIMEOUT_SECONDS = 30
RUN_TIMEOUT_SECONDS = 120
UI_TIMEOUT_MS = 30_000
ASSETS = ("contributions", "validated_contributions", "contribution_values", "validator_weights", "consensus",
          "epoch_settlement")
PARTITION = "2026-11-25-12:00"


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
        pytest.skip(f"Debian's chromium is not installed at {CHROMIUM}: run `sh scripts/ensure-chromium.sh` "
                    "(or `apt-get install -y chromium`); the browser tests never download a browser")
    return str(CHROMIUM)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def _graphql(base: str, query: str, variables: dict | None = None) -> dict:
    req = urllib.request.Request(f"{base}/graphql", data=json.dumps({"query": query, "variables": variables or {}}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        body = json.load(r)
    assert "errors" not in body, body
    return body["data"]


def _log_tail(log: Path, n: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:]) if log.exists() else "(no log)"


def _wait_until_serving(proc: subprocess.Popen, base: str, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"`tributary ui` exited with {proc.returncode} before serving:\n{_log_tail(log)}")
        try:
            info = json.loads(_get(f"{base}/server_info"))
            assert info["dagster_webserver_version"]
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
            time.sleep(1)
    pytest.fail(f"the Dagster webserver did not answer /server_info within {SERVER_START_TIMEOUT_SECONDS} s:\n"
                f"{_log_tail(log)}")


def _stop(proc: subprocess.Popen) -> None:
    """SIGINT to the whole process group (dagster dev, code server, webserver, daemon), then SIGKILL what is left."""
    try:
        os.killpg(proc.pid, signal.SIGINT)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=SERVER_STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the children, should any outlive dagster dev
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def _repository(base: str) -> dict:
    """The one repository the webserver serves: {name, location: {name}}."""
    repos = _graphql(base, "{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } } }")
    (repo,) = repos["repositoriesOrError"]["nodes"]
    assert repo["location"]["name"] == "tributary"  # pinned by the workspace file: sensor state is kept per name
    return repo


def _launch_settle_run(base: str, repo: dict) -> str:
    """Launch settle_epoch for one partition over GraphQL (in-process executor) and wait for it; returns its status."""
    launched = _graphql(base, """
        mutation($p: ExecutionParams!) { launchRun(executionParams: $p) {
          __typename ... on LaunchRunSuccess { run { runId } } ... on Error { message } } }""", {"p": {
        "selector": {"repositoryLocationName": repo["location"]["name"], "repositoryName": repo["name"],
                     "jobName": "settle_epoch"},
        "runConfigData": {"execution": {"config": {"in_process": {}}}},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": PARTITION}]},
    }})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        status = _graphql(base, "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }",
                          {"id": run_id})["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            return status
        time.sleep(1)
    return "TIMED_OUT"


def test_dagster_ui_shows_the_market(market, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from tributary.epoch import run_epoch

    def visible(locator) -> None:
        expect(locator).to_be_visible(timeout=UI_TIMEOUT_MS)

    chromium = _chromium()
    market.submit("alice", digits_table(300, 360), "alice.parquet")
    assert run_epoch(market.home, close=True).outcome.settled  # one settled epoch before the UI starts

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "ui.log"
    cli = Path(sys.executable).with_name("tributary")
    command = [str(cli)] if cli.exists() else [sys.executable, "-m", "tributary.cli"]
    with log.open("wb") as out:
        proc = subprocess.Popen([*command, "--home", str(market.home.root), "ui", "--port", str(port)],
                                cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        _wait_until_serving(proc, base, log)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1600, "height": 1000})
                page.set_default_timeout(UI_TIMEOUT_MS)
                # A fresh instance greets with a "Join the Dagster community" dialog over the page: skip it.
                page.add_locator_handler(page.get_by_text("Join the Dagster community"),
                                         lambda: page.get_by_role("button", name="Skip").click())

                page.goto(f"{base}/assets")  # the catalog lists every asset once the code location has loaded
                for name in ASSETS:
                    visible(page.locator(f'a[href="/assets/{name}"]').first)

                page.goto(f"{base}/automation")
                visible(page.get_by_text("drop_folder_sensor", exact=True).first)
                visible(page.get_by_text("settle_closed_epoch", exact=True).first)

                page.goto(f"{base}/assets/epoch_settlement")
                visible(page.get_by_text("Rewards and payouts written to the DuckDB ledger").first)
                visible(page.get_by_text("Never materialized").first)

                repo = _repository(base)
                assert _launch_settle_run(base, repo) == "SUCCESS", _log_tail(log)
                page.goto(f"{base}/assets/epoch_settlement?partition={PARTITION}")
                visible(page.get_by_text("chain_hash").first)
                visible(page.get_by_text("emission_tokens").first)
                page.screenshot(path=str(tmp_path / "epoch_settlement.png"), full_page=True)

                page.goto(f"{base}/locations/{repo['location']['name']}/asset-groups/epoch")  # the lineage graph
                visible(page.get_by_text("epoch_settlement").first)
                page.screenshot(path=str(tmp_path / "asset_graph.png"), full_page=True)
            finally:
                browser.close()
    finally:
        _stop(proc)
    assert proc.returncode is not None
    assert (tmp_path / "asset_graph.png").stat().st_size > 0
    with open_ledger(market.home.paths.ledger, read_only=True) as con:  # the server is gone, so is its lock
        assert [e.epoch for e in settled_epochs(con)][:3] == [0, 1, 2]  # the UI's run settled the next epoch
        report = audit(con)
        assert report.ok, report.problems
