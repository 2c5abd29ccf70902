"""`tributary ui` as a test sees it: start the real webserver and daemon on a home, talk GraphQL, always stop it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SERVER_START_TIMEOUT_SECONDS = 180
SERVER_STOP_TIMEOUT_SECONDS = 30
# Upper bounds only: a run takes ~20 s here, several times that while another job shares the two CPUs.
RUN_TIMEOUT_SECONDS = 600
FINISHED = ("SUCCESS", "FAILURE", "CANCELED")
RUNS_QUERY = "{ runsOrError { ... on Runs { results { runId status jobName tags { key value } } } } }"


def _cli() -> list[str]:
    cli = Path(sys.executable).with_name("tributary")
    return [str(cli)] if cli.exists() else [sys.executable, "-m", "tributary.cli"]


def tributary(home: Path, *args: str, timeout: float = 120) -> str:
    """Run a `tributary` command on the home as a user would; its stdout (it must exit 0)."""
    done = subprocess.run([*_cli(), "--home", str(home), *args], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def log_tail(log: Path, n: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:]) if log.exists() else "(no log)"


@dataclass(frozen=True)
class UiServer:
    """A running `tributary ui`: its base URL and the log it writes."""

    base: str
    log: Path

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        req = urllib.request.Request(f"{self.base}/graphql",
                                     data=json.dumps({"query": query, "variables": variables or {}}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            body = json.load(r)
        assert "errors" not in body, body
        return body["data"]

    def repository(self) -> dict:
        """The one repository the webserver serves: {name, location: {name}}."""
        repos = self.graphql(
            "{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } } }")
        (repo,) = repos["repositoriesOrError"]["nodes"]
        assert repo["location"]["name"] == "tributary"  # pinned by the workspace file: sensor state is kept per name
        return repo

    def runs(self) -> list[dict]:
        """Every run the instance holds, newest first, as {runId, status, jobName, tags: {key: value}}."""
        found = self.graphql(RUNS_QUERY)["runsOrError"]["results"]
        return [{**r, "tags": {t["key"]: t["value"] for t in r["tags"]}} for r in found]

    def wait_for_runs(self, partition: str | None = None) -> list[dict]:
        """Wait until some run (of one partition, if given) exists and none is queued or in progress; those runs."""
        def finished() -> list[dict]:
            runs = self.runs()
            mine = [r for r in runs if partition is None or r["tags"].get("dagster/partition") == partition]
            return mine if all(r["status"] in FINISHED for r in runs) else []

        return self.wait_for("runs still in progress", finished, interval_seconds=1)

    def wait_for(self, what: str, found, interval_seconds: float = 2):
        """Poll `found()` until it returns something truthy (and return that), failing with `what` at the deadline."""
        deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            value = found()
            if value:
                return value
            time.sleep(interval_seconds)
        pytest.fail(f"{what}: not within {RUN_TIMEOUT_SECONDS} s:\n{log_tail(self.log)}")


def _wait_until_serving(proc: subprocess.Popen, base: str, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"`tributary ui` exited with {proc.returncode} before serving:\n{log_tail(log)}")
        try:
            info = json.loads(_get(f"{base}/server_info"))
            assert info["dagster_webserver_version"]
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
            time.sleep(1)
    pytest.fail(f"the Dagster webserver did not answer /server_info within {SERVER_START_TIMEOUT_SECONDS} s:\n"
                f"{log_tail(log)}")


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


@contextlib.contextmanager
def running_ui(home: Path, workdir: Path) -> Iterator[UiServer]:
    """`tributary ui` on a free port, in its own process group; stopped (and its exit checked) on the way out."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = workdir / "ui.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*_cli(), "--home", str(home), "ui", "--port", str(port)], cwd=workdir, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_until_serving(proc, base, log)
        yield UiServer(base, log)
    finally:
        _stop(proc)
    assert proc.returncode is not None
